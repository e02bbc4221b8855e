//! The context of the call being served: its deadline and metadata, carried onto the calls a
//! handler makes while serving it (go-micro's `context.Context` propagation).
//!
//! The server runs every handler inside [`scope`]; [`Client`](crate::Client) reads [`current`]
//! and, for each outgoing call, never waits past the incoming deadline and copies the incoming
//! metadata (entries the outgoing request does not set itself). Work a handler spawns onto other
//! tasks leaves the scope; capture [`current`] and run it in [`scope`] there to keep propagating.

use std::future::Future;
use std::time::{Duration, Instant};

use tonic::metadata::MetadataMap;

/// The deadline and metadata of an incoming call.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// When the caller stops waiting (from its `grpc-timeout`).
    pub deadline: Option<Instant>,
    /// The caller's custom metadata (transport headers removed).
    pub metadata: MetadataMap,
}

tokio::task_local! {
    static CURRENT: CallContext;
}

/// Headers that belong to one hop's transport, never carried to the next call.
const HOP_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "te",
    "user-agent",
    "host",
    "grpc-timeout",
    "grpc-encoding",
    "grpc-accept-encoding",
    "grpc-status",
    "grpc-message",
    "accept-encoding",
    "connection",
];

impl CallContext {
    /// The context of an incoming request: its deadline and propagatable metadata.
    pub fn from_headers(headers: &http::HeaderMap) -> CallContext {
        let deadline = headers
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .map(|t| Instant::now() + t);
        // Copy only what propagates: most calls carry no custom metadata, and then this
        // allocates nothing.
        let mut metadata = http::HeaderMap::new();
        for (name, value) in headers {
            if !HOP_HEADERS.contains(&name.as_str()) {
                metadata.append(name.clone(), value.clone());
            }
        }
        CallContext {
            deadline,
            metadata: MetadataMap::from_headers(metadata),
        }
    }

    /// Time left until the deadline (zero once it passed), if there is one.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }
}

/// The context of the call this task is serving, if any.
pub fn current() -> Option<CallContext> {
    CURRENT.try_with(Clone::clone).ok()
}

/// `f` of the context of the call this task is serving, if any, without copying it.
pub(crate) fn with_current<R>(f: impl FnOnce(&CallContext) -> R) -> Option<R> {
    CURRENT.try_with(f).ok()
}

/// Runs `fut` as serving the call described by `ctx`.
pub async fn scope<F: Future>(ctx: CallContext, fut: F) -> F::Output {
    CURRENT.scope(ctx, fut).await
}

/// Runs `f` as serving the call described by `ctx` (for work polled outside a [`scope`], such
/// as a handler's response stream, which the server polls after the handler returned).
pub(crate) fn sync_scope<R>(ctx: CallContext, f: impl FnOnce() -> R) -> R {
    CURRENT.sync_scope(ctx, f)
}

/// Parses a `grpc-timeout` value: digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("5"), None);
        assert_eq!(parse_grpc_timeout("x5S"), None);
    }

    #[test]
    fn hop_headers_are_dropped() {
        let mut h = http::HeaderMap::new();
        h.insert("grpc-timeout", "100m".parse().unwrap());
        h.insert("content-type", "application/grpc".parse().unwrap());
        h.insert("x-trace-id", "abc".parse().unwrap());
        h.append("x-tag", "one".parse().unwrap());
        h.append("x-tag", "two".parse().unwrap());
        let ctx = CallContext::from_headers(&h);
        assert!(ctx.remaining().unwrap() <= Duration::from_millis(100));
        assert_eq!(ctx.metadata.len(), 3);
        assert_eq!(ctx.metadata.get("x-trace-id").unwrap(), "abc");
        let tags: Vec<_> = ctx.metadata.get_all("x-tag").iter().collect();
        assert_eq!(
            tags,
            ["one", "two"],
            "every value of a repeated key propagates"
        );
    }
}
