//! TLS for calls to regions: a client configuration that trusts only the
//! CA it is given (never the system roots), optionally presenting a
//! certificate for mutual TLS, and a hyper connector over it that still
//! takes `http://` URLs. rustls with the *ring* provider, TLS 1.3 and 1.2.
//! The PEM loaders are shared with the server's listeners.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::version::{TLS12, TLS13};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};

/// Connect timeout of the TCP connector under [`https_connector`].
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// TLS 1.3 preferred, 1.2 the minimum.
pub static VERSIONS: &[&SupportedProtocolVersion] = &[&TLS13, &TLS12];

/// Why TLS material could not be loaded or configured.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, #[source] std::io::Error),
    /// A PEM file is malformed or holds nothing of the kind expected.
    #[error("{0}: {1}")]
    Pem(PathBuf, String),
    /// A key file is unusable, or not the key of its certificate.
    #[error("{0}: {1}")]
    Key(PathBuf, String),
    /// A CA file gives no usable trust anchor.
    #[error("{0}: not a usable CA certificate: {1}")]
    Ca(PathBuf, String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The ring provider every configuration here is built with.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A file's bytes, the error naming it.
pub fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read(path.to_owned(), e))
}

/// Every certificate in a PEM file, in order; at least one.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |e: String| TlsError::Pem(path.to_owned(), format!("no certificates: {e}"));
    let certs = CertificateDer::pem_slice_iter(&read(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE block".into()));
    }
    Ok(certs)
}

/// The private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(&read(path)?)
        .map_err(|e| TlsError::Pem(path.to_owned(), format!("no private key: {e}")))
}

/// A root store holding every certificate of a PEM file, and nothing else.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| TlsError::Ca(path.to_owned(), e.to_string()))?;
    }
    Ok(roots)
}

/// A key that does not fit its certificate.
pub fn key_error(key: &Path, cert: &Path, e: rustls::Error) -> TlsError {
    let why = format!("unusable as the key of {}: {e}", cert.display());
    TlsError::Key(key.to_owned(), why)
}

/// A client configuration that trusts no certificate at all: for a client
/// that only speaks plain `http://`, an `https://` URL then fails its
/// handshake instead of trusting the system's roots.
pub fn trust_nothing() -> ClientConfig {
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .unwrap_or_else(|e| unreachable!("ring supports TLS 1.2 and 1.3: {e}"))
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth()
}

/// A client configuration trusting only the CA certificate(s) in `ca`,
/// presenting `client_identity` (certificate file, key file) when given, for
/// servers that require mTLS. ALPN is left empty: [`https_connector`] sets
/// it; a caller using the configuration directly sets `alpn_protocols`.
pub fn client_config(
    ca: &Path,
    client_identity: Option<(&Path, &Path)>,
) -> Result<ClientConfig, TlsError> {
    let roots = load_roots(ca)?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .with_root_certificates(roots);
    match client_identity {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = load_certs(cert)?;
            let key_der = load_key(key)?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| key_error(key, cert, e))
        }
    }
}

/// A hyper connector: `https://` over TLS with `cfg`, `http://` in the clear.
/// ALPN offers `h2` only when `h2_only` (peers), else `h2` then `http/1.1`
/// (any ALPN already in `cfg` is replaced). TCP_NODELAY, 5 s connect timeout.
pub fn https_connector(mut cfg: ClientConfig, h2_only: bool) -> HttpsConnector<HttpConnector> {
    // The builder panics on a preset ALPN list; it writes its own.
    cfg.alpn_protocols.clear();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(cfg)
        .https_or_http();
    if h2_only {
        builder.enable_http2().wrap_connector(http)
    } else {
        builder.enable_http1().enable_http2().wrap_connector(http)
    }
}
