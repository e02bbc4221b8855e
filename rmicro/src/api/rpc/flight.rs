//! Single flight: concurrent requests for the same read (a service's descriptors, by server
//! reflection) share one read and its result, failure included, rather than each asking the
//! node. A failure is also given to the requests that come within [`FAILURE_TTL`] after it, so
//! that a node without reflection (or one that cannot be reached) is not asked again for each
//! request of a burst.
//!
//! The read runs as a task of its own: a request waits for it only as long as its own deadline
//! allows, and a read slower than that deadline still finishes (and is kept) for the requests
//! that follow, rather than being cancelled with each request that gives up on it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// How long a failed read answers for the reads of its key that follow.
pub(super) const FAILURE_TTL: Duration = Duration::from_secs(1);

/// Where those waiting for a read see its result once there is one.
type Slot<T, E> = watch::Receiver<Option<Result<T, E>>>;

/// What a read's failure type says when the read ended without a result (its task panicked or
/// its runtime stopped).
pub(super) trait Abandoned {
    fn abandoned() -> Self;
}

/// Reads in progress, by key.
pub(super) struct Flights<T, E> {
    state: Arc<State<T, E>>,
}

struct State<T, E> {
    running: Mutex<HashMap<String, Slot<T, E>>>,
    /// The last failure of each key, while it is under `failure_ttl` old.
    failed: Mutex<HashMap<String, (Instant, E)>>,
    failure_ttl: Duration,
}

impl<T, E> Default for Flights<T, E> {
    fn default() -> Self {
        Flights::with_failure_ttl(FAILURE_TTL)
    }
}

impl<T, E> Flights<T, E> {
    /// Flights whose failures answer for the reads that follow within `failure_ttl`.
    pub(super) fn with_failure_ttl(failure_ttl: Duration) -> Self {
        Flights {
            state: Arc::new(State {
                running: Mutex::new(HashMap::new()),
                failed: Mutex::new(HashMap::new()),
                failure_ttl,
            }),
        }
    }
}

/// Takes a finished (or abandoned) read off the list when dropped.
struct Landing<T, E> {
    state: Arc<State<T, E>>,
    key: String,
}

impl<T, E> Drop for Landing<T, E> {
    fn drop(&mut self) {
        self.state
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

impl<T, E> Flights<T, E>
where
    T: Clone + Send + Sync + 'static,
    E: Clone + Send + Sync + Abandoned + 'static,
{
    /// The result of `read` for `key`: started as a task of its own when no read of `key` is in
    /// progress, else that read's result. Dropping the returned future stops the wait, not the
    /// read. A read that ended without a result is started again once, by one of those that
    /// waited for it.
    pub(super) async fn share<F, Fut>(&self, key: &str, read: F) -> Result<T, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        if let Some((at, err)) = self
            .state
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
        {
            if at.elapsed() < self.state.failure_ttl {
                return Err(err.clone());
            }
        }
        let mut read = Some(read);
        loop {
            let (mut slot, start) = {
                let mut running = self.state.running.lock().unwrap_or_else(|p| p.into_inner());
                match running.get(key) {
                    Some(slot) => (slot.clone(), None),
                    None => {
                        let Some(read) = read.take() else {
                            // Ours ended without a result too: no third try.
                            return Err(E::abandoned());
                        };
                        let (sender, slot) = watch::channel(None);
                        running.insert(key.to_string(), slot.clone());
                        (slot, Some((sender, read)))
                    }
                }
            };
            if let Some((sender, read)) = start {
                let landing = Landing {
                    state: Arc::clone(&self.state),
                    key: key.to_string(),
                };
                let reading = read();
                tokio::spawn(async move {
                    let result = reading.await;
                    landing.state.settle(&landing.key, &result);
                    let _ = sender.send(Some(result));
                    drop(landing);
                });
            }
            let done = match slot.wait_for(Option::is_some).await {
                Ok(done) => done.clone(),
                Err(_) => None,
            };
            if let Some(result) = done {
                return result;
            }
        }
    }
}

impl<T, E: Clone> State<T, E> {
    /// Keeps a failure for those that come soon after; a success clears it.
    fn settle(&self, key: &str, result: &Result<T, E>) {
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(_) => {
                failed.remove(key);
            }
            Err(err) => {
                // Old failures go as new ones come, so the map holds only recent keys.
                let ttl = self.failure_ttl;
                failed.retain(|_, (at, _)| at.elapsed() < ttl);
                failed.insert(key.to_string(), (Instant::now(), err.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    impl Abandoned for String {
        fn abandoned() -> String {
            "abandoned".to_string()
        }
    }

    type Shared = Arc<Flights<u32, String>>;

    /// A read of `k` that counts itself in `runs`, takes `millis` and then gives `result`.
    async fn read(
        flights: Shared,
        runs: Arc<AtomicUsize>,
        millis: u64,
        result: Result<u32, String>,
    ) -> Result<u32, String> {
        flights
            .share("k", || async move {
                runs.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(millis)).await;
                result
            })
            .await
    }

    // Paused time: the sleeps and timeouts below are exact.
    #[tokio::test(start_paused = true)]
    async fn concurrent_reads_share_one_and_its_failure_for_a_while() {
        let flights: Shared = Arc::new(Flights::with_failure_ttl(Duration::from_millis(200)));
        let runs = Arc::new(AtomicUsize::new(0));
        let down = || Err("down".to_string());
        let tasks: Vec<_> = (0..8)
            .map(|_| tokio::spawn(read(Arc::clone(&flights), Arc::clone(&runs), 50, down())))
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap(), down());
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // A read soon after gets the failure without asking again.
        assert_eq!(
            read(Arc::clone(&flights), Arc::clone(&runs), 50, Ok(7)).await,
            down()
        );
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Once the failure is old enough, the next read runs anew.
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(
            read(Arc::clone(&flights), Arc::clone(&runs), 50, Ok(7)).await,
            Ok(7)
        );
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    // Paused time: the sleeps and timeouts below are exact.
    #[tokio::test(start_paused = true)]
    async fn a_read_goes_on_when_its_requests_give_up() {
        let flights: Shared = Arc::new(Flights::default());
        let runs = Arc::new(AtomicUsize::new(0));
        // Each request waits 30 ms for a read that takes 100 ms.
        for _ in 0..3 {
            let wait = read(Arc::clone(&flights), Arc::clone(&runs), 100, Ok(7));
            let waited = tokio::time::timeout(Duration::from_millis(30), wait).await;
            assert!(waited.is_err());
        }
        // One read for all three, not one per request: the later ones waited for the first.
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // A request that comes while it still runs gets its result.
        assert_eq!(
            read(Arc::clone(&flights), Arc::clone(&runs), 100, Ok(8)).await,
            Ok(7)
        );
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Once it is over, a new read is made.
        assert_eq!(
            read(Arc::clone(&flights), Arc::clone(&runs), 10, Ok(9)).await,
            Ok(9)
        );
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    // Paused time: the sleeps and timeouts below are exact.
    #[tokio::test(start_paused = true)]
    async fn a_read_that_ends_without_a_result_is_started_again_once() {
        let flights: Shared = Arc::new(Flights::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let panicking = |flights: Shared, runs: Arc<AtomicUsize>| async move {
            flights
                .share("k", || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    panic!("the read panics (as this test wants)");
                })
                .await
        };
        // Alone: the request's own read ended without a result, and it is not run a third time.
        let alone = panicking(Arc::clone(&flights), Arc::clone(&runs)).await;
        assert_eq!(alone, Err("abandoned".to_string()));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // One that waited for such a read starts its own.
        let first = tokio::spawn(panicking(Arc::clone(&flights), Arc::clone(&runs)));
        tokio::time::sleep(Duration::from_millis(5)).await;
        first.abort();
        let second = read(Arc::clone(&flights), Arc::clone(&runs), 10, Ok(7)).await;
        assert_eq!(second, Ok(7));
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }
}
