//! What a Cargo project resolves: the `rmicro-runtime` versions its `Cargo.lock` locks, and the API
//! range each of them accepts.
//!
//! The range of a runtime version comes from, in order: the releases this crate knows (runtime and
//! plugin are released together, so its own version is always known), then the runtime's own
//! `Cargo.toml` (`[package.metadata.rmicro] api`, `api-min`): where a path dependency in the
//! project's manifests points, in Cargo's registry cache, or in its git checkouts. That covers
//! releases newer than this crate and runtimes used from a checkout.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::{MAX_API, MIN_API, VERSION};

/// A release line `(major, minor)` of rmicro-runtime and the API range `(min, max)` it accepts.
type Release = ((u64, u64), (u32, u32));

/// Releases of rmicro-runtime before this one. This crate's own release line is added by
/// [`known_range`].
const PAST_RELEASES: &[Release] = &[];

/// One `rmicro-runtime` package locked in a `Cargo.lock`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedRuntime {
    /// Its version.
    pub version: String,
    /// Its `source` (`registry+…`, `git+…`), or `None` for a path dependency.
    pub source: Option<String>,
}

/// A locked runtime with the API range it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    /// Its version.
    pub version: String,
    /// The oldest API level it accepts.
    pub api_min: u32,
    /// The newest API level it accepts (its own).
    pub api: u32,
}

impl Runtime {
    /// Whether code generated for `level` compiles against this runtime.
    pub fn accepts(&self, level: u32) -> bool {
        (self.api_min..=self.api).contains(&level)
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rmicro-runtime {} (accepts API {}..={})",
            self.version, self.api_min, self.api
        )
    }
}

/// Why a project's runtime could not be determined.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProjectError {
    /// The lock file could not be read.
    #[error("could not read {}: {message}", path.display())]
    Read {
        /// The lock file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The lock file is not valid TOML of Cargo's shape.
    #[error("{} is not a valid Cargo.lock: {message}", path.display())]
    Parse {
        /// The lock file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The lock file locks no rmicro-runtime.
    #[error(
        "{} locks no rmicro-runtime; add it to the crate that holds the generated code \
         (`cargo add rmicro-runtime`) and build once",
        path.display()
    )]
    NoRuntime {
        /// The lock file.
        path: PathBuf,
    },
    /// A locked runtime version whose API range is unknown here.
    #[error(
        "cannot tell which API rmicro-runtime {version} accepts: it is not a release this tool \
         ({VERSION}) knows, and no copy of its Cargo.toml was found (not at a `path` dependency \
         in the project's Cargo.toml files, not in Cargo's registry cache or git checkouts); \
         build the project once (`cargo fetch` downloads the runtime) and retry, or use the tools \
         released with it: `cargo install protoc-gen-rmicro --version {version} --locked` (and \
         `cargo install rmicro --version {version} --locked` for `rmicro check`); the plugin also \
         takes `api=N` to choose a level"
    )]
    UnknownVersion {
        /// The version.
        version: String,
    },
}

/// The `Cargo.lock` Cargo uses for the package at or above `start`: the one next to its
/// workspace root's manifest (a member's own stale `Cargo.lock` is not Cargo's). Without a
/// `Cargo.toml` above `start`, the nearest `Cargo.lock`.
pub fn find_lockfile(start: &Path) -> Option<PathBuf> {
    let Some(package) = start
        .ancestors()
        .find(|dir| dir.join("Cargo.toml").is_file())
    else {
        return start
            .ancestors()
            .map(|dir| dir.join("Cargo.lock"))
            .find(|p| p.is_file());
    };
    let lock = workspace_root(package).join("Cargo.lock");
    lock.is_file().then_some(lock)
}

fn read_manifest(path: &Path) -> Option<toml::Table> {
    std::fs::read_to_string(path).ok()?.parse().ok()
}

/// The root of the workspace `package` (a directory holding a `Cargo.toml`) belongs to, as Cargo
/// finds it: its `package.workspace` key, else the nearest manifest at or above it with a
/// `[workspace]` table that does not exclude it, else the package itself.
fn workspace_root(package: &Path) -> PathBuf {
    for dir in package.ancestors() {
        let Some(manifest) = read_manifest(&dir.join("Cargo.toml")) else {
            continue;
        };
        if dir == package {
            let explicit = manifest
                .get("package")
                .and_then(|p| p.get("workspace"))
                .and_then(toml::Value::as_str);
            if let Some(explicit) = explicit {
                return package.join(explicit);
            }
        }
        let Some(workspace) = manifest.get("workspace") else {
            continue;
        };
        let excluded = workspace
            .get("exclude")
            .and_then(toml::Value::as_array)
            .is_some_and(|paths| {
                paths
                    .iter()
                    .filter_map(toml::Value::as_str)
                    .any(|p| package.starts_with(dir.join(p)))
            });
        if dir == package || !excluded {
            return dir.to_path_buf();
        }
    }
    package.to_path_buf()
}

/// The `rmicro-runtime` packages locked in `lockfile`.
///
/// # Errors
///
/// When the file cannot be read or parsed.
pub fn locked_runtimes(lockfile: &Path) -> Result<Vec<LockedRuntime>, ProjectError> {
    let text = std::fs::read_to_string(lockfile).map_err(|err| ProjectError::Read {
        path: lockfile.to_path_buf(),
        message: err.to_string(),
    })?;
    let parse_err = |message: String| ProjectError::Parse {
        path: lockfile.to_path_buf(),
        message,
    };
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| parse_err(e.to_string()))?;
    let packages = match table.get("package") {
        Some(toml::Value::Array(packages)) => packages.as_slice(),
        Some(_) => return Err(parse_err("`package` is not an array of tables".into())),
        None => &[],
    };
    let mut out = Vec::new();
    for package in packages {
        let field = |key: &str| package.get(key).and_then(toml::Value::as_str);
        if field("name") == Some("rmicro-runtime") {
            let version = field("version")
                .ok_or_else(|| parse_err("an rmicro-runtime package has no version".into()))?;
            out.push(LockedRuntime {
                version: version.to_string(),
                source: field("source").map(str::to_string),
            });
        }
    }
    Ok(out)
}

/// The API range `(min, max)` of a runtime release, if this crate knows the release.
pub fn known_range(version: &str) -> Option<(u32, u32)> {
    let line = major_minor(version)?;
    if Some(line) == major_minor(VERSION) {
        return Some((MIN_API, MAX_API));
    }
    PAST_RELEASES
        .iter()
        .find(|(release, _)| *release == line)
        .map(|(_, range)| *range)
}

/// The release line of `version` as a Cargo requirement names it: `major.minor` (`0.1.3` →
/// `0.1`), or the version itself when it has no such form.
pub fn release_line(version: &str) -> String {
    major_minor(version).map_or_else(
        || version.to_string(),
        |(major, minor)| format!("{major}.{minor}"),
    )
}

fn major_minor(version: &str) -> Option<(u64, u64)> {
    let mut parts = version.split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Cargo's home directory: `CARGO_HOME`, else `~/.cargo`.
fn cargo_home() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
}

/// The API range a runtime's `Cargo.toml` declares, if it is `rmicro-runtime {version}`.
fn manifest_range(manifest: &Path, version: &str) -> Option<(u32, u32)> {
    let table = read_manifest(manifest)?;
    let package = table.get("package")?;
    if package.get("name")?.as_str()? != "rmicro-runtime" {
        return None;
    }
    // A version inherited from a workspace (`version.workspace = true`) is not checked.
    if let Some(declared) = package.get("version").and_then(toml::Value::as_str) {
        if declared != version {
            return None;
        }
    }
    let rmicro = package.get("metadata")?.get("rmicro")?;
    let level = |key: &str| {
        rmicro
            .get(key)
            .and_then(toml::Value::as_integer)
            .and_then(|n| u32::try_from(n).ok())
    };
    Some((level("api-min")?, level("api")?))
}

/// The API range declared by a cached registry copy of `rmicro-runtime {version}`.
fn registry_range(version: &str) -> Option<(u32, u32)> {
    let src = cargo_home()?.join("registry").join("src");
    std::fs::read_dir(src).ok()?.flatten().find_map(|index| {
        manifest_range(
            &index
                .path()
                .join(format!("rmicro-runtime-{version}"))
                .join("Cargo.toml"),
            version,
        )
    })
}

/// The API range declared by a copy of `rmicro-runtime {version}` in Cargo's git checkouts
/// (`checkouts/<repository>/<revision>/`, the runtime at the top or in `rmicro-runtime/`).
fn git_range(version: &str) -> Option<(u32, u32)> {
    let checkouts = cargo_home()?.join("git").join("checkouts");
    for repository in std::fs::read_dir(checkouts).ok()?.flatten() {
        let Ok(revisions) = std::fs::read_dir(repository.path()) else {
            continue;
        };
        for revision in revisions.flatten() {
            let root = revision.path();
            for manifest in [
                root.join("Cargo.toml"),
                root.join("rmicro-runtime").join("Cargo.toml"),
            ] {
                if let Some(range) = manifest_range(&manifest, version) {
                    return Some(range);
                }
            }
        }
    }
    None
}

/// The directories `path` dependencies on rmicro-runtime point at in `manifest` (under any
/// dependency table, renamed or not, and `[workspace.dependencies]`).
fn runtime_paths(manifest: &Path) -> Vec<PathBuf> {
    let Some(table) = read_manifest(manifest) else {
        return Vec::new();
    };
    let dir = manifest.parent().unwrap_or(Path::new("."));
    let mut tables: Vec<&toml::Table> = Vec::new();
    for kind in ["dependencies", "dev-dependencies", "build-dependencies"] {
        tables.extend(table.get(kind).and_then(toml::Value::as_table));
        let targets = table.get("target").and_then(toml::Value::as_table);
        for target in targets.into_iter().flat_map(|t| t.values()) {
            tables.extend(target.get(kind).and_then(toml::Value::as_table));
        }
    }
    tables.extend(
        table
            .get("workspace")
            .and_then(|w| w.get("dependencies"))
            .and_then(toml::Value::as_table),
    );
    let mut out = Vec::new();
    for deps in tables {
        for (key, dep) in deps {
            let package = dep.get("package").and_then(toml::Value::as_str);
            if package.unwrap_or(key) != "rmicro-runtime" {
                continue;
            }
            if let Some(path) = dep.get("path").and_then(toml::Value::as_str) {
                out.push(dir.join(path));
            }
        }
    }
    out
}

/// The API range of `locked`; `manifests` are the project's `Cargo.toml` files, whose `path`
/// dependencies may lead to a runtime used from a checkout.
///
/// # Errors
///
/// [`ProjectError::UnknownVersion`] when the release is not known and no copy of its manifest is
/// found.
pub fn runtime(locked: &LockedRuntime, manifests: &[PathBuf]) -> Result<Runtime, ProjectError> {
    let version = &locked.version;
    let from_path = || {
        manifests
            .iter()
            .flat_map(|m| runtime_paths(m))
            .find_map(|dir| manifest_range(&dir.join("Cargo.toml"), version))
    };
    let range = match locked.source.as_deref() {
        None => from_path().or_else(|| known_range(version)),
        Some(source) if source.starts_with("git+") => {
            git_range(version).or_else(|| known_range(version))
        }
        Some(_) => known_range(version).or_else(|| registry_range(version)),
    };
    let (api_min, api) = range.ok_or_else(|| ProjectError::UnknownVersion {
        version: version.clone(),
    })?;
    Ok(Runtime {
        version: version.clone(),
        api_min,
        api,
    })
}

/// Every runtime `lockfile` locks, with its API range. `from` is where the project was looked
/// for (the package's directory or one below it): its manifest and the workspace root's are
/// searched for `path` dependencies on the runtime.
///
/// # Errors
///
/// When the lock file cannot be read, locks no runtime, or locks one of unknown range.
pub fn resolve(lockfile: &Path, from: &Path) -> Result<Vec<Runtime>, ProjectError> {
    let locked = locked_runtimes(lockfile)?;
    if locked.is_empty() {
        return Err(ProjectError::NoRuntime {
            path: lockfile.to_path_buf(),
        });
    }
    let mut manifests: Vec<PathBuf> = from
        .ancestors()
        .map(|dir| dir.join("Cargo.toml"))
        .find(|m| m.is_file())
        .into_iter()
        .collect();
    let root = lockfile.with_file_name("Cargo.toml");
    if !manifests.contains(&root) {
        manifests.push(root);
    }
    locked.iter().map(|l| runtime(l, &manifests)).collect()
}

/// No API level this generator emits is accepted by `runtime` (one of a project's runtimes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoCommonApi {
    /// The runtime that accepts none of them.
    pub runtime: Runtime,
    /// Whether it is newer than every level emitted (else older).
    pub newer: bool,
}

impl NoCommonApi {
    fn direction(&self) -> &'static str {
        if self.newer {
            "newer"
        } else {
            "older"
        }
    }

    /// The message for the protoc plugin: install the plugin released with the runtime.
    pub fn plugin_advice(&self) -> String {
        format!(
            "{}, but protoc-gen-rmicro {VERSION} emits API {MIN_API}..={MAX_API}; the runtime is \
             {} than any level this plugin emits. Install the plugin that matches it: \
             `cargo install protoc-gen-rmicro --version {} --locked` (or pass api=N to choose a \
             level)",
            self.runtime,
            self.direction(),
            self.runtime.version
        )
    }

    /// The message for build.rs generation: the build-dependency has to match the runtime.
    pub fn build_advice(&self) -> String {
        let runtime_line = release_line(&self.runtime.version);
        format!(
            "{}, but rmicro-build {VERSION} generates API {MIN_API}..={MAX_API}; the runtime is \
             {} than any level it generates. Use the rmicro-build released with the runtime, in \
             Cargo.toml: `[build-dependencies] rmicro-build = \"{runtime_line}\"`, or require the \
             runtime released with this rmicro-build: `rmicro-runtime = \"{}\"`",
            self.runtime,
            self.direction(),
            release_line(VERSION),
        )
    }
}

/// The newest API level this generator emits that every runtime in `runtimes` accepts.
///
/// # Errors
///
/// [`NoCommonApi`] naming a runtime that accepts none of them.
pub fn common_api(runtimes: &[Runtime]) -> Result<u32, NoCommonApi> {
    let choice = (MIN_API..=MAX_API)
        .rev()
        .find(|level| runtimes.iter().all(|r| r.accepts(*level)));
    if let Some(level) = choice {
        return Ok(level);
    }
    let blocking = runtimes
        .iter()
        .find(|r| !(MIN_API..=MAX_API).any(|level| r.accepts(level)))
        .unwrap_or(&runtimes[0]);
    Err(NoCommonApi {
        runtime: blocking.clone(),
        newer: blocking.api >= MIN_API,
    })
}

/// [`common_api`], with the plugin's advice as the error.
///
/// # Errors
///
/// [`NoCommonApi::plugin_advice`] when no level fits.
pub fn choose_api(runtimes: &[Runtime]) -> Result<u32, String> {
    common_api(runtimes).map_err(|e| e.plugin_advice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_release_line_is_known() {
        assert_eq!(known_range(VERSION), Some((MIN_API, MAX_API)));
        assert_eq!(known_range("999.0.0"), None);
        assert_eq!(known_range("garbage"), None);
    }

    #[test]
    fn build_advice_names_the_build_dependency_to_change() {
        let runtime = Runtime {
            version: "7.3.1".into(),
            api_min: 50,
            api: 60,
        };
        let err = common_api(std::slice::from_ref(&runtime)).unwrap_err();
        assert_eq!(err.runtime, runtime);
        let advice = err.build_advice();
        assert!(
            advice.contains("the runtime is newer than any level it generates"),
            "{advice}"
        );
        assert!(
            advice.contains("`[build-dependencies] rmicro-build = \"7.3\"`"),
            "{advice}"
        );
        assert!(!advice.contains("cargo install"), "{advice}");
        assert!(err
            .plugin_advice()
            .contains("cargo install protoc-gen-rmicro --version 7.3.1"));
    }

    #[test]
    fn choose_api_picks_the_newest_common_level() {
        let rt = |api_min, api| Runtime {
            version: "x".into(),
            api_min,
            api,
        };
        assert_eq!(choose_api(&[rt(1, 1)]), Ok(1));
        assert_eq!(choose_api(&[rt(1, 5)]), Ok(MAX_API));
        let err = choose_api(&[rt(50, 60)]).unwrap_err();
        assert!(
            err.contains("newer than any level this plugin emits"),
            "{err}"
        );
    }
}
