//! `rmicro api --handler rpc` in front of a service that is not rmicro's: a Python grpcio server
//! (tests/python/interop_server.py, tests/python/interop.proto) registered as a go-micro node
//! registers itself (endpoints `Interop.Echo` with no gRPC path, node metadata of go-micro's
//! grpc server), its message types learned through grpcio-reflection, which serves only
//! `grpc.reflection.v1alpha`.

mod interop;

use std::sync::Arc;
use std::time::Duration;

use interop::{
    call_with, gateway, gateway_with, json, post, python, register, setup, setup_delayed,
};
use rmicro::api::plugin::{HttpService, Plugin, PluginLayer};
use rmicro_runtime::registry::{MemoryRegistry, Registry};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_service_serving_reflection_v1alpha_only_is_called_through_the_gateway() {
    let (mut py, gw, _stop) = setup("v1alpha", &[]).await;
    let r = post(
        &gw,
        "/interop/interop/echo",
        r#"{"text":"hi","kind":"HARDCOVER","big":"9007199254740993"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        json(&r),
        serde_json::json!({"text": "hi", "kind": "HARDCOVER", "big": "9007199254740993"})
    );
    // v1 was asked once: the node's version is remembered for the reads after, such as the one
    // a field the descriptors lack brings (a second later).
    assert_eq!(py.stats()["v1"], 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = post(&gw, "/interop/interop/echo", r#"{"nope":1}"#).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let counts = py.stats();
    assert_eq!(counts, serde_json::json!({"v1": 1, "v1alpha": 3}));
}

/// Without server reflection the gateway cannot learn a service's messages: it says so at once,
/// 501 with what to do, rather than a generic error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_without_server_reflection_answers_501_saying_to_enable_it() {
    let (py, gw, _stop) = setup("none", &[]).await;
    let started = std::time::Instant::now();
    let r = post(&gw, "/interop/interop/echo", r#"{"text":"hi"}"#).await;
    assert_eq!(r.status, 501, "{}", r.body);
    let v = json(&r);
    assert_eq!(v["id"], "go.micro.api", "{}", r.body);
    assert_eq!(
        v["detail"],
        format!(
            "the service at {} does not serve gRPC server reflection (grpc.reflection.v1 or \
             v1alpha), which the rpc handler needs to learn its message types: enable gRPC \
             server reflection in the service (grpc-go: reflection.Register; Python: \
             grpc_reflection's enable_server_reflection; rmicro services serve it), or call it \
             through the http handler",
            py.address
        )
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// `n` requests sent at once, their statuses.
async fn burst(gw: &str, n: usize, path: &'static str, body: &'static str) -> Vec<u16> {
    let calls: Vec<_> = (0..n)
        .map(|_| {
            let gw = gw.to_string();
            tokio::spawn(async move { post(&gw, path, body).await.status })
        })
        .collect();
    let mut statuses = Vec::new();
    for call in calls {
        statuses.push(call.await.unwrap());
    }
    statuses
}

/// Concurrent first requests for a service share one lookup of its gRPC service and one read
/// of its descriptors: the node sees one reflection call of each (each taking 300 ms, so that
/// all of them overlap), not one per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_requests_share_one_reflection_read() {
    let (mut py, gw, _stop) = setup_delayed("v1alpha", 300, &[]).await;
    let statuses = burst(&gw, 16, "/interop/interop/echo", r#"{"text":"hi"}"#).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    // v1: the lookup, answered UNIMPLEMENTED; v1alpha: the lookup and the descriptors.
    assert_eq!(py.stats(), serde_json::json!({"v1": 1, "v1alpha": 2}));
}

/// ... and share its failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_one_failed_reflection_read() {
    let (mut py, gw, _stop) = setup_delayed("none", 300, &[]).await;
    let statuses = burst(&gw, 16, "/interop/interop/echo", r#"{"text":"hi"}"#).await;
    assert!(statuses.iter().all(|s| *s == 501), "{statuses:?}");
    assert_eq!(py.stats(), serde_json::json!({"v1": 1, "v1alpha": 1}));
}

/// An `Any` of a type the service's files do not import (only the `Any` names it) is read from
/// the node by reflection, in a request and in a response; a type the node does not know
/// either is still the client's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_any_of_a_type_the_service_files_do_not_import_is_looked_up() {
    let (_py, gw, _stop) = setup("v1alpha", &[]).await;
    let r = post(&gw, "/interop/interop/labelled", "{}").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        json(&r),
        serde_json::json!({"any": {
            "@type": "type.googleapis.com/interop.extra.Label",
            "key": "from-python",
            "weight": "7",
        }})
    );
    let (_py, gw, _stop) = setup("v1alpha", &[]).await;
    let sent = serde_json::json!({
        "any": {"@type": "type.googleapis.com/interop.extra.Label", "key": "k", "weight": "3"},
    });
    let r = post(&gw, "/interop/interop/echo", &sent.to_string()).await;
    assert_eq!((r.status, json(&r)), (200, sent), "{}", r.body);
    let sent = serde_json::json!({"any": {"@type": "type.googleapis.com/no.Such"}});
    let r = post(&gw, "/interop/interop/echo", &sent.to_string()).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(json(&r)["detail"]
        .as_str()
        .unwrap()
        .ends_with("message 'no.Such' not found"));
}

/// Request headers that become gRPC metadata (`X-…` and `Authorization`) arrive at the service,
/// each value of one sent twice; others do not, nor those the client lists in `Connection`
/// (hop-by-hop, for the gateway alone). The call carries the gateway's deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_become_metadata_every_value_and_the_deadline_is_sent() {
    let (_py, gw, _stop) = setup("v1alpha", &["--backend-timeout", "7s"]).await;
    let r = slow_call(
        &gw,
        &[
            ("X-Request-Id", "abc"),
            ("X-Tag", "a"),
            ("X-Tag", "b"),
            ("Authorization", "Bearer t"),
            ("Cookie", "c=1"),
            ("Connection", "X-Hop, x-other-hop"),
            ("X-Hop", "for the gateway"),
            ("X-Other-Hop", "for the gateway"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = json(&r);
    let metadata = &v["metadata"];
    for hop in ["x-hop", "x-other-hop"] {
        assert_eq!(metadata[hop], serde_json::Value::Null, "{hop}: {}", r.body);
    }
    assert_eq!(
        (
            &metadata["x-request-id"],
            &metadata["x-tag"],
            &metadata["authorization"],
            &metadata["cookie"],
        ),
        (
            &serde_json::json!("abc"),
            &serde_json::json!("a,b"),
            &serde_json::json!("Bearer t"),
            &serde_json::Value::Null
        ),
        "{}",
        r.body
    );
    let deadline = v["deadlineSeconds"].as_f64().unwrap();
    assert!(deadline > 6.0 && deadline <= 7.0, "{deadline}");
}

/// grpc-gateway's convention: `Grpc-Metadata-<key>` request headers become metadata `<key>`
/// (reserved keys left out), the metadata the service answers with comes back as
/// `Grpc-Metadata-<key>` headers (on an error too), and its trailing metadata as
/// `Grpc-Trailer-<key>` trailers to a client that sends `TE: trailers`, and not to others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_passes_both_ways_as_grpc_gateway_names_it() {
    let (_py, gw, _stop) = setup("v1alpha", &[]).await;
    let asked = [
        ("Grpc-Metadata-Tenant", "blue"),
        ("Grpc-Metadata-Grpc-Timeout", "1n"),
        ("X-Reply-Header-X-Served-By", "py"),
        ("X-Reply-Header-X-Served-By", "again"),
        ("X-Reply-Trailer-X-Cost", "7"),
    ];
    let with_te: Vec<_> = asked.iter().copied().chain([("TE", "trailers")]).collect();
    let r = slow_call(&gw, &with_te).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let metadata = &json(&r)["metadata"];
    assert_eq!(metadata["tenant"], "blue", "{}", r.body);
    assert_eq!(
        metadata["grpc-timeout"],
        serde_json::Value::Null,
        "{}",
        r.body
    );
    let served: Vec<_> = r
        .headers
        .iter()
        .filter(|(k, _)| k == "grpc-metadata-x-served-by")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(served, ["py", "again"], "{:?}", r.headers);
    // gRPC's own headers are the call's framing, not the answer's.
    assert!(
        !r.headers.iter().any(|(k, _)| k.starts_with("grpc-metadata-grpc-")
            || k == "grpc-metadata-content-type"),
        "{:?}",
        r.headers
    );
    assert_eq!(
        r.trailers,
        [("grpc-trailer-x-cost".to_string(), "7".to_string())],
        "{:?}",
        r.headers
    );
    assert_eq!(r.header("trailer"), Some("grpc-trailer-x-cost"));

    // Without `TE: trailers`: the same answer, no trailers, a length.
    let r = slow_call(&gw, &asked).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("grpc-metadata-x-served-by"), Some("py"));
    assert!(r.trailers.is_empty(), "{:?}", r.trailers);
    assert_eq!(r.header("trailer"), None);
    assert!(r.header("content-length").is_some(), "{:?}", r.headers);

    // An error the service sends after its response headers: the headers come with it.
    let r = call_with(
        &gw,
        "POST",
        "/interop/interop/fail",
        &[("X-Reply-Header-X-Why", "quota")],
        r#"{"code":8,"message":"slow down"}"#,
    )
    .await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(
        r.header("grpc-metadata-x-why"),
        Some("quota"),
        "{:?}",
        r.headers
    );
}

/// The rpc handler names the service each call went to in `--metrics-address`'s counts, with
/// the status it answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_name_the_service_an_rpc_call_went_to() {
    let metrics = format!("127.0.0.1:{}", rmicro_tests::free_port());
    let (_py, gw, _stop) = setup("v1alpha", &["--metrics-address", &metrics]).await;
    let r = post(&gw, "/interop/interop/echo", r#"{"text":"hi"}"#).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = post(
        &gw,
        "/interop/interop/fail",
        r#"{"code":5,"message":"none"}"#,
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);
    let text = call_with(&metrics, "GET", "/metrics", &[], "").await.body;
    for code in ["200", "404"] {
        let series = format!(
            r#"rmicro_api_requests_total{{service="go.micro.srv.interop",method="POST",code="{code}"}} 1"#
        );
        assert!(text.lines().any(|l| l == series), "{series}: {text}");
    }
}

/// `POST /interop/interop/slow` answering at once, with `headers`: the service answers the
/// metadata it got (and sends back the metadata the `X-Reply-*` headers ask for).
async fn slow_call(
    gw: &str,
    headers: &[(&'static str, &'static str)],
) -> rmicro_tests::http::HttpResponse {
    call_with(
        gw,
        "POST",
        "/interop/interop/slow",
        headers,
        r#"{"millis":"0"}"#,
    )
    .await
}

/// A plugin that sets `x-user: ada`, replacing what the client sent, as an auth plugin vouches
/// for an identity.
struct SetsUser;

impl Plugin for SetsUser {
    fn name(&self) -> &'static str {
        "sets-user"
    }
    fn layer(&self) -> Option<PluginLayer> {
        Some(PluginLayer::new(tower::layer::layer_fn(
            |inner: HttpService| {
                HttpService::new(tower::util::MapRequest::new(
                    inner,
                    |mut req: http::Request<axum_core::body::Body>| {
                        req.headers_mut()
                            .insert("x-user", http::HeaderValue::from_static("ada"));
                        req
                    },
                ))
            },
        )))
    }
}

/// The Python service behind a gateway with [`SetsUser`] (keep the first two: dropping them
/// stops the service and the gateway).
async fn behind_sets_user() -> (interop::Python, String, tokio::sync::oneshot::Sender<()>) {
    let py = python("v1alpha", 0).await;
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    register(&registry, "go.micro.srv.interop", &py.address).await;
    let mut cli = rmicro::Cli::new();
    cli.plugin(SetsUser).unwrap();
    let (gw, stop) = gateway_with(cli, registry, &[]).await;
    (py, gw, stop)
}

/// A header a plugin sets becomes metadata even when the client lists its name in
/// `Connection`: the headers listed there are removed before plugins see the request, not
/// after them (which let a client drop what a plugin vouches for).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_a_plugin_sets_reaches_the_service_whatever_connection_lists() {
    let (_py, gw, _stop) = behind_sets_user().await;
    let r = slow_call(
        &gw,
        &[
            ("Connection", "X-User, X-Hop"),
            ("X-User", "forged"),
            ("X-Hop", "for the gateway"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let metadata = &json(&r)["metadata"];
    assert_eq!(metadata["x-user"], "ada", "{}", r.body);
    assert_eq!(metadata["x-hop"], serde_json::Value::Null, "{}", r.body);
}

/// The service hears about the client as behind the http handler: the client's address is
/// appended to `X-Forwarded-For`, and its own forwarding claims (`X-Forwarded-Proto`,
/// `X-Real-IP`, ...) are dropped unless `--trust-forwarded`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_the_gateways_not_the_clients_claims() {
    /// The metadata a call with forwarding claims brings the service, behind a gateway run
    /// with `flags`.
    async fn metadata_behind(flags: &[&str]) -> serde_json::Value {
        let claims = [
            ("X-Forwarded-For", "192.0.2.1"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "bank.example"),
            ("X-Real-IP", "192.0.2.9"),
        ];
        let (_py, gw, _stop) = setup("v1alpha", flags).await;
        let r = slow_call(&gw, &claims).await;
        assert_eq!(r.status, 200, "{}", r.body);
        json(&r)["metadata"].clone()
    }

    let got = metadata_behind(&[]).await;
    assert_eq!(got["x-forwarded-for"], "192.0.2.1, 127.0.0.1", "{got}");
    for dropped in ["x-forwarded-proto", "x-forwarded-host", "x-real-ip"] {
        assert_eq!(got[dropped], serde_json::Value::Null, "{dropped}: {got}");
    }

    let got = metadata_behind(&["--trust-forwarded"]).await;
    assert_eq!(got["x-forwarded-proto"], "https", "{got}");
    assert_eq!(got["x-real-ip"], "192.0.2.9", "{got}");
    assert_eq!(got["x-forwarded-for"], "192.0.2.1, 127.0.0.1", "{got}");
}

/// Query parameters set map entries as grpc-gateway takes them (`counts[a]=5`), each value
/// typed by the map's; a later value for a key replaces the earlier one. `[…]` on a field that
/// is not a map, or a map set without it, is the client's error, saying what to send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_parameters_set_map_entries() {
    let (_py, gw, _stop) = setup("v1alpha", &[]).await;
    let r = post(
        &gw,
        "/interop/interop/echo?counts[a]=5&counts%5Bb%5D=7&counts[a]=6&text=hi",
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        json(&r),
        serde_json::json!({"counts": {"a": "6", "b": "7"}, "text": "hi"})
    );
    for (query, says) in [
        (
            "kind[x]=1",
            "`kind[x]` sets a map entry, but field `kind` is not a map; leave out the `[…]`",
        ),
        (
            "counts=5",
            "field `counts` is a map; set its entries (`counts[key]=value`)",
        ),
        (
            "counts[a]=five",
            "field `counts[a]` takes an integer, not `five`",
        ),
    ] {
        let r = post(&gw, &format!("/interop/interop/echo?{query}"), "").await;
        assert_eq!(r.status, 400, "{query}: {}", r.body);
        let detail = json(&r)["detail"].as_str().unwrap().to_string();
        assert!(detail.contains(says), "{query}: {detail}");
    }
}

/// An integer field given something that is not an integer is a 400 naming the field (the
/// message parser's own words name none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_integer_field_given_something_else_is_named() {
    let (_py, gw, _stop) = setup("v1alpha", &[]).await;
    for (body, says) in [
        (
            r#"{"big": "five"}"#,
            r#"field `big` takes an integer (a JSON number, or a string of one), not "five""#,
        ),
        (
            r#"{"small": 1.5}"#,
            "field `small` takes an integer (a JSON number, or a string of one), not 1.5",
        ),
        (
            r#"{"counts": {"a": true}}"#,
            "field `counts` takes an integer (a JSON number, or a string of one), not true",
        ),
        (
            r#"{"nested": {"child": {"kinds": [1]}}, "ubig": [2]}"#,
            "field `ubig` takes an integer (a JSON number, or a string of one), not [2]",
        ),
    ] {
        let r = post(&gw, "/interop/interop/echo", body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert_eq!(json(&r)["detail"], says, "{body}");
    }
    // What the parser takes stays taken: digits in a string, an exponent that makes an integer.
    let r = post(
        &gw,
        "/interop/interop/echo",
        r#"{"big": "12", "small": 1.5e1}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(json(&r), serde_json::json!({"big": "12", "small": 15}));
}

/// Proto3 JSON both ways for what a Python service's messages hold: maps, oneofs, nested
/// messages, enums, bytes (base64), 64-bit integers (strings), well-known types, and an `Any`
/// of a type in the service's own file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_field_round_trips_as_proto3_json() {
    let (_py, gw, _stop) = setup("v1alpha", &[]).await;
    let sent = serde_json::json!({
        "counts": {"a": "1", "b": "-9007199254740993"},
        "byId": {"7": {"name": "seven", "kinds": ["PAPERBACK", "HARDCOVER"]}},
        "nested": {"name": "n", "child": {"name": "c"}},
        "kind": "HARDCOVER",
        "data": "AAEC/w==",
        "big": "-9223372036854775808",
        "ubig": "18446744073709551615",
        "small": -5,
        "at": "2024-01-02T03:04:05.500Z",
        "took": "1.500s",
        "extra": {"k": [1.5, "two", null, {"x": true}]},
        "any": {"@type": "type.googleapis.com/interop.v1.Note", "text": "hello"},
        "maybe": "42",
        "items": [{"name": "i1"}, {"name": "i2"}],
        "ratio": "NaN",
        "value": {"deep": [2.5]},
    });
    let r = post(&gw, "/interop/interop/echo", &sent.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(json(&r), sent);
    // The other member of the oneof, and an enum by number.
    let r = post(&gw, "/interop/interop/echo", r#"{"text":"t","kind":1}"#).await;
    assert_eq!(
        json(&r),
        serde_json::json!({"text": "t", "kind": "PAPERBACK"}),
        "{}",
        r.body
    );
    // Both members of a oneof is the client's error.
    let r = post(
        &gw,
        "/interop/interop/echo",
        r#"{"text":"t","nested":{"name":"n"}}"#,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
}

/// An empty `Any` (no type, no value; protojson and json_format write it `{}`) alone, in a list
/// and as a map's value reaches the node as one (present, not left out) and comes back as `{}`
/// beside `Any`s that hold a message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_anys_round_trip_alone_in_lists_and_in_maps() {
    let (_py, gw, _stop) = setup("v1alpha", &[]).await;
    let note = serde_json::json!({"@type": "type.googleapis.com/interop.v1.Note", "text": "n"});
    for sent in [
        serde_json::json!({"any": {}, "anys": [{}, note, {}], "anyMap": {"empty": {}, "note": note}}),
        // A type URL without `/` is the type's name, as json_format and protojson take it.
        serde_json::json!({"any": {"@type": "interop.v1.Note", "text": "bare"}}),
    ] {
        let r = post(&gw, "/interop/interop/echo", &sent.to_string()).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(json(&r), sent);
    }
    // The gateway's stand-in type for an empty `Any` is not a client's to send.
    let reserved = serde_json::json!({"anys": [{"@type": "rmicro.invalid/interop.v1.Note"}]});
    let r = post(&gw, "/interop/interop/echo", &reserved.to_string()).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.contains("write an empty `Any` as `{}`"),
        "{}",
        r.body
    );
}

/// A time the parser would read as another (a leap second, a tenth fractional digit, year 0, a
/// `Duration` past 10 000 years), or a map key given twice in two spellings (one value would be
/// dropped), is the client's error, as protojson and json_format refuse it, never a different
/// value sent on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_that_would_change_on_the_way_are_refused() {
    let (_py, gw, _stop) = setup("v1alpha", &[]).await;
    for (body, says) in [
        (r#"{"at": "2016-12-31T23:59:60Z"}"#, "no leap seconds"),
        (
            r#"{"at": "2016-12-31T23:59:59.1234567891Z"}"#,
            "at most 9 fractional digits",
        ),
        (
            r#"{"at": "0000-06-01T00:00:00Z"}"#,
            "between years 0001 and 9999",
        ),
        (r#"{"took": "315576000001s"}"#, "at most 315576000000s"),
        (
            r#"{"byId": {"7": {"name": "a"}, "07": {"name": "b"}}}"#,
            "map `byId` has the key 7 twice",
        ),
    ] {
        let r = post(&gw, "/interop/interop/echo", body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(r.body.contains(says), "{body}: {}", r.body);
    }
    let r = post(
        &gw,
        "/interop/interop/echo",
        r#"{"at": "2016-12-31T23:59:59.123456789Z"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        json(&r),
        serde_json::json!({"at": "2016-12-31T23:59:59.123456789Z"})
    );
}

/// A Python service's gRPC errors come back as go-micro JSON with the mapped HTTP status, the
/// message (non-ASCII included) as the detail, and the status's details when it carries some.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_services_errors_come_back_as_go_micro_json() {
    let (_py, gw, _stop) = setup("v1alpha", &[]).await;
    for (code, http_status, status, message, with_details) in [
        (5, 404, "Not Found", "no such book", false),
        (3, 400, "Bad Request", "bad name", true),
        (7, 403, "Forbidden", "livre interdit : « é » 日本", false),
        // Sent percent-encoded (gRPC's grpc-message): a `%` of the text itself stays one.
        (
            3,
            400,
            "Bad Request",
            "100% sure: %41 not A, %zz\t50%25",
            false,
        ),
        (8, 429, "Too Many Requests", "slow down", false),
        (14, 503, "Service Unavailable", "try later", false),
        (2, 500, "Internal Server Error", "boom", false),
    ] {
        let body =
            serde_json::json!({"code": code, "message": message, "with_details": with_details});
        let r = post(&gw, "/interop/interop/fail", &body.to_string()).await;
        assert_eq!(r.status, http_status, "{}", r.body);
        let mut expected = serde_json::json!({
            "id": "go.micro.client",
            "code": http_status,
            "detail": message,
            "status": status,
        });
        if with_details {
            // google.rpc.Status details, each as proto3 JSON writes an Any: a type of the
            // service's files, one the node's reflection knows, and one nobody knows.
            expected["details"] = serde_json::json!([
                {"@type": "type.googleapis.com/interop.v1.Note", "text": "see the docs"},
                {"@type": "type.googleapis.com/interop.extra.Label", "key": "k", "weight": "3"},
                {"@type": "type.googleapis.com/no.Such", "value": "CAE="},
            ]);
        }
        assert_eq!(json(&r), expected, "{}", r.body);
    }
}

/// The details of a status as grpcio-status sends them — google.rpc's `BadRequest`,
/// `ErrorInfo` and `RetryInfo`, well-known types with JSON forms of their own (`Duration`,
/// `Struct`) and an `Any` of an `Any` (of a type only the node's reflection knows) — each come back as json_format writes that `Any`. Details
/// whose code and message are not the status's do not change the answer; a
/// `grpc-status-details-bin` that is not a `google.rpc.Status` is left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_details_come_back_as_json_format_writes_them() {
    let (mut py, gw, _stop) = setup("v1alpha", &[]).await;
    let body = serde_json::json!({"code": 9, "message": "no stock", "details": "rich"});
    let r = post(&gw, "/interop/interop/fail", &body.to_string()).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let got = json(&r);
    assert_eq!(got["detail"], "no stock", "{}", r.body);
    let want = py.details();
    assert_eq!(want.as_array().map(Vec::len), Some(7), "{want}");
    assert_eq!(got["details"], want, "{}", r.body);

    let body = serde_json::json!({"code": 5, "message": "no such book", "details": "mismatch"});
    let r = post(&gw, "/interop/interop/fail", &body.to_string()).await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(
        json(&r),
        serde_json::json!({
            "id": "go.micro.client",
            "code": 404,
            "detail": "no such book",
            "status": "Not Found",
            "details": [{"@type": "type.googleapis.com/interop.v1.Note", "text": "still shown"}],
        })
    );

    let body = serde_json::json!({"code": 5, "message": "no such book", "details": "garbage"});
    let r = post(&gw, "/interop/interop/fail", &body.to_string()).await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(
        json(&r),
        serde_json::json!({
            "id": "go.micro.client",
            "code": 404,
            "detail": "no such book",
            "status": "Not Found",
        })
    );
}

/// Descriptions read from a node count against the call's limit (the backend timeout, or the
/// client's shorter `Timeout`/`Grpc-Timeout`): a node slower to describe its methods than that
/// gets a 504 at the limit, while the one read goes on for the requests that follow. Then the
/// types of a status's details: a node slower to describe them than the limit leaves them
/// undecoded (`@type` and the bytes in base64), answered at the limit rather than after the
/// reflection timeout for each type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptions_a_node_is_slow_to_give_count_against_the_calls_limit() {
    // Every reflection call takes 1.2 s: reading the method's descriptors (three calls) takes
    // 3.6 s, over the 1 s limit, and so does a detail's type.
    let (mut py, gw, _stop) = setup_delayed("v1alpha", 1200, &["--backend-timeout", "1s"]).await;
    let echo = r#"{"text":"hi"}"#;
    let started = std::time::Instant::now();
    let r = post(&gw, "/interop/interop/echo", echo).await;
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.body);
    assert!(took < Duration::from_millis(1900), "{took:?}");
    assert!(
        json(&r)["detail"].as_str().unwrap().contains(
            "did not describe `Interop.Echo` by server reflection within the call's limit (1s)"
        ),
        "{}",
        r.body
    );
    // A client's shorter limit holds as well.
    let started = std::time::Instant::now();
    let r = call_with(
        &gw,
        "POST",
        "/interop/interop/echo",
        &[("Grpc-Timeout", "300m")],
        echo,
    )
    .await;
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.body);
    assert!(took < Duration::from_millis(1000), "{took:?}");
    assert!(
        json(&r)["detail"].as_str().unwrap().contains("(300ms)"),
        "{}",
        r.body
    );
    // The read went on meanwhile: the answer comes once it is over (3.6 s after it began),
    // and it was made once, not once per request that gave up on it.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    let r = loop {
        let r = post(&gw, "/interop/interop/echo", echo).await;
        if r.status != 504 || std::time::Instant::now() > until {
            break r;
        }
    };
    assert_eq!(
        (r.status, json(&r)),
        (200, serde_json::json!({"text": "hi"})),
        "{}",
        r.body
    );
    assert_eq!(py.stats(), serde_json::json!({"v1": 1, "v1alpha": 2}));

    // Now the details' types, which the node also takes 1.2 s to describe.
    let body = serde_json::json!({"code": 9, "message": "no stock", "details": "rich"});
    let started = std::time::Instant::now();
    let r = post(&gw, "/interop/interop/fail", &body.to_string()).await;
    let took = started.elapsed();
    assert_eq!(r.status, 400, "{}", r.body);
    let details = json(&r)["details"].clone();
    let details = details.as_array().unwrap_or_else(|| panic!("{}", r.body));
    assert_eq!(details.len(), 7, "{}", r.body);
    // google.rpc's BadRequest: its file is the node's, read by reflection.
    assert_eq!(
        details[0]["@type"], "type.googleapis.com/google.rpc.BadRequest",
        "{}",
        r.body
    );
    assert!(details[0]["value"].is_string(), "{}", r.body);
    assert_eq!(
        details[0].as_object().map(|o| o.len()),
        Some(2),
        "{}",
        r.body
    );
    // A well-known type needs no reading.
    assert_eq!(
        details[3],
        serde_json::json!({"@type": "type.googleapis.com/google.protobuf.Duration", "value": "3s"})
    );
    // The 1 s limit for the details' types; not 1.2 s for each type.
    assert!(took < Duration::from_millis(1900), "{took:?}");

    // An answer whose `Any` the node does not describe in time cannot be written: 504.
    let r = post(&gw, "/interop/interop/labelled", "{}").await;
    assert_eq!(r.status, 504, "{}", r.body);
    assert!(
        json(&r)["detail"]
            .as_str()
            .unwrap()
            .contains("did not describe `interop.extra.Label` (for an `Any` field) within the backend timeout (1s)"),
        "{}",
        r.body
    );
}

/// A Python service slower than --backend-timeout: 504 once it is over, not later; responses
/// over 4 MiB within --body-limit come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_python_service_is_504_and_large_responses_pass() {
    let (_py, gw, _stop) = setup("v1alpha", &["--backend-timeout", "1s"]).await;
    let started = std::time::Instant::now();
    let r = post(&gw, "/interop/interop/slow", r#"{"millis":"5000"}"#).await;
    assert_eq!(r.status, 504, "{}", r.body);
    assert_eq!(
        json(&r)["detail"],
        "`/interop.v1.Interop/Slow` did not answer within 1s"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let r = post(&gw, "/interop/interop/big", r#"{"size":"6000000"}"#).await;
    assert_eq!(r.status, 200, "{}", &r.body[..r.body.len().min(300)]);
    assert_eq!(json(&r)["data"].as_str().map(str::len), Some(8_000_000));
}
/// A request message over a grpcio service's limit (4 MiB) is 413, as over a tonic or grpc-go
/// service's: C-core words it otherwise, and its RESOURCE_EXHAUSTED alone would be 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_a_grpcio_services_limit_is_413() {
    let (_py, gw, _stop) = setup("v1alpha", &[]).await;
    let text = "x".repeat(5 * 1024 * 1024);
    let r = post(
        &gw,
        "/interop/interop/echo",
        &format!(r#"{{"text":"{text}"}}"#),
    )
    .await;
    assert_eq!(r.status, 413, "{}", r.body);
    let detail = json(&r)["detail"].as_str().unwrap().to_string();
    assert!(
        detail.contains("is over the service's limit (SERVER: Received message larger than max"),
        "{detail}"
    );
}

/// A service that answers DEADLINE_EXCEEDED as the deadline the gateway sent runs out (gRPC's
/// C core does, racing the gateway's own timer; a service's calls that inherited it do, a little
/// early): 504, the gateway's timeout, not 408 (a client too slow to send its request); and the
/// service's own DEADLINE_EXCEEDED a 504 that keeps its detail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_run_out_at_the_service_is_504_not_408() {
    let (_py, gw, _stop) = setup("v1alpha", &["--backend-timeout", "2s"]).await;
    let r = post(&gw, "/interop/interop/slow", r#"{"give_up":true}"#).await;
    assert_eq!(r.status, 504, "{}", r.body);
    assert_eq!(
        json(&r)["detail"],
        "`/interop.v1.Interop/Slow` did not answer within 2s"
    );
    // A service's own early DEADLINE_EXCEEDED (a call of its own ran out behind it) is still its
    // error, with its detail: a 504 too, as google.rpc.Code maps it (408 would blame the client).
    let body = serde_json::json!({"code": 4, "message": "upstream too slow"});
    let r = post(&gw, "/interop/interop/fail", &body.to_string()).await;
    assert_eq!(
        (r.status, json(&r)["detail"].clone(), json(&r)["id"].clone()),
        (504, "upstream too slow".into(), "go.micro.client".into())
    );
}

/// Two registry services built from one proto (one gRPC service name), both in use: each keeps
/// the descriptors read from its own node, rather than each request for one throwing away
/// the other's and reading them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_services_serving_one_grpc_service_each_read_it_once() {
    let mut py = python("v1alpha", 0).await;
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    register(&registry, "go.micro.srv.interop", &py.address).await;
    register(&registry, "go.micro.srv.echoes", &py.address).await;
    let (gw, _stop) = gateway(registry, &[]).await;
    for i in 0..5 {
        for service in ["interop", "echoes"] {
            let r = post(&gw, &format!("/{service}/interop/echo"), r#"{"text":"hi"}"#).await;
            assert_eq!(r.status, 200, "{service}, round {i}: {}", r.body);
        }
    }
    // v1 once (the node's version is remembered); v1alpha: per service, the lookup of its
    // gRPC service and one read of its descriptors.
    assert_eq!(py.stats(), serde_json::json!({"v1": 1, "v1alpha": 4}));
}

/// An error with a long message (a validation echoing its input: 20 000 characters, over h2's
/// 16 KiB default for headers and trailers) is the service's answer, as short ones are; a node
/// whose process ends after the answer's headers is a 502, the node's failure, not a 500 from
/// the service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_error_is_the_services_and_a_node_gone_mid_answer_is_502() {
    let (_py, gw, _stop) = setup("v1alpha", &[]).await;
    let message = "x".repeat(20_000);
    let body = serde_json::json!({"code": 3, "message": message});
    let r = post(&gw, "/interop/interop/fail", &body.to_string()).await;
    assert_eq!(r.status, 400, "{}", &r.body[..r.body.len().min(300)]);
    let v = json(&r);
    assert_eq!(v["id"], "go.micro.client");
    assert_eq!(v["detail"].as_str().map(str::len), Some(20_000));

    let r = post(&gw, "/interop/interop/fail", r#"{"details":"crash"}"#).await;
    assert_eq!(r.status, 502, "{}", r.body);
    let v = json(&r);
    assert_eq!(v["id"], "go.micro.api", "{}", r.body);
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("the connection failed while the answer came"),
        "{}",
        r.body
    );
}

/// A redeploy that adds a response field, rolled out while a node of the old version is still
/// registered (a canary, a rolling update): the new node's answers carry the new field, although
/// the descriptors were first read from the old node (they are read again from the node whose
/// answer holds fields they lack), and the old node's answers stay as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_response_field_from_a_redeployed_node_is_not_dropped() {
    let old = python("v1alpha", 0).await;
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    register(&registry, "go.micro.srv.interop", &old.address).await;
    let (gw, _stop) = gateway(Arc::clone(&registry), &["--selector", "roundrobin"]).await;
    let label = serde_json::json!({
        "@type": "type.googleapis.com/interop.extra.Label", "key": "from-python", "weight": "7",
    });
    let r = post(&gw, "/interop/interop/labelled", "{}").await;
    assert_eq!(
        (r.status, json(&r)),
        (200, serde_json::json!({"any": label})),
        "{}",
        r.body
    );

    let new = interop::python_next("v1alpha").await;
    register(&registry, "go.micro.srv.interop", &new.address).await;
    let (mut added, mut plain) = (0, 0);
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while (added < 2 || plain < 2) && std::time::Instant::now() < until {
        let r = post(&gw, "/interop/interop/labelled", "{}").await;
        assert_eq!(r.status, 200, "{}", r.body);
        let v = json(&r);
        if v == serde_json::json!({"any": label, "added": "in the next version"}) {
            added += 1;
        } else {
            assert_eq!(v, serde_json::json!({"any": label}));
            plain += 1;
        }
    }
    assert!(
        added >= 2 && plain >= 2,
        "new node's answers with `added`: {added}, old node's: {plain}"
    );
}

/// Without `--trust-forwarded`, a client's forwarding claims do not reach the service, sent as
/// `Grpc-Metadata-<claim>` either; nor does a second `X-Forwarded-For` beside the gateway's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_metadata_headers_carry_no_forwarding_claims() {
    let (_py, gw, _stop) = setup("v1alpha", &[]).await;
    let r = slow_call(
        &gw,
        &[
            ("X-Forwarded-For", "198.51.100.1"),
            ("Grpc-Metadata-X-Forwarded-For", "203.0.113.7"),
            ("Grpc-Metadata-X-Real-IP", "192.0.2.9"),
            ("Grpc-Metadata-X-Forwarded-Proto", "https"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let got = &json(&r)["metadata"];
    let seen = serde_json::json!({
        "x-forwarded-for": got["x-forwarded-for"],
        "x-real-ip": got["x-real-ip"],
        "x-forwarded-proto": got["x-forwarded-proto"],
    });
    // As behind the http handler, and as for the plain headers.
    assert_eq!(
        seen,
        serde_json::json!({
            "x-forwarded-for": "198.51.100.1, 127.0.0.1",
            "x-real-ip": null,
            "x-forwarded-proto": null,
        })
    );
}

/// A header a plugin vouches for (sets, replacing the client's) gets no second, forged value
/// through `Grpc-Metadata-<name>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_metadata_headers_add_no_value_to_a_header_a_plugin_set() {
    let (_py, gw, _stop) = behind_sets_user().await;
    let r = slow_call(
        &gw,
        &[("X-User", "forged"), ("Grpc-Metadata-X-User", "forged")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let metadata = &json(&r)["metadata"];
    assert_eq!(metadata["x-user"], "ada", "{}", r.body);
}

/// The metadata of a status a service fails with comes back as `Grpc-Trailer-<key>` trailers to
/// a client that sends `TE: trailers`, as grpc-gateway sends it: whether the answer was
/// trailers-only (Python sends one when no initial metadata was sent) or came after headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_errors_trailing_metadata_comes_back_as_trailers() {
    let (_py, gw, _stop) = setup("v1alpha", &[]).await;
    let mut got = Vec::new();
    for extra in [None, Some(("X-Reply-Header-X-Why", "quota"))] {
        let mut headers = vec![("X-Reply-Trailer-X-Retry-After", "5"), ("TE", "trailers")];
        headers.extend(extra);
        let r = call_with(
            &gw,
            "POST",
            "/interop/interop/fail",
            &headers,
            r#"{"code":8,"message":"slow down"}"#,
        )
        .await;
        assert_eq!(r.status, 429, "{}", r.body);
        got.push((extra.is_some(), r.trailers, r.headers));
    }
    let want = vec![("grpc-trailer-x-retry-after".to_string(), "5".to_string())];
    assert!(got.iter().all(|(_, t, _)| *t == want), "{got:#?}");
}

/// Trailers over HTTP/2 (h2c) with `TE: trailers`, none without; and over HTTP/1.1 with the
/// RFC's form `Connection: TE` + `TE: trailers`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_over_http2_and_with_connection_te() {
    use http_body_util::BodyExt;
    let (_py, gw, _stop) = setup("v1alpha", &[]).await;
    for te in [true, false] {
        let stream = tokio::net::TcpStream::connect(&gw).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let mut req = http::Request::post(format!("http://{gw}/interop/interop/slow"))
            .header("content-type", "application/json")
            .header("x-reply-trailer-x-cost", "7")
            .header("x-reply-header-x-served-by", "py");
        if te {
            req = req.header("te", "trailers");
        }
        let req = req
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                br#"{"millis":"0"}"#,
            )))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["grpc-metadata-x-served-by"], "py");
        let collected = resp.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        if te {
            let t = trailers.expect("h2 trailers");
            assert_eq!(t["grpc-trailer-x-cost"], "7", "{t:?}");
        } else {
            assert!(trailers.is_none(), "{trailers:?}");
        }
    }
    let r = slow_call(
        &gw,
        &[
            ("Connection", "TE"),
            ("TE", "trailers"),
            ("X-Reply-Trailer-X-Cost", "7"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.trailers,
        [("grpc-trailer-x-cost".to_string(), "7".to_string())],
        "{:?}",
        r.headers
    );
}

/// A `Value`, `Struct` or `ListValue` field takes JSON in the query string, as grpc-gateway
/// reads those parameters; text that is not JSON is refused, naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_parameters_of_the_json_types_take_json() {
    let (_py, gw, _stop) = setup("v1alpha", &[]).await;
    let r = post(
        &gw,
        "/interop/interop/echo?value=%22hi%22&extra=%7B%22a%22%3A%5B1%2Ctrue%2Cnull%5D%7D",
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        json(&r),
        serde_json::json!({"value": "hi", "extra": {"a": [1.0, true, null]}})
    );
    let r = post(&gw, "/interop/interop/echo?value=5", "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(json(&r)["value"].as_f64(), Some(5.0), "{}", r.body);

    let r = post(&gw, "/interop/interop/echo?value=hi", "").await;
    assert_eq!(r.status, 400, "{}", r.body);
    let detail = json(&r)["detail"].as_str().unwrap().to_string();
    assert!(
        detail.starts_with("field `value` takes JSON (a `google.protobuf.Value`"),
        "{detail}"
    );
    // A `Struct` must be an object.
    let r = post(&gw, "/interop/interop/echo?extra=5", "").await;
    assert_eq!(r.status, 400, "{}", r.body);
}
