//! Calls by service name through a registry: selection, retries, deadline and metadata
//! propagation across two hops, go-micro errors end to end (memory registry, real gRPC).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rmicro_runtime::errors::Error;
use rmicro_runtime::registry::{MemoryRegistry, Node, Registry, Service as Record};
use rmicro_runtime::selector::RoundRobin;
use rmicro_runtime::{Client, Code, Request, RunningService, Service};
use rmicro_tests::fixtures::go::micro::srv::user::{
    register_user_handler, CallRequest, StreamRequest, UserClient,
};
use rmicro_tests::fixtures::rmicro::test::hop::{register_hop_handler, HopClient, HopRequest};
use rmicro_tests::hop::HopNode;
use rmicro_tests::user::Greeter;

/// Starts a Hop node registered as `service` in `registry`, relaying to `next`.
async fn hop(
    registry: &Arc<dyn Registry>,
    service: &str,
    name: &str,
    next: Option<&str>,
) -> RunningService {
    let client = Client::new(Arc::clone(registry));
    let mut svc = Service::builder(service)
        .registry(Arc::clone(registry))
        .build();
    let node = HopNode {
        name: name.into(),
        next: next.map(|n| (n.to_string(), client)),
    };
    register_hop_handler(svc.server_mut(), node).unwrap();
    svc.start().await.unwrap()
}

async fn wait_for_nodes(registry: &Arc<dyn Registry>, service: &str, n: usize) {
    for _ in 0..100 {
        let nodes: usize = registry
            .get_service(service)
            .await
            .unwrap()
            .iter()
            .map(|s| s.nodes.len())
            .sum();
        if nodes >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{service} never reached {n} nodes");
}

#[tokio::test]
async fn metadata_and_deadline_propagate_across_two_hops() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let a = hop(&registry, "hop.a", "a", Some("hop.b")).await;
    let b = hop(&registry, "hop.b", "b", None).await;
    wait_for_nodes(&registry, "hop.b", 1).await;

    let client = Client::new(Arc::clone(&registry));
    let mut request = Request::new(HopRequest::default());
    request
        .metadata_mut()
        .insert("x-trace-id", "trace-42".parse().unwrap());
    request.set_timeout(Duration::from_millis(1500));
    let reply = HopClient::new("hop.a", client)
        .relay(request)
        .await
        .unwrap()
        .into_inner();

    assert_eq!(reply.seen.len(), 2);
    assert_eq!(
        (reply.seen[0].node.as_str(), reply.seen[0].trace_id.as_str()),
        ("a", "trace-42")
    );
    assert_eq!(
        (reply.seen[1].node.as_str(), reply.seen[1].trace_id.as_str()),
        ("b", "trace-42")
    );
    let (ra, rb) = (reply.seen[0].remaining_ms, reply.seen[1].remaining_ms);
    assert!(ra > 0 && ra <= 1500, "hop a saw {ra} ms left");
    assert!(
        rb > 0 && rb <= ra,
        "hop b saw {rb} ms left, after a's {ra}: the deadline shrinks"
    );
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test]
async fn a_timeout_cuts_every_hop_short() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let _a = hop(&registry, "hop.a", "a", Some("hop.b")).await;
    let _b = hop(&registry, "hop.b", "b", None).await;
    wait_for_nodes(&registry, "hop.b", 1).await;

    let client = Client::builder()
        .registry(Arc::clone(&registry))
        .request_timeout(Some(Duration::from_millis(300)))
        .build();
    let started = Instant::now();
    let err = HopClient::new("hop.a", client)
        .relay(HopRequest {
            sleep_ms: 3000,
            fail_code: 0,
        })
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(
        took < Duration::from_millis(1500),
        "the caller waited {took:?} for a 300 ms timeout"
    );
}

#[tokio::test]
async fn a_handler_error_arrives_with_code_and_detail_across_hops() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let _a = hop(&registry, "hop.a", "a", Some("hop.b")).await;
    let _b = hop(&registry, "hop.b", "b", None).await;
    wait_for_nodes(&registry, "hop.b", 1).await;

    let client = Client::new(Arc::clone(&registry));
    let status = HopClient::new("hop.a", client)
        .relay(HopRequest {
            sleep_ms: 0,
            fail_code: 409,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    let err = Error::from_status(&status);
    assert_eq!(err, Error::new("b", "the last hop failed on purpose", 409));
    assert_eq!(err.status, "Conflict");
}

#[tokio::test]
async fn round_robin_alternates_between_two_nodes_and_random_spreads() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let _one = hop(&registry, "hop.x", "one", None).await;
    let _two = hop(&registry, "hop.x", "two", None).await;
    wait_for_nodes(&registry, "hop.x", 2).await;

    let rr = Client::builder()
        .registry(Arc::clone(&registry))
        .selector(RoundRobin::default())
        .build();
    let hop_x = HopClient::new("hop.x", rr);
    let mut names = Vec::new();
    for _ in 0..6 {
        names.push(
            hop_x
                .relay(HopRequest::default())
                .await
                .unwrap()
                .into_inner()
                .seen[0]
                .node
                .clone(),
        );
    }
    for pair in names.windows(2) {
        assert_ne!(pair[0], pair[1], "round robin alternates: {names:?}");
    }

    let random = HopClient::new("hop.x", Client::new(Arc::clone(&registry)));
    let mut one = 0;
    for _ in 0..200 {
        if random
            .relay(HopRequest::default())
            .await
            .unwrap()
            .into_inner()
            .seen[0]
            .node
            == "one"
        {
            one += 1;
        }
    }
    assert!(
        (40..=160).contains(&one),
        "random picked `one` {one} times of 200"
    );
}

/// Registers a node of `go.micro.srv.user` at `address` by hand (no server of rmicro's there).
async fn register_user_node(registry: &Arc<dyn Registry>, id: &str, address: &str) {
    let record = Record {
        name: "go.micro.srv.user".into(),
        version: "latest".into(),
        nodes: vec![Node {
            id: id.into(),
            address: address.into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    registry
        .register(&record, Duration::from_secs(60))
        .await
        .unwrap();
}

/// A loopback address nothing listens on (a port bound and let go).
fn closed_address() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn a_node_with_a_closed_port_is_retried_on_the_other_node() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let mut svc = Service::builder("go.micro.srv.user")
        .registry(Arc::clone(&registry))
        .build();
    register_user_handler(svc.server_mut(), Greeter).unwrap();
    let live = svc.start().await.unwrap();
    // A second node whose port nothing listens on.
    register_user_node(&registry, "dead", &closed_address()).await;
    wait_for_nodes(&registry, "go.micro.srv.user", 2).await;

    let client = Client::builder()
        .registry(Arc::clone(&registry))
        .selector(RoundRobin::default())
        .build();
    let user = UserClient::new("go.micro.srv.user", client);
    for i in 0..10 {
        let reply = user
            .call(CallRequest {
                name: format!("n{i}"),
            })
            .await
            .unwrap();
        assert_eq!(reply.into_inner().msg, format!("Hello n{i}"));
    }
    // Streams too: a stream that never reached a node is opened on another.
    for _ in 0..4 {
        let mut stream = user
            .stream(StreamRequest { count: 3 })
            .await
            .unwrap()
            .into_inner();
        let mut counts = Vec::new();
        while let Some(item) = stream.message().await.unwrap() {
            counts.push(item.count);
        }
        assert_eq!(counts, [0, 1, 2]);
    }

    // With retries off too: a node no connection could be opened to was sent nothing, so
    // going to another is no retry (as grpc-go never picks a node it cannot connect to while
    // another is up).
    let no_retry = Client::builder()
        .registry(Arc::clone(&registry))
        .selector(RoundRobin::default())
        .retries(0)
        .build();
    let user = UserClient::new("go.micro.srv.user", no_retry);
    let results: Vec<_> = futures_results(&user).await;
    assert_eq!(results, [Ok(()); 4]);
    // With only the dead node left, its failure reaches the caller as Unavailable.
    live.stop().await.unwrap();
    wait_for_nodes(&registry, "go.micro.srv.user", 1).await;
    let results: Vec<_> = futures_results(&user).await;
    assert_eq!(results, [Err(Code::Unavailable); 4]);
}

async fn futures_results(user: &UserClient) -> Vec<Result<(), Code>> {
    let mut out = Vec::new();
    for _ in 0..4 {
        out.push(
            user.call(CallRequest { name: "x".into() })
                .await
                .map(|_| ())
                .map_err(|s| s.code()),
        );
    }
    out
}

#[tokio::test]
async fn a_node_that_accepts_and_stays_silent_is_given_up_and_then_avoided() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let live = user_node(&registry, "127.0.0.1:0").await;
    // A node that takes connections and never says a word of HTTP/2 (hung, or no gRPC server).
    let silent = rmicro_tests::silent_listener().await;
    register_user_node(&registry, "silent", &silent).await;
    wait_for_nodes(&registry, "go.micro.srv.user", 2).await;
    // The default request timeout (5 s), as long as the connect timeout.
    let client = Client::builder()
        .registry(Arc::clone(&registry))
        .selector(RoundRobin::default())
        .build();
    let user = UserClient::new("go.micro.srv.user", client);
    // A call that meets the silent node goes to the live one once half of its time is gone
    // (its connection still opening). The node is met at most twice (round robin: every
    // other call), as the second call to meet it waits until its connection is given up (the
    // connect time, 5 s, after the first); from then on it is not picked, and calls are quick.
    for i in 0..8 {
        let started = Instant::now();
        let reply = user
            .call(CallRequest {
                name: format!("n{i}"),
            })
            .await
            .unwrap_or_else(|status| panic!("call {i}: {status:?}"));
        assert_eq!(reply.into_inner().msg, format!("Hello n{i}"));
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "call {i} took {:?}",
            started.elapsed()
        );
        if i >= 4 {
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "call {i} took {:?}: the silent node was picked again",
                started.elapsed()
            );
        }
    }
    live.stop().await.unwrap();
}

#[tokio::test]
async fn graceful_stop_deregisters_at_once_and_unknown_services_are_unavailable() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let running = hop(&registry, "hop.gone", "g", None).await;
    wait_for_nodes(&registry, "hop.gone", 1).await;
    let node = running.record().nodes[0].clone();
    assert!(node.id.starts_with("hop.gone-"));
    assert_eq!(node.address, running.local_addr().to_string());
    running.stop().await.unwrap();
    assert!(registry.get_service("hop.gone").await.unwrap().is_empty());

    let err = HopClient::new("hop.gone", Client::new(Arc::clone(&registry)))
        .relay(HopRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(
        err.message(),
        "service `hop.gone` has no nodes in the memory registry"
    );
}

/// Starts the user service on `address`, in `registry`.
async fn user_node(registry: &Arc<dyn Registry>, address: &str) -> RunningService {
    let mut svc = Service::builder("go.micro.srv.user")
        .registry(Arc::clone(registry))
        .address(address)
        .build();
    register_user_handler(svc.server_mut(), Greeter).unwrap();
    let running = svc.start().await.unwrap();
    wait_for_nodes(registry, "go.micro.srv.user", 1).await;
    running
}

#[tokio::test]
async fn a_node_restarted_on_its_address_is_reached_again_by_the_same_client() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let first = user_node(&registry, "127.0.0.1:0").await;
    let address = first.local_addr().to_string();
    let user = UserClient::new("go.micro.srv.user", Client::new(Arc::clone(&registry)));
    let call = |name: &str| {
        let user = user.clone();
        let name = name.to_string();
        async move {
            user.call(CallRequest { name })
                .await
                .map(|r| r.into_inner().msg)
        }
    };
    assert_eq!(call("one").await.unwrap(), "Hello one");

    // Gone: deregistered, connection closed. The client's cached nodes follow the registry.
    first.stop().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match call("gap").await {
            Err(status) if status.code() == Code::Unavailable => break,
            other => assert!(
                Instant::now() < deadline,
                "calls still answered after the node stopped: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Back on the same address: the client opens a new connection to it.
    let second = user_node(&registry, &address).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match call("two").await {
            Ok(msg) => {
                assert_eq!(msg, "Hello two");
                break;
            }
            Err(status) => assert!(
                Instant::now() < deadline,
                "the restarted node was never reached: {status:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    second.stop().await.unwrap();
}

#[tokio::test]
async fn a_node_that_vanished_without_deregistering_fails_fast_and_recovers() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    // Registered under the node's real address, but its server is stopped behind the
    // registry's back (the record is written again by hand after the graceful stop).
    let node = user_node(&registry, "127.0.0.1:0").await;
    let address = node.local_addr().to_string();
    let record = node.record().clone();
    let user = UserClient::new("go.micro.srv.user", Client::new(Arc::clone(&registry)));
    user.call(CallRequest { name: "a".into() }).await.unwrap();
    node.stop().await.unwrap();
    registry
        .register(&record, Duration::from_secs(60))
        .await
        .unwrap();

    let started = Instant::now();
    let err = user
        .call(CallRequest { name: "b".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains(&address), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a refused connection took {:?}",
        started.elapsed()
    );

    let back = user_node(&registry, &address).await;
    let reply = user.call(CallRequest { name: "c".into() }).await.unwrap();
    assert_eq!(reply.into_inner().msg, "Hello c");
    back.stop().await.unwrap();
}

/// Always picks the first node whose id is in `prefer` (in that order), if there is one.
struct Stubborn {
    prefer: &'static [&'static str],
}

impl rmicro_runtime::selector::Selector for Stubborn {
    fn select(&self, _service: &str, nodes: &[Node]) -> usize {
        self.prefer
            .iter()
            .find_map(|id| nodes.iter().position(|n| n.id == *id))
            .unwrap_or(0)
    }
}

#[tokio::test]
async fn a_retry_goes_to_a_node_that_has_not_failed_in_this_call() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let live = user_node(&registry, "127.0.0.1:0").await;
    // A node nothing listens on, and one whose address no connection can be opened to.
    let closed = closed_address();
    for (id, address) in [("dead", closed.as_str()), ("bad", "no-port")] {
        register_user_node(&registry, id, address).await;
    }
    wait_for_nodes(&registry, "go.micro.srv.user", 3).await;

    // A selector that picks the bad node, then the dead one, whenever they are offered: each
    // call still reaches the live node with the one retry, as the retry leaves out the nodes
    // that failed in this call (the bad address does not use up the retry).
    let client = Client::builder()
        .registry(Arc::clone(&registry))
        .selector(Stubborn {
            prefer: &["bad", "dead"],
        })
        .retries(1)
        .build();
    let user = UserClient::new("go.micro.srv.user", client);
    for i in 0..5 {
        let reply = user
            .call(CallRequest {
                name: format!("n{i}"),
            })
            .await
            .unwrap_or_else(|s| panic!("call {i}: {s:?}"));
        assert_eq!(reply.into_inner().msg, format!("Hello n{i}"));
    }
    live.stop().await.unwrap();
}

/// Two nodes down at once (killed, their records not yet expired) and one up: every call
/// reaches the live node, the first ones by trying each dead node once (nothing was sent to
/// them, so that uses up no retry), the next ones by leaving out the nodes that just failed,
/// and again once those marks run out together.
#[tokio::test]
async fn calls_reach_the_live_node_while_two_others_are_down() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let live = user_node(&registry, "127.0.0.1:0").await;
    for id in ["dead1", "dead2"] {
        register_user_node(&registry, id, &closed_address()).await;
    }
    wait_for_nodes(&registry, "go.micro.srv.user", 3).await;
    // Picks a dead node whenever one is offered.
    let client = Client::builder()
        .registry(Arc::clone(&registry))
        .selector(Stubborn {
            prefer: &["dead1", "dead2"],
        })
        .retries(1)
        .build();
    let user = UserClient::new("go.micro.srv.user", client);
    for round in 0..2 {
        for i in 0..5 {
            let reply = user
                .call(CallRequest {
                    name: format!("n{i}"),
                })
                .await
                .unwrap_or_else(|s| panic!("round {round}, call {i}: {s:?}"));
            assert_eq!(reply.into_inner().msg, format!("Hello n{i}"));
        }
        if round == 0 {
            // The dead nodes' marks run out.
            tokio::time::sleep(Duration::from_millis(5200)).await;
        }
    }
    live.stop().await.unwrap();
}

/// Nodes marked unreachable a moment ago that are back up, and the one node not marked down:
/// with retries off, a call that finds that node refusing still goes to the others (nothing was
/// sent), not only to the nodes the first pick offered.
#[tokio::test]
async fn a_call_passes_a_refusing_node_for_nodes_marked_down_that_are_back() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let (a, b) = (closed_address(), closed_address());
    register_user_node(&registry, "a", &a).await;
    register_user_node(&registry, "b", &b).await;
    wait_for_nodes(&registry, "go.micro.srv.user", 2).await;
    let client = Client::builder()
        .registry(Arc::clone(&registry))
        .selector(Stubborn {
            prefer: &["a", "b", "c"],
        })
        .retries(0)
        .build();
    let user = UserClient::new("go.micro.srv.user", client);
    // Both down: the call fails, and both are marked unreachable for 5 s.
    let failed = user.call(CallRequest { name: "x".into() }).await;
    assert_eq!(failed.map_err(|s| s.code()).err(), Some(Code::Unavailable));
    // Both come back (on the same ports), and a third node, down, is registered.
    let mut servers = Vec::new();
    for address in [&a, &b] {
        let mut server = rmicro_runtime::Server::new();
        register_user_handler(&mut server, Greeter).unwrap();
        let bound = server.bind(address.as_str()).await.unwrap();
        servers.push(tokio::spawn(bound.serve()));
    }
    register_user_node(&registry, "c", &closed_address()).await;
    wait_for_nodes(&registry, "go.micro.srv.user", 3).await;
    let reply = user
        .call(CallRequest { name: "y".into() })
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    assert_eq!(reply.into_inner().msg, "Hello y");
    for server in servers {
        server.abort();
    }
}

/// An advertised address callers could not connect to (a host alone, as `MICRO_SERVER_ADVERTISE`
/// is easily set, an empty host, a path) stops the service from starting with an error that
/// says what to give, instead of registering a node every call to it fails on.
#[tokio::test]
async fn an_advertised_address_callers_cannot_use_is_refused_at_start() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    for (advertise, reason) in [
        ("user-srv.internal", "no port (expected host:port)"),
        ("", "empty string (expected host:port)"),
        (":8080", "no host (expected host:port)"),
        (
            "10.0.0.5:9090/grpc",
            "a node address has no path, but this one has `/grpc`",
        ),
    ] {
        let mut svc = Service::builder("go.micro.srv.user")
            .registry(Arc::clone(&registry))
            .advertise(advertise)
            .build();
        register_user_handler(svc.server_mut(), Greeter).unwrap();
        let err = match svc.start().await {
            Ok(running) => {
                running.stop().await.unwrap();
                panic!("`{advertise}` was registered");
            }
            Err(err) => err.to_string(),
        };
        assert!(
            err.starts_with(&format!(
                "cannot register `{advertise}` as this node's address: {reason}; advertise \
                 host:port, e.g. 10.0.0.5:"
            )) && err.ends_with(" (--server-advertise, MICRO_SERVER_ADVERTISE)"),
            "{advertise:?}: {err}"
        );
    }
    assert!(registry.list_services().await.unwrap().is_empty());

    // Addresses the client takes are registered as given.
    for advertise in [
        "user-srv.internal:9090",
        "[::1]:9090",
        "http://10.0.0.5:9090",
    ] {
        let mut svc = Service::builder("go.micro.srv.user")
            .registry(Arc::clone(&registry))
            .advertise(advertise)
            .build();
        register_user_handler(svc.server_mut(), Greeter).unwrap();
        let running = svc.start().await.unwrap();
        assert_eq!(running.record().nodes[0].address, advertise);
        running.stop().await.unwrap();
    }
}
