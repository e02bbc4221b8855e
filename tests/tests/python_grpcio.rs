//! A client that is not ours, Python grpcio with stubs generated from the same .proto, calling a
//! server built from rmicro's generated handler over loopback.

use std::path::Path;
use std::process::Command;

use rmicro_runtime::Server;
use rmicro_tests::fixtures::go::micro::srv::user::register_user_handler;
use rmicro_tests::fixtures::rmicro::test::kitchen::register_kitchen_handler;
use rmicro_tests::kitchen::Kitchen;
use rmicro_tests::spawn;
use rmicro_tests::user::Greeter;

fn python(args: &[&str]) -> std::process::Output {
    Command::new("python3")
        .args(args)
        .output()
        .expect("python3 runs (scripts/test.sh installs grpcio and grpcio-tools)")
}

/// Python stubs of proto/user.proto, made by grpcio-tools in a scratch directory named by `tag`
/// (removed when dropped).
fn user_stubs(tag: &str) -> tempfile::TempDir {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let stubs = tempfile::Builder::new()
        .prefix(&format!("rmicro-{tag}-"))
        .tempdir()
        .unwrap();
    let gen = python(&[
        "-m",
        "grpc_tools.protoc",
        &format!("-I{}", root.join("proto").display()),
        &format!("--python_out={}", stubs.path().display()),
        &format!("--grpc_python_out={}", stubs.path().display()),
        "user.proto",
    ]);
    assert!(
        gen.status.success(),
        "grpc_tools.protoc failed (is grpcio-tools installed? scripts/test.sh installs it): {}",
        String::from_utf8_lossy(&gen.stderr)
    );
    stubs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_client_calls_every_method() {
    let stubs = user_stubs("python-stubs");

    let mut server = Server::new();
    register_user_handler(&mut server, Greeter).unwrap();
    let (addr, _guard) = spawn(server).await;

    // Plain, then with every request message gzip-compressed.
    for compression in ["", "gzip"] {
        let mut args = vec![addr.to_string(), stubs.path().display().to_string()];
        args.extend((!compression.is_empty()).then(|| compression.to_string()));
        assert_eq!(
            python_script("user_client.py", args).await,
            r#"{"call": "Hello Python", "error": ["INVALID_ARGUMENT", "name must not be empty"], "ping_pong": [5, 6], "stream": [0, 1, 2], "too_big": "RESOURCE_EXHAUSTED", "too_big_mid_stream": "RESOURCE_EXHAUSTED"}"#,
            "{compression:?}"
        );
    }
}

/// Runs `tests/python/<script>` with `args` off the async threads, and returns its stdout,
/// trimmed, once it has succeeded.
async fn python_script(script: &'static str, args: Vec<String>) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(script);
    let shown = args.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(path)
            .args(&args)
            .output()
            .expect(
                "python3 runs (scripts/test.sh installs grpcio and the packages the scripts use)",
            )
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{script} {shown:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_reflection_client_discovers_and_calls_the_service() {
    let mut server = Server::new();
    register_user_handler(&mut server, Greeter).unwrap();
    let (addr, _guard) = spawn(server).await;

    assert_eq!(
        python_script("reflection_client.py", vec![addr.to_string()]).await,
        r#"{"health": "SERVING", "input": "go.micro.srv.user.CallRequest", "msg": "Hello Reflection", "services": ["go.micro.srv.user.User", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"]}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_reflection_client_reads_the_http_options() {
    let mut server = Server::new();
    register_kitchen_handler(&mut server, Kitchen).unwrap();
    let (addr, _guard) = spawn(server).await;

    assert_eq!(
        python_script("reflection_options_client.py", vec![addr.to_string()]).await,
        r#"{"Get": ["GET", "/v1/items/{id}"], "Purge": ["PURGE", "/v1/items"], "Put": ["POST", "/v1/items"], "Update": ["PATCH", "/v1/items/{item.id}"]}"#
    );
}

fn health_client(args: &[&str]) -> std::process::Command {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/health_client.py");
    let mut command = Command::new("python3");
    command.arg(script).args(args);
    command
}

/// What grpcio's health checking client says `Check` answers for `service`.
async fn check(addr: std::net::SocketAddr, service: &str) -> String {
    let args = vec!["check".to_string(), addr.to_string(), service.to_string()];
    python_script("health_client.py", args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_health_checks_see_serving_changes_and_the_shutdown() {
    use rmicro_runtime::health::ServingStatus;
    use std::io::BufRead;

    let mut server = Server::new();
    register_user_handler(&mut server, Greeter).unwrap();
    let user = server.services()[0].name;
    let health = server.health();
    let (addr, guard) = spawn(server).await;

    assert_eq!(check(addr, "").await, "SERVING");
    assert_eq!(check(addr, user).await, "SERVING");
    assert_eq!(check(addr, "no.such.Service").await, "NOT_FOUND");

    // A watcher hears the status now, then each change.
    let mut watch = health_client(&["watch", &addr.to_string(), user])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    async fn next(lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
        tokio::time::timeout(std::time::Duration::from_secs(20), lines.recv())
            .await
            .expect("the watcher printed nothing within 20 s")
            .expect("the watcher ended early")
    }
    assert_eq!(next(&mut lines).await, "SERVING");
    health.set(user, ServingStatus::NotServing);
    assert_eq!(next(&mut lines).await, "NOT_SERVING");
    assert_eq!(check(addr, user).await, "NOT_SERVING");
    assert_eq!(
        check(addr, "").await,
        "SERVING",
        "only that service changed"
    );
    health.set(user, ServingStatus::Serving);
    assert_eq!(next(&mut lines).await, "SERVING");

    // Shutting down: the watcher hears NOT_SERVING and its stream ends, so it does not hold
    // the drain (10 s by default) up.
    let started = std::time::Instant::now();
    guard.stop().await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "the drain waited {:?} for the watch",
        started.elapsed()
    );
    assert_eq!(next(&mut lines).await, "NOT_SERVING");
    assert_eq!(next(&mut lines).await, "END");
    let status = tokio::task::spawn_blocking(move || watch.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    assert_eq!(health.status(user), Some(ServingStatus::NotServing));
}

/// A memory registry whose `deregister` waits until the test lets it go (as an etcd that is slow
/// or unreachable makes a service's shutdown wait up to 5 s), saying when it was called.
struct SlowToDeregister {
    inner: rmicro_runtime::registry::MemoryRegistry,
    called: tokio::sync::mpsc::UnboundedSender<()>,
    release: tokio::sync::watch::Receiver<bool>,
}

impl rmicro_runtime::Registry for SlowToDeregister {
    fn name(&self) -> &'static str {
        "slow"
    }
    fn register<'a>(
        &'a self,
        service: &'a rmicro_runtime::registry::Service,
        ttl: std::time::Duration,
    ) -> rmicro_runtime::registry::BoxFuture<'a, Result<(), rmicro_runtime::registry::RegistryError>>
    {
        self.inner.register(service, ttl)
    }
    fn deregister<'a>(
        &'a self,
        service: &'a rmicro_runtime::registry::Service,
    ) -> rmicro_runtime::registry::BoxFuture<'a, Result<(), rmicro_runtime::registry::RegistryError>>
    {
        let _ = self.called.send(());
        let mut release = self.release.clone();
        Box::pin(async move {
            let _ = release.wait_for(|go| *go).await;
            self.inner.deregister(service).await
        })
    }
    fn get_service<'a>(
        &'a self,
        name: &'a str,
    ) -> rmicro_runtime::registry::BoxFuture<
        'a,
        Result<Vec<rmicro_runtime::registry::Service>, rmicro_runtime::registry::RegistryError>,
    > {
        self.inner.get_service(name)
    }
    fn list_services(
        &self,
    ) -> rmicro_runtime::registry::BoxFuture<
        '_,
        Result<Vec<rmicro_runtime::registry::Service>, rmicro_runtime::registry::RegistryError>,
    > {
        self.inner.list_services()
    }
    fn watch<'a>(
        &'a self,
        service: Option<&'a str>,
    ) -> rmicro_runtime::registry::BoxFuture<
        'a,
        Result<rmicro_runtime::registry::Watcher, rmicro_runtime::registry::RegistryError>,
    > {
        self.inner.watch(service)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_service_says_not_serving_before_it_deregisters() {
    let (called, mut deregistering) = tokio::sync::mpsc::unbounded_channel();
    let (release, released) = tokio::sync::watch::channel(false);
    let registry = std::sync::Arc::new(SlowToDeregister {
        inner: rmicro_runtime::registry::MemoryRegistry::new(),
        called,
        release: released,
    });
    let mut service = rmicro_runtime::Service::builder("go.micro.srv.health-order")
        .registry(registry)
        .build();
    register_user_handler(service.server_mut(), Greeter).unwrap();
    let user = service.server_mut().services()[0].name;
    let running = service.start().await.unwrap();
    let addr = running.local_addr();
    assert_eq!(check(addr, "").await, "SERVING");

    let stopping = tokio::spawn(running.stop());
    tokio::time::timeout(std::time::Duration::from_secs(20), deregistering.recv())
        .await
        .expect("stop deregisters")
        .unwrap();
    // Load balancers that probe health hear it as registry watchers do: not after the wait.
    assert_eq!(check(addr, "").await, "NOT_SERVING");
    assert_eq!(check(addr, user).await, "NOT_SERVING");
    release.send(true).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(20), stopping)
        .await
        .expect("the service stops")
        .unwrap()
        .unwrap();
}

/// A child process killed when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_clients_read_the_gzip_answers_of_a_grpcio_server() {
    use rmicro_runtime::registry::{MemoryRegistry, Node, Registry, Service as Record};
    use rmicro_tests::fixtures::go::micro::srv::user::{CallRequest, StreamRequest, UserClient};
    use std::sync::Arc;

    let stubs = user_stubs("python-server-stubs");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/user_server.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(stubs.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let addr = rmicro_tests::process::listening_address(&mut child);
    let _server = Killed(child);

    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let record = Record {
        name: "py.user".into(),
        version: "1".into(),
        nodes: vec![Node {
            id: "py-1".into(),
            address: addr,
            ..Default::default()
        }],
        ..Default::default()
    };
    registry
        .register(&record, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    let user = UserClient::new("py.user", rmicro_runtime::Client::new(registry));

    let answer = user
        .call(CallRequest {
            name: "Rust".into(),
        })
        .await
        .expect("a gzip-compressed answer is read");
    assert_eq!(
        answer
            .metadata()
            .get("grpc-encoding")
            .and_then(|v| v.to_str().ok()),
        Some("gzip"),
        "the server did not compress, so this proves nothing"
    );
    assert_eq!(answer.into_inner().msg, "Hello Rust");

    let mut stream = user
        .stream(StreamRequest { count: 3 })
        .await
        .expect("a gzip-compressed stream is read")
        .into_inner();
    let mut counts = Vec::new();
    while let Some(item) = stream.message().await.expect("each message is read") {
        counts.push(item.count);
    }
    assert_eq!(counts, [0, 1, 2]);
}
