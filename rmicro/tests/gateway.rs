//! The gateway over real HTTP on loopback, with real HTTP backends found in a registry: routing,
//! every error status with its JSON body, failover, limits, timeouts, plugins, a bounded load run.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::FromArgMatches;
use http_body_util::BodyExt;
use rmicro::api::plugin::{
    from_fn, HttpService, Next, Plugin, PluginContext, PluginError, PluginLayer,
};
use rmicro::api::{ApiArgs, Gateway};
use rmicro::Cli;
use rmicro_runtime::registry::{MemoryRegistry, Node, Registry, RegistryError, Service as Record};
use rmicro_tests::http;
use rmicro_tests::http::read_head;

/// Size of the body `/…/big` answers: more than the socket buffers between the gateway and a
/// client that does not read can hold.
const BIG: usize = 64 << 20;

/// An HTTP backend answering `node=<name> path=<path> body=<bytes> xff=<X-Forwarded-For>`,
/// `/…/slow` after 2 s, `/…/big` with [`BIG`] bytes, `/…/headers` with the request's headers.
struct Backend {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The node's accept loop; it ends once every connection it opened is closed.
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Backend {
    async fn start(name: &'static str) -> Backend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let stream = tokio::select! {
                    accepted = listener.accept() => match accepted { Ok((s, _)) => s, Err(_) => continue },
                    _ = &mut rx => break,
                };
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |mut req: hyper::Request<hyper::body::Incoming>| async move {
                            match req.headers().get("upgrade").and_then(|v| v.to_str().ok()) {
                                Some("echo") => return Ok(switch_to("echo", &mut req, echo)),
                                Some("hold") => return Ok(switch_to("hold", &mut req, hold)),
                                // Echo, agreed to only after a second.
                                Some("late") => {
                                    tokio::time::sleep(Duration::from_secs(1)).await;
                                    return Ok(switch_to("late", &mut req, echo));
                                }
                                // Switches to a protocol the client did not offer.
                                Some("other") => return Ok(switch_to("echo", &mut req, echo)),
                                _ => {}
                            }
                            let path = req.uri().path().to_string();
                            let xff = req
                                .headers()
                                .get("x-forwarded-for")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string();
                            if path.ends_with("/426") {
                                let mut resp = hyper::Response::new(http_body_util::Full::new(
                                    bytes::Bytes::from_static(b"switch to echo"),
                                ));
                                *resp.status_mut() = hyper::StatusCode::UPGRADE_REQUIRED;
                                resp.headers_mut().insert(
                                    "upgrade",
                                    hyper::header::HeaderValue::from_static("echo"),
                                );
                                return Ok::<_, Infallible>(resp);
                            }
                            if path.ends_with("/headers") {
                                // What the node was sent: `name: value` lines, sorted.
                                let mut lines: Vec<String> = req
                                    .headers()
                                    .iter()
                                    .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?")))
                                    .collect();
                                lines.sort();
                                return Ok::<_, Infallible>(hyper::Response::new(
                                    http_body_util::Full::new(bytes::Bytes::from(lines.join("\n"))),
                                ));
                            }
                            if path.ends_with("/slow") {
                                tokio::time::sleep(Duration::from_secs(2)).await;
                            }
                            if path.ends_with("/big") {
                                return Ok::<_, Infallible>(hyper::Response::new(
                                    http_body_util::Full::new(bytes::Bytes::from(vec![b'x'; BIG])),
                                ));
                            }
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes().len())
                                .unwrap_or(0);
                            let text = format!("node={name} path={path} body={body} xff={xff}");
                            Ok::<_, Infallible>(hyper::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from(text),
                            )))
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
            // Open connections are closed too: the node is gone.
            conns.abort_all();
            while conns.join_next().await.is_some() {}
        });
        Backend {
            addr,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Stops the node and returns once its listener and every connection it had are closed (a
    /// request sent after this cannot reach it on a kept-alive connection).
    async fn kill(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// Answers `101 Switching Protocols` to `protocol`, whose server is `serve`.
fn switch_to<F>(
    protocol: &'static str,
    req: &mut hyper::Request<hyper::body::Incoming>,
    serve: fn(hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>) -> F,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let switched = hyper::upgrade::on(req);
    tokio::spawn(async move {
        if let Ok(io) = switched.await {
            serve(hyper_util::rt::TokioIo::new(io)).await;
        }
    });
    let mut resp = hyper::Response::new(http_body_util::Full::default());
    *resp.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
    resp.headers_mut()
        .insert("upgrade", hyper::header::HeaderValue::from_static(protocol));
    resp.headers_mut().insert(
        "connection",
        hyper::header::HeaderValue::from_static("upgrade"),
    );
    resp
}

/// The `echo` protocol: every byte back.
async fn echo(mut io: hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = [0u8; 1024];
    while let Ok(n @ 1..) = io.read(&mut buf).await {
        if io.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}

/// The `hold` protocol: reads until the client's side closes, then keeps its own side open and
/// silent for a minute.
async fn hold(mut io: hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    while let Ok(1..) = io.read(&mut buf).await {}
    tokio::time::sleep(Duration::from_secs(60)).await;
}

async fn register(registry: &Arc<dyn Registry>, service: &str, id: &str, addr: &str) {
    let record = Record {
        name: service.into(),
        version: "latest".into(),
        nodes: vec![Node {
            id: id.into(),
            address: addr.into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    registry
        .register(&record, Duration::from_secs(300))
        .await
        .unwrap();
}

/// Starts a gateway in this process with `flags` (after `rmicro api`) on a free port.
async fn gateway(
    cli: Cli,
    flags: &[&str],
    registry: Arc<dyn Registry>,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let (addr, stop, _served) = gateway_handle(cli, flags, registry).await;
    (addr, stop)
}

/// As [`gateway`], also returning `serve`'s task (it completes when `serve` returns).
async fn gateway_handle(
    cli: Cli,
    flags: &[&str],
    registry: Arc<dyn Registry>,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let (_, gateway) = configured(cli, flags, registry);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(gateway.serve(listener, async {
        let _ = rx.await;
    }));
    (addr, tx, served)
}

/// A gateway with `flags` (and the default plugins) in front of one backend named `node`,
/// registered as `service` in a registry of its own. Keep the backend: dropping it stops it.
async fn gateway_to_one(
    service: &str,
    node: &'static str,
    flags: &[&str],
) -> (String, Backend, tokio::sync::oneshot::Sender<()>) {
    let (registry, backend) = one_node_registry(service, node).await;
    let (addr, stop) = gateway(Cli::default(), flags, registry).await;
    (addr, backend, stop)
}

/// A registry of its own with one backend named `node` registered as `service`. Keep the
/// backend: dropping it stops it.
async fn one_node_registry(service: &str, node: &'static str) -> (Arc<dyn Registry>, Backend) {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let backend = Backend::start(node).await;
    register(&registry, service, node, &backend.addr.to_string()).await;
    (registry, backend)
}

/// Parses `rmicro api --address 127.0.0.1:0 FLAGS` as the CLI does and builds the gateway on
/// `registry`, with the CLI's plugins; also returns the parsed `api` flags.
fn configured(cli: Cli, flags: &[&str], registry: Arc<dyn Registry>) -> (ApiArgs, Gateway) {
    let mut args = vec!["rmicro", "api", "--address", "127.0.0.1:0"];
    args.extend_from_slice(flags);
    let matches = cli.command().try_get_matches_from(args).unwrap();
    let sub = matches.subcommand_matches("api").unwrap().clone();
    let api = ApiArgs::from_arg_matches(&sub).unwrap();
    let gateway = Gateway::new(api.clone(), &sub, cli.into_plugins(), Some(registry)).unwrap();
    (api, gateway)
}

/// Runs a blocking HTTP call off the async threads.
async fn call(
    addr: &str,
    method: &'static str,
    path: &str,
    headers: Vec<(&'static str, String)>,
    body: String,
) -> http::HttpResponse {
    let (addr, path) = (addr.to_string(), path.to_string());
    tokio::task::spawn_blocking(move || {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        http::request(&addr, method, &path, &h, &body)
    })
    .await
    .unwrap()
}

async fn get(addr: &str, path: &str) -> http::HttpResponse {
    call(addr, "GET", path, Vec::new(), String::new()).await
}

async fn get_with(addr: &str, path: &str, header: (&'static str, String)) -> http::HttpResponse {
    call(addr, "GET", path, vec![header], String::new()).await
}

fn json_error(resp: &http::HttpResponse, code: u16) -> serde_json::Value {
    assert_eq!(resp.status, code, "{}", resp.body);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_str(&resp.body).expect("a JSON error body");
    assert_eq!(v["id"], "go.micro.api");
    assert_eq!(v["code"], code);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_path_and_namespace() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let user = Backend::start("user").await;
    let v1 = Backend::start("user-v1").await;
    register(&registry, "go.micro.api.user", "u1", &user.addr.to_string()).await;
    register(
        &registry,
        "go.micro.api.v1.user",
        "v1",
        &v1.addr.to_string(),
    )
    .await;
    register(&registry, "com.example.user", "ex", &v1.addr.to_string()).await;
    let (gw, _stop) = gateway(Cli::new(), &[], Arc::clone(&registry)).await;

    let r = get(&gw, "/user/call?name=x").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "node=user path=/user/call body=0 xff=127.0.0.1");
    let r = get(&gw, "/v1/user/x").await;
    assert_eq!(r.body, "node=user-v1 path=/v1/user/x body=0 xff=127.0.0.1");
    let r = call(&gw, "POST", "/user/call", vec![], "hello".into()).await;
    assert_eq!(r.body, "node=user path=/user/call body=5 xff=127.0.0.1");
    // A client's own X-Forwarded-For is kept, the gateway's peer appended.
    let r = get_with(&gw, "/user/call", ("X-Forwarded-For", "192.0.2.7".into())).await;
    assert_eq!(
        r.body,
        "node=user path=/user/call body=0 xff=192.0.2.7, 127.0.0.1"
    );

    let (gw2, _stop2) = gateway(
        Cli::new(),
        &["--namespace", "com.example"],
        Arc::clone(&registry),
    )
    .await;
    assert_eq!(
        get(&gw2, "/user/a").await.body,
        "node=user-v1 path=/user/a body=0 xff=127.0.0.1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_with_dot_segments_are_refused_with_or_without_plugins() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let user = Backend::start("user").await;
    register(&registry, "go.micro.api.user", "u1", &user.addr.to_string()).await;
    let (direct, _stop) = gateway(Cli::new(), &[], Arc::clone(&registry)).await;
    // Behind a plugin, the check comes before it: the plugin never sees such a path.
    let (behind, _stop2) =
        gateway(Cli::new(), &["--auth-tokens", "t1"], Arc::clone(&registry)).await;
    let token = ("Authorization", "Bearer t1".to_string());
    for gw in [&direct, &behind] {
        for bad in [
            "/user/../admin/x",
            "/user/%2e%2e/admin",
            "/user/./call",
            "/./user/call",
            "/user/.%2E?x=1",
            // Read as `..` by servers that take `;` parameters off, or decode `%2f` first.
            "/user/..;/admin",
            "/user/..%2fadmin",
        ] {
            let r = get_with(gw, bad, token.clone()).await;
            let v = json_error(&r, 400);
            assert!(
                v["detail"]
                    .as_str()
                    .unwrap()
                    .contains("dot segments removed"),
                "{bad}: {}",
                r.body
            );
        }
        // A path beginning with `//` reads as `//host/path` to URL parsers.
        let r = get_with(gw, "//user/call", token.clone()).await;
        let v = json_error(&r, 400);
        assert!(
            v["detail"].as_str().unwrap().contains("begins with `//`"),
            "{}",
            r.body
        );
        // Dots inside a segment, and dots in the query, are no dot segments.
        for (ok, path) in [
            ("/user/v1.2/x..y", "/user/v1.2/x..y"),
            ("/user/.well-known/a", "/user/.well-known/a"),
            ("/user/call?next=../x", "/user/call"),
        ] {
            let r = get_with(gw, ok, token.clone()).await;
            assert_eq!(r.status, 200, "{ok}: {}", r.body);
            assert_eq!(
                r.body,
                format!("node=user path={path} body=0 xff=127.0.0.1"),
                "{ok}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_error_status_has_a_json_body() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    register(&registry, "go.micro.api.dead", "d", &dead.to_string()).await;
    let slow = Backend::start("slow").await;
    register(&registry, "go.micro.api.slow", "s", &slow.addr.to_string()).await;
    let (gw, _stop) = gateway(
        Cli::new(),
        &["--backend-timeout", "300ms", "--body-limit", "1KiB"],
        Arc::clone(&registry),
    )
    .await;

    let v = json_error(&get(&gw, "/").await, 404);
    assert_eq!(v["detail"], "no service for path `/`");
    assert_eq!(v["status"], "Not Found");
    let v = json_error(&get(&gw, "/nosuch/x").await, 404);
    assert_eq!(v["detail"], "service `go.micro.api.nosuch` not found");

    let v = json_error(&get(&gw, "/dead/x").await, 502);
    assert!(
        v["detail"].as_str().unwrap().contains("is unreachable"),
        "{v}"
    );
    assert_eq!(v["status"], "Bad Gateway");

    let v = json_error(&get(&gw, "/slow/slow").await, 504);
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("did not answer within 300ms"),
        "{v}"
    );

    let big = "x".repeat(2048);
    let v = json_error(&call(&gw, "POST", "/slow/echo", vec![], big).await, 413);
    assert_eq!(v["detail"], "request body over the 1024-byte limit");
    let chunked = "800\r\n".to_string() + &"y".repeat(2048) + "\r\n0\r\n\r\n";
    let r = call(
        &gw,
        "POST",
        "/slow/echo",
        vec![("Transfer-Encoding", "chunked".into())],
        chunked,
    )
    .await;
    json_error(&r, 413);

    // A service whose last node left: 503, not 404.
    let gone = Backend::start("gone").await;
    let record = Record {
        name: "go.micro.api.gone".into(),
        version: "latest".into(),
        nodes: vec![Node {
            id: "g".into(),
            address: gone.addr.to_string(),
            ..Default::default()
        }],
        ..Default::default()
    };
    registry
        .register(&record, Duration::from_secs(300))
        .await
        .unwrap();
    assert_eq!(get(&gw, "/gone/x").await.status, 200);
    registry.deregister(&record).await.unwrap();
    let v = json_error(&get(&gw, "/gone/x").await, 503);
    assert_eq!(v["detail"], "service `go.micro.api.gone` has no nodes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_mid_run_leaves_the_other_node_serving() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let mut one = Backend::start("one").await;
    let two = Backend::start("two").await;
    register(&registry, "go.micro.api.pair", "1", &one.addr.to_string()).await;
    register(&registry, "go.micro.api.pair", "2", &two.addr.to_string()).await;
    let (gw, _stop) = gateway(
        Cli::new(),
        &["--selector", "roundrobin"],
        Arc::clone(&registry),
    )
    .await;
    let mut nodes = std::collections::HashSet::new();
    for _ in 0..4 {
        let r = get(&gw, "/pair/x").await;
        assert_eq!(r.status, 200);
        nodes.insert(r.body.split(' ').next().unwrap().to_string());
    }
    assert_eq!(nodes.len(), 2, "both nodes served before the kill");
    one.kill().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..20 {
        let r = get(&gw, "/pair/x").await;
        assert_eq!(r.status, 200, "request {i} after the kill: {}", r.body);
        assert!(r.body.starts_with("node=two"));
    }
    drop(two);
}

/// A node that refuses connections got nothing of a request: a POST goes, body and all, to
/// another node (it was a 502, as only bodiless requests were tried again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_a_body_goes_to_another_node_when_one_refuses_connections() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let mut dead = Backend::start("dead").await;
    let live = Backend::start("live").await;
    register(&registry, "go.micro.api.pair", "1", &dead.addr.to_string()).await;
    register(&registry, "go.micro.api.pair", "2", &live.addr.to_string()).await;
    dead.kill().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (gw, _stop) = gateway(
        Cli::new(),
        &["--selector", "roundrobin"],
        Arc::clone(&registry),
    )
    .await;
    for i in 0..6 {
        let r = call(&gw, "POST", "/pair/x", Vec::new(), "hello".to_string()).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
        assert!(
            r.body.starts_with("node=live path=/pair/x body=5"),
            "{}",
            r.body
        );
    }
    drop(live);
}

/// A request whose node refused the connection goes to a node it has not tried, even one that
/// failed a few seconds before (avoided, but maybe back, as in a rolling restart of two nodes),
/// rather than to the node that just refused it again: when every node was being avoided, the
/// second try was made among all of them, the one just tried included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_try_goes_to_a_node_not_tried_when_every_node_is_avoided() {
    use tokio::io::AsyncWriteExt;
    // Closes its first connection without an answer (restarting), then answers.
    let failed_once = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let back = raw_backend(move |mut s| {
        let failed_once = Arc::clone(&failed_once);
        async move {
            while read_head(&mut s).await.is_some() {
                if !failed_once.swap(true, Ordering::SeqCst) {
                    return;
                }
                let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nback";
                if s.write_all(answer).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    // Refuses connections (restarting).
    let refusing = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    register(&registry, "go.micro.api.pair", "1", &refusing.to_string()).await;
    register(&registry, "go.micro.api.pair", "2", &back.to_string()).await;
    let (gw, _stop) = gateway(Cli::new(), &[], Arc::clone(&registry)).await;
    // `back` fails once, and is avoided for a while.
    let first = get(&gw, "/pair/x").await;
    json_error(&first, 502);
    for i in 0..30 {
        let r = get(&gw, "/pair/x").await;
        assert_eq!((r.status, r.body.as_str()), (200, "back"), "request {i}");
    }
}

/// A node whose address takes no connection and sends no refusal either (a host gone from the
/// network, a firewall dropping packets: here a listener whose accept queue is full) is avoided
/// and the request goes to another node (nothing was sent to it), whatever the backend timeout:
/// with one shorter than the time a connection is given to open, every request picking it was
/// a 504, and it was never avoided.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_never_takes_the_connection_is_avoided_within_a_short_backend_timeout() {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let silent = socket.local_addr().unwrap();
    let _listener = socket.listen(1).unwrap();
    // Fill its accept queue: connecting to it hangs from then on.
    let mut held = Vec::new();
    for _ in 0..8 {
        let connect = tokio::net::TcpStream::connect(silent);
        match tokio::time::timeout(Duration::from_millis(200), connect).await {
            Ok(conn) => held.push(conn.unwrap()),
            Err(_) => break,
        }
    }
    let plain = Backend::start("plain").await;
    let (gw, _stop) = gateway_to_addrs(
        "go.micro.api.s",
        &[silent, plain.addr],
        &["--backend-timeout", "500ms"],
    )
    .await;
    for i in 0..4 {
        let r = get(&gw, "/s/x").await;
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
    }
    let r = call(&gw, "POST", "/s/x", Vec::new(), "order=1".into()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "node=plain path=/s/x body=7 xff=127.0.0.1");
}

/// A node that takes requests and answers none (deadlocked, out of threads) is avoided once a
/// request to it timed out, as one that cannot be reached: the requests after its 504 go to the
/// other node. Before, every second request (round robin) waited out the backend timeout on it
/// and got a 504 too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_does_not_answer_in_time_is_avoided_after_its_504() {
    use tokio::io::AsyncReadExt;
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hung_addr = hung.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = hung.accept().await {
            // Reads what comes, answers nothing.
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    let plain = Backend::start("plain").await;
    let (gw, _stop) = gateway_to_addrs(
        "go.micro.api.s",
        &[hung_addr, plain.addr],
        &["--backend-timeout", "300ms"],
    )
    .await;
    // Round robin meets the hung node within two requests.
    let first: Vec<u16> = [get(&gw, "/s/x").await, get(&gw, "/s/x").await]
        .iter()
        .map(|r| r.status)
        .collect();
    assert!(first.contains(&504), "{first:?}");
    for i in 0..8 {
        let r = get(&gw, "/s/x").await;
        assert_eq!(r.status, 200, "request {i} after the 504: {}", r.body);
        assert!(r.body.starts_with("node=plain"), "{}", r.body);
    }
}

/// A response framed by both `Content-Length` and `Transfer-Encoding` is refused (502), and the
/// connection it came on is not used again: the node may have meant the other framing, and the
/// next response read there could start in the middle of this one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_of_an_ambiguously_framed_response_is_not_reused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let node = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node_addr = node.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = node.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                loop {
                    match conn.read(&mut buf).await {
                        Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                    while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                        let request: Vec<u8> = head.drain(..end + 4).collect();
                        // Both framings agree on these bytes here; which one the node meant
                        // cannot be known in general.
                        let answer: &[u8] = if request.starts_with(b"GET /s/both ") {
                            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                        } else {
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                        };
                        if conn.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    let (gw, _stop) = gateway_to_addrs("go.micro.api.s", &[node_addr], &[]).await;
    let r = get(&gw, "/s/plain").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    let r = get(&gw, "/s/both").await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(
        r.body.contains("Content-Length and Transfer-Encoding"),
        "{}",
        r.body
    );
    for _ in 0..2 {
        let r = get(&gw, "/s/plain").await;
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    }
    // One new connection after the refused response, kept for the two after it.
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

/// A memory registry whose reads fail while `down` is set (etcd restarting, a network blip).
#[derive(Default)]
struct Flaky {
    inner: MemoryRegistry,
    down: std::sync::atomic::AtomicBool,
}

impl Registry for Flaky {
    fn name(&self) -> &'static str {
        "flaky"
    }
    fn register<'a>(
        &'a self,
        service: &'a Record,
        ttl: Duration,
    ) -> rmicro_runtime::registry::BoxFuture<'a, Result<(), RegistryError>> {
        self.inner.register(service, ttl)
    }
    fn deregister<'a>(
        &'a self,
        service: &'a Record,
    ) -> rmicro_runtime::registry::BoxFuture<'a, Result<(), RegistryError>> {
        self.inner.deregister(service)
    }
    fn get_service<'a>(
        &'a self,
        name: &'a str,
    ) -> rmicro_runtime::registry::BoxFuture<'a, Result<Vec<Record>, RegistryError>> {
        if self.down.load(Ordering::SeqCst) {
            return Box::pin(async { Err(RegistryError::Unreachable("down".into())) });
        }
        self.inner.get_service(name)
    }
    fn list_services(
        &self,
    ) -> rmicro_runtime::registry::BoxFuture<'_, Result<Vec<Record>, RegistryError>> {
        self.inner.list_services()
    }
    fn watch<'a>(
        &'a self,
        service: Option<&'a str>,
    ) -> rmicro_runtime::registry::BoxFuture<
        'a,
        Result<rmicro_runtime::registry::Watcher, RegistryError>,
    > {
        self.inner.watch(service)
    }
}

/// While the registry cannot be read, the nodes last read from it keep being used, as
/// go-micro's registry cache returns its last answer when the registry fails: a registry outage
/// is not a gateway outage. Here a node fails while the registry is down; the gateway, which
/// reads the registry again after a node failure, answered 503 for every request from then on,
/// although the other node was serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_read_before_the_registry_went_down_keep_serving() {
    let flaky = Arc::new(Flaky::default());
    let registry: Arc<dyn Registry> = Arc::clone(&flaky) as Arc<dyn Registry>;
    let (mut one, two) = (Backend::start("one").await, Backend::start("two").await);
    register(&registry, "go.micro.api.pair", "n0", &one.addr.to_string()).await;
    register(&registry, "go.micro.api.pair", "n1", &two.addr.to_string()).await;
    let (gw, _stop) = gateway(Cli::new(), &["--selector", "roundrobin"], registry).await;
    assert_eq!(nodes_answering(&gw, "/pair/x", 4).await.len(), 2);

    flaky.down.store(true, Ordering::SeqCst);
    one.kill().await;
    for i in 0..6 {
        let r = get(&gw, "/pair/x").await;
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
        assert!(r.body.starts_with("node=two "), "{}", r.body);
    }

    // A service never read before the registry went down is still a 503 saying so.
    let r = get(&gw, "/other/x").await;
    let v = json_error(&r, 503);
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("registry is unavailable"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_allows_and_denies() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let b = Backend::start("b").await;
    register(&registry, "go.micro.api.b", "b", &b.addr.to_string()).await;
    // Removed when dropped, also when the test fails.
    let file = tempfile::Builder::new()
        .prefix("rmicro-tokens-")
        .tempfile()
        .unwrap();
    // Written by an editor that starts files with a byte order mark.
    std::fs::write(file.path(), "\u{feff}from-file\r\n# tokens\n").unwrap();
    let file_arg = file.path().display().to_string();
    let (gw, _stop) = gateway(
        Cli::new(),
        &[
            "--auth-tokens",
            "t1,t2",
            "--auth-token-file",
            &file_arg,
            "--health-path",
            "/health",
        ],
        Arc::clone(&registry),
    )
    .await;

    let denied = get(&gw, "/b/x").await;
    let v = json_error(&denied, 401);
    assert_eq!(v["detail"], "missing or invalid bearer token");
    assert_eq!(denied.header("www-authenticate"), Some("Bearer"));
    json_error(
        &get_with(&gw, "/b/x", ("Authorization", "Bearer nope".into())).await,
        401,
    );
    for token in ["t1", "t2", "from-file"] {
        let r = get_with(&gw, "/b/x", ("Authorization", format!("Bearer {token}"))).await;
        assert_eq!(r.status, 200, "token {token}");
        // Behind a plugin the proxy still knows the client's address.
        assert_eq!(r.body, "node=b path=/b/x body=0 xff=127.0.0.1");
    }
    // Two `Authorization` headers, in either order: refused, whichever is the known token
    // (a node might read the other).
    for (first, second) in [("t1", "made-up"), ("made-up", "t1")] {
        let r = raw(
            &gw,
            &format!(
                "GET /b/x HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {first}\r\n\
                 Authorization: Bearer {second}\r\nConnection: close\r\n\r\n"
            ),
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 400"), "{r}");
        assert!(
            r.contains("more than one Authorization header; send one"),
            "{r}"
        );
        assert!(!r.contains("node=b"), "{r}");
    }
    // Load balancers reach the health check without a token.
    assert_eq!(get(&gw, "/health").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_allows_listed_origins_only() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let b = Backend::start("b").await;
    register(&registry, "go.micro.api.b", "b", &b.addr.to_string()).await;
    let (gw, _stop) = gateway(
        Cli::new(),
        &["--cors-allowed-origins", "https://ok.example"],
        Arc::clone(&registry),
    )
    .await;

    let preflight = |origin: &'static str| {
        vec![
            ("Origin", origin.to_string()),
            ("Access-Control-Request-Method", "POST".to_string()),
            ("Access-Control-Request-Headers", "content-type".to_string()),
        ]
    };
    let ok = call(
        &gw,
        "OPTIONS",
        "/b/x",
        preflight("https://ok.example"),
        String::new(),
    )
    .await;
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("https://ok.example")
    );
    assert_eq!(ok.header("access-control-allow-credentials"), Some("true"));
    let evil = call(
        &gw,
        "OPTIONS",
        "/b/x",
        preflight("https://evil.example"),
        String::new(),
    )
    .await;
    assert_eq!(
        evil.header("access-control-allow-origin"),
        None,
        "refused origins get no CORS headers"
    );
    assert_eq!(evil.header("access-control-allow-credentials"), None);

    let simple = get_with(&gw, "/b/x", ("Origin", "https://ok.example".into())).await;
    assert_eq!(simple.status, 200);
    assert_eq!(
        simple.header("access-control-allow-origin"),
        Some("https://ok.example")
    );
    assert_eq!(
        simple.header("access-control-allow-credentials"),
        Some("true")
    );
    // No origin, another origin: nothing said about credentials either.
    let plain = get(&gw, "/b/x").await;
    assert_eq!(plain.header("access-control-allow-credentials"), None);
    let other = get_with(&gw, "/b/x", ("Origin", "https://evil.example".into())).await;
    assert_eq!(other.header("access-control-allow-credentials"), None);

    // An origin configured as written by hand (a capital letter, the default port, a
    // trailing slash) is the one browsers send.
    let (gw2, _stop2) = gateway(
        Cli::new(),
        &["--cors-allowed-origins", "HTTPS://Ok.Example:443/"],
        Arc::clone(&registry),
    )
    .await;
    let simple = get_with(&gw2, "/b/x", ("Origin", "https://ok.example".into())).await;
    assert_eq!(
        simple.header("access-control-allow-origin"),
        Some("https://ok.example")
    );
}

/// A plugin whose flag (or env var) sets a response header.
#[derive(Default)]
struct Greeting {
    value: Option<String>,
    inits: Arc<AtomicUsize>,
}

impl Plugin for Greeting {
    fn name(&self) -> &'static str {
        "greeting"
    }
    fn flags(&self) -> Vec<clap::Arg> {
        vec![clap::Arg::new("greeting")
            .long("greeting")
            .env("RMICRO_TEST_GREETING")]
    }
    fn init(&mut self, flags: &clap::ArgMatches, _: &PluginContext) -> Result<(), PluginError> {
        self.inits.fetch_add(1, Ordering::SeqCst);
        self.value = flags.get_one::<String>("greeting").cloned();
        Ok(())
    }
    fn layer(&self) -> Option<PluginLayer> {
        let value = ::http::HeaderValue::from_str(self.value.as_deref()?).ok()?;
        Some(PluginLayer::new(tower::layer::layer_fn(
            move |inner: HttpService| {
                let value = value.clone();
                HttpService::new(tower::util::MapResponse::new(
                    inner,
                    move |mut r: ::http::Response<axum_core::body::Body>| {
                        r.headers_mut().insert("x-greeting", value.clone());
                        r
                    },
                ))
            },
        )))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_flag_and_env_reach_its_init() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let b = Backend::start("b").await;
    register(&registry, "go.micro.api.b", "b", &b.addr.to_string()).await;

    let inits = Arc::new(AtomicUsize::new(0));
    let mut cli = Cli::new();
    cli.plugin(Greeting {
        value: None,
        inits: Arc::clone(&inits),
    })
    .unwrap();
    let (gw, _stop) = gateway(cli, &["--greeting", "from-flag"], Arc::clone(&registry)).await;
    assert_eq!(
        get(&gw, "/b/x").await.header("x-greeting"),
        Some("from-flag")
    );
    assert_eq!(inits.load(Ordering::SeqCst), 1);

    std::env::set_var("RMICRO_TEST_GREETING", "from-env");
    let mut cli = Cli::new();
    cli.plugin(Greeting::default()).unwrap();
    let (gw, _stop2) = gateway(cli, &[], Arc::clone(&registry)).await;
    std::env::remove_var("RMICRO_TEST_GREETING");
    assert_eq!(
        get(&gw, "/b/x").await.header("x-greeting"),
        Some("from-env")
    );

    let mut cli = Cli::new();
    cli.plugin(Greeting::default()).unwrap();
    let err = cli.plugin(Greeting::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "a plugin named `greeting` is already registered; plugin names must be unique"
    );
    let err = Cli::new()
        .plugin(rmicro::api::plugins::Cors::default())
        .unwrap_err();
    assert!(err.to_string().contains("`cors`"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_load_run_has_no_failures() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let one = Backend::start("one").await;
    let two = Backend::start("two").await;
    register(&registry, "go.micro.api.load", "1", &one.addr.to_string()).await;
    register(&registry, "go.micro.api.load", "2", &two.addr.to_string()).await;
    let (gw, _stop) = gateway(Cli::new(), &[], Arc::clone(&registry)).await;

    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let started = std::time::Instant::now();
    let threads: Vec<_> = (0..32)
        .map(|_| {
            let (gw, failures, done) = (gw.clone(), Arc::clone(&failures), Arc::clone(&done));
            std::thread::spawn(move || {
                for _ in 0..100 {
                    if started.elapsed() > Duration::from_secs(60) {
                        break;
                    }
                    let r = http::get(&gw, "/load/x");
                    if r.status != 200 || !r.body.starts_with("node=") {
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    tokio::task::spawn_blocking(move || threads.into_iter().for_each(|t| t.join().unwrap()))
        .await
        .unwrap();
    assert_eq!(
        done.load(Ordering::SeqCst),
        3200,
        "every request ran within the time bound"
    );
    assert_eq!(failures.load(Ordering::SeqCst), 0);
}

/// Sends one keep-alive GET on `stream` and reads the whole response (it has a content-length).
async fn keep_alive_get(stream: &mut tokio::net::TcpStream, path: &str) -> String {
    use tokio::io::AsyncWriteExt;
    let request = format!("GET {path} HTTP/1.1\r\nhost: gw\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    read_response(stream).await
}

/// Reads one whole response from `stream` (it has a content-length).
async fn read_response(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the gateway closed a connection in use");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("a content-length");
            if body.len() >= length {
                return text.into_owned();
            }
        }
    }
}

/// A response the gateway (or a plugin) gives before reading the request's body leaves the
/// connection usable: the body is read and thrown away first, as Go's net/http does. Only a body
/// too long to read, or one the client holds back for `100 Continue`, closes it, and the
/// response says so. (hyper closed such connections without saying so: the client's next
/// request on it failed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_before_the_body_keeps_the_connection_or_says_it_closes() {
    use tokio::io::AsyncWriteExt;
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let b = Backend::start("b").await;
    register(&registry, "go.micro.api.b", "b", &b.addr.to_string()).await;
    // Without plugins (the proxy alone) and with token auth answering 401 before the proxy.
    let (plain, _stop1) = gateway(Cli::default(), &[], Arc::clone(&registry)).await;
    let (auth, _stop2) = gateway(Cli::new(), &["--auth-tokens", "t1"], registry).await;
    for (gw, path, status) in [(&plain, "/nosuch/x", "404"), (&auth, "/b/x", "401")] {
        let mut conn = tokio::net::TcpStream::connect(gw.as_str()).await.unwrap();
        for _ in 0..3 {
            // The head first, the body a little later (as Python's http.client sends them).
            let head = format!("POST {path} HTTP/1.1\r\nhost: gw\r\ncontent-length: 11\r\n\r\n");
            conn.write_all(head.as_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            conn.write_all(b"hello world").await.unwrap();
            let response = read_response(&mut conn).await;
            assert!(
                response.starts_with(&format!("HTTP/1.1 {status}")),
                "{response}"
            );
            assert!(
                !response.to_ascii_lowercase().contains("connection: close"),
                "{response}"
            );
        }
        // The connection still serves.
        let response = keep_alive_get(&mut conn, path).await;
        assert!(
            response.starts_with(&format!("HTTP/1.1 {status}")),
            "{response}"
        );
    }

    // A body too long to read, and one held back for `100 Continue`: `Connection: close`.
    for extra in [
        "content-length: 10485760\r\n",
        "content-length: 5\r\nexpect: 100-continue\r\n",
    ] {
        let mut conn = tokio::net::TcpStream::connect(plain.as_str())
            .await
            .unwrap();
        let head = format!("POST /nosuch/x HTTP/1.1\r\nhost: gw\r\n{extra}\r\n");
        conn.write_all(head.as_bytes()).await.unwrap();
        let response = read_response(&mut conn).await;
        assert!(response.starts_with("HTTP/1.1 404"), "{extra}: {response}");
        assert!(
            response.to_ascii_lowercase().contains("connection: close"),
            "{extra}: {response}"
        );
        assert!(
            closed_within(&mut conn, Duration::from_secs(2)).await,
            "{extra}"
        );
    }
}

#[tokio::test]
async fn idle_connections_are_closed_and_busy_ones_kept() {
    use tokio::io::AsyncReadExt;
    let (addr, _backend, _stop) =
        gateway_to_one("go.micro.api.idle", "a", &["--idle-timeout", "400ms"]).await;

    // Busy: a request every 150 ms for 1.2 s, three idle timeouts in all, on one connection.
    let mut busy = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(1200) {
        let response = keep_alive_get(&mut busy, "/idle/x").await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }

    // Idle: after one request, nothing; the gateway closes it within about the timeout.
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    keep_alive_get(&mut idle, "/idle/x").await;
    let went_idle = std::time::Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest)).await;
    let after = went_idle.elapsed();
    assert!(
        closed.is_ok(),
        "an idle connection was still open after 5 s"
    );
    assert!(
        after >= Duration::from_millis(350) && after < Duration::from_millis(1500),
        "closed after {after:?} for a 400 ms idle timeout"
    );
    // And the busy one, left alone since, went the same way.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), busy.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "a connection idle since was still open");
}

/// Reads from `stream` until the gateway closes it, for at most `within`; whether it did.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut rest = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut rest))
        .await
        .is_ok()
}

#[tokio::test]
async fn a_request_head_must_arrive_in_time_but_waits_and_bodies_need_not() {
    use tokio::io::AsyncWriteExt;
    let flags = ["--read-header-timeout", "500ms", "--idle-timeout", "5s"];
    let (addr, _backend, _stop) = gateway_to_one("go.micro.api.head", "h", &flags).await;

    // A keep-alive connection waiting longer than the head limit is still open: the limit runs
    // from a request's first byte, not from the end of the previous response.
    let mut waiting = tokio::net::TcpStream::connect(&addr).await.unwrap();
    assert!(keep_alive_get(&mut waiting, "/head/1")
        .await
        .starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(keep_alive_get(&mut waiting, "/head/2")
        .await
        .starts_with("HTTP/1.1 200"));

    // A body sent slowly, over more than the head limit, goes through.
    let mut slow_body = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow_body
        .write_all(b"POST /head/body HTTP/1.1\r\nhost: gw\r\ncontent-length: 6\r\n\r\n")
        .await
        .unwrap();
    for byte in b"abcdef" {
        tokio::time::sleep(Duration::from_millis(200)).await;
        slow_body.write_all(&[*byte]).await.unwrap();
    }
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 1024];
        while !String::from_utf8_lossy(&response).contains("body=6") {
            let n = slow_body.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed while a body was being sent");
            response.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    assert!(read.is_ok(), "{}", String::from_utf8_lossy(&response));
    assert!(String::from_utf8_lossy(&response).starts_with("HTTP/1.1 200"));

    // A head trickled a byte every 100 ms (each byte keeps the idle timer away) is cut off.
    let mut trickle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let started = std::time::Instant::now();
    let head =
        b"GET /head/x HTTP/1.1\r\nhost: gw\r\nx-padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut cut = None;
    for byte in head {
        if trickle.write_all(&[*byte]).await.is_err() {
            cut = Some(started.elapsed());
            break;
        }
        if closed_within(&mut trickle, Duration::from_millis(100)).await {
            cut = Some(started.elapsed());
            break;
        }
    }
    let cut = cut.expect("a head trickled for over 6 s was never cut off");
    assert!(
        cut >= Duration::from_millis(450) && cut < Duration::from_millis(1500),
        "cut off after {cut:?} for a 500 ms head limit"
    );
}

/// Opens an HTTP/2 (prior knowledge) connection to `addr`; the task driving it ends when the
/// connection does.
async fn http2_client(
    addr: &str,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    tokio::task::JoinHandle<hyper::Result<()>>,
) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    (sender, tokio::spawn(conn))
}

async fn http2_get(
    sender: &mut hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    addr: &str,
    path: &str,
) -> (u16, bytes::Bytes) {
    let request = hyper::Request::get(format!("http://{addr}{path}"))
        .body(http_body_util::Empty::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test]
async fn http2_connections_skip_the_head_limit_and_close_when_no_request_comes() {
    // The gateway pings an HTTP/2 client every idle-timeout / 2 (1 s). The client's answers are
    // traffic but no request: the head limit (300 ms) must not apply to them, and they must not
    // keep the connection open past the idle limit either.
    let flags = ["--idle-timeout", "2s", "--read-header-timeout", "300ms"];
    let (addr, _backend, _stop) = gateway_to_one("go.micro.api.two", "h2", &flags).await;
    let (mut sender, conn) = http2_client(&addr).await;
    let (status, body) = http2_get(&mut sender, &addr, "/two/x").await;
    assert_eq!(status, 200);
    assert!(body.starts_with(b"node=h2 path=/two/x"), "{body:?}");

    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !conn.is_finished(),
        "an HTTP/2 connection was cut within its idle limit"
    );
    assert_eq!(http2_get(&mut sender, &addr, "/two/y").await.0, 200);

    let last_request = std::time::Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(6), conn).await;
    let after = last_request.elapsed();
    let ended = ended.expect("an HTTP/2 connection without requests was open after 6 s");
    // Within a quarter of the limit past it, and gracefully: a GOAWAY first (the client then
    // knows no request of its was taken), which ends hyper's connection without an error.
    assert!(
        after >= Duration::from_millis(1900) && after < Duration::from_millis(3000),
        "closed {after:?} after its last request, for a 2 s idle limit"
    );
    assert!(
        matches!(ended, Ok(Ok(()))),
        "closed without a GOAWAY: {ended:?}"
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_after_the_idle_limit() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (addr, _backend, _stop) =
        gateway_to_one("go.micro.api.big", "b", &["--idle-timeout", "500ms"]).await;

    // A large response, and a second request behind it in the same packet, then no reading: the
    // gateway's writes wait and its reads have nothing to do.
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let two = b"GET /big/big HTTP/1.1\r\nhost: gw\r\n\r\nGET /big/x HTTP/1.1\r\nhost: gw\r\n\r\n";
    stream.write_all(two).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // Whatever was sent before the gateway gave up is buffered; after it, the connection ends
    // (end of stream or reset) instead of carrying the whole response.
    let mut received = 0usize;
    let mut chunk = vec![0u8; 1 << 16];
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received += n,
            }
        }
    })
    .await;
    assert!(
        drained.is_ok(),
        "the connection of a client that stopped reading stayed open"
    );
    assert!(
        received < BIG,
        "the whole {received}-byte response went out to a client that did not read"
    );
}

#[tokio::test]
async fn timeouts_too_large_for_the_clock_still_serve() {
    let forever = "876000h"; // the longest accepted: 100 years
    let flags = ["--idle-timeout", forever, "--read-header-timeout", forever];
    let (addr, _backend, _stop) = gateway_to_one("go.micro.api.long", "l", &flags).await;
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    for _ in 0..2 {
        assert!(keep_alive_get(&mut stream, "/long/x")
            .await
            .starts_with("HTTP/1.1 200"));
    }
    let (mut sender, _conn) = http2_client(&addr).await;
    for _ in 0..2 {
        assert_eq!(http2_get(&mut sender, &addr, "/long/x").await.0, 200);
    }
}

#[tokio::test]
async fn worker_threads_share_one_address_and_stop_together() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let backend = Backend::start("w").await;
    register(
        &registry,
        "go.micro.api.work",
        "w",
        &backend.addr.to_string(),
    )
    .await;
    let (api, gateway) = configured(Cli::default(), &["--workers", "3"], registry);
    assert_eq!(api.workers, Some(3));

    let sockets = rmicro::api::workers::bind("127.0.0.1:0", 3).unwrap();
    let addrs: Vec<SocketAddr> = sockets.iter().map(|s| s.local_addr().unwrap()).collect();
    assert_ne!(addrs[0].port(), 0);
    assert!(addrs.iter().all(|a| *a == addrs[0]), "{addrs:?}");
    let addr = addrs[0].to_string();
    // The address is this gateway's alone: a second one (another process started by mistake)
    // is refused, not given half of the connections through SO_REUSEPORT.
    for workers in [1, 3] {
        let err = rmicro::api::workers::bind(&addr, workers).unwrap_err();
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::AddrInUse,
            "{workers} workers: {err}"
        );
    }
    // Bound means listening: a connection made before the workers run waits, is not refused.
    let mut early = tokio::net::TcpStream::connect(&addr).await.unwrap();

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(rmicro::api::workers::serve(gateway, sockets, async {
        let _ = stopped.await;
    }));
    let response = keep_alive_get(&mut early, "/work/early").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    drop(early);
    // Many connections, so the kernel hands them to different workers; every one is answered.
    let mut calls = Vec::new();
    for i in 0..24 {
        let addr = addr.clone();
        calls.push(tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
            keep_alive_get(&mut stream, &format!("/work/{i}")).await
        }));
    }
    for (i, call) in calls.into_iter().enumerate() {
        let response = call.await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.contains(&format!("path=/work/{i}")), "{response}");
    }
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), served)
        .await
        .expect("every worker stops after the shutdown signal")
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(&addr).await.is_err(),
        "nothing listens after the stop"
    );
}

/// Opens a connection to `gw` asking to switch to `protocol` on `path`; returns it with the
/// response head (lower-cased).
async fn switch(gw: &str, path: &str, protocol: &str) -> (tokio::net::TcpStream, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(gw).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: keep-alive, Upgrade\r\nUpgrade: {protocol}\r\n\r\n"
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut byte))
            .await
            .expect("the switch is answered")
            .unwrap();
        assert_eq!(
            n,
            1,
            "connection closed after {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    (conn, String::from_utf8(head).unwrap().to_ascii_lowercase())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_upgrades_pass_through_and_outlive_the_head_limit() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (gw, _backend, _stop) =
        gateway_to_one("go.micro.api.ws", "ws", &["--read-header-timeout", "300ms"]).await;

    let (mut conn, head) = switch(&gw, "/ws/chat", "echo").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo\r\n"), "{head}");
    assert!(head.contains("connection: upgrade\r\n"), "{head}");

    // Bytes go through both ways, also after longer than the request-head limit.
    for (i, wait) in [0, 700].into_iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let message = format!("message {i} through the tunnel");
        conn.write_all(message.as_bytes()).await.unwrap();
        let mut echoed = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut echoed))
            .await
            .expect("echoed in time")
            .unwrap();
        assert_eq!(String::from_utf8(echoed).unwrap(), message);
    }

    // `Upgrade` without `Connection: upgrade` asks for nothing: the node sees a plain request.
    let plain = get_with(&gw, "/ws/plain", ("Upgrade", "echo".into())).await;
    assert_eq!(plain.status, 200, "{}", plain.body);
    assert_eq!(plain.body, "node=ws path=/ws/plain body=0 xff=127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_half_closed_and_then_silent_is_closed_after_the_idle_limit() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (gw, _backend, _stop) =
        gateway_to_one("go.micro.api.ws", "ws", &["--idle-timeout", "500ms"]).await;
    let (mut conn, head) = switch(&gw, "/ws/hold", "hold").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    conn.write_all(b"last words").await.unwrap();
    // The client is done sending; the node keeps its side open and says nothing.
    conn.shutdown().await.unwrap();
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
        .await
        .expect("the gateway closes a tunnel that carried nothing for the idle limit");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_the_client_did_not_offer_and_connect_are_refused() {
    let (gw, _backend, _stop) = gateway_to_one("go.micro.api.ws", "ws", &[]).await;
    // The node answers 101 with `echo` to a client that offered `other`.
    let (_conn, head) = switch(&gw, "/ws/x", "other").await;
    assert!(head.starts_with("http/1.1 502"), "{head}");
    // Services are reached by path: CONNECT is not tunnelled.
    let v = json_error(
        &call(&gw, "CONNECT", "/ws/x", vec![], String::new()).await,
        405,
    );
    assert_eq!(v["detail"], "the gateway does not tunnel CONNECT requests");
    // Nor is TRACE passed on: a node would echo the request's cookies back.
    let v = json_error(
        &call(&gw, "TRACE", "/ws/x", vec![], String::new()).await,
        405,
    );
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("does not pass TRACE"),
        "{v}"
    );
    // OPTIONS with `Max-Forwards: 0` is answered by the gateway (RFC 9110 §7.6.2); above 0
    // the node is sent one less.
    let here = raw(
        &gw,
        "OPTIONS /ws/x HTTP/1.1\r\nHost: a\r\nMax-Forwards: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(here.starts_with("HTTP/1.1 200"), "{here}");
    assert!(
        here.to_ascii_lowercase().contains("allow: get, head, post"),
        "{here}"
    );
    // The node (an echo of headers) sees one less.
    let (echo_gw, _echo, _stop_echo) = gateway_to_one("go.micro.api.echo", "e", &[]).await;
    let passed = raw(
        &echo_gw,
        "OPTIONS /echo/headers HTTP/1.1\r\nHost: a\r\nMax-Forwards: 3\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(passed.contains("max-forwards: 2"), "{passed}");
    // The node still serves plain requests afterwards, and a 426 keeps the protocols it names.
    assert_eq!(get(&gw, "/ws/y").await.status, 200);
    let required = get(&gw, "/ws/426").await;
    assert_eq!(required.status, 426);
    assert_eq!(required.header("upgrade"), Some("echo"));
}

/// Sends `message` through an echo tunnel and reads it back.
async fn echo_through(conn: &mut tokio::net::TcpStream, message: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    conn.write_all(message.as_bytes()).await.unwrap();
    let mut echoed = vec![0u8; message.len()];
    tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut echoed))
        .await
        .expect("echoed in time")
        .unwrap();
    assert_eq!(String::from_utf8(echoed).unwrap(), message);
}

/// A gateway on `registry` with `--shutdown-timeout timeout` (and `flags`), and an echo tunnel
/// through it that carried a first message.
async fn gateway_with_a_tunnel(
    registry: &Arc<dyn Registry>,
    timeout: &str,
    flags: &[&str],
) -> (
    tokio::net::TcpStream,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let mut all = vec!["--shutdown-timeout", timeout];
    all.extend_from_slice(flags);
    let (gw, stop, served) = gateway_handle(Cli::default(), &all, Arc::clone(registry)).await;
    (tunnel_through(&gw).await, stop, served)
}

/// An echo tunnel through the gateway at `gw` that carried a first message.
async fn tunnel_through(gw: &str) -> tokio::net::TcpStream {
    let (mut conn, head) = switch(gw, "/ws/chat", "echo").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    echo_through(&mut conn, "before the stop").await;
    conn
}

/// Waits (at most `within`) for `serve`'s task to return, and checks it returned `Ok`.
async fn returned(served: tokio::task::JoinHandle<std::io::Result<()>>, within: Duration) {
    tokio::time::timeout(within, served)
        .await
        .expect("serve returns in time")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_tunnels_get_the_shutdown_grace_period_and_are_closed_at_its_end() {
    let (registry, backend) = one_node_registry("go.micro.api.ws", "ws").await;

    // Stopped with a tunnel open: it keeps working through the grace period, then is closed,
    // and `serve` returns only then.
    let grace = Duration::from_secs(3);
    let (mut conn, stop, served) = gateway_with_a_tunnel(&registry, "3s", &[]).await;
    let stopped_at = std::time::Instant::now();
    stop.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    echo_through(&mut conn, "during the grace period").await;
    assert!(!served.is_finished(), "serve waits for the open tunnel");
    returned(served, Duration::from_secs(5)).await;
    let waited = stopped_at.elapsed();
    assert!(waited >= grace - Duration::from_millis(100), "{waited:?}");
    assert!(
        closed_within(&mut conn, Duration::from_secs(2)).await,
        "the tunnel is closed when serve returns"
    );

    // A tunnel that ends during the grace period lets `serve` return right away.
    let (conn, stop, served) = gateway_with_a_tunnel(&registry, "30s", &[]).await;
    let stopped_at = std::time::Instant::now();
    stop.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!served.is_finished(), "serve waits for the open tunnel");
    drop(conn);
    returned(served, Duration::from_secs(5)).await;
    assert!(stopped_at.elapsed() < Duration::from_secs(5));

    // A switch still in flight when the grace period ends: the late tunnel closes at once.
    let flags = ["--shutdown-timeout", "200ms"];
    let (gw, stop, served) = gateway_handle(Cli::default(), &flags, Arc::clone(&registry)).await;
    let late = tokio::spawn(async move { switch(&gw, "/ws/late", "late").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).unwrap();
    returned(served, Duration::from_secs(5)).await;
    let (mut conn, head) = late.await.unwrap();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        closed_within(&mut conn, Duration::from_secs(5)).await,
        "a tunnel opened after the grace period is closed at once"
    );

    // Through a plugin's layer too (the proxy is not called directly then).
    let cors = ["--cors-allowed-origins", "https://app.example"];
    let (mut conn, stop, served) = gateway_with_a_tunnel(&registry, "300ms", &cors).await;
    stop.send(()).unwrap();
    returned(served, Duration::from_secs(5)).await;
    assert!(
        closed_within(&mut conn, Duration::from_secs(2)).await,
        "the tunnel is closed when serve returns"
    );
    drop(backend);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_of_a_gateway_served_apart_stop_apart() {
    let (registry, backend) = one_node_registry("go.micro.api.ws", "ws").await;
    let (_, gateway) = configured(Cli::default(), &["--shutdown-timeout", "200ms"], registry);
    let mut servers = Vec::new();
    for gateway in [gateway.clone(), gateway] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(gateway.serve(listener, async {
            let _ = stopped.await;
        }));
        servers.push((addr, stop, served));
    }
    let (b_addr, b_stop, b_served) = servers.pop().unwrap();
    let (a_addr, a_stop, a_served) = servers.pop().unwrap();
    let mut on_a = tunnel_through(&a_addr).await;
    let mut on_b = tunnel_through(&b_addr).await;

    // Stopping one closes its own tunnel only; the other keeps serving, upgrades included.
    a_stop.send(()).unwrap();
    returned(a_served, Duration::from_secs(5)).await;
    assert!(closed_within(&mut on_a, Duration::from_secs(2)).await);
    echo_through(&mut on_b, "still open").await;
    let mut another = tunnel_through(&b_addr).await;
    echo_through(&mut another, "a new one").await;

    b_stop.send(()).unwrap();
    returned(b_served, Duration::from_secs(5)).await;
    assert!(closed_within(&mut on_b, Duration::from_secs(2)).await);
    assert!(closed_within(&mut another, Duration::from_secs(2)).await);
    drop(backend);
}

/// A gateway listening on `[::]` takes IPv4 clients too (a dual-stack socket, Linux's default),
/// which the kernel hands over as IPv4-mapped IPv6 addresses: the node is told the client's IPv4
/// address (`127.0.0.1`, as Go's server reports it), not `::ffff:127.0.0.1`, which allow lists
/// and rate limits keyed on IPv4 addresses do not match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv4_client_of_a_dual_stack_listener_is_named_by_its_ipv4_address() {
    let (registry, _backend) = one_node_registry("go.micro.api.echo", "e").await;
    let (_, gateway) = configured(Cli::new(), &[], registry);
    let listener = tokio::net::TcpListener::bind("[::]:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(gateway.serve(listener, async {
        let _ = stopped.await;
    }));
    let r = raw(
        &format!("127.0.0.1:{port}"),
        "GET /echo/headers HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(node_saw(&r).contains(&"x-forwarded-for: 127.0.0.1"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_sees_the_clients_host_and_address() {
    let (gw, backend, _stop) = gateway_to_one("go.micro.api.echo", "e", &[]).await;

    // HTTP/1.1: `Host` as the client sent it (as go-micro's gateway passes it), the client's
    // address appended to `X-Forwarded-For` (every line the client sent kept), hop-by-hop
    // headers dropped, and forwarding claims a client could make up removed.
    let head = "Host: shop.example\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-For: 192.0.2.2\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: bank.example\r\nForwarded: proto=https\r\nX-Real-IP: 192.0.2.9\r\nX-Forwarded-Ssl: on\r\nX-Forwarded-Scheme: https\r\nX-Url-Scheme: https\r\nFront-End-Https: on\r\nX-Original-URL: /admin\r\nX-Rewrite-URL: /admin\r\nConnection: close, x-hop\r\nX-Hop: dropped\r\nX_Forwarded_Proto: https\r\nX_Real_IP: 192.0.2.6\r\nX_Forwarded_For: 192.0.2.6\r\nX_Original_URL: /admin\r\nTransfer_Encoding: chunked\r\nX_Request_Id: kept\r\nProxy: http://192.0.2.66:3128\r\nX-Forwarded-Prefix: /admin\r\n";
    let request = format!("GET /echo/headers HTTP/1.1\r\n{head}\r\n");
    let r = raw(&gw, &request).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let seen: Vec<&str> = r.split("\r\n\r\n").nth(1).unwrap().lines().collect();
    // Underscore spellings of the headers the gateway judges or sets go too (CGI, WSGI and
    // Rack read `X_Real_IP` as `X-Real-IP`); other names with `_` pass.
    assert_eq!(
        seen,
        [
            "host: shop.example",
            "x-forwarded-for: 192.0.2.1, 192.0.2.2, 127.0.0.1",
            "x_request_id: kept",
        ]
    );

    // Behind a load balancer that sets them (`--trust-forwarded`), they pass unchanged.
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    register(
        &registry,
        "go.micro.api.echo",
        "e",
        &backend.addr.to_string(),
    )
    .await;
    let (trusting, _stop_trusting) =
        gateway(Cli::default(), &["--trust-forwarded"], registry).await;
    let r = raw(&trusting, &request).await;
    let seen: Vec<&str> = r.split("\r\n\r\n").nth(1).unwrap().lines().collect();
    assert_eq!(
        seen,
        [
            "forwarded: proto=https",
            "front-end-https: on",
            "host: shop.example",
            "x-forwarded-for: 192.0.2.1, 192.0.2.2, 127.0.0.1",
            "x-forwarded-host: bank.example",
            "x-forwarded-prefix: /admin",
            "x-forwarded-proto: https",
            "x-forwarded-scheme: https",
            "x-forwarded-ssl: on",
            "x-real-ip: 192.0.2.9",
            "x-url-scheme: https",
            "x_request_id: kept",
        ]
    );

    // `Connection` naming `Host` or `Content-Length` does not take them away: they are the
    // request's own, and the node would get another host than the plugins saw.
    let r = raw(
        &gw,
        "POST /echo/headers HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 2\r\nConnection: host, content-length, close\r\n\r\nhi",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let seen: Vec<&str> = r.split("\r\n\r\n").nth(1).unwrap().lines().collect();
    assert!(seen.contains(&"host: shop.example"), "{seen:?}");
    assert!(seen.contains(&"content-length: 2"), "{seen:?}");

    // An absolute-form target names the host, whatever `Host` says (RFC 9112 §3.2.2).
    let r = raw(
        &gw,
        "GET http://api.example/echo/headers HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let seen: Vec<&str> = r.split("\r\n\r\n").nth(1).unwrap().lines().collect();
    assert!(seen.contains(&"host: api.example"), "{seen:?}");
    assert!(!r.contains("other.example"), "{r}");

    // Two `Host` headers, none in HTTP/1.1 (also with an absolute-form target), a `Host` that
    // is not `host[:port]`, user information in the target: 400 with a JSON body, the node not
    // asked.
    for (target, head) in [
        ("/echo/headers", "Host: a.example\r\nHost: b.example\r\n"),
        ("/echo/headers", ""),
        ("http://api.example/echo/headers", ""),
        ("/echo/headers", "Host: a.example/evil\r\n"),
        ("/echo/headers", "Host: \r\n"),
        (
            "http://user:pw@api.example/echo/headers",
            "Host: api.example\r\n",
        ),
    ] {
        let r = raw(
            &gw,
            &format!("GET {target} HTTP/1.1\r\n{head}Connection: close\r\n\r\n"),
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 400"), "{r}");
        assert!(r.contains("\"code\":400"), "{r}");
        assert!(
            r.contains("Host header") || r.contains("user information"),
            "{r}"
        );
    }

    // HTTP/2: the request's authority becomes `Host`.
    let (mut h2, _conn) = http2_client(&gw).await;
    let (status, body) = http2_get(&mut h2, &gw, "/echo/headers").await;
    assert_eq!(status, 200);
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert!(body.lines().any(|h| h == format!("host: {gw}")), "{body}");

    // HTTP/1.0 without `Host`: the node's address stands in (HTTP/1.1 to the node needs one).
    let response = raw(&gw, "GET /echo/headers HTTP/1.0\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.0 200"), "{response}");
    assert!(
        response.contains(&format!("host: {}", backend.addr)),
        "{response}"
    );
}

/// Sends `request` as is on a new connection and reads until the gateway closes it.
async fn raw(gw: &str, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(gw).await.unwrap();
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut response))
        .await
        .expect("the gateway answers and closes the connection")
        .unwrap();
    String::from_utf8(response).unwrap()
}

/// A plugin that tells the node, in `x-plugin-host`, the `Host` it saw.
struct HostSeen;

impl Plugin for HostSeen {
    fn name(&self) -> &'static str {
        "host-seen"
    }
    fn layer(&self) -> Option<PluginLayer> {
        Some(PluginLayer::new(tower::layer::layer_fn(
            |inner: HttpService| {
                HttpService::new(tower::util::MapRequest::new(
                    inner,
                    |mut req: ::http::Request<axum_core::body::Body>| {
                        let seen = req.headers().get("host").cloned();
                        let seen =
                            seen.unwrap_or_else(|| ::http::HeaderValue::from_static("(none)"));
                        req.headers_mut().insert("x-plugin-host", seen);
                        req
                    },
                ))
            },
        )))
    }
}

/// The node's `/…/headers` body as lines.
fn node_saw(response: &str) -> Vec<&str> {
    response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .lines()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_see_the_host_the_node_sees() {
    let (registry, _backend) = one_node_registry("go.micro.api.echo", "e").await;
    let mut cli = Cli::new();
    cli.plugin(HostSeen).unwrap();
    let (gw, _stop) = gateway(cli, &[], registry).await;

    // `Host` as sent.
    let r = raw(
        &gw,
        "GET /echo/headers HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    let seen = node_saw(&r);
    assert!(seen.contains(&"host: shop.example"), "{r}");
    assert!(seen.contains(&"x-plugin-host: shop.example"), "{r}");

    // An absolute-form target's host, for the plugin as for the node.
    let r = raw(
        &gw,
        "GET http://api.example:8080/echo/headers HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let seen = node_saw(&r);
    assert!(seen.contains(&"host: api.example:8080"), "{r}");
    assert!(seen.contains(&"x-plugin-host: api.example:8080"), "{r}");
    assert!(!r.contains("other.example"), "{r}");

    // HTTP/2: the authority.
    let (mut h2, _conn) = http2_client(&gw).await;
    let (status, body) = http2_get(&mut h2, &gw, "/echo/headers").await;
    assert_eq!(status, 200);
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert!(body.lines().any(|h| h == format!("host: {gw}")), "{body}");
    assert!(
        body.lines().any(|h| h == format!("x-plugin-host: {gw}")),
        "{body}"
    );

    // A request whose host is wrong is refused before any plugin sees it.
    let r = raw(
        &gw,
        "GET /echo/headers HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    assert!(r.contains("more than one Host header"), "{r}");
}

/// Headers a client lists in `Connection` are for the gateway alone, and are removed before
/// plugins see the request: a client cannot strip a header a plugin sets for the node (an
/// identity an auth plugin vouches for, a request id) by listing its name. Go's reverse proxy
/// has the same order since its `Rewrite` hook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_remove_a_header_a_plugin_sets_by_listing_it_in_connection() {
    let (registry, _backend) = one_node_registry("go.micro.api.echo", "e").await;
    let mut cli = Cli::new();
    cli.plugin(HostSeen).unwrap();
    let (gw, _stop) = gateway(cli, &[], registry).await;

    let r = raw(
        &gw,
        "GET /echo/headers HTTP/1.1\r\nHost: shop.example\r\nConnection: X-Plugin-Host, x-secret, close\r\nX-Plugin-Host: forged\r\nX-Secret: s\r\nX-Kept: k\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(
        node_saw(&r),
        [
            "host: shop.example",
            "x-forwarded-for: 127.0.0.1",
            "x-kept: k",
            "x-plugin-host: shop.example"
        ],
        "{r}"
    );

    // Protocol switches, whose `Connection` lists `upgrade`, still pass behind plugins.
    let (_conn, head) = switch(&gw, "/echo/chat", "echo").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_upgrade_offer_is_not_passed_on() {
    let (gw, _backend, _stop) = gateway_to_one("go.micro.api.echo", "e", &[]).await;

    // Only `h2c` offered: the node gets a plain HTTP/1.1 request (no `Upgrade`, no
    // `HTTP2-Settings`), and the client its answer.
    let r = raw(
        &gw,
        "GET /echo/headers HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(node_saw(&r), ["host: gw", "x-forwarded-for: 127.0.0.1"]);

    // Offered with another protocol: that one is passed on, and the node can switch to it.
    let (_conn, head) = switch(&gw, "/echo/chat", "h2c, echo").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo\r\n"), "{head}");
}

/// A backend speaking raw HTTP/1.1: `serve` gets each accepted connection.
async fn raw_backend<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(serve(s));
        }
    });
    addr
}

/// A gateway with `flags` in front of the nodes at `addrs`, registered as `service` (round
/// robin, so a node that is avoided shows).
async fn gateway_to_addrs(
    service: &str,
    addrs: &[SocketAddr],
    flags: &[&str],
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    for (i, addr) in addrs.iter().enumerate() {
        register(&registry, service, &format!("n{i}"), &addr.to_string()).await;
    }
    let mut all = vec!["--selector", "roundrobin"];
    all.extend_from_slice(flags);
    gateway(Cli::default(), &all, registry).await
}

/// The first words of the bodies of `n` GETs of `path` (the answering node's name for a
/// [`Backend`]), all of which must succeed.
async fn nodes_answering(gw: &str, path: &str, n: usize) -> std::collections::BTreeSet<String> {
    let mut nodes = std::collections::BTreeSet::new();
    for _ in 0..n {
        let r = get(gw, path).await;
        assert_eq!(r.status, 200, "{}", r.body);
        nodes.insert(r.body.split(' ').next().unwrap_or_default().to_string());
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_breaks_its_body_gets_400_and_the_node_is_not_avoided() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (one, two) = (Backend::start("one").await, Backend::start("two").await);
    let (gw, _stop) = gateway_to_addrs("go.micro.api.pair", &[one.addr, two.addr], &[]).await;
    // A chunked body that is not chunked coding: the client's error, not the node's.
    let mut conn = tokio::net::TcpStream::connect(&gw).await.unwrap();
    conn.write_all(
        b"POST /pair/x HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
    )
    .await
    .unwrap();
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut resp)).await;
    let resp = String::from_utf8_lossy(&resp);
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(
        resp.contains("the request body could not be read"),
        "{resp}"
    );
    assert_eq!(nodes_answering(&gw, "/pair/x", 6).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_does_not_count_against_the_backend_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (gw, _backend, _stop) =
        gateway_to_one("go.micro.api.up", "u", &["--backend-timeout", "1s"]).await;
    let mut conn = tokio::net::TcpStream::connect(&gw).await.unwrap();
    conn.write_all(
        b"POST /up/x HTTP/1.1\r\nHost: gw\r\nContent-Length: 10\r\nConnection: close\r\n\r\n01234",
    )
    .await
    .unwrap();
    // The client takes 1.5 s over its body; the node answers at once once it has it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    conn.write_all(b"56789").await.unwrap();
    let mut resp = Vec::new();
    conn.read_to_end(&mut resp).await.unwrap();
    let resp = String::from_utf8_lossy(&resp);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("body=10"), "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waiting_for_its_node_is_not_idle_but_a_stalled_upload_is() {
    use tokio::io::AsyncWriteExt;
    // The node answers after 2 s, within the backend timeout (30 s), past the idle limit.
    let (gw, _backend, _stop) =
        gateway_to_one("go.micro.api.s", "s", &["--idle-timeout", "1s"]).await;
    let r = raw(
        &gw,
        "GET /s/slow HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r:?}");
    assert!(r.contains("node=s path=/s/slow"), "{r}");

    // A client that stops halfway through its body is silent while the gateway waits for it:
    // closed after the idle limit.
    let mut conn = tokio::net::TcpStream::connect(&gw).await.unwrap();
    conn.write_all(b"POST /s/x HTTP/1.1\r\nHost: gw\r\nContent-Length: 10\r\n\r\n01234")
        .await
        .unwrap();
    assert!(closed_within(&mut conn, Duration::from_secs(4)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_cors_on_an_options_request_that_is_no_preflight_reaches_the_service() {
    let (gw, _backend, _stop) = gateway_to_one(
        "go.micro.api.b",
        "b",
        &["--cors-allowed-origins", "https://ok.example"],
    )
    .await;
    // No `Access-Control-Request-Method`: no preflight, the service's to answer.
    let r = raw(
        &gw,
        "OPTIONS /b/x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.contains("node=b path=/b/x"), "the node never saw it: {r}");
    let r = raw(
        &gw,
        "OPTIONS /nosuch/x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    // A cross-origin OPTIONS request after its preflight (an `Origin`, no
    // `Access-Control-Request-Method`): the service's, with the CORS headers a listed origin
    // gets; none for another origin.
    let r = raw(
        &gw,
        "OPTIONS /b/x HTTP/1.1\r\nHost: gw\r\nOrigin: https://ok.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.contains("node=b path=/b/x"), "{r}");
    let lower = r.to_ascii_lowercase();
    assert!(
        lower.contains("access-control-allow-origin: https://ok.example"),
        "{r}"
    );
    assert!(lower.contains("vary: origin"), "{r}");
    let r = raw(
        &gw,
        "OPTIONS /b/x HTTP/1.1\r\nHost: gw\r\nOrigin: https://evil.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.contains("node=b path=/b/x"), "{r}");
    assert!(
        !r.to_ascii_lowercase()
            .contains("access-control-allow-origin"),
        "{r}"
    );
    // A preflight is still answered by the gateway.
    let r = raw(
        &gw,
        "OPTIONS /b/x HTTP/1.1\r\nHost: gw\r\nOrigin: https://ok.example\r\nAccess-Control-Request-Method: PUT\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(
        r.to_ascii_lowercase()
            .contains("access-control-allow-origin: https://ok.example"),
        "{r}"
    );
    assert!(!r.contains("node=b"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_case_insensitive() {
    let (gw, _backend, _stop) =
        gateway_to_one("go.micro.api.b", "b", &["--auth-tokens", "t1"]).await;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let r = get_with(&gw, "/b/x", ("Authorization", format!("{scheme} t1"))).await;
        assert_eq!(r.status, 200, "{scheme}: {}", r.body);
    }
    let r = get_with(&gw, "/b/x", ("Authorization", "Basic t1".into())).await;
    assert_eq!(r.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_safe_request_on_a_kept_alive_connection_the_node_just_closed_is_sent_again() {
    use tokio::io::AsyncWriteExt;
    // Each connection serves one request, then closes when the next one comes (its keep-alive
    // timer firing as the request arrives); the requests it took are counted.
    let taken = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&taken);
    let addr = raw_backend(move |mut s| {
        let taken = Arc::clone(&counted);
        async move {
            let mut served = false;
            while read_head(&mut s).await.is_some() {
                taken.fetch_add(1, Ordering::SeqCst);
                if served {
                    return;
                }
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await
                    .unwrap();
                served = true;
            }
        }
    })
    .await;
    // The hyper path, whose connections the POST below shares with the GETs (the express lane's
    // own replay: gateway_express.rs).
    let (gw, _stop) =
        gateway_to_addrs("go.micro.api.k", &[addr], &["--express-lane", "false"]).await;
    assert_eq!(get(&gw, "/k/x").await.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = get(&gw, "/k/x").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        taken.load(Ordering::SeqCst),
        3,
        "sent twice, once on a new connection"
    );

    // A request with a body is not sent again: 502, saying so.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = taken.load(Ordering::SeqCst);
    let r = call(&gw, "POST", "/k/x", Vec::new(), "order=1".into()).await;
    let v = json_error(&r, 502);
    assert!(
        v["detail"].as_str().unwrap().contains("was not repeated"),
        "{v}"
    );
    assert_eq!(taken.load(Ordering::SeqCst), before + 1);
}

/// A node that is shutting down closes its kept-alive connections at any moment, not only after
/// its keep-alive timeout: one it closes as the gateway's next request goes out on it (moments
/// after the last one, as under load) got a request it never answered. A safe request is then
/// sent to another node, as Go's transport sends it again on a new connection and nginx to the
/// next server, instead of a 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_safe_request_on_a_connection_a_node_closes_at_once_goes_to_another_node() {
    use tokio::io::AsyncWriteExt;
    // Each connection serves one request, then closes when the next one comes.
    let closing = raw_backend(|mut s| async move {
        let mut served = false;
        while read_head(&mut s).await.is_some() {
            if served {
                return;
            }
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nclosing")
                .await
                .unwrap();
            served = true;
        }
    })
    .await;
    let plain = Backend::start("plain").await;
    let (gw, _stop) = gateway_to_addrs("go.micro.api.k", &[closing, plain.addr], &[]).await;
    // Round robin: the first, third, ... request go to `closing`, back to back (well within
    // the time a node's keep-alive timeout could have closed the connection).
    for i in 0..6 {
        let r = get(&gw, "/k/x").await;
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_trailers_reach_a_client_that_takes_them() {
    use tokio::io::AsyncWriteExt;
    let addr = raw_backend(|mut s| async move {
        if let Some(head) = read_head(&mut s).await {
            // The node is told the client takes trailers.
            assert!(head.to_ascii_lowercase().contains("te: trailers\r\n"), "{head}");
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\nConnection: close\r\n\r\n2\r\nok\r\n0\r\nx-sum: 42\r\n\r\n")
                .await;
        }
    })
    .await;
    let (gw, _stop) = gateway_to_addrs("go.micro.api.t", &[addr], &[]).await;
    let r = raw(
        &gw,
        "GET /t/x HTTP/1.1\r\nHost: gw\r\nTE: trailers\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(
        r.to_ascii_lowercase().contains("x-sum: 42"),
        "trailer lost: {r:?}"
    );
}

/// `Content-Length: 2, 2` (one length repeated as a list, as a node behind something that
/// merged its duplicate headers sends) is taken, as RFC 9110 §8.6 allows, and passed on as the one
/// length: as it was, Go's client and nginx refuse the response (a bad Content-Length).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_length_repeated_as_a_list_reaches_the_client_as_one_length() {
    use tokio::io::AsyncWriteExt;
    let addr = raw_backend(|mut s| async move {
        while let Some(head) = read_head(&mut s).await {
            let answer: &[u8] = if head.starts_with("HEAD ") {
                b"HTTP/1.1 200 OK\r\nContent-Length: 5 , 5,5\r\n\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok"
            };
            if s.write_all(answer).await.is_err() {
                return;
            }
        }
    })
    .await;
    let (gw, _stop) = gateway_to_addrs("go.micro.api.l", &[addr], &[]).await;
    let r = raw(
        &gw,
        "GET /l/x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("\r\ncontent-length: 2\r\n"), "{r}");
    assert!(r.ends_with("\r\n\r\nok"), "{r}");
    let r = raw(
        &gw,
        "HEAD /l/x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.contains("\r\ncontent-length: 5\r\n"), "{r}");
    // An HTTP/2 client resets the stream on a length it cannot read.
    let (mut h2, _conn) = http2_client(&gw).await;
    let (status, body) = http2_get(&mut h2, &gw, "/l/x").await;
    assert_eq!((status, &body[..]), (200, &b"ok"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_coding_other_than_chunked_is_refused() {
    let (gw, _backend, _stop) = gateway_to_one("go.micro.api.echo", "e", &[]).await;
    let r = raw(
        &gw,
        "POST /echo/headers HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    // The node would get the gzip-coded bytes as the body with nothing saying so.
    assert!(r.starts_with("HTTP/1.1 501"), "{r}");
    assert!(r.contains("`chunked` transfer coding"), "{r}");
}

/// POSTs `len` bytes to `path`, reading the answer while the body is still being written
/// (write errors ignored); the status line, or what came.
async fn post_unread(gw: &str, path: &str, len: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let conn = tokio::net::TcpStream::connect(gw).await.unwrap();
    let (mut rd, mut wr) = conn.into_split();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(head.as_bytes()).await;
        let _ = wr.write_all(&vec![b'x'; len]).await;
        wr
    });
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut resp)).await;
    writer.abort();
    String::from_utf8_lossy(&resp).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_answers_before_reading_the_body_is_not_avoided() {
    // `/…/426` is answered without reading the body (as an auth or size check would be). A
    // node that then closes with the body unread resets the connection, and the kernel drops
    // the answer if it was not read yet: the client gets it or a 502 saying why, and the node
    // is not taken for down.
    let (one, two) = (Backend::start("one").await, Backend::start("two").await);
    let (gw, _stop) = gateway_to_addrs("go.micro.api.e", &[one.addr, two.addr], &[]).await;
    for _ in 0..10 {
        let r = post_unread(&gw, "/e/426", 4 << 20).await;
        assert!(
            r.starts_with("HTTP/1.1 426")
                || (r.starts_with("HTTP/1.1 502")
                    && r.contains("before taking the whole request body")),
            "{r}"
        );
    }
    assert_eq!(nodes_answering(&gw, "/e/x", 6).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_the_gateway_cannot_read_is_a_502_and_the_node_is_not_avoided() {
    use tokio::io::AsyncWriteExt;
    // Over 100 header lines for `/m/many`, a plain answer otherwise.
    let odd = raw_backend(|mut s| async move {
        while let Some(head) = read_head(&mut s).await {
            let mut r = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n".to_string();
            if head.starts_with("GET /m/many ") {
                for i in 0..150 {
                    r.push_str(&format!("set-cookie: c{i}=v\r\n"));
                }
            }
            if s.write_all((r + "\r\nodd").as_bytes()).await.is_err() {
                return;
            }
        }
    })
    .await;
    let plain = Backend::start("plain").await;
    let (gw, _stop) = gateway_to_addrs("go.micro.api.m", &[odd, plain.addr], &[]).await;
    for _ in 0..2 {
        let r = get(&gw, "/m/many").await;
        if r.status == 502 {
            let v = json_error(&r, 502);
            assert!(v["detail"].as_str().unwrap().contains("cannot read"), "{v}");
        } else {
            assert_eq!(r.body, "node=plain path=/m/many body=0 xff=127.0.0.1");
        }
    }
    assert_eq!(
        nodes_answering(&gw, "/m/x", 6).await,
        ["node=plain", "odd"].map(String::from).into()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_upload_that_stalls_is_refused_after_the_idle_limit() {
    use http_body_util::StreamBody;
    let (gw, _backend, _stop) =
        gateway_to_one("go.micro.api.up", "u", &["--idle-timeout", "1s"]).await;
    let mut sender = http2_streaming_client(&gw).await;
    // Five bytes of ten, then nothing (the sender is kept, so the stream stays open).
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Result<http_body::Frame<bytes::Bytes>, Infallible>>(1);
    tx.send(Ok(http_body::Frame::data(bytes::Bytes::from_static(
        b"01234",
    ))))
    .await
    .unwrap();
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let request = hyper::Request::post(format!("http://{gw}/up/x"))
        .header("content-length", "10")
        .body(body)
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
        .await
        .expect("answered, not left waiting for the rest of the body")
        .unwrap();
    assert_eq!(response.status(), 400);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("nothing of it came for 1s"), "{body}");
    drop(tx);
}

/// A request body whose frames come through a channel.
type Streamed = http_body_util::StreamBody<
    tokio_stream::wrappers::ReceiverStream<Result<http_body::Frame<bytes::Bytes>, Infallible>>,
>;

/// An HTTP/2 (prior knowledge) connection to `gw` for requests with streamed bodies; the task
/// driving it ends with it.
async fn http2_streaming_client(gw: &str) -> hyper::client::conn::http2::SendRequest<Streamed> {
    let stream = tokio::net::TcpStream::connect(gw).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    sender
}

/// An HTTP/2 request whose body comes in frames with no `content-length` (a streamed upload).
async fn http2_streamed_post(
    gw: &str,
    path: &str,
    pieces: usize,
    piece: usize,
) -> hyper::Response<hyper::body::Incoming> {
    use http_body_util::StreamBody;
    let mut sender = http2_streaming_client(gw).await;
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Result<http_body::Frame<bytes::Bytes>, Infallible>>(4);
    tokio::spawn(async move {
        for _ in 0..pieces {
            let frame = http_body::Frame::data(bytes::Bytes::from(vec![b'x'; piece]));
            if tx.send(Ok(frame)).await.is_err() {
                return;
            }
        }
    });
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let request = hyper::Request::post(format!("http://{gw}{path}"))
        .body(body)
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), sender.send_request(request))
        .await
        .expect("an answer")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_body_of_unknown_length_reaches_the_node_whole() {
    let (gw, _backend, _stop) =
        gateway_to_one("go.micro.api.up", "u", &["--body-limit", "64KiB"]).await;
    // Three frames, no `content-length`: the node (HTTP/1.1) gets them chunked.
    let response = http2_streamed_post(&gw, "/up/x", 3, 1000).await;
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "node=u path=/up/x body=3000 xff=127.0.0.1");

    // Over the limit: 413, as with a declared length.
    let response = http2_streamed_post(&gw, "/up/x", 80, 1000).await;
    assert_eq!(response.status(), 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_taking_the_body_is_answered_for_with_a_504() {
    // The node reads the request's head and then nothing: the body piles up in the sockets'
    // buffers and the gateway can hand it no more.
    let stuck = raw_backend(|mut s| async move {
        if read_head(&mut s).await.is_some() {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        drop(s);
    })
    .await;
    let (gw, _stop) = gateway_to_addrs(
        "go.micro.api.stuck",
        &[stuck],
        &["--backend-timeout", "1s", "--body-limit", "512MiB"],
    )
    .await;
    let started = std::time::Instant::now();
    // 128 MiB offered: far more than the loopback sockets between gateway and node hold.
    let response = http2_streamed_post(&gw, "/stuck/x", 2048, 64 << 10).await;
    assert_eq!(response.status(), 504);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.contains("took nothing more of the request body for 1s"),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );

    // Over HTTP/1 the rest of the body still comes on the connection, which therefore ends
    // after the 504: the response says so (hyper closed it without a word).
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let conn = tokio::net::TcpStream::connect(gw.as_str()).await.unwrap();
    let (mut from_gw, mut to_gw) = conn.into_split();
    let head = "POST /stuck/x HTTP/1.1\r\nhost: gw\r\ncontent-length: 134217728\r\n\r\n";
    to_gw.write_all(head.as_bytes()).await.unwrap();
    let writer = tokio::spawn(async move {
        let chunk = vec![b'x'; 64 << 10];
        for _ in 0..2048 {
            if to_gw.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(15), from_gw.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed without an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 504"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    writer.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_204_reaches_an_http2_client_without_a_content_length() {
    use tokio::io::AsyncWriteExt;
    // A node that (wrongly, RFC 9110 §8.6) sends a length with its 204.
    let node = raw_backend(|mut s| async move {
        while read_head(&mut s).await.is_some() {
            let answer = b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nX-Node: n\r\n\r\n";
            if s.write_all(answer).await.is_err() {
                return;
            }
        }
    })
    .await;
    let (gw, _stop) = gateway_to_addrs("go.micro.api.nc", &[node], &[]).await;
    let (mut h2, _conn) = http2_client(&gw).await;
    let request = hyper::Request::get(format!("http://{gw}/nc/x"))
        .body(http_body_util::Empty::new())
        .unwrap();
    let response = h2.send_request(request).await.unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(response.headers().get("x-node").unwrap(), "n");
    assert!(response.headers().get("content-length").is_none());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(body.is_empty());
}

/// Records written by hand or by another tool next to a real node, with addresses no connection
/// can be opened to, are left out before a node is picked: requests with a body (never tried on
/// a second node) all reach the real node, a node registered as `http://host:port` (as the
/// runtime's client takes it) is reached, and a service with only unusable records answers 502
/// naming one and what is wrong with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_whose_address_cannot_be_used_are_left_out() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let good = Backend::start("good").await;
    register(
        &registry,
        "go.micro.api.mixed",
        "good",
        &good.addr.to_string(),
    )
    .await;
    for (id, address) in [
        ("noport", "127.0.0.1"),
        ("empty", ""),
        ("path", "127.0.0.1:1/x"),
    ] {
        register(&registry, "go.micro.api.mixed", id, address).await;
    }
    let scheme = format!("http://{}/", good.addr);
    register(&registry, "go.micro.api.scheme", "s", &scheme).await;
    register(&registry, "go.micro.api.broken", "b", "127.0.0.1").await;
    let flags = ["--selector", "roundrobin"];
    let (gw, _stop) = gateway(Cli::new(), &flags, Arc::clone(&registry)).await;
    for i in 0..8 {
        let r = call(&gw, "POST", "/mixed/x", Vec::new(), "payload".into()).await;
        assert_eq!(r.status, 200, "POST {i}: {}", r.body);
        assert!(
            r.body.starts_with("node=good path=/mixed/x body=7"),
            "{}",
            r.body
        );
    }
    let r = get(&gw, "/scheme/x").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.starts_with("node=good path=/scheme/x"), "{}", r.body);
    let r = get(&gw, "/broken/x").await;
    assert_eq!(
        json_error(&r, 502)["detail"],
        "service `go.micro.api.broken` has no node the gateway can reach: node `b` is registered \
         at `127.0.0.1`, which has no port (expected host:port); fix or remove its record"
    );
}

/// The gateway closes kept-alive connections to a node once they sat unused for
/// `--backend-idle-timeout` (they held a thread each in some servers for as long as the gateway
/// ran), and opens a new one for the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_connections_to_a_node_are_closed_after_the_backend_idle_timeout() {
    // A node answering after 200 ms, counting its open connections.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node = listener.local_addr().unwrap().to_string();
    let open = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let (counting, total) = (Arc::clone(&open), Arc::clone(&accepted));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counting.fetch_add(1, Ordering::SeqCst);
            total.fetch_add(1, Ordering::SeqCst);
            let counting = Arc::clone(&counting);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Ok::<_, Infallible>(hyper::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(b"ok"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
                counting.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    register(&registry, "go.micro.api.idle", "idle-1", &node).await;
    let (addr, _stop) = gateway(
        Cli::default(),
        &["--backend-idle-timeout", "600ms", "--workers", "1"],
        registry,
    )
    .await;

    // Four at once: four connections to the node.
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let addr = addr.clone();
            tokio::spawn(
                async move { call(&addr, "GET", "/idle/x", Vec::new(), String::new()).await },
            )
        })
        .collect();
    for answer in calls {
        let answer = answer.await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 4);
    // Used again within the limit: one of them, no new one.
    let again = call(&addr, "GET", "/idle/x", Vec::new(), String::new()).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(accepted.load(Ordering::SeqCst), 4);

    // No request for a while: every one is closed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while open.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        open.load(Ordering::SeqCst),
        0,
        "connections still open to the node after the idle limit"
    );
    // And the next request gets a new one.
    let later = call(&addr, "GET", "/idle/x", Vec::new(), String::new()).await;
    assert_eq!(later.status, 200, "{}", later.body);
    assert_eq!(accepted.load(Ordering::SeqCst), 5);
}

/// A node that closes the connection after reading the request, without answering: a 502 that
/// says it closed the connection (a reset is another thing, and says something else).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_closing_without_an_answer_is_told_apart_from_a_reset() {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                // Dropped: a FIN, after the whole request head.
            });
        }
    });
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    register(&registry, "go.micro.api.mute", "mute-1", &node).await;
    let (addr, _stop) = gateway(Cli::default(), &[], registry).await;
    let v = json_error(&get(&addr, "/mute/x").await, 502);
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.contains("closed the connection without a complete answer"),
        "{v}"
    );
    assert!(!detail.contains("reset"), "{v}");
}

/// A request head the gateway takes over HTTP/1.1 (a 50 KB header: a large cookie or token) is
/// taken over HTTP/2 too (h2's own limit, 16 KiB, made it a 431 there).
#[tokio::test]
async fn a_large_request_head_is_taken_over_http2_as_over_http1() {
    let (addr, _backend, _stop) = gateway_to_one("go.micro.api.head", "h", &[]).await;
    let big = "a".repeat(50_000);

    let one = call(
        &addr,
        "GET",
        "/head/x",
        vec![("x-big", big.clone())],
        String::new(),
    )
    .await;
    assert_eq!(one.status, 200, "{}", one.body);

    let (mut sender, _conn) = http2_client(&addr).await;
    let request = hyper::Request::get(format!("http://{addr}/head/x"))
        .header("x-big", big)
        .body(http_body_util::Empty::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(body.starts_with(b"node=h path=/head/x"), "{body:?}");
}

/// HTTP/2 clients (browsers among them) may send each cookie in a `cookie` field of its own;
/// passed on to an HTTP/1.1 node they must be one line, joined with `; ` (RFC 9113 §8.2.3), as
/// nginx and Go's HTTP/2 server do: many HTTP/1.1 servers read only the first `Cookie` line, or
/// join the lines with `,`, and the other cookies (a session) are lost. With plugins too, which
/// see the joined line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_an_http2_client_splits_reach_the_node_as_one_line() {
    let (registry, _backend) = one_node_registry("go.micro.api.echo", "e").await;
    let (direct, _stop) = gateway(Cli::new(), &[], Arc::clone(&registry)).await;
    let mut cli = Cli::new();
    cli.plugin(HostSeen).unwrap();
    let (behind_plugins, _stop_too) = gateway(cli, &[], registry).await;
    for gw in [direct.clone(), behind_plugins] {
        let (mut sender, _conn) = http2_client(&gw).await;
        let request = hyper::Request::get(format!("http://{gw}/echo/headers"))
            .header("cookie", "session=s1")
            .header("cookie", "theme=dark; lang=en")
            .header("cookie", "cart=3")
            .body(http_body_util::Empty::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8(body.to_vec()).unwrap();
        let cookies: Vec<&str> = body.lines().filter(|l| l.starts_with("cookie:")).collect();
        assert_eq!(
            cookies,
            ["cookie: session=s1; theme=dark; lang=en; cart=3"],
            "{body}"
        );
    }

    // One cookie line (HTTP/2 or HTTP/1.1) passes as it is.
    let (mut sender, _conn) = http2_client(&direct).await;
    let request = hyper::Request::get(format!("http://{direct}/echo/headers"))
        .header("cookie", "a=1; b=2")
        .body(http_body_util::Empty::new())
        .unwrap();
    let body = sender.send_request(request).await.unwrap().into_body();
    let body = body.collect().await.unwrap().to_bytes();
    assert!(
        String::from_utf8_lossy(&body)
            .lines()
            .any(|l| l == "cookie: a=1; b=2"),
        "{body:?}"
    );
}

/// Connections to a node whose responses are still streaming (server-sent events, long downloads)
/// do not take the places of idle ones in the pool: with more such streams open than the pool
/// keeps connections per node (512), every other request to the node opened a new connection and
/// closed it after (one TCP connection, and one socket in TIME_WAIT, per request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_to_a_node_leave_its_other_requests_kept_alive_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const STREAMS: usize = 530;
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&accepted);
    let addr = raw_backend(move |mut s| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move {
            while let Some(head) = read_head(&mut s).await {
                if head.starts_with("GET /st/stream ") {
                    // An event, then nothing until the gateway closes the connection.
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nevent\n\r\n")
                        .await;
                    let _ = s.read(&mut [0u8; 16]).await;
                    return;
                }
                if s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    })
    .await;
    let (gw, _stop) = gateway_to_addrs("go.micro.api.st", &[addr], &[]).await;
    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        let mut conn = tokio::net::TcpStream::connect(&gw).await.unwrap();
        conn.write_all(b"GET /st/stream HTTP/1.1\r\nHost: gw\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        while !got.windows(6).any(|w| w == b"event\n") {
            let mut buf = [0u8; 256];
            let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
                .await
                .expect("the stream's first event")
                .unwrap();
            assert!(n > 0, "the stream ended early");
            got.extend_from_slice(&buf[..n]);
        }
        streams.push(conn);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), STREAMS);

    for _ in 0..20 {
        let r = get(&gw, "/st/x").await;
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    }
    let opened = accepted.load(Ordering::SeqCst) - STREAMS;
    assert!(
        opened <= 2,
        "{opened} connections opened for 20 requests in a row"
    );
    drop(streams);
}

/// A connection whose response took longer than `--backend-idle-timeout` to stream was in use,
/// not idle: it is taken again for the next request (it was closed as soon as it was done).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_response_does_not_count_as_idle_time() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // One request head (no bodies come here), then its answer; kept alive.
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end);
                    if head.starts_with("GET /long/stream ") {
                        let start = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
                        if stream.write_all(start).await.is_err() {
                            return;
                        }
                        for _ in 0..6 {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            if stream.write_all(b"1\r\nx\r\n").await.is_err() {
                                return;
                            }
                        }
                        if stream.write_all(b"0\r\n\r\n").await.is_err() {
                            return;
                        }
                    } else if stream
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    register(&registry, "go.micro.api.long", "long-1", &node).await;
    let (addr, _stop) = gateway(
        Cli::default(),
        &["--backend-idle-timeout", "600ms", "--workers", "1"],
        registry,
    )
    .await;

    // 1.2 s of body: twice the idle limit.
    let long = call(&addr, "GET", "/long/stream", Vec::new(), String::new()).await;
    assert_eq!(long.status, 200, "{}", long.body);
    assert_eq!(long.body, "xxxxxx");
    let next = call(&addr, "GET", "/long/x", Vec::new(), String::new()).await;
    assert_eq!(next.status, 200, "{}", next.body);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the connection of the long response was not taken again"
    );
}

/// A node for `/stall/…`: for a path with `stuck`, 3 bytes of a 100-byte body, then nothing,
/// its connection open for longer than a test runs; for any other, a chunked body of 8 bytes,
/// one every 0.3 s.
async fn stalling_node() -> SocketAddr {
    use tokio::io::AsyncWriteExt;
    raw_backend(|mut s| async move {
        while let Some(head) = read_head(&mut s).await {
            if head.starts_with("GET /stall/stuck ") {
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
                    .await;
                tokio::time::sleep(Duration::from_secs(120)).await;
                return;
            }
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await;
            for _ in 0..8 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let _ = s.write_all(b"1\r\nx\r\n").await;
            }
            let _ = s.write_all(b"0\r\n\r\n").await;
        }
    })
    .await
}

/// A node that sends part of a response body and then nothing, its connection open: an
/// HTTP/1 client's connection is closed after the idle limit (no bytes either way); an HTTP/2
/// client's stream is reset after it too, not held (with the node's connection) for as long as
/// the node keeps its end open, while the connection's other streams go on. A stream whose
/// body keeps coming, if slower than the limit altogether, is not cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_body_the_node_stops_sending_is_cut_after_the_idle_limit_over_http2() {
    let node = stalling_node().await;
    let (gw, _stop) =
        gateway_to_addrs("go.micro.api.stall", &[node], &["--idle-timeout", "1s"]).await;
    let (mut sender, conn) = http2_client(&gw).await;

    let request = |path: &str| {
        hyper::Request::get(format!("http://{gw}{path}"))
            .body(http_body_util::Empty::new())
            .unwrap()
    };
    let stuck = sender.send_request(request("/stall/stuck")).await.unwrap();
    assert_eq!(stuck.status(), 200);
    let started = std::time::Instant::now();
    let slow = sender.send_request(request("/stall/slow")).await.unwrap();
    let (stuck, slow) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(10), stuck.into_body().collect()),
        tokio::time::timeout(Duration::from_secs(10), slow.into_body().collect()),
    );
    let stuck = stuck.expect("the stalled body is cut within 10 s");
    assert!(stuck.is_err(), "a cut-off body must not look complete");
    let cut_after = started.elapsed();
    assert!(
        cut_after >= Duration::from_millis(900) && cut_after < Duration::from_secs(4),
        "cut after {cut_after:?}, for a 1 s idle limit"
    );
    // 2.4 s of body in all, a piece every 0.3 s: whole.
    let slow = slow
        .expect("the slow body ends")
        .expect("the slow body is whole");
    assert_eq!(slow.to_bytes(), "xxxxxxxx");
    assert!(!conn.is_finished(), "the connection serves on");
    assert_eq!(
        http2_get(&mut sender, &gw, "/stall/again").await.1,
        "xxxxxxxx"
    );
}

/// The same over HTTP/1 with the next request already sent: hyper holds those bytes and reads no
/// more of the socket while the first answer streams, so no read is left waiting for the idle
/// limit to fail, and a node that went silent mid-body held the client (and the node's
/// connection) until the node closed. The body's own silence limit cuts it, on both paths; a body
/// that keeps coming, however slowly, is not cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_body_the_node_stops_sending_is_cut_after_the_idle_limit_over_pipelined_http1() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let node = stalling_node().await;
    for lane in ["true", "false"] {
        let flags = ["--idle-timeout", "1s", "--express-lane", lane];
        let (gw, _stop) = gateway_to_addrs("go.micro.api.stall", &[node], &flags).await;
        // A body that keeps coming, a piece every 0.3 s for 2.4 s in all, is whole.
        let slow = format!("GET /stall/slow HTTP/1.1\r\nHost: {gw}\r\nConnection: close\r\n\r\n");
        let slow = raw(&gw, &slow).await;
        let (head, body) = slow.split_once("\r\n\r\n").unwrap_or((&slow, ""));
        assert!(
            head.starts_with("HTTP/1.1 200"),
            "express lane {lane}: {slow:?}"
        );
        assert!(
            body.matches('x').count() == 8 && body.ends_with("0\r\n\r\n"),
            "express lane {lane}: the slow body is whole: {slow:?}"
        );
        let mut client = tokio::net::TcpStream::connect(&gw).await.unwrap();
        let get = format!("GET /stall/stuck HTTP/1.1\r\nHost: {gw}\r\n\r\n");
        client
            .write_all(format!("{get}{get}").as_bytes())
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), async {
            let mut buf = [0u8; 1024];
            loop {
                match client.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        read.unwrap_or_else(|_| {
            panic!("express lane {lane}: the stalled answer is cut within 10 s")
        });
        let cut_after = started.elapsed();
        let got = String::from_utf8_lossy(&got);
        assert!(
            got.starts_with("HTTP/1.1 200 OK\r\n") && got.ends_with("\r\n\r\nabc"),
            "express lane {lane}: the head and the body so far, then the end: {got:?}"
        );
        assert!(
            cut_after >= Duration::from_millis(900) && cut_after < Duration::from_secs(4),
            "express lane {lane}: cut after {cut_after:?}, for a 1 s idle limit"
        );
    }
}

/// A body the client stops taking for longer than the idle limit (its HTTP/2 stream's window is
/// full) is not silent on the node's part: the node was held back by the gateway. Its silence is
/// counted from when the gateway asks for more and has to wait, so the body is not cut the
/// moment the client takes more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_body_the_client_stops_taking_is_not_cut_as_silent_when_it_takes_more() {
    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;
    const SIZE: usize = 16 << 20;
    let node = raw_backend(|mut s| async move {
        while read_head(&mut s).await.is_some() {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {SIZE}\r\n\r\n");
            if s.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let piece = vec![b'x'; 64 << 10];
            for _ in 0..SIZE / piece.len() {
                if s.write_all(&piece).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    let (gw, _stop) =
        gateway_to_addrs("go.micro.api.big", &[node], &["--idle-timeout", "1s"]).await;
    let (mut sender, _conn) = http2_client(&gw).await;
    let request = hyper::Request::get(format!("http://{gw}/big/x"))
        .body(http_body_util::Empty::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    // Not taking any more for 2.5 idle limits: the stream's window fills, and the node is held.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let rest = tokio::time::timeout(Duration::from_secs(20), body.collect())
        .await
        .expect("the body ends within 20 s")
        .expect("the body is whole: the node never went silent")
        .to_bytes();
    assert_eq!(first.len() + rest.len(), SIZE);
}

/// An upload the node stops taking for longer than the idle limit is not the client's silence:
/// the gateway held the client back. The upload's silence is counted from when the gateway asks
/// for more of it and has to wait, so it is not cut the moment the node takes more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_the_node_stops_taking_is_not_cut_as_silent_when_it_takes_more() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SIZE: usize = 16 << 20;
    let node = raw_backend(|mut s| async move {
        let Some(head) = read_head(&mut s).await else {
            return;
        };
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(str::to_owned)
            })
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let mut buf = vec![0u8; 64 << 10];
        let mut got = s.read(&mut buf).await.unwrap_or(0);
        // Taking nothing more for 2.5 idle limits.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        while got < length {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        let body = format!("got={got}");
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = s.write_all(answer.as_bytes()).await;
    })
    .await;
    let (gw, _stop) = gateway_to_addrs(
        "go.micro.api.up",
        &[node],
        &["--idle-timeout", "1s", "--body-limit", "32MiB"],
    )
    .await;
    let conn = tokio::net::TcpStream::connect(&gw).await.unwrap();
    let (mut read, mut write) = conn.into_split();
    let upload = tokio::spawn(async move {
        let head = format!("POST /up/x HTTP/1.1\r\nHost: gw\r\nContent-Length: {SIZE}\r\nConnection: close\r\n\r\n");
        write.write_all(head.as_bytes()).await?;
        write.write_all(&vec![b'x'; SIZE]).await?;
        Ok::<_, std::io::Error>(write)
    });
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), read.read_to_end(&mut answer))
        .await
        .expect("answered within 20 s")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with(&format!("got={SIZE}")), "{answer}");
    upload.await.unwrap().expect("the whole upload was taken");
}

/// A plugin of flags and init alone: no `layer` to write.
struct InitOnly(Arc<AtomicUsize>);

impl Plugin for InitOnly {
    fn name(&self) -> &'static str {
        "init-only"
    }
    fn init(&mut self, _: &clap::ArgMatches, _: &PluginContext) -> Result<(), PluginError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// A layer written as an async function: refuses requests without `x-tenant`, tells the node
/// the tenant, and marks the response.
struct Tenant;

impl Plugin for Tenant {
    fn name(&self) -> &'static str {
        "tenant"
    }
    fn layer(&self) -> Option<PluginLayer> {
        Some(from_fn(
            |mut req: ::http::Request<axum_core::body::Body>, next: Next| async move {
                let Some(tenant) = req.headers().get("x-tenant").cloned() else {
                    return rmicro::api::error::response(
                        ::http::StatusCode::FORBIDDEN,
                        "an x-tenant header is required",
                    );
                };
                req.headers_mut().insert("x-checked-tenant", tenant);
                let mut resp = next.run(req).await;
                resp.headers_mut()
                    .insert("x-tenant-plugin", ::http::HeaderValue::from_static("on"));
                resp
            },
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_from_an_async_function_and_a_plugin_without_one() {
    let (registry, _backend) = one_node_registry("go.micro.api.echo", "e").await;
    let inits = Arc::new(AtomicUsize::new(0));
    let mut cli = Cli::new();
    cli.plugin(InitOnly(Arc::clone(&inits))).unwrap();
    cli.plugin(Tenant).unwrap();
    let (gw, _stop) = gateway(cli, &[], registry).await;
    assert_eq!(inits.load(Ordering::SeqCst), 1);

    let refused = get(&gw, "/echo/headers").await;
    let v = json_error(&refused, 403);
    assert_eq!(v["detail"], "an x-tenant header is required");
    assert_eq!(refused.header("x-tenant-plugin"), None);

    let r = get_with(&gw, "/echo/headers", ("X-Tenant", "acme".into())).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-tenant-plugin"), Some("on"));
    assert!(
        r.body.lines().any(|l| l == "x-checked-tenant: acme"),
        "{}",
        r.body
    );
}

/// A plugin with a bug: panics in its layer's `call` for `x-panic: call`, and in the
/// request's future for `x-panic: future`.
struct Buggy;

impl Plugin for Buggy {
    fn name(&self) -> &'static str {
        "buggy"
    }
    fn layer(&self) -> Option<PluginLayer> {
        Some(PluginLayer::new(tower::layer::layer_fn(
            |inner: rmicro::api::plugin::HttpService| {
                rmicro::api::plugin::HttpService::new(tower::service_fn(
                    move |req: ::http::Request<axum_core::body::Body>| {
                        let panic = req.headers().get("x-panic").cloned();
                        assert!(
                            panic.as_ref().is_none_or(|p| p != "call"),
                            "the plugin's bug in call"
                        );
                        let inner = inner.clone();
                        async move {
                            if panic.is_some_and(|p| p == "future") {
                                panic!("the plugin's bug in its future");
                            }
                            tower::ServiceExt::oneshot(inner, req).await
                        }
                    },
                ))
            },
        )))
    }
}

/// A plugin that panics answers that request 500 with a JSON error (not the panic's message)
/// and the client's connection serves on, as go-micro recovers a handler's panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_panics_answers_500_and_the_connection_serves_on() {
    use tokio::io::AsyncWriteExt;
    let (registry, _backend) = one_node_registry("go.micro.api.echo", "e").await;
    let mut cli = Cli::new();
    cli.plugin(Buggy).unwrap();
    let (gw, _stop) = gateway(cli, &[], registry).await;

    let mut conn = tokio::net::TcpStream::connect(&gw).await.unwrap();
    for how in ["call", "future"] {
        let request = format!("GET /echo/x HTTP/1.1\r\nhost: gw\r\nx-panic: {how}\r\n\r\n");
        conn.write_all(request.as_bytes()).await.unwrap();
        let response = read_response(&mut conn).await;
        assert!(response.starts_with("HTTP/1.1 500 "), "{how}: {response}");
        let body = response.split_once("\r\n\r\n").unwrap().1;
        let v: serde_json::Value = serde_json::from_str(body).expect("a JSON error body");
        assert_eq!(
            (&v["id"], &v["code"]),
            (&"go.micro.api".into(), &500.into()),
            "{body}"
        );
        assert!(
            !body.contains("bug"),
            "the panic's message is for the log: {body}"
        );
        // The same connection, the next request.
        let next = keep_alive_get(&mut conn, "/echo/x").await;
        assert!(
            next.starts_with("HTTP/1.1 200 "),
            "after a panic in {how}: {next}"
        );
    }
}

/// `text` parsed by prometheus_client's OpenMetrics parser (Python, installed by
/// scripts/test.sh): `{family: {"type", "samples": [{"name", "labels", "value"}]}}`.
fn parse_openmetrics(text: &str) -> serde_json::Value {
    use std::io::Write;
    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    out[family.name] = {
        "type": family.type,
        "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in family.samples],
    }
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs (scripts/test.sh installs prometheus_client)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value of the sample `series` (name and labels, as written) in a Prometheus text
/// exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
}

/// `--metrics-address`: every request is counted by service, method and status (those token
/// auth refuses and those no service takes too, under no service), timed to its response head,
/// and in flight until then; the metrics are served on their own listener, not the gateway's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_service_and_status_on_their_own_listener() {
    let metrics = format!("127.0.0.1:{}", rmicro_tests::free_port());
    let (registry, _backend) = one_node_registry("go.micro.api.user", "one").await;
    let (gw, _stop) = gateway(
        Cli::new(),
        &["--metrics-address", &metrics, "--auth-tokens", "secret"],
        Arc::clone(&registry),
    )
    .await;
    let auth = || ("Authorization", "Bearer secret".to_string());
    for _ in 0..3 {
        assert_eq!(get_with(&gw, "/user/x", auth()).await.status, 200);
    }
    assert_eq!(
        call(&gw, "POST", "/user/x", vec![auth()], "hi".into())
            .await
            .status,
        200
    );
    assert_eq!(get_with(&gw, "/nosuch/x", auth()).await.status, 404);
    assert_eq!(get(&gw, "/user/x").await.status, 401);
    // A request still waiting for its answer is in flight.
    let slow = {
        let gw = gw.clone();
        tokio::spawn(async move { get_with(&gw, "/user/slow", auth()).await.status })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    let scrape = get(&metrics, "/metrics").await;
    assert_eq!(scrape.status, 200, "{}", scrape.body);
    assert!(
        scrape
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        scrape.headers
    );
    let text = &scrape.body;
    // What a scraper reads: the exposition parsed by the Prometheus project's own OpenMetrics
    // parser (Python's prometheus_client), which refuses anything off the format.
    let families = parse_openmetrics(text);
    assert_eq!(
        families["rmicro_api_requests"]["type"], "counter",
        "{families}"
    );
    assert_eq!(
        families["rmicro_api_request_duration_seconds"]["type"],
        "histogram"
    );
    assert_eq!(families["rmicro_api_requests_in_flight"]["type"], "gauge");
    let parsed_ok = families["rmicro_api_requests"]["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["name"] == "rmicro_api_requests_total"
                && s["labels"]
                    == serde_json::json!({"service": "go.micro.api.user", "method": "GET", "code": "200"})
        })
        .and_then(|s| s["value"].as_f64());
    assert_eq!(parsed_ok, Some(3.0), "{families}");
    let user = r#"service="go.micro.api.user""#;
    assert_eq!(
        sample(
            text,
            &format!(r#"rmicro_api_requests_total{{{user},method="GET",code="200"}}"#)
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            text,
            &format!(r#"rmicro_api_requests_total{{{user},method="POST",code="200"}}"#)
        ),
        Some(1.0),
        "{text}"
    );
    // No service took these: the made-up path makes no series of its own.
    for code in ["404", "401"] {
        assert_eq!(
            sample(
                text,
                &format!(r#"rmicro_api_requests_total{{service="",method="GET",code="{code}"}}"#)
            ),
            Some(1.0),
            "{code}: {text}"
        );
    }
    assert!(!text.contains("nosuch"), "{text}");
    assert_eq!(
        sample(
            text,
            &format!("rmicro_api_request_duration_seconds_count{{{user}}}")
        ),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        sample(text, "rmicro_api_requests_in_flight"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(slow.await.unwrap(), 200);
    let text = get(&metrics, "/metrics").await.body;
    assert_eq!(
        sample(&text, "rmicro_api_requests_in_flight"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!("rmicro_api_request_duration_seconds_count{{{user}}}")
        ),
        Some(5.0),
        "{text}"
    );

    // A client that leaves before its answer is counted too, with nginx's 499.
    {
        use tokio::io::AsyncWriteExt;
        let mut conn = tokio::net::TcpStream::connect(&gw).await.unwrap();
        conn.write_all(
            b"GET /user/slow HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer secret\r\n\r\n",
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let left = format!(r#"rmicro_api_requests_total{{{user},method="GET",code="499"}}"#);
    let mut counted = None;
    for _ in 0..100 {
        counted = sample(&get(&metrics, "/metrics").await.body, &left);
        if counted.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(counted, Some(1.0));
    let text = get(&metrics, "/metrics").await.body;
    assert_eq!(
        sample(&text, "rmicro_api_requests_in_flight"),
        Some(0.0),
        "{text}"
    );

    // A service that went away: its 503 is its own.
    let record = Record {
        name: "go.micro.api.user".into(),
        version: "latest".into(),
        nodes: vec![Node {
            id: "one".into(),
            address: _backend.addr.to_string(),
            ..Default::default()
        }],
        ..Default::default()
    };
    registry.deregister(&record).await.unwrap();
    // The gateway hears of it through the registry's watch, a moment later.
    let mut status = 0;
    for _ in 0..100 {
        status = get_with(&gw, "/user/x", auth()).await.status;
        if status == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 503);
    let text = get(&metrics, "/metrics").await.body;
    assert_eq!(
        sample(
            &text,
            &format!(r#"rmicro_api_requests_total{{{user},method="GET",code="503"}}"#)
        ),
        Some(1.0),
        "{text}"
    );

    // Only /metrics, and only there: the gateway's own address does not serve them.
    assert_eq!(get(&metrics, "/other").await.status, 404);
    assert_eq!(
        call(&metrics, "POST", "/metrics", Vec::new(), String::new())
            .await
            .status,
        405
    );
    assert_ne!(get_with(&gw, "/metrics", auth()).await.status, 200);
}

/// An address the metrics cannot listen on stops the gateway before it serves, saying which.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_address_in_use_is_an_error_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let cli = Cli::new();
    let matches = cli
        .command()
        .try_get_matches_from(["rmicro", "api", "--metrics-address", address.as_str()])
        .unwrap();
    let sub = matches.subcommand_matches("api").unwrap().clone();
    let api = ApiArgs::from_arg_matches(&sub).unwrap();
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let err = Gateway::new(api, &sub, cli.into_plugins(), Some(registry)).unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "plugin `metrics`: cannot listen on --metrics-address {address}: "
        )),
        "{message}"
    );
}

/// Once told to stop, the gateway answers the request in flight (the connection then closes,
/// `Connection: close`), closes an idle kept-alive connection at once, and returns once the
/// request in flight is done; with and without a plugin (the direct path and the plugin stack).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_answers_the_request_in_flight_and_closes_idle_connections() {
    use tokio::io::AsyncReadExt;
    for flags in [&[][..], &["--access-log"][..]] {
        let (registry, backend) = one_node_registry("go.micro.api.calm", "c").await;
        let (gw, stop, served) = gateway_handle(Cli::default(), flags, registry).await;
        let mut idle = tokio::net::TcpStream::connect(&gw).await.unwrap();
        let first = keep_alive_get(&mut idle, "/calm/x").await;
        assert!(first.starts_with("HTTP/1.1 200"), "{first}");
        let mut busy = tokio::net::TcpStream::connect(&gw).await.unwrap();
        let slow = tokio::spawn(async move {
            let answer = keep_alive_get(&mut busy, "/calm/slow").await;
            // Closed after its answer: the gateway is stopping.
            let mut rest = Vec::new();
            let closed = tokio::time::timeout(Duration::from_secs(2), busy.read_to_end(&mut rest))
                .await
                .is_ok_and(|read| read.is_ok());
            (answer, closed)
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let told = std::time::Instant::now();
        stop.send(()).unwrap();
        // The idle connection closes at once.
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(1), idle.read_to_end(&mut rest)).await;
        assert!(
            read.is_ok_and(|r| r.is_ok()),
            "{flags:?}: idle connection not closed"
        );
        assert!(told.elapsed() < Duration::from_millis(900), "{flags:?}");
        let (answer, closed) = slow.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{flags:?}: {answer}");
        assert!(closed, "{flags:?}: the busy connection stayed open");
        tokio::time::timeout(Duration::from_secs(5), served)
            .await
            .expect("serve returns once the request in flight is done")
            .unwrap()
            .unwrap();
        // It waited for the slow answer (2 s from its start).
        assert!(
            told.elapsed() >= Duration::from_millis(1500),
            "{flags:?}: {:?}",
            told.elapsed()
        );
        drop(backend);
    }
}

/// The backend timeout counts from each request's start on a kept-alive connection to a node
/// (each connection keeps one timer, moved on for every request it carries), and a connection
/// whose timer fired while it sat idle times its next request from that request's start too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_timeout_counts_from_each_request_on_a_kept_alive_connection() {
    use tokio::io::AsyncWriteExt;
    let accepted = Arc::new(AtomicUsize::new(0));
    // Answers `GET /t/wait/<ms>` after <ms>, keeping the connection.
    let node = raw_backend({
        let accepted = Arc::clone(&accepted);
        move |mut s| {
            accepted.fetch_add(1, Ordering::SeqCst);
            async move {
                while let Some(head) = read_head(&mut s).await {
                    let ms: u64 = head
                        .split_whitespace()
                        .nth(1)
                        .and_then(|path| path.rsplit('/').next())
                        .and_then(|ms| ms.parse().ok())
                        .unwrap_or(0);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    let answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                    if s.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
    .await;
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    register(&registry, "go.micro.api.t", "t", &node.to_string()).await;
    let (gw, _stop) = gateway(
        Cli::default(),
        &["--backend-timeout", "600ms"],
        Arc::clone(&registry),
    )
    .await;

    assert_eq!(get(&gw, "/t/wait/0").await.status, 200);
    // 400 ms later, a request the node answers in 400 ms: 800 ms after the first one started,
    // within its own 600 ms.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = get(&gw, "/t/wait/400").await;
    assert_eq!(r.status, 200, "timed from the previous request: {}", r.body);
    // Idle past the last deadline (the timer fires meanwhile), then one answered in 300 ms.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let r = get(&gw, "/t/wait/300").await;
    assert_eq!(
        r.status, 200,
        "timed out by a timer that had fired: {}",
        r.body
    );
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the requests did not share a kept-alive connection"
    );

    // One the node takes 2 s over is answered for at the limit, from its own start.
    let started = std::time::Instant::now();
    let v = json_error(&get(&gw, "/t/wait/2000").await, 504);
    let took = started.elapsed();
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("did not answer within 600ms"),
        "{v}"
    );
    assert!(
        took >= Duration::from_millis(590) && took < Duration::from_millis(1500),
        "504 after {took:?}"
    );
}
