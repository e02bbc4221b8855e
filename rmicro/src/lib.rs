//! The `rmicro` command line, as a library so custom binaries can build on it.
//!
//! - `rmicro check`: is every generated file accepted by the rmicro-runtime the project resolves,
//!   and does the `protoc-gen-rmicro` on PATH emit code it accepts?
//! - `rmicro registry list|get NAME|watch [NAME]`: what the registry holds.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod check;
pub mod registry_cmd;

/// The `rmicro` command line.
#[derive(Debug, Parser)]
#[command(
    name = "rmicro",
    version,
    about = "rmicro: go-micro's workflow in Rust, with generated code pinned to its runtime"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check generated files and the protoc-gen-rmicro on PATH against the project's rmicro-runtime.
    ///
    /// Exit status: 0 all good, 1 version skew found, 2 could not check.
    Check(check::Args),
    /// Show what the registry holds: list services, get one, or watch changes.
    Registry(registry_cmd::Args),
}

/// Parses the process's arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(args) => check::run(&args),
        Command::Registry(args) => registry_cmd::run(&args),
    }
}
