//! The host a request is for: checked (one plain `Host`, no user information) and taken from
//! the request target when it names one; and its path checked for dot segments.

use http::header::{self, HeaderValue};
use http::Request;

/// Whether a request's host has been checked ([`host_problem`]) and settled
/// ([`host_from_target`]) already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Host {
    /// Not yet: the proxy does it.
    Unchecked,
    /// Done before the plugins ran, and the headers the client lists in `Connection` removed
    /// then ([`strip_connection_listed`](super::strip_connection_listed)).
    Settled,
}

/// Makes the host a request's target names (HTTP/2's `:authority`, an absolute-form HTTP/1
/// target) its `Host`, whatever `Host` said (RFC 9112 §3.2.2): the node then sees the host the
/// client asked for, as behind go-micro's gateway (whose reverse proxy keeps `Host`) and most
/// proxies, and plugins see the same host as the node. A target with user information is left
/// alone ([`host_problem`] refuses it).
pub(crate) fn host_from_target<B>(req: &mut Request<B>) {
    let Some(authority) = req.uri().authority() else {
        return;
    };
    if authority.as_str().contains('@') {
        return;
    }
    if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
        req.headers_mut().insert(header::HOST, host);
    }
}

/// What is wrong with the request's target, if anything: its host ([`host_problem`]) or its
/// path ([`path_problem`]). Checked before plugins see the request.
pub(crate) fn target_problem<B>(req: &Request<B>) -> Option<&'static str> {
    host_problem(req).or_else(|| path_problem(req.uri().path()))
}

/// Whether `path` has a `.` or `..` segment, written plainly or percent-encoded (`%2e`, which
/// RFC 3986 makes the same): clients remove them before they send a request (RFC 3986,
/// 5.2.4), so a path that still has them was written to be read two ways. The gateway routes by
/// the path as sent and passes it on unchanged, so `/user/../admin/x` would reach service
/// `user`, which may read it as `/admin/x`, past a plugin that judged it by its first segment.
/// go-micro's gateway redirected such paths to their cleaned form; nginx cleans them before it
/// routes. Refused here: no client that means well sends one. Empty segments inside a path
/// (`/user//call`) are not dot segments and pass; a path that begins with two (`//host/x`, or
/// `/\host/x`, which URL parsers read alike) is refused: URL parsers (WHATWG's, Python's
/// `urlsplit`) read its first segment as a host, so a node would serve `/x`, outside the
/// service's prefix the gateway routed by.
pub(super) fn path_problem(path: &str) -> Option<&'static str> {
    if matches!(path.as_bytes(), [b'/', b'/' | b'\\', ..]) {
        return Some(
            "the path begins with `//`, which a node may read as a host name rather than as \
             the path the gateway routed by; send it with one leading `/`",
        );
    }
    // Most paths have neither a dot nor an escape (two `memchr` scans: cheaper on short paths
    // than one byte-by-byte pass looking for either).
    let bytes = path.as_bytes();
    if !bytes.contains(&b'.') && !bytes.contains(&b'%') {
        return None;
    }
    path.split('/').any(reads_as_dot_segment).then_some(
        "the path has a `.` or `..` segment (plain or as `%2e`, also before `;` parameters or \
         beside an encoded `/` or a `\\`), which the gateway does not route; send the path \
         with dot segments removed (RFC 3986, 5.2.4)",
    )
}

/// Whether a node could read `segment` as a dot segment: it is one ([`is_dot_segment`]), or a
/// piece of it is, taken as servers take pieces: before its `;` parameters (`..;x`, which
/// Tomcat, Jetty and Spring read as `..`), or between encoded slashes or backslashes
/// (`..%2fadmin`, for a node that decodes them before it cleans the path; `..\admin` for
/// one that takes `\` for `/`).
fn reads_as_dot_segment(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    let mut start = 0;
    let mut i = 0;
    let piece = |from: usize, to: usize| {
        let piece = &segment[from..to];
        is_dot_segment(piece.split(';').next().unwrap_or(piece))
    };
    while i < bytes.len() {
        let separator = match &bytes[i..] {
            [b'\\', ..] => 1,
            [b'%', b'2', b'f' | b'F', ..] | [b'%', b'5', b'c' | b'C', ..] => 3,
            _ => 0,
        };
        if separator == 0 {
            i += 1;
            continue;
        }
        if piece(start, i) {
            return true;
        }
        i += separator;
        start = i;
    }
    piece(start, bytes.len())
}

/// Whether `segment` is `.` or `..`, each dot written plainly or as `%2e`/`%2E`.
fn is_dot_segment(segment: &str) -> bool {
    let mut rest = segment.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        rest = match rest {
            [b'.', tail @ ..] => tail,
            [b'%', b'2', b'e' | b'E', tail @ ..] => tail,
            _ => return false,
        };
        dots += 1;
        if dots > 2 {
            return false;
        }
    }
    dots > 0
}

/// What is wrong with the host a request names, if anything (RFC 9112 §3.2): HTTP/1.1 needs
/// exactly one `Host` (two would let the node and the gateway's plugins disagree about which
/// applies), and the node is only ever told a plain `host[:port]`, never user information.
pub(crate) fn host_problem<B>(req: &Request<B>) -> Option<&'static str> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => {
            return Some("the request has more than one Host header; send exactly one")
        }
        (host, _) => host,
    };
    match host {
        None if req.version() == http::Version::HTTP_11 => {
            return Some("an HTTP/1.1 request needs a Host header naming the host it is for")
        }
        Some(host) if !plain_host(host.as_bytes()) => {
            return Some(
                "the Host header is not a host with an optional port (like `api.example:8080`)",
            )
        }
        _ => {}
    }
    if req
        .uri()
        .authority()
        .is_some_and(|a| a.as_str().contains('@'))
    {
        return Some(
            "the request target names user information (`user@host`); send the host alone",
        );
    }
    None
}

/// Whether `value` can be a URI authority without user information (`host` or `host:port`):
/// not empty, and only the characters a host name, an IP literal and a port are made of
/// (RFC 3986 §3.2.2). A byte check, as Go's server makes: this runs for every request.
pub(super) fn plain_host(value: &[u8]) -> bool {
    !value.is_empty()
        && value
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]%".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_hosts_only() {
        for ok in [
            "api.example",
            "api.example:8080",
            "127.0.0.1:80",
            "[::1]:8080",
            "a-b_c",
        ] {
            assert!(plain_host(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            "a.example/evil",
            "a, b",
            "user:pass@api.example",
            "@api.example",
            "a example",
            "api.example?x",
            "api.example#x",
        ] {
            assert!(!plain_host(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn dot_segments_plain_or_encoded_are_refused_and_dots_inside_names_are_not() {
        for bad in [
            "/user/../admin/x",
            "/user/./x",
            "/./user/x",
            "/user/..",
            "/user/%2e%2e/admin",
            "/user/%2E./admin",
            "/user/.%2e/admin",
            "/user/%2e/x",
            "/..",
            // As servers read a piece of a segment: before `;` parameters, between encoded
            // slashes or backslashes.
            "/user/..;/admin",
            "/user/.;x/admin",
            "/user/%2e%2e;jsessionid=1/admin",
            "/user/..%2fadmin",
            "/user/x%2F..%2Fadmin",
            "/user/%2e%2e%5cadmin",
            "/user/a%5C..",
            "/user/..\\admin",
        ] {
            assert!(path_problem(bad).is_some(), "{bad} passed");
        }
        for leading in ["//user/call", "//", "/\\user/call", "///x"] {
            assert!(
                path_problem(leading)
                    .is_some_and(|p| p.contains("begins with `//`") && !p.contains("  ")),
                "{leading} passed"
            );
        }
        for ok in [
            "/user/call",
            "/user//call",
            "/user/x..y/z",
            "/user/.hidden",
            "/user/...",
            "/user/v1.2/a%2fb",
            "/user/%2e%2e%2e",
            "/user/%2ex",
            "/",
            "/user/a;b/c",
            "/user/x..;y",
            "/user/v1.2;x/a%2F.b",
            "/user/%2f%2f",
        ] {
            assert!(path_problem(ok).is_none(), "{ok} refused");
        }
    }
}
