//! The `[patch]` tables of Cargo's configuration files: a runtime swapped for a local checkout
//! in `.cargo/config.toml` (often written by a tool, as the file is seldom checked in) is built
//! from that checkout, as one patched in `Cargo.toml` is.
//!
//! Cargo reads `.cargo/config.toml` (or the legacy `.cargo/config`, preferred when both exist)
//! in the directory it runs in and in each directory above it, then `$CARGO_HOME/config.toml`.
//! For the same dependency, a patch in a configuration file wins over the manifest's, and the
//! file nearest the directory wins over those further up, `$CARGO_HOME`'s being the last. A
//! relative `path` in a configuration file is relative to the directory that holds its `.cargo`
//! directory (for `$CARGO_HOME/config.toml`, the directory above `$CARGO_HOME`), not to the file.

use std::path::{Path, PathBuf};

/// The configuration files Cargo reads for a build in `dir`, nearest first, `$CARGO_HOME`'s
/// last, each with the directory its relative paths are resolved from. A file is listed once
/// (`$CARGO_HOME` may be one of the `.cargo` directories above `dir`).
fn config_files(dir: &Path, cargo_home: Option<&Path>) -> Vec<(PathBuf, PathBuf)> {
    let mut homes: Vec<(PathBuf, PathBuf)> = dir
        .ancestors()
        .map(|base| (base.join(".cargo"), base.to_path_buf()))
        .collect();
    if let Some(home) = cargo_home {
        let base = home.parent().unwrap_or(home).to_path_buf();
        homes.push((home.to_path_buf(), base));
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (home, base) in homes {
        // Cargo takes the file without the extension when both are there.
        let Some(file) = ["config", "config.toml"]
            .into_iter()
            .map(|name| home.join(name))
            .find(|file| file.is_file())
        else {
            continue;
        };
        let canonical = std::fs::canonicalize(&file).unwrap_or_else(|_| file.clone());
        if seen.insert(canonical) {
            out.push((file, base));
        }
    }
    out
}

/// The `path` patches of the Cargo configuration files read for a build in `dir`, in Cargo's
/// order of precedence (the one Cargo uses for a package comes first): the package name each
/// names (`package = …` for a renamed one) and the directory it points at. A file that cannot
/// be read or parsed is passed over (Cargo itself reports it on the next build).
pub(super) fn config_patches(dir: &Path, cargo_home: Option<&Path>) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for (file, base) in config_files(dir, cargo_home) {
        let Some(table) = std::fs::read_to_string(&file)
            .ok()
            .and_then(|text| text.parse::<toml::Table>().ok())
        else {
            continue;
        };
        // One table per source patched: `[patch.<registry name>]` or `[patch."<git URL>"]`.
        let sources = table
            .get("patch")
            .and_then(toml::Value::as_table)
            .into_iter()
            .flat_map(|sources| sources.values())
            .filter_map(toml::Value::as_table);
        for patches in sources {
            for (key, patch) in patches {
                let Some(path) = patch.get("path").and_then(toml::Value::as_str) else {
                    continue;
                };
                let package = patch.get("package").and_then(toml::Value::as_str);
                out.push((package.unwrap_or(key).to_string(), base.join(path)));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(dir: &Path, rel: &str, text: &str) {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn nearest_first_home_last_paths_from_the_directory_holding_dot_cargo() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        put(
            root,
            ".cargo/config.toml",
            "[patch.some-registry]\nrmicro-runtime = { path = \"outer/rt\" }\n",
        );
        put(
            root,
            "ws/.cargo/config.toml",
            "[patch.some-registry]\nrt = { package = \"rmicro-runtime\", path = \"../inner/rt\" }\n\
             other = { git = \"file:///nowhere\" }\n",
        );
        put(
            root,
            "home/.cargo/config.toml",
            "[patch.'file:///srv/rt']\nrmicro-runtime = { path = \"from-home\" }\n",
        );
        let found = config_patches(&root.join("ws/app"), Some(&root.join("home/.cargo")));
        assert_eq!(
            found,
            vec![
                ("rmicro-runtime".to_string(), root.join("ws/../inner/rt")),
                ("rmicro-runtime".to_string(), root.join("outer/rt")),
                ("rmicro-runtime".to_string(), root.join("home/from-home")),
            ]
        );
    }

    #[test]
    fn the_legacy_file_wins_when_both_are_there_and_a_broken_one_is_passed_over() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        put(
            root,
            ".cargo/config",
            "[patch.x]\nrmicro-runtime = { path = \"legacy\" }\n",
        );
        put(
            root,
            ".cargo/config.toml",
            "[patch.x]\nrmicro-runtime = { path = \"new\" }\n",
        );
        put(root, "a/.cargo/config.toml", "[patch.x\nnot toml");
        assert_eq!(
            config_patches(&root.join("a"), None),
            vec![("rmicro-runtime".to_string(), root.join("legacy"))]
        );
    }
}
