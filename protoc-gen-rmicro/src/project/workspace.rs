//! The workspace a package belongs to, as Cargo finds it (its root and its members, glob
//! patterns expanded), and the project's manifests searched for a runtime used by path.

use std::path::{Path, PathBuf};

use super::manifests::{path_dependencies, read_manifest};
use super::sorted_entries;

/// The root of the workspace `package` (a directory holding a `Cargo.toml`) belongs to, as Cargo
/// finds it: its `package.workspace` key, else the nearest manifest at or above it with a
/// `[workspace]` table that does not exclude it, else the package itself.
pub fn workspace_root(package: &Path) -> PathBuf {
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

/// The member manifests of the workspace whose root manifest is `root` (`[workspace] members`,
/// glob patterns `*`, `?` and `**` expanded).
pub(super) fn members(root: &Path) -> Vec<PathBuf> {
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
pub(super) fn project_manifests(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_globs_match_as_cargo_s() {
        assert!(glob_match(b"*", b"app"));
        assert!(glob_match(b"svc-*", b"svc-user"));
        assert!(!glob_match(b"svc-*", b"lib"));
        assert!(glob_match(b"a?c", b"abc"));
        assert!(glob_match(b"[ab]x", b"bx"));
        assert!(!glob_match(b"a?c", b"ac"));
    }
}
