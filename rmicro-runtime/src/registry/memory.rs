//! The in-process registry: the default, shared by every service and client of one process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use super::{merge, Action, BoxFuture, Event, Registry, RegistryError, Service, Watcher};

/// A registry in this process's memory. Nodes expire when not refreshed within their TTL.
#[derive(Clone)]
pub struct MemoryRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    /// `(service name, node id)` → the one-node record and when it expires.
    nodes: Mutex<HashMap<(String, String), (Service, Instant)>>,
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
        let now = Instant::now();
        let mut nodes = self.inner.nodes.lock().unwrap_or_else(|p| p.into_inner());
        let expired: Vec<_> = nodes
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            if let Some((service, _)) = nodes.remove(&key) {
                let _ = self.inner.events.send(Event {
                    action: Action::Delete,
                    service,
                });
            }
        }
        merge(
            nodes
                .iter()
                .filter(|((service, _), _)| name.is_none_or(|n| n == service))
                .map(|(_, (s, _))| s.clone()),
        )
    }
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
        let filter = service.map(str::to_string);
        let rx = self.inner.events.subscribe();
        Box::pin(async move { Ok(watch_stream(rx, filter)) })
    }
}

/// Turns a broadcast receiver into a watcher stream, optionally for one service.
pub(crate) fn watch_stream(rx: broadcast::Receiver<Event>, filter: Option<String>) -> Watcher {
    use tokio_stream::wrappers::BroadcastStream;
    use tokio_stream::StreamExt;
    Box::pin(BroadcastStream::new(rx).filter_map(move |e| {
        let e = e.ok()?;
        match &filter {
            Some(name) if *name != e.service.name => None,
            _ => Some(e),
        }
    }))
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
}
