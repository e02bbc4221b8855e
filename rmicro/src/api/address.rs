//! Which registered node addresses the gateway can connect to.
//!
//! Records written by hand or by other tools may hold an address no connection can be opened to
//! (empty, no port, a path). Such a node is left out before one is picked, as the runtime's
//! client skips it: nothing was sent to it, so it must not cost a request its only try (a
//! request with a body is never tried twice) nor be avoided as if it had gone down.

use std::sync::Arc;

use rmicro_runtime::registry::Node;

/// The `host:port` to connect to for a node registered at `address`: `host:port`,
/// `[v6]:port`, either with `http://` or `https://` (a node serving TLS: see [`https`]) before
/// it and a `/` after it, as the runtime's client takes them. `Err` says what is wrong.
pub(crate) fn connect_to(address: &str) -> Result<&str, &'static str> {
    let rest = target(address);
    let bytes = rest.as_bytes();
    if bytes.is_empty() {
        return Err("is empty");
    }
    // One pass over the bytes, as this runs for every proxied request (substring searches cost
    // the gateway 1 500 instructions a request): the last `:`, how many there are, and nothing
    // that cannot be in `host:port`.
    let (mut colons, mut last_colon) = (0usize, 0usize);
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b':' => {
                colons += 1;
                last_colon = i;
            }
            b'/' if i > 0 && bytes[i - 1] == b':' && bytes.get(i + 1) == Some(&b'/') => {
                return Err("has a scheme other than http:// or https://");
            }
            b'/' | b'?' | b'#' | b'@' => return Err("is not host:port"),
            _ if b.is_ascii_whitespace() || b < 0x20 => return Err("is not host:port"),
            _ => {}
        }
    }
    let (host, port) = match rest.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((host, after)) => (host, after.strip_prefix(':').ok_or("has no port")?),
            None => return Err("is not host:port"),
        },
        None if colons == 0 => return Err("has no port"),
        None if colons > 1 => {
            return Err("is an IPv6 address without brackets (write [v6]:port)");
        }
        None => (&rest[..last_colon], &rest[last_colon + 1..]),
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

/// Where to connect for a node [`usable`] kept: its address without `http://` or `https://`
/// or a trailing `/`.
pub(crate) fn target(address: &str) -> &str {
    let rest = address
        .strip_prefix("http://")
        .or_else(|| address.strip_prefix("https://"))
        .unwrap_or(address);
    rest.strip_suffix('/').unwrap_or(rest)
}

/// Whether the node at `address` says it serves TLS by its address (`https://host:port`, as a
/// TLS server of the runtime advertises itself); its registration may say so too
/// (`secure=true`).
pub(crate) fn https(address: &str) -> bool {
    address.starts_with("https://")
}

/// How many node snapshots each thread remembers as checked.
const CHECKED: usize = 8;

thread_local! {
    /// Snapshots (from the node cache, shared until a service changes) whose addresses were all
    /// found usable on this thread: checking one again costs a pointer comparison instead of a
    /// parse of every address on every request. Holding them keeps their memory from being
    /// reused by another snapshot while they are here.
    static ALL_USABLE: std::cell::RefCell<std::collections::VecDeque<Arc<[Node]>>> =
        const { std::cell::RefCell::new(std::collections::VecDeque::new()) };
}

/// `nodes` without those whose address cannot be used (the same slice when all can, the common
/// case), or, when none can, the error detail for the client, naming one of them.
pub(crate) fn usable(service: &str, nodes: Arc<[Node]>) -> Result<Arc<[Node]>, String> {
    let checked = ALL_USABLE.with(|all| all.borrow().iter().any(|s| Arc::ptr_eq(s, &nodes)));
    if checked {
        return Ok(nodes);
    }
    if nodes.iter().all(|n| connect_to(&n.address).is_ok()) {
        ALL_USABLE.with(|all| {
            let mut all = all.borrow_mut();
            if all.len() == CHECKED {
                all.pop_front();
            }
            all.push_back(Arc::clone(&nodes));
        });
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
            ("https://127.0.0.1:8443", "127.0.0.1:8443"),
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
            (
                "ftp://127.0.0.1:21",
                "has a scheme other than http:// or https://",
            ),
            ("127.0.0.1:8080/api", "is not host:port"),
            ("a b:80", "is not host:port"),
            ("user@host:80", "is not host:port"),
        ] {
            assert_eq!(connect_to(address), Err(problem), "{address:?}");
        }
    }
}
