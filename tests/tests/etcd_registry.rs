//! The etcd registry against a real etcd server on free loopback ports: go-micro v2's key and
//! JSON, selection across nodes, graceful and SIGKILL departures, etcd going away and coming
//! back, a service started before etcd, and auth.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rmicro_runtime::registry::{
    EtcdOptions, EtcdRegistry, Node, Registry, RegistryError, Service as Record,
};
use rmicro_runtime::selector::RoundRobin;
use rmicro_runtime::{Client, RunningService, Service};
use rmicro_tests::etcd::Etcd;
use rmicro_tests::fixtures::go::micro::srv::user::{
    register_user_handler, CallRequest, UserClient,
};
use rmicro_tests::fixtures::rmicro::test::hop::{register_hop_handler, HopClient, HopRequest};
use rmicro_tests::hop::HopNode;
use rmicro_tests::slow_link::SlowLink;
use rmicro_tests::user::Greeter;
use serde::Deserialize;

fn registry(etcd: &Etcd) -> Arc<dyn Registry> {
    Arc::new(EtcdRegistry::new(EtcdOptions {
        endpoints: vec![etcd.client_addr.clone()],
        dial_timeout: Duration::from_secs(1),
        ..Default::default()
    }))
}

async fn user_service(
    registry: &Arc<dyn Registry>,
    ttl: Duration,
    interval: Duration,
) -> RunningService {
    let mut svc = Service::builder("go.micro.srv.user")
        .registry(Arc::clone(registry))
        .register_ttl(ttl)
        .register_interval(interval)
        .build();
    register_user_handler(svc.server_mut(), Greeter).unwrap();
    svc.start().await.unwrap()
}

/// How long a test waits for what must happen but has no time limit of its own to check (a
/// registration reaching etcd, a watch starting): generous, for a loaded machine.
const EVENTUALLY: Duration = Duration::from_secs(15);

/// Polls `cond` every 100 ms until it holds or `limit` passes; returns how long it took.
async fn within(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while started.elapsed() < limit {
        if cond() {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Once more at the limit: on a loaded machine one look (an etcdctl run) can take seconds,
    // and the state may have come while it ran.
    if cond() {
        return started.elapsed();
    }
    panic!("{what}: not within {limit:?}");
}

fn user_keys(etcd: &Etcd) -> Vec<(String, String)> {
    etcd.get_prefix("/micro/registry/go.micro.srv.user/")
}

/// go-micro v2's registry JSON, field for field.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GoService {
    name: String,
    version: String,
    metadata: Option<HashMap<String, String>>,
    endpoints: Vec<GoEndpoint>,
    nodes: Vec<GoNode>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GoEndpoint {
    name: String,
    request: GoValue,
    response: GoValue,
    metadata: HashMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GoValue {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    values: Option<Vec<GoValue>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GoNode {
    id: String,
    address: String,
    metadata: HashMap<String, String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_writes_go_micro_v2_key_and_json() {
    let etcd = Etcd::start("layout");
    let reg = registry(&etcd);
    let running = user_service(&reg, Duration::from_secs(90), Duration::from_secs(30)).await;
    within(EVENTUALLY, "the node is registered", || {
        !user_keys(&etcd).is_empty()
    })
    .await;

    let keys = user_keys(&etcd);
    assert_eq!(keys.len(), 1);
    let (key, value) = &keys[0];
    let node_id = &running.record().nodes[0].id;
    assert_eq!(key, &format!("/micro/registry/go.micro.srv.user/{node_id}"));
    let service: GoService = serde_json::from_str(value).expect("go-micro v2 JSON");
    assert_eq!(service.name, "go.micro.srv.user");
    assert_eq!(service.version, "latest");
    assert!(service.metadata.unwrap_or_default().is_empty());
    let names: Vec<&str> = service.endpoints.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["User.Call", "User.Stream", "User.PingPong"]);
    assert_eq!(service.endpoints[0].request.name, "CallRequest");
    assert_eq!(
        service.endpoints[0].request.kind,
        "go.micro.srv.user.CallRequest"
    );
    assert!(service.endpoints[0]
        .request
        .values
        .as_ref()
        .is_none_or(Vec::is_empty));
    assert_eq!(service.endpoints[0].response.name, "CallResponse");
    assert_eq!(
        service.endpoints[1]
            .metadata
            .get("stream")
            .map(String::as_str),
        Some("true")
    );
    assert_eq!(service.nodes.len(), 1);
    assert_eq!(&service.nodes[0].id, node_id);
    assert!(node_id.starts_with("go.micro.srv.user-"));
    assert_eq!(service.nodes[0].address, running.local_addr().to_string());
    assert_eq!(
        service.nodes[0]
            .metadata
            .get("registry")
            .map(String::as_str),
        Some("etcd")
    );
    assert_eq!(
        service.nodes[0]
            .metadata
            .get("protocol")
            .map(String::as_str),
        Some("grpc")
    );

    // The key carries a lease with the register TTL.
    let lease = etcd.etcdctl(&["get", key, "-w", "fields"]).unwrap();
    let lease_line = lease.lines().find(|l| l.starts_with("\"Lease\"")).unwrap();
    assert_ne!(lease_line.trim(), "\"Lease\" : 0", "{lease}");

    // Graceful stop: gone at once.
    running.stop().await.unwrap();
    assert!(
        user_keys(&etcd).is_empty(),
        "still registered after a graceful stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_round_robin_alternates_and_random_spreads() {
    let etcd = Etcd::start("select");
    let reg = registry(&etcd);
    let mut nodes = Vec::new();
    for name in ["one", "two"] {
        let mut svc = Service::builder("hop.x").registry(Arc::clone(&reg)).build();
        register_hop_handler(
            svc.server_mut(),
            HopNode {
                name: name.into(),
                next: None,
            },
        )
        .unwrap();
        nodes.push(svc.start().await.unwrap());
    }
    // A separate registry instance, as another process would have: it learns through the watch.
    let lookup = registry(&etcd);
    let lookup2 = Arc::clone(&lookup);
    let mut two = false;
    for _ in 0..50 {
        two = lookup2
            .get_service("hop.x")
            .await
            .map(|s| s.iter().map(|s| s.nodes.len()).sum::<usize>() == 2)
            .unwrap_or(false);
        if two {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(two, "both nodes visible through the watch-fed cache");

    let rr = HopClient::new(
        "hop.x",
        Client::builder()
            .registry(Arc::clone(&lookup))
            .selector(RoundRobin::default())
            .build(),
    );
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(
            rr.relay(HopRequest::default())
                .await
                .unwrap()
                .into_inner()
                .seen[0]
                .node
                .clone(),
        );
    }
    assert!(
        seen.windows(2).all(|w| w[0] != w[1]),
        "round robin alternates: {seen:?}"
    );

    let random = HopClient::new("hop.x", Client::new(Arc::clone(&lookup)));
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
        "random picked `one` {one} of 200 times"
    );
    for n in nodes {
        n.stop().await.unwrap();
    }
}

/// Spawns the test node process against `etcd`; returns it once it prints its address.
fn spawn_node(etcd: &Etcd, ttl: &str, interval: &str) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_test-node"))
        .args([
            "--registry",
            "etcd",
            "--registry-address",
            &etcd.client_addr,
        ])
        .args([
            "--register-ttl",
            ttl,
            "--register-interval",
            interval,
            "--registry-timeout",
            "1s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = rmicro_tests::process::listening_address(&mut child);
    (child, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_deregisters_at_once_and_sigkill_expires_within_the_ttl() {
    let etcd = Etcd::start("departures");

    let (mut child, addr) = spawn_node(&etcd, "3s", "1s");
    within(EVENTUALLY, "registered", || {
        user_keys(&etcd).iter().any(|(_, v)| v.contains(&addr))
    })
    .await;
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "graceful exit: {status}");
    assert!(
        user_keys(&etcd).is_empty(),
        "deregistered before the process exited"
    );

    let (mut child, addr) = spawn_node(&etcd, "3s", "1s");
    within(EVENTUALLY, "registered", || {
        user_keys(&etcd).iter().any(|(_, v)| v.contains(&addr))
    })
    .await;
    child.kill().unwrap(); // SIGKILL: no chance to deregister
    child.wait().unwrap();
    let took = within(
        Duration::from_secs(6),
        "the killed node's key expires",
        || user_keys(&etcd).is_empty(),
    )
    .await;
    assert!(
        took <= Duration::from_millis(4500),
        "gone after {took:?}, TTL 3 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_down_then_back_cached_nodes_keep_serving_and_the_node_registers_again() {
    let mut etcd = Etcd::start("outage");
    let reg = registry(&etcd);
    let running = user_service(&reg, Duration::from_secs(3), Duration::from_secs(2)).await;
    let lookup = registry(&etcd);
    let user = UserClient::new("go.micro.srv.user", Client::new(Arc::clone(&lookup)));
    let mut primed = false;
    for _ in 0..50 {
        if user.call(CallRequest { name: "a".into() }).await.is_ok() {
            primed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(primed, "the service is reachable through etcd");

    etcd.stop();
    // Calls keep working from the cache for longer than the TTL.
    let outage = Instant::now();
    let mut calls = 0;
    while outage.elapsed() < Duration::from_secs(4) {
        let reply = user
            .call(CallRequest {
                name: format!("c{calls}"),
            })
            .await;
        assert!(
            reply.is_ok(),
            "call {calls} failed while etcd was down: {reply:?}"
        );
        calls += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(calls >= 20);

    etcd.resume();
    let addr = running.local_addr().to_string();
    // Registered again within one register interval (2 s), plus time for the restarted etcd.
    within(
        Duration::from_secs(4),
        "registered again after etcd came back",
        || user_keys(&etcd).iter().any(|(_, v)| v.contains(&addr)),
    )
    .await;
    // And kept alive: still there after twice the TTL.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        user_keys(&etcd).iter().any(|(_, v)| v.contains(&addr)),
        "the new lease is kept alive"
    );
    running.stop().await.unwrap();
}

/// etcd restarted with its data wiped holds no node: each registers again as soon as its
/// keepalive stream breaks, not on its next register interval (30 s here, as go-micro's
/// default; every request to it was a 503 until then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_registers_again_at_once_when_etcd_comes_back_empty() {
    // The keepalive stream broke with the old etcd; registering again backs off 1 s, 2 s, 4 s
    // while etcd is away.
    registers_again_in_an_empty_etcd("wiped", Duration::from_millis(500)).await;
}

/// etcd away for longer than a few seconds (rescheduled, restored from nothing) comes back
/// empty: the node registers again within seconds of etcd answering, not on its next register
/// interval (30 s, as go-micro's default; it was missing from every lookup until then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_registers_again_soon_after_a_long_outage_of_an_etcd_that_comes_back_empty() {
    registers_again_in_an_empty_etcd("long-wipe", Duration::from_secs(16)).await;
}

/// A node registered (register interval 30 s) in etcd `name`, which is wiped and away for
/// `away`: the node must be in the empty etcd again within 8 s of its coming back.
async fn registers_again_in_an_empty_etcd(name: &str, away: Duration) {
    let mut etcd = Etcd::start(name);
    let reg = registry(&etcd);
    let running = user_service(&reg, Duration::from_secs(90), Duration::from_secs(30)).await;
    let addr = running.local_addr().to_string();
    within(EVENTUALLY, "registered", || {
        user_keys(&etcd).iter().any(|(_, v)| v.contains(&addr))
    })
    .await;

    etcd.wipe();
    tokio::time::sleep(away).await;
    etcd.resume();
    let took = within(
        Duration::from_secs(8),
        "registered again in the empty etcd",
        || user_keys(&etcd).iter().any(|(_, v)| v.contains(&addr)),
    )
    .await;
    assert!(took < Duration::from_secs(8));
    running.stop().await.unwrap();
}

/// An etcd named `name` with a little history (so that, once emptied, its revision is older
/// than this one's), a node registered by hand through `reg` (so that the test says when it
/// registers again), and another process's registry, `observer`, that has seen the node.
async fn lost_data_setup(
    name: &str,
    id: &str,
) -> (Etcd, Arc<dyn Registry>, Arc<dyn Registry>, Record) {
    let etcd = Etcd::start(name);
    let reg = registry(&etcd);
    let observer = registry(&etcd);
    let record = Record {
        name: "go.micro.srv.user".into(),
        version: "latest".into(),
        nodes: vec![Node {
            id: id.into(),
            address: "127.0.0.1:1".into(),
            ..Node::default()
        }],
        ..Record::default()
    };
    reg.register(&record, Duration::from_secs(60))
        .await
        .unwrap();
    for i in 0..5 {
        let key = format!("/rmicro-test/history/{i}");
        let put = Command::new("etcdctl")
            .args(["--endpoints", &etcd.client_addr, "put", &key, "x"])
            .env("ETCDCTL_API", "3")
            .output()
            .unwrap();
        assert!(put.status.success(), "{put:?}");
    }
    let started = Instant::now();
    while user_nodes(&observer).await == 0 {
        assert!(
            started.elapsed() < EVENTUALLY,
            "the observer never saw the node"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (etcd, reg, observer, record)
}

/// How many nodes of `go.micro.srv.user` `registry` finds (0 when the lookup fails).
async fn user_nodes(registry: &Arc<dyn Registry>) -> usize {
    registry
        .get_service("go.micro.srv.user")
        .await
        .map_or(0, |records| records.iter().map(|r| r.nodes.len()).sum())
}

/// Writes a record of service `go.micro.srv.sentinel` straight into `etcd` and waits until
/// `observer` finds it: from then on, `observer` follows this etcd (after an outage: it has
/// listed it again).
async fn sentinel_seen(etcd: &Etcd, observer: &Arc<dyn Registry>) {
    let value = r#"{"name":"go.micro.srv.sentinel","version":"latest","metadata":null,"endpoints":[],"nodes":[{"id":"s-1","address":"127.0.0.1:2","metadata":null}]}"#;
    let put = Command::new("etcdctl")
        .args([
            "--endpoints",
            &etcd.client_addr,
            "put",
            "/micro/registry/go.micro.srv.sentinel/s-1",
            value,
        ])
        .env("ETCDCTL_API", "3")
        .output()
        .unwrap();
    assert!(put.status.success(), "{put:?}");
    let started = Instant::now();
    while observer
        .get_service("go.micro.srv.sentinel")
        .await
        .map_or(true, |records| records.is_empty())
    {
        assert!(
            started.elapsed() < EVENTUALLY,
            "the observer never saw the sentinel"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// etcd wiped and back empty (an older revision than it had): another process's registry (the
/// gateway's, a client's) keeps the nodes it knew until they register again, rather than find
/// none for the second or two that takes (every request through the gateway was a 503 then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_are_kept_while_they_register_again_in_an_etcd_that_lost_its_data() {
    let (mut etcd, reg, observer, record) = lost_data_setup("lost-data", "held-1").await;
    let found = |observer: &Arc<dyn Registry>| {
        let observer = Arc::clone(observer);
        async move { user_nodes(&observer).await > 0 }
    };

    etcd.wipe();
    tokio::time::sleep(Duration::from_millis(500)).await;
    etcd.resume();
    // The observer has listed the emptied etcd (it finds what was written there since)...
    sentinel_seen(&etcd, &observer).await;
    assert!(found(&observer).await, "the node was dropped at once");
    // ...and the node registers again 2 s after etcd is back (its retry's backoff); meanwhile,
    // and after, the observer still finds it.
    let resumed = Instant::now();
    let mut registered = false;
    let mut missing = 0;
    while resumed.elapsed() < Duration::from_secs(4) {
        if !registered && resumed.elapsed() > Duration::from_secs(2) {
            reg.register(&record, Duration::from_secs(60))
                .await
                .unwrap();
            registered = true;
        }
        if !found(&observer).await {
            missing += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(missing, 0, "lookups found no node {missing} times");
    // Held no longer: the record is etcd's again, and goes when its node leaves.
    reg.deregister(&record).await.unwrap();
    let gone = Instant::now();
    while found(&observer).await {
        assert!(gone.elapsed() < EVENTUALLY, "the deregistered node stayed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A node kept after etcd lost its data that does not register again is dropped once the hold
/// (10 s) is over, and watchers hear that it left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_kept_after_etcd_lost_its_data_goes_when_it_does_not_come_back() {
    let (mut etcd, reg, observer, _) = lost_data_setup("lost-for-good", "gone-1").await;
    let count = |observer: &Arc<dyn Registry>| {
        let observer = Arc::clone(observer);
        async move { user_nodes(&observer).await }
    };
    let mut events = observer.watch(Some("go.micro.srv.user")).await.unwrap();
    drop(reg);
    etcd.wipe();
    tokio::time::sleep(Duration::from_millis(500)).await;
    etcd.resume();
    sentinel_seen(&etcd, &observer).await;
    assert_eq!(
        count(&observer).await,
        1,
        "kept while it may register again"
    );
    let deleted = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match tokio_stream::StreamExt::next(&mut events).await {
                Some(event) if event.action == rmicro_runtime::registry::Action::Delete => {
                    break event;
                }
                Some(_) => {}
                None => panic!("the watch ended"),
            }
        }
    })
    .await
    .expect("a delete within the hold");
    assert_eq!(deleted.service.nodes[0].id, "gone-1");
    assert_eq!(count(&observer).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_started_before_etcd_registers_once_etcd_is_up() {
    let mut etcd = Etcd::planned("late");
    let reg = registry(&etcd);
    let started = Instant::now();
    let running = user_service(&reg, Duration::from_secs(5), Duration::from_secs(2)).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "start does not wait for etcd"
    );
    // It serves already.
    let direct = UserClient::new("x", Client::with_address(running.local_addr().to_string()));
    assert_eq!(
        direct
            .call(CallRequest {
                name: "early".into()
            })
            .await
            .unwrap()
            .into_inner()
            .msg,
        "Hello early"
    );

    etcd.resume();
    let addr = running.local_addr().to_string();
    within(Duration::from_secs(6), "registered once etcd is up", || {
        user_keys(&etcd).iter().any(|(_, v)| v.contains(&addr))
    })
    .await;
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_works_with_user_and_password_and_fails_clearly_without() {
    let etcd = Etcd::start("auth");
    etcd.etcdctl(&["user", "add", "root:s3cret"]).unwrap();
    etcd.etcdctl(&["auth", "enable"]).unwrap();

    let authed: Arc<dyn Registry> = Arc::new(EtcdRegistry::new(EtcdOptions {
        endpoints: vec![etcd.client_addr.clone()],
        user: Some(("root".into(), "s3cret".into())),
        dial_timeout: Duration::from_secs(2),
        tls: None,
    }));
    let running = user_service(&authed, Duration::from_secs(30), Duration::from_secs(10)).await;
    let mut found = false;
    for _ in 0..50 {
        if authed
            .get_service("go.micro.srv.user")
            .await
            .map(|s| !s.is_empty())
            .unwrap_or(false)
        {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(found, "registered and listed with credentials");

    let anonymous = registry(&etcd);
    let err = anonymous
        .register(running.record(), Duration::from_secs(30))
        .await
        .unwrap_err();
    match &err {
        RegistryError::Auth(msg) => assert!(
            msg.contains("etcd has auth enabled: pass --registry-username and --registry-password"),
            "{msg}"
        ),
        other => panic!("expected an auth error, got {other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with("registry authentication failed: etcd at 127.0.0.1:"),
        "{err}"
    );

    let wrong: Arc<dyn Registry> = Arc::new(EtcdRegistry::new(EtcdOptions {
        endpoints: vec![etcd.client_addr.clone()],
        user: Some(("root".into(), "wrong".into())),
        dial_timeout: Duration::from_secs(2),
        tls: None,
    }));
    // A lookup says the credentials were refused, not that etcd "has not answered yet".
    let err = wrong.list_services().await.unwrap_err();
    match &err {
        RegistryError::Auth(msg) => assert!(
            msg.contains("check --registry-username/--registry-password"),
            "{msg}"
        ),
        other => panic!("expected an auth error, got {other:?}"),
    }
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates() {
    use rmicro_runtime::registry::EtcdTls;
    use rmicro_tests::etcd::{TestCerts, TlsEtcd};

    let certs = TestCerts::new("registry");
    let etcd = TlsEtcd::start("registry", &certs);
    let tls = EtcdTls {
        ca_pem: certs.read("ca.pem"),
        identity: Some((certs.read("client.pem"), certs.read("client.key"))),
        domain: Some("localhost".into()),
    };
    let secure: Arc<dyn Registry> = Arc::new(EtcdRegistry::new(EtcdOptions {
        endpoints: vec![etcd.client_addr.clone()],
        dial_timeout: Duration::from_secs(3),
        tls: Some(tls),
        ..Default::default()
    }));
    let running = user_service(&secure, Duration::from_secs(30), Duration::from_secs(10)).await;
    let mut found = false;
    for _ in 0..50 {
        if secure
            .get_service("go.micro.srv.user")
            .await
            .map(|s| !s.is_empty())
            .unwrap_or(false)
        {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(found, "registered and listed over TLS");

    // Plain TCP to the TLS port does not work, and says the registry is unreachable.
    let plain: Arc<dyn Registry> = Arc::new(EtcdRegistry::new(EtcdOptions {
        endpoints: vec![etcd.client_addr.clone()],
        dial_timeout: Duration::from_secs(2),
        ..Default::default()
    }));
    let err = plain
        .register(running.record(), Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unreachable(_)), "{err:?}");
    // A lookup says why, and what to do, without waiting out the dial timeout: etcd closing
    // every connection at once will not change by waiting.
    let started = std::time::Instant::now();
    let err = plain
        .get_service("go.micro.srv.user")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("etcd at {}: ", etcd.client_addr))
            && err.contains("give --registry-tls-ca"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    running.stop().await.unwrap();
}

/// TLS to an etcd serving plain TCP: a lookup says etcd closed the handshake and what to do,
/// not only that it did not answer in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_a_plain_etcd_says_so() {
    use rmicro_runtime::registry::EtcdTls;
    use rmicro_tests::etcd::TestCerts;

    let etcd = Etcd::start("tls-to-plain");
    let certs = TestCerts::new("tls-to-plain");
    let registry = EtcdRegistry::new(EtcdOptions {
        endpoints: vec![etcd.client_addr.clone()],
        dial_timeout: Duration::from_secs(2),
        tls: Some(EtcdTls {
            ca_pem: certs.read("ca.pem"),
            identity: None,
            domain: Some("localhost".into()),
        }),
        ..Default::default()
    });
    let err = registry
        .get_service("go.micro.srv.user")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("during the TLS handshake")
            && err.contains("leave out the --registry-tls-* flags"),
        "{err}"
    );

    // TLS asked for by the address alone: the same hint, not "give --registry-tls-ca".
    let registry = EtcdRegistry::new(EtcdOptions {
        endpoints: vec![format!("https://{}", etcd.client_addr)],
        dial_timeout: Duration::from_secs(2),
        ..Default::default()
    });
    let err = registry
        .get_service("go.micro.srv.user")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("during the TLS handshake") && err.contains("any https:// in its address"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_written_node_with_an_unusable_address_does_not_fail_calls() {
    let etcd = Etcd::start("badaddr");
    let reg = registry(&etcd);
    let running = user_service(&reg, Duration::from_secs(30), Duration::from_secs(10)).await;
    // Records written by hand (or by another tool) next to the real node: an address without
    // a port, and an empty one.
    for (id, address) in [("noport", "127.0.0.1"), ("empty", "")] {
        let value = format!(
            r#"{{"name":"go.micro.srv.user","version":"latest","nodes":[{{"id":"{id}","address":"{address}"}}]}}"#
        );
        etcd.etcdctl(&[
            "put",
            &format!("/micro/registry/go.micro.srv.user/{id}"),
            &value,
        ])
        .unwrap();
    }
    let lookup = registry(&etcd);
    within(EVENTUALLY, "three records", || user_keys(&etcd).len() == 3).await;
    let mut three = false;
    let deadline = Instant::now() + EVENTUALLY;
    while Instant::now() < deadline {
        three = lookup
            .get_service("go.micro.srv.user")
            .await
            .map(|s| s.iter().map(|s| s.nodes.len()).sum::<usize>() == 3)
            .unwrap_or(false);
        if three {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(three, "the cache sees all three records");

    for selector in ["roundrobin", "random"] {
        let mut builder = Client::builder();
        builder.registry(Arc::clone(&lookup));
        if selector == "roundrobin" {
            builder.selector(RoundRobin::default());
        }
        let user = UserClient::new("go.micro.srv.user", builder.build());
        for i in 0..12 {
            let reply = user
                .call(CallRequest {
                    name: format!("n{i}"),
                })
                .await;
            assert!(
                reply.is_ok(),
                "{selector} call {i} failed on a bad record: {reply:?}"
            );
        }
    }

    // With only bad records left, the caller learns which node is wrong and how.
    running.stop().await.unwrap();
    let user = UserClient::new(
        "go.micro.srv.user",
        Client::builder()
            .registry(Arc::clone(&lookup))
            .selector(RoundRobin::default())
            .build(),
    );
    let mut err = None;
    let deadline = Instant::now() + EVENTUALLY;
    while Instant::now() < deadline {
        match user.call(CallRequest { name: "x".into() }).await {
            Err(status) if status.message().contains("not a usable node address") => {
                err = Some(status);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let err = err.expect("a bad-address error once only bad records are left");
    assert!(err.message().contains("go.micro.srv.user"), "{err:?}");
}

#[tokio::test]
async fn a_node_cache_hears_of_a_delete_lost_in_a_burst_of_changes() {
    use rmicro_runtime::registry::NodeCache;
    let etcd = Etcd::start("burst");
    let mut kv = etcd_client::Client::connect([etcd.client_addr.as_str()], None)
        .await
        .unwrap();
    // One node of the service the cache follows, and many nodes of another service, whose
    // keys sort after it.
    let record = |name: &str, id: &str| {
        format!(
            r#"{{"name":"{name}","version":"latest","nodes":[{{"id":"{id}","address":"127.0.0.1:1"}}]}}"#
        )
    };
    kv.put(
        "/micro/registry/go.micro.srv.user/a",
        record("go.micro.srv.user", "a"),
        None,
    )
    .await
    .unwrap();
    for i in 0..1500 {
        kv.put(
            format!("/micro/registry/zzz.bulk/n{i}"),
            record("zzz.bulk", &format!("n{i}")),
            None,
        )
        .await
        .unwrap();
    }

    let cache = NodeCache::new(registry(&etcd), Duration::from_secs(3600));
    let deadline = Instant::now() + Duration::from_secs(10);
    // Until the snapshot is shared, i.e. the cache's watch runs.
    loop {
        let (a, b) = (
            cache.nodes("go.micro.srv.user").await.unwrap(),
            cache.nodes("go.micro.srv.user").await.unwrap(),
        );
        if a.len() == 1 && Arc::ptr_eq(&a, &b) {
            break;
        }
        assert!(Instant::now() < deadline, "the cache never settled: {a:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Every node leaves at once (one revision, one watch response: the user node's delete
    // first, then 1,500 others).
    kv.delete(
        "/micro/registry/",
        Some(etcd_client::DeleteOptions::new().with_prefix()),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let nodes = cache.nodes("go.micro.srv.user").await.unwrap();
        if nodes.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cache still serves a node deleted from etcd: {nodes:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A registry over gRPC's default 4 MiB message limit (many go-micro records, each carrying its
/// endpoints' type trees) is still read: Go's etcd client reads up to 2 GiB, so go-micro services
/// on the same etcd see each other, and rmicro must see them too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_over_four_mib_is_read() {
    let etcd = Etcd::start("big");
    let mut kv = etcd_client::Client::connect([etcd.client_addr.as_str()], None)
        .await
        .unwrap();
    // Six records of about 1 MiB (etcd takes requests up to 1.5 MiB): 6 MiB in all.
    let filler = "x".repeat(1000);
    for i in 0..6 {
        let metadata: HashMap<String, String> = (0..1000)
            .map(|j| (format!("k{j}"), filler.clone()))
            .collect();
        let record = serde_json::json!({
            "name": format!("go.micro.srv.big{i}"),
            "version": "latest",
            "metadata": metadata,
            "nodes": [{"id": "n", "address": "127.0.0.1:1"}],
        });
        kv.put(
            format!("/micro/registry/go.micro.srv.big{i}/n"),
            record.to_string(),
            None,
        )
        .await
        .unwrap();
    }
    let reg: Arc<dyn Registry> = Arc::new(EtcdRegistry::new(EtcdOptions {
        endpoints: vec![etcd.client_addr.clone()],
        dial_timeout: Duration::from_secs(10),
        ..Default::default()
    }));
    let running = user_service(&reg, Duration::from_secs(30), Duration::from_secs(10)).await;

    // The service registers in the background: until its record is listed too.
    let deadline = Instant::now() + Duration::from_secs(10);
    let services = loop {
        let services = reg
            .list_services()
            .await
            .expect("a 6 MiB registry is listed");
        if services.len() == 7 || Instant::now() > deadline {
            break services;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "go.micro.srv.big0",
            "go.micro.srv.big1",
            "go.micro.srv.big2",
            "go.micro.srv.big3",
            "go.micro.srv.big4",
            "go.micro.srv.big5",
            "go.micro.srv.user",
        ]
    );
    // Calls by name find the service among them.
    let user = UserClient::new(
        "go.micro.srv.user",
        Client::builder().registry(Arc::clone(&reg)).build(),
    );
    let reply = user.call(CallRequest { name: "big".into() }).await;
    assert_eq!(reply.unwrap().into_inner().msg, "Hello big");
    running.stop().await.unwrap();
}

/// A node's key overwritten with something that is not a go-micro service (by hand, by another
/// tool) no longer holds that node: the cache drops it and watchers hear of its departure, as a
/// registry read afresh (another process, or this one after an etcd outage) would have it,
/// instead of serving the old record for as long as the watch lasts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_overwritten_with_garbage_is_dropped_and_reported_deleted() {
    use tokio_stream::StreamExt;
    let etcd = Etcd::start("garbage");
    let key = "/micro/registry/go.micro.srv.hand/n1";
    let record = r#"{"name":"go.micro.srv.hand","version":"latest","nodes":[{"id":"n1","address":"127.0.0.1:1"}]}"#;
    etcd.etcdctl(&["put", key, record]).unwrap();
    let reg = registry(&etcd);
    let nodes = |reg: &Arc<dyn Registry>| {
        let reg = Arc::clone(reg);
        async move {
            reg.get_service("go.micro.srv.hand")
                .await
                .unwrap()
                .iter()
                .map(|s| s.nodes.len())
                .sum::<usize>()
        }
    };
    assert_eq!(nodes(&reg).await, 1);
    let mut watch = reg.watch(Some("go.micro.srv.hand")).await.unwrap();

    etcd.etcdctl(&["put", key, "not a service"]).unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("a change within 10 s")
        .expect("the watch goes on");
    assert_eq!(event.action, rmicro_runtime::registry::Action::Delete);
    assert_eq!(event.service.nodes[0].id, "n1");
    assert_eq!(
        nodes(&reg).await,
        0,
        "the overwritten record is still served"
    );
    // As a registry that reads etcd afresh sees it.
    assert_eq!(nodes(&registry(&etcd)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_key_deleted_behind_the_services_back_is_written_again() {
    let etcd = Etcd::start("deleted");
    let reg = registry(&etcd);
    let running = user_service(&reg, Duration::from_secs(30), Duration::from_secs(1)).await;
    let addr = running.local_addr().to_string();
    let registered = || user_keys(&etcd).iter().any(|(_, v)| v.contains(&addr));
    within(EVENTUALLY, "registered", registered).await;

    // An operator (or a tool) deletes the key; the lease stays alive.
    let key = format!(
        "/micro/registry/go.micro.srv.user/{}",
        running.record().nodes[0].id
    );
    etcd.etcdctl(&["del", &key]).unwrap();
    assert!(!registered());
    // Written again within a register interval or two.
    within(
        Duration::from_secs(4),
        "the deleted key is written again",
        registered,
    )
    .await;
    // With its lease: it still goes at a graceful stop and expires after a crash.
    let fields = etcd.etcdctl(&["get", &key, "-w", "fields"]).unwrap();
    assert!(
        fields
            .lines()
            .any(|l| l.starts_with("\"Lease\"") && l.trim() != "\"Lease\" : 0"),
        "{fields}"
    );
    running.stop().await.unwrap();
    assert!(user_keys(&etcd).is_empty());
}

/// Two processes registering one node id (a replacement started before the process it
/// replaces stops, keeping the id): the later registration stands. The earlier process's
/// re-registration does not take the key back, and its deregistration at its stop does not
/// remove the replacement's record (before, the replacement was missing from every lookup until
/// its next register interval).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacement_keeping_the_node_id_stays_registered_when_the_old_process_stops() {
    let etcd = Etcd::start("same-id");
    let record = |address: &str| {
        let value = format!(
            r#"{{"name":"go.micro.srv.user","version":"latest","nodes":[{{"id":"user-0","address":"{address}"}}]}}"#
        );
        serde_json::from_str::<rmicro_runtime::registry::Service>(&value).unwrap()
    };
    let (old, new) = (record("127.0.0.1:1001"), record("127.0.0.1:1002"));
    let (old_reg, new_reg) = (registry(&etcd), registry(&etcd));
    let ttl = Duration::from_secs(30);
    let stored = || {
        let keys = user_keys(&etcd);
        assert!(keys.len() <= 1, "{keys:?}");
        keys.first().map(|(_, v)| v.clone()).unwrap_or_default()
    };
    old_reg.register(&old, ttl).await.unwrap();
    assert!(stored().contains(":1001"), "{}", stored());
    new_reg.register(&new, ttl).await.unwrap();
    assert!(stored().contains(":1002"), "{}", stored());
    // The old process's register interval comes round.
    old_reg.register(&old, ttl).await.unwrap();
    assert!(stored().contains(":1002"), "taken back: {}", stored());
    // It stops.
    old_reg.deregister(&old).await.unwrap();
    assert!(stored().contains(":1002"), "removed: {}", stored());
    // The replacement's own stop removes it.
    new_reg.deregister(&new).await.unwrap();
    assert_eq!(stored(), "");
}

/// A service dropped without `stop` (a task holding it cancelled, an early return) stops
/// serving; it must not stay registered, kept alive by the registry's keepalive for as long as
/// the process lives, with every call sent to it refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_dropped_without_stop_leaves_the_registry() {
    let etcd = Etcd::start("dropped-service");
    let reg = registry(&etcd);
    let running = user_service(&reg, Duration::from_secs(3), Duration::from_secs(1)).await;
    let addr = running.local_addr().to_string();
    let registered = || user_keys(&etcd).iter().any(|(_, v)| v.contains(&addr));
    within(EVENTUALLY, "registered", registered).await;

    drop(running);
    // The registry (and its keepalives) lives on, as in any process that goes on running.
    within(
        Duration::from_secs(8),
        "the dropped service leaves the registry",
        || !registered(),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!registered(), "registered again after it was dropped");
    drop(reg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_deregistration_failed_is_no_longer_kept_alive() {
    let etcd = Etcd::start("stalled");
    let reg = registry(&etcd); // dial timeout 1 s
    let running = user_service(&reg, Duration::from_secs(3), Duration::from_secs(1)).await;
    let addr = running.local_addr().to_string();
    let registered = || user_keys(&etcd).iter().any(|(_, v)| v.contains(&addr));
    within(EVENTUALLY, "registered", registered).await;

    // etcd stalls while the node stops: the delete times out.
    etcd.pause();
    running.stop().await.unwrap();
    etcd.unpause();
    // Nothing keeps the node alive any more: it expires with its TTL (3 s).
    within(
        Duration::from_secs(6),
        "the stopped node's key expires",
        || !registered(),
    )
    .await;
}

/// A gauge or counter from etcd's `/metrics`.
fn etcd_metric(etcd: &Etcd, name: &str) -> f64 {
    let body = rmicro_tests::http::get(&etcd.client_addr, "/metrics").body;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in etcd's /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_registry_stops_its_watch_and_its_keepalives() {
    use rmicro_runtime::registry::{Node, Service as Record};
    use tokio_stream::StreamExt;
    let etcd = Etcd::start("dropped");
    let reg = registry(&etcd);
    let record = Record {
        name: "go.micro.srv.user".into(),
        version: "latest".into(),
        nodes: vec![Node {
            id: "dropped".into(),
            address: "127.0.0.1:1".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    // A node kept alive (TTL 2 s), the registry's watch running, and a watcher on it.
    reg.register(&record, Duration::from_secs(2)).await.unwrap();
    assert_eq!(reg.get_service("go.micro.srv.user").await.unwrap().len(), 1);
    let mut events = reg.watch(None).await.unwrap();
    let watchers = || etcd_metric(&etcd, "etcd_debugging_mvcc_watcher_total");
    within(EVENTUALLY, "etcd sees the registry's watch", || {
        watchers() == 1.0
    })
    .await;
    let registered = || !user_keys(&etcd).is_empty();
    // Still there after its TTL: kept alive.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        registered(),
        "the node is kept alive while the registry lives"
    );

    // The last handle goes (no deregistration: as a process that forgot to stop its service).
    drop(reg);
    within(EVENTUALLY, "etcd sees the watch go away", || {
        watchers() == 0.0
    })
    .await;
    let ended = tokio::time::timeout(EVENTUALLY, events.next()).await;
    assert!(
        matches!(ended, Ok(None)),
        "a watcher of a dropped registry does not end: {ended:?}"
    );
    // Nothing keeps the node alive any more: its key expires with the lease.
    within(
        Duration::from_secs(8),
        "the node's key expires once the registry is dropped",
        || !registered(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_requires_a_leader_so_a_member_that_lost_it_does_not_keep_it_silent() {
    use rmicro_tests::etcd::EtcdCluster;
    // Two members: with one frozen, the other has no quorum and so no leader (as a member cut
    // off from the rest of its cluster). The registry talks to that other member only.
    let cluster = EtcdCluster::start("leader", 2);
    let (member, other) = (&cluster.members[0], &cluster.members[1]);
    let reg = registry(member);
    let running = user_service(&reg, Duration::from_secs(30), Duration::from_secs(30)).await;
    let addr = running.local_addr().to_string();
    // A lookup starts the watch that feeds the registry's cache; the watch brings the node.
    let deadline = Instant::now() + Duration::from_secs(10);
    while reg
        .get_service("go.micro.srv.user")
        .await
        .unwrap()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the node never showed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let watchers = || etcd_metric(member, "etcd_debugging_mvcc_watcher_total");
    within(Duration::from_secs(10), "the registry watches", || {
        watchers() == 1.0
    })
    .await;

    other.pause();
    within(
        Duration::from_secs(10),
        "the member loses its leader",
        || etcd_metric(member, "etcd_server_has_leader") == 0.0,
    )
    .await;
    // etcd cancels a watch that requires a leader a few election timeouts (1 s) after its
    // member lost it; a watch that does not require one stays open and silent.
    within(
        Duration::from_secs(15),
        "etcd cancels the watch of a member without a leader",
        || watchers() == 0.0,
    )
    .await;
    // Lookups meanwhile answer with the last known nodes.
    let nodes = reg.get_service("go.micro.srv.user").await.unwrap();
    assert_eq!(nodes[0].nodes[0].address, addr);

    other.unpause();
    within(
        Duration::from_secs(20),
        "the watch starts again once the member has a leader",
        || watchers() == 1.0,
    )
    .await;
    running.stop().await.unwrap();
}

/// A registry whose watch ran on a runtime that has since shut down (a test's runtime, a
/// gateway worker that stopped) starts it again on the runtime that uses it next, rather than
/// answer from a cache that nothing updates any more.
#[test]
fn a_watch_whose_runtime_is_gone_is_started_again() {
    let etcd = Etcd::start("runtime-gone");
    let reg = registry(&etcd);
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    };
    // The first lookup starts the watch on this runtime, which then goes away.
    let first = runtime();
    first.block_on(async {
        assert!(reg
            .get_service("go.micro.srv.user")
            .await
            .unwrap()
            .is_empty());
    });
    drop(first);

    let second = runtime();
    second.block_on(async {
        let running = user_service(&reg, Duration::from_secs(30), Duration::from_secs(30)).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = reg.get_service("go.micro.srv.user").await.unwrap();
            if !found.is_empty() {
                assert_eq!(found[0].nodes[0].address, running.local_addr().to_string());
                break;
            }
            assert!(
                Instant::now() < deadline,
                "lookups never saw the node: nothing keeps the registry's cache synced; keys {:?}",
                user_keys(&etcd)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        running.stop().await.unwrap();
    });
}

/// The ids of the leases etcd holds (hex, as etcdctl prints them).
fn leases(etcd: &Etcd) -> Vec<String> {
    let out = etcd.etcdctl(&["lease", "list"]).unwrap();
    out.lines().skip(1).map(str::to_string).collect()
}

/// A user service on a registry that reaches `etcd` through `link` (whose delay the test
/// sets), with a dial timeout that a delayed request fits in, a TTL no test outlives and a
/// 1 s register interval.
async fn user_service_through(link: &SlowLink) -> RunningService {
    let reg: Arc<dyn Registry> = Arc::new(EtcdRegistry::new(EtcdOptions {
        endpoints: vec![link.addr.clone()],
        dial_timeout: Duration::from_secs(5),
        ..Default::default()
    }));
    user_service(&reg, Duration::from_secs(60), Duration::from_secs(1)).await
}

/// How long the link holds a request back in the tests of a stop during a registration, and
/// when, after etcd granted the registration's lease, the stop lands: while the put that
/// follows the grant is on the wire, well before etcd hears that it was given up (so etcd
/// applies it, as it would any put that reached it first).
const ON_THE_WIRE: Duration = Duration::from_millis(1000);
const STOP_AFTER_GRANT: Duration = Duration::from_millis(450);

/// Waits until etcd holds a lease other than `known`; returns its id.
async fn a_new_lease(etcd: &Etcd, known: &[String]) -> String {
    let started = Instant::now();
    loop {
        if let Some(id) = leases(etcd).into_iter().find(|id| !known.contains(id)) {
            return id;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no lease granted within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stops `running`, at most 10 s (the deregistration's 5 s bound and the grace), and says
/// what etcd still holds of the user service and of leases.
async fn stop_and_look(running: RunningService, etcd: &Etcd) -> (Vec<String>, Vec<String>) {
    tokio::time::timeout(Duration::from_secs(10), running.stop())
        .await
        .expect("stop returned within 10 s")
        .unwrap();
    let keys = user_keys(etcd).into_iter().map(|(key, _)| key).collect();
    (keys, leases(etcd))
}

/// A service stopped while its first registration is on its way (the lease granted, the put
/// still on the wire): the registration is cut short, but its put reaches etcd anyway. Once
/// `stop` returns, neither the key nor the lease (which etcd would keep for the whole TTL, and
/// which nothing would ever revoke) is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_the_first_registration_leaves_neither_key_nor_lease() {
    let etcd = Etcd::start("stop-first");
    let link = SlowLink::start(&etcd.client_addr).await;
    link.set_delay(ON_THE_WIRE);
    let running = user_service_through(&link).await;
    a_new_lease(&etcd, &[]).await;
    tokio::time::sleep(STOP_AFTER_GRANT).await;
    assert!(
        user_keys(&etcd).is_empty(),
        "the put reached etcd before the stop"
    );

    let (keys, leases) = stop_and_look(running, &etcd).await;
    assert!(keys.is_empty(), "still registered after stop: {keys:?}");
    assert!(leases.is_empty(), "leases left after stop: {leases:?}");
}

/// A service stopped while it registers again after its lease was lost (revoked behind its
/// back, as by an operator, or expired while etcd was away): the new lease is granted and the
/// put on it is on the wire. The node must not stay listed on that lease, for its TTL, after
/// `stop` returned (the deregistration's delete only removes a key on the lease it knew of).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_registering_again_on_a_new_lease_leaves_neither_key_nor_lease() {
    let etcd = Etcd::start("stop-again");
    let link = SlowLink::start(&etcd.client_addr).await;
    let running = user_service_through(&link).await;
    within(EVENTUALLY, "registered", || !user_keys(&etcd).is_empty()).await;
    let first = leases(&etcd);
    assert_eq!(first.len(), 1, "{first:?}");

    link.set_delay(ON_THE_WIRE);
    etcd.etcdctl(&["lease", "revoke", &first[0]]).unwrap();
    assert!(user_keys(&etcd).is_empty());
    // The next register interval finds the key gone, the lease with it, and takes a new one.
    a_new_lease(&etcd, &first).await;
    tokio::time::sleep(STOP_AFTER_GRANT).await;
    assert!(
        user_keys(&etcd).is_empty(),
        "the put reached etcd before the stop"
    );

    let (keys, leases) = stop_and_look(running, &etcd).await;
    assert!(keys.is_empty(), "still registered after stop: {keys:?}");
    assert!(leases.is_empty(), "leases left after stop: {leases:?}");
}

/// Deregistering revokes the node's lease: one etcd no longer holds (revoked by an operator,
/// expired while etcd was away) is no failure, so a stop still serves on for its grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregistering_a_node_whose_lease_is_gone_succeeds() {
    let etcd = Etcd::start("lease-gone");
    let reg = registry(&etcd);
    let record: rmicro_runtime::registry::Service = serde_json::from_str(
        r#"{"name":"go.micro.srv.user","nodes":[{"id":"user-0","address":"127.0.0.1:1"}]}"#,
    )
    .unwrap();
    reg.register(&record, Duration::from_secs(30))
        .await
        .unwrap();
    let held = leases(&etcd);
    assert_eq!(held.len(), 1, "{held:?}");
    etcd.etcdctl(&["lease", "revoke", &held[0]]).unwrap();
    assert_eq!(reg.deregister(&record).await, Ok(()));
    assert!(user_keys(&etcd).is_empty());
}

/// A process that never got its node registered (its first attempt cut short by a stop, before
/// its grant reached etcd) does not delete, when it deregisters, the key another process holds
/// for the same node id (a replacement that kept the id): what its own attempt could have
/// written goes with its lease, revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_before_the_first_registration_leaves_a_replacements_key_alone() {
    let etcd = Etcd::start("stop-replacement");
    let record: rmicro_runtime::registry::Service = serde_json::from_str(
        r#"{"name":"go.micro.srv.user","nodes":[{"id":"user-0","address":"127.0.0.1:1"}]}"#,
    )
    .unwrap();
    let replacement = registry(&etcd);
    replacement
        .register(&record, Duration::from_secs(30))
        .await
        .unwrap();
    let held = user_keys(&etcd);
    assert_eq!(held.len(), 1, "{held:?}");

    let link = SlowLink::start(&etcd.client_addr).await;
    link.set_delay(ON_THE_WIRE);
    let old: Arc<dyn Registry> = Arc::new(EtcdRegistry::new(EtcdOptions {
        endpoints: vec![link.addr.clone()],
        dial_timeout: Duration::from_secs(5),
        ..Default::default()
    }));
    // Cut short while its requests are held back on the way to etcd, as a stop cuts it.
    let attempt = tokio::time::timeout(
        Duration::from_millis(300),
        old.register(&record, Duration::from_secs(30)),
    )
    .await;
    assert!(attempt.is_err(), "the attempt finished: {attempt:?}");
    tokio::time::timeout(Duration::from_secs(10), old.deregister(&record))
        .await
        .expect("deregistered within 10 s")
        .unwrap();
    // Whatever of the old process reached etcd has been applied by now (in order, before the
    // deregistration's answer came back).
    assert_eq!(user_keys(&etcd), held, "the replacement's key was touched");
}

/// A registration that failed waiting for etcd (its lease grant timed out) while etcd still
/// applied the grant: deregistering revokes that lease too, instead of leaving it in etcd for
/// its whole TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_granted_after_its_registration_gave_up_is_revoked_on_deregistration() {
    let etcd = Etcd::start("late-grant");
    let record: rmicro_runtime::registry::Service = serde_json::from_str(
        r#"{"name":"go.micro.srv.user","nodes":[{"id":"user-0","address":"127.0.0.1:1"}]}"#,
    )
    .unwrap();
    let link = SlowLink::start(&etcd.client_addr).await;
    let reg: Arc<dyn Registry> = Arc::new(EtcdRegistry::new(EtcdOptions {
        endpoints: vec![link.addr.clone()],
        dial_timeout: Duration::from_secs(1),
        ..Default::default()
    }));
    // Connected first, so that the grant is the request held back.
    assert!(reg.list_services().await.is_ok());
    link.set_delay(Duration::from_millis(1500));
    let failed = reg.register(&record, Duration::from_secs(60)).await;
    assert!(failed.is_err(), "{failed:?}");
    // etcd applies the grant it got late.
    a_new_lease(&etcd, &[]).await;
    link.set_delay(Duration::ZERO);
    reg.deregister(&record).await.unwrap();
    let left = leases(&etcd);
    assert!(
        left.is_empty(),
        "leases left after deregistration: {left:?}"
    );
}
