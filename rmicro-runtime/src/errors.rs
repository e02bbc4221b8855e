//! go-micro's error shape, `{"id","code","detail","status"}`, mapped to gRPC status codes.
//!
//! A handler returns `Err(Error::not_found("go.micro.srv.user", "no user 7").into())`; the caller
//! gets a [`Status`] with the mapped gRPC code whose message is the JSON, exactly as go-micro's
//! gRPC server sends it, and [`Error::from_status`] reads it back, so Go and Rust callers see the
//! same id, code and detail.

use serde::{Deserialize, Serialize};
use tonic::{Code, Status};

/// What a recovered panic said: its message (a `&str` or `String` payload, as `panic!` makes),
/// or a note that it carried something else. Servers that answer a panicked request log it.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a value that is not a message")
}

/// A go-micro error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{}", self.to_json())]
pub struct Error {
    /// Who raised it, usually the service name.
    #[serde(default)]
    pub id: String,
    /// The HTTP status code (400, 404, 500, …).
    #[serde(default)]
    pub code: i32,
    /// What went wrong, for a person.
    #[serde(default)]
    pub detail: String,
    /// The HTTP status text ("Not Found").
    #[serde(default)]
    pub status: String,
}

/// The HTTP ↔ gRPC code pairs go-micro maps both ways.
const PAIRS: &[(i32, Code)] = &[
    (400, Code::InvalidArgument),
    (401, Code::Unauthenticated),
    (403, Code::PermissionDenied),
    (404, Code::NotFound),
    (408, Code::DeadlineExceeded),
    (409, Code::AlreadyExists),
    (500, Code::Internal),
    (501, Code::Unimplemented),
    (503, Code::Unavailable),
];

/// The gRPC code for an HTTP status code (500 → `Internal` for anything unlisted; other 4xx →
/// `InvalidArgument`… as go-micro does, via the nearest class).
pub fn grpc_code(http: i32) -> Code {
    PAIRS
        .iter()
        .find(|(h, _)| *h == http)
        .map(|(_, c)| *c)
        .unwrap_or(match http {
            429 => Code::ResourceExhausted,
            499 => Code::Cancelled,
            400..=499 => Code::InvalidArgument,
            _ => Code::Internal,
        })
}

/// The HTTP status code for a gRPC code.
pub fn http_code(code: Code) -> i32 {
    if let Some((h, _)) = PAIRS.iter().find(|(_, c)| *c == code) {
        return *h;
    }
    match code {
        Code::Ok => 200,
        Code::Cancelled => 499,
        Code::ResourceExhausted => 429,
        Code::FailedPrecondition | Code::OutOfRange => 400,
        Code::Aborted => 409,
        _ => 500,
    }
}

/// The reason phrase of an HTTP status code.
pub fn status_text(code: i32) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        499 => "Client Closed Request",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        // Every other registered code by its standard reason (405 Method Not Allowed, ...).
        _ => u16::try_from(code)
            .ok()
            .and_then(|c| http::StatusCode::from_u16(c).ok())
            .and_then(|c| c.canonical_reason())
            .unwrap_or(""),
    }
}

impl Error {
    /// An error with any HTTP code.
    pub fn new(id: impl Into<String>, detail: impl Into<String>, code: i32) -> Error {
        Error {
            id: id.into(),
            code,
            detail: detail.into(),
            status: status_text(code).to_string(),
        }
    }

    /// 400.
    pub fn bad_request(id: impl Into<String>, detail: impl Into<String>) -> Error {
        Error::new(id, detail, 400)
    }
    /// 401.
    pub fn unauthorized(id: impl Into<String>, detail: impl Into<String>) -> Error {
        Error::new(id, detail, 401)
    }
    /// 403.
    pub fn forbidden(id: impl Into<String>, detail: impl Into<String>) -> Error {
        Error::new(id, detail, 403)
    }
    /// 404.
    pub fn not_found(id: impl Into<String>, detail: impl Into<String>) -> Error {
        Error::new(id, detail, 404)
    }
    /// 408.
    pub fn timeout(id: impl Into<String>, detail: impl Into<String>) -> Error {
        Error::new(id, detail, 408)
    }
    /// 409.
    pub fn conflict(id: impl Into<String>, detail: impl Into<String>) -> Error {
        Error::new(id, detail, 409)
    }
    /// 500.
    pub fn internal(id: impl Into<String>, detail: impl Into<String>) -> Error {
        Error::new(id, detail, 500)
    }
    /// 501.
    pub fn not_implemented(id: impl Into<String>, detail: impl Into<String>) -> Error {
        Error::new(id, detail, 501)
    }
    /// 503.
    pub fn unavailable(id: impl Into<String>, detail: impl Into<String>) -> Error {
        Error::new(id, detail, 503)
    }

    /// The JSON go-micro puts on the wire.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses go-micro's JSON; `None` when `text` is not such an object.
    pub fn parse(text: &str) -> Option<Error> {
        let err: Error = serde_json::from_str(text).ok()?;
        // go-micro's errors name an id or a detail, or at least their status with the code; a
        // JSON object with a code alone is someone else's (`google.rpc.Status`'s `code` and
        // `message`), whose text would be lost if read as go-micro's.
        (!err.id.is_empty() || !err.detail.is_empty() || (err.code != 0 && !err.status.is_empty()))
            .then_some(err)
    }

    /// Reads an error from a gRPC status: its message when that is go-micro's JSON, else built
    /// from the code and message.
    pub fn from_status(status: &Status) -> Error {
        if let Some(err) = Error::parse(status.message()) {
            return err;
        }
        let code = http_code(status.code());
        Error {
            // As go-micro's client names the errors it makes from plain gRPC statuses.
            id: "go.micro.client".to_string(),
            code,
            detail: status.message().to_string(),
            status: status_text(code).to_string(),
        }
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        Status::new(grpc_code(err.code), err.to_json())
    }
}

impl From<&Status> for Error {
    fn from(status: &Status) -> Error {
        Error::from_status(status)
    }
}

impl From<Status> for Error {
    fn from(status: Status) -> Error {
        Error::from_status(&status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// go-micro's JSON is read whatever fields it leaves out; a JSON object with a code alone
    /// (`google.rpc.Status`'s shape) is not go-micro's.
    #[test]
    fn only_go_micros_shape_is_read_as_a_go_micro_error() {
        for text in [
            r#"{"id":"svc","code":404,"detail":"gone","status":"Not Found"}"#,
            r#"{"detail":"gone"}"#,
            r#"{"id":"svc"}"#,
            r#"{"code":503,"status":"Service Unavailable"}"#,
        ] {
            assert!(Error::parse(text).is_some(), "{text}");
        }
        for text in [
            r#"{"code":429,"message":"slow down"}"#,
            r#"{"code":9}"#,
            r#"{}"#,
            "not json",
        ] {
            assert!(Error::parse(text).is_none(), "{text}");
        }
    }

    #[test]
    fn maps_both_ways() {
        for (http, grpc) in PAIRS {
            assert_eq!(grpc_code(*http), *grpc);
            assert_eq!(http_code(*grpc), *http);
        }
    }

    #[test]
    fn every_status_the_gateway_sends_has_its_reason() {
        for (code, reason) in [
            (405, "Method Not Allowed"),
            (411, "Length Required"),
            (415, "Unsupported Media Type"),
            (431, "Request Header Fields Too Large"),
            (413, "Payload Too Large"),
            (499, "Client Closed Request"),
        ] {
            assert_eq!(status_text(code), reason, "{code}");
        }
        assert_eq!(status_text(-1), "");
        assert_eq!(status_text(1000), "");
    }

    #[test]
    fn round_trips_through_a_status() {
        let err = Error::not_found("go.micro.srv.user", "no user 7");
        let status: Status = err.clone().into();
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(
            status.message(),
            r#"{"id":"go.micro.srv.user","code":404,"detail":"no user 7","status":"Not Found"}"#
        );
        assert_eq!(Error::from_status(&status), err);
    }

    #[test]
    fn plain_statuses_become_errors_too() {
        let err = Error::from_status(&Status::deadline_exceeded("too slow"));
        assert_eq!(
            (
                err.id.as_str(),
                err.code,
                err.detail.as_str(),
                err.status.as_str()
            ),
            ("go.micro.client", 408, "too slow", "Request Timeout")
        );
    }
}
