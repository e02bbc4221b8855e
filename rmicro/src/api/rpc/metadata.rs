//! gRPC metadata and HTTP headers, both ways, in grpc-gateway's convention (which its clients
//! already read and write):
//!
//! - A request's `X-*` and `Authorization` headers become the call's metadata as they are, and a
//!   `Grpc-Metadata-<key>` header becomes metadata `<key>`, for other keys only: a client cannot
//!   add a second `x-user` beside the one an auth plugin set, nor forwarding claims beside the
//!   gateway's `X-Forwarded-For` (`Grpc-Metadata-X-User`, `Grpc-Metadata-Forwarded`, ... are
//!   dropped).
//! - The metadata a node answers with before its message (gRPC's response headers) comes back as
//!   `Grpc-Metadata-<key>` response headers, on errors too.
//! - The metadata it sends after its message (gRPC's trailers, and the metadata of a status it
//!   fails with) comes back as `Grpc-Trailer-<key>` HTTP trailers, to a client that said it takes
//!   trailers (`TE: trailers`, RFC 9110 §10.1.4); to others it is not sent, as a server should not
//!   send trailers a client did not ask for.
//!
//! Keys gRPC reserves (`grpc-*`, and the HTTP headers gRPC itself is framed with) are never
//! passed either way: a client cannot set the call's timeout or encoding through metadata, and a
//! node's framing headers are not the gateway's answer's.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use tonic::metadata::MetadataMap;

/// Prefix of the request headers that become metadata, and of the response headers that carry
/// a node's response metadata.
const METADATA_PREFIX: &str = "grpc-metadata-";

/// Prefix of the trailers that carry a node's trailing metadata.
const TRAILER_PREFIX: &str = "grpc-trailer-";

/// Whether gRPC keeps `key` (lowercase) for itself: its own `grpc-*` keys and the HTTP/2
/// headers a call is framed with.
fn reserved(key: &str) -> bool {
    key.starts_with("grpc-")
        || matches!(
            key,
            "content-type"
                | "content-length"
                | "content-encoding"
                | "te"
                | "trailer"
                | "transfer-encoding"
                | "connection"
                | "keep-alive"
                | "upgrade"
                | "host"
                | "user-agent"
                | "date"
        )
}

/// Whether a request header named `name` becomes metadata of the same name (and so is one a
/// plugin or the gateway's forwarding may have set).
fn passes_as_itself(name: &str) -> bool {
    name.starts_with("x-") || name == "authorization"
}

/// The call's metadata taken from the client's `headers` (see the module's documentation for
/// which), as the headers gRPC sends it in.
pub(super) fn from_request(headers: &HeaderMap) -> HeaderMap {
    let mut metadata = HeaderMap::new();
    // Each value of a header sent more than once (a gRPC metadata key may have several).
    for (name, value) in headers {
        let key = if passes_as_itself(name.as_str()) {
            name.clone()
        } else if let Some(key) = name.as_str().strip_prefix(METADATA_PREFIX) {
            // Keys that pass as themselves (and so are set by the gateway's plugins and its
            // forwarding) only as themselves.
            if key.is_empty() || reserved(key) || passes_as_itself(key) || key == "forwarded" {
                continue;
            }
            match HeaderName::try_from(key) {
                Ok(key) => key,
                Err(_) => continue,
            }
        } else {
            continue;
        };
        // A binary key (`-bin`) takes its value in base64, as it travels in gRPC: one that is not
        // (by the decoding servers apply: rmicro's and grpc-go's refuse the call) is left out
        // rather than sent for the node to refuse.
        if key.as_str().ends_with("-bin") && !decodes_as_binary(value) {
            continue;
        }
        metadata.append(key, value.clone());
    }
    metadata
}

/// Whether `value` decodes as binary metadata's base64 (padded or not), as tonic decodes it.
fn decodes_as_binary(value: &HeaderValue) -> bool {
    const KEY: &str = "x-bin";
    let mut one = HeaderMap::new();
    one.insert(HeaderName::from_static(KEY), value.clone());
    MetadataMap::from_headers(one)
        .get_bin(KEY)
        .is_some_and(|v| v.to_bytes().is_ok())
}

/// `metadata`'s keys that are not reserved, each value as a header named `prefix` + key (binary
/// values in base64, as they travel in gRPC).
fn prefixed<'m>(
    metadata: &'m MetadataMap,
    prefix: &'static str,
) -> impl Iterator<Item = (HeaderName, HeaderValue)> + 'm {
    metadata
        .as_ref()
        .iter()
        .filter(|(name, _)| !reserved(name.as_str()))
        .filter_map(move |(name, value)| {
            let prefixed = HeaderName::try_from(format!("{prefix}{}", name.as_str())).ok()?;
            Some((prefixed, value.clone()))
        })
}

/// Adds a node's response-header `metadata` to an answer's `headers`, as `Grpc-Metadata-<key>`.
pub(super) fn to_response(metadata: &MetadataMap, headers: &mut HeaderMap) {
    for (name, value) in prefixed(metadata, METADATA_PREFIX) {
        headers.append(name, value);
    }
}

/// A node's trailing `metadata` as the trailers of an answer, for a client whose request
/// `headers` say it takes trailers; `None` when it does not or there is nothing to send.
pub(super) fn trailers(metadata: &MetadataMap, request: &HeaderMap) -> Option<HeaderMap> {
    let takes_trailers = crate::api::proxy::codings(request, &header::TE)
        .any(|coding| coding.eq_ignore_ascii_case(b"trailers"));
    if !takes_trailers {
        return None;
    }
    let mut trailers = HeaderMap::new();
    for (name, value) in prefixed(metadata, TRAILER_PREFIX) {
        trailers.append(name, value);
    }
    (!trailers.is_empty()).then_some(trailers)
}

/// The `Trailer` header announcing `trailers` (HTTP/1.1 sends only the trailers announced).
fn announce(trailers: &HeaderMap) -> Option<HeaderValue> {
    let names: Vec<&str> = trailers.keys().map(HeaderName::as_str).collect();
    HeaderValue::from_str(&names.join(", ")).ok()
}

/// Makes `trailers` follow `resp`'s body, announced in its `Trailer` header.
pub(super) fn attach(resp: &mut http::Response<axum_core::body::Body>, trailers: HeaderMap) {
    if let Some(announced) = announce(&trailers) {
        resp.headers_mut().insert(header::TRAILER, announced);
    }
    // Framed by chunks now, whatever length the body had.
    resp.headers_mut().remove(header::CONTENT_LENGTH);
    let body = std::mem::take(resp.body_mut());
    *resp.body_mut() = axum_core::body::Body::new(WithTrailers {
        body,
        trailers: Some(trailers),
    });
}

pin_project_lite::pin_project! {
    /// A body, then trailers.
    struct WithTrailers<B> {
        #[pin]
        body: B,
        trailers: Option<HeaderMap>,
    }
}

impl<B: Body<Data = Bytes>> Body for WithTrailers<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        match this.body.poll_frame(cx) {
            Poll::Ready(None) => Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t)))),
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.trailers.is_none() && self.body.is_end_stream()
    }

    // The length is not told: HTTP/1.1 carries trailers only in a chunked body.
    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::try_from(*k).unwrap(),
                    HeaderValue::try_from(*v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn request_headers_become_metadata_without_reserved_keys() {
        let got = from_request(&headers(&[
            ("x-user", "ann"),
            ("authorization", "Bearer t"),
            ("grpc-metadata-tenant", "blue"),
            ("grpc-metadata-tenant", "green"),
            ("grpc-metadata-trace-bin", "AQI="),
            ("grpc-metadata-broken-bin", "***"),
            ("grpc-metadata-short-bin", "A"),
            ("grpc-metadata-unpadded-bin", "AQI"),
            ("grpc-metadata-grpc-timeout", "1n"),
            ("grpc-metadata-content-type", "text/plain"),
            ("grpc-metadata-x-user", "forged"),
            ("grpc-metadata-authorization", "Bearer forged"),
            ("grpc-metadata-forwarded", "for=192.0.2.1"),
            ("grpc-metadata-", "x"),
            ("accept", "application/json"),
        ]));
        let mut pairs: Vec<(String, String)> = got
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        pairs.sort();
        assert_eq!(
            pairs,
            [
                ("authorization", "Bearer t"),
                ("tenant", "blue"),
                ("tenant", "green"),
                ("trace-bin", "AQI="),
                ("unpadded-bin", "AQI"),
                ("x-user", "ann"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }

    #[test]
    fn response_metadata_is_prefixed_and_reserved_keys_left_out() {
        let mut md = MetadataMap::from_headers(headers(&[
            ("content-type", "application/grpc"),
            ("date", "Mon, 30 Nov 2026 10:00:00 GMT"),
            ("grpc-accept-encoding", "gzip"),
            ("x-served-by", "one"),
            ("x-served-by", "two"),
        ]));
        md.insert_bin(
            "token-bin",
            tonic::metadata::MetadataValue::from_bytes(b"\x01\x02"),
        );
        let mut out = HeaderMap::new();
        to_response(&md, &mut out);
        let served: Vec<_> = out.get_all("grpc-metadata-x-served-by").iter().collect();
        assert_eq!(served, ["one", "two"]);
        assert_eq!(out["grpc-metadata-token-bin"], "AQI");
        assert_eq!(out.len(), 3, "{out:?}");
    }

    #[test]
    fn trailers_only_for_a_client_that_takes_them() {
        let md = || MetadataMap::from_headers(headers(&[("grpc-status", "0"), ("x-cost", "7")]));
        assert_eq!(trailers(&md(), &headers(&[])), None);
        assert_eq!(trailers(&md(), &headers(&[("te", "gzip")])), None);
        let sent = trailers(&md(), &headers(&[("te", "gzip, Trailers")])).unwrap();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent["grpc-trailer-x-cost"], "7");
        assert_eq!(announce(&sent).unwrap(), "grpc-trailer-x-cost");
        // Only reserved keys: nothing to send.
        let reserved_only = MetadataMap::from_headers(headers(&[("grpc-status", "0")]));
        assert_eq!(
            trailers(&reserved_only, &headers(&[("te", "trailers")])),
            None
        );
    }
}
