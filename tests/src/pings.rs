//! A TCP proxy that counts the HTTP/2 PING frames going through it, for keepalive tests, and the
//! requests a client sends through it (for tests of calls that must not be sent): what the
//! peers really send on the wire, not what their settings say.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The client connection preface, sent before the client's first frame.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const PING: u8 = 0x6;
const HEADERS: u8 = 0x1;
const ACK: u8 = 0x1;

/// A proxy on `127.0.0.1` in front of one HTTP/2 server; counts the pings (not their
/// acknowledgements) each side sends, over every connection through it.
#[derive(Debug, Clone)]
pub struct PingCounter {
    /// `127.0.0.1:PORT` to connect to instead of the server.
    pub addr: String,
    from_client: Arc<AtomicUsize>,
    from_server: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl PingCounter {
    /// Starts a proxy to `upstream` (`host:port`).
    ///
    /// # Panics
    ///
    /// When no loopback port can be bound.
    pub async fn start(upstream: &str) -> PingCounter {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let counter = PingCounter {
            addr: listener.local_addr().unwrap().to_string(),
            from_client: Arc::default(),
            from_server: Arc::default(),
            requests: Arc::default(),
        };
        let (upstream, from_client, from_server, requests) = (
            upstream.to_string(),
            Arc::clone(&counter.from_client),
            Arc::clone(&counter.from_server),
            Arc::clone(&counter.requests),
        );
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pump(
                    client_read,
                    server_write,
                    PREFACE.len(),
                    Arc::clone(&from_client),
                    Some(Arc::clone(&requests)),
                ));
                tokio::spawn(pump(
                    server_read,
                    client_write,
                    0,
                    Arc::clone(&from_server),
                    None,
                ));
            }
        });
        counter
    }

    /// Pings the clients sent so far.
    pub fn from_client(&self) -> usize {
        self.from_client.load(Ordering::SeqCst)
    }

    /// Pings the server sent so far.
    pub fn from_server(&self) -> usize {
        self.from_server.load(Ordering::SeqCst)
    }

    /// Requests the clients sent so far: the HEADERS frames that open their streams (gRPC
    /// clients send no trailers). A request is counted before the server gets its last byte,
    /// so once a later request on the same connection was answered, every earlier one the
    /// client sent is in the count.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Copies one direction, parsing it into frames (after `skip` bytes of preface) to count pings
/// and, given `requests`, HEADERS frames. Bytes are counted before they are passed on.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut skip: usize,
    pings: Arc<AtomicUsize>,
    requests: Option<Arc<AtomicUsize>>,
) {
    let mut frames: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut data = &buf[..n];
        let skipped = skip.min(data.len());
        skip -= skipped;
        data = &data[skipped..];
        frames.extend_from_slice(data);
        // A frame: 3 bytes of length, type, flags, 4 bytes of stream id, then the payload.
        while frames.len() >= 9 {
            let len =
                usize::from(frames[0]) << 16 | usize::from(frames[1]) << 8 | usize::from(frames[2]);
            if frames.len() < 9 + len {
                break;
            }
            if frames[3] == PING && frames[4] & ACK == 0 {
                pings.fetch_add(1, Ordering::SeqCst);
            }
            if let Some(requests) = requests.as_ref().filter(|_| frames[3] == HEADERS) {
                requests.fetch_add(1, Ordering::SeqCst);
            }
            frames.drain(..9 + len);
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
