//! gRPC statuses as the gateway's HTTP answers.

use std::time::Duration;

use axum_core::body::Body;
use http::{header, Response, StatusCode};
use rmicro_runtime::errors::Error;

use super::{error, Fail};

/// The answer for a message over a size limit: the request message over the service's (413),
/// or the response over the gateway's (502); `None` for any other status.
pub(super) fn too_large(
    status: &tonic::Status,
    sent: usize,
    response_limit: usize,
    grpc_path: &str,
) -> Option<Fail> {
    let message = status.message();
    // tonic (at either end) words it so, a request's own size in it, with OUT_OF_RANGE (rmicro
    // servers answer it with RESOURCE_EXHAUSTED, as gRPC says); grpc-go as `grpc: received
    // message larger than max (N vs. M)`, gRPC's C core (Python, C++, Ruby…) as `Received
    // message larger than max (N vs. M)`, Python's with `SERVER: ` before.
    let tonic_words = message.starts_with("Error, decoded message length too large");
    // Only the size of what the gateway sent makes tonic's words about this request: a node
    // passing on a limit error of its own downstream call names another size.
    let this_request = message.contains(&format!("found {sent} bytes,"));
    let tonic_limit = status.code() == tonic::Code::OutOfRange && tonic_words;
    let grpc_limit = status.code() == tonic::Code::ResourceExhausted
        && ((tonic_words && this_request)
            || message.contains("received message larger than max")
            || message.contains("Received message larger than max"));
    if grpc_limit || (tonic_limit && this_request) {
        return Some(error::response(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request message for `{grpc_path}` ({sent} bytes) is over the service's \
                 limit ({message}); send a smaller request"
            ),
        ));
    }
    tonic_limit.then(|| {
        error::response(
            StatusCode::BAD_GATEWAY,
            format!(
                "the response of `{grpc_path}` is over the gateway's {response_limit}-byte \
                 limit for response messages (the larger of --body-limit and 4 MiB): {message}"
            ),
        )
    })
}

/// Whether `status`, come `elapsed` into a call sent with deadline `timeout`, says that deadline
/// ran out: a plain DEADLINE_EXCEEDED (not a go-micro error of the service's own) after 95 % of
/// it (services and their own outgoing calls, which inherit it, may give up a little early).
pub(super) fn ran_out(status: &tonic::Status, elapsed: Duration, timeout: Duration) -> bool {
    status.code() == tonic::Code::DeadlineExceeded
        && Error::parse(status.message()).is_none()
        && elapsed >= timeout.mul_f64(0.95)
}

/// A gRPC error as go-micro JSON with the mapped HTTP status, and the `details` its status
/// carried (a field go-micro's shape lacks; its clients ignore it).
pub(super) fn status_response(
    status: &tonic::Status,
    details: Option<Vec<serde_json::Value>>,
) -> Response<Body> {
    let mut err = Error::from_status(status);
    // A plain DEADLINE_EXCEEDED (not a go-micro error of the service's own) is a call of the
    // service's that ran out of time behind it: 504, as google.rpc.Code and grpc-gateway map it
    // (go-micro's 408 pairing would tell the client it was too slow sending its request).
    if status.code() == tonic::Code::DeadlineExceeded && Error::parse(status.message()).is_none() {
        err.code = 504;
        err.status = rmicro_runtime::errors::status_text(504).to_string();
    }
    if !(400..=599).contains(&err.code) {
        // A failed call is never answered with a success or an informational status (a 101
        // would even end the client's connection), whatever code the service's go-micro error
        // names (go-micro itself makes its code 0 a 500): the gRPC status's own mapping stands
        // in, in the body too.
        let mapped = Error::from_status(&tonic::Status::new(status.code(), ""));
        err.code = mapped.code;
        err.status = mapped.status;
    }
    let code = u16::try_from(err.code)
        .ok()
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match details {
        None => err.to_json(),
        Some(details) => match serde_json::from_str::<serde_json::Value>(&err.to_json()) {
            Ok(serde_json::Value::Object(mut object)) => {
                object.insert("details".into(), details.into());
                // A negative zero in a detail written `-0`, as in an answer.
                super::negative_zero::write(&serde_json::Value::Object(object))
            }
            _ => err.to_json(),
        },
    };
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The HTTP status and go-micro JSON of `status` as the gateway answers it.
    async fn answered(status: tonic::Status) -> (u16, serde_json::Value) {
        use http_body_util::BodyExt;
        let resp = status_response(&status, None);
        let code = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (code, serde_json::from_slice(&body).unwrap())
    }

    /// A service's plain DEADLINE_EXCEEDED (its own call timed out behind it) is a 504, as
    /// google.rpc.Code maps it; a go-micro error that says 408 keeps it.
    #[tokio::test]
    async fn a_plain_deadline_exceeded_is_a_504_and_a_go_micro_408_stays() {
        let (code, v) = answered(tonic::Status::deadline_exceeded("boom")).await;
        assert_eq!(
            (code, &v["code"], &v["detail"]),
            (504, &504.into(), &"boom".into())
        );
        assert_eq!(v["status"], "Gateway Timeout");
        let micro = Error::new("svc", "too slow", 408).to_json();
        let (code, v) = answered(tonic::Status::deadline_exceeded(micro)).await;
        assert_eq!((code, &v["id"]), (408, &"svc".into()));
    }

    /// A status whose message is JSON with a `code` but not go-micro's shape (a
    /// `google.rpc.Status`'s `code` and `message`) is a plain status: its gRPC code's mapping,
    /// its text kept, not a status taken from someone else's `code` with an empty detail.
    #[tokio::test]
    async fn a_json_message_that_is_not_go_micros_keeps_its_text() {
        let message = r#"{"code":429,"message":"upstream said: slow down"}"#;
        let (code, v) = answered(tonic::Status::internal(message)).await;
        assert_eq!((code, &v["detail"]), (500, &message.into()), "{v}");
        let message = r#"{"code":9,"message":"precondition failed"}"#;
        let (code, v) = answered(tonic::Status::failed_precondition(message)).await;
        assert_eq!((code, &v["detail"]), (400, &message.into()), "{v}");
    }

    /// A detail's negative zero is written `-0`, as in an answer (serde_json writes `-0.0`).
    #[tokio::test]
    async fn a_negative_zero_in_a_detail_is_written_minus_0() {
        use http_body_util::BodyExt;
        let details = vec![serde_json::json!({"@type": "x.Y", "ratio": -0.0, "n": 1.5})];
        let resp = status_response(&tonic::Status::invalid_argument("bad"), Some(details));
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            body.contains(r#""ratio":-0"#) && !body.contains(r#""ratio":-0."#),
            "{body}"
        );
        assert!(body.contains(r#""n":1.5"#), "{body}");
    }

    #[test]
    fn a_go_micro_error_naming_no_error_status_gets_the_grpc_codes() {
        for code in [0, 101, 200, 302, 600, -1] {
            let json = format!(r#"{{"id":"svc","code":{code},"detail":"gone","status":"OK"}}"#);
            let resp = status_response(&tonic::Status::not_found(json), None);
            assert_eq!(resp.status(), StatusCode::NOT_FOUND, "code {code}");
        }
        let json = r#"{"id":"svc","code":418,"detail":"teapot","status":"I'm a teapot"}"#;
        let resp = status_response(&tonic::Status::not_found(json), None);
        assert_eq!(resp.status(), StatusCode::IM_A_TEAPOT);
    }

    #[test]
    fn only_a_limit_error_about_this_request_is_the_clients_413() {
        let limit = |code, message: &str| {
            too_large(&tonic::Status::new(code, message), 5000, 4 << 20, "/a.B/C")
                .map(|fail| fail.status())
        };
        let words = |n: usize| {
            format!("Error, decoded message length too large: found {n} bytes, the limit is: 4194304 bytes")
        };
        // An rmicro server's answer about what the gateway sent (older ones said OUT_OF_RANGE).
        let code = tonic::Code::ResourceExhausted;
        assert_eq!(
            limit(code, &words(5000)),
            Some(StatusCode::PAYLOAD_TOO_LARGE)
        );
        let code = tonic::Code::OutOfRange;
        assert_eq!(
            limit(code, &words(5000)),
            Some(StatusCode::PAYLOAD_TOO_LARGE)
        );
        // The node passing on its own downstream call's limit error: not this request's size.
        assert_eq!(
            limit(tonic::Code::ResourceExhausted, &words(9_000_000)),
            None
        );
        // The gateway's own limit on the response.
        let code = tonic::Code::OutOfRange;
        assert_eq!(
            limit(code, &words(9_000_000)),
            Some(StatusCode::BAD_GATEWAY)
        );
        let grpc_go = "grpc: received message larger than max (5000 vs. 4096)";
        assert_eq!(
            limit(tonic::Code::ResourceExhausted, grpc_go),
            Some(StatusCode::PAYLOAD_TOO_LARGE)
        );
    }
}
