//! Generates the same `proto/user.proto` twice: rmicro's client and handler trait (rmicro-build,
//! protox in process) into `$OUT_DIR`, and a standard tonic client (tonic-prost-build, protoc)
//! into `$OUT_DIR/tonic`, so the two generated files do not collide.

use std::path::PathBuf;

fn main() {
    let proto = "../../proto/user.proto";
    let include = "../../proto";
    rmicro_build::Config::new().compile(&[proto], &[include]);

    let tonic_out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("tonic");
    std::fs::create_dir_all(&tonic_out).unwrap();
    tonic_prost_build::configure()
        .build_server(false)
        .build_transport(false)
        .out_dir(&tonic_out)
        .compile_protos(&[proto], &[include])
        .unwrap_or_else(|e| panic!("tonic-prost-build failed: {e}"));
}
