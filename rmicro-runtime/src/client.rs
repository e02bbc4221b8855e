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
use crate::registry::{Node, NodeCache, Registry, DEFAULT_CACHE_TTL};
use crate::selector::{Random, Selector};
use crate::server::WireMessage;
use crate::transport::{Connection, TransportError};

/// go-micro's default request timeout.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// go-micro's default number of retries after a connection failure.
pub const DEFAULT_RETRIES: u32 = 1;

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
    /// One HTTP/2 connection per node address, multiplexing every call to that node.
    connections: Mutex<HashMap<String, Connection>>,
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
        }
    }
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("request_timeout", &self.request_timeout)
            .field("retries", &self.retries)
            .field("cache_ttl", &self.cache_ttl)
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

    /// How often a unary call that could not reach a node is retried on another. Default: 1.
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
        Client {
            inner: Arc::new(Inner {
                target,
                selector: Arc::clone(&self.selector),
                request_timeout: self.request_timeout,
                retries: self.retries,
                connections: Mutex::new(HashMap::new()),
            }),
        }
    }
}

/// Sends a message encoded beforehand and decodes `Resp` as prost does.
struct PreEncoded<Resp>(std::marker::PhantomData<fn() -> Resp>);

impl<Resp> Default for PreEncoded<Resp> {
    fn default() -> Self {
        PreEncoded(std::marker::PhantomData)
    }
}

impl<Resp: WireMessage> tonic::codec::Codec for PreEncoded<Resp> {
    type Encode = bytes::Bytes;
    type Decode = Resp;
    type Encoder = BytesEncoder;
    type Decoder = <ProstCodec<Resp, Resp> as tonic::codec::Codec>::Decoder;

    fn encoder(&mut self) -> BytesEncoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<Resp, Resp>::default().decoder()
    }
}

/// Copies encoded bytes into the frame.
struct BytesEncoder;

impl tonic::codec::Encoder for BytesEncoder {
    type Item = bytes::Bytes;
    type Error = Status;

    fn encode(
        &mut self,
        item: bytes::Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Status> {
        bytes::BufMut::put(dst, item);
        Ok(())
    }
}

/// A failure to reach a node (worth retrying elsewhere), or a final status.
enum CallError {
    Connect(String, Status),
    Final(Status),
}

const GRPC_TIMEOUT: &str = "grpc-timeout";

/// Sets the request's `grpc-timeout` to `limit`, in milliseconds rounded up (so the server never
/// gives up before the caller), in at most 8 digits as the gRPC spec requires.
fn set_timeout(metadata: &mut MetadataMap, limit: Duration) {
    let ms = limit.as_nanos().div_ceil(1_000_000).clamp(1, 99_999_999) as u32;
    let mut buf = [0u8; 9];
    let mut at = buf.len() - 1;
    buf[at] = b'm';
    let mut rest = ms;
    loop {
        at -= 1;
        buf[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    // Digits and `m` are ASCII, so neither conversion fails.
    if let Some(value) = std::str::from_utf8(&buf[at..])
        .ok()
        .and_then(|text| tonic::metadata::MetadataValue::try_from(text).ok())
    {
        metadata.insert(GRPC_TIMEOUT, value);
    }
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

    /// Picks the node for a call to `service`, avoiding `tried` when another node exists: the
    /// nodes and the index of the one picked.
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
        let candidates = if tried.is_empty() {
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
        let index = self.inner.selector.select(service, &candidates);
        let index = index.min(candidates.len() - 1);
        Ok((candidates, index))
    }

    /// Forgets the cached nodes of `service` after one of them could not be reached.
    fn unreachable(&self, service: &str) {
        if let Target::Registry(cache) = &self.inner.target {
            cache.invalidate(service);
        }
    }

    /// The gRPC client for `address`, over the connection to it (shared by every call).
    fn grpc(
        &self,
        service: &str,
        address: &str,
    ) -> Result<tonic::client::Grpc<Connection>, Status> {
        let mut connections = self
            .inner
            .connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(connection) = connections.get(address) {
            return Ok(connection.grpc());
        }
        let connection = Connection::new(address)
            .map_err(|err| Status::invalid_argument(format!("service `{service}`: {err}")))?;
        connections.insert(address.to_string(), connection.clone());
        Ok(connection.grpc())
    }

    /// Copies the metadata of the call being served under the outgoing request's own entries,
    /// and returns the time the call may take: the least of the request's own `grpc-timeout`,
    /// the client's request timeout (`unary` calls only) and what is left of the served call's
    /// deadline.
    fn prepare(&self, metadata: &mut MetadataMap, unary: bool) -> Option<Duration> {
        let served = context::with_current(|ctx| {
            for kv in ctx.metadata.iter() {
                match kv {
                    tonic::metadata::KeyAndValueRef::Ascii(k, v) => {
                        if !metadata.contains_key(k) {
                            metadata.insert(k.clone(), v.clone());
                        }
                    }
                    tonic::metadata::KeyAndValueRef::Binary(k, v) => {
                        if !metadata.contains_key(k) {
                            metadata.insert_bin(k.clone(), v.clone());
                        }
                    }
                }
            }
            ctx.remaining()
        })
        .flatten();
        let own = metadata
            .get(GRPC_TIMEOUT)
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
        let (mut metadata, extensions, message) = request.into_parts();
        let limit = self.prepare(&mut metadata, true);
        let deadline = limit.map(|limit| Instant::now() + limit);
        // Encoded once: a retry sends the same bytes instead of a deep copy of the message.
        let message = bytes::Bytes::from(message.encode_to_vec());
        let mut extensions = Some(extensions);
        let mut tried = Vec::new();
        let attempt = async {
            loop {
                let (nodes, index) = self.pick(service, &tried).await?;
                let address = nodes[index].address.as_str();
                if let Some(deadline) = deadline {
                    // Each attempt tells the server the time that is really left.
                    set_timeout(
                        &mut metadata,
                        deadline.saturating_duration_since(Instant::now()),
                    );
                }
                let last = tried.len() as u32 >= self.inner.retries;
                let request = Request::from_parts(
                    if last {
                        std::mem::take(&mut metadata)
                    } else {
                        metadata.clone()
                    },
                    extensions.take().unwrap_or_default(),
                    message.clone(),
                );
                let mut grpc = self.grpc(service, address)?;
                let result = grpc
                    .unary(
                        request,
                        PathAndQuery::from_static(path),
                        PreEncoded::<Resp>::default(),
                    )
                    .await
                    .map_err(|status| classify(address, status));
                match result {
                    Ok(response) => return Ok(response),
                    Err(CallError::Connect(address, status)) => {
                        self.unreachable(service);
                        if tried.len() as u32 >= self.inner.retries {
                            return Err(status);
                        }
                        tracing::debug!(%service, %address, error = %status.message(), "retrying on another node");
                        tried.push(address);
                    }
                    Err(CallError::Final(status)) => return Err(status),
                }
            }
        };
        match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline.into(), attempt)
                .await
                .unwrap_or_else(|_| Err(timed_out(service, path, limit))),
            None => attempt.await,
        }
    }

    /// Opens a streaming call (no retries: a stream cannot be replayed).
    async fn open<S, Resp, F, Fut>(
        &self,
        service: &str,
        path: &'static str,
        request: Request<S>,
        call: F,
    ) -> Result<Resp, Status>
    where
        F: FnOnce(tonic::client::Grpc<Connection>, Request<S>) -> Fut,
        Fut: std::future::Future<Output = Result<Resp, Status>>,
    {
        let (mut metadata, extensions, message) = request.into_parts();
        let limit = self.prepare(&mut metadata, false);
        if let Some(limit) = limit {
            set_timeout(&mut metadata, limit);
        }
        let deadline = limit.map(|limit| Instant::now() + limit);
        let opened = async {
            let (nodes, index) = self.pick(service, &[]).await?;
            let address = nodes[index].address.as_str();
            let grpc = self.grpc(service, address)?;
            call(grpc, Request::from_parts(metadata, extensions, message))
                .await
                .map_err(|status| match classify(address, status) {
                    CallError::Connect(_, s) => {
                        self.unreachable(service);
                        s
                    }
                    CallError::Final(s) => s,
                })
        };
        match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline.into(), opened)
                .await
                .unwrap_or_else(|_| Err(timed_out(service, path, limit))),
            None => opened.await,
        }
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
        self.open(service, path, request, |mut grpc, request| async move {
            grpc.server_streaming(
                request,
                PathAndQuery::from_static(path),
                ProstCodec::<Req, Resp>::new(),
            )
            .await
        })
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
        self.open(service, path, request, |mut grpc, request| async move {
            grpc.client_streaming(
                request,
                PathAndQuery::from_static(path),
                ProstCodec::<Req, Resp>::new(),
            )
            .await
        })
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
        self.open(service, path, request, |mut grpc, request| async move {
            grpc.streaming(
                request,
                PathAndQuery::from_static(path),
                ProstCodec::<Req, Resp>::new(),
            )
            .await
        })
        .await
    }
}

/// Tells a request that never reached the node (worth retrying elsewhere) from one that got an
/// answer or failed on the way; transport failures become `Unavailable`, as gRPC specifies.
fn classify(address: &str, status: Status) -> CallError {
    match TransportError::find(&status) {
        Some(err) if err.is_unsent() => CallError::Connect(address.to_string(), err.to_status()),
        Some(err) => CallError::Final(err.to_status()),
        None => CallError::Final(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn timeout_header(limit: Duration) -> String {
        let mut metadata = MetadataMap::new();
        set_timeout(&mut metadata, limit);
        metadata
            .get(GRPC_TIMEOUT)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn grpc_timeout_is_rounded_up_to_whole_milliseconds() {
        assert_eq!(timeout_header(Duration::from_millis(300)), "300m");
        assert_eq!(timeout_header(Duration::from_micros(299_001)), "300m");
        assert_eq!(timeout_header(Duration::from_nanos(1)), "1m");
        assert_eq!(timeout_header(Duration::ZERO), "1m");
        assert_eq!(timeout_header(Duration::from_secs(5)), "5000m");
        assert_eq!(timeout_header(Duration::from_secs(10_000_000)), "99999999m");
        for ms in [1u64, 9, 10, 99, 100, 12_345, 99_999_999] {
            let header = timeout_header(Duration::from_millis(ms));
            assert_eq!(
                context::parse_grpc_timeout(&header),
                Some(Duration::from_millis(ms))
            );
        }
    }

    #[test]
    fn unsent_requests_are_retryable_and_transport_failures_unavailable() {
        let as_tonic_reports = |err: TransportError| Status::from_error(Box::new(err));
        let refused = as_tonic_reports(TransportError::Connect {
            address: "a:1".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        });
        match classify("a:1", refused) {
            CallError::Connect(address, status) => {
                assert_eq!(address, "a:1");
                assert_eq!(status.code(), Code::Unavailable);
                assert!(
                    status.message().contains("cannot connect to a:1"),
                    "{status:?}"
                );
            }
            CallError::Final(status) => panic!("a refused connection is retryable: {status:?}"),
        }
        let answered = Status::unavailable("the server said so");
        assert!(
            matches!(classify("a:1", answered), CallError::Final(s) if s.message() == "the server said so")
        );
    }
}
