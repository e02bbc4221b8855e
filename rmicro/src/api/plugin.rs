//! Gateway plugins: a name, clap flags (with env vars), an init hook that sees the parsed flags,
//! and a tower layer.
//!
//! Plugins are registered before the CLI runs ([`crate::Cli::plugin`]); their flags join those
//! of `rmicro api`, and after parsing each plugin's [`Plugin::init`] sees the matches. A plugin
//! whose flags leave it off returns no layer.
//!
//! **Order**: the first plugin registered is the outermost layer: it sees each request first and
//! each response last. The built-ins come first, in this order: the metrics and the access log
//! (so they see every request, refused ones too), health (so load balancers need no token), CORS (so
//! preflights are answered before auth), token auth. Custom plugins follow in
//! the order they were added, then the proxy.
//!
//! **Dependencies**: the crates a plugin names come re-exported from here, at the versions the
//! gateway is built with: [`http`], [`tower`] (with its `util` feature) and [`clap`], and the
//! body type, [`Body`]. A plugin crate needs no dependency but `rmicro` for them; one that
//! adds its own `http`, `tower` or `clap` must pick the same major versions, or its types are
//! not the gateway's.
//!
//! A layer that changes every response:
//!
//! ```no_run
//! use rmicro::api::plugin::{clap, http, tower};
//! use rmicro::api::plugin::{HttpService, Plugin, PluginContext, PluginError, PluginLayer};
//!
//! /// Adds `x-served-by` to every response.
//! #[derive(Default)]
//! struct ServedBy(Option<String>);
//!
//! impl Plugin for ServedBy {
//!     fn name(&self) -> &'static str { "served-by" }
//!     fn flags(&self) -> Vec<clap::Arg> {
//!         vec![clap::Arg::new("served-by").long("served-by").env("MICRO_SERVED_BY")]
//!     }
//!     fn init(&mut self, flags: &clap::ArgMatches, _: &PluginContext) -> Result<(), PluginError> {
//!         self.0 = flags.get_one::<String>("served-by").cloned();
//!         Ok(())
//!     }
//!     fn layer(&self) -> Option<PluginLayer> {
//!         let value = http::HeaderValue::from_str(self.0.as_deref()?).ok()?;
//!         Some(PluginLayer::new(tower::layer::layer_fn(move |inner: HttpService| {
//!             let value = value.clone();
//!             HttpService::new(tower::util::MapResponse::new(inner, move |mut resp: http::Response<_>| {
//!                 resp.headers_mut().insert("x-served-by", value.clone());
//!                 resp
//!             }))
//!         })))
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     let mut cli = rmicro::Cli::new();
//!     cli.plugin(ServedBy::default()).expect("unique plugin name");
//!     cli.run()
//! }
//! ```
//!
//! A layer written as an async function ([`from_fn`]) that answers some requests itself, with
//! go-micro's error JSON ([`crate::api::error::response`]), reads the client's address, and
//! passes the rest on ([`Next::run`]; a call through an `rmicro_runtime::Client` made in
//! [`Plugin::init`] from [`PluginContext::registry`] can be awaited there too):
//!
//! ```no_run
//! use std::net::SocketAddr;
//!
//! use rmicro::api::plugin::http::{HeaderValue, Request, StatusCode};
//! use rmicro::api::plugin::{from_fn, Body, Next, Plugin, PluginLayer};
//!
//! /// 403 without an `x-tenant` header; tells the node who the client is.
//! struct Tenant;
//!
//! impl Plugin for Tenant {
//!     fn name(&self) -> &'static str { "tenant" }
//!     fn layer(&self) -> Option<PluginLayer> {
//!         Some(from_fn(|mut req: Request<Body>, next: Next| async move {
//!             if !req.headers().contains_key("x-tenant") {
//!                 // {"id":"go.micro.api","code":403,"detail":"…","status":"Forbidden"}
//!                 let detail = "an x-tenant header is required";
//!                 return rmicro::api::error::response(StatusCode::FORBIDDEN, detail);
//!             }
//!             if let Some(client) = req.extensions().get::<SocketAddr>().copied() {
//!                 let value = HeaderValue::from_str(&client.ip().to_string()).unwrap();
//!                 req.headers_mut().insert("x-client-ip", value);
//!             }
//!             next.run(req).await
//!         }))
//!     }
//! }
//! ```
//!
//! A plugin that only adds flags and an init step leaves [`Plugin::layer`] out.

pub use axum_core::body::Body;
pub use {clap, http, tower};

use std::convert::Infallible;
use std::sync::Arc;

use http::{Request, Response};
use rmicro_runtime::Registry;
use tower::util::{BoxCloneSyncService, BoxCloneSyncServiceLayer};

/// The HTTP service a plugin layer wraps (and returns). Each request carries the client's
/// address as a [`std::net::SocketAddr`] extension (`req.extensions().get::<SocketAddr>()`);
/// the proxy behind the plugins reads it there for `X-Forwarded-For`.
pub type HttpService = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// What a plugin contributes: a layer from [`HttpService`] to [`HttpService`].
pub type PluginLayer =
    BoxCloneSyncServiceLayer<HttpService, Request<Body>, Response<Body>, Infallible>;

/// What a plugin's init hook can use besides its flags.
#[derive(Clone)]
pub struct PluginContext {
    /// The registry the gateway resolves services in.
    pub registry: Arc<dyn Registry>,
}

impl std::fmt::Debug for PluginContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginContext")
            .field("registry", &self.registry.name())
            .finish()
    }
}

/// Why a plugin could not be registered or initialised.
///
/// A plugin's own failure is [`PluginError::init`]. More variants may come: a `match` on it
/// needs a wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// Two plugins share a name.
    #[error("a plugin named `{0}` is already registered; plugin names must be unique")]
    Duplicate(String),
    /// A plugin's flag has a name `rmicro api` uses already: a flag of its own (`--address`),
    /// `--help`, or a flag of a plugin registered before.
    #[error(
        "plugin `{plugin}`: its flag's {flag} is taken by {owner}; give the flag another name \
         (prefix it with the plugin's name, as `--{plugin}-...`)"
    )]
    FlagTaken {
        /// The plugin.
        plugin: String,
        /// Which name is taken: ``id `address` ``, `` `--address` `` or `` `-a` ``.
        flag: String,
        /// Who has it: `` `rmicro api` itself `` or ``plugin `name` ``.
        owner: String,
    },
    /// A plugin's flags are invalid or its setup failed.
    #[error("plugin `{plugin}`: {message}")]
    Init {
        /// The plugin.
        plugin: String,
        /// What went wrong.
        message: String,
    },
}

impl PluginError {
    /// `plugin`'s flags are invalid or its setup failed, for the reason `message` gives (said
    /// to the user as ``plugin `name`: message``, so say what to change).
    ///
    /// ```
    /// use rmicro::api::plugin::PluginError;
    ///
    /// let err = PluginError::init("quota", "--quota-per-minute must be above 0");
    /// assert_eq!(err.to_string(), "plugin `quota`: --quota-per-minute must be above 0");
    /// ```
    pub fn init(plugin: impl Into<String>, message: impl Into<String>) -> PluginError {
        PluginError::Init {
            plugin: plugin.into(),
            message: message.into(),
        }
    }
}

/// A gateway plugin.
pub trait Plugin: Send + Sync + 'static {
    /// A unique name.
    fn name(&self) -> &'static str;

    /// Flags (with env vars) added to `rmicro api`. Default: none.
    fn flags(&self) -> Vec<clap::Arg> {
        Vec::new()
    }

    /// Sees the parsed flags once, before the gateway starts. Default: nothing.
    ///
    /// It runs on the gateway's main thread, inside its tokio runtime (a current-thread one):
    /// `tokio::spawn` works there, but blocking on async work does not
    /// (`Handle::block_on` panics, and a `futures` executor waiting on a registry or gRPC call
    /// never returns). Do async work in the layer, or in a spawned task.
    ///
    /// # Errors
    ///
    /// A message that stops the gateway from starting: `rmicro api` prints it as
    /// ``error: plugin `name`: message`` and exits with status 2. Say which flag (and
    /// environment variable) holds the bad value, and what it should be.
    ///
    /// ```
    /// # use rmicro::api::plugin::{clap, PluginContext, PluginError};
    /// # struct Limit(u32);
    /// # impl Limit {
    /// fn init(&mut self, flags: &clap::ArgMatches, _: &PluginContext) -> Result<(), PluginError> {
    ///     let Some(text) = flags.get_one::<String>("limit-rps") else { return Ok(()) };
    ///     self.0 = text.parse().map_err(|_| {
    ///         PluginError::init(
    ///             "limit",
    ///             format!("--limit-rps (MICRO_API_LIMIT_RPS) `{text}` is not a whole number"),
    ///         )
    ///     })?;
    ///     Ok(())
    /// }
    /// # }
    /// ```
    fn init(&mut self, flags: &clap::ArgMatches, ctx: &PluginContext) -> Result<(), PluginError> {
        let _ = (flags, ctx);
        Ok(())
    }

    /// The layer, or `None` when the plugin is off. Default: none (a plugin of flags and init
    /// alone). [`from_fn`] makes one from an async function.
    fn layer(&self) -> Option<PluginLayer> {
        None
    }
}

/// A layer from an async function of the request and the rest of the pipeline, as axum's
/// `middleware::from_fn`: it answers the request itself, or passes it on with
/// [`Next::run`] (changing it before, or the response after).
///
/// ```
/// use rmicro::api::plugin::http::{HeaderValue, Request, StatusCode};
/// use rmicro::api::plugin::{from_fn, Body, Next, PluginLayer};
///
/// fn layer() -> PluginLayer {
///     from_fn(|req: Request<Body>, next: Next| async move {
///         if !req.headers().contains_key("x-tenant") {
///             return rmicro::api::error::response(StatusCode::FORBIDDEN, "an x-tenant header is required");
///         }
///         let mut resp = next.run(req).await;
///         resp.headers_mut().insert("x-served-by", HeaderValue::from_static("gateway-7"));
///         resp
///     })
/// }
/// ```
pub fn from_fn<F, Fut>(f: F) -> PluginLayer
where
    F: Fn(Request<Body>, Next) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
{
    PluginLayer::new(tower::layer::layer_fn(move |inner: HttpService| {
        let f = f.clone();
        HttpService::new(tower::service_fn(move |req: Request<Body>| {
            let answer = f(req, Next(inner.clone()));
            async move { Ok::<_, Infallible>(answer.await) }
        }))
    }))
}

/// The rest of the pipeline behind a [`from_fn`] layer: the plugins after it, then the handler.
#[derive(Clone)]
pub struct Next(HttpService);

impl Next {
    /// Passes `req` on and gives back the response.
    pub async fn run(self, req: Request<Body>) -> Response<Body> {
        use tower::ServiceExt;
        match self.0.oneshot(req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        }
    }
}

impl std::fmt::Debug for Next {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Next")
    }
}
