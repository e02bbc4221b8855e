//! Thread-per-core serving, as nginx's worker processes: `rmicro api` runs N worker threads,
//! each with a single-threaded tokio runtime, its own listening socket on the same address
//! (`SO_REUSEPORT`, so the kernel spreads new connections over them) and its own connections to
//! the backends. A request is read, proxied and answered on one thread, without the hand-offs
//! between threads a work-stealing runtime makes (on the gateway benchmark a single-threaded
//! runtime served 13 % more requests per second than tokio's multi-threaded one on the same
//! cores).

use std::future::Future;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

use tokio::net::TcpSocket;

use super::{pool, Gateway};

/// Pending connections each worker's socket holds.
const BACKLOG: u32 = 1024;

/// A single-threaded runtime, as each worker runs.
///
/// # Errors
///
/// The operating system's, when the runtime's I/O driver cannot be created.
pub fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// One listening socket per worker, all bound to `address` (the first one's port when it asks
/// for 0). They listen from here on: connections made before [`serve`] starts wait in the
/// backlog instead of being refused. Call it inside a tokio runtime.
///
/// # Errors
///
/// When `address` does not resolve or a socket cannot be bound (in use, no permission).
pub fn bind(address: &str, workers: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let address = rmicro_runtime::service::listen_address(address);
    let addr = address.to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{address}` resolves to no address"),
        )
    })?;
    let shared = workers > 1;
    let addr = if shared {
        // `SO_REUSEPORT` would also let another process of this user listen on the address
        // (a second gateway started by mistake) and take half of its connections, with no
        // error on either side. A socket without it is bound first: it fails if anything
        // listens there; the workers' sockets take its place.
        let probe = socket(addr, false)?;
        probe.bind(addr)?;
        probe.local_addr()?
    } else {
        addr
    };
    let first = socket(addr, shared)?;
    first.bind(addr)?;
    let bound = first.local_addr()?;
    let mut listeners = vec![first.listen(BACKLOG)?.into_std()?];
    for _ in 1..workers {
        let next = socket(bound, shared)?;
        next.bind(bound)?;
        listeners.push(next.listen(BACKLOG)?.into_std()?);
    }
    Ok(listeners)
}

fn socket(addr: SocketAddr, shared: bool) -> io::Result<TcpSocket> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if shared {
        socket.set_reuseport(true)?;
    }
    socket.set_nodelay(true)?;
    Ok(socket)
}

/// Serves `gateway` on `sockets`, the first on this thread (inside its runtime), each other on
/// a worker thread of its own, until `shutdown` completes; then every worker stops accepting,
/// lets its requests in flight finish, and this returns once all have.
///
/// # Errors
///
/// A worker's listener or runtime error, or a worker that panicked.
pub async fn serve(
    gateway: Gateway,
    sockets: Vec<std::net::TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let mut sockets = sockets.into_iter();
    let own = sockets
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no socket to serve on"))?;
    let mut threads = Vec::new();
    for (i, socket) in sockets.enumerate() {
        let gateway = gateway.clone();
        let stopped = stopped.clone();
        let worker = i + 1;
        // Its end is awaited, not joined: the caller's runtime stays free (a second signal
        // must be heard while the workers finish).
        let (done, finished) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("rmicro-api-{worker}"))
            .spawn(move || {
                pool::set_worker(worker);
                let served = runtime().and_then(|runtime| {
                    runtime.block_on(async move {
                        let listener = tokio::net::TcpListener::from_std(socket)?;
                        gateway.serve(listener, until_stopped(stopped)).await
                    })
                });
                // Said at once: the other workers go on serving (this one's socket is closed,
                // so the kernel stops sending it connections), and the error is returned at
                // shutdown.
                if let Err(err) = &served {
                    tracing::error!(worker, error = %err, "gateway worker stopped");
                }
                let _ = done.send(served);
            })?;
        threads.push(finished);
    }
    pool::set_worker(0);
    let listener = tokio::net::TcpListener::from_std(own)?;
    let signal = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    let ((), served) = tokio::join!(signal, gateway.serve(listener, until_stopped(stopped)));
    for thread in threads {
        match thread.await {
            Ok(result) => result?,
            Err(_) => return Err(io::Error::other("a gateway worker thread panicked")),
        }
    }
    served
}
