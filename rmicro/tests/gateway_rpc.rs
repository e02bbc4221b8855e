//! `rmicro api --handler rpc`: JSON over HTTP to gRPC services, through `google.api.http`
//! bindings and go-micro's `/service/method` form, message types learned by server reflection.

use std::sync::Arc;
use std::time::Duration;

use clap::FromArgMatches;
use rmicro::api::{ApiArgs, Gateway};
use rmicro::Cli;
use rmicro_runtime::registry::{MemoryRegistry, Registry};
use rmicro_runtime::{RunningService, Service};
use rmicro_tests::fixtures::go::micro::srv::user::register_user_handler;
use rmicro_tests::fixtures::rmicro::test::kitchen::register_kitchen_handler;
use rmicro_tests::http::{self, HttpResponse};
use rmicro_tests::kitchen::Kitchen;
use rmicro_tests::user::Greeter;

async fn services(registry: &Arc<dyn Registry>) -> (RunningService, RunningService) {
    let mut user = Service::builder("go.micro.srv.user")
        .registry(Arc::clone(registry))
        .build();
    register_user_handler(user.server_mut(), Greeter).unwrap();
    let mut kitchen = Service::builder("go.micro.srv.kitchen")
        .registry(Arc::clone(registry))
        .build();
    register_kitchen_handler(kitchen.server_mut(), Kitchen).unwrap();
    let (user, kitchen) = (user.start().await.unwrap(), kitchen.start().await.unwrap());
    for _ in 0..100 {
        let n = registry.list_services().await.unwrap().len();
        if n == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (user, kitchen)
}

async fn gateway(registry: Arc<dyn Registry>) -> (String, tokio::sync::oneshot::Sender<()>) {
    let cli = Cli::new();
    let matches = cli
        .command()
        .try_get_matches_from([
            "rmicro",
            "api",
            "--handler",
            "rpc",
            "--namespace",
            "go.micro.srv",
            "--body-limit",
            "4KiB",
        ])
        .unwrap();
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

async fn call(addr: &str, method: &'static str, path: &str, body: &str) -> HttpResponse {
    let (addr, path, body) = (addr.to_string(), path.to_string(), body.to_string());
    tokio::task::spawn_blocking(move || {
        let headers: &[(&str, &str)] = if body.is_empty() {
            &[]
        } else {
            &[("Content-Type", "application/json")]
        };
        http::request(&addr, method, &path, headers, &body)
    })
    .await
    .unwrap()
}

fn json(resp: &HttpResponse) -> serde_json::Value {
    serde_json::from_str(&resp.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", resp.body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_to_grpc_through_bindings_and_go_micro_paths() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let (_user, _kitchen) = services(&registry).await;
    let (gw, _stop) = gateway(Arc::clone(&registry)).await;

    // go-micro form: /user/call → go.micro.srv.user, User.Call; JSON body is the request.
    let r = call(&gw, "POST", "/user/call", r#"{"name":"John"}"#).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, r#"{"msg":"Hello John"}"#)
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    // Query parameters when there is no body.
    let r = call(&gw, "GET", "/user/call?name=Ada%20L", "").await;
    assert_eq!(r.body, r#"{"msg":"Hello Ada L"}"#);

    // A binding with a path variable: GET /v1/items/{id}.
    let r = call(&gw, "GET", "/v1/items/7", "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(json(&r)["id"], "7");
    // Nested path variable with a pattern, from an additional binding.
    let r = call(&gw, "GET", "/v1/shelves/shelves/top/items/9", "").await;
    let v = json(&r);
    assert_eq!(
        (v["id"].as_str(), v["name"].as_str()),
        (Some("9"), Some("shelves/top"))
    );
    // body: "*" and an Empty response.
    let r = call(
        &gw,
        "POST",
        "/v1/items",
        r#"{"id":"5","name":"x","tags":["a"]}"#,
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (200, "{}"));
    // body: "item" with a path variable inside it, response_body: "name".
    let r = call(&gw, "PATCH", "/v1/items/3", r#"{"name":"renamed"}"#).await;
    assert_eq!((r.status, r.body.as_str()), (200, r#""renamed""#));
    // A custom verb answered with a gRPC error.
    let r = call(&gw, "PURGE", "/v1/items", "").await;
    let v = json(&r);
    assert_eq!(r.status, 501);
    assert_eq!(v["detail"], "purge is not supported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_come_back_as_json_with_the_mapped_status() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let (_user, _kitchen) = services(&registry).await;
    let (gw, _stop) = gateway(Arc::clone(&registry)).await;

    // A handler's go-micro error keeps its id, code and detail.
    let r = call(&gw, "GET", "/v1/items/404", "").await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.body,
        r#"{"id":"kitchen","code":404,"detail":"no item 404","status":"Not Found"}"#
    );
    // A plain gRPC status is mapped.
    let r = call(&gw, "POST", "/user/call", r#"{"name":""}"#).await;
    assert_eq!(r.status, 400);
    assert_eq!(json(&r)["detail"], "name must not be empty");
    // Bad input never reaches the service.
    let r = call(&gw, "POST", "/user/call", "{not json").await;
    assert_eq!(r.status, 400);
    assert!(json(&r)["detail"]
        .as_str()
        .unwrap()
        .starts_with("the request body is not JSON"));
    let r = call(&gw, "POST", "/user/call", r#"{"nope":1}"#).await;
    assert_eq!(r.status, 400);
    assert!(
        json(&r)["detail"]
            .as_str()
            .unwrap()
            .contains("go.micro.srv.user.CallRequest"),
        "{}",
        r.body
    );
    let r = call(&gw, "GET", "/v1/items/notanumber", "").await;
    assert_eq!(r.status, 400, "{}", r.body);
    let big = format!(r#"{{"name":"{}"}}"#, "x".repeat(5000));
    assert_eq!(call(&gw, "POST", "/user/call", &big).await.status, 413);
    // Unknown services and endpoints, streaming methods.
    let r = call(&gw, "POST", "/nosuch/call", "{}").await;
    assert_eq!(
        (r.status, json(&r)["detail"].as_str()),
        (404, Some("service `go.micro.srv.nosuch` not found"))
    );
    let r = call(&gw, "POST", "/user/nosuch", "{}").await;
    assert_eq!(
        (r.status, json(&r)["detail"].as_str()),
        (
            404,
            Some("service `go.micro.srv.user` has no endpoint `User.Nosuch`")
        )
    );
    let r = call(&gw, "POST", "/user/stream", r#"{"count":"2"}"#).await;
    assert_eq!(r.status, 501);
    assert!(json(&r)["detail"].as_str().unwrap().contains("streams"));
}
