//! `rmicro api --access-log`, the real binary: one line per request on stderr, with what an
//! operator needs and none of the request's secrets; none without the flag.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmicro_runtime::registry::{EtcdOptions, EtcdRegistry, Node, Registry, Service as Record};
use rmicro_tests::etcd::Etcd;
use rmicro_tests::http;
use rmicro_tests::process::listening_address;

/// A backend answering `hello from <path>`, `/…/slow` after 3 s.
async fn backend() -> String {
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

/// A gateway process on etcd with `flags` and `env`; its stderr lines are collected.
struct Gateway {
    child: Child,
    addr: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Gateway {
    fn start(etcd: &Etcd, flags: &[&str], env: &[(&str, &str)]) -> Gateway {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rmicro"))
            .args(["api", "--address", "127.0.0.1:0", "--registry", "etcd"])
            .args(["--registry-address", &etcd.client_addr])
            .args(flags)
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
        Gateway { child, addr, log }
    }

    /// The access log lines so far.
    fn access(&self) -> Vec<String> {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|l| l.contains("rmicro::access"))
            .cloned()
            .collect()
    }

    /// Waits for an access log line naming `path` (up to 5 s) and returns it.
    fn line_for(&self, path: &str) -> String {
        let field = format!("path={path} ");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(line) = self.access().into_iter().find(|l| l.contains(&field)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no access log line for {path}; stderr: {:#?}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An etcd (data directory named by `tag`, one per test) with `go.micro.api.greeter` on a backend.
async fn etcd_with_greeter(tag: &str) -> (Etcd, String) {
    let etcd = Etcd::start(tag);
    let registry = EtcdRegistry::new(EtcdOptions {
        endpoints: vec![etcd.client_addr.clone()],
        dial_timeout: Duration::from_secs(2),
        ..Default::default()
    });
    let node = backend().await;
    let record = Record {
        name: "go.micro.api.greeter".into(),
        version: "latest".into(),
        nodes: vec![Node {
            id: "greeter-1".into(),
            address: node.clone(),
            ..Default::default()
        }],
        ..Default::default()
    };
    registry
        .register(&record, Duration::from_secs(300))
        .await
        .unwrap();
    (etcd, node)
}

fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let key = format!(" {name}=");
    let start = line
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {line}"))
        + key.len();
    line[start..].split(' ').next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_is_logged_once_done_without_its_secrets() {
    let (etcd, _node) = etcd_with_greeter("access-log-on").await;
    // The env var turns it on, as the flag does.
    let gw = Gateway::start(
        &etcd,
        &["--auth-tokens", "s3cr3t-token"],
        &[("MICRO_API_ACCESS_LOG", "true")],
    );
    let addr = gw.addr.clone();

    let ok = tokio::task::spawn_blocking(move || {
        http::request(
            &addr,
            "GET",
            "/greeter/hi?api_key=k3y-in-query",
            &[("Authorization", "Bearer s3cr3t-token")],
            "",
        )
    })
    .await
    .unwrap();
    assert_eq!(ok.status, 200, "{}", ok.body);
    let line = gw.line_for("/greeter/hi");
    assert!(line.contains(" INFO "), "{line}");
    assert_eq!(field(&line, "method"), "GET", "{line}");
    assert_eq!(field(&line, "version"), "HTTP/1.1", "{line}");
    assert_eq!(field(&line, "status"), "200", "{line}");
    assert_eq!(
        field(&line, "bytes"),
        ok.body.len().to_string(),
        "the body's size: {line}"
    );
    assert_eq!(field(&line, "complete"), "true", "{line}");
    assert!(field(&line, "client").starts_with("127.0.0.1:"), "{line}");
    let ms: f64 = field(&line, "ms").parse().unwrap();
    assert!((0.0..5000.0).contains(&ms), "{line}");

    // Refused requests are logged too, with their status.
    let addr = gw.addr.clone();
    let denied = tokio::task::spawn_blocking(move || http::get(&addr, "/greeter/denied"))
        .await
        .unwrap();
    assert_eq!(denied.status, 401);
    let line = gw.line_for("/greeter/denied");
    assert_eq!(field(&line, "status"), "401", "{line}");
    let addr = gw.addr.clone();
    let missing = tokio::task::spawn_blocking(move || {
        http::request(
            &addr,
            "POST",
            "/nobody/here",
            &[("Authorization", "Bearer s3cr3t-token")],
            "{}",
        )
    })
    .await
    .unwrap();
    assert_eq!(missing.status, 404);
    let line = gw.line_for("/nobody/here");
    assert_eq!(field(&line, "method"), "POST", "{line}");
    assert_eq!(field(&line, "status"), "404", "{line}");

    // A client that leaves before its answer: logged without a status, as incomplete.
    let addr = gw.addr.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn = std::net::TcpStream::connect(&addr).unwrap();
        conn.write_all(
            b"GET /greeter/slow HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cr3t-token\r\n\r\n",
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        drop(conn);
    })
    .await
    .unwrap();
    let line = gw.line_for("/greeter/slow");
    assert_eq!(field(&line, "status"), "-", "{line}");
    assert_eq!(field(&line, "complete"), "false", "{line}");

    // A HEAD request: its answer has no body to send, and is complete once its head is.
    let addr = gw.addr.clone();
    let head = tokio::task::spawn_blocking(move || {
        let mut conn = std::net::TcpStream::connect(&addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        conn.write_all(
            b"HEAD /nobody/there HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cr3t-token\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let mut answer = String::new();
        let _ = conn.read_to_string(&mut answer);
        answer
    })
    .await
    .unwrap();
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let line = gw.line_for("/nobody/there");
    assert_eq!(field(&line, "method"), "HEAD", "{line}");
    assert_eq!(field(&line, "status"), "404", "{line}");
    assert_eq!(field(&line, "complete"), "true", "{line}");

    let all = gw.log.lock().unwrap().join("\n");
    assert!(!all.contains("s3cr3t-token"), "a token was logged:\n{all}");
    assert!(
        !all.contains("k3y-in-query"),
        "the query was logged:\n{all}"
    );
    assert_eq!(gw.access().len(), 5, "one line per request:\n{all}");
    // stderr is no terminal here: plain text, no colour codes, for files and journals.
    assert!(!all.contains('\u{1b}'), "colour codes in the log:\n{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_flag_nothing_is_logged_per_request() {
    let (etcd, _node) = etcd_with_greeter("access-log-off").await;
    let gw = Gateway::start(&etcd, &[], &[]);
    let addr = gw.addr.clone();
    let ok = tokio::task::spawn_blocking(move || http::get(&addr, "/greeter/quiet"))
        .await
        .unwrap();
    assert_eq!(ok.status, 200, "{}", ok.body);
    // The same wait a logged request gets.
    std::thread::sleep(Duration::from_millis(500));
    let all = gw.log.lock().unwrap().join("\n");
    assert!(gw.access().is_empty(), "{all}");
    assert!(!all.contains("/greeter/quiet"), "{all}");

    // A value that is no boolean is a clear error, not silently off.
    let out = Command::new(env!("CARGO_BIN_EXE_rmicro"))
        .args(["api", "--address", "127.0.0.1:0", "--access-log", "maybe"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
        .wait_with_output()
        .unwrap();
    assert!(!out.status.success());
    let mut err = String::new();
    out.stderr.as_slice().read_to_string(&mut err).unwrap();
    assert!(err.contains("--access-log"), "{err}");
}
