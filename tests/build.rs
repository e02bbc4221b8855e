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
                "proto/rmicro/test/shapes/pub/base.proto",
                "proto/rmicro/test/shapes/pub/reexport.proto",
                "proto/rmicro/test/shapes/shapes.proto",
                "proto/rmicro/test/shapes/second.proto",
                "proto/rmicro/test/shapes/ext.proto",
                "proto/async/v1/async.proto",
                "proto/foo/type/v1/t.proto",
            ],
            &["../proto", "proto"],
        );
}
