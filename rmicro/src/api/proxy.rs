//! The `http` handler: a reverse proxy from a request path to a node of the service it names.
//!
//! - `/user/call` goes, path and query unchanged, to a node of `go.micro.api.user` picked by the
//!   selector; bodies stream both ways; one pooled keep-alive connection set per backend.
//! - Unknown service → 404, no nodes (a service seen before, or listed without nodes) → 503, backend unreachable or reset → 502, no answer within
//!   the backend timeout → 504, body over the limit → 413; each with a go-micro JSON body.
//! - A node that could not be reached is avoided for a few seconds, so the next requests go to
//!   the others; a request without a body whose connection failed is retried once on another
//!   node at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum_core::body::Body;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rmicro_runtime::registry::Node;

use super::{error, resolve, HandlerConfig};

/// How long an unreachable node is avoided.
const QUARANTINE: Duration = Duration::from_secs(5);

/// The reverse proxy, as a tower service.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    config: HandlerConfig,
    client: Client<HttpConnector, Body>,
    failed: Mutex<HashMap<String, Instant>>,
    /// Services that had nodes once: an empty lookup for them means "no nodes" (503), for any
    /// other service "not found" (404).
    seen: Mutex<std::collections::HashSet<String>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("namespace", &self.inner.config.namespace)
            .finish_non_exhaustive()
    }
}

/// Hop-by-hop headers, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

impl Proxy {
    /// A proxy with `config`.
    pub fn new(config: HandlerConfig) -> Proxy {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Proxy {
            inner: Arc::new(Inner {
                config,
                client,
                failed: Mutex::new(HashMap::new()),
                seen: Mutex::new(std::collections::HashSet::new()),
            }),
        }
    }

    fn pick(&self, service: &str, nodes: &[Node], avoid: &[String]) -> String {
        let now = Instant::now();
        let failed = {
            let mut failed = self.inner.failed.lock().unwrap_or_else(|p| p.into_inner());
            failed.retain(|_, until| *until > now);
            failed.keys().cloned().collect::<Vec<_>>()
        };
        let healthy: Vec<Node> = nodes
            .iter()
            .filter(|n| !failed.contains(&n.address) && !avoid.contains(&n.address))
            .cloned()
            .collect();
        let candidates = if healthy.is_empty() {
            nodes.to_vec()
        } else {
            healthy
        };
        let index = self.inner.config.selector.select(service, &candidates);
        candidates[index.min(candidates.len() - 1)].address.clone()
    }

    fn mark_failed(&self, address: &str) {
        self.inner
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(address.to_string(), Instant::now() + QUARANTINE);
    }

    pub(crate) async fn handle(self, req: Request<Body>) -> Response<Body> {
        let config = &self.inner.config;
        let path = req.uri().path().to_string();
        let Some(service) = resolve::service_for_path(&config.namespace, &path) else {
            return error::response(
                StatusCode::NOT_FOUND,
                format!("no service for path `{path}`"),
            );
        };
        let services = match config.registry.get_service(&service).await {
            Ok(s) => s,
            Err(err) => {
                return error::response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot look up service `{service}`: {err}"),
                )
            }
        };
        let nodes: Vec<Node> = services
            .iter()
            .flat_map(|s| s.nodes.iter().cloned())
            .collect();
        {
            let mut seen = self.inner.seen.lock().unwrap_or_else(|p| p.into_inner());
            if !nodes.is_empty() {
                seen.insert(service.clone());
            } else if services.is_empty() && !seen.contains(&service) {
                return error::response(
                    StatusCode::NOT_FOUND,
                    format!("service `{service}` not found"),
                );
            } else {
                return error::response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("service `{service}` has no nodes"),
                );
            }
        }
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > config.body_limit as u64) {
            return too_large(config.body_limit);
        }
        let bodiless =
            declared.unwrap_or(0) == 0 && !req.headers().contains_key(header::TRANSFER_ENCODING);

        let peer = req.extensions().get::<SocketAddr>().copied();
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let host = parts.headers.get(header::HOST).cloned();
        parts.headers.remove(header::HOST);
        if let Some(peer) = peer {
            let forwarded = match parts
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
            {
                Some(prior) => format!("{prior}, {}", peer.ip()),
                None => peer.ip().to_string(),
            };
            if let Ok(v) = HeaderValue::from_str(&forwarded) {
                parts.headers.insert("x-forwarded-for", v);
            }
        }
        if let Some(host) = host {
            parts.headers.insert("x-forwarded-host", host);
        }
        parts
            .headers
            .insert("x-forwarded-proto", HeaderValue::from_static("http"));
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());

        let mut body = Some(Body::new(http_body_util::Limited::new(
            body,
            config.body_limit,
        )));
        let mut tried = Vec::new();
        loop {
            let address = self.pick(&service, &nodes, &tried);
            let uri: Uri = match format!("http://{address}{path_and_query}").parse() {
                Ok(uri) => uri,
                Err(err) => {
                    return error::response(
                        StatusCode::BAD_GATEWAY,
                        format!("node address `{address}` of `{service}` is not usable: {err}"),
                    )
                }
            };
            let mut backend_req =
                Request::from_parts(parts.clone(), body.take().unwrap_or_default());
            *backend_req.uri_mut() = uri;
            let sent = tokio::time::timeout(
                config.backend_timeout,
                self.inner.client.request(backend_req),
            )
            .await;
            match sent {
                Ok(Ok(resp)) => {
                    let (mut parts, body) = resp.into_parts();
                    strip_hop_by_hop(&mut parts.headers);
                    return Response::from_parts(parts, Body::new(body));
                }
                Ok(Err(err)) => {
                    if is_length_limit(&err) {
                        return too_large(config.body_limit);
                    }
                    let connect = err.is_connect();
                    self.mark_failed(&address);
                    tracing::warn!(%service, %address, error = %err, "backend failed");
                    if connect && bodiless && tried.is_empty() && nodes.len() > 1 {
                        tried.push(address);
                        continue;
                    }
                    return error::response(
                        StatusCode::BAD_GATEWAY,
                        format!("service `{service}` node {address} is unreachable or reset the connection"),
                    );
                }
                Err(_) => {
                    return error::response(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!(
                            "service `{service}` node {address} did not answer within {:?}",
                            config.backend_timeout
                        ),
                    )
                }
            }
        }
    }
}

fn too_large(limit: usize) -> Response<Body> {
    error::response(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body over the {limit}-byte limit"),
    )
}

/// Whether a client error comes from the request body exceeding its limit.
fn is_length_limit(err: &hyper_util::client::legacy::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}
