//! HTTPS on the gateway's own listener (`--tls-cert`, `--tls-key`).
//!
//! The certificate chain and key are PEM files, read at start (a file that cannot be used stops
//! the gateway with what is wrong with it) and again on [`Tls::reload`] (`rmicro api` calls it on
//! `SIGHUP`, so a renewed certificate is taken without a restart; a renewal that cannot be used
//! is logged and the certificate in use stays). HTTP/2 and HTTP/1.1 are offered by ALPN; clients
//! that offer neither get HTTP/1.1.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tokio_rustls::rustls;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

pub use rmicro_runtime::tls::TlsError;

/// The gateway's TLS: the acceptor its connections go through, and the files to re-read.
/// Clones share the certificate in use.
#[derive(Clone)]
pub struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
    certs: Arc<Reloadable>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.certs.cert)
            .field("key", &self.certs.key)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads the certificate chain at `cert` and the private key at `key` (PEM files).
    ///
    /// # Errors
    ///
    /// A [`TlsError`] saying which file is wrong and how.
    pub fn load(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let current = load_pair(cert, key)?;
        let certs = Arc::new(Reloadable {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(current),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Unusable {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                detail: e.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&certs) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            certs,
        })
    }

    /// Reads the files again; new connections get what they hold from now on. When they cannot
    /// be used, the certificate in use stays.
    ///
    /// # Errors
    ///
    /// Why the files cannot be used.
    pub fn reload(&self) -> Result<(), TlsError> {
        let certs = &self.certs;
        let fresh = load_pair(&certs.cert, &certs.key)?;
        *certs.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    pub(crate) fn acceptor(&self) -> &tokio_rustls::TlsAcceptor {
        &self.acceptor
    }
}

/// The certificate in use, handed to every handshake, and where it came from.
#[derive(Debug)]
struct Reloadable {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Reloadable {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|p| p.into_inner()),
        ))
    }
}

fn load_pair(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    rmicro_runtime::tls::load_key_pair(cert, key)
}
