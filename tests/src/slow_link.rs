//! A TCP proxy that holds back what clients send for an adjustable time, in order: a request
//! through it stays on the wire that long, for tests of what happens meanwhile (a service
//! stopped while its registration is on its way to etcd). Replies come back at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A proxy on `127.0.0.1` in front of one server: on every connection through it, the
/// client's bytes reach the server the delay set when they arrived later, in their order.
#[derive(Debug, Clone)]
pub struct SlowLink {
    /// `127.0.0.1:PORT` to connect to instead of the server.
    pub addr: String,
    delay: Arc<Mutex<Duration>>,
}

impl SlowLink {
    /// Starts a proxy to `upstream` (`host:port`), with no delay yet.
    ///
    /// # Panics
    ///
    /// When no loopback port can be bound.
    pub async fn start(upstream: &str) -> SlowLink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let link = SlowLink {
            addr: listener.local_addr().unwrap().to_string(),
            delay: Arc::default(),
        };
        let (upstream, delay) = (upstream.to_string(), Arc::clone(&link.delay));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (client_read, mut client_write) = client.into_split();
                let (mut server_read, server_write) = server.into_split();
                let (chunks, due) = mpsc::unbounded_channel();
                tokio::spawn(read_stamped(client_read, chunks, Arc::clone(&delay)));
                tokio::spawn(write_when_due(due, server_write));
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                    let _ = client_write.shutdown().await;
                });
            }
        });
        link
    }

    /// Delays what clients send from now on by `delay` (bytes already on their way keep
    /// theirs, and nothing overtakes them).
    pub fn set_delay(&self, delay: Duration) {
        *self.delay.lock().unwrap_or_else(|p| p.into_inner()) = delay;
    }
}

/// Reads the client's bytes until it closes, each chunk stamped with when it is due.
async fn read_stamped(
    mut from: OwnedReadHalf,
    chunks: mpsc::UnboundedSender<(Instant, Vec<u8>)>,
    delay: Arc<Mutex<Duration>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf).await {
        let delay = *delay.lock().unwrap_or_else(|p| p.into_inner());
        if chunks
            .send((Instant::now() + delay, buf[..n].to_vec()))
            .is_err()
        {
            return;
        }
    }
}

/// Writes each chunk to the server once it is due, in order; closes when the client did.
async fn write_when_due(
    mut due: mpsc::UnboundedReceiver<(Instant, Vec<u8>)>,
    mut to: OwnedWriteHalf,
) {
    while let Some((at, bytes)) = due.recv().await {
        tokio::time::sleep_until(at).await;
        if to.write_all(&bytes).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}
