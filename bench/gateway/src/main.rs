//! Backend for the gateway benchmark: a hyper 1.x HTTP/1.1 server that answers every request
//! with `200 hello, world\n` (13 bytes) and keeps itself registered in etcd as
//! `go.micro.api.bench`, so `rmicro api` proxies `/bench/...` to it.
//!
//! ```text
//! bench-backend ETCD_ADDR [LISTEN_ADDR]      (LISTEN_ADDR default 127.0.0.1:0)
//! ```
//!
//! Prints `listening on ADDR` once bound; deregisters on SIGTERM/SIGINT.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rmicro_runtime::registry::{EtcdOptions, EtcdRegistry, Node, Registry, Service};
use rmicro_runtime::Registration;
use tokio::signal::unix::{signal, SignalKind};

const NAME: &str = "go.micro.api.bench";
const BODY: &[u8] = b"hello, world\n";

async fn hello(_req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(BODY))))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let etcd = args
        .next()
        .ok_or("usage: bench-backend ETCD_ADDR [LISTEN_ADDR]")?;
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:0".into());

    let listener = tokio::net::TcpListener::bind(&listen).await?;
    let addr = listener.local_addr()?;
    println!("listening on {addr}");

    let registry: Arc<dyn Registry> = Arc::new(EtcdRegistry::new(EtcdOptions {
        endpoints: vec![etcd],
        ..Default::default()
    }));
    let mut metadata = HashMap::new();
    metadata.insert("protocol".to_string(), "http".to_string());
    metadata.insert("server".to_string(), "http".to_string());
    let record = Service {
        name: NAME.into(),
        version: "latest".into(),
        nodes: vec![Node {
            id: format!("{NAME}-{}-{}", std::process::id(), addr.port()),
            address: addr.to_string(),
            metadata,
        }],
        ..Default::default()
    };
    let registration = Registration::start(
        registry,
        record,
        Duration::from_secs(30),
        Duration::from_secs(10),
    );

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(err) => {
                    eprintln!("accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), hyper::service::service_fn(hello))
                .await;
        });
    }
    registration.stop().await;
    Ok(())
}
