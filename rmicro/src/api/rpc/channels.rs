//! One HTTP/2 connection per node, kept while nodes come and go.

use std::collections::HashMap;

use rmicro_runtime::transport::Connection;

use super::{reflect, RpcHandler};

/// Node connections kept before those not open are forgotten.
pub(super) const MAX_CHANNELS: usize = 1024;

/// Keeps `connection` to `address`. Nodes come and go (new addresses on every deploy): at
/// `max` entries, those without an open connection are forgotten first, rather than every
/// address ever seen kept.
fn remember(
    channels: &mut HashMap<String, Connection>,
    address: &str,
    connection: Connection,
    max: usize,
) {
    if channels.len() >= max {
        channels.retain(|_, c| c.is_open());
    }
    channels.insert(address.to_string(), connection);
}

impl RpcHandler {
    pub(super) fn channel(&self, address: &str) -> Result<Connection, reflect::ReadFail> {
        let mut channels = self
            .inner
            .channels
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(c) = channels.get(address) {
            return Ok(c.clone());
        }
        #[cfg(feature = "tls")]
        let connection = match &self.inner.config.client_tls {
            Some(tls) => Connection::with_tls(address, tls.clone()),
            None => Connection::new(address),
        };
        #[cfg(not(feature = "tls"))]
        let connection = Connection::new(address);
        let connection = connection.map_err(|err| reflect::ReadFail::unreached(err.to_string()))?;
        remember(&mut channels, address, connection.clone(), MAX_CHANNELS);
        Ok(connection)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_connections_are_forgotten_when_closed_and_too_many() {
        let mut channels = HashMap::new();
        for port in 1..=4 {
            let address = format!("127.0.0.1:{port}");
            let connection = Connection::new(&address).unwrap();
            remember(&mut channels, &address, connection, 4);
        }
        assert_eq!(channels.len(), 4);
        // None of them is open: at the limit they go, the new one stays.
        let connection = Connection::new("127.0.0.1:5").unwrap();
        remember(&mut channels, "127.0.0.1:5", connection, 4);
        assert_eq!(channels.keys().collect::<Vec<_>>(), ["127.0.0.1:5"]);
    }
}
