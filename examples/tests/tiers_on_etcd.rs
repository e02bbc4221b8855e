//! The seed's three tiers as separate processes on a real etcd: srv (gRPC), API (axum) and the
//! custom gateway binary with its own plugin. HTTP requests through the gateway are answered by
//! the srv service found by name; SIGTERM deregisters every node.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rmicro_tests::etcd::Etcd;
use rmicro_tests::http;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(bin: &str, etcd: &Etcd, extra: &[&str]) -> (Proc, String) {
    let mut child = Command::new(bin)
        .args([
            "--registry",
            "etcd",
            "--registry-address",
            &etcd.client_addr,
            "--register-interval",
            "1s",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = rmicro_tests::process::listening_address(&mut child);
    (Proc(child), addr)
}

fn terminate(p: &mut Proc) {
    Command::new("kill")
        .args(["-TERM", &p.0.id().to_string()])
        .status()
        .unwrap();
    let status = p.0.wait().unwrap();
    assert!(status.success(), "graceful exit: {status}");
}

#[test]
fn api_calls_srv_by_name_through_etcd() {
    let etcd = Etcd::start("tiers");
    let (mut srv, _) = spawn(env!("CARGO_BIN_EXE_user-srv"), &etcd, &[]);
    let (mut api, api_addr) = spawn(
        env!("CARGO_BIN_EXE_user-api"),
        &etcd,
        &["--address", "127.0.0.1:0"],
    );

    // Both register; the API answers once it has seen the srv node through its watch.
    let started = Instant::now();
    let reply = loop {
        let r = http::get(&api_addr, "/user/call?name=John");
        if r.status == 200 || started.elapsed() > Duration::from_secs(10) {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body, r#"{"msg":"Hello John"}"#);

    let post = http::request(
        &api_addr,
        "POST",
        "/user/call",
        &[("Content-Type", "application/json")],
        r#"{"name":"Ada"}"#,
    );
    assert_eq!(post.body, r#"{"msg":"Hello Ada"}"#);

    let bad = http::get(&api_addr, "/user/call?name=");
    assert_eq!(bad.status, 400);
    assert_eq!(
        bad.body,
        r#"{"id":"go.micro.client","code":400,"detail":"name must not be empty","status":"Bad Request"}"#
    );

    let keys: Vec<String> = etcd
        .get_prefix("/micro/registry/")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(
        keys.iter()
            .any(|k| k.starts_with("/micro/registry/go.micro.srv.user/")),
        "{keys:?}"
    );
    assert!(
        keys.iter()
            .any(|k| k.starts_with("/micro/registry/go.micro.api.user/")),
        "{keys:?}"
    );

    // The custom gateway in front, with its request-id plugin turned on by env.
    let mut gw = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args([
            "api",
            "--address",
            "127.0.0.1:0",
            "--registry",
            "etcd",
            "--registry-address",
            &etcd.client_addr,
        ])
        .env("MICRO_API_REQUEST_ID", "true")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let gw_addr = rmicro_tests::process::listening_address(&mut gw);
    let mut gw = Proc(gw);
    let started = Instant::now();
    let through = loop {
        let r = http::get(&gw_addr, "/user/call?name=Grace");
        if r.status == 200 || started.elapsed() > Duration::from_secs(10) {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(through.status, 200, "{}", through.body);
    assert_eq!(through.body, r#"{"msg":"Hello Grace"}"#);
    assert_eq!(
        through.header("x-request-id").map(str::len),
        Some(36),
        "the custom plugin tagged it"
    );
    let tagged = http::request(
        &gw_addr,
        "GET",
        "/user/call?name=x",
        &[("x-request-id", "abc")],
        "",
    );
    assert_eq!(tagged.header("x-request-id"), Some("abc"));
    assert_eq!(http::get(&gw_addr, "/nosuch/x").status, 404);

    terminate(&mut gw);
    terminate(&mut api);
    terminate(&mut srv);
    assert!(
        etcd.get_prefix("/micro/registry/").is_empty(),
        "both deregistered on SIGTERM"
    );
}

/// The API tier started on an address in use says which, as the srv tier and the gateway do.
#[test]
fn the_api_tier_names_the_address_it_cannot_listen_on() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_user-api"))
        .args(["--address", &address])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("could not listen on {address}")),
        "{stderr}"
    );
}

/// A srv node that never reached its registry says, when stopped, that its registration never
/// succeeded, not that deregistering failed.
#[test]
fn a_node_stopped_before_it_ever_registered_says_so() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_user-srv"))
        .args(["--registry", "etcd", "--registry-address", &closed])
        .args(["--registry-timeout", "1s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    rmicro_tests::process::listening_address(&mut child);
    std::thread::sleep(Duration::from_millis(500));
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("registration never succeeded"), "{stderr}");
    assert!(!stderr.contains("deregistering failed"), "{stderr}");
}
