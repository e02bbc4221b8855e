//! Generates every fixture with rmicro-build (protox), into one module tree.

fn main() {
    rmicro_build::Config::new()
        .include_file("fixtures.rs")
        .compile(
            &[
                "../proto/user.proto",
                "proto/rmicro/test/common.proto",
                "proto/rmicro/test/everything.proto",
                "proto/rmicro/test/v1.proto",
                "proto/rmicro/test/legacy.proto",
                "proto/rmicro/test/keywords.proto",
                "proto/nopkg.proto",
                "proto/rmicro/test/hop.proto",
            ],
            &["../proto", "proto"],
        );
}
