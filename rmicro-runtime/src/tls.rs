//! TLS between services (feature `tls`, through rustls): a server that serves its calls over
//! TLS ([`ServerTls`], optionally requiring client certificates signed by a CA of its own:
//! mutual TLS), and clients that reach nodes over TLS, checking their certificates against a CA
//! ([`ClientTls`], optionally with a certificate of their own).
//!
//! Certificates and keys are PEM files; one that cannot be used is refused when it is read,
//! with what is wrong with it (a key that is not the certificate's, a chain in the wrong order,
//! an encrypted key, a DER file, files swapped), not at the first handshake. HTTP/2 is
//! negotiated by ALPN (`h2`), as gRPC peers require.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::sign::CertifiedKey;

use crate::files::read_small_file;

/// Why a certificate, key or CA file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read the TLS {what} file `{path}`: {source}")]
    Read {
        /// `certificate`, `key` or `CA`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not PEM, or a PEM block in it is broken.
    #[error("the TLS {what} file `{path}` is not valid PEM: {detail}")]
    BadPem {
        /// `certificate`, `key` or `CA`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the PEM reader said.
        detail: String,
    },
    /// The certificate file holds no certificate.
    #[error("the TLS certificate file `{path}` holds no certificate (expected PEM blocks `-----BEGIN CERTIFICATE-----`, the certificate first, then its intermediates){hint}")]
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
    #[error("the certificates in `{path}` are in the wrong order: the key is for certificate number {position}, but the certificate of the key must come first, then its intermediates (e.g. `cat server.pem intermediate.pem > chain.pem`)")]
    ChainOrder {
        /// The certificate file.
        path: PathBuf,
        /// Where the key's certificate is in it (1-based).
        position: usize,
    },
    /// The certificate is X.509 version 1 (no extensions), which rustls cannot read.
    #[error("the TLS certificate in `{path}` is X.509 version 1 (a certificate without extensions, as `openssl x509 -req` makes without `-extfile`), which rustls cannot use and peers that check names refuse: issue it again as version 3 with the names it serves, e.g. `-extfile` with a file holding `subjectAltName=DNS:example.com`")]
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
    /// A CA file holds no certificate rustls can trust.
    #[error("the TLS CA file `{path}` cannot be used: {detail}")]
    Ca {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// A name to check servers' certificates against is not a DNS name or an IP address.
    #[error("`{name}` is not a name a server certificate can be checked against (a DNS name or an IP address)")]
    ServerName {
        /// The name given.
        name: String,
    },
}

/// The crypto rustls uses here.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS for a [`Server`](crate::Server): its certificate and key, and, for mutual TLS, the CA its
/// clients' certificates must be signed by. Cheap to clone; clones share what
/// [`ServerTls::reload`] reads.
#[derive(Clone)]
pub struct ServerTls {
    files: Arc<ServerFiles>,
    live: Arc<RwLock<Arc<rustls::ServerConfig>>>,
}

/// Where a [`ServerTls`] reads its certificate, key and client CA from, and the protocols it
/// offers by ALPN.
#[derive(Clone, Debug)]
struct ServerFiles {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    alpn: Vec<Vec<u8>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert", &self.files.cert)
            .field("key", &self.files.key)
            .field("client_ca", &self.files.client_ca)
            .finish()
    }
}

impl ServerTls {
    /// The certificate chain at `cert` (the server's certificate first, then its
    /// intermediates) and the private key at `key`, both PEM.
    ///
    /// # Errors
    ///
    /// A [`TlsError`] saying which file is wrong and how.
    pub fn new(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<ServerTls, TlsError> {
        ServerTls::from_files(ServerFiles {
            cert: cert.as_ref().to_path_buf(),
            key: key.as_ref().to_path_buf(),
            client_ca: None,
            alpn: vec![b"h2".to_vec()],
        })
    }

    /// Requires every client to present a certificate signed by a CA in `ca` (PEM): mutual
    /// TLS. A client without one, or with another CA's, fails its handshake.
    ///
    /// # Errors
    ///
    /// When `ca` cannot be read or holds no usable CA certificate.
    pub fn client_ca(self, ca: impl AsRef<Path>) -> Result<ServerTls, TlsError> {
        ServerTls::from_files(ServerFiles {
            client_ca: Some(ca.as_ref().to_path_buf()),
            ..ServerFiles::clone(&self.files)
        })
    }

    /// Offers `protocols` by ALPN, in order of preference, instead of gRPC's `h2` alone (the
    /// gateway offers `h2` and `http/1.1`). The files are not read again.
    pub fn alpn_protocols(self, protocols: &[&[u8]]) -> ServerTls {
        let alpn: Vec<Vec<u8>> = protocols.iter().map(|p| p.to_vec()).collect();
        let mut config = rustls::ServerConfig::clone(&self.config());
        config.alpn_protocols.clone_from(&alpn);
        ServerTls {
            files: Arc::new(ServerFiles {
                alpn,
                ..ServerFiles::clone(&self.files)
            }),
            live: Arc::new(RwLock::new(Arc::new(config))),
        }
    }

    fn from_files(files: ServerFiles) -> Result<ServerTls, TlsError> {
        let config = files.config()?;
        Ok(ServerTls {
            files: Arc::new(files),
            live: Arc::new(RwLock::new(config)),
        })
    }

    /// Reads the certificate, key and client CA files again: connections accepted from now on
    /// (by this value and its clones) get what they hold; those open keep theirs. When the
    /// files cannot be used (a renewal written halfway, a key that is not the certificate's),
    /// what was in use stays. A [`Service`](crate::Service) serving TLS calls it on `SIGHUP`.
    ///
    /// # Errors
    ///
    /// A [`TlsError`] saying which file is wrong and how.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = self.files.config()?;
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = config;
        Ok(())
    }

    /// The acceptor for a connection accepted now: with the files as last (re)loaded.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config())
    }

    fn config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.live.read().unwrap_or_else(|p| p.into_inner()))
    }
}

impl ServerFiles {
    /// Reads the files and builds the configuration they make.
    fn config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let key = load_key_pair(&self.cert, &self.key)?;
        let unusable = |detail: String| TlsError::Unusable {
            cert: self.cert.clone(),
            key: self.key.clone(),
            detail,
        };
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| unusable(e.to_string()))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let roots = Arc::new(load_roots(path)?);
                let verifier =
                    rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider())
                        .build()
                        .map_err(|e| TlsError::Ca {
                            path: path.clone(),
                            detail: e.to_string(),
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config =
            builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)));
        config.alpn_protocols.clone_from(&self.alpn);
        Ok(Arc::new(config))
    }
}

/// TLS for a [`Client`](crate::Client): every node is reached over TLS, its certificate checked
/// against the CA given (for the name or address the node registered, or one name for all:
/// [`ClientTls::server_name`]), with a certificate of the client's own for servers that
/// require one. Cheap to clone; clones share what [`ClientTls::reload`] reads.
#[derive(Clone)]
pub struct ClientTls {
    files: Arc<ClientFiles>,
    live: Arc<RwLock<ClientConfigs>>,
    server_name: Option<ServerName<'static>>,
}

/// Where a [`ClientTls`] reads its CA and its own certificate and key from.
#[derive(Clone, Debug)]
struct ClientFiles {
    ca: PathBuf,
    identity: Option<(PathBuf, PathBuf)>,
}

/// The configurations a [`ClientTls`] connects with.
#[derive(Clone)]
struct ClientConfigs {
    /// For gRPC nodes: ALPN `h2`.
    h2: Arc<rustls::ClientConfig>,
    /// For HTTP/1.1 servers (the gateway's http handler): ALPN `http/1.1`.
    http1: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca", &self.files.ca)
            .field("identity", &self.files.identity)
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl ClientTls {
    /// Trusts the CA certificates in `ca` (PEM) for nodes' certificates.
    ///
    /// # Errors
    ///
    /// When `ca` cannot be read or holds no usable CA certificate.
    pub fn new(ca: impl AsRef<Path>) -> Result<ClientTls, TlsError> {
        ClientTls::from_files(
            ClientFiles {
                ca: ca.as_ref().to_path_buf(),
                identity: None,
            },
            None,
        )
    }

    /// Presents the certificate chain at `cert` with the key at `key` (PEM) to servers that
    /// ask for one (mutual TLS).
    ///
    /// # Errors
    ///
    /// A [`TlsError`] saying which file is wrong and how.
    pub fn identity(
        self,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<ClientTls, TlsError> {
        ClientTls::from_files(
            ClientFiles {
                identity: Some((cert.as_ref().to_path_buf(), key.as_ref().to_path_buf())),
                ..ClientFiles::clone(&self.files)
            },
            self.server_name,
        )
    }

    fn from_files(
        files: ClientFiles,
        server_name: Option<ServerName<'static>>,
    ) -> Result<ClientTls, TlsError> {
        let configs = files.configs()?;
        Ok(ClientTls {
            files: Arc::new(files),
            live: Arc::new(RwLock::new(configs)),
            server_name,
        })
    }

    /// Checks every node's certificate against `name` instead of the host the node registered
    /// (nodes register their IP address; a certificate may name the service instead).
    ///
    /// # Errors
    ///
    /// When `name` is neither a DNS name nor an IP address.
    pub fn server_name(mut self, name: &str) -> Result<ClientTls, TlsError> {
        let parsed = ServerName::try_from(name.to_string()).map_err(|_| TlsError::ServerName {
            name: name.to_string(),
        })?;
        self.server_name = Some(parsed);
        Ok(self)
    }

    /// Reads the CA file and the client's certificate and key files again: connections opened
    /// from now on (by this value and its clones) check and present what they hold; those open
    /// keep theirs. When the files cannot be used, what was in use stays. A
    /// [`Service`](crate::Service) whose client reaches nodes over TLS calls it on `SIGHUP`.
    ///
    /// # Errors
    ///
    /// A [`TlsError`] saying which file is wrong and how.
    pub fn reload(&self) -> Result<(), TlsError> {
        let configs = self.files.configs()?;
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = configs;
        Ok(())
    }

    /// The configurations to connect with now.
    fn configs(&self) -> ClientConfigs {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Opens TLS over `tcp` to the node at `host`.
    pub(crate) async fn connect(&self, host: &str, tcp: TcpStream) -> std::io::Result<Stream> {
        let name = self.name_for(host)?;
        let connector = tokio_rustls::TlsConnector::from(self.configs().h2);
        let tls = connector.connect(name, tcp).await?;
        Ok(Stream::Tls(Box::new(tls.into())))
    }

    /// Opens TLS over `tcp` to the HTTP/1.1 server at `host` (a name or an IP address, `[::1]`
    /// as in a URL), offering ALPN `http/1.1`: the certificate is checked as for gRPC nodes.
    /// The gateway's http handler reaches nodes that registered `secure=true` so.
    ///
    /// # Errors
    ///
    /// When `host` is no name a certificate can be checked against, or the handshake fails
    /// (rustls's error: the certificate is not signed by the CA, does not name the node, the
    /// node wants a client certificate, or serves plain text).
    pub async fn connect_http1(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> std::io::Result<impl AsyncRead + AsyncWrite + Send + Unpin + 'static> {
        let name = self.name_for(host)?;
        let connector = tokio_rustls::TlsConnector::from(self.configs().http1);
        connector.connect(name, tcp).await
    }

    /// The name `host`'s certificate is checked against: the one given to
    /// [`ClientTls::server_name`], else `host` itself.
    fn name_for(&self, host: &str) -> std::io::Result<ServerName<'static>> {
        if let Some(name) = &self.server_name {
            return Ok(name.clone());
        }
        // `[::1]` in an authority is `::1` in a certificate.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(bare.to_string()).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("`{host}` is not a name a certificate can be checked against"),
            )
        })
    }
}

impl ClientFiles {
    /// Reads the files and builds the configurations they make.
    fn configs(&self) -> Result<ClientConfigs, TlsError> {
        let roots = Arc::new(load_roots(&self.ca)?);
        let identity = match &self.identity {
            Some((cert, key)) => Some(load_key_pair(cert, key)?),
            None => None,
        };
        Ok(ClientConfigs {
            h2: client_config(&roots, identity.clone(), &self.ca, b"h2")?,
            http1: client_config(&roots, identity, &self.ca, b"http/1.1")?,
        })
    }
}

fn client_config(
    roots: &Arc<rustls::RootCertStore>,
    identity: Option<Arc<CertifiedKey>>,
    ca: &Path,
    alpn: &[u8],
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Ca {
            path: ca.to_path_buf(),
            detail: e.to_string(),
        })?
        .with_root_certificates(Arc::clone(roots));
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(key) => {
            builder.with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)))
        }
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(config))
}

/// A connection's byte stream: plain TCP, or TLS over it.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The CA certificates in `ca` (PEM), as trust roots.
fn load_roots(ca: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let pem = without_bom(read_small_file(ca).map_err(|source| TlsError::Read {
        what: "CA",
        path: ca.to_path_buf(),
        source,
    })?);
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            what: "CA",
            path: ca.to_path_buf(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        let hint = if looks_like_der(&pem) {
            "; it looks like DER (binary): convert it with `openssl x509 -inform DER -in FILE -out FILE.pem`"
        } else {
            ""
        };
        return Err(TlsError::Ca {
            path: ca.to_path_buf(),
            detail: format!(
                "it holds no certificate (expected PEM blocks `-----BEGIN CERTIFICATE-----`){hint}"
            ),
        });
    }
    let mut roots = rustls::RootCertStore::empty();
    let (_, refused) = roots.add_parsable_certificates(certs);
    if roots.is_empty() {
        return Err(TlsError::Ca {
            path: ca.to_path_buf(),
            detail: format!("none of its {refused} certificate(s) can be read as a CA certificate"),
        });
    }
    Ok(roots)
}

/// Reads the certificate chain at `cert` and the private key at `key` (PEM files), checking
/// that they belong together.
///
/// # Errors
///
/// A [`TlsError`] saying which file is wrong and how.
pub fn load_key_pair(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let provider = provider();
    let read = |what, path: &Path| {
        read_small_file(path).map_err(|source| TlsError::Read {
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
            "; it holds a private key: are the certificate and key files swapped?"
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
                "; it holds a certificate: are the certificate and key files swapped?"
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
    CertifiedKey::from_der(chain, private, &provider)
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
