//! The seed's user srv service: gRPC, registered as `go.micro.srv.user`.
//!
//! ```text
//! cargo run -p rmicro-examples --bin user-srv                        # memory registry
//! cargo run -p rmicro-examples --features etcd --bin user-srv -- \
//!     --registry etcd --registry-address 127.0.0.1:2379             # etcd
//! ```
//!
//! Every go-micro flag and `MICRO_*` variable applies (`--help` lists them). It prints one line
//! `listening on ADDR` once serving, and deregisters before it stops on SIGINT/SIGTERM.

use clap::Parser;
use rmicro_examples::greeter::Greeter;
use rmicro_examples::user::register_user_handler;

#[derive(Parser)]
#[command(about = "The seed's user srv service (gRPC)")]
struct Cli {
    /// Registry name of the service.
    #[arg(long, default_value = "go.micro.srv.user")]
    name: String,
    #[command(flatten)]
    micro: rmicro_runtime::config::Flags,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    rmicro_examples::init_logging();
    rmicro_examples::exit(run(Cli::parse()).await)
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let mut service = cli.micro.service(&cli.name)?.build();
    register_user_handler(service.server_mut(), Greeter)?;
    let running = service.start().await?;
    println!("listening on {}", running.local_addr());
    rmicro_examples::shutdown_signal().await;
    running.stop().await?;
    Ok(())
}
