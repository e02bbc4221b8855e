//! `rmicro api`: the HTTP gateway.
//!
//! ```text
//! rmicro api --handler http --address 0.0.0.0:8080 [--namespace go.micro.api] \
//!     [--registry etcd --registry-address 127.0.0.1:2379] [plugin flags]
//! ```
//!
//! `/user/...` is proxied, path unchanged, to a node of `go.micro.api.user`; `/v1/user/...` to
//! `go.micro.api.v1.user` (see [`proxy`] for the error statuses). Header-read and idle timeouts,
//! a backend timeout and a request body limit are on by default. [Plugins](plugin) wrap the proxy.

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use axum_core::body::Body;
use futures_util::FutureExt;
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rmicro_runtime::config::{parse_duration, parse_positive_duration, RegistryFlags};
use rmicro_runtime::errors::panic_message;
use rmicro_runtime::selector::{Random, RoundRobin, Selector};
use rmicro_runtime::Registry;
use tower::{Layer, ServiceExt};

mod address;
mod conn;
pub mod error;
pub mod plugin;
pub mod plugins;
mod pool;
pub mod proxy;
pub mod resolve;
pub mod rpc;
mod shutdown;
#[cfg(feature = "tls")]
pub mod tls;
mod tunnel;
mod upload;
pub mod workers;

use plugin::{HttpService, Plugin, PluginContext, PluginError};

/// `rmicro api` flags (plugins add theirs).
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// How requests reach services: `http` proxies them to HTTP services, `rpc` turns JSON into
    /// gRPC calls.
    #[arg(long, env = "MICRO_API_HANDLER", default_value = "http", value_parser = ["http", "rpc"])]
    pub handler: String,
    /// Where the gateway listens.
    #[arg(long, env = "MICRO_API_ADDRESS", default_value = "0.0.0.0:8080")]
    pub address: String,
    /// Worker threads, each with its own event loop, listening socket (SO_REUSEPORT) and
    /// backend connections, as nginx's worker processes (default: one per CPU).
    #[arg(long, env = "MICRO_API_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,
    /// Namespace of the services it routes to: `/user` → `<namespace>.user`.
    #[arg(long, env = "MICRO_API_NAMESPACE", default_value = "go.micro.api")]
    pub namespace: String,
    /// The registry.
    #[command(flatten)]
    pub registry: RegistryFlags,
    /// How a node is picked: random or roundrobin.
    #[arg(long, env = "MICRO_SELECTOR", default_value = "random", value_parser = ["random", "roundrobin"])]
    pub selector: String,
    /// Time a client has to send a request's headers, from their first byte (keep-alive waits
    /// and request bodies are not limited by it; HTTP/2 connections only by the idle timeout).
    /// More than 0, as the idle and backend timeouts.
    #[arg(long, env = "MICRO_API_READ_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub read_header_timeout: Duration,
    /// Time a connection is kept open without traffic (HTTP/1) or without a request in
    /// progress (HTTP/2, whose pings are traffic). At most 100 years.
    #[arg(long, env = "MICRO_API_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_positive_duration)]
    pub idle_timeout: Duration,
    /// Time a backend has to answer (504 after).
    #[arg(long, env = "MICRO_API_BACKEND_TIMEOUT", default_value = "30s", value_parser = parse_positive_duration)]
    pub backend_timeout: Duration,
    /// Time a kept-alive connection to a backend is kept unused before the gateway closes it
    /// (http handler).
    #[arg(long, env = "MICRO_API_BACKEND_IDLE_TIMEOUT", default_value = "90s", value_parser = parse_positive_duration)]
    pub backend_idle_timeout: Duration,
    /// Time requests in flight and open tunnels (WebSocket and other upgraded connections) get
    /// to finish once the gateway is told to stop; tunnels still open then are closed.
    #[arg(long, env = "MICRO_API_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// Pass on the `Forwarded`, `X-Forwarded-Host`, `-Proto`, `-Port`, `-Ssl`, `-Scheme`,
    /// `X-Real-IP`, `X-Url-Scheme` and `Front-End-Https` headers clients send. Turn it on behind
    /// a load balancer that sets them; off, they are removed, so a client cannot claim to have
    /// come over HTTPS or for another host. `X-Forwarded-For` gets the client's address
    /// appended either way; `X-Original-URL` and `X-Rewrite-URL` are removed either way.
    #[arg(long, env = "MICRO_API_TRUST_FORWARDED", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub trust_forwarded: bool,
    /// Serve plain HTTP/1.1 `GET` and `HEAD` requests on the gateway's own HTTP/1.1 path (the
    /// express lane) instead of hyper's, when no plugin is on and neither clients nor nodes are
    /// reached over TLS: the same answers for about a third less CPU per request. Every other
    /// request goes through hyper either way.
    #[arg(long, env = "MICRO_API_EXPRESS_LANE", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true", default_value = "true")]
    pub express_lane: bool,
    /// Largest request body accepted (413 above): bytes, or with KiB/MiB.
    #[arg(long, env = "MICRO_API_BODY_LIMIT", default_value = "10MiB", value_parser = parse_size)]
    pub body_limit: usize,
    /// Serve HTTPS with this certificate chain (PEM file: the server's certificate, then its
    /// intermediates); needs --tls-key. HTTP/2 and HTTP/1.1 are offered by ALPN. SIGHUP re-reads
    /// both files.
    #[arg(
        long,
        env = "MICRO_API_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    pub tls_cert: Option<std::path::PathBuf>,
    /// Private key of --tls-cert (PEM file, unencrypted).
    #[arg(
        long,
        env = "MICRO_API_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    pub tls_key: Option<std::path::PathBuf>,
    /// TLS to the nodes (`--client-tls-*`, as the runtime's clients take them): the rpc
    /// handler's gRPC calls, and the http handler's requests (HTTP/1.1 over TLS) to nodes that
    /// registered `secure=true`, or to every node once a CA is given.
    #[command(flatten)]
    pub client_tls: rmicro_runtime::config::ClientTlsFlags,
}

/// What the request handlers (`http` and `rpc`) need.
#[derive(Clone)]
pub struct HandlerConfig {
    /// Service namespace, e.g. `go.micro.api`.
    pub namespace: String,
    /// Where services are looked up.
    pub registry: Arc<dyn Registry>,
    /// How a node is picked.
    pub selector: Arc<dyn Selector>,
    /// Time a backend has to answer.
    pub backend_timeout: Duration,
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
    /// Whether the forwarding headers clients send (other than `X-Forwarded-For`, which is
    /// appended to) are passed on; otherwise they are removed.
    pub trust_forwarded: bool,
    /// Whether clients reach the gateway over HTTPS: nodes are then told so with
    /// `X-Forwarded-Proto: https` (unless the forwarding headers clients send are trusted).
    pub https: bool,
    /// TLS to the services the rpc handler calls, if they serve it.
    #[cfg(feature = "tls")]
    pub client_tls: Option<rmicro_runtime::tls::ClientTls>,
}

/// Parses `1048576`, `512KiB`, `10MiB`.
///
/// # Errors
///
/// A message saying which forms are accepted.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size; use forms like 1048576, 512KiB or 10MiB"))?;
    let factor = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "KB" => 1024,
        "MiB" | "M" | "MB" => 1024 * 1024,
        "GiB" | "G" | "GB" => 1024 * 1024 * 1024,
        other => {
            return Err(format!(
                "`{text}` has an unknown unit `{other}`; use KiB, MiB or GiB (KB, MB and GB \
                 are taken as the same binary units, as go-micro's sizes are)"
            ))
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// The built-in plugins, in their order.
pub fn builtin_plugins() -> Vec<Box<dyn Plugin>> {
    vec![
        // Outermost: it counts every request, those the plugins below answer too.
        Box::new(plugins::RequestMetrics::default()),
        Box::new(plugins::AccessLog::default()),
        Box::new(plugins::Health::default()),
        Box::new(plugins::Cors::default()),
        Box::new(plugins::TokenAuth::default()),
    ]
}

/// A configured gateway, ready to serve. Clones share the handlers (node cache, connections).
///
/// `rmicro api` builds one from its command line; build one yourself to serve it inside a
/// program of your own, or to test a plugin in-process against a memory registry:
///
/// ```no_run
/// use std::sync::Arc;
///
/// use rmicro::api::plugin::clap::FromArgMatches;
/// use rmicro::api::{ApiArgs, Gateway};
/// use rmicro_runtime::registry::{MemoryRegistry, Registry};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let cli = rmicro::Cli::new(); // cli.plugin(MyPlugin::default())?;
/// let matches = cli
///     .command()
///     .try_get_matches_from(["rmicro", "api", "--address", "127.0.0.1:0"])?;
/// let api = matches.subcommand_matches("api").expect("the api subcommand");
/// let args = ApiArgs::from_arg_matches(api)?;
/// let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
/// let gateway = Gateway::new(args, api, cli.into_plugins(), Some(registry))?;
///
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// println!("gateway on {}", listener.local_addr()?);
/// gateway.serve(listener, std::future::pending()).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Gateway {
    args: ApiArgs,
    service: HttpService,
    /// The proxy, when it is the whole pipeline (`http` handler, no plugin on): connections
    /// call it directly, without the boxed service stack plugins need.
    direct: Option<proxy::Proxy>,
    /// HTTPS, when `--tls-cert` and `--tls-key` are given.
    #[cfg(feature = "tls")]
    tls: Option<tls::Tls>,
    /// TLS to the nodes, when `--client-tls-ca` is given (shared with the handler's clients).
    #[cfg(feature = "tls")]
    client_tls: Option<rmicro_runtime::tls::ClientTls>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("args", &self.args)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Builds the gateway: initialises each plugin with the parsed `matches`, then wraps the
    /// proxy in their layers (the first plugin outermost). `registry` overrides the flags' one.
    ///
    /// # Errors
    ///
    /// A plugin's init error, a registry the flags cannot build, or a TLS certificate or key
    /// that cannot be used.
    pub fn new(
        args: ApiArgs,
        matches: &clap::ArgMatches,
        mut plugins: Vec<Box<dyn Plugin>>,
        registry: Option<Arc<dyn Registry>>,
    ) -> Result<Gateway, Box<dyn std::error::Error>> {
        #[cfg(feature = "tls")]
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(tls::Tls::load(cert, key)?),
            _ => None,
        };
        #[cfg(not(feature = "tls"))]
        if args.tls_cert.is_some() || args.tls_key.is_some() {
            return Err(
                "this rmicro was built without HTTPS support (its `tls` feature): \
                 build it with `--features tls`, or end TLS in front of the gateway"
                    .into(),
            );
        }
        let registry = match registry {
            Some(r) => r,
            None => args.registry.build()?,
        };
        let ctx = PluginContext {
            registry: Arc::clone(&registry),
        };
        for plugin in &mut plugins {
            plugin.init(matches, &ctx)?;
        }
        let selector: Arc<dyn Selector> = if args.selector == "roundrobin" {
            Arc::new(RoundRobin::default())
        } else {
            Arc::new(Random)
        };
        #[cfg(feature = "tls")]
        let client_tls = args.client_tls.build()?;
        #[cfg(not(feature = "tls"))]
        args.client_tls.build()?;
        #[cfg(feature = "tls")]
        let reloadable_client_tls = client_tls.clone();
        let config = HandlerConfig {
            namespace: args.namespace.clone(),
            registry,
            selector,
            backend_timeout: args.backend_timeout,
            body_limit: args.body_limit,
            trust_forwarded: args.trust_forwarded,
            https: args.tls_cert.is_some(),
            #[cfg(feature = "tls")]
            client_tls,
        };
        let mut direct = None;
        let mut service = if args.handler == "rpc" {
            let handler = rpc::RpcHandler::new(config);
            HttpService::new(tower::service_fn(move |req| {
                let handler = handler.clone();
                async move { Ok(handler.handle(req).await) }
            }))
        } else {
            let proxy = proxy::Proxy::with_idle_limits(
                config,
                args.idle_timeout,
                args.backend_idle_timeout,
            );
            direct = Some(proxy.clone());
            HttpService::new(tower::service_fn(move |req| {
                proxy.clone().handle_boxed(req)
            }))
        };
        // The first plugin is the outermost layer: wrapped last.
        let mut on = Vec::new();
        for plugin in plugins.iter().rev() {
            if let Some(layer) = plugin.layer() {
                on.push(plugin.name());
                service = layer.layer(service);
                direct = None;
            }
        }
        for name in on.iter().rev() {
            tracing::info!(plugin = name, "plugin on");
        }
        // Before any plugin sees a request, its host and path are checked, and a host its target names
        // (absolute form, HTTP/2's `:authority`) becomes its `Host`: plugins see the host the
        // node will (the direct path does the same in the proxy; behind plugins it does not
        // again). The headers the client lists in `Connection` are removed then too, so that
        // none a plugin sets can be removed by the client after it, and an HTTP/2 client's
        // cookie fields are joined into the one line HTTP/1.1 nodes expect.
        let pipeline = service;
        // Those answered here are in the access log too (not in the metrics: made-up targets
        // would make series of their own).
        let access_log = on.contains(&"access-log");
        let service = HttpService::new(tower::service_fn(move |mut req: Request<Body>| {
            let pipeline = pipeline.clone();
            async move {
                if let Some(problem) = proxy::target_problem(&req) {
                    let resp = error::response(http::StatusCode::BAD_REQUEST, problem);
                    if access_log {
                        plugins::access_log::log_refused(&req, &resp);
                    }
                    return Ok(resp);
                }
                proxy::host_from_target(&mut req);
                if req.version() == http::Version::HTTP_2 {
                    proxy::join_cookies(req.headers_mut());
                }
                proxy::strip_connection_listed(req.headers_mut());
                // A plugin (or the handler behind it) that panics answers this request 500, as
                // go-micro's servers recover a panic; without this the panic would end the
                // client's connection with nothing said, and its other requests with it.
                let (method, path) = (req.method().clone(), req.uri().path().to_owned());
                match AssertUnwindSafe(pipeline.oneshot(req)).catch_unwind().await {
                    Ok(response) => response,
                    Err(panic) => Ok(panicked(&method, &path, &*panic)),
                }
            }
        }));
        Ok(Gateway {
            args,
            service,
            direct,
            #[cfg(feature = "tls")]
            tls,
            #[cfg(feature = "tls")]
            client_tls: reloadable_client_tls,
        })
    }

    /// Whether the gateway serves HTTPS.
    pub fn serves_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }

    /// Whether it has TLS files to re-read: its own certificate (`--tls-cert`), or the CA and
    /// certificate it reaches nodes with (`--client-tls-*`).
    pub fn has_tls_files(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some() || self.client_tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }

    /// Reads the TLS files again (`rmicro api` does on `SIGHUP`): its own certificate and key,
    /// and the CA, certificate and key of `--client-tls-*`. Connections opened from now on,
    /// by clients and to nodes, get what they hold; open ones keep theirs. Does nothing
    /// without TLS files.
    ///
    /// Reads the files of each set on its own: one that cannot be used leaves the set in use
    /// as it was, and the other is still reloaded.
    ///
    /// # Errors
    ///
    /// Why the files of a set cannot be used (each such set, and which other set was reloaded);
    /// the ones in use then stay.
    pub fn reload_tls(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        #[cfg(feature = "tls")]
        {
            let sets = [
                self.tls
                    .as_ref()
                    .map(|t| ("--tls-cert/--tls-key", t.reload())),
                self.client_tls
                    .as_ref()
                    .map(|c| ("--client-tls-*", c.reload())),
            ];
            let (mut failed, mut reloaded) = (Vec::new(), Vec::new());
            for (set, result) in sets.into_iter().flatten() {
                match result {
                    Ok(()) => reloaded.push(set),
                    Err(err) => failed.push(format!("{set}: {err}")),
                }
            }
            if !failed.is_empty() {
                let mut message = failed.join("; ");
                if !reloaded.is_empty() {
                    message.push_str(&format!(" ({} reloaded)", reloaded.join(", ")));
                }
                return Err(message.into());
            }
        }
        Ok(())
    }

    /// The whole request pipeline (plugins and proxy) as one service.
    pub fn service(&self) -> HttpService {
        self.service.clone()
    }

    /// Serves on `listener` until `shutdown` completes, then stops accepting and gives requests
    /// in flight and open tunnels (connections that switched protocols) the shutdown timeout
    /// (`--shutdown-timeout`) to finish; tunnels still open then are closed. Returns when
    /// nothing it started is left running (requests still unanswered at the deadline are
    /// dropped with the runtime), at most a second after the timeout. Each call has its own
    /// tunnels: clones of a gateway served apart stop apart.
    ///
    /// # Errors
    ///
    /// Reserved for fatal listener errors; transient accept errors are logged and retried.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            // The request-head limit is kept by the connection's stream (`conn::Timed`), on the
            // one timer it has for the idle limit, instead of a timer per request.
            .header_read_timeout(None)
            // One contiguous buffer per write. Vectored writes measured 16 % fewer requests/s
            // for small proxied responses (bench/gateway); this is also what hyper picks on its
            // own for this stream, which does not advertise vectored writes.
            .writev(false)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            // Pings find dead peers; at least hourly, whatever the idle limit.
            .keep_alive_interval(Some(
                (self.args.idle_timeout / 2).min(Duration::from_secs(3600)),
            ))
            // The request-head size HTTP/1 accepts (hyper's 400 KiB buffer), not h2's 16 KiB:
            // a request the gateway takes over one protocol is not a 431 over the other by its
            // size. (HTTP/1 also takes at most 100 header lines, hyper's default: a larger
            // `max_headers` puts the parser's line buffers on the heap for every request.)
            .max_header_list_size(400 << 10);
        let graceful = shutdown::Shutdown::default();
        // Connections that switched protocols (WebSocket, ...), closed at the end of shutdown.
        let tunnels = tunnel::Tunnels::default();
        let mut shutdown = std::pin::pin!(shutdown);
        let (idle, head) = (self.args.idle_timeout, self.args.read_header_timeout);
        let express = self.args.express_lane && !self.serves_tls();
        // What serves a connection in HTTP/1.1 alone once the express lane has served a request
        // on it, set as `builder`'s.
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .header_read_timeout(None)
            .writev(false)
            .keep_alive(true);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(err) => {
                        tracing::warn!(error = %err, "accept failed; retrying");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            // An IPv4 client of a dual-stack (`[::]`) listener comes as `::ffff:a.b.c.d`: named
            // by its IPv4 address, to the node (`X-Forwarded-For`), the plugins and the log.
            let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
            let _ = stream.set_nodelay(true);
            let exchanges = Arc::new(conn::Exchanges::default());
            let stream = Accepted {
                stream,
                peer,
                idle,
                head,
                exchanges: Arc::clone(&exchanges),
                #[cfg(feature = "tls")]
                tls: self.tls.as_ref().map(tls::Tls::acceptor),
            };
            match &self.direct {
                Some(proxy) => {
                    let proxy = proxy.clone();
                    let client = proxy::Peer::new(peer);
                    if express && proxy.express_allowed() {
                        let builders = (&builder, &http1);
                        spawn_express(builders, &graceful, stream, proxy, client, &tunnels);
                    } else {
                        let service = direct_service(&proxy, &exchanges, client, &tunnels);
                        spawn_connection(&builder, &graceful, stream, service);
                    }
                }
                None => {
                    let service = self.service.clone();
                    let tunnels = tunnels.clone();
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let finish = exchanges.start();
                        let leftover = conn::Leftover::of(&req);
                        let mut req = req
                            .map(|body| Body::new(conn::Receiving::new(body, &finish, leftover)));
                        // How plugins (and the proxy behind them) see the client's address.
                        req.extensions_mut().insert::<SocketAddr>(peer);
                        // Where the proxy puts a connection that switches protocols.
                        req.extensions_mut().insert(tunnels.clone());
                        conn::Responding::new(service.clone().oneshot(req), finish, leftover)
                    });
                    spawn_connection(&builder, &graceful, stream, service);
                }
            }
        }
        drop(listener);
        let deadline = conn::later(tokio::time::Instant::now(), self.args.shutdown_timeout);
        if tokio::time::timeout_at(deadline, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::info!("requests still in flight at the end of the shutdown grace period");
        }
        tunnels.close_by(deadline).await;
        Ok(())
    }
}

/// The answer to a request whose plugin or handler panicked with `panic`: logged with the
/// request's method and path and the panic's message, which the client is not told (it may
/// name what only the operator should see).
fn panicked(
    method: &http::Method,
    path: &str,
    panic: &(dyn std::any::Any + Send),
) -> http::Response<Body> {
    let what = panic_message(panic);
    tracing::error!(%method, %path, panic = %what, "a plugin or handler panicked; the request is answered 500");
    internal_error()
}

/// The answer to a request the gateway failed to handle: the client is not told why.
fn internal_error() -> http::Response<Body> {
    error::response(
        http::StatusCode::INTERNAL_SERVER_ERROR,
        "the gateway failed to handle the request (its log says why)",
    )
}

/// The answer to a request whose proxy (on the direct path, without plugins) panicked with
/// `panic`: logged with the panic's message (the default panic hook names where), which the
/// client is not told. The request's method and path are not kept for this: that would cost
/// every request that does not panic.
fn proxy_panicked(panic: &(dyn std::any::Any + Send)) -> http::Response<Body> {
    let what = panic_message(panic);
    tracing::error!(panic = %what, "the proxy panicked; the request is answered 500");
    internal_error()
}

/// A client connection just accepted, with what serving it needs.
struct Accepted {
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    idle: Duration,
    head: Duration,
    exchanges: Arc<conn::Exchanges>,
    /// The TLS handshake to make first, when the gateway serves HTTPS.
    #[cfg(feature = "tls")]
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Whether a client of the HTTPS port began with plain HTTP (a request line, where TLS begins
/// with a handshake record, 0x16): its first byte, looked at without taking it.
#[cfg(feature = "tls")]
async fn plain_http(stream: &tokio::net::TcpStream) -> bool {
    let mut first = [0u8; 1];
    matches!(stream.peek(&mut first).await, Ok(1) if first[0].is_ascii_uppercase())
}

/// Answers a plain HTTP request on the HTTPS port with a 400 saying so, as Go's and nginx's
/// servers do (instead of a TLS alert the client cannot read), and closes the connection.
#[cfg(feature = "tls")]
async fn answer_plain_http(stream: &mut tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let body = rmicro_runtime::errors::Error::new(
        error::ID,
        "this port serves HTTPS, and the request came as plain HTTP: send it to https://",
        400,
    )
    .to_json();
    let head = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(format!("{head}{body}").as_bytes()).await;
    let _ = stream.shutdown().await;
    // What the client sent is read before the connection is dropped (for a second at most, 64
    // KiB at most): closed with unread bytes, it would be reset, and the answer maybe lost.
    let drain = async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 4096];
        let mut read = 0;
        while read < 64 << 10 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

/// Serves one client connection on its own task, watched by `graceful`. With HTTPS, the TLS
/// handshake is made on that task too (so a slow one never holds up accepting others), within
/// the request-head limit; one still under way when shutdown begins is given up, so that a
/// client that connected and sent nothing does not hold the shutdown up.
fn spawn_connection<S, B>(
    builder: &hyper_util::server::conn::auto::Builder<TokioExecutor>,
    graceful: &shutdown::Shutdown,
    accepted: Accepted,
    service: S,
) where
    S: hyper::service::Service<Request<Incoming>, Response = http::Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Accepted {
        stream,
        peer,
        idle,
        head,
        exchanges,
        #[cfg(feature = "tls")]
        tls,
    } = accepted;
    #[cfg(feature = "tls")]
    if let Some(acceptor) = tls {
        let builder = builder.clone();
        // Watched from the start: shutdown waits for the handshake's end too, and tells the
        // task through `hear`: a handshake under way gives up (the connection would be closed
        // before its first request anyway), a connection serving finishes its request.
        let (told, mut hear) = tokio::sync::oneshot::channel::<()>();
        let mut told = Some(told);
        let handshaking = async move {
            let handshake = tokio::time::timeout(head, async move {
                let mut stream = stream;
                if plain_http(&stream).await {
                    answer_plain_http(&mut stream).await;
                    return Err(std::io::Error::other("plain HTTP sent to the HTTPS port"));
                }
                acceptor.accept(stream).await
            });
            let stream = tokio::select! {
                made = handshake => match made {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(err)) => {
                        tracing::debug!(error = %err, %peer, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake not done within {head:?}");
                        return;
                    }
                },
                _ = &mut hear => {
                    tracing::debug!(%peer, "TLS handshake given up: shutting down");
                    return;
                }
            };
            let stream = conn::Timed::new(stream, idle, head, Arc::clone(&exchanges));
            // Told to finish once serving: so is hyper.
            let told =
                |cx: &mut std::task::Context<'_>| std::pin::Pin::new(&mut hear).poll(cx).is_ready();
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            serve_told(
                conn.into_owned(),
                |c| c.graceful_shutdown(),
                exchanges,
                peer,
                told,
            )
            .await;
        };
        let watched = graceful.watch(Box::pin(handshaking), move |_| {
            if let Some(told) = told.take() {
                let _ = told.send(());
            }
        });
        tokio::spawn(watched);
        return;
    }
    let stream = conn::Timed::new(stream, idle, head, Arc::clone(&exchanges));
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    let conn = conn::ClosesWhenIdle::new(conn.into_owned(), exchanges, |c| c.graceful_shutdown());
    let conn = graceful.watch(conn, |conn| conn.stop());
    tokio::spawn(async move {
        if let Err(err) = conn.await {
            tracing::debug!(error = %err, %peer, "connection ended with an error");
        }
    });
}

/// Serves a hyper connection until it ends. Once `told` says the gateway is shutting down
/// (woken through the task when it begins), the connection is stopped (`stop`: hyper's graceful
/// shutdown, which finishes the request under way and closes).
async fn serve_told<C, E>(
    conn: C,
    stop: impl FnMut(std::pin::Pin<&mut C>),
    exchanges: Arc<conn::Exchanges>,
    peer: SocketAddr,
    mut told: impl FnMut(&mut std::task::Context<'_>) -> bool,
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let conn = conn::ClosesWhenIdle::new(conn, exchanges, stop);
    let mut conn = std::pin::pin!(conn);
    let mut finishing = false;
    let result = std::future::poll_fn(|cx| {
        if !finishing && told(cx) {
            finishing = true;
            conn.as_mut().stop();
        }
        conn.as_mut().poll(cx)
    })
    .await;
    if let Err(err) = result {
        tracing::debug!(error = %err, %peer, "connection ended with an error");
    }
}

/// The proxy as the hyper connection's service, without plugins.
fn direct_service(
    proxy: &proxy::Proxy,
    exchanges: &Arc<conn::Exchanges>,
    client: Option<proxy::Peer>,
    tunnels: &tunnel::Tunnels,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = http::Response<conn::Finishing<proxy::ProxyBody>>,
    Error = std::convert::Infallible,
    Future = impl std::future::Future<
        Output = Result<
            http::Response<conn::Finishing<proxy::ProxyBody>>,
            std::convert::Infallible,
        >,
    > + Send
                 + 'static,
> + Send
       + 'static {
    let (proxy, exchanges, tunnels) = (proxy.clone(), Arc::clone(exchanges), tunnels.clone());
    hyper::service::service_fn(move |req: Request<Incoming>| {
        let (proxy, finish) = (proxy.clone(), exchanges.start());
        let leftover = conn::Leftover::of(&req);
        let req = req.map(|body| conn::Receiving::new(body, &finish, leftover));
        let response = proxy.handle(
            req,
            client.clone(),
            Some(tunnels.clone()),
            proxy::Host::Unchecked,
        );
        let response =
            conn::NeverFails::new(conn::Recovering::new(response), std::convert::identity);
        conn::Responding::new(response, finish, leftover)
    })
}

/// Serves one plain-TCP client connection on the express lane ([`proxy::express`]) on its own
/// task, watched by `graceful`, and by hyper with the proxy as its service (no plugins: the lane
/// is not used with them) from the first request the lane does not take.
fn spawn_express(
    (builder, http1): (
        &hyper_util::server::conn::auto::Builder<TokioExecutor>,
        &hyper::server::conn::http1::Builder,
    ),
    graceful: &shutdown::Shutdown,
    accepted: Accepted,
    proxy: proxy::Proxy,
    client: Option<proxy::Peer>,
    tunnels: &tunnel::Tunnels,
) {
    let Accepted {
        stream,
        peer,
        idle,
        head,
        exchanges,
        ..
    } = accepted;
    let (builder, http1) = (builder.clone(), http1.clone());
    let service = direct_service(&proxy, &exchanges, client.clone(), tunnels);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let told = Arc::clone(&stop);
    let serving = async move {
        let mut stream = conn::Timed::new(stream, idle, head, Arc::clone(&exchanges));
        let mut buf = bytes::BytesMut::new();
        let ended = proxy::express::serve(
            &proxy,
            &mut stream,
            &mut buf,
            client.as_ref(),
            &exchanges,
            &stop,
        )
        .await;
        let proxy::express::Ended::Handoff { served } = ended else {
            return;
        };
        let stream = TokioIo::new(proxy::express::Rewind::new(buf.freeze(), stream));
        let told = |_: &mut std::task::Context<'_>| stop.load(std::sync::atomic::Ordering::SeqCst);
        if served {
            let conn = http1.serve_connection(stream, service).with_upgrades();
            serve_told(conn, |c| c.graceful_shutdown(), exchanges, peer, told).await;
        } else {
            let conn = builder
                .serve_connection_with_upgrades(stream, service)
                .into_owned();
            serve_told(conn, |c| c.graceful_shutdown(), exchanges, peer, told).await;
        }
    };
    let watched = graceful.watch(Box::pin(serving), move |_| {
        told.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    tokio::spawn(watched);
}

/// Checks plugin names are unique.
///
/// # Errors
///
/// [`PluginError::Duplicate`] naming the first repeated name.
pub fn check_unique(plugins: &[Box<dyn Plugin>]) -> Result<(), PluginError> {
    let mut seen = std::collections::HashSet::new();
    for p in plugins {
        if !seen.insert(p.name()) {
            return Err(PluginError::Duplicate(p.name().to_string()));
        }
    }
    Ok(())
}
