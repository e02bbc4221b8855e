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
    if let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR") {
        println!(
            "cargo:manifest_dir={}",
            std::path::Path::new(&dir).display()
        );
    }
}
