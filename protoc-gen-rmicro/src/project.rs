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

use crate::{MAX_API, MIN_API, VERSION};

mod config_patch;

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
    /// The runtime's `Cargo.toml` the range was read from, when it came from one (else from the
    /// releases this crate knows, or Cargo's `links` metadata).
    pub manifest: Option<PathBuf>,
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
         in the project's Cargo.toml files or a `path` patch in its .cargo/config.toml files, not \
         in Cargo's registry cache or git checkouts); \
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

/// One `[[package]]` of a `Cargo.lock`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LockPackage {
    name: String,
    version: String,
    source: Option<String>,
    /// Its `dependencies`: `name`, `name version` or `name version (source)`, as Cargo writes
    /// them (the version and source only where the name alone is ambiguous).
    dependencies: Vec<String>,
}

impl LockPackage {
    fn locked_runtime(&self) -> LockedRuntime {
        LockedRuntime {
            version: self.version.clone(),
            source: self.source.clone(),
        }
    }

    /// Whether a `dependencies` entry names this package.
    fn is_named_by(&self, dependency: &str) -> bool {
        let mut parts = dependency.splitn(3, ' ');
        if parts.next() != Some(self.name.as_str()) {
            return false;
        }
        if parts.next().is_some_and(|version| version != self.version) {
            return false;
        }
        match parts.next() {
            Some(source) => {
                let source = source.trim_start_matches('(').trim_end_matches(')');
                self.source.as_deref() == Some(source)
            }
            None => true,
        }
    }
}

/// The packages of `lockfile`.
fn read_lock(lockfile: &Path) -> Result<Vec<LockPackage>, ProjectError> {
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
        let Some(name) = field("name") else {
            continue;
        };
        let version = match field("version") {
            Some(version) => version,
            None if name == "rmicro-runtime" => {
                return Err(parse_err("an rmicro-runtime package has no version".into()))
            }
            None => continue,
        };
        let dependencies = package
            .get("dependencies")
            .and_then(toml::Value::as_array)
            .map(|deps| {
                deps.iter()
                    .filter_map(toml::Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        out.push(LockPackage {
            name: name.to_string(),
            version: version.to_string(),
            source: field("source").map(str::to_string),
            dependencies,
        });
    }
    Ok(out)
}

/// The `rmicro-runtime` packages locked in `lockfile`.
///
/// # Errors
///
/// When the file cannot be read or parsed.
pub fn locked_runtimes(lockfile: &Path) -> Result<Vec<LockedRuntime>, ProjectError> {
    Ok(runtimes_in(&read_lock(lockfile)?))
}

/// The `rmicro-runtime` packages among `lock`'s.
fn runtimes_in(lock: &[LockPackage]) -> Vec<LockedRuntime> {
    lock.iter()
        .filter(|p| p.name == "rmicro-runtime")
        .map(LockPackage::locked_runtime)
        .collect()
}

/// A Cargo package on disk: the one whose `Cargo.toml` is nearest at or above a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// Its name.
    pub name: String,
    /// Its version (inherited from the workspace or not; `None` when it cannot be read).
    pub version: Option<String>,
    /// Its `Cargo.toml`.
    pub manifest: PathBuf,
}

/// The package that owns `path` (a file or a directory): the nearest `Cargo.toml` at or above it
/// with a `[package]` table. `None` when the nearest manifest is a virtual workspace's (or there
/// is none): such a path belongs to no package.
pub fn owning_package(path: &Path) -> Option<Package> {
    let manifest = path
        .ancestors()
        .map(|dir| dir.join("Cargo.toml"))
        .find(|m| m.is_file())?;
    let table = read_manifest(&manifest)?;
    let name = table.get("package")?.get("name")?.as_str()?.to_string();
    Some(Package {
        name,
        version: manifest_version(&manifest, &table),
        manifest,
    })
}

/// The version a manifest declares: its own, or its workspace's for `version.workspace = true`,
/// or Cargo's default `0.0.0` when it has none. `None` when an inherited one cannot be found.
fn manifest_version(manifest: &Path, table: &toml::Table) -> Option<String> {
    let version = table.get("package")?.get("version");
    match version {
        None => Some("0.0.0".to_string()),
        Some(toml::Value::String(v)) => Some(v.clone()),
        Some(toml::Value::Table(t))
            if t.get("workspace").and_then(toml::Value::as_bool) == Some(true) =>
        {
            let root = workspace_root(manifest.parent()?);
            let root_manifest = read_manifest(&root.join("Cargo.toml"))?;
            root_manifest
                .get("workspace")?
                .get("package")?
                .get("version")?
                .as_str()
                .map(str::to_string)
        }
        Some(_) => None,
    }
}

/// The runtimes in the dependency closure of the locked package `package` (directly, or through
/// crates such as a platform crate that re-exports the runtime), or `None` when the lock file
/// does not list that package (or lists no dependencies for it).
fn closure_runtimes(lock: &[LockPackage], package: &Package) -> Option<Vec<LockedRuntime>> {
    let candidates: Vec<usize> = lock
        .iter()
        .enumerate()
        .filter(|(_, p)| p.name == package.name && p.source.is_none())
        .map(|(i, _)| i)
        .collect();
    let exact: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|&i| package.version.as_deref() == Some(lock[i].version.as_str()))
        .collect();
    let starts = if exact.is_empty() { candidates } else { exact };
    if starts.is_empty() {
        return None;
    }
    // The packages of each name: a dependency entry starts with its name.
    let mut by_name: std::collections::HashMap<&str, Vec<usize>> = std::collections::HashMap::new();
    for (i, p) in lock.iter().enumerate() {
        by_name.entry(p.name.as_str()).or_default().push(i);
    }
    let mut seen = vec![false; lock.len()];
    let mut queue = starts;
    let mut runtimes = Vec::new();
    while let Some(i) = queue.pop() {
        if std::mem::replace(&mut seen[i], true) {
            continue;
        }
        let package = &lock[i];
        if package.name == "rmicro-runtime" {
            let runtime = package.locked_runtime();
            if !runtimes.contains(&runtime) {
                runtimes.push(runtime);
            }
            continue;
        }
        for dependency in &package.dependencies {
            let name = dependency.split(' ').next().unwrap_or_default();
            let named = by_name.get(name).map(Vec::as_slice).unwrap_or_default();
            queue.extend(
                named
                    .iter()
                    .copied()
                    .filter(|&j| !seen[j] && lock[j].is_named_by(dependency)),
            );
        }
    }
    Some(runtimes)
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

/// The API range a runtime's `Cargo.toml` declares, if it is `rmicro-runtime {version}`: its
/// version, inherited from its workspace or not, must be the locked one.
fn manifest_range(manifest: &Path, version: &str) -> Option<(u32, u32)> {
    let table = read_manifest(manifest)?;
    let package = table.get("package")?;
    if package.get("name")?.as_str()? != "rmicro-runtime" {
        return None;
    }
    if manifest_version(manifest, &table)? != version {
        return None;
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

/// The entries of `dir`, sorted (so that a search does not depend on the file system's order).
fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    entries.sort();
    entries
}

/// The API range declared by a cached registry copy of `rmicro-runtime {version}`.
fn registry_range(version: &str) -> Option<(u32, u32)> {
    let src = cargo_home()?.join("registry").join("src");
    sorted_entries(&src).into_iter().find_map(|index| {
        let manifest = index
            .join(format!("rmicro-runtime-{version}"))
            .join("Cargo.toml");
        manifest_range(&manifest, version)
    })
}

/// The commit a git `source` is locked to: `git+URL?rev=…#<full commit hash>`.
fn git_commit(source: &str) -> Option<&str> {
    let (_, commit) = source.rsplit_once('#')?;
    (commit.len() >= 7 && commit.bytes().all(|b| b.is_ascii_hexdigit())).then_some(commit)
}

/// The `rmicro-runtime` manifest in Cargo's checkout of the commit `source` is locked to
/// (`checkouts/<repository>-<hash>/<short commit hash>/`, the runtime at the top, in
/// `rmicro-runtime/` or in a member of the checkout's workspace), with the API range it
/// declares. A checkout of another commit is never read: after a `rev` bump the old one is
/// still there. A source without a commit hash is matched by version alone.
fn git_range(version: &str, source: &str) -> Option<((u32, u32), PathBuf)> {
    let checkouts = cargo_home()?.join("git").join("checkouts");
    let commit = git_commit(source);
    for repository in sorted_entries(&checkouts) {
        for revision in sorted_entries(&repository) {
            let name = revision.file_name().and_then(|n| n.to_str()).unwrap_or("");
            // Cargo names the directory by the commit's short hash (7 digits or more).
            if let Some(commit) = commit {
                if name.len() < 7 || !commit.starts_with(name) {
                    continue;
                }
            }
            let mut manifests = vec![
                revision.join("Cargo.toml"),
                revision.join("rmicro-runtime").join("Cargo.toml"),
            ];
            manifests.extend(members(&revision.join("Cargo.toml")));
            if let Some(found) = manifests
                .into_iter()
                .find_map(|m| manifest_range(&m, version).map(|range| (range, m)))
            {
                return Some(found);
            }
        }
    }
    None
}

/// The name under which the package owning `dir` depends on rmicro-runtime, when it renamed
/// the dependency (`rt = { package = "rmicro-runtime", ... }`): the package and the Rust name
/// (`rt`). Generated code names `::rmicro_runtime` unless told otherwise, which does not resolve
/// in such a crate.
pub fn renamed_runtime(dir: &Path) -> Option<(String, String)> {
    let package = owning_package(dir)?;
    let table = read_manifest(&package.manifest)?;
    // `rt.workspace = true` takes `package = …` from the workspace's `[workspace.dependencies]`
    // entry of the same key, so a member renamed there says so only in the root manifest.
    let workspace = package
        .manifest
        .parent()
        .map(workspace_root)
        .and_then(|root| read_manifest(&root.join("Cargo.toml")));
    let inherited = |key: &str| {
        workspace
            .as_ref()?
            .get("workspace")?
            .get("dependencies")?
            .get(key)?
            .get("package")?
            .as_str()
    };
    let tables = dependency_tables(&table, &["dependencies"]);
    let key = tables.into_iter().flatten().find_map(|(key, dep)| {
        let from_workspace = dep.get("workspace").and_then(toml::Value::as_bool) == Some(true);
        let package = match dep.get("package").and_then(toml::Value::as_str) {
            Some(package) => Some(package),
            None if from_workspace => inherited(key),
            None => None,
        };
        let renamed = package == Some("rmicro-runtime");
        (renamed && key.replace('-', "_") != "rmicro_runtime").then(|| key.replace('-', "_"))
    })?;
    Some((package.name, key))
}

/// The dependency tables `kinds` (`dependencies`, …) of a manifest, target-specific ones
/// included.
fn dependency_tables<'a>(table: &'a toml::Table, kinds: &[&str]) -> Vec<&'a toml::Table> {
    let targets = table.get("target").and_then(toml::Value::as_table);
    let mut tables = Vec::new();
    for kind in kinds {
        tables.extend(table.get(*kind).and_then(toml::Value::as_table));
        for target in targets.into_iter().flat_map(|t| t.values()) {
            tables.extend(target.get(*kind).and_then(toml::Value::as_table));
        }
    }
    tables
}

/// The `path` dependencies of `manifest`, under any dependency table (target-specific ones
/// included), `[workspace.dependencies]`, `[patch.<source>]` and `[replace]`: the package name
/// each names (`package = …` for a renamed one) and the directory it points at.
///
/// `[patch]` is the usual way to build against a local checkout of the runtime
/// (`[patch.crates-io] rmicro-runtime = { path = "../rmicro/rmicro-runtime" }`): the member
/// keeps asking for a registry version, and only the root's patch says where the code is.
fn path_dependencies(manifest: &Path) -> Vec<(String, PathBuf)> {
    let Some(table) = read_manifest(manifest) else {
        return Vec::new();
    };
    let dir = manifest.parent().unwrap_or(Path::new("."));
    let mut tables = dependency_tables(
        &table,
        &["dependencies", "dev-dependencies", "build-dependencies"],
    );
    tables.extend(
        table
            .get("workspace")
            .and_then(|w| w.get("dependencies"))
            .and_then(toml::Value::as_table),
    );
    // One table of patches per source patched (`crates-io`, a registry name or a git URL).
    tables.extend(
        table
            .get("patch")
            .and_then(toml::Value::as_table)
            .into_iter()
            .flat_map(|sources| sources.values())
            .filter_map(toml::Value::as_table),
    );
    tables.extend(table.get("replace").and_then(toml::Value::as_table));
    let mut out = Vec::new();
    for deps in tables {
        for (key, dep) in deps {
            // A `[replace]` key is a package id, `name:version`; other keys are names.
            let key = key.split(':').next().unwrap_or(key);
            let package = dep.get("package").and_then(toml::Value::as_str);
            if let Some(path) = dep.get("path").and_then(toml::Value::as_str) {
                out.push((package.unwrap_or(key).to_string(), dir.join(path)));
            }
        }
    }
    out
}

/// The member manifests of the workspace whose root manifest is `root` (`[workspace] members`,
/// glob patterns `*`, `?` and `**` expanded).
fn members(root: &Path) -> Vec<PathBuf> {
    let Some(table) = read_manifest(root) else {
        return Vec::new();
    };
    let dir = root.parent().unwrap_or(Path::new("."));
    let patterns = table
        .get("workspace")
        .and_then(|w| w.get("members"))
        .and_then(toml::Value::as_array);
    let mut out = Vec::new();
    for pattern in patterns
        .into_iter()
        .flatten()
        .filter_map(toml::Value::as_str)
    {
        let parts: Vec<&str> = Path::new(pattern)
            .components()
            .filter_map(|c| c.as_os_str().to_str())
            .collect();
        expand(dir, &parts, &mut out);
    }
    out.into_iter()
        .map(|d| d.join("Cargo.toml"))
        .filter(|m| m.is_file())
        .collect()
}

/// The directories below `dir` that the glob components `parts` match.
fn expand(dir: &Path, parts: &[&str], out: &mut Vec<PathBuf>) {
    let Some((first, rest)) = parts.split_first() else {
        out.push(dir.to_path_buf());
        return;
    };
    if *first == "**" {
        expand(dir, rest, out);
        for sub in sorted_entries(dir).into_iter().filter(|p| p.is_dir()) {
            expand(&sub, parts, out);
        }
    } else if first.contains(['*', '?', '[']) {
        for sub in sorted_entries(dir).into_iter().filter(|p| p.is_dir()) {
            let name = sub.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if glob_match(first.as_bytes(), name.as_bytes()) {
                expand(&sub, rest, out);
            }
        }
    } else {
        expand(&dir.join(first), rest, out);
    }
}

/// Whether `name` matches the glob `pattern` (`*` any run, `?` any one character; a `[…]` class
/// is taken as any one character).
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| glob_match(rest, &name[i..])),
        Some((b'[', rest)) => match rest.iter().position(|&b| b == b']') {
            Some(end) => !name.is_empty() && glob_match(&rest[end + 1..], &name[1..]),
            None => name.first() == Some(&b'[') && glob_match(rest, &name[1..]),
        },
        Some((b'?', rest)) => !name.is_empty() && glob_match(rest, &name[1..]),
        Some((c, rest)) => name.first() == Some(c) && glob_match(rest, &name[1..]),
    }
}

/// The project's manifests, in the order they are searched for a runtime used by path: the
/// nearest one at or above `from`, the workspace root's (next to `lockfile`), every member's,
/// those of the crates Cargo's configuration files patch to a local path (`config_patched`),
/// and the manifests of the path dependencies reached from those (a runtime declared only in
/// one member, or in a platform crate another member uses, is found).
fn project_manifests(
    lockfile: &Path,
    from: &Path,
    config_patched: &[(String, PathBuf)],
) -> Vec<PathBuf> {
    /// Enough for any real workspace; a bound in case of a pathological one.
    const MAX_MANIFESTS: usize = 2000;
    let root = lockfile.with_file_name("Cargo.toml");
    let mut queue: Vec<PathBuf> = from
        .ancestors()
        .map(|dir| dir.join("Cargo.toml"))
        .find(|m| m.is_file())
        .into_iter()
        .collect();
    queue.push(root.clone());
    queue.extend(members(&root));
    queue.extend(config_patched.iter().map(|(_, dir)| dir.join("Cargo.toml")));
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    let mut next = 0;
    while next < queue.len() && out.len() < MAX_MANIFESTS {
        let manifest = queue[next].clone();
        next += 1;
        if !manifest.is_file() {
            continue;
        }
        let canonical = std::fs::canonicalize(&manifest).unwrap_or_else(|_| manifest.clone());
        if !seen.insert(canonical) {
            continue;
        }
        queue.extend(
            path_dependencies(&manifest)
                .into_iter()
                .map(|(_, dir)| dir.join("Cargo.toml")),
        );
        out.push(manifest);
    }
    out
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
    })?;
    Ok(Runtime {
        version: version.clone(),
        api_min,
        api,
        manifest,
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
/// in that package's dependency closure. When `from` belongs to no package the lock file lists
/// (or its dependencies reach no runtime), every locked runtime. A runtime used from a
/// checkout is looked for at the `path` patches of the Cargo configuration files read for a
/// build in `from` (`.cargo/config.toml` at or above it, then `$CARGO_HOME`'s; they win over the
/// manifests', as in Cargo), then at the `path` dependencies of the project's manifests (see
/// [`runtime`]).
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
    let config_patched = config_patch::config_patches(from, cargo_home().as_deref());
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

/// The API levels every one of `runtimes` accepts, `(min, max)`; `None` when they have none in
/// common (two incompatible release lines in one package's dependencies).
pub fn shared_range(runtimes: &[Runtime]) -> Option<(u32, u32)> {
    let min = runtimes.iter().map(|r| r.api_min).max().unwrap_or(0);
    let max = runtimes.iter().map(|r| r.api).min().unwrap_or(u32::MAX);
    (min <= max).then_some((min, max))
}

/// No API level this generator emits is accepted by `runtime` (one of a project's runtimes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoCommonApi {
    /// The runtime that accepts none of them.
    pub runtime: Runtime,
    /// Whether it is newer than every level emitted (else older).
    pub newer: bool,
    /// Every runtime of the package, when they accept no API level in common among themselves
    /// (two incompatible release lines in one package's dependencies): no generator can serve
    /// them all, whatever its version. Empty otherwise.
    pub conflicting: Vec<Runtime>,
}

impl NoCommonApi {
    fn direction(&self) -> &'static str {
        if self.newer {
            "newer"
        } else {
            "older"
        }
    }

    /// The runtimes of a package that accept no level in common, said so.
    fn conflict(&self) -> Option<String> {
        if self.conflicting.is_empty() {
            return None;
        }
        let list = self
            .conflicting
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" and ");
        Some(format!(
            "the package depends on {list} (directly or through crates that re-export one), \
             which accept no API level in common: no generated code compiles against both. Make \
             the package's dependencies agree on one rmicro-runtime release line"
        ))
    }

    /// Where the runtime's range was read from, for a message that doubts it.
    fn range_origin(&self) -> String {
        match &self.runtime.manifest {
            Some(manifest) => format!("the `[package.metadata.rmicro]` of {}", manifest.display()),
            None => "what the project reports for it".to_string(),
        }
    }

    /// The message for the protoc plugin: install the plugin released with the runtime.
    pub fn plugin_advice(&self) -> String {
        if let Some(conflict) = self.conflict() {
            return format!("{conflict} (or pass api=N to choose a level)");
        }
        if self.runtime.version == VERSION {
            // Installing the plugin released with the runtime would install this one again.
            return format!(
                "{}, but protoc-gen-rmicro {VERSION}, released with it, emits API \
                 {MIN_API}..={MAX_API}: the runtime's API range, read from {}, does not match \
                 its release (a checkout whose API level changed without a version bump, or a \
                 stale copy). Installing another protoc-gen-rmicro will not fix that: build the \
                 plugin from the same source as the runtime (`cargo install --path \
                 <checkout>/protoc-gen-rmicro --locked`), correct the runtime's \
                 `[package.metadata.rmicro]`, or pass api=N to choose a level",
                self.runtime,
                self.range_origin(),
            );
        }
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
        if let Some(conflict) = self.conflict() {
            return format!("{conflict} (or choose a level with `Config::api`)");
        }
        let runtime_line = release_line(&self.runtime.version);
        if runtime_line == release_line(VERSION) {
            // Naming rmicro-build's own release line would send the user in a circle.
            return format!(
                "{}, but rmicro-build {VERSION}, of the same release line, generates API \
                 {MIN_API}..={MAX_API}: the runtime's API range, read from {}, does not match \
                 its release (a checkout whose API level changed without a version bump, or a \
                 stale copy). Changing the rmicro-build requirement will not fix that: take \
                 rmicro-build from the same source as the runtime (the same path or git \
                 revision), or correct the runtime's `[package.metadata.rmicro]`",
                self.runtime,
                self.range_origin(),
            );
        }
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
/// [`NoCommonApi`] naming a runtime that accepts none of them (and, when the runtimes accept no
/// level in common among themselves, all of them).
///
/// # Panics
///
/// When `runtimes` is empty.
pub fn common_api(runtimes: &[Runtime]) -> Result<u32, NoCommonApi> {
    let choice = (MIN_API..=MAX_API)
        .rev()
        .find(|level| runtimes.iter().all(|r| r.accepts(*level)));
    if let Some(level) = choice {
        return Ok(level);
    }
    let conflicting = if shared_range(runtimes).is_none() {
        runtimes.to_vec()
    } else {
        Vec::new()
    };
    let blocking = runtimes
        .iter()
        .find(|r| !(MIN_API..=MAX_API).any(|level| r.accepts(level)))
        .unwrap_or(&runtimes[0]);
    Err(NoCommonApi {
        runtime: blocking.clone(),
        newer: blocking.api >= MIN_API,
        conflicting,
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
            manifest: None,
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
            manifest: None,
        };
        assert_eq!(choose_api(&[rt(1, 1)]), Ok(1));
        assert_eq!(choose_api(&[rt(1, 5)]), Ok(MAX_API));
        let err = choose_api(&[rt(50, 60)]).unwrap_err();
        assert!(
            err.contains("newer than any level this plugin emits"),
            "{err}"
        );
    }

    #[test]
    fn lock_dependencies_name_packages_by_name_version_and_source() {
        let rt = LockPackage {
            name: "rmicro-runtime".into(),
            version: "0.2.0".into(),
            source: Some("git+file:///r?rev=abc#abcdef0123".into()),
            dependencies: Vec::new(),
        };
        assert!(rt.is_named_by("rmicro-runtime"));
        assert!(rt.is_named_by("rmicro-runtime 0.2.0"));
        assert!(rt.is_named_by("rmicro-runtime 0.2.0 (git+file:///r?rev=abc#abcdef0123)"));
        assert!(!rt.is_named_by("rmicro-runtime 0.1.0"));
        assert!(!rt.is_named_by("rmicro-runtime 0.2.0 (registry+https://example.invalid)"));
        assert!(!rt.is_named_by("rmicro-runtime-extra"));
    }

    #[test]
    fn the_locked_commit_is_read_from_a_git_source() {
        let full = "3edac8d1b6369aaf069c8aace40d48c1ec3362f3";
        assert_eq!(
            git_commit(&format!("git+file:///srv/rt?rev={full}#{full}")),
            Some(full)
        );
        assert_eq!(
            git_commit("git+https://example.invalid/rt?branch=main"),
            None
        );
    }

    #[test]
    fn member_globs_match_as_cargo_s() {
        assert!(glob_match(b"*", b"app"));
        assert!(glob_match(b"svc-*", b"svc-user"));
        assert!(!glob_match(b"svc-*", b"lib"));
        assert!(glob_match(b"a?c", b"abc"));
        assert!(glob_match(b"[ab]x", b"bx"));
        assert!(!glob_match(b"a?c", b"ac"));
    }

    /// A member that takes its dependency from `[workspace.dependencies]` (`rt.workspace =
    /// true`) is renamed there, not in its own manifest: it still cannot name
    /// `::rmicro_runtime`.
    #[test]
    fn a_runtime_renamed_in_the_workspace_dependencies_is_found() {
        let root = tempfile::tempdir().unwrap();
        let write = |rel: &str, text: &str| {
            let path = root.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write(
            "Cargo.toml",
            "[workspace]\nmembers = [\"app\"]\n\n[workspace.dependencies]\n\
             rt = { package = \"rmicro-runtime\", version = \"0.1\" }\n",
        );
        write(
            "app/Cargo.toml",
            "[package]\nname = \"app\"\nversion = \"0.1.0\"\n\n[dependencies]\n\
             rt.workspace = true\n",
        );
        assert_eq!(
            renamed_runtime(&root.path().join("app")),
            Some(("app".to_string(), "rt".to_string()))
        );
        // Inherited under its own name, it is not renamed.
        write(
            "app/Cargo.toml",
            "[package]\nname = \"app\"\nversion = \"0.1.0\"\n\n[dependencies]\n\
             rmicro-runtime.workspace = true\n",
        );
        write(
            "Cargo.toml",
            "[workspace]\nmembers = [\"app\"]\n\n[workspace.dependencies]\n\
             rmicro-runtime = \"0.1\"\n",
        );
        assert_eq!(renamed_runtime(&root.path().join("app")), None);
    }

    #[test]
    fn runtimes_that_share_no_level_are_named_together() {
        let rt = |version: &str, api_min, api| Runtime {
            version: version.into(),
            api_min,
            api,
            manifest: None,
        };
        let err = common_api(&[rt("0.1.0", 1, 1), rt("9.0.0", 9, 9)]).unwrap_err();
        assert_eq!(err.conflicting.len(), 2);
        let advice = err.plugin_advice();
        assert!(advice.contains("accept no API level in common"), "{advice}");
        assert!(!advice.contains("cargo install"), "{advice}");
    }
}
