//! Flags and environment variables with go-micro's names, for any service binary.
//!
//! ```no_run
//! use clap::Parser;
//!
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     micro: rmicro_runtime::config::Flags,
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let cli = Cli::parse();
//! let mut service = cli.micro.service("go.micro.srv.user")?.build();
//! // register_user_handler(service.server_mut(), MyUser)?;
//! service.run().await?;
//! # Ok(()) }
//! ```
//!
//! | flag | env | default |
//! |---|---|---|
//! | `--registry` | `MICRO_REGISTRY` | `memory` (or `etcd`) |
//! | `--registry-address` | `MICRO_REGISTRY_ADDRESS` | `127.0.0.1:2379` for etcd |
//! | `--registry-username` / `--registry-password` | `MICRO_REGISTRY_USERNAME` / `_PASSWORD` | none |
//! | `--registry-timeout` | `MICRO_REGISTRY_TIMEOUT` | `5s` (etcd dial timeout) |
//! | `--server-address` | `MICRO_SERVER_ADDRESS` | `127.0.0.1:0` |
//! | `--server-advertise` | `MICRO_SERVER_ADVERTISE` | the bound address |
//! | `--server-version` | `MICRO_SERVER_VERSION` | `latest` |
//! | `--register-ttl` | `MICRO_REGISTER_TTL` | `90s` |
//! | `--register-interval` | `MICRO_REGISTER_INTERVAL` | `30s` |
//! | `--deregister-grace` | `MICRO_DEREGISTER_GRACE` | `1s` (serving on after deregistering, when stopping) |
//! | `--client-request-timeout` | `MICRO_CLIENT_REQUEST_TIMEOUT` | `5s` |
//! | `--client-retries` | `MICRO_CLIENT_RETRIES` | `1` |
//! | `--selector` | `MICRO_SELECTOR` | `random` (or `roundrobin`) |
//!
//! go-micro v2's underscore spellings (`--registry_address`, `--register_ttl`, …) are accepted
//! too. Durations take a unit (`90s`, `500ms`, `2m`); a bare number means seconds, as in go-micro.

use std::sync::Arc;
use std::time::Duration;

use crate::client::{Client, ClientBuilder};
use crate::registry::{MemoryRegistry, Registry};
use crate::selector::{Random, RoundRobin};
use crate::service::{Service, ServiceBuilder};

/// The registry flags alone, for tools that only read the registry (`rmicro registry`,
/// `rmicro api`). Their `Debug` leaves the password out.
#[derive(Clone, clap::Args)]
pub struct RegistryFlags {
    /// Registry to use: memory (one process) or etcd.
    #[arg(long, global = true, env = "MICRO_REGISTRY", default_value = "memory", value_parser = ["memory", "etcd"])]
    pub registry: String,
    /// Registry addresses, comma-separated: host:port or http(s)://host:port; a host without a
    /// port gets etcd's 2379, as in go-micro (etcd default: 127.0.0.1:2379). The memory registry
    /// has no address.
    // (Checked for etcd by `RegistryFlags::build`, through `parse_registry_address`; this
    // comment is not the doc above, which `--help` prints.)
    #[arg(
        long,
        global = true,
        alias = "registry_address",
        env = "MICRO_REGISTRY_ADDRESS",
        value_delimiter = ','
    )]
    pub registry_address: Vec<String>,
    /// Registry user name (etcd auth).
    #[arg(
        long,
        global = true,
        alias = "registry_username",
        env = "MICRO_REGISTRY_USERNAME"
    )]
    pub registry_username: Option<String>,
    /// Registry password (etcd auth).
    #[arg(
        long,
        global = true,
        alias = "registry_password",
        env = "MICRO_REGISTRY_PASSWORD",
        hide_env_values = true
    )]
    pub registry_password: Option<String>,
    /// How long to wait for the registry to answer before carrying on without it.
    #[arg(long, global = true, alias = "registry_timeout", env = "MICRO_REGISTRY_TIMEOUT", default_value = "5s", value_parser = parse_positive_duration)]
    pub registry_timeout: Duration,
    /// CA certificate (PEM file) for TLS to the registry; setting it turns TLS on.
    #[arg(long, global = true, env = "MICRO_REGISTRY_TLS_CA", value_name = "PEM")]
    pub registry_tls_ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM file) for registries that check client certificates.
    #[arg(
        long,
        global = true,
        env = "MICRO_REGISTRY_TLS_CERT",
        value_name = "PEM",
        requires = "registry_tls_key"
    )]
    pub registry_tls_cert: Option<std::path::PathBuf>,
    /// Key of the client certificate (PEM file).
    #[arg(
        long,
        global = true,
        env = "MICRO_REGISTRY_TLS_KEY",
        value_name = "PEM",
        requires = "registry_tls_cert"
    )]
    pub registry_tls_key: Option<std::path::PathBuf>,
    /// Name to verify the registry's certificate against (default: the address's host).
    #[arg(long, global = true, env = "MICRO_REGISTRY_TLS_DOMAIN")]
    pub registry_tls_domain: Option<String>,
}

impl std::fmt::Debug for RegistryFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryFlags")
            .field("registry", &self.registry)
            .field("registry_address", &self.registry_address)
            .field("registry_username", &self.registry_username)
            // Whether there is one, never the password itself.
            .field(
                "registry_password",
                &self.registry_password.as_ref().map(|_| "…"),
            )
            .field("registry_timeout", &self.registry_timeout)
            .field("registry_tls_ca", &self.registry_tls_ca)
            .field("registry_tls_cert", &self.registry_tls_cert)
            .field("registry_tls_key", &self.registry_tls_key)
            .field("registry_tls_domain", &self.registry_tls_domain)
            .finish()
    }
}

/// The go-micro flags, to `#[command(flatten)]` into a binary's clap parser.
#[derive(Debug, Clone, clap::Args)]
pub struct Flags {
    /// The registry flags.
    #[command(flatten)]
    pub registry: RegistryFlags,
    /// Address the gRPC server listens on (port 0: a free port; `:8080`, as in go-micro: every
    /// interface).
    #[arg(
        long,
        alias = "server_address",
        env = "MICRO_SERVER_ADDRESS",
        default_value = "127.0.0.1:0"
    )]
    pub server_address: String,
    /// Address registered for this node, if not the bound one.
    #[arg(long, alias = "server_advertise", env = "MICRO_SERVER_ADVERTISE")]
    pub server_advertise: Option<String>,
    /// Version registered for the service.
    #[arg(
        long,
        alias = "server_version",
        env = "MICRO_SERVER_VERSION",
        default_value = "latest"
    )]
    pub server_version: String,
    /// How long a registration lives without a refresh.
    #[arg(long, alias = "register_ttl", env = "MICRO_REGISTER_TTL", default_value = "90s", value_parser = parse_positive_duration)]
    pub register_ttl: Duration,
    /// How often the registration is refreshed.
    #[arg(long, alias = "register_interval", env = "MICRO_REGISTER_INTERVAL", default_value = "30s", value_parser = parse_positive_duration)]
    pub register_interval: Duration,
    /// How long a stopping node goes on serving after it deregistered, so that callers drop it
    /// before it closes its connections (`0` closes them at once).
    #[arg(long, alias = "deregister_grace", env = "MICRO_DEREGISTER_GRACE", default_value = "1s", value_parser = parse_duration)]
    pub deregister_grace: Duration,
    /// Timeout of each outgoing unary call.
    #[arg(long, alias = "client_request_timeout", env = "MICRO_CLIENT_REQUEST_TIMEOUT", default_value = "5s", value_parser = parse_positive_duration)]
    pub client_request_timeout: Duration,
    /// Retries of an outgoing call whose node could not be reached.
    #[arg(
        long,
        alias = "client_retries",
        env = "MICRO_CLIENT_RETRIES",
        default_value_t = 1
    )]
    pub client_retries: u32,
    /// How a node is picked: random or roundrobin.
    #[arg(long, env = "MICRO_SELECTOR", default_value = "random", value_parser = ["random", "roundrobin"])]
    pub selector: String,
    /// Serve over TLS with this certificate chain (PEM, the server's certificate first; with
    /// --server-tls-key).
    #[arg(
        long,
        env = "MICRO_SERVER_TLS_CERT",
        value_name = "PEM",
        requires = "server_tls_key"
    )]
    pub server_tls_cert: Option<std::path::PathBuf>,
    /// The server certificate's private key (PEM).
    #[arg(
        long,
        env = "MICRO_SERVER_TLS_KEY",
        value_name = "PEM",
        requires = "server_tls_cert"
    )]
    pub server_tls_key: Option<std::path::PathBuf>,
    /// Require client certificates signed by this CA (PEM): mutual TLS.
    #[arg(
        long,
        env = "MICRO_SERVER_TLS_CLIENT_CA",
        value_name = "PEM",
        requires = "server_tls_cert"
    )]
    pub server_tls_client_ca: Option<std::path::PathBuf>,
    /// TLS to the nodes this service's client calls.
    #[command(flatten)]
    pub client_tls: ClientTlsFlags,
}

/// TLS to the nodes a client calls (`--client-tls-*`), for `#[command(flatten)]` into a
/// binary's parser: part of [`Flags`], and of `rmicro api` for its rpc handler.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientTlsFlags {
    /// Reach nodes over TLS, checking their certificates against this CA (PEM).
    #[arg(long, env = "MICRO_CLIENT_TLS_CA", value_name = "PEM")]
    pub client_tls_ca: Option<std::path::PathBuf>,
    /// The client's certificate chain (PEM), for servers that require one (with
    /// --client-tls-key and --client-tls-ca).
    #[arg(long, env = "MICRO_CLIENT_TLS_CERT", value_name = "PEM", requires_all = ["client_tls_key", "client_tls_ca"])]
    pub client_tls_cert: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(
        long,
        env = "MICRO_CLIENT_TLS_KEY",
        value_name = "PEM",
        requires = "client_tls_cert"
    )]
    pub client_tls_key: Option<std::path::PathBuf>,
    /// Check every node's certificate against this name instead of the host it registered.
    #[arg(long, env = "MICRO_CLIENT_TLS_SERVER_NAME", requires = "client_tls_ca")]
    pub client_tls_server_name: Option<String>,
}

impl ClientTlsFlags {
    /// The client TLS the flags ask for: `None` without `--client-tls-ca`.
    ///
    /// # Errors
    ///
    /// When the files cannot be used, or the binary was built without the `tls` feature.
    #[cfg(feature = "tls")]
    pub fn build(&self) -> Result<Option<crate::tls::ClientTls>, ConfigError> {
        let Some(ca) = &self.client_tls_ca else {
            return Ok(None);
        };
        let tls = |source| ConfigError::Tls {
            flags: "--client-tls-ca/--client-tls-cert/--client-tls-key",
            source,
        };
        let mut client_tls = crate::tls::ClientTls::new(ca).map_err(tls)?;
        if let (Some(cert), Some(key)) = (&self.client_tls_cert, &self.client_tls_key) {
            client_tls = client_tls.identity(cert, key).map_err(tls)?;
        }
        if let Some(name) = &self.client_tls_server_name {
            client_tls = client_tls.server_name(name).map_err(tls)?;
        }
        Ok(Some(client_tls))
    }

    /// Refuses the flags in a binary built without the `tls` feature.
    ///
    /// # Errors
    ///
    /// [`ConfigError::TlsNotBuilt`] when `--client-tls-ca` is given.
    #[cfg(not(feature = "tls"))]
    pub fn build(&self) -> Result<Option<std::convert::Infallible>, ConfigError> {
        match self.client_tls_ca {
            Some(_) => Err(ConfigError::TlsNotBuilt("--client-tls-ca")),
            None => Ok(None),
        }
    }
}

/// A configuration that cannot be put into effect.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `--registry etcd` in a binary built without the `etcd` feature.
    #[error("--registry etcd needs rmicro-runtime's `etcd` feature; rebuild with it enabled (for the examples: `cargo run --features etcd …`)")]
    EtcdNotBuilt,
    /// A `--registry-address` that is not a registry address.
    #[error("--registry-address (MICRO_REGISTRY_ADDRESS): {0}")]
    RegistryAddress(String),
    /// A TLS file could not be read.
    #[error("could not read {flag} file {}: {source}", path.display())]
    TlsFile {
        /// The flag that named it.
        flag: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Registry options that only work together, given apart.
    #[error("{0}")]
    Incomplete(String),
    /// A TLS certificate, key or CA for the server or client that cannot be used.
    #[cfg(feature = "tls")]
    #[error("{flags}: {source}")]
    Tls {
        /// The flags that named the files.
        flags: &'static str,
        /// What is wrong with them.
        source: crate::tls::TlsError,
    },
    /// TLS flags in a binary built without the `tls` feature.
    #[error("{0} needs rmicro-runtime's `tls` feature; rebuild with it enabled")]
    TlsNotBuilt(&'static str),
}

debug_as_display!(ConfigError);

/// The longest duration [`parse_duration`] accepts: 100 years of 365 days.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Parses `90s`, `500ms`, `2m`, `1h`, or a bare number of seconds.
///
/// # Errors
///
/// A message saying which forms are accepted.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let bad = || {
        format!(
            "`{text}` is not a duration; use forms like 90s, 500ms, 1.5s, 1h30m or 30 (seconds)"
        )
    };
    let too_long = || format!("`{text}` is too long a duration; at most 100 years (876000h)");
    // A bare number is seconds; otherwise Go's form (`time.ParseDuration`, as go-micro's flags
    // take them): numbers with units, fractions allowed, summed (`1h30m`, `1.5s`).
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let n: u64 = text.parse().map_err(|_| too_long())?;
        return checked(Duration::from_secs(n), &too_long);
    }
    let mut rest = text;
    let mut total: u128 = 0;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(number_end);
        if number.is_empty() {
            return Err(bad());
        }
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let nanos_per: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => {
                return Err(format!(
                    "`{text}` has a number without a unit; use ms, s, m or h"
                ))
            }
            other => {
                return Err(format!(
                    "`{text}` has an unknown unit `{other}`; use ns, us, ms, s, m or h"
                ))
            }
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(bad());
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| too_long())?
        };
        let mut part = whole.checked_mul(nanos_per).ok_or_else(too_long)?;
        // Digits past the nanosecond are dropped, as Go does.
        let mut scale = nanos_per;
        for digit in fraction.bytes() {
            scale /= 10;
            part += u128::from(digit - b'0') * scale;
        }
        total = total.checked_add(part).ok_or_else(too_long)?;
        rest = tail;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| too_long())?;
    checked(
        Duration::new(secs, (total % 1_000_000_000) as u32),
        &too_long,
    )
}

/// `duration`, unless it is past [`MAX_DURATION`]: longer limits mean "never" and only overflow
/// the clocks they are added to.
fn checked(duration: Duration, too_long: &dyn Fn() -> String) -> Result<Duration, String> {
    if duration > MAX_DURATION {
        return Err(too_long());
    }
    Ok(duration)
}

/// Parses one registry address: `host:port`, `[v6]:port`, or a URL `http://host:port` or
/// `https://host:port`. A host without a port gets etcd's client port, 2379, as go-micro's etcd
/// registry gives it.
///
/// # Errors
///
/// For an empty address, another scheme, a path, user information, or anything that is not a
/// host and port, with a message that says which and what is expected.
pub fn parse_registry_address(text: &str) -> Result<String, String> {
    let text = text.trim();
    let expected = "give host:port, e.g. 127.0.0.1:2379 (several: comma-separated)";
    if text.is_empty() {
        return Err(format!("an empty registry address; {expected}"));
    }
    let (scheme, rest) = match text.split_once("://") {
        Some((scheme, rest)) => {
            if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
                return Err(format!(
                    "`{text}`: scheme `{scheme}` is not supported; use http:// or https://, or none"
                ));
            }
            (Some(scheme), rest)
        }
        None => (None, text),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#']) {
        return Err(format!(
            "`{text}` has a path; a registry address is host:port only"
        ));
    }
    if rest.contains('@') {
        return Err(format!(
            "`{text}` has user information; pass it with --registry-username and --registry-password"
        ));
    }
    let authority: http::uri::Authority = rest
        .parse()
        .map_err(|err| format!("`{text}` is not a registry address ({err}); {expected}"))?;
    if authority.host().is_empty() {
        return Err(format!("`{text}` has no host; {expected}"));
    }
    // Whether a port is written at all (the `http` crate reports none for one it cannot read).
    let has_port = match rest.strip_prefix('[') {
        Some(v6) => v6
            .split_once(']')
            .is_some_and(|(_, after)| after.starts_with(':')),
        None => rest.contains(':'),
    };
    let with_port = if !has_port {
        format!("{}:2379", authority.as_str())
    } else if rest.ends_with(':') {
        return Err(format!("`{text}` has no port after its `:`; {expected}"));
    } else if authority.port_u16().is_none_or(|port| port == 0) {
        return Err(format!("`{text}` has no usable port; {expected}"));
    } else {
        authority.as_str().to_string()
    };
    Ok(match scheme {
        Some(scheme) => format!("{scheme}://{with_port}"),
        None => with_port,
    })
}

/// [`parse_duration`], refusing zero: for the TTL, the register interval and the timeouts,
/// zero would expire the node at once, refresh it in a busy loop, or fail every operation.
///
/// # Errors
///
/// As [`parse_duration`], and for zero.
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err(format!(
            "`{}` is no time at all; this setting must be more than 0 (e.g. 500ms or 30s)",
            text.trim()
        ));
    }
    Ok(duration)
}

impl RegistryFlags {
    /// The registry the flags select. The memory registry is the process-wide one.
    ///
    /// # Errors
    ///
    /// [`ConfigError::EtcdNotBuilt`] for etcd without the `etcd` feature,
    /// [`ConfigError::RegistryAddress`] for an etcd address [`parse_registry_address`] refuses,
    /// [`ConfigError::TlsFile`] for a TLS file that cannot be read.
    pub fn build(&self) -> Result<Arc<dyn Registry>, ConfigError> {
        match self.registry.as_str() {
            "etcd" => self.etcd(),
            _ => {
                let etcd_only = !self.registry_address.is_empty()
                    || self.registry_username.is_some()
                    || self.registry_tls_ca.is_some()
                    || self.registry_tls_cert.is_some();
                if etcd_only {
                    // MICRO_REGISTRY_ADDRESS set and MICRO_REGISTRY forgotten: each process
                    // would keep a registry of its own, and services would never find each other.
                    tracing::warn!(
                        "the registry address, credentials or TLS files given are for etcd, but \
                         the registry is `memory` (this process only); they are not used: add \
                         --registry etcd (MICRO_REGISTRY=etcd)"
                    );
                }
                Ok(Arc::new(MemoryRegistry::global()))
            }
        }
    }

    #[cfg(feature = "etcd")]
    fn etcd(&self) -> Result<Arc<dyn Registry>, ConfigError> {
        let mut options = crate::registry::EtcdOptions::default();
        if !self.registry_address.is_empty() {
            options.endpoints = self
                .registry_address
                .iter()
                .map(|address| parse_registry_address(address))
                .collect::<Result<_, _>>()
                .map_err(ConfigError::RegistryAddress)?;
        }
        match (&self.registry_username, &self.registry_password) {
            (Some(user), Some(password)) => options.user = Some((user.clone(), password.clone())),
            (None, None) => {}
            _ => {
                return Err(ConfigError::Incomplete(
                    "--registry-username and --registry-password (MICRO_REGISTRY_USERNAME, \
                     MICRO_REGISTRY_PASSWORD) go together; give both, or neither"
                        .into(),
                ))
            }
        }
        let client_identity = self.registry_tls_cert.is_some() || self.registry_tls_key.is_some();
        if client_identity
            && (self.registry_tls_ca.is_none()
                || self.registry_tls_cert.is_none()
                || self.registry_tls_key.is_none())
        {
            return Err(ConfigError::Incomplete(
                "a client certificate for etcd needs --registry-tls-cert, --registry-tls-key and \
                 --registry-tls-ca (the CA that signed etcd's certificate) together"
                    .into(),
            ));
        }
        options.dial_timeout = self.registry_timeout;
        if let Some(ca) = &self.registry_tls_ca {
            // Read and looked at now: a file without the PEM block its flag needs (empty,
            // another file given by mistake) would fail only at the first connection, as a
            // handshake error naming neither the flag nor the file.
            // `holds`: what the file must hold, and the PEM label that shows it.
            const CERTIFICATE: (&str, &str) = ("certificate", "-----BEGIN CERTIFICATE-----");
            const KEY: (&str, &str) = ("private key", "PRIVATE KEY-----");
            let read =
                |flag: &'static str, path: &std::path::PathBuf, (holds, label): (&str, &str)| {
                    let tls_file = |source| ConfigError::TlsFile {
                        flag,
                        path: path.clone(),
                        source,
                    };
                    let pem = read_small_file(path).map_err(tls_file)?;
                    if !String::from_utf8_lossy(&pem).contains(label) {
                        return Err(tls_file(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!(
                                "it holds no PEM-encoded {holds} (`{}`)",
                                label.trim_matches('-')
                            ),
                        )));
                    }
                    Ok(pem)
                };
            let identity = match (&self.registry_tls_cert, &self.registry_tls_key) {
                (Some(cert), Some(key)) => Some((
                    read("--registry-tls-cert", cert, CERTIFICATE)?,
                    read("--registry-tls-key", key, KEY)?,
                )),
                _ => None,
            };
            options.tls = Some(crate::registry::EtcdTls {
                ca_pem: read("--registry-tls-ca", ca, CERTIFICATE)?,
                identity,
                domain: self.registry_tls_domain.clone(),
            });
        }
        Ok(Arc::new(crate::registry::EtcdRegistry::new(options)))
    }

    #[cfg(not(feature = "etcd"))]
    fn etcd(&self) -> Result<Arc<dyn Registry>, ConfigError> {
        Err(ConfigError::EtcdNotBuilt)
    }
}

impl Flags {
    /// The registry the flags select (see [`RegistryFlags::build`]).
    ///
    /// # Errors
    ///
    /// [`ConfigError::EtcdNotBuilt`] for etcd without the `etcd` feature.
    pub fn registry(&self) -> Result<Arc<dyn Registry>, ConfigError> {
        self.registry.build()
    }

    /// A client builder with the client flags applied, on `registry`.
    ///
    /// # Errors
    ///
    /// When the `--client-tls-*` files cannot be used (or the binary was built without the
    /// `tls` feature).
    pub fn client_builder(
        &self,
        registry: Arc<dyn Registry>,
    ) -> Result<ClientBuilder, ConfigError> {
        let mut builder = Client::builder();
        builder
            .registry(registry)
            .request_timeout(Some(self.client_request_timeout))
            .retries(self.client_retries);
        if self.selector == "roundrobin" {
            builder.selector(RoundRobin::default());
        } else {
            builder.selector(Random);
        }
        #[cfg(feature = "tls")]
        if let Some(tls) = self.client_tls.build()? {
            builder.tls(tls);
        }
        #[cfg(not(feature = "tls"))]
        self.client_tls.build()?;
        Ok(builder)
    }

    /// A client on the configured registry.
    ///
    /// # Errors
    ///
    /// As [`Flags::registry`] and [`Flags::client_builder`].
    pub fn client(&self) -> Result<Client, ConfigError> {
        Ok(self.client_builder(self.registry()?)?.build())
    }

    /// A service builder named `name` with every flag applied.
    ///
    /// # Errors
    ///
    /// As [`Flags::registry`] and [`Flags::client_builder`], and when the `--server-tls-*`
    /// files cannot be used.
    pub fn service(&self, name: &str) -> Result<ServiceBuilder, ConfigError> {
        let registry = self.registry()?;
        let mut builder = Service::builder(name);
        builder
            .version(self.server_version.clone())
            .address(self.server_address.clone())
            .register_ttl(self.register_ttl)
            .register_interval(self.register_interval)
            .deregister_grace(self.deregister_grace)
            .client(self.client_builder(Arc::clone(&registry))?.build())
            .registry(registry);
        if let Some(advertise) = &self.server_advertise {
            builder.advertise(advertise.clone());
        }
        if let (Some(cert), Some(key)) = (&self.server_tls_cert, &self.server_tls_key) {
            #[cfg(feature = "tls")]
            {
                let tls = |source| ConfigError::Tls {
                    flags: "--server-tls-cert/--server-tls-key/--server-tls-client-ca",
                    source,
                };
                let mut server_tls = crate::tls::ServerTls::new(cert, key).map_err(tls)?;
                if let Some(ca) = &self.server_tls_client_ca {
                    server_tls = server_tls.client_ca(ca).map_err(tls)?;
                }
                builder.tls(server_tls);
            }
            #[cfg(not(feature = "tls"))]
            {
                let _ = (cert, key);
                return Err(ConfigError::TlsNotBuilt("--server-tls-cert"));
            }
        }
        Ok(builder)
    }
}

pub use crate::files::{read_small_file, SMALL_FILE_LIMIT};

#[cfg(test)]
mod tests {
    use super::*;

    /// `main` returning `Box<dyn Error>` prints an error's `Debug`: it says what to do.
    #[test]
    fn an_error_returned_from_main_shows_its_message() {
        let err: Box<dyn std::error::Error> = Box::new(ConfigError::EtcdNotBuilt);
        assert_eq!(format!("{err:?}"), ConfigError::EtcdNotBuilt.to_string());
        assert!(
            format!("{err:?}").starts_with("--registry etcd needs rmicro-runtime's `etcd` feature")
        );
    }
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        micro: Flags,
    }

    #[test]
    fn debug_output_never_shows_the_registry_password() {
        let cli = Cli::try_parse_from([
            "svc",
            "--registry",
            "etcd",
            "--registry-username",
            "root",
            "--registry-password",
            "hunter2-secret",
        ])
        .unwrap();
        let shown = format!("{:?}", cli.micro);
        assert!(shown.contains("root"), "{shown}");
        assert!(!shown.contains("hunter2-secret"), "{shown}");
        #[cfg(feature = "etcd")]
        {
            let options = crate::registry::EtcdOptions {
                user: Some(("root".into(), "hunter2-secret".into())),
                ..Default::default()
            };
            let shown = format!("{options:?}");
            assert!(shown.contains("root"), "{shown}");
            assert!(!shown.contains("hunter2-secret"), "{shown}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("5 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_duration("soon")
            .unwrap_err()
            .contains("not a duration"));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("9999999999999999999h")
            .unwrap_err()
            .contains("too long"));
        assert_eq!(parse_duration("876000h"), Ok(MAX_DURATION));
        assert!(parse_duration("876001h")
            .unwrap_err()
            .contains("at most 100 years"));
        assert!(parse_duration("18446744073709551615s").is_err());
        // Go's form, as go-micro's flags take durations.
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0.5m"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("100us"), Ok(Duration::from_micros(100)));
        assert_eq!(
            parse_duration("2m3.25s"),
            Ok(Duration::from_millis(123_250))
        );
        assert!(parse_duration("1.5")
            .unwrap_err()
            .contains("without a unit"));
        assert!(parse_duration("-1s")
            .unwrap_err()
            .contains("not a duration"));
        assert!(parse_duration("1..5s")
            .unwrap_err()
            .contains("not a duration"));
        assert!(parse_duration("").unwrap_err().contains("not a duration"));
    }

    #[test]
    fn go_micro_defaults_and_spellings() {
        let cli = Cli::try_parse_from(["svc"]).unwrap();
        assert_eq!(cli.micro.registry.registry, "memory");
        assert_eq!(cli.micro.register_ttl, Duration::from_secs(90));
        assert_eq!(cli.micro.register_interval, Duration::from_secs(30));
        assert_eq!(cli.micro.client_request_timeout, Duration::from_secs(5));
        assert_eq!(cli.micro.client_retries, 1);
        let cli = Cli::try_parse_from([
            "svc",
            "--registry_address=10.0.0.1:2379,10.0.0.2:2379",
            "--register_ttl=30",
            "--selector",
            "roundrobin",
        ])
        .unwrap();
        assert_eq!(
            cli.micro.registry.registry_address,
            ["10.0.0.1:2379", "10.0.0.2:2379"]
        );
        assert_eq!(cli.micro.register_ttl, Duration::from_secs(30));
        assert!(Cli::try_parse_from(["svc", "--registry", "consul"]).is_err());
    }

    #[test]
    fn registry_addresses_are_checked_and_get_etcds_port() {
        let ok = |text: &str| parse_registry_address(text).unwrap();
        assert_eq!(ok("10.0.0.1:2379"), "10.0.0.1:2379");
        assert_eq!(ok(" etcd-0.etcd:2380 "), "etcd-0.etcd:2380");
        assert_eq!(ok("etcd"), "etcd:2379");
        assert_eq!(ok("[::1]:23790"), "[::1]:23790");
        assert_eq!(ok("[::1]"), "[::1]:2379");
        assert_eq!(ok("http://10.0.0.1:2379/"), "http://10.0.0.1:2379");
        assert_eq!(ok("https://etcd"), "https://etcd:2379");
        for (bad, says) in [
            ("", "an empty registry address; give host:port"),
            ("  ", "an empty registry address"),
            ("http://[bad", "`http://[bad` is not a registry address"),
            ("unix:///run/etcd.sock", "scheme `unix` is not supported"),
            ("10.0.0.1:2379/v3", "has a path"),
            ("root:pw@10.0.0.1:2379", "has user information"),
            ("10.0.0.1:", "has no port after its `:`"),
            ("10.0.0.1:0", "has no usable port"),
            ("10.0.0.1:99999", "has no usable port"),
            ("a b:2379", "is not a registry address"),
        ] {
            let err = parse_registry_address(bad).expect_err(bad);
            assert!(err.contains(says), "{bad:?}: {err}");
        }
        // Through the flags, as go-micro spells them too: checked for etcd, which has
        // addresses, and not for the memory registry, which has none.
        #[cfg(feature = "etcd")]
        {
            let flags = |args: &[&str]| {
                let mut argv = vec!["svc", "--registry", "etcd"];
                argv.extend(args);
                Cli::try_parse_from(argv).unwrap().micro.registry
            };
            assert!(flags(&["--registry_address=etcd-a,etcd-b:2380"])
                .build()
                .is_ok());
            let err = flags(&["--registry-address", "etcd-a,,etcd-b"])
                .build()
                .err()
                .expect("an empty address between commas is refused")
                .to_string();
            assert_eq!(err, "--registry-address (MICRO_REGISTRY_ADDRESS): an empty registry address; give host:port, e.g. 127.0.0.1:2379 (several: comma-separated)");
        }
        let memory = Cli::try_parse_from(["svc", "--registry-address", ""]).unwrap();
        assert!(memory.micro.registry.build().is_ok());
    }

    #[test]
    fn zero_durations_that_would_break_the_service_are_refused() {
        for flag in [
            "--register-interval",
            "--register-ttl",
            "--registry-timeout",
            "--client-request-timeout",
        ] {
            for zero in ["0", "0s", "0ms"] {
                let err = match Cli::try_parse_from(["svc", flag, zero]) {
                    Ok(_) => panic!("{flag} {zero} accepted"),
                    Err(err) => err.to_string(),
                };
                assert!(err.contains("more than 0"), "{flag} {zero}: {err}");
            }
        }
        let cli = Cli::try_parse_from(["svc", "--register-interval", "500ms"]).unwrap();
        assert_eq!(cli.micro.register_interval, Duration::from_millis(500));
    }

    #[test]
    fn the_deregister_grace_defaults_to_a_second_and_may_be_zero() {
        let cli = Cli::try_parse_from(["svc"]).unwrap();
        assert_eq!(cli.micro.deregister_grace, Duration::from_secs(1));
        let cli = Cli::try_parse_from(["svc", "--deregister-grace", "0"]).unwrap();
        assert_eq!(cli.micro.deregister_grace, Duration::ZERO);
        let cli = Cli::try_parse_from(["svc", "--deregister_grace=250ms"]).unwrap();
        assert_eq!(cli.micro.deregister_grace, Duration::from_millis(250));
    }
}
