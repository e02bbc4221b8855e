//! A project's `Cargo.lock`: the one Cargo uses for a package, the `rmicro-runtime` packages it
//! locks, and those in the dependency closure of one package.

use std::path::{Path, PathBuf};

use super::workspace::workspace_root;
use super::{Package, ProjectError};

/// One `rmicro-runtime` package locked in a `Cargo.lock`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedRuntime {
    /// Its version.
    pub version: String,
    /// Its `source` (`registry+…`, `git+…`), or `None` for a path dependency.
    pub source: Option<String>,
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

/// One `[[package]]` of a `Cargo.lock`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LockPackage {
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
pub(super) fn read_lock(lockfile: &Path) -> Result<Vec<LockPackage>, ProjectError> {
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
pub(super) fn runtimes_in(lock: &[LockPackage]) -> Vec<LockedRuntime> {
    lock.iter()
        .filter(|p| p.name == "rmicro-runtime")
        .map(LockPackage::locked_runtime)
        .collect()
}

/// The runtimes the locked package `package` compiles its generated code against: those it
/// depends on itself, which `::rmicro_runtime` (or the name it gives the runtime) names; when it
/// has none of its own, those in its dependency closure (reached through a crate such as a
/// platform crate that re-exports the runtime). A runtime that only other crates use (a library
/// on another release line, a dev-dependency's) is theirs, not the package's. `None` when the
/// lock file does not list that package (or lists no dependencies for it).
pub(super) fn closure_runtimes(
    lock: &[LockPackage],
    package: &Package,
) -> Option<Vec<LockedRuntime>> {
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
    let mut direct: Vec<LockedRuntime> = Vec::new();
    for dependency in starts.iter().flat_map(|&i| &lock[i].dependencies) {
        let named = by_name
            .get("rmicro-runtime")
            .map(Vec::as_slice)
            .unwrap_or_default();
        for &j in named.iter().filter(|&&j| lock[j].is_named_by(dependency)) {
            let runtime = lock[j].locked_runtime();
            if !direct.contains(&runtime) {
                direct.push(runtime);
            }
        }
    }
    if !direct.is_empty() {
        return Some(direct);
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
