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

/// protoc's working directory may not be the crate's (the plugin is not told the output
/// directory): without a lock file above it, the plugin says what it did and how to choose.
#[test]
fn without_a_lock_file_it_emits_its_newest_and_says_so() {
    let dir = Dir::new("nolock");
    let (response, stderr) = dir.run("");
    assert_eq!(api_of(&response), MAX_API);
    assert_eq!(
        stderr.trim_end(),
        format!(
            "protoc-gen-rmicro: no Cargo.lock above {}: emitting the newest API {MAX_API}; pass \
             `--rmicro_opt=api=N` or run protoc from the crate",
            display(&dir.0.join("project/deep/proto"))
        )
    );
    // With `api=N` and no lock file, nothing is said.
    let (_, stderr) = dir.run("api=1");
    assert_eq!(stderr, "");
    // Inside a crate with no lock file yet: the lock file is what to make.
    std::fs::write(
        dir.0.join("project/Cargo.toml"),
        "[package]\nname = \"svc\"\nversion = \"0.1.0\"\n",
    )
    .unwrap();
    let (_, stderr) = dir.run("");
    assert_eq!(
        stderr.trim_end(),
        format!(
            "protoc-gen-rmicro: no Cargo.lock above {}: emitting the newest API {MAX_API}; run \
             `cargo generate-lockfile` in {} first, so the plugin emits the API the crate's \
             rmicro-runtime takes, or pass `--rmicro_opt=api=N`",
            display(&dir.0.join("project/deep/proto")),
            display(&dir.0.join("project")),
        )
    );
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
    // Said, as the files will not compile against the project's runtime.
    assert_eq!(
        stderr.trim_end(),
        format!(
            "protoc-gen-rmicro: note: emitting API 1 as asked (api=1), which rmicro-runtime 7.0.0 \
             (accepts API 5..=7) locked in {} does not accept: the files will not compile against \
             it; leave api= out to emit the API the project takes",
            display(&dir.lockfile())
        )
    );
    // A level the runtime takes: nothing to say.
    let dir = Dir::new("explicit-taken");
    dir.lock(&[("rmicro-runtime", "3.0.0")])
        .cached_runtime("3.0.0", 1, 3);
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

/// Writes `contents` at `dir/rel`, creating its directories.
fn put(dir: &Path, rel: &str, contents: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

/// Runs the plugin in `dir` (with an empty Cargo home under `home`).
fn run_in(dir: &Path, home: &Path) -> (CodeGeneratorResponse, String) {
    let out =
        common::run_plugin_binary_in(&common::request(&["user.proto"], ""), &[], dir, Some(home));
    assert!(out.status.success(), "{}", common::stderr(&out));
    (
        CodeGeneratorResponse::decode(&out.stdout[..]).unwrap(),
        common::stderr(&out),
    )
}

/// In a workspace whose members use two runtime release lines, the plugin emits, in each
/// member, what that member's runtime accepts (not only a level every locked runtime accepts).
#[test]
fn in_a_mixed_workspace_each_member_gets_what_its_own_runtime_accepts() {
    let dir = Dir::new("mixed");
    let root = dir.0.join("project");
    put(
        &root,
        "Cargo.toml",
        "[workspace]\nmembers = [\"lib_old\", \"app_new\", \"svc\", \"platform\"]\n",
    );
    put(
        &root,
        "lib_old/Cargo.toml",
        "[package]\nname = \"lib_old\"\nversion = \"0.1.0\"\n",
    );
    put(
        &root,
        "svc/Cargo.toml",
        "[package]\nname = \"svc\"\nversion = \"0.1.0\"\n",
    );
    put(
        &root,
        "platform/Cargo.toml",
        "[package]\nname = \"platform\"\nversion = \"0.1.0\"\n",
    );
    put(
        &root,
        "app_new/Cargo.toml",
        "[package]\nname = \"app_new\"\nversion = \"0.1.0\"\n\n[dependencies]\n\
         rmicro-runtime = { path = \"../rt-new\" }\n",
    );
    put(
        &root,
        "rt-new/Cargo.toml",
        "[package]\nname = \"rmicro-runtime\"\nversion = \"0.77.0\"\n\n\
         [package.metadata.rmicro]\napi = 9\napi-min = 9\n",
    );
    put(
        &root,
        "Cargo.lock",
        &format!(
            "version = 4\n\n\
             [[package]]\nname = \"app_new\"\nversion = \"0.1.0\"\ndependencies = [\"rmicro-runtime 0.77.0\"]\n\n\
             [[package]]\nname = \"lib_old\"\nversion = \"0.1.0\"\ndependencies = [\"rmicro-runtime {VERSION}\"]\n\n\
             [[package]]\nname = \"platform\"\nversion = \"0.1.0\"\ndependencies = [\"rmicro-runtime {VERSION}\"]\n\n\
             [[package]]\nname = \"rmicro-runtime\"\nversion = \"{VERSION}\"\n\n\
             [[package]]\nname = \"rmicro-runtime\"\nversion = \"0.77.0\"\n\n\
             [[package]]\nname = \"svc\"\nversion = \"0.1.0\"\ndependencies = [\"platform\"]\n"
        ),
    );
    let home = dir.0.join("cargo-home");
    // lib_old: this release's runtime.
    let (response, stderr) = run_in(&root.join("lib_old"), &home);
    assert_eq!(api_of(&response), 1);
    assert!(
        stderr.contains(&format!(
            "emitting API 1 for rmicro-runtime {VERSION} (accepts API 1..=1), locked in {} for \
             package `lib_old`",
            display(&root.join("Cargo.lock"))
        )),
        "{stderr}"
    );
    // svc: the same runtime, through the platform crate.
    let (response, _) = run_in(&root.join("svc"), &home);
    assert_eq!(api_of(&response), 1);
    // app_new: a runtime no level of this plugin fits; the advice names that runtime alone.
    let (response, _) = run_in(&root.join("app_new"), &home);
    let err = response.error.unwrap();
    assert!(
        err.starts_with("rmicro-runtime 0.77.0 (accepts API 9..=9), but protoc-gen-rmicro"),
        "{err}"
    );
    assert!(
        err.contains("`cargo install protoc-gen-rmicro --version 0.77.0 --locked`"),
        "{err}"
    );
}

/// A runtime taken by path in one member only (not in the root's `[workspace.dependencies]`),
/// or in a crate another member reaches by path, is found; members are listed by glob.
#[test]
fn a_path_runtime_declared_in_another_member_is_found() {
    let dir = Dir::new("member-path");
    let root = dir.0.join("project");
    put(
        &root,
        "Cargo.toml",
        "[workspace]\nmembers = [\"crates/*\"]\n",
    );
    put(
        &root,
        "crates/app/Cargo.toml",
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\n\n[dependencies]\n\
         platform = { path = \"../platform\" }\n",
    );
    put(
        &root,
        "crates/platform/Cargo.toml",
        "[package]\nname = \"platform\"\nversion = \"0.1.0\"\n\n[dependencies]\n\
         rt = { package = \"rmicro-runtime\", path = \"../../vendor/rt\" }\n",
    );
    put(
        &root,
        "vendor/rt/Cargo.toml",
        "[package]\nname = \"rmicro-runtime\"\nversion = \"0.77.0\"\n\n\
         [package.metadata.rmicro]\napi = 3\napi-min = 1\n",
    );
    put(
        &root,
        "Cargo.lock",
        "version = 4\n\n[[package]]\nname = \"app\"\nversion = \"0.1.0\"\n\
         dependencies = [\"platform\"]\n\n[[package]]\nname = \"platform\"\nversion = \"0.1.0\"\n\
         dependencies = [\"rmicro-runtime\"]\n\n[[package]]\nname = \"rmicro-runtime\"\n\
         version = \"0.77.0\"\n",
    );
    let home = dir.0.join("cargo-home");
    // From the app (through its path dependency on the platform crate) and from the root
    // (through the members).
    for from in [root.join("crates/app"), root.clone()] {
        let (response, stderr) = run_in(&from, &home);
        assert_eq!(api_of(&response), 1, "{stderr}");
        assert!(
            stderr.contains("emitting API 1 for rmicro-runtime 0.77.0 (accepts API 1..=3)"),
            "{stderr}"
        );
    }
}

/// A runtime swapped for a local checkout in the project's `.cargo/config.toml` (its relative
/// `path` taken from the directory holding `.cargo/`) is read there, and wins over the
/// manifest's `[patch]`, as Cargo builds against it.
#[test]
fn a_runtime_patched_in_a_cargo_config_file_is_read_there() {
    let dir = Dir::new("config-patch");
    let root = dir.0.join("project");
    put(
        &root,
        "Cargo.toml",
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\n\n[dependencies]\n\
         rmicro-runtime = \"0.77\"\n\n[patch.crates-io]\nrmicro-runtime = { path = \"old-rt\" }\n",
    );
    put(
        &root,
        "old-rt/Cargo.toml",
        "[package]\nname = \"rmicro-runtime\"\nversion = \"0.77.0\"\n\n\
         [package.metadata.rmicro]\napi = 9\napi-min = 9\n",
    );
    put(
        &root,
        ".cargo/config.toml",
        "[patch.crates-io]\nrmicro-runtime = { path = \"vendor/rt\" }\n",
    );
    put(
        &root,
        "vendor/rt/Cargo.toml",
        "[package]\nname = \"rmicro-runtime\"\nversion = \"0.77.0\"\n\n\
         [package.metadata.rmicro]\napi = 3\napi-min = 1\n",
    );
    put(
        &root,
        "Cargo.lock",
        "version = 4\n\n[[package]]\nname = \"app\"\nversion = \"0.1.0\"\n\
         dependencies = [\"rmicro-runtime\"]\n\n[[package]]\nname = \"rmicro-runtime\"\n\
         version = \"0.77.0\"\n",
    );
    let (response, stderr) = run_in(&root.join("deep/proto"), &dir.0.join("cargo-home"));
    assert_eq!(api_of(&response), 1, "{stderr}");
    assert!(
        stderr.contains("emitting API 1 for rmicro-runtime 0.77.0 (accepts API 1..=3)"),
        "{stderr}"
    );
}

/// The runtime claims to be this very release yet declares a range this plugin does not emit
/// (a checkout whose API moved without a version bump): the advice says that, instead of
/// telling the user to install the plugin they are running.
#[test]
fn a_runtime_of_this_release_with_another_range_is_not_answered_with_this_plugin() {
    let dir = Dir::new("same-version");
    let root = dir.0.join("project");
    put(
        &root,
        "Cargo.toml",
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\n\n[dependencies]\n\
         rmicro-runtime = { path = \"rt\" }\n",
    );
    put(
        &root,
        "rt/Cargo.toml",
        &format!(
            "[package]\nname = \"rmicro-runtime\"\nversion = \"{VERSION}\"\n\n\
             [package.metadata.rmicro]\napi = 50\napi-min = 50\n"
        ),
    );
    put(
        &root,
        "Cargo.lock",
        &format!(
            "version = 4\n\n[[package]]\nname = \"app\"\nversion = \"0.1.0\"\n\
             dependencies = [\"rmicro-runtime\"]\n\n[[package]]\nname = \"rmicro-runtime\"\n\
             version = \"{VERSION}\"\n"
        ),
    );
    let (response, _) = run_in(&root, &dir.0.join("cargo-home"));
    let err = response.error.unwrap();
    assert!(
        !err.contains(&format!(
            "cargo install protoc-gen-rmicro --version {VERSION}"
        )),
        "{err}"
    );
    assert!(err.contains("does not match its release"), "{err}");
    assert!(err.contains(&display(&root.join("rt/Cargo.toml"))), "{err}");
}

/// A crate that depends on the runtime under another name (`rt = { package = "rmicro-runtime" }`)
/// is told which `runtime_path` to pass: generated code's `::rmicro_runtime` does not resolve
/// there, and rustc would only list unresolved names.
#[test]
fn a_renamed_runtime_dependency_is_named_with_the_parameter_to_pass() {
    let dir = Dir::new("renamed");
    dir.lock(&[("rmicro-runtime", VERSION)]);
    put(
        &dir.0,
        "project/Cargo.toml",
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\n\n[dependencies]\n\
         rt = { package = \"rmicro-runtime\", version = \"0.1\" }\n",
    );
    let (response, stderr) = dir.run("");
    assert_eq!(response.error, None);
    assert!(
        stderr.contains(
            "`app` depends on rmicro-runtime under the name `rt`, where generated code's \
             `::rmicro_runtime` does not resolve: pass `--rmicro_opt=runtime_path=::rt`"
        ),
        "{stderr}"
    );
    // Told the path, it says nothing more.
    let (response, stderr) = dir.run("runtime_path=::rt");
    assert_eq!(response.error, None);
    assert!(!stderr.contains("under the name"), "{stderr}");
}
