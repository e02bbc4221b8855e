//! The seed's services, shared by the example binaries.

/// Generated from `proto/user.proto` by rmicro-build in build.rs (what
/// `rmicro_build::include_proto!("go.micro.srv.user")` expands to).
#[allow(missing_docs)]
pub mod user {
    include!(concat!(env!("OUT_DIR"), "/go.micro.srv.user.rs"));
}

pub mod greeter;
