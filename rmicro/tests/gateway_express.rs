//! The http handler's express lane (plain HTTP/1.1 `GET` and `HEAD` without hyper) against
//! the hyper path: two gateways in front of the same scripted node, one with the lane on (the
//! default) and one with `--express-lane false`, must answer every request alike and send the
//! node the same request. Raw bytes both ways, so that nothing of either is smoothed over by a
//! client library.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::FromArgMatches;
use rmicro::api::{ApiArgs, Gateway};
use rmicro::Cli;
use rmicro_runtime::registry::{MemoryRegistry, Node, Registry, Service as Record};
use rmicro_tests::http::read_head;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The lane, on whatever `MICRO_API_EXPRESS_LANE` says (CI runs the suites once more with it
/// off).
const LANE: &[&str] = &["--express-lane", "true"];

/// What the scripted node answers for `/e/<case>`, and whether it closes the connection after.
fn script(case: &str) -> (&'static [u8], bool) {
    match case {
        "length" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Custom: A\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nhello",
            false,
        ),
        "repeated-length" => (b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello", false),
        "chunked" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n5;ext=1\r\nhello\r\n6 \r\n world\r\n0\r\nX-T: 1\r\n\r\n",
            false,
        ),
        "until-close" => (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", true),
        "http10" => (b"HTTP/1.0 200 OK\r\nX-Old: yes\r\n\r\nold style", true),
        "no-content" => (b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", false),
        "not-modified" => (b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n", false),
        "hop-by-hop" => (
            b"HTTP/1.1 200 OK\r\nConnection: X-Hop, keep-alive\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nX-Kept: 1\r\nContent-Length: 2\r\n\r\nok",
            false,
        ),
        "informational" => (
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            false,
        ),
        "reason" => (b"HTTP/1.1 418 Short And Stout\r\nContent-Length: 3\r\n\r\ntea", false),
        "upgrade-required" => (
            b"HTTP/1.1 426 Upgrade Required\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nContent-Length: 0\r\n\r\n",
            false,
        ),
        "both-framings" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            false,
        ),
        "other-coding" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            false,
        ),
        "switched" => (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            false,
        ),
        "garbage" => (b"HTTX/1.1 200 OK\r\n\r\n", true),
        "empty-coding-and-length" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: \r\nContent-Length: 5\r\n\r\nhello",
            false,
        ),
        "http10-chunked" => (
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            true,
        ),
        "chunked-comma" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked,\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            true,
        ),
        "not-modified-length" => (
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1234\r\n\r\n",
            false,
        ),
        "empty-reason" => (b"HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\nok", false),
        "trailer-with-length" => (
            b"HTTP/1.1 200 OK\r\nTrailer: X-T\r\nContent-Length: 2\r\n\r\nok",
            false,
        ),
        "connection-date" => (
            b"HTTP/1.1 200 OK\r\nConnection: date, close\r\nDate: Mon, 01 Jan 2001 00:00:00 GMT\r\nClose: x\r\nContent-Length: 2\r\n\r\nok",
            true,
        ),
        "zero-padded-length" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 00000000000000000005\r\n\r\nhello",
            false,
        ),
        "long-chunk-size" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000000005\r\nhello\r\n0\r\n\r\n",
            false,
        ),
        "order" => (
            b"HTTP/1.1 200 OK\r\nX-A: 1\r\nX-B: 2\r\nX-A: 3\r\nContent-Length: 0\r\n\r\n",
            false,
        ),
        "conflicting-lengths" => (b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello", true),
        _ => (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", false),
    }
}

/// A node that answers each request by [`script`], and `/e/echo` with the head it got (which
/// it also keeps in `heads`).
async fn scripted_node(heads: Arc<Mutex<Vec<String>>>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let heads = Arc::clone(&heads);
            tokio::spawn(async move {
                while let Some(head) = read_head(&mut s).await {
                    let path = head.split(' ').nth(1).unwrap_or_default().to_string();
                    // A body the hyper path sends is read (Content-Length only, here).
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    let mut body = vec![0u8; length];
                    if s.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let case = path
                        .trim_start_matches("/e/")
                        .split('?')
                        .next()
                        .unwrap_or_default();
                    if case == "echo" {
                        heads.lock().unwrap().push(head.clone());
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{head}",
                            head.len()
                        );
                        if s.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    let (answer, close) = script(case);
                    if s.write_all(answer).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A gateway in this process with `flags`, in front of `node` registered as `go.micro.api.e`.
async fn gateway(node: SocketAddr, flags: &[&str]) -> (String, tokio::sync::oneshot::Sender<()>) {
    gateway_to(&[node], flags).await
}

/// A gateway in this process with `flags`, in front of `nodes` registered as `go.micro.api.e`.
async fn gateway_to(
    nodes: &[SocketAddr],
    flags: &[&str],
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let record = Record {
        name: "go.micro.api.e".into(),
        version: "latest".into(),
        nodes: nodes
            .iter()
            .enumerate()
            .map(|(i, node)| Node {
                id: format!("e-{i}"),
                address: node.to_string(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    registry
        .register(&record, Duration::from_secs(300))
        .await
        .unwrap();
    let mut args = vec!["rmicro", "api", "--address", "127.0.0.1:0"];
    args.extend_from_slice(flags);
    let cli = Cli::default();
    let matches = cli.command().try_get_matches_from(args).unwrap();
    let sub = matches.subcommand_matches("api").unwrap().clone();
    let api = ApiArgs::from_arg_matches(&sub).unwrap();
    let gateway = Gateway::new(api, &sub, cli.into_plugins(), Some(registry)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(gateway.serve(listener, async {
        let _ = rx.await;
    }));
    (addr, tx)
}

/// Reads from `s` until what came is `enough` (within 5 s, the connection open): what came.
async fn read_until(s: &mut tokio::net::TcpStream, enough: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut got = Vec::new();
    while !enough(&got) {
        let mut buf = [0u8; 16384];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    got
}

/// Writes `request` on a new connection and reads until the gateway closes it (or 5 s pass).
async fn exchange(gw: &str, request: &[u8]) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(gw).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    got
}

/// An answer as a client reads it: status line, headers by lowercase name (without `date`, which
/// changes by the second), and the body with its framing undone.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: String,
    headers: BTreeMap<String, Vec<String>>,
    body: Vec<u8>,
    /// Bytes after the first answer (another answer: pipelining).
    rest: Vec<u8>,
    /// Whether it had one `date` line.
    dated: bool,
}

fn answer(raw: &[u8], head_request: bool) -> Answer {
    let text = String::from_utf8_lossy(raw);
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Answer {
            status: format!("no answer: {text:?}"),
            headers: BTreeMap::new(),
            body: Vec::new(),
            rest: Vec::new(),
            dated: false,
        };
    };
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default().to_string();
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut dates = 0;
    for line in lines {
        let (name, value) = line.split_once(':').expect("a header line");
        let name = name.to_ascii_lowercase();
        dates += usize::from(name == "date");
        if name != "date" {
            headers
                .entry(name)
                .or_default()
                .push(value.trim().to_string());
        }
    }
    let code: u16 = status.split(' ').nth(1).unwrap().parse().unwrap();
    let mut rest = &raw[end + 4..];
    let mut body = Vec::new();
    let one = |name: &str| headers.get(name).map(|v| v.join(","));
    if head_request || code == 204 || code == 304 {
    } else if one("transfer-encoding").as_deref() == Some("chunked") {
        loop {
            let line_end = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("a size line");
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap(), 16)
                .expect("a chunk size");
            rest = &rest[line_end + 2..];
            if size == 0 {
                assert!(rest.starts_with(b"\r\n"), "no trailers: {text:?}");
                rest = &rest[2..];
                break;
            }
            body.extend_from_slice(&rest[..size]);
            assert_eq!(&rest[size..size + 2], b"\r\n");
            rest = &rest[size + 2..];
        }
    } else if let Some(length) = one("content-length") {
        let length: usize = length.parse().unwrap();
        body.extend_from_slice(&rest[..length]);
        rest = &rest[length..];
    } else {
        body.extend_from_slice(rest);
        rest = &[];
    }
    Answer {
        status,
        headers,
        body,
        rest: rest.to_vec(),
        dated: dates == 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_express_lane_answers_every_framing_as_the_hyper_path_does() {
    let heads = Arc::new(Mutex::new(Vec::new()));
    let node = scripted_node(Arc::clone(&heads)).await;
    let (lane, _stop_lane) = gateway(node, LANE).await;
    let (hyper, _stop_hyper) = gateway(node, &["--express-lane", "false"]).await;
    let cases = [
        ("length", "200 OK", &b"hello"[..]),
        ("repeated-length", "200 OK", b"hello"),
        ("chunked", "200 OK", b"hello world"),
        ("until-close", "200 OK", b"until the end"),
        ("http10", "200 OK", b"old style"),
        ("no-content", "204 No Content", b""),
        ("not-modified", "304 Not Modified", b""),
        ("hop-by-hop", "200 OK", b"ok"),
        ("informational", "200 OK", b"ok"),
        ("reason", "418 Short And Stout", b"tea"),
        ("upgrade-required", "426 Upgrade Required", b""),
        ("both-framings", "502 Bad Gateway", b""),
        ("other-coding", "502 Bad Gateway", b""),
        ("switched", "502 Bad Gateway", b""),
        ("garbage", "502 Bad Gateway", b""),
        ("conflicting-lengths", "502 Bad Gateway", b""),
        ("empty-coding-and-length", "502 Bad Gateway", b""),
        ("http10-chunked", "502 Bad Gateway", b""),
        ("chunked-comma", "502 Bad Gateway", b""),
        ("not-modified-length", "304 Not Modified", b""),
        ("empty-reason", "200 ", b"ok"),
        ("trailer-with-length", "200 OK", b"ok"),
        ("connection-date", "200 OK", b"ok"),
        ("zero-padded-length", "200 OK", b"hello"),
        ("long-chunk-size", "200 OK", b"hello"),
    ];
    for (case, status, body) in cases {
        for method in ["GET", "HEAD"] {
            let request = format!(
                "{method} /e/{case} HTTP/1.1\r\nHost: api.example\r\nConnection: close\r\n\r\n"
            );
            let on_lane = answer(&exchange(&lane, request.as_bytes()).await, method == "HEAD");
            let on_hyper = answer(
                &exchange(&hyper, request.as_bytes()).await,
                method == "HEAD",
            );
            assert_eq!(on_lane, on_hyper, "{method} {case}");
            // A `HEAD` answer's length frames nothing: passed on as it came.
            let status = match (method, case) {
                // Nor does its transfer coding.
                ("HEAD", "conflicting-lengths" | "http10-chunked") => "200 OK",
                _ => status,
            };
            assert_eq!(
                on_lane.status,
                format!("HTTP/1.1 {status}"),
                "{method} {case}"
            );
            assert!(on_lane.dated, "{method} {case}: {on_lane:?}");
            if status.starts_with("502") {
                // The gateway's JSON error, naming what the node did.
                assert_eq!(
                    on_lane.headers["content-type"],
                    ["application/json"],
                    "{case}"
                );
                if method == "GET" {
                    let v: serde_json::Value = serde_json::from_slice(&on_lane.body).unwrap();
                    assert_eq!(v["id"], "go.micro.api", "{case}");
                    assert!(
                        v["detail"].as_str().unwrap().contains("node 127.0.0.1"),
                        "{case}: {v}"
                    );
                }
            } else if method == "GET" {
                assert_eq!(on_lane.body, body, "{case}");
            }
        }
    }
    // Hop-by-hop headers and those `Connection` lists stay with the node; others pass.
    let r = answer(
        &exchange(
            &lane,
            b"GET /e/hop-by-hop HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await,
        false,
    );
    for gone in ["x-hop", "keep-alive", "proxy-authenticate"] {
        assert!(!r.headers.contains_key(gone), "{gone}: {r:?}");
    }
    assert_eq!(r.headers["x-kept"], ["1"]);
    assert_eq!(r.headers["connection"], ["close"]);
    // A 426 keeps its `Upgrade`; a 304 its validator.
    let r = answer(
        &exchange(
            &lane,
            b"GET /e/upgrade-required HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await,
        false,
    );
    assert_eq!(r.headers["upgrade"], ["h2c"]);
    // A 304 has no length; the node's own `Date` goes when `Connection` lists it (the
    // gateway's comes instead), and a header `Connection` lists by the name `close`.
    let get =
        |case: &str| format!("GET /e/{case} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    let r = answer(
        &exchange(&lane, get("not-modified-length").as_bytes()).await,
        false,
    );
    assert!(!r.headers.contains_key("content-length"), "{r:?}");
    let raw = exchange(&lane, get("connection-date").as_bytes()).await;
    let raw = String::from_utf8_lossy(&raw);
    assert!(!raw.contains("2001"), "{raw}");
    assert!(!raw.to_ascii_lowercase().contains("close: x"), "{raw}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_gets_the_same_request_from_the_lane_as_from_hyper() {
    let heads = Arc::new(Mutex::new(Vec::new()));
    let node = scripted_node(Arc::clone(&heads)).await;
    let (lane, _stop_lane) = gateway(node, LANE).await;
    let (hyper, _stop_hyper) = gateway(node, &["--express-lane", "false"]).await;
    let request = b"GET /e/echo?q=1&r=%20 HTTP/1.1\r\nHost: api.example:8080\r\nConnection: keep-alive, close\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-For: 198.51.100.7\r\nAccept: */*\r\nCookie: a=1; b=2\r\n\r\n";
    let mut got = Vec::new();
    for gw in [&lane, &hyper] {
        heads.lock().unwrap().clear();
        let r = answer(&exchange(gw, request).await, false);
        assert_eq!(r.status, "HTTP/1.1 200 OK");
        let head = heads
            .lock()
            .unwrap()
            .pop()
            .expect("the node got the request");
        let mut lines: Vec<String> = head
            .trim_end()
            .split("\r\n")
            .map(|l| match l.split_once(':') {
                Some((name, value)) if !l.starts_with("GET ") => {
                    format!("{}: {}", name.to_ascii_lowercase(), value.trim())
                }
                _ => l.to_string(),
            })
            .collect();
        lines[1..].sort();
        got.push(lines);
    }
    assert_eq!(got[0], got[1]);
    assert_eq!(got[0][0], "GET /e/echo?q=1&r=%20 HTTP/1.1");
    assert!(
        got[0].contains(&"host: api.example:8080".to_string()),
        "{got:?}"
    );
    assert!(
        got[0].contains(&"x-forwarded-for: 192.0.2.1, 198.51.100.7, 127.0.0.1".to_string()),
        "{got:?}"
    );
    assert!(
        !got[0].iter().any(|l| l.starts_with("connection")),
        "{got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_pipelined_on_one_connection_are_answered_in_order_by_the_lane_and_by_hyper() {
    let node = scripted_node(Arc::default()).await;
    let (lane, _stop) = gateway(node, LANE).await;
    // The lane's GET, a POST for hyper (the rest of the connection is hyper's), then a GET.
    let request = b"GET /e/length HTTP/1.1\r\nHost: a\r\n\r\n\
        POST /e/reason HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody\
        GET /e/chunked HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let raw = exchange(&lane, request).await;
    let first = answer(&raw, false);
    assert_eq!(
        (first.status.as_str(), &first.body[..]),
        ("HTTP/1.1 200 OK", &b"hello"[..])
    );
    let second = answer(&first.rest, false);
    assert_eq!(
        (second.status.as_str(), &second.body[..]),
        ("HTTP/1.1 418 Short And Stout", &b"tea"[..])
    );
    let third = answer(&second.rest, false);
    assert_eq!(
        (third.status.as_str(), &third.body[..]),
        ("HTTP/1.1 200 OK", &b"hello world"[..])
    );
    assert!(third.rest.is_empty());
    // Lane only, kept alive: three GETs in one write, then the connection stays open.
    let mut s = tokio::net::TcpStream::connect(&lane).await.unwrap();
    s.write_all(&b"GET /e/length HTTP/1.1\r\nHost: a\r\n\r\n".repeat(3))
        .await
        .unwrap();
    let got = read_until(&mut s, |got| {
        got.windows(5).filter(|w| *w == b"hello").count() == 3
    })
    .await;
    assert_eq!(
        got.windows(15).filter(|w| *w == b"HTTP/1.1 200 OK").count(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunked_body_is_cut_off_not_passed_on() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Some(head) = read_head(&mut s).await {
                    let body: &[u8] = if head.starts_with("GET /e/trailer") {
                        // A trailer line that is no header.
                        b"3\r\nabc\r\n0\r\ngarbage line\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"
                    } else {
                        // A chunk longer than its size says, then what would be a second
                        // response.
                        b"3\r\nabcHTTP/1.1 200 OK\r\n\r\n"
                    };
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                        .await;
                    let _ = s.write_all(body).await;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            });
        }
    });
    for flags in [LANE, &["--express-lane", "false"]] {
        let (gw, _stop) = gateway(node, flags).await;
        for path in ["/e/long-chunk", "/e/trailer"] {
            let request = format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n");
            let raw = exchange(&gw, request.as_bytes()).await;
            let text = String::from_utf8_lossy(&raw);
            assert!(
                text.starts_with("HTTP/1.1 200 OK\r\n"),
                "{flags:?} {path}: {text}"
            );
            // The good chunk may have gone out; the end of the body never does, and nothing
            // of the bytes after the bad chunk.
            assert!(!text.contains("0\r\n\r\n"), "{flags:?} {path}: {text}");
            assert_eq!(
                text.matches("HTTP/1.1").count(),
                1,
                "{flags:?} {path}: {text}"
            );
        }
    }
}

/// The two paths tell apart from outside by one thing only: the lane passes a node's header
/// lines on in its order, hyper groups them by name (its `HeaderMap`). So `--express-lane false`
/// is seen to send a request the lane would take through hyper.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn express_lane_false_sends_every_request_through_hyper() {
    let node = scripted_node(Arc::default()).await;
    let request = b"GET /e/order HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let (lane, _stop_lane) = gateway(node, LANE).await;
    let raw = String::from_utf8(exchange(&lane, request).await).unwrap();
    assert!(raw.contains("x-a: 1\r\nx-b: 2\r\nx-a: 3\r\n"), "{raw}");
    for off in ["false", "0", "no"] {
        let (hyper, _stop_hyper) = gateway(node, &["--express-lane", off]).await;
        let raw = String::from_utf8(exchange(&hyper, request).await).unwrap();
        assert!(raw.contains("x-a: 1\r\nx-a: 3\r\n"), "{off}: {raw}");
    }
}

/// A node closes a kept-alive connection as the next request comes (its keep-alive timer
/// firing then): a `GET` is sent once more, on a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_on_a_kept_alive_connection_the_node_just_closed_is_sent_again() {
    let taken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node = listener.local_addr().unwrap();
    let counted = Arc::clone(&taken);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let taken = Arc::clone(&counted);
            tokio::spawn(async move {
                let mut served = false;
                while read_head(&mut s).await.is_some() {
                    taken.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if served {
                        return;
                    }
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .await;
                    served = true;
                }
            });
        }
    });
    let (lane, _stop) = gateway(node, LANE).await;
    let mut s = tokio::net::TcpStream::connect(&lane).await.unwrap();
    for _ in 0..2 {
        s.write_all(b"GET /e/x HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let got = read_until(&mut s, |got| got.ends_with(b"ok")).await;
        assert!(
            got.starts_with(b"HTTP/1.1 200 OK\r\n"),
            "{}",
            String::from_utf8_lossy(&got)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        taken.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "sent twice, once on a new connection"
    );
}

/// A connection is HTTP/2 from its first bytes or never: an HTTP/2 preface after a request the
/// lane served is no request (hyper answers it as HTTP/1.1), not a switch to HTTP/2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_preface_after_a_served_request_is_not_taken_for_http2() {
    let node = scripted_node(Arc::default()).await;
    let (lane, _stop) = gateway(node, LANE).await;
    let mut s = tokio::net::TcpStream::connect(&lane).await.unwrap();
    s.write_all(b"GET /e/length HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    read_until(&mut s, |got| got.ends_with(b"hello")).await;
    // The preface and an empty SETTINGS frame.
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut after = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut after)).await;
    // Nothing, or an HTTP/1.1 answer: never an HTTP/2 SETTINGS frame (type 4).
    assert!(
        after.is_empty() || after.starts_with(b"HTTP/1.1 4"),
        "{:?}",
        String::from_utf8_lossy(&after)
    );
}

/// How a [`counting_node`] treats a connection's requests after its first.
#[derive(Clone, Copy)]
enum Later {
    /// Answers them.
    Answer,
    /// Closes the connection without answering.
    Close,
    /// Sends part of an answer's head, then closes.
    CloseMidHead,
}

/// A node that answers `GET`s with `size` bytes of body and treats a connection's later
/// requests as `later` says; the number of connections it accepted.
async fn counting_node(
    size: usize,
    later: Later,
) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut first = true;
                while read_head(&mut s).await.is_some() {
                    match (first, later) {
                        (false, Later::Close) => return,
                        (false, Later::CloseMidHead) => {
                            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-").await;
                            return;
                        }
                        _ => {}
                    }
                    first = false;
                    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n");
                    let mut answer = head.into_bytes();
                    answer.resize(answer.len() + size, b'x');
                    if s.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// Sends `GET /e/x` on `s` and reads its answer (a `Content-Length` one) whole: its status.
async fn get_on(s: &mut tokio::net::TcpStream) -> String {
    s.write_all(b"GET /e/x HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    // The head, and how long the whole answer is once it came.
    let whole = |got: &[u8]| {
        let end = got.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        Some((head, end + 4 + length))
    };
    let got = read_until(s, |got| whole(got).is_some_and(|(_, len)| got.len() >= len)).await;
    let (head, _) = whole(&got).unwrap();
    head.lines().next().unwrap_or_default().to_string()
}

/// A node's kept-alive connection is used again whatever the size of the answer that came on
/// it (a read that fills its buffer exactly leaves the socket marked readable: not a sign of a
/// closed connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_alive_connections_are_used_again_after_answers_of_any_size() {
    // Bodies whose whole answer (a 41-byte head up to 9999 bytes, 42 above) is 8 KiB (the
    // first read's buffer) or 16 KiB exactly, and around them.
    for size in [1, 8150, 8151, 8152, 16342, 65536] {
        let (node, accepted) = counting_node(size, Later::Answer).await;
        let (lane, _stop) = gateway(node, LANE).await;
        let mut s = tokio::net::TcpStream::connect(&lane).await.unwrap();
        for _ in 0..5 {
            assert_eq!(get_on(&mut s).await, "http/1.1 200 ok", "{size}");
        }
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "{size}"
        );
    }
}

/// A node that closes a kept-alive connection (or breaks off an answer's head on it) as a
/// request comes: the request is sent again (on a new connection after the connection sat idle;
/// to another node at once, the failed node avoided from then on, as the hyper path does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_closing_kept_alive_connections_is_retried_and_avoided() {
    for later in [Later::Close, Later::CloseMidHead] {
        // One node, the connection idle 300 ms: sent again on a new one.
        let (node, accepted) = counting_node(2, later).await;
        let (lane, _stop) = gateway(node, LANE).await;
        let mut s = tokio::net::TcpStream::connect(&lane).await.unwrap();
        assert_eq!(get_on(&mut s).await, "http/1.1 200 ok");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(get_on(&mut s).await, "http/1.1 200 ok");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);

        // Two nodes, round robin, requests 20 ms apart: the failing node's request goes to the
        // other, and the failing node gets no more (no new connection to it).
        let (flaky, flaky_accepted) = counting_node(2, later).await;
        let (steady, _) = counting_node(2, Later::Answer).await;
        let (lane, _stop) = gateway_to(
            &[flaky, steady],
            &["--express-lane", "true", "--selector", "roundrobin"],
        )
        .await;
        let mut s = tokio::net::TcpStream::connect(&lane).await.unwrap();
        for i in 0..8 {
            assert_eq!(get_on(&mut s).await, "http/1.1 200 ok", "{i}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(flaky_accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}

/// A client that sends requests and then closes its side gets its answers (as from hyper).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_then_a_half_close_are_answered() {
    let node = scripted_node(Arc::default()).await;
    let (lane, _stop) = gateway(node, LANE).await;
    let mut s = tokio::net::TcpStream::connect(&lane).await.unwrap();
    s.write_all(
        b"GET /e/length HTTP/1.1\r\nHost: a\r\n\r\nGET /e/reason HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await
    .unwrap();
    s.shutdown().await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    let first = answer(&got, false);
    assert_eq!(
        first.status,
        "HTTP/1.1 200 OK",
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(first.body, b"hello");
}

/// Shutdown closes a connection whose next request has only begun to come (as hyper does): it
/// does not wait for the rest of the head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_a_head_begun_after_a_served_request() {
    let node = scripted_node(Arc::default()).await;
    let (lane, stop) = gateway(node, LANE).await;
    let mut s = tokio::net::TcpStream::connect(&lane).await.unwrap();
    s.write_all(b"GET /e/length HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    read_until(&mut s, |got| got.ends_with(b"hello")).await;
    s.write_all(b"GET /e/len").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = stop.send(());
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "still open 3 s after shutdown began (the head limit is 10 s)"
    );
}
