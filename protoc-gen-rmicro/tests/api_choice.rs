//! Which API level the plugin emits: `api=N`, else the level the project's Cargo.lock resolves,
//! else its newest; and the refusals, each asserting its message.

mod common;

use std::path::{Path, PathBuf};

use prost::Message;
use prost_types::compiler::CodeGeneratorResponse;
use protoc_gen_rmicro::{Header, MAX_API, VERSION};

/// A scratch directory with an optional Cargo.lock locking `runtime` (and a fake Cargo home whose
/// registry cache declares the API range of versions this plugin does not know).
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let dir =
            std::env::temp_dir().join(format!("rmicro-api-choice-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("project/deep/proto")).unwrap();
        Dir(dir)
    }
    fn lock(&self, packages: &[(&str, &str)]) -> &Self {
        let mut lock = String::from("version = 4\n");
        for (name, version) in packages {
            lock.push_str(&format!(
                "\n[[package]]\nname = \"{name}\"\nversion = \"{version}\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\n"
            ));
        }
        std::fs::write(self.0.join("project/Cargo.lock"), lock).unwrap();
        self
    }
    fn cached_runtime(&self, version: &str, api_min: u32, api: u32) -> &Self {
        let dir = self.0.join(format!(
            "cargo-home/registry/src/index-0123/rmicro-runtime-{version}"
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("Cargo.toml"),
            format!("[package]\nname = \"rmicro-runtime\"\nversion = \"{version}\"\n\n[package.metadata.rmicro]\napi = {api}\napi-min = {api_min}\n"),
        )
        .unwrap();
        self
    }
    /// Runs the plugin from a directory below the lock file.
    fn run(&self, parameter: &str) -> (CodeGeneratorResponse, String) {
        let out = common::run_plugin_binary_in(
            &common::request(&["user.proto"], parameter),
            &[],
            &self.0.join("project/deep/proto"),
            Some(&self.0.join("cargo-home")),
        );
        assert!(out.status.success(), "{}", common::stderr(&out));
        (
            CodeGeneratorResponse::decode(&out.stdout[..]).unwrap(),
            common::stderr(&out),
        )
    }
    fn lockfile(&self) -> PathBuf {
        self.0.join("project/Cargo.lock")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn api_of(response: &CodeGeneratorResponse) -> u32 {
    assert_eq!(response.error, None);
    Header::from_contents(response.file[0].content())
        .unwrap()
        .api
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn without_a_lock_file_it_emits_its_newest_silently() {
    let dir = Dir::new("nolock");
    let (response, stderr) = dir.run("");
    assert_eq!(api_of(&response), MAX_API);
    assert_eq!(stderr, "");
}

#[test]
fn with_a_lock_file_it_emits_what_the_locked_runtime_accepts_and_says_so() {
    let dir = Dir::new("locked");
    dir.lock(&[("app", "0.1.0"), ("rmicro-runtime", VERSION)]);
    let (response, stderr) = dir.run("");
    assert_eq!(api_of(&response), 1);
    assert_eq!(
        stderr.trim_end(),
        format!(
            "protoc-gen-rmicro: emitting API 1 for rmicro-runtime {VERSION} (accepts API 1..=1), locked in {}",
            display(&dir.lockfile())
        )
    );
}

#[test]
fn a_newer_runtime_that_still_accepts_our_level_is_served() {
    let dir = Dir::new("newer-compatible");
    dir.lock(&[("rmicro-runtime", "3.0.0")])
        .cached_runtime("3.0.0", 1, 3);
    let (response, stderr) = dir.run("");
    assert_eq!(api_of(&response), 1);
    assert!(
        stderr.contains("emitting API 1 for rmicro-runtime 3.0.0 (accepts API 1..=3)"),
        "{stderr}"
    );
}

#[test]
fn explicit_api_wins_over_the_lock_file() {
    let dir = Dir::new("explicit");
    dir.lock(&[("rmicro-runtime", "7.0.0")])
        .cached_runtime("7.0.0", 5, 7);
    let (response, stderr) = dir.run("api=1");
    assert_eq!(api_of(&response), 1);
    assert_eq!(stderr, "");
}

#[test]
fn a_runtime_newer_than_every_level_is_refused_naming_the_plugin_to_install() {
    let dir = Dir::new("too-new");
    dir.lock(&[("rmicro-runtime", "7.0.0")])
        .cached_runtime("7.0.0", 5, 7);
    let (response, _) = dir.run("");
    assert!(response.file.is_empty());
    assert_eq!(
        response.error.unwrap(),
        format!(
            "rmicro-runtime 7.0.0 (accepts API 5..=7), but protoc-gen-rmicro {VERSION} emits API 1..=1; \
             the runtime is newer than any level this plugin emits. Install the plugin that matches it: \
             `cargo install protoc-gen-rmicro --version 7.0.0 --locked` (or pass api=N to choose a level)"
        )
    );
}

#[test]
fn a_runtime_older_than_every_level_is_refused_naming_the_plugin_to_install() {
    let dir = Dir::new("too-old");
    dir.lock(&[("rmicro-runtime", "0.0.3")])
        .cached_runtime("0.0.3", 0, 0);
    let (response, _) = dir.run("");
    let err = response.error.unwrap();
    assert!(
        err.starts_with("rmicro-runtime 0.0.3 (accepts API 0..=0), but protoc-gen-rmicro"),
        "{err}"
    );
    assert!(
        err.contains("the runtime is older than any level this plugin emits"),
        "{err}"
    );
    assert!(
        err.contains("`cargo install protoc-gen-rmicro --version 0.0.3 --locked`"),
        "{err}"
    );
}

#[test]
fn an_unknown_runtime_version_is_an_error_with_a_way_out() {
    let dir = Dir::new("unknown");
    dir.lock(&[("rmicro-runtime", "42.0.0")]);
    let (response, _) = dir.run("");
    let err = response.error.unwrap();
    assert!(
        err.starts_with("cannot tell which API rmicro-runtime 42.0.0 accepts"),
        "{err}"
    );
    assert!(
        err.contains("(`cargo fetch` downloads the runtime)"),
        "{err}"
    );
    assert!(err.contains("takes `api=N` to choose a level"), "{err}");
}

#[test]
fn a_lock_file_without_the_runtime_means_the_newest_with_a_note() {
    let dir = Dir::new("no-runtime");
    dir.lock(&[("serde", "1.0.0")]);
    let (response, stderr) = dir.run("");
    assert_eq!(api_of(&response), MAX_API);
    assert!(
        stderr.contains("locks no rmicro-runtime; emitting the newest API"),
        "{stderr}"
    );
}
