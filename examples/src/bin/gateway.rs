//! A custom gateway, as the seed built a custom `micro` binary: the `rmicro` CLI plus a plugin of
//! its own.
//!
//! ```text
//! cargo run -p rmicro-examples --features etcd --bin gateway -- api --address 127.0.0.1:8088 \
//!     --registry etcd --registry-address 127.0.0.1:2379 --request-id
//! ```
//!
//! The `request-id` plugin (off unless `--request-id` or `MICRO_API_REQUEST_ID=true`) gives every
//! request that reaches it an `x-request-id` (keeping one the client sent), passes it to the
//! backend and returns it on the response. Like every plugin added with `Cli::plugin`, it sits
//! inside the built-ins: requests they answer themselves (health checks, CORS preflights, 401s)
//! do not reach it.

use std::process::ExitCode;

use rmicro::api::plugin::http::{HeaderName, HeaderValue, Request};
use rmicro::api::plugin::{
    clap, from_fn, Body, Next, Plugin, PluginContext, PluginError, PluginLayer,
};

const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Tags every request with an id.
#[derive(Default)]
struct RequestId {
    on: bool,
}

impl Plugin for RequestId {
    fn name(&self) -> &'static str {
        "request-id"
    }

    fn flags(&self) -> Vec<clap::Arg> {
        vec![clap::Arg::new("request-id")
            .long("request-id")
            .env("MICRO_API_REQUEST_ID")
            .action(clap::ArgAction::SetTrue)
            .help("Give every request an x-request-id and return it on the response")]
    }

    fn init(&mut self, flags: &clap::ArgMatches, _ctx: &PluginContext) -> Result<(), PluginError> {
        self.on = flags.get_flag("request-id");
        Ok(())
    }

    fn layer(&self) -> Option<PluginLayer> {
        if !self.on {
            return None;
        }
        Some(from_fn(|mut req: Request<Body>, next: Next| async move {
            let id = match req.headers().get(&HEADER) {
                Some(id) => id.clone(),
                None => HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                    .expect("a UUID is a valid header value"),
            };
            req.headers_mut().insert(HEADER, id.clone());
            let mut resp = next.run(req).await;
            resp.headers_mut().insert(HEADER, id);
            resp
        }))
    }
}

fn main() -> ExitCode {
    let mut cli = rmicro::Cli::new();
    if let Err(err) = cli.plugin(RequestId::default()) {
        eprintln!("error: {err}");
        return ExitCode::from(2);
    }
    cli.run()
}
