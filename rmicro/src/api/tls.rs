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
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

/// Why the gateway's certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read the TLS {what} file `{path}`: {source}")]
    Read {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not PEM, or a PEM block in it is broken.
    #[error("the TLS {what} file `{path}` is not valid PEM: {detail}")]
    BadPem {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the PEM reader said.
        detail: String,
    },
    /// The certificate file holds no certificate.
    #[error("the TLS certificate file `{path}` holds no certificate (expected PEM blocks `-----BEGIN CERTIFICATE-----`, the server's certificate first, then its intermediates){hint}")]
    NoCertificate {
        /// The file.
        path: PathBuf,
        /// More, when the file looks like something else.
        hint: &'static str,
    },
    /// The key file holds no private key.
    #[error("the TLS key file `{path}` holds no private key (expected a PEM block `-----BEGIN PRIVATE KEY-----`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`){hint}")]
    NoKey {
        /// The file.
        path: PathBuf,
        /// More, when the file looks like something else.
        hint: &'static str,
    },
    /// The key does not belong to the certificate.
    #[error("the private key in `{key}` does not belong to the certificate in `{cert}`: give the key the certificate was issued for")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The key belongs to a certificate of the chain other than the first.
    #[error("the certificates in `{path}` are in the wrong order: the key is for certificate number {position}, but the server's own certificate must come first, then its intermediates (e.g. `cat server.pem intermediate.pem > chain.pem`)")]
    ChainOrder {
        /// The certificate file.
        path: PathBuf,
        /// Where the key's certificate is in it (1-based).
        position: usize,
    },
    /// The certificate is X.509 version 1 (no extensions), which rustls cannot read.
    #[error("the TLS certificate in `{path}` is X.509 version 1 (a certificate without extensions, as `openssl x509 -req` makes without `-extfile`), which rustls cannot use and clients that check names refuse: issue it again as version 3 with the names it serves, e.g. `-extfile` with a file holding `subjectAltName=DNS:example.com`")]
    Version1 {
        /// The certificate file.
        path: PathBuf,
    },
    /// rustls refused the key or certificate.
    #[error("the TLS certificate `{cert}` with key `{key}` cannot be used: {detail}")]
    Unusable {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        detail: String,
    },
}

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
        let current = load_pair(cert, key, &provider)?;
        let certs = Arc::new(Reloadable {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            provider: Arc::clone(&provider),
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
        let fresh = load_pair(&certs.cert, &certs.key, &certs.provider)?;
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
    provider: Arc<rustls::crypto::CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Reloadable {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|p| p.into_inner()),
        ))
    }
}

fn load_pair(
    cert: &Path,
    key: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let read = |what, path: &Path| {
        rmicro_runtime::config::read_small_file(path).map_err(|source| TlsError::Read {
            what,
            path: path.to_path_buf(),
            source,
        })
    };
    let bad_pem = |what, path: &Path, e: pem::Error| TlsError::BadPem {
        what,
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    let cert_pem = without_bom(read("certificate", cert)?);
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_pem("certificate", cert, e))?;
    if chain.is_empty() {
        let hint = if PrivateKeyDer::from_pem_slice(&cert_pem).is_ok() {
            "; it holds a private key: are --tls-cert and --tls-key swapped?"
        } else if looks_like_der(&cert_pem) {
            "; it looks like DER (binary): convert it with `openssl x509 -inform DER -in FILE -out FILE.pem`"
        } else {
            ""
        };
        return Err(TlsError::NoCertificate {
            path: cert.to_path_buf(),
            hint,
        });
    }
    let key_pem = without_bom(read("key", key)?);
    const ENCRYPTED: &str =
        "; it holds an encrypted key: decrypt it first (openssl pkey -in KEY -out PLAIN)";
    // PKCS#8 (`ENCRYPTED PRIVATE KEY`) or OpenSSL's older form (`Proc-Type: 4,ENCRYPTED` in an
    // `RSA PRIVATE KEY` block, which the PEM reader takes for broken base64).
    if contains(&key_pem, b"ENCRYPTED PRIVATE KEY") || contains(&key_pem, b"Proc-Type: 4,ENCRYPTED")
    {
        return Err(TlsError::NoKey {
            path: key.to_path_buf(),
            hint: ENCRYPTED,
        });
    }
    let private = match PrivateKeyDer::from_pem_slice(&key_pem) {
        Ok(private) => private,
        Err(pem::Error::NoItemsFound) => {
            let hint = if contains(&key_pem, b"BEGIN CERTIFICATE") {
                "; it holds a certificate: are --tls-cert and --tls-key swapped?"
            } else if looks_like_der(&key_pem) {
                "; it looks like DER (binary): convert it with `openssl pkey -inform DER -in FILE -out FILE.pem`"
            } else {
                ""
            };
            return Err(TlsError::NoKey {
                path: key.to_path_buf(),
                hint,
            });
        }
        Err(e) => return Err(bad_pem("key", key, e)),
    };
    // Kept to tell, on a mismatch, whether the key is another certificate's of the chain.
    let others: Vec<CertificateDer<'static>> = chain.iter().skip(1).cloned().collect();
    let signer = provider
        .key_provider
        .load_private_key(private.clone_key())
        .ok();
    CertifiedKey::from_der(chain, private, provider)
        .map(Arc::new)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                let position = signer.and_then(|signer| {
                    others.iter().position(|other| {
                        CertifiedKey::new(vec![other.clone()], Arc::clone(&signer))
                            .keys_match()
                            .is_ok()
                    })
                });
                match position {
                    Some(i) => TlsError::ChainOrder {
                        path: cert.to_path_buf(),
                        position: i + 2,
                    },
                    None => TlsError::Mismatch {
                        cert: cert.to_path_buf(),
                        key: key.to_path_buf(),
                    },
                }
            }
            // What webpki says of a version 1 certificate, reached only through `Debug`.
            other if format!("{other:?}").contains("UnsupportedCertVersion") => {
                TlsError::Version1 {
                    path: cert.to_path_buf(),
                }
            }
            other => TlsError::Unusable {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                detail: other.to_string(),
            },
        })
}

/// `pem` without the UTF-8 byte order mark some Windows editors put first: the PEM reader
/// would skip the line it is on, and with it the first certificate or the key (openssl reads
/// such files).
fn without_bom(mut pem: Vec<u8>) -> Vec<u8> {
    if pem.starts_with(b"\xEF\xBB\xBF") {
        pem.drain(..3);
    }
    pem
}

/// Whether `bytes` look like DER (an ASN.1 SEQUENCE) rather than PEM text.
fn looks_like_der(bytes: &[u8]) -> bool {
    bytes.first() == Some(&0x30) && !contains(bytes, b"-----BEGIN")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
