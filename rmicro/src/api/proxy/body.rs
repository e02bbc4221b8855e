//! A proxied response's body, and the gateway's own error answers.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum_core::body::Body;
use bytes::Bytes;
use http::{Response, StatusCode};
use hyper::body::Incoming;

use super::error;

/// A proxied response's body: the backend's, streamed as it arrives, or the gateway's own
/// (errors). Not boxed: a box per response is measurable at the request rates a gateway sees.
#[derive(Debug)]
pub(crate) enum ProxyBody {
    Backend(Incoming),
    Gateway(Body),
}

impl From<ProxyBody> for Body {
    fn from(body: ProxyBody) -> Body {
        match body {
            ProxyBody::Backend(body) => Body::new(body),
            ProxyBody::Gateway(body) => body,
        }
    }
}

impl http_body::Body for ProxyBody {
    type Data = Bytes;
    type Error = axum_core::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum_core::Error>>> {
        match self.get_mut() {
            ProxyBody::Backend(body) => Pin::new(body).poll_frame(cx).map_err(|err| {
                // The client's response ends short (HTTP/1: its connection is closed; HTTP/2:
                // the stream is reset): worth a line, as a 502 gets.
                tracing::warn!(error = %err, "backend response body broke off; the client got it cut short");
                axum_core::Error::new(err)
            }),
            ProxyBody::Gateway(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Backend(body) => body.is_end_stream(),
            ProxyBody::Gateway(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            ProxyBody::Backend(body) => body.size_hint(),
            ProxyBody::Gateway(body) => body.size_hint(),
        }
    }
}

/// The gateway's own error response.
pub(super) fn fail(status: StatusCode, detail: String) -> Response<ProxyBody> {
    error::response(status, detail).map(ProxyBody::Gateway)
}

pub(super) fn too_large(limit: usize) -> Response<ProxyBody> {
    fail(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body over the {limit}-byte limit"),
    )
}
