//! The `rpc` handler: JSON over HTTP in, gRPC to the service out.
//!
//! - Requests matching a `google.api.http` binding that a service's generated code registered
//!   (published in the registry's endpoint metadata) are transcoded by the binding: path
//!   variables and query parameters set request fields, `body` says where the JSON body goes,
//!   `response_body` which response field is returned.
//! - Other requests use go-micro's form: `/user/call` → service `<namespace>.user`, endpoint
//!   `User.Call`; `/user/user/call` → endpoint `User.Call`; `/a/b/user/call` → service
//!   `<namespace>.a.b`; `/user/get-item` → `User.GetItem` (`route::go_micro_route`); the JSON
//!   body (or, without one, the query parameters; or an HTML form's fields) is the request
//!   message. An endpoint registered without its gRPC path
//!   (go-micro's services, whose proto package need not be their registry name) is found among
//!   the gRPC services the node lists by server reflection: `<service>.User`, else the one
//!   service named `User`.
//!
//! A node that could not be reached is avoided for a few seconds, as by the http handler, and
//! the call (whose message the gateway holds) is tried once more on another node. Nodes
//! registered at an address no connection can be opened to are left out first
//! (`api/address.rs`), so they never use up that one retry.
//!
//! Message types come from the service itself, through gRPC server reflection (which rmicro
//! servers answer from their generated descriptors; `grpc.reflection.v1`, or `v1alpha` for a
//! node that serves only that, as grpcio-reflection and older grpc-go do), and are cached per
//! service and gRPC service while the node they came from is registered; a request naming a
//! field or method they lack has them read again once, and so does an answer holding fields
//! they lack from another node (a newer version beside the one they were read from), so a
//! redeployed service's additions are seen without restarting the gateway. Concurrent requests that find them missing for the same node share
//! one read from it, and its failure; a request waits for it no longer than its call's limit
//! (504), and the read goes on for those that follow. A node without server reflection answers 501 saying so.
//! Errors come back as go-micro JSON with the mapped HTTP status (and the details a status
//! carries in a `details` array, `call.rs`); streaming methods answer 501. Metadata passes both
//! ways as grpc-gateway names it (`metadata.rs`).
//!
//! JSON is proto3's canonical mapping as go-micro's grpc server codec (jsonpb), protojson and
//! Python's json_format write it: lowerCamelCase (`json_name`) field names, default values of
//! fields without presence left out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum_core::body::Body;
use http::{header, Request, Response, StatusCode};
use http_body_util::BodyExt;
use prost_reflect::DescriptorPool;
use rmicro_runtime::registry::{Node, NodeCache, DEFAULT_CACHE_TTL};
use rmicro_runtime::transport::Connection;

use super::proxy::{Quarantine, Seen};
use super::{address, error, HandlerConfig};
use descriptors::Described;
use route::Binding;

mod call;
mod channels;
mod descriptors;
mod flight;
mod metadata;
mod negative_zero;
mod proto_json;
mod reflect;
mod request;
mod route;
mod status;
mod template;

/// The rpc handler, as a tower service.
#[derive(Clone)]
pub struct RpcHandler {
    inner: Arc<Inner>,
}

struct Inner {
    config: HandlerConfig,
    routes: Mutex<Option<(Instant, Arc<Vec<Binding>>)>>,
    /// Descriptors per registry service and gRPC service ([`pool_key`]): services built from
    /// one proto serve one gRPC service, each from its own nodes.
    ///
    /// [`pool_key`]: descriptors::pool_key
    pools: Mutex<HashMap<String, Described>>,
    /// The gRPC services of go-micro handlers whose endpoints were registered without a gRPC
    /// path (by `service/Handler`), with the id of the node they were found at.
    grpc_services: Mutex<HashMap<String, (String, String)>>,
    /// Each service's nodes, read from the registry once and kept fresh by its watch.
    nodes: NodeCache,
    /// Server reflection, and the version each node answers.
    reflector: reflect::Reflector,
    /// Descriptor reads in progress, by node address and gRPC service.
    reads: flight::Flights<DescriptorPool, reflect::ReadFail>,
    /// Lookups of go-micro handlers' gRPC services in progress, by node address and
    /// `service/Handler`.
    lookups: flight::Flights<String, reflect::ReadFail>,
    /// One HTTP/2 connection per node.
    channels: Mutex<HashMap<String, Connection>>,
    /// Nodes that could not be reached, avoided for a while.
    quarantine: Quarantine,
    /// Services that had nodes once (go-micro form).
    seen: Seen,
}

impl std::fmt::Debug for RpcHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcHandler")
            .field("namespace", &self.inner.config.namespace)
            .finish_non_exhaustive()
    }
}

/// An HTTP answer for a failed step.
type Fail = Response<Body>;

impl RpcHandler {
    /// A handler with `config`.
    pub fn new(config: HandlerConfig) -> RpcHandler {
        let nodes = NodeCache::new(Arc::clone(&config.registry), DEFAULT_CACHE_TTL);
        RpcHandler {
            inner: Arc::new(Inner {
                nodes,
                config,
                routes: Mutex::new(None),
                pools: Mutex::new(HashMap::new()),
                grpc_services: Mutex::new(HashMap::new()),
                channels: Mutex::new(HashMap::new()),
                reflector: reflect::Reflector::default(),
                reads: flight::Flights::default(),
                lookups: flight::Flights::default(),
                quarantine: Quarantine::default(),
                seen: Seen::default(),
            }),
        }
    }

    pub(crate) async fn handle(self, req: Request<Body>) -> Response<Body> {
        match self.try_handle(req).await {
            Ok(resp) | Err(resp) => resp,
        }
    }

    async fn try_handle(&self, req: Request<Body>) -> Result<Response<Body>, Fail> {
        let config = &self.inner.config;
        let (mut parts, body) = req.into_parts();
        // Headers become the call's metadata: the node hears about the client as behind the
        // http handler, and never a client's own claim to have come over HTTPS or from
        // elsewhere (unless told to trust such claims).
        let peer = parts
            .extensions
            .get::<std::net::SocketAddr>()
            .and_then(|addr| super::proxy::Peer::new(*addr));
        super::proxy::set_forwarding(
            &mut parts.headers,
            peer.as_ref(),
            config.trust_forwarded,
            config.https,
        );
        // hyper undoes only the chunking: a body in another coding would be read as JSON.
        if !http_body::Body::is_end_stream(&body) {
            if super::proxy::other_transfer_coding(&parts.headers) {
                return Err(error::response(
                    StatusCode::NOT_IMPLEMENTED,
                    "the gateway reads request bodies only with the `chunked` transfer coding; \
                     send the JSON without other transfer codings",
                ));
            }
            let encoded = super::proxy::codings(&parts.headers, &header::CONTENT_ENCODING)
                .any(|c| !c.eq_ignore_ascii_case(b"identity"));
            if encoded {
                return Err(error::response(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "the rpc handler reads JSON request bodies without `Content-Encoding`; \
                     send the body uncompressed",
                ));
            }
        }
        let target = self.resolve(&parts.method, parts.uri.path()).await?;
        // Resolved only when the registry knows it: named in the metrics, if they are kept.
        super::plugins::metrics::note_service(&parts.extensions, &target.service);
        let nodes = self
            .inner
            .nodes
            .nodes(&target.service)
            .await
            .map_err(|err| {
                error::response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot look up `{}`: {err}", target.service),
                )
            })?;
        if nodes.is_empty() {
            // Its descriptors go with its nodes.
            self.inner
                .pools
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|_, d| d.service != target.service);
            return Err(error::response(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("service `{}` has no nodes", target.service),
            ));
        }
        // go-micro's default server speaks its own protocol (`mucp`), not gRPC: such nodes
        // cannot be called here, the others of the service can.
        let nodes: Arc<[Node]> = if nodes.iter().all(speaks_grpc) {
            nodes
        } else {
            let grpc: Arc<[Node]> = nodes.iter().filter(|n| speaks_grpc(n)).cloned().collect();
            if grpc.is_empty() {
                let protocol = nodes[0]
                    .metadata
                    .get("protocol")
                    .or_else(|| nodes[0].metadata.get("server"))
                    .map_or("", String::as_str);
                return Err(error::response(
                    StatusCode::NOT_IMPLEMENTED,
                    format!(
                        "the nodes of `{}` speak `{protocol}`, not gRPC; the rpc handler calls gRPC \
                         servers only: run the service with go-micro's grpc server \
                         (`server.grpc`), or front it with `--handler http` if it serves HTTP",
                        target.service
                    ),
                ));
            }
            grpc
        };
        // Records no connection can be opened to (hand-written, another tool's) are left out.
        let nodes = address::usable(&target.service, nodes)
            .map_err(|detail| error::response(StatusCode::BAD_GATEWAY, detail))?;
        let body = http_body_util::Limited::new(body, config.body_limit)
            .collect()
            .await
            .map_err(|err| {
                if err.is::<http_body_util::LengthLimitError>() {
                    error::response(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("request body over the {}-byte limit", config.body_limit),
                    )
                } else {
                    error::response(
                        StatusCode::BAD_REQUEST,
                        format!("could not read the request body: {err}"),
                    )
                }
            })?
            .to_bytes();

        // As the http handler: a node that could not be reached is avoided for a while, and the
        // call (whose message is in hand) is tried once more on another node.
        let selector = &config.selector;
        let mut tried: Vec<String> = Vec::new();
        loop {
            let address = self
                .inner
                .quarantine
                .pick(&nodes, &tried, |c| selector.select(&target.service, c))
                .to_string();
            match self
                .call_node(&address, &nodes, &target, &parts, &body)
                .await
            {
                Ok(resp) => return Ok(resp),
                Err(NodeFail {
                    response,
                    unreached: true,
                }) => {
                    self.inner.quarantine.mark(&address);
                    self.inner.nodes.invalidate(&target.service);
                    tracing::warn!(service = %target.service, %address, "node unreachable");
                    if tried.is_empty() && nodes.len() > 1 {
                        tried.push(address);
                        continue;
                    }
                    return Err(response);
                }
                Err(NodeFail { response, .. }) => return Err(response),
            }
        }
    }
}

/// A step that failed on one node: the answer to give, and whether the node could not be
/// reached at all (so it is avoided for a while and the step may be tried on another node).
struct NodeFail {
    response: Fail,
    unreached: bool,
}

impl NodeFail {
    fn unreached(response: Fail) -> NodeFail {
        NodeFail {
            response,
            unreached: true,
        }
    }
}

impl From<Fail> for NodeFail {
    fn from(response: Fail) -> NodeFail {
        NodeFail {
            response,
            unreached: false,
        }
    }
}

/// Whether a node serves gRPC: rmicro and go-micro grpc servers say so in their metadata
/// (`protocol`, or `server` in older records); a node that says nothing is taken to.
fn speaks_grpc(node: &Node) -> bool {
    ["protocol", "server"]
        .iter()
        .find_map(|key| node.metadata.get(*key))
        .is_none_or(|p| p.eq_ignore_ascii_case("grpc"))
}
