//! The headers the proxy changes on the way: hop-by-hop headers, forwarding headers
//! (`X-Forwarded-For` and those a client could set to mislead the node) and transfer codings.

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub(super) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(super) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// A list of (lowercase) header names as a constant, and a function saying whether a name is
/// one of them: a `match`, which tells most names apart by their length alone rather than
/// comparing each. One list for both, so they cannot drift apart.
macro_rules! header_names {
    ($(#[$doc:meta])* $vis:vis const $list:ident; fn $is:ident; [$($name:literal),+ $(,)?]) => {
        $(#[$doc])*
        $vis const $list: &[&str] = &[$($name),+];

        #[doc = concat!("Whether `name` is one of [`", stringify!($list), "`].")]
        #[inline]
        $vis fn $is(name: &str) -> bool {
            matches!(name, $($name)|+)
        }
    };
}

header_names! {
    /// Hop-by-hop headers, never forwarded (RFC 9110 §7.6.1; `Trailer` is not one: it declares
    /// the trailer fields that follow the body, which pass through).
    pub(super) const HOP_BY_HOP;
    fn is_hop_by_hop;
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "transfer-encoding",
        "upgrade",
    ]
}

/// The tokens (header names, `upgrade`, `close`, ...) that `Connection` lists, trimmed.
pub(crate) fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

header_names! {
    /// Forwarding headers a client could set to mislead the node, passed on only when the
    /// gateway is told to trust them (it sits behind a load balancer that sets them): who
    /// the client is, and the host, port and scheme it used (`X-Forwarded-Ssl`, `-Scheme`,
    /// `X-Url-Scheme` and `Front-End-Https` say HTTPS to Rack and others).
    pub(super) const CLIENT_FORWARDED;
    fn is_client_forwarded;
    [
        "forwarded",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-forwarded-ssl",
        "x-forwarded-scheme",
        "x-forwarded-prefix",
        "x-real-ip",
        "x-url-scheme",
        "front-end-https",
    ]
}

header_names! {
    /// Another URL than the request's, which Symfony and Zend read in place of the path (IIS's
    /// rewriting proxy sets them): never passed on, trusted load balancer or not, as load
    /// balancers do not remove a client's, and a node would serve another path than the one
    /// the gateway and its plugins judged. And `Proxy`, which CGI hands a node as
    /// `HTTP_PROXY`, the variable HTTP libraries take their outgoing proxy from ("httpoxy"):
    /// no client has a reason to send it.
    pub(super) const URL_OVERRIDES;
    fn is_url_override;
    ["x-original-url", "x-rewrite-url", "proxy"]
}

/// Removes the headers a client could mislead the node with: the forwarding claims unless
/// `trust`, the URL overrides always, and always the underscore spellings of the headers the
/// gateway judges or sets ([`is_underscore_alias`]).
pub(super) fn strip_client_forwarded(headers: &mut HeaderMap, trust: bool) {
    let claim = |name: &HeaderName| {
        let name = name.as_str();
        (!trust && is_client_forwarded(name)) || is_url_override(name) || name.contains('_')
    };
    if headers.keys().any(claim) {
        if !trust {
            for name in CLIENT_FORWARDED {
                headers.remove(*name);
            }
        }
        for name in URL_OVERRIDES {
            headers.remove(*name);
        }
        let aliases: Vec<HeaderName> = headers
            .keys()
            .filter(|name| is_underscore_alias(name.as_str()))
            .cloned()
            .collect();
        for name in aliases {
            headers.remove(name);
        }
    }
}

/// Whether `name` is a header the gateway judges or sets spelt with `_` for `-`
/// (`x_forwarded_proto`, `x_real_ip`, `transfer_encoding`): CGI, WSGI, Rack and the servers
/// built on them read both spellings as one variable (`HTTP_X_FORWARDED_PROTO`), so a client
/// would get past the removal of the forwarding claims with it, or add to the gateway's own
/// `X-Forwarded-For`. Never passed on, trusted load balancer or not (load balancers set the
/// `-` spelling); nginx drops every name with `_` by default. Other names with `_` pass.
fn is_underscore_alias(name: &str) -> bool {
    if !name.contains('_') {
        return false;
    }
    let hyphenated = name.replace('_', "-");
    let name = hyphenated.as_str();
    is_client_forwarded(name)
        || is_url_override(name)
        || is_hop_by_hop(name)
        || matches!(name, "x-forwarded-for" | "host" | "content-length")
}

/// Removes the hop-by-hop headers and, when `listed`, those `Connection` lists (a request
/// behind plugins had those removed before them: [`strip_connection_listed`]).
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap, listed: bool) {
    if headers.keys().any(|name| is_hop_by_hop(name.as_str())) {
        strip_present_hop_by_hop(headers, listed);
    }
}

/// [`strip_hop_by_hop`] once `headers` is known to have some.
pub(super) fn strip_present_hop_by_hop(headers: &mut HeaderMap, listed: bool) {
    // A client that takes trailers says so to the next hop too: the gateway passes them on.
    let trailers = headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    // `Host` and `Content-Length` stay whatever `Connection` lists: they are the message's own
    // (the request's target, its framing), not the connection's. Go keeps both outside the
    // header map for that reason; a client listing `host` would otherwise send the node
    // another host than the one the gateway and its plugins saw.
    if listed {
        let listed: Vec<HeaderName> = connection_tokens(headers)
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            .filter(|name| *name != header::HOST && *name != header::CONTENT_LENGTH)
            .collect();
        for name in listed {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Removes the headers a request's `Connection` lists, before plugins see it: they are for the
/// gateway alone, and a plugin that sets one for the node (an identity, a request id) must not
/// have it removed afterwards by the client's say-so (Go's
/// reverse proxy removes them before its `Rewrite` hook for the same reason). The hop-by-hop
/// headers themselves (`Connection`, `Upgrade`, `TE`, ...) stay for the proxy, which passes on
/// what of them it must, and `Host` and `Content-Length` are never removed. Costs one lookup
/// when the request has no `Connection`, and allocates only when a listed header is there.
pub(crate) fn strip_connection_listed(headers: &mut HeaderMap) {
    let removable = |headers: &HeaderMap, token: &str| {
        !token.eq_ignore_ascii_case("close")
            && !HOP_BY_HOP.iter().any(|h| token.eq_ignore_ascii_case(h))
            && !token.eq_ignore_ascii_case(header::HOST.as_str())
            && !token.eq_ignore_ascii_case(header::CONTENT_LENGTH.as_str())
            && headers.contains_key(token)
    };
    if !headers.contains_key(header::CONNECTION)
        || !connection_tokens(headers).any(|token| removable(headers, token))
    {
        return;
    }
    let listed: Vec<HeaderName> = connection_tokens(headers)
        .filter(|token| removable(headers, token))
        .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
}

/// Joins the `cookie` fields of an HTTP/2 request into one, separated by `; `: HTTP/2 clients
/// may send each cookie in a field of its own, and those must be one line before they pass on
/// to an HTTP/1.1 node (RFC 9113 §8.2.3), many of whose servers read only the first line or join
/// them with `,`. Costs one lookup when there is at most one.
pub(crate) fn join_cookies(headers: &mut HeaderMap) {
    let mut cookies = headers.get_all(header::COOKIE).iter();
    if cookies.next().is_none() || cookies.next().is_none() {
        return;
    }
    let mut joined = Vec::new();
    for cookie in headers.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(cookie.as_bytes());
    }
    if let Ok(joined) = HeaderValue::from_maybe_shared(Bytes::from(joined)) {
        headers.insert(header::COOKIE, joined);
    }
}

/// Whether a request body comes in a transfer coding other than `chunked` (`gzip, chunked`,
/// ...): hyper undoes only the chunking, so the node would get coded bytes with nothing saying
/// so.
///
/// `chunked,` too: hyper takes the last item of the last line (empty here) for the final coding,
/// so it did not undo the chunks, and the client would take the chunks' framing for the body.
pub(crate) fn other_transfer_coding(headers: &HeaderMap) -> bool {
    codings(headers, &header::TRANSFER_ENCODING).any(|c| !c.eq_ignore_ascii_case(b"chunked"))
        || headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|last| last.as_bytes().rsplit(|&b| b == b',').next())
            .is_some_and(|item| item.trim_ascii().is_empty())
}

/// The codings a list header (`Transfer-Encoding`, `Content-Encoding`) names, over all its
/// lines, trimmed, empty items left out.
pub(crate) fn codings<'h>(
    headers: &'h HeaderMap,
    name: &header::HeaderName,
) -> impl Iterator<Item = &'h [u8]> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|coding| !coding.is_empty())
}

/// What a node's response head needs done before it goes on, found in one pass over it.
pub(super) struct ResponseScan {
    /// It has hop-by-hop headers ([`HOP_BY_HOP`]).
    pub(super) hop_by_hop: bool,
    /// Its `Content-Length` is repeated, as a list (`2, 2`) or in more than one line.
    pub(super) length_repeated: bool,
}

/// Looks over a node's response head once (most have neither hop-by-hop headers nor a repeated
/// length, and a lookup per question would cost more).
#[inline]
pub(super) fn scan_response(headers: &HeaderMap) -> ResponseScan {
    let mut scan = ResponseScan {
        hop_by_hop: false,
        length_repeated: false,
    };
    let mut lengths = 0u32;
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH {
            lengths += 1;
            scan.length_repeated |= lengths > 1 || value.as_bytes().contains(&b',');
        } else if !scan.hop_by_hop && is_hop_by_hop(name.as_str()) {
            scan.hop_by_hop = true;
        }
    }
    scan
}

/// The client of a proxied request, as its connection knows it.
#[derive(Clone, Debug)]
pub(crate) struct Peer {
    /// The client's IP address as an `X-Forwarded-For` entry, written once per connection
    /// (clones share its bytes).
    ip: HeaderValue,
}

impl Peer {
    pub(crate) fn new(addr: SocketAddr) -> Option<Peer> {
        let mut buf = [0u8; 48];
        let ip = write_ip(addr.ip(), &mut buf)?;
        let ip = HeaderValue::from_maybe_shared(Bytes::copy_from_slice(ip)).ok()?;
        Some(Peer { ip })
    }

    /// The client's IP address as text.
    pub(crate) fn ip(&self) -> &[u8] {
        self.ip.as_bytes()
    }
}

/// Tells a node about the client, for both handlers: the forwarding headers clients send (other
/// than `X-Forwarded-For`) are removed unless `trust`ed, `X-Forwarded-Proto: https` says the
/// client came over HTTPS (`https`, not trusted), and the client's address (`peer`) is appended
/// to `X-Forwarded-For`.
pub(crate) fn set_forwarding(
    headers: &mut HeaderMap,
    peer: Option<&Peer>,
    trust: bool,
    https: bool,
) {
    strip_client_forwarded(headers, trust);
    if !trust && https {
        // The client came over HTTPS, which the node (called over HTTP) cannot see.
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
    }
    if let Some(peer) = peer {
        // One lookup: most requests carry no `X-Forwarded-For`, and get the peer's at once.
        match headers.entry(X_FORWARDED_FOR) {
            header::Entry::Vacant(entry) => {
                entry.insert(peer.ip.clone());
            }
            header::Entry::Occupied(mut entry) => {
                if let Some(v) = joined_forwarded_for(entry.iter(), peer) {
                    entry.insert(v);
                }
            }
        }
    }
}

/// `X-Forwarded-For` with `peer` appended to the lines the client sent (`prior`), all joined
/// into one.
fn joined_forwarded_for<'h>(
    prior: impl Iterator<Item = &'h HeaderValue>,
    peer: &Peer,
) -> Option<HeaderValue> {
    let mut prior = prior
        .map(HeaderValue::as_bytes)
        .filter(|p| !p.trim_ascii().is_empty());
    let Some(first) = prior.next() else {
        return Some(peer.ip.clone());
    };
    let ip = peer.ip.as_bytes();
    let mut joined = Vec::with_capacity(first.len() + 2 + ip.len());
    joined.extend_from_slice(first);
    for more in prior {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(more);
    }
    joined.extend_from_slice(b", ");
    joined.extend_from_slice(ip);
    HeaderValue::from_maybe_shared(bytes::Bytes::from(joined)).ok()
}

/// Writes `ip` as text into `buf`: IPv4 digit by digit (the formatting machinery costs more
/// than the rest of this header), IPv6 as `Display` does.
fn write_ip(ip: std::net::IpAddr, buf: &mut [u8; 48]) -> Option<&[u8]> {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[len] = b'.';
                    len += 1;
                }
                if octet >= 100 {
                    buf[len] = b'0' + octet / 100;
                    len += 1;
                }
                if octet >= 10 {
                    buf[len] = b'0' + octet / 10 % 10;
                    len += 1;
                }
                buf[len] = b'0' + octet % 10;
                len += 1;
            }
            Some(&buf[..len])
        }
        std::net::IpAddr::V6(_) => {
            use std::io::Write as _;
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            write!(cursor, "{ip}").ok()?;
            let len = cursor.position() as usize;
            Some(&buf[..len])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `X-Forwarded-For` as [`set_forwarding`] leaves it, from `peer` behind `headers`.
    fn forwarded_for(mut headers: HeaderMap, peer: &Peer) -> Option<HeaderValue> {
        set_forwarding(&mut headers, Some(peer), true, false);
        let mut lines = headers.get_all(X_FORWARDED_FOR).iter();
        let first = lines.next().cloned();
        assert!(lines.next().is_none(), "one line");
        first
    }

    #[test]
    fn forwarded_for_appends_the_peer() {
        let peer = |addr: &str| Peer::new(addr.parse().unwrap()).unwrap();
        let sent = |lines: &[&'static str]| {
            let mut headers = HeaderMap::new();
            for line in lines {
                headers.append(X_FORWARDED_FOR, HeaderValue::from_static(line));
            }
            headers
        };
        let v4 = &peer("10.1.2.3:5000");
        let v6 = &peer("[2001:db8::1]:443");
        assert_eq!(forwarded_for(sent(&[]), v4).unwrap(), "10.1.2.3");
        assert_eq!(forwarded_for(sent(&[]), v6).unwrap(), "2001:db8::1");
        assert_eq!(
            forwarded_for(sent(&["192.0.2.7, 198.51.100.2"]), v6).unwrap(),
            "192.0.2.7, 198.51.100.2, 2001:db8::1"
        );
        // Every line the client sent is kept, in order.
        assert_eq!(
            forwarded_for(sent(&["192.0.2.7", " ", "198.51.100.2"]), v4).unwrap(),
            "192.0.2.7, 198.51.100.2, 10.1.2.3"
        );
        let longest: SocketAddr = "[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:1"
            .parse()
            .unwrap();
        assert_eq!(
            forwarded_for(sent(&[""]), &Peer::new(longest).unwrap()).unwrap(),
            longest.ip().to_string().as_str()
        );
    }

    #[test]
    fn connection_listed_headers_go_and_hop_by_hop_ones_stay_for_the_proxy() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            (
                "connection",
                "Upgrade, X-Secret, host, content-length, close",
            ),
            ("connection", "te"),
            ("upgrade", "websocket"),
            ("te", "trailers"),
            ("x-secret", "s"),
            ("x-kept", "k"),
            ("host", "api.example"),
            ("content-length", "3"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }
        strip_connection_listed(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            [
                "connection",
                "content-length",
                "host",
                "te",
                "upgrade",
                "x-kept"
            ]
        );
    }

    #[test]
    fn ipv4_text_matches_display() {
        let mut buf = [0u8; 48];
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.0.9.99",
            "100.20.3.255",
            "255.255.255.255",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(write_ip(ip, &mut buf).unwrap(), ip.to_string().as_bytes());
        }
        for a in 0..=255u8 {
            let ip = std::net::IpAddr::from([a, 255 - a, a / 3, a % 10]);
            assert_eq!(write_ip(ip, &mut buf).unwrap(), ip.to_string().as_bytes());
        }
    }
}
