//! Cost of the registry lookup the gateway does on every request
//! (`EtcdRegistry::get_service("go.micro.api.bench")`, served from the registry's watch-fed
//! cache), measured alone in a loop.
//!
//! ```text
//! lookup ETCD_ADDR EXTRA ITERATIONS [--hold]
//! ```
//!
//! Registers EXTRA dummy services (`go.micro.api.dummyNNN`, one node each) first, waits until
//! the cache holds them, then times ITERATIONS lookups and prints `lookup: ... ns/call`. With
//! `--hold` it then prints `holding` and keeps the dummies registered until SIGTERM/SIGINT, so
//! the gateway can be measured against a registry of that size; they are deregistered at exit.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rmicro_runtime::registry::{EtcdOptions, EtcdRegistry, Node, Registry, Service};
use tokio::signal::unix::{signal, SignalKind};

const NAME: &str = "go.micro.api.bench";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: lookup ETCD_ADDR EXTRA ITERATIONS [--hold]";
    let etcd = args.first().ok_or(usage)?.clone();
    let extra: usize = args.get(1).ok_or(usage)?.parse()?;
    let iterations: u32 = args.get(2).ok_or(usage)?.parse()?;
    let hold = args.iter().any(|a| a == "--hold");

    let registry = EtcdRegistry::new(EtcdOptions {
        endpoints: vec![etcd],
        ..Default::default()
    });
    // Dummies shaped like the backend's record (same metadata), under other names.
    let dummies: Vec<Service> = (0..extra)
        .map(|i| {
            let name = format!("go.micro.api.dummy{i:03}");
            let mut metadata = HashMap::new();
            metadata.insert("protocol".to_string(), "http".to_string());
            metadata.insert("server".to_string(), "http".to_string());
            Service {
                nodes: vec![Node {
                    id: format!("{name}-{}", std::process::id()),
                    address: format!("127.0.0.1:{}", 1 + i),
                    metadata,
                }],
                name,
                version: "latest".into(),
                ..Default::default()
            }
        })
        .collect();
    for service in &dummies {
        registry.register(service, Duration::from_secs(60)).await?;
    }
    // Wait until the watch-fed cache holds the backend and every dummy.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listed = registry.list_services().await?;
        let has_backend = listed.iter().any(|s| s.name == NAME && !s.nodes.is_empty());
        if has_backend && listed.len() > extra {
            println!("registry records: {}", listed.len());
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("registry not ready: {} services listed", listed.len()).into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    for _ in 0..iterations / 10 {
        std::hint::black_box(registry.get_service(NAME).await?);
    }
    let start = Instant::now();
    for _ in 0..iterations {
        let found = registry.get_service(NAME).await?;
        std::hint::black_box(&found);
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(iterations);
    println!("lookup: {ns:.0} ns/call with {extra} other services registered ({iterations} calls)");

    if hold {
        println!("holding");
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    }
    for service in &dummies {
        let _ = registry.deregister(service).await;
    }
    Ok(())
}
