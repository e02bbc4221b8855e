//! Generated handlers served over loopback, called by generated clients: all four streaming kinds.

use rmicro_runtime::{Client, Code, Request, Response, ResponseStream, Server, Status, Streaming};
use rmicro_tests::fixtures::go::micro::srv::user::{
    register_user_handler, CallRequest, CallResponse, Ping, Pong, StreamRequest, StreamResponse,
    UserClient, UserHandler, USER_ENDPOINTS, USER_SERVICE_NAME,
};
use rmicro_tests::fixtures::rmicro::test::kitchen::{
    self as kitchen, register_kitchen_handler, GetRequest, Item, KitchenClient, Shelf,
};
use rmicro_tests::kitchen::Kitchen;
use rmicro_tests::user::Greeter;
use rmicro_tests::{spawn, ServerGuard};
use tokio_stream::StreamExt;

async fn user_server() -> (UserClient, ServerGuard) {
    user_server_with(Greeter).await
}

/// A server of `handler` on loopback, and a client calling it by address.
async fn user_server_with(handler: impl UserHandler) -> (UserClient, ServerGuard) {
    let mut server = Server::new();
    register_user_handler(&mut server, handler).unwrap();
    let (addr, guard) = spawn(server).await;
    let client = UserClient::new("go.micro.srv.user", Client::with_address(addr.to_string()));
    (client, guard)
}

#[tokio::test]
async fn unary_call_and_error_status() {
    let (user, _guard) = user_server().await;
    let reply = user
        .call(CallRequest { name: "Ada".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.msg, "Hello Ada");

    let err = user.call(CallRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "name must not be empty");
}

#[tokio::test]
async fn server_streaming_call() {
    let (user, _guard) = user_server().await;
    let stream = user
        .stream(StreamRequest { count: 5 })
        .await
        .unwrap()
        .into_inner();
    let counts: Vec<i64> = stream.map(|r| r.unwrap().count).collect().await;
    assert_eq!(counts, vec![0, 1, 2, 3, 4]);
}

#[tokio::test]
async fn bidirectional_streaming_call() {
    let (user, _guard) = user_server().await;
    let pings = tokio_stream::iter((1..=3).map(|stroke| Ping { stroke }));
    let pongs = user.ping_pong(pings).await.unwrap().into_inner();
    let strokes: Vec<i64> = pongs.map(|r| r.unwrap().stroke).collect().await;
    assert_eq!(strokes, vec![1, 2, 3]);
}

#[tokio::test]
async fn endpoint_metadata_reaches_the_server() {
    let mut server = Server::new();
    register_user_handler(&mut server, Greeter).unwrap();
    assert_eq!(server.services()[0].name, USER_SERVICE_NAME);
    assert_eq!(server.services()[0].endpoints, USER_ENDPOINTS);
    let names: Vec<&str> = USER_ENDPOINTS.iter().map(|e| e.name).collect();
    assert_eq!(names, ["User.Call", "User.Stream", "User.PingPong"]);
    let err = register_user_handler(&mut server, Greeter).unwrap_err();
    assert_eq!(
        err.to_string(),
        "service `go.micro.srv.user.User` is already registered on this server; register each handler once"
    );
}

#[tokio::test]
async fn all_four_kinds_on_the_kitchen_service() {
    let mut server = Server::new();
    register_kitchen_handler(&mut server, Kitchen).unwrap();
    let (addr, _guard) = spawn(server).await;
    let kitchen = KitchenClient::new("kitchen", Client::with_address(addr.to_string()));

    let item = kitchen
        .get(GetRequest {
            id: 7,
            shelf: Some(Shelf { name: "top".into() }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((item.id, item.name.as_str()), (7, "top"));

    kitchen.put(Item::default()).await.unwrap();
    assert_eq!(
        kitchen.purge(()).await.unwrap_err().code(),
        Code::Unimplemented
    );
    assert_eq!(
        kitchen
            .wrapped("four".to_string())
            .await
            .unwrap()
            .into_inner(),
        4
    );

    let listed: Vec<u64> = kitchen
        .list(Shelf { name: "s".into() })
        .await
        .unwrap()
        .into_inner()
        .map(|i| i.unwrap().id)
        .collect()
        .await;
    assert_eq!(listed, vec![1, 2]);

    let uploads = tokio_stream::iter((0..4).map(|id| Item {
        id,
        ..Default::default()
    }));
    let summary = kitchen.upload(uploads).await.unwrap().into_inner();
    assert_eq!(summary.count, 4);

    let chat = tokio_stream::iter((10..12).map(|id| Item {
        id,
        ..Default::default()
    }));
    let echoed: Vec<u64> = kitchen
        .chat(chat)
        .await
        .unwrap()
        .into_inner()
        .map(|i| i.unwrap().id)
        .collect()
        .await;
    assert_eq!(echoed, vec![10, 11]);
}

#[tokio::test]
async fn http_bindings_are_recorded_as_endpoint_metadata() {
    let get = &kitchen::KITCHEN_ENDPOINTS[0];
    assert_eq!(get.name, "Kitchen.Get");
    assert_eq!(get.path, "/rmicro.test.kitchen.Kitchen/Get");
    assert_eq!(get.http.len(), 2);
    assert_eq!(
        (get.http[0].method, get.http[0].path),
        ("GET", "/v1/items/{id}")
    );
    assert_eq!(get.http[1].path_params, ["shelf.name", "id"]);
    let update = &kitchen::KITCHEN_ENDPOINTS[2];
    assert_eq!(
        (
            update.http[0].method,
            update.http[0].body,
            update.http[0].response_body
        ),
        ("PATCH", "item", "name")
    );
    assert_eq!(kitchen::KITCHEN_ENDPOINTS[3].http[0].method, "PURGE");
    let upload = &kitchen::KITCHEN_ENDPOINTS[5];
    assert!(upload.client_streaming && !upload.server_streaming);
    assert_eq!(upload.request, "rmicro.test.kitchen.Item");
}

#[tokio::test]
async fn unknown_method_is_unimplemented_and_dead_address_is_unavailable() {
    // A server without the user service answers Unimplemented.
    let (addr, _guard) = spawn(Server::new()).await;
    let user = UserClient::new("go.micro.srv.user", Client::with_address(addr.to_string()));
    let err = user
        .call(CallRequest { name: "x".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(
        err.message().contains("/go.micro.srv.user.User/Call"),
        "{}",
        err.message()
    );

    // Nothing listens on a port just released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let user = UserClient::new("go.micro.srv.user", Client::with_address(port.to_string()));
    let err = user
        .call(CallRequest { name: "x".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
}

#[tokio::test]
async fn graceful_stop_finishes() {
    let (user, guard) = user_server().await;
    user.call(CallRequest { name: "a".into() }).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(15), guard.stop())
        .await
        .expect("graceful shutdown within the drain timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_still_open_after_the_drain_timeout_are_cut() {
    use std::time::Duration;
    let mut server = Server::new();
    register_user_handler(&mut server, Greeter).unwrap();
    server.drain_timeout(Duration::from_millis(200));
    let bound = server.bind("127.0.0.1:0").await.unwrap();
    let addr = bound.local_addr();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(bound.serve_with_shutdown(async {
        let _ = stop_rx.await;
    }));
    let user = UserClient::new("go.micro.srv.user", Client::with_address(addr.to_string()));

    // A bidirectional stream the client keeps open.
    let (pings, rx) = tokio::sync::mpsc::channel::<Ping>(4);
    let mut pongs = user
        .ping_pong(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    pings.send(Ping { stroke: 1 }).await.unwrap();
    assert_eq!(pongs.next().await.unwrap().unwrap().stroke, 1);

    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(5), serving)
        .await
        .expect("the server returns after its drain timeout")
        .unwrap()
        .unwrap();
    // Once serving has returned, the call is over: its handler no longer answers.
    let _ = pings.send(Ping { stroke: 2 }).await;
    let next = tokio::time::timeout(Duration::from_secs(2), pongs.next()).await;
    assert!(
        matches!(next, Ok(None | Some(Err(_)))),
        "the stream is still served (or left hanging) after the server returned: {next:?}"
    );
}

/// Streams `count` items, one every 100 ms.
struct Slow;

impl UserHandler for Slow {
    async fn call(&self, request: Request<CallRequest>) -> Result<Response<CallResponse>, Status> {
        UserHandler::call(&Greeter, request).await
    }

    async fn stream(
        &self,
        request: Request<StreamRequest>,
    ) -> Result<Response<ResponseStream<StreamResponse>>, Status> {
        let count = request.into_inner().count;
        let items = tokio_stream::StreamExt::throttle(
            tokio_stream::iter((0..count).map(|count| Ok(StreamResponse { count }))),
            std::time::Duration::from_millis(100),
        );
        Ok(Response::new(Box::pin(items)))
    }

    async fn ping_pong(
        &self,
        request: Request<Streaming<Ping>>,
    ) -> Result<Response<ResponseStream<Pong>>, Status> {
        UserHandler::ping_pong(&Greeter, request).await
    }
}

#[tokio::test]
async fn a_stream_ends_with_deadline_exceeded_when_the_callers_deadline_passes() {
    use std::time::{Duration, Instant};
    // Any gRPC client's stream with a 350 ms deadline (here rmicro's, with the raw header, so
    // that only the server can end it).
    let (user, _guard) = user_server_with(Slow).await;
    let mut request = Request::new(StreamRequest { count: 20 });
    request
        .metadata_mut()
        .insert("grpc-timeout", "350m".parse().unwrap());
    let started = Instant::now();
    let mut stream = user.stream(request).await.unwrap().into_inner();
    let mut items = 0;
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
            Ok(Ok(Some(_))) => items += 1,
            Ok(other) => break other,
            Err(_) => panic!("the stream hung"),
        }
    };
    let took = started.elapsed();
    assert!(
        items < 20,
        "all {items} items arrived over {took:?}, past the 350 ms deadline"
    );
    let status = end.expect_err("the stream ends with a status");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
}

/// A unary handler still running when the caller's deadline passes is dropped, and the server
/// itself answers `DeadlineExceeded`: the client here (tonic over a runtime connection, with the
/// raw header) sets no timer of its own.
#[tokio::test]
async fn the_server_ends_a_unary_call_whose_callers_deadline_passed() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// Sets its flag when the handler's future is dropped.
    struct Dropped(Arc<AtomicBool>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    let dropped = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&dropped);
    let mut server = Server::new();
    server
        .add_service(rmicro_runtime::ServiceDef::new("slow.Slow", &[]).unary(
            "/slow.Slow/Call",
            move |_request: Request<CallRequest>| {
                let guard = Dropped(Arc::clone(&flag));
                async move {
                    let _guard = guard;
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Ok(Response::new(CallResponse::default()))
                }
            },
        ))
        .unwrap();
    let (addr, _guard) = spawn(server).await;

    let connection = rmicro_runtime::transport::Connection::new(&addr.to_string()).unwrap();
    let mut grpc = connection.grpc();
    let mut request = Request::new(CallRequest { name: "x".into() });
    request
        .metadata_mut()
        .insert("grpc-timeout", "300m".parse().unwrap());
    let started = Instant::now();
    grpc.ready().await.unwrap();
    let call = grpc.unary(
        request,
        http::uri::PathAndQuery::from_static("/slow.Slow/Call"),
        tonic_prost::ProstCodec::<CallRequest, CallResponse>::default(),
    );
    let status = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the server never answered")
        .expect_err("the call outlived its deadline");
    let took = started.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(
        status.message(),
        "the caller's deadline passed while the call was served"
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(2000),
        "{took:?}"
    );
    assert!(
        dropped.load(Ordering::SeqCst),
        "the handler still runs after the deadline"
    );
}

/// Answers `Call` with what it received from its caller: the `x-trace-id` metadata and whether
/// a deadline came, as `"<trace>|<deadline?>"`.
struct Seer;

impl UserHandler for Seer {
    async fn call(&self, request: Request<CallRequest>) -> Result<Response<CallResponse>, Status> {
        let trace = request
            .metadata()
            .get("x-trace-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let deadline = rmicro_runtime::context::current()
            .and_then(|c| c.remaining())
            .is_some();
        Ok(Response::new(CallResponse {
            msg: format!("{trace}|{deadline}"),
        }))
    }

    async fn stream(
        &self,
        request: Request<StreamRequest>,
    ) -> Result<Response<ResponseStream<StreamResponse>>, Status> {
        UserHandler::stream(&Greeter, request).await
    }

    async fn ping_pong(
        &self,
        request: Request<Streaming<Ping>>,
    ) -> Result<Response<ResponseStream<Pong>>, Status> {
        UserHandler::ping_pong(&Greeter, request).await
    }
}

/// Relays every item of its streams to the next service, from inside the stream (the usual
/// shape: a stream that calls another service per item), answering with what the next service
/// saw: 10 for the caller's trace id, plus 1 for a deadline.
#[derive(Clone)]
struct StreamRelay {
    next: UserClient,
}

impl StreamRelay {
    async fn relay(&self) -> Result<i64, Status> {
        let seen = self
            .next
            .call(CallRequest { name: "x".into() })
            .await?
            .into_inner()
            .msg;
        let (trace, deadline) = seen.split_once('|').unwrap_or_default();
        Ok(10 * i64::from(trace == "t-42") + i64::from(deadline == "true"))
    }
}

impl UserHandler for StreamRelay {
    async fn call(&self, _request: Request<CallRequest>) -> Result<Response<CallResponse>, Status> {
        Ok(Response::new(CallResponse {
            msg: self.relay().await?.to_string(),
        }))
    }

    async fn stream(
        &self,
        request: Request<StreamRequest>,
    ) -> Result<Response<ResponseStream<StreamResponse>>, Status> {
        let relay = self.clone();
        let items = tokio_stream::iter(0..request.into_inner().count).then(move |_| {
            let relay = relay.clone();
            async move {
                Ok(StreamResponse {
                    count: relay.relay().await?,
                })
            }
        });
        Ok(Response::new(Box::pin(items)))
    }

    async fn ping_pong(
        &self,
        request: Request<Streaming<Ping>>,
    ) -> Result<Response<ResponseStream<Pong>>, Status> {
        let relay = self.clone();
        let pongs = request.into_inner().then(move |ping| {
            let relay = relay.clone();
            async move {
                ping?;
                Ok(Pong {
                    stroke: relay.relay().await?,
                })
            }
        });
        Ok(Response::new(Box::pin(pongs)))
    }
}

/// The deadline and metadata of a streaming call reach the calls its handler's stream makes,
/// as they reach those of a unary handler: the response stream is polled after the handler
/// returned, and must still be served in the call's context.
#[tokio::test]
async fn deadline_and_metadata_propagate_from_inside_response_streams() {
    use std::time::Duration;

    let mut last = Server::new();
    register_user_handler(&mut last, Seer).unwrap();
    let (last_addr, _last) = spawn(last).await;
    // No request timeout of its own: a deadline the next hop sees came from the served call.
    let next = Client::builder()
        .address(last_addr.to_string())
        .request_timeout(None)
        .build();
    let mut front = Server::new();
    register_user_handler(
        &mut front,
        StreamRelay {
            next: UserClient::new("go.micro.srv.user", next),
        },
    )
    .unwrap();
    let (front_addr, _front) = spawn(front).await;
    let user = UserClient::new(
        "go.micro.srv.user",
        Client::with_address(front_addr.to_string()),
    );
    fn traced<T>(message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert("x-trace-id", "t-42".parse().unwrap());
        request
            .metadata_mut()
            .insert("grpc-timeout", "10S".parse().unwrap());
        request
    }

    // Unary: the handler itself makes the call.
    let unary = tokio::time::timeout(
        Duration::from_secs(10),
        user.call(traced(CallRequest::default())),
    )
    .await
    .expect("the unary call took over 10 s")
    .unwrap()
    .into_inner()
    .msg;
    assert_eq!(
        unary, "11",
        "trace id (10) and deadline (1) from a unary handler"
    );

    let streamed: Vec<i64> = tokio::time::timeout(Duration::from_secs(10), async {
        let stream = user
            .stream(traced(StreamRequest { count: 2 }))
            .await
            .unwrap()
            .into_inner();
        stream.map(|item| item.unwrap().count).collect().await
    })
    .await
    .expect("the server stream took over 10 s");
    assert_eq!(
        streamed,
        [11, 11],
        "trace id (10) and deadline (1) from inside a server stream"
    );

    let ponged: Vec<i64> = tokio::time::timeout(Duration::from_secs(10), async {
        let pings = tokio_stream::iter((1..=2).map(|stroke| Ping { stroke }));
        let pongs = user.ping_pong(traced(pings)).await.unwrap().into_inner();
        pongs.map(|pong| pong.unwrap().stroke).collect().await
    })
    .await
    .expect("the bidirectional stream took over 10 s");
    assert_eq!(
        ponged,
        [11, 11],
        "trace id (10) and deadline (1) from inside a bidirectional stream"
    );
}

/// A deadline longer than 99 999 999 ms (27.7 hours: a long watch stream, a batch job) reaches
/// the server whole: `grpc-timeout` holds at most 8 digits, so it goes in a larger unit, not
/// cut down to what fits in milliseconds (the server would end the call hours early).
#[tokio::test]
async fn a_deadline_of_more_than_27_hours_reaches_the_server_whole() {
    use std::time::Duration;
    let mut server = Server::new();
    server
        .add_service(rmicro_runtime::ServiceDef::new("long.Long", &[]).unary(
            "/long.Long/Call",
            |_request: Request<CallRequest>| async {
                let left = rmicro_runtime::context::current()
                    .and_then(|c| c.remaining())
                    .map_or(0, |d| d.as_secs());
                Ok(Response::new(CallResponse {
                    msg: left.to_string(),
                }))
            },
        ))
        .unwrap();
    let (addr, _guard) = spawn(server).await;
    let client = Client::builder()
        .address(addr.to_string())
        .request_timeout(None)
        .build();
    for (asked, hours) in [("30H", 30), ("2000M", 33), ("200000S", 55)] {
        let mut request = Request::new(CallRequest::default());
        request
            .metadata_mut()
            .insert("grpc-timeout", asked.parse().unwrap());
        let call = client.unary::<_, CallResponse>("long", "/long.Long/Call", request);
        let seen: u64 = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .expect("the call took over 10 s")
            .unwrap()
            .into_inner()
            .msg
            .parse()
            .unwrap();
        let seen = Duration::from_secs(seen);
        assert!(
            seen > Duration::from_secs(hours * 3600 - 60),
            "asked for {asked}; the server saw {:.1} hours left",
            seen.as_secs_f64() / 3600.0
        );
    }
}

/// A loopback TCP proxy to `target` that counts the connections it accepts and holds each one
/// for `delay` before passing bytes on (a node slow to answer HTTP/2's preface: far away, or
/// busy), returning its address and the count.
async fn counting_proxy(
    target: std::net::SocketAddr,
    delay: std::time::Duration,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let count = std::sync::Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    (address, accepted)
}

/// A connection still being opened to one node is kept while a connection to another node is
/// opened: calls made meanwhile to the first node share it, rather than open a second one each
/// time some other node is first called.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_being_opened_is_shared_while_another_node_is_first_called() {
    use rmicro_runtime::registry::{MemoryRegistry, Node, Registry, Service as Record};
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;

    let mut server = Server::new();
    register_user_handler(&mut server, Greeter).unwrap();
    let (addr, _guard) = spawn(server).await;
    let (slow_a, accepted_a) = counting_proxy(addr, Duration::from_millis(600)).await;
    let (slow_b, accepted_b) = counting_proxy(addr, Duration::from_millis(600)).await;
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    for (name, address) in [("svc.a", &slow_a), ("svc.b", &slow_b)] {
        let record = Record {
            name: name.into(),
            version: "latest".into(),
            nodes: vec![Node {
                id: format!("{name}-1"),
                address: address.clone(),
                ..Default::default()
            }],
            ..Default::default()
        };
        registry
            .register(&record, Duration::from_secs(60))
            .await
            .unwrap();
    }
    let client = Client::new(registry);
    let call = |service: &'static str| {
        let user = UserClient::new(service, client.clone());
        tokio::spawn(async move {
            tokio::time::timeout(
                Duration::from_secs(10),
                user.call(CallRequest { name: "x".into() }),
            )
            .await
            .expect("the call took over 10 s")
            .map(|reply| reply.into_inner().msg)
        })
    };
    // A's connection is being opened (its node answers after 600 ms) when B is first called,
    // and A is called again while both are still opening.
    let first_a = call("svc.a");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let first_b = call("svc.b");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let second_a = call("svc.a");
    for call in [first_a, first_b, second_a] {
        assert_eq!(call.await.unwrap().unwrap(), "Hello x");
    }
    assert_eq!(accepted_b.load(Ordering::SeqCst), 1);
    assert_eq!(
        accepted_a.load(Ordering::SeqCst),
        1,
        "a second connection was opened to node A while its first was being opened"
    );
}

/// Every value of a metadata key the caller repeated (`x-tag: a`, `x-tag: b`, as gRPC allows)
/// reaches the calls a handler makes, not only the first.
#[tokio::test]
async fn every_value_of_a_repeated_metadata_key_propagates() {
    use std::time::Duration;
    // The last hop answers with the values of `x-tag` it received, in order.
    let mut back = Server::new();
    back.add_service(rmicro_runtime::ServiceDef::new("tags.Back", &[]).unary(
        "/tags.Back/Call",
        |request: Request<CallRequest>| async move {
            let metadata = request.metadata();
            let tags: Vec<&str> = metadata
                .get_all("x-tag")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            let msg = tags.join(",");
            Ok(Response::new(CallResponse { msg }))
        },
    ))
    .unwrap();
    let (back_addr, _back) = spawn(back).await;
    let next = Client::with_address(back_addr.to_string());
    // The first hop passes the call on, carrying nothing by hand.
    let mut front = Server::new();
    front
        .add_service(rmicro_runtime::ServiceDef::new("tags.Front", &[]).unary(
            "/tags.Front/Call",
            move |request: Request<CallRequest>| {
                let next = next.clone();
                async move {
                    next.unary::<_, CallResponse>(
                        "tags.back",
                        "/tags.Back/Call",
                        Request::new(request.into_inner()),
                    )
                    .await
                }
            },
        ))
        .unwrap();
    let (front_addr, _front) = spawn(front).await;

    let mut request = Request::new(CallRequest::default());
    for tag in ["one", "two", "three"] {
        request.metadata_mut().append("x-tag", tag.parse().unwrap());
    }
    let client = Client::with_address(front_addr.to_string());
    let call = client.unary::<_, CallResponse>("tags.front", "/tags.Front/Call", request);
    let seen = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the call took over 10 s")
        .unwrap()
        .into_inner()
        .msg;
    assert_eq!(
        seen, "one,two,three",
        "the values of `x-tag` the last hop received"
    );
}

/// A stream whose node stops sending (frozen, its network gone quiet: here a proxy that stops
/// passing the node's bytes on after the first item) ends on the caller's side with
/// `DeadlineExceeded` at the deadline the caller set, as grpc-go's client ends it; it used to
/// wait for ever once the answer's headers had come, as only the server ended streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_from_a_node_that_goes_quiet_ends_at_the_callers_deadline() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut server = Server::new();
    register_user_handler(&mut server, Slow).unwrap();
    let (addr, _guard) = spawn(server).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = listener.local_addr().unwrap().to_string();
    let quiet = Arc::new(AtomicBool::new(false));
    let hush = Arc::clone(&quiet);
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = tokio::net::TcpStream::connect(addr).await else {
                return;
            };
            let (mut from_client, mut to_client) = inbound.into_split();
            let (mut from_node, mut to_node) = outbound.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut from_client, &mut to_node).await;
            });
            let hush = Arc::clone(&hush);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                // The node's bytes pass until the test hushes it; then they are held back (the
                // connection stays open: nothing tells the client it is gone).
                while let Ok(n) = from_node.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    if hush.load(Ordering::SeqCst) {
                        std::future::pending::<()>().await;
                    }
                    if to_client.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let user = UserClient::new("go.micro.srv.user", Client::with_address(proxy));
    let mut request = Request::new(StreamRequest { count: 50 });
    request
        .metadata_mut()
        .insert("grpc-timeout", "1000m".parse().unwrap());
    let started = Instant::now();
    let mut stream = user.stream(request).await.unwrap().into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.message()).await;
    assert!(matches!(first, Ok(Ok(Some(_)))), "{first:?}");
    quiet.store(true, Ordering::SeqCst);
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
            Ok(Ok(Some(_))) => {}
            Ok(other) => break other,
            Err(_) => panic!("the stream from the quiet node hung past its deadline"),
        }
    };
    let status = end.expect_err("the stream ends with a status");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "{took:?}"
    );
}

/// Panics in `call` for the name `panic`, and in its stream after `count` items.
struct Panicky;

impl UserHandler for Panicky {
    async fn call(&self, request: Request<CallRequest>) -> Result<Response<CallResponse>, Status> {
        if request.get_ref().name == "panic" {
            panic!("the handler's own bug");
        }
        UserHandler::call(&Greeter, request).await
    }

    async fn stream(
        &self,
        request: Request<StreamRequest>,
    ) -> Result<Response<ResponseStream<StreamResponse>>, Status> {
        let count = request.into_inner().count;
        let items = tokio_stream::iter(0..=count).map(move |i| {
            if i == count {
                panic!("the stream's own bug at item {i}");
            }
            Ok(StreamResponse { count: i })
        });
        // One item at a time, each sent before the next is made.
        let items = tokio_stream::StreamExt::throttle(items, std::time::Duration::from_millis(5));
        Ok(Response::new(Box::pin(items)))
    }

    async fn ping_pong(
        &self,
        request: Request<Streaming<Ping>>,
    ) -> Result<Response<ResponseStream<Pong>>, Status> {
        UserHandler::ping_pong(&Greeter, request).await
    }
}

/// A handler that panics answers Internal with go-micro's error JSON (as go-micro's servers
/// recover a panic), not a reset stream callers take for a transport failure; a response stream
/// that panics ends with Internal after the items it sent. The server serves on.
#[tokio::test]
async fn a_panicking_handler_answers_internal_and_the_server_serves_on() {
    let (user, _guard) = user_server_with(Panicky).await;

    let status = user
        .call(CallRequest {
            name: "panic".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    let error = rmicro_runtime::errors::Error::from(&status);
    assert_eq!(
        (error.id.as_str(), error.code, error.detail.as_str()),
        (
            "go.micro.server",
            500,
            "panic recovered: the handler's own bug"
        )
    );

    let mut stream = user
        .stream(StreamRequest { count: 3 })
        .await
        .unwrap()
        .into_inner();
    let mut items = Vec::new();
    let end = loop {
        match stream.message().await {
            Ok(Some(item)) => items.push(item.count),
            Ok(None) => panic!("the stream ended as if complete after {items:?}"),
            Err(status) => break status,
        }
    };
    assert_eq!(items, [0, 1, 2]);
    assert_eq!(end.code(), Code::Internal, "{end:?}");
    assert!(
        end.message()
            .contains("panic recovered: the stream's own bug at item 3"),
        "{end:?}"
    );

    // The same connection, the next call.
    let reply = user.call(CallRequest { name: "Ada".into() }).await.unwrap();
    assert_eq!(reply.into_inner().msg, "Hello Ada");
}

/// A unary or client-streaming call is answered with exactly one message: one answered with
/// none or with more than one (a server that has the method as another kind: another version
/// of the service) is `Internal`, as grpc-go's client says, not the first message with the rest
/// read and thrown away; an answer of one message comes with the head's and the trailers'
/// metadata, a status instead of it with the head's, a status after it is the outcome.
#[tokio::test]
async fn a_unary_or_client_streaming_answer_is_one_message() {
    const CALL: &str = "/go.micro.srv.user.User/Call";
    const GATHER: &str = "/go.micro.srv.user.User/Gather";
    // `Call` answered as if server-streaming: as many messages as the request's name says.
    let service = rmicro_runtime::server::ServiceDef::new("go.micro.srv.user.User", &[])
        .server_streaming(CALL, |request: Request<CallRequest>| async move {
            let name = request.into_inner().name;
            let count: u32 = name.parse().unwrap_or(0);
            let mut answers: Vec<Result<CallResponse, Status>> = (0..count)
                .map(|i| Ok(CallResponse { msg: i.to_string() }))
                .collect();
            match name.as_str() {
                "fail-first" => answers.push(Err(Status::not_found("failed first"))),
                "fail-after-one" => answers.extend([
                    Ok(CallResponse { msg: "0".into() }),
                    Err(Status::not_found("failed after one")),
                ]),
                _ => {}
            }
            let answers: ResponseStream<CallResponse> = Box::pin(tokio_stream::iter(answers));
            let mut response = Response::new(answers);
            response
                .metadata_mut()
                .insert("x-answered-by", "streaming".parse().unwrap());
            Ok(response)
        })
        // `Gather` answered as if bidirectional: one message for each request message.
        .streaming(
            GATHER,
            |request: Request<Streaming<CallRequest>>| async move {
                let answers = request
                    .into_inner()
                    .map(|request| request.map(|r| CallResponse { msg: r.name }));
                let answers: ResponseStream<CallResponse> = Box::pin(answers);
                Ok(Response::new(answers))
            },
        );
    let mut server = Server::new();
    server.add_service(service).unwrap();
    let (addr, _guard) = spawn(server).await;
    let client = Client::with_address(addr.to_string());
    let user = UserClient::new("go.micro.srv.user", client.clone());

    let one = user
        .call(Request::new(CallRequest { name: "1".into() }))
        .await
        .unwrap();
    assert_eq!(one.metadata().get("x-answered-by").unwrap(), "streaming");
    // The trailers' metadata is the answer's too.
    assert_eq!(one.metadata().get("grpc-status").unwrap(), "0");
    assert_eq!(one.into_inner().msg, "0");
    // A status instead of the message comes with the head's metadata; a status after the one
    // message is the call's outcome, not the message.
    let err = user
        .call(Request::new(CallRequest {
            name: "fail-first".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::NotFound, "failed first")
    );
    assert_eq!(err.metadata().get("x-answered-by").unwrap(), "streaming");
    let err = user
        .call(Request::new(CallRequest {
            name: "fail-after-one".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::NotFound, "failed after one")
    );
    for (count, says) in [("0", "without a message"), ("2", "more than one message")] {
        let err = user
            .call(Request::new(CallRequest { name: count.into() }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Internal, "{count}: {err:?}");
        assert!(err.message().contains(says), "{count}: {err:?}");
        assert!(err.message().contains(CALL), "{count}: {err:?}");
    }

    let gather = |names: &[&str]| {
        let requests: Vec<CallRequest> = names
            .iter()
            .map(|name| CallRequest {
                name: (*name).into(),
            })
            .collect();
        let client = client.clone();
        async move {
            client
                .client_streaming::<CallRequest, CallResponse, _>(
                    "go.micro.srv.user",
                    GATHER,
                    Request::new(tokio_stream::iter(requests)),
                )
                .await
        }
    };
    assert_eq!(gather(&["a"]).await.unwrap().into_inner().msg, "a");
    let err = gather(&["a", "b"]).await.unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(err.message().contains("more than one message"), "{err:?}");
    let err = gather(&[]).await.unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(err.message().contains("without a message"), "{err:?}");
}
