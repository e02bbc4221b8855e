//! `rmicro api --access-log`, the real binary: one line per request on stderr, with what an
//! operator needs and none of the request's secrets; none without the flag.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rmicro_tests::http;

mod common;
use common::{etcd_with_greeter, GatewayProcess as Gateway};

/// The access log lines of `gw` so far.
fn access(gw: &Gateway) -> Vec<String> {
    gw.lines()
        .into_iter()
        .filter(|l| l.contains("rmicro::access"))
        .collect()
}

/// Waits for an access log line of `gw` naming `path` (up to 5 s) and returns it.
fn line_for(gw: &Gateway, path: &str) -> String {
    let field = format!("path={path} ");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(line) = access(gw).into_iter().find(|l| l.contains(&field)) {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "no access log line for {path}; stderr: {:#?}",
            gw.lines()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
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
    let line = line_for(&gw, "/greeter/hi");
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
    let line = line_for(&gw, "/greeter/denied");
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
    let line = line_for(&gw, "/nobody/here");
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
    let line = line_for(&gw, "/greeter/slow");
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
    let line = line_for(&gw, "/nobody/there");
    assert_eq!(field(&line, "method"), "HEAD", "{line}");
    assert_eq!(field(&line, "status"), "404", "{line}");
    assert_eq!(field(&line, "complete"), "true", "{line}");

    // One the gateway refuses before any plugin sees it (a dot segment): logged too.
    let addr = gw.addr.clone();
    let dots = tokio::task::spawn_blocking(move || http::get(&addr, "/greeter/../admin"))
        .await
        .unwrap();
    assert_eq!(dots.status, 400);
    let line = line_for(&gw, "/greeter/../admin");
    assert_eq!(field(&line, "status"), "400", "{line}");
    assert_eq!(field(&line, "bytes"), dots.body.len().to_string(), "{line}");
    assert_eq!(field(&line, "complete"), "true", "{line}");

    let all = gw.log.lock().unwrap().join("\n");
    assert!(!all.contains("s3cr3t-token"), "a token was logged:\n{all}");
    assert!(
        !all.contains("k3y-in-query"),
        "the query was logged:\n{all}"
    );
    assert_eq!(access(&gw).len(), 6, "one line per request:\n{all}");
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
    assert!(access(&gw).is_empty(), "{all}");
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
