//! `--health-path /health`: a health endpoint for load balancers. 200 `{"status":"ok"}` while the
//! registry answers, 503 with the reason when it does not.

use std::sync::Arc;
use std::time::Duration;

use axum_core::body::Body;
use http::{header, Request, Response, StatusCode};
use rmicro_runtime::Registry;
use tower::ServiceExt;

use crate::api::plugin::{HttpService, Plugin, PluginContext, PluginError, PluginLayer};

/// The health endpoint.
#[derive(Default)]
pub struct Health {
    path: Option<String>,
    registry: Option<Arc<dyn Registry>>,
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

impl Plugin for Health {
    fn name(&self) -> &'static str {
        "health"
    }

    fn flags(&self) -> Vec<clap::Arg> {
        vec![clap::Arg::new("health-path")
            .long("health-path")
            .env("MICRO_API_HEALTH_PATH")
            .value_name("PATH")
            .help("Serve a health check for load balancers at PATH (503 while the registry is unreachable)")]
    }

    fn init(&mut self, flags: &clap::ArgMatches, ctx: &PluginContext) -> Result<(), PluginError> {
        self.path = flags.get_one::<String>("health-path").cloned();
        if let Some(path) = &self.path {
            if !path.starts_with('/') {
                return Err(PluginError::Init {
                    plugin: "health".into(),
                    message: format!("--health-path must start with `/`, got `{path}`"),
                });
            }
        }
        self.registry = Some(Arc::clone(&ctx.registry));
        Ok(())
    }

    fn layer(&self) -> Option<PluginLayer> {
        let path: Arc<str> = Arc::from(self.path.clone()?.as_str());
        let registry = self.registry.clone()?;
        Some(PluginLayer::new(tower::layer::layer_fn(
            move |inner: HttpService| {
                let path = Arc::clone(&path);
                let registry = Arc::clone(&registry);
                HttpService::new(tower::service_fn(move |req: Request<Body>| {
                    let inner = inner.clone();
                    let registry = Arc::clone(&registry);
                    let hit = req.uri().path() == &*path;
                    async move {
                        if !hit {
                            return inner.oneshot(req).await;
                        }
                        let ping =
                            tokio::time::timeout(Duration::from_secs(3), registry.ping()).await;
                        Ok(match ping {
                            Ok(Ok(())) => json(
                                StatusCode::OK,
                                serde_json::json!({ "status": "ok", "registry": registry.name() }),
                            ),
                            Ok(Err(err)) => {
                                // The cause (addresses, transport internals) goes to the log,
                                // not to whoever asks this unauthenticated endpoint.
                                tracing::warn!(registry = registry.name(), error = %err, "health check: registry unreachable");
                                json(
                                    StatusCode::SERVICE_UNAVAILABLE,
                                    serde_json::json!({ "status": "unavailable", "registry": registry.name(), "detail": "the registry is unreachable" }),
                                )
                            }
                            Err(_) => json(
                                StatusCode::SERVICE_UNAVAILABLE,
                                serde_json::json!({ "status": "unavailable", "registry": registry.name(), "detail": "the registry did not answer within 3 s" }),
                            ),
                        })
                    }
                }))
            },
        )))
    }
}
