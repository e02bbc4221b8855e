//! The README's first command: the three tiers in one process on the memory registry, a request
//! through all of them.

#[test]
fn demo_answers_through_the_three_tiers() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_demo"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("user srv  (gRPC)  go.micro.srv.user  on 127.0.0.1:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("user API  (axum)  go.micro.api.user  on 127.0.0.1:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("gateway   (HTTP)  rmicro api         on 127.0.0.1:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  -> 200 {\"msg\":\"Hello John\"}"),
        "{stdout}"
    );
    assert!(
        stdout.contains("User.Stream(count: 3)  -> [0, 1, 2]"),
        "{stdout}"
    );
    assert!(
        stdout.contains("User.PingPong(1, 2)    -> [1, 2]"),
        "{stdout}"
    );
}
