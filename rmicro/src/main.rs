//! The `rmicro` command line.

fn main() -> std::process::ExitCode {
    rmicro::main()
}
