//! Client connection timers: the idle timeout and the request-head timeout, on one timer per
//! connection.
//!
//! hyper's own header-read timer is armed anew for every request (a boxed timer registered and
//! cancelled each time) and runs from the moment hyper waits for the next head, so it also closes
//! keep-alive connections that are merely idle. Here both limits live in the stream wrapper:
//!
//! - **idle**: no bytes either way for `idle` closes an HTTP/1 connection (checked while it
//!   waits to read and while a write waits for a client that does not read), except while a
//!   request has all come in and waits for its node (the backend timeout bounds that); an HTTP/2
//!   connection, whose pings are traffic, is shut down gracefully (a GOAWAY, by
//!   [`ClosesWhenIdle`]) once no request has been in progress for `idle` (give or take a
//!   quarter of it), and closed a quarter later if that has not ended it;
//! - **request head**: once the first byte of a request arrives on an HTTP/1 connection with no
//!   request in progress (and no protocol switch happened on it), its head must be complete (the
//!   service called) within `head`. A client trickling header bytes keeps the connection busy
//!   but not alive. Keep-alive waits and request bodies are not limited by it; HTTP/2
//!   connections (told by their preface) only by the idle timeout, as frames such as pings
//!   carry no request.
//!
//! Traffic only records when it happened; the one timer is moved when it fires early or when a
//! head starts before its deadline, not on every read and write.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The HTTP/2 connection preface's first bytes.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// How many requests of a connection have started (head read, service called) and finished
/// (response body done or dropped). Shared by the connection's service and its stream.
#[derive(Debug, Default)]
pub(crate) struct Exchanges {
    started: AtomicU64,
    finished: AtomicU64,
    /// Requests whose body has all come in (or was dropped unread).
    received: AtomicU64,
    /// Requests whose response head is out of the service.
    responded: AtomicU64,
    /// Set once a response switched protocols: what follows on the connection is no request.
    upgraded: AtomicBool,
    /// Set when an HTTP/2 connection has had no request for the idle limit: it is to be closed
    /// gracefully (GOAWAY), see [`ClosesWhenIdle`].
    idle_out: AtomicBool,
    /// Set when [`Exchanges::unread`] holds something (read without locking on every response).
    has_unread: AtomicBool,
    /// What an HTTP/1 request left of its body when it was dropped unread: see [`Unread`].
    unread: std::sync::Mutex<Option<(u64, Unread)>>,
}

/// An HTTP/1 request's body left unread by the service (a gateway error, a plugin's refusal):
/// the next request on the connection starts after it, so it is read and thrown away before the
/// response goes out, as Go's net/http does (up to [`DISCARD_LIMIT`] within [`DISCARD_TIME`]);
/// where that cannot be done the response says `Connection: close`. Without either, hyper
/// closed the connection after the response without saying so, and a client's next request on
/// it failed (a broken pipe).
#[derive(Debug)]
pub(crate) enum Unread {
    /// To read and throw away.
    Body(hyper::body::Incoming),
    /// Not to read: the client waits for `100 Continue` before sending it.
    Close,
}

/// How much of an unread request body is read and thrown away to keep its connection open.
const DISCARD_LIMIT: u64 = 256 * 1024;

/// How long reading an unread request body may hold its response up.
const DISCARD_TIME: Duration = Duration::from_secs(1);

impl Exchanges {
    /// A request's head was read; the request is finished when the returned guard is dropped
    /// (with its response body, or with the request if it ends without a response).
    pub(crate) fn start(self: &Arc<Self>) -> Finish {
        let seq = self.started.fetch_add(1, Ordering::Relaxed) + 1;
        Finish(Arc::clone(self), seq)
    }

    /// A request without a body started: [`start`](Self::start), its body counted as all
    /// come in (the express lane's requests).
    pub(crate) fn start_bodiless(self: &Arc<Self>) -> Finish {
        let finish = self.start();
        self.received.fetch_add(1, Ordering::Relaxed);
        finish
    }

    /// The response head of the request in progress is going out (the express lane's).
    pub(crate) fn responding(&self) {
        self.responded.fetch_add(1, Ordering::SeqCst);
    }

    fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// Leaves what request `seq` (its number among the connection's) did not read of its body,
    /// unless its response is out already (its body went with an upload the node answered
    /// before the end of): that is for hyper to end.
    fn leave(&self, seq: u64, unread: Unread) {
        if self.responded.load(Ordering::SeqCst) >= seq {
            return;
        }
        if let Ok(mut slot) = self.unread.lock() {
            *slot = Some((seq, unread));
            self.has_unread.store(true, Ordering::SeqCst);
        }
        // The response may have come out meanwhile, on another thread (a multi-threaded
        // runtime): it did not see this, so it is taken back (and dropped: hyper ends it).
        if self.responded.load(Ordering::SeqCst) >= seq {
            drop(self.take_unread(seq));
        }
    }

    /// What request `seq` left unread.
    fn take_unread(&self, seq: u64) -> Option<Unread> {
        if !self.has_unread.load(Ordering::SeqCst) || !self.has_unread.swap(false, Ordering::SeqCst)
        {
            return None;
        }
        let (left_by, unread) = self.unread.lock().ok()?.take()?;
        (left_by == seq).then_some(unread)
    }

    fn finished(&self) -> u64 {
        self.finished.load(Ordering::Relaxed)
    }

    /// Whether the connection has been idle for its limit and is to be closed gracefully.
    pub(crate) fn idle_out(&self) -> bool {
        self.idle_out.load(Ordering::Relaxed)
    }

    fn idle(&self) -> bool {
        self.started() == self.finished()
    }

    /// Whether a request has all come in and waits for its node's answer: the client rightly
    /// sends nothing then (the backend timeout bounds the wait, not the idle timeout).
    fn waiting_for_node(&self) -> bool {
        let started = self.started();
        self.received.load(Ordering::Relaxed) == started
            && self.responded.load(Ordering::Relaxed) < started
    }
}

/// What becomes of a request body the service leaves unread (see [`Unread`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Leftover {
    /// HTTP/1: read and thrown away before the response.
    Discard,
    /// HTTP/1 with `Expect: 100-continue`: the response closes the connection.
    Close,
    /// HTTP/2: each stream ends by itself.
    Ignore,
}

impl Leftover {
    /// For `request` (as it came in).
    pub(crate) fn of(request: &http::Request<hyper::body::Incoming>) -> Leftover {
        use http_body::Body as _;
        // A request without a body leaves none (and costs no header lookup).
        if request.body().is_end_stream() || request.version() >= http::Version::HTTP_2 {
            Leftover::Ignore
        } else if request
            .headers()
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
        {
            Leftover::Close
        } else {
            Leftover::Discard
        }
    }
}

/// A request body that counts its request as received once it has all come in (at once for a
/// request without one) or is dropped; dropped before its end, it is left to the connection
/// (see [`Unread`]).
pub(crate) struct Receiving {
    body: Option<hyper::body::Incoming>,
    /// Until the body has all come in.
    exchanges: Option<Arc<Exchanges>>,
    leftover: Leftover,
    /// The request's number among the connection's.
    seq: u64,
}

impl Drop for Receiving {
    fn drop(&mut self) {
        let Some(exchanges) = self.exchanges.take() else {
            return;
        };
        exchanges.received.fetch_add(1, Ordering::Relaxed);
        match (self.leftover, self.body.take()) {
            (Leftover::Discard, Some(body)) => exchanges.leave(self.seq, Unread::Body(body)),
            (Leftover::Close, _) => exchanges.leave(self.seq, Unread::Close),
            _ => {}
        }
    }
}

/// Counts the request of a [`Receiving`] body as received, once.
fn received(exchanges: &mut Option<Arc<Exchanges>>) {
    if let Some(exchanges) = exchanges.take() {
        exchanges.received.fetch_add(1, Ordering::Relaxed);
    }
}

impl Receiving {
    /// The body of the request `finish` finishes.
    pub(crate) fn new(body: hyper::body::Incoming, finish: &Finish, leftover: Leftover) -> Self {
        use http_body::Body as _;
        let Finish(exchanges, seq) = finish;
        // Without a body it is received now, and no reference to the counts is kept.
        let exchanges = if body.is_end_stream() {
            exchanges.received.fetch_add(1, Ordering::Relaxed);
            None
        } else {
            Some(Arc::clone(exchanges))
        };
        Receiving {
            body: Some(body),
            exchanges,
            leftover,
            seq: *seq,
        }
    }
}

impl http_body::Body for Receiving {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let Some(body) = this.body.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = ready!(Pin::new(&mut *body).poll_frame(cx));
        if frame.is_none() || body.is_end_stream() {
            received(&mut this.exchanges);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body
            .as_ref()
            .is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.as_ref().map_or_else(
            || http_body::SizeHint::with_exact(0),
            http_body::Body::size_hint,
        )
    }
}

/// Reads an unread request body to its end and throws it away: `true` once it ended, `false`
/// when it is longer than [`DISCARD_LIMIT`], fails, or takes more than [`DISCARD_TIME`].
struct Discard {
    body: hyper::body::Incoming,
    read: u64,
    deadline: Pin<Box<Sleep>>,
}

impl Future for Discard {
    type Output = bool;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        use http_body::Body as _;
        let this = &mut *self;
        loop {
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(None) => return Poll::Ready(true),
                Poll::Ready(Some(Ok(frame))) => {
                    this.read += frame.data_ref().map_or(0, |d| d.len() as u64);
                    if this.read > DISCARD_LIMIT {
                        return Poll::Ready(false);
                    }
                }
                Poll::Ready(Some(Err(_))) => return Poll::Ready(false),
                Poll::Pending => {
                    return match this.deadline.as_mut().poll(cx) {
                        Poll::Ready(()) => Poll::Ready(false),
                        Poll::Pending => Poll::Pending,
                    }
                }
            }
        }
    }
}

/// Counts its request as finished when dropped.
/// (It holds the request's number among the connection's.)
pub(crate) struct Finish(Arc<Exchanges>, u64);

impl Drop for Finish {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A response future that cannot fail, as a service's (whose futures can), its output made
    /// by `map`: in place, where an `async` block around it would hold it twice.
    pub(crate) struct NeverFails<F, M> {
        #[pin]
        future: F,
        map: Option<M>,
    }
}

impl<F, M> NeverFails<F, M> {
    pub(crate) fn new(future: F, map: M) -> Self {
        NeverFails {
            future,
            map: Some(map),
        }
    }
}

impl<F, M, T> Future for NeverFails<F, M>
where
    F: Future,
    M: FnOnce(F::Output) -> T,
{
    type Output = Result<T, std::convert::Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = ready!(this.future.poll(cx));
        let map = this
            .map
            .take()
            .expect("NeverFails polled after it completed");
        Poll::Ready(Ok(map(output)))
    }
}

pin_project_lite::pin_project! {
    /// The proxy's response future on the direct path (no plugins), which answers 500 with the
    /// JSON error, as go-micro's servers recover a panic, should the proxy panic: without it the
    /// panic would end the client's connection with nothing said, and its other requests with
    /// it. (Behind plugins the same guard wraps the whole pipeline.) A panic is caught where
    /// it happens, on the poll: nothing is added to a request that does not panic.
    pub(crate) struct Recovering<F> {
        #[pin]
        future: F,
    }
}

impl<F> Recovering<F> {
    pub(crate) fn new(future: F) -> Self {
        Recovering { future }
    }
}

impl<F> Future for Recovering<F>
where
    F: Future<Output = http::Response<crate::api::proxy::ProxyBody>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let future = self.project().future;
        // A future that panicked is not polled again: the answer is ready, and hyper drops it.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| future.poll(cx))) {
            Ok(polled) => polled,
            Err(panic) => Poll::Ready(
                super::proxy_panicked(&*panic).map(crate::api::proxy::ProxyBody::Gateway),
            ),
        }
    }
}

pin_project_lite::pin_project! {
    /// A service's response future whose response body finishes the request (and which
    /// finishes it itself if dropped before the response). On HTTP/1 it first reads what the
    /// request left of its body (see [`Unread`]).
    pub(crate) struct Responding<F, B> {
        #[pin]
        future: F,
        finish: Option<Finish>,
        discarding: Option<(http::Response<B>, Pin<Box<Discard>>)>,
        // An HTTP/1 request with a body.
        h1_body: bool,
    }
}

impl<F, B> Responding<F, B> {
    /// The response to the request that `finish` finishes, whose body is `leftover`'s kind.
    pub(crate) fn new(future: F, finish: Finish, leftover: Leftover) -> Self {
        Responding {
            future,
            finish: Some(finish),
            discarding: None,
            h1_body: leftover != Leftover::Ignore,
        }
    }
}

impl<F, B, E> Future for Responding<F, B>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<Finishing<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match this.discarding {
            Some((_, discard)) => {
                let ended = ready!(discard.as_mut().poll(cx));
                let (mut response, _) = this.discarding.take().expect("discarding");
                if !ended {
                    close(&mut response);
                }
                response
            }
            None => {
                let mut response = ready!(this.future.poll(cx))?;
                let finish = this
                    .finish
                    .as_ref()
                    .expect("Responding polled after it completed");
                // Counted before the body left unread is looked for: see `Exchanges::leave`.
                finish.0.responded.fetch_add(1, Ordering::SeqCst);
                match finish.0.take_unread(finish.1) {
                    // The body is still held elsewhere (an upload the node stopped taking):
                    // hyper closes the connection after this response; it says so.
                    None if *this.h1_body
                        && finish.0.received.load(Ordering::SeqCst) < finish.1 =>
                    {
                        close(&mut response)
                    }
                    None => {}
                    Some(Unread::Close) => close(&mut response),
                    Some(Unread::Body(body)) => {
                        use http_body::Body as _;
                        // Known to be too long already: not read at all.
                        if body.size_hint().lower() > DISCARD_LIMIT {
                            close(&mut response);
                        } else {
                            let discard = Discard {
                                body,
                                read: 0,
                                deadline: Box::pin(tokio::time::sleep(DISCARD_TIME)),
                            };
                            *this.discarding = Some((response, Box::pin(discard)));
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                    }
                }
                response
            }
        };
        let finish = this
            .finish
            .take()
            .expect("Responding polled after it completed");
        if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            finish.0.upgraded.store(true, Ordering::Relaxed);
        }
        Poll::Ready(Ok(response.map(|body| Finishing::new(body, finish))))
    }
}

/// Marks `response` as the connection's last.
fn close<B>(response: &mut http::Response<B>) {
    if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
}

/// A response body that finishes its request when hyper is done with it.
pub(crate) struct Finishing<B> {
    body: B,
    _finish: Finish,
}

impl<B> Finishing<B> {
    pub(crate) fn new(body: B, finish: Finish) -> Self {
        Finishing {
            body,
            _finish: finish,
        }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for Finishing<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A client connection's stream (TCP, or what TLS decrypted of it) with its idle and
/// request-head timeouts (see the module documentation). Reads fail with `TimedOut` once either
/// passes, which ends the connection.
pub(crate) struct Timed<S = tokio::net::TcpStream> {
    inner: S,
    idle: Duration,
    /// The request-head limit (HTTP/1 only).
    head_timeout: Duration,
    exchanges: Arc<Exchanges>,
    /// When bytes last went either way.
    last: Instant,
    /// The head being read: when its first bytes came, and `started` then.
    head: Option<(Instant, u64)>,
    /// How many bytes of the HTTP/2 preface the connection began with so far; `None` once told.
    preface: Option<usize>,
    /// Set once the connection turned out to be HTTP/2: the requests counted when last looked,
    /// and when they last moved.
    h2: Option<((u64, u64), Instant)>,
    sleep: Pin<Box<Sleep>>,
    /// Where `sleep` is set.
    armed: Instant,
}

impl<S> Timed<S> {
    pub(crate) fn new(
        inner: S,
        idle: Duration,
        head_timeout: Duration,
        exchanges: Arc<Exchanges>,
    ) -> Self {
        let now = Instant::now();
        let armed = later(now, idle);
        Timed {
            inner,
            idle,
            head_timeout,
            exchanges,
            last: now,
            head: None,
            preface: Some(0),
            h2: None,
            sleep: Box::pin(tokio::time::sleep_until(armed)),
            armed,
        }
    }

    /// Bytes came in: the connection is alive, and they may begin a request head.
    fn received(&mut self, bytes: &[u8]) {
        let now = Instant::now();
        self.last = now;
        if let Some(matched) = self.preface {
            let rest = &H2_PREFACE[matched..];
            let n = rest.len().min(bytes.len());
            self.preface = if rest[..n] != bytes[..n] {
                None
            } else if n == rest.len() {
                self.h2 = Some(((0, 0), now));
                // Requests are looked at every quarter of the limit from now on, so the
                // connection closes within a quarter of it past its last request.
                let due = later(now, self.idle / 4);
                if due < self.armed {
                    self.arm(due);
                }
                None
            } else {
                Some(matched + n)
            };
        }
        if self.h2.is_some() || self.exchanges.upgraded.load(Ordering::Relaxed) {
            // HTTP/2 frames such as pings carry no request, and after a protocol switch the
            // bytes are the new protocol's: no head limit (the idle limit stays).
            return;
        }
        if let Some((_, started)) = self.head {
            if self.exchanges.started() == started {
                return; // that head is still being read
            }
            self.head = None;
        }
        if self.exchanges.idle() {
            self.head = Some((now, self.exchanges.started()));
            let due = later(now, self.head_timeout);
            if due < self.armed {
                self.arm(due);
            }
        }
    }

    fn arm(&mut self, at: Instant) {
        self.armed = at;
        self.sleep.as_mut().reset(at);
    }

    /// Ready with the error to fail a waiting read or write with once a limit has passed.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            ready!(self.sleep.as_mut().poll(cx));
            let now = Instant::now();
            let idle_error =
                || io::Error::new(io::ErrorKind::TimedOut, "connection idle for too long");
            if let Some((seen, moved)) = &mut self.h2 {
                // Pings keep bytes flowing; only requests count. Looked at every quarter of the
                // limit, as starting and finishing requests record no time.
                let counts = (self.exchanges.started(), self.exchanges.finished());
                if counts != *seen || counts.0 != counts.1 {
                    *seen = counts;
                    *moved = now;
                }
                let due = later(*moved, self.idle);
                if due <= now {
                    // Closed gracefully first (GOAWAY, which tells the client that no request
                    // of its was taken), by the connection's owner, woken for it; closed at
                    // once if that has not ended it a quarter of the limit later.
                    if self.exchanges.idle_out.swap(true, Ordering::Relaxed) {
                        return Poll::Ready(idle_error());
                    }
                    cx.waker().wake_by_ref();
                    self.arm(later(now, self.idle / 4));
                    return Poll::Pending;
                }
                self.arm(due.min(later(now, self.idle / 4)));
                continue;
            }
            let mut next = later(self.last, self.idle);
            if next <= now {
                if !self.exchanges.waiting_for_node() {
                    return Poll::Ready(idle_error());
                }
                next = later(now, self.idle);
            }
            if let Some((since, started)) = self.head {
                let due = later(since, self.head_timeout);
                if self.exchanges.started() != started {
                    self.head = None;
                } else if due <= now {
                    return Poll::Ready(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("request head not complete within {:?}", self.head_timeout),
                    ));
                } else {
                    next = next.min(due);
                }
            }
            self.arm(next);
        }
    }

    /// `io` as it is, or, while it waits, the error of a limit that has passed: a read waiting
    /// for a request and a write waiting for a client that stopped reading are both watched.
    fn or_expired<T>(
        &mut self,
        cx: &mut Context<'_>,
        io: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match io {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => self.poll_expired(cx).map(Err),
        }
    }
}

/// `at + wait`, or a time decades away when a limit is too large to add (as tokio's own timers
/// treat such durations).
pub(crate) fn later(at: Instant, wait: Duration) -> Instant {
    at.checked_add(wait)
        .unwrap_or_else(|| at + Duration::from_secs(30 * 365 * 24 * 3600))
}

/// How long a body (a client's upload, a node's response) may bring nothing: since it was first
/// found waiting after its last piece, and a timer made only once the body has to wait, moved on
/// when it fires rather than with every piece. Counted from the wait, not from the last piece: a
/// body that is not asked for (the other side is slow to take it) is not silent, and is not cut
/// the moment it is asked for again.
#[derive(Debug)]
pub(crate) struct Silence {
    limit: Duration,
    /// When the body was first found waiting since its last piece; `None` while it is not.
    since: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Silence {
    pub(crate) fn new(limit: Duration) -> Silence {
        Silence {
            limit,
            since: None,
            timer: None,
        }
    }

    pub(crate) fn limit(&self) -> Duration {
        self.limit
    }

    /// A piece came.
    #[inline]
    pub(crate) fn heard(&mut self) {
        self.since = None;
    }

    /// The body has to wait: whether it has waited for the limit (else `cx` is woken when that
    /// may be so).
    pub(crate) fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let limit = self.limit;
        let since = *self.since.get_or_insert_with(Instant::now);
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(later(since, limit))));
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            let due = later(since, limit);
            if due <= Instant::now() {
                return true;
            }
            timer.as_mut().reset(due);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Timed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = read {
            let filled = &buf.filled()[before..];
            if !filled.is_empty() {
                self.received(filled);
            }
        }
        self.or_expired(cx, read)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Timed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if written.is_ready() {
            self.last = Instant::now();
        }
        // A client that stops reading must not hold the connection (and the backend's) forever.
        self.or_expired(cx, written)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.inner).poll_flush(cx);
        self.or_expired(cx, flushed)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let done = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.or_expired(cx, done)
    }
}

pin_project_lite::pin_project! {
    /// A connection that is shut down gracefully (`stop`: hyper's `graceful_shutdown`, a GOAWAY
    /// for HTTP/2) once its stream finds it idle for its limit ([`Exchanges::idle_out`]), and
    /// when its owner stops it ([`ClosesWhenIdle::stop`]), each at most once.
    pub(crate) struct ClosesWhenIdle<C, F> {
        #[pin]
        conn: C,
        stop: F,
        exchanges: Arc<Exchanges>,
        stopped: bool,
    }
}

impl<C, F: FnMut(Pin<&mut C>)> ClosesWhenIdle<C, F> {
    pub(crate) fn new(conn: C, exchanges: Arc<Exchanges>, stop: F) -> Self {
        ClosesWhenIdle {
            conn,
            stop,
            exchanges,
            stopped: false,
        }
    }

    /// Shuts the connection down gracefully, unless it was already.
    pub(crate) fn stop(self: Pin<&mut Self>) {
        let this = self.project();
        if !std::mem::replace(this.stopped, true) {
            (this.stop)(this.conn);
        }
    }
}

impl<C: Future, F: FnMut(Pin<&mut C>)> Future for ClosesWhenIdle<C, F> {
    type Output = C::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        if !self.stopped && self.exchanges.idle_out() {
            self.as_mut().stop();
        }
        self.project().conn.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic in the proxy's future is a 500 with the JSON error; a future that does not
    /// panic gives its own answer.
    #[test]
    fn a_panicking_response_future_is_a_500_with_the_json_error() {
        use crate::api::proxy::ProxyBody;
        use http_body_util::BodyExt;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let panicking = Recovering::new(async {
            if std::hint::black_box(true) {
                panic!("the proxy's bug");
            }
            http::Response::new(ProxyBody::Gateway(axum_core::body::Body::empty()))
        });
        let resp = runtime.block_on(panicking);
        assert_eq!(resp.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
        let body = match resp.into_body() {
            ProxyBody::Gateway(body) => runtime.block_on(body.collect()).unwrap().to_bytes(),
            other => panic!("not the gateway's own body: {other:?}"),
        };
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["code"], 500, "{json}");
        assert_eq!(json["id"], "go.micro.api", "{json}");
        // The panic's message is for the log, not the client.
        assert!(!json.to_string().contains("the proxy's bug"), "{json}");

        let fine = Recovering::new(async {
            let mut resp =
                http::Response::new(ProxyBody::Gateway(axum_core::body::Body::from("ok")));
            *resp.status_mut() = http::StatusCode::CREATED;
            resp
        });
        assert_eq!(runtime.block_on(fine).status(), http::StatusCode::CREATED);
    }

    #[test]
    fn limits_too_large_to_add_mean_decades() {
        let now = Instant::now();
        assert_eq!(
            later(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        let never = later(now, Duration::MAX);
        assert!(never > now + Duration::from_secs(10 * 365 * 24 * 3600));
    }
}
