//! [`Config`]: what to compile and how, shaped like prost-build's `Config` and cc's `Build`.

use std::path::{Path, PathBuf};

use protoc_gen_rmicro::Options;

use crate::check::{self, FileCheck, Resolved};
use crate::Error;
use protoc_gen_rmicro::project::{self, Origin, ProjectError, Runtime};

/// Configuration for one build.rs run. Every generator option of the `protoc-gen-rmicro` plugin
/// is a method here under the same name.
#[derive(Debug, Clone, Default)]
pub struct Config {
    options: Options,
    out_dir: Option<PathBuf>,
    checked_in: Vec<PathBuf>,
    emit_rerun_if_changed: Option<bool>,
}

/// Reads an environment variable the way a build script should: through Cargo's
/// `rerun-if-env-changed`, so a change reruns the script.
pub(crate) fn env_var(name: &str) -> Option<String> {
    if std::env::var_os("CARGO").is_some() {
        println!("cargo:rerun-if-env-changed={name}");
    }
    std::env::var(name).ok()
}

impl Config {
    /// The defaults: newest API, `::rmicro_runtime`, clients and servers, output to `OUT_DIR`.
    pub fn new() -> Self {
        Config::default()
    }

    /// Where to write the generated files. Default: the `OUT_DIR` Cargo gives build scripts.
    pub fn out_dir(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.out_dir = Some(dir.into());
        self
    }

    /// Whether to print `cargo:rerun-if-changed` for every `.proto` read. Default: when run by
    /// Cargo (the `CARGO` variable is set).
    pub fn emit_rerun_if_changed(&mut self, yes: bool) -> &mut Self {
        self.emit_rerun_if_changed = Some(yes);
        self
    }

    /// Also check generated files committed to the repository (made with `protoc --rmicro_out`):
    /// a file, or a directory searched for `.rs` files carrying the rmicro header. The check runs
    /// in [`Config::try_compile`] and [`Config::try_check`], before rustc sees the crate.
    ///
    /// ```no_run
    /// // build.rs of a crate whose generated code is checked in under src/gen
    /// rmicro_build::Config::new().checked_in("src/gen").check();
    /// ```
    pub fn checked_in(&mut self, path: impl Into<PathBuf>) -> &mut Self {
        self.checked_in.push(path.into());
        self
    }

    /// Emit code for rmicro-runtime API `level` (plugin: `api=N`). Default: the newest level
    /// the crate's rmicro-runtime accepts (from Cargo's `links` metadata or `Cargo.lock`), else
    /// the newest this generator emits.
    pub fn api(&mut self, level: u32) -> &mut Self {
        self.options.api = Some(level);
        self
    }

    /// Rust path of the runtime crate (plugin: `runtime_path=`). Default: `::rmicro_runtime`, or
    /// `::rt` when the crate depends on the runtime under that name (`rt = { package =
    /// "rmicro-runtime", ... }`).
    ///
    /// ```no_run
    /// rmicro_build::Config::new().runtime_path("::my_platform::rmicro_runtime");
    /// ```
    pub fn runtime_path(&mut self, path: impl Into<String>) -> &mut Self {
        self.options.runtime_path = path.into();
        self
    }

    /// Also write `name`, a module tree that `include!`s every generated file (plugin:
    /// `include_file=`). Default: none.
    pub fn include_file(&mut self, name: impl Into<String>) -> &mut Self {
        self.options.include_file = Some(name.into());
        self
    }

    /// Generate service clients (plugin: `client=`). Default: true.
    pub fn client(&mut self, yes: bool) -> &mut Self {
        self.options.client = yes;
        self
    }

    /// Generate handler traits and register functions (plugin: `server=`). Default: true.
    pub fn server(&mut self, yes: bool) -> &mut Self {
        self.options.server = yes;
        self
    }

    /// Use an existing Rust type or module for a protobuf path (plugin: `extern_path=`).
    ///
    /// ```no_run
    /// rmicro_build::Config::new().extern_path(".google.type", "::google_types");
    /// ```
    pub fn extern_path(&mut self, proto: impl Into<String>, rust: impl Into<String>) -> &mut Self {
        self.options.extern_paths.push((proto.into(), rust.into()));
        self
    }

    /// `BTreeMap` for matching map fields, `.` for all (plugin: `btree_map=`).
    pub fn btree_map(&mut self, path: impl Into<String>) -> &mut Self {
        self.options.btree_map.push(path.into());
        self
    }

    /// `bytes::Bytes` for matching bytes fields, `.` for all (plugin: `bytes=`).
    pub fn bytes(&mut self, path: impl Into<String>) -> &mut Self {
        self.options.bytes.push(path.into());
        self
    }

    /// An attribute on matching messages, enums and oneofs (plugin: `type_attribute=`).
    ///
    /// ```no_run
    /// rmicro_build::Config::new().type_attribute(".go.micro.srv.user.CallRequest", "#[derive(Eq, Hash)]");
    /// ```
    pub fn type_attribute(
        &mut self,
        path: impl Into<String>,
        attr: impl Into<String>,
    ) -> &mut Self {
        self.options
            .type_attributes
            .push((path.into(), attr.into()));
        self
    }

    /// An attribute on matching messages (plugin: `message_attribute=`).
    pub fn message_attribute(
        &mut self,
        path: impl Into<String>,
        attr: impl Into<String>,
    ) -> &mut Self {
        self.options
            .message_attributes
            .push((path.into(), attr.into()));
        self
    }

    /// An attribute on matching enums and oneofs (plugin: `enum_attribute=`).
    pub fn enum_attribute(
        &mut self,
        path: impl Into<String>,
        attr: impl Into<String>,
    ) -> &mut Self {
        self.options
            .enum_attributes
            .push((path.into(), attr.into()));
        self
    }

    /// An attribute on matching fields (plugin: `field_attribute=`).
    pub fn field_attribute(
        &mut self,
        path: impl Into<String>,
        attr: impl Into<String>,
    ) -> &mut Self {
        self.options
            .field_attributes
            .push((path.into(), attr.into()));
        self
    }

    /// Box matching message fields (plugin: `boxed=`).
    pub fn boxed(&mut self, path: impl Into<String>) -> &mut Self {
        self.options.boxed.push(path.into());
        self
    }

    /// Leave comments out of matching items (plugin: `disable_comments=`).
    pub fn disable_comments(&mut self, path: impl Into<String>) -> &mut Self {
        self.options.disable_comments.push(path.into());
        self
    }

    /// Do not derive `Debug` for matching types (plugin: `skip_debug=`).
    pub fn skip_debug(&mut self, path: impl Into<String>) -> &mut Self {
        self.options.skip_debug.push(path.into());
        self
    }

    /// Keep enum name prefixes on variants (plugin: `retain_enum_prefix=`). Default: false.
    pub fn retain_enum_prefix(&mut self, yes: bool) -> &mut Self {
        self.options.retain_enum_prefix = yes;
        self
    }

    /// Implement `prost::Name` for messages (plugin: `enable_type_names=`). Default: false.
    pub fn enable_type_names(&mut self, yes: bool) -> &mut Self {
        self.options.enable_type_names = yes;
        self
    }

    /// Sets an option by its plugin parameter name, as `--rmicro_opt=key=value` would.
    ///
    /// # Errors
    ///
    /// An unknown key or an invalid value, with the same message the plugin gives.
    pub fn parameter(&mut self, key: &str, value: &str) -> Result<&mut Self, Error> {
        self.options.set(key, Some(value))?;
        Ok(self)
    }

    /// The generator options as configured.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The rmicro-runtime this build compiles against: from the `links` metadata Cargo passes to
    /// the build scripts of crates that depend on it directly, else from `Cargo.lock`.
    fn resolve_runtime() -> Result<Option<Resolved>, Error> {
        let dir = match env_var("CARGO_MANIFEST_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => std::env::current_dir().map_err(|e| Error::io(Path::new("."), e))?,
        };
        let runtimes: Vec<Runtime> = links_prefixes()
            .into_iter()
            .filter_map(|prefix| {
                let version = env_var(&format!("{prefix}_VERSION"))?;
                let api = env_var(&format!("{prefix}_API"))?.parse().ok()?;
                let api_min = env_var(&format!("{prefix}_API_MIN"))?.parse().ok()?;
                let source_dir = env_var(&format!("{prefix}_MANIFEST_DIR")).map(PathBuf::from);
                Some((
                    Runtime {
                        version,
                        api_min,
                        api,
                        manifest: None,
                        origin: Origin::Unknown,
                    },
                    source_dir,
                ))
            })
            .map(|(mut runtime, source_dir)| {
                // Where Cargo takes it from, for the install command a skew message gives: the
                // metadata says where its source is, the lock file what that source is.
                runtime.origin = match locked_origin(&dir, &runtime.version) {
                    Origin::Path { .. } => Origin::Path { dir: source_dir },
                    origin => origin,
                };
                runtime
            })
            .collect();
        if !runtimes.is_empty() {
            return Ok(Some(Resolved {
                runtimes,
                from: "Cargo links metadata of the rmicro-runtime dependency".into(),
            }));
        }
        let Some(lockfile) = project::find_lockfile(&dir) else {
            return Ok(None);
        };
        // Read from the lock file: a change to it (the runtime moved through another crate,
        // whose `links` metadata this crate does not get) reruns the check.
        if std::env::var_os("CARGO").is_some() {
            println!("cargo:rerun-if-changed={}", lockfile.display());
        }
        match check::resolve_lockfile(&lockfile, &dir) {
            Ok(resolved) => Ok(Some(resolved)),
            Err(ProjectError::NoRuntime { .. }) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    /// Checks `files` (plus the checked-in paths) against `resolved`.
    fn verify(
        &self,
        mut files: Vec<PathBuf>,
        resolved: Option<&Resolved>,
    ) -> Result<Vec<FileCheck>, Error> {
        let (found, mut problems) = check::collect(&self.checked_in);
        files.extend(found);
        let Some(resolved) = resolved else {
            if !files.is_empty() {
                println!(
                    "cargo:warning=rmicro-build: could not tell which rmicro-runtime this crate uses \
                     (no rmicro-runtime dependency and none in Cargo.lock); the pre-build check is \
                     skipped, the compile-time pin in each generated file still applies"
                );
            }
            return Ok(Vec::new());
        };
        let mut checks = check::check_files(&files, &resolved.runtimes);
        checks.append(&mut problems);
        match check::report(&checks, resolved) {
            Some(message) => Err(Error::Skew(message)),
            None => Ok(checks),
        }
    }

    /// Checks only the [checked-in](Config::checked_in) files, for a build.rs that generates
    /// nothing itself.
    ///
    /// # Errors
    ///
    /// [`Error::Skew`] naming every file whose API the crate's rmicro-runtime does not accept
    /// (or whose header is missing or damaged), with both ways out.
    pub fn try_check(&self) -> Result<Vec<FileCheck>, Error> {
        let resolved = Self::resolve_runtime()?;
        if self
            .emit_rerun_if_changed
            .unwrap_or_else(|| std::env::var_os("CARGO").is_some())
        {
            for path in &self.checked_in {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
        self.verify(Vec::new(), resolved.as_ref())
    }

    /// [`Config::try_check`] for build.rs: on error, prints the message and exits with status 1,
    /// so rustc never starts on the crate.
    pub fn check(&self) {
        if let Err(err) = self.try_check() {
            fail(&err);
        }
    }

    /// Compiles `protos` (paths of `.proto` files, each inside one of `includes`) and writes the
    /// generated files, returning their paths. Unchanged files are not rewritten.
    ///
    /// # Errors
    ///
    /// No `.proto` file, a `.proto` that does not compile, options the generator rejects, no
    /// output directory, or an I/O failure.
    pub fn try_compile(
        &self,
        protos: &[impl AsRef<Path>],
        includes: &[impl AsRef<Path>],
    ) -> Result<Vec<PathBuf>, Error> {
        let out_dir = match &self.out_dir {
            Some(dir) => dir.clone(),
            None => PathBuf::from(env_var("OUT_DIR").ok_or(Error::NoOutDir)?),
        };
        let protos: Vec<PathBuf> = protos.iter().map(|p| p.as_ref().to_path_buf()).collect();
        if protos.is_empty() {
            return Err(Error::NoProtos);
        }
        // A typo in a path, said as such (protox would say the file is in no include path). A
        // name may also be given relative to an include path, as protoc takes it.
        let absent = |p: &&PathBuf| {
            !p.exists()
                && (p.is_absolute() || !includes.iter().any(|i| i.as_ref().join(p).exists()))
        };
        if let Some(missing) = protos.iter().find(absent) {
            let base = std::env::current_dir()
                .map(|d| format!(" (paths are relative to {})", d.display()))
                .unwrap_or_default();
            return Err(Error::Proto(format!(
                "could not compile the .proto files: `{}` does not exist{base}; check the path",
                missing.display()
            )));
        }
        // Values given to the setters, checked as the plugin checks its parameters.
        self.options.validate()?;
        let includes: Vec<PathBuf> = includes.iter().map(|p| p.as_ref().to_path_buf()).collect();
        let (protos, includes) = absolute_if_mixed(protos, includes);
        let rerun = self
            .emit_rerun_if_changed
            .unwrap_or_else(|| std::env::var_os("CARGO").is_some());
        // The file each name stands for: itself, or, for a name relative to an include path,
        // the file under the first include path holding it (a path Cargo can watch).
        let inputs: Vec<PathBuf> = protos
            .iter()
            .map(|p| {
                if p.exists() || p.is_absolute() {
                    return p.clone();
                }
                includes
                    .iter()
                    .map(|i| i.join(p))
                    .find(|joined| joined.exists())
                    .unwrap_or_else(|| p.clone())
            })
            .collect();
        // Report inputs first, so a failed compile still reruns once the .proto is fixed.
        if rerun {
            for input in &inputs {
                println!("cargo:rerun-if-changed={}", input.display());
            }
            // The manifest says under which name the crate uses the runtime (a rename changes
            // every path in the generated code), and may inherit that from the workspace's.
            if let Some(dir) = env_var("CARGO_MANIFEST_DIR") {
                let dir = PathBuf::from(dir);
                println!(
                    "cargo:rerun-if-changed={}",
                    dir.join("Cargo.toml").display()
                );
                let root = project::workspace_root(&dir);
                if root != dir {
                    println!(
                        "cargo:rerun-if-changed={}",
                        root.join("Cargo.toml").display()
                    );
                }
            }
        }
        let resolved = Self::resolve_runtime()?;
        let mut options = self.options.clone();
        // A crate that depends on the runtime under another name (`rt = { package =
        // "rmicro-runtime", ... }`): its generated code names the runtime by that name.
        if options.runtime_path == "::rmicro_runtime" {
            if let Some(dir) = env_var("CARGO_MANIFEST_DIR") {
                if let Some((_, name)) = project::renamed_runtime(Path::new(&dir)) {
                    options.runtime_path = format!("::{name}");
                }
            }
        }
        match (options.api, &resolved) {
            (None, Some(resolved)) => {
                options.api = Some(
                    project::common_api(&resolved.runtimes)
                        .map_err(|e| Error::NoCommonApi(e.build_advice()))?,
                );
            }
            // A level asked for in build.rs that the crate's runtime refuses: said as such, not
            // as a generated file to regenerate (which build.rs would only write again).
            (Some(api), Some(resolved)) => {
                if let Some(refusing) = resolved.runtimes.iter().find(|r| !r.accepts(api)) {
                    return Err(Error::NoCommonApi(format!(
                        "build.rs asks for API {api} (`Config::api({api})`), but this crate \
                         resolves rmicro-runtime {}, which accepts API {}..={}: remove \
                         `.api({api})` to generate for the runtime's API, or ask for one it \
                         accepts",
                        refusing.version, refusing.api_min, refusing.api
                    )));
                }
            }
            (_, None) => {}
        }
        let (files, read) = crate::generate(&options, &protos, &includes)?;
        if rerun {
            for path in read.iter().filter(|p| !inputs.contains(p)) {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
        if rerun {
            for path in &self.checked_in {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
        // Checked before anything is written, so a failure leaves no part of the output.
        if out_dir.exists() && !out_dir.is_dir() {
            return Err(Error::Output(format!(
                "the output directory `{}` is a file, not a directory; give `out_dir` a \
                 directory",
                out_dir.display()
            )));
        }
        if let Some(file) = files.iter().find(|f| out_dir.join(&f.name).is_dir()) {
            return Err(Error::Output(format!(
                "cannot write `{}`: a directory of that name is in the way; remove it or choose \
                 another `include_file` name",
                out_dir.join(&file.name).display()
            )));
        }
        let mut written = Vec::with_capacity(files.len());
        for file in files {
            let path = out_dir.join(&file.name);
            crate::write_if_changed(&path, file.content.as_bytes())?;
            written.push(path);
        }
        self.verify(written.clone(), resolved.as_ref())?;
        Ok(written)
    }

    /// [`Config::try_compile`] for build.rs: on error, prints one `error:` line Cargo shows and
    /// exits the build script with status 1.
    pub fn compile(&self, protos: &[impl AsRef<Path>], includes: &[impl AsRef<Path>]) {
        if let Err(err) = self.try_compile(protos, includes) {
            fail(&err);
        }
    }
}

/// `protos` and `includes`, with every path relative to the working directory made absolute
/// when some given paths are absolute and others relative: protox finds a file's include path
/// by comparing the paths as written, so `proto/user.proto` under the include path
/// `concat!(env!("CARGO_MANIFEST_DIR"), "/proto")` would be in none. A name relative to an
/// include path (no such file from the working directory) is left as it is.
fn absolute_if_mixed(protos: Vec<PathBuf>, includes: Vec<PathBuf>) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let from_cwd = |p: &PathBuf| p.is_absolute() || p.exists();
    let paths = || protos.iter().filter(|p| from_cwd(p)).chain(&includes);
    let mixed = paths().any(|p| p.is_absolute()) && paths().any(|p| p.is_relative());
    let Ok(cwd) = std::env::current_dir() else {
        return (protos, includes);
    };
    if !mixed {
        return (protos, includes);
    }
    let absolute = |p: PathBuf| if p.is_relative() { cwd.join(p) } else { p };
    let protos = protos
        .into_iter()
        .map(|p| if from_cwd(&p) { absolute(p) } else { p })
        .collect();
    (protos, includes.into_iter().map(absolute).collect())
}

/// Prints `err` the way Cargo shows a failed build script, and exits with status 1.
fn fail(err: &Error) -> ! {
    eprintln!("error: rmicro-build: {err}");
    std::process::exit(1);
}

/// Where Cargo takes rmicro-runtime `version` from, as the lock file of the package at `dir`
/// says: [`Origin::Unknown`] without a lock file, or when it locks that version from several
/// sources.
fn locked_origin(dir: &Path, version: &str) -> Origin {
    let Some(locked) =
        project::find_lockfile(dir).and_then(|lockfile| project::locked_runtimes(&lockfile).ok())
    else {
        return Origin::Unknown;
    };
    let mut origins = locked
        .iter()
        .filter(|runtime| runtime.version == version)
        .map(|runtime| Origin::of_lock_source(runtime.source.as_deref()));
    match (origins.next(), origins.next()) {
        (Some(origin), None) => origin,
        _ => Origin::Unknown,
    }
}

/// The `DEP_…` prefixes of the rmicro-runtime `links` metadata in this build script's
/// environment, one per runtime the crate depends on directly: `DEP_RMICRO_RUNTIME_0_1` (the
/// `links` name carries the release line) or, from runtimes before that, `DEP_RMICRO_RUNTIME`.
fn links_prefixes() -> Vec<String> {
    links_prefixes_in(std::env::vars_os().filter_map(|(key, _)| key.into_string().ok()))
}

/// [`links_prefixes`] among the variable names `keys`.
fn links_prefixes_in(keys: impl Iterator<Item = String>) -> Vec<String> {
    let mut prefixes: Vec<String> = keys
        .filter_map(|key| key.strip_suffix("_API_MIN").map(str::to_string))
        .filter(|prefix| {
            prefix == "DEP_RMICRO_RUNTIME"
                || prefix
                    .strip_prefix("DEP_RMICRO_RUNTIME_")
                    .is_some_and(|line| line.bytes().all(|b| b.is_ascii_digit() || b == b'_'))
        })
        .collect();
    prefixes.sort();
    prefixes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_metadata_is_found_under_any_release_line() {
        let keys = [
            "DEP_RMICRO_RUNTIME_0_1_API_MIN",
            "DEP_RMICRO_RUNTIME_0_1_API",
            "DEP_RMICRO_RUNTIME_2_API_MIN",
            "DEP_RMICRO_RUNTIME_API_MIN",
            "DEP_RMICRO_RUNTIMEX_API_MIN",
            "DEP_RMICRO_RUNTIME_EXTRA_API_MIN",
            "PATH",
        ];
        assert_eq!(
            links_prefixes_in(keys.into_iter().map(String::from)),
            [
                "DEP_RMICRO_RUNTIME",
                "DEP_RMICRO_RUNTIME_0_1",
                "DEP_RMICRO_RUNTIME_2"
            ]
        );
    }
}
