//! The host a request is for: checked (one plain `Host`, no user information) and taken from
//! the request target when it names one.

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
fn plain_host(value: &[u8]) -> bool {
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
}
