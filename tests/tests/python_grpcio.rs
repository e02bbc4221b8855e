//! A client that is not ours, Python grpcio with stubs generated from the same .proto, calling a
//! server built from rmicro's generated handler over loopback.

use std::path::Path;
use std::process::Command;

use rmicro_runtime::Server;
use rmicro_tests::fixtures::go::micro::srv::user::register_user_handler;
use rmicro_tests::spawn;
use rmicro_tests::user::Greeter;

fn python(args: &[&str]) -> std::process::Output {
    Command::new("python3")
        .args(args)
        .output()
        .expect("python3 runs (scripts/test.sh installs grpcio and grpcio-tools)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_client_calls_every_method() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let stubs = tempdir("python-stubs");
    let gen = python(&[
        "-m",
        "grpc_tools.protoc",
        &format!("-I{}", root.join("proto").display()),
        &format!("--python_out={}", stubs.display()),
        &format!("--grpc_python_out={}", stubs.display()),
        "user.proto",
    ]);
    assert!(
        gen.status.success(),
        "grpc_tools.protoc failed (is grpcio-tools installed? scripts/test.sh installs it): {}",
        String::from_utf8_lossy(&gen.stderr)
    );

    let mut server = Server::new();
    register_user_handler(&mut server, Greeter).unwrap();
    let (addr, _guard) = spawn(server).await;

    let script = root.join("tests/python/user_client.py");
    let args = [
        script.display().to_string(),
        addr.to_string(),
        stubs.display().to_string(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(&args)
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "the Python client failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"{"call": "Hello Python", "error": ["INVALID_ARGUMENT", "name must not be empty"], "ping_pong": [5, 6], "stream": [0, 1, 2]}"#
    );
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("rmicro-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_reflection_client_discovers_and_calls_the_service() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut server = Server::new();
    register_user_handler(&mut server, Greeter).unwrap();
    let (addr, _guard) = spawn(server).await;

    let script = root.join("tests/python/reflection_client.py");
    let args = [script.display().to_string(), addr.to_string()];
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(&args)
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "the Python reflection client failed (scripts/test.sh installs grpcio-reflection):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"{"input": "go.micro.srv.user.CallRequest", "msg": "Hello Reflection", "services": ["go.micro.srv.user.User", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"]}"#
    );
}
