//! Gateway plugins: a name, clap flags (with env vars), an init hook that sees the parsed flags,
//! and a tower layer.
//!
//! Plugins are registered before the CLI runs ([`crate::Cli::plugin`]); their flags join those
//! of `rmicro api`, and after parsing each plugin's [`Plugin::init`] sees the matches. A plugin
//! whose flags leave it off returns no layer.
//!
//! **Order**: the first plugin registered is the outermost layer: it sees each request first and
//! each response last. The built-ins come first, in this order: the access log (so it sees
//! every request, refused ones too), health (so load balancers need no token), CORS (so
//! preflights are answered before auth), token auth. Custom plugins follow in
//! the order they were added, then the proxy.
//!
//! ```no_run
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

use std::convert::Infallible;
use std::sync::Arc;

use axum_core::body::Body;
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
#[derive(Debug, thiserror::Error)]
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
    /// # Errors
    ///
    /// A message that stops the gateway from starting.
    fn init(&mut self, flags: &clap::ArgMatches, ctx: &PluginContext) -> Result<(), PluginError> {
        let _ = (flags, ctx);
        Ok(())
    }

    /// The layer, or `None` when the plugin is off.
    fn layer(&self) -> Option<PluginLayer>;
}
