//! The etcd registry, in go-micro v2's layout.
//!
//! - Key `/micro/registry/<service>/<node-id>`, value the one-node go-micro service JSON.
//! - One lease per node, kept alive by one long-lived keepalive stream (a request every third of
//!   the TTL on the same stream), not a new keepalive call per tick.
//! - A lost lease (TTL 0 on the stream, the stream breaking, etcd restarting) is replaced by a
//!   new one on the next [`Registry::register`], which the service calls every register interval.
//!   That call also reads the node's key (one read per node and interval) and writes it again
//!   when it was deleted or changed behind the node's back while the lease lived on.
//! - Deregistering deletes the node's key and revokes its leases: the one kept alive and any that
//!   a registration cut short (its future dropped, as a stop does) or failed (etcd may still
//!   apply what it timed out waiting for) asked for within their TTL. Lease ids are chosen
//!   before the grant is sent, so that one whose grant's answer never arrived is known; a put
//!   still on its way on a revoked lease fails, and a key written on one goes with it. A node
//!   this handle never registered deletes no key but its own leases': one on another lease is
//!   another process's.
//! - Lookups read a cache fed by a watch on the whole prefix: after the first successful sync it
//!   keeps answering with the last known nodes while etcd is unreachable, and re-syncs (list, then
//!   watch from the listed revision) when etcd is back. Every request requires a leader, so a
//!   member cut off from its cluster ends the watch instead of leaving it silent. A record that
//!   is not a go-micro service is skipped with a warning naming its key; one written over a
//!   node's record ends that node (a delete), as a fresh list would have it.
//! - Nothing blocks longer than the dial timeout, so a service starts while etcd is down.
//! - Dropping the last handle stops the watch and every keepalive (the nodes' keys then expire
//!   with their TTL; deregister first to remove them at once) and ends the watchers' streams.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, ConnectOptions, EventType, GetOptions, LeaseGrantOptions, PutOptions, Txn,
    TxnOp, WatchOptions,
};
use tokio::sync::{broadcast, watch};

use super::{merge, Action, BoxFuture, Event, Registry, RegistryError, Service, Watcher};

/// go-micro v2's key prefix.
pub const PREFIX: &str = "/micro/registry/";

/// The largest etcd response read (the list of the whole prefix, one watch response): Go's etcd
/// client's (`math.MaxInt32`), not tonic's 4 MiB default, which a registry of a few hundred
/// go-micro records (each with its endpoints' type trees) outgrows; past it, no lookup would
/// ever be answered.
const MAX_RESPONSE: usize = i32::MAX as usize;

/// How to reach etcd. Its `Debug` leaves the password out.
#[derive(Clone)]
pub struct EtcdOptions {
    /// `host:port` or URLs of the cluster members. Default `127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// User name and password, when etcd has auth enabled.
    pub user: Option<(String, String)>,
    /// How long to wait for etcd before giving up on one operation (default 5 s).
    pub dial_timeout: Duration,
    /// TLS to etcd (needs the `etcd-tls` feature); `None` for plain TCP.
    pub tls: Option<EtcdTls>,
}

impl std::fmt::Debug for EtcdOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdOptions")
            .field("endpoints", &self.endpoints)
            // The user name, never the password.
            .field("user", &self.user.as_ref().map(|(user, _)| (user, "…")))
            .field("dial_timeout", &self.dial_timeout)
            .field("tls", &self.tls)
            .finish()
    }
}

/// TLS settings for etcd, as PEM bytes.
#[derive(Clone, Default)]
pub struct EtcdTls {
    /// The CA certificate(s) the server's certificate must chain to.
    pub ca_pem: Vec<u8>,
    /// A client certificate and key, for etcd's `--client-cert-auth`.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name to verify the server certificate against (default: the endpoint's host).
    pub domain: Option<String>,
}

impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("EtcdTls")
            .field("client_identity", &self.identity.is_some())
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            endpoints: vec!["127.0.0.1:2379".into()],
            user: None,
            dial_timeout: Duration::from_secs(5),
            tls: None,
        }
    }
}

/// A registry in etcd, compatible with go-micro v2 services and tools. Cheap to clone: clones
/// share one connection, cache and set of leases; the background tasks (the watch feeding the
/// cache, one keepalive per node) stop when the last clone is dropped.
#[derive(Clone)]
pub struct EtcdRegistry {
    inner: Arc<Handle>,
}

/// What the clones of one [`EtcdRegistry`] share. The state itself is in [`Inner`], which the
/// running watch holds too (for as long as it runs); this layer is held by the handles only, so
/// that its drop marks the moment the last handle went and stops the tasks.
struct Handle(Arc<Inner>);

impl std::ops::Deref for Handle {
    type Target = Arc<Inner>;

    fn deref(&self) -> &Arc<Inner> {
        &self.0
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // The watch's future holds the `Inner`: aborting it drops that, and with the `Inner`
        // the event sender, which ends every watcher's stream.
        let cache_task = self.cache_task.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(task) = &*cache_task {
            task.abort();
        }
        let leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        for lease in leases.values() {
            lease.task.abort();
        }
    }
}

impl std::fmt::Debug for EtcdRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdRegistry")
            .field("endpoints", &self.inner.options.endpoints)
            .finish_non_exhaustive()
    }
}

struct Lease {
    id: i64,
    value: String,
    alive: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Cache {
    primed: bool,
    records: Records,
    /// The newest etcd revision seen (a list's or a watch event's).
    revision: i64,
    /// Records kept after etcd came back without them and with an older revision (its data
    /// lost: wiped, or restored from an older snapshot), until their nodes register again or
    /// [`HOLD_AFTER_DATA_LOSS`] passes: the nodes are most likely alive and about to register
    /// again, and every lookup would find none meanwhile.
    held: HashSet<Vec<u8>>,
    held_until: Option<tokio::time::Instant>,
}

/// How long records are kept after etcd lost its data (see `Cache::held`): longer than a node
/// takes to register again once etcd answers (it retries at least every 4 s).
const HOLD_AFTER_DATA_LOSS: Duration = Duration::from_secs(10);

/// The registry's records by etcd key, and the keys of each service name: a lookup by name
/// (one per request for the gateway's rpc handler) reads that service's records only, whatever
/// the size of the registry. Keys are etcd's bytes: two keys that differ in bytes that are not
/// UTF-8 are two records, as for go-micro.
#[derive(Default)]
struct Records {
    by_key: HashMap<Vec<u8>, Service>,
    by_name: HashMap<String, HashSet<Vec<u8>>>,
}

impl Records {
    fn get(&self, key: &[u8]) -> Option<&Service> {
        self.by_key.get(key)
    }

    fn contains_key(&self, key: &[u8]) -> bool {
        self.by_key.contains_key(key)
    }

    fn iter(&self) -> impl Iterator<Item = (&Vec<u8>, &Service)> {
        self.by_key.iter()
    }

    fn values(&self) -> impl Iterator<Item = &Service> {
        self.by_key.values()
    }

    /// The records of service `name`.
    fn named<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a Service> + 'a {
        self.by_name
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|key| self.by_key.get(key))
    }

    fn insert(&mut self, key: Vec<u8>, service: Service) {
        if let Some(old) = self.by_key.get(&key) {
            if old.name != service.name {
                let old_name = old.name.clone();
                self.unindex(&old_name, &key);
            }
        }
        self.by_name
            .entry(service.name.clone())
            .or_default()
            .insert(key.clone());
        self.by_key.insert(key, service);
    }

    fn remove(&mut self, key: &[u8]) -> Option<Service> {
        let old = self.by_key.remove(key)?;
        self.unindex(&old.name, key);
        Some(old)
    }

    fn unindex(&mut self, name: &str, key: &[u8]) {
        if let Some(keys) = self.by_name.get_mut(name) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_name.remove(name);
            }
        }
    }
}

struct Inner {
    options: EtcdOptions,
    client: tokio::sync::Mutex<Option<etcd_client::Client>>,
    leases: Mutex<HashMap<String, Lease>>,
    cache: RwLock<Cache>,
    primed: watch::Sender<bool>,
    /// Why etcd refused the last sync (wrong or missing credentials), or why it cannot be
    /// reached at all (every endpoint refuses connections), until one succeeds: a lookup
    /// waiting for the first sync says so at once, not "has not answered" a timeout later.
    refused: watch::Sender<Option<RegistryError>>,
    /// Whether the last operation gave up because every endpoint refused a connection.
    nothing_listens: AtomicBool,
    /// The task that keeps the cache synced, once started (again, should it have ended).
    cache_task: Mutex<Option<tokio::task::AbortHandle>>,
    /// Shared by every watcher: each clones only the events of its own service.
    events: broadcast::Sender<Arc<Event>>,
    /// Why the last sync failed (with a hint when it points at TLS on one side only), until one
    /// succeeds: said by a lookup that waited in vain (a TLS handshake etcd closed says more
    /// than "has not answered").
    last_failure: Mutex<Option<String>>,
    /// Counts the leases found lost by their keepalive (see `Registry::registrations_lost`).
    lost: Arc<watch::Sender<u64>>,
    /// By node key, the leases asked for by registrations that did not succeed, with when each
    /// was asked for: still in flight, cut short (their future dropped, as a stop does) or failed
    /// (an etcd that timed out may still apply the grant and the put). etcd may hold such a
    /// lease, and the node's key on it, without this handle ever hearing of it; deregistering
    /// revokes them. One older than its TTL has expired in etcd, and is forgotten.
    unsettled: Mutex<HashMap<String, Vec<(i64, std::time::Instant)>>>,
}

/// A lease id for etcd to grant: random, positive (etcd reads 0 as "choose one"), so that it
/// is known before etcd answers.
fn new_lease_id() -> i64 {
    // A v4 uuid's fixed bits (version, variant) sit at other places in its two halves: xored,
    // they make 64 random bits, of which 63 are kept to stay positive.
    let (high, low) = uuid::Uuid::new_v4().as_u64_pair();
    (((high ^ low) >> 1) as i64).max(1)
}

/// The key of one node.
pub fn node_key(service: &str, node_id: &str) -> String {
    format!(
        "{PREFIX}{}/{}",
        service.replace('/', "-"),
        node_id.replace('/', "-")
    )
}

impl EtcdRegistry {
    /// A registry on the etcd cluster in `options`. Connecting happens on first use, so this
    /// never blocks and a service can start while etcd is down.
    pub fn new(options: EtcdOptions) -> EtcdRegistry {
        EtcdRegistry {
            inner: Arc::new(Handle(Arc::new(Inner {
                options,
                client: tokio::sync::Mutex::new(None),
                leases: Mutex::new(HashMap::new()),
                cache: RwLock::new(Cache::default()),
                primed: watch::channel(false).0,
                refused: watch::channel(None).0,
                nothing_listens: AtomicBool::new(false),
                cache_task: Mutex::new(None),
                events: broadcast::channel(1024).0,
                last_failure: Mutex::new(None),
                lost: Arc::new(watch::channel(0).0),
                unsettled: Mutex::new(HashMap::new()),
            }))),
        }
    }

    fn endpoints(&self) -> String {
        self.inner.options.endpoints.join(",")
    }
}

impl Inner {
    fn endpoints(&self) -> String {
        self.options.endpoints.join(",")
    }

    /// How a lookup that waited in vain tells of the sync that failed: without the address it
    /// names already.
    fn last_attempt(&self, err: &RegistryError) -> String {
        let text = match err {
            RegistryError::Unreachable(why) => why.clone(),
            other => other.to_string(),
        };
        let at = format!("etcd at {}: ", self.endpoints());
        match text.strip_prefix(&at) {
            Some(rest) => rest.to_string(),
            None => text,
        }
    }

    /// Whether this client speaks TLS: with TLS options or with an `https://` endpoint.
    fn client_tls(&self) -> bool {
        self.options.tls.is_some()
            || self
                .options
                .endpoints
                .iter()
                .any(|e| e.to_ascii_lowercase().starts_with("https://"))
    }

    /// Maps an etcd-client error to a registry error with a message a person can act on.
    fn error(&self, err: etcd_client::Error) -> RegistryError {
        let text = err.to_string();
        let lower = text.to_lowercase();
        if lower.contains("user name is empty")
            || lower.contains("authentication")
            || lower.contains("auth token")
            || lower.contains("permission denied")
        {
            let hint = if self.options.user.is_some() {
                "check --registry-username/--registry-password (MICRO_REGISTRY_USERNAME/MICRO_REGISTRY_PASSWORD)"
            } else {
                "etcd has auth enabled: pass --registry-username and --registry-password (MICRO_REGISTRY_USERNAME/MICRO_REGISTRY_PASSWORD)"
            };
            return RegistryError::Auth(format!(
                "etcd at {} said: {text}; {hint}",
                self.endpoints()
            ));
        }
        match err {
            // A status the server sent (not one the transport made up for a failed connection,
            // nor the generated client's `Service was not ready: …`, which says its channel is
            // broken for good, e.g. when the runtime that ran it shut down: that one must drop
            // the client so the next operation connects anew).
            etcd_client::Error::GRpcStatus(s)
                if s.code() != tonic::Code::Unavailable
                    && std::error::Error::source(&s).is_none()
                    && !(s.code() == tonic::Code::Unknown
                        && s.message().starts_with("Service was not ready")) =>
            {
                RegistryError::Other(format!(
                    "etcd at {} said: {}",
                    self.endpoints(),
                    s.message()
                ))
            }
            _ => {
                let failure = failure_text(&err);
                // With a hint when the failure points at TLS on one side only, or at a server
                // that is not etcd.
                let hint = tls_hint(&failure, self.client_tls())
                    .or_else(|| not_grpc_hint(&failure))
                    .unwrap_or_default();
                RegistryError::Unreachable(format!("etcd at {}: {failure}{hint}", self.endpoints()))
            }
        }
    }

    /// Revokes lease `id`, deleting every key on it; one etcd no longer holds (expired, revoked
    /// already, or never granted) is no failure.
    async fn revoke(&self, id: i64) -> Result<(), RegistryError> {
        self.op("a lease revoke", |mut c| async move {
            match c.lease_revoke(id).await {
                Err(etcd_client::Error::GRpcStatus(s)) if s.code() == tonic::Code::NotFound => {
                    Ok(())
                }
                revoked => revoked.map(drop),
            }
        })
        .await
    }

    /// Runs one etcd operation with the dial timeout; an error drops the connection so the
    /// next operation reconnects (and re-authenticates).
    async fn op<T, F, Fut>(&self, what: &str, f: F) -> Result<T, RegistryError>
    where
        F: FnOnce(etcd_client::Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let client = self.client().await?;
        let result = tokio::time::timeout(self.options.dial_timeout, f(client)).await;
        let err = match result {
            Ok(Ok(v)) => {
                self.nothing_listens.store(false, Ordering::Relaxed);
                return Ok(v);
            }
            // A failure, not a wait: if the connection was refused, say so.
            Ok(Err(err)) => self.unless_refused(self.error(err)).await,
            Err(_) => RegistryError::Unreachable(format!(
                "etcd at {} did not answer {what} within {:?}",
                self.endpoints(),
                self.options.dial_timeout
            )),
        };
        if matches!(err, RegistryError::Unreachable(_) | RegistryError::Auth(_)) {
            *self.client.lock().await = None;
        }
        Err(err)
    }

    /// `err`, or, when it says etcd could not be reached and every endpoint refuses a TCP
    /// connection, that nothing listens there: said in words, and at once by a lookup waiting
    /// for the first sync (see `refused`). Remembered until an operation gets through.
    async fn unless_refused(&self, err: RegistryError) -> RegistryError {
        let refused = match err {
            RegistryError::Unreachable(_) => {
                let limit = self.options.dial_timeout.min(Duration::from_secs(1));
                refused_everywhere(&self.options.endpoints, limit).await
            }
            _ => None,
        };
        self.nothing_listens
            .store(refused.is_some(), Ordering::Relaxed);
        refused.map_or(err, RegistryError::Unreachable)
    }

    async fn client(&self) -> Result<etcd_client::Client, RegistryError> {
        let mut guard = self.client.lock().await;
        if let Some(client) = &*guard {
            return Ok(client.clone());
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.options.dial_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_auto_token_refresh(true)
            // etcd's require-leader (clientv3.WithRequireLeader): a member that lost its leader
            // (cut off from the rest of its cluster) cancels the watch a few election timeouts
            // later instead of keeping it open and silent while the others see changes, and
            // refuses other requests at once rather than letting them wait for the timeout.
            // The cache loop then connects again (to another endpoint, when there are several).
            .with_require_leader(true);
        if let Some((user, password)) = &self.options.user {
            options = options.with_user(user.clone(), password.clone());
        }
        if let Some(tls) = &self.options.tls {
            options = self.with_tls(options, tls)?;
        }
        let connect = etcd_client::Client::connect(&self.options.endpoints, Some(options));
        let client = match tokio::time::timeout(self.options.dial_timeout, connect).await {
            Ok(Ok(client)) => client,
            Ok(Err(err)) => return Err(self.unless_refused(self.error(err)).await),
            Err(_) => {
                return Err(RegistryError::Unreachable(format!(
                    "no answer from etcd at {} within {:?}",
                    self.endpoints(),
                    self.options.dial_timeout
                )))
            }
        };
        *guard = Some(client.clone());
        Ok(client)
    }

    #[cfg(feature = "etcd-tls")]
    fn with_tls(
        &self,
        options: ConnectOptions,
        tls: &EtcdTls,
    ) -> Result<ConnectOptions, RegistryError> {
        use etcd_client::{Certificate, Identity, TlsOptions};
        let mut config = TlsOptions::new().ca_certificate(Certificate::from_pem(&tls.ca_pem));
        if let Some((cert, key)) = &tls.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(domain) = &tls.domain {
            config = config.domain_name(domain.clone());
        }
        Ok(options.with_tls(config))
    }

    #[cfg(not(feature = "etcd-tls"))]
    fn with_tls(
        &self,
        _options: ConnectOptions,
        _tls: &EtcdTls,
    ) -> Result<ConnectOptions, RegistryError> {
        Err(RegistryError::Other(
            "TLS to etcd needs rmicro-runtime's `etcd-tls` feature; rebuild with it enabled".into(),
        ))
    }

    /// The record at `key`. Bytes that are not UTF-8 are read as U+FFFD, as Go's JSON decoder
    /// (go-micro's) reads them, rather than refused.
    fn parse(key: &[u8], value: &[u8]) -> Result<Service, RegistryError> {
        let parsed = match std::str::from_utf8(value) {
            Ok(text) => serde_json::from_str(text),
            Err(_) => serde_json::from_str(&String::from_utf8_lossy(value)),
        };
        parsed.map_err(|err| RegistryError::BadRecord {
            key: shown_key(key),
            message: err.to_string(),
        })
    }

    /// Drops the records still held after etcd lost its data (their nodes did not register
    /// again in time), reporting them deleted.
    fn drop_held(&self) {
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        cache.held_until = None;
        for key in std::mem::take(&mut cache.held) {
            if let Some(service) = cache.records.remove(&key) {
                let _ = self.events.send(Arc::new(Event {
                    action: Action::Delete,
                    service,
                }));
            }
        }
    }

    /// Lists the prefix into the cache, then follows the watch until it ends or fails.
    async fn sync(self: &Arc<Self>) -> Result<(), RegistryError> {
        let listed = self
            .op("a list", |c| async move {
                c.kv_client()
                    .max_decoding_message_size(MAX_RESPONSE)
                    .get(PREFIX, Some(GetOptions::new().with_prefix()))
                    .await
            })
            .await?;
        let revision = listed.header().map_or(0, |h| h.revision());
        let mut records = Records::default();
        for kv in listed.kvs() {
            let key = kv.key().to_vec();
            match Self::parse(&key, kv.value()) {
                Ok(service) => {
                    records.insert(key, service);
                }
                Err(err) => tracing::warn!(error = %err, "skipping a registry record"),
            }
        }
        {
            let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
            // The first sync is the starting state, not a change; later syncs (after an
            // outage) report what changed while the watch was down.
            let report = cache.primed;
            // etcd back with an older revision than it had: its data is gone (wiped, restored
            // from an older snapshot), not the nodes, which register again within seconds.
            let lost_data = report && revision < cache.revision;
            let mut held = Vec::new();
            for (key, old) in cache.records.iter().filter(|_| report) {
                if !records.contains_key(key) {
                    if lost_data {
                        held.push((key.clone(), old.clone()));
                        continue;
                    }
                    let _ = self.events.send(Arc::new(Event {
                        action: Action::Delete,
                        service: old.clone(),
                    }));
                }
            }
            for (key, new) in records.iter().filter(|_| report) {
                let action = match cache.records.get(key) {
                    None => Some(Action::Create),
                    Some(old) if old != new => Some(Action::Update),
                    Some(_) => None,
                };
                if let Some(action) = action {
                    let _ = self.events.send(Arc::new(Event {
                        action,
                        service: new.clone(),
                    }));
                }
            }
            cache.records = records;
            cache.primed = true;
            cache.revision = revision;
            cache.held.clear();
            cache.held_until = None;
            if !held.is_empty() {
                tracing::warn!(
                    revision,
                    records = held.len(),
                    keep = ?HOLD_AFTER_DATA_LOSS,
                    "etcd came back without its data (an older revision): its records are kept until their nodes register again"
                );
                cache.held_until = Some(tokio::time::Instant::now() + HOLD_AFTER_DATA_LOSS);
                for (key, service) in held {
                    cache.held.insert(key.clone());
                    cache.records.insert(key, service);
                }
            }
        }
        self.primed.send_replace(true);
        self.refused
            .send_if_modified(|refused| refused.take().is_some());

        let client = self.client().await?;
        let options = WatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_start_revision(revision + 1);
        let mut stream = client
            .watch_client()
            .max_decoding_message_size(MAX_RESPONSE)
            .watch(PREFIX, Some(options))
            .await
            .map_err(|e| self.error(e))?;
        loop {
            let held_until = self
                .cache
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .held_until;
            let message = match held_until {
                Some(until) => tokio::select! {
                    message = stream.message() => message,
                    () = tokio::time::sleep_until(until) => {
                        self.drop_held();
                        continue;
                    }
                },
                None => stream.message().await,
            };
            let Some(resp) = message.map_err(|e| self.error(e))? else {
                break;
            };
            if resp.canceled() {
                return Err(RegistryError::Other(
                    "etcd cancelled the registry watch".into(),
                ));
            }
            let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
            if let Some(header) = resp.header() {
                cache.revision = cache.revision.max(header.revision());
            }
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                let key = kv.key().to_vec();
                // Written or deleted again: no longer held.
                cache.held.remove(&key);
                match event.event_type() {
                    EventType::Put => match Self::parse(&key, kv.value()) {
                        Ok(service) => {
                            let action = if cache.records.contains_key(&key) {
                                Action::Update
                            } else {
                                Action::Create
                            };
                            cache.records.insert(key, service.clone());
                            let _ = self.events.send(Arc::new(Event { action, service }));
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "skipping a registry record");
                            // The key no longer holds the node it held: that node left, as a
                            // list of the prefix (another process's, or the next sync's) has it.
                            if let Some(service) = cache.records.remove(&key) {
                                let _ = self.events.send(Arc::new(Event {
                                    action: Action::Delete,
                                    service,
                                }));
                            }
                        }
                    },
                    EventType::Delete => {
                        let old = cache.records.remove(&key).or_else(|| {
                            event
                                .prev_kv()
                                .and_then(|p| Self::parse(&key, p.value()).ok())
                        });
                        if let Some(service) = old {
                            let _ = self.events.send(Arc::new(Event {
                                action: Action::Delete,
                                service,
                            }));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// An etcd key as a log line or error may show it: bytes that are not UTF-8 as U+FFFD, and
/// control characters escaped (`\u{1b}`), so that a key written by hand cannot drive the
/// terminal that shows the log.
fn shown_key(key: &[u8]) -> String {
    String::from_utf8_lossy(key)
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Why no endpoint can be reached, if each of their addresses refused a TCP connection.
async fn refused_everywhere(endpoints: &[String], limit: Duration) -> Option<String> {
    if endpoints.is_empty() {
        return None;
    }
    for endpoint in endpoints {
        let authority = endpoint_authority(endpoint)?;
        let addresses: Vec<_> =
            tokio::time::timeout(limit, tokio::net::lookup_host(authority.as_str()))
                .await
                .ok()?
                .ok()?
                .collect();
        if addresses.is_empty() {
            return None;
        }
        for address in addresses {
            match tokio::time::timeout(limit, tokio::net::TcpStream::connect(address)).await {
                Ok(Err(err)) if err.kind() == std::io::ErrorKind::ConnectionRefused => {}
                _ => return None,
            }
        }
    }
    Some(format!(
        "etcd at {}: connection refused (nothing listens there: is etcd running, and is the registry address right?)",
        endpoints.join(",")
    ))
}

/// `host:port` of an endpoint written as `host:port` or `http(s)://host:port[/]`.
fn endpoint_authority(endpoint: &str) -> Option<String> {
    let uri: http::Uri = endpoint.parse().ok()?;
    uri.authority()
        .map(|authority| authority.as_str().to_string())
}

/// A failure to reach etcd in words: a transport status's message and the causes behind it
/// (`transport error: Connection reset by peer (os error 104)`), not tonic's rendering of it,
/// which prints the causes' debug form.
fn failure_text(err: &etcd_client::Error) -> String {
    let etcd_client::Error::GRpcStatus(status) = err else {
        return err.to_string();
    };
    let mut text = status.message().to_string();
    let mut cause = std::error::Error::source(status);
    while let Some(err) = cause {
        let said = err.to_string();
        if !said.is_empty() && !text.contains(&said) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&said);
        }
        cause = err.source();
    }
    if text.is_empty() {
        text = format!("{:?}", status.code());
    }
    text
}

/// What a failure to reach etcd says when what answers is not a gRPC server: an HTTP/1
/// server (a web server, a metrics port) answers the HTTP/2 preface with `HTTP/1.1 400 …`,
/// whose first bytes read as a frame far larger than any allowed (and so may the alert of a
/// TLS server answering plain text).
fn not_grpc_hint(failure: &str) -> Option<&'static str> {
    failure.contains("frame with invalid size").then_some(
        " (what answers there does not speak gRPC: is the address one of etcd's client URLs \
         (port 2379 by default), not another server's? If etcd serves TLS, give \
         --registry-tls-ca or an https:// address)",
    )
}

/// Whether a failure to reach etcd says the server closed the connection at once (the handshake
/// ended early, or the connection was reset): TLS on one side only, or not etcd.
fn closed_at_once(failure: &str) -> bool {
    let failure = failure.to_lowercase();
    [
        "tls handshake eof",
        "connection reset",
        "broken pipe",
        "connection closed",
    ]
    .iter()
    .any(|sign| failure.contains(sign))
}

/// What a failure to reach etcd says about TLS on one side only, given whether the client
/// uses TLS: a server on the other side of that mismatch closes the connection at once (the
/// handshake ends early, or the connection is reset).
fn tls_hint(failure: &str, client_tls: bool) -> Option<&'static str> {
    match (closed_at_once(failure), client_tls) {
        (false, _) => None,
        (true, true) => Some(
            " (etcd closed the connection during the TLS handshake: if it serves plain TCP, \
             leave out the --registry-tls-* flags and any https:// in its address)",
        ),
        (true, false) => Some(
            " (etcd closed the connection at once: if it serves TLS, give --registry-tls-ca, \
             and --registry-tls-cert/--registry-tls-key if it asks for a client certificate; \
             if what answers is not etcd, check that the address is one of etcd's client URLs \
             (port 2379 by default))",
        ),
    }
}

/// Keeps the cache synced for as long as the registry exists.
async fn cache_loop(inner: Weak<Inner>) {
    let mut backoff = Duration::from_millis(250);
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let result = strong.sync().await;
        match &result {
            Err(err @ RegistryError::Auth(_)) => {
                strong.refused.send_replace(Some(err.clone()));
            }
            Err(err @ RegistryError::Unreachable(_))
                if strong.nothing_listens.load(Ordering::Relaxed) =>
            {
                strong.refused.send_replace(Some(err.clone()));
            }
            _ => {}
        }
        let failure = result.as_ref().err().map(|err| strong.last_attempt(err));
        // Something listens there and closes the connection at once, or answers in another
        // protocol: TLS on one side only, or not etcd. No use waiting for it to change (an etcd
        // restarting refuses connections instead, which is told at once too): lookups waiting
        // for the first sync are told now (the loop goes on trying, in case the address is
        // taken over by etcd later).
        if let (Err(RegistryError::Unreachable(_)), Some(failure)) = (&result, &failure) {
            if not_grpc_hint(failure).is_some() || closed_at_once(failure) {
                strong
                    .refused
                    .send_replace(Some(RegistryError::Unreachable(format!(
                        "etcd at {}: {failure}",
                        strong.endpoints()
                    ))));
            }
        }
        *strong
            .last_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = failure;
        drop(strong);
        match result {
            Ok(()) => backoff = Duration::from_millis(250),
            Err(err) => {
                tracing::debug!(error = %err, "registry watch interrupted; serving cached nodes");
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
        tokio::time::sleep(backoff).await;
    }
}

/// Keeps one lease alive over one long-lived stream until the stream or the lease ends; then
/// says so through `lost`. The stream is watched between renewals too, so that etcd going away
/// (stopped, restarted with its data wiped) is known at once, not a third of the TTL later.
async fn keep_alive(
    client: etcd_client::Client,
    id: i64,
    ttl: Duration,
    alive: Arc<AtomicBool>,
    key: String,
    lost: Arc<watch::Sender<u64>>,
) {
    let tick = (ttl / 3).max(Duration::from_millis(500));
    let result: Result<(), String> = async {
        let (mut keeper, mut stream) = client
            .lease_client()
            .keep_alive(id)
            .await
            .map_err(|e| e.to_string())?;
        // What etcd said on the stream: the lease renewed, or why it is lost.
        let renewed = |said: Result<Option<etcd_client::LeaseKeepAliveResponse>, _>| match said
            .map_err(|e: etcd_client::Error| e.to_string())?
        {
            Some(resp) if resp.ttl() > 0 => Ok(()),
            Some(_) => Err("etcd reports the lease expired".to_string()),
            None => Err("etcd closed the keepalive stream".to_string()),
        };
        loop {
            keeper.keep_alive().await.map_err(|e| e.to_string())?;
            renewed(stream.message().await)?;
            let sleep = tokio::time::sleep(tick);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    () = &mut sleep => break,
                    // Nothing is due before the next renewal: this is the stream ending.
                    said = stream.message() => renewed(said)?,
                }
            }
        }
    }
    .await;
    alive.store(false, Ordering::SeqCst);
    if let Err(err) = result {
        tracing::warn!(%key, error = %err, "registration lease lost; registering again");
    }
    lost.send_modify(|n| *n += 1);
}

impl EtcdRegistry {
    fn start_cache(&self) {
        let mut task = self
            .inner
            .cache_task
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Started again when it ended: the loop runs until the registry goes, unless the
        // runtime it was spawned on shut down (a test's, a gateway worker that stopped), and a
        // cache that nothing syncs would answer with stale nodes for ever.
        if task
            .as_ref()
            .is_none_or(tokio::task::AbortHandle::is_finished)
        {
            *task = Some(tokio::spawn(cache_loop(Arc::downgrade(&self.inner.0))).abort_handle());
        }
    }

    /// The cached records, waiting up to the dial timeout for the first sync.
    /// Cached records, only those of `name` when given (filtered before anything is copied).
    async fn cached(&self, name: Option<&str>) -> Result<Vec<Service>, RegistryError> {
        self.start_cache();
        if !*self.inner.primed.borrow() {
            self.first_sync().await?;
        }
        let cache = self.inner.cache.read().unwrap_or_else(|p| p.into_inner());
        Ok(match name {
            Some(name) => merge(cache.records.named(name).cloned()),
            None => merge(cache.records.values().cloned()),
        })
    }

    /// Waits up to the dial timeout for the cache's first sync.
    async fn first_sync(&self) -> Result<(), RegistryError> {
        let mut primed = self.inner.primed.subscribe();
        let mut refused = self.inner.refused.subscribe();
        let waited = tokio::time::timeout(self.inner.options.dial_timeout, async {
            tokio::select! {
                biased;
                synced = primed.wait_for(|p| *p) => synced.map(|_| ()).map_err(|_| None),
                refusal = refused.wait_for(Option::is_some) => {
                    Err(refusal.ok().and_then(|r| r.clone()))
                }
            }
        })
        .await;
        match waited {
            Ok(Ok(())) => {}
            Ok(Err(Some(refusal))) => return Err(refusal),
            Ok(Err(None)) | Err(_) => {
                let mut why = format!(
                    "etcd at {} has not answered yet (waited {:?})",
                    self.endpoints(),
                    self.inner.options.dial_timeout
                );
                let last = self
                    .inner
                    .last_failure
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                if let Some(last) = last {
                    why.push_str("; the last attempt: ");
                    why.push_str(&last);
                }
                return Err(RegistryError::Unreachable(why));
            }
        }
        Ok(())
    }

    async fn register_node(&self, record: Service, ttl: Duration) -> Result<(), RegistryError> {
        let node = &record.nodes[0];
        let key = node_key(&record.name, &node.id);
        let value =
            serde_json::to_string(&record).map_err(|e| RegistryError::Other(e.to_string()))?;
        let current = {
            let leases = self.inner.leases.lock().unwrap_or_else(|p| p.into_inner());
            leases
                .get(&key)
                .filter(|l| l.alive.load(Ordering::SeqCst))
                .map(|l| (l.id, l.value == value))
        };
        if let Some((id, same)) = current {
            // The lease is alive: re-put only if the record changed, or if the key no longer
            // holds it on this lease (deleted or overwritten behind this node's back: by an
            // operator, a tool, a prefix delete), which nothing else would ever repair.
            if same {
                let k = key.clone();
                let stored = self
                    .inner
                    .op("a get", |mut c| async move { c.get(k, None).await })
                    .await?;
                let stored = stored.kvs().first();
                let intact =
                    stored.is_some_and(|kv| kv.lease() == id && kv.value() == value.as_bytes());
                if intact {
                    return Ok(());
                }
                // On another live lease: another process registered this node id since (a
                // replacement that kept the id). The latest registration stands, as in go-micro;
                // taking the key back would list this node in its place. Should the other go,
                // its key goes with it and this node writes its own again.
                if let Some(kv) = stored.filter(|kv| kv.lease() != 0 && kv.lease() != id) {
                    tracing::warn!(%key, lease = kv.lease(), "another process registered this node id; leaving its registration in place");
                    return Ok(());
                }
                tracing::warn!(%key, "the registration was deleted or changed in etcd; writing it again");
            }
            let (k, v) = (key.clone(), value.clone());
            let put = self
                .inner
                .op("a put", |mut c| async move {
                    c.put(k, v, Some(PutOptions::new().with_lease(id))).await
                })
                .await;
            if put.is_ok() {
                if let Some(l) = self
                    .inner
                    .leases
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_mut(&key)
                {
                    l.value = value;
                }
                return Ok(());
            }
        }
        // The lease's id is chosen here, not by etcd, and noted before the grant is sent: should
        // this future be dropped before the grant's answer, the lease it may leave in etcd (and
        // the key that a put sent on it may write after the deregistration's delete) is still
        // known, and revoked when the node is deregistered.
        let id = new_lease_id();
        {
            let now = std::time::Instant::now();
            // A lease etcd granted and nothing kept alive is gone after its TTL (and a second).
            let expired = ttl.max(Duration::from_secs(1)) + Duration::from_secs(1);
            let mut unsettled = self
                .inner
                .unsettled
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let ids = unsettled.entry(key.clone()).or_default();
            ids.retain(|(_, asked)| now.duration_since(*asked) < expired);
            ids.push((id, now));
        }
        let registered = self
            .register_on_new_lease(key.clone(), value, id, ttl)
            .await;
        // Registered: the lease is kept alive and recorded. A failed attempt's lease stays
        // noted: etcd may yet apply a grant and a put it timed out waiting for.
        if registered.is_ok() {
            let mut unsettled = self
                .inner
                .unsettled
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(ids) = unsettled.get_mut(&key) {
                ids.retain(|&(other, _)| other != id);
                if ids.is_empty() {
                    unsettled.remove(&key);
                }
            }
        }
        registered
    }

    /// Asks for lease `id` with `ttl`, puts the node's `key` on it, keeps it alive and records
    /// it (revoking the node's lease before it).
    async fn register_on_new_lease(
        &self,
        key: String,
        value: String,
        id: i64,
        ttl: Duration,
    ) -> Result<(), RegistryError> {
        let secs = ttl.as_secs().max(1) as i64;
        let granted = self
            .inner
            .op("a lease grant", |mut c| async move {
                c.lease_grant(secs, Some(LeaseGrantOptions::new().with_id(id)))
                    .await
            })
            .await?;
        // etcd grants the id asked for; a server that chose its own is used as it is.
        let id = granted.id();
        let (k, v) = (key.clone(), value.clone());
        self.inner
            .op("a put", |mut c| async move {
                c.put(k, v, Some(PutOptions::new().with_lease(id))).await
            })
            .await?;
        let client = self.inner.client().await?;
        let alive = Arc::new(AtomicBool::new(true));
        let task = tokio::spawn(keep_alive(
            client,
            id,
            ttl,
            Arc::clone(&alive),
            key.clone(),
            Arc::clone(&self.inner.lost),
        ));
        let old = self
            .inner
            .leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                key,
                Lease {
                    id,
                    value,
                    alive,
                    task,
                },
            );
        if let Some(old) = old {
            old.task.abort();
            let old_id = old.id;
            let _ = self
                .inner
                .op("a lease revoke", |mut c| async move {
                    c.lease_revoke(old_id).await
                })
                .await;
        }
        Ok(())
    }
}

impl Registry for EtcdRegistry {
    fn name(&self) -> &'static str {
        "etcd"
    }

    fn register<'a>(
        &'a self,
        service: &'a Service,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            for node in &service.nodes {
                let record = Service {
                    nodes: vec![node.clone()],
                    ..service.clone()
                };
                self.register_node(record, ttl).await?;
            }
            Ok(())
        })
    }

    fn deregister<'a>(&'a self, service: &'a Service) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            let mut failed = None;
            for node in &service.nodes {
                let key = node_key(&service.name, &node.id);
                let lease = self
                    .inner
                    .leases
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key);
                // Stop keeping the node alive first: should etcd not take the delete (stalled,
                // unreachable), the key still expires with its TTL instead of living on for as
                // long as this process does.
                if let Some(lease) = &lease {
                    lease.task.abort();
                }
                // The delete, and with it every lease of the node: the one kept alive, and any a
                // registration cut short or failed asked for. A put on one of them may still be
                // on its way to etcd, to land after the delete; once the lease is revoked, it fails,
                // and a key one wrote already went with the lease. (A lease whose grant etcd has
                // not applied yet is not found, and may be granted after: the attempt that asked
                // for it was dropped before it heard the answer, so it sent no put on it, and the
                // lease holds nothing until it expires with its TTL.)
                let unsettled = self
                    .inner
                    .unsettled
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key)
                    .unwrap_or_default();
                let attempted = !unsettled.is_empty();
                let mut ids: Vec<i64> = lease
                    .iter()
                    .map(|l| l.id)
                    .chain(unsettled.into_iter().map(|(id, _)| id))
                    .collect();
                ids.sort_unstable();
                ids.dedup();
                let k = key.clone();
                let delete = async {
                    match &lease {
                        // Only while the key is on this node's lease: a process that registered
                        // the same node id since (a replacement that kept the id) stays
                        // registered. (Revoking leases of this node's only leaves it alone too.)
                        Some(lease) => {
                            let id = lease.id;
                            self.inner
                                .op("a delete", |mut c| async move {
                                    let only_ours = Txn::new()
                                        .when([Compare::lease(k.clone(), CompareOp::Equal, id)])
                                        .and_then([TxnOp::delete(k, None)]);
                                    c.txn(only_ours).await.map(drop)
                                })
                                .await
                        }
                        // Never registered by this handle, only attempted: what its attempts
                        // wrote goes with their leases, revoked below; a key on another lease
                        // is another process's (a replacement that kept the node id).
                        None if attempted => Ok(()),
                        None => {
                            self.inner
                                .op("a delete", |mut c| async move {
                                    c.delete(k, None).await.map(drop)
                                })
                                .await
                        }
                    }
                };
                let revoke = async {
                    let mut revoked = Ok(());
                    for id in ids {
                        if let Err(err) = self.inner.revoke(id).await {
                            revoked = revoked.and(Err(err));
                        }
                    }
                    revoked
                };
                // Side by side: the delete does not wait for the revokes (one after another,
                // usually one), within the bound the caller puts on a deregistration.
                let (deleted, revoked) = tokio::join!(delete, revoke);
                if let Err(err) = deleted.and(revoked) {
                    failed.get_or_insert(err);
                }
            }
            failed.map_or(Ok(()), Err)
        })
    }

    fn registrations_lost(&self) -> Option<watch::Receiver<u64>> {
        Some(self.inner.lost.subscribe())
    }

    fn get_service<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Service>, RegistryError>> {
        Box::pin(self.cached(Some(name)))
    }

    fn list_services(&self) -> BoxFuture<'_, Result<Vec<Service>, RegistryError>> {
        Box::pin(self.cached(None))
    }

    fn watch<'a>(
        &'a self,
        service: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Watcher, RegistryError>> {
        let filter = service.map(str::to_string);
        Box::pin(async move {
            self.start_cache();
            Ok(watch_stream(self.inner.events.subscribe(), filter))
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), RegistryError>> {
        Box::pin(async move {
            self.inner
                .op("a ping", |mut c| async move {
                    c.get(
                        PREFIX,
                        Some(
                            GetOptions::new()
                                .with_prefix()
                                .with_keys_only()
                                .with_limit(1),
                        ),
                    )
                    .await
                })
                .await
                .map(|_| ())
        })
    }
}

/// Turns a broadcast receiver into a watcher stream, optionally for one service. The stream
/// ends when it fell so far behind that events were lost (a burst of more changes than the
/// channel holds, such as the re-sync after an outage): its watcher must read the registry
/// again rather than go on with nodes that may have left.
fn watch_stream(rx: broadcast::Receiver<Arc<Event>>, filter: Option<String>) -> Watcher {
    use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
    use tokio_stream::wrappers::BroadcastStream;
    use tokio_stream::StreamExt;
    Box::pin(
        BroadcastStream::new(rx)
            .map_while(|e| match e {
                Ok(e) => Some(e),
                Err(BroadcastStreamRecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "a registry watch fell behind and missed changes; it ends so that its watcher reads the registry again");
                    None
                }
            })
            .filter(move |e| filter.as_ref().is_none_or(|name| *name == e.service.name))
            .map(Arc::unwrap_or_clone),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Node;

    fn record(name: &str, node: &str) -> Service {
        Service {
            name: name.into(),
            nodes: vec![Node {
                id: node.into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn endpoints_are_probed_at_their_host_and_port() {
        for (endpoint, authority) in [
            ("127.0.0.1:2379", Some("127.0.0.1:2379")),
            ("etcd-0:2379", Some("etcd-0:2379")),
            ("localhost:2379", Some("localhost:2379")),
            ("http://etcd-0:2379", Some("etcd-0:2379")),
            ("HTTPS://etcd-0:2379/", Some("etcd-0:2379")),
            ("[::1]:2379", Some("[::1]:2379")),
            ("http://", None),
            ("", None),
        ] {
            assert_eq!(
                endpoint_authority(endpoint).as_deref(),
                authority,
                "{endpoint}"
            );
        }
    }

    #[tokio::test]
    async fn only_endpoints_that_all_refuse_are_called_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap().to_string();
        let closed = {
            let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            gone.local_addr().unwrap().to_string()
        };
        let limit = Duration::from_secs(2);
        let refused = refused_everywhere(std::slice::from_ref(&closed), limit).await;
        assert!(
            refused.as_deref().is_some_and(|r| r.contains(&closed)),
            "{refused:?}"
        );
        // One endpoint that takes connections: etcd may be there (and busy, or failing).
        assert_eq!(
            refused_everywhere(&[closed.clone(), open], limit).await,
            None
        );
        // A name that does not resolve is not "refused".
        assert_eq!(
            refused_everywhere(&["no-such-host.invalid:2379".into()], limit).await,
            None
        );
        assert_eq!(refused_everywhere(&[], limit).await, None);
    }

    fn nodes_of(records: &Records, name: &str) -> Vec<String> {
        let mut ids: Vec<String> = records.named(name).map(|s| s.nodes[0].id.clone()).collect();
        ids.sort();
        ids
    }

    #[test]
    fn records_are_found_by_name_as_keys_come_change_and_go() {
        let mut records = Records::default();
        records.insert(b"/micro/registry/a/1".to_vec(), record("a", "1"));
        records.insert(b"/micro/registry/a/2".to_vec(), record("a", "2"));
        records.insert(b"/micro/registry/b/1".to_vec(), record("b", "b1"));
        assert_eq!(nodes_of(&records, "a"), ["1", "2"]);
        assert_eq!(nodes_of(&records, "b"), ["b1"]);
        assert!(nodes_of(&records, "c").is_empty());
        // A key overwritten with another service's record (by hand, or by another tool)
        // moves to that name.
        records.insert(b"/micro/registry/a/2".to_vec(), record("c", "2"));
        assert_eq!(nodes_of(&records, "a"), ["1"]);
        assert_eq!(nodes_of(&records, "c"), ["2"]);
        assert_eq!(records.remove(b"/micro/registry/a/1").unwrap().name, "a");
        assert!(nodes_of(&records, "a").is_empty());
        assert!(!records.by_name.contains_key("a"), "no empty entry kept");
        assert!(records.remove(b"/micro/registry/a/1").is_none());
        assert_eq!(records.values().count(), 2);
        // Keys that differ only in bytes that are not UTF-8 are two records.
        records.insert(b"/micro/registry/d/n\xff".to_vec(), record("d", "1"));
        records.insert(b"/micro/registry/d/n\xfe".to_vec(), record("d", "2"));
        assert_eq!(nodes_of(&records, "d"), ["1", "2"]);
        assert!(records.remove(b"/micro/registry/d/n\xfe").is_some());
        assert_eq!(nodes_of(&records, "d"), ["1"]);
    }

    #[test]
    fn keys_are_shown_without_control_characters_and_values_read_as_go_reads_them() {
        assert_eq!(
            shown_key(b"/micro/registry/esc/\x1b[31mRED\x07\xff"),
            "/micro/registry/esc/\\u{1b}[31mRED\\u{7}\u{fffd}"
        );
        let err = Inner::parse(b"/k/\x1b]0;t\x07", b"notjson").unwrap_err();
        assert!(!err.to_string().contains('\x1b'), "{err}");
        // Latin-1 bytes in a value: read, as Go's decoder reads them.
        let service = Inner::parse(
            b"/micro/registry/a/1",
            b"{\"name\":\"a\",\"version\":\"1\",\"metadata\":{\"owner\":\"J\xe9r\xf4me\"},\"nodes\":[]}",
        )
        .unwrap();
        assert_eq!(service.metadata["owner"], "J\u{fffd}r\u{fffd}me");
    }
}
