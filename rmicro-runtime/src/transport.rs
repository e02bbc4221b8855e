//! The HTTP/2 connections calls to a node travel on.
//!
//! A [`Connection`] is one HTTP/2 connection to one node, opened on the first call, shared by
//! every call to that node (HTTP/2 multiplexes them) and opened again on the next call after it
//! closed. It is a tower service over `http::Request<tonic::body::Body>`, so
//! `tonic::client::Grpc` (and with it every generated client) sends its calls through it.
//!
//! It does on purpose less than `tonic::transport::Channel`: no request queue in front of the
//! connection (calls go straight to hyper's HTTP/2 client), and no timer of its own. The
//! [`Client`](crate::Client) already bounds every call, connecting included, by one deadline;
//! a second timer for the same deadline costs each call a timer registration for nothing.
//!
//! Failures that happen before a request left this process (the node refused the connection,
//! the handshake failed, the connection closed before the request was written) are
//! [`TransportError`]s with [`TransportError::is_unsent`] true: such a request can be sent to
//! another node without risk of running twice.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::uri::{Authority, Scheme};
use http::Uri;
use hyper::client::conn::http2;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tonic::body::Body;

use crate::registry::Node;

/// What calls say they come from, as gRPC recommends (`grpc-<language>-<implementation>/<version>`).
static USER_AGENT: http::HeaderValue =
    http::HeaderValue::from_static(concat!("grpc-rust-rmicro/", env!("CARGO_PKG_VERSION")));

/// How long opening a connection may take, unless the call's deadline is sooner.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a keepalive ping may go unanswered before its connection is closed (grpc's
/// default keepalive timeout).
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// HTTP/2 keepalive pings on a connection (off unless set, as in grpc): a PING frame every
/// `interval`, and the connection closed when one is not answered within `timeout`, so that a
/// connection whose peer vanished (a NAT or load balancer dropped it, the host went away without
/// a reset) is noticed before the next call waits on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Time between pings.
    pub interval: Duration,
    /// How long to wait for a ping's acknowledgement.
    pub timeout: Duration,
}

/// How long a node that could not be connected to is left out of picks (while its service has
/// other nodes): gRPC does not pick a connection in failure until it reconnects, and the
/// gateway avoids such a node as long.
pub(crate) const UNREACHABLE_FOR: Duration = Duration::from_secs(5);

/// Addresses no connection could be opened to, until when to leave them out. Looked at on
/// every pick only through `any`, one atomic load while all is well.
#[derive(Default)]
pub(crate) struct Unreachable {
    any: std::sync::atomic::AtomicBool,
    until: Mutex<HashMap<String, Instant>>,
}

impl Unreachable {
    pub(crate) fn mark(&self, address: &str) {
        let mut until = self.until.lock().unwrap_or_else(|p| p.into_inner());
        until.insert(address.to_string(), Instant::now() + UNREACHABLE_FOR);
        self.any.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether `address` is marked unreachable now.
    pub(crate) fn is_marked(&self, address: &str) -> bool {
        if !self.any.load(std::sync::atomic::Ordering::Relaxed) {
            return false;
        }
        let until = self.until.lock().unwrap_or_else(|p| p.into_inner());
        until
            .get(authority_of(address))
            .is_some_and(|t| *t > Instant::now())
    }

    /// `nodes` without those marked unreachable, when that leaves any (else `None`).
    pub(crate) fn reachable(&self, nodes: &[Node]) -> Option<Arc<[Node]>> {
        if !self.any.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let mut until = self.until.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        until.retain(|_, t| *t > now);
        if until.is_empty() {
            self.any.store(false, std::sync::atomic::Ordering::Relaxed);
            return None;
        }
        // Marked by the connection's `host:port`; a node may be registered with a scheme
        // (`http://host:port`, as `--server-advertise` takes it).
        let marked = |n: &Node| until.contains_key(authority_of(&n.address));
        if !nodes.iter().any(marked) {
            return None;
        }
        let left: Arc<[Node]> = nodes.iter().filter(|n| !marked(n)).cloned().collect();
        (!left.is_empty()).then_some(left)
    }
}

/// The `host:port` of a node address, which may be written with a scheme and a trailing `/`
/// (`http://127.0.0.1:50051/`), as a connection to it names it.
fn authority_of(address: &str) -> &str {
    let rest = address.split_once("://").map_or(address, |(_, rest)| rest);
    rest.trim_end_matches('/')
}

/// Why a call did not get an answer from the node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The node's address cannot be used.
    #[error("`{address}` is not a usable node address: {reason}")]
    BadAddress {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The TCP connection could not be opened.
    #[error("cannot connect to {address}: {source}")]
    Connect {
        /// The node.
        address: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The TCP connection opened, but the TLS handshake failed: the node's certificate is not
    /// signed by the CA the client trusts or does not name the node, the node wants a client
    /// certificate the client has none of, or the node serves plain text.
    #[error("TLS handshake with {address} failed: {source}")]
    Tls {
        /// The node.
        address: String,
        /// rustls's error, or how long nothing came.
        source: std::io::Error,
    },
    /// The TCP connection opened, but the node does not speak HTTP/2 (not a gRPC server?).
    #[error("HTTP/2 handshake with {address} failed: {error}")]
    Handshake {
        /// The node.
        address: String,
        /// hyper's error.
        error: hyper::Error,
    },
    /// The TCP connection opened and the HTTP/2 preface went out, but the node did not answer
    /// it with its own (a SETTINGS frame) in time, or answered with something else: it is
    /// silent, or speaks another protocol (HTTP/1.1, TLS).
    #[error("{address} did not open an HTTP/2 connection: {reason}")]
    NoPreface {
        /// The node.
        address: String,
        /// What came instead, or how long nothing came.
        reason: String,
    },
    /// The connection closed before the request was written; it never reached the node.
    #[error("the connection to {address} closed before the request was sent: {error}")]
    Unsent {
        /// The node.
        address: String,
        /// hyper's error.
        error: hyper::Error,
    },
    /// The node's connection was still being opened when half of the call's time was gone,
    /// and another node could take the call: nothing was sent, and the connection goes on
    /// opening for later calls.
    #[error("no connection to {address} opened within {waited:?}, half of the call's time")]
    NotOpened {
        /// The node.
        address: String,
        /// How long the call waited for it.
        waited: Duration,
    },
    /// The call's deadline passed before the request could be sent (while its connection was
    /// being opened, or before the call got to it): nothing was sent.
    #[error("the call's deadline passed before the call was sent to {address}")]
    DeadlinePassed {
        /// The node.
        address: String,
    },
    /// The request was sent but the exchange failed (connection reset, protocol error).
    #[error("the call to {address} failed: {error}")]
    Exchange {
        /// The node.
        address: String,
        /// hyper's error.
        error: hyper::Error,
    },
}

impl TransportError {
    /// Whether the request certainly never reached the node, so that sending it elsewhere
    /// cannot run it twice.
    pub fn is_unsent(&self) -> bool {
        !matches!(self, TransportError::Exchange { .. })
    }

    /// Whether no connection could be opened to the node (refused, not HTTP/2, silent, a bad
    /// address): the node is down or is no gRPC server, and calls are better sent elsewhere
    /// for a while.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            TransportError::BadAddress { .. }
                | TransportError::Connect { .. }
                | TransportError::Tls { .. }
                | TransportError::Handshake { .. }
                | TransportError::NoPreface { .. }
                | TransportError::NotOpened { .. }
        )
    }

    /// The status a caller should see: `Unavailable`, as gRPC specifies for transport failures;
    /// `DeadlineExceeded` for a call out of time before it was sent.
    pub fn to_status(&self) -> tonic::Status {
        match self {
            TransportError::DeadlinePassed { .. } => {
                tonic::Status::deadline_exceeded(self.to_string())
            }
            _ => tonic::Status::unavailable(self.to_string()),
        }
    }

    /// The transport error behind `status`, if the status came from one. (tonic turns a
    /// transport's error into an `Unknown` status with the error as its source; hyper's errors
    /// are kept out of this type's source chain so that tonic does not replace it by theirs.)
    pub fn find(status: &tonic::Status) -> Option<&TransportError> {
        let mut source = std::error::Error::source(status);
        while let Some(err) = source {
            if let Some(found) = err.downcast_ref::<TransportError>() {
                return Some(found);
            }
            source = err.source();
        }
        None
    }
}

/// The largest header block (metadata, or an error's trailers) a client takes in an answer and
/// a server in a call, 1 MiB: h2's 16 KiB default refuses a call with a large metadata entry
/// (a token, a propagated trace context) or an error with a long message, and a block over the
/// limit can close the whole connection, failing every call on it. grpc-go takes 16 MiB.
pub const MAX_HEADER_LIST_SIZE: u32 = 1 << 20;

/// How long a connection may be silent before TCP keepalive probes it, and how far apart the
/// probes are (as Go's dialer, which grpc-go and go-micro's transports use): a node gone without
/// closing its connections (powered off, cut off) is noticed on its idle connections, and
/// middleboxes do not forget connections that are quiet for a while.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(15);

/// Opens a TCP connection to `address` (`host:port`, `[v6]:port`), giving up after `timeout`
/// with a `TimedOut` error; `TCP_NODELAY` is set, as calls are small request/response pairs,
/// and TCP keepalive ([`TCP_KEEPALIVE`]).
///
/// # Errors
///
/// The operating system's (refused, unreachable, no such host), or `TimedOut`.
pub async fn connect_tcp(address: &str, timeout: Duration) -> std::io::Result<TcpStream> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(address))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {timeout:?}"),
            )
        })??;
    stream.set_nodelay(true)?;
    let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_os = "macos",
        target_os = "ios",
        target_os = "freebsd",
        target_os = "netbsd",
        windows
    ))]
    let keepalive = keepalive.with_interval(TCP_KEEPALIVE);
    socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive)?;
    Ok(stream)
}

/// One HTTP/2 connection to one node, (re)opened on demand. Cheap to clone: clones share it.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
}

/// What a connection is opened with: TLS to the node, or plain text.
#[cfg(feature = "tls")]
pub(crate) type ClientTls = Option<crate::tls::ClientTls>;
/// What a connection is opened with: plain text (TLS needs the `tls` feature).
#[cfg(not(feature = "tls"))]
pub(crate) type ClientTls = PlainText;

/// Plain text, the only way without the `tls` feature.
#[cfg(not(feature = "tls"))]
#[derive(Clone, Default)]
pub(crate) struct PlainText;

struct Shared {
    /// `host:port`, for connecting and for messages.
    address: String,
    /// TLS to the node, if the client has it.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    tls: ClientTls,
    authority: Authority,
    /// `http://host:port/`, for `tonic::client::Grpc::with_origin`.
    origin: Uri,
    connect_timeout: Duration,
    /// Keepalive pings on the connection, while calls are open on it.
    keepalive: Option<Keepalive>,
    /// The open connection's handle, if there is one.
    sender: Mutex<Option<http2::SendRequest<Body>>>,
    /// Where a failure to connect is told.
    unreachable: Option<Arc<Unreachable>>,
    /// Held while a connection is being opened, so concurrent calls wait for one handshake
    /// instead of each opening their own.
    opening: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("address", &self.shared.address)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A connection to `address` (`host:port`, or `http://host:port`), opened by the first call.
    ///
    /// # Errors
    ///
    /// [`TransportError::BadAddress`] when `address` is not `host:port` or an `http://` URI
    /// (an `https://` node needs [`Connection::with_tls`]).
    pub fn new(address: &str) -> Result<Connection, TransportError> {
        Connection::with_keepalive(address, None, None, ClientTls::default())
    }

    /// As [`Connection::new`], over TLS with `tls`.
    ///
    /// # Errors
    ///
    /// [`TransportError::BadAddress`] when `address` is not `host:port`, `http://host:port` or
    /// `https://host:port`.
    #[cfg(feature = "tls")]
    pub fn with_tls(
        address: &str,
        tls: crate::tls::ClientTls,
    ) -> Result<Connection, TransportError> {
        Connection::with_keepalive(address, None, None, Some(tls))
    }

    /// As [`Connection::new`], with keepalive pings (sent only while calls are open on the
    /// connection: grpc-go servers count pings on a connection without calls as abuse).
    /// A failure to open the connection marks the node in `unreachable`.
    pub(crate) fn with_keepalive(
        address: &str,
        keepalive: Option<Keepalive>,
        unreachable: Option<Arc<Unreachable>>,
        tls: ClientTls,
    ) -> Result<Connection, TransportError> {
        let bad = |reason: String| TransportError::BadAddress {
            address: address.to_string(),
            reason,
        };
        let uri: Uri = if address.contains("://") {
            address.parse()
        } else {
            format!("http://{address}").parse()
        }
        .map_err(|err| bad(format!("{err} (expected host:port)")))?;
        let given = uri.scheme().cloned().unwrap_or(Scheme::HTTP);
        #[cfg(feature = "tls")]
        let secure = tls.is_some();
        #[cfg(not(feature = "tls"))]
        let secure = false;
        if given == Scheme::HTTPS && !secure {
            return Err(bad(
                "the node serves TLS (https://); give the client a CA to check its certificate \
                 (rmicro_runtime::tls::ClientTls, --client-tls-ca)"
                    .to_string(),
            ));
        }
        if given != Scheme::HTTP && given != Scheme::HTTPS {
            return Err(bad(format!(
                "scheme `{given}` is not supported; nodes are reached over HTTP/2 (http://, or \
                 https:// with TLS)"
            )));
        }
        // A client with TLS speaks it to every node, whatever its address says: a record in
        // the registry cannot talk it into plain text.
        let scheme = if secure { Scheme::HTTPS } else { Scheme::HTTP };
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| bad("no host".to_string()))?;
        if authority.host().is_empty() {
            return Err(bad("no host (expected host:port)".to_string()));
        }
        if authority.port_u16().is_none_or(|port| port == 0) {
            return Err(bad("no port (expected host:port)".to_string()));
        }
        if !matches!(uri.path(), "" | "/") {
            return Err(bad(format!(
                "a node address has no path, but this one has `{}`",
                uri.path()
            )));
        }
        let origin = Uri::builder()
            .scheme(scheme)
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|err| bad(err.to_string()))?;
        Ok(Connection {
            shared: Arc::new(Shared {
                address: authority.as_str().to_string(),
                tls,
                authority,
                origin,
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                keepalive,
                unreachable,
                sender: Mutex::new(None),
                opening: Arc::new(tokio::sync::Mutex::new(())),
            }),
        })
    }

    /// The node's `host:port`.
    pub fn address(&self) -> &str {
        &self.shared.address
    }

    /// The URI `tonic::client::Grpc::with_origin` needs for calls through this connection.
    pub fn origin(&self) -> Uri {
        self.shared.origin.clone()
    }

    /// A gRPC client over this connection; it reads gzip-compressed answers without asking for
    /// them (no `grpc-accept-encoding` is sent, so a server that compresses only on request
    /// answers plainly).
    pub fn grpc(&self) -> tonic::client::Grpc<Connection> {
        tonic::client::Grpc::with_origin(self.clone(), self.origin())
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
    }

    /// Whether a connection is open right now.
    pub fn is_open(&self) -> bool {
        self.open_sender().is_some()
    }

    /// Whether a clone of this connection is held elsewhere (a call sending on it, or the
    /// task opening it).
    pub(crate) fn in_use(&self) -> bool {
        Arc::strong_count(&self.shared) > 1
    }

    fn open_sender(&self) -> Option<http2::SendRequest<Body>> {
        let sender = self.shared.sender.lock().unwrap_or_else(|p| p.into_inner());
        sender.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    /// The open connection, or a new one.
    async fn sender(&self) -> Result<http2::SendRequest<Body>, TransportError> {
        if let Some(sender) = self.open_sender() {
            return Ok(sender);
        }
        // Opened by a task of its own, which finishes (and tells a failure) even when the call
        // that started it gives up first: a silent node's calls can all run out of time
        // before its connection does, and would then never mark it.
        let opening = Arc::clone(&self.shared.opening).lock_owned().await;
        // Someone else may have opened it while this call waited.
        if let Some(sender) = self.open_sender() {
            return Ok(sender);
        }
        let connection = self.clone();
        let opened = tokio::spawn(async move {
            let _opening = opening;
            let result = connection.open().await;
            match &result {
                Ok(sender) => {
                    *connection
                        .shared
                        .sender
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = Some(sender.clone());
                }
                Err(err) if err.is_unreachable() => {
                    if let Some(unreachable) = &connection.shared.unreachable {
                        unreachable.mark(&connection.shared.address);
                    }
                }
                Err(_) => {}
            }
            result
        });
        match opened.await {
            Ok(result) => result,
            Err(join) => Err(TransportError::NoPreface {
                address: self.shared.address.clone(),
                reason: format!("opening the connection stopped: {join}"),
            }),
        }
    }

    async fn open(&self) -> Result<http2::SendRequest<Body>, TransportError> {
        let address = &self.shared.address;
        let deadline = tokio::time::Instant::now() + self.shared.connect_timeout;
        let stream = connect_tcp(address, self.shared.connect_timeout)
            .await
            .map_err(|source| TransportError::Connect {
                address: address.clone(),
                source,
            })?;
        #[cfg(feature = "tls")]
        let stream = match &self.shared.tls {
            Some(tls) => {
                let host = self.shared.authority.host();
                let failed = |source| TransportError::Tls {
                    address: address.clone(),
                    source,
                };
                tokio::time::timeout_at(deadline, tls.connect(host, stream))
                    .await
                    .map_err(|_| {
                        failed(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!(
                                "no handshake within {:?} of connecting (does the node serve TLS?)",
                                self.shared.connect_timeout
                            ),
                        ))
                    })?
                    .map_err(failed)?
            }
            None => crate::tls::Stream::Plain(stream),
        };
        let (preface_tx, preface_rx) = tokio::sync::oneshot::channel();
        let stream = Preface {
            io: stream,
            head: [0; FRAME_HEAD],
            seen: 0,
            told: Some(preface_tx),
        };
        let mut builder = http2::Builder::new(BoxedTasks);
        builder
            .timer(hyper_util::rt::TokioTimer::new())
            // Answers' headers and trailers up to 1 MiB (grpc-go's clients take 16 MiB): an
            // error with a long message (a validation echoing its input) is the service's
            // answer, not a broken exchange (h2's 16 KiB default refused it).
            .max_header_list_size(MAX_HEADER_LIST_SIZE);
        if let Some(keepalive) = self.shared.keepalive {
            builder
                .keep_alive_interval(keepalive.interval)
                .keep_alive_timeout(keepalive.timeout);
        }
        let silent = || TransportError::NoPreface {
            address: address.clone(),
            reason: format!(
                "no SETTINGS frame within {:?} of connecting",
                self.shared.connect_timeout
            ),
        };
        let (sender, connection) =
            tokio::time::timeout_at(deadline, builder.handshake(TokioIo::new(stream)))
                .await
                .map_err(|_| silent())?
                .map_err(|error| TransportError::Handshake {
                    address: address.clone(),
                    error,
                })?;
        let task_address = address.clone();
        let driver = tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(address = %task_address, error = %err, "connection to node closed");
            }
        });
        // hyper's handshake returns once this side's preface is out; the node has said nothing
        // yet. A connection is used only once its SETTINGS came (as grpc-go waits for the server
        // preface): a node that accepts and stays silent, or speaks HTTP/1.1, is then a failure
        // to connect, which the caller may retry elsewhere, not a call that hangs or fails
        // half-sent.
        let failed = |reason: String| TransportError::NoPreface {
            address: address.clone(),
            reason,
        };
        let outcome = match tokio::time::timeout_at(deadline, preface_rx).await {
            Ok(Ok(Ok(()))) => Ok(sender),
            Ok(Ok(Err(reason))) => Err(failed(reason)),
            Ok(Err(_)) => Err(failed("the connection ended first".to_string())),
            Err(_) => Err(silent()),
        };
        if outcome.is_err() {
            driver.abort();
        }
        outcome
    }

    /// Sends `request` to this node (whatever scheme and authority its URI has) and waits for
    /// the response head. A request the closing connection did not take is sent once more, on
    /// a new connection. On failure, a request that never left this process comes back with
    /// the error, to be sent elsewhere.
    ///
    /// With a `deadline`, the request's `grpc-timeout` is what is left of it at the moment the
    /// request is handed to the connection (once the connection is open: opening one takes
    /// time the server must not be told it still has), and a request whose deadline has passed
    /// by then is not sent at all ([`TransportError::DeadlinePassed`]), as grpc-go fails it.
    pub(crate) async fn send_request(
        &self,
        mut request: http::Request<Body>,
        deadline: Option<Instant>,
        half_to_open: bool,
    ) -> Result<http::Response<hyper::body::Incoming>, (TransportError, Option<http::Request<Body>>)>
    {
        // Clients (`Client`, `grpc`) read gzip answers, for servers that compress whatever they
        // are told (grpcio's `set_compression`), but do not ask for them: tonic's
        // `grpc-accept-encoding` is dropped here, so a server that compresses only on request
        // answers plainly, and no call carries the header (measured under valgrind at about
        // 3 % of a small call in bench/rpc).
        request.headers_mut().remove(GRPC_ACCEPT_ENCODING);
        if request.uri().authority() != Some(&self.shared.authority) {
            let mut parts = std::mem::take(request.uri_mut()).into_parts();
            parts.scheme = self.shared.origin.scheme().cloned();
            parts.authority = Some(self.shared.authority.clone());
            if parts.path_and_query.is_none() {
                parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
            }
            *request.uri_mut() =
                Uri::from_parts(parts).expect("scheme, authority and path make a valid URI");
        }
        if !request.headers().contains_key(http::header::USER_AGENT) {
            request
                .headers_mut()
                .insert(http::header::USER_AGENT, USER_AGENT.clone());
        }
        let mut reopened = false;
        loop {
            // With `half_to_open`, a connection still opening when half of what is left of the
            // deadline is gone fails the call unsent (`NotOpened`), for it to go elsewhere.
            let sender = match (self.open_sender(), deadline.filter(|_| half_to_open)) {
                (Some(sender), _) => Ok(sender),
                (None, None) => self.sender().await,
                (None, Some(deadline)) => {
                    let waiting = Instant::now();
                    let by = waiting + deadline.saturating_duration_since(waiting) / 2;
                    tokio::time::timeout_at(by.into(), self.sender())
                        .await
                        .unwrap_or_else(|_| {
                            Err(TransportError::NotOpened {
                                address: self.shared.address.clone(),
                                waited: waiting.elapsed(),
                            })
                        })
                }
            };
            let mut sender = match sender {
                Ok(sender) => sender,
                Err(err) => return Err((err, Some(request))),
            };
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    let address = self.shared.address.clone();
                    return Err((TransportError::DeadlinePassed { address }, Some(request)));
                }
                request
                    .headers_mut()
                    .insert(GRPC_TIMEOUT, crate::context::grpc_timeout_value(left));
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(response),
                Err(mut err) => {
                    let address = self.shared.address.clone();
                    match err.take_message() {
                        Some(unsent) if !reopened => {
                            reopened = true;
                            request = unsent;
                        }
                        Some(unsent) => {
                            return Err((
                                TransportError::Unsent {
                                    address,
                                    error: err.into_error(),
                                },
                                Some(unsent),
                            ))
                        }
                        None => {
                            return Err((
                                TransportError::Exchange {
                                    address,
                                    error: err.into_error(),
                                },
                                None,
                            ))
                        }
                    }
                }
            }
        }
    }
}

/// The length of an HTTP/2 frame header.
const FRAME_HEAD: usize = 9;

pin_project_lite::pin_project! {
    /// A connection's stream that tells, once, whether the first frame the node sent is a
    /// SETTINGS frame: the node's HTTP/2 preface (RFC 9113 §3.4).
    struct Preface<T> {
        #[pin]
        io: T,
        head: [u8; FRAME_HEAD],
        seen: usize,
        told: Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
    }
}

impl<T> Preface<T> {
    /// Looks at bytes just read, until the first frame's header is whole.
    fn look(self: Pin<&mut Self>, read: &[u8]) {
        let this = self.project();
        let Some(told) = this.told.take() else {
            return;
        };
        let take = read.len().min(FRAME_HEAD - *this.seen);
        this.head[*this.seen..*this.seen + take].copy_from_slice(&read[..take]);
        *this.seen += take;
        if read.is_empty() {
            let _ = told.send(Err("it closed the connection".to_string()));
        } else if *this.seen < FRAME_HEAD {
            *this.told = Some(told);
        } else if this.head[3] == SETTINGS && this.head[4] & ACK == 0 {
            let _ = told.send(Ok(()));
        } else {
            let text = String::from_utf8_lossy(&this.head[..]);
            let _ = told.send(Err(format!(
                "it answered with other bytes than HTTP/2's (`{}`: not a gRPC server, or \
                 one that wants TLS?)",
                text.escape_debug()
            )));
        }
    }
}

/// The SETTINGS frame type, and the flag of its acknowledgement.
const SETTINGS: u8 = 0x4;
const ACK: u8 = 0x1;

impl<T: tokio::io::AsyncRead> tokio::io::AsyncRead for Preface<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.told.is_none() {
            return self.project().io.poll_read(cx, buf);
        }
        let before = buf.filled().len();
        let result = std::task::ready!(self.as_mut().project().io.poll_read(cx, buf));
        match &result {
            Ok(()) => self.look(&buf.filled()[before..]),
            Err(err) => {
                if let Some(told) = self.project().told.take() {
                    let _ = told.send(Err(format!("reading from it failed: {err}")));
                }
            }
        }
        Poll::Ready(result)
    }
}

impl<T: tokio::io::AsyncWrite> tokio::io::AsyncWrite for Preface<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

/// Spawns the tasks hyper's HTTP/2 client starts (one per request, which waits for its response
/// head) with their future boxed first. tokio copies a task's future into the task and writes
/// over it when the task ends; hyper's per-request future is kilobytes, and boxing it once costs
/// less than those copies (callgrind in bench/rpc: ~1.5 % of a small call's instructions).
#[derive(Clone, Copy, Debug)]
struct BoxedTasks;

impl<F> hyper::rt::Executor<F> for BoxedTasks
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        tokio::spawn(Box::pin(future));
    }
}

/// The deadline of a call made through a [`Connection`] as a tower service (as
/// [`Connection::grpc`]'s are), put in the request's extensions (`tonic::Request`'s carry over).
/// The request's `grpc-timeout` is then what is left of it when the request goes out, once the
/// connection is open (opening one takes time the server must not be told it still has), and a
/// request whose deadline has passed by then is not sent
/// ([`TransportError::DeadlinePassed`]). Without it, a `grpc-timeout` the request has goes as
/// it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendBy(pub Instant);

const GRPC_ACCEPT_ENCODING: http::HeaderName =
    http::HeaderName::from_static("grpc-accept-encoding");
/// The header that carries the time a call has left (`Timeout` in gRPC's HTTP/2 protocol).
pub(crate) const GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");

impl tower_service::Service<http::Request<Body>> for Connection {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = TransportError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, TransportError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        // Connecting happens inside the call, under the call's deadline.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let connection = self.clone();
        let deadline = request.extensions_mut().remove::<SendBy>().map(|by| by.0);
        Box::pin(async move {
            connection
                .send_request(request, deadline, false)
                .await
                .map_err(|(err, _)| err)
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_node_marked_unreachable_is_left_out_whatever_form_its_address_takes() {
        use super::{Node, Unreachable};
        let node = |address: &str| Node {
            id: address.into(),
            address: address.into(),
            metadata: Default::default(),
        };
        let unreachable = Unreachable::default();
        // What a connection to `http://127.0.0.1:1/` marks: its authority.
        unreachable.mark("127.0.0.1:1");
        let nodes = [
            node("http://127.0.0.1:1/"),
            node("127.0.0.1:2"),
            node("https://127.0.0.1:1"),
        ];
        let left = unreachable.reachable(&nodes).expect("one left out");
        let left: Vec<&str> = left.iter().map(|n| n.address.as_str()).collect();
        assert_eq!(left, ["127.0.0.1:2"]);
        assert!(unreachable.reachable(&[node("127.0.0.1:2")]).is_none());
    }

    use super::*;

    #[tokio::test]
    async fn connections_opened_have_nodelay_and_tcp_keepalive() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let stream = connect_tcp(&address, Duration::from_secs(5)).await.unwrap();
        assert!(stream.nodelay().unwrap());
        let socket = socket2::SockRef::from(&stream);
        assert!(socket.keepalive().unwrap());
        #[cfg(target_os = "linux")]
        {
            assert_eq!(socket.tcp_keepalive_time().unwrap(), TCP_KEEPALIVE);
            assert_eq!(socket.tcp_keepalive_interval().unwrap(), TCP_KEEPALIVE);
        }
    }

    #[test]
    fn addresses_are_checked_up_front() {
        let ok = Connection::new("127.0.0.1:50051").unwrap();
        assert_eq!(ok.address(), "127.0.0.1:50051");
        assert_eq!(ok.origin().to_string(), "http://127.0.0.1:50051/");
        assert_eq!(
            Connection::new("http://[::1]:9/").unwrap().address(),
            "[::1]:9"
        );
        for (bad, says) in [
            ("127.0.0.1", "no port"),
            ("127.0.0.1:0", "no port"),
            (":8080", "no host"),
            (
                "https://node:443",
                "the node serves TLS (https://); give the client a CA",
            ),
            ("ftp://node:21", "scheme `ftp` is not supported"),
            ("node:1/path", "no path"),
            ("not an address", "expected host:port"),
        ] {
            let err = Connection::new(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_an_unsent_request() {
        // A port that was free a moment ago: nothing listens there now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conn = Connection::new(&format!("127.0.0.1:{port}")).unwrap();
        let request = http::Request::builder()
            .uri("/x.Y/Z")
            .body(Body::empty())
            .unwrap();
        let (err, unsent) = conn.send_request(request, None, false).await.unwrap_err();
        assert!(
            unsent.is_some(),
            "the request comes back to be sent elsewhere"
        );
        assert!(matches!(err, TransportError::Connect { .. }), "{err:?}");
        assert!(err.is_unsent());
        assert!(err.to_string().contains(&format!("127.0.0.1:{port}")));
    }

    /// Sends a request through a new connection to a node at `address` that is no HTTP/2
    /// server, marking failures in `unreachable`; the error.
    async fn no_http2(address: &str, unreachable: &Arc<Unreachable>) -> TransportError {
        let conn = Connection::with_keepalive(
            address,
            None,
            Some(Arc::clone(unreachable)),
            ClientTls::default(),
        )
        .unwrap();
        let request = http::Request::builder()
            .uri("/x.Y/Z")
            .body(Body::empty())
            .unwrap();
        let (err, unsent) = conn.send_request(request, None, false).await.unwrap_err();
        assert!(unsent.is_some(), "never sent: it may go elsewhere");
        assert!(err.is_unsent() && err.is_unreachable(), "{err:?}");
        err
    }

    #[tokio::test]
    async fn a_node_that_does_not_answer_http2_is_unreachable_not_a_failed_call() {
        let unreachable = Arc::new(Unreachable::default());
        let node = |address: &str| Node {
            id: address.to_string(),
            address: address.to_string(),
            ..Default::default()
        };

        // An HTTP/1.1 server: its answer to the preface is no SETTINGS frame.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http1 = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = [0u8; 64];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                    .await;
            }
        });
        let err = no_http2(&http1, &unreachable).await;
        let text = err.to_string();
        assert!(
            text.contains("did not open an HTTP/2 connection")
                && text.contains("other bytes than HTTP/2's (`HTTP/1.1 "),
            "{text}"
        );

        // One that accepts and says nothing: given up after the connect timeout, and marked
        // even when the call that opened the connection gave up first.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let conn = Connection::with_keepalive(
            &silent,
            None,
            Some(Arc::clone(&unreachable)),
            ClientTls::default(),
        )
        .unwrap();
        let request = http::Request::builder()
            .uri("/x.Y/Z")
            .body(Body::empty())
            .unwrap();
        let gave_up = tokio::time::timeout(
            Duration::from_millis(200),
            conn.send_request(request, None, false),
        )
        .await;
        assert!(gave_up.is_err(), "a silent node answered?");
        assert!(unreachable
            .reachable(&[node(&http1), node("127.0.0.1:9")])
            .is_some());
        // (The HTTP/1.1 node's mark lasts 5 s: it may be over by the time the silent one's comes.)
        let nodes = [node(&silent), node("127.0.0.1:9")];
        let waited = std::time::Instant::now();
        while unreachable.reachable(&nodes).is_none() {
            assert!(
                waited.elapsed() < DEFAULT_CONNECT_TIMEOUT + Duration::from_secs(2),
                "the silent node was never marked"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left = unreachable.reachable(&nodes).unwrap();
        assert_eq!(left[0].address, "127.0.0.1:9");
        let err = no_http2(&silent, &unreachable).await;
        assert!(
            err.to_string().contains("no SETTINGS frame within 5s"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn requests_name_rmicro_as_user_agent_and_reach_the_node() {
        // A bare HTTP/2 server answering with the user-agent it saw.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let service = hyper::service::service_fn(
                |req: http::Request<hyper::body::Incoming>| async move {
                    let agent = req.headers()[http::header::USER_AGENT].clone();
                    let mut response = http::Response::new(String::new());
                    response.headers_mut().insert("x-seen-agent", agent);
                    Ok::<_, std::convert::Infallible>(response)
                },
            );
            let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        let conn = Connection::new(&address).unwrap();
        let request = http::Request::builder()
            .uri("/x.Y/Z")
            .body(Body::empty())
            .unwrap();
        let response = conn
            .send_request(request, None, false)
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        let agent = response.headers()["x-seen-agent"]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(
            agent,
            concat!("grpc-rust-rmicro/", env!("CARGO_PKG_VERSION"))
        );
        assert!(conn.is_open());
    }
}
