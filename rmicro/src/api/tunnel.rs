//! Connections that switched protocols (`101 Switching Protocols`): the client's and the node's
//! joined, bytes copied both ways.
//!
//! The tunnel ends when both directions have ended (each side's close is passed on to the
//! other), on an I/O error, or once no byte has moved either way for the idle limit. The last
//! also covers a side that closed while the other keeps its end open and silent, which a plain
//! two-way copy would hold forever. When the gateway stops, open tunnels get the rest of its
//! shutdown grace period and are closed at its end ([`Tunnels`]).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

use super::conn::later;

/// The tunnels one `serve` of a gateway has open, so that stopping it can wait for them and
/// then close them. Clones share the set.
#[derive(Clone, Debug)]
pub(crate) struct Tunnels {
    /// `true` once open tunnels are to close; each tunnel holds a receiver, so the sender also
    /// knows when none is left. In an `Arc`: cloned for every request, one count to bump.
    closing: Arc<watch::Sender<bool>>,
}

impl Default for Tunnels {
    fn default() -> Self {
        Tunnels {
            closing: Arc::new(watch::Sender::new(false)),
        }
    }
}

impl Tunnels {
    /// Registers a tunnel about to open (before its connection is handed over, so a shutdown
    /// that waits for connections and then for tunnels misses none).
    pub(crate) fn register(&self) -> Closing {
        Closing(self.closing.subscribe())
    }

    /// The number of tunnels open.
    pub(crate) fn open(&self) -> usize {
        self.closing.receiver_count()
    }

    /// Waits until every tunnel has closed by itself or `deadline` has passed, then closes
    /// those still open and waits (briefly) for them to be gone. From then on, a tunnel that
    /// opens (a request still in flight that gets its `101` late) closes at once.
    pub(crate) async fn close_by(&self, deadline: Instant) {
        let all_closed = tokio::time::timeout_at(deadline, self.closing.closed())
            .await
            .is_ok();
        self.closing.send_replace(true);
        if all_closed {
            return;
        }
        tracing::info!(
            open = self.open(),
            "closing tunnels still open at the end of the shutdown grace period"
        );
        // Each closes (drops both connections) as soon as its task runs next.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.closing.closed()).await;
    }
}

/// A registered tunnel's side of [`Tunnels`]: says when to close; dropped when it has.
pub(crate) struct Closing(watch::Receiver<bool>);

impl Closing {
    /// Completes when the tunnel is to close (never, if its [`Tunnels`] is gone).
    async fn requested(&mut self) {
        if self.0.wait_for(|closing| *closing).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Waits for both sides to switch, then copies between them until the tunnel ends or is
/// closed through `closing`.
pub(crate) async fn run(
    client: OnUpgrade,
    node: OnUpgrade,
    idle: Duration,
    mut closing: Closing,
    service: String,
    address: String,
) {
    tokio::select! {
        () = join(client, node, idle, &service, &address) => {}
        () = closing.requested() => {
            tracing::debug!(%service, %address, "tunnel closed: the gateway is stopping");
        }
    }
}

async fn join(client: OnUpgrade, node: OnUpgrade, idle: Duration, service: &str, address: &str) {
    let (client, node) = match tokio::try_join!(client, node) {
        Ok(both) => both,
        Err(err) => {
            tracing::debug!(%service, %address, error = %err, "protocol switch failed");
            return;
        }
    };
    let activity = Activity::new();
    let mut client = Watched::new(client, &activity);
    let mut node = Watched::new(node, &activity);
    let copy = tokio::io::copy_bidirectional(&mut client, &mut node);
    let mut copy = std::pin::pin!(copy);
    let mut due = later(Instant::now(), idle);
    loop {
        tokio::select! {
            copied = &mut copy => {
                match copied {
                    Ok((up, down)) => tracing::debug!(%service, %address, up, down, "tunnel closed"),
                    Err(err) => tracing::debug!(%service, %address, error = %err, "tunnel ended"),
                }
                return;
            }
            () = tokio::time::sleep_until(due) => {
                let quiet_until = later(activity.last(), idle);
                if quiet_until <= Instant::now() {
                    tracing::debug!(%service, %address, ?idle, "tunnel idle for too long; closed");
                    return;
                }
                due = quiet_until;
            }
        }
    }
}

/// When bytes last moved through a tunnel, in milliseconds since it opened.
struct Activity {
    opened: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn moved(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        later(
            self.opened,
            Duration::from_millis(self.last_ms.load(Ordering::Relaxed)),
        )
    }
}

/// One side of a tunnel, recording each read or write that moved bytes.
struct Watched<'a> {
    io: TokioIo<Upgraded>,
    activity: &'a Activity,
}

impl<'a> Watched<'a> {
    fn new(io: Upgraded, activity: &'a Activity) -> Self {
        Watched {
            io: TokioIo::new(io),
            activity,
        }
    }
}

impl AsyncRead for Watched<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.moved();
        }
        read
    }
}

impl AsyncWrite for Watched<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.moved();
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
