//! Bad values given to `rmicro` flags: a clear error and exit status 2 before anything starts,
//! never a gateway that runs with a setting that breaks every request.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `rmicro ARGS`; its exit code and stderr, or `None` for the code when it was still
/// running after `limit` (it is killed then).
fn run(args: &[&str], limit: Duration) -> (Option<i32>, String) {
    run_with_env(args, &[], limit)
}

/// As [`run`], with the environment variables `env` set.
fn run_with_env(args: &[&str], env: &[(&str, &str)], limit: Duration) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rmicro"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("MICRO_REGISTRY")
        .env_remove("MICRO_REGISTRY_ADDRESS")
        .env_remove("MICRO_API_AUTH_TOKENS")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rmicro");
    let deadline = Instant::now() + limit;
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stderr);
    }
    (code, stderr)
}

/// A zero read-header, idle or backend timeout would cut off every request (or every response
/// body, or answer every bodiless request with 504 "did not answer within 0ns"): refused.
#[test]
fn zero_gateway_timeouts_are_refused() {
    for flag in [
        "--read-header-timeout",
        "--idle-timeout",
        "--backend-timeout",
    ] {
        for zero in ["0", "0s", "0ms"] {
            let (code, stderr) = run(
                &["api", "--address", "127.0.0.1:0", flag, zero],
                Duration::from_secs(20),
            );
            assert_eq!(code, Some(2), "{flag} {zero}: {stderr}");
            assert!(
                stderr.contains(&format!("invalid value '{zero}' for '{flag}"))
                    && stderr.contains("is no time at all; this setting must be more than 0"),
                "{flag} {zero}: {stderr}"
            );
            assert!(!stderr.contains("panicked"), "{stderr}");
        }
    }
}

/// An etcd address that is no address is refused at once, naming it, by the gateway and by
/// `rmicro registry`: not taken for an etcd that has not answered yet (5 s later), nor a gateway
/// that starts and answers 503 for ever. The memory registry has no address to check.
#[test]
fn bad_registry_addresses_are_refused() {
    for (address, says) in [
        ("", "an empty registry address; give host:port"),
        ("http://[bad", "`http://[bad` is not a registry address"),
        ("127.0.0.1:2379/v3", "has a path"),
        ("unix:///run/etcd.sock", "scheme `unix` is not supported"),
    ] {
        for command in [
            &["api", "--address", "127.0.0.1:0"][..],
            &["registry", "list"][..],
        ] {
            let mut args = vec![
                command[0],
                "--registry",
                "etcd",
                "--registry-address",
                address,
            ];
            args.extend(&command[1..]);
            let (code, stderr) = run(&args, Duration::from_secs(20));
            assert_eq!(code, Some(2), "{args:?}: {stderr}");
            assert!(
                stderr.starts_with("error: --registry-address (MICRO_REGISTRY_ADDRESS): ")
                    && stderr.contains(says),
                "{args:?}: {stderr}"
            );
        }
    }
    let (code, stderr) = run(
        &["registry", "--registry-address", "", "list"],
        Duration::from_secs(20),
    );
    assert_eq!(code, Some(0), "{stderr}");
}

/// Token auth given no token (an empty flag, or a secret that came out empty or as bare
/// commas) is refused, as a token file with none is: it used to start the gateway with auth
/// off, open to every request.
#[test]
fn auth_tokens_given_without_a_token_are_refused() {
    let says = "error: plugin `auth`: --auth-tokens (MICRO_API_AUTH_TOKENS) holds no token; give \
                at least one, or leave the flag out to run without token auth\n";
    for tokens in ["", ",", " , "] {
        let (code, stderr) = run(
            &["api", "--address", "127.0.0.1:0", "--auth-tokens", tokens],
            Duration::from_secs(20),
        );
        assert_eq!(code, Some(2), "--auth-tokens {tokens:?}: {stderr}");
        assert_eq!(stderr, says, "--auth-tokens {tokens:?}");
    }
    let (code, stderr) = run_with_env(
        &["api", "--address", "127.0.0.1:0"],
        &[("MICRO_API_AUTH_TOKENS", ",")],
        Duration::from_secs(20),
    );
    assert_eq!(code, Some(2), "MICRO_API_AUTH_TOKENS=',': {stderr}");
    assert_eq!(stderr, says);
}

/// `--help` is read by people, not rustdoc: no intra-doc links (`[`Type::item`]`) in it.
#[test]
fn help_texts_carry_no_rustdoc_links() {
    for command in [
        &["api", "--help"][..],
        &["registry", "--help"],
        &["registry", "list", "--help"],
        &["check", "--help"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_rmicro"))
            .args(command)
            .output()
            .unwrap();
        assert!(out.status.success(), "{command:?}");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            !help.contains("[`"),
            "{command:?} prints a rustdoc link:\n{help}"
        );
    }
}

/// Runs `rmicro ARGS` with its standard output a pipe nobody reads (closed before it starts, as
/// `| head -0` leaves it) or `/dev/full`; its exit code and stderr.
fn run_into(args: &[&str], full: bool) -> (Option<i32>, String) {
    let stdout = if full {
        Stdio::from(
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap(),
        )
    } else {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        Stdio::from(writer)
    };
    let output = Command::new(env!("CARGO_BIN_EXE_rmicro"))
        .args(args)
        .env_remove("MICRO_REGISTRY")
        .env_remove("MICRO_REGISTRY_ADDRESS")
        .stdin(Stdio::null())
        .stdout(stdout)
        .output()
        .expect("run rmicro");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn output_nobody_reads_is_no_panic_and_a_full_disk_is_an_error() {
    // `rmicro registry list | head -0` used to panic in println! (exit 101).
    for args in [
        &["registry", "list"][..],
        &["registry", "list", "--json"][..],
        &["check", "--manifest-path", "/nonexistent/Cargo.toml"][..],
    ] {
        let (code, stderr) = run_into(args, false);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        let expected = if args[0] == "check" { 2 } else { 0 };
        assert_eq!(code, Some(expected), "{args:?}: {stderr}");
    }
    let (code, stderr) = run_into(&["registry", "list"], true);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("cannot write the output"), "{stderr}");
}

#[test]
fn token_files_that_cannot_work_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let non_ascii = dir.path().join("tokens");
    std::fs::write(&non_ascii, "good\nsécret\n").unwrap();
    let cases = [
        (
            non_ascii.display().to_string(),
            "line 2: a token holds a character no `Authorization` header can carry",
        ),
        ("/dev/zero".to_string(), "not a regular file"),
        (dir.path().display().to_string(), "not a regular file"),
    ];
    for (file, says) in cases {
        let (code, stderr) = run(
            &[
                "api",
                "--address",
                "127.0.0.1:0",
                "--auth-token-file",
                &file,
            ],
            Duration::from_secs(10),
        );
        assert_eq!(code, Some(2), "{file}: {stderr}");
        assert!(stderr.contains(says), "{file}: {stderr}");
        assert!(!stderr.contains("sécret"), "a token was shown: {stderr}");
    }
}

#[test]
fn registry_tls_files_and_credentials_are_checked_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("ca.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let garbage = garbage.display().to_string();
    let etcd = [
        "registry",
        "--registry",
        "etcd",
        "--registry-address",
        "127.0.0.1:1",
    ];
    let cases: [(Vec<&str>, &str); 3] = [
        (
            vec!["--registry-tls-ca", &garbage, "list"],
            "holds no PEM-encoded certificate",
        ),
        (
            vec!["--registry-username", "root", "list"],
            "--registry-username and --registry-password",
        ),
        (
            vec![
                "--registry-tls-cert",
                &garbage,
                "--registry-tls-key",
                &garbage,
                "list",
            ],
            "needs --registry-tls-cert, --registry-tls-key and --registry-tls-ca",
        ),
    ];
    for (args, says) in cases {
        let all: Vec<&str> = etcd.iter().copied().chain(args.iter().copied()).collect();
        let started = Instant::now();
        let (code, stderr) = run(&all, Duration::from_secs(10));
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{args:?} waited for etcd"
        );
    }
}

/// A variable or an argument that is not UTF-8 text is named; clap alone says only that one of
/// them is not.
#[test]
fn text_that_is_not_utf8_is_named() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let bad = OsStr::from_bytes(b"go\xffmicro");
    let output = Command::new(env!("CARGO_BIN_EXE_rmicro"))
        .args(["api", "--address", "127.0.0.1:0"])
        .env("MICRO_API_NAMESPACE", bad)
        .stdin(Stdio::null())
        .output()
        .expect("run rmicro");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("environment variable MICRO_API_NAMESPACE is not UTF-8 text"),
        "{stderr}"
    );

    let output = Command::new(env!("CARGO_BIN_EXE_rmicro"))
        .args([OsStr::new("registry"), OsStr::new("get"), bad])
        .env_remove("MICRO_REGISTRY")
        .stdin(Stdio::null())
        .output()
        .expect("run rmicro");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("argument 3 (`go\u{fffd}micro`) is not UTF-8 text"),
        "{stderr}"
    );
}
