//! Copies of a runtime's `Cargo.toml` in Cargo's home directory: in its registry cache, and in
//! its git checkout of the locked commit.

use std::path::PathBuf;

use super::manifests::manifest_range;
use super::sorted_entries;
use super::workspace::members;

/// Cargo's home directory: `CARGO_HOME`, else `~/.cargo`.
pub(super) fn cargo_home() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
}

/// The API range declared by a cached registry copy of `rmicro-runtime {version}`.
pub(super) fn registry_range(version: &str) -> Option<(u32, u32)> {
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
pub(super) fn git_range(version: &str, source: &str) -> Option<((u32, u32), PathBuf)> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
