//! The client generated service clients call through.
//!
//! Generated clients hold a [`Client`] and a service name, and hand every call to it with the
//! method's gRPC path. The client decides where the call goes: today to a fixed address
//! ([`Client::with_address`]); the registry-backed selector plugs in behind the same methods, so
//! generated code does not change when discovery is added.
//!
//! ```no_run
//! use rmicro_runtime::Client;
//! let client = Client::with_address("127.0.0.1:50051");
//! // let user = UserClient::new("go.micro.srv.user", client);   (generated)
//! // let reply = user.call(CallRequest { name: "Ada".into() }).await?;
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_core::Stream;
use http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

use crate::server::WireMessage;

/// Calls services by name. Cheap to clone: clones share connections.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    target: Target,
    /// One HTTP/2 connection per node address, multiplexing every call to that node.
    channels: Mutex<HashMap<String, Channel>>,
}

enum Target {
    /// Every service is reached at this one address.
    Address(String),
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Client");
        match &self.inner.target {
            Target::Address(addr) => d.field("address", addr),
        };
        d.finish_non_exhaustive()
    }
}

impl Client {
    /// A client that sends every call, whatever service it names, to `address` (`host:port`, or a
    /// `http://host:port` URI).
    ///
    /// The connection is opened on the first call and reused after that.
    pub fn with_address(address: impl Into<String>) -> Client {
        Client {
            inner: Arc::new(Inner {
                target: Target::Address(address.into()),
                channels: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The node address a call to `service` goes to.
    fn resolve(&self, _service: &str) -> Result<String, Status> {
        match &self.inner.target {
            Target::Address(addr) => Ok(addr.clone()),
        }
    }

    fn channel(&self, service: &str) -> Result<Channel, Status> {
        let address = self.resolve(service)?;
        let mut channels = self
            .inner
            .channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(channel) = channels.get(&address) {
            return Ok(channel.clone());
        }
        let uri = if address.contains("://") {
            address.clone()
        } else {
            format!("http://{address}")
        };
        let endpoint = Endpoint::from_shared(uri).map_err(|err| {
            Status::invalid_argument(format!(
                "address `{address}` of service `{service}` is not a valid host:port: {err}"
            ))
        })?;
        let channel = endpoint.tcp_nodelay(true).connect_lazy();
        channels.insert(address, channel.clone());
        Ok(channel)
    }

    async fn grpc(&self, service: &str) -> Result<tonic::client::Grpc<Channel>, Status> {
        let mut grpc = tonic::client::Grpc::new(self.channel(service)?);
        grpc.ready().await.map_err(|err| {
            Status::unavailable(format!("service `{service}` is not reachable: {err}"))
        })?;
        Ok(grpc)
    }

    /// Makes a unary call to `path` (`/package.Service/Method`) of `service`.
    ///
    /// # Errors
    ///
    /// The status the server answered with, or `Unavailable` when no connection could be made.
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
        self.grpc(service)
            .await?
            .unary(
                request,
                PathAndQuery::from_static(path),
                ProstCodec::<Req, Resp>::new(),
            )
            .await
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
        self.grpc(service)
            .await?
            .server_streaming(
                request,
                PathAndQuery::from_static(path),
                ProstCodec::<Req, Resp>::new(),
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
        self.grpc(service)
            .await?
            .client_streaming(
                request,
                PathAndQuery::from_static(path),
                ProstCodec::<Req, Resp>::new(),
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
        self.grpc(service)
            .await?
            .streaming(
                request,
                PathAndQuery::from_static(path),
                ProstCodec::<Req, Resp>::new(),
            )
            .await
    }
}
