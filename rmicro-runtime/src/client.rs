//! The client generated service clients call through.
//!
//! Generated clients hold a [`Client`] and a service name and hand it every call with the
//! method's gRPC path. The client finds the service's nodes in the [registry](crate::registry)
//! (or uses a fixed address), lets the [selector](crate::selector) pick one, reuses one HTTP/2
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
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

use crate::context;
use crate::registry::{Node, Registry};
use crate::selector::{Random, Selector};
use crate::server::WireMessage;

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
    channels: Mutex<HashMap<String, Channel>>,
}

#[derive(Clone)]
enum Target {
    /// Every service is reached at this one address.
    Address(String),
    /// Services are looked up by name.
    Registry(Arc<dyn Registry>),
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Client");
        match &self.inner.target {
            Target::Address(addr) => d.field("address", addr),
            Target::Registry(r) => d.field("registry", &r.name()),
        };
        d.field("request_timeout", &self.inner.request_timeout)
            .field("retries", &self.inner.retries)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Client`]. `Default` holds go-micro's defaults.
#[derive(Clone)]
pub struct ClientBuilder {
    target: Option<Target>,
    selector: Arc<dyn Selector>,
    request_timeout: Option<Duration>,
    retries: u32,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            target: None,
            selector: Arc::new(Random),
            request_timeout: Some(DEFAULT_REQUEST_TIMEOUT),
            retries: DEFAULT_RETRIES,
        }
    }
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("request_timeout", &self.request_timeout)
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// Look services up in `registry`.
    pub fn registry(&mut self, registry: Arc<dyn Registry>) -> &mut Self {
        self.target = Some(Target::Registry(registry));
        self
    }

    /// Send every call to `address` instead of looking services up.
    pub fn address(&mut self, address: impl Into<String>) -> &mut Self {
        self.target = Some(Target::Address(address.into()));
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

    /// The client. Without a registry or address it uses the process's memory registry.
    pub fn build(&self) -> Client {
        let target = self.target.clone().unwrap_or_else(|| {
            Target::Registry(Arc::new(crate::registry::MemoryRegistry::global()))
        });
        Client {
            inner: Arc::new(Inner {
                target,
                selector: Arc::clone(&self.selector),
                request_timeout: self.request_timeout,
                retries: self.retries,
                channels: Mutex::new(HashMap::new()),
            }),
        }
    }
}

/// A failure to reach a node (worth retrying elsewhere), or a final status.
enum CallError {
    Connect(String, Status),
    Final(Status),
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

    /// Picks the node for a call to `service`, avoiding `tried` when another node exists.
    async fn pick(&self, service: &str, tried: &[String]) -> Result<String, Status> {
        let registry = match &self.inner.target {
            Target::Address(addr) => return Ok(addr.clone()),
            Target::Registry(registry) => registry,
        };
        let services = registry.get_service(service).await.map_err(|err| {
            Status::unavailable(format!("looking up service `{service}` failed: {err}"))
        })?;
        let nodes: Vec<Node> = services.into_iter().flat_map(|s| s.nodes).collect();
        if nodes.is_empty() {
            return Err(Status::unavailable(format!(
                "service `{service}` has no nodes in the {} registry",
                registry.name()
            )));
        }
        let fresh: Vec<Node> = nodes
            .iter()
            .filter(|n| !tried.contains(&n.address))
            .cloned()
            .collect();
        let candidates = if fresh.is_empty() { nodes } else { fresh };
        let index = self.inner.selector.select(service, &candidates);
        Ok(candidates[index.min(candidates.len() - 1)].address.clone())
    }

    fn channel(&self, service: &str, address: &str) -> Result<Channel, Status> {
        let mut channels = self
            .inner
            .channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let uri = if address.contains("://") {
            address.to_string()
        } else {
            format!("http://{address}")
        };
        let endpoint = Endpoint::from_shared(uri).map_err(|err| {
            Status::invalid_argument(format!(
                "address `{address}` of service `{service}` is not a valid host:port: {err}"
            ))
        })?;
        let channel = endpoint
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .connect_lazy();
        channels.insert(address.to_string(), channel.clone());
        Ok(channel)
    }

    async fn grpc(
        &self,
        service: &str,
        address: &str,
    ) -> Result<tonic::client::Grpc<Channel>, CallError> {
        let mut grpc =
            tonic::client::Grpc::new(self.channel(service, address).map_err(CallError::Final)?);
        grpc.ready().await.map_err(|err| {
            CallError::Connect(
                address.to_string(),
                Status::unavailable(format!(
                    "service `{service}` at {address} is not reachable: {err}"
                )),
            )
        })?;
        Ok(grpc)
    }

    /// Metadata of the call being served, copied under the outgoing request's own entries, and
    /// the time the call may take.
    fn prepare(&self, metadata: &mut MetadataMap, unary: bool) -> Option<Duration> {
        let served = context::current();
        if let Some(ctx) = &served {
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
        }
        let own = metadata
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(context::parse_grpc_timeout);
        let default = if unary {
            self.inner.request_timeout
        } else {
            None
        };
        let limit = [own, default, served.and_then(|c| c.remaining())]
            .into_iter()
            .flatten()
            .min();
        if let Some(limit) = limit {
            // Milliseconds, rounded up, in at most 8 digits as the gRPC spec requires.
            let ms = limit.as_millis().clamp(1, 99_999_999);
            if let Ok(v) = format!("{ms}m").parse() {
                metadata.insert("grpc-timeout", v);
            }
        }
        limit
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
        Req: WireMessage + Clone,
        Resp: WireMessage,
    {
        let (mut metadata, extensions, message) = request.into_parts();
        let limit = self.prepare(&mut metadata, true);
        let started = Instant::now();
        let timed_out = || {
            Status::deadline_exceeded(format!(
                "call to `{service}` {path} timed out after {:?}",
                limit.unwrap_or_default()
            ))
        };
        let mut extensions = Some(extensions);
        let mut tried = Vec::new();
        let attempt = async {
            loop {
                let address = self.pick(service, &tried).await?;
                let request = Request::from_parts(
                    metadata.clone(),
                    extensions.take().unwrap_or_default(),
                    message.clone(),
                );
                let result = match self.grpc(service, &address).await {
                    Ok(mut grpc) => grpc
                        .unary(
                            request,
                            PathAndQuery::from_static(path),
                            ProstCodec::<Req, Resp>::new(),
                        )
                        .await
                        .map_err(|status| classify(&address, status)),
                    Err(err) => Err(err),
                };
                match result {
                    Ok(response) => return Ok(response),
                    Err(CallError::Connect(address, status)) => {
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
        match limit {
            Some(limit) => {
                match tokio::time::timeout(limit.saturating_sub(started.elapsed()), attempt).await {
                    Ok(result) => result,
                    Err(_) => Err(timed_out()),
                }
            }
            None => attempt.await,
        }
    }

    /// Opens a streaming call (no retries: a stream cannot be replayed).
    async fn open<S, Resp, F, Fut>(
        &self,
        service: &str,
        request: Request<S>,
        call: F,
    ) -> Result<Resp, Status>
    where
        F: FnOnce(tonic::client::Grpc<Channel>, Request<S>) -> Fut,
        Fut: std::future::Future<Output = Result<Resp, Status>>,
    {
        let (mut metadata, extensions, message) = request.into_parts();
        let limit = self.prepare(&mut metadata, false);
        let address = self.pick(service, &[]).await?;
        let grpc = self.grpc(service, &address).await.map_err(|e| match e {
            CallError::Connect(_, s) | CallError::Final(s) => s,
        })?;
        let fut = call(grpc, Request::from_parts(metadata, extensions, message));
        match limit {
            Some(limit) => tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
                Err(Status::deadline_exceeded(format!(
                    "call to `{service}` timed out after {limit:?}"
                )))
            }),
            None => fut.await,
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
        self.open(service, request, |mut grpc, request| async move {
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
        self.open(service, request, |mut grpc, request| async move {
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
        self.open(service, request, |mut grpc, request| async move {
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

/// A status that came from the transport (the node was not reached) rather than from a server.
fn classify(address: &str, status: Status) -> CallError {
    let transport =
        status.code() == Code::Unavailable && std::error::Error::source(&status).is_some();
    if transport {
        CallError::Connect(address.to_string(), status)
    } else {
        CallError::Final(status)
    }
}
