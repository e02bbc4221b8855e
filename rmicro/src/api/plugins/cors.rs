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
            let origin = origin.trim();
            let value = serialized_origin(origin)
                .and_then(|o| HeaderValue::from_str(&o).map_err(|_| String::new()))
                .map_err(|why| PluginError::Init {
                    plugin: "cors".into(),
                    message: format!(
                        "--cors-allowed-origins takes origins like https://app.example.com, not \
                         `{origin}`{why}"
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
            // Said only to an allowed origin (the others get no CORS headers at all).
            .allow_credentials({
                let origins = self.origins.clone();
                tower_http::cors::AllowCredentials::predicate(move |origin, _| {
                    origins.contains(origin)
                })
            })
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

/// `origin` as browsers send it in `Origin` (RFC 6454's serialization): `scheme://host[:port]`,
/// scheme and host in lower case, without the scheme's default port or a trailing `/`; an
/// `Origin` is compared with the configured ones byte for byte, so `https://App.example:443`
/// would match nothing. The error says what cannot be in an origin (after a `: `).
fn serialized_origin(origin: &str) -> Result<String, String> {
    let origin = origin.trim_end_matches('/');
    let (scheme, rest) = origin
        .split_once("://")
        .ok_or_else(|| ": an origin starts with http:// or https://".to_string())?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => return Err(": an origin starts with http:// or https://".into()),
    };
    if rest.is_empty() || rest == "*" {
        return Err(": list the origins allowed, one by one".into());
    }
    if let Some(c) = rest.chars().find(|c| matches!(c, '/' | '?' | '#' | '@')) {
        return Err(format!(
            ": an origin is scheme://host[:port], with no `{c}` (a path, a query or user \
             information) after the host"
        ));
    }
    let host = rest.to_ascii_lowercase();
    let host = host.strip_suffix(default_port).unwrap_or(&host);
    Ok(format!("{scheme}://{host}"))
}

#[cfg(test)]
mod tests {
    use super::serialized_origin;

    #[test]
    fn origins_are_taken_as_browsers_send_them() {
        for (given, taken) in [
            ("https://app.example.com", "https://app.example.com"),
            ("https://app.example.com/", "https://app.example.com"),
            ("HTTPS://App.Example.com", "https://app.example.com"),
            ("https://c.example:443", "https://c.example"),
            ("http://c.example:80", "http://c.example"),
            ("http://c.example:8080", "http://c.example:8080"),
            ("https://[::1]:8443", "https://[::1]:8443"),
        ] {
            assert_eq!(serialized_origin(given).as_deref(), Ok(taken), "{given}");
        }
        for refused in [
            "app.example.com",
            "ftp://app.example.com",
            "https://*",
            "https://",
            "*",
            "https://a.example/app",
            "https://a.example?x=1",
            "https://user@a.example",
        ] {
            assert!(serialized_origin(refused).is_err(), "{refused}");
        }
        assert!(serialized_origin("https://a.example/app")
            .unwrap_err()
            .contains("no `/`"));
    }
}
