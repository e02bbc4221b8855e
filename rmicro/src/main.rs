//! The `rmicro` command line.

// The gateway allocates for every request it proxies; mimalloc does that faster than the
// system allocator (feature `mimalloc`, on by default).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    rmicro::Cli::new().run()
}
