//! The main job on embedded defaults: no protoc, no etcd. Starts the seed's user srv service on a
//! loopback port, calls it through the generated client (unary, server streaming, bidirectional)
//! and prints the answers.

use rmicro_examples::greeter::Greeter;
use rmicro_examples::user::{register_user_handler, CallRequest, Ping, StreamRequest, UserClient};
use rmicro_runtime::{Client, Server};
use tokio_stream::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut server = Server::new();
    register_user_handler(&mut server, Greeter)?;
    let bound = server.bind("127.0.0.1:0").await?;
    let addr = bound.local_addr();
    println!("user srv (gRPC) listening on {addr}");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(bound.serve_with_shutdown(async {
        let _ = stopped.await;
    }));

    let user = UserClient::new("go.micro.srv.user", Client::with_address(addr.to_string()));
    let reply = user
        .call(CallRequest {
            name: "John".into(),
        })
        .await?
        .into_inner();
    println!("User.Call(name: John)     -> {}", reply.msg);

    let counts: Vec<i64> = user
        .stream(StreamRequest { count: 3 })
        .await?
        .into_inner()
        .map(|r| r.map(|r| r.count))
        .collect::<Result<_, _>>()
        .await?;
    println!("User.Stream(count: 3)     -> {counts:?}");

    let pings = tokio_stream::iter([Ping { stroke: 1 }, Ping { stroke: 2 }]);
    let strokes: Vec<i64> = user
        .ping_pong(pings)
        .await?
        .into_inner()
        .map(|r| r.map(|p| p.stroke))
        .collect::<Result<_, _>>()
        .await?;
    println!("User.PingPong(1, 2)       -> {strokes:?}");

    let _ = stop.send(());
    serving.await??;
    Ok(())
}
