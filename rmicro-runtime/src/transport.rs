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

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::Uri;
use hyper::client::conn::http2;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tonic::body::Body;

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
    /// The TCP connection opened, but the node does not speak HTTP/2 (not a gRPC server?).
    #[error("HTTP/2 handshake with {address} failed: {error}")]
    Handshake {
        /// The node.
        address: String,
        /// hyper's error.
        error: hyper::Error,
    },
    /// The connection closed before the request was written; it never reached the node.
    #[error("the connection to {address} closed before the request was sent: {error}")]
    Unsent {
        /// The node.
        address: String,
        /// hyper's error.
        error: hyper::Error,
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

    /// The status a caller should see: `Unavailable`, as gRPC specifies for transport failures.
    pub fn to_status(&self) -> tonic::Status {
        tonic::Status::unavailable(self.to_string())
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

/// Opens a TCP connection to `address` (`host:port`, `[v6]:port`), giving up after `timeout`
/// with a `TimedOut` error; `TCP_NODELAY` is set, as calls are small request/response pairs.
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
    Ok(stream)
}

/// One HTTP/2 connection to one node, (re)opened on demand. Cheap to clone: clones share it.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
}

struct Shared {
    /// `host:port`, for connecting and for messages.
    address: String,
    authority: Authority,
    /// `http://host:port/`, for `tonic::client::Grpc::with_origin`.
    origin: Uri,
    connect_timeout: Duration,
    /// Keepalive pings on the connection, while calls are open on it.
    keepalive: Option<Keepalive>,
    /// The open connection's handle, if there is one.
    sender: Mutex<Option<http2::SendRequest<Body>>>,
    /// Held while a connection is being opened, so concurrent calls wait for one handshake
    /// instead of each opening their own.
    opening: tokio::sync::Mutex<()>,
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
    /// (TLS to nodes is not supported).
    pub fn new(address: &str) -> Result<Connection, TransportError> {
        Connection::with_keepalive(address, None)
    }

    /// As [`Connection::new`], with keepalive pings (sent only while calls are open on the
    /// connection: grpc-go servers count pings on a connection without calls as abuse).
    pub(crate) fn with_keepalive(
        address: &str,
        keepalive: Option<Keepalive>,
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
        let scheme = uri.scheme().cloned().unwrap_or(Scheme::HTTP);
        if scheme != Scheme::HTTP {
            return Err(bad(format!(
                "scheme `{scheme}` is not supported; nodes are reached over plain-text HTTP/2 (http://)"
            )));
        }
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
                authority,
                origin,
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                keepalive,
                sender: Mutex::new(None),
                opening: tokio::sync::Mutex::new(()),
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

    /// A gRPC client over this connection; it reads gzip-compressed answers (without asking for
    /// them: see [`Connection::send_request`]).
    pub fn grpc(&self) -> tonic::client::Grpc<Connection> {
        tonic::client::Grpc::with_origin(self.clone(), self.origin())
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
    }

    /// Whether a connection is open right now.
    pub fn is_open(&self) -> bool {
        self.open_sender().is_some()
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
        let _opening = self.shared.opening.lock().await;
        // Someone else may have opened it while this call waited.
        if let Some(sender) = self.open_sender() {
            return Ok(sender);
        }
        let sender = self.open().await?;
        *self.shared.sender.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender.clone());
        Ok(sender)
    }

    async fn open(&self) -> Result<http2::SendRequest<Body>, TransportError> {
        let address = &self.shared.address;
        let stream = connect_tcp(address, self.shared.connect_timeout)
            .await
            .map_err(|source| TransportError::Connect {
                address: address.clone(),
                source,
            })?;
        let mut builder = http2::Builder::new(BoxedTasks);
        builder.timer(hyper_util::rt::TokioTimer::new());
        if let Some(keepalive) = self.shared.keepalive {
            builder
                .keep_alive_interval(keepalive.interval)
                .keep_alive_timeout(keepalive.timeout);
        }
        let (sender, connection) =
            builder
                .handshake(TokioIo::new(stream))
                .await
                .map_err(|error| TransportError::Handshake {
                    address: address.clone(),
                    error,
                })?;
        let address = address.clone();
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%address, error = %err, "connection to node closed");
            }
        });
        Ok(sender)
    }

    /// Sends `request` to this node (whatever scheme and authority its URI has) and waits for
    /// the response head. A request the closing connection did not take is sent once more, on
    /// a new connection. On failure, a request that never left this process comes back with
    /// the error, to be sent elsewhere.
    pub(crate) async fn send_request(
        &self,
        mut request: http::Request<Body>,
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
            parts.scheme = Some(Scheme::HTTP);
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
            let mut sender = match self.sender().await {
                Ok(sender) => sender,
                Err(err) => return Err((err, Some(request))),
            };
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

const GRPC_ACCEPT_ENCODING: http::HeaderName =
    http::HeaderName::from_static("grpc-accept-encoding");

impl tower_service::Service<http::Request<Body>> for Connection {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = TransportError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, TransportError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        // Connecting happens inside the call, under the call's deadline.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let connection = self.clone();
        Box::pin(async move {
            connection
                .send_request(request)
                .await
                .map_err(|(err, _)| err)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            ("https://node:443", "scheme `https` is not supported"),
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
        let (err, unsent) = conn.send_request(request).await.unwrap_err();
        assert!(
            unsent.is_some(),
            "the request comes back to be sent elsewhere"
        );
        assert!(matches!(err, TransportError::Connect { .. }), "{err:?}");
        assert!(err.is_unsent());
        assert!(err.to_string().contains(&format!("127.0.0.1:{port}")));
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
            .send_request(request)
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
