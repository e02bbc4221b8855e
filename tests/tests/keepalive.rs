//! HTTP/2 keepalive pings of the client and the server, counted on the wire by a proxy between
//! them: off by default, as in grpc, and the client's never more often than grpc-go servers
//! accept unless told so.

use std::net::SocketAddr;
use std::time::Duration;

use rmicro_runtime::{Client, Server};
use rmicro_tests::fixtures::go::micro::srv::user::{register_user_handler, Ping, UserClient};
use rmicro_tests::pings::PingCounter;
use rmicro_tests::user::Greeter;
use rmicro_tests::ServerGuard;

const QUICK: Duration = Duration::from_millis(100);
const HOLD: Duration = Duration::from_secs(1);

async fn user_server(keepalive: Option<Duration>) -> (SocketAddr, ServerGuard) {
    let mut server = Server::new();
    register_user_handler(&mut server, Greeter).unwrap();
    server.keepalive(keepalive);
    rmicro_tests::spawn(server).await
}

/// Opens a ping-pong stream that stays open (it never sends a ping), for `HOLD`.
async fn hold_a_stream(client: Client) {
    let user = UserClient::new("go.micro.srv.user", client);
    let response = tokio::time::timeout(
        Duration::from_secs(5),
        user.ping_pong(tokio_stream::pending::<Ping>()),
    )
    .await
    .expect("the stream opens")
    .unwrap();
    tokio::time::sleep(HOLD).await;
    drop(response);
}

#[tokio::test]
async fn client_keepalive_is_off_by_default_and_never_below_its_minimum() {
    let (addr, _server) = user_server(None).await;
    let addr = addr.to_string();

    let proxy = PingCounter::start(&addr).await;
    hold_a_stream(Client::with_address(&proxy.addr)).await;
    assert_eq!(proxy.from_client(), 0, "pings by default");

    // Every 100 ms, asked for without lowering the minimum: raised to 5 minutes.
    let proxy = PingCounter::start(&addr).await;
    hold_a_stream(
        Client::builder()
            .address(&proxy.addr)
            .keepalive(Some(QUICK))
            .build(),
    )
    .await;
    assert_eq!(
        proxy.from_client(),
        0,
        "pings more often than grpc-go servers accept"
    );

    // With the minimum lowered too: pings while the stream is open.
    let proxy = PingCounter::start(&addr).await;
    hold_a_stream(
        Client::builder()
            .address(&proxy.addr)
            .keepalive(Some(QUICK))
            .keepalive_min_interval(QUICK)
            .build(),
    )
    .await;
    let pings = proxy.from_client();
    assert!(
        (3..=20).contains(&pings),
        "{pings} pings in {HOLD:?} at one per {QUICK:?}"
    );
}

#[tokio::test]
async fn server_keepalive_is_off_by_default_and_pings_when_set() {
    let (addr, _server) = user_server(None).await;
    let proxy = PingCounter::start(&addr.to_string()).await;
    hold_a_stream(Client::with_address(&proxy.addr)).await;
    assert_eq!(proxy.from_server(), 0, "pings by default");

    let (addr, _server) = user_server(Some(QUICK)).await;
    let proxy = PingCounter::start(&addr.to_string()).await;
    hold_a_stream(Client::with_address(&proxy.addr)).await;
    let pings = proxy.from_server();
    assert!(
        (3..=20).contains(&pings),
        "{pings} pings in {HOLD:?} at one per {QUICK:?}"
    );
}
