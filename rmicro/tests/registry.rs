//! `rmicro registry list|get|watch` against a real etcd holding a real service.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rmicro_runtime::registry::{EtcdOptions, EtcdRegistry, Registry};
use rmicro_runtime::Service;
use rmicro_tests::etcd::Etcd;
use rmicro_tests::fixtures::go::micro::srv::user::register_user_handler;
use rmicro_tests::user::Greeter;

/// `rmicro registry` on the etcd at `etcd_addr`.
fn registry_command(etcd_addr: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rmicro"));
    command.args([
        "registry",
        "--registry",
        "etcd",
        "--registry-address",
        etcd_addr,
    ]);
    command
}

fn rmicro(etcd_addr: &str, args: &[&str]) -> Output {
    registry_command(etcd_addr)
        .args(["--registry-timeout", "2s"])
        .args(args)
        .output()
        .unwrap()
}

/// `rmicro registry watch` on the etcd at `etcd_addr`, its stdout piped.
fn watch_command(etcd_addr: &str) -> Command {
    let mut command = registry_command(etcd_addr);
    command.arg("watch").stdout(Stdio::piped());
    command
}

/// A gateway in this process on the etcd at `etcd_addr`, with `flags` after `rmicro api`;
/// its address, and what stops it when dropped.
async fn gateway_on(etcd_addr: &str, flags: &[&str]) -> (String, tokio::sync::oneshot::Sender<()>) {
    use clap::FromArgMatches;
    let cli = rmicro::Cli::new();
    let mut argv = vec!["rmicro", "api", "--address", "127.0.0.1:0"];
    argv.extend(["--registry", "etcd", "--registry-address", etcd_addr]);
    argv.extend(flags);
    let matches = cli.command().try_get_matches_from(argv).unwrap();
    let sub = matches.subcommand_matches("api").unwrap().clone();
    let args = rmicro::api::ApiArgs::from_arg_matches(&sub).unwrap();
    let gateway = rmicro::api::Gateway::new(args, &sub, cli.into_plugins(), None).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(gateway.serve(listener, async {
        let _ = rx.await;
    }));
    (addr, tx)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_get_and_watch_show_registered_services() {
    let etcd = Etcd::start("cli");
    let registry: Arc<dyn Registry> = Arc::new(EtcdRegistry::new(EtcdOptions {
        endpoints: vec![etcd.client_addr.clone()],
        dial_timeout: Duration::from_secs(2),
        ..Default::default()
    }));
    let mut svc = Service::builder("go.micro.srv.user")
        .registry(Arc::clone(&registry))
        .build();
    register_user_handler(svc.server_mut(), Greeter).unwrap();
    let running = svc.start().await.unwrap();
    for _ in 0..50 {
        if !etcd.get_prefix("/micro/registry/").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let out = rmicro(&etcd.client_addr, &["list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&out.stdout);
    assert!(listed.contains("go.micro.srv.user"), "{listed}");
    assert!(
        listed.contains("latest") && listed.contains("1 node(s)"),
        "{listed}"
    );

    let out = rmicro(&etcd.client_addr, &["get", "go.micro.srv.user"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let services: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        services[0]["nodes"][0]["address"],
        running.local_addr().to_string()
    );
    assert_eq!(services[0]["endpoints"][0]["name"], "User.Call");

    let out = rmicro(&etcd.client_addr, &["get", "go.micro.srv.nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("service `go.micro.srv.nope` not found in the etcd registry")
    );

    // watch: a second node appearing is printed as a JSON line.
    let mut watch = Command::new(env!("CARGO_BIN_EXE_rmicro"))
        .args([
            "registry",
            "--registry",
            "etcd",
            "--registry-address",
            &etcd.client_addr,
            "watch",
            "go.micro.srv.user",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut svc = Service::builder("go.micro.srv.user")
        .registry(Arc::clone(&registry))
        .build();
    register_user_handler(svc.server_mut(), Greeter).unwrap();
    let second = svc.start().await.unwrap();
    let stdout = watch.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut reader = BufReader::new(stdout);
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap() == 0 {
                return None;
            }
            let event: serde_json::Value = serde_json::from_str(&line).unwrap();
            if event["action"] == "create" {
                return Some(event);
            }
        }
    });
    let event = tokio::time::timeout(Duration::from_secs(10), line)
        .await
        .expect("a watch event")
        .unwrap()
        .unwrap();
    assert_eq!(
        event["service"]["nodes"][0]["address"],
        second.local_addr().to_string()
    );
    let _ = watch.kill();
    let _ = watch.wait();
    second.stop().await.unwrap();
    running.stop().await.unwrap();
}

/// Asserts that `list`, `get` and `watch` against a registry at `address` that cannot be used
/// fail at once (not after the 20 s registry timeout) with exit status 2 and an error that
/// holds each of `says`.
fn refused_at_once(address: &str, says: &[&str]) {
    for command in [&["list"][..], &["get", "go.micro.srv.user"], &["watch"]] {
        let started = std::time::Instant::now();
        let out = registry_command(address)
            .args(["--registry-timeout", "20s"])
            .args(command)
            .output()
            .unwrap();
        let took = started.elapsed();
        assert_eq!(out.status.code(), Some(2), "{command:?}");
        let err = text(&out.stderr);
        assert!(err.starts_with("error: registry unreachable: "), "{err}");
        assert!(!err.contains("source:"), "{err}");
        for part in says {
            assert!(err.contains(part), "{command:?}: {err:?} lacks {part:?}");
        }
        assert!(took < Duration::from_secs(10), "{command:?} took {took:?}");
    }
}

/// Nothing listening at the address: said at once, in words, not after the registry timeout
/// (the gRPC channel would keep trying to connect until then).
#[test]
fn an_unreachable_registry_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    refused_at_once(
        &port.to_string(),
        &[&format!("etcd at {port}: connection refused (nothing listens there: is etcd running, and is the registry address right?)")],
    );
}

/// An HTTP/1 server (Python's) given as the registry, a slip of the address: said at once,
/// with what to check, not after the registry timeout with an HTTP/2 framing error alone.
#[test]
fn a_registry_address_that_is_not_grpc_is_a_clear_error() {
    let mut server = Command::new("python3")
        .args(["-u", "-m", "http.server", "--bind", "127.0.0.1", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 is needed (scripts/test.sh installs it)");
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // "Serving HTTP on 127.0.0.1 port 43117 (http://127.0.0.1:43117/) ..."
    let port = line
        .split_whitespace()
        .skip_while(|w| *w != "port")
        .nth(1)
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    let address = format!("127.0.0.1:{port}");
    refused_at_once(
        &address,
        &[
            &format!("etcd at {address}: "),
            // Python closes the connection with the rest of the HTTP/2 preface unread: the
            // client reads its 400 (no HTTP/2 frame) or a reset, whichever comes first.
            "one of etcd's client URLs (port 2379 by default)",
        ],
    );
    let _ = server.kill();
    let _ = server.wait();
}

/// An etcd that starts after the first refusals is found: the refusal is no verdict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_refusing_connections_is_used_once_it_listens() {
    let mut etcd = Etcd::planned("registry-late");
    let address = etcd.client_addr.clone();
    let registry = EtcdRegistry::new(EtcdOptions {
        endpoints: vec![address],
        dial_timeout: Duration::from_secs(20),
        ..Default::default()
    });
    let started = std::time::Instant::now();
    let err = registry.list_services().await.unwrap_err().to_string();
    assert!(
        err.contains("connection refused (nothing listens there"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let mut etcd = tokio::task::spawn_blocking(move || {
        etcd.resume();
        etcd
    })
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match registry.list_services().await {
            Ok(services) => {
                assert!(services.is_empty(), "{services:?}");
                break;
            }
            Err(err) => assert!(std::time::Instant::now() < deadline, "{err}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    etcd.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_health_is_200_then_503_when_etcd_stops() {
    let mut etcd = Etcd::start("health");
    let flags = ["--health-path", "/health", "--registry-timeout", "1s"];
    let (addr, _stop) = gateway_on(&etcd.client_addr, &flags).await;

    let health = |addr: String| {
        tokio::task::spawn_blocking(move || rmicro_tests::http::get(&addr, "/health"))
    };
    let up = health(addr.clone()).await.unwrap();
    assert_eq!(up.status, 200, "{}", up.body);
    assert_eq!(up.body, r#"{"registry":"etcd","status":"ok"}"#);

    etcd.stop();
    let down = health(addr.clone()).await.unwrap();
    assert_eq!(down.status, 503, "{}", down.body);
    let v: serde_json::Value = serde_json::from_str(&down.body).unwrap();
    assert_eq!(v["status"], "unavailable");
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail == "the registry is unreachable" || detail.contains("did not answer"),
        "{v}"
    );
    // The cause goes to the log: this endpoint needs no token.
    assert!(
        !down.body.contains(&etcd.client_addr),
        "internals in the body: {}",
        down.body
    );

    etcd.resume();
    let mut back = 0;
    for _ in 0..50 {
        back = health(addr.clone()).await.unwrap().status;
        if back == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(back, 200, "healthy again once etcd is back");
}

/// A lookup the registry cannot answer is a 503 that says only that: the registry's error
/// (its address, advice about the gateway's flags) is the operator's, in the log, not for
/// whoever sent the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_failure_is_a_503_without_the_registrys_details() {
    let etcd = Etcd::planned("lookup-fails");
    for handler in ["http", "rpc"] {
        let flags = ["--registry-timeout", "1s", "--handler", handler];
        let (addr, _stop) = gateway_on(&etcd.client_addr, &flags).await;
        let r = tokio::task::spawn_blocking(move || rmicro_tests::http::get(&addr, "/user/call"))
            .await
            .unwrap();
        assert_eq!(r.status, 503, "{}", r.body);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        let detail = v["detail"].as_str().unwrap();
        assert!(
            detail.starts_with("cannot ") && detail.ends_with(": the registry is unavailable"),
            "{handler}: {detail}"
        );
        assert!(!r.body.contains(&etcd.client_addr), "{}", r.body);
    }
}

#[test]
fn a_watch_that_falls_behind_is_an_error_not_a_clean_exit() {
    use std::io::Read;
    use std::sync::mpsc;
    use std::time::Instant;
    let etcd = Etcd::start("cli-lag");
    let record = |id: &str| {
        // About 1 KiB a line, so that a few dozen fill the pipe the watch prints to.
        serde_json::json!({
            "name": "zzz.bulk",
            "version": "latest",
            "nodes": [{"id": id, "address": "127.0.0.1:1", "metadata": {"pad": "x".repeat(1000)}}],
        })
        .to_string()
    };
    let mut watch = watch_command(&etcd.client_addr)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = watch.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    // Reads one line, then nothing until told to drain the rest.
    let (line_tx, line_rx) = mpsc::channel::<String>();
    let (drain_tx, drain_rx) = mpsc::channel::<()>();
    let mut reader = BufReader::new(watch.stdout.take().unwrap());
    let drained = std::thread::spawn(move || {
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = line_tx.send(line);
        let _ = drain_rx.recv();
        let mut rest = Vec::new();
        let _ = reader.read_to_end(&mut rest);
    });
    // Once the watch prints a change, it runs.
    let mut seen = None;
    for i in 0..50 {
        etcd.put_many(&[(
            format!("/micro/registry/zzz.bulk/first{i}"),
            record(&format!("first{i}")),
        )]);
        if let Ok(line) = line_rx.recv_timeout(Duration::from_millis(200)) {
            seen = Some(line);
            break;
        }
    }
    assert!(
        seen.is_some_and(|l| l.contains("zzz.bulk")),
        "the watch never printed a change"
    );

    // Nobody reads its output: it blocks on a full pipe while 1,500 changes arrive, more than
    // a watch holds (1,024), so it falls behind and misses some.
    let bulk: Vec<(String, String)> = (0..1500)
        .map(|i| {
            let id = format!("n{i}");
            (format!("/micro/registry/zzz.bulk/{id}"), record(&id))
        })
        .collect();
    etcd.put_many(&bulk);
    std::thread::sleep(Duration::from_secs(3));
    drain_tx.send(()).unwrap();

    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = watch.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = watch.kill();
            let _ = watch.wait();
            panic!("the watch went on after it fell behind and missed changes");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drained.join().unwrap();
    let err = stderr.join().unwrap();
    assert_eq!(status.code(), Some(1), "stderr: {err}");
    // The runtime's warning of how many changes were missed may come first; the error is last.
    assert_eq!(
        err.lines().last(),
        Some(
            "error: the watch of the etcd registry ended: it fell behind and missed changes, or \
             the registry went away; run `rmicro registry list` for what it holds now, and watch \
             again"
        ),
        "{err}"
    );
}

/// Ctrl-C ends a watch (exit 0) even when it comes while the watch is busy printing: here it
/// is blocked on a full pipe when the signal arrives, and is only let go on afterwards.
#[test]
fn ctrl_c_while_printing_ends_the_watch() {
    use std::io::Read;
    use std::time::Instant;
    let etcd = Etcd::start("cli-interrupt");
    let mut watch = watch_command(&etcd.client_addr)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = watch.stdout.take().unwrap();
    let record = |id: &str| {
        // About 1 KiB a line: a few dozen fill the pipe.
        serde_json::json!({
            "name": "zzz.int",
            "version": "latest",
            "nodes": [{"id": id, "address": "127.0.0.1:1", "metadata": {"pad": "x".repeat(1000)}}],
        })
        .to_string()
    };
    // Once it prints, it watches (and has its Ctrl-C handler).
    let mut first = [0u8; 1];
    let started = std::thread::spawn(move || {
        let n = stdout.read(&mut first).unwrap();
        (stdout, n)
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !started.is_finished() {
        assert!(
            Instant::now() < deadline,
            "the watch never printed a change"
        );
        etcd.put_many(&[(
            "/micro/registry/zzz.int/first".to_string(),
            record(&format!("{:?}", Instant::now())),
        )]);
        std::thread::sleep(Duration::from_millis(200));
    }
    let (mut stdout, n) = started.join().unwrap();
    assert_eq!(n, 1);
    // Fewer changes than a watch holds (1,024), more than the pipe does: it blocks printing.
    let changes: Vec<(String, String)> = (0..300)
        .map(|i| {
            (
                format!("/micro/registry/zzz.int/n{i}"),
                record(&format!("n{i}")),
            )
        })
        .collect();
    etcd.put_many(&changes);
    std::thread::sleep(Duration::from_secs(1));
    let killed = Command::new("kill")
        .args(["-INT", &watch.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    std::thread::sleep(Duration::from_millis(300));
    let drained = std::thread::spawn(move || {
        let mut rest = Vec::new();
        let _ = stdout.read_to_end(&mut rest);
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = watch.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = watch.kill();
            let _ = watch.wait();
            panic!("the watch went on after Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drained.join().unwrap();
    assert_eq!(status.code(), Some(0));
}

/// A service the registry holds with no node (a go-micro record written by hand) is there but
/// unavailable: 503, not the 404 of a service the registry does not know.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_service_without_nodes_is_503_not_404() {
    let etcd = Etcd::start("no-nodes");
    etcd.etcdctl(&[
        "put",
        "/micro/registry/go.micro.api.empty/go.micro.api.empty-1",
        r#"{"name":"go.micro.api.empty","version":"latest","metadata":null,"endpoints":[],"nodes":[]}"#,
    ])
    .unwrap();
    let (addr, _stop) = gateway_on(&etcd.client_addr, &[]).await;
    let get = |path: &'static str| {
        let addr = addr.clone();
        tokio::task::spawn_blocking(move || rmicro_tests::http::get(&addr, path))
    };
    let empty = get("/empty/call").await.unwrap();
    assert_eq!(empty.status, 503, "{}", empty.body);
    assert!(empty.body.contains("has no nodes"), "{}", empty.body);
    let unknown = get("/nosuch/call").await.unwrap();
    assert_eq!(unknown.status, 404, "{}", unknown.body);
}

/// Records others wrote under the prefix that are not go-micro services (bad JSON, a key that
/// holds no service, null entries, a type go-micro never writes) are skipped by `rmicro
/// registry`, with a warning that names each key, and the good records (odd but valid shapes
/// among them) are still listed and shown.
#[test]
fn records_that_are_not_services_are_skipped_with_a_warning_naming_the_key() {
    let etcd = Etcd::start("bad-records");
    let bad = [
        ("/micro/registry/go.micro.srv.bad/1", "not json"),
        ("/micro/registry/", ""),
        ("/micro/registry/go.micro.srv.array/1", "[]"),
        (
            "/micro/registry/go.micro.srv.nullnode/1",
            r#"{"name":"go.micro.srv.nullnode","nodes":[null]}"#,
        ),
        (
            "/micro/registry/go.micro.srv.numbers/1",
            r#"{"name":"go.micro.srv.numbers","version":"1","metadata":{"a":1}}"#,
        ),
    ];
    let good = [
        (
            "/micro/registry/go.micro.srv.nulls/1",
            r#"{"name":"go.micro.srv.nulls","version":"latest","metadata":null,"endpoints":null,"nodes":null}"#,
        ),
        (
            "/micro/registry/go.micro.srv.v6/1",
            r#"{"name":"go.micro.srv.v6","version":"latest","nodes":[{"id":"a","address":"[::1]:9090","metadata":null}]}"#,
        ),
        (
            "/micro/registry/go.micro.srv.v6/2",
            r#"{"name":"go.micro.srv.v6","version":"latest","nodes":[{"id":"a","address":"[::1]:9091"}]}"#,
        ),
    ];
    let pairs: Vec<(String, String)> = bad
        .iter()
        .chain(&good)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    etcd.put_many(&pairs);

    let out = rmicro(&etcd.client_addr, &["list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&out.stdout);
    let names: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, ["go.micro.srv.nulls", "go.micro.srv.v6"], "{listed}");
    let warnings = text(&out.stderr);
    for (key, _) in bad {
        assert!(
            warnings.contains(&format!(
                "registry record `{key}` is not a go-micro service"
            )),
            "no warning names {key}: {warnings}"
        );
    }
    assert!(!warnings.contains("panicked"), "{warnings}");

    // Two records of one node id: one node.
    let out = rmicro(&etcd.client_addr, &["get", "go.micro.srv.v6"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let services: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        services[0]["nodes"].as_array().unwrap().len(),
        1,
        "{services}"
    );
    let address = &services[0]["nodes"][0]["address"];
    assert!(
        address == "[::1]:9090" || address == "[::1]:9091",
        "{services}"
    );
}

#[test]
fn a_watch_whose_etcd_goes_away_ends_with_an_error() {
    let mut etcd = Etcd::start("watch-gone");
    let mut watch = registry_command(&etcd.client_addr)
        .args(["--registry-timeout", "1s", "watch"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        watch.try_wait().unwrap().is_none(),
        "the watch ended at once"
    );
    etcd.stop();
    // Asked every 3 s, given 1 s to answer: over within a few seconds, not silent forever.
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = watch.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(15) {
            let _ = watch.kill();
            panic!("the watch went on, silent, after etcd stopped");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut watch.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the registry went away"), "{stderr}");
}
