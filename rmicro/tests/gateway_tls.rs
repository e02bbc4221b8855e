//! `rmicro api --tls-cert --tls-key`, the real binary: HTTPS with HTTP/2 and HTTP/1.1 by ALPN,
//! the certificate re-read on SIGHUP (a bad one leaves the one in use), and files that cannot be
//! used refused at start with what is wrong with them.
#![cfg(feature = "tls")]

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rmicro_tests::etcd::TestCerts;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

mod common;
use common::{etcd_with_greeter, GatewayProcess};

/// What an HTTPS GET through the gateway got: the protocol ALPN settled, the HTTP version of the
/// answer, its status and body.
#[derive(Debug)]
struct Got {
    alpn: Option<Vec<u8>>,
    version: http::Version,
    status: u16,
    body: String,
}

/// GETs `path` over HTTPS from `addr`, trusting only the CA in `ca`, offering `alpn`.
async fn https_get(addr: &str, ca: &[u8], alpn: &[u8], path: &str) -> Result<Got, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let negotiated = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let io = TokioIo::new(tls);
    let request = |uri: String| {
        http::Request::get(uri)
            .header(http::header::HOST, "localhost")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    let response = if negotiated.as_deref() == Some(b"h2") {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send.send_request(request(format!("https://localhost{path}")))
            .await
            .map_err(|e| e.to_string())?
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send.send_request(request(path.to_string()))
            .await
            .map_err(|e| e.to_string())?
    };
    let (version, status) = (response.version(), response.status().as_u16());
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Got {
        alpn: negotiated,
        version,
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// PEM files that an editor started with a UTF-8 byte order mark (openssl reads them): the
/// certificate chain (the leaf, then the CA) and the key are read whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pem_files_starting_with_a_byte_order_mark_are_read_whole() {
    let (etcd, _node) = etcd_with_greeter("gw-tls-bom").await;
    let certs = TestCerts::new("gw-tls-bom");
    let bom = |name: &str, parts: &[&str]| {
        let mut bytes = b"\xEF\xBB\xBF".to_vec();
        for part in parts {
            bytes.extend(certs.read(part));
        }
        let path = certs.dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path.display().to_string()
    };
    let cert = bom("bom-chain.pem", &["server.pem", "ca.pem"]);
    let key = bom("bom.key", &["server.key"]);
    let gw = GatewayProcess::start(&etcd, &["--tls-cert", &cert, "--tls-key", &key], &[]);
    let got = https_get(&gw.addr, &certs.read("ca.pem"), b"h2", "/greeter/bom")
        .await
        .unwrap();
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(got.body, "hello from /greeter/bom");
}

fn tls_flags(dir: &Path) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        dir.join("server.pem").display().to_string(),
        "--tls-key".into(),
        dir.join("server.key").display().to_string(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_http2_and_http1_chosen_by_alpn() {
    let (etcd, _node) = etcd_with_greeter("gw-tls-serve").await;
    let certs = TestCerts::new("gw-tls-serve");
    let mut flags = tls_flags(&certs.dir);
    flags.extend(["--read-header-timeout".to_string(), "1s".to_string()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let gw = GatewayProcess::start(&etcd, &flags, &[]);
    let ca = certs.read("ca.pem");

    let h2 = https_get(&gw.addr, &ca, b"h2", "/greeter/over-h2")
        .await
        .unwrap();
    assert_eq!(h2.alpn.as_deref(), Some(&b"h2"[..]), "{h2:?}");
    assert_eq!(h2.version, http::Version::HTTP_2, "{h2:?}");
    assert_eq!(h2.status, 200, "{h2:?}");
    assert_eq!(h2.body, "hello from /greeter/over-h2");

    let h1 = https_get(&gw.addr, &ca, b"http/1.1", "/greeter/over-h1")
        .await
        .unwrap();
    assert_eq!(h1.alpn.as_deref(), Some(&b"http/1.1"[..]), "{h1:?}");
    assert_eq!(h1.version, http::Version::HTTP_11, "{h1:?}");
    assert_eq!(h1.status, 200, "{h1:?}");
    assert_eq!(h1.body, "hello from /greeter/over-h1");

    // The node, called over HTTP, is told the client came over HTTPS.
    let proto = https_get(&gw.addr, &ca, b"h2", "/greeter/proto")
        .await
        .unwrap();
    assert_eq!(proto.body, "https", "{proto:?}");

    // Unknown services get the gateway's JSON errors over HTTPS as over HTTP.
    let missing = https_get(&gw.addr, &ca, b"http/1.1", "/nobody/here")
        .await
        .unwrap();
    assert_eq!(missing.status, 404, "{missing:?}");
    assert!(missing.body.contains("\"code\":404"), "{missing:?}");

    // Plain HTTP on the HTTPS port is not served: it is answered 400 saying so (as Go and
    // nginx answer it, rather than with a TLS alert the client cannot read), and the gateway
    // goes on serving.
    let addr = gw.addr.clone();
    let plain = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(&addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        conn.write_all(b"GET /greeter/plain HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut answer = Vec::new();
        let _ = conn.read_to_end(&mut answer);
        answer
    })
    .await
    .unwrap();
    let plain = String::from_utf8_lossy(&plain);
    assert!(plain.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{plain}");
    assert!(plain.contains("this port serves HTTPS"), "{plain}");
    assert!(
        plain.contains(r#""id":"go.micro.api","code":400"#),
        "{plain}"
    );
    assert!(
        !plain.contains("hello from"),
        "plain HTTP was served: {plain}"
    );
    let again = https_get(&gw.addr, &ca, b"h2", "/greeter/again")
        .await
        .unwrap();
    assert_eq!(again.status, 200, "{again:?}");

    // A client that connects and never starts its handshake is closed after the head limit.
    let addr = gw.addr.clone();
    let waited = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut conn = std::net::TcpStream::connect(&addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let start = Instant::now();
        let read = conn.read(&mut [0; 64]);
        (read.map_err(|e| e.kind()), start.elapsed())
    })
    .await
    .unwrap();
    assert_eq!(waited.0, Ok(0), "closed without a word: {waited:?}");
    assert!(
        waited.1 >= Duration::from_millis(900) && waited.1 < Duration::from_secs(10),
        "{waited:?}"
    );

    // The certificate is the one given: a client trusting another CA refuses it.
    let other = TestCerts::new("gw-tls-other");
    let refused = https_get(&gw.addr, &other.read("ca.pem"), b"h2", "/greeter/x").await;
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("handshake")),
        "{refused:?}"
    );
}

/// Sends SIGHUP to `gw`.
fn hang_up(gw: &GatewayProcess) {
    gw.signal("HUP");
}

/// Waits (up to 10 s) for a stderr line of `gw` with `text`, after the first `skip` lines.
fn wait_for_line(gw: &GatewayProcess, skip: usize, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(line) = gw.lines().into_iter().skip(skip).find(|l| l.contains(text)) {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "no line with {text:?}; stderr: {:#?}",
            gw.lines()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_takes_a_renewed_certificate_and_keeps_the_old_one_on_a_bad_renewal() {
    let (etcd, _node) = etcd_with_greeter("gw-tls-reload").await;
    let (old, renewed) = (TestCerts::new("gw-tls-old"), TestCerts::new("gw-tls-new"));
    // The files the gateway is given, replaced in place as a certificate renewal does.
    let scratch = tempfile::Builder::new()
        .prefix("rmicro-gw-tls-live-")
        .tempdir()
        .unwrap();
    let live = scratch.path();
    let install = |from: &TestCerts| {
        for name in ["server.pem", "server.key"] {
            std::fs::write(live.join(name), from.read(name)).unwrap();
        }
    };
    install(&old);
    // Two workers, each with its own listening socket: the renewal must reach both.
    let mut flags = tls_flags(live);
    flags.extend(["--workers".to_string(), "2".to_string()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let gw = GatewayProcess::start(&etcd, &flags, &[("RUST_LOG", "info")]);
    let (old_ca, new_ca) = (old.read("ca.pem"), renewed.read("ca.pem"));
    assert_eq!(
        https_get(&gw.addr, &old_ca, b"h2", "/greeter/a")
            .await
            .unwrap()
            .status,
        200
    );
    assert!(https_get(&gw.addr, &new_ca, b"h2", "/greeter/a")
        .await
        .is_err());

    install(&renewed);
    let seen = gw.lines().len();
    hang_up(&gw);
    wait_for_line(&gw, seen, "reloaded");
    // New connections spread over the workers (SO_REUSEPORT): enough of them to reach both.
    for _ in 0..8 {
        let got = https_get(&gw.addr, &new_ca, b"h2", "/greeter/b")
            .await
            .unwrap();
        assert_eq!(got.status, 200, "{got:?}");
        assert!(
            https_get(&gw.addr, &old_ca, b"h2", "/greeter/b")
                .await
                .is_err(),
            "the old certificate is still served"
        );
    }

    // A renewal that went wrong (a truncated file): said, and the certificate in use stays.
    std::fs::write(live.join("server.pem"), "-----BEGIN CERTIFICATE-----\nMIIB").unwrap();
    let seen = gw.lines().len();
    hang_up(&gw);
    let line = wait_for_line(&gw, seen, "not reloaded");
    assert!(line.contains("server.pem"), "{line}");
    let got = https_get(&gw.addr, &new_ca, b"http/1.1", "/greeter/c")
        .await
        .unwrap();
    assert_eq!(got.status, 200, "{got:?}");
    assert!(
        gw.child.id() > 0
            && https_get(&gw.addr, &new_ca, b"h2", "/greeter/d")
                .await
                .is_ok(),
        "the gateway stopped serving after a bad reload"
    );
}

/// Runs `rmicro api` with `args` (memory registry), which must exit with status 2; returns its
/// stderr.
fn refused(args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rmicro"))
        .args(["api", "--address", "127.0.0.1:0"])
        .args(args)
        .env_remove("MICRO_API_TLS_CERT")
        .env_remove("MICRO_API_TLS_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("`rmicro api {args:?}` started serving; it should have refused");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn tls_files_that_cannot_be_used_are_refused_at_start_with_what_is_wrong() {
    let certs = TestCerts::new("gw-tls-bad");
    let p = |name: &str| certs.dir.join(name).display().to_string();

    let err = refused(&[
        "--tls-cert",
        &p("missing.pem"),
        "--tls-key",
        &p("server.key"),
    ]);
    assert!(
        err.contains("cannot read the TLS certificate file") && err.contains("missing.pem"),
        "{err}"
    );

    let err = refused(&[
        "--tls-cert",
        &p("server.key"),
        "--tls-key",
        &p("server.pem"),
    ]);
    assert!(err.contains("holds no certificate"), "{err}");
    assert!(err.contains("swapped"), "{err}");

    // The client certificate's key with the server certificate.
    let err = refused(&[
        "--tls-cert",
        &p("server.pem"),
        "--tls-key",
        &p("client.key"),
    ]);
    assert!(err.contains("does not belong to the certificate"), "{err}");

    std::fs::write(certs.dir.join("notes.txt"), "not a certificate\n").unwrap();
    let err = refused(&["--tls-cert", &p("notes.txt"), "--tls-key", &p("server.key")]);
    assert!(err.contains("holds no certificate"), "{err}");
    let err = refused(&["--tls-cert", &p("server.pem"), "--tls-key", &p("notes.txt")]);
    assert!(err.contains("holds no private key"), "{err}");

    // A version 1 certificate (no extensions: `openssl x509 -req` without `-extfile`).
    let made = Command::new("openssl")
        .args([
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
        ])
        .args(["-CAcreateserial", "-out", "v1.pem", "-days", "1"])
        .current_dir(&certs.dir)
        .output()
        .expect("run openssl (apt-get install openssl)");
    assert!(made.status.success(), "{made:?}");
    let err = refused(&["--tls-cert", &p("v1.pem"), "--tls-key", &p("server.key")]);
    assert!(
        err.contains("v1.pem")
            && err.contains("is X.509 version 1")
            && err.contains("subjectAltName"),
        "{err}"
    );

    // Files as openssl also makes them: an encrypted key in OpenSSL's older form, DER
    // certificates and keys, a chain with the server's certificate after the CA's.
    let openssl = |args: &[&str]| {
        let made = Command::new("openssl")
            .args(args)
            .current_dir(&certs.dir)
            .output()
            .expect("run openssl (apt-get install openssl)");
        assert!(made.status.success(), "openssl {args:?}: {made:?}");
    };
    openssl(&[
        "rsa",
        "-in",
        "server.key",
        "-aes256",
        "-traditional",
        "-passout",
        "pass:x",
        "-out",
        "traditional.key",
    ]);
    let err = refused(&[
        "--tls-cert",
        &p("server.pem"),
        "--tls-key",
        &p("traditional.key"),
    ]);
    assert!(err.contains("encrypted key: decrypt it first"), "{err}");
    openssl(&[
        "x509",
        "-in",
        "server.pem",
        "-outform",
        "DER",
        "-out",
        "server.der",
    ]);
    let err = refused(&[
        "--tls-cert",
        &p("server.der"),
        "--tls-key",
        &p("server.key"),
    ]);
    assert!(
        err.contains("looks like DER") && err.contains("-inform DER"),
        "{err}"
    );
    openssl(&[
        "pkey",
        "-in",
        "server.key",
        "-outform",
        "DER",
        "-out",
        "server.key.der",
    ]);
    let err = refused(&[
        "--tls-cert",
        &p("server.pem"),
        "--tls-key",
        &p("server.key.der"),
    ]);
    assert!(
        err.contains("looks like DER") && err.contains("openssl pkey"),
        "{err}"
    );
    let mut reversed = certs.read("ca.pem");
    reversed.extend(certs.read("server.pem"));
    std::fs::write(certs.dir.join("reversed.pem"), reversed).unwrap();
    let err = refused(&[
        "--tls-cert",
        &p("reversed.pem"),
        "--tls-key",
        &p("server.key"),
    ]);
    assert!(
        err.contains("wrong order") && err.contains("certificate number 2"),
        "{err}"
    );

    // One without the other.
    let err = refused(&["--tls-cert", &p("server.pem")]);
    assert!(err.contains("--tls-key"), "{err}");
}

/// The status line of a plain HTTP GET of `path` from `addr`.
fn http_status_line(addr: &str, path: &str) -> String {
    String::from_utf8_lossy(&common::raw_get(addr, path))
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn sighup_without_tls_is_logged_and_the_gateway_goes_on_serving() {
    let mut gw = GatewayProcess::start_with(&[], &[("RUST_LOG", "info")]);
    assert_eq!(
        http_status_line(&gw.addr, "/nobody/here"),
        "HTTP/1.1 404 Not Found"
    );
    // Right after it says it listens, and again later.
    for _ in 0..2 {
        let seen = gw.lines().len();
        gw.signal("HUP");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !gw
            .lines()
            .iter()
            .skip(seen)
            .any(|l| l.contains("nothing to reload"))
        {
            if let Some(status) = gw.child.try_wait().unwrap() {
                panic!(
                    "SIGHUP stopped the gateway ({status}); stderr: {:#?}",
                    gw.lines()
                );
            }
            assert!(Instant::now() < deadline, "stderr: {:#?}", gw.lines());
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(gw.child.try_wait().unwrap().is_none());
        assert_eq!(
            http_status_line(&gw.addr, "/nobody/here"),
            "HTTP/1.1 404 Not Found"
        );
    }
}

#[test]
fn a_tls_handshake_under_way_does_not_hold_the_shutdown_up() {
    let certs = TestCerts::new("gw-tls-stop");
    let mut flags = tls_flags(&certs.dir);
    // A head limit (which bounds the handshake) longer than the shutdown grace period: a
    // handshake waited for would hold the shutdown for all of it.
    flags.extend(["--read-header-timeout", "60s", "--shutdown-timeout", "20s"].map(String::from));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut gw = GatewayProcess::start_with(&flags, &[]);

    // A client that connected and began a handshake (a TLS record header, nothing more).
    let mut pending = std::net::TcpStream::connect(&gw.addr).unwrap();
    std::io::Write::write_all(&mut pending, &[0x16, 0x03, 0x01, 0x00, 0x80]).unwrap();
    // Time for the gateway to accept it.
    std::thread::sleep(Duration::from_secs(1));

    let started = Instant::now();
    gw.signal("TERM");
    let status = loop {
        if let Some(status) = gw.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the gateway did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}; stderr: {:#?}", gw.lines());
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the shutdown waited {:?} for a handshake",
        started.elapsed()
    );
}
