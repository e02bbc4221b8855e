//! The seed's services, shared by the example binaries.

/// Generated from `proto/user.proto` by rmicro-build in build.rs.
#[allow(missing_docs)]
pub mod user {
    rmicro_runtime::include_proto!("go.micro.srv.user");
}

pub mod api;
pub mod greeter;

/// The exit code of a binary's `run`, its error (and what caused it) on stderr as a sentence,
/// not as `Debug` output.
pub fn exit(result: Result<(), Box<dyn std::error::Error>>) -> std::process::ExitCode {
    let Err(err) = result else {
        return std::process::ExitCode::SUCCESS;
    };
    eprintln!("error: {err}");
    let mut source = err.source();
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
    std::process::ExitCode::FAILURE
}

pub use rmicro::{init_logging, shutdown_signal};
