//! HTTPS on the gateway's own listener (`--tls-cert`, `--tls-key`).
//!
//! The certificate chain and key are PEM files, read at start (a file that cannot be used stops
//! the gateway with what is wrong with it) and again on [`Tls::reload`] (`rmicro api` calls it on
//! `SIGHUP`, so a renewed certificate is taken without a restart; a renewal that cannot be used
//! is logged and the certificate in use stays). HTTP/2 and HTTP/1.1 are offered by ALPN; clients
//! that offer neither get HTTP/1.1.

use std::path::Path;

use rmicro_runtime::tls::ServerTls;
pub use rmicro_runtime::tls::TlsError;

/// The gateway's TLS: its certificate and key, and the acceptor its connections go through.
/// Clones share the certificate in use.
#[derive(Clone, Debug)]
pub struct Tls(ServerTls);

impl Tls {
    /// Reads the certificate chain at `cert` and the private key at `key` (PEM files).
    ///
    /// # Errors
    ///
    /// A [`TlsError`] saying which file is wrong and how.
    pub fn load(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
        let tls = ServerTls::new(cert, key)?.alpn_protocols(&[b"h2", b"http/1.1"]);
        Ok(Tls(tls))
    }

    /// Reads the files again; new connections get what they hold from now on. When they cannot
    /// be used, the certificate in use stays.
    ///
    /// # Errors
    ///
    /// Why the files cannot be used.
    pub fn reload(&self) -> Result<(), TlsError> {
        self.0.reload()
    }

    /// The acceptor for a connection accepted now.
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        self.0.acceptor()
    }
}
