//! What the `rmicro api` process logs (at its default level) when a node fails in ways the
//! client sees only as a 504 or a response cut short.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{etcd_with_greeter, raw_get, register_node, GatewayProcess};

/// Waits up to 5 s for a stderr line of `gw` containing `text`.
fn logged(gw: &GatewayProcess, text: &str) -> bool {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        if gw.lines().iter().any(|l| l.contains(text)) {
            return true;
        }
        if Instant::now() > until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_node_and_a_cut_off_body_are_logged() {
    let (etcd, _greeter) = etcd_with_greeter("logs").await;
    // A node that promises 100 bytes, sends 10 and closes.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let short = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
            });
        }
    });
    register_node(&etcd, "go.micro.api.short", "short-1", &short).await;

    let gw = GatewayProcess::start(&etcd, &["--backend-timeout", "300ms"], &[]);
    let addr = gw.addr.clone();
    let (late, cut) = tokio::task::spawn_blocking(move || {
        (raw_get(&addr, "/greeter/slow"), raw_get(&addr, "/short/x"))
    })
    .await
    .unwrap();

    assert!(
        late.starts_with(b"HTTP/1.1 504"),
        "{}",
        String::from_utf8_lossy(&late)
    );
    assert!(
        logged(&gw, "backend did not answer in time"),
        "{:#?}",
        gw.lines()
    );

    // The head went out; the body stops at the 10 bytes the node sent.
    assert!(
        cut.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&cut)
    );
    assert!(
        cut.ends_with(b"0123456789"),
        "{}",
        String::from_utf8_lossy(&cut)
    );
    assert!(
        logged(&gw, "backend response body broke off"),
        "{:#?}",
        gw.lines()
    );
    // Naming the node.
    let lines = gw.lines();
    let line = lines
        .iter()
        .find(|l| l.contains("backend response body broke off"))
        .unwrap();
    assert!(line.contains("node=short-1"), "{line}");
}
