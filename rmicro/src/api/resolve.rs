//! Which service a request path goes to, as go-micro's API resolves it.
//!
//! The first path segment names the service in the namespace: `/user/call` → `go.micro.api.user`.
//! A leading version segment (`v` and digits) joins it: `/v1/user/x` → `go.micro.api.v1.user`.

/// The registry name for `path` in `namespace`, or `None` when the path names no service (`/`,
/// or a segment with characters other than letters, digits, `-` and `_`).
pub fn service_for_path(namespace: &str, path: &str) -> Option<String> {
    let parts = name_parts(namespace, path)?;
    let mut name = String::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    join(&parts, |piece| name.push_str(piece));
    Some(name)
}

/// The pieces [`service_for_path`] joins: the namespace (without trailing dots), the first
/// segment, and the second segment when the first is a version (empty pieces are skipped).
pub(crate) fn name_parts<'a>(namespace: &'a str, path: &'a str) -> Option<[&'a str; 3]> {
    // Byte scans rather than `split`: this runs for every proxied request.
    let path = path.trim_start_matches('/');
    let (first, rest) = segment(path)?;
    let is_version =
        first.len() > 1 && first.starts_with('v') && first[1..].bytes().all(|b| b.is_ascii_digit());
    let second = match rest.filter(|rest| is_version && !rest.starts_with('/') && !rest.is_empty())
    {
        Some(rest) => segment(rest)?.0,
        None => "",
    };
    Some([namespace.trim_end_matches('.'), first, second])
}

/// The first segment of `path` and what follows its `/` (if one does): `None` when the
/// segment is empty or has characters other than letters, digits, `-` and `_`.
fn segment(path: &str) -> Option<(&str, Option<&str>)> {
    let end = path
        .bytes()
        .position(|b| !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .unwrap_or(path.len());
    let (first, rest) = path.split_at(end);
    if first.is_empty() {
        return None;
    }
    match rest.as_bytes().first() {
        None => Some((first, None)),
        Some(b'/') => Some((first, Some(&rest[1..]))),
        Some(_) => None,
    }
}

/// Calls `push` with the non-empty `parts` and the dots between them.
pub(crate) fn join<'a>(parts: &[&'a str; 3], mut push: impl FnMut(&'a str)) {
    let mut any = false;
    for part in parts.iter().filter(|p| !p.is_empty()) {
        if any {
            push(".");
        }
        push(part);
        any = true;
    }
}

/// A service name as [`service_for_path`] gives it, kept inline when it is short (it is built
/// for every proxied request).
pub(crate) struct ServiceName(Repr);

enum Repr {
    Inline { len: u8, bytes: [u8; 110] },
    Heap(String),
}

impl ServiceName {
    pub(crate) fn for_path(namespace: &str, path: &str) -> Option<ServiceName> {
        let parts = name_parts(namespace, path)?;
        let mut total = 0;
        join(&parts, |piece| total += piece.len());
        let mut bytes = [0u8; 110];
        if total > bytes.len() {
            return service_for_path(namespace, path).map(|name| ServiceName(Repr::Heap(name)));
        }
        let mut len = 0;
        join(&parts, |piece| {
            bytes[len..len + piece.len()].copy_from_slice(piece.as_bytes());
            len += piece.len();
        });
        Some(ServiceName(Repr::Inline {
            len: len as u8,
            bytes,
        }))
    }

    pub(crate) fn as_str(&self) -> &str {
        match &self.0 {
            // Whole `str` pieces were copied in, so the bytes are UTF-8.
            Repr::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            Repr::Heap(name) => name,
        }
    }
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
        assert_eq!(s(ns, "/v1/a.b/c"), None);
        assert_eq!(s(ns, "/v1//user"), Some("go.micro.api.v1".into()));
        assert_eq!(s(ns, "/user/a.b"), Some("go.micro.api.user".into()));
        assert_eq!(s(ns, "//user"), Some("go.micro.api.user".into()));
    }

    #[test]
    fn inline_names_match_the_allocated_ones() {
        let long = "x".repeat(300);
        let namespaces = ["go.micro.api", "go.micro.api.", "", "a", long.as_str()];
        let paths = [
            "/user/call",
            "/v1/user/x",
            "/v2",
            "/user",
            "/",
            "/a.b/c",
            "/é/x",
        ];
        for ns in namespaces {
            for path in paths {
                let inline = super::ServiceName::for_path(ns, path);
                assert_eq!(
                    inline.as_ref().map(|n| n.as_str()),
                    s(ns, path).as_deref(),
                    "{ns} {path}"
                );
            }
        }
        // 110 bytes fit inline, 111 do not; both read back whole.
        let edge = "n".repeat(101);
        let name = super::ServiceName::for_path(&edge, "/abcdefgh").unwrap();
        assert_eq!(name.as_str().len(), 110);
        assert!(matches!(name.0, super::Repr::Inline { .. }));
        let over = super::ServiceName::for_path(&edge, "/abcdefghi").unwrap();
        assert_eq!(over.as_str(), format!("{edge}.abcdefghi"));
        assert!(matches!(over.0, super::Repr::Heap(_)));
    }
}
