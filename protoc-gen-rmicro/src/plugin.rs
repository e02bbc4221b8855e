//! The protoc plugin protocol: an encoded `CodeGeneratorRequest` in, a `CodeGeneratorResponse`
//! out, at the API level the parameters name or, run in a project, the one its runtimes accept.

use prost_types::compiler::{code_generator_response, CodeGeneratorResponse};

use crate::{generate, project, Error, Input, Options, MAX_API};

/// `CodeGeneratorResponse.Feature.FEATURE_PROTO3_OPTIONAL`.
const FEATURE_PROTO3_OPTIONAL: u64 = 1;

/// Runs the plugin protocol: an encoded `CodeGeneratorRequest` in, a `CodeGeneratorResponse` out.
///
/// Without `api=N` this emits the newest API; [`run_plugin_in`] picks the project's instead.
/// Problems with the request's contents or parameters go into the response's `error` field,
/// which protoc prints as `--rmicro_out: <message>` before failing.
///
/// # Errors
///
/// [`Error::MalformedRequest`] only when `request` is not a `CodeGeneratorRequest` at all (so
/// protoc is not the caller and there is nobody to read a response).
pub fn run_plugin(request: &[u8]) -> Result<CodeGeneratorResponse, Error> {
    run(request, |_| Ok(None)).map(|(response, _)| response)
}

/// [`run_plugin`] as the binary runs it: without `api=N`, the API level is the newest one that
/// every rmicro-runtime the package owning `dir` resolves accepts (read from the `Cargo.lock`
/// Cargo uses for it); the newest this plugin emits when there is no such lock file.
///
/// Returns the response and a note for standard error saying how the level was chosen (also
/// when no lock file was found, as protoc's working directory may not be the crate's).
///
/// # Errors
///
/// As [`run_plugin`].
pub fn run_plugin_in(
    request: &[u8],
    dir: &std::path::Path,
) -> Result<(CodeGeneratorResponse, Option<String>), Error> {
    run(request, |options| {
        if let Some(level) = options.api {
            return Ok(refused_level(dir, level).map(|note| (level, note)));
        }
        let chosen = project_api(dir)?;
        // A crate that renamed its runtime dependency cannot resolve `::rmicro_runtime`: say
        // what to pass, rather than leave it to a page of unresolved names.
        let renamed = (options.runtime_path == "::rmicro_runtime")
            .then(|| project::renamed_runtime(dir))
            .flatten();
        Ok(match (chosen, renamed) {
            (Some((level, note)), Some((package, name))) => Some((
                level,
                format!(
                    "{note}\nprotoc-gen-rmicro: note: `{package}` depends on rmicro-runtime under \
                     the name `{name}`, where generated code's `::rmicro_runtime` does not \
                     resolve: pass `--rmicro_opt=runtime_path=::{name}`"
                ),
            )),
            (chosen, _) => chosen,
        })
    })
}

/// A note when the level asked for with `api=N` is one a runtime of the project at `dir` does
/// not accept: the level asked for is emitted (the files may be meant for another project), but
/// not without saying that they will not compile in this one. `None` when it is accepted, or
/// the project's runtimes cannot be told.
fn refused_level(dir: &std::path::Path, level: u32) -> Option<String> {
    let lockfile = project::find_lockfile(dir)?;
    let resolution = project::resolve_package(&lockfile, dir).ok()?;
    let refusing: Vec<String> = resolution
        .runtimes
        .iter()
        .filter(|r| !r.accepts(level))
        .map(ToString::to_string)
        .collect();
    (!refusing.is_empty()).then(|| {
        format!(
            "note: emitting API {level} as asked (api={level}), which {} locked in {} does not \
             accept: the files will not compile against it; leave api= out to emit the API the \
             project takes",
            refusing.join(" and "),
            lockfile.display()
        )
    })
}

/// The API level the project at `dir` needs, with a note saying how it was chosen.
fn project_api(dir: &std::path::Path) -> Result<Option<(u32, String)>, Error> {
    let Some(lockfile) = project::find_lockfile(dir) else {
        // Inside a crate that has no lock file yet (a new one, or one whose lock is not
        // committed): the lock file is what is missing, not the crate.
        let manifest = dir
            .ancestors()
            .map(|d| d.join("Cargo.toml"))
            .find(|m| m.is_file());
        let advice = match manifest.as_ref().and_then(|m| m.parent()) {
            Some(crate_dir) => format!(
                "; run `cargo generate-lockfile` in {} first, so the plugin emits the API the \
                 crate's rmicro-runtime takes, or pass `--rmicro_opt=api=N`",
                crate_dir.display()
            ),
            None => "; pass `--rmicro_opt=api=N` or run protoc from the crate".to_string(),
        };
        return Ok(Some((
            MAX_API,
            format!(
                "no Cargo.lock above {}: emitting the newest API {MAX_API}{advice}",
                dir.display()
            ),
        )));
    };
    let resolution = match project::resolve_package(&lockfile, dir) {
        Ok(resolution) => resolution,
        Err(project::ProjectError::NoRuntime { .. }) => {
            return Ok(Some((
                MAX_API,
                format!(
                    "{} locks no rmicro-runtime; emitting the newest API ({MAX_API})",
                    lockfile.display()
                ),
            )))
        }
        Err(err) => return Err(Error::Unsupported(err.to_string())),
    };
    let level = project::choose_api(&resolution.runtimes).map_err(Error::Unsupported)?;
    let found = resolution
        .runtimes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let package = match &resolution.package {
        Some(package) if resolution.locked > 1 => format!(" for package `{}`", package.name),
        _ => String::new(),
    };
    Ok(Some((
        level,
        format!(
            "emitting API {level} for {found}, locked in {}{package}",
            lockfile.display()
        ),
    )))
}

fn run(
    request: &[u8],
    default_api: impl FnOnce(&Options) -> Result<Option<(u32, String)>, Error>,
) -> Result<(CodeGeneratorResponse, Option<String>), Error> {
    if request.is_empty() {
        return Err(Error::MalformedRequest(
            "standard input is empty; protoc-gen-rmicro is a protoc plugin: run it as \
             `protoc --rmicro_out=DIR file.proto` with it on PATH (or name it: \
             `--plugin=protoc-gen-rmicro=/path/to/protoc-gen-rmicro`)"
                .into(),
        ));
    }
    let (input, parameter) = Input::from_request_bytes(request)?;
    let mut note = None;
    let result = Options::parse(&parameter).and_then(|mut options| {
        // The level of the project when none is asked for, or a note on the one asked for.
        if let Some((level, why)) = default_api(&options)? {
            options.api = Some(level);
            note = Some(why);
        }
        generate(&input, &options)
    });
    let mut response = CodeGeneratorResponse {
        supported_features: Some(FEATURE_PROTO3_OPTIONAL),
        ..Default::default()
    };
    match result {
        Ok(files) => {
            if files.is_empty() && !input.to_generate.is_empty() {
                // protoc says nothing when a plugin writes nothing: say why, or the user is left
                // looking for a file that was never going to be there.
                let names = input.to_generate.join(", ");
                let protobufs_own = input
                    .files
                    .iter()
                    .filter(|f| input.to_generate.iter().any(|n| n == f.name()))
                    .all(|f| f.package().starts_with("google.protobuf"));
                let why = if protobufs_own {
                    format!(
                        "nothing to generate for {names}: protobuf's own types come from \
                         prost-types (re-exported by rmicro-runtime), not from generated code; \
                         generate the files that import them"
                    )
                } else {
                    format!(
                        "nothing to generate for {names}: they define no message, enum or service"
                    )
                };
                note = Some(match note {
                    Some(earlier) => format!("{earlier}\nprotoc-gen-rmicro: note: {why}"),
                    None => format!("note: {why}"),
                });
            }
            response.file = files
                .into_iter()
                .map(|f| code_generator_response::File {
                    name: Some(f.name),
                    content: Some(f.content),
                    ..Default::default()
                })
                .collect();
        }
        Err(err) => {
            // protoc prints the error; a note on how the level was chosen would only add noise.
            note = None;
            response.error = Some(err.to_string());
        }
    }
    Ok((response, note))
}
