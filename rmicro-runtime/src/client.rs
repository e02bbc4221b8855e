//! The client generated service clients call through.
//!
//! Generated clients hold a [`Client`] and a service name and hand it every call with the
//! method's gRPC path. The client finds the service's nodes in the [registry](crate::registry)
//! (through a [`NodeCache`] kept fresh by the registry's watch, or uses a fixed address), lets
//! the [selector](crate::selector) pick one, reuses one HTTP/2
//! connection per node, applies the request timeout (default 5 s, never past the deadline of the
//! call being served), retries connection failures on another node (default once), and carries
//! the served call's metadata onto the outgoing call.
//!
//! ```no_run
//! use std::sync::Arc;
//! use rmicro_runtime::{registry::MemoryRegistry, Client};
//! let by_name = Client::new(Arc::new(MemoryRegistry::global()));
//! let fixed = Client::with_address("127.0.0.1:50051");
//! // let user = UserClient::new("go.micro.srv.user", by_name);   (generated)
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_core::Stream;
use http::uri::PathAndQuery;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

use crate::context;
pub use crate::frames::DEFAULT_MAX_RECEIVE_MESSAGE_SIZE;
use crate::frames::{BoxError, Framed};
use crate::registry::{Node, NodeCache, Registry, DEFAULT_CACHE_TTL};
use crate::selector::{Random, Selector};
use crate::server::WireMessage;
use crate::transport::{
    Connection, Keepalive, TransportError, Unreachable, DEFAULT_KEEPALIVE_TIMEOUT, GRPC_TIMEOUT,
    MAX_HEADER_LIST_SIZE,
};

/// go-micro's default request timeout.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// go-micro's default number of retries after a connection failure.
pub const DEFAULT_RETRIES: u32 = 1;

/// The shortest keepalive interval a client uses unless told otherwise
/// ([`ClientBuilder::keepalive_min_interval`]): 5 minutes, the least grpc-go servers accept by
/// default (their enforcement policy's `MinTime`). A server pinged more often answers with a
/// GOAWAY (`too_many_pings`) and closes the connection, failing the calls on it.
pub const MIN_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// Calls services by name. Cheap to clone: clones share connections.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    target: Target,
    selector: Arc<dyn Selector>,
    request_timeout: Option<Duration>,
    retries: u32,
    keepalive: Option<Keepalive>,
    /// The largest answer message taken.
    receive_limit: usize,
    /// One HTTP/2 connection per node address, multiplexing every call to that node (looked up
    /// on every call: a fast hash, as addresses come from the registry, not from callers).
    connections: Mutex<HashMap<String, Connection, foldhash::fast::RandomState>>,
    /// Nodes no connection could be opened to lately, left out of picks for a while (the
    /// connections mark them, also when the call that opened one gave up first).
    unreachable: Arc<Unreachable>,
    /// TLS to every node, if the client has it.
    tls: crate::transport::ClientTls,
}

#[derive(Clone)]
enum Target {
    /// Every service is reached at this one address (as a one-node list, the shape a
    /// registry lookup has).
    Address(Arc<[Node]>),
    /// Services are looked up by name.
    Registry(NodeCache),
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Client");
        match &self.inner.target {
            Target::Address(node) => d.field("address", &node[0].address),
            Target::Registry(cache) => d.field("registry", &cache.registry().name()),
        };
        d.field("request_timeout", &self.inner.request_timeout)
            .field("retries", &self.inner.retries)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Client`]. `Default` holds go-micro's defaults.
#[derive(Clone)]
pub struct ClientBuilder {
    target: Option<Via>,
    selector: Arc<dyn Selector>,
    request_timeout: Option<Duration>,
    retries: u32,
    cache_ttl: Duration,
    keepalive: Option<Duration>,
    keepalive_timeout: Duration,
    keepalive_min_interval: Duration,
    max_receive_message_size: usize,
    tls: crate::transport::ClientTls,
}

#[derive(Clone)]
enum Via {
    Address(String),
    Registry(Arc<dyn Registry>),
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            target: None,
            selector: Arc::new(Random),
            request_timeout: Some(DEFAULT_REQUEST_TIMEOUT),
            retries: DEFAULT_RETRIES,
            cache_ttl: DEFAULT_CACHE_TTL,
            keepalive: None,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            keepalive_min_interval: MIN_KEEPALIVE_INTERVAL,
            max_receive_message_size: DEFAULT_MAX_RECEIVE_MESSAGE_SIZE,
            tls: crate::transport::ClientTls::default(),
        }
    }
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("request_timeout", &self.request_timeout)
            .field("retries", &self.retries)
            .field("cache_ttl", &self.cache_ttl)
            .field("keepalive", &self.keepalive)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// Look services up in `registry`.
    pub fn registry(&mut self, registry: Arc<dyn Registry>) -> &mut Self {
        self.target = Some(Via::Registry(registry));
        self
    }

    /// Send every call to `address` instead of looking services up.
    pub fn address(&mut self, address: impl Into<String>) -> &mut Self {
        self.target = Some(Via::Address(address.into()));
        self
    }

    /// How a node is picked. Default: [`Random`].
    pub fn selector(&mut self, selector: impl Selector) -> &mut Self {
        self.selector = Arc::new(selector);
        self
    }

    /// Give up on a unary call after `timeout` (`None`: only the served call's deadline or the
    /// request's own `grpc-timeout` limit it). Default: 5 s.
    pub fn request_timeout(&mut self, timeout: Option<Duration>) -> &mut Self {
        self.request_timeout = timeout;
        self
    }

    /// The largest answer message taken, in bytes (compressed, and once decompressed); a larger
    /// one fails the call with `ResourceExhausted` (a stream: from that message on). Default:
    /// [`DEFAULT_MAX_RECEIVE_MESSAGE_SIZE`] (4 MiB, as grpc-go's `MaxRecvMsgSize`).
    pub fn max_receive_message_size(&mut self, bytes: usize) -> &mut Self {
        self.max_receive_message_size = bytes;
        self
    }

    /// How often a call whose request could not be delivered to a node is retried on another.
    /// Default: 1. A node no connection could be opened to (down, or an unusable address) is
    /// passed over for another without using up a retry while untried nodes are left: nothing
    /// was sent to it.
    pub fn retries(&mut self, retries: u32) -> &mut Self {
        self.retries = retries;
        self
    }

    /// How long a service's nodes, once read from the registry, are reused without a change
    /// event from the registry's watch (see [`NodeCache`]). `Duration::ZERO` reads the registry
    /// on every call. Default: [`DEFAULT_CACHE_TTL`] (a minute, as go-micro's cache).
    pub fn cache_ttl(&mut self, ttl: Duration) -> &mut Self {
        self.cache_ttl = ttl;
        self
    }

    /// Sends an HTTP/2 PING on each node connection every `interval` while calls are open on
    /// it, and closes the connection when one goes unanswered for the
    /// [keepalive timeout](Self::keepalive_timeout): a connection whose node vanished without a
    /// reset fails its calls then, instead of at their deadline. No pings while the connection
    /// has no call (grpc-go servers count those as abuse unless they permit them).
    ///
    /// An interval below the [minimum](Self::keepalive_min_interval), by default
    /// [`MIN_KEEPALIVE_INTERVAL`] (5 minutes, what grpc-go servers accept by default), is raised
    /// to it. Default: `None`, no pings (as in grpc).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let client = rmicro_runtime::Client::builder()
    ///     .address("127.0.0.1:50051")
    ///     .keepalive(Some(Duration::from_secs(10 * 60)))
    ///     .build();
    /// ```
    pub fn keepalive(&mut self, interval: Option<Duration>) -> &mut Self {
        self.keepalive = interval;
        self
    }

    /// How long a keepalive ping may go unanswered before the connection is closed. Default:
    /// [`DEFAULT_KEEPALIVE_TIMEOUT`] (20 s, as grpc). Does nothing without
    /// [`keepalive`](Self::keepalive).
    pub fn keepalive_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.keepalive_timeout = timeout;
        self
    }

    /// The shortest keepalive interval the client uses. Lower it only when every server the
    /// client calls accepts pings that often (an rmicro server does; a grpc-go server does when
    /// its `keepalive.EnforcementPolicy.MinTime` is at most the interval), or they will close
    /// the connection with `too_many_pings`. Default: [`MIN_KEEPALIVE_INTERVAL`] (5 minutes).
    ///
    /// ```
    /// # use std::time::Duration;
    /// // Every server behind this registry is an rmicro service: ping every 30 s.
    /// let client = rmicro_runtime::Client::builder()
    ///     .keepalive(Some(Duration::from_secs(30)))
    ///     .keepalive_min_interval(Duration::from_secs(30))
    ///     .build();
    /// ```
    pub fn keepalive_min_interval(&mut self, interval: Duration) -> &mut Self {
        self.keepalive_min_interval = interval;
        self
    }

    /// Reaches every node over TLS with `tls`, checking its certificate (and presenting the
    /// client's own when `tls` has one). A node that serves plain text fails to connect, and
    /// its calls go to other nodes. Default: plain-text HTTP/2; a node registered as serving
    /// TLS (`secure=true` in its metadata) is then refused with what to do.
    #[cfg(feature = "tls")]
    pub fn tls(&mut self, tls: crate::tls::ClientTls) -> &mut Self {
        self.tls = Some(tls);
        self
    }

    /// The client. Without a registry or address it uses the process's memory registry.
    pub fn build(&self) -> Client {
        let target = match self.target.clone() {
            Some(Via::Address(address)) => Target::Address(Arc::new([Node {
                address,
                ..Node::default()
            }])),
            Some(Via::Registry(registry)) => {
                Target::Registry(NodeCache::new(registry, self.cache_ttl))
            }
            None => Target::Registry(NodeCache::new(
                Arc::new(crate::registry::MemoryRegistry::global()),
                self.cache_ttl,
            )),
        };
        let keepalive = self.keepalive.map(|interval| {
            if interval < self.keepalive_min_interval {
                tracing::debug!(
                    ?interval,
                    min = ?self.keepalive_min_interval,
                    "keepalive interval raised to the minimum (see ClientBuilder::keepalive_min_interval)"
                );
            }
            Keepalive {
                interval: interval.max(self.keepalive_min_interval),
                timeout: self.keepalive_timeout,
            }
        });
        Client {
            inner: Arc::new(Inner {
                target,
                selector: Arc::clone(&self.selector),
                request_timeout: self.request_timeout,
                retries: self.retries,
                keepalive,
                receive_limit: self.max_receive_message_size,
                connections: Mutex::new(HashMap::default()),
                unreachable: Arc::new(Unreachable::default()),
                tls: self.tls.clone(),
            }),
        }
    }
}

/// The least time a call must have had for a node that did not answer it in time to be avoided.
const MIN_SILENT_BUDGET: Duration = Duration::from_secs(1);

/// Marks the node a call waits on as unreachable when dropped armed after the call's deadline:
/// the call's timeout dropped it while the node had not answered. (Dropped armed before the
/// deadline, the caller gave up on the call, which says nothing of the node.)
struct Silent<'a> {
    unreachable: &'a Unreachable,
    address: &'a str,
    deadline: Option<Instant>,
    armed: bool,
}

impl Drop for Silent<'_> {
    fn drop(&mut self) {
        if self.armed && self.deadline.is_some_and(|d| Instant::now() >= d) {
            tracing::warn!(
                node = %self.address,
                avoided_for = ?crate::transport::UNREACHABLE_FOR,
                "no answer from the node within the call's deadline; calls go to other nodes for a while"
            );
            self.unreachable.mark(self.address);
        }
    }
}

/// Where one call goes: a node of `service`, picked per attempt. A request that could not be
/// delivered (the node refused the connection, or it closed before the request was written)
/// is sent again, unchanged, to another node, up to the client's retries: it never ran, so
/// nothing runs twice, and nothing has to be copied or encoded again for the retry.
struct Route<'a> {
    client: &'a Client,
    service: &'a str,
    /// When the call's time is up; each attempt tells the server what is left of it.
    deadline: Option<Instant>,
    /// Whether the answer's body is bounded by the deadline too: a stream's is (a unary
    /// call's whole future already is).
    bound_answer: bool,
    /// Whether a node that has not answered the request's head by the deadline is avoided
    /// for a while (see [`Silent`]).
    watch_silence: bool,
}

impl<'a> tower_service::Service<http::Request<tonic::body::Body>> for Route<'a> {
    type Response = http::Response<Answer>;
    type Error = RouteError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, RouteError>> + Send + 'a>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), RouteError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let Route {
            client,
            service,
            deadline,
            bound_answer,
            watch_silence,
        } = *self;
        Box::pin(async move {
            let mut request = request;
            // A header block over what servers take would have the connection closed, failing
            // every other call on it: refused here, for this call alone.
            let size = header_list_size(request.headers());
            if size > MAX_HEADER_LIST_SIZE as usize {
                return Err(Status::resource_exhausted(format!(
                    "the call's metadata is {size} bytes, over the {MAX_HEADER_LIST_SIZE} bytes \
                     rmicro servers take; send less metadata"
                ))
                .into());
            }
            // Nodes that failed: refused or closed connections, and unusable addresses.
            let mut tried: Vec<String> = Vec::new();
            let mut retries = client.inner.retries;
            loop {
                let (nodes, index) = client.pick(service, &tried).await?;
                let node = &nodes[index];
                let address = node.address.as_str();
                let connection = match client.connection(service, node) {
                    Ok(connection) => connection,
                    // A registry record no connection can be opened to (written by hand or by
                    // another tool): nothing was sent, so another node is tried, without using
                    // up a retry. Once every node has been tried, the caller gets the error.
                    Err(status) if !tried.iter().any(|t| t == address) => {
                        tracing::debug!(%service, node = %node.id, error = %status.message(), "skipping a node");
                        tried.push(address.to_string());
                        continue;
                    }
                    Err(status) => return Err(status.into()),
                };
                // The connection stamps the request with what is left of the deadline once it
                // is ready to take it, or fails it unsent when nothing is left. A connection
                // still opening when half of that time is gone (a silent node: its opening may
                // take the whole connect timeout) gives the call to another node whose
                // connection is open, if the service has one, as gRPC sends calls to ready
                // connections only; else the call waits on, as long as it may.
                // A node that takes the call and does not answer before its deadline (a hung
                // process: stopped, deadlocked, out of CPU) is avoided for a while, as nginx
                // counts a timeout a failure: otherwise every call picking it waits out its
                // whole deadline while the other nodes idle, until its registration expires.
                let mut silent = Silent {
                    unreachable: &client.inner.unreachable,
                    // `host:port`, as picks look marks up.
                    address: connection.address(),
                    deadline,
                    armed: watch_silence && deadline.is_some(),
                };
                let mut sent = connection.send_request(request, deadline, true).await;
                let mut failed_over = None;
                if let Err((TransportError::NotOpened { .. }, Some(_))) = &sent {
                    let ready = client.ready_connection(service, address, &tried).await;
                    if let Err((_, Some(unsent))) = sent {
                        sent = match &ready {
                            Some((_, ready)) => ready.send_request(unsent, deadline, false).await,
                            None => connection.send_request(unsent, deadline, false).await,
                        };
                    }
                    if let Some((ready_address, _)) = ready {
                        // Sent elsewhere: the node still opening did not fail this call.
                        silent.armed = false;
                        tracing::debug!(%service, %address, to = %ready_address, "the node's connection is still opening: the call went to a ready one");
                        tried.push(address.to_string());
                        failed_over = Some(ready_address);
                    }
                }
                silent.armed = false;
                let address = failed_over.as_deref().unwrap_or(address);
                match sent {
                    Ok(response) => {
                        let limit = client.inner.receive_limit;
                        let http = response.status().as_u16();
                        let gzip = response
                            .headers()
                            .get(&GRPC_ENCODING)
                            .is_some_and(|c| c == "gzip");
                        let until = deadline.filter(|_| bound_answer);
                        return Ok(response.map(|body| Answer {
                            body: Framed::answer(body, limit, http, gzip, answer_broke),
                            deadline: until.map(|d| {
                                Box::pin(tokio::time::sleep_until(tokio::time::Instant::from_std(
                                    d,
                                )))
                            }),
                            ended: false,
                        }));
                    }
                    // Out of time: no node is tried again, and this one did nothing wrong.
                    Err((err @ TransportError::DeadlinePassed { .. }, _)) => return Err(err.into()),
                    Err((err, unsent)) => {
                        if err.is_unsent() {
                            client.unreachable(service);
                        }
                        tried.push(address.to_string());
                        // No connection could be opened (a node down, its record not yet
                        // expired): nothing was sent, so any other node is tried, without using
                        // up a retry, as long as one is left untried. With several nodes down at
                        // once, a call still reaches a live one.
                        let skip =
                            err.is_unreachable() && client.untried_left(service, &tried).await;
                        match unsent {
                            Some(unsent) if skip || retries > 0 => {
                                tracing::debug!(%service, %address, error = %err, "retrying on another node");
                                if !skip {
                                    retries -= 1;
                                }
                                request = unsent;
                            }
                            _ => return Err(err.into()),
                        }
                    }
                }
            }
        })
    }
}

/// A call's answer as tonic reads it: the node's body, checked frame by frame, and for a stream
/// ended with `DeadlineExceeded` once the call's deadline passes. The server ends a stream at
/// the deadline itself, but one that stopped sending (frozen, its network gone quiet) would
/// otherwise keep the caller waiting for ever, deadline or not; dropping the body resets the
/// stream, so the node stops too.
pub(crate) struct Answer {
    body: Framed<hyper::body::Incoming, hyper::Error>,
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    ended: bool,
}

impl http_body::Body for Answer {
    type Data = hyper::body::Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if this.ended {
            return std::task::Poll::Ready(None);
        }
        if let Some(deadline) = &mut this.deadline {
            if std::future::Future::poll(deadline.as_mut(), cx).is_ready() {
                this.ended = true;
                this.deadline = None;
                return std::task::Poll::Ready(Some(Err(Box::new(Status::deadline_exceeded(
                    "the call's deadline passed while its answer was streaming",
                )))));
            }
        }
        let frame = std::task::ready!(std::pin::Pin::new(&mut this.body).poll_frame(cx));
        if !matches!(&frame, Some(Ok(f)) if f.is_data()) {
            // Trailers, an error or the end: nothing follows, and the timer can go.
            this.deadline = None;
        }
        std::task::Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Why a [`Route`] could not deliver a call: a `Status` (no node to send it to), which tonic
/// passes through unchanged, or a [`TransportError`], which it reports as `Unknown` with the
/// error as its source (see [`caller_status`]).
type RouteError = Box<dyn std::error::Error + Send + Sync>;

/// The status of a call whose deadline had passed before it could be sent.
fn out_of_time(service: &str, path: &str) -> Status {
    Status::deadline_exceeded(format!(
        "the deadline of the call to `{service}` {path} passed before the call was sent"
    ))
}

/// The status of a call that ran out of time.
fn timed_out(service: &str, path: &str, limit: Option<Duration>) -> Status {
    Status::deadline_exceeded(format!(
        "call to `{service}` {path} timed out after {:?}",
        limit.unwrap_or_default()
    ))
}

impl Client {
    /// A client that finds services in `registry`, with go-micro's defaults.
    pub fn new(registry: Arc<dyn Registry>) -> Client {
        ClientBuilder::default().registry(registry).build()
    }

    /// A client that sends every call, whatever service it names, to `address` (`host:port`, or a
    /// `http://host:port` URI).
    pub fn with_address(address: impl Into<String>) -> Client {
        ClientBuilder::default().address(address).build()
    }

    /// A builder for other settings.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Picks the node for a call to `service`, avoiding `tried` when another node exists, and
    /// among those the nodes lately unreachable when another is left: the nodes and the index
    /// of the one picked.
    async fn pick(&self, service: &str, tried: &[String]) -> Result<(Arc<[Node]>, usize), Status> {
        let cache = match &self.inner.target {
            Target::Address(node) => return Ok((Arc::clone(node), 0)),
            Target::Registry(cache) => cache,
        };
        let nodes = cache.nodes(service).await.map_err(|err| {
            Status::unavailable(format!("looking up service `{service}` failed: {err}"))
        })?;
        if nodes.is_empty() {
            return Err(Status::unavailable(format!(
                "service `{service}` has no nodes in the {} registry",
                cache.registry().name()
            )));
        }
        let untried = if tried.is_empty() {
            nodes
        } else {
            let fresh: Arc<[Node]> = nodes
                .iter()
                .filter(|n| !tried.contains(&n.address))
                .cloned()
                .collect();
            if fresh.is_empty() {
                nodes
            } else {
                fresh
            }
        };
        let candidates = self
            .inner
            .unreachable
            .reachable(&untried)
            .unwrap_or(untried);
        let index = self.inner.selector.select(service, &candidates);
        let index = index.min(candidates.len() - 1);
        Ok((candidates, index))
    }

    /// The TLS it reaches nodes with, if any.
    #[cfg(all(feature = "tls", unix))]
    pub(crate) fn tls_setup(&self) -> Option<&crate::tls::ClientTls> {
        self.inner.tls.as_ref()
    }

    /// A node of `service` other than `besides` whose connection is open, and that connection:
    /// not one this call `tried` already, nor one lately unreachable or silent (a hung node's
    /// connection is open too, and a call given to it would wait out its deadline there).
    async fn ready_connection(
        &self,
        service: &str,
        besides: &str,
        tried: &[String],
    ) -> Option<(String, Connection)> {
        let Target::Registry(cache) = &self.inner.target else {
            return None;
        };
        let nodes = cache.nodes(service).await.ok()?;
        let connections = self
            .inner
            .connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let unreachable = &self.inner.unreachable;
        let usable = |n: &&Node| {
            n.address != besides
                && !tried.contains(&n.address)
                && !unreachable.is_marked(&n.address)
        };
        nodes.iter().filter(usable).find_map(|n| {
            let connection = connections.get(&n.address)?;
            connection
                .is_open()
                .then(|| (n.address.clone(), connection.clone()))
        })
    }

    /// Whether `service` has a node not in `tried`, whether or not it was lately unreachable
    /// (after a failure only: it reads the nodes again).
    async fn untried_left(&self, service: &str, tried: &[String]) -> bool {
        let cache = match &self.inner.target {
            Target::Address(_) => return false,
            Target::Registry(cache) => cache,
        };
        cache
            .nodes(service)
            .await
            .is_ok_and(|nodes| nodes.iter().any(|n| !tried.contains(&n.address)))
    }

    /// Forgets the cached nodes of `service` after one of them could not be reached.
    fn unreachable(&self, service: &str) {
        if let Target::Registry(cache) = &self.inner.target {
            cache.invalidate(service);
        }
    }

    /// The connection to `node` (one per address, shared by every call to it).
    fn connection(&self, service: &str, node: &Node) -> Result<Connection, Status> {
        let address = node.address.as_str();
        let mut connections = self
            .inner
            .connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(connection) = connections.get(address) {
            return Ok(connection.clone());
        }
        #[cfg(feature = "tls")]
        let secure = self.inner.tls.is_some();
        #[cfg(not(feature = "tls"))]
        let secure = false;
        if !secure && node.metadata.get("secure").is_some_and(|s| s == "true") {
            // A handshake would fail with nothing a person could act on; said as it is.
            return Err(Status::unavailable(format!(
                "node `{}` of service `{service}` serves TLS (its registration says \
                 secure=true), and this client speaks plain text: give it the CA that signed \
                 the node's certificate (rmicro_runtime::tls::ClientTls, --client-tls-ca)",
                node.id
            )));
        }
        let connection = Connection::with_keepalive(
            address,
            self.inner.keepalive,
            Some(Arc::clone(&self.inner.unreachable)),
            self.inner.tls.clone(),
        )
        .map_err(|err| match &self.inner.target {
            Target::Address(_) => Status::invalid_argument(format!("service `{service}`: {err}")),
            Target::Registry(cache) => Status::unavailable(format!(
                "node `{}` of service `{service}` in the {} registry: {err}; fix or remove its record",
                node.id,
                cache.registry().name()
            )),
        })?;
        // Nodes come and go (new addresses on every deploy): forget the connections that are
        // not open, so the map does not grow with every address ever called. One a call holds
        // stays (being opened: not open yet, its node slow to answer the preface), or the next
        // call to its node would open a second connection beside it.
        connections.retain(|_, c| c.is_open() || c.in_use());
        connections.insert(address.to_string(), connection.clone());
        Ok(connection)
    }

    /// The gRPC client for one call to `service`.
    fn route<'a>(
        &'a self,
        service: &'a str,
        deadline: Option<Instant>,
        bound_answer: bool,
        watch_silence: bool,
    ) -> tonic::client::Grpc<Route<'a>> {
        tonic::client::Grpc::new(Route {
            client: self,
            service,
            deadline,
            bound_answer,
            watch_silence,
        })
        .max_decoding_message_size(self.inner.receive_limit)
        // Servers may compress answers whatever the client asks (grpcio's `set_compression`,
        // grpc-go's old compressors): read gzip ones rather than fail with UNIMPLEMENTED.
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
    }

    /// Copies the metadata of the call being served under the outgoing request's own entries,
    /// and returns the time the call may take: the least of the request's own `grpc-timeout`,
    /// the client's request timeout (`unary` calls only) and what is left of the served call's
    /// deadline.
    fn prepare(&self, metadata: &mut MetadataMap, unary: bool) -> Option<Duration> {
        let served = context::with_current(|ctx| {
            // Key by key, with every value of a key the caller repeated (checking each value
            // against the request as it grows would keep only a key's first).
            for key in ctx.metadata.keys() {
                match key {
                    tonic::metadata::KeyRef::Ascii(k) => {
                        if !metadata.contains_key(k) {
                            for v in ctx.metadata.get_all(k) {
                                metadata.append(k.clone(), v.clone());
                            }
                        }
                    }
                    tonic::metadata::KeyRef::Binary(k) => {
                        if !metadata.contains_key(k) {
                            for v in ctx.metadata.get_all_bin(k) {
                                metadata.append_bin(k.clone(), v.clone());
                            }
                        }
                    }
                }
            }
            ctx.remaining()
        })
        .flatten();
        let own = metadata
            .get(GRPC_TIMEOUT.as_str())
            .and_then(|v| v.to_str().ok())
            .and_then(context::parse_grpc_timeout);
        let default = if unary {
            self.inner.request_timeout
        } else {
            None
        };
        [own, default, served].into_iter().flatten().min()
    }

    /// Makes a unary call to `path` (`/package.Service/Method`) of `service`.
    ///
    /// # Errors
    ///
    /// The status the server answered with; `DeadlineExceeded` when the timeout passed;
    /// `Unavailable` when the service has no reachable node.
    pub async fn unary<Req, Resp>(
        &self,
        service: &str,
        path: &'static str,
        request: Request<Req>,
    ) -> Result<Response<Resp>, Status>
    where
        Req: WireMessage,
        Resp: WireMessage,
    {
        self.call(
            service,
            path,
            request,
            (true, true),
            |mut grpc, request| async move {
                let answer = grpc
                    .server_streaming(
                        request,
                        PathAndQuery::from_static(path),
                        ProstCodec::<Req, Resp>::new(),
                    )
                    .await?;
                one_answer(service, path, answer).await
            },
        )
        .await
    }

    /// Runs one call under its deadline (the whole call, for unary calls; for streams until the
    /// response headers here, and after them in the answer's body), over the route to a node.
    async fn call<'a, M, Resp, F, Fut>(
        &'a self,
        service: &'a str,
        path: &'static str,
        request: Request<M>,
        (unary, one_request): (bool, bool),
        call: F,
    ) -> Result<Resp, Status>
    where
        F: FnOnce(tonic::client::Grpc<Route<'a>>, Request<M>) -> Fut,
        Fut: std::future::Future<Output = Result<Resp, Status>>,
    {
        let (mut metadata, extensions, message) = request.into_parts();
        // A `grpc-timeout` the caller put in the metadata by hand that no server can read: said
        // here, not sent on to be refused there (or, with no other deadline, ignored).
        if let Some(value) = metadata.get(GRPC_TIMEOUT.as_str()) {
            if value
                .to_str()
                .ok()
                .and_then(context::parse_grpc_timeout)
                .is_none()
            {
                return Err(Status::invalid_argument(format!(
                    "the call to `{service}` {path} has grpc-timeout metadata {value:?}, which is \
                     not a gRPC timeout (up to 8 digits and a unit, H, M, S, m, u or n: `500m`); \
                     set the deadline with `Request::set_timeout` instead"
                )));
            }
        }
        let limit = self.prepare(&mut metadata, unary);
        let deadline = limit.map(|limit| Instant::now() + limit);
        // Out of time already (the served call's deadline passed, or the request asked for
        // none): failed here, as grpc-go fails it. The timer below would not stop it: the call
        // runs first, and its request could be on the wire before the timer fires.
        if limit.is_some_and(|limit| limit.is_zero()) {
            return Err(out_of_time(service, path));
        }
        // Pinned where it is made: the timeout holds a pointer to the call, not a copy of it
        // (a call's future is kilobytes, and each move of it a copy).
        // A node owes the head of its answer once it has a call's one request message (the
        // head of a client stream's answer may wait for the whole upload) and if the call had
        // time enough to be answered (a call inheriting the last milliseconds of its caller's
        // deadline says nothing of the node it goes to).
        let watch_silence = one_request && limit.is_some_and(|limit| limit >= MIN_SILENT_BUDGET);
        let call = std::pin::pin!(call(
            self.route(service, deadline, !unary, watch_silence),
            Request::from_parts(metadata, extensions, message),
        ));
        match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline.into(), call)
                .await
                .unwrap_or_else(|_| Err(timed_out(service, path, limit))),
            None => call.await,
        }
        .map_err(caller_status)
    }

    /// Makes a server-streaming call.
    ///
    /// # Errors
    ///
    /// As [`Client::unary`]; errors in the middle of the stream arrive as its items.
    pub async fn server_streaming<Req, Resp>(
        &self,
        service: &str,
        path: &'static str,
        request: Request<Req>,
    ) -> Result<Response<Streaming<Resp>>, Status>
    where
        Req: WireMessage,
        Resp: WireMessage,
    {
        self.call(
            service,
            path,
            request,
            (false, true),
            |mut grpc, request| async move {
                grpc.server_streaming(
                    request,
                    PathAndQuery::from_static(path),
                    ProstCodec::<Req, Resp>::new(),
                )
                .await
            },
        )
        .await
    }

    /// Makes a client-streaming call.
    ///
    /// # Errors
    ///
    /// As [`Client::unary`].
    pub async fn client_streaming<Req, Resp, S>(
        &self,
        service: &str,
        path: &'static str,
        request: Request<S>,
    ) -> Result<Response<Resp>, Status>
    where
        Req: WireMessage,
        Resp: WireMessage,
        S: Stream<Item = Req> + Send + 'static,
    {
        self.call(
            service,
            path,
            request,
            (false, false),
            |mut grpc, request| async move {
                let answer = grpc
                    .streaming(
                        request,
                        PathAndQuery::from_static(path),
                        ProstCodec::<Req, Resp>::new(),
                    )
                    .await?;
                one_answer(service, path, answer).await
            },
        )
        .await
    }

    /// Makes a bidirectional-streaming call.
    ///
    /// # Errors
    ///
    /// As [`Client::unary`]; errors in the middle of the stream arrive as its items.
    pub async fn streaming<Req, Resp, S>(
        &self,
        service: &str,
        path: &'static str,
        request: Request<S>,
    ) -> Result<Response<Streaming<Resp>>, Status>
    where
        Req: WireMessage,
        Resp: WireMessage,
        S: Stream<Item = Req> + Send + 'static,
    {
        self.call(
            service,
            path,
            request,
            (false, false),
            |mut grpc, request| async move {
                grpc.streaming(
                    request,
                    PathAndQuery::from_static(path),
                    ProstCodec::<Req, Resp>::new(),
                )
                .await
            },
        )
        .await
    }
}

/// The one message a unary or client-streaming call is answered with, the trailers' metadata
/// added to the head's. An answer with no message, or with more than one, is `Internal`, as
/// grpc-go's client says of it: tonic's `unary` and `client_streaming` took the first message
/// and read and threw away any after it, so a server answering a method of the wrong kind
/// (another version of the service, a handler registered as server-streaming) went unnoticed.
async fn one_answer<M>(
    service: &str,
    path: &str,
    answer: Response<Streaming<M>>,
) -> Result<Response<M>, Status> {
    let (mut metadata, mut messages, extensions) = answer.into_parts();
    let message = match messages.message().await {
        Ok(Some(message)) => message,
        Ok(None) => {
            return Err(Status::internal(format!(
                "`{service}` answered {path} without a message, where a unary or \
                 client-streaming call is answered with exactly one: is the service's .proto \
                 the one this client was generated from?"
            )))
        }
        // The call failed before its message (a status in the trailers, a message that could
        // not be read, the connection lost): the status carries the head's metadata too, as
        // tonic's does.
        Err(mut status) => {
            extend(status.metadata_mut(), metadata);
            return Err(status);
        }
    };
    if messages.message().await?.is_some() {
        return Err(Status::internal(format!(
            "`{service}` answered {path} with more than one message, where a unary or \
             client-streaming call is answered with exactly one: is the service's .proto the \
             one this client was generated from?"
        )));
    }
    if let Some(trailers) = messages.trailers().await? {
        extend(&mut metadata, trailers);
    }
    Ok(Response::from_parts(metadata, message, extensions))
}

/// `more`'s entries added to `metadata`'s.
fn extend(metadata: &mut MetadataMap, more: MetadataMap) {
    let mut headers = std::mem::take(metadata).into_headers();
    headers.extend(more.into_headers());
    *metadata = MetadataMap::from_headers(headers);
}

// Named once: looked up on every answer's head.
const GRPC_ENCODING: http::HeaderName = http::HeaderName::from_static("grpc-encoding");

/// The size of `headers` as HTTP/2 counts it against `SETTINGS_MAX_HEADER_LIST_SIZE`: each
/// entry's name and value, and 32 bytes more.
fn header_list_size(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum()
}

/// An answer's body that broke off (the connection failed, the server went away mid-stream):
/// `Unavailable`, as gRPC says of transport failures, where tonic would say `Unknown`; a reset
/// with a reason keeps tonic's mapping of it.
fn answer_broke(err: hyper::Error) -> BoxError {
    let reset = std::error::Error::source(&err)
        .and_then(|source| source.downcast_ref::<h2::Error>())
        .is_some_and(|h2| h2.reason().is_some());
    let status = Status::from_error(Box::new(err));
    if reset || status.code() != tonic::Code::Unknown {
        return Box::new(status);
    }
    let mut unavailable = Status::unavailable(format!(
        "the connection failed while the answer came: {}",
        status.message()
    ));
    // The hyper error stays reachable through `source()`.
    unavailable.set_source(std::sync::Arc::new(status));
    Box::new(unavailable)
}

/// The status a caller sees: transport failures are `Unavailable`, as gRPC specifies (tonic
/// reports an error it does not know as `Unknown`).
fn caller_status(status: Status) -> Status {
    match TransportError::find(&status) {
        Some(err) => err.to_status(),
        None => status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn transport_failures_reach_the_caller_as_unavailable() {
        // What tonic makes of the route's error: `Unknown`, with the error as its source.
        let refused = Status::from_error(RouteError::from(TransportError::Connect {
            address: "a:1".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        }));
        assert_eq!(refused.code(), Code::Unknown);
        let seen = caller_status(refused);
        assert_eq!(seen.code(), Code::Unavailable);
        assert!(seen.message().contains("cannot connect to a:1"), "{seen:?}");

        // A status the route gives up with passes through as it is.
        let none = Status::from_error(RouteError::from(Status::unavailable(
            "service `x` has no nodes",
        )));
        let seen = caller_status(none);
        assert_eq!(
            (seen.code(), seen.message()),
            (Code::Unavailable, "service `x` has no nodes")
        );

        let answered = Status::not_found("the server said so");
        assert_eq!(caller_status(answered).message(), "the server said so");
    }
}
