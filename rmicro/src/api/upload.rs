//! A client's request body on its way to a node.
//!
//! Two things about it matter to the proxy and only the body itself can tell them:
//!
//! - **whose fault a failed exchange is**: a body the client breaks (its connection drops, its
//!   chunked coding is wrong, it goes over the limit) fails hyper's client the way a node that
//!   resets the connection does. Its errors are marked ([`ClientBodyError`]) so the client gets
//!   a 400 (or 413) and the node is not avoided;
//! - **when it has all been sent**: the backend timeout is the node's time to answer, so it
//!   starts then; a slow upload is the client's time (bounded by the idle timeout);
//! - **whether the node still takes it**: hyper asks for the next piece only once it can pass
//!   it on. A node that stops reading the body (and does not answer) holds the upload forever;
//!   while a piece is out for the node, or the client's next one has come and hyper does not
//!   ask for it, the node's clock runs ([`Sent::wait_or_stalled`]), as nginx's
//!   `proxy_send_timeout` does.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::api::conn::Silence;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An error reading the client's request body; the cause is its source.
#[derive(Debug)]
pub(crate) struct ClientBodyError(BoxError);

impl std::fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the request body could not be read: {}", self.0)
    }
}

impl std::error::Error for ClientBodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

pin_project_lite::pin_project! {
    /// The client's body, telling [`Sent`] once it has all been read (by hyper's client, which
    /// writes it to the node).
    pub(crate) struct Upload<B> {
        #[pin]
        body: B,
        done: Option<oneshot::Sender<()>>,
        // How long the body may bring nothing before it counts as stalled.
        silence: Silence,
        handed: Arc<Handed>,
        // `handed` as the waker the client's body is polled with.
        relay: Waker,
    }
}

/// Since when the node's side has had the upload's time, as milliseconds since `start`:
/// [`WAITING`] while the body waits for the client (hyper asked for a piece, none had come).
/// The node's time starts when a piece is handed to hyper, or when the client's next piece
/// comes (hyper is woken, and asks for it as soon as it can pass it on).
struct Handed {
    start: tokio::time::Instant,
    at: AtomicU64,
    /// Whom to wake when the client's next piece comes: the task of hyper's client connection.
    next: Mutex<Option<Waker>>,
}

/// [`Handed::at`] while the body waits for the client.
const WAITING: u64 = u64::MAX;

impl Handed {
    fn mark(&self, at: u64) {
        self.at.store(at, Ordering::Relaxed);
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(WAITING - 1)
    }

    /// Passes `cx`'s waker on when the client's body wakes it.
    fn relay_to(&self, cx: &Context<'_>) {
        let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        if !next.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *next = Some(cx.waker().clone());
        }
    }
}

impl Wake for Handed {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    /// The client's next piece came: from now on, until hyper asks for it, it is the node's
    /// time.
    fn wake_by_ref(self: &Arc<Self>) {
        self.mark(self.now());
        let next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(next) = next.as_ref() {
            next.wake_by_ref();
        }
    }
}

/// Whether an [`Upload`] has all been sent.
pub(crate) struct Sent {
    rx: oneshot::Receiver<()>,
    /// Once the upload is over: whether it all went out (`rx` cannot be asked twice).
    over: Option<bool>,
    handed: Arc<Handed>,
}

impl<B> Upload<B> {
    /// `body`, failing as the client's error once nothing of it has come for `stall` (the
    /// backend timer does not run during the upload, and over HTTP/2 the connection's idle
    /// limit does not see a stream that stalled).
    pub(crate) fn new(body: B, stall: Duration) -> (Upload<B>, Sent) {
        let (tx, rx) = oneshot::channel();
        // Until hyper first asks for a piece, the node's side (connecting, taking the head) has
        // the time.
        let handed = Arc::new(Handed {
            start: tokio::time::Instant::now(),
            at: AtomicU64::new(0),
            next: Mutex::new(None),
        });
        (
            Upload {
                body,
                done: Some(tx),
                silence: Silence::new(stall),
                relay: Waker::from(Arc::clone(&handed)),
                handed: Arc::clone(&handed),
            },
            Sent {
                rx,
                over: None,
                handed,
            },
        )
    }
}

impl Sent {
    /// Completes once the body has all been sent, or has failed or been dropped (`false`), or
    /// once the node has taken nothing of it for `limit` while a piece of it was out for the
    /// node (`true`): hyper asks for the next piece only once the node took the last, and time
    /// the body spends waiting for the client does not count.
    pub(crate) async fn wait_or_stalled(&mut self, limit: Duration) -> bool {
        if self.over.is_some() {
            return false;
        }
        tokio::select! {
            over = &mut self.rx => {
                self.over = Some(over.is_ok());
                false
            }
            () = stalled(&self.handed, limit) => true,
        }
    }

    /// Whether the whole body went out (false while it is still going, or if it failed).
    pub(crate) fn complete(&mut self) -> bool {
        if self.over.is_none() {
            match self.rx.try_recv() {
                Ok(()) => self.over = Some(true),
                Err(oneshot::error::TryRecvError::Closed) => self.over = Some(false),
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
        }
        self.over == Some(true)
    }
}

/// Completes once the node's side has had the upload's time (see [`Handed`]) for `limit`.
async fn stalled(handed: &Handed, limit: Duration) {
    let limit_ms = u64::try_from(limit.as_millis()).unwrap_or(WAITING - 1);
    loop {
        let at = handed.at.load(Ordering::Relaxed);
        if at == WAITING {
            tokio::time::sleep(limit).await;
            continue;
        }
        let due = at.saturating_add(limit_ms);
        if handed.now() >= due {
            return;
        }
        tokio::time::sleep_until(handed.start + Duration::from_millis(due)).await;
    }
}

impl<B> http_body::Body for Upload<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, ClientBodyError>>> {
        let mut this = self.project();
        // Marked before the client's body is asked: a piece that comes in between wakes the
        // relay, which marks the node's time, and is not overwritten.
        this.handed.mark(WAITING);
        this.handed.relay_to(cx);
        let frame = this
            .body
            .as_mut()
            .poll_frame(&mut Context::from_waker(this.relay));
        let Poll::Ready(frame) = frame else {
            if !this.silence.expired(cx) {
                return Poll::Pending;
            }
            this.done.take();
            return Poll::Ready(Some(Err(ClientBodyError(
                format!("nothing of it came for {:?}", this.silence.limit()).into(),
            ))));
        };
        this.handed.mark(this.handed.now());
        this.silence.heard();
        match frame {
            Some(Err(err)) => {
                // Dropping the sender tells `Sent` nothing more comes, without "complete".
                this.done.take();
                Poll::Ready(Some(Err(ClientBodyError(err.into()))))
            }
            Some(Ok(frame)) => {
                if this.body.is_end_stream() {
                    if let Some(done) = this.done.take() {
                        let _ = done.send(());
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            None => {
                if let Some(done) = this.done.take() {
                    let _ = done.send(());
                }
                Poll::Ready(None)
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

/// The client's part in a failed exchange, if it was its body that failed.
pub(crate) fn client_body_error<'e>(
    err: &'e (dyn std::error::Error + 'static),
) -> Option<&'e ClientBodyError> {
    super::error::chain(err).find_map(|e| e.downcast_ref::<ClientBodyError>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn tells_when_the_body_has_all_been_sent() {
        let (upload, mut sent) = Upload::new(
            http_body_util::Full::new(Bytes::from("abc")),
            Duration::from_secs(60),
        );
        assert!(!sent.complete());
        let body = upload.collect().await.unwrap().to_bytes();
        assert_eq!(body, "abc");
        assert!(sent.complete());
        assert!(!sent.wait_or_stalled(Duration::from_secs(60)).await);
    }

    /// A client's body that has `pieces` and then waits for more, forever.
    struct Trickle {
        pieces: Vec<&'static str>,
    }

    impl http_body::Body for Trickle {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
            match self.pieces.pop() {
                Some(piece) => Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(piece))))),
                None => Poll::Pending,
            }
        }
    }

    /// An upload of a client's two pieces, `a` then `b`, and then nothing.
    fn trickle() -> (Pin<Box<Upload<Trickle>>>, Sent) {
        let pieces = Trickle {
            pieces: vec!["b", "a"],
        };
        let (upload, sent) = Upload::new(pieces, Duration::from_secs(60));
        (Box::pin(upload), sent)
    }

    #[tokio::test]
    async fn a_node_that_takes_nothing_more_of_the_body_stalls_it() {
        let limit = Duration::from_millis(100);
        let (mut upload, mut sent) = trickle();
        // The node takes one piece and never asks for the next.
        assert_eq!(
            upload.frame().await.unwrap().unwrap().into_data().unwrap(),
            "a"
        );
        let started = tokio::time::Instant::now();
        assert!(sent.wait_or_stalled(limit).await, "stalled");
        assert!(started.elapsed() >= limit);
        assert!(!sent.complete());
    }

    #[tokio::test]
    async fn time_spent_waiting_for_the_client_is_not_the_nodes() {
        let limit = Duration::from_millis(100);
        let (mut upload, mut sent) = trickle();
        // The node takes both pieces and asks for a third, which the client has not sent.
        for _ in 0..2 {
            upload.frame().await.unwrap().unwrap();
        }
        std::future::poll_fn(|cx| {
            assert!(upload.as_mut().poll_frame(cx).is_pending());
            Poll::Ready(())
        })
        .await;
        let waited = tokio::time::timeout(limit * 4, sent.wait_or_stalled(limit)).await;
        assert!(
            waited.is_err(),
            "the node was blamed for the client's pause"
        );
    }

    /// A client's body whose pieces come through a channel.
    struct Piped(tokio::sync::mpsc::Receiver<&'static str>);

    impl http_body::Body for Piped {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
            self.0
                .poll_recv(cx)
                .map(|piece| piece.map(|p| Ok(http_body::Frame::data(Bytes::from(p)))))
        }
    }

    #[tokio::test]
    async fn a_piece_that_came_and_is_not_asked_for_is_the_nodes_time() {
        let limit = Duration::from_millis(100);
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let (upload, mut sent) = Upload::new(Piped(rx), Duration::from_secs(60));
        let mut upload = Box::pin(upload);
        // hyper asks, nothing has come: the client's time.
        std::future::poll_fn(|cx| {
            assert!(upload.as_mut().poll_frame(cx).is_pending());
            Poll::Ready(())
        })
        .await;
        let waited = tokio::time::timeout(limit * 3, sent.wait_or_stalled(limit)).await;
        assert!(
            waited.is_err(),
            "the node was blamed for the client's pause"
        );
        // The client's piece comes, and hyper (its node not reading) never asks for it.
        let started = tokio::time::Instant::now();
        tx.send("a").await.unwrap();
        assert!(sent.wait_or_stalled(limit).await, "stalled");
        assert!(started.elapsed() >= limit);
    }

    #[tokio::test]
    async fn a_failed_body_is_the_clients_and_not_complete() {
        let failing = http_body_util::StreamBody::new(tokio_stream::iter([
            Ok(http_body::Frame::data(Bytes::from("ab"))),
            Err(std::io::Error::other("connection reset by the client")),
        ]));
        let (upload, mut sent) = Upload::new(failing, Duration::from_secs(60));
        let err = upload.collect().await.unwrap_err();
        assert!(client_body_error(&err).is_some());
        assert!(err.to_string().contains("connection reset by the client"));
        assert!(!sent.wait_or_stalled(Duration::from_secs(60)).await);
        assert!(!sent.complete());
    }
}
