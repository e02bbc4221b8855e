//! CORS for the origins listed in `--cors-allowed-origins` (`MICRO_API_CORS_ALLOWED_ORIGINS`):
//! those get the CORS headers (credentials allowed), every other origin gets none, so browsers
//! refuse it. Unlike go-micro's gateway, it never reflects arbitrary origins.

use axum_core::body::Body;
use http::{header, HeaderValue, Method};
use tower::ServiceExt;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::api::plugin::{HttpService, Plugin, PluginContext, PluginError, PluginLayer};

/// CORS for listed origins.
#[derive(Debug, Default)]
pub struct Cors {
    origins: Vec<HeaderValue>,
}

impl Plugin for Cors {
    fn name(&self) -> &'static str {
        "cors"
    }

    fn flags(&self) -> Vec<clap::Arg> {
        vec![clap::Arg::new("cors-allowed-origins")
            .long("cors-allowed-origins")
            .env("MICRO_API_CORS_ALLOWED_ORIGINS")
            .value_delimiter(',')
            .value_name("ORIGIN,…")
            .help("Allow cross-origin requests from these origins (e.g. https://app.example.com)")]
    }

    fn init(&mut self, flags: &clap::ArgMatches, _ctx: &PluginContext) -> Result<(), PluginError> {
        let mut origins = Vec::new();
        for origin in flags
            .get_many::<String>("cors-allowed-origins")
            .into_iter()
            .flatten()
        {
            let origin = origin.trim().trim_end_matches('/');
            let valid =
                (origin.starts_with("http://") || origin.starts_with("https://")) && origin != "*";
            let value = HeaderValue::from_str(origin).ok().filter(|_| valid).ok_or_else(|| PluginError::Init {
                plugin: "cors".into(),
                message: format!(
                    "--cors-allowed-origins takes origins like https://app.example.com, not `{origin}`"
                ),
            })?;
            origins.push(value);
        }
        self.origins = origins;
        Ok(())
    }

    fn layer(&self) -> Option<PluginLayer> {
        if self.origins.is_empty() {
            return None;
        }
        let cors = CorsLayer::new()
            .allow_origin(AllowOrigin::list(self.origins.clone()))
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
                Method::OPTIONS,
            ])
            .allow_headers(tower_http::cors::AllowHeaders::mirror_request())
            .allow_credentials(true)
            .max_age(std::time::Duration::from_secs(600));
        let origins = std::sync::Arc::new(self.origins.clone());
        Some(PluginLayer::new(tower::layer::layer_fn(
            move |inner: HttpService| {
                let with_cors = HttpService::new(
                    tower::ServiceBuilder::new()
                        .layer(cors.clone())
                        .map_response(|r: http::Response<_>| r.map(Body::new))
                        .service(inner.clone()),
                );
                let origins = std::sync::Arc::clone(&origins);
                HttpService::new(tower::service_fn(move |req: http::Request<Body>| {
                    // The CORS layer answers every OPTIONS request itself; one that is no
                    // preflight (no `Access-Control-Request-Method`) is the service's, with the
                    // headers the layer gives other requests from a listed origin.
                    let preflight_or_other = req.method() != Method::OPTIONS
                        || req
                            .headers()
                            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
                    let service = if preflight_or_other {
                        with_cors.clone()
                    } else {
                        inner.clone()
                    };
                    let allowed = req
                        .headers()
                        .get(header::ORIGIN)
                        .filter(|o| !preflight_or_other && origins.contains(o))
                        .cloned();
                    async move {
                        let mut resp = service.oneshot(req).await?;
                        if !preflight_or_other {
                            let headers = resp.headers_mut();
                            headers.append(header::VARY, HeaderValue::from_static("origin"));
                            if let Some(origin) = allowed {
                                headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
                                headers.insert(
                                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                                    HeaderValue::from_static("true"),
                                );
                            }
                        }
                        Ok(resp)
                    }
                }))
            },
        )))
    }
}
