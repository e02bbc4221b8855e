//! Tells the build scripts of dependent crates which API this runtime accepts (Cargo `links`
//! metadata, `DEP_<links name>_API`, `_API_MIN` and `_VERSION`, the name carrying the release line:
//! `DEP_RMICRO_RUNTIME_0_1_API`),
//! so rmicro-build can check generated files before the compiler runs, and where its source is
//! (`_MANIFEST_DIR`), so that a skew message names the plugin of the same
//! checkout.

#[allow(dead_code, unreachable_pub)]
mod level {
    include!("src/api_level.rs");
}

fn main() {
    println!("cargo:rerun-if-changed=src/api_level.rs");
    println!("cargo:api={}", level::API_LEVEL);
    println!("cargo:api_min={}", level::MIN_API_LEVEL);
    println!("cargo:version={}", env!("CARGO_PKG_VERSION"));
    let dir = std::env::var_os("CARGO_MANIFEST_DIR").map(std::path::PathBuf::from);
    if let Some(dir) = &dir {
        println!("cargo:manifest_dir={}", dir.display());
    }
    // The command the compile-time pin's message names: the plugin of this very checkout when
    // the runtime is built from one (a path or git dependency: `protoc-gen-rmicro` beside it),
    // else the plugin released with this version.
    let checkout_plugin = dir
        .as_deref()
        .and_then(std::path::Path::parent)
        .map(|parent| parent.join("protoc-gen-rmicro"))
        .filter(|plugin| plugin.join("Cargo.toml").is_file());
    let install = match checkout_plugin {
        Some(plugin) => format!(
            "cargo install --path {} --locked",
            shell_word(&plugin.display().to_string())
        ),
        None => format!(
            "cargo install protoc-gen-rmicro --version {} --locked",
            env!("CARGO_PKG_VERSION")
        ),
    };
    println!("cargo:rustc-env=RMICRO_PLUGIN_INSTALL={install}");
}

/// `word` as one shell word: as it is when made of plain characters, else in single quotes.
fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:@%,=".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}
