//! The in-process registry: the default, shared by every service and client of one process.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_core::Stream;
use tokio::sync::broadcast;
use tokio::time::Sleep;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::{merge, Action, BoxFuture, Event, Registry, RegistryError, Service, Watcher};

/// A registry in this process's memory. Nodes expire when not refreshed within their TTL.
#[derive(Clone)]
pub struct MemoryRegistry {
    inner: Arc<Inner>,
}

/// The nodes, and when the first of them expires at the earliest.
#[derive(Default)]
struct Table {
    /// Service name → node id → the one-node record and when it expires. By name first, so
    /// that looking a service up reads its own nodes, however many other services there are.
    /// A name goes when its last node does.
    services: HashMap<String, HashMap<String, (Service, Instant)>>,
    /// No node expires before this; `None` when there is no node. Moved earlier by each
    /// registration, set to the true first expiry by each sweep, and left alone by refreshes
    /// and departures (so it may be early: a sweep then finds nothing due and moves it on).
    /// One deadline for all watchers: they read it instead of looking at every node whenever
    /// they wait, and the nodes are only looked at once it has passed.
    next_expiry: Option<Instant>,
}

struct Inner {
    nodes: Mutex<Table>,
    /// Shared by every watcher: each clones only the events of its own service.
    events: broadcast::Sender<Arc<Event>>,
    /// Told when a registration moves the next expiry earlier, so that watchers asleep until
    /// the later one look again (a refresh with a shorter TTL sends no event to wake them).
    sooner: tokio::sync::watch::Sender<()>,
    /// How often every node was looked at to find expired ones or the next expiry.
    #[cfg(test)]
    scans: std::sync::atomic::AtomicUsize,
    /// How many records lookups (`get_service`, `list_services`) have read.
    #[cfg(test)]
    read: std::sync::atomic::AtomicUsize,
}

impl Inner {
    /// Counts one look at every node (tests only).
    fn scanned(&self) {
        #[cfg(test)]
        self.scans
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Counts a record a lookup read (tests only).
    fn read_one(&self) {
        #[cfg(test)]
        self.read.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl std::fmt::Debug for MemoryRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRegistry").finish_non_exhaustive()
    }
}

impl Default for MemoryRegistry {
    fn default() -> Self {
        MemoryRegistry::new()
    }
}

impl MemoryRegistry {
    /// A new, empty registry.
    pub fn new() -> MemoryRegistry {
        MemoryRegistry {
            inner: Arc::new(Inner {
                nodes: Mutex::new(Table::default()),
                events: broadcast::channel(1024).0,
                sooner: tokio::sync::watch::channel(()).0,
                #[cfg(test)]
                scans: std::sync::atomic::AtomicUsize::new(0),
                #[cfg(test)]
                read: std::sync::atomic::AtomicUsize::new(0),
            }),
        }
    }

    /// The process-wide registry that `--registry memory` selects, so every service and client
    /// configured from flags in one process sees the others.
    pub fn global() -> MemoryRegistry {
        static GLOBAL: OnceLock<MemoryRegistry> = OnceLock::new();
        GLOBAL.get_or_init(MemoryRegistry::new).clone()
    }

    /// Live records, only those of `name` when given (found by name: no other is read).
    fn live(&self, name: Option<&str>) -> Vec<Service> {
        let table = sweep(&self.inner);
        let copy = |(record, _): &(Service, Instant)| {
            self.inner.read_one();
            record.clone()
        };
        match name {
            Some(name) => table
                .services
                .get(name)
                .map(|nodes| merge(nodes.values().map(copy)))
                .unwrap_or_default(),
            None => merge(
                table
                    .services
                    .values()
                    .flat_map(|nodes| nodes.values().map(copy)),
            ),
        }
    }
}

/// Drops the nodes whose TTL has passed, telling watchers (a `Delete` each); returns the table,
/// still locked. Looks at the nodes only when the table's next expiry has passed.
fn sweep(inner: &Inner) -> std::sync::MutexGuard<'_, Table> {
    let now = Instant::now();
    let mut table = inner.nodes.lock().unwrap_or_else(|p| p.into_inner());
    if table.next_expiry.is_none_or(|next| next > now) {
        return table;
    }
    inner.scanned();
    let mut next: Option<Instant> = None;
    let mut expired = Vec::new();
    table.services.retain(|_, nodes| {
        nodes.retain(|_, (service, until)| {
            if *until <= now {
                expired.push(std::mem::take(service));
                false
            } else {
                next = Some(next.map_or(*until, |n| n.min(*until)));
                true
            }
        });
        !nodes.is_empty()
    });
    table.next_expiry = next;
    for service in expired {
        let _ = inner.events.send(Arc::new(Event {
            action: Action::Delete,
            service,
        }));
    }
    table
}

/// One-node records of `service`.
fn split(service: &Service) -> impl Iterator<Item = Service> + '_ {
    service.nodes.iter().map(move |node| Service {
        nodes: vec![node.clone()],
        ..service.clone()
    })
}

impl Registry for MemoryRegistry {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn register<'a>(
        &'a self,
        service: &'a Service,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            let until = Instant::now() + ttl;
            if service.nodes.is_empty() {
                return Ok(());
            }
            let mut table = self.inner.nodes.lock().unwrap_or_else(|p| p.into_inner());
            if table.next_expiry.is_none_or(|n| until < n) {
                table.next_expiry = Some(until);
                self.inner.sooner.send_replace(());
            }
            let nodes = table.services.entry(service.name.clone()).or_default();
            for record in split(service) {
                let key = record.nodes[0].id.clone();
                let action = match nodes.get(&key) {
                    None => Some(Action::Create),
                    Some((old, _)) if *old != record => Some(Action::Update),
                    Some(_) => None,
                };
                nodes.insert(key, (record.clone(), until));
                if let Some(action) = action {
                    let _ = self.inner.events.send(Arc::new(Event {
                        action,
                        service: record,
                    }));
                }
            }
            Ok(())
        })
    }

    fn deregister<'a>(&'a self, service: &'a Service) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            let mut table = self.inner.nodes.lock().unwrap_or_else(|p| p.into_inner());
            let Some(nodes) = table.services.get_mut(&service.name) else {
                return Ok(());
            };
            for node in &service.nodes {
                if let Some((record, _)) = nodes.remove(&node.id) {
                    let _ = self.inner.events.send(Arc::new(Event {
                        action: Action::Delete,
                        service: record,
                    }));
                }
            }
            if nodes.is_empty() {
                table.services.remove(&service.name);
            }
            Ok(())
        })
    }

    fn get_service<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Service>, RegistryError>> {
        Box::pin(async move { Ok(self.live(Some(name))) })
    }

    fn list_services(&self) -> BoxFuture<'_, Result<Vec<Service>, RegistryError>> {
        Box::pin(async move { Ok(self.live(None)) })
    }

    fn watch<'a>(
        &'a self,
        service: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Watcher, RegistryError>> {
        // Subscribed now, so the watch hears of every change after this call.
        let events = tokio_stream::wrappers::BroadcastStream::new(self.inner.events.subscribe());
        let sooner =
            tokio_stream::wrappers::WatchStream::from_changes(self.inner.sooner.subscribe());
        let filter = service.map(str::to_string);
        let registry = Arc::downgrade(&self.inner);
        Box::pin(async move {
            // The timer needs a runtime: made where the future is awaited, not where it is
            // asked for (`runtime.block_on(registry.watch(..))` asks outside one).
            let watch = Expiring {
                events,
                sooner,
                filter,
                registry,
                sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            };
            Ok(Box::pin(watch) as Watcher)
        })
    }
}

/// A watch on the memory registry: its events, and a `Delete` for each node as its TTL
/// passes, not only once someone next reads the registry (a watcher such as a client's node
/// cache would otherwise keep a node that stopped refreshing until it reads again).
struct Expiring {
    events: tokio_stream::wrappers::BroadcastStream<Arc<Event>>,
    /// Yields when a registration moved the registry's next expiry earlier.
    sooner: tokio_stream::wrappers::WatchStream<()>,
    /// Only this service's events, when set.
    filter: Option<String>,
    /// Not kept alive by its watchers: the stream ends when the registry goes.
    registry: Weak<Inner>,
    /// Armed for the registry's next expiry while no event is pending.
    sleep: Pin<Box<Sleep>>,
}

impl Stream for Expiring {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let this = self.get_mut();
        loop {
            match Pin::new(&mut this.events).poll_next(cx) {
                Poll::Ready(Some(Ok(event))) => {
                    if this
                        .filter
                        .as_ref()
                        .is_none_or(|name| *name == event.service.name)
                    {
                        return Poll::Ready(Some(Arc::unwrap_or_clone(event)));
                    }
                    continue;
                }
                // Lagged: the events missed are gone, and with them maybe a node's departure.
                // End, so that the watcher reads the registry again (as at the registry's end).
                Poll::Ready(Some(Err(BroadcastStreamRecvError::Lagged(missed)))) => {
                    tracing::warn!(missed, "a registry watch fell behind and missed changes; it ends so that its watcher reads the registry again");
                    return Poll::Ready(None);
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => {}
            }
            // Taken in (and the waker left with it) before the deadline is read below: a
            // deadline moved earlier after that read wakes this watch again.
            while let Poll::Ready(Some(())) = Pin::new(&mut this.sooner).poll_next(cx) {}
            let Some(inner) = this.registry.upgrade() else {
                return Poll::Pending;
            };
            let first = inner
                .nodes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .next_expiry;
            let Some(first) = first else {
                return Poll::Pending;
            };
            // The registry's clock decides; the timer only wakes this watch to look again.
            let left = first.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // The first watcher to wake sweeps (the others then find the next deadline):
                // the `Delete`s of the expired nodes go to every watcher, this one included,
                // and the loop picks them up.
                drop(sweep(&inner));
                continue;
            }
            this.sleep
                .as_mut()
                .reset(tokio::time::Instant::now() + left);
            if this.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Node;
    use tokio_stream::StreamExt;

    fn service(id: &str) -> Service {
        Service {
            name: "svc".into(),
            version: "latest".into(),
            nodes: vec![Node {
                id: id.into(),
                address: "127.0.0.1:1".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_watch_asked_for_outside_a_runtime_runs_in_the_one_that_awaits_it() {
        // `Registry::watch` returns a future: making it must not need a runtime, as in
        // `runtime.block_on(registry.watch(..))` from synchronous code.
        let reg = MemoryRegistry::new();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let watching = reg.watch(Some("svc"));
        let mut watch = runtime.block_on(watching).unwrap();
        runtime.block_on(async {
            reg.register(&service("a"), Duration::from_millis(50))
                .await
                .unwrap();
            assert_eq!(watch.next().await.unwrap().action, Action::Create);
            let deleted = tokio::time::timeout(Duration::from_secs(5), watch.next())
                .await
                .expect("the node's expiry")
                .unwrap();
            assert_eq!(deleted.action, Action::Delete);
        });
    }

    #[tokio::test]
    async fn a_refresh_with_a_shorter_ttl_wakes_a_watch_asleep_until_the_longer_one() {
        let reg = MemoryRegistry::new();
        let mut watch = reg.watch(Some("svc")).await.unwrap();
        reg.register(&service("a"), Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(watch.next().await.unwrap().action, Action::Create);
        // The watch waits, asleep until the 30 s expiry.
        let waiting = tokio::spawn(async move { watch.next().await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The same record again, with a TTL of 100 ms: no event, yet the node now expires in
        // 100 ms, and the watch must hear of it then.
        let refreshed = Instant::now();
        reg.register(&service("a"), Duration::from_millis(100))
            .await
            .unwrap();
        let deleted = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("a Delete once the shorter TTL has passed, not after the longer one")
            .unwrap()
            .unwrap();
        assert_eq!(deleted.action, Action::Delete);
        assert!(refreshed.elapsed() >= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn register_expire_and_watch() {
        let reg = MemoryRegistry::new();
        let mut watch = reg.watch(Some("svc")).await.unwrap();
        reg.register(&service("a"), Duration::from_secs(60))
            .await
            .unwrap();
        reg.register(&service("b"), Duration::from_millis(50))
            .await
            .unwrap();
        assert_eq!(reg.get_service("svc").await.unwrap()[0].nodes.len(), 2);
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(reg.get_service("svc").await.unwrap()[0].nodes.len(), 1);
        reg.deregister(&service("a")).await.unwrap();
        assert!(reg.get_service("svc").await.unwrap().is_empty());
        let actions: Vec<Action> = (&mut watch).take(4).map(|e| e.action).collect().await;
        assert_eq!(
            actions,
            [
                Action::Create,
                Action::Create,
                Action::Delete,
                Action::Delete
            ]
        );
    }

    #[tokio::test]
    async fn a_watch_hears_of_an_expired_node_with_nobody_reading() {
        let reg = MemoryRegistry::new();
        let mut watch = reg.watch(Some("svc")).await.unwrap();
        let mut other = reg.watch(Some("other")).await.unwrap();
        let registered = Instant::now();
        reg.register(&service("a"), Duration::from_millis(150))
            .await
            .unwrap();
        assert_eq!(watch.next().await.unwrap().action, Action::Create);
        let deleted = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .expect("a Delete once the TTL has passed")
            .unwrap();
        assert_eq!(deleted.action, Action::Delete);
        assert_eq!(deleted.service.nodes[0].id, "a");
        assert!(registered.elapsed() >= Duration::from_millis(150));
        // A watch on another service hears nothing of it.
        assert!(
            tokio::time::timeout(Duration::from_millis(100), other.next())
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_refreshed_node_does_not_expire_and_watches_end_with_the_registry() {
        let reg = MemoryRegistry::new();
        let mut watch = reg.watch(None).await.unwrap();
        for _ in 0..8 {
            reg.register(&service("a"), Duration::from_millis(150))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(watch.next().await.unwrap().action, Action::Create);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), watch.next())
                .await
                .is_err(),
            "no Delete while the node is refreshed within its TTL"
        );
        drop(reg);
        assert!(watch.next().await.is_none());
    }

    #[tokio::test]
    async fn a_watch_that_fell_behind_ends_instead_of_skipping_changes() {
        let reg = MemoryRegistry::new();
        let mut watch = reg.watch(Some("svc")).await.unwrap();
        reg.register(&service("a"), Duration::from_secs(60))
            .await
            .unwrap();
        reg.deregister(&service("a")).await.unwrap();
        // More changes of other services than the watch holds, before it is read again.
        for i in 0..1100 {
            let other = Service {
                name: "other".into(),
                ..service(&format!("o{i}"))
            };
            reg.register(&other, Duration::from_secs(60)).await.unwrap();
        }
        let next = tokio::time::timeout(Duration::from_secs(1), watch.next()).await;
        assert!(
            matches!(next, Ok(None)),
            "the node's arrival and departure were lost without a sign: {next:?}"
        );
    }

    #[tokio::test]
    async fn idle_watchers_do_not_look_at_every_node_on_every_event() {
        use std::sync::atomic::Ordering;
        let reg = MemoryRegistry::new();
        for i in 0..1000 {
            reg.register(&service(&format!("n{i}")), Duration::from_secs(60))
                .await
                .unwrap();
        }
        // 20 watchers waiting for a service that changes, woken by every change of another.
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let mut watch = reg.watch(Some("quiet")).await.unwrap();
            tasks.push(tokio::spawn(async move { watch.next().await }));
        }
        tokio::task::yield_now().await;
        let before = reg.inner.scans.load(Ordering::Relaxed);
        for i in 0..100 {
            let busy = Service {
                name: "busy".into(),
                ..service(&format!("b{i}"))
            };
            reg.register(&busy, Duration::from_secs(60)).await.unwrap();
            // Every watcher sees the event (and skips it) before the next one.
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
        }
        let scans = reg.inner.scans.load(Ordering::Relaxed) - before;
        // 2,000 wake-ups (20 watchers, 100 events) of 1,000 nodes each would be 2 million
        // node visits; no node is due, so none needs looking at.
        assert!(
            scans <= 5,
            "idle watchers looked at every node {scans} times for 100 events"
        );
        let quiet = Service {
            name: "quiet".into(),
            ..service("q")
        };
        reg.register(&quiet, Duration::from_secs(60)).await.unwrap();
        for task in tasks {
            let event = tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(event.unwrap().service.name, "quiet");
        }
    }

    #[tokio::test]
    async fn a_node_refreshed_then_left_to_expire_is_heard_of_after_its_last_ttl() {
        let reg = MemoryRegistry::new();
        let mut watch = reg.watch(Some("svc")).await.unwrap();
        // Refreshed past its first expiry (the registry's first deadline goes stale), then
        // left alone: its `Delete` comes one TTL after the last refresh, not before.
        let mut last = Instant::now();
        for _ in 0..4 {
            // Taken before the registration, whose TTL runs from a moment after it (a sleep
            // may take longer than asked on a loaded machine: `now - 40 ms` after it would be
            // later than the last refresh, and the Delete seem early).
            last = Instant::now();
            reg.register(&service("a"), Duration::from_millis(100))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        assert_eq!(watch.next().await.unwrap().action, Action::Create);
        let deleted = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .expect("a Delete once the last TTL has passed")
            .unwrap();
        assert_eq!(deleted.action, Action::Delete);
        assert!(
            last.elapsed() >= Duration::from_millis(100),
            "the Delete came {:?} after the last refresh",
            last.elapsed()
        );
    }

    /// A lookup by name reads that service's records alone: thousands of other services
    /// (names that share its prefix among them) change neither its answer nor what it costs,
    /// and a node deregistered from a service of several leaves the others.
    #[tokio::test]
    async fn a_lookup_reads_only_its_own_service_among_thousands() {
        use std::sync::atomic::Ordering;
        let reg = MemoryRegistry::new();
        let ttl = Duration::from_secs(60);
        let named = |name: &str, version: &str, id: &str, address: &str| Service {
            name: name.into(),
            version: version.into(),
            nodes: vec![Node {
                id: id.into(),
                address: address.into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        for i in 0..5000 {
            let name = match i % 4 {
                0 => format!("svc{i}"),
                1 => format!("svc.{i}"),
                2 => format!("other.{i}"),
                _ => "svc.crowded".to_string(),
            };
            let node = named(&name, "latest", &format!("n{i}"), "10.0.0.1:1");
            reg.register(&node, ttl).await.unwrap();
        }
        // The service looked up: three nodes of one version (registered out of id order, one
        // of them in a record of two nodes) and one of another.
        let mut two = named("svc", "1", "c", "10.0.1.3:1");
        two.nodes.push(Node {
            id: "a".into(),
            address: "10.0.1.1:1".into(),
            ..Default::default()
        });
        reg.register(&two, ttl).await.unwrap();
        reg.register(&named("svc", "1", "b", "10.0.1.2:1"), ttl)
            .await
            .unwrap();
        reg.register(&named("svc", "2", "d", "10.0.1.4:1"), ttl)
            .await
            .unwrap();

        let nodes_of = |services: &[Service]| -> Vec<(String, Vec<String>)> {
            services
                .iter()
                .map(|s| {
                    let ids = s.nodes.iter().map(|n| n.id.clone()).collect();
                    (format!("{} {}", s.name, s.version), ids)
                })
                .collect()
        };
        let before = reg.inner.read.load(Ordering::Relaxed);
        let found = reg.get_service("svc").await.unwrap();
        assert_eq!(
            nodes_of(&found),
            [
                (
                    "svc 1".to_string(),
                    vec!["a".into(), "b".into(), "c".into()]
                ),
                ("svc 2".to_string(), vec!["d".into()]),
            ]
        );
        assert_eq!(found[0].nodes[0].address, "10.0.1.1:1");
        let read = reg.inner.read.load(Ordering::Relaxed) - before;
        assert_eq!(read, 4, "a lookup of one service read {read} records");
        assert_eq!(
            reg.get_service("svc.crowded").await.unwrap()[0].nodes.len(),
            1250
        );
        assert!(reg.get_service("sv").await.unwrap().is_empty());
        assert!(reg.get_service("svc.").await.unwrap().is_empty());

        // One node of the three goes; the others stay, and the other version too.
        reg.deregister(&named("svc", "1", "b", "10.0.1.2:1"))
            .await
            .unwrap();
        assert_eq!(
            nodes_of(&reg.get_service("svc").await.unwrap()),
            [
                ("svc 1".to_string(), vec!["a".into(), "c".into()]),
                ("svc 2".to_string(), vec!["d".into()]),
            ]
        );
        // Deregistering a node the registry does not hold, of a known name or not, is harmless.
        reg.deregister(&named("svc", "1", "zz", "10.0.1.9:1"))
            .await
            .unwrap();
        reg.deregister(&named("nobody", "1", "a", "10.0.1.1:1"))
            .await
            .unwrap();
        assert_eq!(reg.get_service("svc").await.unwrap()[0].nodes.len(), 2);

        // Listing still sees every service; a name whose last node left is gone from it, and
        // from the registry's index.
        let names = |services: Vec<Service>| {
            services
                .into_iter()
                .map(|s| s.name)
                .collect::<std::collections::HashSet<_>>()
        };
        assert_eq!(names(reg.list_services().await.unwrap()).len(), 3751 + 1);
        for (id, version) in [("a", "1"), ("c", "1"), ("d", "2")] {
            reg.deregister(&named("svc", version, id, ""))
                .await
                .unwrap();
        }
        assert!(reg.get_service("svc").await.unwrap().is_empty());
        let listed = names(reg.list_services().await.unwrap());
        assert!(!listed.contains("svc") && listed.len() == 3751);
        let table = reg.inner.nodes.lock().unwrap();
        assert!(!table.services.contains_key("svc"));
        assert_eq!(table.services.len(), 3751);
    }
}
