//! `--metrics-address 127.0.0.1:9464`: request metrics in Prometheus's text format, served at
//! `/metrics` on a listener of their own, so that they are not open to whoever reaches the
//! gateway (a load balancer's health check and the services' traffic stay on the gateway's
//! address; Prometheus scrapes the other).
//!
//! Every request that reaches the plugins is counted, whatever answers it (a service, the
//! gateway's own errors, a plugin such as token auth); a request whose host or path the gateway
//! refuses first (a 400 for a malformed `Host` or a `..` segment) is not:
//!
//! - `rmicro_api_requests_total{service, method, code}`: requests by the registry service they
//!   went to (empty when they reached none: an unknown path, a request a plugin answered, ...),
//!   method (`GET` ... `OPTIONS`, anything else `other`) and response status;
//! - `rmicro_api_request_duration_seconds{service}`: the time from a request's arrival to its
//!   response head (a response body streams after);
//! - `rmicro_api_requests_in_flight`: requests that have no response head yet.
//!
//! A service is named only once the registry knows it, so clients cannot create series by
//! asking for made-up paths.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum_core::body::Body;
use http::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry as MetricRegistry;
use tower::ServiceExt;

use crate::api::plugin::{HttpService, Plugin, PluginContext, PluginError, PluginLayer};

/// Where the metrics are served on their listener.
pub const PATH: &str = "/metrics";

/// Upper bounds of the duration histogram's buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Where a handler says which registry service a request went to: the metrics plugin puts one
/// in each request's extensions, the `http` and `rpc` handlers fill it once the registry knows
/// the service.
#[derive(Clone, Debug, Default)]
pub(crate) struct ServiceSlot(Arc<OnceLock<Arc<str>>>);

/// Notes `service` as the one the request with `extensions` went to, if a metrics plugin asks.
pub(crate) fn note_service(extensions: &http::Extensions, service: &str) {
    if let Some(slot) = extensions.get::<ServiceSlot>() {
        let _ = slot.0.set(Arc::from(service));
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    service: Arc<str>,
    method: &'static str,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: Arc<str>,
}

type Durations = Family<ServiceLabels, Histogram, fn() -> Histogram>;

/// The gateway's request metrics.
struct State {
    registry: MetricRegistry,
    requests: Family<RequestLabels, Counter>,
    durations: Durations,
    in_flight: Gauge,
    /// The `service` label of requests that reached none.
    no_service: Arc<str>,
}

impl State {
    fn new() -> State {
        let mut registry = MetricRegistry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let durations: Durations = Family::new_with_constructor(|| Histogram::new(BUCKETS));
        let in_flight = Gauge::default();
        registry.register(
            "rmicro_api_requests",
            "Requests through the gateway by registry service (empty: none), method and status",
            requests.clone(),
        );
        registry.register(
            "rmicro_api_request_duration_seconds",
            "Time from a request's arrival to its response head, by registry service",
            durations.clone(),
        );
        registry.register(
            "rmicro_api_requests_in_flight",
            "Requests without a response head yet",
            in_flight.clone(),
        );
        State {
            registry,
            requests,
            durations,
            in_flight,
            no_service: Arc::from(""),
        }
    }

    fn exposition(&self) -> Response<Body> {
        let mut text = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(error = %err, "metrics could not be written");
            let mut resp = Response::new(Body::empty());
            *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            return resp;
        }
        let mut resp = Response::new(Body::from(text));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ),
        );
        resp
    }
}

/// A label for `method` from a fixed set.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// A request on its way: on the in-flight gauge until dropped, and counted when dropped, with
/// the status of its response head, or with nginx's 499 when the client left first (its
/// connection closed, its stream reset) and the request's future was dropped unanswered.
struct Counted {
    state: Arc<State>,
    started: Instant,
    method: &'static str,
    slot: ServiceSlot,
    /// The response head's status, once there is one.
    code: Option<u16>,
}

/// The status counted for a request whose client left before its response head.
const CLIENT_LEFT: u16 = 499;

impl Drop for Counted {
    fn drop(&mut self) {
        let state = &self.state;
        state.in_flight.dec();
        let service = self
            .slot
            .0
            .get()
            .cloned()
            .unwrap_or_else(|| Arc::clone(&state.no_service));
        state
            .durations
            .get_or_create(&ServiceLabels {
                service: Arc::clone(&service),
            })
            .observe(self.started.elapsed().as_secs_f64());
        state
            .requests
            .get_or_create(&RequestLabels {
                service,
                method: self.method,
                code: self.code.unwrap_or(CLIENT_LEFT),
            })
            .inc();
    }
}

/// The metrics plugin.
#[derive(Default)]
pub struct RequestMetrics {
    address: Option<String>,
    state: Option<Arc<State>>,
}

impl std::fmt::Debug for RequestMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestMetrics")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Plugin for RequestMetrics {
    fn name(&self) -> &'static str {
        "metrics"
    }

    fn flags(&self) -> Vec<clap::Arg> {
        vec![clap::Arg::new("metrics-address")
            .long("metrics-address")
            .env("MICRO_API_METRICS_ADDRESS")
            .value_name("ADDR")
            .help(
                "Serve request metrics (Prometheus text format) at http://ADDR/metrics, a \
                 listener of their own (e.g. 127.0.0.1:9464)",
            )]
    }

    fn init(&mut self, flags: &clap::ArgMatches, _ctx: &PluginContext) -> Result<(), PluginError> {
        self.address = flags.get_one::<String>("metrics-address").cloned();
        let Some(address) = &self.address else {
            return Ok(());
        };
        let fail = |message: String| PluginError::init("metrics", message);
        // Bound now, so that an address in use stops the gateway before it serves.
        let listener = std::net::TcpListener::bind(address.as_str()).map_err(|err| {
            fail(format!(
                "cannot listen on --metrics-address {address}: {err}"
            ))
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|err| fail(format!("--metrics-address {address}: {err}")))?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            fail("the gateway must be built inside a tokio runtime to serve metrics".into())
        })?;
        let state = Arc::new(State::new());
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener)
                .map_err(|err| fail(format!("--metrics-address {address}: {err}")))?
        };
        if let Ok(bound) = listener.local_addr() {
            tracing::info!(address = %bound, path = PATH, "serving metrics");
        }
        runtime.spawn(serve(listener, Arc::clone(&state)));
        self.state = Some(state);
        Ok(())
    }

    fn layer(&self) -> Option<PluginLayer> {
        let state = self.state.clone()?;
        Some(PluginLayer::new(tower::layer::layer_fn(
            move |inner: HttpService| {
                let state = Arc::clone(&state);
                HttpService::new(tower::service_fn(move |mut req: Request<Body>| {
                    let inner = inner.clone();
                    let state = Arc::clone(&state);
                    async move {
                        let slot = ServiceSlot::default();
                        req.extensions_mut().insert(slot.clone());
                        state.in_flight.inc();
                        let mut counted = Counted {
                            method: method_label(req.method()),
                            state,
                            started: Instant::now(),
                            slot,
                            code: None,
                        };
                        let resp = inner.oneshot(req).await?;
                        counted.code = Some(resp.status().as_u16());
                        drop(counted);
                        Ok(resp)
                    }
                }))
            },
        )))
    }
}

/// Connections the metrics listener serves at once; more are closed as they come (a scraper
/// needs one or two).
const MAX_CONNECTIONS: usize = 64;

/// Time a scraper has to send a request's head, and to send the next one on a kept-alive
/// connection.
const HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Serves `GET /metrics` on `listener` for as long as the runtime runs.
async fn serve(listener: tokio::net::TcpListener, state: Arc<State>) {
    let open = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors, say: the gateway goes on; try again shortly.
                tracing::warn!(error = %err, "metrics listener could not accept a connection");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            tracing::warn!(
                "metrics listener: {MAX_CONNECTIONS} connections open already; closing a new one"
            );
            continue;
        };
        let (state, builder) = (Arc::clone(&state), builder.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let state = Arc::clone(&state);
                async move { Ok::<_, std::convert::Infallible>(answer(&req, &state)) }
            });
            // A scraper that sends nothing for `HEAD_TIMEOUT` is dropped (hyper's head timer).
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(permit);
        });
    }
}

fn answer(req: &Request<hyper::body::Incoming>, state: &State) -> Response<Body> {
    let plain = |status: StatusCode, text: &'static str| {
        let mut resp = Response::new(Body::from(text));
        *resp.status_mut() = status;
        resp
    };
    if req.uri().path() != PATH {
        return plain(StatusCode::NOT_FOUND, "metrics are at /metrics\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = plain(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics\n");
        resp.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    state.exposition()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_set_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(
            method_label(&Method::from_bytes(b"PROPFIND").unwrap()),
            "other"
        );
    }

    #[test]
    fn the_exposition_names_each_family_with_its_labels() {
        let state = State::new();
        state
            .requests
            .get_or_create(&RequestLabels {
                service: Arc::from("go.micro.api.user"),
                method: "GET",
                code: 200,
            })
            .inc();
        state
            .durations
            .get_or_create(&ServiceLabels {
                service: Arc::from("go.micro.api.user"),
            })
            .observe(0.003);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &state.registry).unwrap();
        assert!(
            text.contains(
                r#"rmicro_api_requests_total{service="go.micro.api.user",method="GET",code="200"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"rmicro_api_request_duration_seconds_bucket{le="0.005",service="go.micro.api.user"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("rmicro_api_requests_in_flight 0"), "{text}");
    }
}
