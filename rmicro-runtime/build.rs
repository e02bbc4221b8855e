//! Tells the build scripts of dependent crates which API this runtime accepts (Cargo `links`
//! metadata: `DEP_RMICRO_RUNTIME_API`, `DEP_RMICRO_RUNTIME_API_MIN`, `DEP_RMICRO_RUNTIME_VERSION`),
//! so rmicro-build can check generated files before the compiler runs.

#[allow(dead_code, unreachable_pub)]
mod level {
    include!("src/api_level.rs");
}

fn main() {
    println!("cargo:rerun-if-changed=src/api_level.rs");
    println!("cargo:api={}", level::API_LEVEL);
    println!("cargo:api_min={}", level::MIN_API_LEVEL);
    println!("cargo:version={}", env!("CARGO_PKG_VERSION"));
}
