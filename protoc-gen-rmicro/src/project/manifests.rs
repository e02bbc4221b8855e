//! What a `Cargo.toml` says: its package and version (inherited from its workspace or not), the
//! API range a runtime's declares, its dependency tables and `path` dependencies and patches,
//! and a runtime dependency under another name.

use std::path::{Path, PathBuf};

use super::workspace::workspace_root;

pub(super) fn read_manifest(path: &Path) -> Option<toml::Table> {
    std::fs::read_to_string(path).ok()?.parse().ok()
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

/// The API range a runtime's `Cargo.toml` declares, if it is `rmicro-runtime {version}`: its
/// version, inherited from its workspace or not, must be the locked one.
pub(super) fn manifest_range(manifest: &Path, version: &str) -> Option<(u32, u32)> {
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
pub(super) fn path_dependencies(manifest: &Path) -> Vec<(String, PathBuf)> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
