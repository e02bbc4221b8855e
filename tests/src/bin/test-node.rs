//! A user srv node for the process-level registry tests (SIGKILL, SIGTERM): takes every go-micro
//! flag, prints `listening on ADDR` once serving.

use clap::Parser;
use rmicro_tests::fixtures::go::micro::srv::user::register_user_handler;
use rmicro_tests::user::Greeter;

#[derive(Parser)]
struct Cli {
    #[arg(long, default_value = "go.micro.srv.user")]
    name: String,
    #[command(flatten)]
    micro: rmicro_runtime::config::Flags,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let mut service = cli.micro.service(&cli.name)?.build();
    register_user_handler(service.server_mut(), Greeter)?;
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let running = service.start().await?;
    println!("listening on {}", running.local_addr());
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    running.stop().await?;
    Ok(())
}
