//! A call whose deadline has passed fails at once with `DeadlineExceeded`, and nothing of it
//! reaches the server (as grpc-go fails it): each of the four kinds of call, with the deadline
//! the request asked for or the one carried from the call being served, and with one that runs
//! out between the client's first look at it and the moment the request would be sent.
//! A `grpc-timeout` set by hand that no server could read is refused unsent too.

use std::time::Instant;

use rmicro_runtime::context::{self, CallContext};
use rmicro_runtime::{Client, Code, Request, Server, Status};
use rmicro_tests::fixtures::rmicro::test::kitchen::{
    register_kitchen_handler, GetRequest, Item, KitchenClient, Shelf,
};
use rmicro_tests::kitchen::Kitchen;
use rmicro_tests::pings::PingCounter;
use rmicro_tests::{spawn, ServerGuard};

/// A kitchen server behind a proxy that counts the requests reaching it, and a client of it
/// whose connection is already open: a request handed to it goes straight onto the wire.
async fn counted_kitchen() -> (KitchenClient, PingCounter, ServerGuard) {
    let mut server = Server::new();
    register_kitchen_handler(&mut server, Kitchen).unwrap();
    let (addr, guard) = spawn(server).await;
    let proxy = PingCounter::start(&addr.to_string()).await;
    let kitchen = KitchenClient::new("kitchen", Client::with_address(proxy.addr.clone()));
    kitchen.get(GetRequest::default()).await.unwrap();
    assert_eq!(proxy.requests(), 1, "the call that opened the connection");
    (kitchen, proxy, guard)
}

/// `message` with `grpc-timeout: timeout`, when given.
fn timed<T>(message: T, timeout: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(timeout) = timeout {
        request
            .metadata_mut()
            .insert("grpc-timeout", timeout.parse().unwrap());
    }
    request
}

/// Makes one call of each kind (unary, server, client and bidirectional streaming), each with
/// `grpc-timeout: timeout` when given, and returns how each failed.
async fn call_every_kind(kitchen: &KitchenClient, timeout: Option<&str>) -> Vec<Status> {
    let items = || tokio_stream::iter([Item::default(), Item::default()]);
    vec![
        kitchen
            .get(timed(GetRequest::default(), timeout))
            .await
            .expect_err("unary"),
        kitchen
            .list(timed(Shelf::default(), timeout))
            .await
            .expect_err("server streaming"),
        kitchen
            .upload(timed(items(), timeout))
            .await
            .expect_err("client streaming"),
        kitchen
            .chat(timed(items(), timeout))
            .await
            .expect_err("bidirectional streaming"),
    ]
}

/// Each status is `DeadlineExceeded` saying the deadline passed before the call was sent.
fn assert_not_sent(case: &str, statuses: &[Status]) {
    assert_eq!(statuses.len(), 4);
    for status in statuses {
        assert_eq!(status.code(), Code::DeadlineExceeded, "{case}: {status:?}");
        assert!(
            status.message().contains("passed before the call was sent"),
            "{case}: {status:?}"
        );
    }
}

/// After the calls that must not have been sent, one that is: the server saw it alone. (It goes
/// on the same connection after them, so any of theirs that went out is counted by then.)
async fn assert_only_the_next_call_arrives(kitchen: &KitchenClient, proxy: &PingCounter) {
    kitchen
        .get(GetRequest {
            id: 7,
            ..Default::default()
        })
        .await
        .expect("a call with time left is sent as ever");
    assert_eq!(
        proxy.requests(),
        2,
        "the server saw more than the call that opened the connection and this one: calls out \
         of time reached it"
    );
}

#[tokio::test]
async fn a_call_whose_own_deadline_passed_is_not_sent() {
    let (kitchen, proxy, _guard) = counted_kitchen().await;
    // `0n`: what tonic's `Request::set_timeout(Duration::ZERO)` writes.
    let statuses = call_every_kind(&kitchen, Some("0n")).await;
    assert_not_sent("own deadline of 0", &statuses);
    assert_eq!(
        statuses[0].message(),
        "the deadline of the call to `kitchen` /rmicro.test.kitchen.Kitchen/Get passed before \
         the call was sent"
    );
    assert_only_the_next_call_arrives(&kitchen, &proxy).await;
}

#[tokio::test]
async fn a_call_whose_carried_deadline_passed_is_not_sent() {
    let (kitchen, proxy, _guard) = counted_kitchen().await;
    // As a handler serving a call whose caller's deadline is over.
    let served = CallContext {
        deadline: Some(Instant::now()),
        metadata: Default::default(),
    };
    let statuses = context::scope(served, call_every_kind(&kitchen, None)).await;
    assert_not_sent("carried deadline", &statuses);
    assert_only_the_next_call_arrives(&kitchen, &proxy).await;
}

/// A nanosecond is left when the client first looks at the deadline, and none by the time the
/// request would go out: it is not sent (it used to go, saying `1m`, a millisecond, left).
#[tokio::test]
async fn a_call_whose_deadline_passes_before_it_is_sent_is_not_sent() {
    let (kitchen, proxy, _guard) = counted_kitchen().await;
    let statuses = call_every_kind(&kitchen, Some("1n")).await;
    assert_not_sent("1 ns deadline", &statuses);
    let address = &proxy.addr;
    assert_eq!(
        statuses[0].message(),
        format!("the call's deadline passed before the call was sent to {address}")
    );
    assert_only_the_next_call_arrives(&kitchen, &proxy).await;
}

/// A `grpc-timeout` put in the metadata by hand that is no gRPC timeout fails the call at once
/// with `InvalidArgument` saying so, for every kind of call, and nothing is sent.
#[tokio::test]
async fn a_hand_set_grpc_timeout_that_is_no_timeout_is_refused_unsent() {
    let (kitchen, proxy, _guard) = counted_kitchen().await;
    for bad in ["soon", "5", "123456789m", "5x"] {
        let statuses = call_every_kind(&kitchen, Some(bad)).await;
        assert_eq!(statuses.len(), 4);
        for status in &statuses {
            assert_eq!(status.code(), Code::InvalidArgument, "{bad}: {status:?}");
            assert!(
                status.message().contains("not a gRPC timeout") && status.message().contains(bad),
                "{bad}: {status:?}"
            );
        }
    }
    assert_only_the_next_call_arrives(&kitchen, &proxy).await;
}
