//! What a Cargo project resolves: the `rmicro-runtime` versions its `Cargo.lock` locks, and the API
//! range each of them accepts.
//!
//! The range of a runtime version comes from, in order: the releases this crate knows (runtime and
//! plugin are released together, so its own version is always known), then the runtime's own
//! `Cargo.toml` in Cargo's registry cache (`[package.metadata.rmicro] api`, `api-min`), which
//! covers releases newer than this crate.

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
        "cannot tell which API rmicro-runtime {version} accepts: it is newer than this tool \
         ({VERSION}) and its Cargo.toml is not in Cargo's registry cache; run `cargo fetch` and \
         retry, or upgrade: `cargo install protoc-gen-rmicro --version {version} --locked`"
    )]
    UnknownVersion {
        /// The version.
        version: String,
    },
}

/// The nearest `Cargo.lock` at or above `start`.
pub fn find_lockfile(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|dir| dir.join("Cargo.lock"))
        .find(|p| p.is_file())
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

/// The API range declared in a cached registry copy of `rmicro-runtime {version}`.
fn registry_range(version: &str) -> Option<(u32, u32)> {
    let src = cargo_home()?.join("registry").join("src");
    for index in std::fs::read_dir(src).ok()?.flatten() {
        let manifest = index
            .path()
            .join(format!("rmicro-runtime-{version}"))
            .join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let Ok(table) = text.parse::<toml::Table>() else {
            continue;
        };
        let rmicro = table
            .get("package")
            .and_then(|p| p.get("metadata"))
            .and_then(|m| m.get("rmicro"))?;
        let level = |key: &str| {
            rmicro
                .get(key)
                .and_then(toml::Value::as_integer)
                .and_then(|n| u32::try_from(n).ok())
        };
        return Some((level("api-min")?, level("api")?));
    }
    None
}

/// The API range of `runtime`.
///
/// # Errors
///
/// [`ProjectError::UnknownVersion`] when neither this crate nor Cargo's cache knows the release.
pub fn runtime(locked: &LockedRuntime) -> Result<Runtime, ProjectError> {
    let (api_min, api) = known_range(&locked.version)
        .or_else(|| registry_range(&locked.version))
        .ok_or_else(|| ProjectError::UnknownVersion {
            version: locked.version.clone(),
        })?;
    Ok(Runtime {
        version: locked.version.clone(),
        api_min,
        api,
    })
}

/// Every runtime `lockfile` locks, with its API range.
///
/// # Errors
///
/// When the lock file cannot be read, locks no runtime, or locks one of unknown range.
pub fn resolve(lockfile: &Path) -> Result<Vec<Runtime>, ProjectError> {
    let locked = locked_runtimes(lockfile)?;
    if locked.is_empty() {
        return Err(ProjectError::NoRuntime {
            path: lockfile.to_path_buf(),
        });
    }
    locked.iter().map(runtime).collect()
}

/// The newest API level this generator emits that every runtime in `runtimes` accepts.
///
/// # Errors
///
/// [`crate::Error::UnsupportedApi`]-style advice as a message, naming the plugin version to install.
pub fn choose_api(runtimes: &[Runtime]) -> Result<u32, String> {
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
    let direction = if blocking.api < MIN_API {
        "older"
    } else {
        "newer"
    };
    Err(format!(
        "{blocking}, but protoc-gen-rmicro {VERSION} emits API {MIN_API}..={MAX_API}; the runtime is \
         {direction} than any level this plugin emits. Install the plugin that matches it: \
         `cargo install protoc-gen-rmicro --version {} --locked` (or pass api=N to choose a level)",
        blocking.version
    ))
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
