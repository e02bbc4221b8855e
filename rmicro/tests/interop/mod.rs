//! The Python grpcio interop server (tests/python/interop_server.py) and a gateway in front of
//! it, shared by the tests that call it.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use clap::FromArgMatches;
use rmicro::api::{ApiArgs, Gateway};
use rmicro::Cli;
use rmicro_runtime::registry::{MemoryRegistry, Registry, Service};
use rmicro_tests::http::{self, HttpResponse};

/// The Python server, stopped when dropped.
pub(crate) struct Python {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pub(crate) address: String,
    /// Where its stubs were generated, removed with it.
    stubs: PathBuf,
}

impl Python {
    /// The server's answer to `command`, one line of JSON.
    fn ask(&mut self, command: &str) -> serde_json::Value {
        writeln!(self.stdin, "{command}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{command:?}: {line:?}: {e}"))
    }

    /// The server's counts of reflection calls: `v1alpha` and `v1` (never served).
    pub(crate) fn stats(&mut self) -> serde_json::Value {
        self.ask("stats")
    }

    /// The last message `Mirror` was sent, as Python's json_format writes it.
    pub(crate) fn last(&mut self) -> serde_json::Value {
        let answer = self.ask("last");
        assert!(!answer["json"].is_null(), "Mirror was not called");
        answer["json"].clone()
    }

    /// The details the last `Fail` with `details: rich` sent, each `Any` as Python's
    /// json_format writes it.
    pub(crate) fn details(&mut self) -> serde_json::Value {
        let answer = self.ask("details");
        assert!(
            !answer["json"].is_null(),
            "Fail was not asked for rich details"
        );
        answer["json"].clone()
    }

    /// `json` (one line) read into message `type_name` by Python's json_format and written
    /// back: `Ok` its JSON, `Err` why json_format refused it.
    pub(crate) fn parse(
        &mut self,
        type_name: &str,
        json: &str,
    ) -> Result<serde_json::Value, String> {
        assert!(!json.contains('\n'), "one line: {json}");
        let answer = self.ask(&format!("parse {type_name} {json}"));
        match answer.get("error") {
            Some(err) => Err(err.as_str().unwrap_or_default().to_string()),
            None => Ok(answer["json"].clone()),
        }
    }
}

impl Drop for Python {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.stubs);
    }
}

/// Starts the Python interop server; `reflection` is `v1alpha` or `none`, each reflection call
/// taking `delay_ms`.
pub(crate) async fn python(reflection: &'static str, delay_ms: u32) -> Python {
    start_python(reflection, delay_ms, false).await
}

/// The Python interop server's next version, as a redeploy brings it: `Everything` has a field
/// more (`added = 100`), which `Labelled` sets.
pub(crate) async fn python_next(reflection: &'static str) -> Python {
    start_python(reflection, 0, true).await
}

async fn start_python(reflection: &'static str, delay_ms: u32, next: bool) -> Python {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let script = root.join("tests/python/interop_server.py");
    let stubs_dir = std::env::temp_dir().join(format!(
        "rmicro-interop-{}-{}",
        std::process::id(),
        uuid_ish()
    ));
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(&stubs_dir)
            .arg(reflection)
            .arg(delay_ms.to_string())
            .args(next.then_some("next"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs (scripts/test.sh installs grpcio, grpcio-tools, grpcio-reflection, grpcio-status)");
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let stdin = child.stdin.take().unwrap();
        // The server prints its address once serving, or exits with an error on stderr.
        stdout.read_line(&mut line).unwrap();
        let Some(address) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            panic!("the Python interop server did not start (scripts/test.sh installs grpcio): {line:?}");
        };
        Python {
            address: address.to_string(),
            child,
            stdin,
            stdout,
            stubs: stubs_dir,
        }
    })
    .await
    .unwrap()
}

/// A name no other test of this process uses.
pub(crate) fn uuid_ish() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The `google.api.http` bindings of `Interop.Mirror`, as rmicro's generated code registers
/// them: the path variables, body and response fields of each kind.
pub(crate) const MIRROR_BINDINGS: &str = r#"[
    {"method": "POST", "path": "/v1/mirror", "body": "*"},
    {"method": "GET", "path": "/v1/mirror/{i64}/{kind}"},
    {"method": "GET", "path": "/v1/nested/{nested.name}/child/{nested.child.name}"},
    {"method": "PUT", "path": "/v1/nested/{str}", "body": "nested"},
    {"method": "PATCH", "path": "/v1/objects/{maybe_nested.name}", "body": "object"},
    {"method": "GET", "path": "/v1/names/{str}", "response_body": "names"},
    {"method": "GET", "path": "/v1/maybe/{str}", "response_body": "maybe_nested"},
    {"method": "GET", "path": "/v1/any/{str}", "response_body": "any"}
]"#;

/// Registers the Python server at `address` as service `name`, in go-micro v2's registry JSON
/// as its grpc server writes it: endpoints named `Interop.Method` with only `stream` metadata,
/// but for `Interop.Mirror`, which has its gRPC path and [`MIRROR_BINDINGS`].
pub(crate) async fn register(registry: &Arc<dyn Registry>, name: &str, address: &str) {
    let endpoint = |method: &str, request: &str, response: &str| {
        serde_json::json!({
            "name": format!("Interop.{method}"),
            "request": {"name": request, "type": request, "values": null},
            "response": {"name": response, "type": response, "values": null},
            "metadata": {"stream": "false"},
        })
    };
    let record = serde_json::json!({
        "name": name,
        "version": "latest",
        "metadata": null,
        "endpoints": [
            endpoint("Echo", "Everything", "Everything"),
            endpoint("Fail", "FailRequest", "Empty"),
            endpoint("Slow", "SlowRequest", "CallInfo"),
            endpoint("Big", "BigRequest", "BigReply"),
            endpoint("Labelled", "Empty", "Everything"),
            endpoint("Legacy", "Old", "Old"),
            endpoint("Wrapped", "StringValue", "StringValue"),
            endpoint("Listed", "ListValue", "ListValue"),
            {
                "name": "Interop.Mirror",
                "request": {"name": "Scalars", "type": "Scalars", "values": null},
                "response": {"name": "Scalars", "type": "Scalars", "values": null},
                "metadata": {
                    "stream": "false",
                    "grpc_path": "/interop.v1.Interop/Mirror",
                    "http": MIRROR_BINDINGS,
                },
            },
        ],
        "nodes": [{
            "id": format!("{name}-0b9c2f6e-7f3a-4a55-9a49-{:012}", uuid_ish()),
            "address": address,
            "metadata": {
                "broker": "http",
                "protocol": "grpc",
                "registry": "etcd",
                "server": "grpc",
                "transport": "grpc",
            },
        }],
    });
    let service: Service = serde_json::from_value(record).unwrap();
    registry
        .register(&service, Duration::from_secs(3600))
        .await
        .unwrap();
}

/// A gateway (rpc handler, namespace `go.micro.srv`) with `extra` flags.
pub(crate) async fn gateway(
    registry: Arc<dyn Registry>,
    extra: &[&str],
) -> (String, tokio::sync::oneshot::Sender<()>) {
    gateway_with(Cli::new(), registry, extra).await
}

/// As [`gateway`], with the plugins of `cli`.
pub(crate) async fn gateway_with(
    cli: Cli,
    registry: Arc<dyn Registry>,
    extra: &[&str],
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let mut args = vec![
        "rmicro",
        "api",
        "--handler",
        "rpc",
        "--namespace",
        "go.micro.srv",
    ];
    args.extend_from_slice(extra);
    let matches = cli.command().try_get_matches_from(args).unwrap();
    let sub = matches.subcommand_matches("api").unwrap().clone();
    let args = ApiArgs::from_arg_matches(&sub).unwrap();
    let gw = Gateway::new(args, &sub, cli.into_plugins(), Some(registry)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(gw.serve(listener, async {
        let _ = rx.await;
    }));
    (addr, tx)
}

/// The Python server (`reflection`), registered as `go.micro.srv.interop`, and a gateway.
pub(crate) async fn setup(
    reflection: &'static str,
    extra: &[&str],
) -> (Python, String, tokio::sync::oneshot::Sender<()>) {
    setup_delayed(reflection, 0, extra).await
}

/// As [`setup`], each reflection call taking `delay_ms`.
pub(crate) async fn setup_delayed(
    reflection: &'static str,
    delay_ms: u32,
    extra: &[&str],
) -> (Python, String, tokio::sync::oneshot::Sender<()>) {
    let py = python(reflection, delay_ms).await;
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    register(&registry, "go.micro.srv.interop", &py.address).await;
    let (gw, stop) = gateway(registry, extra).await;
    (py, gw, stop)
}

pub(crate) async fn call_with(
    addr: &str,
    method: &'static str,
    path: &str,
    headers: &[(&'static str, &'static str)],
    body: &str,
) -> HttpResponse {
    let (addr, path, body) = (addr.to_string(), path.to_string(), body.to_string());
    let mut headers = headers.to_vec();
    if !body.is_empty() {
        headers.push(("Content-Type", "application/json"));
    }
    tokio::task::spawn_blocking(move || http::request(&addr, method, &path, &headers, &body))
        .await
        .unwrap()
}

pub(crate) async fn post(addr: &str, path: &str, body: &str) -> HttpResponse {
    call_with(addr, "POST", path, &[], body).await
}

pub(crate) fn json(resp: &HttpResponse) -> serde_json::Value {
    serde_json::from_str(&resp.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", &resp.body[..resp.body.len().min(500)]))
}
