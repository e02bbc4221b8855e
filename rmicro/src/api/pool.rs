//! Keep-alive HTTP/1.1 connections to backend nodes, for the `http` handler.
//!
//! Each node has a list of connections. A request takes the first idle one off the list, or
//! opens a new one; the connection goes back on the list as soon as the response head has
//! arrived, and is idle again once that response's body has been read (hyper tracks that), so
//! nothing has to be spawned per request to hand it back. Closed connections are dropped from the list when
//! a request walks past them. A request that a pooled connection closed before sending (the
//! backend timed the keep-alive out at that moment) is sent once more on a new connection.
//! Connections unused for the idle limit are closed: by a request that meets them, or by a
//! sweep every half of the limit (at most every 30 s) when no request comes.

use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use axum_core::body::Body;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::time::{Instant, Sleep};

use super::conn::later;

/// Most idle connections kept per node and worker; more are closed when their response is
/// done. Those whose response is still coming (a stream, a long download) do not count: they
/// would otherwise take the places of idle ones, and every other request to the node would
/// open a connection of its own.
const MAX_PER_NODE: usize = 512;

/// Node entries kept per worker before those without live connections are dropped.
const MAX_NODES: usize = 1024;

/// Most separate connection sets; workers beyond share them.
const MAX_SHARDS: usize = 64;

thread_local! {
    /// The gateway worker this thread is (0 outside the workers).
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// Makes this thread worker `n`: its requests use the connections worker `n` opened, which
/// live on its own event loop.
pub(crate) fn set_worker(n: usize) {
    WORKER.with(|w| w.set(n));
}

/// The gateway worker this thread is (0 outside the workers).
pub(crate) fn worker() -> usize {
    WORKER.with(Cell::get)
}

/// A kept-alive connection last taken at least this long ago may have been closed by its node
/// (a keep-alive timeout) just as a request goes out on it; one reused sooner cannot have timed
/// out.
const STALE_AFTER: Duration = Duration::from_millis(100);

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PoolError {
    /// No connection to the node could be opened: it is down (or not there), and the request
    /// was not sent.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The exchange failed after the request was sent, or while its body was read.
    #[error("{0}")]
    Exchange(#[source] hyper::Error),
    /// A connection that had sat idle in the pool failed before its node answered: most likely
    /// the node closed it for being idle as the request went out, and is fine.
    #[error("kept-alive connection closed by the node: {0}")]
    Stale(#[source] hyper::Error),
    /// The node registered `secure=true` and the gateway could not open TLS to it: it has no
    /// client TLS (`--client-tls-ca`), or the handshake failed. The request was not sent.
    #[error("{0}")]
    Tls(String),
}

/// The connection one exchange goes out on: taken from the pool, or opened when sent.
pub(crate) struct Lease {
    conn: Option<http1::SendRequest<Body>>,
    /// Whether it was last taken [`STALE_AFTER`] or longer ago (its idle time, plus the
    /// previous exchange's).
    stale: bool,
    /// Whether its connection was opened for this request ([`Pool::open`]), not pooled.
    opened: bool,
    /// When it was taken from the pool: the one clock read per request, which the backend
    /// timeout counts from, and the connection's next idle time too (from this request's start,
    /// a little more than it will have been).
    taken: Option<Instant>,
    /// The connection's timer for the backend timeout, if it has one yet.
    timer: Option<Timer>,
}

impl Lease {
    /// A new connection, opened when the request is sent.
    fn fresh() -> Lease {
        Lease {
            conn: None,
            stale: false,
            opened: false,
            taken: None,
            timer: None,
        }
    }

    /// Whether the node may have closed this connection for being idle.
    pub(crate) fn may_be_stale(&self) -> bool {
        self.stale
    }

    /// Whether its connection came from the pool: it served a request before, and its node
    /// may have closed it since.
    pub(crate) fn reused(&self) -> bool {
        self.conn.is_some() && !self.opened
    }

    /// Whether it has no connection yet (one is opened when the request is sent, or by
    /// [`Pool::open`]).
    pub(crate) fn unopened(&self) -> bool {
        self.conn.is_none()
    }
}

/// Each worker's connections by node address (looked up twice per request: foldhash, seeded per
/// process, instead of SipHash), each with the time from which the node may have closed it for
/// being idle.
type NodeMap = HashMap<String, Vec<Pooled>, foldhash::fast::RandomState>;

/// A kept-alive connection in the pool: idle, or with a response body still coming.
struct Pooled {
    conn: http1::SendRequest<Body>,
    /// When it was last taken plus [`STALE_AFTER`].
    stale_at: Instant,
    /// When the sweep last saw it in use (a response body still coming): it has been idle at
    /// most since then.
    busy_at: Option<Instant>,
    /// Its timer for the backend timeout, kept for the next request.
    timer: Option<Timer>,
}

/// A connection's timer for the backend timeout, kept with it from one request to the next:
/// moving a pending tokio timer to a later deadline is one compare-and-swap, where a timer per
/// request is put into the runtime's timer wheel and taken out again, under its lock, each
/// time. (When the wheel reaches the old deadline it finds the new one and moves the entry;
/// with a request at least every backend timeout, that is all the wheel sees of it.)
struct Timer {
    sleep: Pin<Box<Sleep>>,
    /// The runtime whose clock it runs on: a connection may be used from another's worker (more
    /// workers than connection sets), and a timer is only polled on its own runtime, which is
    /// running while it is.
    runtime: tokio::runtime::Id,
}

impl Timer {
    /// The timer in `slot` set to `deadline`: the one there if it is this runtime's, else a new
    /// one.
    fn set(slot: &mut Option<Timer>, deadline: Instant) -> Pin<&mut Sleep> {
        let runtime = tokio::runtime::Handle::current().id();
        if slot.as_ref().is_some_and(|timer| timer.runtime != runtime) {
            *slot = None;
        }
        let mut fresh = false;
        let timer = slot.get_or_insert_with(|| {
            fresh = true;
            Timer {
                sleep: Box::pin(tokio::time::sleep_until(deadline)),
                runtime,
            }
        });
        if !fresh {
            timer.sleep.as_mut().reset(deadline);
        }
        timer.sleep.as_mut()
    }
}

/// The backend timeout passed before the node answered.
#[derive(Debug)]
pub(crate) struct TimedOut;

/// What `fut` gives, or [`TimedOut`] if `sleep` (when there is one) fires first.
fn within<'s, F: Future + Unpin + 's>(
    mut fut: F,
    mut sleep: Option<Pin<&'s mut Sleep>>,
) -> impl Future<Output = Result<F::Output, TimedOut>> + 's {
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(out) = Pin::new(&mut fut).poll(cx) {
            return Poll::Ready(Ok(out));
        }
        match sleep.as_mut() {
            Some(sleep) => sleep.as_mut().poll(cx).map(|()| Err(TimedOut)),
            None => Poll::Pending,
        }
    })
}

impl Pooled {
    /// Whether it has sat unused for `limit` at `now`, as far as is known: since it was last
    /// taken, or since the sweep last saw it in use, whichever is later.
    fn idle_too_long(&self, now: Instant, limit: Duration) -> bool {
        let since_taken = self.stale_at.checked_add(limit.saturating_sub(STALE_AFTER));
        let since_busy = self.busy_at.map(|busy| busy.checked_add(limit));
        match (since_taken, since_busy) {
            (Some(a), Some(Some(b))) => now >= a.max(b),
            (Some(a), None) => now >= a,
            _ => false,
        }
    }
}

pub(crate) struct Pool {
    /// One set of connections per worker, so a request never uses a connection whose I/O runs
    /// on another thread.
    shards: Arc<[Mutex<NodeMap>]>,
    connect_timeout: Duration,
    /// How long a connection may sit idle before it is closed.
    idle_limit: Duration,
    /// Whether the task that closes idle connections runs (started with the first one, and
    /// again should its runtime end).
    sweeping: Arc<AtomicBool>,
    /// How nodes that registered `secure=true` are reached, if the gateway can.
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<rmicro_runtime::tls::ClientTls>,
}

impl Pool {
    /// A pool opening connections within `connect_timeout` and closing those idle for
    /// `idle_limit` (as Go's `IdleConnTimeout`: a node is not left holding connections, a
    /// thread each for some servers, for as long as the gateway runs).
    pub(crate) fn new(connect_timeout: Duration, idle_limit: Duration) -> Pool {
        let shards = std::thread::available_parallelism()
            .map_or(1, std::num::NonZeroUsize::get)
            .clamp(1, MAX_SHARDS);
        Pool {
            shards: (0..shards)
                .map(|_| Mutex::new(NodeMap::default()))
                .collect(),
            connect_timeout,
            idle_limit,
            sweeping: Arc::new(AtomicBool::new(false)),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    fn shard(&self) -> &Mutex<NodeMap> {
        &self.shards[worker() % self.shards.len()]
    }

    /// How long opening a connection may take.
    pub(crate) fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Closes this worker's kept-alive connections to `address` (each once its response in
    /// flight, if any, is done): after a response whose framing was ambiguous, the connection
    /// it came on may not be where the node thinks it is, and its next response could be read
    /// from the middle of this one's bytes.
    pub(crate) fn discard(&self, address: &str) {
        let mut nodes = self.shard().lock().unwrap_or_else(|p| p.into_inner());
        nodes.remove(address);
    }

    /// An idle connection to `address` if there is one, else a new one when the request goes.
    pub(crate) fn lease(&self, address: &str) -> Lease {
        let mut nodes = self.shard().lock().unwrap_or_else(|p| p.into_inner());
        let Some(conns) = nodes.get_mut(address) else {
            return Lease::fresh();
        };
        // The first idle connection, taken off the list while this request uses it (back on
        // once its response head is in); closed ones met on the way are dropped.
        let mut i = 0;
        let mut now = None;
        while i < conns.len() {
            if conns[i].conn.is_closed() {
                conns.swap_remove(i);
            } else if conns[i].conn.is_ready() {
                let pooled = conns.swap_remove(i);
                let now = *now.get_or_insert_with(Instant::now);
                if pooled.idle_too_long(now, self.idle_limit) {
                    // Dropped, which closes it; the sweep would have soon.
                    continue;
                }
                return Lease {
                    conn: Some(pooled.conn),
                    stale: now >= pooled.stale_at,
                    opened: false,
                    taken: Some(now),
                    timer: pooled.timer,
                };
            } else {
                i += 1;
            }
        }
        Lease::fresh()
    }

    /// `lease` with its connection opened now if it has none (over TLS if `secure`: the node
    /// registered `secure=true`), so that a node that cannot be reached is known while the
    /// request is still whole (its body unread): it may then go to another node, whatever its
    /// method.
    pub(crate) async fn open(
        &self,
        mut lease: Lease,
        address: &str,
        secure: bool,
    ) -> Result<Lease, PoolError> {
        if lease.conn.is_none() {
            lease.conn = Some(Box::pin(self.connect(address, secure)).await?);
            lease.opened = true;
        }
        Ok(lease)
    }

    fn checkin(
        &self,
        address: &str,
        conn: http1::SendRequest<Body>,
        stale_at: Option<Instant>,
        timer: Option<Timer>,
    ) {
        let Some(stale_at) = stale_at.or_else(|| Instant::now().checked_add(STALE_AFTER)) else {
            return;
        };
        let mut nodes = self.shard().lock().unwrap_or_else(|p| p.into_inner());
        if nodes.len() >= MAX_NODES && !nodes.contains_key(address) {
            // Nodes come and go (new addresses on every deploy): forget those without a live
            // connection rather than every address ever seen.
            nodes.retain(|_, conns| conns.iter().any(|p| !p.conn.is_closed()));
        }
        // Looked up by `&str` first: `entry` would want an owned key for every request.
        let conns = match nodes.get_mut(address) {
            Some(conns) => conns,
            None => nodes.entry(address.to_string()).or_default(),
        };
        // Idle ones counted only when the list is that long already.
        if conns.len() < MAX_PER_NODE || room_among_idle(conns) {
            conns.push(Pooled {
                conn,
                stale_at,
                busy_at: None,
                timer,
            });
        }
        drop(nodes);
        if !self.sweeping.load(Ordering::Relaxed) && !self.sweeping.swap(true, Ordering::Relaxed) {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    let sweeping = Sweeping(Arc::clone(&self.sweeping));
                    runtime.spawn(sweep(
                        Arc::downgrade(&self.shards),
                        self.idle_limit,
                        sweeping,
                    ));
                }
                Err(_) => self.sweeping.store(false, Ordering::Relaxed),
            }
        }
    }

    /// Whether the gateway reaches nodes over TLS (it has client TLS: then every node).
    pub(crate) fn speaks_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }

    /// A new connection to the node at `address`: over TLS if the gateway has client TLS (as
    /// the runtime's clients, it then never falls back to plain text, whatever the registry
    /// says) or if the node registered `secure=true` (`secure`; an error without client TLS).
    async fn connect(
        &self,
        address: &str,
        secure: bool,
    ) -> Result<http1::SendRequest<Body>, PoolError> {
        if secure || self.speaks_tls() {
            return self.connect_tls(address, secure).await;
        }
        let stream = rmicro_runtime::transport::connect_tcp(address, self.connect_timeout)
            .await
            .map_err(|err| PoolError::Connect(err.to_string()))?;
        handshake(address, stream).await
    }

    /// A new connection over TLS to the node at `address`, its certificate checked against the
    /// gateway's client TLS.
    #[cfg(feature = "tls")]
    async fn connect_tls(
        &self,
        address: &str,
        registered_secure: bool,
    ) -> Result<http1::SendRequest<Body>, PoolError> {
        let Some(tls) = &self.tls else {
            return Err(PoolError::Tls(NO_CLIENT_TLS.to_string()));
        };
        let deadline = Instant::now() + self.connect_timeout;
        let stream = rmicro_runtime::transport::connect_tcp(address, self.connect_timeout)
            .await
            .map_err(|err| PoolError::Connect(err.to_string()))?;
        // `host:port`, `[::1]:port`: the host is what the certificate must name.
        let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
        let stream = tokio::time::timeout_at(deadline, tls.connect_http1(host, stream))
            .await
            .map_err(|_| {
                PoolError::Tls(format!(
                    "did not finish a TLS handshake within {:?} of connecting (does it serve \
                     TLS?)",
                    self.connect_timeout
                ))
            })?
            .map_err(|err| {
                let hint = if registered_secure {
                    ""
                } else {
                    " (its registration does not say it serves TLS: given --client-tls-ca, the \
                     gateway reaches every node over TLS, as services' clients do)"
                };
                PoolError::Tls(format!("failed the TLS handshake: {err}{hint}"))
            })?;
        handshake(address, stream).await
    }

    #[cfg(not(feature = "tls"))]
    async fn connect_tls(
        &self,
        _address: &str,
        _secure: bool,
    ) -> Result<http1::SendRequest<Body>, PoolError> {
        Err(PoolError::Tls(
            "serves TLS (its registration says so: secure=true or an https:// address), and this \
             gateway was built without TLS (rmicro's `tls` feature)"
                .to_string(),
        ))
    }

    /// Sends `request` (origin-form URI) to the node at `address` (`host:port`) on `lease`
    /// and waits for the response head, for at most `limit` (counted from when the lease was
    /// taken) if there is one. If the lease's connection may have been closed for being idle
    /// and fails before an answer, `replay` (a copy of a request that may be sent twice) goes
    /// once more on a new connection.
    ///
    /// Each request's future holds this one, and is moved a few times per request: the future
    /// keeps only what the common exchange needs (an `async` block, not an `async fn`, which
    /// would keep a second copy of each argument), and connecting and recovering, both rare,
    /// are boxed.
    // Not an `async fn`: see above.
    #[allow(clippy::manual_async_fn)]
    pub(crate) fn send<'a>(
        &'a self,
        lease: Lease,
        address: &'a str,
        request: Request<Body>,
        replay: Option<Box<Request<Body>>>,
        limit: Option<Duration>,
    ) -> impl Future<Output = Result<Result<Response<Incoming>, PoolError>, TimedOut>> + 'a {
        async move {
            let Lease {
                conn,
                stale,
                opened,
                taken,
                mut timer,
            } = lease;
            let pooled = conn.is_some() && !opened;
            // The timer is the connection's, kept for its next request (see `Timer`).
            let mut sleep = limit.map(|limit| {
                let start = taken.unwrap_or_else(Instant::now);
                Timer::set(&mut timer, later(start, limit))
            });
            let mut conn = match conn {
                Some(conn) => conn,
                None => {
                    let connect = Box::pin(self.connect(address, self.speaks_tls()));
                    match within(connect, sleep.as_mut().map(Pin::as_mut)).await? {
                        Ok(conn) => conn,
                        Err(err) => return Ok(Err(err)),
                    }
                }
            };
            let answer = pin!(conn.try_send_request(request));
            let (conn, response) = match within(answer, sleep.as_mut().map(Pin::as_mut)).await? {
                Ok(response) => (conn, response),
                Err(err) => {
                    let again = Retry {
                        pooled,
                        stale,
                        replay,
                    };
                    let resent = Box::pin(self.resend(address, err, again));
                    match within(resent, sleep.as_mut().map(Pin::as_mut)).await? {
                        Ok(resent) => resent,
                        Err(err) => return Ok(Err(err)),
                    }
                }
            };
            // A connection that switched protocols is the tunnel's now.
            if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
                let stale_at = taken.and_then(|taken| taken.checked_add(STALE_AFTER));
                self.checkin(address, conn, stale_at, timer);
            }
            Ok(Ok(response))
        }
    }

    /// After `err` on a first try: the request again on a new connection where that is safe
    /// (`again` says whether it is), else the error.
    async fn resend(
        &self,
        address: &str,
        mut err: hyper::client::conn::TrySendError<Request<Body>>,
        again: Retry,
    ) -> Result<(http1::SendRequest<Body>, Response<Incoming>), PoolError> {
        let request = match (err.take_message(), again.replay) {
            // A pooled connection closed before it took the request: a new one, once.
            (Some(request), _) if again.pooled => request,
            // It took it, and was closed by the node before an answer.
            (_, Some(replay)) if again.stale && closed_by_node(err.error()) => *replay,
            _ => {
                let err = err.into_error();
                return Err(if again.stale && closed_by_node(&err) {
                    PoolError::Stale(err)
                } else {
                    PoolError::Exchange(err)
                });
            }
        };
        // A node whose connection failed had one: over TLS if the gateway speaks it (a node
        // that registered as serving TLS never has one without).
        let mut conn = self.connect(address, self.speaks_tls()).await?;
        let response = conn
            .send_request(request)
            .await
            .map_err(PoolError::Exchange)?;
        Ok((conn, response))
    }
}

/// What a request to a node that registered `secure=true` is told when the gateway has no
/// client TLS.
#[cfg(feature = "tls")]
const NO_CLIENT_TLS: &str = "serves TLS (its registration says so: secure=true or an https:// \
     address), and the gateway speaks plain HTTP to nodes: give it the CA that signed the \
     node's certificate (--client-tls-ca; --client-tls-cert and --client-tls-key if the node \
     wants a client certificate)";

/// An HTTP/1.1 connection to the node at `address` over `stream`, driven by a task of its own.
async fn handshake<S>(address: &str, stream: S) -> Result<http1::SendRequest<Body>, PoolError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = http1::Builder::new()
        // Head and small bodies in one buffer, one write (as the server side).
        .writev(false)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|err| PoolError::Connect(err.to_string()))?;
    let address = address.to_string();
    tokio::spawn(async move {
        // With upgrades: a `101 Switching Protocols` hands the connection to the tunnel.
        if let Err(err) = conn.with_upgrades().await {
            tracing::debug!(%address, error = %err, "backend connection ended");
        }
    });
    Ok(sender)
}

/// Whether `conns`, a node's list grown to [`MAX_PER_NODE`], has room for one more: fewer idle
/// connections than that (closed ones are dropped on the way).
fn room_among_idle(conns: &mut Vec<Pooled>) -> bool {
    conns.retain(|p| !p.conn.is_closed());
    conns.iter().filter(|p| p.conn.is_ready()).count() < MAX_PER_NODE
}

/// What a failed first try allows.
struct Retry {
    /// The connection came from the pool (it may have been closed meanwhile).
    pooled: bool,
    /// It had sat idle long enough for its node to close it.
    stale: bool,
    /// A copy of the request, if it may be sent twice.
    replay: Option<Box<Request<Body>>>,
}

/// Closes the pool's connections that sat idle for `limit`, every half of it (at most every
/// 30 s), until the pool is gone: without requests to walk past them, they would stay open.
/// Connections in use (a response body still coming) are left alone.
async fn sweep(shards: std::sync::Weak<[Mutex<NodeMap>]>, limit: Duration, _running: Sweeping) {
    let period = (limit / 2).clamp(Duration::from_millis(50), Duration::from_secs(30));
    loop {
        tokio::time::sleep(period).await;
        let Some(shards) = shards.upgrade() else {
            return;
        };
        let now = Instant::now();
        for shard in shards.iter() {
            let mut nodes = shard.lock().unwrap_or_else(|p| p.into_inner());
            nodes.retain(|_, conns| {
                conns.retain_mut(|pooled| {
                    if pooled.conn.is_closed() {
                        return false;
                    }
                    if !pooled.conn.is_ready() {
                        pooled.busy_at = Some(now);
                        return true;
                    }
                    !pooled.idle_too_long(now, limit)
                });
                !conns.is_empty()
            });
        }
    }
}

/// Says that no sweep runs once the one holding it ends (its runtime gone, say): the next
/// connection put back starts another.
struct Sweeping(Arc<AtomicBool>);

impl Drop for Sweeping {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// Whether the node closed the connection before answering (end of stream, or a reset, as a
/// request reaching a socket it has closed gets): on a connection that sat idle, most likely
/// its keep-alive timeout. Other failures (a malformed answer, ...) say something of the node.
pub(crate) fn closed_by_node(err: &hyper::Error) -> bool {
    if err.is_incomplete_message() {
        return true;
    }
    super::error::chain(err)
        .find_map(|e| e.downcast_ref::<std::io::Error>())
        .is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            )
        })
}
