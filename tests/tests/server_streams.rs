//! How the server treats the streams of one client connection: how many calls it takes at once,
//! how much metadata, and what a handler reading a request stream sees when the client cancels
//! the call.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rmicro_runtime::{Client, Code, Request, Response, ResponseStream, Server, Status, Streaming};
use rmicro_tests::fixtures::go::micro::srv::user::{
    register_user_handler, CallRequest, CallResponse, Ping, Pong, StreamRequest, StreamResponse,
    UserClient, UserHandler,
};
use rmicro_tests::spawn;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

/// Calls answered only once `hold` of them are in the handler at the same time; request
/// streams read to their end, each stream's outcome reported on `ends`.
struct Probe {
    arrived: Arc<AtomicUsize>,
    hold: usize,
    ends: mpsc::UnboundedSender<Result<usize, Status>>,
}

impl UserHandler for Probe {
    async fn call(&self, _request: Request<CallRequest>) -> Result<Response<CallResponse>, Status> {
        let seen = self.arrived.fetch_add(1, Ordering::SeqCst) + 1;
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.arrived.load(Ordering::SeqCst) < self.hold {
            if tokio::time::Instant::now() > until {
                return Err(Status::deadline_exceeded(format!(
                    "only {} calls arrived at once",
                    self.arrived.load(Ordering::SeqCst)
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(Response::new(CallResponse {
            msg: seen.to_string(),
        }))
    }

    /// `count` items, then nothing more, without an end.
    async fn stream(
        &self,
        request: Request<StreamRequest>,
    ) -> Result<Response<ResponseStream<StreamResponse>>, Status> {
        let count = request.into_inner().count;
        let items = tokio_stream::iter((0..count).map(|count| Ok(StreamResponse { count })));
        Ok(Response::new(Box::pin(
            items.chain(tokio_stream::pending()),
        )))
    }

    async fn ping_pong(
        &self,
        request: Request<Streaming<Ping>>,
    ) -> Result<Response<ResponseStream<Pong>>, Status> {
        let mut pings = request.into_inner();
        let (pongs, out) = mpsc::unbounded_channel();
        let ends = self.ends.clone();
        tokio::spawn(async move {
            let mut count = 0;
            let end = loop {
                match pings.message().await {
                    Ok(Some(ping)) => {
                        count += 1;
                        let _ = pongs.send(Ok(Pong {
                            stroke: ping.stroke,
                        }));
                    }
                    Ok(None) => break Ok(count),
                    Err(status) => break Err(status),
                }
            };
            let _ = ends.send(end);
        });
        let out = tokio_stream::wrappers::UnboundedReceiverStream::new(out);
        Ok(Response::new(Box::pin(out)))
    }
}

async fn probe_server(hold: usize) -> (UserClient, Ends, rmicro_tests::ServerGuard) {
    probe_server_with(hold, |_| {}, |_| {}).await
}

type Ends = mpsc::UnboundedReceiver<Result<usize, Status>>;

async fn probe_server_with(
    hold: usize,
    server_settings: impl FnOnce(&mut Server),
    client_settings: impl FnOnce(&mut rmicro_runtime::ClientBuilder),
) -> (UserClient, Ends, rmicro_tests::ServerGuard) {
    let (ends, ended) = mpsc::unbounded_channel();
    let probe = Probe {
        arrived: Arc::new(AtomicUsize::new(0)),
        hold,
        ends,
    };
    let mut server = Server::new();
    server_settings(&mut server);
    register_user_handler(&mut server, probe).unwrap();
    let (addr, guard) = spawn(server).await;
    // One client: one HTTP/2 connection to the node, which every call shares.
    let mut client = Client::builder();
    client
        .address(addr.to_string())
        .request_timeout(Some(Duration::from_secs(20)));
    client_settings(&mut client);
    let client = client.build();
    (UserClient::new("go.micro.srv.user", client), ended, guard)
}

/// 300 calls at once from one client, each answered only once all 300 are in their handlers:
/// the server takes them all on the one connection (hyper's default would let 200 in and hold
/// the rest until the first ones end, which here is never).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_carries_more_than_200_calls_at_once() {
    const CALLS: usize = 300;
    let (user, _ended, guard) = probe_server(CALLS).await;
    let calls: Vec<_> = (0..CALLS)
        .map(|i| {
            let user = user.clone();
            tokio::spawn(async move {
                user.call(CallRequest {
                    name: i.to_string(),
                })
                .await
                .map(|_| ())
                .map_err(|s| (s.code(), s.message().to_string()))
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), Ok(()));
    }
    guard.stop().await;
}

/// A client that cancels a bidirectional call in the middle of its request stream: the handler
/// reading it gets an error, not the end of the stream it would take for a complete upload. A
/// stream the client ends is read to its end.
#[tokio::test]
async fn a_request_stream_the_client_cancels_is_an_error_for_the_handler() {
    let (user, mut ended, guard) = probe_server(1).await;

    // Two pings, then the client goes quiet without ending its stream, and drops the call.
    let (pings, quiet) = mpsc::unbounded_channel();
    for stroke in [1, 2] {
        pings.send(Ping { stroke }).unwrap();
    }
    let requests = tokio_stream::wrappers::UnboundedReceiverStream::new(quiet);
    let mut pongs = user.ping_pong(requests).await.unwrap().into_inner();
    for stroke in [1, 2] {
        assert_eq!(
            pongs.message().await.unwrap().map(|p| p.stroke),
            Some(stroke)
        );
    }
    drop(pongs);
    drop(pings);
    let end = tokio::time::timeout(Duration::from_secs(5), ended.recv())
        .await
        .expect("the handler's stream ended")
        .unwrap();
    let status = end.expect_err("a cancelled stream must not read as a complete one");
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert!(status.message().contains("cancelled"), "{status:?}");

    // A stream the client ends.
    let requests = tokio_stream::iter([Ping { stroke: 7 }, Ping { stroke: 8 }]);
    let pongs: Vec<_> = user
        .ping_pong(requests)
        .await
        .unwrap()
        .into_inner()
        .map(|p| p.unwrap().stroke)
        .collect()
        .await;
    assert_eq!(pongs, [7, 8]);
    let end = tokio::time::timeout(Duration::from_secs(5), ended.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(end.unwrap(), 2);
    guard.stop().await;
}

/// A call whose metadata is far over h2's 16 KiB default (a large token, a propagated trace
/// context) is served: the server takes header blocks up to 1 MiB, as the client takes in answers.
#[tokio::test]
async fn a_call_with_100_kib_of_metadata_is_served() {
    let (user, _ended, guard) = probe_server(1).await;
    let mut request = Request::new(CallRequest { name: "x".into() });
    let token = "t".repeat(100 * 1024);
    request
        .metadata_mut()
        .insert("x-token", token.parse().unwrap());
    let reply = user.call(request).await.unwrap();
    assert_eq!(reply.into_inner().msg, "1");
    guard.stop().await;
}

/// The items of `stream` until it ends (at most 10, within 5 s), as counts and codes.
async fn items(mut stream: Streaming<StreamResponse>) -> Vec<Result<i64, (Code, String)>> {
    let mut out = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while out.len() < 10 {
        match tokio::time::timeout_at(until, stream.next()).await {
            Ok(Some(item)) => out.push(
                item.map(|i| i.count)
                    .map_err(|s| (s.code(), s.message().to_string())),
            ),
            Ok(None) => return out,
            Err(_) => panic!("the stream neither ended nor gave an item: {out:?}"),
        }
    }
    panic!("more than 10 items: {out:?}")
}

/// An answer message over the client's receive limit in the middle of a stream: the items
/// before it, then `ResourceExhausted` saying so, then the end (tonic alone would go on reading
/// the message's bytes as more messages, an error each, for as long as the caller reads).
#[tokio::test]
async fn an_answer_over_the_clients_limit_ends_the_stream_with_its_error() {
    // A count of 0 is an empty message, 1 takes 2 bytes.
    let (user, _ended, guard) = probe_server_with(
        1,
        |_| {},
        |client| {
            client.max_receive_message_size(1);
        },
    )
    .await;
    let stream = user
        .stream(StreamRequest { count: 3 })
        .await
        .unwrap()
        .into_inner();
    let got = items(stream).await;
    assert_eq!(got[0], Ok(0), "{got:?}");
    // tonic gives a body's error twice before the end.
    assert!((2..=3).contains(&got.len()), "{got:?}");
    for item in &got[1..] {
        let (code, message) = item.clone().unwrap_err();
        assert_eq!(code, Code::ResourceExhausted, "{message}");
        assert!(
            message.contains("received message larger than max (2 vs. 1)"),
            "{message}"
        );
    }
    guard.stop().await;
}

/// A request message over the server's receive limit in the middle of a stream is an error
/// for the handler reading it, after the messages before it.
#[tokio::test]
async fn a_request_over_the_servers_limit_is_an_error_for_the_handler() {
    let (user, mut ended, guard) = probe_server_with(
        1,
        |server| {
            server.max_receive_message_size(1);
        },
        |_| {},
    )
    .await;
    let pings = tokio_stream::iter([Ping { stroke: 0 }, Ping { stroke: 5 }, Ping { stroke: 0 }]);
    let _pongs = user.ping_pong(pings).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), ended.recv())
        .await
        .unwrap()
        .unwrap();
    let status = end.expect_err("a message over the limit must not be skipped");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .contains("received message larger than max (2 vs. 1)"),
        "{status:?}"
    );
    guard.stop().await;
}

/// A server whose process ends in the middle of a stream (its connection closed, no GOAWAY):
/// the items before, then `Unavailable`, as gRPC says of a transport failure (tonic alone
/// said `Unknown`).
#[tokio::test]
async fn a_server_gone_in_the_middle_of_a_stream_is_unavailable() {
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (ends, _ended) = mpsc::unbounded_channel();
            let probe = Probe {
                arrived: Arc::new(AtomicUsize::new(0)),
                hold: 1,
                ends,
            };
            let mut server = Server::new();
            register_user_handler(&mut server, probe).unwrap();
            let bound = server.bind("127.0.0.1:0").await.unwrap();
            tx.send(bound.local_addr()).unwrap();
            tokio::spawn(bound.serve());
        });
        // The process "ends": every task dropped, its sockets closed.
        let _ = stopped.recv();
        runtime.shutdown_background();
    });
    let address = rx.recv().unwrap();
    let user = UserClient::new(
        "go.micro.srv.user",
        Client::with_address(address.to_string()),
    );
    let mut stream = user
        .stream(StreamRequest { count: 2 })
        .await
        .unwrap()
        .into_inner();
    for count in [0, 1] {
        assert_eq!(
            stream.message().await.unwrap().map(|i| i.count),
            Some(count)
        );
    }
    stop.send(()).unwrap();
    let got = items(stream).await;
    assert!(!got.is_empty(), "the stream ended as if complete");
    for item in &got {
        let (code, message) = item.clone().unwrap_err();
        assert_eq!(code, Code::Unavailable, "{message}");
    }
}

/// A call whose metadata is over what servers take fails alone, at the client, with
/// `ResourceExhausted` (a server answers such a header block with an HTTP 431, which gRPC
/// reads as `Unknown`, or, far over its limit, closes the whole connection); the other calls on
/// the connection go on.
#[tokio::test]
async fn a_call_with_metadata_over_the_limit_fails_alone() {
    let (user, _ended, guard) = probe_server(1).await;
    let mut stream = user
        .stream(StreamRequest { count: 1 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stream.message().await.unwrap().map(|i| i.count), Some(0));
    let mut request = Request::new(CallRequest { name: "x".into() });
    let token = "t".repeat(2 * 1024 * 1024);
    request
        .metadata_mut()
        .insert("x-token", token.parse().unwrap());
    let status = user.call(request).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("send less metadata"),
        "{status:?}"
    );
    // The stream on the same connection is still open, and calls still go through.
    let reply = user.call(CallRequest { name: "y".into() }).await.unwrap();
    assert_eq!(reply.into_inner().msg, "1");
    let pending = tokio::time::timeout(Duration::from_millis(200), stream.message()).await;
    assert!(pending.is_err(), "the stream was cut: {pending:?}");
    drop(stream);
    guard.stop().await;
}
