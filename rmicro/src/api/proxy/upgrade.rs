//! Protocol upgrades (WebSocket and any other `Connection: upgrade`): the protocols a client
//! offers, and the one switch a proxy passes on.

use http::header::{self, HeaderMap, HeaderValue};

use super::headers::connection_tokens;

/// Sets `Upgrade: protocol` and `Connection: upgrade` on a message whose hop-by-hop headers
/// were stripped: the one switch a proxy passes on.
pub(super) fn set_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::UPGRADE, protocol);
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
}

/// The protocols a request asks to switch to: its `Upgrade` offers, when `Connection` lists
/// `upgrade` (RFC 9110 §7.8), all lines joined into one list in order, for the node.
///
/// `h2c` is left out: HTTP/2 by upgrade (RFC 7540 §3.2, dropped by RFC 9113) needs the
/// client's `HTTP2-Settings`, a header for this hop only that the gateway cannot pass on, and
/// the gateway would have to speak HTTP/2 to the client after the switch. A client offering it
/// gets HTTP/1.1 as it would from a server that ignores the offer; HTTP/2 clients reach the
/// gateway with prior knowledge instead.
pub(super) fn wants_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    let lines = headers.get_all(header::UPGRADE);
    lines.iter().next()?;
    if !connection_tokens(headers).any(|token| token.eq_ignore_ascii_case("upgrade")) {
        return None;
    }
    let mut joined = Vec::new();
    let offers = lines
        .iter()
        .flat_map(|line| line.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|offer| !offer.is_empty() && !offer.eq_ignore_ascii_case(b"h2c"));
    for offer in offers {
        if !joined.is_empty() {
            joined.extend_from_slice(b", ");
        }
        joined.extend_from_slice(offer);
    }
    if joined.is_empty() {
        return None;
    }
    HeaderValue::from_bytes(&joined).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_offers_on_several_lines_are_one_list() {
        let mut headers = HeaderMap::new();
        headers.append(header::UPGRADE, HeaderValue::from_static("echo/2"));
        assert_eq!(wants_upgrade(&headers), None, "no `Connection: upgrade`");
        headers.append(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        headers.append(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        assert_eq!(wants_upgrade(&headers).unwrap(), "echo/2");
        headers.append(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert_eq!(wants_upgrade(&headers).unwrap(), "echo/2, websocket");
    }

    #[test]
    fn an_h2c_offer_is_left_out() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::CONNECTION,
            HeaderValue::from_static("Upgrade, HTTP2-Settings"),
        );
        headers.append(header::UPGRADE, HeaderValue::from_static("h2c"));
        assert_eq!(wants_upgrade(&headers), None, "nothing else offered");
        headers.insert(
            header::UPGRADE,
            HeaderValue::from_static(" H2C ,websocket,, echo/2"),
        );
        assert_eq!(wants_upgrade(&headers).unwrap(), "websocket, echo/2");
    }
}
