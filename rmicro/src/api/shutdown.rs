//! Graceful shutdown of the gateway's client connections: when it starts, every connection is
//! told to finish the request it is serving and close (hyper's `graceful_shutdown`), and the
//! gateway waits until all have.
//!
//! hyper-util's `GracefulShutdown` does the same with a `watch` channel whose `changed()` each
//! connection polls every time it is polled, registering its waker again under the channel's
//! lock: about 300 instructions per proxied request (callgrind, bench/gateway). Here a connection
//! registers its task's waker once, and each poll reads one atomic flag.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use pin_project_lite::pin_project;

/// Starts and awaits the shutdown of the connections it [`watch`](Shutdown::watch)es.
#[derive(Default)]
pub(crate) struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Set once shutdown has begun.
    stopping: AtomicBool,
    /// The connections being served, by key: the waker of each one's task, to wake it when
    /// shutdown begins.
    conns: Mutex<HashMap<u64, Waker, foldhash::fast::RandomState>>,
    next_key: AtomicU64,
    /// Told when a connection ends after shutdown began.
    ended: tokio::sync::Notify,
}

impl Shutdown {
    /// `conn` served until it ends; once shutdown begins, `stop` is called on it once (it
    /// should make the connection finish what it is doing and end).
    pub(crate) fn watch<C, F>(&self, conn: C, stop: F) -> Watched<C, F>
    where
        C: Future,
        F: FnMut(Pin<&mut C>),
    {
        // Known from now on, so that a shutdown that begins before its first poll waits for it
        // too; its task's waker is taken at that poll.
        let key = self.inner.next_key.fetch_add(1, Ordering::Relaxed);
        let waker = Waker::noop().clone();
        lock(&self.inner.conns).insert(key, waker.clone());
        Watched {
            conn,
            stop,
            inner: Arc::clone(&self.inner),
            key,
            waker,
            told: false,
        }
    }

    /// Begins shutdown: every connection watched is told to finish; completes once all have
    /// ended.
    pub(crate) async fn shutdown(self) {
        let inner = &self.inner;
        inner.stopping.store(true, Ordering::SeqCst);
        // Woken outside the lock: a connection polled at once takes it to register or leave.
        let wakers: Vec<Waker> = lock(&inner.conns).values().cloned().collect();
        for waker in wakers {
            waker.wake();
        }
        loop {
            let ended = inner.ended.notified();
            let mut ended = std::pin::pin!(ended);
            // Listening before looking: an end between the look and the wait is not missed.
            ended.as_mut().enable();
            if lock(&inner.conns).is_empty() {
                return;
            }
            ended.await;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pin_project! {
    /// A connection served until it ends, told to finish when shutdown begins.
    pub(crate) struct Watched<C, F> {
        #[pin]
        conn: C,
        stop: F,
        inner: Arc<Inner>,
        // Its key among the connections.
        key: u64,
        // Its task's waker as registered (a no-op one until first polled).
        waker: Waker,
        // Whether it was told to finish.
        told: bool,
    }

    impl<C, F> PinnedDrop for Watched<C, F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            lock(&this.inner.conns).remove(this.key);
            if this.inner.stopping.load(Ordering::SeqCst) {
                this.inner.ended.notify_waiters();
            }
        }
    }
}

impl<C, F> Future for Watched<C, F>
where
    C: Future,
    F: FnMut(Pin<&mut C>),
{
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let mut this = self.project();
        if !*this.told {
            // A task's waker stays the same from poll to poll (compared without the lock); the
            // first poll, or a future moved to another task, registers the one it has now.
            if !this.waker.will_wake(cx.waker()) {
                this.waker.clone_from(cx.waker());
                lock(&this.inner.conns).insert(*this.key, cx.waker().clone());
            }
            // Read after the waker is registered: a shutdown that begins after this read wakes
            // the task, and the next poll sees it.
            if this.inner.stopping.load(Ordering::SeqCst) {
                *this.told = true;
                (this.stop)(this.conn.as_mut());
            }
        }
        this.conn.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A connection that runs until told to finish, then ends after a while.
    struct Conn {
        told: Option<tokio::sync::oneshot::Sender<()>>,
        run: Pin<Box<dyn Future<Output = &'static str> + Send>>,
    }

    fn conn(linger: Duration) -> Conn {
        let (told, hears) = tokio::sync::oneshot::channel::<()>();
        Conn {
            told: Some(told),
            run: Box::pin(async move {
                let _ = hears.await;
                tokio::time::sleep(linger).await;
                "finished"
            }),
        }
    }

    impl Future for Conn {
        type Output = &'static str;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<&'static str> {
            self.run.as_mut().poll(cx)
        }
    }

    fn stop(conn: Pin<&mut Conn>) {
        if let Some(told) = conn.get_mut().told.take() {
            let _ = told.send(());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_tells_every_connection_and_waits_for_the_last() {
        let shutdown = Shutdown::default();
        let started = tokio::time::Instant::now();
        let quick = tokio::spawn(shutdown.watch(conn(Duration::from_secs(1)), stop));
        let slow = tokio::spawn(shutdown.watch(conn(Duration::from_secs(5)), stop));
        // Both are idle, waiting: nothing ends them but the shutdown.
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!quick.is_finished() && !slow.is_finished());
        shutdown.shutdown().await;
        assert_eq!(started.elapsed(), Duration::from_secs(65));
        assert_eq!(quick.await.unwrap(), "finished");
        assert_eq!(slow.await.unwrap(), "finished");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_first_polled_after_shutdown_began_is_told_at_once() {
        let shutdown = Shutdown::default();
        let late = shutdown.watch(conn(Duration::from_secs(2)), stop);
        let inner = Arc::clone(&shutdown.inner);
        inner.stopping.store(true, Ordering::SeqCst);
        assert_eq!(late.await, "finished");
        assert!(lock(&inner.conns).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_waits_for_a_connection_not_yet_polled() {
        let shutdown = Shutdown::default();
        let unpolled = shutdown.watch(conn(Duration::from_secs(3)), stop);
        let started = tokio::time::Instant::now();
        let ran = tokio::spawn(async move {
            // Polled first once shutdown has begun: told at once, ends 3 s later.
            tokio::time::sleep(Duration::from_secs(1)).await;
            unpolled.await
        });
        shutdown.shutdown().await;
        assert_eq!(started.elapsed(), Duration::from_secs(4));
        assert_eq!(ran.await.unwrap(), "finished");
    }

    #[tokio::test]
    async fn shutdown_with_no_connections_ends_at_once() {
        Shutdown::default().shutdown().await;
    }
}
