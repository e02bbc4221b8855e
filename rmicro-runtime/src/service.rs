//! [`Service`]: a server, a client and a registry, run as one go-micro style service.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use rmicro_runtime::Service;
//!
//! let mut service = Service::builder("go.micro.srv.user").version("latest").build();
//! // register_user_handler(service.server_mut(), MyUser)?;   (generated)
//! service.run().await?; // serves until SIGINT/SIGTERM, deregistering before it stops
//! # Ok(()) }
//! ```
//!
//! Running binds the server (port 0 picks a free port; the bound address is what gets
//! registered), registers one node and refreshes it every register interval, serves, and on the
//! shutdown signal says `NOT_SERVING` to health checks and deregisters first, then stops
//! accepting and drains calls in flight.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::client::Client;
use crate::registry::{self, Node, Registry};
use crate::server::Server;

/// go-micro's default register TTL.
pub const DEFAULT_REGISTER_TTL: Duration = Duration::from_secs(90);
/// go-micro's default re-register interval.
pub const DEFAULT_REGISTER_INTERVAL: Duration = Duration::from_secs(30);
/// The shortest register interval used: a shorter one (zero included) is raised to it, so
/// that refreshing never turns into a busy loop against the registry.
pub const MIN_REGISTER_INTERVAL: Duration = Duration::from_millis(100);
/// The longest wait between attempts to register while the registry is unreachable (at most
/// the register interval): how long a node may stay missing once the registry answers again.
pub const MAX_UNREACHABLE_RETRY: Duration = Duration::from_secs(4);
/// How long a stopping node goes on serving once it has deregistered, unless told otherwise:
/// long enough for callers' registry caches, fed by the registry's watch, to drop it (that
/// takes milliseconds), so that by the time it closes its connections no call is on its way to
/// it. Calls that race the close would otherwise fail: hyper's HTTP/2 client loses some of
/// those a GOAWAY refuses instead of handing them back to be sent elsewhere.
pub const DEFAULT_DEREGISTER_GRACE: Duration = Duration::from_secs(1);

/// Why a service could not run.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The server address could not be bound.
    #[error("could not listen on {address}: {source}")]
    Bind {
        /// The address.
        address: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("serving failed: {0}")]
    Serve(std::io::Error),
    /// The address to register is not one callers could connect to.
    #[error("cannot register `{address}` as this node's address: {reason}; advertise host:port, e.g. {example} (--server-advertise, MICRO_SERVER_ADVERTISE)")]
    Advertise {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        reason: String,
        /// A usable address on the bound port.
        example: String,
    },
    /// Waiting for SIGINT/SIGTERM failed.
    #[error("could not install the shutdown signal handler: {0}")]
    Signal(std::io::Error),
}

debug_as_display!(ServiceError);

/// Builds a [`Service`].
#[derive(Clone)]
pub struct ServiceBuilder {
    name: String,
    version: String,
    metadata: HashMap<String, String>,
    address: String,
    advertise: Option<String>,
    registry: Option<Arc<dyn Registry>>,
    client: Option<Client>,
    register_ttl: Duration,
    register_interval: Duration,
    deregister_grace: Duration,
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::ServerTls>,
}

impl std::fmt::Debug for ServiceBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceBuilder")
            .field("name", &self.name)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl ServiceBuilder {
    /// The version registered (default `latest`).
    pub fn version(&mut self, version: impl Into<String>) -> &mut Self {
        self.version = version.into();
        self
    }

    /// A metadata entry registered with the service.
    pub fn metadata(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Where the server listens (default `127.0.0.1:0`: loopback, a free port). go-micro's
    /// `:8080` (no host) listens on every IPv4 interface.
    pub fn address(&mut self, address: impl Into<String>) -> &mut Self {
        self.address = address.into();
        self
    }

    /// The address registered for this node, when it differs from the bound one (behind NAT,
    /// or when listening on `0.0.0.0`): `host:port`, as callers connect to it ([`Service::start`]
    /// refuses one they could not use). Default: the bound address.
    pub fn advertise(&mut self, address: impl Into<String>) -> &mut Self {
        self.advertise = Some(address.into());
        self
    }

    /// The registry (default: the process's memory registry).
    pub fn registry(&mut self, registry: Arc<dyn Registry>) -> &mut Self {
        self.registry = Some(registry);
        self
    }

    /// The client handlers use to call other services (default: one on the same registry).
    pub fn client(&mut self, client: Client) -> &mut Self {
        self.client = Some(client);
        self
    }

    /// How long the registration outlives the last refresh (default 90 s).
    pub fn register_ttl(&mut self, ttl: Duration) -> &mut Self {
        self.register_ttl = ttl;
        self
    }

    /// How often the registration is refreshed (default 30 s, at least
    /// [`MIN_REGISTER_INTERVAL`]).
    pub fn register_interval(&mut self, interval: Duration) -> &mut Self {
        self.register_interval = interval;
        self
    }

    /// How long the node goes on serving after it deregistered when it stops, before it
    /// closes its connections (default [`DEFAULT_DEREGISTER_GRACE`]; zero closes at once).
    pub fn deregister_grace(&mut self, grace: Duration) -> &mut Self {
        self.deregister_grace = grace;
        self
    }

    /// Serves the service's calls over TLS with `tls` (see [`Server::tls`]); its node is
    /// registered with `secure=true` in its metadata, as go-micro's servers do, so that clients
    /// without TLS say what to do instead of failing a handshake.
    #[cfg(feature = "tls")]
    pub fn tls(&mut self, tls: crate::tls::ServerTls) -> &mut Self {
        self.tls = Some(tls);
        self
    }

    /// The service, ready for handlers.
    pub fn build(&self) -> Service {
        let registry = self
            .registry
            .clone()
            .unwrap_or_else(|| Arc::new(registry::MemoryRegistry::global()));
        let client = self
            .client
            .clone()
            .unwrap_or_else(|| Client::new(Arc::clone(&registry)));
        #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
        let mut server = Server::new();
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            server.tls(tls.clone());
        }
        Service {
            options: self.clone(),
            registry,
            client,
            server,
        }
    }
}

/// A go-micro style service: a gRPC server registered under a name. [`Service::run`] serves
/// until SIGINT/SIGTERM; [`Service::start`] hands back a [`RunningService`] to stop yourself:
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let mut service = rmicro_runtime::Service::builder("go.micro.srv.user").build();
/// // register_user_handler(service.server_mut(), MyUser)?;   (generated)
/// let running = service.start().await?; // bound, registered, serving
/// println!("listening on {}", running.local_addr());
/// running.stop().await?; // deregistered first, then drained
/// # Ok(()) }
/// ```
pub struct Service {
    options: ServiceBuilder,
    registry: Arc<dyn Registry>,
    client: Client,
    server: Server,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.options.name)
            .field("registry", &self.registry.name())
            .finish_non_exhaustive()
    }
}

impl Service {
    /// A builder for the service registered as `name` (e.g. `go.micro.srv.user`).
    pub fn builder(name: impl Into<String>) -> ServiceBuilder {
        ServiceBuilder {
            name: name.into(),
            version: "latest".into(),
            metadata: HashMap::new(),
            address: "127.0.0.1:0".into(),
            advertise: None,
            registry: None,
            client: None,
            register_ttl: DEFAULT_REGISTER_TTL,
            register_interval: DEFAULT_REGISTER_INTERVAL,
            deregister_grace: DEFAULT_DEREGISTER_GRACE,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// The registry name.
    pub fn name(&self) -> &str {
        &self.options.name
    }

    /// The server, to register handlers on.
    pub fn server_mut(&mut self) -> &mut Server {
        &mut self.server
    }

    /// The client for calling other services.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The registry.
    pub fn registry(&self) -> Arc<dyn Registry> {
        Arc::clone(&self.registry)
    }

    /// Runs until SIGINT or SIGTERM, then deregisters and stops gracefully.
    ///
    /// # Errors
    ///
    /// When the address cannot be bound or the signal handlers cannot be installed.
    pub async fn run(self) -> Result<(), ServiceError> {
        let signal = shutdown_signal().map_err(ServiceError::Signal)?;
        let running = self.start().await?;
        signal.await;
        tracing::info!("shutdown signal received");
        running.stop().await
    }

    /// Runs until `signal` completes, then deregisters and stops gracefully.
    ///
    /// # Errors
    ///
    /// When the address cannot be bound.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> Result<(), ServiceError> {
        let running = self.start().await?;
        signal.await;
        running.stop().await
    }

    /// Binds, starts serving and registering in the background, and returns a handle.
    ///
    /// # Errors
    ///
    /// When the address cannot be bound, or the advertised address is not `host:port`.
    pub async fn start(self) -> Result<RunningService, ServiceError> {
        let Service {
            options,
            registry,
            client,
            server,
        } = self;
        #[cfg(all(feature = "tls", unix))]
        let tls_files = (server.tls_setup(), client.tls_setup().cloned());
        // Listened for before anything else: from the moment the node can be found (or even
        // bound), a SIGHUP (a renewal hook, `systemctl reload`) must not end it.
        #[cfg(all(feature = "tls", unix))]
        let hangups = listen_for_hangups(&options.name, &tls_files.0, &tls_files.1);
        #[cfg(not(all(feature = "tls", unix)))]
        drop(client);
        let health = server.health();
        let secure = server.serves_tls();
        let bound = server
            .bind(listen_address(&options.address).as_ref())
            .await
            .map_err(|source| ServiceError::Bind {
                address: options.address.clone(),
                source,
            })?;
        let local_addr = bound.local_addr();
        let advertised = match &options.advertise {
            // Registered as given, so callers must be able to connect to it as the client does:
            // a host alone, an empty one or a path would register a node no one can call.
            // (`https://` only for a server that serves TLS.)
            Some(address) if !secure && address.starts_with("https://") => {
                return Err(ServiceError::Advertise {
                    address: address.clone(),
                    reason: "this server does not serve TLS (give it --server-tls-cert and \
                             --server-tls-key, or advertise http://)"
                        .to_string(),
                    example: format!("10.0.0.5:{}", local_addr.port()),
                });
            }
            Some(address) => match crate::transport::Connection::new(&if secure {
                address.replacen("https://", "http://", 1)
            } else {
                address.clone()
            }) {
                Ok(_) => address.clone(),
                Err(err) => {
                    let reason = match err {
                        crate::transport::TransportError::BadAddress { reason, .. } => reason,
                        other => other.to_string(),
                    };
                    return Err(ServiceError::Advertise {
                        address: address.clone(),
                        reason,
                        example: format!("10.0.0.5:{}", local_addr.port()),
                    });
                }
            },
            None => advertise_address(local_addr),
        };
        let endpoints = bound
            .services()
            .iter()
            .flat_map(|s| s.endpoints.iter().map(registry::Endpoint::from_generated))
            .collect();
        let mut node_metadata = HashMap::new();
        for (k, v) in [
            ("protocol", "grpc"),
            ("server", "grpc"),
            ("transport", "grpc"),
            ("broker", "none"),
            ("registry", registry.name()),
        ] {
            node_metadata.insert(k.to_string(), v.to_string());
        }
        if secure {
            node_metadata.insert("secure".to_string(), "true".to_string());
        }
        let record = registry::Service {
            name: options.name.clone(),
            version: options.version.clone(),
            metadata: options.metadata.clone(),
            endpoints,
            nodes: vec![Node {
                id: format!("{}-{}", options.name, uuid::Uuid::new_v4()),
                address: advertised,
                metadata: node_metadata,
            }],
        };

        let (stop_tx, stop_rx) = watch::channel(false);
        let mut serve_stop = stop_rx;
        let serving = tokio::spawn(bound.serve_with_shutdown(async move {
            let _ = serve_stop.wait_for(|stop| *stop).await;
        }));
        if let Some(warning) = refresh_warning(options.register_ttl, options.register_interval) {
            tracing::warn!(service = %record.name, registry = registry.name(), "{warning}");
        }
        let registration = Registration::start(
            Arc::clone(&registry),
            record.clone(),
            options.register_ttl,
            options.register_interval,
        )
        .grace(options.deregister_grace);
        tracing::info!(
            service = %record.name,
            node = %record.nodes[0].id,
            address = %record.nodes[0].address,
            registry = registry.name(),
            "serving"
        );
        #[cfg(all(feature = "tls", unix))]
        let reloading = hangups
            .map(|hangups| reload_tls_on_hangup(hangups, &record.name, tls_files.0, tls_files.1));
        Ok(RunningService {
            record,
            local_addr,
            health,
            stop: stop_tx,
            serving,
            registration,
            #[cfg(all(feature = "tls", unix))]
            _reloading: reloading,
        })
    }
}

/// A started service.
pub struct RunningService {
    record: registry::Service,
    local_addr: SocketAddr,
    health: crate::health::Health,
    stop: watch::Sender<bool>,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
    registration: Registration,
    /// Re-reads the TLS files on `SIGHUP` while the service runs.
    #[cfg(all(feature = "tls", unix))]
    _reloading: Option<AbortOnDrop>,
}

/// A background task ended when its owner is dropped.
#[cfg(all(feature = "tls", unix))]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

#[cfg(all(feature = "tls", unix))]
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `SIGHUP`, listened for when the service has TLS files to re-read (its server's or its
/// client's); without, `SIGHUP` keeps its usual meaning. Once listened for, the process keeps
/// its handler (tokio never removes one): after the service stops, a `SIGHUP` does nothing.
#[cfg(all(feature = "tls", unix))]
fn listen_for_hangups(
    service: &str,
    server: &Option<crate::tls::ServerTls>,
    client: &Option<crate::tls::ClientTls>,
) -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    if server.is_none() && client.is_none() {
        return None;
    }
    signal(SignalKind::hangup())
        .inspect_err(|err| {
            tracing::warn!(%service, error = %err, "cannot listen for SIGHUP; TLS files are not reloaded on it");
        })
        .ok()
}

/// Re-reads the service's TLS certificate, key and CA files (its server's, and its client's for
/// calls to other nodes) on every `SIGHUP`, as nginx and the gateway do on a reload: a renewed
/// certificate is served, and presented, without a restart. Files that cannot be used are
/// logged with what is wrong and the ones in use stay. The files are read off the runtime's
/// threads (a slow mount holds no connection up).
#[cfg(all(feature = "tls", unix))]
fn reload_tls_on_hangup(
    mut hangups: tokio::signal::unix::Signal,
    service: &str,
    server: Option<crate::tls::ServerTls>,
    client: Option<crate::tls::ClientTls>,
) -> AbortOnDrop {
    let service = service.to_string();
    AbortOnDrop(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let (server, client) = (server.clone(), client.clone());
            let reloaded = tokio::task::spawn_blocking(move || {
                [
                    server.as_ref().map(|tls| ("server", tls.reload())),
                    client.as_ref().map(|tls| ("client", tls.reload())),
                ]
            })
            .await;
            let Ok(reloaded) = reloaded else {
                tracing::error!(%service, "SIGHUP: reloading the TLS files failed; the ones in use stay");
                continue;
            };
            for (side, result) in reloaded.into_iter().flatten() {
                match result {
                    Ok(()) => tracing::info!(%service, "SIGHUP: {side} TLS files reloaded"),
                    Err(err) => {
                        tracing::error!(%service, error = %err, "SIGHUP: {side} TLS files not reloaded; the ones in use stay")
                    }
                }
            }
        }
    }))
}

impl std::fmt::Debug for RunningService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningService")
            .field("node", &self.record.nodes[0])
            .finish_non_exhaustive()
    }
}

impl RunningService {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The record this node registers.
    pub fn record(&self) -> &registry::Service {
        &self.record
    }

    /// Says `NOT_SERVING` to health checks, deregisters, goes on serving for the deregister
    /// grace ([`ServiceBuilder::deregister_grace`]) while callers drop the node, then stops
    /// accepting, drains calls in flight, and returns.
    ///
    /// # Errors
    ///
    /// When serving had failed.
    pub async fn stop(self) -> Result<(), ServiceError> {
        // Health-checking load balancers hear it when registry watchers do, not after the
        // registry answered (up to 5 s while it is unreachable).
        self.health.stopping();
        self.registration.stop().await;
        let _ = self.stop.send(true);
        match self.serving.await {
            Ok(result) => result.map_err(ServiceError::Serve),
            Err(err) => Err(ServiceError::Serve(std::io::Error::other(err))),
        }
    }
}

/// A node kept registered in the background: registered at once, refreshed every interval,
/// retried sooner while the registry is unreachable. Services do this themselves; use it for
/// nodes that are not rmicro gRPC servers (an HTTP API registered for the gateway).
pub struct Registration {
    registry: Arc<dyn Registry>,
    record: registry::Service,
    stop: watch::Sender<bool>,
    /// The task keeping the node registered; taken by a drop, which waits for it to end.
    task: Option<tokio::task::JoinHandle<()>>,
    grace: Duration,
    /// Whether [`Registration::stop`] deregistered (or tried to): a registration dropped
    /// without it deregisters in the background.
    stopped: bool,
    /// Whether the node was ever registered.
    ever: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

impl Registration {
    /// Starts keeping `record` registered with `ttl`, refreshed every `interval` (at least
    /// [`MIN_REGISTER_INTERVAL`]).
    pub fn start(
        registry: Arc<dyn Registry>,
        record: registry::Service,
        ttl: Duration,
        interval: Duration,
    ) -> Registration {
        let (stop, stop_rx) = watch::channel(false);
        let ever = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = tokio::spawn(keep_registered(
            Arc::clone(&registry),
            record.clone(),
            ttl,
            interval,
            stop_rx,
            Arc::clone(&ever),
        ));
        Registration {
            registry,
            record,
            stop,
            task: Some(task),
            grace: DEFAULT_DEREGISTER_GRACE,
            stopped: false,
            ever,
        }
    }

    /// How long [`Registration::stop`] waits once the node is deregistered (default
    /// [`DEFAULT_DEREGISTER_GRACE`]): the node should go on serving meanwhile, as callers'
    /// caches drop it, and close its connections after.
    #[must_use]
    pub fn grace(mut self, grace: Duration) -> Registration {
        self.grace = grace;
        self
    }

    /// Stops refreshing and deregisters (waiting at most 5 s for the registry), then waits
    /// for the grace ([`Registration::grace`]) so that callers drop the node before it stops
    /// serving. A node that could not be deregistered stays listed until its TTL runs out,
    /// and no grace would cover that: it is not waited for then.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = &mut self.task {
            let _ = task.await;
            // Ended: a drop of this future during the deregistration below must not wait for
            // it again (a finished handle polled again panics).
            self.task = None;
        }
        let deregistered = tokio::time::timeout(
            Duration::from_secs(5),
            self.registry.deregister(&self.record),
        )
        .await;
        self.stopped = true;
        match deregistered {
            Ok(Ok(())) => {
                tracing::info!(node = %self.record.nodes[0].id, grace = ?self.grace, "deregistered; serving on for the grace");
                tokio::time::sleep(self.grace).await;
            }
            // Nothing was ever written: nothing to expire either.
            _ if !self.ever.load(std::sync::atomic::Ordering::SeqCst) => {
                tracing::warn!(node = %self.record.nodes[0].id, registry = self.registry.name(), "stopping a node whose registration never succeeded (the registry could not be reached; should an attempt have got through after all, its record expires with its TTL)");
            }
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "deregistering failed; the node expires with its TTL")
            }
            Err(_) => tracing::warn!("deregistering timed out; the node expires with its TTL"),
        }
    }
}

/// Dropped without [`Registration::stop`] (as when the [`RunningService`] holding it is dropped,
/// which stops its server too): the node is deregistered in the background rather than left
/// registered, kept alive by the registry (an etcd lease's keepalive) for as long as the process
/// runs, with every call sent to it failing.
impl Drop for Registration {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        let task = self.task.take();
        if let Some(task) = &task {
            task.abort();
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(node = %self.record.nodes[0].id, "registration dropped outside a tokio runtime: not deregistered");
            return;
        };
        let registry = Arc::clone(&self.registry);
        let record = self.record.clone();
        runtime.spawn(async move {
            // Deregistered once the attempt it cut short is gone (aborting a task being polled
            // on another thread ends it after that poll): the deregistration then knows of
            // everything the attempt asked the registry for.
            if let Some(task) = task {
                let _ = task.await;
            }
            let deregistered =
                tokio::time::timeout(Duration::from_secs(5), registry.deregister(&record)).await;
            if !matches!(deregistered, Ok(Ok(()))) {
                tracing::warn!(node = %record.nodes[0].id, "deregistering a dropped registration failed; the node expires with its TTL");
            }
        });
    }
}

/// How often a node that keeps failing to register says so again.
const STILL_FAILING_EVERY: Duration = Duration::from_secs(30);

/// Registers `record` now and every `interval` (at least [`MIN_REGISTER_INTERVAL`]) until
/// `stop`, retrying sooner (1 s, doubling, at most [`MAX_UNREACHABLE_RETRY`]) while the
/// registry is unreachable.
async fn keep_registered(
    registry: Arc<dyn Registry>,
    record: registry::Service,
    ttl: Duration,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
    ever: Arc<std::sync::atomic::AtomicBool>,
) {
    let interval = interval.max(MIN_REGISTER_INTERVAL);
    // Since when registering has been failing, and when that was last said.
    let mut failing: Option<(tokio::time::Instant, tokio::time::Instant)> = None;
    let mut lost = registry.registrations_lost();
    let mut registered = false;
    let mut backoff = Duration::from_secs(1);
    // How soon after an attempt a lost lease may start the next: 1 s, doubling while leases keep
    // being lost at once (a keepalive stream that breaks as soon as it opens, behind a proxy
    // that cuts gRPC streams), back to 1 s after a quiet interval.
    let mut lost_gap = Duration::from_secs(1);
    loop {
        let attempted = tokio::time::Instant::now();
        // A stop cuts short an attempt in flight (up to 5 s against an unreachable registry):
        // stopping then waits only for the deregistration, as `stop` promises. What the attempt
        // already sent may still reach the registry after that; the deregistration undoes it
        // (etcd: it revokes the lease the attempt asked for, so a put on it still on its way
        // fails, and a key it wrote goes with it).
        let attempt = tokio::select! {
            result = registry.register(&record, ttl) => result,
            _ = stop.wait_for(|s| *s) => return,
        };
        let wait = match attempt {
            Ok(()) => {
                if !registered {
                    tracing::info!(service = %record.name, registry = registry.name(), "registered");
                }
                registered = true;
                failing = None;
                ever.store(true, std::sync::atomic::Ordering::SeqCst);
                backoff = Duration::from_secs(1);
                interval
            }
            Err(err) => {
                let now = tokio::time::Instant::now();
                match &mut failing {
                    None => {
                        tracing::warn!(
                            service = %record.name,
                            error = %err,
                            "could not register; serving anyway and retrying"
                        );
                        failing = Some((now, now));
                    }
                    // Said again now and then: a node nobody can find (a mistyped registry
                    // address) must not look healthy in its log after the first line.
                    Some((since, said)) if now.duration_since(*said) >= STILL_FAILING_EVERY => {
                        tracing::warn!(
                            service = %record.name,
                            error = %err,
                            failing_for = ?now.duration_since(*since),
                            "still not registered: callers cannot find this node; retrying"
                        );
                        *said = now;
                    }
                    Some(_) => {}
                }
                registered = false;
                // An unreachable registry is tried again every few seconds at most: when it
                // comes back after a long outage (an etcd rescheduled or restored, empty),
                // the node is missing from every lookup until it registers again. A refusal
                // (credentials) backs off to the interval: retrying sooner would not help.
                let limit = match err {
                    registry::RegistryError::Unreachable(_) => interval.min(MAX_UNREACHABLE_RETRY),
                    _ => interval,
                };
                let wait = backoff.min(limit);
                backoff = (backoff * 2).min(interval);
                wait
            }
        };
        let lost_one = async {
            let changed = match lost.as_mut() {
                Some(lost) => lost.changed().await.is_ok(),
                None => false,
            };
            if !changed {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep_until(attempted + lost_gap).await;
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => lost_gap = Duration::from_secs(1),
            // A lease found lost: registered again now (the attempt backs off as usual while
            // the registry cannot be reached).
            () = lost_one, if registered => lost_gap = (lost_gap * 2).min(interval),
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// The address to bind for `address`: go-micro's `:port` (no host) means every interface, as
/// Go's `net.Listen` reads it (here every IPv4 one, `0.0.0.0`; name `[::]:port` for IPv6 too);
/// anything else is used as it is. (The gateway binds its listeners with it too.)
pub fn listen_address(address: &str) -> std::borrow::Cow<'_, str> {
    match address.strip_prefix(':') {
        Some(port) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            format!("0.0.0.0:{port}").into()
        }
        _ => address.into(),
    }
}

/// The address to register for a listener bound to `local`: itself, unless it is a wildcard.
fn advertise_address(local: SocketAddr) -> String {
    if !local.ip().is_unspecified() {
        return local.to_string();
    }
    // A wildcard listener: register an address of this host other hosts can use.
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty());
    let resolved = host.and_then(|h| {
        std::net::ToSocketAddrs::to_socket_addrs(&(h.as_str(), local.port()))
            .ok()?
            .find(|a| !a.ip().is_loopback())
    });
    resolved
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], local.port())))
        .to_string()
}

/// Completes on SIGINT or SIGTERM.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

/// What to say when a registration is refreshed no more often than it expires: a registry that
/// drops records by their TTL (the memory registry) loses the node between refreshes. etcd's
/// lease is kept alive on its own (a third of the TTL), so there it does no harm, and it is
/// allowed: a warning, not an error.
fn refresh_warning(ttl: Duration, interval: Duration) -> Option<String> {
    (interval >= ttl).then(|| {
        format!(
            "--register-interval ({interval:?}) is not shorter than --register-ttl ({ttl:?}): a \
             registry that expires records by their TTL drops this node between refreshes; give \
             an interval under the TTL (go-micro's defaults: TTL 90s, interval 30s)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{BoxFuture, MemoryRegistry, RegistryError, Watcher};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A memory registry that counts registrations, and fails them while `down`.
    #[derive(Default)]
    struct Counting {
        inner: MemoryRegistry,
        registers: AtomicUsize,
        down: std::sync::atomic::AtomicBool,
        /// Registrations never answer (an etcd that stopped answering).
        hung: std::sync::atomic::AtomicBool,
        /// Deregistrations made.
        deregisters: AtomicUsize,
        /// The first deregistration never answers.
        first_deregister_hangs: std::sync::atomic::AtomicBool,
        /// What `registrations_lost` reports, when set.
        lost: Option<tokio::sync::watch::Sender<u64>>,
    }

    impl Registry for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }
        fn register<'a>(
            &'a self,
            service: &'a registry::Service,
            ttl: Duration,
        ) -> BoxFuture<'a, Result<(), RegistryError>> {
            self.registers.fetch_add(1, Ordering::SeqCst);
            if self.hung.load(Ordering::SeqCst) {
                return Box::pin(std::future::pending());
            }
            if self.down.load(Ordering::SeqCst) {
                return Box::pin(async { Err(RegistryError::Unreachable("down".into())) });
            }
            self.inner.register(service, ttl)
        }
        fn deregister<'a>(
            &'a self,
            service: &'a registry::Service,
        ) -> BoxFuture<'a, Result<(), RegistryError>> {
            let first = self.deregisters.fetch_add(1, Ordering::SeqCst) == 0;
            if first && self.first_deregister_hangs.load(Ordering::SeqCst) {
                return Box::pin(std::future::pending());
            }
            self.inner.deregister(service)
        }
        fn get_service<'a>(
            &'a self,
            name: &'a str,
        ) -> BoxFuture<'a, Result<Vec<registry::Service>, RegistryError>> {
            self.inner.get_service(name)
        }
        fn list_services(&self) -> BoxFuture<'_, Result<Vec<registry::Service>, RegistryError>> {
            self.inner.list_services()
        }
        fn watch<'a>(
            &'a self,
            service: Option<&'a str>,
        ) -> BoxFuture<'a, Result<Watcher, RegistryError>> {
            self.inner.watch(service)
        }
        fn registrations_lost(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
            self.lost
                .as_ref()
                .map(tokio::sync::watch::Sender::subscribe)
        }
    }

    fn record() -> registry::Service {
        registry::Service {
            name: "svc".into(),
            version: "latest".into(),
            nodes: vec![Node {
                id: "svc-1".into(),
                address: "127.0.0.1:1".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_refresh_no_more_often_than_the_ttl_is_warned_of() {
        let secs = Duration::from_secs;
        assert_eq!(refresh_warning(secs(90), secs(30)), None);
        assert_eq!(refresh_warning(secs(3), secs(2)), None);
        let warning = refresh_warning(secs(2), secs(6)).expect("a warning");
        assert!(
            warning.starts_with("--register-interval (6s) is not shorter than --register-ttl (2s)"),
            "{warning}"
        );
        assert!(refresh_warning(secs(5), secs(5)).is_some());
    }

    #[tokio::test]
    async fn a_zero_register_interval_does_not_spin() {
        for down in [false, true] {
            let counting = Arc::new(Counting::default());
            counting.down.store(down, Ordering::SeqCst);
            let registration = Registration::start(
                Arc::clone(&counting) as Arc<dyn Registry>,
                record(),
                Duration::from_secs(90),
                Duration::ZERO,
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
            registration.stop().await;
            let registers = counting.registers.load(Ordering::SeqCst);
            assert!(
                (1..=10).contains(&registers),
                "{registers} registrations in 300 ms (registry down: {down})"
            );
        }
    }

    /// `counting`'s registration of `record()` (TTL 90 s, register interval 30 s).
    fn registered(counting: &Arc<Counting>) -> Registration {
        Registration::start(
            Arc::clone(counting) as Arc<dyn Registry>,
            record(),
            Duration::from_secs(90),
            Duration::from_secs(30),
        )
    }

    /// A counting registry whose registrations can be lost (`lost.send_modify`).
    fn losing() -> Arc<Counting> {
        let (lost, _) = tokio::sync::watch::channel(0u64);
        Arc::new(Counting {
            lost: Some(lost),
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn a_lost_registration_is_made_again_at_once_but_not_in_a_loop() {
        let counting = losing();
        let registration = registered(&counting);
        let registers = || counting.registers.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(registers(), 1);
        // One loss, long after the registration: made again at once.
        counting.lost.as_ref().unwrap().send_modify(|n| *n += 1);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(registers(), 2, "registered again at once");
        // Lost again and again (a keepalive that breaks as soon as it opens): 1 s, 2 s, ...
        // apart, not as fast as the registry answers.
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_millis(3500) {
            counting.lost.as_ref().unwrap().send_modify(|n| *n += 1);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let again = registers() - 2;
        assert!((1..=3).contains(&again), "{again} registrations in 3.5 s");
        registration.stop().await;
    }

    /// etcd gone for longer than a few seconds (a pod rescheduled, a restore) comes back
    /// empty: the node must be registered again within a few seconds of etcd answering, not a
    /// whole register interval later (30 s by default; the service is missing from every
    /// lookup until then, although it serves).
    #[tokio::test(start_paused = true)]
    async fn a_node_registers_again_soon_after_a_long_registry_outage() {
        let counting = losing();
        let registration = registered(&counting);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(counting.registers.load(Ordering::SeqCst), 1);
        // etcd goes away: the lease's keepalive stream breaks at once.
        counting.down.store(true, Ordering::SeqCst);
        counting.inner.deregister(&record()).await.unwrap();
        counting.lost.as_ref().unwrap().send_modify(|n| *n += 1);
        tokio::time::sleep(Duration::from_secs(40)).await;
        let while_down = counting.registers.load(Ordering::SeqCst) - 1;
        // Not a hot loop while etcd is away (one attempt every few seconds at most).
        assert!(
            (1..=20).contains(&while_down),
            "{while_down} attempts in 40 s"
        );
        // Back, empty.
        counting.down.store(false, Ordering::SeqCst);
        let back = tokio::time::Instant::now();
        let registered = || async { !counting.inner.get_service("svc").await.unwrap().is_empty() };
        while !registered().await {
            assert!(
                back.elapsed() < Duration::from_secs(6),
                "not registered again within 6 s of the registry coming back"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        registration.stop().await;
    }

    #[tokio::test]
    async fn a_dropped_registration_deregisters() {
        let counting = Arc::new(Counting::default());
        let registration = registered(&counting);
        let listed = || async { !counting.inner.get_service("svc").await.unwrap().is_empty() };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(listed().await);
        drop(registration);
        let dropped = std::time::Instant::now();
        while listed().await {
            assert!(
                dropped.elapsed() < Duration::from_secs(2),
                "still registered 2 s after the registration was dropped"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // And not registered again.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert!(!listed().await);
        assert_eq!(counting.registers.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn stopping_does_not_wait_for_a_registration_in_flight() {
        let counting = Arc::new(Counting::default());
        counting.hung.store(true, Ordering::SeqCst);
        let registration = registered(&counting);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(counting.registers.load(Ordering::SeqCst), 1);
        // Only the deregistration is waited for (here at once), not the hung registration.
        let stopped = tokio::time::timeout(Duration::from_secs(2), registration.stop()).await;
        assert!(
            stopped.is_ok(),
            "stop waited for the registration in flight"
        );
    }

    /// A `stop` dropped while it waits for its deregistration (a caller's own shutdown limit):
    /// the drop deregisters in the background, as for a registration never stopped.
    #[tokio::test]
    async fn a_stop_cut_short_in_its_deregistration_still_deregisters_in_the_background() {
        let counting = Arc::new(Counting::default());
        counting
            .first_deregister_hangs
            .store(true, Ordering::SeqCst);
        let registration = registered(&counting);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(counting.registers.load(Ordering::SeqCst), 1);
        let cut = tokio::time::timeout(Duration::from_millis(200), registration.stop()).await;
        assert!(cut.is_err(), "the first deregistration hangs");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while counting.deregisters.load(Ordering::SeqCst) < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the drop did not deregister in the background"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let left = counting.inner.get_service("svc").await.unwrap();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_port_only_address_means_every_interface_as_in_go_micro() {
        // go-micro deployments set MICRO_SERVER_ADDRESS=:8080.
        assert_eq!(listen_address(":8080"), "0.0.0.0:8080");
        assert_eq!(listen_address(":0"), "0.0.0.0:0");
        for unchanged in ["127.0.0.1:0", "[::1]:9090", "localhost:80", "0.0.0.0:1"] {
            assert_eq!(listen_address(unchanged), unchanged);
        }
    }
}
