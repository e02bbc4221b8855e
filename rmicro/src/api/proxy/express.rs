//! The http handler's express lane: plain HTTP/1.1 `GET` and `HEAD` requests proxied without
//! building `http` messages, on plain TCP both ways.
//!
//! hyper's server and client state machines, and the hand-off between a request's task and its
//! backend connection's, cost more user-space instructions per proxied request than nginx's whole
//! proxy does (bench/gateway/RESULTS.md). This lane is the gateway's own HTTP/1.1 path for the
//! requests most traffic is made of, used when no plugin is on (plugins are tower layers over
//! `http` messages) and the gateway neither serves nor speaks TLS. It takes only what it can
//! tell apart for certain, and hands everything else to hyper:
//!
//! - **Requests.** A head that parses (httparse, as hyper's) as HTTP/1.1 `GET` or `HEAD` with
//!   an origin-form target whose path routes to a service, exactly one plain `Host`, no body
//!   (neither `Content-Length` nor `Transfer-Encoding`), `Connection` naming at most
//!   `keep-alive` or `close`, and none of the headers the gateway changes or refuses (hop-by-hop
//!   ones, `Expect`, the forwarding claims it does not trust, URL overrides, names with `_`).
//!   Any other request, and any service the registry cannot name healthy plain-HTTP nodes for,
//!   goes with the rest of its connection to hyper, bytes read so far included (to hyper's
//!   HTTP/1-only server once the lane served a request: HTTP/2 begins with a connection or
//!   never): the two never read the same connection at once, and hyper's checks judge every
//!   request this lane does not take. The request goes on as it came, with `Connection` left
//!   out and the client's address appended to `X-Forwarded-For`.
//! - **Responses.** Read with httparse (at most 100 headers and hyper's client's head limit),
//!   informational ones skipped; framed by one `Content-Length` (a repeated equal one is one),
//!   by `chunked` alone (decoded and encoded again, so only whole, well-formed chunks pass;
//!   trailers are checked and dropped, as the client did not ask for them with `TE`), or by the node closing
//!   (passed on chunked); none for `HEAD`, 204 and 304. Both framings, another transfer coding,
//!   an unasked-for `101` or a head that does not parse is the node's error (502), as on the
//!   hyper path. Hop-by-hop headers and those `Connection` lists are removed; names go out in
//!   lowercase with a `Date` when the node gave none, as hyper writes them.
//! - **Failures** are the hyper path's: a node that cannot be reached is avoided and another
//!   tried; a kept-alive connection the node closed (or reset, or broke an answer's head off on)
//!   as the request went out is replaced once after it sat idle, or the request goes to
//!   another node and the node is avoided; no answer within the backend timeout is a 504; each
//!   with the same JSON body. A response that breaks off after its head went out closes the
//!   client's connection. The client is watched while the node answers: one that leaves ends
//!   the exchange, and what it pipelines is kept.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::StatusCode;
use rmicro_runtime::registry::Node;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::headers::{is_client_forwarded, is_hop_by_hop, is_url_override, Peer};
use super::host::{path_problem, plain_host};
use super::{
    address, no_answer, no_connection, says, Proxy, BOTH_FRAMINGS, CLOSED, OTHER_CODING, RESET,
    SWITCHED, UNREACHABLE, UNREADABLE,
};
use crate::api::conn::{later, Exchanges};
use crate::api::error;
use crate::api::resolve::ServiceName;

/// A request head still incomplete at this length is hyper's to judge (a 431 above its own
/// 400 KiB limit).
const MAX_REQUEST_HEAD: usize = 16 << 10;

/// Request headers the lane parses; a request with more goes to hyper (which takes 100).
const MAX_REQUEST_HEADERS: usize = 48;

/// A response head longer than this is the node's error, as for hyper's client (its read
/// buffer's limit: 8 KiB and 100 times 4 KiB).
const MAX_RESPONSE_HEAD: usize = 8192 + 4096 * 100;

/// Response headers read, as hyper's client.
const MAX_RESPONSE_HEADERS: usize = 100;

/// Chunk extensions (over a body) and trailers are limited as hyper's decoder limits them.
const MAX_CHUNK_EXTENSIONS: usize = 16 << 10;
const MAX_CHUNK_TRAILERS: usize = 16 << 10;

/// Most idle connections kept per node and worker (as the hyper path's pool).
const MAX_PER_NODE: usize = 512;

/// Workers there can be (`--workers` takes at most 1024), each with connections of its own.
const MAX_WORKERS: usize = 1024;

/// How a connection served by the lane ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Closed (by the client, an error, a limit, or shutdown).
    Closed,
    /// A request the lane does not take is at the start of the buffer: hyper serves the rest,
    /// in HTTP/1.1 once the lane `served` a request (a connection is HTTP/2 from its start
    /// only).
    Handoff { served: bool },
}

/// Serves `client` (the connection's timed stream) on the lane until it closes or comes to a
/// request the lane does not take; `buf` keeps what was read and not yet served (for hyper, on a
/// hand-off). `stop` is set when the gateway shuts down: the connection closes before its next
/// request.
pub(crate) async fn serve<S>(
    proxy: &Proxy,
    client: &mut S,
    buf: &mut BytesMut,
    peer: Option<&Peer>,
    exchanges: &Arc<Exchanges>,
    stop: &AtomicBool,
) -> Ended
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Grown by the first request (a connection that sends none costs none of them).
    let mut lane = Lane {
        exchanges: Arc::clone(exchanges),
        head: Vec::new(),
        out: Vec::new(),
        up: BytesMut::new(),
    };
    let mut served = false;
    loop {
        let plan = loop {
            if !buf.is_empty() {
                match plan(proxy, buf, peer, &mut lane.head) {
                    Parsed::Plan(plan) => break plan,
                    Parsed::Partial if buf.len() < MAX_REQUEST_HEAD => {}
                    Parsed::Partial | Parsed::Other => return Ended::Handoff { served },
                }
            }
            if !read_or_stop(client, buf, stop, served).await {
                return Ended::Closed;
            }
        };
        let service = plan.service.as_str();
        let nodes = match proxy.inner.nodes.nodes(service).await {
            Ok(nodes) if !nodes.is_empty() => Ok(nodes),
            // Answered here: the hyper path would ask the registry again, and wait again.
            Err(err) => Err(error::registry_unavailable(
                &format!("look up service `{service}`"),
                &err,
            )),
            // Not found, or no nodes: the hyper path's answers.
            Ok(_) => return Ended::Handoff { served },
        };
        let nodes = match nodes {
            Ok(nodes) => nodes,
            Err(detail) => {
                buf.advance(plan.len);
                let _finish = exchanges.start_bodiless();
                let status = StatusCode::SERVICE_UNAVAILABLE;
                if answer_error(&mut lane, client, &plan, stop, status, &detail).await {
                    served = true;
                    continue;
                }
                let _ = client.shutdown().await;
                return Ended::Closed;
            }
        };
        let Ok(nodes) = address::usable(service, nodes) else {
            return Ended::Handoff { served };
        };
        // Nodes reached over TLS, and gRPC nodes (whose answer is the hyper path's error).
        if nodes.iter().any(|n| {
            address::https(&n.address) || says(n, "secure", "true") || says(n, "protocol", "grpc")
        }) {
            return Ended::Handoff { served };
        }
        proxy.inner.seen.saw(service);
        buf.advance(plan.len);
        let finish = exchanges.start_bodiless();
        let keep = exchange(proxy, &mut lane, client, buf, &plan, &nodes, stop).await;
        drop(finish);
        served = true;
        lane.shrink();
        if !keep {
            let _ = client.shutdown().await;
            return Ended::Closed;
        }
    }
}

/// Reads more of the client's bytes into `buf`: false once the client closed, the read failed
/// (a timeout of the connection's), or shutdown began while no request was under way (a
/// request not yet whole after one was `served` is not under way, as for hyper).
async fn read_or_stop<S: AsyncRead + Unpin>(
    client: &mut S,
    buf: &mut BytesMut,
    stop: &AtomicBool,
    served: bool,
) -> bool {
    let between = buf.is_empty() || served;
    if between && stop.load(Ordering::SeqCst) {
        return false;
    }
    buf.reserve(4096);
    let mut read = pin!(client.read_buf(buf));
    std::future::poll_fn(|cx| {
        // Woken when shutdown begins (the connection's task is).
        if between && stop.load(Ordering::SeqCst) {
            return Poll::Ready(false);
        }
        read.as_mut()
            .poll(cx)
            .map(|read| matches!(read, Ok(n) if n > 0))
    })
    .await
}

/// Buffers kept from request to request are let go above this (a large answer's head).
const KEPT_BUFFER: usize = 64 << 10;

/// Buffers reused from request to request on one client connection.
struct Lane {
    /// The connection's count of requests.
    exchanges: Arc<Exchanges>,
    /// The request head as it goes to the node.
    head: Vec<u8>,
    /// What goes to the client next.
    out: Vec<u8>,
    /// What came from the node and is not passed on yet.
    up: BytesMut,
}

impl Lane {
    /// Lets buffers a large exchange grew go, so an idle connection does not hold them.
    fn shrink(&mut self) {
        if self.out.capacity() > KEPT_BUFFER {
            self.out = Vec::new();
        }
        if self.up.capacity() > KEPT_BUFFER {
            self.up = BytesMut::new();
        }
    }
}

/// A request the lane takes.
struct Plan {
    /// The head's length in the client's buffer.
    len: usize,
    service: ServiceName,
    /// `HEAD`: the response has no body whatever it says.
    head_only: bool,
    /// The client asked to close the connection after this response.
    close: bool,
}

enum Parsed {
    Plan(Plan),
    /// Not a whole head yet.
    Partial,
    /// Not one for the lane.
    Other,
}

/// Judges the request head at the start of `buf` and, when the lane takes it, writes the head
/// the node gets into `out`.
fn plan(proxy: &Proxy, buf: &[u8], peer: Option<&Peer>, out: &mut Vec<u8>) -> Parsed {
    let config = &proxy.inner.config;
    let mut headers = [httparse::EMPTY_HEADER; MAX_REQUEST_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::Other;
    };
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Parsed::Other,
    };
    // Origin form, and a target the `http` crate (hyper's) takes.
    if !target.starts_with('/') {
        return Parsed::Other;
    }
    let Ok(target) = http::uri::PathAndQuery::try_from(target) else {
        return Parsed::Other;
    };
    let path = target.path();
    if path_problem(path).is_some() {
        return Parsed::Other;
    }
    let Some(service) = ServiceName::for_path(&config.namespace, path) else {
        return Parsed::Other;
    };
    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_str().as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut hosts = 0;
    let mut close = false;
    let mut forwarded_for = 0;
    for header in req.headers.iter() {
        let mut lower = [0u8; 24];
        let name = match lowercase(header.name, &mut lower) {
            Some(name) => name,
            // Longer than any name judged below.
            None if !header.name.contains('_') => "",
            None => return Parsed::Other,
        };
        match name {
            "host" => {
                hosts += 1;
                if !plain_host(header.value) {
                    return Parsed::Other;
                }
            }
            "connection" => {
                for token in header.value.split(|&b| b == b',') {
                    match token.trim_ascii() {
                        t if t.eq_ignore_ascii_case(b"close") => close = true,
                        t if t.is_empty() || t.eq_ignore_ascii_case(b"keep-alive") => {}
                        _ => return Parsed::Other,
                    }
                }
                continue;
            }
            "x-forwarded-for" => {
                forwarded_for += 1;
                continue;
            }
            "content-length" | "expect" => return Parsed::Other,
            name if is_hop_by_hop(name)
                || is_url_override(name)
                || (!config.trust_forwarded && is_client_forwarded(name))
                || name.contains('_') =>
            {
                return Parsed::Other
            }
            _ => {}
        }
        push_header(out, header.name.as_bytes(), header.value);
    }
    if hosts != 1 {
        return Parsed::Other;
    }
    if let Some(peer) = peer {
        // The client's lines, in order, joined, then the client's address.
        out.extend_from_slice(b"x-forwarded-for: ");
        if forwarded_for > 0 {
            for header in req.headers.iter() {
                if header.name.eq_ignore_ascii_case("x-forwarded-for")
                    && !header.value.trim_ascii().is_empty()
                {
                    out.extend_from_slice(header.value);
                    out.extend_from_slice(b", ");
                }
            }
        }
        out.extend_from_slice(peer.ip());
        out.extend_from_slice(b"\r\n");
    } else if forwarded_for > 0 {
        for header in req.headers.iter() {
            if header.name.eq_ignore_ascii_case("x-forwarded-for") {
                push_header(out, header.name.as_bytes(), header.value);
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    Parsed::Plan(Plan {
        len,
        service,
        head_only,
        close,
    })
}

/// `name` in lowercase, in `buf`; `None` when longer than `buf`.
fn lowercase<'b>(name: &str, buf: &'b mut [u8; 24]) -> Option<&'b str> {
    let bytes = name.as_bytes();
    let lower = buf.get_mut(..bytes.len())?;
    for (to, from) in lower.iter_mut().zip(bytes) {
        *to = from.to_ascii_lowercase();
    }
    // ASCII in, ASCII out (httparse takes only token characters in names).
    std::str::from_utf8(lower).ok()
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Sends the planned request to a node and its answer to the client; whether the client's
/// connection stays open.
async fn exchange<S>(
    proxy: &Proxy,
    lane: &mut Lane,
    client: &mut S,
    pending: &mut BytesMut,
    plan: &Plan,
    nodes: &Arc<[Node]>,
    stop: &AtomicBool,
) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let service = plan.service.as_str();
    let config = &proxy.inner.config;
    let retryable = nodes.len() > 1;
    let mut tried: Vec<String> = Vec::new();
    // As the hyper path: a kept-alive connection its node closed as the request went out, after
    // it sat idle long enough for a keep-alive timeout, is replaced once by a new one to the same
    // node (within the same backend timeout); and one the node closed however soon, when it was
    // a kept-alive one, sends the request to another node.
    let mut replaced = None;
    let mut reused_here = false;
    let mut deadline = None;
    loop {
        let address = match replaced {
            Some(address) => address,
            None => proxy.pick(service, nodes, &tried),
        };
        let target = address::target(address);
        let pooled = match replaced {
            Some(_) => None,
            None => proxy.inner.lanes.take(target),
        };
        let (reused, stale) = pooled.as_ref().map_or((false, false), |p| (true, p.1));
        reused_here |= reused;
        // A replacement connection is opened within the first one's backend timeout.
        let connect_by = deadline.unwrap_or_else(|| later(Instant::now(), config.backend_timeout));
        let mut node = match pooled {
            Some((node, _)) => node,
            None => match watching(client, pending, open(proxy, target, connect_by)).await {
                // The client left.
                Err(()) => return false,
                Ok(Ok(node)) => node,
                Ok(Err(failed)) => {
                    proxy.mark_failed(service, address);
                    if tried.is_empty() && retryable {
                        tried.push(address.to_string());
                        (replaced, reused_here, deadline) = (None, false, None);
                        continue;
                    }
                    let (status, detail) = match failed {
                        Open::Late => (
                            StatusCode::GATEWAY_TIMEOUT,
                            no_connection(service, address, config.backend_timeout),
                        ),
                        Open::Refused(err) => {
                            tracing::warn!(%service, %address, error = %err, "backend failed");
                            (
                                StatusCode::BAD_GATEWAY,
                                format!("service `{service}` node {address} {UNREACHABLE}"),
                            )
                        }
                    };
                    return answer_error(lane, client, plan, stop, status, &detail).await;
                }
            },
        };
        // The node's time to answer counts from when it has a connection (as on the hyper path).
        let until = *deadline.get_or_insert_with(|| later(Instant::now(), config.backend_timeout));
        let to = (&mut node, address, &nodes[..]);
        let failure = match relay(proxy, lane, client, pending, to, plan, until, stop).await {
            Relayed::Done {
                client: keep,
                node: reusable,
            } => {
                if reusable {
                    proxy.inner.lanes.put(target, node);
                }
                return keep;
            }
            Relayed::Broken => return false,
            Relayed::Failed(failure) => failure,
        };
        // Closed or reset by the node before a whole answer's head (the hyper path's "closed by
        // node"), on a kept-alive connection.
        let closed = matches!(
            failure,
            Failure::Stale | Failure::StaleReset | Failure::Closed | Failure::Reset
        );
        if closed && reused && stale && replaced.is_none() {
            replaced = Some(address);
            continue;
        }
        if closed && reused_here && retryable && tried.is_empty() {
            proxy.mark_failed(service, address);
            tried.push(address.to_string());
            (replaced, reused_here, deadline) = (None, false, None);
            continue;
        }
        let (status, detail, down) = match failure {
            Failure::Late => {
                let timeout = config.backend_timeout;
                let detail = no_answer(service, address, timeout, "backend did not answer in time");
                proxy.mark_failed(service, address);
                return answer_error(
                    lane,
                    client,
                    plan,
                    stop,
                    StatusCode::GATEWAY_TIMEOUT,
                    &detail,
                )
                .await;
            }
            Failure::Unreadable => (StatusCode::BAD_GATEWAY, UNREADABLE, false),
            Failure::Stale | Failure::Closed => (StatusCode::BAD_GATEWAY, CLOSED, true),
            Failure::StaleReset | Failure::Reset => (StatusCode::BAD_GATEWAY, RESET, true),
            Failure::BothFramings => {
                proxy.inner.lanes.discard(target);
                (StatusCode::BAD_GATEWAY, BOTH_FRAMINGS, false)
            }
            Failure::OtherCoding => (StatusCode::BAD_GATEWAY, OTHER_CODING, false),
            Failure::Switched => (StatusCode::BAD_GATEWAY, SWITCHED, false),
        };
        tracing::warn!(%service, %address, problem = detail, "backend failed");
        if down {
            proxy.mark_failed(service, address);
        }
        let detail = format!("service `{service}` node {address} {detail}");
        return answer_error(lane, client, plan, stop, status, &detail).await;
    }
}

/// Why no connection to a node could be opened.
enum Open {
    Refused(io::Error),
    Late,
}

/// A new connection to the node at `target`, by `by` (the backend timeout) and within the
/// pool's limit on connecting.
async fn open(proxy: &Proxy, target: &str, by: Instant) -> Result<TcpStream, Open> {
    let connect =
        rmicro_runtime::transport::connect_tcp(target, proxy.inner.pool.connect_timeout());
    match tokio::time::timeout_at(by, connect).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(err)) => Err(Open::Refused(err)),
        Err(_) => Err(Open::Late),
    }
}

/// What went wrong before anything of the answer reached the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The connection ended before any byte of an answer (on a kept-alive connection, the node
    /// most likely closed it as the request went out).
    Stale,
    /// As `Stale`, by a reset.
    StaleReset,
    /// The node closed the connection in the middle of the answer's head.
    Closed,
    /// The connection was reset.
    Reset,
    /// No answer's head within the backend timeout.
    Late,
    /// The answer's head does not parse, or is too large.
    Unreadable,
    /// Framed by both `Content-Length` and `Transfer-Encoding`.
    BothFramings,
    /// A transfer coding other than `chunked`.
    OtherCoding,
    /// `101 Switching Protocols`, unasked.
    Switched,
}

enum Relayed {
    /// The answer went out whole: whether the client's and the node's connections stay open.
    Done { client: bool, node: bool },
    /// It broke off after its head went out: both connections are closed.
    Broken,
    /// Nothing went out.
    Failed(Failure),
}

/// How the body of the answer is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// The answer's head, as read and as written for the client into [`Lane::out`].
struct Head {
    /// Its length in [`Lane::up`].
    len: usize,
    framing: Framing,
    /// Whether the node keeps the connection open after it.
    node_keeps: bool,
    /// Whether the client's connection closes after it.
    close: bool,
}

#[allow(clippy::too_many_arguments)]
async fn relay<S>(
    proxy: &Proxy,
    lane: &mut Lane,
    client: &mut S,
    pending: &mut BytesMut,
    (node, address, nodes): (&mut TcpStream, &str, &[Node]),
    plan: &Plan,
    deadline: Instant,
    stop: &AtomicBool,
) -> Relayed
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    lane.up.clear();
    let exchange = async {
        if let Err(err) = node.write_all(&lane.head).await {
            return Err(io_failure(&err, true));
        }
        read_head(node, lane, plan, stop).await
    };
    let head = tokio::time::timeout_at(deadline, watching(client, pending, exchange)).await;
    let head = match head {
        Ok(Ok(Ok(head))) => head,
        Ok(Ok(Err(failure))) => return Relayed::Failed(failure),
        // The client left: so does its request.
        Ok(Err(())) => return Relayed::Broken,
        Err(_) => return Relayed::Failed(Failure::Late),
    };
    lane.exchanges.responding();
    let Lane { out, up, .. } = lane;
    up.advance(head.len);
    let mut body = Body {
        node,
        client,
        pending,
        idle: proxy.inner.tunnel_idle,
        from: (plan.service.as_str(), address),
        nodes,
    };
    let done = match head.framing {
        Framing::None => Ok(up.is_empty()),
        Framing::Length(mut left) => {
            let now = (up.len() as u64).min(left) as usize;
            out.extend_from_slice(&up[..now]);
            up.advance(now);
            left -= now as u64;
            let extra = !up.is_empty();
            match send(body.client, out).await {
                Ok(()) => body
                    .copy_length(up, left)
                    .await
                    .map(|clean| clean && !extra),
                Err(()) => Err(()),
            }
        }
        Framing::Chunked => body.relay_chunks(out, up, &mut Chunks::default()).await,
        Framing::UntilClose => body.relay_until_close(out, up).await.map(|()| false),
    };
    match done {
        // The head alone is still to go out (no body).
        Ok(clean) if head.framing == Framing::None => match send(body.client, out).await {
            Ok(()) => Relayed::Done {
                client: !head.close,
                node: clean && head.node_keeps,
            },
            Err(()) => Relayed::Broken,
        },
        Ok(clean) => Relayed::Done {
            client: !head.close,
            node: clean && head.node_keeps,
        },
        Err(()) => Relayed::Broken,
    }
}

/// The [`Failure`] an I/O error stands for; `before` when no byte of the answer came yet.
fn io_failure(err: &io::Error, before: bool) -> Failure {
    match err.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe
            if before =>
        {
            Failure::StaleReset
        }
        io::ErrorKind::UnexpectedEof if before => Failure::Stale,
        io::ErrorKind::UnexpectedEof => Failure::Closed,
        _ => Failure::Reset,
    }
}

/// Reads the node's answer head (informational answers skipped) and writes the client's into
/// [`Lane::out`].
async fn read_head(
    node: &mut TcpStream,
    lane: &mut Lane,
    plan: &Plan,
    stop: &AtomicBool,
) -> Result<Head, Failure> {
    let mut heard = false;
    // How much of `up` was looked through for a head's end: parsed only once one came.
    let mut scanned = 0;
    loop {
        // The first bytes are parsed as they come (most answers' heads come whole).
        if (scanned == 0 && !lane.up.is_empty()) || head_ends(&lane.up, scanned) {
            let stopping = stop.load(Ordering::Relaxed);
            match response_head(&lane.up, plan, stopping, &mut lane.out)? {
                Step::Final(head) => return Ok(head),
                Step::Informational(len) => {
                    lane.up.advance(len);
                    scanned = 0;
                    continue;
                }
                Step::Partial => {}
            }
        }
        scanned = lane.up.len();
        if lane.up.len() >= MAX_RESPONSE_HEAD {
            return Err(Failure::Unreadable);
        }
        lane.up.reserve(8192);
        match node.read_buf(&mut lane.up).await {
            Ok(0) if !heard => return Err(Failure::Stale),
            Ok(0) => return Err(Failure::Closed),
            Ok(_) => heard = true,
            Err(err) => return Err(io_failure(&err, !heard)),
        }
    }
}

/// Whether `up` holds a blank line (a head's end), looked for from `scanned` on (less the bytes
/// one could have begun in).
fn head_ends(up: &[u8], scanned: usize) -> bool {
    let from = scanned.saturating_sub(2);
    up.get(from..).is_some_and(|new| {
        new.windows(2).any(|w| w == b"\n\n") || new.windows(3).any(|w| w == b"\n\r\n")
    })
}

/// What the start of the node's bytes is.
enum Step {
    Partial,
    /// A whole informational answer, this long.
    Informational(usize),
    Final(Head),
}

/// The answer's head at the start of `up`, judged, with the client's written into `out`.
fn response_head(
    up: &[u8],
    plan: &Plan,
    stopping: bool,
    out: &mut Vec<u8>,
) -> Result<Step, Failure> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(up) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(Step::Partial),
        Err(_) => return Err(Failure::Unreadable),
    };
    let (Some(code), Some(version)) = (resp.code, resp.version) else {
        return Err(Failure::Unreadable);
    };
    let status = StatusCode::from_u16(code).map_err(|_| Failure::Unreadable)?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(Failure::Switched);
    }
    if status.is_informational() {
        return Ok(Step::Informational(len));
    }
    write_head(&resp, status, version, len, plan, stopping, out).map(Step::Final)
}

/// Judges a final answer's head and writes the client's into `out`.
fn write_head(
    resp: &httparse::Response<'_, '_>,
    status: StatusCode,
    version: u8,
    len: usize,
    plan: &Plan,
    stopping: bool,
    out: &mut Vec<u8>,
) -> Result<Head, Failure> {
    let mut length: Option<u64> = None;
    let mut lengths = false;
    // The first `Content-Length` item, and whether they are not one number: a body's framing
    // then cannot be known, which matters only when there is a body.
    let mut first_length: Option<&[u8]> = None;
    let mut bad_length = false;
    // `Transfer-Encoding`: present; its last coding (as hyper reads it, the last line's last
    // item) is `chunked`; anything but one `chunked`.
    let (mut transfer_coded, mut chunked, mut codings) = (false, false, false);
    let mut chunkeds = 0;
    let (mut close, mut keep_alive, mut listed) = (false, false, false);
    for header in resp.headers.iter() {
        let name = header.name;
        // hyper's client refuses a name or value this long.
        if name.len() >= 1 << 16 || header.value.len() >= 1 << 16 {
            return Err(Failure::Unreadable);
        }
        if name.eq_ignore_ascii_case("content-length") {
            lengths = true;
            for item in header.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                first_length.get_or_insert(item);
                match parse_length(item) {
                    Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
                    _ => bad_length = true,
                }
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_coded = true;
            chunked = false;
            for coding in header.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                // An empty last item (`chunked,`) is not `chunked` to hyper either.
                chunked = coding.eq_ignore_ascii_case(b"chunked");
                if chunked {
                    chunkeds += 1;
                } else if !coding.is_empty() {
                    codings = true;
                }
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in header.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                } else if !token.is_empty() {
                    close |= token.eq_ignore_ascii_case(b"close");
                    listed = true;
                }
            }
        }
    }
    // `chunked` once, as the only coding.
    codings |= chunkeds > 1;

    if transfer_coded && lengths {
        return Err(Failure::BothFramings);
    }
    if codings || (transfer_coded && !chunked) {
        return Err(Failure::OtherCoding);
    }
    let node_close = close || (version == 0 && !keep_alive);
    let bodiless =
        plan.head_only || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    // A length that is no number, or a transfer coding in HTTP/1.0 (which has none), leaves a
    // body's end unknown (hyper's client refuses both).
    if (bad_length || (transfer_coded && version == 0)) && !bodiless {
        return Err(Failure::Unreadable);
    }
    let framing = if bodiless {
        Framing::None
    } else if chunked {
        Framing::Chunked
    } else if let Some(length) = length {
        Framing::Length(length)
    } else {
        Framing::UntilClose
    };
    let client_close = plan.close || stopping;
    out.clear();
    status_line(out, status, resp.reason.unwrap_or_default());
    let mut dated = false;
    for header in resp.headers.iter() {
        let mut lower = [0u8; 24];
        let name = lowercase(header.name, &mut lower).unwrap_or_default();
        // A 426 must say which protocols would do (RFC 9110 §15.5.22).
        let required = name == "upgrade" && status == StatusCode::UPGRADE_REQUIRED;
        if !required
            && (name == "content-length"
                || is_hop_by_hop(name)
                // Trailer fields are declared for a body (hyper drops it with none).
                || (name == "trailer" && framing == Framing::None)
                || (listed && connection_lists(resp.headers, header.name)))
        {
            continue;
        }
        dated |= name == "date";
        push_lowercase(out, header.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(header.value);
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        // As the node wrote it (`0005` too), once (the hyper path's rule for a repeated one).
        Framing::Length(_) => {
            if let Some(first) = first_length {
                push_header(out, b"content-length", first);
            }
        }
        Framing::Chunked | Framing::UntilClose => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        // A `HEAD`'s length says what a `GET` would get, passed on as the node gave it (its
        // first item, as the hyper path does); 204 and 304 have none.
        Framing::None => {
            if let (Some(first), true) = (
                first_length,
                plan.head_only && status != StatusCode::NO_CONTENT,
            ) {
                push_header(out, b"content-length", first);
            }
        }
    }
    end_head(out, !dated, client_close);
    Ok(Head {
        len,
        framing,
        node_keeps: !node_close && framing != Framing::UntilClose,
        close: client_close,
    })
}

/// `HTTP/1.1 <status> <reason>` (the node's reason as it gave it, empty too, as hyper passes it).
fn status_line(out: &mut Vec<u8>, status: StatusCode, reason: &str) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Ends a head for the client: a `Date` if `date`, `Connection: close` if `close`.
fn end_head(out: &mut Vec<u8>, date: bool, close: bool) {
    if date {
        out.extend_from_slice(b"date: ");
        date::push(out);
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Whether the answer's `Connection` lists `name` (other than as `close` or `keep-alive`): a
/// header for the gateway's hop only. `Content-Length` and `Host` are the message's own.
fn connection_lists(headers: &[httparse::Header<'_>], name: &str) -> bool {
    if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("host") {
        return false;
    }
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
}

fn push_lowercase(out: &mut Vec<u8>, name: &[u8]) {
    out.extend(name.iter().map(u8::to_ascii_lowercase));
}

fn push_length(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A `Content-Length` item: digits only, as hyper's client reads it.
fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
            .flatten()
    })
}

/// Writes `out` to the client and clears it.
async fn send<S: AsyncWrite + Unpin>(client: &mut S, out: &mut Vec<u8>) -> Result<(), ()> {
    let sent = client.write_all(out).await.map_err(|_| ());
    out.clear();
    sent
}

/// `work`, with the client's connection watched meanwhile: `Err` when the client closes it (or
/// it fails, or one of the connection's limits passes) first. What the client sends meanwhile
/// (the start of its next request) is kept in `pending`.
///
/// The client is looked at before `work` starts (one that left before the request went out
/// never has it sent), and after `work` on each wake-up after that (an answer that came is
/// taken without another look).
async fn watching<S: AsyncRead + Unpin, T>(
    client: &mut S,
    pending: &mut BytesMut,
    work: impl Future<Output = T>,
) -> Result<T, ()> {
    let mut work = pin!(work);
    let mut started = false;
    std::future::poll_fn(|cx| {
        if started {
            if let Poll::Ready(done) = work.as_mut().poll(cx) {
                return Poll::Ready(Ok(done));
            }
        }
        // Only until the client's next request begins (as hyper, which then stops looking for its
        // end): a client that sends requests and then closes its side gets its answers.
        while pending.is_empty() {
            let mut chunk = [std::mem::MaybeUninit::<u8>::uninit(); 1024];
            let mut read = ReadBuf::uninit(&mut chunk);
            match Pin::new(&mut *client).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if !read.filled().is_empty() => {
                    pending.extend_from_slice(read.filled());
                }
                // Closed, failed, or timed out.
                Poll::Ready(_) => return Poll::Ready(Err(())),
                Poll::Pending => break,
            }
        }
        if !started {
            started = true;
            if let Poll::Ready(done) = work.as_mut().poll(cx) {
                return Poll::Ready(Ok(done));
            }
        }
        Poll::Pending
    })
    .await
}

/// What passing on an answer's body needs.
struct Body<'a, S> {
    node: &'a mut TcpStream,
    client: &'a mut S,
    /// The client's bytes read and not served yet.
    pending: &'a mut BytesMut,
    /// How long the node may send nothing.
    idle: Duration,
    /// The service and node address it comes from, for the log.
    from: (&'a str, &'a str),
    nodes: &'a [Node],
}

impl<S: AsyncRead + AsyncWrite + Unpin> Body<'_, S> {
    /// Logs that the body broke off (`how`), naming its node.
    fn broke_off(&self, how: &str) {
        let (service, address) = self.from;
        let id = self
            .nodes
            .iter()
            .find(|n| n.address == address)
            .map_or("", |n| n.id.as_str());
        tracing::warn!(%service, node = %id, %address, "backend response body {how}; the client got it cut short");
    }

    /// The next bytes of the body into `up` (empty before), how many (0: the node closed): an
    /// error when the node sends nothing for the idle limit or fails, or the client leaves.
    async fn read(&mut self, up: &mut BytesMut) -> Result<usize, ()> {
        up.reserve(16 << 10);
        let read = tokio::time::timeout(self.idle, self.node.read_buf(up));
        match watching(self.client, self.pending, read).await {
            Ok(Ok(Ok(n))) => Ok(n),
            Ok(Ok(Err(_))) => {
                self.broke_off("broke off");
                Err(())
            }
            Ok(Err(_)) => {
                self.broke_off("stalled for the idle timeout");
                Err(())
            }
            // The client left.
            Err(()) => Err(()),
        }
    }

    /// Passes on the `left` bytes of a body framed by its length; whether the node's
    /// connection is clean after it (it sent no more than it said).
    async fn copy_length(&mut self, up: &mut BytesMut, mut left: u64) -> Result<bool, ()> {
        while left > 0 {
            up.clear();
            let n = self.read(up).await?;
            if n == 0 {
                self.broke_off("broke off");
                return Err(());
            }
            let take = (n as u64).min(left) as usize;
            self.client.write_all(&up[..take]).await.map_err(|_| ())?;
            left -= take as u64;
            if take < n {
                // More than it said: its connection is not reused.
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Passes on a chunked body, chunk by chunk as decoded; whether the node's connection is
    /// clean after it.
    async fn relay_chunks(
        &mut self,
        out: &mut Vec<u8>,
        up: &mut BytesMut,
        chunks: &mut Chunks,
    ) -> Result<bool, ()> {
        loop {
            let Ok(used) = chunks.feed(up, out) else {
                // What came whole goes out (the head, as on the hyper path); the end never does.
                self.broke_off("was malformed chunked");
                let _ = send(self.client, out).await;
                return Err(());
            };
            up.advance(used);
            if chunks.done() {
                send(self.client, out).await?;
                return Ok(up.is_empty());
            }
            if !out.is_empty() {
                send(self.client, out).await?;
            }
            up.clear();
            if self.read(up).await? == 0 {
                self.broke_off("broke off");
                return Err(());
            }
        }
    }

    /// Passes on a body that ends when the node closes, chunked.
    async fn relay_until_close(&mut self, out: &mut Vec<u8>, up: &mut BytesMut) -> Result<(), ()> {
        loop {
            if !up.is_empty() {
                push_chunk(out, up);
                up.clear();
            }
            send(self.client, out).await?;
            if self.read(up).await? == 0 {
                break;
            }
        }
        out.extend_from_slice(b"0\r\n\r\n");
        send(self.client, out).await
    }
}

fn push_chunk(out: &mut Vec<u8>, data: &[u8]) {
    push_size(out, data.len() as u64);
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

fn push_size(out: &mut Vec<u8>, n: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = HEX[(n & 15) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// A chunked body's decoder, which writes what it decodes as chunks again: only whole,
/// well-formed chunks pass (RFC 9112 §7.1), extensions and trailers do not (the client did not
/// ask for trailers with `TE`). Limits as hyper's decoder: 16 KiB of extensions over the body,
/// trailers of at most 100 lines and 16 KiB.
#[derive(Debug, Default)]
struct Chunks {
    state: ChunkState,
    extensions: usize,
    trailers: usize,
    trailer_lines: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Before a size's first hex digit.
    #[default]
    Start,
    /// The size so far.
    Size(u64),
    /// Whitespace after the size.
    SizeSpace(u64),
    Extension(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the empty line that ends the body).
    Trailer,
    TrailerName,
    TrailerValue,
    TrailerLf,
    EndLf,
    Done,
}

const MAX_TRAILER_LINES: usize = 100;

impl Chunks {
    fn done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes what it can of `input`, encoding it again into `out`; how many bytes it used
    /// (all, unless the body ended before them).
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, ()> {
        use ChunkState::*;
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            if matches!(
                self.state,
                Trailer | TrailerName | TrailerValue | TrailerLf | EndLf
            ) {
                self.trailers += 1;
                if self.trailers > MAX_CHUNK_TRAILERS {
                    return Err(());
                }
            }
            self.state = match self.state {
                Start => Size(hex(b).ok_or(())?),
                Size(n) => match (b, hex(b)) {
                    (_, Some(d)) => {
                        Size(n.checked_mul(16).and_then(|n| n.checked_add(d)).ok_or(())?)
                    }
                    (b' ' | b'\t', _) => SizeSpace(n),
                    (b';', _) => Extension(n),
                    (b'\r', _) => SizeLf(n),
                    _ => return Err(()),
                },
                SizeSpace(n) => match b {
                    b' ' | b'\t' => SizeSpace(n),
                    b';' => Extension(n),
                    b'\r' => SizeLf(n),
                    _ => return Err(()),
                },
                Extension(n) => match b {
                    b'\r' => SizeLf(n),
                    b'\n' => return Err(()),
                    _ => {
                        self.extensions += 1;
                        if self.extensions >= MAX_CHUNK_EXTENSIONS {
                            return Err(());
                        }
                        Extension(n)
                    }
                },
                SizeLf(n) => match (b, n) {
                    (b'\n', 0) => Trailer,
                    (b'\n', n) => {
                        push_size(out, n);
                        Data(n)
                    }
                    _ => return Err(()),
                },
                Data(n) => {
                    let take = (input.len() - i).min(usize::try_from(n).unwrap_or(usize::MAX));
                    out.extend_from_slice(&input[i..i + take]);
                    i += take;
                    let left = n - take as u64;
                    self.state = if left == 0 {
                        out.extend_from_slice(b"\r\n");
                        DataCr
                    } else {
                        Data(left)
                    };
                    continue;
                }
                DataCr => match b {
                    b'\r' => DataLf,
                    _ => return Err(()),
                },
                DataLf => match b {
                    b'\n' => Start,
                    _ => return Err(()),
                },
                // `name: value`, as httparse reads a header line.
                Trailer => match b {
                    b'\r' => EndLf,
                    _ if is_token(b) => {
                        self.trailer_lines += 1;
                        if self.trailer_lines > MAX_TRAILER_LINES {
                            return Err(());
                        }
                        TrailerName
                    }
                    _ => return Err(()),
                },
                TrailerName => match b {
                    b':' => TrailerValue,
                    _ if is_token(b) => TrailerName,
                    _ => return Err(()),
                },
                TrailerValue => match b {
                    b'\r' => TrailerLf,
                    b'\t' | b' '..=b'~' | 0x80.. => TrailerValue,
                    _ => return Err(()),
                },
                TrailerLf => match b {
                    b'\n' => Trailer,
                    _ => return Err(()),
                },
                EndLf => match b {
                    b'\n' => {
                        out.extend_from_slice(b"0\r\n\r\n");
                        self.state = Done;
                        return Ok(i + 1);
                    }
                    _ => return Err(()),
                },
                Done => return Ok(i),
            };
            i += 1;
        }
        Ok(i)
    }
}

/// Whether `b` may be in a header name (RFC 9110 §5.6.2 `tchar`).
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn hex(b: u8) -> Option<u64> {
    (b as char).to_digit(16).map(u64::from)
}

/// Answers the client with the gateway's JSON error; whether its connection stays open.
async fn answer_error<S: AsyncWrite + Unpin>(
    lane: &mut Lane,
    client: &mut S,
    plan: &Plan,
    stop: &AtomicBool,
    status: StatusCode,
    detail: &str,
) -> bool {
    let body = error::body(status, detail);
    let close = plan.close || stop.load(Ordering::Relaxed);
    lane.exchanges.responding();
    let out = &mut lane.out;
    out.clear();
    status_line(out, status, status.canonical_reason().unwrap_or_default());
    out.extend_from_slice(b"content-type: application/json\r\n");
    push_length(out, body.len() as u64);
    end_head(out, true, close);
    if !plan.head_only {
        out.extend_from_slice(body.as_bytes());
    }
    send(client, out).await.is_ok() && !close
}

/// The lane's kept-alive connections to nodes, per worker (each worker's live on its own event
/// loop) and node address; closed after the idle limit by a sweep.
pub(crate) struct Lanes {
    shards: Arc<[Mutex<Shard>]>,
    idle_limit: Duration,
}

#[derive(Default)]
struct Shard {
    nodes: HashMap<String, Vec<Idle>, foldhash::fast::RandomState>,
    /// Whether a sweep task runs for this shard.
    sweeping: bool,
}

struct Idle {
    stream: TcpStream,
    since: Instant,
}

impl Idle {
    /// Whether it looks open: readable while idle, the node closed it (or broke the protocol).
    /// Told by the event loop's readiness, without a system call.
    /// (A read that filled its buffer exactly leaves the socket marked readable: then one
    /// byte is tried for, which clears the mark of an open one.)
    fn open(&self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        if self.stream.poll_read_ready(&mut cx).is_pending() {
            return true;
        }
        matches!(self.stream.try_read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

/// A kept-alive connection taken at least this long after its last answer may have been
/// closed by its node's keep-alive timeout just as a request goes out on it (as the hyper
/// path's pool judges).
const STALE_AFTER: Duration = Duration::from_millis(100);

impl Lanes {
    pub(crate) fn new(idle_limit: Duration) -> Lanes {
        Lanes {
            shards: (0..MAX_WORKERS).map(|_| Mutex::default()).collect(),
            idle_limit,
        }
    }

    /// This worker's own (a connection is used only on the event loop it was opened on).
    fn shard(&self) -> (usize, std::sync::MutexGuard<'_, Shard>) {
        let i = crate::api::pool::worker().min(MAX_WORKERS - 1);
        let shard = self.shards[i].lock().unwrap_or_else(|p| p.into_inner());
        (i, shard)
    }

    /// The kept connection to `target` used last that has not been idle too long and that the
    /// node has not closed (or sent anything on), if there is one.
    /// Also says whether it sat idle long enough for the node to have closed it for that
    /// ([`STALE_AFTER`]).
    fn take(&self, target: &str) -> Option<(TcpStream, bool)> {
        let (_, mut shard) = self.shard();
        let conns = shard.nodes.get_mut(target)?;
        while let Some(idle) = conns.pop() {
            let idle_for = idle.since.elapsed();
            if idle_for < self.idle_limit && idle.open() {
                return Some((idle.stream, idle_for >= STALE_AFTER));
            }
        }
        None
    }

    /// Keeps `stream` for the next request to `target`.
    fn put(&self, target: &str, stream: TcpStream) {
        let (i, mut shard) = self.shard();
        let conns = match shard.nodes.get_mut(target) {
            Some(conns) => conns,
            None => shard.nodes.entry(target.to_string()).or_default(),
        };
        if conns.len() >= MAX_PER_NODE {
            return;
        }
        conns.push(Idle {
            stream,
            since: Instant::now(),
        });
        if !shard.sweeping {
            shard.sweeping = true;
            let shards = Arc::clone(&self.shards);
            let limit = self.idle_limit;
            tokio::spawn(sweep(shards, i, limit));
        }
    }

    /// Closes the kept connections to `target` (after an answer whose framing was ambiguous).
    fn discard(&self, target: &str) {
        let (_, mut shard) = self.shard();
        shard.nodes.remove(target);
    }
}

/// Closes shard `i`'s connections idle for `limit`, every half of it (at most every 30 s),
/// until the shard has none.
async fn sweep(shards: Arc<[Mutex<Shard>]>, i: usize, limit: Duration) {
    /// Says the shard has no sweep when the sweep is dropped unfinished (its event loop ended).
    struct Unfinished(Arc<[Mutex<Shard>]>, usize, bool);
    impl Drop for Unfinished {
        fn drop(&mut self) {
            if self.2 {
                let mut shard = self.0[self.1].lock().unwrap_or_else(|p| p.into_inner());
                shard.sweeping = false;
            }
        }
    }
    let mut unfinished = Unfinished(Arc::clone(&shards), i, true);
    let every = (limit / 2).clamp(Duration::from_millis(10), Duration::from_secs(30));
    loop {
        tokio::time::sleep(every).await;
        let mut shard = shards[i].lock().unwrap_or_else(|p| p.into_inner());
        shard.nodes.retain(|_, conns| {
            conns.retain(|idle| idle.since.elapsed() < limit && idle.open());
            !conns.is_empty()
        });
        if shard.nodes.is_empty() {
            // Under the lock that `put` looks at it with.
            shard.sweeping = false;
            unfinished.2 = false;
            return;
        }
    }
}

/// A connection's stream with bytes read from it already put back in front, for hyper to
/// read first.
pub(crate) struct Rewind<S> {
    read: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    pub(crate) fn new(read: Bytes, inner: S) -> Rewind<S> {
        Rewind { read, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read[..n]);
            self.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The `Date` header's value, formatted once a second per thread.
mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        static NOW: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }

    pub(super) fn push(out: &mut Vec<u8>) {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        NOW.with(|cached| {
            let mut cached = cached.borrow_mut();
            if cached.0 != second || cached.1.is_empty() {
                *cached = (second, httpdate::fmt_http_date(now));
            }
            out.extend_from_slice(cached.1.as_bytes());
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(pieces: &[&[u8]]) -> Result<(Vec<u8>, bool, usize), ()> {
        let mut chunks = Chunks::default();
        let mut out = Vec::new();
        let mut left = 0;
        for piece in pieces {
            let used = chunks.feed(piece, &mut out)?;
            left += piece.len() - used;
        }
        Ok((out, chunks.done(), left))
    }

    #[test]
    fn chunks_are_passed_on_whole_and_in_their_own_framing() {
        let body: &[u8] = b"5;name=value\r\nhello\r\nA \r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\n";
        let want = b"5\r\nhello\r\na\r\n0123456789\r\n0\r\n\r\n".to_vec();
        assert_eq!(decode(&[body]).unwrap(), (want.clone(), true, 0));
        // Byte by byte: the same.
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(decode(&bytes).unwrap(), (want, true, 0));
        // Bytes after the end are not used.
        assert_eq!(
            decode(&[b"0\r\n\r\nHTTP/1.1"]).unwrap(),
            (b"0\r\n\r\n".to_vec(), true, 8)
        );
        // Unfinished: not done.
        assert!(!decode(&[b"5\r\nhel"]).unwrap().1);
        // Sizes by value (leading zeros), not by their digits.
        assert_eq!(
            decode(&[b"00000000000000000005\r\nhello\r\n0\r\n\r\n"]).unwrap(),
            (b"5\r\nhello\r\n0\r\n\r\n".to_vec(), true, 0)
        );
        // At most 100 trailer lines.
        let trailers = |n: usize| {
            let mut body = b"0\r\n".to_vec();
            for i in 0..n {
                body.extend_from_slice(format!("x-t{i}: v\r\n").as_bytes());
            }
            body.extend_from_slice(b"\r\n");
            decode(&[&body]).map(|(_, done, _)| done)
        };
        assert_eq!(trailers(100), Ok(true));
        assert_eq!(trailers(101), Err(()));
    }

    #[test]
    fn malformed_chunks_are_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\nhello\r\n",
            b"5\r\nhelloX\r\n",
            b"5\r\nhello\rX",
            b"11111111111111111\r\n",
            b"0\r\nno colon\r\n\r\n",
            b"0\r\n: empty name\r\n\r\n",
            b"0\r\nx: bad\x01\r\n\r\n",
            b"5;a\nb\r\n",
            b"0\r\nx\n",
            b"-1\r\n",
            b"0x5\r\n",
        ] {
            assert!(
                decode(&[bad]).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn lengths_are_digits_only() {
        assert_eq!(parse_length(b"0"), Some(0));
        assert_eq!(parse_length(b"1234"), Some(1234));
        for bad in [
            &b""[..],
            b"+1",
            b"-1",
            b"1 2",
            b"0x1",
            b"99999999999999999999",
        ] {
            assert_eq!(parse_length(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn sizes_and_lengths_are_written_as_numbers() {
        let mut out = Vec::new();
        push_size(&mut out, 0x1f3a);
        push_length(&mut out, 0);
        push_length(&mut out, u64::MAX);
        assert_eq!(
            out,
            format!(
                "1f3a\r\ncontent-length: 0\r\ncontent-length: {}\r\n",
                u64::MAX
            )
            .as_bytes()
        );
    }
}
