//! The route table: the `google.api.http` bindings services registered, read from the registry,
//! and go-micro's `/service/method` form for other paths.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{header, Method, StatusCode};

use super::template::{percent_decode, Decode, Template};
use super::{error, Fail, RpcHandler};

/// How long the table of HTTP bindings read from the registry is reused.
const ROUTES_TTL: Duration = Duration::from_secs(1);

/// One `google.api.http` binding of a registered endpoint.
#[derive(Debug, Clone)]
pub(super) struct Binding {
    service: String,
    grpc_path: String,
    method: String,
    template: Template,
    body: String,
    response_body: String,
}

/// What a request resolved to.
pub(super) struct Target {
    pub(super) service: String,
    /// Empty for a go-micro endpoint registered without it (see `endpoint`).
    pub(super) grpc_path: String,
    /// The go-micro endpoint (`Greeter.Hello`) whose gRPC path is to be found at the node.
    pub(super) endpoint: Option<String>,
    pub(super) body: String,
    pub(super) response_body: String,
    pub(super) captures: Vec<(String, String)>,
    /// Whether the binding is a PATCH (whose request may get its field mask from the body).
    pub(super) patch: bool,
}

impl RpcHandler {
    /// Every HTTP binding in the registry (cached for a second).
    async fn bindings(&self) -> Result<Arc<Vec<Binding>>, Fail> {
        if let Some((at, routes)) = &*self.inner.routes.lock().unwrap_or_else(|p| p.into_inner()) {
            if at.elapsed() < ROUTES_TTL {
                return Ok(Arc::clone(routes));
            }
        }
        let services = self
            .inner
            .config
            .registry
            .list_services()
            .await
            .map_err(|err| {
                error::response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    error::registry_unavailable("read the services' routes", &err),
                )
            })?;
        // Descriptors of services that left the registry go too.
        self.inner
            .pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, d| services.iter().any(|s| s.name == d.service));
        let mut routes = Vec::new();
        for service in services {
            for endpoint in &service.endpoints {
                let (Some(http), Some(grpc_path)) = (
                    endpoint.metadata.get("http"),
                    endpoint.metadata.get("grpc_path"),
                ) else {
                    continue;
                };
                let Ok(rules) = serde_json::from_str::<Vec<serde_json::Value>>(http) else {
                    continue;
                };
                for rule in rules {
                    let field = |k: &str| {
                        rule.get(k)
                            .and_then(|v| v.as_str())
                            .unwrap_or("")
                            .to_string()
                    };
                    let Some(template) = Template::parse(&field("path")) else {
                        continue;
                    };
                    routes.push(Binding {
                        service: service.name.clone(),
                        grpc_path: grpc_path.clone(),
                        method: field("method"),
                        template,
                        body: field("body"),
                        response_body: field("response_body"),
                    });
                }
            }
        }
        // Most specific first, whatever service or order they came in (the sort is stable).
        routes.sort_by_key(|b| std::cmp::Reverse(b.template.specificity()));
        let routes = Arc::new(routes);
        *self.inner.routes.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), Arc::clone(&routes)));
        Ok(routes)
    }

    /// go-micro's `/service/method` form.
    async fn go_micro_target(&self, path: &str) -> Result<Target, Fail> {
        let Some((service, endpoint)) = go_micro_route(path) else {
            return Err(error::response(
                StatusCode::NOT_FOUND,
                format!("no endpoint for path `{path}`"),
            ));
        };
        let namespace = self.inner.config.namespace.trim_end_matches('.');
        let service = if namespace.is_empty() {
            service
        } else {
            format!("{namespace}.{service}")
        };
        let records = self
            .inner
            .config
            .registry
            .get_service(&service)
            .await
            .map_err(|err| {
                error::response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    error::registry_unavailable(&format!("look up service `{service}`"), &err),
                )
            })?;
        // As the http handler: a service that had nodes once and has none now is unavailable
        // (503), one never seen is not found (404).
        if records.is_empty() {
            let (status, detail) = self.inner.seen.no_nodes(&service);
            return Err(error::response(status, detail));
        }
        self.inner.seen.saw(&service);
        let found = records
            .iter()
            .flat_map(|r| r.endpoints.iter())
            .find(|e| e.name.eq_ignore_ascii_case(&endpoint));
        let Some(found) = found else {
            return Err(error::response(
                StatusCode::NOT_FOUND,
                format!("service `{service}` has no endpoint `{endpoint}`"),
            ));
        };
        // go-micro's services (and others registered as they are) do not say their gRPC path:
        // it is found at the node, by server reflection.
        let (grpc_path, endpoint) = match found.metadata.get("grpc_path") {
            Some(path) => (path.clone(), None),
            None => (String::new(), Some(found.name.clone())),
        };
        Ok(Target {
            service,
            grpc_path,
            endpoint,
            body: "*".into(),
            response_body: String::new(),
            captures: Vec::new(),
            patch: false,
        })
    }

    pub(super) async fn resolve(&self, method: &Method, path: &str) -> Result<Target, Fail> {
        let bindings = self.bindings().await?;
        // HEAD is GET without the body (RFC 9110, 9.3.2): a GET binding takes it (unless a
        // custom binding takes HEAD itself), and the server leaves the body out. Load
        // balancers' checks send it.
        let head = *method == Method::HEAD;
        let takes = |bound: &str| {
            bound.eq_ignore_ascii_case(method.as_str())
                || (head && bound.eq_ignore_ascii_case(Method::GET.as_str()))
        };
        // Methods bound to this path, should the request's method be none of them.
        let mut allowed: Vec<String> = Vec::new();
        let bound_to_head = bindings
            .iter()
            .filter(|b| head && b.method.eq_ignore_ascii_case("HEAD"));
        for b in bound_to_head.chain(bindings.iter()) {
            if !takes(&b.method) {
                if b.template.matches(path).is_some() {
                    let bound = b.method.to_ascii_uppercase();
                    if !allowed.contains(&bound) {
                        allowed.push(bound);
                    }
                }
                continue;
            }
            if let Some(captures) = b.template.matches(path) {
                let captures = captures
                    .into_iter()
                    .map(|(field, value, mode)| Ok((field, percent_decode(&value, mode)?)))
                    .collect::<Result<_, String>>()
                    .map_err(|detail| {
                        error::response(StatusCode::BAD_REQUEST, format!("the path: {detail}"))
                    })?;
                return Ok(Target {
                    service: b.service.clone(),
                    grpc_path: b.grpc_path.clone(),
                    endpoint: None,
                    body: b.body.clone(),
                    response_body: b.response_body.clone(),
                    captures,
                    patch: b.method.eq_ignore_ascii_case("PATCH"),
                });
            }
        }
        match self.go_micro_target(path).await {
            // A bound path with another method: say which methods it takes, rather than that a
            // service named after the path's first segment does not exist.
            Err(resp) if resp.status() == StatusCode::NOT_FOUND && !allowed.is_empty() => {
                if allowed.iter().any(|m| m == "GET") {
                    allowed.push("HEAD".to_string());
                }
                allowed.sort();
                let allow = allowed.join(", ");
                let mut resp = error::response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("`{path}` does not take {method}; it takes {allow}"),
                );
                if let Ok(value) = header::HeaderValue::from_str(&allow) {
                    resp.headers_mut().insert(header::ALLOW, value);
                }
                Err(resp)
            }
            other => other,
        }
    }
}

/// The service (before the namespace) and the endpoint a path names in go-micro's form, as
/// go-micro's rpc handler resolves them:
///
/// - `/user` → `user`, `User.Call`;
/// - `/user/call` → `user`, `User.Call`;
/// - `/v1/user/call` → `v1.user`, `User.Call` (a version as the first of three segments);
/// - otherwise all but the last two segments are the service, joined by dots, and the last two
///   the endpoint: `/user/user/call` → `user`, `User.Call`; `/a/b/user/call` → `a.b`,
///   `User.Call`.
///
/// The path is percent-decoded first (go-micro routes by Go's decoded `URL.Path`); segments are
/// camel-cased at hyphens (`/user/get-item` → `User.GetItem`) and title-cased as Go's
/// `strings.Title` does (`say.hello` → `Say.Hello`). Empty and `.` segments are left out and
/// `..` takes the segment before it away, as Go's `path.Clean` does. `None` for a path with no
/// segment, or one that does not decode.
fn go_micro_route(path: &str) -> Option<(String, String)> {
    let path = percent_decode(path, Decode::Segment).ok()?;
    let mut parts: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            segment => parts.push(segment),
        }
    }
    let versioned =
        |p: &str| p.len() > 1 && p.starts_with('v') && p[1..].bytes().all(|b| b.is_ascii_digit());
    let (service, method) = match parts.len() {
        0 => return None,
        1 => (parts[0].to_string(), format!("{}.Call", camel(parts[0]))),
        n => {
            let service = match n {
                2 => parts[0].to_string(),
                3 if versioned(parts[0]) => parts[..2].join("."),
                n => parts[..n - 2].join("."),
            };
            let method = format!("{}.{}", camel(parts[n - 2]), camel(parts[n - 1]));
            (service, method)
        }
    };
    Some((service, method))
}

/// `get-item` → `GetItem`: the hyphen-separated words joined, each title-cased as Go's
/// `strings.Title` does: a letter after a separator (the start, or an ASCII character other
/// than a letter, a digit or `_`, or a space) upper-cased.
fn camel(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for word in segment.split('-') {
        let mut after_separator = true;
        for c in word.chars() {
            if after_separator {
                out.extend(c.to_uppercase());
            } else {
                out.push(c);
            }
            after_separator = if c.is_ascii() {
                !(c.is_ascii_alphanumeric() || c == '_')
            } else {
                c.is_whitespace()
            };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::go_micro_route;

    fn route(path: &str) -> Option<(String, String)> {
        go_micro_route(path)
    }

    fn pair(service: &str, endpoint: &str) -> Option<(String, String)> {
        Some((service.to_string(), endpoint.to_string()))
    }

    #[test]
    fn go_micro_paths_resolve_as_go_micro_resolves_them() {
        assert_eq!(route("/user"), pair("user", "User.Call"));
        assert_eq!(route("/user/call"), pair("user", "User.Call"));
        assert_eq!(route("/user/user/call"), pair("user", "User.Call"));
        assert_eq!(route("/v1/user/call"), pair("v1.user", "User.Call"));
        // Four segments and more: all but the last two name the service.
        assert_eq!(route("/a/b/user/call"), pair("a.b", "User.Call"));
        assert_eq!(route("/v1/a/user/call"), pair("v1.a", "User.Call"));
        assert_eq!(route("/v1/a/b/user/call"), pair("v1.a.b", "User.Call"));
        // Not a version: `v` alone, or with letters after it.
        assert_eq!(route("/v/user/call"), pair("v", "User.Call"));
        assert_eq!(route("/vx/user/call"), pair("vx", "User.Call"));
    }

    #[test]
    fn hyphens_camel_case_and_paths_are_cleaned() {
        assert_eq!(route("/user/get-item"), pair("user", "User.GetItem"));
        assert_eq!(
            route("/my-svc/my-handler/do-it"),
            pair("my-svc", "MyHandler.DoIt")
        );
        assert_eq!(route("/user/a--b-"), pair("user", "User.AB"));
        // As Go's strings.Title, and on the decoded path.
        assert_eq!(route("/user/say.hello"), pair("user", "User.Say.Hello"));
        assert_eq!(route("/user/snake_case"), pair("user", "User.Snake_case"));
        assert_eq!(route("/user/get%2Ditem"), pair("user", "User.GetItem"));
        assert_eq!(route("/a%2Fb/user/call"), pair("a.b", "User.Call"));
        assert_eq!(route("/user/bad%zz"), None);
        assert_eq!(route("//user//call/"), pair("user", "User.Call"));
        assert_eq!(route("/x/../user/./call"), pair("user", "User.Call"));
        assert_eq!(route("/../../user/call"), pair("user", "User.Call"));
        assert_eq!(route("/"), None);
        assert_eq!(route(""), None);
        assert_eq!(route("/a/.."), None);
    }
}
