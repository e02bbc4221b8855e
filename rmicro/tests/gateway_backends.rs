//! `rmicro api --handler http` in front of real-world backends that are not hyper, as production
//! users meet them: Python's `http.server` (HTTP/1.0 close-delimited bodies, HTTP/1.1 with a
//! short keep-alive, `Connection: close` on every answer; tests/python/http_backend.py) and
//! nginx serving static files with a keep-alive timeout shorter than the gateway's reuse. Each
//! peer runs as a child process on a free 127.0.0.1 port, killed when dropped; the gateway runs
//! in this process over a memory registry and is driven over real HTTP.
//!
//! python3 and nginx must be installed (scripts/test.sh installs them when missing): a missing
//! one fails the test, it is never skipped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::FromArgMatches;
use http_body_util::BodyExt;
use rmicro::api::{ApiArgs, Gateway};
use rmicro::Cli;
use rmicro_runtime::registry::{MemoryRegistry, Node, Registry, Service as Record};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every test is bounded by this, whatever its peers do.
const LIMIT: Duration = Duration::from_secs(60);

async fn bounded<F: std::future::Future>(test: F) -> F::Output {
    tokio::time::timeout(LIMIT, test)
        .await
        .expect("the test finished within its time limit")
}

/// A peer process, killed (and its directory removed) when dropped.
struct Peer {
    child: Child,
    addr: String,
    dir: Option<PathBuf>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// A name no other test of this process uses.
fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// tests/python/http_backend.py in `mode` (`1.0`, `1.1`, `close`).
fn python(mode: &str) -> Peer {
    let mut child = Command::new("python3")
        .arg(root().join("tests/python/http_backend.py"))
        .arg(mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("python3 does not run ({e}): run scripts/test.sh, which installs what the tests need")
        });
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let Some(addr) = line.trim().strip_prefix("listening on ") else {
        let _ = child.kill();
        panic!("the Python backend did not start: {line:?}");
    };
    Peer {
        addr: addr.to_string(),
        child,
        dir: None,
    }
}

/// Size of nginx's `big.bin`: more than the socket buffers hold, streamed in many reads.
const NGINX_BIG: usize = 8 << 20;

/// The bytes of nginx's `big.bin`.
fn big_file() -> Vec<u8> {
    (0..NGINX_BIG)
        .map(|i| (i % 251) as u8 ^ (i >> 16) as u8)
        .collect()
}

/// nginx in the foreground on a free port, one worker, everything in a temp prefix: static
/// files under `/ng/` (`small.txt`, `big.bin`), `POST /ng/post` answered `posted`, and kept-alive
/// connections closed after 1 s idle or 3 requests.
fn nginx() -> Peer {
    nginx_serving(None)
}

/// [`nginx`] serving HTTPS only, with the certificate and key in `certs` (`server.pem`, for
/// 127.0.0.1 and localhost, signed by `ca.pem`).
#[cfg(feature = "tls")]
fn nginx_https(certs: &rmicro_tests::etcd::TestCerts) -> Peer {
    nginx_serving(Some((&certs.dir, false)))
}

/// [`nginx_https`] requiring a client certificate signed by `ca.pem` (mutual TLS).
#[cfg(feature = "tls")]
fn nginx_mutual_tls(certs: &rmicro_tests::etcd::TestCerts) -> Peer {
    nginx_serving(Some((&certs.dir, true)))
}

/// [`nginx`], over TLS with `server.pem` and `server.key` in the directory `tls` names if
/// given, requiring a client certificate signed by its `ca.pem` if it says so.
fn nginx_serving(tls: Option<(&Path, bool)>) -> Peer {
    let (ssl, certificate) = match tls {
        Some((certs, mutual)) => (
            " ssl",
            format!(
                "ssl_certificate {};\n    ssl_certificate_key {};\n    {}",
                certs.join("server.pem").display(),
                certs.join("server.key").display(),
                if mutual {
                    format!(
                        "ssl_client_certificate {};\n    ssl_verify_client on;",
                        certs.join("ca.pem").display()
                    )
                } else {
                    String::new()
                }
            ),
        ),
        None => ("", String::new()),
    };
    let dir = std::env::temp_dir().join(format!("rmicro-nginx-{}", unique()));
    let www = dir.join("www/ng");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("small.txt"), "small file\n").unwrap();
    std::fs::write(www.join("big.bin"), big_file()).unwrap();
    let port = rmicro_tests::free_port();
    let d = dir.display();
    let conf = format!(
        "worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {d}/client_body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  default_type application/octet-stream;
  keepalive_timeout 1s;
  keepalive_requests 3;
  server {{
    listen 127.0.0.1:{port}{ssl};
    {certificate}
    root {d}/www;
    location = /ng/post {{ return 200 \"posted\"; }}
  }}
}}
"
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let binary = ["nginx", "/usr/sbin/nginx"]
        .into_iter()
        .find(|b| Command::new(b).arg("-v").output().is_ok())
        .unwrap_or_else(|| {
            panic!(
                "nginx is not installed: run scripts/test.sh, which installs what the tests need"
            )
        });
    let child = Command::new(binary)
        .arg("-p")
        .arg(&dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        // One process, no master and workers: killing the child stops all of nginx (a killed
        // master leaves its workers running, listening, for good).
        .args(["-g", "daemon off; master_process off;"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut peer = Peer {
        child,
        addr: format!("127.0.0.1:{port}"),
        dir: Some(dir.clone()),
    };
    let start = Instant::now();
    while std::net::TcpStream::connect(&peer.addr).is_err() {
        let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
        if let Ok(Some(status)) = peer.child.try_wait() {
            panic!("nginx exited ({status}): {log}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "nginx did not listen on {} within 10 s: {log}",
            peer.addr
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    peer
}

/// Registers node `id` of `service` at `addr` with `metadata`.
async fn register_with(
    registry: &Arc<dyn Registry>,
    service: &str,
    id: &str,
    addr: &str,
    metadata: &[(&str, &str)],
) {
    let record = Record {
        name: service.into(),
        version: "latest".into(),
        nodes: vec![Node {
            id: id.into(),
            address: addr.into(),
            metadata: metadata
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
        }],
        ..Default::default()
    };
    registry
        .register(&record, Duration::from_secs(300))
        .await
        .unwrap();
}

/// A gateway (`rmicro api --handler http FLAGS`) on a free port in front of `peer`, registered
/// as `go.micro.api.<service>`. The gateway stops when the returned sender is dropped.
async fn gateway(
    service: &str,
    peer: &Peer,
    flags: &[&str],
) -> (String, tokio::sync::oneshot::Sender<()>) {
    gateway_with(service, peer, &[], flags).await
}

/// [`gateway`], the node registered with `metadata`.
async fn gateway_with(
    service: &str,
    peer: &Peer,
    metadata: &[(&str, &str)],
    flags: &[&str],
) -> (String, tokio::sync::oneshot::Sender<()>) {
    gateway_at(service, &peer.addr, metadata, flags).await
}

/// [`gateway`], the node registered at `address` with `metadata`.
async fn gateway_at(
    service: &str,
    address: &str,
    metadata: &[(&str, &str)],
    flags: &[&str],
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let (addr, stop, _) = gateway_handle(service, address, metadata, flags).await;
    (addr, stop)
}

/// [`gateway_at`], and the running gateway's handle.
async fn gateway_handle(
    service: &str,
    address: &str,
    metadata: &[(&str, &str)],
    flags: &[&str],
) -> (String, tokio::sync::oneshot::Sender<()>, Gateway) {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    register_with(
        &registry,
        &format!("go.micro.api.{service}"),
        "n0",
        address,
        metadata,
    )
    .await;
    let mut args = vec![
        "rmicro",
        "api",
        "--handler",
        "http",
        "--address",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(flags);
    let cli = Cli::default();
    let matches = cli.command().try_get_matches_from(args).unwrap();
    let sub = matches.subcommand_matches("api").unwrap().clone();
    let api = ApiArgs::from_arg_matches(&sub).unwrap();
    let gateway = Gateway::new(api, &sub, cli.into_plugins(), Some(registry)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(gateway.clone().serve(listener, async {
        let _ = rx.await;
    }));
    (addr, tx, gateway)
}

type ClientBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

/// A keep-alive HTTP/1.1 client connection to the gateway.
struct Client {
    sender: hyper::client::conn::http1::SendRequest<ClientBody>,
    gw: String,
}

/// A response as the client got it.
struct Got {
    status: u16,
    version: http::Version,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl Got {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

impl Client {
    async fn connect(gw: &str) -> Client {
        let stream = tokio::net::TcpStream::connect(gw).await.unwrap();
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        Client {
            sender,
            gw: gw.to_string(),
        }
    }

    fn request(&self, method: &str, path: &str) -> http::request::Builder {
        http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.gw)
    }

    /// Sends `req` and reads the whole answer.
    async fn send(&mut self, req: http::Request<ClientBody>) -> Got {
        self.sender
            .ready()
            .await
            .expect("the connection stays open");
        let resp = self.sender.send_request(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes().to_vec();
        Got {
            status: parts.status.as_u16(),
            version: parts.version,
            headers: parts.headers,
            body,
        }
    }

    async fn get(&mut self, path: &str) -> Got {
        let req = self.request("GET", path).body(empty()).unwrap();
        self.send(req).await
    }

    async fn post(&mut self, path: &str, body: &'static [u8]) -> Got {
        let req = self
            .request("POST", path)
            .body(full(Bytes::from_static(body)))
            .unwrap();
        self.send(req).await
    }
}

fn empty() -> ClientBody {
    full(Bytes::new())
}

fn full(bytes: Bytes) -> ClientBody {
    http_body_util::Full::new(bytes).boxed()
}

/// What `/…/big?n=N` of the Python backend answers.
fn python_big(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 65511 % 251) as u8).collect()
}

/// Plain bodies, large close-delimited ones and concurrent requests through a Python backend:
/// each body whole, no 502 on the requests that follow.
async fn bodies_arrive_whole(mode: &str) {
    let py = python(mode);
    let (gw, _stop) = gateway("py", &py, &[]).await;
    let mut client = Client::connect(&gw).await;
    for i in 0..6 {
        let r = client.get("/py/hello").await;
        assert_eq!((r.status, r.text()), (200, format!("hello {mode}")), "{i}");
        // In the gateway's own version, whatever the node's (the connection is kept).
        assert_eq!(r.version, http::Version::HTTP_11);
        let n = 3_000_000 + i * 7919;
        let r = client.get(&format!("/py/big?n={n}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            r.body == python_big(n),
            "big body {i}: {} bytes of {n}",
            r.body.len()
        );
    }
    // Eight clients at once, each with its own keep-alive connection.
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..8 {
        let gw = gw.clone();
        let mode = mode.to_string();
        tasks.spawn(async move {
            let mut client = Client::connect(&gw).await;
            for i in 0..15 {
                let r = if i % 5 == 0 {
                    client.post("/py/upload", b"abc").await
                } else {
                    client.get("/py/hello").await
                };
                assert_eq!(r.status, 200, "client {t} request {i}: {}", r.text());
                let want = if i % 5 == 0 {
                    "len=3 sum=294".to_string()
                } else {
                    format!("hello {mode}")
                };
                assert_eq!(r.text(), want);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_http10_close_delimited_bodies_arrive_whole() {
    bounded(bodies_arrive_whole("1.0")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_http11_bodies_arrive_whole() {
    bounded(bodies_arrive_whole("1.1")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_closing_every_connection_gives_no_failed_request() {
    bounded(bodies_arrive_whole("close")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_keep_alive_timeout_gives_no_failed_request() {
    bounded(async {
        // Python closes a kept-alive connection after 0.5 s idle: requests come around then.
        let py = python("1.1");
        let (gw, _stop) = gateway("py", &py, &[]).await;
        let mut client = Client::connect(&gw).await;
        for i in 0..12u64 {
            let r = client.get("/py/hello").await;
            assert_eq!(r.status, 200, "GET {i}: {}", r.text());
            tokio::time::sleep(Duration::from_millis(440 + i * 10)).await;
        }
        let mut posts = Vec::new();
        for i in 0..8u64 {
            let r = client.post("/py/upload", b"x").await;
            posts.push((r.status, r.text()));
            tokio::time::sleep(Duration::from_millis(460 + i * 10)).await;
        }
        for (status, text) in &posts {
            assert!(
                *status == 200 && text == "len=1 sum=120"
                    || *status == 502 && text.contains("was not repeated"),
                "{posts:?}"
            );
        }
    })
    .await;
}

/// Reads from `conn` until `want` has come in whole; the times each new piece arrived, since
/// `start`, with what had come by then.
async fn arrivals(
    conn: &mut tokio::net::TcpStream,
    start: Instant,
    until: &str,
) -> Vec<(Duration, String)> {
    let mut got = Vec::new();
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    while !text.contains(until) {
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before {until:?}: {text:?}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
        got.push((start.elapsed(), text.clone()));
    }
    got
}

/// When each of the five events of `/py/sse` reached the client, since the request.
async fn sse_times(gw: &str) -> Vec<Duration> {
    let mut conn = tokio::net::TcpStream::connect(gw).await.unwrap();
    let start = Instant::now();
    conn.write_all(b"GET /py/sse HTTP/1.1\r\nHost: gw\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let got = arrivals(&mut conn, start, "data: event 4\n\n").await;
    (0..5)
        .map(|i| {
            let event = format!("data: event {i}\n\n");
            got.iter()
                .find(|(_, text)| text.contains(&event))
                .map(|(at, _)| *at)
                .unwrap()
        })
        .collect()
}

async fn events_arrive_as_sent(mode: &str) {
    let py = python(mode);
    let (gw, _stop) = gateway("py", &py, &[]).await;
    let times = sse_times(&gw).await;
    // Sent at 200, 400, ... 1000 ms: each must come about then, not all at the end. The
    // margins leave room for a loaded machine; held back to the end, the five would arrive
    // together, 800 ms after the first was sent.
    for (i, at) in times.iter().enumerate() {
        let sent = Duration::from_millis(200 * (i as u64 + 1));
        assert!(
            *at + Duration::from_millis(20) >= sent && *at < sent + Duration::from_millis(600),
            "{mode}: event {i} sent at {sent:?} arrived at {at:?} ({times:?})"
        );
    }
    assert!(
        times[4] >= times[0] + Duration::from_millis(400),
        "{mode}: the events arrived together, not as they were sent ({times:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_arrive_as_they_are_sent() {
    bounded(async {
        events_arrive_as_sent("1.1").await; // chunked
        events_arrive_as_sent("1.0").await; // close-delimited
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_is_answered_when_the_node_answers() {
    bounded(async {
        let py = python("1.1");
        let (gw, _stop) = gateway("py", &py, &["--backend-timeout", "5s"]).await;
        let mut client = Client::connect(&gw).await;
        let start = Instant::now();
        let r = client.get("/py/longpoll").await;
        assert_eq!((r.status, r.text().as_str()), (200, "done"));
        assert!(start.elapsed() >= Duration::from_millis(1500));
        assert!(
            start.elapsed() < Duration::from_millis(4000),
            "{:?}",
            start.elapsed()
        );
        // The connection serves on.
        assert_eq!(client.get("/py/hello").await.text(), "hello 1.1");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_upload_streams_to_a_node_that_reads_it_slowly() {
    bounded(async {
        let py = python("1.1");
        // The node takes over a second to read it, longer than the idle limit: bytes move.
        let (gw, _stop) = gateway("py", &py, &["--idle-timeout", "1s"]).await;
        let mut client = Client::connect(&gw).await;
        let (tx, rx) = tokio::sync::mpsc::channel::<
            Result<http_body::Frame<Bytes>, std::convert::Infallible>,
        >(1);
        let chunk: Vec<u8> = (0..16384u32).map(|i| (i % 7) as u8).collect();
        let per_chunk: u64 = chunk.iter().map(|&b| u64::from(b)).sum();
        let chunks = 16u64;
        let writer = tokio::spawn(async move {
            for _ in 0..chunks {
                tx.send(Ok(http_body::Frame::data(Bytes::from(chunk.clone()))))
                    .await
                    .unwrap();
            }
        });
        let body = http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        let req = client
            .request("POST", "/py/upload")
            .body(body.boxed())
            .unwrap();
        let start = Instant::now();
        let r = client.send(req).await;
        writer.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.text(),
            format!("len={} sum={}", 16384 * chunks, per_chunk * chunks)
        );
        assert!(start.elapsed() > Duration::from_secs(1), "read slowly");
    })
    .await;
}

/// Sends a POST of `len` bytes with `Expect: 100-continue` the way curl does: the body only
/// after `100 Continue` (or a second without it). The time until the `100` came (`None` if it
/// did not within a second), and the final answer.
async fn expect_continue(gw: &str, path: &str, len: usize) -> (Option<Duration>, String) {
    let mut conn = tokio::net::TcpStream::connect(gw).await.unwrap();
    let start = Instant::now();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Length: {len}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut first = vec![0u8; 25];
    let continued =
        match tokio::time::timeout(Duration::from_secs(1), conn.read_exact(&mut first)).await {
            Ok(read) => {
                read.unwrap();
                assert_eq!(&first, b"HTTP/1.1 100 Continue\r\n\r\n", "{first:?}");
                Some(start.elapsed())
            }
            Err(_) => None,
        };
    conn.write_all(&vec![b'e'; len]).await.unwrap();
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).await.unwrap();
    if continued.is_none() {
        let mut all = first.clone();
        all.retain(|&b| b != 0);
        all.extend_from_slice(&rest);
        rest = all;
    }
    (continued, String::from_utf8_lossy(&rest).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_expecting_100_continue_goes_through_at_once() {
    bounded(async {
        let py = python("1.1");
        let ng = nginx();
        let (gw, _stop) = gateway("py", &py, &[]).await;
        let (continued, answer) = expect_continue(&gw, "/py/upload", 4096).await;
        assert!(
            continued.is_some_and(|t| t < Duration::from_millis(900)),
            "100 Continue after {continued:?}"
        );
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.ends_with(&format!("len=4096 sum={}", 4096 * 101)),
            "{answer}"
        );

        let (gw, _stop) = gateway("ng", &ng, &[]).await;
        let (continued, answer) = expect_continue(&gw, "/ng/post", 4096).await;
        assert!(
            continued.is_some_and(|t| t < Duration::from_millis(900)),
            "100 Continue after {continued:?}"
        );
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("posted"), "{answer}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_informational_103_before_the_answer_is_passed_over() {
    bounded(async {
        let py = python("1.1");
        let (gw, _stop) = gateway("py", &py, &[]).await;
        let mut client = Client::connect(&gw).await;
        for _ in 0..3 {
            let r = client.get("/py/early").await;
            assert_eq!((r.status, r.text().as_str()), (200, "hinted"));
            assert_eq!(client.get("/py/hello").await.text(), "hello 1.1");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_with_content_length_and_transfer_encoding_is_a_502() {
    bounded(async {
        let py = python("1.1");
        let (gw, _stop) = gateway("py", &py, &[]).await;
        let mut conn = tokio::net::TcpStream::connect(&gw).await.unwrap();
        conn.write_all(b"GET /py/clte HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        conn.read_to_end(&mut got).await.unwrap();
        let got = String::from_utf8_lossy(&got);
        assert!(got.starts_with("HTTP/1.1 502"), "{got}");
        assert!(
            got.contains("Content-Length and Transfer-Encoding"),
            "{got}"
        );
        // The node is not avoided for it, and its connection serves on (or is closed).
        let mut client = Client::connect(&gw).await;
        for _ in 0..3 {
            let r = client.get("/py/hello").await;
            assert_eq!((r.status, r.text().as_str()), (200, "hello 1.1"));
        }
    })
    .await;
}

/// hyper undoes only the chunking of a response in `Transfer-Encoding: gzip, chunked`; passed
/// on, the client would get gzip bytes with nothing saying so (the hop's `Transfer-Encoding` is
/// not forwarded) and take them for the body. nginx and Go's transport refuse such a response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_in_a_transfer_coding_other_than_chunked_is_a_502() {
    bounded(async {
        let py = python("1.1");
        let (gw, _stop) = gateway("py", &py, &[]).await;
        let mut client = Client::connect(&gw).await;
        for _ in 0..2 {
            let r = client.get("/py/tegzip").await;
            assert_eq!(r.status, 502, "{}", r.text());
            assert!(r.text().contains("transfer coding"), "{}", r.text());
            // The node is not avoided for it.
            let r = client.get("/py/hello").await;
            assert_eq!((r.status, r.text().as_str()), (200, "hello 1.1"));
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_static_files_head_conditional_and_range_requests() {
    bounded(async {
        let ng = nginx();
        let (gw, _stop) = gateway("ng", &ng, &[]).await;
        // All on one kept-alive client connection: a body framed wrong would show on the next.
        let mut client = Client::connect(&gw).await;
        let big = big_file();
        for _ in 0..2 {
            let r = client.get("/ng/big.bin").await;
            assert_eq!(r.status, 200);
            assert_eq!(r.header("content-length"), NGINX_BIG.to_string());
            assert!(r.body == big, "{} bytes", r.body.len());

            let r = client
                .send(client.request("HEAD", "/ng/big.bin").body(empty()).unwrap())
                .await;
            assert_eq!(r.status, 200);
            assert_eq!(r.header("content-length"), NGINX_BIG.to_string());
            assert!(r.body.is_empty());
            let modified = r.header("last-modified").to_string();
            let etag = r.header("etag").to_string();
            assert!(!modified.is_empty() && !etag.is_empty());

            let r = client
                .send(
                    client
                        .request("GET", "/ng/big.bin")
                        .header("if-modified-since", &modified)
                        .body(empty())
                        .unwrap(),
                )
                .await;
            assert_eq!(r.status, 304);
            assert!(r.body.is_empty());
            let r = client
                .send(
                    client
                        .request("GET", "/ng/small.txt")
                        .header("if-none-match", "\"nope\"")
                        .body(empty())
                        .unwrap(),
                )
                .await;
            assert_eq!((r.status, r.text().as_str()), (200, "small file\n"));

            let r = client
                .send(
                    client
                        .request("GET", "/ng/big.bin")
                        .header("range", "bytes=1000000-1000099")
                        .body(empty())
                        .unwrap(),
                )
                .await;
            assert_eq!(r.status, 206);
            assert_eq!(
                r.header("content-range"),
                format!("bytes 1000000-1000099/{NGINX_BIG}")
            );
            assert!(r.body == big[1_000_000..1_000_100]);

            let r = client.get("/ng/missing").await;
            assert_eq!(r.status, 404);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_closing_kept_alive_connections_often_fails_no_request() {
    bounded(async {
        // nginx closes a connection after 1 s idle or 3 requests.
        let ng = nginx();
        let (gw, _stop) = gateway("ng", &ng, &[]).await;
        let mut client = Client::connect(&gw).await;
        for i in 0..10u64 {
            for _ in 0..4 {
                let r = client.get("/ng/small.txt").await;
                assert_eq!((r.status, r.text().as_str()), (200, "small file\n"), "{i}");
            }
            // Around nginx's keep-alive timeout.
            tokio::time::sleep(Duration::from_millis(960 + i * 10)).await;
        }
        let mut posts = Vec::new();
        for i in 0..6u64 {
            let r = client.post("/ng/post", b"order=1").await;
            posts.push((r.status, r.text()));
            tokio::time::sleep(Duration::from_millis(970 + i * 10)).await;
        }
        // A POST is never sent twice: it went through, or the client is told it was not
        // repeated.
        for (status, text) in &posts {
            assert!(
                *status == 200 && text == "posted"
                    || *status == 502 && text.contains("was not repeated"),
                "{posts:?}"
            );
        }
        // Concurrent clients, each connection of the gateway closed after three requests.
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..6 {
            let gw = gw.clone();
            tasks.spawn(async move {
                let mut client = Client::connect(&gw).await;
                for i in 0..30 {
                    let r = client.get("/ng/small.txt").await;
                    assert_eq!(r.status, 200, "{i}: {}", r.text());
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_as_a_request_comes_replays_a_get_but_never_a_post() {
    bounded(async {
        // Each Python connection answers one request, then closes when the next comes.
        let py = python("once");
        // The hyper path, whose connections the POST below shares with the GETs.
        let (gw, _stop) = gateway("py", &py, &["--express-lane", "false"]).await;
        let mut client = Client::connect(&gw).await;
        assert_eq!(client.get("/py/hello").await.text(), "hello once");
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Closed as it went out, and sent once more on a new connection.
        let r = client.get("/py/hello").await;
        assert_eq!((r.status, r.text().as_str()), (200, "hello once"));
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Not repeated: the client is told.
        let r = client.post("/py/upload", b"order=1").await;
        assert_eq!(r.status, 502, "{}", r.text());
        assert!(r.text().contains("was not repeated"), "{}", r.text());
        // The node handled two requests (the GETs), not the POST.
        assert_eq!(client.get("/py/count").await.text(), "2");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_nginx_refuses_for_its_size_gets_nginxs_answer() {
    bounded(async {
        // nginx's client_max_body_size (1 MiB by default) refuses a 4 MiB body at its head.
        let ng = nginx();
        let (gw, _stop) = gateway("ng", &ng, &["--body-limit", "16MiB"]).await;
        for i in 0..3 {
            // The gateway answers before the body has all come: it closes the connection
            // after (as nginx itself would without reading the rest).
            let mut client = Client::connect(&gw).await;
            let body = Bytes::from(vec![b'u'; 4 << 20]);
            let start = Instant::now();
            let r = client
                .send(client.request("POST", "/ng/post").body(full(body)).unwrap())
                .await;
            assert_eq!(r.status, 413, "{i}: {}", r.text());
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "{:?}",
                start.elapsed()
            );
            let mut client = Client::connect(&gw).await;
            assert_eq!(client.post("/ng/post", b"small").await.text(), "posted");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http10_client_gets_a_chunked_stream_whole_and_close_delimited() {
    bounded(async {
        let py = python("1.1");
        let (gw, _stop) = gateway("py", &py, &[]).await;
        // Also from a client asking to keep the connection: it is told it closes, which is
        // where the body ends.
        for ask in ["", "Connection: keep-alive\r\n"] {
            let mut conn = tokio::net::TcpStream::connect(&gw).await.unwrap();
            conn.write_all(format!("GET /py/sse HTTP/1.0\r\n{ask}\r\n").as_bytes())
                .await
                .unwrap();
            let mut got = Vec::new();
            conn.read_to_end(&mut got).await.unwrap();
            let got = String::from_utf8_lossy(&got);
            let (head, body) = got.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with("HTTP/1.0 200"), "{head}");
            let head = head.to_ascii_lowercase();
            assert!(!head.contains("transfer-encoding"), "{head}");
            assert!(!head.contains("keep-alive"), "{ask}: {head}");
            let want: String = (0..5)
                .map(|i| format!("id: {i}\ndata: event {i}\n\n"))
                .collect();
            assert_eq!(body, want);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_an_event_stream_ends_the_nodes_stream() {
    bounded(async {
        for mode in ["1.1", "1.0"] {
            let py = python(mode);
            let (gw, _stop) = gateway("py", &py, &[]).await;
            let mut conn = tokio::net::TcpStream::connect(&gw).await.unwrap();
            conn.write_all(b"GET /py/sse HTTP/1.1\r\nHost: gw\r\n\r\n")
                .await
                .unwrap();
            arrivals(&mut conn, Instant::now(), "data: event 0\n\n").await;
            drop(conn);
            // The node's next write (200 ms later) finds its connection gone.
            tokio::time::sleep(Duration::from_millis(700)).await;
            let mut client = Client::connect(&gw).await;
            assert_eq!(client.get("/py/broken").await.text(), "1", "{mode}");
        }
    })
    .await;
}

/// A node that registered `secure=true` (an HTTPS server: nginx with a certificate signed by
/// the test CA) is reached over TLS with `--client-tls-ca`: small and large answers, a body
/// sent, and the new connections nginx's `keepalive_requests 3` makes the gateway open.
#[cfg(feature = "tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_registered_secure_are_reached_over_tls() {
    bounded(async {
        let certs = rmicro_tests::etcd::TestCerts::new("gw-https-node");
        let ng = nginx_https(&certs);
        let ca = certs.dir.join("ca.pem").display().to_string();
        let secure = [("secure", "true")];
        let (gw, _stop) = gateway_with("ng", &ng, &secure, &["--client-tls-ca", &ca]).await;
        let mut client = Client::connect(&gw).await;
        for _ in 0..7 {
            let got = client.get("/ng/small.txt").await;
            assert_eq!((got.status, got.text().as_str()), (200, "small file\n"));
        }
        let got = client.get("/ng/big.bin").await;
        assert_eq!(got.status, 200);
        assert!(got.body == big_file(), "{} bytes", got.body.len());
        let got = client.post("/ng/post", b"a body").await;
        assert_eq!((got.status, got.text().as_str()), (200, "posted"));
        // After a second idle (nginx's keepalive_timeout) the pooled connection is gone too.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let got = client.get("/ng/small.txt").await;
        assert_eq!((got.status, got.text().as_str()), (200, "small file\n"));
    })
    .await;
}

/// A node registered at an `https://` address (as a TLS server advertises itself), no
/// `secure` in its metadata, is reached over TLS too; without client TLS the 502 says why.
#[cfg(feature = "tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_registered_at_https_addresses_are_reached_over_tls() {
    bounded(async {
        let certs = rmicro_tests::etcd::TestCerts::new("gw-https-address");
        let ng = nginx_https(&certs);
        let ca = certs.dir.join("ca.pem").display().to_string();
        let at = format!("https://{}", ng.addr);
        let (gw, _stop) = gateway_at("ng", &at, &[], &["--client-tls-ca", &ca]).await;
        let got = Client::connect(&gw).await.get("/ng/small.txt").await;
        assert_eq!((got.status, got.text().as_str()), (200, "small file\n"));

        let (gw, _stop) = gateway_at("ng", &at, &[], &[]).await;
        let got = Client::connect(&gw).await.get("/ng/small.txt").await;
        let (status, detail) = error_detail(&got);
        assert_eq!(status, 502, "{detail}");
        assert!(
            detail.contains(
                "serves TLS (its registration says so: secure=true or an https:// address)"
            ),
            "{detail}"
        );
    })
    .await;
}

/// The CA the gateway checks secure nodes against is re-read on a reload (`SIGHUP` in
/// `rmicro api`): connections opened from then on check against the new one.
#[cfg(feature = "tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_takes_a_renewed_client_ca() {
    bounded(async {
        let certs = rmicro_tests::etcd::TestCerts::new("gw-client-reload");
        let other = rmicro_tests::etcd::TestCerts::new("gw-client-reload-other");
        let ng = nginx_https(&certs);
        let live = tempfile::Builder::new()
            .prefix("rmicro-gw-client-ca-")
            .tempdir()
            .unwrap();
        let ca = live.path().join("ca.pem");
        std::fs::write(&ca, certs.read("ca.pem")).unwrap();
        let ca_flag = ca.display().to_string();
        let (gw, _stop, gateway) = gateway_handle(
            "ng",
            &ng.addr,
            &[("secure", "true")],
            &["--client-tls-ca", &ca_flag],
        )
        .await;
        assert!(gateway.has_tls_files());
        let get = || async { Client::connect(&gw).await.get("/ng/small.txt").await };
        assert_eq!(get().await.status, 200);

        // Another CA, which did not sign the node's certificate.
        std::fs::write(&ca, other.read("ca.pem")).unwrap();
        gateway.reload_tls().unwrap();
        // The pooled connection is nginx's to close after a second idle; the next is new.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let got = get().await;
        let (status, detail) = error_detail(&got);
        assert_eq!(status, 502, "{detail}");
        assert!(detail.contains("failed the TLS handshake"), "{detail}");

        // A CA file that cannot be used: refused with why; the one in use stays.
        std::fs::write(&ca, "not a certificate").unwrap();
        let err = gateway.reload_tls().unwrap_err().to_string();
        assert!(
            err.contains("--client-tls-*") && err.contains("ca.pem"),
            "{err}"
        );
        assert_eq!(get().await.status, 502);

        std::fs::write(&ca, certs.read("ca.pem")).unwrap();
        gateway.reload_tls().unwrap();
        assert_eq!(get().await.status, 200);

        // With its own certificate too: each set is reloaded on its own, and the error says
        // which could not be and which was.
        let (cert, key) = (live.path().join("gw.pem"), live.path().join("gw.key"));
        std::fs::write(&cert, certs.read("server.pem")).unwrap();
        std::fs::write(&key, certs.read("server.key")).unwrap();
        let (cert_flag, key_flag) = (cert.display().to_string(), key.display().to_string());
        let (_https, _stop_https, both) = gateway_handle(
            "ng",
            &ng.addr,
            &[("secure", "true")],
            &[
                "--client-tls-ca",
                &ca_flag,
                "--tls-cert",
                &cert_flag,
                "--tls-key",
                &key_flag,
            ],
        )
        .await;
        both.reload_tls().unwrap();
        std::fs::write(&key, other.read("server.key")).unwrap();
        let err = both.reload_tls().unwrap_err().to_string();
        assert!(
            err.starts_with("--tls-cert/--tls-key: ")
                && err.contains("does not belong to the certificate")
                && err.ends_with("(--client-tls-* reloaded)"),
            "{err}"
        );
    })
    .await;
}

/// The JSON error of a gateway answer: its status and `detail`.
#[cfg(feature = "tls")]
fn error_detail(got: &Got) -> (u16, String) {
    let v: serde_json::Value = serde_json::from_slice(&got.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", got.text()));
    assert_eq!(v["id"], "go.micro.api", "{}", got.text());
    (
        got.status,
        v["detail"].as_str().unwrap_or_default().to_string(),
    )
}

/// A secure node and a gateway that cannot speak TLS to it (no CA given, or a CA that did not
/// sign the node's certificate), and a plain node behind a gateway that speaks only TLS: each a
/// 502 that says why and what to give.
#[cfg(feature = "tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secure_node_the_gateway_cannot_speak_tls_to_is_a_502_that_says_why() {
    bounded(async {
        let certs = rmicro_tests::etcd::TestCerts::new("gw-https-refused");
        let other = rmicro_tests::etcd::TestCerts::new("gw-https-other-ca");
        let ng = nginx_https(&certs);
        let secure = [("secure", "true")];

        let (gw, _stop) = gateway_with("ng", &ng, &secure, &[]).await;
        let got = Client::connect(&gw).await.get("/ng/small.txt").await;
        let (status, detail) = error_detail(&got);
        assert_eq!(status, 502, "{detail}");
        assert!(
            detail.contains(&format!(
                "node {} serves TLS (its registration says so: secure=true or an https:// address)",
                ng.addr
            )) && detail.contains("--client-tls-ca"),
            "{detail}"
        );

        let wrong_ca = other.dir.join("ca.pem").display().to_string();
        let (gw, _stop) = gateway_with("ng", &ng, &secure, &["--client-tls-ca", &wrong_ca]).await;
        let got = Client::connect(&gw).await.get("/ng/small.txt").await;
        let (status, detail) = error_detail(&got);
        assert_eq!(status, 502, "{detail}");
        assert!(
            detail.contains("failed the TLS handshake") && detail.contains("certificate"),
            "{detail}"
        );

        // A gateway with client TLS never falls back to plain text (as services' clients): a
        // plain node is a 502 that says why, not a request sent in the clear.
        let py = python("1.1");
        let ca = certs.dir.join("ca.pem").display().to_string();
        let (gw, _stop) = gateway("py", &py, &["--client-tls-ca", &ca]).await;
        let got = Client::connect(&gw).await.get("/py/hello").await;
        let (status, detail) = error_detail(&got);
        assert_eq!(status, 502, "{detail}");
        assert!(
            detail.contains("failed the TLS handshake")
                && detail.contains("its registration does not say it serves TLS"),
            "{detail}"
        );
    })
    .await;
}

/// A node that requires client certificates (nginx's `ssl_verify_client on`) is reached with
/// `--client-tls-cert` and `--client-tls-key`; without them nginx's own 400 comes back.
#[cfg(feature = "tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secure_node_requiring_client_certificates_gets_the_gateways() {
    bounded(async {
        let certs = rmicro_tests::etcd::TestCerts::new("gw-https-mutual");
        let ng = nginx_mutual_tls(&certs);
        let file = |name: &str| certs.dir.join(name).display().to_string();
        let (ca, cert, key) = (file("ca.pem"), file("client.pem"), file("client.key"));
        let secure = [("secure", "true")];
        let flags = [
            "--client-tls-ca",
            &ca,
            "--client-tls-cert",
            &cert,
            "--client-tls-key",
            &key,
        ];
        let (gw, _stop) = gateway_with("ng", &ng, &secure, &flags).await;
        let mut client = Client::connect(&gw).await;
        for _ in 0..4 {
            let got = client.get("/ng/small.txt").await;
            assert_eq!((got.status, got.text().as_str()), (200, "small file\n"));
        }

        let (gw, _stop) = gateway_with("ng", &ng, &secure, &["--client-tls-ca", &ca]).await;
        let got = Client::connect(&gw).await.get("/ng/small.txt").await;
        assert_eq!(got.status, 400, "{}", got.text());
        assert!(
            got.text().contains("No required SSL certificate was sent"),
            "{}",
            got.text()
        );
    })
    .await;
}

/// A secure node's certificate is checked for the host its registration names (a DNS name
/// here, `localhost`), or for the one name `--client-tls-server-name` gives all nodes: a name
/// the certificate lacks fails the handshake, saying which.
#[cfg(feature = "tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secure_nodes_certificate_is_checked_for_its_name() {
    bounded(async {
        let certs = rmicro_tests::etcd::TestCerts::new("gw-https-names");
        let ng = nginx_https(&certs);
        let ca = certs.dir.join("ca.pem").display().to_string();
        let secure = [("secure", "true")];
        let port = ng.addr.rsplit_once(':').unwrap().1;
        let by_name = format!("localhost:{port}");
        let (gw, _stop) = gateway_at("ng", &by_name, &secure, &["--client-tls-ca", &ca]).await;
        let got = Client::connect(&gw).await.get("/ng/small.txt").await;
        assert_eq!((got.status, got.text().as_str()), (200, "small file\n"));

        let flags = [
            "--client-tls-ca",
            &ca,
            "--client-tls-server-name",
            "elsewhere.example",
        ];
        let (gw, _stop) = gateway_with("ng", &ng, &secure, &flags).await;
        let got = Client::connect(&gw).await.get("/ng/small.txt").await;
        let (status, detail) = error_detail(&got);
        assert_eq!(status, 502, "{detail}");
        assert!(
            detail.contains("failed the TLS handshake") && detail.contains("elsewhere.example"),
            "{detail}"
        );
    })
    .await;
}
