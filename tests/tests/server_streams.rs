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

    async fn stream(
        &self,
        _request: Request<StreamRequest>,
    ) -> Result<Response<ResponseStream<StreamResponse>>, Status> {
        Err(Status::unimplemented("not in this test"))
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

async fn probe_server(
    hold: usize,
) -> (
    UserClient,
    mpsc::UnboundedReceiver<Result<usize, Status>>,
    rmicro_tests::ServerGuard,
) {
    let (ends, ended) = mpsc::unbounded_channel();
    let probe = Probe {
        arrived: Arc::new(AtomicUsize::new(0)),
        hold,
        ends,
    };
    let mut server = Server::new();
    register_user_handler(&mut server, probe).unwrap();
    let (addr, guard) = spawn(server).await;
    // One client: one HTTP/2 connection to the node, which every call shares.
    let client = Client::builder()
        .address(addr.to_string())
        .request_timeout(Some(Duration::from_secs(20)))
        .build();
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
