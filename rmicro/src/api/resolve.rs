//! Which service a request path goes to, as go-micro's API resolves it.
//!
//! The first path segment names the service in the namespace: `/user/call` → `go.micro.api.user`.
//! A leading version segment (`v` and digits) joins it: `/v1/user/x` → `go.micro.api.v1.user`.

/// The registry name for `path` in `namespace`, or `None` when the path names no service (`/`,
/// or a segment with characters other than letters, digits, `-` and `_`).
pub fn service_for_path(namespace: &str, path: &str) -> Option<String> {
    let mut parts = path.trim_start_matches('/').split('/');
    let first = parts.next().filter(|s| !s.is_empty())?;
    valid(first)?;
    let is_version =
        first.len() > 1 && first.starts_with('v') && first[1..].bytes().all(|b| b.is_ascii_digit());
    let second = match (is_version, parts.next().filter(|s| !s.is_empty())) {
        (true, Some(second)) => {
            valid(second)?;
            Some(second)
        }
        _ => None,
    };
    // Built in one allocation: this runs for every request.
    let namespace = namespace.trim_end_matches('.');
    let mut name = String::with_capacity(
        namespace.len() + 1 + first.len() + second.map_or(0, |s| s.len() + 1),
    );
    for segment in [namespace, first].into_iter().chain(second) {
        if segment.is_empty() {
            continue;
        }
        if !name.is_empty() {
            name.push('.');
        }
        name.push_str(segment);
    }
    Some(name)
}

fn valid(segment: &str) -> Option<()> {
    segment
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        .then_some(())
}

#[cfg(test)]
mod tests {
    use super::service_for_path as s;

    #[test]
    fn go_micro_routing() {
        let ns = "go.micro.api";
        assert_eq!(s(ns, "/user/call").as_deref(), Some("go.micro.api.user"));
        assert_eq!(s(ns, "/user").as_deref(), Some("go.micro.api.user"));
        assert_eq!(s(ns, "/user/").as_deref(), Some("go.micro.api.user"));
        assert_eq!(s(ns, "/v1/user/x").as_deref(), Some("go.micro.api.v1.user"));
        assert_eq!(s(ns, "/v1").as_deref(), Some("go.micro.api.v1"));
        assert_eq!(s(ns, "/vx/user").as_deref(), Some("go.micro.api.vx"));
        assert_eq!(
            s("com.example", "/orders/1").as_deref(),
            Some("com.example.orders")
        );
        assert_eq!(s(ns, "/"), None);
        assert_eq!(s(ns, ""), None);
        assert_eq!(s(ns, "/a.b/c"), None);
        assert_eq!(s(ns, "/%2e%2e/c"), None);
    }
}
