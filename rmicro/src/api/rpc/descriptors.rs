//! The message types of the methods called, read from the nodes by server reflection and
//! cached, and the gRPC services of go-micro handlers registered without them.

use std::time::{Duration, Instant};

use http::StatusCode;
use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor, Value};
use rmicro_runtime::registry::Node;

use super::channels::MAX_CHANNELS;
use super::{error, reflect, NodeFail, RpcHandler};

/// How long descriptors are kept before a request that looks stale may have them read again.
const REREAD_AFTER: Duration = Duration::from_secs(1);

/// Descriptors read from a node by server reflection.
pub(super) struct Described {
    pool: DescriptorPool,
    /// The registry service of the node they were read from.
    pub(super) service: String,
    /// The id of that node: they stand while it is registered.
    node: String,
    /// When they were read.
    read: Instant,
}

/// The key of the descriptors of `grpc_service` read for registry service `service`.
fn pool_key(service: &str, grpc_service: &str) -> String {
    format!("{service}/{grpc_service}")
}

impl RpcHandler {
    /// The method's descriptor and whether it was read just now. Descriptors are learned from
    /// a node by server reflection and cached per gRPC service while the node they came from is
    /// among `nodes` (a redeployed node has a new id). They are read again from `node` when the
    /// cache lacks the method or `reread` says they look stale, but not twice within
    /// [`REREAD_AFTER`], so bad requests cannot make the gateway hammer a service.
    pub(super) async fn method(
        &self,
        node: &Node,
        nodes: &[Node],
        service: &str,
        grpc_path: &str,
        mut reread: bool,
    ) -> Result<(MethodDescriptor, bool), NodeFail> {
        let (grpc_service, method) = grpc_path
            .trim_start_matches('/')
            .split_once('/')
            .ok_or_else(|| {
                error::response(
                    StatusCode::BAD_GATEWAY,
                    format!("bad gRPC path `{grpc_path}`"),
                )
            })?;
        loop {
            let (pool, fresh) = match self.cached(service, grpc_service, nodes, reread) {
                Some(pool) => (pool, false),
                // Requests that find them missing at once for the same node share one read
                // (and its failure).
                None => {
                    // A task of its own (see `flight`): it needs its own copies.
                    let read = || {
                        let this = self.clone();
                        let (service, grpc_service) =
                            (service.to_string(), grpc_service.to_string());
                        let (node, nodes) = (node.clone(), nodes.to_vec());
                        async move {
                            // Read by another request just now.
                            if let Some(pool) = this.cached(&service, &grpc_service, &nodes, true) {
                                return Ok(pool);
                            }
                            let connection = this.channel(&node.address)?;
                            let pool = this
                                .inner
                                .reflector
                                .file_containing(&connection, &node.address, &grpc_service)
                                .await?;
                            let key = pool_key(&service, &grpc_service);
                            let described = Described {
                                pool: pool.clone(),
                                service,
                                node: node.id,
                                read: Instant::now(),
                            };
                            this.inner
                                .pools
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert(key, described);
                            Ok(pool)
                        }
                    };
                    // Per node: what one node answers (or how it fails) says nothing of
                    // another's, and a failure marks the node it came from as unreachable.
                    let key = format!("{}/{grpc_service}", node.address);
                    let pool = self.inner.reads.share(&key, read).await?;
                    (pool, true)
                }
            };
            let found = pool
                .get_service_by_name(grpc_service)
                .and_then(|s| s.methods().find(|m| m.name() == method));
            match found {
                Some(found) => return Ok((found, fresh)),
                // A method added since the descriptors were read: read them again, once.
                None if !fresh && !reread => reread = true,
                None => {
                    return Err(error::response(
                        StatusCode::BAD_GATEWAY,
                        format!(
                            "the service at {} does not describe `{grpc_path}`",
                            node.address
                        ),
                    )
                    .into())
                }
            }
        }
    }

    /// The cached descriptors of `grpc_service` for registry service `service`, while the node
    /// they came from is among `nodes`; with `reread` (they look stale), only those read within
    /// [`REREAD_AFTER`].
    fn cached(
        &self,
        service: &str,
        grpc_service: &str,
        nodes: &[Node],
        reread: bool,
    ) -> Option<DescriptorPool> {
        self.inner
            .pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&pool_key(service, grpc_service))
            .filter(|d| nodes.iter().any(|n| n.id == d.node))
            .filter(|d| !reread || d.read.elapsed() < REREAD_AFTER)
            .map(|d| d.pool.clone())
    }

    /// Whether the descriptors cached for `grpc_path`'s gRPC service of registry service
    /// `service` were read from a node other than `node`.
    pub(super) fn read_elsewhere(&self, service: &str, grpc_path: &str, node: &Node) -> bool {
        let grpc_service = grpc_path
            .trim_start_matches('/')
            .split_once('/')
            .map_or("", |(s, _)| s);
        self.inner
            .pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&pool_key(service, grpc_service))
            .is_some_and(|d| d.node != node.id)
    }

    /// `method` from descriptors that also define message `name` (an `Any`'s type that the
    /// files read for its service do not import), read from `node` of registry service
    /// `service`; they replace the cached ones if those came from the same node. `None` when the
    /// node does not know `name`. Given up at `until` (504): a read may otherwise take the
    /// reflection timeout, and a request needs up to `MAX_ANY_LOOKUPS` of them.
    pub(super) async fn with_message(
        &self,
        until: tokio::time::Instant,
        service: &str,
        node: &Node,
        grpc_path: &str,
        method: &MethodDescriptor,
        name: &str,
    ) -> Result<Option<MethodDescriptor>, NodeFail> {
        let connection = self.channel(&node.address)?;
        let read = self.inner.reflector.with_symbol(
            &connection,
            &node.address,
            method.parent_pool(),
            name,
        );
        let Some(pool) = tokio::time::timeout_at(until, read).await.map_err(|_| {
            error::response(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "the service at {} did not describe `{name}` (for an `Any` field) within the \
                     backend timeout ({:?})",
                    node.address, self.inner.config.backend_timeout
                ),
            )
        })??
        else {
            return Ok(None);
        };
        let grpc_service = method.parent_service().full_name().to_string();
        let found = pool
            .get_service_by_name(&grpc_service)
            .and_then(|s| s.methods().find(|m| m.name() == method.name()))
            .ok_or_else(|| {
                error::response(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "the service at {} no longer describes `{grpc_path}`",
                        node.address
                    ),
                )
            })?;
        if let Some(cached) = self
            .inner
            .pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&pool_key(service, &grpc_service))
            .filter(|d| d.node == node.id)
        {
            cached.pool = pool;
        }
        Ok(Some(found))
    }

    /// The gRPC path of a go-micro endpoint (`Greeter.Hello`) that a service registered without
    /// one (go-micro's own services, and others registered as they are): its handler's gRPC
    /// service is found among those `node` serves, and kept while that node is among `nodes`.
    pub(super) async fn grpc_path(
        &self,
        node: &Node,
        nodes: &[Node],
        service: &str,
        endpoint: &str,
    ) -> Result<String, NodeFail> {
        let Some((handler, method)) = endpoint.split_once('.') else {
            return Err(error::response(
                StatusCode::BAD_GATEWAY,
                format!("endpoint `{endpoint}` of `{service}` is not of go-micro's `Service.Method` form"),
            )
            .into());
        };
        let key = format!("{service}/{handler}");
        let grpc_service = match self.known_grpc_service(&key, nodes) {
            Some(known) => known,
            None => {
                // A task of its own (see `flight`): it needs its own copies.
                let find = || {
                    let this = self.clone();
                    let (service, handler, key) =
                        (service.to_string(), handler.to_string(), key.clone());
                    let (node, nodes) = (node.clone(), nodes.to_vec());
                    async move {
                        if let Some(known) = this.known_grpc_service(&key, &nodes) {
                            return Ok(known);
                        }
                        let connection = this.channel(&node.address)?;
                        let served = this
                            .inner
                            .reflector
                            .list_services(&connection, &node.address)
                            .await?;
                        let found = reflect::grpc_service_among(
                            &served,
                            &service,
                            &handler,
                            &node.address,
                        )?;
                        let mut known = this
                            .inner
                            .grpc_services
                            .lock()
                            .unwrap_or_else(|p| p.into_inner());
                        if known.len() >= MAX_CHANNELS {
                            known.retain(|_, (id, _)| nodes.iter().any(|n| &n.id == id));
                        }
                        known.insert(key, (node.id, found.clone()));
                        Ok(found)
                    }
                };
                // Per node, as descriptor reads.
                let flight = format!("{}/{key}", node.address);
                self.inner.lookups.share(&flight, find).await?
            }
        };
        Ok(format!("/{grpc_service}/{method}"))
    }

    /// The gRPC service found for `service/Handler` `key`, while the node it was found at is
    /// among `nodes`.
    fn known_grpc_service(&self, key: &str, nodes: &[Node]) -> Option<String> {
        self.inner
            .grpc_services
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .filter(|(id, _)| nodes.iter().any(|n| &n.id == id))
            .map(|(_, grpc_service)| grpc_service.clone())
    }
}

/// Whether `message`, or a message it holds (in a field, a list, a map's value; not inside an
/// `Any`'s bytes), has fields its descriptor lacks: a node of a newer version may have written
/// them.
pub(super) fn has_unknown_fields(message: &DynamicMessage) -> bool {
    if message.unknown_fields().next().is_some() {
        return true;
    }
    let holds = |value: &Value| value.as_message().is_some_and(has_unknown_fields);
    message.fields().any(|(_, value)| match value {
        Value::List(items) => items.iter().any(holds),
        Value::Map(entries) => entries.values().any(holds),
        value => holds(value),
    })
}
