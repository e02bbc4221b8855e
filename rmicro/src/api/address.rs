//! Which registered node addresses the gateway can connect to.
//!
//! Records written by hand or by other tools may hold an address no connection can be opened to
//! (empty, no port, a path). Such a node is left out before one is picked, as the runtime's
//! client skips it: nothing was sent to it, so it must not cost a request its only try (a
//! request with a body is never tried twice) nor be avoided as if it had gone down.

use std::sync::Arc;

use rmicro_runtime::registry::Node;

/// The `host:port` to connect to for a node registered at `address`: `host:port`,
/// `[v6]:port`, either with `http://` before it and a `/` after it, as the runtime's client
/// takes them. `Err` says what is wrong.
pub(crate) fn connect_to(address: &str) -> Result<&str, &'static str> {
    let rest = address.strip_prefix("http://").unwrap_or(address);
    if rest.contains("://") {
        return Err("has a scheme other than http://");
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Err("is empty");
    }
    if rest
        .bytes()
        .any(|b| matches!(b, b'/' | b'?' | b'#' | b'@') || b.is_ascii_whitespace() || b < 0x20)
    {
        return Err("is not host:port");
    }
    let (host, port) = match rest.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((host, after)) => (host, after.strip_prefix(':').ok_or("has no port")?),
            None => return Err("is not host:port"),
        },
        None => {
            let (host, port) = rest.rsplit_once(':').ok_or("has no port")?;
            if host.contains(':') {
                return Err("is an IPv6 address without brackets (write [v6]:port)");
            }
            (host, port)
        }
    };
    if host.is_empty() {
        return Err("has no host");
    }
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err("has no port");
    }
    match port.parse::<u16>() {
        Ok(1..) => Ok(rest),
        _ => Err("has no usable port"),
    }
}

/// `nodes` without those whose address cannot be used (the same slice when all can, the common
/// case), or, when none can, the error detail for the client, naming one of them.
pub(crate) fn usable(service: &str, nodes: Arc<[Node]>) -> Result<Arc<[Node]>, String> {
    if nodes.iter().all(|n| connect_to(&n.address).is_ok()) {
        return Ok(nodes);
    }
    let usable: Arc<[Node]> = nodes
        .iter()
        .filter(|n| connect_to(&n.address).is_ok())
        .cloned()
        .collect();
    for node in nodes.iter().filter(|n| connect_to(&n.address).is_err()) {
        tracing::debug!(%service, node = %node.id, address = %node.address, "skipping a node whose address cannot be used");
    }
    if !usable.is_empty() {
        return Ok(usable);
    }
    let node = &nodes[0];
    let problem = connect_to(&node.address)
        .err()
        .unwrap_or("is not host:port");
    Err(format!(
        "service `{service}` has no node the gateway can reach: node `{}` is registered at `{}`, which {problem} (expected host:port); fix or remove its record",
        node.id, node.address
    ))
}

#[cfg(test)]
mod tests {
    use super::connect_to;

    #[test]
    fn usable_addresses() {
        for (address, to) in [
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("user-api.default.svc:80", "user-api.default.svc:80"),
            ("[::1]:9090", "[::1]:9090"),
            ("http://127.0.0.1:8080", "127.0.0.1:8080"),
            ("http://[::1]:9090/", "[::1]:9090"),
        ] {
            assert_eq!(connect_to(address), Ok(to), "{address}");
        }
        for (address, problem) in [
            ("", "is empty"),
            ("127.0.0.1", "has no port"),
            ("127.0.0.1:", "has no port"),
            ("127.0.0.1:0", "has no usable port"),
            ("127.0.0.1:65536", "has no usable port"),
            ("127.0.0.1:http", "has no port"),
            (":8080", "has no host"),
            ("[::1]", "has no port"),
            ("[::1", "is not host:port"),
            (
                "::1:8080",
                "is an IPv6 address without brackets (write [v6]:port)",
            ),
            ("https://127.0.0.1:8443", "has a scheme other than http://"),
            ("127.0.0.1:8080/api", "is not host:port"),
            ("a b:80", "is not host:port"),
            ("user@host:80", "is not host:port"),
        ] {
            assert_eq!(connect_to(address), Err(problem), "{address:?}");
        }
    }
}
