//! The gateway's own error responses: go-micro's JSON shape with the right HTTP status (go-micro's
//! gateway answered bare 500s).

use axum_core::body::Body;
use http::{header, Response, StatusCode};
use rmicro_runtime::errors::Error;

/// The `id` of errors the gateway itself raises.
pub const ID: &str = "go.micro.api";

/// A JSON error response with `status` and `detail`.
pub fn response(status: StatusCode, detail: impl Into<String>) -> Response<Body> {
    let body = Error::new(ID, detail, i32::from(status.as_u16())).to_json();
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}
