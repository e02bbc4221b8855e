//! Throwaway Cargo crates built by tests, sharing one target directory so their dependencies
//! compile once per machine.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A crate under `target/scratch-crates/<name>` depending on the workspace's crates by path.
#[derive(Debug)]
pub struct ScratchCrate {
    /// The crate's directory.
    pub dir: PathBuf,
}

impl ScratchCrate {
    /// A fresh crate with `manifest_tail` appended to its `[package]` section (dependencies and
    /// the like; `{root}` is replaced with the workspace root).
    pub fn new(name: &str, manifest_tail: &str) -> ScratchCrate {
        let dir = root().join("target/scratch-crates").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("src")).unwrap();
        let manifest = format!(
            "[package]\nname = \"{name}\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n{}\n\n[workspace]\n",
            manifest_tail.replace("{root}", &root().display().to_string())
        );
        std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
        // The workspace's lock file: the same dependency versions, nothing new to download.
        std::fs::copy(root().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
        ScratchCrate { dir }
    }

    /// Writes a file relative to the crate.
    pub fn write(&self, path: &str, content: &str) -> &Self {
        let path = self.dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
        self
    }

    /// Runs `cargo <args>` in the crate, offline, with the shared target directory.
    pub fn cargo(&self, args: &[&str]) -> Output {
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            // Before the subcommand: arguments after `--` are the tool's, not cargo's.
            .arg("--offline")
            .args(args)
            .current_dir(&self.dir)
            .env(
                "CARGO_TARGET_DIR",
                root().join("target/scratch-crates/target"),
            )
            .env_remove("RUSTFLAGS")
            .output()
            .unwrap()
    }
}
