//! Service discovery: where each service's nodes are.
//!
//! The data model and its JSON are go-micro v2's (`name, version, metadata, endpoints, nodes`), so
//! an etcd registry shared with Go micro services and tools (etcdkeeper, `micro list services`)
//! shows the same services from both sides.
//!
//! - [`MemoryRegistry`]: one process (the default, and tests).
//! - `EtcdRegistry` (feature `etcd`): go-micro v2's etcd layout, leases kept alive by one
//!   long-lived stream per node, a watch-fed cache that keeps answering while etcd is down.
//! - [`NodeCache`]: per-service node snapshots over any registry, for the per-call lookups of
//!   the client and the gateway.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod cache;
mod memory;
pub use cache::{NodeCache, DEFAULT_CACHE_TTL};
pub use memory::MemoryRegistry;

#[cfg(feature = "etcd")]
mod etcd;
#[cfg(feature = "etcd")]
pub use etcd::{node_key, EtcdOptions, EtcdRegistry, EtcdTls, PREFIX as ETCD_PREFIX};

/// A service as the registry stores it: one version of it and some of its nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Service {
    /// The registry name, e.g. `go.micro.srv.user`.
    pub name: String,
    /// The version, e.g. `latest`.
    #[serde(default)]
    pub version: String,
    /// Free-form metadata.
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: HashMap<String, String>,
    /// The RPC endpoints.
    #[serde(default, deserialize_with = "null_as_default")]
    pub endpoints: Vec<Endpoint>,
    /// The nodes serving it.
    #[serde(default, deserialize_with = "null_as_default")]
    pub nodes: Vec<Node>,
}

/// One running instance of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Node {
    /// Unique id, e.g. `go.micro.srv.user-<uuid>`.
    pub id: String,
    /// `host:port` it serves on.
    pub address: String,
    /// Free-form metadata (`protocol`, `server`, `transport`, `registry`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: HashMap<String, String>,
}

/// One RPC endpoint, as go-micro describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Endpoint {
    /// `Service.Method`.
    pub name: String,
    /// The request type.
    #[serde(default)]
    pub request: Option<Value>,
    /// The response type.
    #[serde(default)]
    pub response: Option<Value>,
    /// `stream`, `endpoint`, `method`, `path`, `body`, `handler`, `grpc_path`, and `http` (a JSON
    /// list of every `google.api.http` binding).
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: HashMap<String, String>,
}

/// A type description, go-micro's `registry.Value`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Value {
    /// The type's name.
    pub name: String,
    /// The type (go-micro writes the Go type name; rmicro the protobuf message name).
    #[serde(rename = "type")]
    pub kind: String,
    /// Nested fields (rmicro leaves this empty).
    #[serde(default, deserialize_with = "null_as_default")]
    pub values: Vec<Value>,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl Endpoint {
    /// go-micro's endpoint for one generated [`crate::Endpoint`].
    pub fn from_generated(e: &crate::Endpoint) -> Endpoint {
        let value = |full: &str| {
            let short = full.rsplit('.').next().unwrap_or(full).to_string();
            Value {
                name: short,
                kind: full.to_string(),
                values: Vec::new(),
            }
        };
        let mut metadata = HashMap::new();
        metadata.insert("endpoint".to_string(), e.name.to_string());
        metadata.insert("grpc_path".to_string(), e.path.to_string());
        if e.is_streaming() {
            metadata.insert("stream".to_string(), "true".to_string());
        }
        if let Some(rule) = e.http.first() {
            // go-micro's keys describe the primary binding; `http` lists every binding.
            metadata.insert("handler".to_string(), "rpc".to_string());
            metadata.insert("method".to_string(), rule.method.to_string());
            metadata.insert("path".to_string(), rule.path.to_string());
            metadata.insert("body".to_string(), rule.body.to_string());
            let all: Vec<serde_json::Value> = e
                .http
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "method": r.method,
                        "path": r.path,
                        "body": r.body,
                        "response_body": r.response_body,
                    })
                })
                .collect();
            metadata.insert("http".to_string(), serde_json::Value::from(all).to_string());
        }
        Endpoint {
            name: e.name.to_string(),
            request: Some(value(e.request)),
            response: Some(value(e.response)),
            metadata,
        }
    }
}

/// What happened to a service in a [`Registry::watch`] stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// A node appeared.
    Create,
    /// A node's record changed.
    Update,
    /// A node left.
    Delete,
}

/// One change seen by a watcher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// What happened.
    pub action: Action,
    /// The service, with the one node concerned.
    pub service: Service,
}

/// Why a registry operation failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistryError {
    /// The registry cannot be reached (etcd down, dial timeout).
    #[error("registry unreachable: {0}")]
    Unreachable(String),
    /// The registry refused the credentials, or needs some.
    #[error("registry authentication failed: {0}")]
    Auth(String),
    /// No such service.
    #[error("service `{0}` not found in the registry")]
    NotFound(String),
    /// A record in the registry is not go-micro JSON.
    #[error("registry record `{key}` is not a go-micro service: {message}")]
    BadRecord {
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// Anything else the registry said.
    #[error("registry error: {0}")]
    Other(String),
}

/// A boxed future, for object-safe async trait methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A stream of registry events.
pub type Watcher = Pin<Box<dyn futures_core::Stream<Item = Event> + Send + 'static>>;

/// A service registry.
///
/// ```no_run
/// # async fn run() -> Result<(), rmicro_runtime::registry::RegistryError> {
/// use rmicro_runtime::registry::{MemoryRegistry, Registry};
///
/// let registry = MemoryRegistry::global(); // what services in this process use by default
/// for service in registry.list_services().await? {
///     println!("{} {}: {} node(s)", service.name, service.version, service.nodes.len());
/// }
/// # Ok(()) }
/// ```
pub trait Registry: Send + Sync + 'static {
    /// A short name (`memory`, `etcd`), also written into node metadata.
    fn name(&self) -> &'static str;

    /// Registers (or refreshes) every node of `service`, to expire `ttl` after the last refresh
    /// unless refreshed again.
    fn register<'a>(
        &'a self,
        service: &'a Service,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), RegistryError>>;

    /// Removes every node of `service`, including what a [`Registry::register`] of them that
    /// was cut short (its future dropped) may still write: its requests can reach the registry
    /// after the deregistration's.
    fn deregister<'a>(&'a self, service: &'a Service) -> BoxFuture<'a, Result<(), RegistryError>>;

    /// The versions of a service with their live nodes (empty when unknown).
    fn get_service<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Service>, RegistryError>>;

    /// Every service with its live nodes.
    fn list_services(&self) -> BoxFuture<'_, Result<Vec<Service>, RegistryError>>;

    /// Changes from now on, for one service or (`None`) all. The stream ends when the registry
    /// goes away, or when the watcher fell so far behind that changes were lost: read the
    /// registry again then, and start a new watch.
    fn watch<'a>(
        &'a self,
        service: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Watcher, RegistryError>>;

    /// Whether the registry answers right now (for health checks).
    fn ping(&self) -> BoxFuture<'_, Result<(), RegistryError>> {
        Box::pin(async move { self.list_services().await.map(|_| ()) })
    }

    /// Changes each time a registration the registry keeps alive by itself (an etcd lease) is
    /// lost, so that a [`Registration`](crate::service::Registration) makes it again at once
    /// instead of on its next interval (etcd restarted with its data wiped: every node was
    /// gone until then). `None`, the default, for registries whose registrations only expire.
    fn registrations_lost(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}

/// Groups one-node records into services, one per `(name, version)`, the same whatever order
/// the records come in (the registries keep them in hash maps): in go-micro's order, that of
/// their etcd keys (`<service>/<node id>`), so the nodes come sorted by id, a node id two
/// records share keeps the first record's node, and a service's endpoints are its first
/// record's that lists any (records of one version may differ mid-deploy).
pub(crate) fn merge(records: impl IntoIterator<Item = Service>) -> Vec<Service> {
    let mut records: Vec<Service> = records.into_iter().collect();
    fn first(s: &Service) -> Option<(&str, &str)> {
        s.nodes.first().map(|n| (n.id.as_str(), n.address.as_str()))
    }
    records.sort_by(|a, b| {
        (&a.name, &a.version)
            .cmp(&(&b.name, &b.version))
            .then_with(|| first(a).cmp(&first(b)))
    });
    let mut out: Vec<Service> = Vec::new();
    // Whether the last group's node ids are strictly in order, as they are when its records
    // have one node each (what the registries keep): a repeated id is then found by bisection.
    let mut in_order = true;
    for record in records {
        // Sorted: a record's group, if there is one yet, is the last one made (a search of
        // every group made would cost quadratic time for a listing of thousands of services).
        match out
            .last_mut()
            .filter(|s| s.name == record.name && s.version == record.version)
        {
            Some(existing) => {
                for node in record.nodes {
                    let nodes = &existing.nodes;
                    let seen = if in_order {
                        match nodes.binary_search_by(|n| n.id.as_str().cmp(&node.id)) {
                            Ok(_) => true,
                            Err(at) => {
                                in_order = at == nodes.len();
                                false
                            }
                        }
                    } else {
                        nodes.iter().any(|n| n.id == node.id)
                    };
                    if !seen {
                        existing.nodes.push(node);
                    }
                }
                if existing.endpoints.is_empty() {
                    existing.endpoints = record.endpoints;
                }
            }
            None => {
                in_order = record.nodes.windows(2).all(|w| w[0].id < w[1].id);
                out.push(record);
            }
        }
    }
    // In (name, version) order already: the records were sorted so.
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_go_micro_json_with_nulls() {
        let json = r#"{"name":"go.micro.srv.user","version":"latest","metadata":null,
            "endpoints":null,"nodes":[{"id":"go.micro.srv.user-1","address":"10.0.0.1:9090","metadata":null}]}"#;
        let s: Service = serde_json::from_str(json).unwrap();
        assert_eq!(s.nodes[0].address, "10.0.0.1:9090");
        assert!(s.metadata.is_empty() && s.endpoints.is_empty());
    }

    #[test]
    fn merge_groups_nodes_by_name_and_version() {
        let rec = |id: &str, v: &str| Service {
            name: "s".into(),
            version: v.into(),
            nodes: vec![Node {
                id: id.into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let merged = merge([rec("a", "1"), rec("b", "1"), rec("c", "2")]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].nodes.len(), 2);
    }

    /// The registries hold records in hash maps: whatever order they come in, a service merges
    /// to the same nodes in the same order, with the same endpoints (its first record's by node
    /// id, as go-micro's etcd key order gives).
    #[test]
    fn merge_does_not_depend_on_the_order_of_the_records() {
        let rec = |id: &str, address: &str, endpoint: Option<&str>| Service {
            name: "s".into(),
            version: "latest".into(),
            nodes: vec![Node {
                id: id.into(),
                address: address.into(),
                ..Default::default()
            }],
            endpoints: endpoint
                .map(|name| {
                    vec![Endpoint {
                        name: name.into(),
                        ..Default::default()
                    }]
                })
                .unwrap_or_default(),
            ..Default::default()
        };
        let records = [
            rec("c", "10.0.0.3:1", Some("New.Call")),
            rec("a", "10.0.0.1:1", None),
            rec("b", "10.0.0.2:1", Some("Old.Call")),
            // A stale copy of node `b` under another key, at another address.
            rec("b", "10.0.0.9:1", Some("Stale.Call")),
        ];
        let mut orders = vec![records.to_vec()];
        let mut reversed = records.to_vec();
        reversed.reverse();
        orders.push(reversed);
        orders.push(vec![
            records[3].clone(),
            records[0].clone(),
            records[2].clone(),
            records[1].clone(),
        ]);
        for order in orders {
            let merged = merge(order);
            assert_eq!(merged.len(), 1);
            let nodes: Vec<(&str, &str)> = merged[0]
                .nodes
                .iter()
                .map(|n| (n.id.as_str(), n.address.as_str()))
                .collect();
            assert_eq!(
                nodes,
                [
                    ("a", "10.0.0.1:1"),
                    ("b", "10.0.0.2:1"),
                    ("c", "10.0.0.3:1")
                ]
            );
            assert_eq!(merged[0].endpoints[0].name, "Old.Call");
        }
    }

    /// Many records in many groups, some of several nodes in any order and with repeated ids:
    /// the same services as grouping by a search of every group and node made (the rule
    /// `merge` keeps, found faster).
    #[test]
    fn merge_gives_what_a_search_of_every_group_gives() {
        fn by_search(records: Vec<Service>) -> Vec<Service> {
            let mut records = records;
            fn first(s: &Service) -> Option<(&str, &str)> {
                s.nodes.first().map(|n| (n.id.as_str(), n.address.as_str()))
            }
            records.sort_by(|a, b| {
                (&a.name, &a.version)
                    .cmp(&(&b.name, &b.version))
                    .then_with(|| first(a).cmp(&first(b)))
            });
            let mut out: Vec<Service> = Vec::new();
            for record in records {
                match out
                    .iter_mut()
                    .find(|s| s.name == record.name && s.version == record.version)
                {
                    Some(existing) => {
                        for node in record.nodes {
                            if !existing.nodes.iter().any(|n| n.id == node.id) {
                                existing.nodes.push(node);
                            }
                        }
                        if existing.endpoints.is_empty() {
                            existing.endpoints = record.endpoints;
                        }
                    }
                    None => out.push(record),
                }
            }
            out
        }
        // A fixed pseudo-random sequence (a linear congruential generator): the same every run.
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |n: u64| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) % n
        };
        for _ in 0..50 {
            let records: Vec<Service> = (0..next(120))
                .map(|_| Service {
                    name: format!("s{}", next(4)),
                    version: format!("v{}", next(2)),
                    nodes: (0..[1, 1, 1, 0, 2, 3][next(6) as usize])
                        .map(|_| Node {
                            id: format!("n{}", next(9)),
                            address: format!("10.0.0.{}:1", next(3)),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect();
            assert_eq!(merge(records.clone()), by_search(records));
        }
    }
}
