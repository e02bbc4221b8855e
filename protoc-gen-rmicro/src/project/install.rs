//! Where Cargo takes a runtime from, and the `cargo install` command that gets the tools
//! released with it from the same place: a runtime used from a git repository or a local
//! checkout has no published release to install by version.

use std::path::PathBuf;

/// Where Cargo takes a locked runtime from (its `Cargo.lock` `source`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Origin {
    /// Not known (the version came from Cargo's `links` metadata, which does not say): taken as
    /// a published release.
    #[default]
    Unknown,
    /// A package registry.
    Registry,
    /// A git repository, at the locked commit.
    Git {
        /// The repository, as Cargo fetches it (`https://…`, `ssh://…`, `file://…`).
        url: String,
        /// The locked commit.
        commit: String,
    },
    /// A directory on this machine: a `path` dependency or a `[patch]` to one.
    Path {
        /// The runtime crate's directory, when it was found.
        dir: Option<PathBuf>,
    },
}

impl Origin {
    /// How to require, in `Cargo.toml`, a runtime that accepts API `api`, the one released with
    /// protoc-gen-rmicro `plugin`, from where Cargo takes the runtime now: a registry release by
    /// its release line; a git runtime at another commit of its repository; a local checkout
    /// brought to that release (or the release itself, by version).
    pub fn requirement_for(&self, plugin: &str, api: u32) -> String {
        let release = super::releases::release_line(plugin);
        match self {
            Origin::Git { url, .. } => format!(
                "point the git dependency at a commit of its repository whose rmicro-runtime \
                 accepts API {api} (protoc-gen-rmicro {plugin}'s release), in Cargo.toml:\n       \
                 rmicro-runtime = {{ git = {}, rev = \"<that commit>\" }}",
                toml_string(url)
            ),
            Origin::Path { dir } => {
                let checkout = dir.as_ref().map_or_else(
                    || "the rmicro-runtime checkout Cargo.toml names".to_string(),
                    |dir| format!("the rmicro-runtime checkout at {}", quoted(dir.display())),
                );
                format!(
                    "update {checkout} to protoc-gen-rmicro {plugin}'s release, which accepts API \
                     {api}; or require that release in Cargo.toml instead of the path (or of the \
                     `[patch]` naming it):\n       \
                     rmicro-runtime = \"{release}\""
                )
            }
            Origin::Registry | Origin::Unknown => format!(
                "require the rmicro-runtime released with protoc-gen-rmicro {plugin}, which \
                 accepts API {api}, in Cargo.toml:\n       \
                 rmicro-runtime = \"{release}\""
            ),
        }
    }

    /// The origin a `Cargo.lock` `source` names: `None` for a path dependency,
    /// `git+<url>[?<reference>]#<commit>` for git, anything else a registry.
    pub fn of_lock_source(source: Option<&str>) -> Origin {
        let Some(source) = source else {
            return Origin::Path { dir: None };
        };
        let Some(git) = source.strip_prefix("git+") else {
            return Origin::Registry;
        };
        let (location, commit) = git.split_once('#').unwrap_or((git, ""));
        let url = location.split_once('?').map_or(location, |(url, _)| url);
        if url.is_empty() || commit.is_empty() {
            // Not Cargo's shape: no command can be named from it.
            return Origin::Unknown;
        }
        Origin::Git {
            url: url.to_string(),
            commit: commit.to_string(),
        }
    }
}

impl super::Runtime {
    /// The `cargo install` command for `tool` (`protoc-gen-rmicro`, `rmicro`) as released with
    /// this runtime, from where Cargo takes the runtime: a registry release by its version, a git
    /// runtime's repository at the locked commit, a local checkout's own copy of the tool (the
    /// directory beside the runtime's, when the checkout has one).
    pub fn install_command(&self, tool: &str) -> String {
        match &self.origin {
            Origin::Git { url, commit } => {
                let url = quoted(url);
                format!("cargo install --git {url} --rev {commit} {tool} --locked")
            }
            Origin::Path { .. } => match self.checkout_tool(tool) {
                Some(dir) => format!("cargo install --path {} --locked", quoted(dir.display())),
                // A runtime crate on its own (a vendored copy): its release, by version.
                None => self.release_install(tool),
            },
            Origin::Registry | Origin::Unknown => self.release_install(tool),
        }
    }

    /// The second way out of a file generated for API `api` by protoc-gen-rmicro `plugin` that
    /// this runtime does not accept: a runtime for `api` from where Cargo takes this one (see
    /// [`Origin::requirement_for`]), unless `plugin`'s release cannot have made the file (it is
    /// this runtime's own release line, or a release known not to emit `api`): then the file
    /// came from a checkout whose API level moved without a version bump (or its header was
    /// edited), and only that checkout's runtime fits it.
    pub fn requirement_for(&self, plugin: &str, api: u32) -> String {
        let plugin_line = super::releases::release_line(plugin);
        let same_line = plugin_line == super::releases::release_line(&self.version);
        let emits = super::releases::known_range(plugin)
            .is_none_or(|(oldest, newest)| (oldest..=newest).contains(&api));
        if same_line || !emits {
            return format!(
                "if the file's plugin was built from a checkout whose API level ({api}) moved \
                 past its release ({plugin}), take rmicro-runtime from that same checkout (a \
                 `path` or `git` dependency in Cargo.toml); no released rmicro-runtime \
                 {plugin_line} accepts API {api}"
            );
        }
        self.origin.requirement_for(plugin, api)
    }

    /// The command that builds `tool` from the very source of this runtime (its git commit, its
    /// checkout), for a runtime whose API range does not match its release: another release of
    /// the tool would not fix that. Where that source is not known, a checkout stands in.
    pub fn same_source_install(&self, tool: &str) -> String {
        match (&self.origin, self.checkout_tool(tool)) {
            (Origin::Git { .. }, _) => self.install_command(tool),
            (_, Some(dir)) => format!("cargo install --path {} --locked", quoted(dir.display())),
            _ => format!("cargo install --path <checkout>/{tool} --locked"),
        }
    }

    /// The `[build-dependencies]` line for `tool` (`rmicro-build`) as released with this runtime,
    /// from where Cargo takes the runtime: the same git commit, the checkout's own copy, or the
    /// release line of its version.
    pub fn build_dependency(&self, tool: &str) -> String {
        match (&self.origin, self.checkout_tool(tool)) {
            (Origin::Git { url, commit }, _) => {
                format!(
                    "{tool} = {{ git = {}, rev = {} }}",
                    toml_string(url),
                    toml_string(commit)
                )
            }
            (_, Some(dir)) => format!(
                "{tool} = {{ path = {} }}",
                toml_string(&dir.display().to_string())
            ),
            _ => format!(
                "{tool} = {}",
                toml_string(&super::releases::release_line(&self.version))
            ),
        }
    }

    fn release_install(&self, tool: &str) -> String {
        format!("cargo install {tool} --version {} --locked", self.version)
    }

    /// `tool`'s directory in the checkout of a path runtime (`<checkout>/rmicro-runtime` →
    /// `<checkout>/<tool>`), if it is there.
    fn checkout_tool(&self, tool: &str) -> Option<PathBuf> {
        let Origin::Path { dir: Some(dir) } = &self.origin else {
            return None;
        };
        let tool = lexically_normal(&dir.parent()?.join(tool));
        tool.join("Cargo.toml").is_file().then_some(tool)
    }
}

/// `path` with `.` left out and each `..` taking the name before it away (`app/../rmicro` →
/// `rmicro`), as a path dependency's `../checkout` makes them: for a command to read. A `..`
/// at the start of a relative path stays.
pub fn lexically_normal(path: &std::path::Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                // The root's parent is the root.
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => out.push(component),
            },
            other => out.push(other),
        }
    }
    out
}

/// `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `word` (a path, a URL) as a shell word: as it is when it is made of plain characters, else in
/// single quotes
/// (so that a command with it can be pasted as given).
fn quoted(word: impl std::fmt::Display) -> String {
    let text = word.to_string();
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:@%,=".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        text
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn lock_sources_name_their_origin() {
        assert_eq!(Origin::of_lock_source(None), Origin::Path { dir: None });
        assert_eq!(
            Origin::of_lock_source(Some("registry+https://example.org/index")),
            Origin::Registry
        );
        assert_eq!(
            Origin::of_lock_source(Some("sparse+https://example.org/index/")),
            Origin::Registry
        );
        for (source, url) in [
            (
                "git+https://example.org/rmicro?branch=main#3edac8d",
                "https://example.org/rmicro",
            ),
            (
                "git+https://example.org/rmicro?rev=3edac8d#3edac8d",
                "https://example.org/rmicro",
            ),
            (
                "git+ssh://git@example.org/rmicro.git#3edac8d",
                "ssh://git@example.org/rmicro.git",
            ),
        ] {
            assert_eq!(
                Origin::of_lock_source(Some(source)),
                Origin::Git {
                    url: url.into(),
                    commit: "3edac8d".into()
                },
                "{source}"
            );
        }
        assert_eq!(
            Origin::of_lock_source(Some("git+https://example.org/rmicro")),
            Origin::Unknown
        );
    }

    #[test]
    fn the_build_dependency_comes_from_where_the_runtime_comes_from() {
        let runtime = |origin: Origin| super::super::Runtime {
            version: "0.2.3".into(),
            api_min: 2,
            api: 2,
            manifest: None,
            origin,
        };
        let git = runtime(Origin::Git {
            url: "https://example.org/rmicro".into(),
            commit: "3edac8d".into(),
        });
        assert_eq!(
            git.build_dependency("rmicro-build"),
            r#"rmicro-build = { git = "https://example.org/rmicro", rev = "3edac8d" }"#
        );
        assert_eq!(
            runtime(Origin::Registry).build_dependency("rmicro-build"),
            r#"rmicro-build = "0.2""#
        );
        // A checkout with the tool beside the runtime: its copy, by path.
        let checkout = tempfile::tempdir().unwrap();
        let dir = checkout.path().join("a \"b\"");
        std::fs::create_dir_all(dir.join("rmicro-runtime")).unwrap();
        std::fs::create_dir_all(dir.join("rmicro-build")).unwrap();
        std::fs::write(dir.join("rmicro-build/Cargo.toml"), "").unwrap();
        let path = runtime(Origin::Path {
            dir: Some(dir.join("rmicro-runtime")),
        });
        let quoted_dir = dir
            .join("rmicro-build")
            .display()
            .to_string()
            .replace('"', "\\\"");
        assert_eq!(
            path.build_dependency("rmicro-build"),
            format!(r#"rmicro-build = {{ path = "{quoted_dir}" }}"#)
        );
        // A runtime crate on its own (no tool beside it): the release line.
        let alone = runtime(Origin::Path {
            dir: Some(checkout.path().join("vendored")),
        });
        assert_eq!(
            alone.build_dependency("rmicro-build"),
            r#"rmicro-build = "0.2""#
        );
    }

    /// The second way out of a skew names a runtime for the file's API from where the project
    /// takes its runtime: a path or git runtime is not told to require a release by version
    /// alone (its `Cargo.toml` names no version to change).
    #[test]
    fn the_runtime_to_require_comes_from_where_the_runtime_comes_from() {
        let release = Origin::Registry.requirement_for("9.4.0", 999);
        assert!(release.contains("rmicro-runtime = \"9.4\""), "{release}");
        assert!(release.contains("accepts API 999"), "{release}");
        assert_eq!(Origin::Unknown.requirement_for("9.4.0", 999), release);

        let git = Origin::Git {
            url: "https://example.com/rmicro.git".into(),
            commit: "0123abc".into(),
        }
        .requirement_for("9.4.0", 999);
        assert!(git.contains("a commit of its repository"), "{git}");
        assert!(
            git.contains("rmicro-runtime = { git = \"https://example.com/rmicro.git\", rev = \"<that commit>\" }"),
            "{git}"
        );
        assert!(
            !git.contains("0123abc"),
            "the locked commit is the skewed one: {git}"
        );

        let dir = Path::new("/src/rmicro/rmicro-runtime");
        let path = Origin::Path {
            dir: Some(dir.to_path_buf()),
        }
        .requirement_for("9.4.0", 999);
        assert!(
            path.contains("update the rmicro-runtime checkout at /src/rmicro/rmicro-runtime to protoc-gen-rmicro 9.4.0's release"),
            "{path}"
        );
        assert!(path.contains("rmicro-runtime = \"9.4\""), "{path}");
        let unfound = Origin::Path { dir: None }.requirement_for("9.4.0", 999);
        assert!(
            unfound.contains("the rmicro-runtime checkout Cargo.toml names"),
            "{unfound}"
        );
    }

    /// A file whose plugin release cannot have emitted its API (this runtime's own release
    /// line, or a release known not to emit it) is not told to require that release: only the
    /// checkout it came from fits it.
    #[test]
    fn a_plugin_release_that_cannot_have_made_the_file_is_not_required() {
        let runtime = |version: &str| super::super::Runtime {
            version: version.into(),
            api_min: 1,
            api: 1,
            manifest: None,
            origin: Origin::Registry,
        };
        let line = super::super::releases::release_line(crate::VERSION);
        let text = runtime(crate::VERSION).requirement_for(crate::VERSION, 999);
        assert!(
            text.contains("take rmicro-runtime from that same checkout"),
            "{text}"
        );
        assert!(
            !text.contains(&format!("rmicro-runtime = \"{line}\"")),
            "{text}"
        );
        // A later release on another line: required as before.
        let text = runtime(crate::VERSION).requirement_for("9.4.0", 999);
        assert!(text.contains("rmicro-runtime = \"9.4\""), "{text}");
    }

    #[test]
    fn a_checkouts_path_is_named_without_dot_dot() {
        let normal = |p: &str| lexically_normal(Path::new(p)).display().to_string();
        assert_eq!(
            normal("/tmp/app/../clone/protoc-gen-rmicro"),
            "/tmp/clone/protoc-gen-rmicro"
        );
        assert_eq!(normal("/a/./b/../../c"), "/c");
        assert_eq!(normal("../x/../y"), "../y");
        assert_eq!(normal("/.."), "/");
    }

    #[test]
    fn paths_are_quoted_only_when_a_shell_needs_it() {
        assert_eq!(
            quoted(Path::new("/src/rmicro/protoc-gen-rmicro").display()),
            "/src/rmicro/protoc-gen-rmicro"
        );
        assert_eq!(
            quoted(Path::new("/home/a b/rmicro").display()),
            "'/home/a b/rmicro'"
        );
        assert_eq!(quoted(Path::new("/x/it's").display()), r"'/x/it'\''s'");
    }
}
