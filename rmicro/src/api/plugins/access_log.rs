//! `--access-log`: one log line per request, written when its response has been sent (or the
//! exchange ended without one), as a web server's access log.
//!
//! The line is a `tracing` event at `info` with target `rmicro::access`, so `RUST_LOG` filters it
//! like any other (`RUST_LOG=info,rmicro::access=off` silences it) and a JSON subscriber gets
//! its fields: `client` (address), `method`, `path`, `version`, `status` (`-` when no response was
//! sent), `bytes` (of the response body sent), `ms` (from the request's arrival to the end of its
//! response) and `complete` (`false` when the client went away or the response body broke
//! before its end). The query string and the headers are left out: they carry tokens and other
//! secrets often enough that an access log should not keep them.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum_core::body::Body;
use bytes::Bytes;
use http::{Method, Request, StatusCode, Version};
use http_body::{Body as _, Frame, SizeHint};
use tower::ServiceExt;

use crate::api::plugin::{HttpService, Plugin, PluginContext, PluginError, PluginLayer};

/// The `tracing` target of access log lines.
pub const TARGET: &str = "rmicro::access";

/// The access log.
#[derive(Debug, Default)]
pub struct AccessLog {
    on: bool,
}

impl Plugin for AccessLog {
    fn name(&self) -> &'static str {
        "access-log"
    }

    fn flags(&self) -> Vec<clap::Arg> {
        vec![clap::Arg::new("access-log")
            .long("access-log")
            .env("MICRO_API_ACCESS_LOG")
            .value_name("BOOL")
            .value_parser(clap::builder::BoolishValueParser::new())
            .num_args(0..=1)
            .default_missing_value("true")
            .help(
                "Log each request when its response is done (target rmicro::access: client, \
                 method, path without query, status, bytes, ms)",
            )]
    }

    fn init(&mut self, flags: &clap::ArgMatches, _ctx: &PluginContext) -> Result<(), PluginError> {
        self.on = flags
            .get_one::<bool>("access-log")
            .copied()
            .unwrap_or(false);
        Ok(())
    }

    fn layer(&self) -> Option<PluginLayer> {
        if !self.on {
            return None;
        }
        Some(PluginLayer::new(tower::layer::layer_fn(
            |inner: HttpService| {
                HttpService::new(tower::service_fn(move |req: Request<Body>| {
                    let inner = inner.clone();
                    let mut pending = Pending(Some(Entry::new(&req)));
                    async move {
                        let resp = inner.oneshot(req).await?;
                        let Some(entry) = pending.0.take() else {
                            return Ok(resp);
                        };
                        let status = resp.status();
                        // HTTP sends no body for these: the server drops it unread.
                        let bodiless = entry.method == Method::HEAD
                            || status.is_informational()
                            || status == StatusCode::NO_CONTENT
                            || status == StatusCode::NOT_MODIFIED;
                        Ok(resp.map(|body| {
                            Body::new(Logged {
                                inner: body,
                                entry: Some(entry),
                                status,
                                bytes: 0,
                                ended: false,
                                bodiless,
                            })
                        }))
                    }
                }))
            },
        )))
    }
}

/// Logs `req`, answered `resp` by the gateway itself before any plugin saw it (a malformed
/// host, a dot segment): such probing is what an operator looks for in the log.
pub(crate) fn log_refused(req: &Request<Body>, resp: &http::Response<Body>) {
    use http_body::Body as _;
    let bytes = resp.body().size_hint().exact().unwrap_or(0);
    Entry::new(req).log(Some(resp.status()), bytes, true);
}

/// What the line says of the request.
struct Entry {
    start: Instant,
    client: Option<SocketAddr>,
    method: Method,
    path: String,
    version: Version,
}

impl Entry {
    fn new(req: &Request<Body>) -> Entry {
        Entry {
            start: Instant::now(),
            client: req.extensions().get::<SocketAddr>().copied(),
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
            version: req.version(),
        }
    }

    fn log(self, status: Option<StatusCode>, bytes: u64, complete: bool) {
        let ms = self.start.elapsed().as_secs_f64() * 1000.0;
        let client = match self.client {
            Some(addr) => addr.to_string(),
            None => "-".to_owned(),
        };
        let status = match status {
            Some(status) => status.as_str().to_owned(),
            None => "-".to_owned(),
        };
        tracing::info!(
            target: TARGET,
            client = %client,
            method = %self.method,
            path = %self.path,
            version = ?self.version,
            status = %status,
            bytes,
            ms = format_args!("{ms:.3}"),
            complete,
            "request"
        );
    }
}

/// Logs a request whose response never came (the client went away first, or the service
/// future was dropped at shutdown).
struct Pending(Option<Entry>);

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(entry) = self.0.take() {
            entry.log(None, 0, false);
        }
    }
}

/// A response body that counts what is sent of it and logs the request when it is dropped:
/// at its end, or when the connection closes before that.
struct Logged {
    inner: Body,
    entry: Option<Entry>,
    status: StatusCode,
    bytes: u64,
    ended: bool,
    /// An answer that has no body on the wire (to HEAD, 1xx, 204, 304): done with its head.
    bodiless: bool,
}

impl http_body::Body for Logged {
    type Data = Bytes;
    type Error = axum_core::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) => self.ended = true,
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            // A body that was empty from the start, or that HTTP does not send, may never be
            // polled.
            let complete = self.ended || self.bodiless || self.inner.is_end_stream();
            entry.log(Some(self.status), self.bytes, complete);
        }
    }
}
