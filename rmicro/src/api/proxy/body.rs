//! A proxied response's body, and the gateway's own error answers.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum_core::body::Body;
use bytes::Bytes;
use http::{Response, StatusCode};
use hyper::body::Incoming;
use rmicro_runtime::registry::Node;

use super::error;
use crate::api::conn::Silence;

/// A proxied response's body: the backend's, streamed as it arrives, or the gateway's own
/// (errors). Not boxed: a box per response is measurable at the request rates a gateway sees.
#[derive(Debug)]
pub(crate) enum ProxyBody {
    Backend(Incoming, Source),
    /// The backend's, still to come: cut off once the node sends nothing of it for a while
    /// (see [`ProxyBody::backend`]).
    Watched(Incoming, Source, Box<Silence>),
    Gateway(Body),
}

impl ProxyBody {
    /// A node's response body; `stall` is the limit on its silences. The client connection's
    /// own idle limit cannot stand in for it: an HTTP/2 connection stays open while any of its
    /// streams is in progress, and hyper reads nothing of an HTTP/1 connection while it holds
    /// the client's next, pipelined request, so no read waits to be failed. The response would
    /// wait, holding the node's connection, for as long as the node keeps its end open.
    #[inline]
    pub(crate) fn backend(body: Incoming, from: Source, stall: Duration) -> ProxyBody {
        if http_body::Body::is_end_stream(&body) {
            ProxyBody::Backend(body, from)
        } else {
            ProxyBody::Watched(body, from, Box::new(Silence::new(stall)))
        }
    }
}

/// The node a response body comes from (named in the log should the body break off; go-micro
/// node ids start with their service's name): the service's nodes as looked up for the request
/// (a reference count, no copy) and which one.
#[derive(Debug)]
pub(crate) struct Source {
    pub(crate) nodes: Arc<[Node]>,
    pub(crate) node: usize,
}

impl From<ProxyBody> for Body {
    fn from(body: ProxyBody) -> Body {
        match body {
            body @ (ProxyBody::Backend(..) | ProxyBody::Watched(..)) => Body::new(body),
            ProxyBody::Gateway(body) => body,
        }
    }
}

/// Whether a response body's error is the node's doing: its connection ended before the body
/// did (closed early, or reset). Not so when hyper ends the exchange over the request body
/// (the client's, over its limit or broken), whose error it reports on the response too.
fn node_failed(err: &hyper::Error) -> bool {
    err.is_incomplete_message() || error::chain(err).any(|e| e.is::<std::io::Error>())
}

impl http_body::Body for ProxyBody {
    type Data = Bytes;
    type Error = axum_core::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum_core::Error>>> {
        match self.get_mut() {
            ProxyBody::Backend(body, from) => Pin::new(body)
                .poll_frame(cx)
                .map_err(|err| broke_off(err, from)),
            ProxyBody::Watched(body, from, stall) => match Pin::new(body).poll_frame(cx) {
                Poll::Pending => {
                    if !stall.expired(cx) {
                        return Poll::Pending;
                    }
                    let (id, address) = from.node();
                    let limit = stall.limit();
                    tracing::warn!(node = %id, %address, ?limit, "backend sent nothing of a response body for the idle limit; the client got it cut short");
                    let err = std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("the node sent nothing of the response body for {limit:?}"),
                    );
                    Poll::Ready(Some(Err(axum_core::Error::new(err))))
                }
                ready => {
                    stall.heard();
                    ready.map_err(|err| broke_off(err, from))
                }
            },
            ProxyBody::Gateway(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Backend(body, _) | ProxyBody::Watched(body, ..) => body.is_end_stream(),
            ProxyBody::Gateway(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            ProxyBody::Backend(body, _) | ProxyBody::Watched(body, ..) => body.size_hint(),
            ProxyBody::Gateway(body) => body.size_hint(),
        }
    }
}

impl Source {
    /// The node's id and address, for the log.
    fn node(&self) -> (&str, &str) {
        let node = self.nodes.get(self.node);
        (
            node.map_or("?", |n| n.id.as_str()),
            node.map_or("?", |n| n.address.as_str()),
        )
    }
}

/// A node's response body failed: the client's response ends short (HTTP/1: its connection is
/// closed; HTTP/2: the stream is reset), worth a line when the node did it, as a 502 gets.
fn broke_off(err: hyper::Error, from: &Source) -> axum_core::Error {
    let (id, address) = from.node();
    if node_failed(&err) {
        tracing::warn!(node = %id, %address, error = %err, "backend response body broke off; the client got it cut short");
    } else {
        tracing::debug!(node = %id, %address, error = %err, "response body ended with the exchange");
    }
    axum_core::Error::new(err)
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
