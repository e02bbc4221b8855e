//! Stopping the `rmicro api` process: the first SIGINT or SIGTERM lets requests in flight finish
//! (and says so), a second one stops it at once.

mod common;

use std::time::{Duration, Instant};

use common::{etcd_with_greeter, GatewayProcess};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_stops_the_gateway_at_once() {
    let (etcd, _node) = etcd_with_greeter("signals").await;
    let mut gw = GatewayProcess::start(&etcd, &["--shutdown-timeout", "20s"], &[]);
    // A request the node answers after 3 s, in flight when the signals come.
    let addr = gw.addr.clone();
    let slow = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(&addr).unwrap();
        conn.write_all(b"GET /greeter/slow HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut answer = Vec::new();
        let _ = conn.read_to_end(&mut answer);
        answer
    });
    std::thread::sleep(Duration::from_millis(500));

    gw.signal("TERM");
    let said = Instant::now() + Duration::from_secs(5);
    while !gw.lines().iter().any(|l| l.contains("stopping")) && Instant::now() < said {
        std::thread::sleep(Duration::from_millis(20));
    }
    let lines = gw.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("stopping")
                && l.contains("a second SIGINT or SIGTERM stops at once")),
        "{lines:#?}"
    );
    // The request in flight holds the gateway.
    std::thread::sleep(Duration::from_millis(300));
    assert!(gw.child.try_wait().unwrap().is_none(), "{:#?}", gw.lines());

    gw.signal("INT");
    let sent = Instant::now();
    let status = loop {
        if let Some(status) = gw.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(2),
            "still running after a second signal: {:#?}",
            gw.lines()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "{status}");
    let lines = gw.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("second signal: stopped at once")),
        "{lines:#?}"
    );
    // The request in flight was cut off, not answered.
    let answer = slow.join().unwrap();
    assert!(
        !answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}
