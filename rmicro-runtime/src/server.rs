//! The gRPC server that generated handlers are registered on.
//!
//! A [`Server`] is a table from gRPC paths (`/package.Service/Method`) to handlers. Generated
//! `register_*_handler` functions fill it through [`ServiceDef`]; [`Server::bind`] then serves it
//! over HTTP/2 with hyper, so any gRPC client (grpc-go, grpcio, tonic, grpcurl) can call it.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use rmicro_runtime::Server;
//!
//! let server = Server::new();
//! // register_user_handler(&mut server, MyUser)?;   (generated)
//! let bound = server.bind("127.0.0.1:0").await?;
//! println!("serving on {}", bound.local_addr());
//! bound.serve().await
//! # }
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, ToSocketAddrs};
use tonic::body::Body;
use tonic::server::Grpc;
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;
use tower_service::Service;

use crate::context::{self, CallContext};
use crate::endpoint::Endpoint;
use crate::frames::Framed;
pub use crate::frames::DEFAULT_MAX_RECEIVE_MESSAGE_SIZE;
use crate::transport::Keepalive;

/// The stream a server-streaming or bidirectional handler answers with.
///
/// Build one from any `Stream` with `Box::pin(stream)`.
pub type ResponseStream<T> =
    Pin<Box<dyn futures_core::Stream<Item = Result<T, Status>> + Send + 'static>>;

type RouteFuture = Pin<Box<dyn Future<Output = http::Response<Body>> + Send + 'static>>;
/// A method's route: it takes the request and how its messages are received.
#[derive(Clone)]
struct Route {
    serve: Arc<dyn Fn(http::Request<Body>, Receive) -> RouteFuture + Send + Sync + 'static>,
    /// Whether the method takes one request message (unary and server-streaming methods): a
    /// call that sends more fails with `Internal`, as grpc-go's and grpc-java's do, instead
    /// of having the others dropped unread.
    single: bool,
}

/// How a call's request messages are received: the largest taken, and whether the call says
/// they are compressed (`grpc-encoding`, looked up once per call).
#[derive(Debug, Clone, Copy)]
struct Receive {
    limit: usize,
    compressed: bool,
}

/// Why a service could not be added to a [`Server`].
#[derive(thiserror::Error, PartialEq, Eq)]
pub enum RegisterError {
    /// A service of this name is registered already.
    #[error("service `{0}` is already registered on this server; register each handler once")]
    DuplicateService(String),
    /// Another service already handles this gRPC path.
    #[error("gRPC path `{0}` is already handled by another service on this server")]
    DuplicatePath(String),
}

debug_as_display!(RegisterError);

/// One gRPC service's handlers, as generated code describes it before adding it to a [`Server`].
pub struct ServiceDef {
    name: &'static str,
    endpoints: &'static [Endpoint],
    descriptors: Option<&'static [u8]>,
    routes: Vec<(&'static str, Route)>,
}

impl std::fmt::Debug for ServiceDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceDef")
            .field("name", &self.name)
            .field(
                "paths",
                &self.routes.iter().map(|r| r.0).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Adapts a handler closure to the tower `Service` shape tonic's server codec drives.
struct Handler<F>(Arc<F>);

impl<F> Clone for Handler<F> {
    fn clone(&self) -> Self {
        Handler(Arc::clone(&self.0))
    }
}

impl<F, Req, Fut, Resp> Service<Request<Req>> for Handler<F>
where
    F: Fn(Request<Req>) -> Fut,
    Fut: Future<Output = Result<Response<Resp>, Status>>,
{
    type Response = Response<Resp>;
    type Error = Status;
    type Future = Fut;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Req>) -> Fut {
        (self.0)(request)
    }
}

/// Wraps a method's handling into a [`Route`] that runs it inside the call's
/// [context](crate::context) (deadline and metadata, for propagation to outgoing calls) and answers
/// `DeadlineExceeded` once the caller's `grpc-timeout` has passed: before the response head, or,
/// for methods that stream their response (`streams`), in the middle of the stream. `method` is
/// the route's path, for the log of a handler that panics; `single` says the method takes one
/// request message.
fn route<F, Fut>(method: &'static str, streams: bool, single: bool, serve: F) -> Route
where
    F: Fn(http::Request<Body>, Receive) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = http::Response<Body>> + Send + 'static,
{
    let serve = Arc::new(move |req: http::Request<Body>, receive| -> RouteFuture {
        let ctx = match CallContext::from_request(req.headers()) {
            Ok(ctx) => ctx,
            Err(malformed) => {
                return Box::pin(async move { Status::internal(malformed).into_http() })
            }
        };
        let deadline = ctx
            .remaining()
            .map(|left| tokio::time::Instant::now() + left);
        // A streamed answer is polled after the handler returned, outside the scope below: it
        // keeps a copy of the context, so that the calls its stream makes propagate it too.
        let stream_ctx = streams.then(|| ctx.clone());
        Box::pin(Served {
            method,
            handling: context::scope(ctx, serve(req, receive)),
            deadline,
            timer: None,
            stream_ctx,
        })
    });
    Route { serve, single }
}

pin_project_lite::pin_project! {
    /// A method's handling under the caller's deadline, answering `DeadlineExceeded` once it
    /// passes before the response head. The handler's future stays where the box put it: no
    /// wrapping future (a timeout, an `async` block) that moves it again, each move a copy of
    /// kilobytes, which callgrind measured at ~1 % of a small call in bench/rpc. The deadline's
    /// timer starts only once the handling has to wait: most unary calls are answered at their
    /// first poll, and a timer set and cancelled is a lock on tokio's timer wheel each time.
    struct Served<F> {
        // The method's path (`/package.Service/Method`), for the log of a panic.
        method: &'static str,
        #[pin]
        handling: F,
        // The caller's `grpc-timeout`, if it sent one.
        deadline: Option<tokio::time::Instant>,
        #[pin]
        timer: Option<tokio::time::Sleep>,
        // The call's context for its streamed answer; `None` for methods that answer with one
        // message.
        stream_ctx: Option<CallContext>,
    }
}

impl<F> Future for Served<F>
where
    F: Future<Output = http::Response<Body>>,
{
    type Output = http::Response<Body>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<http::Response<Body>> {
        let mut this = self.project();
        // A handler that panics answers Internal, as go-micro's servers recover a handler's
        // panic, and is not polled again; the connection and its other calls go on. (Without
        // this, the panic would reset the stream, which callers take for a transport failure.)
        let handling = &mut this.handling;
        let polled =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handling.as_mut().poll(cx)));
        let polled = match polled {
            Ok(polled) => polled,
            Err(panic) => return Poll::Ready(panicked(this.method, &*panic).into_http()),
        };
        let Poll::Ready(response) = polled else {
            if let Some(deadline) = *this.deadline {
                if this.timer.is_none() {
                    this.timer.set(Some(tokio::time::sleep_until(deadline)));
                }
                if let Some(timer) = this.timer.as_pin_mut() {
                    if timer.poll(cx).is_ready() {
                        return Poll::Ready(deadline_passed().into_http());
                    }
                }
            }
            return Poll::Pending;
        };
        let Some(ctx) = this.stream_ctx.take() else {
            return Poll::Ready(response);
        };
        let method = *this.method;
        let response = response.map(|body| Body::new(InScope { body, ctx, method }));
        // The caller's deadline also ends the streamed answer.
        Poll::Ready(match *this.deadline {
            Some(deadline) => response.map(|body| Body::new(UntilDeadline::new(body, deadline))),
            None => response,
        })
    }
}

/// A streamed response body polled in its call's context, as the handler that made it ran: a
/// stream that calls other services per item (a relay, a fan-out) carries the caller's deadline
/// and metadata onto those calls, as a unary handler does.
struct InScope {
    body: Body,
    ctx: CallContext,
    method: &'static str,
}

impl http_body::Body for InScope {
    type Data = hyper::body::Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Status>>> {
        let this = self.get_mut();
        // A copy per poll: a task-local is set by value. Nothing is allocated for a call without
        // metadata; a call with some copies its few entries per message of the answer.
        let body = &mut this.body;
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            context::sync_scope(this.ctx.clone(), || Pin::new(&mut *body).poll_frame(cx))
        }));
        match polled {
            Ok(polled) => polled,
            // A stream that panicked ends with Internal, in trailers as any status (an error
            // would have the stream reset), and is not polled again. What it had made but not
            // yet sent goes with it.
            Err(panic) => {
                *body = Body::empty();
                let mut trailers = http::HeaderMap::new();
                Poll::Ready(Some(
                    match panicked(this.method, &*panic).add_header(&mut trailers) {
                        Ok(()) => Ok(http_body::Frame::trailers(trailers)),
                        Err(status) => Err(status),
                    },
                ))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

// Named once: looked up on every call's head.
const GRPC_ENCODING: http::HeaderName = http::HeaderName::from_static("grpc-encoding");

/// The status of a call to `method` whose handler (or response stream) panicked with `panic`:
/// Internal, with go-micro's error JSON saying so, as its servers answer a recovered panic.
fn panicked(method: &str, panic: &(dyn std::any::Any + Send)) -> Status {
    let what = crate::errors::panic_message(panic);
    tracing::error!(%method, panic = %what, "a handler panicked; the call is answered Internal");
    crate::errors::Error::internal("go.micro.server", format!("panic recovered: {what}")).into()
}

fn deadline_passed() -> Status {
    Status::deadline_exceeded("the caller's deadline passed while the call was served")
}

/// A streamed response body that ends with `DeadlineExceeded` when the caller's deadline passes
/// before it is complete (dropping the handler's stream), as gRPC servers do.
struct UntilDeadline {
    body: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// Trailers went out (the handler's, or the deadline's): nothing follows.
    done: bool,
}

impl UntilDeadline {
    fn new(body: Body, deadline: tokio::time::Instant) -> Self {
        UntilDeadline {
            body,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            done: false,
        }
    }
}

impl http_body::Body for UntilDeadline {
    type Data = hyper::body::Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Status>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.done = true;
            // Drop the handler's stream now, not when the connection lets go of this body.
            this.body = Body::empty();
            let mut trailers = http::HeaderMap::new();
            return match deadline_passed().add_header(&mut trailers) {
                Ok(()) => Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers)))),
                Err(status) => Poll::Ready(Some(Err(status))),
            };
        }
        let frame = std::task::ready!(Pin::new(&mut this.body).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) if frame.is_trailers() => this.done = true,
            Some(Err(_)) | None => this.done = true,
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Bounds every message type crossing the wire satisfies.
pub trait WireMessage: prost::Message + Default + Send + Sync + 'static {}
impl<T: prost::Message + Default + Send + Sync + 'static> WireMessage for T {}

impl ServiceDef {
    /// Starts describing the service with the full gRPC name `name` (`package.Service`).
    pub fn new(name: &'static str, endpoints: &'static [Endpoint]) -> Self {
        ServiceDef {
            name,
            endpoints,
            descriptors: None,
            routes: Vec::new(),
        }
    }

    /// The encoded `FileDescriptorSet` describing the service (its `.proto` and imports), for
    /// gRPC server reflection.
    pub fn descriptors(mut self, set: &'static [u8]) -> Self {
        self.descriptors = Some(set);
        self
    }

    /// The full gRPC service name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The endpoint metadata the generated code recorded.
    pub fn endpoints(&self) -> &'static [Endpoint] {
        self.endpoints
    }

    /// Adds a unary method.
    pub fn unary<Req, Resp, F, Fut>(mut self, path: &'static str, handler: F) -> Self
    where
        Req: WireMessage,
        Resp: WireMessage,
        F: Fn(Request<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Response<Resp>, Status>> + Send + 'static,
    {
        let handler = Handler(Arc::new(handler));
        let route = route(path, false, true, move |req, receive| {
            let handler = handler.clone();
            let mut grpc = grpc::<Req, Resp>(receive);
            async move { grpc.unary(handler, req).await }
        });
        self.routes.push((path, route));
        self
    }

    /// Adds a server-streaming method.
    pub fn server_streaming<Req, Resp, F, Fut>(mut self, path: &'static str, handler: F) -> Self
    where
        Req: WireMessage,
        Resp: WireMessage,
        F: Fn(Request<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Response<ResponseStream<Resp>>, Status>> + Send + 'static,
    {
        let handler = Handler(Arc::new(handler));
        let route = route(path, true, true, move |req, receive| {
            let handler = handler.clone();
            let mut grpc = grpc::<Req, Resp>(receive);
            async move { grpc.server_streaming(handler, req).await }
        });
        self.routes.push((path, route));
        self
    }

    /// Adds a client-streaming method.
    pub fn client_streaming<Req, Resp, F, Fut>(mut self, path: &'static str, handler: F) -> Self
    where
        Req: WireMessage,
        Resp: WireMessage,
        F: Fn(Request<Streaming<Req>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Response<Resp>, Status>> + Send + 'static,
    {
        let handler = Handler(Arc::new(handler));
        let route = route(path, false, false, move |req, receive| {
            let handler = handler.clone();
            let mut grpc = grpc::<Req, Resp>(receive);
            async move { grpc.client_streaming(handler, req).await }
        });
        self.routes.push((path, route));
        self
    }

    /// Adds a bidirectional-streaming method.
    pub fn streaming<Req, Resp, F, Fut>(mut self, path: &'static str, handler: F) -> Self
    where
        Req: WireMessage,
        Resp: WireMessage,
        F: Fn(Request<Streaming<Req>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Response<ResponseStream<Resp>>, Status>> + Send + 'static,
    {
        let handler = Handler(Arc::new(handler));
        let route = route(path, true, false, move |req, receive| {
            let handler = handler.clone();
            let mut grpc = grpc::<Req, Resp>(receive);
            async move { grpc.streaming(handler, req).await }
        });
        self.routes.push((path, route));
        self
    }
}

/// The gRPC codec layer of a call, taking request messages as `receive` says:
/// gzip-compressed request messages are accepted
/// (clients of grpc-go, grpcio and others send them when told to compress); responses go out
/// uncompressed. Turned on only for a call whose messages say they are compressed
/// (`grpc-encoding`): tonic would otherwise answer every call with a `grpc-accept-encoding`
/// header, saying what nobody asked.
fn grpc<Req: WireMessage, Resp: WireMessage>(receive: Receive) -> Grpc<ProstCodec<Resp, Req>> {
    let grpc = Grpc::new(ProstCodec::<Resp, Req>::new()).max_decoding_message_size(receive.limit);
    if receive.compressed {
        grpc.accept_compressed(tonic::codec::CompressionEncoding::Gzip)
    } else {
        grpc
    }
}

/// A registered service: its name and endpoint metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceInfo {
    /// The full gRPC service name.
    pub name: &'static str,
    /// Its endpoints.
    pub endpoints: &'static [Endpoint],
}

/// A gRPC server: the handlers of one or more services, served over HTTP/2. A [`Service`]
/// holds one and also registers it; use a bare server for a fixed address and no registry.
///
/// [`Service`]: crate::Service
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let mut server = rmicro_runtime::Server::new();
/// // register_user_handler(&mut server, MyUser)?;   (generated)
/// let bound = server.bind("127.0.0.1:0").await?; // port 0: a free port
/// println!("listening on {}", bound.local_addr());
/// bound.serve().await?;
/// # Ok(()) }
/// ```
#[derive(Default)]
pub struct Server {
    services: Vec<ServiceInfo>,
    routes: HashMap<&'static str, Route>,
    descriptors: Vec<&'static [u8]>,
    drain_timeout: Option<Duration>,
    keepalive: Option<Duration>,
    keepalive_timeout: Option<Duration>,
    max_receive_message_size: Option<usize>,
    handshake_timeout: Option<Duration>,
    health: crate::health::Health,
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::ServerTls>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("services", &self.services)
            .finish_non_exhaustive()
    }
}

/// How long a client has, once connected, to complete its TLS handshake (with TLS) and send
/// HTTP/2's connection preface: see [`Server::handshake_timeout`].
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many streams a client may open and reset before the server takes them, on one
/// connection, before the server closes it (see `serve_with_shutdown`).
const MAX_PENDING_ACCEPT_RESETS: usize = 1024;

/// How long a graceful shutdown waits for calls in flight before closing connections.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

impl Server {
    /// An empty server.
    pub fn new() -> Self {
        Server::default()
    }

    /// Sets how long [`BoundServer::serve_with_shutdown`] waits for calls in flight once the
    /// shutdown signal fires; the connections of calls still running then are closed.
    /// Default: [`DEFAULT_DRAIN_TIMEOUT`] (10 s).
    pub fn drain_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.drain_timeout = Some(timeout);
        self
    }

    /// Sends an HTTP/2 PING on each client connection every `interval`, and closes a
    /// connection whose ping goes unanswered for the [keepalive
    /// timeout](Self::keepalive_timeout): connections of clients that vanished without a reset
    /// (a dropped NAT mapping, a host gone) are closed instead of kept forever. Clients do not
    /// limit how often a server pings. Default: `None`, no pings (as in grpc).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let mut server = rmicro_runtime::Server::new();
    /// server.keepalive(Some(Duration::from_secs(2 * 60 * 60)));
    /// ```
    pub fn keepalive(&mut self, interval: Option<Duration>) -> &mut Self {
        self.keepalive = interval;
        self
    }

    /// How long a keepalive ping may go unanswered before the connection is closed. Default:
    /// [`DEFAULT_KEEPALIVE_TIMEOUT`](crate::transport::DEFAULT_KEEPALIVE_TIMEOUT) (20 s, as
    /// grpc). Does nothing without [`keepalive`](Self::keepalive).
    pub fn keepalive_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.keepalive_timeout = Some(timeout);
        self
    }

    /// The largest request message the server takes, in bytes (compressed, and once
    /// decompressed); a call with a larger one fails with `ResourceExhausted`, a stream from
    /// that message on. Default: [`DEFAULT_MAX_RECEIVE_MESSAGE_SIZE`] (4 MiB, as grpc-go's
    /// `MaxRecvMsgSize`).
    pub fn max_receive_message_size(&mut self, bytes: usize) -> &mut Self {
        self.max_receive_message_size = Some(bytes);
        self
    }

    /// How long a client has, once connected, to complete its TLS handshake (with TLS) and to
    /// send HTTP/2's connection preface, which gRPC clients send at once; a connection that has
    /// not is closed. Without a limit, connections that never say a word (a scanner, a client
    /// of another protocol, an attack) would hold a file descriptor each for as long as they
    /// stay open. Default: [`DEFAULT_HANDSHAKE_TIMEOUT`] (10 s; grpc-go's `ConnectionTimeout`
    /// is 120 s).
    pub fn handshake_timeout(&mut self, limit: Duration) -> &mut Self {
        self.handshake_timeout = Some(limit);
        self
    }

    /// Serves every call over TLS with `tls`'s certificate (HTTP/2 by ALPN, as gRPC clients
    /// ask), requiring client certificates when `tls` says so. Clients that connect in plain
    /// text fail their first call. Default: plain-text HTTP/2.
    #[cfg(feature = "tls")]
    pub fn tls(&mut self, tls: crate::tls::ServerTls) -> &mut Self {
        self.tls = Some(tls);
        self
    }

    /// The TLS it serves with, if any.
    #[cfg(all(feature = "tls", unix))]
    pub(crate) fn tls_setup(&self) -> Option<crate::tls::ServerTls> {
        self.tls.clone()
    }

    /// Whether the server serves over TLS.
    pub fn serves_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }

    /// Adds a service's handlers. Generated `register_*_handler` functions call this.
    ///
    /// # Errors
    ///
    /// When a service of the same name, or a handler for one of its paths, is already present.
    pub fn add_service(&mut self, service: ServiceDef) -> Result<(), RegisterError> {
        if self.services.iter().any(|s| s.name == service.name) {
            return Err(RegisterError::DuplicateService(service.name.to_string()));
        }
        if let Some((path, _)) = service
            .routes
            .iter()
            .find(|(path, _)| self.routes.contains_key(path))
        {
            return Err(RegisterError::DuplicatePath(path.to_string()));
        }
        self.services.push(ServiceInfo {
            name: service.name,
            endpoints: service.endpoints,
        });
        self.routes.extend(service.routes);
        if let Some(set) = service.descriptors {
            if !self.descriptors.iter().any(|s| std::ptr::eq(*s, set)) {
                self.descriptors.push(set);
            }
        }
        Ok(())
    }

    /// The services registered so far, in registration order.
    pub fn services(&self) -> &[ServiceInfo] {
        &self.services
    }

    /// The statuses this server answers gRPC health checks (`grpc.health.v1.Health`) with:
    /// `SERVING` for the server (`""`) and each registered service once bound, unless set
    /// otherwise here first; `NOT_SERVING` for all once it shuts down. Keep the handle to change
    /// them while it serves (see [`health`](crate::health)).
    pub fn health(&self) -> crate::health::Health {
        self.health.clone()
    }

    /// Whether a handler for any of `paths` is registered.
    fn serves_any(&self, paths: &[&str]) -> bool {
        paths.iter().any(|path| self.routes.contains_key(path))
    }

    /// Binds a TCP listener (port 0 picks a free port) and returns the server ready to serve.
    ///
    /// # Errors
    ///
    /// When the address cannot be resolved or bound.
    pub async fn bind(self, addr: impl ToSocketAddrs) -> std::io::Result<BoundServer> {
        let listener = TcpListener::bind(addr).await?;
        self.with_listener(listener)
    }

    /// Serves on a listener the caller bound already.
    ///
    /// # Errors
    ///
    /// When the listener's local address cannot be read.
    pub fn with_listener(mut self, listener: TcpListener) -> std::io::Result<BoundServer> {
        let local_addr = listener.local_addr()?;
        #[cfg(feature = "tls")]
        let tls = self.tls.clone();
        // gRPC server reflection over the registered descriptors, unless the user serves any
        // of it (a built-in half next to the user's would answer from other descriptors).
        // gRPC health checking, unless the user serves any of it; described by reflection too.
        let health = !self.serves_any(&[crate::health::CHECK_PATH, crate::health::WATCH_PATH]);
        let reflection = [crate::reflection::V1_PATH, crate::reflection::V1ALPHA_PATH];
        if !self.descriptors.is_empty() && !self.serves_any(&reflection) {
            // The health description first: a file of the same name in the user's sets (grpc's
            // own health.proto, which a service's file may import) replaces it, so every
            // message that file defines stays described.
            let health_set = health.then(crate::health::descriptor_set);
            let mut sets: Vec<&[u8]> = health_set.as_deref().into_iter().collect();
            sets.extend(self.descriptors.iter().copied());
            for service in crate::reflection::services(&sets) {
                self.routes.extend(service.routes);
            }
        }
        if health {
            self.health.serving_unless_set("");
            for service in &self.services {
                self.health.serving_unless_set(service.name);
            }
            self.routes
                .extend(crate::health::service(self.health.clone()).routes);
        }
        Ok(BoundServer {
            listener,
            local_addr,
            #[cfg(feature = "tls")]
            tls,
            dispatch: Dispatch {
                routes: Arc::new(self.routes),
                limit: self
                    .max_receive_message_size
                    .unwrap_or(DEFAULT_MAX_RECEIVE_MESSAGE_SIZE),
            },
            services: self.services,
            health: self.health,
            drain_timeout: self.drain_timeout.unwrap_or(DEFAULT_DRAIN_TIMEOUT),
            handshake_timeout: self.handshake_timeout.unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT),
            keepalive: self.keepalive.map(|interval| Keepalive {
                interval,
                timeout: self
                    .keepalive_timeout
                    .unwrap_or(crate::transport::DEFAULT_KEEPALIVE_TIMEOUT),
            }),
        })
    }
}

/// Routes each HTTP/2 request to the handler of its path.
#[derive(Clone)]
struct Dispatch {
    routes: Arc<HashMap<&'static str, Route>>,
    /// The largest request message taken.
    limit: usize,
}

impl Dispatch {
    fn call(&self, req: http::Request<hyper::body::Incoming>) -> RouteFuture {
        if !is_grpc(req.headers()) {
            // gRPC's protocol: servers answer 415 to a request that is not gRPC's (grpc-go
            // does, with Internal), rather than read its body as gRPC frames.
            let found = req.headers().get(http::header::CONTENT_TYPE).map_or_else(
                || "none".to_string(),
                |v| format!("`{}`", String::from_utf8_lossy(v.as_bytes())),
            );
            return refused(
                http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "a gRPC request's content-type is `application/grpc` (or `application/grpc+…`), \
                     not {found}; call this server with a gRPC client"
                ),
            );
        }
        if req.method() != http::Method::POST {
            // gRPC calls are POSTs: grpc-go answers others 405 with Internal.
            return refused(
                http::StatusCode::METHOD_NOT_ALLOWED,
                format!(
                    "a gRPC request's method is POST, not {}; call this server with a gRPC client",
                    req.method()
                ),
            );
        }
        match self.routes.get(req.uri().path()) {
            Some(route) => {
                let limit = self.limit;
                let coding = req.headers().get(&GRPC_ENCODING);
                let gzip = coding.is_some_and(|c| c == "gzip");
                let receive = Receive {
                    limit,
                    compressed: coding.is_some(),
                };
                let single = route.single;
                (route.serve)(
                    req.map(|body| {
                        Body::new(Framed::request(body, limit, gzip, single, reset_by_client))
                    }),
                    receive,
                )
            }
            None => {
                let path = req.uri().path().to_string();
                Box::pin(async move {
                    Status::unimplemented(format!("no handler for `{path}` on this server"))
                        .into_http()
                })
            }
        }
    }
}

/// The answer to a request refused before it is routed: `Internal` saying `message`, with HTTP
/// `status`.
fn refused(status: http::StatusCode, message: String) -> RouteFuture {
    Box::pin(async move {
        let mut response = Status::internal(message).into_http();
        *response.status_mut() = status;
        response
    })
}

/// Whether a request's content-type is gRPC's: `application/grpc`, alone or with a `+subtype` or
/// parameters (not `application/grpc-web`, another protocol).
fn is_grpc(headers: &http::HeaderMap) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    headers
        .get(http::header::CONTENT_TYPE)
        .map(http::HeaderValue::as_bytes)
        .is_some_and(|v| {
            v.len() >= GRPC.len()
                && v[..GRPC.len()].eq_ignore_ascii_case(GRPC)
                && matches!(v.get(GRPC.len()), None | Some(b'+' | b';'))
        })
}

/// A request body's error, with a client's cancel of the call (`RST_STREAM` with `CANCEL`, as
/// grpc-go, grpcio and rmicro clients send when a call is cancelled or dropped) made an
/// `Aborted` status that says so. tonic reads a `Cancelled` one as the end of the request
/// stream, so a client-streaming or bidirectional handler would see a cancelled upload end as if
/// it were complete, and act on half of it; grpc-go's handlers get an error.
fn reset_by_client(err: hyper::Error) -> crate::frames::BoxError {
    let cancelled = std::error::Error::source(&err)
        .and_then(|source| source.downcast_ref::<h2::Error>())
        .is_some_and(|h2| h2.is_remote() && h2.reason() == Some(h2::Reason::CANCEL));
    if cancelled {
        Box::new(Status::aborted(
            "the client cancelled the call before the end of its request stream",
        ))
    } else {
        Box::new(err)
    }
}

/// A server bound to its address, ready to serve.
pub struct BoundServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    /// The TLS handshake each connection makes first, when the server serves TLS (with the
    /// certificate in use when the connection is accepted: see [`ServerTls::reload`]).
    ///
    /// [`ServerTls::reload`]: crate::tls::ServerTls::reload
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::ServerTls>,
    dispatch: Dispatch,
    services: Vec<ServiceInfo>,
    health: crate::health::Health,
    drain_timeout: Duration,
    /// How long a client has to complete its TLS handshake and send the HTTP/2 preface.
    handshake_timeout: Duration,
    keepalive: Option<Keepalive>,
}

impl std::fmt::Debug for BoundServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundServer")
            .field("local_addr", &self.local_addr)
            .field("services", &self.services)
            .finish_non_exhaustive()
    }
}

impl BoundServer {
    /// The address the listener is bound to (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The services this server answers.
    pub fn services(&self) -> &[ServiceInfo] {
        &self.services
    }

    /// Serves until the process ends.
    ///
    /// # Errors
    ///
    /// Never returns `Ok`; accept errors are logged and retried, so it does not return at all in
    /// practice. The `Result` leaves room for fatal listener errors.
    pub async fn serve(self) -> std::io::Result<()> {
        self.serve_with_shutdown(std::future::pending()).await
    }

    /// Serves until `signal` completes, then stops accepting, lets calls in flight finish (up to
    /// the drain timeout), closes the connections still open, and returns: once it has
    /// returned, no call of this server is served any more.
    ///
    /// # Errors
    ///
    /// Reserved for fatal listener errors; transient accept errors are logged and retried.
    pub async fn serve_with_shutdown(
        self,
        signal: impl Future<Output = ()> + Send,
    ) -> std::io::Result<()> {
        let graceful = GracefulShutdown::new();
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            // As many calls at once on a connection as clients open, as grpc-go and tonic
            // servers allow: a client keeps one connection per node, so hyper's default of 200
            // would hold every call past the 200th (long streams, slow handlers) waiting,
            // whatever the server could do.
            .max_concurrent_streams(None)
            // Calls a client gave up on (their deadline passed) while the server was stalled
            // (paused, starved of CPU) arrive with their resets in one burst when it resumes:
            // h2's limit of 20 such streams, against rapid-reset floods, would take that burst
            // for one and close the connection with every call on it. Still bounded.
            .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS)
            .max_header_list_size(crate::transport::MAX_HEADER_LIST_SIZE);
        if let Some(keepalive) = self.keepalive {
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .keep_alive_interval(keepalive.interval)
                .keep_alive_timeout(keepalive.timeout);
        }
        let mut signal = std::pin::pin!(signal);
        // The connections' tasks, to cut those still open after the drain timeout.
        let mut connections = tokio::task::JoinSet::new();
        // Told to connections still in their TLS handshake when the server stops: they are
        // dropped, not waited for (a client that connects and says nothing would hold the
        // drain up for the whole handshake limit).
        #[cfg(feature = "tls")]
        let (stopping, stopped) = tokio::sync::watch::channel(false);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(err) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %err, "accept failed; retrying");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut signal => break,
            };
            if let Err(err) = stream.set_nodelay(true) {
                tracing::debug!(error = %err, %peer, "could not set TCP_NODELAY");
            }
            let dispatch = self.dispatch.clone();
            let service = hyper::service::service_fn(move |req| {
                let fut = dispatch.call(req);
                async move { Ok::<_, Infallible>(fut.await) }
            });
            // Forget the connections that ended (one check per accepted connection).
            while connections.try_join_next().is_some() {}
            let handshake_limit = self.handshake_timeout;
            let handshake_deadline = tokio::time::Instant::now() + handshake_limit;
            #[cfg(feature = "tls")]
            if let Some(tls) = &self.tls {
                // The handshake in the connection's own task: a slow or silent client holds
                // nothing else up, and gives up after the handshake limit.
                let (acceptor, builder, watcher) =
                    (tls.acceptor(), builder.clone(), graceful.watcher());
                let mut stopped = stopped.clone();
                connections.spawn(async move {
                    let accepted = tokio::select! {
                        accepted = tokio::time::timeout_at(handshake_deadline, acceptor.accept(stream)) => accepted,
                        _ = stopped.wait_for(|stop| *stop) => return,
                    };
                    let tls = match accepted {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(err)) => {
                            tracing::debug!(error = %err, %peer, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "no TLS handshake within {handshake_limit:?}");
                            return;
                        }
                    };
                    let stream = crate::tls::Stream::Tls(Box::new(tls.into()));
                    let stream = Preface::new(stream, handshake_deadline);
                    let conn = watcher.watch(builder.serve_connection(TokioIo::new(stream), service));
                    if let Err(err) = conn.await {
                        tracing::debug!(error = %err, %peer, "connection ended with an error");
                    }
                });
                continue;
            }
            let stream = Preface::new(stream, handshake_deadline);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let conn = graceful.watch(conn);
            connections.spawn(async move {
                if let Err(err) = conn.await {
                    tracing::debug!(error = %err, %peer, "connection ended with an error");
                }
            });
        }
        drop(self.listener);
        #[cfg(feature = "tls")]
        stopping.send_replace(true);
        // Health watchers hear NOT_SERVING and their streams end, so they do not hold the drain.
        self.health.shut_down();
        if tokio::time::timeout(self.drain_timeout, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                timeout = ?self.drain_timeout,
                "calls still in flight after the drain timeout; closing their connections"
            );
            connections.abort_all();
        }
        // Every connection is closed when this returns.
        while connections.join_next().await.is_some() {}
        Ok(())
    }
}

/// HTTP/2's client connection preface (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`), in bytes.
const PREFACE_LEN: usize = 24;

/// A connection's stream whose reads fail with `TimedOut` once its deadline passes before the
/// client has sent the HTTP/2 preface's bytes: a connection that never says a word is closed
/// (hyper's server waits for the preface as long as the connection stays open). Once the
/// preface's bytes are in, it only passes reads and writes through.
struct Preface<S> {
    inner: S,
    /// Preface bytes still to come; `0` once they are in.
    left: usize,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> Preface<S> {
    fn new(inner: S, deadline: tokio::time::Instant) -> Preface<S> {
        Preface {
            inner,
            left: PREFACE_LEN,
            deadline: Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Preface<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Some(deadline) = &mut this.deadline {
            if let Poll::Ready(Ok(())) = &read {
                this.left = this.left.saturating_sub(buf.filled().len() - before);
                if this.left == 0 {
                    this.deadline = None;
                    return read;
                }
            }
            if read.is_pending() && deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the client did not send HTTP/2's connection preface within the handshake limit",
                )));
            }
        }
        read
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Preface<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects what a `tracing` subscriber writes.
    #[derive(Clone, Default)]
    struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Logs {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A handler's panic (and its response stream's) is logged with the method it served, so
    /// the log says where to look; the caller gets Internal.
    #[tokio::test]
    async fn a_panic_is_logged_with_the_method_it_served() {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);
        let receive = || Receive {
            limit: 1024,
            compressed: false,
        };

        let handler = route("/shop.Orders/Place", false, true, |_req, _receive| async {
            if true {
                panic!("the handler's bug");
            }
            http::Response::new(Body::empty())
        });
        let response = (handler.serve)(http::Request::new(Body::empty()), receive()).await;
        let status = Status::from_header_map(response.headers()).expect("a status in the head");
        assert_eq!(status.code(), tonic::Code::Internal);

        let stream = route("/shop.Orders/Watch", true, true, |_req, _receive| async {
            let items = panicking_body(|| panic!("the stream's bug"));
            http::Response::new(items)
        });
        let response = (stream.serve)(http::Request::new(Body::empty()), receive()).await;
        let trailers = http_body_util::BodyExt::collect(response.into_body())
            .await
            .expect("the stream ends with trailers")
            .trailers()
            .cloned()
            .expect("trailers");
        let status = Status::from_header_map(&trailers).expect("a status in the trailers");
        assert_eq!(status.code(), tonic::Code::Internal);

        let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = logs.lines().filter(|l| l.contains("panicked")).collect();
        assert_eq!(lines.len(), 2, "{logs}");
        assert!(
            lines[0].contains("method=/shop.Orders/Place")
                && lines[0].contains("the handler's bug"),
            "{logs}"
        );
        assert!(
            lines[1].contains("method=/shop.Orders/Watch") && lines[1].contains("the stream's bug"),
            "{logs}"
        );
    }

    /// A response body whose first poll runs `f` (which panics).
    fn panicking_body(f: fn()) -> Body {
        struct Once(fn());
        impl http_body::Body for Once {
            type Data = hyper::body::Bytes;
            type Error = Status;
            fn poll_frame(
                self: Pin<&mut Self>,
                _cx: &mut Context<'_>,
            ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Status>>> {
                (self.0)();
                Poll::Ready(None)
            }
        }
        Body::new(Once(f))
    }

    /// Sends one request to the health check's unary method on `conn`: `method`, extra
    /// `headers`, `body` (gRPC frames as bytes). The HTTP status, and `grpc-status` with
    /// `grpc-message` from the head or the trailers.
    async fn health_call(
        conn: &crate::transport::Connection,
        method: &str,
        headers: &[(&'static str, &'static str)],
        body: &'static [u8],
    ) -> (u16, Option<(String, String)>) {
        let mut request = http::Request::builder()
            .method(method)
            .uri(crate::health::CHECK_PATH)
            .header(http::header::CONTENT_TYPE, "application/grpc");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = Body::new(http_body_util::Full::new(hyper::body::Bytes::from_static(
            body,
        )));
        let response = conn
            .send_request(request.body(body).unwrap(), None, false)
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        let http = response.status().as_u16();
        let head = response.headers().clone();
        let collected = http_body_util::BodyExt::collect(response.into_body()).await;
        let trailers = collected.ok().and_then(|c| c.trailers().cloned());
        let status = [Some(&head), trailers.as_ref()]
            .into_iter()
            .flatten()
            .find_map(|h| {
                let status = Status::from_header_map(h)?;
                Some((
                    (status.code() as i32).to_string(),
                    status.message().to_string(),
                ))
            });
        (http, status)
    }

    /// What grpc-go refuses is refused: a method other than POST (405, Internal), a
    /// `grpc-timeout` that cannot be read (Internal, not a call without a deadline), a `-bin`
    /// metadata value that is not base64, and more than one request message for a unary method
    /// (Internal, not the others dropped unread).
    #[tokio::test]
    async fn calls_grpc_go_refuses_are_refused() {
        let bound = Server::new().bind("127.0.0.1:0").await.unwrap();
        let address = bound.local_addr().to_string();
        tokio::spawn(bound.serve());
        let conn = &crate::transport::Connection::new(&address).unwrap();
        let empty: &[u8] = &[0, 0, 0, 0, 0];
        assert_eq!(
            health_call(conn, "POST", &[], empty).await.1.map(|s| s.0),
            Some("0".to_string())
        );
        // The message of a call refused with Internal.
        let internal = |status: Option<(String, String)>| {
            let (code, message) = status.expect("a grpc-status");
            assert_eq!(code, "13", "{message}");
            message
        };

        let (http, status) = health_call(conn, "GET", &[], empty).await;
        let message = internal(status);
        assert_eq!(http, 405, "{message}");
        assert!(message.contains("method is POST, not GET"), "{message}");

        for bad in ["1x", "-1S", "+5S", "123456789S", "99999999999S", "S"] {
            let (_, status) = health_call(conn, "POST", &[("grpc-timeout", bad)], empty).await;
            let message = internal(status);
            assert!(
                message.contains("malformed grpc-timeout"),
                "{bad}: {message}"
            );
        }
        let (_, status) = health_call(conn, "POST", &[("grpc-timeout", "12345678S")], empty).await;
        assert_eq!(status.unwrap().0, "0");

        let (_, status) =
            health_call(conn, "POST", &[("x-trace-bin", "!!!not base64$$$")], empty).await;
        let message = internal(status);
        assert!(
            message.contains("malformed binary metadata `x-trace-bin`"),
            "{message}"
        );
        let (_, status) = health_call(conn, "POST", &[("x-trace-bin", "AAEC")], empty).await;
        assert_eq!(status.unwrap().0, "0");

        let two: &[u8] = &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let (_, status) = health_call(conn, "POST", &[], two).await;
        let message = internal(status);
        assert!(message.contains("takes one request message"), "{message}");
    }

    /// A connection that does not send HTTP/2's preface within the handshake limit is closed
    /// (it held a file descriptor for as long as the client kept it open); gRPC clients, which
    /// send it at once, are served.
    #[tokio::test]
    async fn a_connection_without_the_http2_preface_is_closed_after_the_handshake_limit() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut server = Server::new();
        server.handshake_timeout(Duration::from_millis(300));
        let bound = server.bind("127.0.0.1:0").await.unwrap();
        let address = bound.local_addr().to_string();
        tokio::spawn(bound.serve());
        for sent in [&b""[..], b"PRI * HT"] {
            let mut silent = tokio::net::TcpStream::connect(&address).await.unwrap();
            silent.write_all(sent).await.unwrap();
            let started = std::time::Instant::now();
            let mut buf = [0u8; 1024];
            let closed = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    match silent.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => continue, // the server's SETTINGS, then maybe a GOAWAY
                    }
                }
            })
            .await;
            assert!(closed.is_ok(), "{sent:?}: still open after 5 s");
            assert!(
                started.elapsed() >= Duration::from_millis(250),
                "{sent:?}: closed at once"
            );
        }
        // A call on a connection used again after the limit is still served.
        let conn = &crate::transport::Connection::new(&address).unwrap();
        for _ in 0..2 {
            let (http, status) = health_call(conn, "POST", &[], &[0, 0, 0, 0, 0]).await;
            assert_eq!((http, status.map(|s| s.0)), (200, Some("0".to_string())));
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    }

    /// A request that is not gRPC's is answered 415 with Internal, as grpc-go answers it, and
    /// its body is not read as gRPC frames; `application/grpc` with a subtype or parameters is
    /// gRPC's, `application/grpc-web` is not.
    #[tokio::test]
    async fn a_request_of_another_content_type_is_answered_415() {
        let bound = Server::new().bind("127.0.0.1:0").await.unwrap();
        let address = bound.local_addr().to_string();
        tokio::spawn(bound.serve());
        let conn = crate::transport::Connection::new(&address).unwrap();
        let send = |content_type: Option<&'static str>| {
            let conn = conn.clone();
            async move {
                let mut request = http::Request::builder()
                    .method("POST")
                    .uri(crate::health::CHECK_PATH);
                if let Some(content_type) = content_type {
                    request = request.header(http::header::CONTENT_TYPE, content_type);
                }
                // An empty HealthCheckRequest, framed.
                let body = Body::new(http_body_util::Full::new(hyper::body::Bytes::from_static(
                    &[0, 0, 0, 0, 0],
                )));
                let response = conn
                    .send_request(request.body(body).unwrap(), None, false)
                    .await
                    .map_err(|(e, _)| e)
                    .unwrap();
                let status = response.status().as_u16();
                let grpc = response
                    .headers()
                    .get("grpc-status")
                    .map(|v| v.to_str().unwrap().to_string());
                (status, grpc)
            }
        };
        for refused in [None, Some("application/json"), Some("application/grpc-web")] {
            assert_eq!(
                send(refused).await,
                (415, Some("13".to_string())),
                "{refused:?}"
            );
        }
        for taken in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC; x=y",
        ] {
            let (status, grpc) = send(Some(taken)).await;
            assert_eq!(status, 200, "{taken}");
            assert_ne!(grpc.as_deref(), Some("13"), "{taken}");
        }
    }

    /// A user's own handler for one method of a built-in service (health, reflection) keeps the
    /// built-in one out entirely: neither replaced by it nor paired with its other half.
    #[tokio::test]
    async fn a_users_half_of_a_builtin_service_keeps_the_builtin_out() {
        let mut server = Server::new();
        let own = |_req: Request<crate::health::proto::HealthCheckRequest>| async {
            let stream: ResponseStream<crate::health::proto::HealthCheckResponse> =
                Box::pin(tokio_stream::empty());
            Ok(Response::new(stream))
        };
        server
            .add_service(
                ServiceDef::new(crate::health::SERVICE, &[])
                    .server_streaming(crate::health::WATCH_PATH, own),
            )
            .unwrap();
        let bound = server.bind("127.0.0.1:0").await.unwrap();
        let routes = &bound.dispatch.routes;
        assert!(routes.contains_key(crate::health::WATCH_PATH));
        assert!(
            !routes.contains_key(crate::health::CHECK_PATH),
            "the built-in Check was added next to the user's Watch"
        );

        let mut plain = Server::new();
        plain
            .add_service(ServiceDef::new("x.Y", &[]).unary(
                "/x.Y/Z",
                |_req: Request<crate::health::proto::HealthCheckRequest>| async {
                    Ok(Response::new(crate::health::proto::HealthCheckResponse {
                        status: 1,
                    }))
                },
            ))
            .unwrap();
        let bound = plain.bind("127.0.0.1:0").await.unwrap();
        for path in [crate::health::CHECK_PATH, crate::health::WATCH_PATH] {
            assert!(bound.dispatch.routes.contains_key(path), "{path}");
        }
    }
}
