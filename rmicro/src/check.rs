//! `rmicro check`: the pre-build version check from the command line.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use protoc_gen_rmicro::project::{self, Runtime};
use rmicro_build::check::{self, FileCheck, Resolved, Status};
use serde_json::{json, Value};

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Lines for a person.
    Human,
    /// One JSON object, for CI.
    Json,
}

/// `rmicro check` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The package's Cargo.toml (default: the nearest at or above the current directory).
    #[arg(long, value_name = "PATH")]
    pub manifest_path: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Generated files or directories to check (default: every file under the package that
    /// carries the rmicro header).
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

/// The outcome, before it is printed.
#[derive(Debug, Default)]
struct Outcome {
    lockfile: Option<PathBuf>,
    runtimes: Vec<Runtime>,
    files: Vec<FileCheck>,
    /// Where generated files were looked for.
    roots: Vec<PathBuf>,
    plugin: Option<PluginCheck>,
    /// Problems that stopped part of the check (exit 2 unless skew was also found).
    errors: Vec<String>,
    /// Version skew messages (exit 1).
    skews: Vec<String>,
}

#[derive(Debug)]
struct PluginCheck {
    path: Option<PathBuf>,
    version: Option<String>,
    apis: Option<(u32, u32)>,
    status: &'static str,
    message: String,
}

/// Runs `rmicro check`.
pub fn run(args: &Args) -> ExitCode {
    let outcome = check(args);
    let code = if !outcome.skews.is_empty() {
        1
    } else if !outcome.errors.is_empty() {
        2
    } else {
        0
    };
    let written = match args.format {
        Format::Human => print_human(&outcome),
        Format::Json => crate::write_out(&format!("{}\n", to_json(&outcome, code))),
    };
    match written {
        // The verdict stands when nobody reads it (`| head -0`): the exit code still says it.
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("error: cannot write the report: {err}");
            ExitCode::from(2)
        }
        _ => ExitCode::from(code),
    }
}

fn check(args: &Args) -> Outcome {
    let mut out = Outcome::default();
    let cwd = std::env::current_dir().unwrap_or_default();
    let manifest = match &args.manifest_path {
        Some(p) if p.is_file() => p.clone(),
        Some(p) => {
            out.errors.push(format!(
                "{} does not exist or is not a file; pass the path of a Cargo.toml to --manifest-path",
                p.display()
            ));
            return out;
        }
        None => match cwd
            .ancestors()
            .map(|d| d.join("Cargo.toml"))
            .find(|p| p.is_file())
        {
            Some(p) => p,
            None => {
                out.errors.push(format!(
                    "no Cargo.toml in {} or above; run inside a Cargo package or pass --manifest-path",
                    cwd.display()
                ));
                return out;
            }
        },
    };
    let manifest = std::fs::canonicalize(&manifest).unwrap_or(manifest);
    let package_dir = manifest
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| cwd.clone());
    let Some(lockfile) = project::find_lockfile(&package_dir) else {
        out.errors.push(format!(
            "no Cargo.lock at or above {}; run `cargo generate-lockfile` (or build once) so the \
             rmicro-runtime version is known",
            package_dir.display()
        ));
        return out;
    };
    out.lockfile = Some(lockfile.clone());
    let resolved = match check::resolve_lockfile(&lockfile, &package_dir) {
        Ok(resolved) => resolved,
        Err(err) => {
            out.errors.push(err.to_string());
            return out;
        }
    };
    out.runtimes = resolved.runtimes.clone();

    let roots = if args.paths.is_empty() {
        vec![package_dir]
    } else {
        args.paths.clone()
    };
    out.roots = roots.clone();
    for root in &roots {
        if !root.exists() {
            out.errors
                .push(format!("{}: no such file or directory", root.display()));
        }
    }
    let (files, mut unlisted) =
        check::collect(&roots.into_iter().filter(|r| r.exists()).collect::<Vec<_>>());
    out.files = check::check_files(&files, &out.runtimes);
    out.files.append(&mut unlisted);
    for file in &out.files {
        match &file.status {
            Status::Ok(_) => {}
            Status::Skew(header) => out.skews.push(check::skew_message(file, header, &resolved)),
            Status::Damaged(_) => out.skews.extend(check::problem_message(file)),
            Status::NoHeader | Status::Unreadable(_) => {
                out.errors.extend(check::problem_message(file))
            }
        }
    }

    let plugin = check_plugin(&out.runtimes);
    if plugin.status == "skew" {
        out.skews.push(plugin.message.clone());
    } else if plugin.status == "error" {
        out.errors.push(plugin.message.clone());
    }
    out.plugin = Some(plugin);
    out
}

/// Finds `protoc-gen-rmicro` on PATH.
fn find_plugin() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("protoc-gen-rmicro"))
        .find(|p| p.is_file())
}

fn check_plugin(runtimes: &[Runtime]) -> PluginCheck {
    let Some(path) = find_plugin() else {
        return PluginCheck {
            path: None,
            version: None,
            apis: None,
            status: "not_found",
            message: "protoc-gen-rmicro is not on PATH (only needed to run protoc --rmicro_out); \
                      install it with `cargo install protoc-gen-rmicro --locked`"
                .into(),
        };
    };
    let error = |message: String| PluginCheck {
        path: Some(path.clone()),
        version: None,
        apis: None,
        status: "error",
        message,
    };
    let version_out = match Command::new(&path).arg("--version").output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        Ok(out) => {
            return error(format!(
                "{} --version failed: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
        Err(err) => return error(format!("could not run {}: {err}", path.display())),
    };
    // `protoc-gen-rmicro X.Y.Z (rmicro API N)`
    let parsed = version_out
        .strip_prefix("protoc-gen-rmicro ")
        .and_then(|rest| rest.split_once(" (rmicro API "))
        .and_then(|(v, api)| Some((v.to_string(), api.strip_suffix(')')?.parse::<u32>().ok()?)));
    let Some((version, newest)) = parsed else {
        return error(format!(
            "{} --version printed `{version_out}`, not `protoc-gen-rmicro X.Y.Z (rmicro API N)`",
            path.display()
        ));
    };
    // Every level it can emit; a plugin that does not answer emits only its newest.
    let apis = Command::new(&path)
        .arg("--supported-apis")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).trim().to_string();
            let (min, max) = text.split_once("..=")?;
            Some((min.parse().ok()?, max.parse().ok()?))
        })
        .unwrap_or((newest, newest));
    let usable = (apis.0..=apis.1)
        .rev()
        .find(|level| runtimes.iter().all(|r| r.accepts(*level)));
    let runtime_list = runtimes
        .iter()
        .map(|r| {
            format!(
                "rmicro-runtime {} (API {}..={})",
                r.version, r.api_min, r.api
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let (status, message) = match usable {
        Some(level) if level == newest => (
            "ok",
            format!("{} at {} emits API {newest}, which the locked {runtime_list} accepts", version_out, path.display()),
        ),
        Some(level) => (
            "ok",
            format!(
                "{} at {} emits API {newest} by default and API {level} for this project's {runtime_list} (it reads Cargo.lock)",
                version_out,
                path.display()
            ),
        ),
        None => {
            let want = runtimes.iter().map(|r| r.version.as_str()).next().unwrap_or("X");
            (
                "skew",
                format!(
                    "{} at {} emits API {}..={}, none of which the locked {runtime_list} accepts; \
                     install the matching plugin: `cargo install protoc-gen-rmicro --version {want} --locked`",
                    version_out,
                    path.display(),
                    apis.0,
                    apis.1
                ),
            )
        }
    };
    PluginCheck {
        path: Some(path),
        version: Some(version),
        apis: Some(apis),
        status,
        message,
    }
}

fn print_human(out: &Outcome) -> std::io::Result<()> {
    use std::fmt::Write as _;
    let mut text = String::new();
    if let Some(lockfile) = &out.lockfile {
        for runtime in &out.runtimes {
            let _ = writeln!(text, "{runtime}, locked in {}", lockfile.display());
        }
    }
    for file in &out.files {
        if matches!(file.status, Status::Ok(_)) {
            let _ = writeln!(text, "{file}");
        }
    }
    let none_found = out.lockfile.is_some() && out.files.is_empty() && out.errors.is_empty();
    if none_found {
        let roots: Vec<String> = out.roots.iter().map(|r| r.display().to_string()).collect();
        let _ = writeln!(
            text,
            "no generated files found under {}: no checked-in generated code to check (code \
             rmicro-build generates into OUT_DIR is checked by the build script on every build)",
            roots.join(", ")
        );
    }
    if let Some(plugin) = &out.plugin {
        if plugin.status != "skew" && plugin.status != "error" {
            let _ = writeln!(text, "plugin: {}", plugin.message);
        }
    }
    crate::write_out(&text)?;
    for skew in &out.skews {
        eprintln!("\nerror: {skew}");
    }
    for error in &out.errors {
        eprintln!("\nerror: could not check: {error}");
    }
    if out.skews.is_empty() && out.errors.is_empty() && !out.files.is_empty() {
        crate::write_out(
            "all good: every generated file is accepted by the locked rmicro-runtime\n",
        )?;
    }
    Ok(())
}

fn to_json(out: &Outcome, code: u8) -> Value {
    let files: Vec<Value> = out
        .files
        .iter()
        .map(|f| {
            let header = match &f.status {
                Status::Ok(h) | Status::Skew(h) => Some(h),
                _ => None,
            };
            json!({
                "path": f.path.display().to_string(),
                "status": f.status.name(),
                "api": header.map(|h| h.api),
                "plugin_version": header.map(|h| h.plugin_version.clone()),
                "sources": f.sources,
                "message": match &f.status {
                    Status::Skew(h) => Some(check::skew_message(f, h, &Resolved {
                        runtimes: out.runtimes.clone(),
                        from: out.lockfile.as_ref().map(|l| format!("Cargo.lock at {}", l.display())).unwrap_or_default(),
                    })),
                    _ => check::problem_message(f),
                },
            })
        })
        .collect();
    let plugin = out.plugin.as_ref().map(|p| {
        json!({
            "path": p.path.as_ref().map(|p| p.display().to_string()),
            "version": p.version,
            "apis": p.apis.map(|(min, max)| [min, max]),
            "status": p.status,
            "message": p.message,
        })
    });
    json!({
        "status": match code { 0 => "ok", 1 => "skew", _ => "error" },
        "exit_code": code,
        "lockfile": out.lockfile.as_ref().map(|l| l.display().to_string()),
        "runtimes": out.runtimes.iter().map(|r| json!({
            "version": r.version, "api_min": r.api_min, "api": r.api,
        })).collect::<Vec<_>>(),
        "files": files,
        "plugin": plugin,
        "skews": out.skews,
        "errors": out.errors,
    })
}
