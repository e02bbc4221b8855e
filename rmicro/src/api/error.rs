//! The gateway's own error responses: go-micro's JSON shape with the right HTTP status (go-micro's
//! gateway answered bare 500s).

use axum_core::body::Body;
use http::{header, Response, StatusCode};
use rmicro_runtime::errors::Error;

/// The `id` of errors the gateway itself raises.
pub const ID: &str = "go.micro.api";

/// A JSON error response with `status` and `detail`.
pub fn response(status: StatusCode, detail: impl Into<String>) -> Response<Body> {
    let mut resp = Response::new(Body::from(body(status, detail)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// The JSON body of a gateway's error response with `status` and `detail`.
pub(crate) fn body(status: StatusCode, detail: impl Into<String>) -> String {
    Error::new(ID, detail, i32::from(status.as_u16())).to_json()
}

/// `err` and the errors behind it (its `source`s), nearest first.
pub(crate) fn chain<'e>(
    err: &'e (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'e (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(err), |e| e.source())
}

/// The detail of the 503 for what the registry could not be asked (`doing`: "look up service
/// `x`"): the client is told only that (the registry's error names its address, and advice
/// about the gateway's flags: for the operator, not for whoever sent the request). The whole error goes to the log,
/// at most every 10 seconds, as such failures come with every request while they last.
pub fn registry_unavailable(doing: &str, err: &dyn std::fmt::Display) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST.load(Ordering::Relaxed);
    if now >= last + 10
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(error = %err, "cannot {doing} (logged at most every 10 s)");
    }
    format!("cannot {doing}: the registry is unavailable")
}
