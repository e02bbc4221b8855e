//! A client's request body on its way to a node.
//!
//! Two things about it matter to the proxy and only the body itself can tell them:
//!
//! - **whose fault a failed exchange is**: a body the client breaks (its connection drops, its
//!   chunked coding is wrong, it goes over the limit) fails hyper's client the way a node that
//!   resets the connection does. Its errors are marked ([`ClientBodyError`]) so the client gets
//!   a 400 (or 413) and the node is not avoided;
//! - **when it has all been sent**: the backend timeout is the node's time to answer, so it
//!   starts then; a slow upload is the client's time (bounded by the idle timeout).

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Sleep;

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
        // How long the body may bring nothing before it counts as stalled, and the timer
        // armed while it waits for the client.
        stall: Duration,
        waiting: Option<Pin<Box<Sleep>>>,
    }
}

/// Whether an [`Upload`] has all been sent.
pub(crate) struct Sent {
    rx: oneshot::Receiver<()>,
    /// Once the upload is over: whether it all went out (`rx` cannot be asked twice).
    over: Option<bool>,
}

impl<B> Upload<B> {
    /// `body`, failing as the client's error once nothing of it has come for `stall` (the
    /// backend timer does not run during the upload, and over HTTP/2 the connection's idle
    /// limit does not see a stream that stalled).
    pub(crate) fn new(body: B, stall: Duration) -> (Upload<B>, Sent) {
        let (tx, rx) = oneshot::channel();
        (
            Upload {
                body,
                done: Some(tx),
                stall,
                waiting: None,
            },
            Sent { rx, over: None },
        )
    }
}

impl Sent {
    /// Completes once the body has all been sent, or has failed or been dropped (nothing more
    /// will be sent either way).
    pub(crate) async fn wait(&mut self) {
        if self.over.is_none() {
            self.over = Some((&mut self.rx).await.is_ok());
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
        let Poll::Ready(frame) = this.body.as_mut().poll_frame(cx) else {
            let stall = *this.stall;
            let waiting = this
                .waiting
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
            ready!(waiting.as_mut().poll(cx));
            this.done.take();
            return Poll::Ready(Some(Err(ClientBodyError(
                format!("nothing of it came for {stall:?}").into(),
            ))));
        };
        if let Some(waiting) = this.waiting.as_mut() {
            waiting
                .as_mut()
                .reset(tokio::time::Instant::now() + *this.stall);
        }
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
    let mut source = Some(err);
    while let Some(e) = source {
        if let Some(client) = e.downcast_ref::<ClientBodyError>() {
            return Some(client);
        }
        source = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
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
        sent.wait().await;
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
        sent.wait().await;
        assert!(!sent.complete());
    }
}
