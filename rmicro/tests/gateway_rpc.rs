//! `rmicro api --handler rpc`: JSON over HTTP to gRPC services, through `google.api.http`
//! bindings and go-micro's `/service/method` form, message types learned by server reflection.

use std::sync::Arc;
use std::time::Duration;

use clap::FromArgMatches;
use prost::bytes::{Buf, BufMut};
use prost::encoding::{decode_varint, encode_key, encode_varint, DecodeContext, WireType};
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{
    DescriptorProto, EnumDescriptorProto, EnumValueDescriptorProto, FieldDescriptorProto,
    FileDescriptorProto, FileDescriptorSet, MethodDescriptorProto, ServiceDescriptorProto,
};
use rmicro::api::{ApiArgs, Gateway};
use rmicro::Cli;
use rmicro_runtime::registry::{MemoryRegistry, Registry};
use rmicro_runtime::{Endpoint, HttpRule, Request, Response, RunningService, Service, ServiceDef};
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
    gateway_with_limit(registry, "4KiB").await
}

async fn gateway_with_limit(
    registry: Arc<dyn Registry>,
    body_limit: &str,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    gateway_in_mode(registry, "rpc", body_limit).await
}

async fn gateway_in_mode(
    registry: Arc<dyn Registry>,
    handler: &str,
    body_limit: &str,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    gateway_with_flags(
        registry,
        &["--handler", handler, "--body-limit", body_limit],
    )
    .await
}

/// A gateway on `registry` in namespace `go.micro.srv`, with `flags` after `rmicro api`.
async fn gateway_with_flags(
    registry: Arc<dyn Registry>,
    flags: &[&str],
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let cli = Cli::new();
    let mut args = vec!["rmicro", "api", "--namespace", "go.micro.srv"];
    args.extend_from_slice(flags);
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

// The library: a hand-described AIP-style service (`library.v1.Library`) whose methods echo the
// request bytes, so every response shows exactly which message the gateway built.

/// Any message, kept as its encoded bytes (an echo handler returns them unchanged).
#[derive(Clone, Debug, Default, PartialEq)]
struct Raw(Vec<u8>);

impl Message for Raw {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        _ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        encode_key(tag, wire_type, &mut self.0);
        match wire_type {
            WireType::Varint => {
                let v = decode_varint(buf)?;
                encode_varint(v, &mut self.0);
            }
            WireType::SixtyFourBit => self.0.extend_from_slice(&buf.copy_to_bytes(8)),
            WireType::ThirtyTwoBit => self.0.extend_from_slice(&buf.copy_to_bytes(4)),
            WireType::LengthDelimited => {
                let len = decode_varint(buf)?;
                encode_varint(len, &mut self.0);
                self.0.extend_from_slice(&buf.copy_to_bytes(len as usize));
            }
            _ => panic!("groups are not used here"),
        }
        Ok(())
    }
    fn encoded_len(&self) -> usize {
        self.0.len()
    }
    fn clear(&mut self) {
        self.0.clear();
    }
}

fn field(
    name: &str,
    number: i32,
    ty: Type,
    type_name: Option<&str>,
    repeated: bool,
) -> FieldDescriptorProto {
    let json = {
        let mut out = String::new();
        let mut up = false;
        for c in name.chars() {
            if c == '_' {
                up = true;
            } else if up {
                out.extend(c.to_uppercase());
                up = false;
            } else {
                out.push(c);
            }
        }
        out
    };
    FieldDescriptorProto {
        name: Some(name.into()),
        number: Some(number),
        label: Some(if repeated {
            Label::Repeated
        } else {
            Label::Optional
        } as i32),
        r#type: Some(ty as i32),
        type_name: type_name.map(str::to_string),
        json_name: Some(json),
        ..Default::default()
    }
}

fn message(name: &str, fields: Vec<FieldDescriptorProto>) -> DescriptorProto {
    DescriptorProto {
        name: Some(name.into()),
        field: fields,
        ..Default::default()
    }
}

fn wkt_file(file: &str, msg: DescriptorProto) -> FileDescriptorProto {
    FileDescriptorProto {
        name: Some(file.into()),
        package: Some("google.protobuf".into()),
        message_type: vec![msg],
        syntax: Some("proto3".into()),
        ..Default::default()
    }
}

/// `library/v1/library.proto` and the well-known types it imports, as an encoded set.
/// `v2` adds `string subtitle = 14;` to `Book` and a method `Renew`, as a later deploy of the
/// same service would.
fn descriptor_set(v2: bool) -> &'static [u8] {
    let secs = |n: &str| {
        message(
            n,
            vec![
                field("seconds", 1, Type::Int64, None, false),
                field("nanos", 2, Type::Int32, None, false),
            ],
        )
    };
    let mut book = vec![
        field("name", 1, Type::String, None, false),
        field("display_name", 2, Type::String, None, false),
        field("page_count", 3, Type::Int64, None, false),
        field("kind", 4, Type::Enum, Some(".library.v1.Book.Kind"), false),
        field(
            "publish_time",
            5,
            Type::Message,
            Some(".google.protobuf.Timestamp"),
            false,
        ),
        field(
            "ttl",
            6,
            Type::Message,
            Some(".google.protobuf.Duration"),
            false,
        ),
        field(
            "nickname",
            7,
            Type::Message,
            Some(".google.protobuf.StringValue"),
            false,
        ),
        field("archived", 8, Type::Bool, None, false),
        field("blob", 9, Type::Bytes, None, false),
        field("tags", 10, Type::String, None, true),
        field(
            "author_info",
            11,
            Type::Message,
            Some(".library.v1.Book.Author"),
            false,
        ),
        field("ratio", 12, Type::Double, None, false),
    ];
    if v2 {
        book.push(field("subtitle", 14, Type::String, None, false));
    }
    let mut book = message("Book", book);
    book.nested_type = vec![message(
        "Author",
        vec![field("full_name", 1, Type::String, None, false)],
    )];
    book.enum_type = vec![EnumDescriptorProto {
        name: Some("Kind".into()),
        value: ["KIND_UNSPECIFIED", "HARDCOVER"]
            .iter()
            .enumerate()
            .map(|(i, n)| EnumValueDescriptorProto {
                name: Some(n.to_string()),
                number: Some(i as i32),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }];
    let update = message(
        "UpdateBookRequest",
        vec![
            field("book", 1, Type::Message, Some(".library.v1.Book"), false),
            field(
                "update_mask",
                2,
                Type::Message,
                Some(".google.protobuf.FieldMask"),
                false,
            ),
        ],
    );
    let method = |name: &str, ty: &str| MethodDescriptorProto {
        name: Some(name.into()),
        input_type: Some(ty.into()),
        output_type: Some(ty.into()),
        ..Default::default()
    };
    let library = FileDescriptorProto {
        name: Some("library/v1/library.proto".into()),
        package: Some("library.v1".into()),
        dependency: [
            "google/protobuf/timestamp.proto",
            "google/protobuf/duration.proto",
            "google/protobuf/wrappers.proto",
            "google/protobuf/field_mask.proto",
        ]
        .map(String::from)
        .to_vec(),
        message_type: vec![book, update],
        service: vec![ServiceDescriptorProto {
            name: Some("Library".into()),
            method: vec![
                method("EchoBook", ".library.v1.Book"),
                method("Latest", ".library.v1.Book"),
                method("UpdateBook", ".library.v1.UpdateBookRequest"),
                method("Big", ".library.v1.Book"),
            ]
            .into_iter()
            .chain(v2.then(|| method("Renew", ".library.v1.Book")))
            .collect(),
            ..Default::default()
        }],
        syntax: Some("proto3".into()),
        ..Default::default()
    };
    let set = FileDescriptorSet {
        file: vec![
            wkt_file("google/protobuf/timestamp.proto", secs("Timestamp")),
            wkt_file("google/protobuf/duration.proto", secs("Duration")),
            wkt_file(
                "google/protobuf/wrappers.proto",
                message(
                    "StringValue",
                    vec![field("value", 1, Type::String, None, false)],
                ),
            ),
            wkt_file(
                "google/protobuf/field_mask.proto",
                message(
                    "FieldMask",
                    vec![field("paths", 1, Type::String, None, true)],
                ),
            ),
            library,
        ],
    };
    Box::leak(set.encode_to_vec().into_boxed_slice())
}

const fn rule(method: &'static str, path: &'static str, body: &'static str) -> HttpRule {
    HttpRule {
        method,
        path,
        body,
        response_body: "",
        path_params: &[],
    }
}

const fn endpoint(
    name: &'static str,
    path: &'static str,
    ty: &'static str,
    http: &'static [HttpRule],
) -> Endpoint {
    Endpoint {
        name,
        path,
        request: ty,
        response: ty,
        client_streaming: false,
        server_streaming: false,
        http,
    }
}

/// As generated code would record them, in `.proto` order.
static ENDPOINTS: &[Endpoint] = &[
    endpoint(
        "Library.EchoBook",
        "/library.v1.Library/EchoBook",
        "library.v1.Book",
        &[
            rule("GET", "/v1/{name=shelves/*/books/*}", ""),
            rule("POST", "/v1/{name=shelves/*/books/*}:archive", "*"),
            rule("GET", "/v2/{name=files/**}:get", ""),
            rule(
                "GET",
                "/v3/shelves/{author_info.full_name}/books/{display_name}",
                "",
            ),
            rule("POST", "/v4/{display_name}/{author_info.full_name}", "*"),
        ],
    ),
    endpoint(
        "Library.Latest",
        "/library.v1.Library/Latest",
        "library.v1.Book",
        &[rule("GET", "/v1/shelves/me/books/latest", "")],
    ),
    endpoint(
        "Library.UpdateBook",
        "/library.v1.Library/UpdateBook",
        "library.v1.UpdateBookRequest",
        &[rule("PATCH", "/v1/{book.name=shelves/*/books/*}", "book")],
    ),
    endpoint(
        "Library.Big",
        "/library.v1.Library/Big",
        "library.v1.Book",
        &[rule("GET", "/v1/big", "")],
    ),
    // Served from v2 on.
    endpoint(
        "Library.Renew",
        "/library.v1.Library/Renew",
        "library.v1.Book",
        &[rule("POST", "/v1/{name=shelves/*/books/*}:renew", "*")],
    ),
];

/// The size of the `display_name` that `Big` answers: just over 4 MiB.
const BIG: usize = 4 * 1024 * 1024 + 1;

fn library(v2: bool) -> ServiceDef {
    let echo = |req: Request<Raw>| async move { Ok(Response::new(req.into_inner())) };
    let def = ServiceDef::new("library.v1.Library", ENDPOINTS);
    let def = if v2 {
        def.unary("/library.v1.Library/Renew", echo)
    } else {
        def
    };
    def.descriptors(descriptor_set(v2))
        .unary("/library.v1.Library/EchoBook", echo)
        // Latest answers `{"display_name":"latest"}` whatever it is sent.
        .unary(
            "/library.v1.Library/Latest",
            |_req: Request<Raw>| async move { Ok(Response::new(Raw(b"\x12\x06latest".to_vec()))) },
        )
        .unary("/library.v1.Library/UpdateBook", echo)
        // Big answers a `display_name` of BIG bytes.
        .unary("/library.v1.Library/Big", |_req: Request<Raw>| async move {
            let mut book = vec![0x12];
            encode_varint(BIG as u64, &mut book);
            book.resize(book.len() + BIG, b'x');
            Ok(Response::new(Raw(book)))
        })
}

async fn start_library(registry: &Arc<dyn Registry>, v2: bool) -> RunningService {
    let mut svc = Service::builder("go.micro.srv.library")
        .registry(Arc::clone(registry))
        .build();
    svc.server_mut().add_service(library(v2)).unwrap();
    let running = svc.start().await.unwrap();
    wait_for(registry, "go.micro.srv.library").await;
    running
}

/// Waits until `name` is registered and the gateway's route table (cached for a second) can
/// have seen it.
async fn wait_for(registry: &Arc<dyn Registry>, name: &str) {
    for _ in 0..200 {
        if !registry.get_service(name).await.unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(1100)).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{name} never registered");
}

/// The library service and a gateway (10 MiB body limit) in a registry of their own.
async fn library_gateway() -> (
    Arc<dyn Registry>,
    RunningService,
    String,
    tokio::sync::oneshot::Sender<()>,
) {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let lib = start_library(&registry, false).await;
    let (gw, stop) = gateway_with_limit(Arc::clone(&registry), "10MiB").await;
    (registry, lib, gw, stop)
}

/// The detail of a gateway error response with `status`.
fn error_detail(resp: &HttpResponse, status: u16) -> String {
    assert_eq!(resp.status, status, "{}", resp.body);
    let v = json(resp);
    assert_eq!(v["id"], "go.micro.api", "{}", resp.body);
    v["detail"].as_str().unwrap_or_default().to_string()
}

/// Asserts `resp` is the gateway's JSON error with `status` and a detail containing `part`.
fn assert_error_has(resp: &HttpResponse, status: u16, part: &str) {
    let detail = error_detail(resp, status);
    assert!(
        detail.contains(part),
        "{detail:?} lacks {part:?}: {}",
        resp.body
    );
}

/// The http handler pointed at gRPC services (a namespace of gRPC nodes, as go-micro's
/// `go.micro.srv`) says what to run instead, not that the node's answer is unreadable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_handler_in_front_of_a_grpc_service_says_to_use_the_rpc_handler() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let (_user, _kitchen) = services(&registry).await;
    let (gw, _stop) = gateway_in_mode(registry, "http", "4KiB").await;
    let r = call(&gw, "POST", "/user/call", r#"{"name":"a"}"#).await;
    assert_error_has(&r, 502, "speaks gRPC (its registration says protocol=grpc)");
    assert_error_has(&r, 502, "--handler rpc");
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
    // The service alone calls its `Call`, as go-micro's resolver has it.
    let r = call(&gw, "POST", "/user", r#"{"name":"Al"}"#).await;
    assert_eq!((r.status, r.body.as_str()), (200, r#"{"msg":"Hello Al"}"#));
    // An HTML form sets fields as query parameters do; JSON sent as a form (`curl -d`) is JSON.
    let form = |gw: &str, path: &str, body: &str| {
        let (gw, path, body) = (gw.to_string(), path.to_string(), body.to_string());
        tokio::task::spawn_blocking(move || {
            let headers = [(
                "Content-Type",
                "application/x-www-form-urlencoded; charset=utf-8",
            )];
            http::request(&gw, "POST", &path, &headers, &body)
        })
    };
    for (body, want) in [
        ("name=Ada+L%C3%A9", r#"{"msg":"Hello Ada Lé"}"#),
        (r#"{"name":"Jo"}"#, r#"{"msg":"Hello Jo"}"#),
        // No field set: the service's own answer to an empty name.
        (
            "",
            r#"{"id":"go.micro.client","code":400,"detail":"name must not be empty","status":"Bad Request"}"#,
        ),
    ] {
        let r = form(&gw, "/user/call", body).await.unwrap();
        assert_eq!(r.body.as_str(), want, "{body}");
    }
    // The URL's query and the form together, one field given by both refused.
    let r = form(&gw, "/user/call?name=a", "name=b").await.unwrap();
    assert_error_has(&r, 400, "given twice");

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
    // Whatever the body: a field the method's request lacks is not what is wrong.
    let r = call(&gw, "POST", "/user/stream", r#"{"nope":1}"#).await;
    assert_eq!(r.status, 501, "{}", r.body);
    assert!(json(&r)["detail"].as_str().unwrap().contains("streams"));

    // A service that had nodes and has none now is unavailable, as in the http handler.
    let _ = _user.stop().await;
    let r = call(&gw, "POST", "/user/call", r#"{"name":"Ada"}"#).await;
    assert_eq!(
        (r.status, json(&r)["detail"].as_str()),
        (503, Some("service `go.micro.srv.user` has no nodes")),
        "{}",
        r.body
    );
}

/// Path variables (nested, `**` with a verb), repeated, nested and enum query parameters and
/// `body: "*"` beside path variables, all seen in the message the service got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_library_request_transcodes_path_query_and_body() {
    let (_r, _lib, gw, _stop) = library_gateway().await;
    let r = call(&gw, "GET", "/v1/shelves/s1/books/b1?page_count=5&tags=a&tags=b&author_info.full_name=Ann&kind=HARDCOVER", "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = json(&r);
    assert_eq!(v["name"], "shelves/s1/books/b1");
    assert_eq!(v["pageCount"], "5");
    assert_eq!(v["tags"], serde_json::json!(["a", "b"]));
    assert_eq!(v["authorInfo"]["fullName"], "Ann");
    assert_eq!(v["kind"], "HARDCOVER");
    let r = call(&gw, "GET", "/v2/files/a/b/c:get", "").await;
    assert_eq!(json(&r)["name"], "files/a/b/c", "{}", r.body);
    let r = call(&gw, "GET", "/v3/shelves/Ann/books/Dune", "").await;
    let v = json(&r);
    assert_eq!(
        (
            v["authorInfo"]["fullName"].as_str(),
            v["displayName"].as_str()
        ),
        (Some("Ann"), Some("Dune"))
    );
    let r = call(
        &gw,
        "POST",
        "/v1/shelves/s1/books/b1:archive",
        r#"{"displayName":"x","archived":true}"#,
    )
    .await;
    let v = json(&r);
    assert_eq!(
        (v["name"].as_str(), v["displayName"].as_str()),
        (Some("shelves/s1/books/b1"), Some("x")),
        "{}",
        r.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_percent_escapes_answer_400_and_never_panic() {
    let (_r, _lib, gw, _stop) = library_gateway().await;
    // The test client sends the target's UTF-8 bytes as they are (`é` unescaped).
    for target in [
        "/v1/shelves/s1/books/%a\u{e9}",
        "/v1/shelves/s1/books/b1?display_name=%a\u{e9}",
        "/v1/shelves/s1/books/b1?display_name=50%",
        "/v1/shelves/s1/books/%ff",
    ] {
        let detail = error_detail(&call(&gw, "GET", target, "").await, 400);
        assert!(
            detail.contains("two hex digits") || detail.contains("UTF-8"),
            "{target}: {detail}"
        );
    }
    // Raw and escaped UTF-8 both decode.
    let r = call(
        &gw,
        "GET",
        "/v1/shelves/s1/books/b1?display_name=%C3%A9t%C3%A9",
        "",
    )
    .await;
    assert_eq!(json(&r)["displayName"], "\u{e9}t\u{e9}", "{}", r.body);
    let r = call(&gw, "GET", "/v3/shelves/Ann/books/\u{e9}t\u{e9}", "").await;
    assert_eq!(json(&r)["displayName"], "\u{e9}t\u{e9}", "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_parameters_cannot_override_fields_bound_by_the_path_or_body() {
    let (_r, _lib, gw, _stop) = library_gateway().await;
    let r = call(
        &gw,
        "GET",
        "/v1/shelves/public/books/b1?name=shelves/private/books/secret",
        "",
    )
    .await;
    let detail = error_detail(&r, 400);
    assert!(
        detail.contains("`name`") && detail.contains("the path binds"),
        "{detail}"
    );
    // By JSON name, and under a nested bound field.
    let r = call(
        &gw,
        "GET",
        "/v3/shelves/Ann/books/Dune?authorInfo.fullName=Bob",
        "",
    )
    .await;
    let detail = error_detail(&r, 400);
    assert!(detail.contains("`author_info.full_name`"), "{detail}");
    // A field inside the body field.
    let r = call(
        &gw,
        "PATCH",
        "/v1/shelves/s1/books/b1?book.display_name=q",
        r#"{"displayName":"x"}"#,
    )
    .await;
    let detail = error_detail(&r, 400);
    assert!(
        detail.contains("`book.display_name`") && detail.contains("request body (`book`)"),
        "{detail}"
    );
    // Fields nobody binds still come from the query; the path's values stand.
    let r = call(&gw, "GET", "/v3/shelves/Ann/books/Dune?page_count=2", "").await;
    let v = json(&r);
    assert_eq!(
        (
            v["authorInfo"]["fullName"].as_str(),
            v["displayName"].as_str(),
            v["pageCount"].as_str()
        ),
        (Some("Ann"), Some("Dune"), Some("2")),
        "{}",
        r.body
    );
}

/// What a body says and how: `null` for a message that holds a path variable is that message
/// empty (proto3 JSON's default), a body of whitespace is no body, the query string sets the
/// fields a `body: "*"` leaves unset (as go-micro merges them) and is refused for one it sets
/// (neither value is dropped unsaid), and an integer written as a double past 2^53, which may
/// have been rounded on reading, is refused rather than changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_whitespace_query_beside_a_whole_body_and_inexact_integers() {
    let (_r, _lib, gw, _stop) = library_gateway().await;
    // PATCH /v1/{book.name=shelves/*/books/*} body: "book".
    let r = call(&gw, "PATCH", "/v1/shelves/s1/books/b1", "null").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        json(&r)["book"]["name"],
        "shelves/s1/books/b1",
        "{}",
        r.body
    );

    // POST /v1/{name=shelves/*/books/*}:archive body: "*".
    let archive = "/v1/shelves/s1/books/b1:archive";
    let r = call(&gw, "POST", &format!("{archive}?display_name=q"), " \r\n").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(json(&r)["displayName"], "q", "{}", r.body);
    let r = call(
        &gw,
        "POST",
        &format!("{archive}?page_count=3&_=cachebuster"),
        r#"{"displayName":"x"}"#,
    )
    .await;
    let v = json(&r);
    assert_eq!(
        (v["displayName"].as_str(), v["pageCount"].as_str()),
        (Some("x"), Some("3")),
        "{}",
        r.body
    );
    let r = call(
        &gw,
        "POST",
        &format!("{archive}?display_name=y"),
        r#"{"displayName":"x"}"#,
    )
    .await;
    assert_error_has(&r, 400, "which the request body sets (`display_name`)");
    // `null` sets nothing: the query may, a list too.
    let r = call(
        &gw,
        "POST",
        &format!("{archive}?display_name=y&tags=a&tags=b"),
        r#"{"displayName":null,"tags":null}"#,
    )
    .await;
    let v = json(&r);
    assert_eq!(v["displayName"], "y", "{}", r.body);
    assert_eq!(v["tags"], serde_json::json!(["a", "b"]), "{}", r.body);

    for (body, want) in [
        (r#"{"pageCount": 1e3}"#, "1000"),
        (r#"{"pageCount": 1e18}"#, "1000000000000000000"),
        (r#"{"pageCount": 9007199254740991.0}"#, "9007199254740991"),
        (r#"{"pageCount": 9007199254740993}"#, "9007199254740993"),
        (r#"{"pageCount": "9007199254740993.0"}"#, "9007199254740993"),
    ] {
        let r = call(&gw, "POST", archive, body).await;
        assert_eq!(json(&r)["pageCount"], want, "{body}: {}", r.body);
    }
    for body in [
        r#"{"pageCount": 9007199254740993.0}"#,
        r#"{"pageCount": 9.007199254740993e15}"#,
        r#"{"pageCount": -1e300}"#,
    ] {
        let r = call(&gw, "POST", archive, body).await;
        let detail = error_detail(&r, 400);
        assert!(
            detail.contains("`page_count`") || detail.contains("`pageCount`"),
            "{body}: {detail}"
        );
        assert!(
            detail.contains("2^53") || detail.contains("out of range"),
            "{body}: {detail}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn well_known_types_are_set_from_their_json_strings_in_the_query() {
    let (_r, _lib, gw, _stop) = library_gateway().await;
    // AIP-134 update: the body is the resource, update_mask comes from the query string.
    let r = call(
        &gw,
        "PATCH",
        "/v1/shelves/s1/books/b1?update_mask=display_name,author_info.full_name",
        r#"{"displayName":"x"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        json(&r)["updateMask"],
        "displayName,authorInfo.fullName",
        "{}",
        r.body
    );
    let r = call(
        &gw,
        "GET",
        "/v1/shelves/s1/books/b1?publish_time=2020-01-01T00:00:00Z&ttl=3.5s&nickname=bob",
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = json(&r);
    assert_eq!(
        (
            v["publishTime"].as_str(),
            v["ttl"].as_str(),
            v["nickname"].as_str()
        ),
        (Some("2020-01-01T00:00:00Z"), Some("3.500s"), Some("bob")),
        "{}",
        r.body
    );
    // A malformed value is the client's error.
    let r = call(&gw, "GET", "/v1/shelves/s1/books/b1?ttl=soon", "").await;
    assert_error_has(&r, 400, "library.v1.Book");
}

/// A PATCH whose body is one field of the request (AIP-134's `book`) and that sends no
/// `update_mask` gets one naming the fields the body sets, as grpc-gateway fills it in: a
/// service that reads an empty mask as "replace the whole resource" would otherwise clear every
/// field the client left out. Paths are proto names, nested messages' fields by their own
/// paths, a repeated field or a well-known type as a whole; a mask the query gives stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_without_an_update_mask_gets_the_fields_its_body_sets() {
    let (_r, _lib, gw, _stop) = library_gateway().await;
    let r = call(
        &gw,
        "PATCH",
        "/v1/shelves/s1/books/b1",
        r#"{"displayName": "x", "authorInfo": {"fullName": "Ann"}, "tags": ["a"],
            "publish_time": "2020-01-01T00:00:00Z", "ratio": null}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = json(&r);
    assert_eq!(
        (v["updateMask"].as_str(), v["book"]["name"].as_str()),
        (
            Some("authorInfo.fullName,displayName,publishTime,ratio,tags"),
            Some("shelves/s1/books/b1")
        ),
        "{}",
        r.body
    );
    // An empty message is set as a whole.
    let r = call(
        &gw,
        "PATCH",
        "/v1/shelves/s1/books/b1",
        r#"{"authorInfo": {}}"#,
    )
    .await;
    assert_eq!(json(&r)["updateMask"], "authorInfo", "{}", r.body);
    // The query's mask stands.
    let r = call(
        &gw,
        "PATCH",
        "/v1/shelves/s1/books/b1?update_mask=page_count",
        r#"{"displayName": "x"}"#,
    )
    .await;
    assert_eq!(json(&r)["updateMask"], "pageCount", "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_variables_decode_as_http_proto_says() {
    let (_r, _lib, gw, _stop) = library_gateway().await;
    // `+` in a path is a plus (only query strings use it for a space).
    let r = call(&gw, "GET", "/v1/shelves/s1/books/c++", "").await;
    assert_eq!(json(&r)["name"], "shelves/s1/books/c++", "{}", r.body);
    // In a multi-segment variable `%2F` stays encoded (a `/` inside a segment is not a
    // separator), other escapes are decoded.
    let r = call(&gw, "GET", "/v1/shelves/a%2Fbooks%2Fb/books/x%20y", "").await;
    assert_eq!(
        json(&r)["name"],
        "shelves/a%2Fbooks%2Fb/books/x y",
        "{}",
        r.body
    );
    let r = call(&gw, "GET", "/v2/files/a%2fb/c:get", "").await;
    assert_eq!(json(&r)["name"], "files/a%2fb/c", "{}", r.body);
    // A single-segment variable decodes everything.
    let r = call(&gw, "GET", "/v3/shelves/A%2FB/books/c+d%2B", "").await;
    let v = json(&r);
    assert_eq!(
        (
            v["authorInfo"]["fullName"].as_str(),
            v["displayName"].as_str()
        ),
        (Some("A/B"), Some("c+d+")),
        "{}",
        r.body
    );
    // Query strings keep `+` for a space.
    let r = call(
        &gw,
        "GET",
        "/v1/shelves/s1/books/b1?display_name=a+b%2B",
        "",
    )
    .await;
    assert_eq!(json(&r)["displayName"], "a b+", "{}", r.body);
}

/// Asserts that `rounds` rounds of a GET and a POST with a body to the library all answer 200.
async fn assert_library_calls_succeed(gw: &str, rounds: usize) {
    let mut statuses = Vec::new();
    for n in 0..rounds {
        statuses.push(call(gw, "GET", "/v1/shelves/s1/books/b1", "").await.status);
        let body = format!(r#"{{"displayName":"{n}"}}"#);
        let r = call(gw, "POST", "/v1/shelves/s1/books/b1:archive", &body).await;
        statuses.push(r.status);
    }
    assert!(
        statuses.iter().all(|s| *s == 200),
        "some calls failed: {statuses:?}"
    );
}

/// A registered node that is down (crashed, its registration not yet expired) is avoided, and a
/// call that could not reach it goes to another node at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_node_is_avoided_and_the_call_retried_on_another() {
    let (registry, lib, gw, _stop) = library_gateway().await;
    let mut dead = lib.record().clone();
    dead.nodes[0].id = "go.micro.srv.library-dead".into();
    dead.nodes[0].address = "127.0.0.1:1".into();
    registry
        .register(&dead, Duration::from_secs(3600))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // A call with a body too: its message is in hand, so it can go elsewhere.
    assert_library_calls_succeed(&gw, 10).await;
}

/// A node that takes calls and answers none within the backend timeout (deadlocked, out of
/// threads) is avoided once a call to it timed out, as one that cannot be reached: the calls
/// after its 504 go to the other node, not every second one to it for the whole timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_does_not_answer_in_time_is_avoided_after_its_504() {
    use rmicro_tests::fixtures::rmicro::test::hop::{
        register_hop_handler, HopHandler, HopReply, HopRequest,
    };
    struct Hung;
    impl HopHandler for Hung {
        async fn relay(
            &self,
            _: Request<HopRequest>,
        ) -> Result<Response<HopReply>, rmicro_runtime::Status> {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(Response::new(HopReply::default()))
        }
    }
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let mut hung = Service::builder("go.micro.srv.hop")
        .registry(Arc::clone(&registry))
        .build();
    register_hop_handler(hung.server_mut(), Hung).unwrap();
    let mut fine = Service::builder("go.micro.srv.hop")
        .registry(Arc::clone(&registry))
        .build();
    let node = rmicro_tests::hop::HopNode {
        name: "fine".into(),
        next: None,
    };
    register_hop_handler(fine.server_mut(), node).unwrap();
    let (_hung, _fine) = (hung.start().await.unwrap(), fine.start().await.unwrap());
    wait_for(&registry, "go.micro.srv.hop").await;
    let (gw, _stop) = gateway_with_flags(
        Arc::clone(&registry),
        &[
            "--handler",
            "rpc",
            "--backend-timeout",
            "500ms",
            "--selector",
            "roundrobin",
        ],
    )
    .await;
    let relay = || call(&gw, "POST", "/hop/hop/relay", "{}");
    // Round robin meets the hung node within two calls.
    let first = [relay().await.status, relay().await.status];
    assert!(first.contains(&504), "{first:?}");
    for i in 0..8 {
        let r = relay().await;
        assert_eq!(r.status, 200, "call {i} after the 504: {}", r.body);
        assert_eq!(json(&r)["seen"][0]["node"], "fine", "{}", r.body);
    }
}

/// A client that leaves the call no time (`Grpc-Timeout: 0n`) gets a 504 at once, and the
/// service hears nothing: the call is not sent with a timeout of nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_left_no_time_is_a_504_and_is_not_sent() {
    use rmicro_tests::fixtures::rmicro::test::hop::{
        register_hop_handler, HopHandler, HopReply, HopRequest,
    };
    use std::sync::atomic::{AtomicUsize, Ordering};
    struct Counted(Arc<AtomicUsize>);
    impl HopHandler for Counted {
        async fn relay(
            &self,
            _: Request<HopRequest>,
        ) -> Result<Response<HopReply>, rmicro_runtime::Status> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(Response::new(HopReply::default()))
        }
    }
    let calls = Arc::new(AtomicUsize::new(0));
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let mut hop = Service::builder("go.micro.srv.hop")
        .registry(Arc::clone(&registry))
        .build();
    register_hop_handler(hop.server_mut(), Counted(Arc::clone(&calls))).unwrap();
    let _hop = hop.start().await.unwrap();
    wait_for(&registry, "go.micro.srv.hop").await;
    let (gw, _stop) = gateway_with_flags(Arc::clone(&registry), &["--handler", "rpc"]).await;
    let relay = |timeout: Option<&'static str>| {
        let gw = gw.clone();
        tokio::task::spawn_blocking(move || {
            let mut headers = vec![("Content-Type", "application/json")];
            headers.extend(timeout.map(|t| ("Grpc-Timeout", t)));
            http::request(&gw, "POST", "/hop/hop/relay", &headers, "{}")
        })
    };
    // Described first, so the call below has nothing to read before it is sent.
    let r = relay(None).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let r = relay(Some("0n")).await.unwrap();
    assert_eq!(r.status, 504, "{}", r.body);
    assert!(r.body.contains("ran out before"), "{}", r.body);
    let r = relay(Some("5S")).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the call left no time was not sent"
    );
}

/// A TCP proxy to one node: new connections are put through only after `delay` (the node
/// accepts late, as one starting up or overloaded does), and those open can be cut (as a node
/// restarting cuts them).
struct LateLink {
    addr: String,
    delay: Arc<std::sync::Mutex<Duration>>,
    open: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl LateLink {
    async fn start(upstream: String) -> LateLink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let link = LateLink {
            addr: listener.local_addr().unwrap().to_string(),
            delay: Arc::default(),
            open: Arc::default(),
        };
        let (delay, open) = (Arc::clone(&link.delay), Arc::clone(&link.open));
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let wait = *delay.lock().unwrap();
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    if let Ok(mut node) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut node).await;
                    }
                });
                open.lock().unwrap().push(task);
            }
        });
        link
    }

    /// Cuts the open connections and delays new ones by `delay`; returns once the gateway
    /// has had time to see the cut connections closed (a call it sent on one as it closed
    /// would fail, which is not what the test is about).
    async fn cut_and_delay(&self, delay: Duration) {
        *self.delay.lock().unwrap() = delay;
        let open: Vec<_> = self.open.lock().unwrap().drain(..).collect();
        for task in open {
            task.abort();
            let _ = task.await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A call that has to open a new connection to its node hands the service what is left of
/// its deadline once the connection is open, not what was left before: the service is not
/// told it has time the gateway will not wait for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_time_spent_connecting_is_not_told_to_the_service_as_left() {
    use rmicro_tests::fixtures::rmicro::test::hop::{
        register_hop_handler, HopHandler, HopReply, HopRequest,
    };
    type Heard = Arc<std::sync::Mutex<Vec<Duration>>>;
    struct Timed(Heard);
    impl HopHandler for Timed {
        async fn relay(
            &self,
            _: Request<HopRequest>,
        ) -> Result<Response<HopReply>, rmicro_runtime::Status> {
            let left = rmicro_runtime::context::current().and_then(|c| c.remaining());
            self.0.lock().unwrap().push(left.unwrap_or_default());
            Ok(Response::new(HopReply::default()))
        }
    }
    let heard = Heard::default();
    let port = rmicro_tests::free_port();
    let link = LateLink::start(format!("127.0.0.1:{port}")).await;
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let mut hop = Service::builder("go.micro.srv.hop")
        .address(format!("127.0.0.1:{port}"))
        .advertise(link.addr.clone())
        .registry(Arc::clone(&registry))
        .build();
    register_hop_handler(hop.server_mut(), Timed(Arc::clone(&heard))).unwrap();
    let _hop = hop.start().await.unwrap();
    wait_for(&registry, "go.micro.srv.hop").await;
    let (gw, _stop) = gateway_with_flags(Arc::clone(&registry), &["--handler", "rpc"]).await;
    let relay = || {
        let gw = gw.clone();
        tokio::task::spawn_blocking(move || {
            let headers = [
                ("Content-Type", "application/json"),
                ("Grpc-Timeout", "10S"),
            ];
            http::request(&gw, "POST", "/hop/hop/relay", &headers, "{}")
        })
    };
    // Described, and the connection open: the service hears about the whole 10 s.
    let r = relay().await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    // The node's connections cut, and a new one put through 2 s late.
    link.cut_and_delay(Duration::from_secs(2)).await;
    let r = relay().await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let heard = heard.lock().unwrap().clone();
    assert_eq!(heard.len(), 2, "{heard:?}");
    assert!(heard[0] > Duration::from_secs(9), "{heard:?}");
    assert!(
        heard[1] < Duration::from_millis(8_500) && heard[1] > Duration::from_secs(5),
        "the service heard {:?} left after 2 s of connecting",
        heard[1]
    );
}

/// Messages over tonic's 4 MiB default: responses up to the larger of --body-limit and 4 MiB
/// come back; a bigger one is 502, a request message over the service's limit 413.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_within_the_limits_pass_and_others_are_refused_clearly() {
    let (registry, _lib, gw, _stop) = library_gateway().await;
    let r = call(&gw, "GET", "/v1/big", "").await;
    assert_eq!(r.status, 200, "{}", &r.body[..r.body.len().min(300)]);
    assert_eq!(json(&r)["displayName"].as_str().map(str::len), Some(BIG));
    // Through go-micro's form: a request message of 4 MiB, its answer a few bytes more.
    let mut user = Service::builder("go.micro.srv.user")
        .registry(Arc::clone(&registry))
        .build();
    register_user_handler(user.server_mut(), Greeter).unwrap();
    let _user = user.start().await.unwrap();
    wait_for(&registry, "go.micro.srv.user").await;
    let name = "x".repeat(4 * 1024 * 1024 - 7);
    let r = call(
        &gw,
        "POST",
        "/user/call",
        &format!(r#"{{"name":"{name}"}}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", &r.body[..r.body.len().min(300)]);
    // A request message over the service's limit (tonic's 4 MiB) under a 10 MiB body limit.
    let name = "x".repeat(5 * 1024 * 1024);
    let r = call(
        &gw,
        "POST",
        "/user/call",
        &format!(r#"{{"name":"{name}"}}"#),
    )
    .await;
    let detail = error_detail(&r, 413);
    assert!(detail.contains("over the service's limit"), "{detail}");

    // A gateway whose body limit is under 4 MiB still takes 4 MiB responses, not more.
    let (small, _stop_small) = gateway(Arc::clone(&registry)).await;
    let r = call(&small, "GET", "/v1/big", "").await;
    let detail = error_detail(&r, 502);
    assert!(detail.contains("4194304-byte limit"), "{detail}");
    let r = call(&small, "GET", "/v1/shelves/s1/books/b1", "").await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enum_numbers_and_special_floats_come_from_the_query() {
    let (_r, _lib, gw, _stop) = library_gateway().await;
    let r = call(&gw, "GET", "/v1/shelves/s1/books/b1?kind=1", "").await;
    assert_eq!(json(&r)["kind"], "HARDCOVER", "{}", r.body);
    let r = call(&gw, "GET", "/v1/shelves/s1/books/b1?kind=HARDCOVER", "").await;
    assert_eq!(json(&r)["kind"], "HARDCOVER", "{}", r.body);
    for (query, expected) in [
        ("NaN", serde_json::json!("NaN")),
        ("Infinity", serde_json::json!("Infinity")),
        ("-Infinity", serde_json::json!("-Infinity")),
        ("1.5", serde_json::json!(1.5)),
        ("-2e3", serde_json::json!(-2000.0)),
    ] {
        let r = call(
            &gw,
            "GET",
            &format!("/v1/shelves/s1/books/b1?ratio={query}"),
            "",
        )
        .await;
        assert_eq!(json(&r)["ratio"], expected, "ratio={query}: {}", r.body);
    }
    let r = call(&gw, "GET", "/v1/shelves/s1/books/b1?ratio=lots", "").await;
    assert_error_has(&r, 400, "`ratio` takes a number");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_path_with_another_method_answers_405_with_allow() {
    let (_r, _lib, gw, _stop) = library_gateway().await;
    // `/v1/{name=shelves/*/books/*}` is bound for GET (EchoBook) and PATCH (UpdateBook).
    let r = call(&gw, "DELETE", "/v1/shelves/s1/books/b1", "").await;
    let detail = error_detail(&r, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD, PATCH"), "{detail}");
    assert!(detail.contains("takes GET, HEAD, PATCH"), "{detail}");
    assert_eq!(json(&r)["status"], "Method Not Allowed", "{}", r.body);
    // A path no binding takes is still go-micro's form (and its 404).
    let r = call(&gw, "DELETE", "/nosuch/call", "").await;
    assert_eq!(r.status, 404, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_on_a_get_binding_answers_the_get_head_without_its_body() {
    let (_r, _lib, gw, _stop) = library_gateway().await;
    let get = call(&gw, "GET", "/v1/shelves/s1/books/b1", "").await;
    assert_eq!(get.status, 200, "{}", get.body);
    let head = call(&gw, "HEAD", "/v1/shelves/s1/books/b1", "").await;
    assert_eq!(head.status, 200, "{}", head.body);
    assert_eq!(head.body, "", "a HEAD answer carries no body");
    assert_eq!(head.header("content-type"), get.header("content-type"));
    assert_eq!(head.header("content-length"), get.header("content-length"));
    // A path bound for POST only does not take HEAD: the 405's head, without its body.
    let r = call(&gw, "HEAD", "/v4/Dune/Ann", "").await;
    assert_eq!((r.status, r.body.as_str()), (405, ""));
    assert_eq!(r.header("allow"), Some("POST"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_query_parameters_are_ignored_unknown_body_fields_are_not() {
    let (_r, _lib, gw, _stop) = library_gateway().await;
    let r = call(
        &gw,
        "GET",
        "/v1/shelves/s1/books/b1?_=1700000000&utm_source=x&author_info.nope=1&page_count=4",
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(json(&r)["pageCount"], "4", "{}", r.body);
    let r = call(
        &gw,
        "POST",
        "/v1/shelves/s1/books/b1:archive",
        r#"{"nope":1}"#,
    )
    .await;
    assert_error_has(&r, 400, "library.v1.Book");
    // A known field used wrongly is still an error.
    let r = call(&gw, "GET", "/v1/shelves/s1/books/b1?display_name.x=1", "").await;
    assert_error_has(&r, 400, "not a message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_most_specific_binding_wins_over_an_earlier_variable_one() {
    let (_r, _lib, gw, _stop) = library_gateway().await;
    // EchoBook's `/v1/{name=shelves/*/books/*}` comes first and matches too.
    let r = call(&gw, "GET", "/v1/shelves/me/books/latest", "").await;
    assert_eq!(json(&r)["displayName"], "latest", "{}", r.body);
    let r = call(&gw, "GET", "/v1/shelves/me/books/first", "").await;
    assert_eq!(json(&r)["name"], "shelves/me/books/first", "{}", r.body);
}

/// Restarts the library as v2 with the same node id (as a node whose id outlives a restart), so
/// that only a request naming something new can tell the gateway its descriptors are stale.
async fn redeploy_keeping_the_node_id(
    registry: &Arc<dyn Registry>,
    v1: RunningService,
) -> RunningService {
    let v2 = start_library(registry, true).await;
    let mut same = v2.record().clone();
    same.nodes[0].id = v1.record().nodes[0].id.clone();
    v1.stop().await.unwrap();
    registry
        .register(&same, Duration::from_secs(3600))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    v2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptors_are_read_again_for_a_field_they_lack() {
    let (registry, lib, gw, _stop) = library_gateway().await;
    let archive = "/v1/shelves/s1/books/b1:archive";
    let r = call(&gw, "POST", archive, r#"{"displayName":"x"}"#).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let _v2 = redeploy_keeping_the_node_id(&registry, lib).await;
    let r = call(&gw, "POST", archive, r#"{"subtitle":"new"}"#).await;
    assert_eq!(
        (r.status, json(&r)["subtitle"].clone()),
        (200, "new".into()),
        "{}",
        r.body
    );
    // A field no version has is still the client's error.
    let r = call(&gw, "POST", archive, r#"{"nope":1}"#).await;
    assert_eq!(r.status, 400, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptors_are_read_again_for_a_method_they_lack() {
    let (registry, lib, gw, _stop) = library_gateway().await;
    let r = call(&gw, "GET", "/v1/shelves/s1/books/b1", "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let _v2 = redeploy_keeping_the_node_id(&registry, lib).await;
    let r = call(
        &gw,
        "POST",
        "/v1/shelves/s1/books/b1:renew",
        r#"{"pageCount":"3"}"#,
    )
    .await;
    assert_eq!(
        (r.status, json(&r)["name"].clone()),
        (200, "shelves/s1/books/b1".into()),
        "{}",
        r.body
    );
}

/// Descriptors stand while the node they came from is registered: a service redeployed on a new
/// node is described anew even for what the old descriptors would silently drop (a query
/// parameter naming no field is ignored).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptors_follow_the_node_they_came_from() {
    let (registry, lib, gw, _stop) = library_gateway().await;
    let r = call(&gw, "GET", "/v1/shelves/s1/books/b1", "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    lib.stop().await.unwrap();
    let _v2 = start_library(&registry, true).await;
    let r = call(&gw, "GET", "/v1/shelves/s1/books/b1?subtitle=new", "").await;
    assert_eq!(json(&r)["subtitle"], "new", "{}", r.body);
}

/// go-micro's services register endpoints (`Library.EchoBook`) without a gRPC path, and a
/// service's proto package need not be its registry name: the gateway finds the gRPC service
/// among those the node serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_micro_endpoints_without_grpc_paths_are_found_at_the_node() {
    let (registry, lib, gw, _stop) = library_gateway().await;
    let mut books = lib.record().clone();
    books.name = "go.micro.srv.books".into();
    books.nodes[0].id = "go.micro.srv.books-1".into();
    for endpoint in &mut books.endpoints {
        endpoint.metadata = [("stream".to_string(), "false".to_string())].into();
    }
    registry
        .register(&books, Duration::from_secs(3600))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = call(
        &gw,
        "POST",
        "/books/library/echoBook",
        r#"{"name":"shelves/1/books/2","pageCount":"3"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        json(&r),
        serde_json::json!({"name": "shelves/1/books/2", "pageCount": "3"})
    );
    // Asked again: the path is kept, and an endpoint the node lacks is still named.
    let r = call(&gw, "POST", "/books/library/echoBook", r#"{"name":"x"}"#).await;
    assert_eq!((r.status, json(&r)["name"].clone()), (200, "x".into()));
    let mut other = books.clone();
    other.name = "go.micro.srv.other".into();
    other.endpoints[0].name = "Shelf.Get".into();
    registry
        .register(&other, Duration::from_secs(3600))
        .await
        .unwrap();
    let r = call(&gw, "POST", "/other/shelf/get", "{}").await;
    assert_error_has(&r, 502, "serves no gRPC service named `Shelf`");
}

/// go-micro's default server speaks mucp, not gRPC: its nodes are never called (a call would
/// hang or fail on a protocol the gateway does not speak), the service's gRPC nodes are, and a
/// service with mucp nodes only gets a 501 that says why and what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_that_do_not_speak_grpc_are_not_called() {
    let (registry, lib, gw, _stop) = library_gateway().await;
    // A node that takes connections and never answers, as a gRPC call to a mucp server would
    // go nowhere.
    let silent_addr = rmicro_tests::silent_listener().await;
    let mucp = |node: &mut rmicro_runtime::registry::Node, id: &str| {
        node.id = id.into();
        node.address = silent_addr.clone();
        node.metadata = [
            ("protocol".to_string(), "mucp".to_string()),
            ("server".to_string(), "mucp".to_string()),
        ]
        .into();
    };
    let mut mixed = lib.record().clone();
    mucp(&mut mixed.nodes[0], "go.micro.srv.library-mucp");
    registry
        .register(&mixed, Duration::from_secs(3600))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..10 {
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            call(&gw, "GET", "/v1/shelves/s1/books/b1", ""),
        )
        .await
        .expect("a call went to the node that speaks mucp");
        assert_eq!(r.status, 200, "{}", r.body);
    }

    let mut only = lib.record().clone();
    only.name = "go.micro.srv.legacy".into();
    mucp(&mut only.nodes[0], "go.micro.srv.legacy-1");
    registry
        .register(&only, Duration::from_secs(3600))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        call(&gw, "POST", "/legacy/library/echoBook", "{}"),
    )
    .await
    .expect("an answer, not a call to the node");
    assert_error_has(&r, 501, "speak `mucp`, not gRPC");
    assert_error_has(&r, 501, "server.grpc");
}

/// A body in a transfer coding other than chunked is 501, one with a `Content-Encoding` 415
/// (hyper undoes only the chunking: either would have been read as JSON); chunked JSON is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_in_codings_the_handler_cannot_read_are_refused_clearly() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let (_user, _kitchen) = services(&registry).await;
    let (gw, _stop) = gateway(Arc::clone(&registry)).await;
    let send = |headers: &'static str| {
        let gw = gw.clone();
        tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let json = br#"{"name":"John"}"#;
            let mut req = format!(
                "POST /user/call HTTP/1.1\r\nHost: {gw}\r\nConnection: close\r\n\
                 Content-Type: application/json\r\n{headers}Transfer-Encoding: chunked\r\n\r\n{:x}\r\n",
                json.len()
            )
            .into_bytes();
            req.extend_from_slice(json);
            req.extend_from_slice(b"\r\n0\r\n\r\n");
            let mut conn = std::net::TcpStream::connect(&gw).unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            conn.write_all(&req).unwrap();
            let mut raw = String::new();
            let _ = conn.read_to_string(&mut raw);
            raw
        })
    };
    let plain = send("").await.unwrap();
    assert!(plain.starts_with("HTTP/1.1 200"), "{plain}");
    assert!(plain.contains(r#"{"msg":"Hello John"}"#), "{plain}");
    let coded = send("Transfer-Encoding: gzip\r\n").await.unwrap();
    assert!(coded.starts_with("HTTP/1.1 501"), "{coded}");
    assert!(coded.contains("`chunked` transfer coding"), "{coded}");
    let encoded = send("Content-Encoding: gzip\r\n").await.unwrap();
    assert!(encoded.starts_with("HTTP/1.1 415"), "{encoded}");
    assert!(encoded.contains("without `Content-Encoding`"), "{encoded}");
    assert!(
        encoded.contains(r#""status":"Unsupported Media Type""#),
        "{encoded}"
    );
}

/// Descriptor reads are shared by the requests that want the same node's: a request for one
/// node never gets the result of a read from another. Two services built from the same proto
/// (one gRPC service name) are told apart: while a read from a node that stalls, then drops
/// the connection, is in flight, a request for the other service's healthy node is answered
/// from that node, not failed with the stalled node's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_from_one_node_is_not_shared_with_requests_for_another() {
    let (registry, lib, gw, _stop) = library_gateway().await;
    // Takes connections, answers nothing, and drops them after 2 s.
    let stalled = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stalled_addr = stalled.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((conn, _)) = stalled.accept().await {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                drop(conn);
            });
        }
    });
    let mut copy = lib.record().clone();
    copy.name = "go.micro.srv.stalled".into();
    copy.nodes[0].id = "go.micro.srv.stalled-1".into();
    copy.nodes[0].address = stalled_addr.clone();
    registry
        .register(&copy, Duration::from_secs(3600))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let first = tokio::spawn({
        let gw = gw.clone();
        async move { call(&gw, "POST", "/stalled/library/echoBook", r#"{"name":"a"}"#).await }
    });
    // The first request is reading from the stalled node by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        call(&gw, "POST", "/library/library/echoBook", r#"{"name":"b"}"#),
    )
    .await
    .expect("an answer");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(json(&r)["name"], "b", "{}", r.body);
    let first = tokio::time::timeout(Duration::from_secs(15), first)
        .await
        .expect("an answer")
        .unwrap();
    assert_eq!(first.status, 502, "{}", first.body);
    assert!(first.body.contains(&stalled_addr), "{}", first.body);
}

/// Records written by hand or by another tool next to a real node, with addresses no connection
/// can be opened to, are left out before a node is picked: no call spends its one retry on them
/// (twenty of them beside one good node made most first calls fail with 502), and a service
/// with only such records answers 502 naming one and what is wrong with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_whose_address_cannot_be_used_are_left_out() {
    let (registry, lib, gw, _stop) = library_gateway().await;
    for n in 0..20 {
        let mut bad = lib.record().clone();
        bad.nodes[0].id = format!("go.micro.srv.library-bad-{n}");
        bad.nodes[0].address = ["127.0.0.1", "", "127.0.0.1:0", "[::1]"][n % 4].into();
        registry
            .register(&bad, Duration::from_secs(3600))
            .await
            .unwrap();
    }
    let mut ghost = lib.record().clone();
    ghost.name = "go.micro.srv.ghost".into();
    // Its endpoints without their bindings, which would take the library's paths.
    for endpoint in &mut ghost.endpoints {
        endpoint
            .metadata
            .retain(|k, _| !matches!(k.as_str(), "http" | "method" | "path" | "body" | "handler"));
    }
    ghost.nodes[0].id = "ghost-1".into();
    ghost.nodes[0].address = "10.0.0.7".into();
    registry
        .register(&ghost, Duration::from_secs(3600))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_library_calls_succeed(&gw, 5).await;
    let r = call(&gw, "POST", "/ghost/library/echoBook", "{}").await;
    assert_eq!(
        error_detail(&r, 502),
        "service `go.micro.srv.ghost` has no node the gateway can reach: node `ghost-1` is \
         registered at `10.0.0.7`, which has no port (expected host:port); fix or remove its \
         record"
    );
}

/// A service whose own files import `grpc/health/v1/health.proto` (grpc's, with `List` and its
/// messages) keeps that file in server reflection: the built-in health service's description,
/// a subset of it, does not replace it, so its messages still resolve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_importing_grpcs_health_proto_is_still_described() {
    static PROBE: &[Endpoint] = &[endpoint(
        "Probe.Ping",
        "/probe.v1.Probe/Ping",
        "grpc.health.v1.HealthListRequest",
        &[rule("POST", "/v1/ping", "*")],
    )];
    let health = FileDescriptorProto {
        name: Some("grpc/health/v1/health.proto".into()),
        package: Some("grpc.health.v1".into()),
        message_type: vec![
            message(
                "HealthCheckRequest",
                vec![field("service", 1, Type::String, None, false)],
            ),
            message("HealthListRequest", vec![]),
        ],
        syntax: Some("proto3".into()),
        ..Default::default()
    };
    let probe = FileDescriptorProto {
        name: Some("probe/v1/probe.proto".into()),
        package: Some("probe.v1".into()),
        dependency: vec!["grpc/health/v1/health.proto".into()],
        service: vec![ServiceDescriptorProto {
            name: Some("Probe".into()),
            method: vec![MethodDescriptorProto {
                name: Some("Ping".into()),
                input_type: Some(".grpc.health.v1.HealthListRequest".into()),
                output_type: Some(".grpc.health.v1.HealthListRequest".into()),
                ..Default::default()
            }],
            ..Default::default()
        }],
        syntax: Some("proto3".into()),
        ..Default::default()
    };
    let set = FileDescriptorSet {
        file: vec![health, probe],
    };
    let set: &'static [u8] = Box::leak(set.encode_to_vec().into_boxed_slice());
    let echo = |req: Request<Raw>| async move { Ok(Response::new(req.into_inner())) };
    let def = ServiceDef::new("probe.v1.Probe", PROBE)
        .descriptors(set)
        .unary("/probe.v1.Probe/Ping", echo);
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let mut svc = Service::builder("go.micro.srv.probe")
        .registry(Arc::clone(&registry))
        .build();
    svc.server_mut().add_service(def).unwrap();
    let _running = svc.start().await.unwrap();
    wait_for(&registry, "go.micro.srv.probe").await;
    let (gw, _stop) = gateway(registry).await;
    let r = call(&gw, "POST", "/v1/ping", "{}").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(json(&r), serde_json::json!({}));
}

/// The rpc handler calls services that serve TLS (mutual TLS here) with `--client-tls-*`;
/// without them it says what to do instead of failing a handshake.
#[cfg(feature = "tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rpc_handler_calls_services_over_tls() {
    use rmicro_runtime::tls::ServerTls;
    let certs = rmicro_tests::etcd::TestCerts::new("gw-rpc-tls");
    let file = |name: &str| certs.dir.join(name).display().to_string();
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let tls = ServerTls::new(file("server.pem"), file("server.key"))
        .unwrap()
        .client_ca(file("ca.pem"))
        .unwrap();
    let mut user = Service::builder("go.micro.srv.user")
        .registry(Arc::clone(&registry))
        .tls(tls)
        .build();
    register_user_handler(user.server_mut(), Greeter).unwrap();
    let _user = user.start().await.unwrap();
    wait_for(&registry, "go.micro.srv.user").await;

    let (ca, cert, key) = (file("ca.pem"), file("client.pem"), file("client.key"));
    let flags = [
        "--handler",
        "rpc",
        "--client-tls-ca",
        &ca,
        "--client-tls-cert",
        &cert,
        "--client-tls-key",
        &key,
    ];
    let (gw, _stop) = gateway_with_flags(Arc::clone(&registry), &flags).await;
    let r = call(&gw, "POST", "/user/call", r#"{"name":"Tess"}"#).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, r#"{"msg":"Hello Tess"}"#)
    );

    let (plain, _stop) = gateway_with_flags(Arc::clone(&registry), &["--handler", "rpc"]).await;
    let r = call(&plain, "POST", "/user/call", r#"{"name":"Tess"}"#).await;
    assert_error_has(&r, 502, "secure=true");
    assert_error_has(&r, 502, "--client-tls-ca");

    // The http handler in front of the same TLS gRPC service, with client TLS or without:
    // told to use the rpc handler (not a failed handshake, and no request sent in plain text).
    for tls in [&["--client-tls-ca", &ca][..], &[]] {
        let mut flags = vec!["--handler", "http"];
        flags.extend_from_slice(tls);
        let (gw, _stop) = gateway_with_flags(Arc::clone(&registry), &flags).await;
        let r = call(&gw, "POST", "/user/call", r#"{"name":"Tess"}"#).await;
        assert_error_has(&r, 502, "speaks gRPC (its registration says protocol=grpc)");
        assert_error_has(&r, 502, "--handler rpc");
    }
}

/// A unary method is answered with one message: a node answering it with none or with more
/// than one (it has the method as another kind) is a 500 saying so, as the runtime's client
/// refuses such an answer, not the first message passed on and the rest thrown away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unary_answer_of_no_message_or_of_two_is_a_500() {
    use rmicro_tests::fixtures::go::micro::srv::user::{
        CallRequest, CallResponse, FILE_DESCRIPTOR_SET, USER_ENDPOINTS,
    };
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let mut user = Service::builder("go.micro.srv.user")
        .registry(Arc::clone(&registry))
        .build();
    // `Call` answered as if server-streaming: as many messages as the request's name says.
    let def = ServiceDef::new("go.micro.srv.user.User", USER_ENDPOINTS)
        .descriptors(FILE_DESCRIPTOR_SET)
        .server_streaming(
            "/go.micro.srv.user.User/Call",
            |request: Request<CallRequest>| async move {
                let count: u32 = request.into_inner().name.parse().unwrap_or(0);
                let answers = (0..count).map(|i| Ok(CallResponse { msg: i.to_string() }));
                let answers: rmicro_runtime::ResponseStream<CallResponse> =
                    Box::pin(tokio_stream::iter(answers));
                Ok(Response::new(answers))
            },
        );
    user.server_mut().add_service(def).unwrap();
    let _user = user.start().await.unwrap();
    wait_for(&registry, "go.micro.srv.user").await;
    let (gw, _stop) = gateway(registry).await;

    let one = call(&gw, "POST", "/user/call", r#"{"name":"1"}"#).await;
    assert_eq!(one.status, 200, "{}", one.body);
    assert_eq!(json(&one)["msg"], "0", "{}", one.body);
    for (count, says) in [
        ("2", "more than one message to a unary method"),
        ("0", "answered no message"),
    ] {
        let r = call(
            &gw,
            "POST",
            "/user/call",
            &format!(r#"{{"name":"{count}"}}"#),
        )
        .await;
        assert_eq!(r.status, 500, "{count}: {}", r.body);
        let v = json(&r);
        // A failed call, as go-micro's client names it.
        assert_eq!(v["id"], "go.micro.client", "{}", r.body);
        assert!(v["detail"].as_str().unwrap().contains(says), "{}", r.body);
    }
}
