//! Single flight: concurrent requests for the same read (a service's descriptors, by server
//! reflection) share one read and its result, failure included, rather than each asking the
//! node. A failure is also given to the requests that come within [`FAILURE_TTL`] after it, so
//! that a node without reflection (or one that cannot be reached) is not asked again for each
//! request of a burst.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a failed read answers for the reads of its key that follow.
pub(super) const FAILURE_TTL: Duration = Duration::from_secs(1);

use tokio::sync::watch;

/// Where those waiting for a read see its result once there is one.
type Slot<T, E> = watch::Receiver<Option<Result<T, E>>>;

/// Reads in progress, by key.
pub(super) struct Flights<T, E> {
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
            running: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
            failure_ttl,
        }
    }
}

/// Takes a finished (or abandoned) read off the list when dropped.
struct Landing<'a, T, E> {
    flights: &'a Flights<T, E>,
    key: &'a str,
}

impl<T, E> Drop for Landing<'_, T, E> {
    fn drop(&mut self) {
        self.flights
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(self.key);
    }
}

impl<T: Clone, E: Clone> Flights<T, E> {
    /// The result of `read` for `key`: run here when no read of `key` is in progress, else that
    /// read's result. A read abandoned midway (its request cancelled) is run again by one of
    /// those that waited for it.
    pub(super) async fn share<F, Fut>(&self, key: &str, read: F) -> Result<T, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        if let Some((at, err)) = self
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
        {
            if at.elapsed() < self.failure_ttl {
                return Err(err.clone());
            }
        }
        let sender = loop {
            let mut slot = {
                let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
                match running.get(key) {
                    Some(slot) => slot.clone(),
                    None => {
                        let (sender, slot) = watch::channel(None);
                        running.insert(key.to_string(), slot);
                        break sender;
                    }
                }
            };
            let done = match slot.wait_for(Option::is_some).await {
                Ok(done) => done.clone(),
                Err(_) => None,
            };
            if let Some(result) = done {
                return result;
            }
        };
        let _landing = Landing { flights: self, key };
        let result = read().await;
        {
            let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
            match &result {
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
        let _ = sender.send(Some(result.clone()));
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_reads_share_one_and_an_abandoned_one_is_run_again() {
        let flights = Arc::new(Flights::<u32, String>::with_failure_ttl(
            Duration::from_millis(200),
        ));
        let runs = Arc::new(AtomicUsize::new(0));
        let read = |flights: Arc<Flights<u32, String>>, runs: Arc<AtomicUsize>, ok: bool| async move {
            flights
                .share("k", || async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if ok {
                        Ok(7)
                    } else {
                        Err("down".to_string())
                    }
                })
                .await
        };
        let tasks: Vec<_> = (0..8)
            .map(|_| tokio::spawn(read(Arc::clone(&flights), Arc::clone(&runs), false)))
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap(), Err("down".to_string()));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // A read soon after gets the failure without asking again.
        assert_eq!(
            read(Arc::clone(&flights), Arc::clone(&runs), true).await,
            Err("down".to_string())
        );
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Once the failure is old enough, the next read runs anew.
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(
            read(Arc::clone(&flights), Arc::clone(&runs), true).await,
            Ok(7)
        );
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        // The one reading is cancelled: one that waited reads instead.
        let first = tokio::spawn(read(Arc::clone(&flights), Arc::clone(&runs), true));
        tokio::time::sleep(Duration::from_millis(10)).await;
        let second = tokio::spawn(read(Arc::clone(&flights), Arc::clone(&runs), true));
        tokio::time::sleep(Duration::from_millis(10)).await;
        first.abort();
        assert_eq!(second.await.unwrap(), Ok(7));
        assert_eq!(runs.load(Ordering::SeqCst), 4);
    }
}
