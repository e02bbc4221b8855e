//! The main job on embedded defaults (no protoc, no etcd): the seed's three tiers in one process,
//! sharing the memory registry.
//!
//! 1. user srv (gRPC, generated handler) registered as `go.micro.srv.user`;
//! 2. user API (axum) registered as `go.micro.api.user`, calling the srv tier by name through the
//!    generated client;
//! 3. the gateway (`rmicro api`), routing `/user/...` to the API tier.
//!
//! Then one HTTP request goes through all three and its answer is printed, followed by the
//! streaming calls of the generated client against the srv tier.

use std::sync::Arc;
use std::time::Duration;

use clap::FromArgMatches;
use http_body_util::BodyExt;
use rmicro_examples::greeter::Greeter;
use rmicro_examples::user::{register_user_handler, Ping, StreamRequest, UserClient};
use rmicro_runtime::registry::{MemoryRegistry, Registry};
use rmicro_runtime::{Client, Service};
use tokio_stream::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::global());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    // 1. srv tier
    let mut srv = Service::builder("go.micro.srv.user")
        .registry(Arc::clone(&registry))
        .deregister_grace(Duration::ZERO)
        .build();
    register_user_handler(srv.server_mut(), Greeter)?;
    let srv = srv.start().await?;
    println!(
        "user srv  (gRPC)  go.micro.srv.user  on {}",
        srv.local_addr()
    );

    // 2. API tier
    let api_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!(
        "user API  (axum)  go.micro.api.user  on {}",
        api_listener.local_addr()?
    );
    let api = tokio::spawn(rmicro_examples::api::serve(
        api_listener,
        Client::new(Arc::clone(&registry)),
        Arc::clone(&registry),
        Duration::from_secs(90),
        Duration::from_secs(30),
        // Nothing is calling when the demo ends: no grace to wait for.
        Duration::ZERO,
        stopped(),
    ));

    // 3. gateway
    let cli = rmicro::Cli::new();
    let matches =
        cli.command()
            .try_get_matches_from(["rmicro", "api", "--address", "127.0.0.1:0"])?;
    let sub = matches
        .subcommand_matches("api")
        .cloned()
        .unwrap_or_default();
    let args = rmicro::api::ApiArgs::from_arg_matches(&sub)?;
    let gateway =
        rmicro::api::Gateway::new(args, &sub, cli.into_plugins(), Some(Arc::clone(&registry)))?;
    let gw_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let gw_addr = gw_listener.local_addr()?;
    println!("gateway   (HTTP)  rmicro api         on {gw_addr}");
    let gw = tokio::spawn(gateway.serve(gw_listener, stopped()));

    // Wait until the API tier's registration is visible.
    for _ in 0..100 {
        if !registry
            .get_service(rmicro_examples::api::API_NAME)
            .await?
            .is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // One request through gateway → API → srv.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let uri: http::Uri = format!("http://{gw_addr}/user/call?name=John").parse()?;
    let resp = client.get(uri).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    println!();
    println!("GET http://{gw_addr}/user/call?name=John");
    println!(
        "  -> {} {}",
        status.as_u16(),
        String::from_utf8_lossy(&body)
    );

    // The generated client's streaming calls, straight to the srv tier by name.
    let user = UserClient::new("go.micro.srv.user", Client::new(Arc::clone(&registry)));
    let counts: Vec<i64> = user
        .stream(StreamRequest { count: 3 })
        .await?
        .into_inner()
        .map(|r| r.map(|r| r.count))
        .collect::<Result<_, _>>()
        .await?;
    println!("User.Stream(count: 3)  -> {counts:?}");
    let strokes: Vec<i64> = user
        .ping_pong(tokio_stream::iter([Ping { stroke: 1 }, Ping { stroke: 2 }]))
        .await?
        .into_inner()
        .map(|r| r.map(|p| p.stroke))
        .collect::<Result<_, _>>()
        .await?;
    println!("User.PingPong(1, 2)    -> {strokes:?}");

    let _ = stop_tx.send(true);
    gw.await??;
    api.await??;
    srv.stop().await?;
    if !status.is_success() {
        return Err(format!("the request through the three tiers failed with {status}").into());
    }
    Ok(())
}
