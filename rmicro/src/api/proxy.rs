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
//!   as it went out is sent once more on a new connection (after the connection sat idle) or
//!   to another node (a node shutting down closes its connections at any moment).
//! - Protocol upgrades (WebSocket and any other `Connection: upgrade` over HTTP/1.1) pass
//!   through: the `Upgrade` header goes to the node, and when it answers `101 Switching
//!   Protocols` with a protocol the client offered, the two connections are joined and bytes
//!   copied both ways until both sides have closed (or nothing moves for the idle timeout).
//!   `CONNECT` is refused (405), and `TRACE` (which would echo cookies and credentials).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum_core::body::Body;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use rmicro_runtime::registry::{Node, NodeCache, DEFAULT_CACHE_TTL};

use super::conn::NeverFails;
use super::plugins::metrics;
use super::pool::{closed_by_node, Pool, PoolError, TimedOut};
use super::resolve::ServiceName;
use super::tunnel::Tunnels;
use super::upload::{self, Sent, Upload};
use super::{address, error, HandlerConfig};
pub(crate) use body::ProxyBody;
use body::{fail, too_large};
use headers::{scan_response, strip_hop_by_hop, strip_present_hop_by_hop};
use upgrade::{set_upgrade, wants_upgrade};

mod body;
pub(crate) mod express;
mod headers;
mod host;
mod nodes;
mod upgrade;

// For the rpc handler and the gateway's `serve`.
pub(crate) use headers::{
    codings, join_cookies, other_transfer_coding, set_forwarding, strip_connection_listed, Peer,
};
pub(crate) use host::{host_from_target, target_problem, Host};
pub(crate) use nodes::{Quarantine, Seen};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long a tunnel may carry nothing, unless the proxy is told otherwise.
const DEFAULT_TUNNEL_IDLE: Duration = Duration::from_secs(60);

/// How long a kept-alive connection to a node may sit unused, unless the gateway says
/// (`--backend-idle-timeout`): Go's `http.DefaultTransport` keeps them 90 s.
const DEFAULT_BACKEND_IDLE: Duration = Duration::from_secs(90);

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
    /// How long a tunnel (a connection that switched protocols) may carry nothing; also how
    /// long a request body may bring nothing, and a node send nothing of a response body for
    /// an HTTP/2 client (the connection's idle limit, which an HTTP/2 connection's streams do
    /// not see).
    tunnel_idle: Duration,
    /// Where tunnels register when the request does not say (a proxy used outside a gateway's
    /// `serve`): never closed by a shutdown.
    tunnels: Tunnels,
    /// The express lane's connections to nodes.
    lanes: express::Lanes,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("namespace", &self.inner.config.namespace)
            .finish_non_exhaustive()
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
        Proxy::with_idle_limits(config, idle, DEFAULT_BACKEND_IDLE)
    }

    /// A proxy whose tunnels close after `tunnel_idle` without traffic, and whose kept-alive
    /// connections to nodes close after `backend_idle` unused (the gateway passes its
    /// `--idle-timeout` and `--backend-idle-timeout`).
    pub fn with_idle_limits(
        config: HandlerConfig,
        tunnel_idle: Duration,
        backend_idle: Duration,
    ) -> Proxy {
        #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
        let mut pool = Pool::new(Duration::from_secs(2), backend_idle);
        #[cfg(feature = "tls")]
        {
            pool.tls.clone_from(&config.client_tls);
        }
        let nodes = NodeCache::new(std::sync::Arc::clone(&config.registry), DEFAULT_CACHE_TTL);
        Proxy {
            inner: Arc::new(Inner {
                config,
                nodes,
                pool,
                quarantine: Quarantine::default(),
                seen: Seen::default(),
                tunnel_idle,
                tunnels: Tunnels::default(),
                lanes: express::Lanes::new(backend_idle),
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

    /// Whether the express lane may serve this proxy's clients: it speaks plain HTTP to nodes,
    /// and its clients do not come over HTTPS.
    pub(crate) fn express_allowed(&self) -> bool {
        !self.inner.pool.speaks_tls() && !self.inner.config.https
    }

    fn mark_failed(&self, service: &str, address: &str) {
        self.inner.quarantine.mark(address);
        self.inner.nodes.invalidate(service);
    }

    /// Proxies a request that went through the plugins, whose host the gateway checked and
    /// settled before them: the client's address is the `SocketAddr` request extension the
    /// gateway sets, the tunnels of the gateway's `serve` the [`Tunnels`] one.
    pub(crate) fn handle_boxed(
        self,
        req: Request<Body>,
    ) -> NeverFails<impl std::future::Future<Output = Response<ProxyBody>>, ToPluginBody> {
        let peer = req
            .extensions()
            .get::<SocketAddr>()
            .and_then(|a| Peer::new(*a));
        let tunnels = req.extensions().get::<Tunnels>().cloned();
        NeverFails::new(self.handle(req, peer, tunnels, Host::Settled), |response| {
            response.map(Body::from)
        })
    }

    /// Proxies `req` from `peer` (the gateway's connection with the client); a connection
    /// that switches protocols joins `tunnels` (the proxy's own set if `None`). `host` says
    /// whether the request's host is still to be checked and settled.
    ///
    /// The future is moved a few times per request (into hyper's slot for it, among others),
    /// so it is kept small: an `async` block (an `async fn` would keep a second copy of the
    /// request), owned arguments (no outer future to hold what they borrow from), and the
    /// rare paths' futures boxed.
    // Not an `async fn`: see above.
    #[allow(clippy::manual_async_fn)]
    pub(crate) fn handle<B>(
        self,
        mut req: Request<B>,
        peer: Option<Peer>,
        tunnels: Option<Tunnels>,
        host: Host,
    ) -> impl std::future::Future<Output = Response<ProxyBody>>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        async move {
            let config = &self.inner.config;
            if matches!(*req.method(), http::Method::CONNECT | http::Method::TRACE) {
                // hyper would make a 2xx answer to CONNECT a tunnel; services are reached by
                // path. A node answering TRACE echoes the request back, cookies and
                // credentials with it, to whoever sent it (cross-site tracing): nginx refuses
                // it too.
                let refusal = if req.method() == http::Method::CONNECT {
                    "the gateway does not tunnel CONNECT requests"
                } else {
                    "the gateway does not pass TRACE requests on (a node would echo the \
                     request's cookies and credentials back)"
                };
                let mut resp = fail(StatusCode::METHOD_NOT_ALLOWED, refusal.to_string());
                resp.headers_mut().insert(header::ALLOW, ALLOWED.clone());
                return resp;
            }
            if host == Host::Unchecked {
                if let Some(problem) = target_problem(&req) {
                    return fail(StatusCode::BAD_REQUEST, problem.to_string());
                }
                host_from_target(&mut req);
                if req.version() == http::Version::HTTP_2 {
                    join_cookies(req.headers_mut());
                }
            }
            if req.method() == http::Method::OPTIONS {
                if let Some(answer) = options_here(req.headers_mut()) {
                    return answer;
                }
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
                        error::registry_unavailable(&format!("look up service `{service}`"), &err),
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
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    metrics::note_service(req.extensions(), service);
                }
                return fail(status, detail);
            }
            self.inner.seen.saw(service);
            // Known to the registry: named in the metrics, if they are kept.
            metrics::note_service(req.extensions(), service);
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

            let http10 = req.version() == http::Version::HTTP_10;
            let (mut parts, body) = req.into_parts();
            // Behind plugins, the headers `Connection` lists are gone already (and those the
            // plugins set stay).
            strip_hop_by_hop(&mut parts.headers, host == Host::Unchecked);
            set_forwarding(
                &mut parts.headers,
                peer.as_ref(),
                config.trust_forwarded,
                config.https,
            );
            if let Some((protocol, _)) = &upgrade {
                set_upgrade(&mut parts.headers, protocol.clone());
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
                let target = address::target(address);
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
                let mut lease = self.inner.pool.lease(target);
                if lease.unopened() {
                    // Opened before the request goes: a node that cannot be reached got none of
                    // it, so any request (a POST with its body too) may go to another node.
                    // Over TLS to a node that registered `secure=true` or an `https://` address
                    // (looked up only when a connection is opened: a pooled one knows). Every
                    // record at the address counts: a node restarted with TLS on the same
                    // address may have its old record beside the new one for a while.
                    let (secure, grpc) = nodes
                        .iter()
                        .filter(|n| address::target(&n.address) == target)
                        .fold((false, false), |(secure, grpc), n| {
                            (
                                secure || address::https(&n.address) || says(n, "secure", "true"),
                                grpc || says(n, "protocol", "grpc"),
                            )
                        });
                    // A gRPC node that serves TLS, or one this gateway would reach over TLS:
                    // a request would go out in plain text to learn what its registration
                    // says, or fail a handshake offering HTTP/1.1 it does not speak.
                    // (A plain gRPC node is tried: its answer says the same, below.)
                    if grpc && (secure || self.inner.pool.speaks_tls()) {
                        return fail(
                            StatusCode::BAD_GATEWAY,
                            format!("service `{service}` node {address} {SPEAKS_GRPC}"),
                        );
                    }
                    let opening = self.inner.pool.open(lease, target, secure);
                    // The backend timeout bounds connecting too, as it did inside the send.
                    match tokio::time::timeout(config.backend_timeout, opening).await {
                        Ok(Ok(opened)) => lease = opened,
                        // Refused, or no connection within the backend timeout (which may be
                        // shorter than the pool's own limit on connecting): either way the node
                        // got nothing, and is avoided.
                        failed => {
                            // What a person can act on: why TLS to the node failed.
                            let mut why = None;
                            let mut late = None;
                            match failed {
                                Ok(Err(err)) => {
                                    tracing::warn!(%service, %address, error = %err, "backend failed");
                                    if let PoolError::Tls(tls) = err {
                                        why = Some(tls);
                                    }
                                }
                                _ => {
                                    late = Some(no_connection(
                                        service,
                                        address,
                                        config.backend_timeout,
                                    ));
                                }
                            }
                            self.mark_failed(service, address);
                            if tried.is_empty() && nodes.len() > 1 {
                                tried.push(address.to_string());
                                if head.is_none() {
                                    head = Some(parts);
                                }
                                continue;
                            }
                            if let Some(detail) = late {
                                return fail(StatusCode::GATEWAY_TIMEOUT, detail);
                            }
                            let why = why.as_deref().unwrap_or(UNREACHABLE);
                            return fail(
                                StatusCode::BAD_GATEWAY,
                                format!("service `{service}` node {address} {why}"),
                            );
                        }
                    }
                }
                let mut backend_req = Request::from_parts(parts, body.take().unwrap_or_default());
                // Nodes are spoken to in HTTP/1.1 whatever the client spoke (as nginx's
                // `proxy_http_version 1.1` and Go's transport do): hyper would frame an HTTP/2
                // request's body of unknown length as `Content-Length: 0` in any other version,
                // and the node would get none of it.
                *backend_req.version_mut() = http::Version::HTTP_11;
                // Origin form (`/path?query`): the node is the connection's peer.
                *backend_req.uri_mut() = Uri::from(path_and_query.clone());
                if !backend_req.headers().contains_key(header::HOST) {
                    // HTTP/1.1 needs one: a request that named no host (HTTP/1.0) names the node.
                    if let Ok(host) = HeaderValue::from_str(target) {
                        backend_req.headers_mut().insert(header::HOST, host);
                    }
                }
                // A connection that sat idle in the pool may be closed by the node (its keep-alive
                // timeout) just as the request goes out: one that can be replayed (no body, a safe
                // method, as Go's transport decides) is then sent once more on a new connection.
                // (Boxed, as the body path below: the common request's future stays small.)
                let replay = (bodiless && lease.may_be_stale() && replayable(backend_req.method()))
                    .then(|| Box::new(head_copy(&backend_req)));
                // Whether a connection its node closes before answering sends the request on
                // to another node (see below).
                let elsewhere = retryable
                    && tried.is_empty()
                    && lease.reused()
                    && replayable(backend_req.method());
                let pool = &self.inner.pool;
                // Built in place: the send future is large, and each move of it is a copy.
                let sent = match upload.as_mut() {
                    None => pool
                        .send(
                            lease,
                            target,
                            backend_req,
                            replay,
                            Some(config.backend_timeout),
                        )
                        .await
                        .map_err(|TimedOut| Late::Answer),
                    Some(upload) => {
                        let send = pool.send(lease, target, backend_req, replay, None);
                        Box::pin(answer_after_upload(send, upload, config.backend_timeout))
                            .await
                            .and_then(|sent| sent.map_err(|TimedOut| Late::Answer))
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
                                    tunnels.as_ref().unwrap_or(&self.inner.tunnels),
                                    service,
                                    address,
                                ),
                                None => fail(
                                    StatusCode::BAD_GATEWAY,
                                    format!("service `{service}` node {address} {SWITCHED}"),
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
                        let scan = scan_response(&parts.headers);
                        if scan.hop_by_hop {
                            // Framed by both (RFC 9112 §6.3): hyper read the chunks, and the
                            // node's Content-Length, passed on, would frame the client's copy
                            // otherwise (a smuggled or cut-off response). Looked at only when
                            // hop-by-hop headers are there, as `Transfer-Encoding` is one.
                            if parts.headers.contains_key(header::TRANSFER_ENCODING)
                                && parts.headers.contains_key(header::CONTENT_LENGTH)
                            {
                                tracing::warn!(%service, %address, "backend framed a response by both Content-Length and Transfer-Encoding");
                                // Not reused: the node may have meant the other framing.
                                self.inner.pool.discard(target);
                                return fail(
                                    StatusCode::BAD_GATEWAY,
                                    format!("service `{service}` node {address} {BOTH_FRAMINGS}"),
                                );
                            }
                            // `gzip, chunked`: hyper undid the chunks only, and `Transfer-Encoding`
                            // is this hop's, so the client would take the coded bytes for the
                            // body (nginx and Go's transport refuse it too).
                            if other_transfer_coding(&parts.headers) {
                                tracing::warn!(%service, %address, "backend sent a response in a transfer coding other than chunked");
                                return fail(
                                    StatusCode::BAD_GATEWAY,
                                    format!("service `{service}` node {address} {OTHER_CODING}"),
                                );
                            }
                            strip_present_hop_by_hop(&mut parts.headers, true);
                        }
                        if let Some(required) = required {
                            parts.headers.insert(header::UPGRADE, required);
                        }
                        // One length repeated (`2, 2`, or in two lines), which hyper took (RFC
                        // 9110 §8.6): passed on as the one length, as Go's client, nginx and
                        // HTTP/2 clients refuse the list.
                        if scan.length_repeated {
                            let one = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| {
                                let first = v.as_bytes().split(|&b| b == b',').next()?;
                                HeaderValue::from_bytes(first.trim_ascii()).ok()
                            });
                            if let Some(one) = one {
                                parts.headers.insert(header::CONTENT_LENGTH, one);
                            }
                        }
                        if parts.status == StatusCode::NO_CONTENT {
                            // Not in a 204 (RFC 9110 §8.6): hyper drops a node's for HTTP/1
                            // clients, and HTTP/2 clients reset the stream on it.
                            parts.headers.remove(header::CONTENT_LENGTH);
                        }
                        // An HTTP/1.0 client learns where a body of no stated length ends from
                        // the connection's close alone: one that asked to keep it alive must not
                        // be told it stays open, or it takes what follows for its next
                        // response. hyper says so to a 1.0 client asking for it when the
                        // response is 1.1 (before it knows the body's framing), and closes the
                        // connection after a 1.0 response that does not say keep-alive.
                        if http10 && !parts.headers.contains_key(header::CONTENT_LENGTH) {
                            parts.version = http::Version::HTTP_10;
                        }
                        // Which node, for the log should the body break off (by identity: the
                        // address picked is one of these nodes' own).
                        let node = nodes
                            .iter()
                            .position(|n| std::ptr::eq(n.address.as_ptr(), address.as_ptr()))
                            .unwrap_or(usize::MAX);
                        let from = body::Source {
                            nodes: Arc::clone(&nodes),
                            node,
                        };
                        let stall = self.inner.tunnel_idle;
                        return Response::from_parts(parts, ProxyBody::backend(body, from, stall));
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
                        // Opening a new connection for a replay: as below.
                        PoolError::Tls(why) => (why.as_str(), true),
                        PoolError::Connect(_) => (UNREACHABLE, true),
                        // A gRPC server (HTTP/2 only) answers HTTP/1.1 with bytes that are
                        // no response, or closes the connection while the request's body still
                        // comes (which happens first is a matter of timing): the gateway is in
                        // the wrong mode for it.
                        PoolError::Exchange(_) | PoolError::Stale(_)
                            if nodes
                                .iter()
                                .any(|n| n.address == address && says(n, "protocol", "grpc")) =>
                        {
                            (SPEAKS_GRPC, false)
                        }
                        PoolError::Exchange(e) if e.is_parse() => (
                            UNREADABLE,
                            false,
                        ),
                        // A node may refuse a body by answering early and closing.
                        _ if upload.as_mut().is_some_and(|u| !u.complete()) => (
                            "closed the connection before taking the whole request body",
                            false,
                        ),
                        // Its end of the connection closed (no reset) before a whole answer.
                        PoolError::Exchange(e) if e.is_incomplete_message() => (
                            CLOSED,
                            true,
                        ),
                        PoolError::Exchange(_) => (RESET, true),
                        PoolError::Stale(_) => (
                            "closed a kept-alive connection before answering (the request was not repeated: it is not safe to)",
                            false,
                        ),
                    };
                        tracing::warn!(%service, %address, error = %err, "backend failed");
                        if down {
                            self.mark_failed(service, address);
                        }
                        // A kept-alive connection its node closed before answering: a node that
                        // is shutting down closes them at any moment, not only once they have sat
                        // idle (the replay above covers those). A safe request goes to another
                        // node, as Go's transport sends it again and nginx to the next server.
                        let closed = elsewhere
                            && matches!(&err, PoolError::Exchange(e) | PoolError::Stale(e) if closed_by_node(e));
                        if (closed || matches!(err, PoolError::Connect(_) | PoolError::Tls(_)))
                            && retryable
                            && tried.is_empty()
                        {
                            tried.push(address.to_string());
                            continue;
                        }
                        return fail(
                            StatusCode::BAD_GATEWAY,
                            format!("service `{service}` node {address} {detail}"),
                        );
                    }
                    // A node that took the request and did not answer in time is avoided as
                    // one that could not be reached (as nginx counts a timeout a failure): one
                    // that hangs (deadlocked, out of threads) would otherwise hold every other
                    // request it is picked for for the whole timeout, and answer none.
                    Err(Late::Answer) => {
                        self.mark_failed(service, address);
                        return late(
                            service,
                            address,
                            config.backend_timeout,
                            "backend did not answer in time",
                        );
                    }
                    Err(Late::Body) => {
                        tracing::warn!(%service, %address, "backend stopped taking the request body");
                        self.mark_failed(service, address);
                        return fail(
                            StatusCode::GATEWAY_TIMEOUT,
                            format!(
                            "service `{service}` node {address} took nothing more of the request \
                             body for {:?} and did not answer",
                            config.backend_timeout
                        ),
                        );
                    }
                }
            }
        }
    }
}

/// How a proxied response becomes the one a plugin stack's service gives.
type ToPluginBody = fn(Response<ProxyBody>) -> Response<Body>;

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
    strip_hop_by_hop(&mut parts.headers, true);
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

/// The methods the gateway passes on, as its `Allow` says (others pass too: a node's own).
static ALLOWED: HeaderValue =
    HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS");

/// An `OPTIONS` request's `Max-Forwards` (RFC 9110 §7.6.2): at 0 the gateway is the request's
/// final recipient and answers it (`200` with `Allow`), above 0 the node is sent one less. A
/// value that is no number is passed on as it is.
fn options_here(headers: &mut http::HeaderMap) -> Option<Response<ProxyBody>> {
    let hops: u64 = headers
        .get(header::MAX_FORWARDS)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    if hops == 0 {
        let mut resp = Response::new(ProxyBody::Gateway(Body::empty()));
        resp.headers_mut().insert(header::ALLOW, ALLOWED.clone());
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        return Some(resp);
    }
    headers.insert(header::MAX_FORWARDS, HeaderValue::from(hops - 1));
    None
}

/// What a client is told a node did (after "service `x` node ADDR "), by the hyper path and
/// the express lane alike.
const UNREACHABLE: &str = "is unreachable";
const UNREADABLE: &str =
    "sent a response the gateway cannot read (malformed, or a head over 100 headers or 400 KiB)";
const CLOSED: &str = "closed the connection without a complete answer";
const RESET: &str = "reset the connection";
const BOTH_FRAMINGS: &str = "sent a response with both Content-Length and Transfer-Encoding \
     (refused: its framing is ambiguous)";
const OTHER_CODING: &str = "sent a response in a transfer coding other than `chunked`, which \
     the gateway cannot pass on (compress with `Content-Encoding` instead)";
const SWITCHED: &str = "switched protocols without being asked";

/// What a request routed to a gRPC node is told.
const SPEAKS_GRPC: &str = "speaks gRPC (its registration says protocol=grpc), which the http \
     handler does not: serve gRPC services with `rmicro api --handler rpc`";

/// Whether `node`'s metadata has `key` set to `value`.
fn says(node: &Node, key: &str, value: &str) -> bool {
    node.metadata.get(key).is_some_and(|v| v == value)
}

/// Whether a request without a body may be sent twice: its method is safe (RFC 9110 §9.2.1),
/// the rule Go's transport uses to replay a request on a connection that turned out closed.
/// (`TRACE` is refused before it gets here.)
fn replayable(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
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
/// uploads, which the connection's idle timeout bounds. During the upload it bounds the node's
/// time to take each piece of the body instead (a node that stops reading it and does not
/// answer would hold the client until its connection's idle limit cut it off with no answer).
/// An answer that comes before the body is all sent is taken as it is.
async fn answer_after_upload<F: std::future::Future>(
    send: F,
    upload: &mut Sent,
    limit: Duration,
) -> Result<F::Output, Late> {
    let mut send = std::pin::pin!(send);
    tokio::select! {
        biased;
        answer = &mut send => Ok(answer),
        stalled = upload.wait_or_stalled(limit) => match stalled {
            true => Err(Late::Body),
            false => tokio::time::timeout(limit, send).await.map_err(|_| Late::Answer),
        },
    }
}

/// The 504 for a node that did not answer within `timeout`, logged with `what` it did not do.
fn late(service: &str, address: &str, timeout: Duration, what: &str) -> Response<ProxyBody> {
    fail(
        StatusCode::GATEWAY_TIMEOUT,
        no_answer(service, address, timeout, what),
    )
}

/// The detail of the 504 for a node that did not answer within `timeout` (by the hyper path and
/// the express lane alike), logged with `what` it did not do.
fn no_answer(service: &str, address: &str, timeout: Duration, what: &str) -> String {
    tracing::warn!(%service, %address, ?timeout, "{what}");
    format!("service `{service}` node {address} did not answer within {timeout:?}")
}

/// The detail of the 504 for a node that took no connection within `timeout` (by the hyper
/// path and the express lane alike), logged.
fn no_connection(service: &str, address: &str, timeout: Duration) -> String {
    tracing::warn!(%service, %address, ?timeout, "backend did not take a connection in time");
    format!("service `{service}` node {address} did not take a connection within {timeout:?}")
}

/// What a node did not do within the backend timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Late {
    /// Answer.
    Answer,
    /// Take the next piece of the request body.
    Body,
}

/// Whether a backend error comes from the request body exceeding its limit.
fn is_length_limit(err: &PoolError) -> bool {
    error::chain(err).any(|e| e.is::<http_body_util::LengthLimitError>())
}
