//! Generates the seed's user service with rmicro-build: protox compiles the .proto, so no protoc
//! is needed to build the examples.

fn main() {
    rmicro_build::compile_protos(&["../proto/user.proto"], &["../proto"]);
}
