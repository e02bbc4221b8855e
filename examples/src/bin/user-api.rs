//! The seed's user API tier (axum): HTTP in, the user srv service called by name through the
//! generated client. Registers as `go.micro.api.user` so the gateway can route `/user/...` to it.
//!
//! ```text
//! cargo run -p rmicro-examples --features etcd --bin user-api -- \
//!     --address 127.0.0.1:8080 --registry etcd --registry-address 127.0.0.1:2379
//! curl 'http://127.0.0.1:8080/user/call?name=John'
//! ```

use clap::Parser;

#[derive(Parser)]
#[command(about = "The seed's user API tier (HTTP, axum)")]
struct Cli {
    /// Where the HTTP API listens.
    #[arg(long, env = "MICRO_API_ADDRESS", default_value = "127.0.0.1:8080")]
    address: String,
    #[command(flatten)]
    micro: rmicro_runtime::config::Flags,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    rmicro_examples::init_logging();
    rmicro_examples::exit(run(Cli::parse()).await)
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let registry = cli.micro.registry()?;
    let client = cli.micro.client_builder(registry.clone())?.build();
    let listener = tokio::net::TcpListener::bind(&cli.address)
        .await
        .map_err(|err| format!("could not listen on {}: {err}", cli.address))?;
    println!("listening on {}", listener.local_addr()?);
    rmicro_examples::api::serve(
        listener,
        client,
        registry,
        cli.micro.register_ttl,
        cli.micro.register_interval,
        cli.micro.deregister_grace,
        rmicro_examples::shutdown_signal(),
    )
    .await?;
    Ok(())
}
