//! Nodes that stall: one that takes calls and never answers is avoided once a call has waited
//! out its deadline on it (the other nodes take the calls), and a server that was stalled while
//! its clients gave up on their calls keeps the connection when it resumes (the burst of resets
//! is not taken for a rapid-reset flood).

use std::sync::Arc;
use std::time::Duration;

use rmicro_runtime::registry::{MemoryRegistry, Node, Registry, Service as Record};
use rmicro_runtime::selector::RoundRobin;
use rmicro_runtime::{Client, Request, Response, ResponseStream, Server, Status, Streaming};
use rmicro_tests::fixtures::go::micro::srv::user::{
    register_user_handler, CallRequest, CallResponse, Ping, Pong, StreamRequest, StreamResponse,
    UserClient, UserHandler,
};
use rmicro_tests::spawn;
use rmicro_tests::user::Greeter;

const NAME: &str = "go.micro.srv.user";

/// Serves `handler` on a thread of its own, on one single-threaded runtime: a handler that
/// blocks its thread stalls all of the server, as a paused or starved process is stalled (it
/// cannot even answer that a call's deadline passed).
async fn on_own_thread(handler: impl UserHandler) -> std::net::SocketAddr {
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut server = Server::new();
            register_user_handler(&mut server, handler).unwrap();
            let bound = server.bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(bound.local_addr()).unwrap();
            let _ = tokio::time::timeout(Duration::from_secs(30), bound.serve()).await;
        });
    });
    addr_rx.await.unwrap()
}

/// Counts the calls to `Call` it takes, and stalls its server for `stall` on each, without
/// answering.
#[derive(Clone)]
struct Hung {
    stall: Duration,
    calls: Arc<std::sync::atomic::AtomicUsize>,
}

impl Hung {
    fn new(stall: Duration) -> Hung {
        Hung {
            stall,
            calls: Arc::default(),
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl UserHandler for Hung {
    async fn call(&self, _: Request<CallRequest>) -> Result<Response<CallResponse>, Status> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::thread::sleep(self.stall);
        Err(Status::unavailable("stalled"))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_never_answers_is_avoided_after_a_call_waited_out_its_deadline() {
    let hung_addr = on_own_thread(Hung::new(Duration::from_secs(5))).await;
    let mut healthy = Server::new();
    register_user_handler(&mut healthy, Greeter).unwrap();
    let (healthy_addr, _healthy) = spawn(healthy).await;
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    registry
        .register(
            &Record {
                name: NAME.into(),
                version: "latest".into(),
                nodes: [("hung", hung_addr), ("healthy", healthy_addr)]
                    .into_iter()
                    .map(|(id, addr)| Node {
                        id: id.into(),
                        address: addr.to_string(),
                        ..Node::default()
                    })
                    .collect(),
                ..Record::default()
            },
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let client = Client::builder()
        .registry(registry)
        .selector(RoundRobin::default())
        .request_timeout(Some(Duration::from_secs(1)))
        .build();
    let user = UserClient::new(NAME, client);
    // Calls the caller gives up on before their deadline say nothing of the node: it is not
    // avoided for them, so the next call that goes to it waits out its deadline.
    for _ in 0..4 {
        let call = user.call(CallRequest { name: "Ada".into() });
        let _ = tokio::time::timeout(Duration::from_millis(100), call).await;
    }
    let mut waited_out = 0;
    for _ in 0..2 {
        if user.call(CallRequest { name: "Ada".into() }).await.is_err() {
            waited_out += 1;
        }
    }
    assert_eq!(
        waited_out, 1,
        "the hung node was avoided before a call waited on it"
    );
    // Now it is.
    let mut failed = Vec::new();
    for i in 0..20 {
        if let Err(status) = user.call(CallRequest { name: "Ada".into() }).await {
            failed.push((i, status.message().to_string()));
        }
    }
    // Round robin alternates: without avoidance every other call (10) waits out its deadline.
    assert!(failed.is_empty(), "failed: {failed:?}");
}

/// A call whose node is still connecting at half its time is given to another node whose
/// connection is open, but not to one avoided for not answering: a hung node's connection is
/// open too, and the call would wait out its deadline there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_waiting_on_a_connecting_node_is_not_given_to_a_hung_one() {
    let hung = Hung::new(Duration::from_millis(1500));
    let hung_addr = on_own_thread(hung.clone()).await;
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let register = |id: &str, address: String| {
        let registry = Arc::clone(&registry);
        let record = Record {
            name: NAME.into(),
            version: "latest".into(),
            nodes: vec![Node {
                id: id.into(),
                address,
                ..Node::default()
            }],
            ..Record::default()
        };
        async move {
            registry
                .register(&record, Duration::from_secs(60))
                .await
                .unwrap();
        }
    };
    register("hung", hung_addr.to_string()).await;
    let client = Client::builder()
        .registry(Arc::clone(&registry))
        .request_timeout(Some(Duration::from_secs(1)))
        .build();
    let user = UserClient::new(NAME, client);
    // The hung node takes this call and does not answer within its deadline: it is avoided
    // from now on (for 5 s), its connection open.
    assert!(user.call(CallRequest { name: "Ada".into() }).await.is_err());
    assert_eq!(hung.calls(), 1);
    // A second node, which takes connections and never speaks HTTP/2: calls go to it (the
    // hung one is avoided) and find its connection still opening at half their time.
    register("silent", rmicro_tests::silent_listener().await).await;
    let status = user
        .call(CallRequest { name: "Bo".into() })
        .await
        .expect_err("neither node answers");
    // The hung node's thread is free again 1.5 s after it took the first call: a call given
    // to it at half of this one's time would have reached its handler by now.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        hung.calls(),
        1,
        "the call went to the hung node ({status:?})"
    );
}

/// Sends `signal` (`STOP`, `CONT`) to process `pid`.
fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

/// A node process paused (SIGSTOP) while its client gives up on calls to it: when it resumes,
/// it reads those calls and their resets in one burst, and keeps the connection (h2's default
/// limit of 20 such resets, against rapid-reset floods, closed it with every call on it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_keeps_its_connection_when_the_calls_given_up_on_meanwhile_arrive() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_test-node"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr = rmicro_tests::process::listening_address(&mut child);
    let pid = child.id();
    let client = Client::builder()
        .address(addr)
        .request_timeout(Some(Duration::from_secs(10)))
        .build();
    let user = UserClient::new(NAME, client);
    // Opens the connection.
    user.call(CallRequest { name: "Ada".into() }).await.unwrap();
    signal(pid, "STOP");
    let waiting = {
        let user = user.clone();
        tokio::spawn(async move { user.call(CallRequest { name: "Bo".into() }).await })
    };
    // Calls the paused node cannot take; each gives up after 200 ms and resets its stream.
    let given_up: Vec<_> = (0..100)
        .map(|_| {
            let user = user.clone();
            tokio::spawn(async move {
                let mut request = Request::new(CallRequest { name: "Cy".into() });
                request.set_timeout(Duration::from_millis(200));
                user.call(request).await
            })
        })
        .collect();
    for call in given_up {
        assert!(call.await.unwrap().is_err(), "the node was paused");
    }
    signal(pid, "CONT");
    let answer = waiting.await.unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        answer
            .expect("the call waiting on the paused node is answered")
            .into_inner()
            .msg,
        "Hello Bo"
    );
}
