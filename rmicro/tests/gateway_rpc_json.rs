//! The rpc handler's JSON against a reference peer: Python's `google.protobuf.json_format`, in
//! the Python grpcio interop server (tests/python/interop_server.py). Each request goes through
//! the real gateway to the server's `Mirror`, which answers the message it got and keeps it; the
//! server then writes that message as json_format does, and reads the request's JSON as
//! json_format does, so the gateway's JSON is compared with the reference's both ways.

mod interop;

use interop::{json, post, setup, Python};

/// Where `got` and `want` differ as JSON values, each difference by its path. Numbers compare
/// by value (`1` and `1.0` are the same number), object members in any order.
fn differences(got: &serde_json::Value, want: &serde_json::Value) -> Vec<String> {
    fn walk(at: &str, got: &serde_json::Value, want: &serde_json::Value, out: &mut Vec<String>) {
        use serde_json::Value;
        match (got, want) {
            (Value::Number(g), Value::Number(w)) => {
                let same = match (g.as_i64(), w.as_i64(), g.as_u64(), w.as_u64()) {
                    (Some(g), Some(w), ..) => g == w,
                    (.., Some(g), Some(w)) => g == w,
                    _ => g.as_f64() == w.as_f64(),
                };
                if !same {
                    out.push(format!("{at}: {got} where json_format has {want}"));
                }
            }
            (Value::Object(g), Value::Object(w)) => {
                for (k, gv) in g {
                    match w.get(k) {
                        Some(wv) => walk(&format!("{at}.{k}"), gv, wv, out),
                        None => out.push(format!("{at}.{k}: {gv}, which json_format leaves out")),
                    }
                }
                for (k, wv) in w {
                    if !g.contains_key(k) {
                        out.push(format!("{at}.{k}: missing; json_format has {wv}"));
                    }
                }
            }
            (Value::Array(g), Value::Array(w)) if g.len() == w.len() => {
                for (i, (gv, wv)) in g.iter().zip(w).enumerate() {
                    walk(&format!("{at}[{i}]"), gv, wv, out);
                }
            }
            _ if got == want => {}
            _ => out.push(format!("{at}: {got} where json_format has {want}")),
        }
    }
    let mut out = Vec::new();
    walk("$", got, want, &mut out);
    out
}

/// Sends `sent` to `Mirror` through the gateway at `gw`; where the gateway's JSON for what came
/// back differs from json_format's JSON for the message the service was sent.
async fn mirror(py: &mut Python, gw: &str, sent: &str) -> Vec<String> {
    let r = post(gw, "/interop/interop/mirror", sent).await;
    if r.status != 200 {
        return vec![format!("the gateway answered {}: {}", r.status, r.body)];
    }
    differences(&json(&r), &py.last())
}

/// Messages of every shape of field: the gateway answers each as json_format writes it —
/// lowerCamelCase (or `json_name`) names, default values of fields without presence left out,
/// 64-bit integers as strings, enums by name (unknown numbers as numbers), bytes in base64,
/// NaN and the infinities as strings, map keys as strings, well-known types in their own forms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_written_as_json_format_writes_them() {
    let (mut py, gw, _stop) = setup("v1alpha", &[]).await;
    let cases = [
        r#"{}"#,
        r#"{"i32": -7, "i64": "-9223372036854775808", "u32": 4294967295,
            "u64": "18446744073709551615", "s64": "-5", "fx64": "18446744073709551615",
            "sfx64": "-3", "fx32": 7, "fl": 0.1, "db": 0.1, "flag": true,
            "str": "\u00e9\u65e5\u0000\"\\", "raw": "AAEC/w==", "kind": "HARDCOVER"}"#,
        r#"{"fl": 3.4028234e38, "db": 1e-300, "floats": [1.5, 0.3, -2.5e-10, 16777217],
            "doubles": [0.1, 1e308, 5e-324, 123456789012345680], "wfloat": 0.1,
            "nesteds": [{"name": "n"}], "byU32": {"1": 1}}"#,
        r#"{"fl": "NaN", "db": "-Infinity", "floats": ["Infinity", "-Infinity", "NaN"],
            "doubles": ["NaN", "Infinity"], "wfloat": "Infinity", "wdouble": "NaN"}"#,
        r#"{"wfloat": "-Infinity", "wdouble": "-Infinity"}"#,
        r#"{"any": {"@type": "type.googleapis.com/google.protobuf.FloatValue", "value": "NaN"}}"#,
        r#"{"any": {"@type": "type.googleapis.com/interop.v1.Scalars", "fl": 0.3,
                    "wdouble": "Infinity"}}"#,
        r#"{"byFlag": {"true": "t", "false": "f"},
            "byLong": {"-9223372036854775808": "min", "7": "seven"},
            "byU32": {"4294967295": "HARDCOVER", "1": 7, "2": "KIND_UNSPECIFIED"},
            "blobMap": {"k": "AQ==", "": ""}, "bySint": {"-3": 1.5, "0": 0},
            "nestedMap": {"a": {"name": "x"}, "b": {}}}"#,
        r#"{"maybeInt": 0, "maybeStr": "", "maybeKind": "KIND_UNSPECIFIED", "maybeNested": {},
            "i32": 0, "str": "", "kind": "KIND_UNSPECIFIED", "raw": "", "flag": false,
            "nested": {}, "names": [], "byFlag": {}}"#,
        r#"{"customName": "c", "snakeCaseField": 3}"#,
        r#"{"mask": "a.fooBar,b", "nothing": {}, "list": [1, "a", null, {"x": []}, true],
            "wbool": false, "wstr": "", "wbytes": "", "wu64": "0", "wi64": "-1", "wdouble": 0,
            "wi32": 0, "wu32": 0, "at": "1970-01-01T00:00:00Z", "took": "0s",
            "negative": "-1.000000001s",
            "times": ["2024-01-02T03:04:05.123456789Z", "0001-01-01T00:00:00Z",
                      "9999-12-31T23:59:59.999999999Z", "2024-01-02T03:04:05.120Z"],
            "dynamic": null, "object": {"a": {"b": [true, null, 2.5]}, "n": 1, "s": "x"}}"#,
        r#"{"dynamic": {"k": "v"}, "object": {}}"#,
        r#"{"dynamic": [], "took": "-0.5s"}"#,
        r#"{"nested": {"name": "n", "kinds": ["PAPERBACK", 9], "child": {"name": "c", "child": {}}},
            "nesteds": [{}, {"name": "x"}], "names": ["a", ""], "longs": ["1", "-2", "0"],
            "kinds": [0, "HARDCOVER"], "blobs": ["", "AA=="]}"#,
        r#"{"pickLong": "0"}"#,
        r#"{"pickKind": "KIND_UNSPECIFIED"}"#,
        r#"{"pickEmpty": {}}"#,
        r#"{"pickValue": null}"#,
        r#"{"kind": 7, "maybeKind": 0}"#,
        r#"{"any": {"@type": "type.googleapis.com/google.protobuf.Duration", "value": "1.5s"}}"#,
        r#"{"any": {"@type": "type.googleapis.com/google.protobuf.Struct", "value": {"a": 1}}}"#,
        r#"{"any": {"@type": "type.googleapis.com/google.protobuf.Int64Value", "value": "5"}}"#,
        r#"{"any": {"@type": "type.googleapis.com/interop.v1.Note", "text": "t"}}"#,
        r#"{"any": {"@type": "type.googleapis.com/interop.v1.Scalars",
                    "i64": "1", "customName": "x", "took": "2s"}}"#,
        r#"{"any": {"@type": "type.googleapis.com/google.protobuf.Any",
                    "value": {"@type": "type.googleapis.com/google.protobuf.Duration",
                              "value": "1.5s"}}}"#,
        // Empty `Any`s inside an `Any`'s message: written `{}`, as json_format writes them.
        r#"{"any": {"@type": "type.googleapis.com/google.protobuf.Any", "value": {}}}"#,
        r#"{"any": {"@type": "type.googleapis.com/interop.v1.Scalars", "any": {},
                    "nested": {"name": "n"}}}"#,
        r#"{"any": {"@type": "type.googleapis.com/interop.v1.Scalars",
                    "any": {"@type": "type.googleapis.com/interop.v1.Scalars", "any": {}}}}"#,
    ];
    let mut failures = Vec::new();
    for sent in cases {
        let sent = sent.split_whitespace().collect::<Vec<_>>().join(" ");
        let diff = mirror(&mut py, &gw, &sent).await;
        if !diff.is_empty() {
            failures.push(format!("{sent}\n  {}", diff.join("\n  ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Request bodies in every form json_format reads (and some it refuses): the gateway reads each
/// to the message json_format reads, and refuses with 400 what json_format refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_read_as_json_format_reads_them() {
    let (mut py, gw, _stop) = setup("v1alpha", &[]).await;
    let cases = [
        // Original field names and JSON names.
        r#"{"renamed": "r", "snake_case_field": 2, "by_flag": {"true": "x"}, "maybe_int": 0}"#,
        r#"{"customName": "r", "snakeCaseField": 2, "byFlag": {"false": "x"}, "maybeInt": 0}"#,
        // Integers as numbers or strings; enums by name or number.
        r#"{"i64": 5, "u64": 18446744073709551615, "i32": "7", "u32": "4294967295"}"#,
        r#"{"i64": "-5", "s64": -9007199254740993, "fx64": "1", "sfx64": -1, "fx32": "3"}"#,
        r#"{"i32": 1.0, "i64": 1e3, "u32": "1e2", "s64": "-1.5e1", "fx64": 2.0, "longs": ["2E1"]}"#,
        r#"{"any": {"@type": "type.googleapis.com/google.protobuf.Empty"}}"#,
        r#"{"kind": 2, "kinds": [1, "HARDCOVER"], "maybeKind": "PAPERBACK", "byU32": {"1": 2}}"#,
        r#"{"kind": 7}"#,
        r#"{"fl": "1.5", "db": "-2e-3", "floats": ["NaN", 1], "wfloat": "0.25", "wdouble": 3}"#,
        // null is the field's default (and a Value's null).
        r#"{"i32": null, "str": null, "nested": null, "names": null, "byFlag": null,
            "kind": null, "at": null, "wi32": null, "list": null, "object": null,
            "dynamic": null, "maybeInt": null, "pickValue": null, "any": null}"#,
        r#"{"list": [null], "object": {"k": null}, "names": ["a"], "maybeStr": "x"}"#,
        // bytes: standard or URL-safe base64, with or without padding.
        r#"{"raw": "-_8="}"#,
        r#"{"raw": "-_8", "blobs": ["+/8", "AQ"], "wbytes": "AQ==", "blobMap": {"k": "_w"}}"#,
        // Timestamps with offsets, durations, field masks.
        r#"{"at": "2024-01-02T03:04:05+01:00", "took": "-0.5s", "mask": "fooBar.bazQux,a"}"#,
        r#"{"at": "2024-01-02T03:04:05.1-08:30", "took": "315576000000.999999999s"}"#,
        r#"{"times": ["1970-01-01T00:00:00.000000001Z"], "negative": "-0.000000001s"}"#,
        r#"{"pickLong": "3"}"#,
        // Decimals whose nearest double a fast float parser misses by one unit in the last
        // place; an integer written with a fraction goes through the same parse. (Past 2^53,
        // where json_format takes 9007199254740993.0 for …992, the gateway refuses it: see
        // gateway_rpc.rs.)
        r#"{"db": 7.038531e-26, "wdouble": 7.038531e-26, "dynamic": 7.038531e-26,
            "doubles": [2.2250738585072011e-308,
                        1.00000000000000011102230246251565404236316680908203125],
            "i64": 4503599627370497.0}"#,
        r#"{"any": {"@type": "type.googleapis.com/google.protobuf.Duration", "value": "3s"}}"#,
        r#"{"any": {"value": "3s", "@type": "type.googleapis.com/google.protobuf.Duration"}}"#,
        // An `Any` of an `Any` (it used to send the gateway round in circles until its stack
        // overflowed and the process aborted).
        r#"{"any": {"@type": "type.googleapis.com/google.protobuf.Any",
                    "value": {"@type": "type.googleapis.com/interop.v1.Note", "text": "t"}}}"#,
        // Empty `Any`s inside an `Any`'s message: set, with neither type nor value.
        r#"{"any": {"@type": "type.googleapis.com/google.protobuf.Any", "value": {}}}"#,
        r#"{"any": {"@type": "type.googleapis.com/interop.v1.Scalars", "any": {}}}"#,
        // What json_format refuses.
        r#"{"u64": 18446744073709551616}"#,
        r#"{"i64": -9223372036854775809}"#,
        r#"{"fx64": 1.8446744073709552e19}"#,
        r#"{"nope": 1}"#,
        r#"{"i32": 2147483648}"#,
        r#"{"i32": 1.5}"#,
        r#"{"u32": -1}"#,
        r#"{"kind": "NOPE"}"#,
        r#"{"fl": 1e39}"#,
        r#"{"pickLong": "1", "pickKind": 1}"#,
        r#"{"fl": 3.5e38}"#,
        r#"{"i64": "1.5e0"}"#,
        r#"{"i32": 1, "i32": 2}"#,
        r#"{"nested": {"name": "a", "child": {"name": "b", "name": "c"}}}"#,
        r#"{"raw": "not base64!"}"#,
        r#"{"at": "yesterday"}"#,
        r#"{"took": "1"}"#,
        r#"{"byFlag": {"yes": "x"}}"#,
        r#"{"byLong": {"1.5": "x"}}"#,
        r#"{"flag": "true"}"#,
        r#"{"str": 1}"#,
        r#"{"names": "a"}"#,
        r#"{"nested": {"name": "n", "nope": true}}"#,
    ];
    let mut failures = Vec::new();
    for sent in cases {
        let sent = sent.split_whitespace().collect::<Vec<_>>().join(" ");
        let want = py.parse("interop.v1.Scalars", &sent);
        let r = post(&gw, "/interop/interop/mirror", &sent).await;
        match (r.status, want) {
            (200, Ok(want)) => {
                let diff = differences(&py.last(), &want);
                if !diff.is_empty() {
                    failures.push(format!("{sent}\n  {}", diff.join("\n  ")));
                }
            }
            (400, Err(_)) => {}
            (status, want) => failures.push(format!(
                "{sent}\n  the gateway: {status} {}\n  json_format: {want:?}",
                r.body
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // `float`'s largest value as peers write it (3.4028235e38, a little past it as a `double`)
    // is that value, as protojson reads it; json_format writes it so, but refuses to read it.
    let diff = mirror(
        &mut py,
        &gw,
        r#"{"fl": 3.4028235e38, "floats": [3.4028235e38, "3.4028235e38", -3.4028235e38]}"#,
    )
    .await;
    assert_eq!(diff, Vec::<String>::new());
    assert_eq!(
        py.last()["floats"],
        serde_json::json!([3.4028235e38, 3.4028235e38, -3.4028235e38])
    );
    // One field by both its names: json_format keeps the last, protojson (go-micro's) refuses
    // it, as the gateway does, naming both.
    let r = post(
        &gw,
        "/interop/interop/mirror",
        r#"{"nested": {"kinds": [1]}, "snakeCaseField": 1, "snake_case_field": 2}"#,
    )
    .await;
    assert_eq!(
        (r.status, json(&r)["detail"].as_str()),
        (
            400,
            Some(
                "`snake_case_field` and `snakeCaseField` name the same field of \
                 `interop.v1.Scalars`; give it once"
            )
        ),
        "{}",
        r.body
    );
    // The `Any` of an `Any` above is read (json_format reads it), not refused.
    let r = post(
        &gw,
        "/interop/interop/mirror",
        r#"{"any": {"@type": "type.googleapis.com/google.protobuf.Any",
            "value": {"@type": "type.googleapis.com/interop.v1.Note", "text": "t"}}}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // A malformed body: where it breaks.
    let r = post(&gw, "/interop/interop/mirror", "{\"i32\": 1,\n \"str\": }").await;
    assert_eq!(
        (r.status, json(&r)["detail"].as_str()),
        (
            400,
            Some("the request body is not JSON: expected value at line 2 column 9")
        ),
        "{}",
        r.body
    );
    let r = post(&gw, "/interop/interop/mirror", r#"{"i32": 1, "i32": 2}"#).await;
    assert_eq!(
        (r.status, json(&r)["detail"].as_str()),
        (
            400,
            Some("the request body is not JSON: key `i32` given twice at line 1 column 16")
        ),
        "{}",
        r.body
    );
}

/// `google.api.http` bindings: path variables into nested fields, a `body` field, query
/// parameters for repeated and nested fields (by either name), and `response_body` answering
/// one field in its JSON form, its default value when the service left it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_set_nested_fields_and_answer_one_field_by_its_json_name() {
    let (mut py, gw, _stop) = setup("v1alpha", &[]).await;
    let get = |path: &'static str| interop::call_with(&gw, "GET", path, &[], "");
    let r = get(
        "/v1/mirror/-5/2?longs=1&longs=-2&nested.child.name=x&kinds=PAPERBACK&kinds=2\
                 &maybeInt=0&customName=c%20d&snake_case_field=3&nested.kinds=1&raw=-_8\
                 &at=2024-01-02T03:04:05%2B01:00&wi32=7&fl=0.5&flag=true",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let want = serde_json::json!({
        "i64": "-5", "kind": "HARDCOVER", "longs": ["1", "-2"],
        "nested": {"child": {"name": "x"}, "kinds": ["PAPERBACK"]},
        "kinds": ["PAPERBACK", "HARDCOVER"], "maybeInt": 0, "customName": "c d",
        "snakeCaseField": 3, "raw": "+/8=", "at": "2024-01-02T02:04:05Z", "wi32": 7,
        "fl": 0.5, "flag": true,
    });
    assert_eq!(differences(&py.last(), &want), Vec::<String>::new());
    assert_eq!(differences(&json(&r), &want), Vec::<String>::new());
    let r = get("/v1/nested/a%2Fb/child/c").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let want = serde_json::json!({"nested": {"name": "a/b", "child": {"name": "c"}}});
    assert_eq!(differences(&py.last(), &want), Vec::<String>::new());
    let r = interop::call_with(
        &gw,
        "PUT",
        "/v1/nested/s?maybe_str=q",
        &[],
        r#"{"name": "n", "kinds": [1, "HARDCOVER"]}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let want = serde_json::json!({
        "str": "s", "maybeStr": "q", "nested": {"name": "n", "kinds": ["PAPERBACK", "HARDCOVER"]},
    });
    assert_eq!(differences(&py.last(), &want), Vec::<String>::new());
    let r = interop::call_with(&gw, "PATCH", "/v1/objects/m", &[], r#"{"a": [1, null]}"#).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let want = serde_json::json!({"maybeNested": {"name": "m"}, "object": {"a": [1, null]}});
    assert_eq!(differences(&py.last(), &want), Vec::<String>::new());
    // response_body: the field alone, by its JSON form.
    let r = get("/v1/names/s?names=a&names=b").await;
    assert_eq!(
        (r.status, json(&r)),
        (200, serde_json::json!(["a", "b"])),
        "{}",
        r.body
    );
    let r = get("/v1/names/s").await;
    assert_eq!(
        (r.status, json(&r)),
        (200, serde_json::json!([])),
        "{}",
        r.body
    );
    let r = get("/v1/maybe/s?maybeNested.kinds=1").await;
    assert_eq!(
        (r.status, json(&r)),
        (200, serde_json::json!({"kinds": ["PAPERBACK"]})),
        "{}",
        r.body
    );
}

/// `response_body` naming an `Any` field: the `Any` as proto3 JSON writes it, `{}` when the
/// service left it unset (its default value, as for any other field), not a 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_body_any_answers_its_json_and_an_empty_object_when_unset() {
    let (_py, gw, _stop) = setup("v1alpha", &[]).await;
    let r = interop::call_with(&gw, "GET", "/v1/any/s", &[], "").await;
    assert_eq!(
        (r.status, json(&r)),
        (200, serde_json::json!({})),
        "{}",
        r.body
    );
    let r = post(
        &gw,
        "/interop/interop/mirror",
        r#"{"any": {"@type": "type.googleapis.com/interop.v1.Note", "text": "t"}}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// A request message of a well-known type with a JSON form of its own (a wrapper, a
/// `ListValue`) is the whole body in that form, as protojson and json_format read it
/// (`"hi"`, `[1, "a"]`), not refused for not being an object; a wrapper's `value` may come
/// from the query string as any field's. What json_format refuses the gateway refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_of_a_well_known_type_is_read_in_its_own_json_form() {
    let (mut py, gw, _stop) = setup("v1alpha", &[]).await;
    for (path, type_name, sent) in [
        (
            "/interop/interop/wrapped",
            "google.protobuf.StringValue",
            r#""hi""#,
        ),
        (
            "/interop/interop/wrapped",
            "google.protobuf.StringValue",
            r#""""#,
        ),
        (
            "/interop/interop/listed",
            "google.protobuf.ListValue",
            r#"[1, "a", null, {"k": [true]}]"#,
        ),
        ("/interop/interop/listed", "google.protobuf.ListValue", "[]"),
        (
            "/interop/interop/wrapped",
            "google.protobuf.StringValue",
            r#"{"value": "hi"}"#,
        ),
        ("/interop/interop/listed", "google.protobuf.ListValue", "{}"),
        (
            "/interop/interop/wrapped",
            "google.protobuf.StringValue",
            "5",
        ),
    ] {
        let want = py.parse(type_name, sent);
        let r = post(&gw, path, sent).await;
        match (r.status, want) {
            (200, Ok(want)) => {
                assert_eq!(
                    differences(&json(&r), &want),
                    Vec::<String>::new(),
                    "{sent}"
                );
            }
            (400, Err(_)) => {}
            (status, want) => panic!(
                "{sent}: the gateway {status} {}, json_format {want:?}",
                r.body
            ),
        }
    }
    let r = interop::call_with(&gw, "GET", "/interop/interop/wrapped?value=a%20b", &[], "").await;
    assert_eq!(
        (r.status, json(&r)),
        (200, serde_json::json!("a b")),
        "{}",
        r.body
    );
}

/// A proto2 message missing a `required` field, at any depth (a message field, a list's item,
/// a map's value), is the client's error, naming the field, as protojson and go-micro's jsonpb
/// refuse it, rather than sent to a service that cannot answer it. Set fields with presence
/// are written even at their default values, as json_format writes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proto2_message_missing_a_required_field_is_refused_naming_it() {
    let (mut py, gw, _stop) = setup("v1alpha", &[]).await;
    for (sent, field) in [
        ("{}", "id"),
        (r#"{"id": "a", "child": {"count": 1}}"#, "child.id"),
        (
            r#"{"id": "a", "children": [{"id": "b"}, {"child": {"id": "c"}}]}"#,
            "children[1].id",
        ),
        (
            r#"{"id": "a", "byName": {"k": {"id": "b", "child": {}}}}"#,
            "byName[k].child.id",
        ),
    ] {
        let r = post(&gw, "/interop/interop/legacy", sent).await;
        assert_eq!(r.status, 400, "{sent}: {}", r.body);
        let detail = json(&r)["detail"].as_str().unwrap_or_default().to_string();
        assert_eq!(
            detail,
            format!(
                "field `{field}` is required (proto2 `required`) in `interop.legacy.Old`; give it"
            ),
            "{sent}"
        );
    }
    let sent = r#"{"id": "a", "count": 7, "child": {"id": "", "count": 0}}"#;
    let r = post(&gw, "/interop/interop/legacy", sent).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let want = py.parse("interop.legacy.Old", sent).unwrap();
    assert_eq!(differences(&json(&r), &want), Vec::<String>::new());
    assert_eq!(differences(&py.last(), &want), Vec::<String>::new());
}

/// A query parameter for a field that holds one value, given twice (`str=a&str=b`), or once by
/// each of its names, is the client's error, as grpc-gateway refuses it and as the gateway
/// refuses a field named twice in a body: one of the two would be dropped. A repeated field
/// takes every value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_parameter_for_a_single_value_given_twice_is_refused() {
    let (mut py, gw, _stop) = setup("v1alpha", &[]).await;
    for (query, says) in [
        (
            "str=a&str=b",
            "field `str` is given twice in the query string; give it once",
        ),
        (
            "customName=a&renamed=b",
            "field `renamed` is given twice in the query string (as `customName` and \
             `renamed`); give it once",
        ),
        (
            "nested.name=a&nested.name=b",
            "field `nested.name` is given twice in the query string; give it once",
        ),
        (
            "maybeInt=1&maybe_int=1",
            "field `maybe_int` is given twice in the query string (as `maybeInt` and \
             `maybe_int`); give it once",
        ),
    ] {
        let path = format!("/v1/mirror/1/2?{query}");
        let r = interop::call_with(&gw, "GET", &path, &[], "").await;
        assert_eq!(
            (r.status, json(&r)["detail"].as_str()),
            (400, Some(says)),
            "{query}: {}",
            r.body
        );
    }
    let r = interop::call_with(&gw, "GET", "/v1/mirror/1/2?names=a&names=a&str=s", &[], "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        py.last(),
        serde_json::json!({"i64": "1", "kind": "HARDCOVER", "names": ["a", "a"], "str": "s"})
    );
}

/// A bool in the path or the query string is read as grpc-gateway reads it (Go's
/// `strconv.ParseBool`): `1`, `t`, `T`, `TRUE`, `True` and `true` are true, `0`, `f`, `F`,
/// `FALSE`, `False` and `false` false; the same for a `BoolValue` and a map's bool key. Other
/// words are refused, naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_bools_take_the_forms_grpc_gateway_takes() {
    let (mut py, gw, _stop) = setup("v1alpha", &[]).await;
    for (query, want) in [
        (
            "flag=1&wbool=0&byFlag[1]=x&byFlag[F]=y",
            serde_json::json!({"flag": true, "wbool": false, "byFlag": {"true": "x", "false": "y"}}),
        ),
        (
            "flag=True&wbool=T",
            serde_json::json!({"flag": true, "wbool": true}),
        ),
        (
            "flag=TRUE&wbool=t",
            serde_json::json!({"flag": true, "wbool": true}),
        ),
        (
            "flag=False&wbool=FALSE",
            serde_json::json!({"wbool": false}),
        ),
        ("flag=f&wbool=true", serde_json::json!({"wbool": true})),
        (
            "flag=true&wbool=false",
            serde_json::json!({"flag": true, "wbool": false}),
        ),
    ] {
        let path = format!("/v1/mirror/1/2?{query}");
        let r = interop::call_with(&gw, "GET", &path, &[], "").await;
        assert_eq!(r.status, 200, "{query}: {}", r.body);
        let mut want = want;
        want["i64"] = "1".into();
        want["kind"] = "HARDCOVER".into();
        assert_eq!(
            differences(&py.last(), &want),
            Vec::<String>::new(),
            "{query}"
        );
    }
    for (query, says) in [
        ("flag=yes", "field `flag` takes true or false, not `yes`"),
        ("flag=", "field `flag` takes true or false, not ``"),
        ("wbool=on", "field `wbool` takes true or false, not `on`"),
        (
            "byFlag[yes]=x",
            "`byFlag[yes]` names a key of `by_flag`, whose keys are true or false, not `yes`",
        ),
    ] {
        let path = format!("/v1/mirror/1/2?{query}");
        let r = interop::call_with(&gw, "GET", &path, &[], "").await;
        assert_eq!(
            (r.status, json(&r)["detail"].as_str()),
            (400, Some(says)),
            "{query}: {}",
            r.body
        );
    }
}

/// A `Duration` in the path or the query string is read as grpc-gateway reads it there (Go's
/// `time.ParseDuration`: `100ms`, `1h30m`, `-1.5m`, `0`), as well as in proto3 JSON's form
/// (`1.5s`); text neither reads is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_durations_take_the_forms_grpc_gateway_takes() {
    let (mut py, gw, _stop) = setup("v1alpha", &[]).await;
    for (value, want) in [
        ("1.5s", "1.500s"),
        ("100ms", "0.100s"),
        ("1h30m", "5400s"),
        ("-1.5m", "-90s"),
        ("%2B2h", "7200s"),
        ("300us", "0.000300s"),
        ("1%C2%B5s", "0.000001s"),
        ("2h45m30.5s1ns", "9930.500000001s"),
        ("0", "0s"),
        ("7", ""),
    ] {
        let path = format!("/v1/mirror/1/2?took={value}&negative={value}");
        let r = interop::call_with(&gw, "GET", &path, &[], "").await;
        if want.is_empty() {
            assert_eq!(r.status, 400, "{value}: {}", r.body);
            continue;
        }
        assert_eq!(r.status, 200, "{value}: {}", r.body);
        let last = py.last();
        let got = last.get("took").and_then(|t| t.as_str()).unwrap_or("0s");
        assert_eq!(got, want, "{value}");
    }
}

/// A map entry set from the query string with an integer key type takes a key of that type,
/// and any other key is refused naming the parameter and the field (the message parser's own
/// words named neither).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_map_keys_of_integer_type_are_checked_naming_the_parameter() {
    let (mut py, gw, _stop) = setup("v1alpha", &[]).await;
    let r = interop::call_with(&gw, "GET", "/v1/mirror/1/2?byU32[7]=HARDCOVER", &[], "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let want = serde_json::json!({"i64": "1", "kind": "HARDCOVER", "byU32": {"7": "HARDCOVER"}});
    assert_eq!(differences(&py.last(), &want), Vec::<String>::new());
    for (query, says) in [
        (
            "byU32[x]=1",
            "`byU32[x]` names a key of `by_u32`, whose keys are unsigned 32-bit integers, not `x`",
        ),
        (
            "byU32[-1]=1",
            "`byU32[-1]` names a key of `by_u32`, whose keys are unsigned 32-bit integers, not `-1`",
        ),
        (
            "byU32[4294967296]=1",
            "`byU32[4294967296]` names a key of `by_u32`, whose keys are unsigned 32-bit integers, not `4294967296`",
        ),
    ] {
        let path = format!("/v1/mirror/1/2?{query}");
        let r = interop::call_with(&gw, "GET", &path, &[], "").await;
        assert_eq!(
            (r.status, json(&r)["detail"].as_str()),
            (400, Some(says)),
            "{query}: {}",
            r.body
        );
    }
}

/// The paths of `json` (JSON pointers) whose value is not a negative zero.
fn not_negative_zero(json: &serde_json::Value, paths: &[&str]) -> Vec<String> {
    paths
        .iter()
        .filter(|p| {
            !json
                .pointer(p)
                .and_then(serde_json::Value::as_f64)
                .is_some_and(|f| f == 0.0 && f.is_sign_negative())
        })
        .map(|p| format!("{p}: {:?}", json.pointer(p)))
        .collect()
}

/// A negative zero keeps its sign both ways, as protobuf's runtimes keep it (protojson writes it
/// `-0`): read from `-0` (a number, or a string as path and query parameters are) into a field
/// without presence, a list, a map, a wrapper, a `Value`, messages further down and an `Any`'s
/// message, it reaches the service as `-0.0`, and what the service answers is written `-0`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_negative_zero_keeps_its_sign_both_ways() {
    let (mut py, gw, _stop) = setup("v1alpha", &[]).await;
    let sent = r#"{"fl": -0, "db": -0.0, "floats": [-0], "doubles": [-0], "bySint": {"1": -0},
        "wfloat": -0, "wdouble": "-0", "dynamic": -0, "object": {"z": -0},
        "child": {"db": -0, "wdouble": -0, "child": {"fl": "-0"}}, "children": [{"fl": -0}],
        "byName": {"k": {"db": -0}},
        "any": {"@type": "type.googleapis.com/interop.v1.Scalars", "db": -0, "wfloat": -0}}"#;
    let paths = [
        "/fl",
        "/db",
        "/floats/0",
        "/doubles/0",
        "/bySint/1",
        "/wfloat",
        "/wdouble",
        "/dynamic",
        "/object/z",
        "/child/db",
        "/child/wdouble",
        "/child/child/fl",
        "/children/0/fl",
        "/byName/k/db",
        "/any/db",
        "/any/wfloat",
    ];
    let r = post(&gw, "/interop/interop/mirror", sent).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        not_negative_zero(&py.last(), &paths),
        Vec::<String>::new(),
        "what the service got"
    );
    assert_eq!(
        not_negative_zero(&json(&r), &paths),
        Vec::<String>::new(),
        "{}",
        r.body
    );
    assert!(
        r.body.contains(r#""db":-0,"#) && !r.body.contains("-0.0"),
        "{}",
        r.body
    );

    // From the query string.
    let r = interop::call_with(
        &gw,
        "GET",
        "/v1/mirror/1/PAPERBACK?db=-0&wdouble=-0&floats=-0.0&child.fl=-0",
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let paths = ["/db", "/wdouble", "/floats/0", "/child/fl"];
    assert_eq!(not_negative_zero(&py.last(), &paths), Vec::<String>::new());
    assert_eq!(
        not_negative_zero(&json(&r), &paths),
        Vec::<String>::new(),
        "{}",
        r.body
    );
}
