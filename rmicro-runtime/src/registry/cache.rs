//! A per-service snapshot of nodes for the hot path of every call.
//!
//! Looking a service up in a registry copies its records (endpoints, metadata, every node); a
//! client or gateway only needs the nodes, and needs them on every call. [`NodeCache`] keeps one
//! shared, immutable snapshot per service name and hands out `Arc` clones of it. A snapshot is
//! dropped when the registry reports a change to that service (one watch per service, started
//! on first use), when a caller reports a node it could not reach ([`NodeCache::invalidate`]),
//! and at the latest `ttl` after it was read, so a registry whose watch misses an event (or a
//! node that expired without anyone noticing) is re-read within `ttl`.
//!
//! A service not looked up for a whole `ttl` (its snapshot has expired by then) is forgotten,
//! its watch stopped, by a registry read of any service made from then on (at the latest the
//! first one two `ttl`s after its last lookup): services come and go for good
//! (a gateway sees every service ever deployed), and each one looked up once must not keep a
//! watch task, woken by every change to the registry, for as long as the cache lives.
//!
//! Empty answers are never cached: a service that has no nodes yet is looked up again on the
//! next call, so a client started before its server finds it as soon as it registers.
//!
//! A lookup the registry fails (etcd restarting, a network blip) answers with the nodes last
//! read for the service, however old (as go-micro's registry cache does), so a registry outage
//! does not stop calls to nodes that are up; only a service never read (or forgotten, or last
//! read with no nodes) gets the registry's error.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use tokio::task::AbortHandle;
use tokio_stream::StreamExt;

use super::{Node, Registry, RegistryError};

/// How long a snapshot is trusted without any event (go-micro's registry cache uses a minute).
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(60);

/// Snapshots of each service's live nodes, read from a [`Registry`] and kept fresh by its watch.
/// Cheap to clone: clones share the snapshots.
#[derive(Clone)]
pub struct NodeCache {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Arc<dyn Registry>,
    ttl: Duration,
    /// Read on every call: keyed with foldhash, not SipHash (names come from the caller's own
    /// code or a gateway's routed paths; foldhash is seeded per process).
    entries: RwLock<HashMap<String, Entry, foldhash::fast::RandomState>>,
    /// The watch task of each service in `entries`; aborted when the service is forgotten or
    /// the cache goes away.
    watchers: Mutex<HashMap<String, AbortHandle>>,
    /// When services not looked up since were last forgotten.
    swept: Mutex<Instant>,
}

/// One service: its snapshot, if there is one, and how often it was invalidated.
struct Entry {
    snapshot: Option<Snapshot>,
    /// Bumped by every invalidation of this service, so that a lookup does not store what it
    /// read from the registry when a change to the service was reported while it read. Per
    /// service: another service's changes leave this one's lookups alone. An entry is created
    /// by the first lookup that stores a snapshot or by an invalidation, and is removed only
    /// once no lookup used it for a whole `ttl` (a service with no entry is at generation 0):
    /// a lookup still in flight then may store what it read, and the watch it starts anew
    /// drops that at once, as after a first read.
    generation: u64,
    /// Whether a lookup came since the last sweep ([`NodeCache::sweep`]). Set by lookups under
    /// the read lock: an atomic, written only when it was clear.
    used: AtomicBool,
    /// When a registry read was last stored (or the entry made): a lookup reads again at the
    /// latest `ttl` after that, so one older than two `ttl`s has not been looked up for one.
    stored: Instant,
    /// The nodes last stored, kept when the snapshot is dropped: what a lookup answers when the
    /// registry cannot be read (go-micro's cache returns its last answer then too).
    last: Option<Arc<[Node]>>,
}

struct Snapshot {
    nodes: Arc<[Node]>,
    read_at: Instant,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let watchers = self.watchers.get_mut().unwrap_or_else(|p| p.into_inner());
        for (_, task) in watchers.drain() {
            task.abort();
        }
    }
}

impl std::fmt::Debug for NodeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCache")
            .field("registry", &self.inner.registry.name())
            .field("ttl", &self.inner.ttl)
            .finish_non_exhaustive()
    }
}

impl NodeCache {
    /// A cache over `registry` whose snapshots live at most `ttl` (`Duration::ZERO`: every
    /// lookup goes to the registry).
    pub fn new(registry: Arc<dyn Registry>, ttl: Duration) -> NodeCache {
        NodeCache {
            inner: Arc::new(Inner {
                registry,
                ttl,
                entries: RwLock::new(HashMap::default()),
                watchers: Mutex::new(HashMap::new()),
                swept: Mutex::new(Instant::now()),
            }),
        }
    }

    /// The registry behind the cache.
    pub fn registry(&self) -> &Arc<dyn Registry> {
        &self.inner.registry
    }

    /// Every live node of `service`, over all its versions (empty when it has none).
    ///
    /// # Errors
    ///
    /// The registry's, when the snapshot had to be read, the registry failed, and no nodes of
    /// the service were read before (see the module documentation).
    pub async fn nodes(&self, service: &str) -> Result<Arc<[Node]>, RegistryError> {
        let generation = match self.fresh(service) {
            Ok(nodes) => return Ok(nodes),
            Err(generation) => generation,
        };
        let services = match self.inner.registry.get_service(service).await {
            Ok(services) => services,
            Err(err) => return self.last(service).ok_or(err),
        };
        let nodes: Arc<[Node]> = services.into_iter().flat_map(|s| s.nodes).collect();
        if nodes.is_empty() {
            // Gone from the registry: not to be brought back should the registry fail later.
            self.forget_last(service);
        }
        if !nodes.is_empty() && !self.inner.ttl.is_zero() {
            self.sweep();
            {
                let mut entries = self
                    .inner
                    .entries
                    .write()
                    .unwrap_or_else(|p| p.into_inner());
                // A change to this service reported while the registry was read may be missing
                // from what it returned: then this read serves this call only, and the next one
                // reads again.
                let snapshot = Snapshot {
                    nodes: Arc::clone(&nodes),
                    read_at: Instant::now(),
                };
                match entries.get_mut(service) {
                    Some(entry) if entry.generation == generation => {
                        entry.stored = snapshot.read_at;
                        entry.last = Some(Arc::clone(&nodes));
                        entry.snapshot = Some(snapshot);
                    }
                    // Not stored as the snapshot (a change came meanwhile), but the nodes of a
                    // read that succeeded, for when the registry fails.
                    Some(entry) => entry.last = Some(Arc::clone(&nodes)),
                    None => {
                        entries.insert(
                            service.to_string(),
                            Entry {
                                stored: snapshot.read_at,
                                snapshot: Some(snapshot),
                                generation,
                                used: AtomicBool::new(true),
                                last: Some(Arc::clone(&nodes)),
                            },
                        );
                    }
                }
            }
            // After the insert, so the watch's first invalidation covers this read.
            self.watch(service);
        }
        Ok(nodes)
    }

    /// Forgets the snapshot of `service`, so the next lookup reads the registry (call it when
    /// one of its nodes could not be reached).
    pub fn invalidate(&self, service: &str) {
        invalidate(&self.inner, service);
    }

    /// The nodes of `service` last read from the registry, however old, if any were (and the
    /// service was not forgotten since): used when the registry cannot be read.
    fn last(&self, service: &str) -> Option<Arc<[Node]>> {
        let entries = self.inner.entries.read().unwrap_or_else(|p| p.into_inner());
        let last = entries.get(service)?.last.clone()?;
        tracing::debug!(%service, "registry unavailable; using the nodes last read");
        Some(last)
    }

    fn forget_last(&self, service: &str) {
        let has_last = |entries: &HashMap<String, Entry, _>| {
            entries.get(service).is_some_and(|e| e.last.is_some())
        };
        if !has_last(&self.inner.entries.read().unwrap_or_else(|p| p.into_inner())) {
            return;
        }
        let mut entries = self
            .inner
            .entries
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = entries.get_mut(service) {
            entry.last = None;
        }
    }

    /// The snapshot of `service` if it is fresh, or else the service's generation (to compare
    /// with once the registry has been read).
    fn fresh(&self, service: &str) -> Result<Arc<[Node]>, u64> {
        let entries = self.inner.entries.read().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = entries.get(service) else {
            return Err(0);
        };
        if !entry.used.load(Ordering::Relaxed) {
            entry.used.store(true, Ordering::Relaxed);
        }
        match &entry.snapshot {
            Some(s) if s.read_at.elapsed() < self.inner.ttl => Ok(Arc::clone(&s.nodes)),
            _ => Err(entry.generation),
        }
    }

    /// Forgets the services no lookup used since the last sweep, or whose last stored read is
    /// two `ttl`s old, and stops their watches; at most once per `ttl`, so a service is
    /// forgotten by the first sweep one `ttl` after its last lookup, or else two. Called before
    /// what a registry read found is stored, which is how services come in (an entry an
    /// invalidation made goes at the next sweep unless a lookup uses it).
    fn sweep(&self) {
        {
            let mut swept = self.inner.swept.lock().unwrap_or_else(|p| p.into_inner());
            if swept.elapsed() < self.inner.ttl {
                return;
            }
            *swept = Instant::now();
        }
        let mut watchers = self
            .inner
            .watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut entries = self
            .inner
            .entries
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let stale = self.inner.ttl.saturating_mul(2);
        entries.retain(|_, entry| {
            let used = std::mem::replace(entry.used.get_mut(), false);
            used && now.saturating_duration_since(entry.stored) < stale
        });
        watchers.retain(|service, task| {
            let keep = entries.contains_key(service);
            if !keep {
                task.abort();
            }
            keep
        });
    }

    /// Starts the watch of `service` unless it runs already. Without a tokio runtime (or when
    /// the watch fails) the snapshot still expires after `ttl`.
    fn watch(&self, service: &str) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut watchers = self
            .inner
            .watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if watchers.get(service).is_some_and(|t| !t.is_finished()) {
            return;
        }
        let cache = Arc::downgrade(&self.inner);
        let registry = Arc::clone(&self.inner.registry);
        let name = service.to_string();
        let task = runtime.spawn(async move {
            let events = registry.watch(Some(&name)).await;
            // Changes between the first read and the start of the watch were not seen.
            if !forget(&cache, &name) {
                return;
            }
            let mut events = match events {
                Ok(events) => events,
                Err(err) => {
                    tracing::debug!(service = %name, error = %err, "no registry watch; the node cache relies on its TTL");
                    return;
                }
            };
            while events.next().await.is_some() {
                if !forget(&cache, &name) {
                    return;
                }
            }
            // The watch ended (the registry went away): the next read starts a new one.
            forget(&cache, &name);
        });
        watchers.insert(service.to_string(), task.abort_handle());
    }
}

/// Drops `service`'s snapshot; false when the cache itself is gone.
fn forget(cache: &Weak<Inner>, service: &str) -> bool {
    match cache.upgrade() {
        Some(inner) => {
            invalidate(&inner, service);
            true
        }
        None => false,
    }
}

fn invalidate(inner: &Inner, service: &str) {
    let mut entries = inner.entries.write().unwrap_or_else(|p| p.into_inner());
    match entries.get_mut(service) {
        Some(entry) => {
            entry.snapshot = None;
            entry.generation += 1;
        }
        // Nothing is ever stored: nothing to guard.
        None if inner.ttl.is_zero() => {}
        // A lookup in flight started at generation 0: it must not store what it read.
        None => {
            entries.insert(
                service.to_string(),
                Entry {
                    snapshot: None,
                    generation: 1,
                    used: AtomicBool::new(false),
                    stored: Instant::now(),
                    last: None,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{MemoryRegistry, Service};

    fn record(name: &str, id: &str, address: &str) -> Service {
        Service {
            name: name.into(),
            version: "latest".into(),
            nodes: vec![Node {
                id: id.into(),
                address: address.into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn addresses(nodes: &[Node]) -> Vec<&str> {
        let mut out: Vec<&str> = nodes.iter().map(|n| n.address.as_str()).collect();
        out.sort_unstable();
        out
    }

    async fn eventually(cache: &NodeCache, service: &str, want: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let nodes = cache.nodes(service).await.unwrap();
            if addresses(&nodes) == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{service}: still {:?}, want {want:?}",
                addresses(&nodes)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn snapshots_are_shared_until_the_registry_changes() {
        let registry = MemoryRegistry::new();
        let cache = NodeCache::new(Arc::new(registry.clone()), Duration::from_secs(3600));
        let ttl = Duration::from_secs(60);

        assert!(cache.nodes("svc").await.unwrap().is_empty(), "nothing yet");
        registry
            .register(&record("svc", "a", "10.0.0.1:1"), ttl)
            .await
            .unwrap();
        // Empty answers are not cached: the new node is seen at once.
        eventually(&cache, "svc", &["10.0.0.1:1"]).await;

        // Once the watch runs, lookups share one snapshot.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (first, second) = (
                cache.nodes("svc").await.unwrap(),
                cache.nodes("svc").await.unwrap(),
            );
            if Arc::ptr_eq(&first, &second) {
                break;
            }
            assert!(Instant::now() < deadline, "lookups never shared a snapshot");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        registry
            .register(&record("svc", "b", "10.0.0.2:1"), ttl)
            .await
            .unwrap();
        eventually(&cache, "svc", &["10.0.0.1:1", "10.0.0.2:1"]).await;
        registry
            .deregister(&record("svc", "a", "10.0.0.1:1"))
            .await
            .unwrap();
        eventually(&cache, "svc", &["10.0.0.2:1"]).await;

        // Another service's changes leave this snapshot alone.
        let before = cache.nodes("svc").await.unwrap();
        registry
            .register(&record("other", "c", "10.0.0.3:1"), ttl)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(Arc::ptr_eq(&before, &cache.nodes("svc").await.unwrap()));
    }

    #[tokio::test]
    async fn invalidate_and_ttl_force_a_new_read() {
        let registry = MemoryRegistry::new();
        registry
            .register(&record("svc", "a", "10.0.0.1:1"), Duration::from_secs(60))
            .await
            .unwrap();
        let cache = NodeCache::new(Arc::new(registry.clone()), Duration::from_secs(3600));
        let first = cache.nodes("svc").await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let cached = cache.nodes("svc").await.unwrap();
        assert!(Arc::ptr_eq(&cached, &cache.nodes("svc").await.unwrap()));
        cache.invalidate("svc");
        let reread = cache.nodes("svc").await.unwrap();
        assert!(!Arc::ptr_eq(&cached, &reread));
        assert_eq!(addresses(&first), addresses(&reread));

        let uncached = NodeCache::new(Arc::new(registry), Duration::ZERO);
        let (a, b) = (
            uncached.nodes("svc").await.unwrap(),
            uncached.nodes("svc").await.unwrap(),
        );
        assert!(
            !Arc::ptr_eq(&a, &b),
            "a zero TTL reads the registry every time"
        );
    }

    #[tokio::test]
    async fn dropping_the_cache_stops_its_watches() {
        let registry = MemoryRegistry::new();
        registry
            .register(&record("svc", "a", "10.0.0.1:1"), Duration::from_secs(60))
            .await
            .unwrap();
        let cache = NodeCache::new(Arc::new(registry), Duration::from_secs(3600));
        cache.nodes("svc").await.unwrap();
        let task = cache.inner.watchers.lock().unwrap()["svc"].clone();
        assert!(!task.is_finished());
        drop(cache);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !task.is_finished() {
            assert!(Instant::now() < deadline, "the watch outlived its cache");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn services_no_longer_looked_up_are_forgotten_with_their_watches() {
        // Services come and go for good (a gateway sees every service ever deployed): each one
        // looked up once must not keep an entry and a watch task for as long as the cache lives.
        let registry = MemoryRegistry::new();
        let ttl = Duration::from_millis(100);
        let cache = NodeCache::new(Arc::new(registry.clone()), ttl);
        let mut tasks = Vec::new();
        for i in 0..200 {
            let name = format!("svc{i}");
            let address = format!("10.0.0.1:{}", 1000 + i);
            registry
                .register(&record(&name, "a", &address), Duration::from_secs(60))
                .await
                .unwrap();
            assert_eq!(addresses(&cache.nodes(&name).await.unwrap()), [address]);
            tasks.push(cache.inner.watchers.lock().unwrap()[&name].clone());
        }
        // Only `svc0` is still looked up.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            cache.nodes("svc0").await.unwrap();
            let entries = cache.inner.entries.read().unwrap().len();
            let watchers = cache.inner.watchers.lock().unwrap().len();
            let running = tasks.iter().filter(|t| !t.is_finished()).count();
            if entries == 1 && watchers == 1 && running == 1 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{entries} entries, {watchers} watchers, {running} watch tasks running for 1 service in use"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            !tasks[0].is_finished(),
            "the watch of the service in use ended"
        );
        // A service looked up again after it was forgotten is read and watched anew.
        registry
            .register(&record("svc7", "b", "10.0.0.2:1"), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(
            addresses(&cache.nodes("svc7").await.unwrap()),
            ["10.0.0.1:1007", "10.0.0.2:1"]
        );
        assert!(!cache.inner.watchers.lock().unwrap()["svc7"].is_finished());

        // When no lookup at all comes for a while, the first registry read after it forgets
        // the services not looked up meanwhile.
        tokio::time::sleep(ttl * 3).await;
        registry
            .register(&record("late", "c", "10.0.0.3:1"), Duration::from_secs(60))
            .await
            .unwrap();
        cache.nodes("late").await.unwrap();
        let watchers: Vec<String> = cache
            .inner
            .watchers
            .lock()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(watchers, ["late"]);
        assert_eq!(cache.inner.entries.read().unwrap().len(), 1);
    }

    /// A memory registry whose lookups, once `slow` is set, take 100 ms after reading, and
    /// fail while `down` is set.
    #[derive(Default)]
    struct Slow {
        inner: MemoryRegistry,
        slow: std::sync::atomic::AtomicBool,
        down: std::sync::atomic::AtomicBool,
    }

    impl Registry for Slow {
        fn name(&self) -> &'static str {
            "slow"
        }
        fn register<'a>(
            &'a self,
            service: &'a Service,
            ttl: Duration,
        ) -> crate::registry::BoxFuture<'a, Result<(), RegistryError>> {
            self.inner.register(service, ttl)
        }
        fn deregister<'a>(
            &'a self,
            service: &'a Service,
        ) -> crate::registry::BoxFuture<'a, Result<(), RegistryError>> {
            self.inner.deregister(service)
        }
        fn get_service<'a>(
            &'a self,
            name: &'a str,
        ) -> crate::registry::BoxFuture<'a, Result<Vec<Service>, RegistryError>> {
            Box::pin(async move {
                if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err(RegistryError::Unreachable("down".into()));
                }
                let read = self.inner.get_service(name).await;
                if self.slow.load(std::sync::atomic::Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                read
            })
        }
        fn list_services(
            &self,
        ) -> crate::registry::BoxFuture<'_, Result<Vec<Service>, RegistryError>> {
            self.inner.list_services()
        }
        fn watch<'a>(
            &'a self,
            service: Option<&'a str>,
        ) -> crate::registry::BoxFuture<'a, Result<crate::registry::Watcher, RegistryError>>
        {
            self.inner.watch(service)
        }
    }

    /// `svc` with one node registered in `registry`, and a cache that has read it.
    async fn one_node(registry: &Arc<Slow>) -> (Service, NodeCache) {
        let a = record("svc", "a", "10.0.0.1:1");
        registry
            .register(&a, Duration::from_secs(60))
            .await
            .unwrap();
        let cache = NodeCache::new(registry.clone(), Duration::from_secs(3600));
        eventually(&cache, "svc", &["10.0.0.1:1"]).await;
        (a, cache)
    }

    #[tokio::test]
    async fn a_registry_that_cannot_be_read_leaves_the_nodes_last_read() {
        use std::sync::atomic::Ordering::SeqCst;
        let registry = Arc::new(Slow::default());
        let (a, cache) = one_node(&registry).await;

        // Dropped (a node failed), and the registry down: the nodes last read.
        registry.down.store(true, SeqCst);
        cache.invalidate("svc");
        assert_eq!(
            addresses(&cache.nodes("svc").await.unwrap()),
            ["10.0.0.1:1"]
        );
        // A service never read: the registry's error.
        assert!(cache.nodes("other").await.is_err());

        // Back, the service gone: no nodes, and none brought back by the next outage.
        registry.down.store(false, SeqCst);
        registry.deregister(&a).await.unwrap();
        cache.invalidate("svc");
        assert!(cache.nodes("svc").await.unwrap().is_empty());
        registry.down.store(true, SeqCst);
        assert!(cache.nodes("svc").await.is_err());
    }

    #[tokio::test]
    async fn a_change_during_a_lookup_is_not_overwritten_by_that_lookup() {
        let registry = Arc::new(Slow::default());
        let (a, cache) = one_node(&registry).await;
        // Once the watch runs, lookups share one snapshot.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !Arc::ptr_eq(
            &cache.nodes("svc").await.unwrap(),
            &cache.nodes("svc").await.unwrap(),
        ) {
            assert!(Instant::now() < deadline, "lookups never shared a snapshot");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        // A lookup reads the registry; the node leaves (and the watch says so) before that
        // lookup has stored what it read.
        cache.invalidate("svc");
        registry
            .slow
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let lookup = tokio::spawn({
            let cache = cache.clone();
            async move { cache.nodes("svc").await.unwrap() }
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        registry.deregister(&a).await.unwrap();
        assert_eq!(addresses(&lookup.await.unwrap()), ["10.0.0.1:1"]);
        registry
            .slow
            .store(false, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let nodes = cache.nodes("svc").await.unwrap();
        assert!(
            nodes.is_empty(),
            "the cache keeps serving a node that left: {:?}",
            addresses(&nodes)
        );
    }

    /// Waits until lookups of `service` share one snapshot (its watch runs).
    async fn shared(cache: &NodeCache, service: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !Arc::ptr_eq(
            &cache.nodes(service).await.unwrap(),
            &cache.nodes(service).await.unwrap(),
        ) {
            assert!(
                Instant::now() < deadline,
                "{service}: lookups never shared a snapshot"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn churn_of_one_service_does_not_discard_lookups_of_another() {
        let registry = Arc::new(Slow::default());
        let ttl = Duration::from_secs(60);
        registry
            .register(&record("calm", "a", "10.0.0.1:1"), ttl)
            .await
            .unwrap();
        registry
            .register(&record("busy", "b", "10.0.0.2:1"), ttl)
            .await
            .unwrap();
        let cache = NodeCache::new(registry.clone(), Duration::from_secs(3600));
        shared(&cache, "calm").await;
        shared(&cache, "busy").await;

        // A lookup of `calm` reads the registry while `busy` churns: its nodes come and go
        // (the watch reports it) and a caller reports one of them unreachable.
        cache.invalidate("calm");
        registry
            .slow
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let lookup = tokio::spawn({
            let cache = cache.clone();
            async move { cache.nodes("calm").await.unwrap() }
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        for i in 0..5 {
            let node = record("busy", &format!("c{i}"), "10.0.0.3:1");
            registry.register(&node, ttl).await.unwrap();
            registry.deregister(&node).await.unwrap();
        }
        cache.invalidate("busy");
        let read = lookup.await.unwrap();
        registry
            .slow
            .store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(addresses(&read), ["10.0.0.1:1"]);
        assert!(
            Arc::ptr_eq(&read, &cache.nodes("calm").await.unwrap()),
            "changes to `busy` threw away what the lookup of `calm` read"
        );
    }
}
