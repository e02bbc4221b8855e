//! What the tests that run the real `rmicro api` binary share: a backend registered in a real
//! etcd, and the gateway process with its stderr collected.

#![allow(dead_code)] // each test file uses its own part

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmicro_runtime::registry::{EtcdOptions, EtcdRegistry, Node, Registry, Service as Record};
use rmicro_tests::etcd::Etcd;
use rmicro_tests::process::listening_address;

/// A backend answering `hello from <path>`, `/…/slow` after 3 s, `/…/proto` with the
/// `X-Forwarded-Proto` it was sent (`-` for none).
pub(crate) async fn backend() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let path = req.uri().path().to_owned();
                        if path.ends_with("/proto") {
                            let proto = req
                                .headers()
                                .get("x-forwarded-proto")
                                .map_or("-".into(), |v| {
                                    String::from_utf8_lossy(v.as_bytes()).into_owned()
                                });
                            return Ok(hyper::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from(proto),
                            )));
                        }
                        if path.ends_with("/slow") {
                            tokio::time::sleep(Duration::from_secs(3)).await;
                        }
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(format!(
                                "hello from {path}"
                            ))),
                        ))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// An etcd (data directory named by `tag`, one per test) with `go.micro.api.greeter` on a
/// [`backend`], whose address is returned too.
pub(crate) async fn etcd_with_greeter(tag: &str) -> (Etcd, String) {
    let etcd = Etcd::start(tag);
    let node = backend().await;
    register_node(&etcd, "go.micro.api.greeter", "greeter-1", &node).await;
    (etcd, node)
}

/// Registers node `id` at `address` as `service` in `etcd` (for 300 s).
pub(crate) async fn register_node(etcd: &Etcd, service: &str, id: &str, address: &str) {
    let registry = EtcdRegistry::new(EtcdOptions {
        endpoints: vec![etcd.client_addr.clone()],
        dial_timeout: Duration::from_secs(2),
        ..Default::default()
    });
    let record = Record {
        name: service.into(),
        version: "latest".into(),
        nodes: vec![Node {
            id: id.into(),
            address: address.into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    registry
        .register(&record, Duration::from_secs(300))
        .await
        .unwrap();
}

/// A plain HTTP/1.1 GET of `path` from `addr` on a connection of its own (`Connection: close`):
/// the raw answer, however it ended (10 s at most).
pub(crate) fn raw_get(addr: &str, path: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer);
    answer
}

/// A `rmicro api` process on etcd with `flags` and `env`; its stderr lines are collected.
/// Killed when dropped.
pub(crate) struct GatewayProcess {
    pub(crate) child: Child,
    pub(crate) addr: String,
    pub(crate) log: Arc<Mutex<Vec<String>>>,
}

impl GatewayProcess {
    pub(crate) fn start(etcd: &Etcd, flags: &[&str], env: &[(&str, &str)]) -> GatewayProcess {
        let mut with_etcd = vec![
            "--registry",
            "etcd",
            "--registry-address",
            &etcd.client_addr,
        ];
        with_etcd.extend_from_slice(flags);
        GatewayProcess::start_with(&with_etcd, env)
    }

    /// A `rmicro api` process with `flags` (the memory registry unless they say otherwise).
    pub(crate) fn start_with(flags: &[&str], env: &[(&str, &str)]) -> GatewayProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rmicro"))
            .args(["api", "--address", "127.0.0.1:0"])
            .args(flags)
            .env_remove("MICRO_REGISTRY")
            .env_remove("MICRO_REGISTRY_ADDRESS")
            .env_remove("RUST_LOG")
            .env_remove("MICRO_API_ACCESS_LOG")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let addr = listening_address(&mut child);
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap().push(line);
            }
        });
        GatewayProcess { child, addr, log }
    }

    /// Sends `signal` (`HUP`, `TERM`, `INT`) to the process.
    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// The stderr lines so far.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
