//! The `rmicro` command line.

fn main() -> std::process::ExitCode {
    rmicro::Cli::new().run()
}
