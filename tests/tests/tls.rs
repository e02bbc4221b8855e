//! TLS between services: an rmicro server with a certificate, rmicro clients that check it (by
//! the node's registered address or one name for all), mutual TLS (client certificates
//! required), a plain-text client told what to do with a node registered as `secure`, and
//! Python grpcio (a peer that is not ours) calling the rmicro server over TLS and mutual TLS.

use std::process::Command;
use std::sync::Arc;

use rmicro_runtime::registry::{MemoryRegistry, Registry};
use rmicro_runtime::tls::{ClientTls, ServerTls};
use rmicro_runtime::{Client, Code, RunningService, Service};
use rmicro_tests::etcd::TestCerts;
use rmicro_tests::fixtures::go::micro::srv::user::{
    register_user_handler, CallRequest, UserClient,
};
use rmicro_tests::user::Greeter;

const NAME: &str = "go.micro.srv.user";

/// A user service in `registry`, serving over `tls`.
async fn user_service(registry: &Arc<dyn Registry>, tls: ServerTls) -> RunningService {
    let mut service = Service::builder(NAME)
        .registry(Arc::clone(registry))
        .tls(tls)
        .build();
    register_user_handler(service.server_mut(), Greeter).unwrap();
    let running = service.start().await.unwrap();
    for _ in 0..500 {
        if !registry.get_service(NAME).await.unwrap().is_empty() {
            return running;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{NAME} never registered");
}

/// Calls `User.Call` through `client`.
async fn call(client: Client) -> Result<String, rmicro_runtime::Status> {
    UserClient::new(NAME, client)
        .call(CallRequest { name: "Ada".into() })
        .await
        .map(|r| r.into_inner().msg)
}

fn client(registry: &Arc<dyn Registry>, tls: Option<ClientTls>) -> Client {
    let mut builder = Client::builder();
    builder.registry(Arc::clone(registry)).retries(0);
    if let Some(tls) = tls {
        builder.tls(tls);
    }
    builder.build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmicro_services_call_each_other_over_tls_and_mutual_tls() {
    let certs = TestCerts::new("svc-tls");
    let file = |name: &str| certs.dir.join(name);
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let server_tls = ServerTls::new(file("server.pem"), file("server.key")).unwrap();
    let running = user_service(&registry, server_tls.clone()).await;

    // Registered as serving TLS, as go-micro's servers mark it.
    let record = registry.get_service(NAME).await.unwrap();
    assert_eq!(
        record[0].nodes[0]
            .metadata
            .get("secure")
            .map(String::as_str),
        Some("true")
    );

    // A plain-text client is told what to do, not handed a handshake error.
    let status = call(client(&registry, None)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("secure=true") && status.message().contains("--client-tls-ca"),
        "{status:?}"
    );

    // Checked against the CA, for the address the node registered (127.0.0.1, in its SANs).
    let tls = ClientTls::new(file("ca.pem")).unwrap();
    assert_eq!(
        call(client(&registry, Some(tls.clone()))).await.unwrap(),
        "Hello Ada"
    );
    // Or one name for every node.
    let by_name = tls.clone().server_name("localhost").unwrap();
    assert_eq!(
        call(client(&registry, Some(by_name))).await.unwrap(),
        "Hello Ada"
    );
    let wrong = tls.clone().server_name("elsewhere.example").unwrap();
    let status = call(client(&registry, Some(wrong))).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("TLS handshake"), "{status:?}");
    // A CA that did not sign the node's certificate.
    let other = TestCerts::new("svc-tls-other");
    let stranger = ClientTls::new(other.dir.join("ca.pem")).unwrap();
    let status = call(client(&registry, Some(stranger))).await.unwrap_err();
    assert!(status.message().contains("TLS handshake"), "{status:?}");
    running.stop().await.unwrap();

    // Mutual TLS: a client without a certificate is refused, one with the CA's is served.
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let mutual = server_tls.client_ca(file("ca.pem")).unwrap();
    let running = user_service(&registry, mutual).await;
    let refused = call(client(&registry, Some(tls.clone())))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    let with_cert = tls
        .identity(file("client.pem"), file("client.key"))
        .unwrap();
    assert_eq!(
        call(client(&registry, Some(with_cert))).await.unwrap(),
        "Hello Ada"
    );
    let foreign = ClientTls::new(file("ca.pem"))
        .unwrap()
        .identity(other.dir.join("client.pem"), other.dir.join("client.key"))
        .unwrap();
    let refused = call(client(&registry, Some(foreign))).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    running.stop().await.unwrap();
}

/// A client that connects and never begins its TLS handshake does not hold up the server's
/// stop (the drain would wait out the handshake limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_does_not_hold_up_a_tls_servers_stop() {
    let certs = TestCerts::new("tls-silent");
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let tls = ServerTls::new(certs.dir.join("server.pem"), certs.dir.join("server.key")).unwrap();
    let running = user_service(&registry, tls).await;
    let _silent = tokio::net::TcpStream::connect(running.local_addr())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    running.stop().await.unwrap();
    // The deregister grace (1 s) and no more.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "stopping took {:?}",
        started.elapsed()
    );
}

/// Python grpcio calls the rmicro server over TLS, then over mutual TLS with its own
/// certificate; without one it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_calls_an_rmicro_server_over_tls_and_mutual_tls() {
    const SCRIPT: &str = r#"
import sys, grpc
address, ca, cert, key = sys.argv[1:5]
read = lambda p: open(p, "rb").read() if p else None
creds = grpc.ssl_channel_credentials(read(ca), read(key), read(cert))
with grpc.secure_channel(address, creds) as channel:
    call = channel.unary_unary("/go.micro.srv.user.User/Call")
    try:
        # CallRequest{name: "Py"}; the answer's field 1 is the greeting.
        answer = call(b"\x0a\x02Py", timeout=10)
        print(answer[2:].decode())
    except grpc.RpcError as e:
        print("error", e.code().name)
"#;
    let certs = TestCerts::new("py-tls");
    let file = |name: &str| certs.dir.join(name).display().to_string();
    let python = move |address: String, ca: String, cert: String, key: String| async move {
        tokio::task::spawn_blocking(move || {
            let out = Command::new("python3")
                .args(["-c", SCRIPT, &address, &ca, &cert, &key])
                .output()
                .expect("python3 runs (scripts/test.sh installs grpcio)");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        })
        .await
        .unwrap()
    };
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let tls = ServerTls::new(file("server.pem"), file("server.key")).unwrap();
    let running = user_service(&registry, tls.clone()).await;
    // Named as the certificate names it.
    let address = format!("localhost:{}", running.local_addr().port());
    let got = python(address, file("ca.pem"), String::new(), String::new()).await;
    assert_eq!(got, "Hello Py");
    running.stop().await.unwrap();

    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let running = user_service(&registry, tls.client_ca(file("ca.pem")).unwrap()).await;
    let address = format!("localhost:{}", running.local_addr().port());
    let with = python(
        address.clone(),
        file("ca.pem"),
        file("client.pem"),
        file("client.key"),
    )
    .await;
    assert_eq!(with, "Hello Py");
    let without = python(address, file("ca.pem"), String::new(), String::new()).await;
    assert_eq!(without, "error UNAVAILABLE");
    running.stop().await.unwrap();
}

/// Files that cannot be used are refused when read, saying which and why.
#[test]
fn unusable_files_are_refused_when_read() {
    let certs = TestCerts::new("tls-files");
    let file = |name: &str| certs.dir.join(name);
    let err = ServerTls::new(file("server.key"), file("server.pem"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("swapped"), "{err}");
    let err = ServerTls::new(file("server.pem"), file("client.key"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not belong to the certificate"), "{err}");
    let err = ClientTls::new(file("server.key")).unwrap_err().to_string();
    assert!(err.contains("holds no certificate"), "{err}");
    let err = ClientTls::new(file("missing.pem")).unwrap_err().to_string();
    assert!(err.contains("cannot read the TLS CA file"), "{err}");
    let err = ClientTls::new(file("ca.pem"))
        .unwrap()
        .server_name("not a name")
        .unwrap_err()
        .to_string();
    assert!(err.contains("`not a name`"), "{err}");
}

/// The go-micro-style flags set it all up: `--server-tls-*` on the service, `--client-tls-*` on
/// its client (the one its handlers call other services with).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_flags_configure_the_service_and_its_client() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        micro: rmicro_runtime::config::Flags,
    }
    let certs = TestCerts::new("tls-flags");
    let file = |name: &str| certs.dir.join(name).display().to_string();
    let cli = Cli::try_parse_from([
        "svc".to_string(),
        "--server-tls-cert".into(),
        file("server.pem"),
        "--server-tls-key".into(),
        file("server.key"),
        "--server-tls-client-ca".into(),
        file("ca.pem"),
        "--client-tls-ca".into(),
        file("ca.pem"),
        "--client-tls-cert".into(),
        file("client.pem"),
        "--client-tls-key".into(),
        file("client.key"),
    ])
    .unwrap();
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let mut service = cli
        .micro
        .service(NAME)
        .unwrap()
        .registry(Arc::clone(&registry))
        .build();
    assert!(service.server_mut().serves_tls());
    register_user_handler(service.server_mut(), Greeter).unwrap();
    let running = service.start().await.unwrap();
    let client = cli
        .micro
        .client_builder(Arc::clone(&registry))
        .unwrap()
        .build();
    let mut reply = None;
    for _ in 0..500 {
        match call(client.clone()).await {
            Ok(msg) => {
                reply = Some(msg);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
    assert_eq!(reply.as_deref(), Some("Hello Ada"));
    running.stop().await.unwrap();

    // A client certificate without the CA to check servers with is refused by the parser.
    let err = Cli::try_parse_from([
        "svc".to_string(),
        "--client-tls-cert".into(),
        file("client.pem"),
        "--client-tls-key".into(),
        file("client.key"),
    ])
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("--client-tls-ca"), "{err}");
    // A file that cannot be used names its flags.
    let cli = Cli::try_parse_from([
        "svc".to_string(),
        "--server-tls-cert".into(),
        file("server.key"),
        "--server-tls-key".into(),
        file("server.pem"),
    ])
    .unwrap();
    let err = cli.micro.service(NAME).err().unwrap().to_string();
    assert!(
        err.starts_with("--server-tls-cert/--server-tls-key"),
        "{err}"
    );
}

/// A directory of live TLS files a test renews by copying others over them.
struct LiveFiles(tempfile::TempDir);

impl LiveFiles {
    fn new() -> LiveFiles {
        LiveFiles(
            tempfile::Builder::new()
                .prefix("rmicro-live-tls-")
                .tempdir()
                .unwrap(),
        )
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.0.path().join(name)
    }

    /// Puts `certs`' files `names` in place, each under its own name (a first install, or a
    /// renewal written over the files in use).
    fn put(&self, certs: &TestCerts, names: &[&str]) {
        for name in names {
            std::fs::write(self.path(name), certs.read(name)).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_server_certificate_is_served_after_a_reload_and_a_broken_one_is_not() {
    // Two CAs: the renewed certificate is told from the first by which CA it checks against.
    let (a, b) = (TestCerts::new("reload-a"), TestCerts::new("reload-b"));
    let live = LiveFiles::new();
    live.put(&a, &["server.pem", "server.key"]);
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let server_tls = ServerTls::new(live.path("server.pem"), live.path("server.key")).unwrap();
    let running = user_service(&registry, server_tls.clone()).await;
    let trusting = |certs: &TestCerts| {
        client(
            &registry,
            Some(ClientTls::new(certs.dir.join("ca.pem")).unwrap()),
        )
    };
    assert_eq!(call(trusting(&a)).await.unwrap(), "Hello Ada");
    assert!(call(trusting(&b)).await.is_err());

    // Renewed on disk: served only once reloaded (through a clone: they share it).
    live.put(&b, &["server.pem", "server.key"]);
    assert_eq!(call(trusting(&a)).await.unwrap(), "Hello Ada");
    server_tls.clone().reload().unwrap();
    let refused = call(trusting(&a)).await.unwrap_err();
    assert_eq!(
        refused.code(),
        rmicro_runtime::Code::Unavailable,
        "{refused:?}"
    );
    assert_eq!(call(trusting(&b)).await.unwrap(), "Hello Ada");

    // A renewal written halfway (the new certificate, the old key): refused with why, and the
    // certificate in use stays.
    live.put(&a, &["server.key"]);
    let err = server_tls.reload().unwrap_err().to_string();
    assert!(err.contains("does not belong to the certificate"), "{err}");
    assert_eq!(call(trusting(&b)).await.unwrap(), "Hello Ada");
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_renewed_ca_and_certificate_are_used_after_a_reload() {
    let (a, b) = (TestCerts::new("creload-a"), TestCerts::new("creload-b"));
    let file = |certs: &TestCerts, name: &str| certs.dir.join(name);
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    // Mutual TLS with CA a on the server's side.
    let server_tls = ServerTls::new(file(&a, "server.pem"), file(&a, "server.key"))
        .unwrap()
        .client_ca(file(&a, "ca.pem"))
        .unwrap();
    let running = user_service(&registry, server_tls).await;
    let live = LiveFiles::new();
    live.put(&a, &["ca.pem", "client.pem", "client.key"]);
    let tls = ClientTls::new(live.path("ca.pem"))
        .unwrap()
        .identity(live.path("client.pem"), live.path("client.key"))
        .unwrap();
    // Each call from a new client, so on a new connection, with a clone of `tls`.
    let fresh = || client(&registry, Some(tls.clone()));
    assert_eq!(call(fresh()).await.unwrap(), "Hello Ada");

    // Another CA: the server's certificate is no longer trusted.
    live.put(&b, &["ca.pem"]);
    assert_eq!(
        call(fresh()).await.unwrap(),
        "Hello Ada",
        "not reloaded yet"
    );
    tls.reload().unwrap();
    assert!(call(fresh()).await.is_err(), "the old CA is still trusted");

    // Back to CA a, and a certificate of CA b's: the server refuses it.
    live.put(&a, &["ca.pem"]);
    live.put(&b, &["client.pem", "client.key"]);
    tls.reload().unwrap();
    assert!(
        call(fresh()).await.is_err(),
        "the old client certificate is still presented"
    );

    live.put(&a, &["client.pem", "client.key"]);
    tls.reload().unwrap();
    assert_eq!(call(fresh()).await.unwrap(), "Hello Ada");
    running.stop().await.unwrap();
}

/// A service process serving TLS re-reads its files on SIGHUP and serves on; a service
/// without TLS does not listen for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_service_process_reloads_its_certificate_on_sighup() {
    let (a, b) = (TestCerts::new("hup-a"), TestCerts::new("hup-b"));
    let live = LiveFiles::new();
    live.put(&a, &["server.pem", "server.key"]);
    let mut node = Command::new(env!("CARGO_BIN_EXE_test-node"))
        .arg("--server-tls-cert")
        .arg(live.path("server.pem"))
        .arg("--server-tls-key")
        .arg(live.path("server.key"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr = rmicro_tests::process::listening_address(&mut node);
    let trusting = |certs: &TestCerts| {
        let mut builder = Client::builder();
        builder
            .address(addr.clone())
            .retries(0)
            .tls(ClientTls::new(certs.dir.join("ca.pem")).unwrap());
        builder.build()
    };
    assert_eq!(call(trusting(&a)).await.unwrap(), "Hello Ada");
    live.put(&b, &["server.pem", "server.key"]);
    let hup = |pid: u32| {
        let status = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    hup(node.id());
    let mut served = Err(None);
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if let Some(exit) = node.try_wait().unwrap() {
            panic!("the node exited on SIGHUP: {exit}");
        }
        match call(trusting(&b)).await {
            Ok(reply) => {
                served = Ok(reply);
                break;
            }
            Err(status) => served = Err(Some(status)),
        }
    }
    assert_eq!(
        served.unwrap(),
        "Hello Ada",
        "the renewed certificate was not served"
    );
    assert!(call(trusting(&a)).await.is_err());
    let _ = node.kill();
    let _ = node.wait();

    // Without TLS, SIGHUP keeps its usual meaning: the process ends.
    let mut plain = Command::new(env!("CARGO_BIN_EXE_test-node"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    rmicro_tests::process::listening_address(&mut plain);
    hup(plain.id());
    let mut ended = None;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        ended = plain.try_wait().unwrap();
        if ended.is_some() {
            break;
        }
    }
    let _ = plain.kill();
    let _ = plain.wait();
    assert!(ended.is_some(), "a service without TLS listened for SIGHUP");
}
