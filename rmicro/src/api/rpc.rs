//! The `rpc` handler: JSON over HTTP in, gRPC to the service out.
//!
//! - Requests matching a `google.api.http` binding that a service's generated code registered
//!   (published in the registry's endpoint metadata) are transcoded by the binding: path
//!   variables and query parameters set request fields, `body` says where the JSON body goes,
//!   `response_body` which response field is returned.
//! - Other requests use go-micro's form: `/user/call` → service `<namespace>.user`, endpoint
//!   `User.Call`; `/user/user/call` → endpoint `User.Call`; the JSON body (or, without one, the
//!   query parameters) is the request message. An endpoint registered without its gRPC path
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
//! field or method they lack has them read again once, so a redeployed service's additions are
//! seen without restarting the gateway. Concurrent requests that find them missing for the same node share
//! one read from it, and its failure. A node without server reflection answers 501 saying so.
//! Errors come back as go-micro JSON with the mapped HTTP status; streaming methods answer 501.
//!
//! JSON is proto3's canonical mapping as go-micro's grpc server codec (jsonpb), protojson and
//! Python's json_format write it: lowerCamelCase (`json_name`) field names, default values of
//! fields without presence left out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum_core::body::Body;
use bytes::{Buf, BufMut, Bytes};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use prost::Message;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor,
};
use rmicro_runtime::errors::Error;
use rmicro_runtime::registry::{Node, NodeCache, DEFAULT_CACHE_TTL};
use rmicro_runtime::transport::{Connection, TransportError};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use super::proxy::{Quarantine, Seen};
use super::{address, error, HandlerConfig};

mod flight;
mod proto_json;
mod reflect;

/// The least a response message may be (gRPC's usual default); `--body-limit` raises it.
const MIN_RESPONSE_LIMIT: usize = 4 * 1024 * 1024;

/// How long descriptors are kept before a request that looks stale may have them read again.
const REREAD_AFTER: Duration = Duration::from_secs(1);

/// How long server reflection at a node may take.
const REFLECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// How many message types one request may have to ask a node for (the types of `Any` fields
/// its request and response hold that the service's files do not import).
const MAX_ANY_LOOKUPS: usize = 8;

/// How long the table of HTTP bindings read from the registry is reused.
const ROUTES_TTL: Duration = Duration::from_secs(1);

/// One `google.api.http` binding of a registered endpoint.
#[derive(Debug, Clone)]
struct Binding {
    service: String,
    grpc_path: String,
    method: String,
    template: Template,
    body: String,
    response_body: String,
}

/// A path template: `/v1/{name=shelves/*}/books/{id}:verb`.
#[derive(Debug, Clone)]
struct Template {
    segments: Vec<Segment>,
    verb: Option<String>,
}

#[derive(Debug, Clone)]
enum Segment {
    Literal(String),
    /// A variable `field` over pattern segments (`*`, `**` or literals); `{field}` is `{field=*}`.
    Variable {
        field: String,
        pattern: Vec<String>,
    },
    /// A bare `*` or `**`.
    Wildcard(bool),
}

impl Template {
    fn parse(template: &str) -> Option<Template> {
        let path = template.strip_prefix('/')?;
        let (path, verb) = match path.rfind(':') {
            Some(i) if !path[i..].contains('/') && !path[i..].contains('}') => {
                (&path[..i], Some(path[i + 1..].to_string()))
            }
            _ => (path, None),
        };
        let mut segments = Vec::new();
        let mut rest = path;
        while !rest.is_empty() {
            if let Some(inner) = rest.strip_prefix('{') {
                let end = inner.find('}')?;
                let var = &inner[..end];
                let (field, pattern) = match var.split_once('=') {
                    Some((f, p)) => (f, p.split('/').map(str::to_string).collect()),
                    None => (var, vec!["*".to_string()]),
                };
                segments.push(Segment::Variable {
                    field: field.trim().to_string(),
                    pattern,
                });
                rest = inner[end + 1..]
                    .strip_prefix('/')
                    .unwrap_or(&inner[end + 1..]);
            } else {
                let (seg, next) = rest.split_once('/').unwrap_or((rest, ""));
                segments.push(match seg {
                    "*" => Segment::Wildcard(false),
                    "**" => Segment::Wildcard(true),
                    _ => Segment::Literal(seg.to_string()),
                });
                rest = next;
            }
        }
        Some(Template { segments, verb })
    }

    /// How specific the template is, to try the most specific first: more literal segments
    /// (inside variables too), then a custom verb before none, then no `**` before one.
    fn specificity(&self) -> (usize, bool, bool) {
        let mut literals = 0;
        let mut deep = false;
        for segment in &self.segments {
            match segment {
                Segment::Literal(_) => literals += 1,
                Segment::Wildcard(d) => deep |= d,
                Segment::Variable { pattern, .. } => {
                    for p in pattern {
                        match p.as_str() {
                            "*" => {}
                            "**" => deep = true,
                            _ => literals += 1,
                        }
                    }
                }
            }
        }
        (literals, self.verb.is_some(), !deep)
    }

    /// The captured variables when `path` matches: each field, its value as it is in `path`
    /// (still percent-encoded: the template is matched on the raw segments) and how to decode it.
    fn matches(&self, path: &str) -> Option<Vec<(String, String, Decode)>> {
        let path = path.strip_prefix('/')?;
        let path = match &self.verb {
            Some(verb) => path.strip_suffix(verb.as_str())?.strip_suffix(':')?,
            None => path,
        };
        let parts: Vec<&str> = if path.is_empty() {
            Vec::new()
        } else {
            path.split('/').collect()
        };
        let mut captures = Vec::new();
        let mut i = 0;
        for (n, segment) in self.segments.iter().enumerate() {
            let last = n == self.segments.len() - 1;
            match segment {
                Segment::Literal(lit) => {
                    if parts.get(i) != Some(&lit.as_str()) {
                        return None;
                    }
                    i += 1;
                }
                Segment::Wildcard(deep) => {
                    if *deep && last {
                        i = parts.len();
                    } else {
                        parts.get(i).filter(|p| !p.is_empty())?;
                        i += 1;
                    }
                }
                Segment::Variable { field, pattern } => {
                    let start = i;
                    for (k, p) in pattern.iter().enumerate() {
                        match p.as_str() {
                            "**" if last && k == pattern.len() - 1 => i = parts.len(),
                            "*" | "**" => {
                                parts.get(i).filter(|p| !p.is_empty())?;
                                i += 1;
                            }
                            lit => {
                                if parts.get(i) != Some(&lit) {
                                    return None;
                                }
                                i += 1;
                            }
                        }
                    }
                    let mode = if pattern.len() > 1 || pattern.iter().any(|p| p == "**") {
                        Decode::Segments
                    } else {
                        Decode::Segment
                    };
                    captures.push((field.clone(), parts[start..i].join("/"), mode));
                }
            }
        }
        (i == parts.len()).then_some(captures)
    }
}

/// How a piece of a request target is percent-decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decode {
    /// A query string's key or value: `+` is a space.
    Query,
    /// A single-segment path variable (`{id}`): every escape decoded; `+` is a plus.
    Segment,
    /// A multi-segment path variable (`{name=shelves/*}`, `{path=**}`): as `Segment`, except
    /// that `%2F` stays encoded, so a `/` inside a segment stays told apart from the separators
    /// (http.proto's rule for reserved expansion).
    Segments,
}

/// Percent-decodes `text` byte by byte as `mode` says. A `%` not followed by two hex digits, or
/// bytes that are not UTF-8 once decoded, are an error that says which.
fn percent_decode(text: &str, mode: Decode) -> Result<String, String> {
    let plus_is_space = mode == Decode::Query;
    let bytes = text.as_bytes();
    if !bytes
        .iter()
        .any(|&b| b == b'%' || (plus_is_space && b == b'+'))
    {
        return Ok(text.to_string());
    }
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(format!(
                        "`{text}` has a `%` not followed by two hex digits; write a literal `%` as `%25`"
                    ));
                };
                let byte = (hi * 16 + lo) as u8;
                if byte == b'/' && mode == Decode::Segments {
                    out.extend_from_slice(&bytes[i..i + 3]);
                } else {
                    out.push(byte);
                }
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
        .map_err(|_| format!("`{text}` does not decode to UTF-8 text; percent-encode UTF-8 bytes"))
}

/// Passes encoded messages through unchanged: the rpc handler encodes and decodes itself.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        let len = src.remaining();
        Ok(Some(src.copy_to_bytes(len)))
    }
}

/// Node connections kept before those not open are forgotten.
const MAX_CHANNELS: usize = 1024;

/// Keeps `connection` to `address`. Nodes come and go (new addresses on every deploy): at
/// `max` entries, those without an open connection are forgotten first, rather than every
/// address ever seen kept.
fn remember(
    channels: &mut HashMap<String, Connection>,
    address: &str,
    connection: Connection,
    max: usize,
) {
    if channels.len() >= max {
        channels.retain(|_, c| c.is_open());
    }
    channels.insert(address.to_string(), connection);
}

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

/// Descriptors read from a node by server reflection.
struct Described {
    pool: DescriptorPool,
    /// The registry service of the node they were read from.
    service: String,
    /// The id of that node: they stand while it is registered.
    node: String,
    /// When they were read.
    read: Instant,
}

/// What a request resolved to.
struct Target {
    service: String,
    /// Empty for a go-micro endpoint registered without it (see `endpoint`).
    grpc_path: String,
    /// The go-micro endpoint (`Greeter.Hello`) whose gRPC path is to be found at the node.
    endpoint: Option<String>,
    body: String,
    response_body: String,
    captures: Vec<(String, String)>,
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

    /// Every HTTP binding in the registry (cached for a second).
    async fn bindings(&self) -> Result<Arc<Vec<Binding>>, Fail> {
        if let Some((at, routes)) = &*self.inner.routes.lock().unwrap_or_else(|p| p.into_inner()) {
            if at.elapsed() < ROUTES_TTL {
                return Ok(Arc::clone(routes));
            }
        }
        let services = self
            .inner
            .config
            .registry
            .list_services()
            .await
            .map_err(|err| {
                error::response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot read the registry: {err}"),
                )
            })?;
        // Descriptors of services that left the registry go too.
        self.inner
            .pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, d| services.iter().any(|s| s.name == d.service));
        let mut routes = Vec::new();
        for service in services {
            for endpoint in &service.endpoints {
                let (Some(http), Some(grpc_path)) = (
                    endpoint.metadata.get("http"),
                    endpoint.metadata.get("grpc_path"),
                ) else {
                    continue;
                };
                let Ok(rules) = serde_json::from_str::<Vec<serde_json::Value>>(http) else {
                    continue;
                };
                for rule in rules {
                    let field = |k: &str| {
                        rule.get(k)
                            .and_then(|v| v.as_str())
                            .unwrap_or("")
                            .to_string()
                    };
                    let Some(template) = Template::parse(&field("path")) else {
                        continue;
                    };
                    routes.push(Binding {
                        service: service.name.clone(),
                        grpc_path: grpc_path.clone(),
                        method: field("method"),
                        template,
                        body: field("body"),
                        response_body: field("response_body"),
                    });
                }
            }
        }
        // Most specific first, whatever service or order they came in (the sort is stable).
        routes.sort_by_key(|b| std::cmp::Reverse(b.template.specificity()));
        let routes = Arc::new(routes);
        *self.inner.routes.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), Arc::clone(&routes)));
        Ok(routes)
    }

    /// go-micro's `/service/method` form.
    async fn go_micro_target(&self, path: &str) -> Result<Target, Fail> {
        let parts: Vec<&str> = path
            .trim_matches('/')
            .split('/')
            .filter(|p| !p.is_empty())
            .collect();
        let title = |s: &str| {
            let mut c = s.chars();
            c.next()
                .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                .unwrap_or_default()
        };
        let versioned = parts.first().is_some_and(|p| {
            p.len() > 1 && p.starts_with('v') && p[1..].bytes().all(|b| b.is_ascii_digit())
        });
        let (service, rest) = match (versioned, parts.len()) {
            (true, n) if n >= 3 => (format!("{}.{}", parts[0], parts[1]), &parts[1..]),
            (false, n) if n >= 2 => (parts[0].to_string(), &parts[..]),
            _ => {
                return Err(error::response(
                    StatusCode::NOT_FOUND,
                    format!("no endpoint for path `{path}`"),
                ))
            }
        };
        let endpoint = match rest.len() {
            2 => format!("{}.{}", title(rest[0]), title(rest[1])),
            _ => format!(
                "{}.{}",
                title(rest[rest.len() - 2]),
                title(rest[rest.len() - 1])
            ),
        };
        let namespace = self.inner.config.namespace.trim_end_matches('.');
        let service = if namespace.is_empty() {
            service
        } else {
            format!("{namespace}.{service}")
        };
        let records = self
            .inner
            .config
            .registry
            .get_service(&service)
            .await
            .map_err(|err| {
                error::response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot look up service `{service}`: {err}"),
                )
            })?;
        // As the http handler: a service that had nodes once and has none now is unavailable
        // (503), one never seen is not found (404).
        if records.is_empty() {
            let (status, detail) = self.inner.seen.no_nodes(&service);
            return Err(error::response(status, detail));
        }
        self.inner.seen.saw(&service);
        let found = records
            .iter()
            .flat_map(|r| r.endpoints.iter())
            .find(|e| e.name.eq_ignore_ascii_case(&endpoint));
        let Some(found) = found else {
            return Err(error::response(
                StatusCode::NOT_FOUND,
                format!("service `{service}` has no endpoint `{endpoint}`"),
            ));
        };
        // go-micro's services (and others registered as they are) do not say their gRPC path:
        // it is found at the node, by server reflection.
        let (grpc_path, endpoint) = match found.metadata.get("grpc_path") {
            Some(path) => (path.clone(), None),
            None => (String::new(), Some(found.name.clone())),
        };
        Ok(Target {
            service,
            grpc_path,
            endpoint,
            body: "*".into(),
            response_body: String::new(),
            captures: Vec::new(),
        })
    }

    async fn resolve(&self, method: &Method, path: &str) -> Result<Target, Fail> {
        let bindings = self.bindings().await?;
        // Methods bound to this path, should the request's method be none of them.
        let mut allowed: Vec<String> = Vec::new();
        for b in bindings.iter() {
            if !b.method.eq_ignore_ascii_case(method.as_str()) {
                if b.template.matches(path).is_some() {
                    let bound = b.method.to_ascii_uppercase();
                    if !allowed.contains(&bound) {
                        allowed.push(bound);
                    }
                }
                continue;
            }
            if let Some(captures) = b.template.matches(path) {
                let captures = captures
                    .into_iter()
                    .map(|(field, value, mode)| Ok((field, percent_decode(&value, mode)?)))
                    .collect::<Result<_, String>>()
                    .map_err(|detail| {
                        error::response(StatusCode::BAD_REQUEST, format!("the path: {detail}"))
                    })?;
                return Ok(Target {
                    service: b.service.clone(),
                    grpc_path: b.grpc_path.clone(),
                    endpoint: None,
                    body: b.body.clone(),
                    response_body: b.response_body.clone(),
                    captures,
                });
            }
        }
        match self.go_micro_target(path).await {
            // A bound path with another method: say which methods it takes, rather than that a
            // service named after the path's first segment does not exist.
            Err(resp) if resp.status() == StatusCode::NOT_FOUND && !allowed.is_empty() => {
                allowed.sort();
                let allow = allowed.join(", ");
                let mut resp = error::response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("`{path}` does not take {method}; it takes {allow}"),
                );
                if let Ok(value) = header::HeaderValue::from_str(&allow) {
                    resp.headers_mut().insert(header::ALLOW, value);
                }
                Err(resp)
            }
            other => other,
        }
    }

    fn channel(&self, address: &str) -> Result<Connection, reflect::ReadFail> {
        let mut channels = self
            .inner
            .channels
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(c) = channels.get(address) {
            return Ok(c.clone());
        }
        let connection = Connection::new(address)
            .map_err(|err| reflect::ReadFail::unreached(err.to_string()))?;
        remember(&mut channels, address, connection.clone(), MAX_CHANNELS);
        Ok(connection)
    }

    /// The method's descriptor and whether it was read just now. Descriptors are learned from
    /// a node by server reflection and cached per gRPC service while the node they came from is
    /// among `nodes` (a redeployed node has a new id). They are read again from `node` when the
    /// cache lacks the method or `reread` says they look stale, but not twice within
    /// [`REREAD_AFTER`], so bad requests cannot make the gateway hammer a service.
    async fn method(
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
                    let read = || async {
                        // Read by another request just now.
                        if let Some(pool) = self.cached(service, grpc_service, nodes, true) {
                            return Ok(pool);
                        }
                        let connection = self.channel(&node.address)?;
                        let pool = self
                            .inner
                            .reflector
                            .file_containing(&connection, &node.address, grpc_service)
                            .await?;
                        let described = Described {
                            pool: pool.clone(),
                            service: service.to_string(),
                            node: node.id.clone(),
                            read: Instant::now(),
                        };
                        self.inner
                            .pools
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(pool_key(service, grpc_service), described);
                        Ok(pool)
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

    /// `method` from descriptors that also define message `name` (an `Any`'s type that the
    /// files read for its service do not import), read from `node` of registry service
    /// `service`; they replace the cached ones if those came from the same node. `None` when the
    /// node does not know `name`.
    async fn with_message(
        &self,
        service: &str,
        node: &Node,
        grpc_path: &str,
        method: &MethodDescriptor,
        name: &str,
    ) -> Result<Option<MethodDescriptor>, NodeFail> {
        let connection = self.channel(&node.address)?;
        let Some(pool) = self
            .inner
            .reflector
            .with_symbol(&connection, &node.address, method.parent_pool(), name)
            .await?
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
    async fn grpc_path(
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
        let known = || {
            self.inner
                .grpc_services
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
                .filter(|(id, _)| nodes.iter().any(|n| &n.id == id))
                .map(|(_, grpc_service)| grpc_service.clone())
        };
        let grpc_service = match known() {
            Some(known) => known,
            None => {
                let find = || async {
                    if let Some(known) = known() {
                        return Ok(known);
                    }
                    let connection = self.channel(&node.address)?;
                    let served = self
                        .inner
                        .reflector
                        .list_services(&connection, &node.address)
                        .await?;
                    let found =
                        reflect::grpc_service_among(&served, service, handler, &node.address)?;
                    let mut known = self
                        .inner
                        .grpc_services
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    if known.len() >= MAX_CHANNELS {
                        known.retain(|_, (id, _)| nodes.iter().any(|n| &n.id == id));
                    }
                    known.insert(key.clone(), (node.id.clone(), found.clone()));
                    Ok(found)
                };
                // Per node, as descriptor reads.
                let flight = format!("{}/{key}", node.address);
                self.inner.lookups.share(&flight, find).await?
            }
        };
        Ok(format!("/{grpc_service}/{method}"))
    }

    pub(crate) async fn handle(self, req: Request<Body>) -> Response<Body> {
        match self.try_handle(req).await {
            Ok(resp) | Err(resp) => resp,
        }
    }

    async fn try_handle(&self, req: Request<Body>) -> Result<Response<Body>, Fail> {
        let config = &self.inner.config;
        let (parts, body) = req.into_parts();
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

    /// The request transcoded and sent to the node at `address`, its answer transcoded back.
    async fn call_node(
        &self,
        address: &str,
        nodes: &[Node],
        target: &Target,
        parts: &http::request::Parts,
        body: &Bytes,
    ) -> Result<Response<Body>, NodeFail> {
        let config = &self.inner.config;
        let node = nodes
            .iter()
            .find(|n| n.address == address)
            .unwrap_or(&nodes[0]);
        let grpc_path = match &target.endpoint {
            Some(endpoint) if target.grpc_path.is_empty() => {
                self.grpc_path(node, nodes, &target.service, endpoint)
                    .await?
            }
            _ => target.grpc_path.clone(),
        };
        let grpc_path = grpc_path.as_str();
        let describe = |reread| self.method(node, nodes, &target.service, grpc_path, reread);
        let (mut method, fresh) = describe(false).await?;
        let query = parts.uri.query();
        let (mut reread, mut lookups) = (fresh, 0);
        let input = loop {
            match build_request(&method.input(), target, body, query) {
                // A field or enum value the cached descriptors lack may be one a redeployed
                // service added: read them again (at most once) and build the message anew.
                Err(detail) if !reread && names_unknown(&detail) => {
                    method = describe(true).await?.0;
                    reread = true;
                }
                // An `Any` of a type their files do not import: ask the node for its file.
                Err(detail) => match missing_message(&detail) {
                    Some(name) if lookups < MAX_ANY_LOOKUPS => {
                        lookups += 1;
                        match self
                            .with_message(&target.service, node, grpc_path, &method, name)
                            .await?
                        {
                            Some(found) => method = found,
                            None => break Err(detail),
                        }
                    }
                    _ => break Err(detail),
                },
                built => break built,
            }
        }
        .map_err(|detail| error::response(StatusCode::BAD_REQUEST, detail))?;
        if method.is_client_streaming() || method.is_server_streaming() {
            return Err(error::response(
                StatusCode::NOT_IMPLEMENTED,
                format!(
                    "`{}` streams; the rpc handler serves unary methods only",
                    grpc_path
                ),
            )
            .into());
        }

        // Responses as large as the requests the gateway takes, and never under gRPC's usual
        // 4 MiB (tonic's default would cut every response at 4 MiB).
        let response_limit = config.body_limit.max(MIN_RESPONSE_LIMIT);
        let mut grpc = self
            .channel(address)?
            .grpc()
            .max_decoding_message_size(response_limit);
        let message = Bytes::from(input.encode_to_vec());
        let sent = message.len();
        let mut request = tonic::Request::new(message);
        request.set_timeout(config.backend_timeout);
        // Each value of a header sent more than once (a gRPC metadata key may have several).
        for (name, value) in parts.headers.iter() {
            let forward = name.as_str().starts_with("x-") || name == header::AUTHORIZATION;
            if forward {
                if let (Ok(k), Ok(v)) = (
                    tonic::metadata::MetadataKey::from_bytes(name.as_str().as_bytes()),
                    tonic::metadata::MetadataValue::try_from(value.as_bytes()),
                ) {
                    request.metadata_mut().append(k, v);
                }
            }
        }
        let path = http::uri::PathAndQuery::try_from(grpc_path)
            .map_err(|e| error::response(StatusCode::BAD_GATEWAY, format!("bad gRPC path: {e}")))?;
        let call = grpc.unary(request, path, RawCodec);
        let started = Instant::now();
        let timed_out = || -> NodeFail {
            error::response(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "`{}` did not answer within {:?}",
                    grpc_path, config.backend_timeout
                ),
            )
            .into()
        };
        let reply = match tokio::time::timeout(config.backend_timeout, call).await {
            Err(_) => return Err(timed_out()),
            // The deadline the gateway sent ran out at the service (which answers so as it
            // runs out, racing the gateway's own timer): the gateway's timeout, not a 408.
            Ok(Err(status)) if ran_out(&status, started.elapsed(), config.backend_timeout) => {
                return Err(timed_out())
            }
            Ok(Err(status)) => {
                return Err(match TransportError::find(&status) {
                    Some(err) => {
                        let response = error::response(
                            StatusCode::BAD_GATEWAY,
                            format!("service `{}` node {address}: {err}", target.service),
                        );
                        // Only a call that never left may go to another node; a node that
                        // failed mid-call is still avoided.
                        if err.is_unsent() {
                            NodeFail::unreached(response)
                        } else {
                            self.inner.quarantine.mark(address);
                            self.inner.nodes.invalidate(&target.service);
                            response.into()
                        }
                    }
                    None => too_large(&status, sent, response_limit, grpc_path)
                        .unwrap_or_else(|| status_response(&status))
                        .into(),
                });
            }
            Ok(Ok(reply)) => reply.into_inner(),
        };
        // Proto3 JSON as go-micro's grpc server codec (jsonpb), protojson and json_format
        // write it: lowerCamelCase names (a field's `json_name`), fields without presence left
        // out at their default values.
        let options = prost_reflect::SerializeOptions::new();
        let mut lookups = 0;
        let mut json = loop {
            let output = DynamicMessage::decode(method.output(), reply.clone()).map_err(|e| {
                error::response(
                    StatusCode::BAD_GATEWAY,
                    format!("the response of `{grpc_path}` does not decode: {e}"),
                )
            })?;
            let unconverted =
                match output.serialize_with_options(serde_json::value::Serializer, &options) {
                    Ok(mut json) => {
                        proto_json::mend_response(&output, &mut json);
                        break json;
                    }
                    Err(e) => e.to_string(),
                };
            let found = match missing_message(&unconverted) {
                // An `Any` of a type the files read do not import: ask the node for its file.
                Some(name) if lookups < MAX_ANY_LOOKUPS => {
                    lookups += 1;
                    self.with_message(&target.service, node, grpc_path, &method, name)
                        .await?
                }
                _ => None,
            };
            match found {
                Some(found) => method = found,
                None => {
                    return Err(error::response(
                        StatusCode::BAD_GATEWAY,
                        format!("the response does not convert to JSON: {unconverted}"),
                    )
                    .into())
                }
            }
        };
        if !target.response_body.is_empty() {
            json = response_field(&method.output(), &reply, json, &target.response_body)
                .ok_or_else(|| {
                    error::response(
                        StatusCode::BAD_GATEWAY,
                        format!("the response has no field `{}`", target.response_body),
                    )
                })?;
        }
        let mut resp = Response::new(Body::from(json.to_string()));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        Ok(resp)
    }
}

/// The field `name` (as the binding's `response_body` names it: its proto name) of the response
/// `json`, decoded from `reply` of type `desc`. A field left out at its default value is written
/// with it (`[]`, `0`, `""`…), so the answer is never empty.
fn response_field(
    desc: &MessageDescriptor,
    reply: &Bytes,
    mut json: serde_json::Value,
    name: &str,
) -> Option<serde_json::Value> {
    let field = desc
        .get_field_by_name(name)
        .or_else(|| desc.get_field_by_json_name(name))?;
    if let Some(value) = json.get_mut(field.json_name()) {
        return Some(value.take());
    }
    let output = DynamicMessage::decode(desc.clone(), reply.clone()).ok()?;
    let options = prost_reflect::SerializeOptions::new().skip_default_fields(false);
    let mut json = output
        .serialize_with_options(serde_json::value::Serializer, &options)
        .ok()?;
    json.get_mut(field.json_name()).map(serde_json::Value::take)
}

/// The key of the descriptors of `grpc_service` read for registry service `service`.
fn pool_key(service: &str, grpc_service: &str) -> String {
    format!("{service}/{grpc_service}")
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

/// The answer for a message over a size limit: the request message over the service's (413),
/// or the response over the gateway's (502); `None` for any other status.
fn too_large(
    status: &tonic::Status,
    sent: usize,
    response_limit: usize,
    grpc_path: &str,
) -> Option<Fail> {
    let message = status.message();
    // tonic (at either end) words it so, a request's own size in it, with OUT_OF_RANGE (rmicro
    // servers answer it with RESOURCE_EXHAUSTED, as gRPC says); grpc-go as `grpc: received
    // message larger than max (N vs. M)`, gRPC's C core (Python, C++, Ruby…) as `Received
    // message larger than max (N vs. M)`, Python's with `SERVER: ` before.
    let tonic_words = message.starts_with("Error, decoded message length too large");
    // Only the size of what the gateway sent makes tonic's words about this request: a node
    // passing on a limit error of its own downstream call names another size.
    let this_request = message.contains(&format!("found {sent} bytes,"));
    let tonic_limit = status.code() == tonic::Code::OutOfRange && tonic_words;
    let grpc_limit = status.code() == tonic::Code::ResourceExhausted
        && ((tonic_words && this_request)
            || message.contains("received message larger than max")
            || message.contains("Received message larger than max"));
    if grpc_limit || (tonic_limit && this_request) {
        return Some(error::response(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request message for `{grpc_path}` ({sent} bytes) is over the service's \
                 limit ({message}); send a smaller request"
            ),
        ));
    }
    tonic_limit.then(|| {
        error::response(
            StatusCode::BAD_GATEWAY,
            format!(
                "the response of `{grpc_path}` is over the gateway's {response_limit}-byte \
                 limit for response messages (the larger of --body-limit and 4 MiB): {message}"
            ),
        )
    })
}

/// Whether `status`, come `elapsed` into a call sent with deadline `timeout`, says that deadline
/// ran out: a plain DEADLINE_EXCEEDED (not a go-micro error of the service's own) after 95 % of
/// it (services and their own outgoing calls, which inherit it, may give up a little early).
fn ran_out(status: &tonic::Status, elapsed: Duration, timeout: Duration) -> bool {
    status.code() == tonic::Code::DeadlineExceeded
        && Error::parse(status.message()).is_none()
        && elapsed >= timeout.mul_f64(0.95)
}

/// A gRPC error as go-micro JSON with the mapped HTTP status.
fn status_response(status: &tonic::Status) -> Response<Body> {
    let err = Error::from_status(status);
    let code = StatusCode::from_u16(err.code as u16).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = Response::new(Body::from(err.to_json()));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// The request message: the JSON body where `body` says, then path captures and (for the rest)
/// query parameters, each converted to its field's JSON type. A query parameter may not set a
/// field the path or the body binds (as in grpc-gateway and Envoy's transcoder); parameters that
/// name no field are ignored.
fn build_request(
    desc: &MessageDescriptor,
    target: &Target,
    body: &[u8],
    query: Option<&str>,
) -> Result<DynamicMessage, String> {
    let mut json = serde_json::Map::new();
    if !body.is_empty() && !target.body.is_empty() {
        let value = proto_json::parse_body(body)?;
        if target.body == "*" {
            match value {
                serde_json::Value::Object(map) => json = map,
                _ => return Err("the request body must be a JSON object".into()),
            }
        } else {
            json.insert(target.body.clone(), value);
        }
    }
    // Fields bound by the path, by their proto names (`author_info.full_name`).
    let mut bound = Vec::with_capacity(target.captures.len());
    for (path, value) in &target.captures {
        let chain = field_chain(desc, path)?.ok_or_else(|| {
            format!(
                "the binding's path sets `{path}`, which `{}` does not have",
                desc.full_name()
            )
        })?;
        bound.push(proto_path(&chain));
        set_param(&mut json, &chain, path, value)?;
    }
    let whole_body_used = target.body == "*" && !body.is_empty();
    if !whole_body_used {
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |text| {
                percent_decode(text, Decode::Query).map_err(|e| format!("the query string: {e}"))
            };
            let (key, value) = (decode(k)?, decode(v)?);
            // As grpc-gateway: parameters that name no field (cache busters, tracking) are
            // ignored. An unknown field in a JSON body is still an error.
            let Some(chain) = field_chain(desc, &key)? else {
                continue;
            };
            let field = proto_path(&chain);
            let under = |outer: &str| {
                field == outer
                    || field
                        .strip_prefix(outer)
                        .is_some_and(|rest| rest.starts_with('.'))
            };
            if let Some(outer) = bound.iter().find(|b| under(b)) {
                return Err(format!(
                    "query parameter `{key}` would set `{field}`, which the path binds \
                     (`{outer}`); the path's value stands, so leave it out of the query"
                ));
            }
            if !target.body.is_empty() && target.body != "*" && under(&target.body) {
                return Err(format!(
                    "query parameter `{key}` would set `{field}`, which this endpoint takes from \
                     the request body (`{}`); send it in the body",
                    target.body
                ));
            }
            set_param(&mut json, &chain, &key, &value)?;
        }
    }
    let mut value = serde_json::Value::Object(json);
    proto_json::conform_request(desc, &mut value, "")?;
    DynamicMessage::deserialize(desc.clone(), value)
        .map_err(|e| format!("the request does not fit `{}`: {e}", desc.full_name()))
}

/// The fields `path` (`a.b.c`, by proto or JSON names) names, outermost first; `None` when a
/// message on the way has no such field.
fn field_chain(
    desc: &MessageDescriptor,
    path: &str,
) -> Result<Option<Vec<FieldDescriptor>>, String> {
    let mut chain: Vec<FieldDescriptor> = Vec::new();
    let mut message = desc.clone();
    for (n, name) in path.split('.').enumerate() {
        if n > 0 {
            let outer = &chain[n - 1];
            match outer.kind() {
                Kind::Message(inner) if !outer.is_list() && !outer.is_map() => message = inner,
                _ => {
                    return Err(format!(
                        "field `{}` of `{}` is not a message; `{path}` cannot name a field in it",
                        outer.name(),
                        message.full_name()
                    ))
                }
            }
        }
        let Some(field) = message
            .get_field_by_name(name)
            .or_else(|| message.get_field_by_json_name(name))
        else {
            return Ok(None);
        };
        chain.push(field);
    }
    Ok(Some(chain))
}

/// Whether a request message failed to build because it names a field or an enum value the
/// descriptors lack (the message parser's wording), which newer descriptors may have.
fn names_unknown(detail: &str) -> bool {
    detail.contains("unrecognized field name") || detail.contains("unrecognized enum value")
}

/// The message type a message could not be read or written without (an `Any`'s), in the
/// message parser's and serializer's wording: `message 'pkg.Type' not found`.
fn missing_message(detail: &str) -> Option<&str> {
    let start = detail.find("message '")? + "message '".len();
    let rest = &detail[start..];
    let end = rest.find("' not found")?;
    Some(&rest[..end]).filter(|name| !name.is_empty() && !name.contains('\''))
}

/// `a.b.c` by proto field names.
fn proto_path(chain: &[FieldDescriptor]) -> String {
    let names: Vec<&str> = chain.iter().map(FieldDescriptor::name).collect();
    names.join(".")
}

/// Sets the field at the end of `chain` to `value` in `json`, typed by that field (`path` is
/// how the request named it, for errors). A JSON-name key the body used for a field on the way
/// is renamed to the proto name first, so the field is not given twice.
fn set_param(
    json: &mut serde_json::Map<String, serde_json::Value>,
    chain: &[FieldDescriptor],
    path: &str,
    value: &str,
) -> Result<(), String> {
    let Some((field, outer)) = chain.split_last() else {
        return Ok(());
    };
    let mut json = json;
    for f in outer {
        unalias(json, f);
        let entry = json
            .entry(f.name().to_string())
            .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
        let serde_json::Value::Object(map) = entry else {
            return Err(format!(
                "`{path}` sets a field inside `{}`, which is already set to a value",
                f.name()
            ));
        };
        json = map;
    }
    unalias(json, field);
    let typed = typed_value(field, path, value)?;
    if field.is_list() {
        let entry = json
            .entry(field.name().to_string())
            .or_insert_with(|| serde_json::Value::Array(Vec::new()));
        if let serde_json::Value::Array(items) = entry {
            items.push(typed);
        }
    } else {
        json.insert(field.name().to_string(), typed);
    }
    Ok(())
}

/// Renames `field`'s JSON-name key in `json` (`displayName`) to its proto name.
fn unalias(json: &mut serde_json::Map<String, serde_json::Value>, field: &FieldDescriptor) {
    if field.json_name() != field.name() && !json.contains_key(field.name()) {
        if let Some(v) = json.remove(field.json_name()) {
            json.insert(field.name().to_string(), v);
        }
    }
}

/// A field mask's paths (`display_name,author_info.full_name`) in proto3 JSON's lowerCamelCase
/// (`displayName,authorInfo.fullName`); paths already in that form are unchanged.
fn camel_case_paths(mask: &str) -> String {
    let mut out = String::with_capacity(mask.len());
    let mut upper = false;
    for c in mask.chars() {
        match c {
            '_' => upper = true,
            _ if upper => {
                out.extend(c.to_uppercase());
                upper = false;
            }
            _ => out.push(c),
        }
    }
    out
}

/// `value` as the JSON that `field` takes.
fn typed_value(
    field: &FieldDescriptor,
    path: &str,
    value: &str,
) -> Result<serde_json::Value, String> {
    Ok(match field.kind() {
        Kind::Bool => match value {
            "true" => serde_json::Value::Bool(true),
            "false" => serde_json::Value::Bool(false),
            _ => return Err(format!("field `{path}` takes true or false, not `{value}`")),
        },
        // As a string, proto3 JSON's form that also carries NaN and ±Infinity (a JSON number
        // cannot).
        Kind::Double | Kind::Float => {
            if value.parse::<f64>().is_err() && !matches!(value, "Infinity" | "-Infinity") {
                return Err(format!(
                    "field `{path}` takes a number (or NaN, Infinity, -Infinity), not `{value}`"
                ));
            }
            serde_json::Value::String(value.to_string())
        }
        // A value's name or its number.
        Kind::Enum(_) => match value.parse::<i32>() {
            Ok(number) => serde_json::Value::from(number),
            Err(_) => serde_json::Value::String(value.to_string()),
        },
        Kind::Message(inner) => match inner.full_name() {
            // Proto3 JSON gives these a string form, which the message parser reads.
            "google.protobuf.Timestamp" | "google.protobuf.Duration" => {
                serde_json::Value::String(value.to_string())
            }
            // `display_name,page_count` (proto names, as grpc-gateway takes them) or the JSON
            // form's `displayName,pageCount`.
            "google.protobuf.FieldMask" => serde_json::Value::String(camel_case_paths(value)),
            // A wrapper's JSON form is its value's.
            "google.protobuf.DoubleValue"
            | "google.protobuf.FloatValue"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.Int32Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.BoolValue"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue" => match inner.get_field_by_name("value") {
                Some(wrapped) => typed_value(&wrapped, path, value)?,
                None => return Err(format!("`{}` has no field `value`", inner.full_name())),
            },
            _ => {
                return Err(format!(
                    "field `{path}` is a message; set its fields (`{path}.x`)"
                ))
            }
        },
        // Integers as strings are valid proto JSON; strings, bytes and enum names too.
        _ => serde_json::Value::String(value.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_limit_error_about_this_request_is_the_clients_413() {
        let limit = |code, message: &str| {
            too_large(&tonic::Status::new(code, message), 5000, 4 << 20, "/a.B/C")
                .map(|fail| fail.status())
        };
        let words = |n: usize| {
            format!("Error, decoded message length too large: found {n} bytes, the limit is: 4194304 bytes")
        };
        // An rmicro server's answer about what the gateway sent (older ones said OUT_OF_RANGE).
        let code = tonic::Code::ResourceExhausted;
        assert_eq!(
            limit(code, &words(5000)),
            Some(StatusCode::PAYLOAD_TOO_LARGE)
        );
        let code = tonic::Code::OutOfRange;
        assert_eq!(
            limit(code, &words(5000)),
            Some(StatusCode::PAYLOAD_TOO_LARGE)
        );
        // The node passing on its own downstream call's limit error: not this request's size.
        assert_eq!(
            limit(tonic::Code::ResourceExhausted, &words(9_000_000)),
            None
        );
        // The gateway's own limit on the response.
        let code = tonic::Code::OutOfRange;
        assert_eq!(
            limit(code, &words(9_000_000)),
            Some(StatusCode::BAD_GATEWAY)
        );
        let grpc_go = "grpc: received message larger than max (5000 vs. 4096)";
        assert_eq!(
            limit(tonic::Code::ResourceExhausted, grpc_go),
            Some(StatusCode::PAYLOAD_TOO_LARGE)
        );
    }

    #[test]
    fn templates_match_and_capture() {
        let t = Template::parse("/v1/items/{id}").unwrap();
        assert_eq!(
            t.matches("/v1/items/7"),
            Some(vec![("id".into(), "7".into(), Decode::Segment)])
        );
        assert_eq!(t.matches("/v1/items"), None);
        assert_eq!(t.matches("/v1/items/7/x"), None);
        let t = Template::parse("/v1/shelves/{shelf.name=shelves/*}/items/{id}").unwrap();
        assert_eq!(
            t.matches("/v1/shelves/shelves/top/items/9"),
            Some(vec![
                ("shelf.name".into(), "shelves/top".into(), Decode::Segments),
                ("id".into(), "9".into(), Decode::Segment)
            ])
        );
        let t = Template::parse("/v1/{name=files/**}:get").unwrap();
        assert_eq!(
            t.matches("/v1/files/a/b/c:get"),
            Some(vec![(
                "name".into(),
                "files/a/b/c".into(),
                Decode::Segments
            )])
        );
        assert_eq!(t.matches("/v1/files/a/b/c"), None);
        let t = Template::parse("/v1/items").unwrap();
        assert_eq!(t.matches("/v1/items"), Some(vec![]));
        let specificity = |t: &str| Template::parse(t).unwrap().specificity();
        assert!(
            specificity("/v1/shelves/me/books/latest") > specificity("/v1/{n=shelves/*/books/*}")
        );
        assert!(specificity("/v1/{n=shelves/*}:get") > specificity("/v1/{n=shelves/*}"));
        assert!(specificity("/v1/{n=shelves/*}") > specificity("/v1/{n=shelves/**}"));
        assert_eq!(Template::parse("/v1/items/{x").map(|_| ()), None);
        assert_eq!(
            camel_case_paths("display_name,author_info.full_name,pageCount"),
            "displayName,authorInfo.fullName,pageCount"
        );
        assert_eq!(
            percent_decode("a%20b+c", Decode::Query).as_deref(),
            Ok("a b c")
        );
        assert_eq!(
            percent_decode("a%20b+c", Decode::Segment).as_deref(),
            Ok("a b+c")
        );
        assert_eq!(
            percent_decode("a%2Fb%2f", Decode::Segment).as_deref(),
            Ok("a/b/")
        );
        assert_eq!(
            percent_decode("a%2Fb%2f%20", Decode::Segments).as_deref(),
            Ok("a%2Fb%2f ")
        );
        assert_eq!(
            percent_decode("%C3%A9t\u{e9}", Decode::Segment).as_deref(),
            Ok("\u{e9}t\u{e9}")
        );
        assert!(percent_decode("%a\u{e9}", Decode::Query).is_err());
        assert!(percent_decode("50%", Decode::Query).is_err());
        assert!(percent_decode("%ff", Decode::Query).is_err());
    }

    #[test]
    fn missing_any_types_are_named_from_the_parsers_words() {
        assert_eq!(
            missing_message("the request does not fit `a.B`: message 'x.y.Label' not found"),
            Some("x.y.Label")
        );
        assert_eq!(missing_message("message 'x' is bad"), None);
        // prost-reflect's wording, pinned: an upgrade that changes it fails here.
        let pool = DescriptorPool::global();
        let any = pool.get_message_by_name("google.protobuf.Any").unwrap();
        let json = serde_json::json!({"@type": "type.googleapis.com/no.Such"});
        let err = DynamicMessage::deserialize(any, json)
            .unwrap_err()
            .to_string();
        assert_eq!(missing_message(&err), Some("no.Such"), "{err}");
    }

    #[test]
    fn node_connections_are_forgotten_when_closed_and_too_many() {
        let mut channels = HashMap::new();
        for port in 1..=4 {
            let address = format!("127.0.0.1:{port}");
            let connection = Connection::new(&address).unwrap();
            remember(&mut channels, &address, connection, 4);
        }
        assert_eq!(channels.len(), 4);
        // None of them is open: at the limit they go, the new one stays.
        let connection = Connection::new("127.0.0.1:5").unwrap();
        remember(&mut channels, "127.0.0.1:5", connection, 4);
        assert_eq!(channels.keys().collect::<Vec<_>>(), ["127.0.0.1:5"]);
    }
}
