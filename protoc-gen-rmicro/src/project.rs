//! What a Cargo project resolves: the `rmicro-runtime` versions its `Cargo.lock` locks for a
//! package (the runtimes in that package's dependency closure, reached directly or through
//! re-exporting crates), and the API range each of them accepts.
//!
//! The range of a runtime version comes from, in order: the releases this crate knows (runtime and
//! plugin are released together, so its own version is always known), then the runtime's own
//! `Cargo.toml` (`[package.metadata.rmicro] api`, `api-min`): where a path dependency in the
//! project's manifests or a `[patch]` in Cargo's configuration files points, in Cargo's registry
//! cache, or in the git checkout of the locked
//! commit. That covers releases newer than this crate and runtimes used from a checkout. A
//! manifest is only believed when its version (inherited from its workspace or not) is the
//! locked one.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::VERSION;

mod api_choice;
mod cargo_home;
mod config_patch;
mod install;
mod lock;
mod manifests;
mod releases;
mod workspace;

pub use api_choice::{choose_api, common_api, shared_range, NoCommonApi};
pub use install::{lexically_normal, Origin};
pub use lock::{find_lockfile, locked_runtimes, LockedRuntime};
pub use manifests::{owning_package, renamed_runtime, Package};
pub use releases::{known_range, release_line};
pub use workspace::workspace_root;

use cargo_home::{cargo_home, git_range, registry_range};
use lock::{closure_runtimes, read_lock, runtimes_in};
use manifests::{manifest_range, path_dependencies};
use workspace::project_manifests;

/// A locked runtime with the API range it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    /// Its version.
    pub version: String,
    /// The oldest API level it accepts.
    pub api_min: u32,
    /// The newest API level it accepts (its own).
    pub api: u32,
    /// The runtime's `Cargo.toml` the range was read from, when it came from one (else from the
    /// releases this crate knows, or Cargo's `links` metadata).
    pub manifest: Option<PathBuf>,
    /// Where Cargo takes it from.
    pub origin: Origin,
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
         (`cargo add rmicro-runtime`, or from a checkout `cargo add --path \
         <checkout>/rmicro-runtime`) and build once",
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
         in the project's Cargo.toml files or a `path` patch in its .cargo/config.toml files, not \
         in Cargo's registry cache or git checkouts); \
         build the project once (`cargo fetch` downloads the runtime) and retry, or use the tools \
         released with it: `{}` (and `{}` for `rmicro check`); the plugin also takes `api=N` to \
         choose a level",
        install(version, origin, "protoc-gen-rmicro"),
        install(version, origin, "rmicro")
    )]
    UnknownVersion {
        /// The version.
        version: String,
        /// Where Cargo takes it from.
        origin: Origin,
    },
}

/// The command that installs `tool` as released with rmicro-runtime `version` from `origin`.
fn install(version: &str, origin: &Origin, tool: &str) -> String {
    Runtime {
        version: version.to_string(),
        api_min: 0,
        api: 0,
        manifest: None,
        origin: origin.clone(),
    }
    .install_command(tool)
}

/// The entries of `dir`, sorted (so that a search does not depend on the file system's order).
fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    entries.sort();
    entries
}

/// The API range of `locked`; `manifests` are the project's `Cargo.toml` files, whose `path`
/// dependencies may lead to a runtime used from a checkout. (A runtime patched to a checkout in
/// a Cargo configuration file is found by [`resolve_package`], which reads those files.)
///
/// # Errors
///
/// [`ProjectError::UnknownVersion`] when the release is not known and no copy of its manifest is
/// found.
pub fn runtime(locked: &LockedRuntime, manifests: &[PathBuf]) -> Result<Runtime, ProjectError> {
    runtime_in(locked, &[], manifests)
}

/// [`runtime`], where `config_patched` are the `path` patches of Cargo's configuration files,
/// searched first: Cargo prefers them to the manifests' patches.
fn runtime_in(
    locked: &LockedRuntime,
    config_patched: &[(String, PathBuf)],
    manifests: &[PathBuf],
) -> Result<Runtime, ProjectError> {
    let version = &locked.version;
    let known = || known_range(version).map(|range| (range, None));
    let from_path = || {
        config_patched
            .iter()
            .cloned()
            .chain(manifests.iter().flat_map(|m| path_dependencies(m)))
            .filter(|(package, _)| package == "rmicro-runtime")
            .map(|(_, dir)| dir.join("Cargo.toml"))
            .find_map(|m| manifest_range(&m, version).map(|range| (range, Some(m))))
    };
    let found = match locked.source.as_deref() {
        None => from_path().or_else(known),
        Some(source) if source.starts_with("git+") => git_range(version, source)
            .map(|(range, m)| (range, Some(m)))
            .or_else(known),
        Some(_) => known().or_else(|| registry_range(version).map(|range| (range, None))),
    };
    let ((api_min, api), manifest) = found.ok_or_else(|| ProjectError::UnknownVersion {
        version: version.clone(),
        origin: Origin::of_lock_source(locked.source.as_deref()),
    })?;
    let origin = match Origin::of_lock_source(locked.source.as_deref()) {
        Origin::Path { .. } => Origin::Path {
            dir: manifest
                .as_deref()
                .and_then(Path::parent)
                .map(Path::to_path_buf),
        },
        origin => origin,
    };
    Ok(Runtime {
        version: version.clone(),
        api_min,
        api,
        manifest,
        origin,
    })
}

/// The runtimes resolved for one package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The runtimes, each with its API range.
    pub runtimes: Vec<Runtime>,
    /// The package whose dependency closure they were taken from; `None` when every runtime
    /// the lock file locks was taken (the path belongs to no package the lock file lists, or
    /// that package's dependencies reach none).
    pub package: Option<Package>,
    /// How many different runtimes the lock file locks in all.
    pub locked: usize,
}

impl Resolution {
    /// `Cargo.lock at <lockfile>`, naming the package when the lock file locks several runtimes
    /// (so that it matters whose they are).
    pub fn describe(&self, lockfile: &Path) -> String {
        match &self.package {
            Some(package) if self.locked > 1 => format!(
                "Cargo.lock at {}, for package `{}`",
                lockfile.display(),
                package.name
            ),
            _ => format!("Cargo.lock at {}", lockfile.display()),
        }
    }
}

/// The runtimes `lockfile` locks for the package that owns `from` (a file or directory): those
/// it depends on itself, else those in its dependency closure (see `lock::closure_runtimes`).
/// When `from` belongs to no package the lock file lists
/// (or its dependencies reach no runtime), every locked runtime. A runtime used from a
/// checkout is looked for at the `path` patches of the Cargo configuration files read for a
/// build run at the workspace root, where `lockfile` is (`.cargo/config.toml` there or above,
/// then `$CARGO_HOME`'s; they win over the manifests', as in Cargo), then at the `path`
/// dependencies of the project's manifests (see [`runtime`]). Cargo reads the configuration
/// files of the directory it is run in, which a build script or protoc cannot know: a member's
/// own `.cargo/config.toml`, which Cargo reads only when run inside that member, is not read.
///
/// # Errors
///
/// When the lock file cannot be read, locks no runtime, or locks one of unknown range.
pub fn resolve_package(lockfile: &Path, from: &Path) -> Result<Resolution, ProjectError> {
    let lock = read_lock(lockfile)?;
    let all = runtimes_in(&lock);
    if all.is_empty() {
        return Err(ProjectError::NoRuntime {
            path: lockfile.to_path_buf(),
        });
    }
    let package = owning_package(from);
    let (locked, package) = match package
        .as_ref()
        .and_then(|p| closure_runtimes(&lock, p))
        .filter(|runtimes| !runtimes.is_empty())
    {
        Some(runtimes) => (runtimes, package),
        None => (all.clone(), None),
    };
    let root = lockfile.parent().unwrap_or(from);
    let config_patched = config_patch::config_patches(root, cargo_home().as_deref());
    let manifests = project_manifests(lockfile, from, &config_patched);
    let runtimes = locked
        .iter()
        .map(|l| runtime_in(l, &config_patched, &manifests))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Resolution {
        runtimes,
        package,
        locked: all.len(),
    })
}

/// The runtimes of [`resolve_package`].
///
/// # Errors
///
/// As [`resolve_package`].
pub fn resolve(lockfile: &Path, from: &Path) -> Result<Vec<Runtime>, ProjectError> {
    resolve_package(lockfile, from).map(|r| r.runtimes)
}
