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

type Nodes = HashMap<(String, String), (Service, Instant)>;

struct Inner {
    /// `(service name, node id)` → the one-node record and when it expires.
    nodes: Mutex<Nodes>,
    events: broadcast::Sender<Event>,
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
                nodes: Mutex::new(HashMap::new()),
                events: broadcast::channel(1024).0,
            }),
        }
    }

    /// The process-wide registry that `--registry memory` selects, so every service and client
    /// configured from flags in one process sees the others.
    pub fn global() -> MemoryRegistry {
        static GLOBAL: OnceLock<MemoryRegistry> = OnceLock::new();
        GLOBAL.get_or_init(MemoryRegistry::new).clone()
    }

    /// Live records, only those of `name` when given (filtered before anything is copied).
    fn live(&self, name: Option<&str>) -> Vec<Service> {
        let nodes = sweep(&self.inner);
        merge(
            nodes
                .iter()
                .filter(|((service, _), _)| name.is_none_or(|n| n == service))
                .map(|(_, (s, _))| s.clone()),
        )
    }
}

/// Drops the nodes whose TTL has passed, telling watchers (a `Delete` each); returns the map,
/// still locked.
fn sweep(inner: &Inner) -> std::sync::MutexGuard<'_, Nodes> {
    let now = Instant::now();
    let mut nodes = inner.nodes.lock().unwrap_or_else(|p| p.into_inner());
    let expired: Vec<_> = nodes
        .iter()
        .filter(|(_, (_, until))| *until <= now)
        .map(|(k, _)| k.clone())
        .collect();
    for key in expired {
        if let Some((service, _)) = nodes.remove(&key) {
            let _ = inner.events.send(Event {
                action: Action::Delete,
                service,
            });
        }
    }
    nodes
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
            let mut nodes = self.inner.nodes.lock().unwrap_or_else(|p| p.into_inner());
            for record in split(service) {
                let key = (record.name.clone(), record.nodes[0].id.clone());
                let action = match nodes.get(&key) {
                    None => Some(Action::Create),
                    Some((old, _)) if *old != record => Some(Action::Update),
                    Some(_) => None,
                };
                nodes.insert(key, (record.clone(), until));
                if let Some(action) = action {
                    let _ = self.inner.events.send(Event {
                        action,
                        service: record,
                    });
                }
            }
            Ok(())
        })
    }

    fn deregister<'a>(&'a self, service: &'a Service) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            let mut nodes = self.inner.nodes.lock().unwrap_or_else(|p| p.into_inner());
            for node in &service.nodes {
                if let Some((record, _)) = nodes.remove(&(service.name.clone(), node.id.clone())) {
                    let _ = self.inner.events.send(Event {
                        action: Action::Delete,
                        service: record,
                    });
                }
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
        let watch = Expiring {
            events: tokio_stream::wrappers::BroadcastStream::new(self.inner.events.subscribe()),
            filter: service.map(str::to_string),
            registry: Arc::downgrade(&self.inner),
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
        };
        Box::pin(async move { Ok(Box::pin(watch) as Watcher) })
    }
}

/// A watch on the memory registry: its events, and a `Delete` for each node as its TTL
/// passes, not only once someone next reads the registry (a watcher such as a client's node
/// cache would otherwise keep a node that stopped refreshing until it reads again).
struct Expiring {
    events: tokio_stream::wrappers::BroadcastStream<Event>,
    /// Only this service's events, when set.
    filter: Option<String>,
    /// Not kept alive by its watchers: the stream ends when the registry goes.
    registry: Weak<Inner>,
    /// Armed for the first node's expiry while no event is pending.
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
                        return Poll::Ready(Some(event));
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
            let Some(inner) = this.registry.upgrade() else {
                return Poll::Pending;
            };
            let first = inner
                .nodes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .map(|(_, until)| *until)
                .min();
            let Some(first) = first else {
                return Poll::Pending;
            };
            // The registry's clock decides; the timer only wakes this watch to look again.
            let left = first.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // Its `Delete` (and those of any other expired node) go to every watcher,
                // this one included: the loop picks them up.
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
}
