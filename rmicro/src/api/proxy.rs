//! The `http` handler: a reverse proxy from a request path to a node of the service it names.
//!
//! - `/user/call` goes, path and query unchanged, to a node of `go.micro.api.user` picked by the
//!   selector; bodies stream both ways; one pooled keep-alive connection set per backend.
//! - Unknown service → 404, no nodes (a service seen before, or listed without nodes) → 503,
//!   backend unreachable or reset → 502, no answer within the backend timeout (from when the
//!   request body has all been sent) → 504, body over the limit → 413, a body the client breaks
//!   → 400, a transfer coding other than `chunked` → 501; each with a go-micro JSON body.
//! - Nodes registered at an address no connection can be opened to (empty, no port, a path)
//!   are left out before one is picked; `http://host:port` is reached at `host:port`.
//! - A node that could not be reached or reset the connection is avoided for a few seconds, so
//!   the next requests go to the others; a request without a body whose connection failed is
//!   retried once on another node at once. Failures that say nothing of the node's health (the
//!   client's body, a response hyper cannot parse, a node refusing a body by closing early) do
//!   not make it avoided. A safe bodiless request on a kept-alive connection the node closed
//!   as it went out is sent once more on a new connection.
//! - Protocol upgrades (WebSocket and any other `Connection: upgrade` over HTTP/1.1) pass
//!   through: the `Upgrade` header goes to the node, and when it answers `101 Switching
//!   Protocols` with a protocol the client offered, the two connections are joined and bytes
//!   copied both ways until both sides have closed (or nothing moves for the idle timeout).
//!   `CONNECT` is refused (405).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum_core::body::Body;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use rmicro_runtime::registry::{Node, NodeCache, DEFAULT_CACHE_TTL};

use super::pool::{Pool, PoolError};
use super::resolve::ServiceName;
use super::tunnel::Tunnels;
use super::upload::{self, Sent, Upload};
use super::{address, error, HandlerConfig};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// How long a tunnel may carry nothing, unless the proxy is told otherwise.
const DEFAULT_TUNNEL_IDLE: Duration = Duration::from_secs(60);

/// How long an unreachable node is avoided.
const QUARANTINE: Duration = Duration::from_secs(5);

/// Nodes that could not be reached, each avoided for [`QUARANTINE`] (the `http` and `rpc`
/// handlers each keep one).
#[derive(Debug, Default)]
pub(crate) struct Quarantine {
    /// Unreachable nodes and until when they are avoided.
    failed: Mutex<HashMap<String, Instant>>,
    /// Whether `failed` may hold anything, so the common case skips its lock.
    any_failed: AtomicBool,
}

impl Quarantine {
    /// The address of the node to send to: `select`'s pick (an index into the slice it is given)
    /// among the nodes that are neither quarantined nor in `avoid` (among all of them when none
    /// is left). `nodes` must not be empty.
    pub(crate) fn pick<'n>(
        &self,
        nodes: &'n [Node],
        avoid: &[String],
        select: impl Fn(&[Node]) -> usize,
    ) -> &'n str {
        let select = |candidates: &[Node]| select(candidates).min(candidates.len() - 1);
        if avoid.is_empty() && !self.any_failed.load(Ordering::Relaxed) {
            return &nodes[select(nodes)].address;
        }
        let now = Instant::now();
        let healthy: Vec<Node> = {
            let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
            failed.retain(|_, until| *until > now);
            if failed.is_empty() {
                self.any_failed.store(false, Ordering::Relaxed);
            }
            nodes
                .iter()
                .filter(|n| !failed.contains_key(&n.address) && !avoid.contains(&n.address))
                .cloned()
                .collect()
        };
        if healthy.is_empty() {
            return &nodes[select(nodes)].address;
        }
        let address = &healthy[select(&healthy)].address;
        nodes
            .iter()
            .find(|n| n.address == *address)
            .map_or(&nodes[0].address, |n| &n.address)
    }

    /// Avoids the node at `address` for the next [`QUARANTINE`].
    pub(crate) fn mark(&self, address: &str) {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(address.to_string(), Instant::now() + QUARANTINE);
        self.any_failed.store(true, Ordering::Relaxed);
    }
}

/// Services that had nodes once, so that an empty lookup can tell its answer: "no nodes" (503)
/// for those, "not found" (404) for any other (the `http` and `rpc` handlers each keep one).
#[derive(Debug, Default)]
pub(crate) struct Seen(RwLock<HashSet<String, foldhash::fast::RandomState>>);

impl Seen {
    /// Records that `service` has nodes (read-locked when already known).
    pub(crate) fn saw(&self, service: &str) {
        let known = self
            .0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(service);
        if !known {
            self.0
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(service.to_string());
        }
    }

    /// The status and detail for a lookup of `service` that found no nodes.
    pub(crate) fn no_nodes(&self, service: &str) -> (StatusCode, String) {
        let seen = self
            .0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(service);
        if seen {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("service `{service}` has no nodes"),
            )
        } else {
            (
                StatusCode::NOT_FOUND,
                format!("service `{service}` not found"),
            )
        }
    }
}

/// The reverse proxy, as a tower service.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    config: HandlerConfig,
    /// Each service's nodes, read from the registry once and kept fresh by its watch.
    nodes: NodeCache,
    /// Keep-alive connections to the nodes.
    pool: Pool,
    /// Unreachable nodes, avoided for a while.
    quarantine: Quarantine,
    /// Services that had nodes once.
    seen: Seen,
    /// How long a tunnel (a connection that switched protocols) may carry nothing.
    tunnel_idle: Duration,
    /// Where tunnels register when the request does not say (a proxy used outside a gateway's
    /// `serve`): never closed by a shutdown.
    tunnels: Tunnels,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("namespace", &self.inner.config.namespace)
            .finish_non_exhaustive()
    }
}

/// Hop-by-hop headers, never forwarded (RFC 9110 §7.6.1; `Trailer` is not one: it declares
/// the trailer fields that follow the body, which pass through).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "transfer-encoding",
    "upgrade",
];

/// The tokens (header names, `upgrade`, `close`, ...) that `Connection` lists, trimmed.
fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// Sets `Upgrade: protocol` and `Connection: upgrade` on a message whose hop-by-hop headers
/// were stripped: the one switch a proxy passes on.
fn set_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::UPGRADE, protocol);
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
}

/// Forwarding headers a client could set to mislead the node, passed on only when the gateway
/// is told to trust them (it sits behind a load balancer that sets them).
const CLIENT_FORWARDED: [&str; 5] = [
    "forwarded",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-real-ip",
];

fn strip_client_forwarded(headers: &mut HeaderMap) {
    remove_all(headers, &CLIENT_FORWARDED);
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if has_any(headers, HOP_BY_HOP) {
        strip_present_hop_by_hop(headers);
    }
}

/// [`strip_hop_by_hop`] once `headers` is known to have some.
fn strip_present_hop_by_hop(headers: &mut HeaderMap) {
    // A client that takes trailers says so to the next hop too: the gateway passes them on.
    let trailers = headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    let listed: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Whether a request body comes in a transfer coding other than `chunked` (`gzip, chunked`,
/// ...): hyper undoes only the chunking, so the node would get coded bytes with nothing saying
/// so.
pub(crate) fn other_transfer_coding(headers: &HeaderMap) -> bool {
    codings(headers, &header::TRANSFER_ENCODING).any(|c| !c.eq_ignore_ascii_case(b"chunked"))
}

/// The codings a list header (`Transfer-Encoding`, `Content-Encoding`) names, over all its
/// lines, trimmed, empty items left out.
pub(crate) fn codings<'h>(
    headers: &'h HeaderMap,
    name: &header::HeaderName,
) -> impl Iterator<Item = &'h [u8]> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|coding| !coding.is_empty())
}

/// Whether `headers` has any of `names`. Most messages carry none of the headers the proxy
/// removes: one pass over the names they have instead of a lookup per listed name.
fn has_any(headers: &HeaderMap, names: &[&str]) -> bool {
    headers.keys().any(|name| names.contains(&name.as_str()))
}

/// Removes every header in `names` (looking each up only when one is there).
fn remove_all(headers: &mut HeaderMap, names: &[&str]) {
    if has_any(headers, names) {
        for name in names {
            headers.remove(*name);
        }
    }
}

impl Proxy {
    /// A proxy with `config`.
    pub fn new(config: HandlerConfig) -> Proxy {
        Proxy::with_tunnel_idle(config, DEFAULT_TUNNEL_IDLE)
    }

    /// A proxy whose tunnels (connections that switched protocols) close after `idle` without
    /// traffic (the gateway passes its `--idle-timeout`).
    pub fn with_tunnel_idle(config: HandlerConfig, idle: Duration) -> Proxy {
        let pool = Pool::new(Duration::from_secs(2));
        let nodes = NodeCache::new(std::sync::Arc::clone(&config.registry), DEFAULT_CACHE_TTL);
        Proxy {
            inner: Arc::new(Inner {
                config,
                nodes,
                pool,
                quarantine: Quarantine::default(),
                seen: Seen::default(),
                tunnel_idle: idle,
                tunnels: Tunnels::default(),
            }),
        }
    }

    /// The address of the node to send to (see [`Quarantine::pick`]).
    fn pick<'n>(&self, service: &str, nodes: &'n [Node], avoid: &[String]) -> &'n str {
        let selector = &self.inner.config.selector;
        self.inner.quarantine.pick(nodes, avoid, |candidates| {
            selector.select(service, candidates)
        })
    }

    fn mark_failed(&self, service: &str, address: &str) {
        self.inner.quarantine.mark(address);
        self.inner.nodes.invalidate(service);
    }

    /// Proxies a request that went through the plugins, whose host the gateway checked and
    /// settled before them: the client's address is the `SocketAddr` request extension the
    /// gateway sets, the tunnels of the gateway's `serve` the [`Tunnels`] one.
    pub(crate) async fn handle_boxed(self, req: Request<Body>) -> Response<Body> {
        let peer = req
            .extensions()
            .get::<SocketAddr>()
            .and_then(|a| Peer::new(*a));
        let tunnels = req.extensions().get::<Tunnels>().cloned();
        self.handle(req, peer.as_ref(), tunnels.as_ref(), Host::Settled)
            .await
            .map(Body::from)
    }

    /// Proxies `req` from `peer` (the gateway's connection with the client); a connection
    /// that switches protocols joins `tunnels` (the proxy's own set if `None`). `host` says
    /// whether the request's host is still to be checked and settled.
    pub(crate) async fn handle<B>(
        self,
        mut req: Request<B>,
        peer: Option<&Peer>,
        tunnels: Option<&Tunnels>,
        host: Host,
    ) -> Response<ProxyBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let config = &self.inner.config;
        if req.method() == http::Method::CONNECT {
            // hyper would make a 2xx answer to CONNECT a tunnel; services are reached by path.
            let mut resp = fail(
                StatusCode::METHOD_NOT_ALLOWED,
                "the gateway does not tunnel CONNECT requests".to_string(),
            );
            resp.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            );
            return resp;
        }
        if host == Host::Unchecked {
            if let Some(problem) = host_problem(&req) {
                return fail(StatusCode::BAD_REQUEST, problem.to_string());
            }
            host_from_target(&mut req);
        }
        let Some(name) = ServiceName::for_path(&config.namespace, req.uri().path()) else {
            return fail(
                StatusCode::NOT_FOUND,
                format!("no service for path `{}`", req.uri().path()),
            );
        };
        let service = name.as_str();
        let nodes = match self.inner.nodes.nodes(service).await {
            Ok(nodes) => nodes,
            Err(err) => {
                return fail(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot look up service `{service}`: {err}"),
                )
            }
        };
        if nodes.is_empty() {
            let (mut status, mut detail) = self.inner.seen.no_nodes(service);
            // Never seen with nodes here, yet the registry holds a record of it without nodes
            // (as a hand-written go-micro record can be): there, but unavailable. One more
            // lookup, on this path only.
            if status == StatusCode::NOT_FOUND
                && self
                    .inner
                    .config
                    .registry
                    .get_service(service)
                    .await
                    .is_ok_and(|records| !records.is_empty())
            {
                status = StatusCode::SERVICE_UNAVAILABLE;
                detail = format!("service `{service}` has no nodes");
            }
            return fail(status, detail);
        }
        self.inner.seen.saw(service);
        // Records no connection can be opened to (hand-written, another tool's) are left out.
        let nodes = match address::usable(service, nodes) {
            Ok(nodes) => nodes,
            Err(detail) => return fail(StatusCode::BAD_GATEWAY, detail),
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > config.body_limit as u64) {
            return too_large(config.body_limit);
        }
        // No body follows: HTTP/1.1 without content-length and transfer-encoding, or HTTP/2 with
        // the stream ended on its headers (hyper knows either way).
        let bodiless = http_body::Body::is_end_stream(req.body());
        if !bodiless && other_transfer_coding(req.headers()) {
            return fail(
                StatusCode::NOT_IMPLEMENTED,
                "the gateway passes request bodies on only with the `chunked` transfer coding; \
                 send the body without other transfer codings (a compressed body goes with \
                 `Content-Encoding`)"
                    .to_string(),
            );
        }
        // HTTP/1.1 asking to switch protocols: the client's side of the switch, taken now (it
        // lives in the request's extensions), joined to the node's if the node agrees.
        let upgrade = (req.version() == http::Version::HTTP_11)
            .then(|| wants_upgrade(req.headers()))
            .flatten()
            .map(|protocol| (protocol, hyper::upgrade::on(&mut req)));

        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        if !config.trust_forwarded {
            strip_client_forwarded(&mut parts.headers);
            if config.https {
                // The client came over HTTPS, which the node (called over HTTP) cannot see.
                parts
                    .headers
                    .insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
            }
        }
        if let Some((protocol, _)) = &upgrade {
            set_upgrade(&mut parts.headers, protocol.clone());
        }
        if let Some(peer) = peer {
            if let Some(v) = forwarded_for(&parts.headers, peer) {
                parts.headers.insert(X_FORWARDED_FOR, v);
            }
        }
        let path_and_query = std::mem::take(&mut parts.uri)
            .into_parts()
            .path_and_query
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        // A copy of the head only when a retry on another node is possible at all.
        let retryable = bodiless && nodes.len() > 1;

        // A request that announces no body sends none (and costs no body wrapper). One with a
        // body tells when it has all been sent (the backend timer starts then) and marks its
        // errors as the client's.
        let mut upload = None;
        let mut body = Some(if bodiless {
            Body::empty()
        } else {
            let (body, sent) = Upload::new(
                http_body_util::Limited::new(body, config.body_limit),
                self.inner.tunnel_idle,
            );
            upload = Some(sent);
            Body::new(body)
        });
        let mut tried = Vec::new();
        let mut head = Some(parts);
        loop {
            let address = self.pick(service, &nodes, &tried);
            // Where to connect: the address without an `http://` or a trailing `/`.
            let target = address::connect_to(address).unwrap_or(address);
            let parts = match (retryable && tried.is_empty(), head.as_ref()) {
                (true, Some(parts)) => parts.clone(),
                _ => match head.take() {
                    Some(parts) => parts,
                    None => {
                        return fail(
                            StatusCode::BAD_GATEWAY,
                            format!("service `{service}`: no node could be reached"),
                        )
                    }
                },
            };
            let mut backend_req = Request::from_parts(parts, body.take().unwrap_or_default());
            // Origin form (`/path?query`): the node is the connection's peer.
            *backend_req.uri_mut() = Uri::from(path_and_query.clone());
            if !backend_req.headers().contains_key(header::HOST) {
                // HTTP/1.1 needs one: a request that named no host (HTTP/1.0) names the node.
                if let Ok(host) = HeaderValue::from_str(target) {
                    backend_req.headers_mut().insert(header::HOST, host);
                }
            }
            let lease = self.inner.pool.lease(target);
            // A connection that sat idle in the pool may be closed by the node (its keep-alive
            // timeout) just as the request goes out: one that can be replayed (no body, a safe
            // method, as Go's transport decides) is then sent once more on a new connection.
            // (Boxed, as the body path below: the common request's future stays small.)
            let replay = (bodiless && lease.may_be_stale() && replayable(backend_req.method()))
                .then(|| Box::new(head_copy(&backend_req)));
            let pool = &self.inner.pool;
            // Built in place: the send future is large, and each move of it is a copy.
            let sent = match upload.as_mut() {
                None => {
                    tokio::time::timeout(
                        config.backend_timeout,
                        pool.send(lease, target, backend_req, replay),
                    )
                    .await
                }
                Some(upload) => {
                    let send = pool.send(lease, target, backend_req, replay);
                    Box::pin(answer_after_upload(send, upload, config.backend_timeout)).await
                }
            };
            match sent {
                Ok(Ok(resp)) => {
                    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                        return match upgrade {
                            Some((offered, client)) => tunnel(
                                resp,
                                client,
                                &offered,
                                self.inner.tunnel_idle,
                                tunnels.unwrap_or(&self.inner.tunnels),
                                service,
                                address,
                            ),
                            None => fail(
                                StatusCode::BAD_GATEWAY,
                                format!("service `{service}` node {address} switched protocols without being asked"),
                            ),
                        };
                    }
                    let (mut parts, body) = resp.into_parts();
                    // The gateway answers in its own HTTP version (RFC 9110 §6.2), not the
                    // node's: hyper would answer an HTTP/1.0 node's response as HTTP/1.0 and
                    // close the client's kept-alive connection after it.
                    parts.version = http::Version::HTTP_11;
                    // A 426 must say which protocols would do (RFC 9110 §15.5.22).
                    let required = (parts.status == StatusCode::UPGRADE_REQUIRED)
                        .then(|| parts.headers.get(header::UPGRADE).cloned())
                        .flatten();
                    if has_any(&parts.headers, HOP_BY_HOP) {
                        // Framed by both (RFC 9112 §6.3): hyper read the chunks, and the
                        // node's Content-Length, passed on, would frame the client's copy
                        // otherwise (a smuggled or cut-off response). Looked at only when
                        // hop-by-hop headers are there, as `Transfer-Encoding` is one.
                        if parts.headers.contains_key(header::TRANSFER_ENCODING)
                            && parts.headers.contains_key(header::CONTENT_LENGTH)
                        {
                            tracing::warn!(%service, %address, "backend framed a response by both Content-Length and Transfer-Encoding");
                            return fail(
                                StatusCode::BAD_GATEWAY,
                                format!("service `{service}` node {address} sent a response with both Content-Length and Transfer-Encoding (refused: its framing is ambiguous)"),
                            );
                        }
                        strip_present_hop_by_hop(&mut parts.headers);
                    }
                    if let Some(required) = required {
                        parts.headers.insert(header::UPGRADE, required);
                    }
                    return Response::from_parts(parts, ProxyBody::Backend(body));
                }
                Ok(Err(err)) => {
                    if is_length_limit(&err) {
                        return too_large(config.body_limit);
                    }
                    if let Some(client) = upload::client_body_error(&err) {
                        // The client broke its own body: its error, and the node is fine.
                        return fail(StatusCode::BAD_REQUEST, client.to_string());
                    }
                    // What went wrong, and whether the node looks down (then it is avoided).
                    let (detail, down) = match &err {
                        PoolError::Connect(_) => ("is unreachable", true),
                        PoolError::Exchange(e) if e.is_parse() => (
                            "sent a response the gateway cannot read (malformed, or a head over 100 headers or 400 KiB)",
                            false,
                        ),
                        // A node may refuse a body by answering early and closing.
                        _ if upload.as_mut().is_some_and(|u| !u.complete()) => (
                            "closed the connection before taking the whole request body",
                            false,
                        ),
                        PoolError::Exchange(_) => ("reset the connection", true),
                        PoolError::Stale(_) => (
                            "closed a kept-alive connection before answering (the request was not repeated: it is not safe to)",
                            false,
                        ),
                    };
                    tracing::warn!(%service, %address, error = %err, "backend failed");
                    if down {
                        self.mark_failed(service, address);
                    }
                    if matches!(err, PoolError::Connect(_)) && retryable && tried.is_empty() {
                        tried.push(address.to_string());
                        continue;
                    }
                    return fail(
                        StatusCode::BAD_GATEWAY,
                        format!("service `{service}` node {address} {detail}"),
                    );
                }
                Err(_) => {
                    return fail(
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

/// Whether a request's host has been checked ([`host_problem`]) and settled
/// ([`host_from_target`]) already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Host {
    /// Not yet: the proxy does it.
    Unchecked,
    /// Done before the plugins ran.
    Settled,
}

/// Makes the host a request's target names (HTTP/2's `:authority`, an absolute-form HTTP/1
/// target) its `Host`, whatever `Host` said (RFC 9112 §3.2.2): the node then sees the host the
/// client asked for, as behind go-micro's gateway (whose reverse proxy keeps `Host`) and most
/// proxies, and plugins see the same host as the node. A target with user information is left
/// alone ([`host_problem`] refuses it).
pub(crate) fn host_from_target<B>(req: &mut Request<B>) {
    let Some(authority) = req.uri().authority() else {
        return;
    };
    if authority.as_str().contains('@') {
        return;
    }
    if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
        req.headers_mut().insert(header::HOST, host);
    }
}

/// What is wrong with the host a request names, if anything (RFC 9112 §3.2): HTTP/1.1 needs
/// exactly one `Host` (two would let the node and the gateway's plugins disagree about which
/// applies), and the node is only ever told a plain `host[:port]`, never user information.
pub(crate) fn host_problem<B>(req: &Request<B>) -> Option<&'static str> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => {
            return Some("the request has more than one Host header; send exactly one")
        }
        (host, _) => host,
    };
    match host {
        None if req.version() == http::Version::HTTP_11 => {
            return Some("an HTTP/1.1 request needs a Host header naming the host it is for")
        }
        Some(host) if !plain_host(host.as_bytes()) => {
            return Some(
                "the Host header is not a host with an optional port (like `api.example:8080`)",
            )
        }
        _ => {}
    }
    if req
        .uri()
        .authority()
        .is_some_and(|a| a.as_str().contains('@'))
    {
        return Some(
            "the request target names user information (`user@host`); send the host alone",
        );
    }
    None
}

/// Whether `value` can be a URI authority without user information (`host` or `host:port`):
/// not empty, and only the characters a host name, an IP literal and a port are made of
/// (RFC 3986 §3.2.2). A byte check, as Go's server makes: this runs for every request.
fn plain_host(value: &[u8]) -> bool {
    !value.is_empty()
        && value
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]%".contains(&b))
}

/// The protocols a request asks to switch to: its `Upgrade` offers, when `Connection` lists
/// `upgrade` (RFC 9110 §7.8), all lines joined into one list in order, for the node.
///
/// `h2c` is left out: HTTP/2 by upgrade (RFC 7540 §3.2, dropped by RFC 9113) needs the
/// client's `HTTP2-Settings`, a header for this hop only that the gateway cannot pass on, and
/// the gateway would have to speak HTTP/2 to the client after the switch. A client offering it
/// gets HTTP/1.1 as it would from a server that ignores the offer; HTTP/2 clients reach the
/// gateway with prior knowledge instead.
fn wants_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    let lines = headers.get_all(header::UPGRADE);
    lines.iter().next()?;
    if !connection_tokens(headers).any(|token| token.eq_ignore_ascii_case("upgrade")) {
        return None;
    }
    let mut joined = Vec::new();
    let offers = lines
        .iter()
        .flat_map(|line| line.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|offer| !offer.is_empty() && !offer.eq_ignore_ascii_case(b"h2c"));
    for offer in offers {
        if !joined.is_empty() {
            joined.extend_from_slice(b", ");
        }
        joined.extend_from_slice(offer);
    }
    if joined.is_empty() {
        return None;
    }
    HeaderValue::from_bytes(&joined).ok()
}

/// Answers the client with the node's `101 Switching Protocols` and joins the two connections
/// once both sides have switched (see [`tunnel`](super::tunnel) for when it ends). A 101 that
/// names no protocol, or one the client did not offer, is the node's error: 502.
fn tunnel(
    mut resp: Response<Incoming>,
    client: hyper::upgrade::OnUpgrade,
    offered: &HeaderValue,
    idle: Duration,
    tunnels: &Tunnels,
    service: &str,
    address: &str,
) -> Response<ProxyBody> {
    let offers = |chosen: &str| {
        let chosen = chosen.trim();
        !chosen.is_empty()
            && offered
                .to_str()
                .unwrap_or_default()
                .split(',')
                .any(|protocol| protocol.trim().eq_ignore_ascii_case(chosen))
    };
    let chosen = resp.headers().get(header::UPGRADE);
    let Some(chosen) = chosen
        .filter(|c| offers(c.to_str().unwrap_or_default()))
        .cloned()
    else {
        return fail(
            StatusCode::BAD_GATEWAY,
            format!("service `{service}` node {address} switched to a protocol the client did not ask for"),
        );
    };
    let node = hyper::upgrade::on(&mut resp);
    let (mut parts, _) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    set_upgrade(&mut parts.headers, chosen);
    tokio::spawn(super::tunnel::run(
        client,
        node,
        idle,
        tunnels.register(),
        service.to_string(),
        address.to_string(),
    ));
    Response::from_parts(parts, ProxyBody::Gateway(Body::empty()))
}

/// The client of a proxied request, as its connection knows it.
#[derive(Clone, Debug)]
pub(crate) struct Peer {
    /// The client's IP address as an `X-Forwarded-For` entry, written once per connection
    /// (clones share its bytes).
    ip: HeaderValue,
}

impl Peer {
    pub(crate) fn new(addr: SocketAddr) -> Option<Peer> {
        let mut buf = [0u8; 48];
        let ip = write_ip(addr.ip(), &mut buf)?;
        let ip = HeaderValue::from_maybe_shared(Bytes::copy_from_slice(ip)).ok()?;
        Some(Peer { ip })
    }
}

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
            ProxyBody::Backend(body) => {
                Pin::new(body).poll_frame(cx).map_err(axum_core::Error::new)
            }
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
fn fail(status: StatusCode, detail: String) -> Response<ProxyBody> {
    error::response(status, detail).map(ProxyBody::Gateway)
}

/// `X-Forwarded-For` with `peer` appended to what the client sent, all its lines joined into
/// one (no allocation when the client sent none: this runs for every request).
fn forwarded_for(headers: &HeaderMap, peer: &Peer) -> Option<HeaderValue> {
    let mut prior = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .map(HeaderValue::as_bytes)
        .filter(|p| !p.trim_ascii().is_empty());
    let Some(first) = prior.next() else {
        return Some(peer.ip.clone());
    };
    let ip = peer.ip.as_bytes();
    let mut joined = Vec::with_capacity(first.len() + 2 + ip.len());
    joined.extend_from_slice(first);
    for more in prior {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(more);
    }
    joined.extend_from_slice(b", ");
    joined.extend_from_slice(ip);
    HeaderValue::from_maybe_shared(bytes::Bytes::from(joined)).ok()
}

/// Writes `ip` as text into `buf`: IPv4 digit by digit (the formatting machinery costs more
/// than the rest of this header), IPv6 as `Display` does.
fn write_ip(ip: std::net::IpAddr, buf: &mut [u8; 48]) -> Option<&[u8]> {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[len] = b'.';
                    len += 1;
                }
                if octet >= 100 {
                    buf[len] = b'0' + octet / 100;
                    len += 1;
                }
                if octet >= 10 {
                    buf[len] = b'0' + octet / 10 % 10;
                    len += 1;
                }
                buf[len] = b'0' + octet % 10;
                len += 1;
            }
            Some(&buf[..len])
        }
        std::net::IpAddr::V6(_) => {
            use std::io::Write as _;
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            write!(cursor, "{ip}").ok()?;
            let len = cursor.position() as usize;
            Some(&buf[..len])
        }
    }
}

/// Whether a request without a body may be sent twice: its method is safe (RFC 9110 §9.2.1),
/// the rule Go's transport uses to replay a request on a connection that turned out closed.
fn replayable(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS | http::Method::TRACE
    )
}

/// A bodiless request's head, to send it again.
fn head_copy(req: &Request<Body>) -> Request<Body> {
    let mut again = Request::new(Body::empty());
    *again.method_mut() = req.method().clone();
    *again.uri_mut() = req.uri().clone();
    *again.version_mut() = req.version();
    *again.headers_mut() = req.headers().clone();
    again
}

/// The node's answer to a request with a body. The backend timeout is the node's time to
/// answer: it starts once the body has all been sent (or has failed), not while a slow client
/// uploads, which the connection's idle timeout bounds. An answer that comes before the body
/// is all sent is taken as it is.
async fn answer_after_upload<F: std::future::Future>(
    send: F,
    upload: &mut Sent,
    limit: Duration,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    let mut send = std::pin::pin!(send);
    tokio::select! {
        biased;
        answer = &mut send => Ok(answer),
        () = upload.wait() => tokio::time::timeout(limit, send).await,
    }
}

fn too_large(limit: usize) -> Response<ProxyBody> {
    fail(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body over the {limit}-byte limit"),
    )
}

/// Whether a backend error comes from the request body exceeding its limit.
fn is_length_limit(err: &PoolError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_offers_on_several_lines_are_one_list() {
        let mut headers = HeaderMap::new();
        headers.append(header::UPGRADE, HeaderValue::from_static("echo/2"));
        assert_eq!(wants_upgrade(&headers), None, "no `Connection: upgrade`");
        headers.append(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        headers.append(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        assert_eq!(wants_upgrade(&headers).unwrap(), "echo/2");
        headers.append(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert_eq!(wants_upgrade(&headers).unwrap(), "echo/2, websocket");
    }

    #[test]
    fn an_h2c_offer_is_left_out() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::CONNECTION,
            HeaderValue::from_static("Upgrade, HTTP2-Settings"),
        );
        headers.append(header::UPGRADE, HeaderValue::from_static("h2c"));
        assert_eq!(wants_upgrade(&headers), None, "nothing else offered");
        headers.insert(
            header::UPGRADE,
            HeaderValue::from_static(" H2C ,websocket,, echo/2"),
        );
        assert_eq!(wants_upgrade(&headers).unwrap(), "websocket, echo/2");
    }

    #[test]
    fn plain_hosts_only() {
        for ok in [
            "api.example",
            "api.example:8080",
            "127.0.0.1:80",
            "[::1]:8080",
            "a-b_c",
        ] {
            assert!(plain_host(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            "a.example/evil",
            "a, b",
            "user:pass@api.example",
            "@api.example",
            "a example",
            "api.example?x",
            "api.example#x",
        ] {
            assert!(!plain_host(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn forwarded_for_appends_the_peer() {
        let peer = |addr: &str| Peer::new(addr.parse().unwrap()).unwrap();
        let sent = |lines: &[&'static str]| {
            let mut headers = HeaderMap::new();
            for line in lines {
                headers.append(X_FORWARDED_FOR, HeaderValue::from_static(line));
            }
            headers
        };
        let v4 = &peer("10.1.2.3:5000");
        let v6 = &peer("[2001:db8::1]:443");
        assert_eq!(forwarded_for(&sent(&[]), v4).unwrap(), "10.1.2.3");
        assert_eq!(forwarded_for(&sent(&[]), v6).unwrap(), "2001:db8::1");
        assert_eq!(
            forwarded_for(&sent(&["192.0.2.7, 198.51.100.2"]), v6).unwrap(),
            "192.0.2.7, 198.51.100.2, 2001:db8::1"
        );
        // Every line the client sent is kept, in order.
        assert_eq!(
            forwarded_for(&sent(&["192.0.2.7", " ", "198.51.100.2"]), v4).unwrap(),
            "192.0.2.7, 198.51.100.2, 10.1.2.3"
        );
        let longest: SocketAddr = "[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:1"
            .parse()
            .unwrap();
        assert_eq!(
            forwarded_for(&sent(&[""]), &Peer::new(longest).unwrap()).unwrap(),
            longest.ip().to_string().as_str()
        );
    }

    #[test]
    fn ipv4_text_matches_display() {
        let mut buf = [0u8; 48];
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.0.9.99",
            "100.20.3.255",
            "255.255.255.255",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(write_ip(ip, &mut buf).unwrap(), ip.to_string().as_bytes());
        }
        for a in 0..=255u8 {
            let ip = std::net::IpAddr::from([a, 255 - a, a / 3, a % 10]);
            assert_eq!(write_ip(ip, &mut buf).unwrap(), ip.to_string().as_bytes());
        }
    }
}
