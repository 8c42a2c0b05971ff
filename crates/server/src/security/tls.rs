//! TLS for the client and peer listeners, and for outbound peer calls.
//!
//! rustls with the *ring* provider, passed to every builder (no process-wide
//! default), TLS 1.3 and 1.2. A listener's certificate is served by a resolver
//! holding the current [`CertifiedKey`], so a renewal needs no restart:
//! [`ServerTls::reload_if_changed`] compares the files' modification times and
//! lengths with those last seen and, on a change, loads the pair and swaps it
//! in for new handshakes. A pair that fails to load (unreadable, malformed, key
//! not the certificate's) leaves the current one serving and is tried again at
//! the next change, so a half-done renewal costs a warning, not an outage. The
//! mTLS client CA is read once: changing it needs a restart.
//!
//! Outbound, [`client_config`] trusts only the given CA file (never the system
//! roots) and can present a client certificate; [`https_connector`] wraps it
//! for hyper, still accepting `http://` URLs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use meridian_client::tls::{
    TlsError, VERSIONS, key_error, load_certs, load_key, load_roots, provider,
};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// How often [`ServerTls::spawn_reloader`] is usually asked to look at the files.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// Where a listener's TLS material lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, the leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// mTLS: when set, clients must present a certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
}

fn load_pair(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let chain = load_certs(&files.cert)?;
    let key = load_key(&files.key)?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| key_error(&files.key, &files.cert, e))
}

/// What [`ServerTls::reload_if_changed`] compares: modification time and length.
type Stamp = (Option<SystemTime>, u64);

fn stamps(files: &TlsFiles) -> Result<[Stamp; 2], TlsError> {
    let stamp = |path: &Path| -> Result<Stamp, TlsError> {
        let m = std::fs::metadata(path).map_err(|e| TlsError::Read(path.to_owned(), e))?;
        Ok((m.modified().ok(), m.len()))
    };
    Ok([stamp(&files.cert)?, stamp(&files.key)?])
}

/// Hands every handshake the pair loaded last.
#[derive(Debug)]
struct Resolver(RwLock<Arc<CertifiedKey>>);

impl Resolver {
    fn current(&self) -> Arc<CertifiedKey> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The same pair presented as a client certificate (mutual TLS to peers
/// and to the leader's client API): a renewal reaches outbound handshakes
/// as it reaches the listener's.
impl rustls::client::ResolvesClientCert for Resolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A listener's TLS: a server configuration whose certificate follows its files.
pub struct ServerTls {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    resolver: Arc<Resolver>,
    config: Arc<ServerConfig>,
    seen: Mutex<[Stamp; 2]>,
}

impl ServerTls {
    /// Loads the pair (and the client CA, if any) and builds the configuration:
    /// TLS 1.3 and 1.2, ALPN `h2` then `http/1.1`, client certificates
    /// required when [`TlsFiles::client_ca`] is set.
    pub fn new(files: TlsFiles) -> Result<ServerTls, TlsError> {
        let provider = provider();
        let seen = stamps(&files)?;
        let current = load_pair(&files, &provider)?;
        let resolver = Arc::new(Resolver(RwLock::new(Arc::new(current))));
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(VERSIONS)?;
        let builder = match &files.client_ca {
            Some(ca) => {
                let roots = Arc::new(load_roots(ca)?);
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(&provider))
                        .build()
                        .map_err(|e| TlsError::Ca(ca.clone(), e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(ServerTls {
            files,
            provider,
            resolver,
            config: Arc::new(config),
            seen: Mutex::new(seen),
        })
    }

    /// The server configuration (shared: reloads do not replace it).
    pub fn config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.config)
    }

    /// An acceptor for the listener.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config())
    }

    /// The listener's pair as a client identity, following its reloads.
    pub fn client_identity(&self) -> Arc<dyn rustls::client::ResolvesClientCert> {
        self.resolver.clone()
    }

    /// The certificate chain and key new handshakes get now.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        self.resolver.current()
    }

    /// Reloads the pair if either file's modification time or length changed
    /// since last seen: `Ok(true)` when a new pair is now served, `Ok(false)`
    /// when nothing changed. On an error the current pair stays; the change
    /// counts as seen, so the next attempt waits for the files to change again.
    /// Blocking (file I/O): call it off the async workers.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = stamps(&self.files)?;
        {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            if *seen == now {
                return Ok(false);
            }
            *seen = now;
        }
        let fresh = Arc::new(load_pair(&self.files, &self.provider)?);
        *self
            .resolver
            .0
            .write()
            .unwrap_or_else(PoisonError::into_inner) = fresh;
        Ok(true)
    }

    /// Calls [`ServerTls::reload_if_changed`] every `every` (usually
    /// [`RELOAD_EVERY`]) on the blocking pool until `stop` resolves, logging
    /// each reload and each failure.
    pub fn spawn_reloader(
        self: &Arc<Self>,
        every: Duration,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut stop = std::pin::pin!(stop);
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await; // the first tick is immediate; the pair was just loaded
            loop {
                tokio::select! {
                    _ = &mut stop => return,
                    _ = tick.tick() => {}
                }
                let me = Arc::clone(&this);
                let cert = this.files.cert.display();
                match tokio::task::spawn_blocking(move || me.reload_if_changed()).await {
                    Ok(Ok(true)) => tracing::info!(%cert, "TLS certificate reloaded"),
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(%cert, error = %e, "TLS reload failed: still serving the previous certificate")
                    }
                    Err(e) => tracing::warn!(%cert, error = %e, "TLS reload task failed"),
                }
            }
        })
    }
}

/// What this process's outbound peer calls trust (`[tls] peer_ca_file`)
/// and present (`peer_mtls`): set once a region starts; `None` until then
/// (an `https://` peer is then refused: nothing is trusted).
static OUTBOUND: RwLock<Option<Arc<rustls::ClientConfig>>> = RwLock::new(None);

/// The client identity outbound calls present now: the running region's
/// (after an in-process restart, the new one's), so a client built once
/// per process, like the standby's write forwarder, follows it.
static IDENTITY: RwLock<Option<Arc<dyn rustls::client::ResolvesClientCert>>> = RwLock::new(None);

/// Presents whatever [`set_identity`] installed last.
#[derive(Debug)]
pub struct CurrentIdentity;

impl rustls::client::ResolvesClientCert for CurrentIdentity {
    fn resolve(
        &self,
        hints: &[&[u8]],
        schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        IDENTITY
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(|r| r.resolve(hints, schemes))
    }

    fn has_certs(&self) -> bool {
        IDENTITY
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|r| r.has_certs())
    }
}

/// Installs the identity [`CurrentIdentity`] presents.
pub fn set_identity(id: Option<Arc<dyn rustls::client::ResolvesClientCert>>) {
    *IDENTITY.write().unwrap_or_else(PoisonError::into_inner) = id;
}

/// Sets what outbound peer calls trust and present.
pub fn set_outbound(cfg: Option<rustls::ClientConfig>) {
    *OUTBOUND.write().unwrap_or_else(PoisonError::into_inner) = cfg.map(Arc::new);
}

/// A connector for calls to peers and to members of this region: `https://`
/// with the configured peer CA (HTTP/2 only when `h2_only`), `http://` in
/// the clear.
pub fn outbound_connector(
    h2_only: bool,
) -> hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector> {
    let cfg = OUTBOUND
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .as_deref()
        .cloned();
    let cfg = cfg.unwrap_or_else(meridian_client::tls::trust_nothing);
    meridian_client::tls::https_connector(cfg, h2_only)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::cert::{ScratchDir, make_ca, make_leaf};
    use meridian_client::tls::{client_config, https_connector};

    /// `NAME.pem` and `NAME-key.pem` in a scratch dir with a CA, optionally mTLS.
    fn setup(name: &str, sans: &[&str], mtls: bool) -> (ScratchDir, TlsFiles) {
        let dir = ScratchDir::new();
        make_ca(&dir.0).unwrap();
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        make_leaf(&dir.0, name, &sans, true).unwrap();
        let files = TlsFiles {
            cert: dir.0.join(format!("{name}.pem")),
            key: dir.0.join(format!("{name}-key.pem")),
            client_ca: mtls.then(|| dir.0.join("ca.pem")),
        };
        (dir, files)
    }

    /// Moves a file's mtime forward, so a rewrite is seen even on a coarse clock.
    fn touch_later(path: &Path) {
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_modified(SystemTime::now() + Duration::from_secs(5))
            .unwrap();
    }

    #[test]
    fn configurations_build_and_bad_files_are_named() {
        let (dir, f) = setup("node", &["localhost", "127.0.0.1"], true);
        let alpn = ServerTls::new(f.clone())
            .unwrap()
            .config()
            .alpn_protocols
            .clone();
        assert_eq!(alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        let _ = ServerTls::new(TlsFiles {
            client_ca: None,
            ..f.clone()
        })
        .unwrap()
        .acceptor();
        let ca = dir.0.join("ca.pem");
        let anonymous = client_config(&ca, None).unwrap();
        assert!(anonymous.alpn_protocols.is_empty());
        let mut identified = client_config(&ca, Some((f.cert.as_path(), f.key.as_path()))).unwrap();
        identified.alpn_protocols = vec![b"h2".to_vec()]; // replaced, not a panic
        let _ = (
            https_connector(identified, true),
            https_connector(anonymous, false),
        );

        let missing = dir.0.join("missing.pem");
        let err = client_config(&missing, None).unwrap_err().to_string();
        assert!(err.contains(&missing.display().to_string()), "{err}");
        let garbage = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        std::fs::write(&f.key, garbage).unwrap();
        let err = ServerTls::new(f.clone()).err().unwrap().to_string();
        assert!(err.contains(&f.key.display().to_string()), "{err}");
    }

    #[test]
    fn reloads_only_when_the_files_change() {
        let (dir, f) = setup("node", &["localhost"], false);
        let tls = ServerTls::new(f.clone()).unwrap();
        let first = tls.certified_key().cert[0].clone();
        assert!(!tls.reload_if_changed().unwrap());

        make_leaf(
            &dir.0,
            "node",
            &["localhost".to_owned(), "::1".to_owned()],
            true,
        )
        .unwrap();
        touch_later(&f.cert);
        assert!(tls.reload_if_changed().unwrap());
        let second = tls.certified_key().cert[0].clone();
        assert_ne!(first, second);
        assert_eq!(second, load_certs(&f.cert).unwrap()[0]);
        assert!(!tls.reload_if_changed().unwrap());

        // A broken key: an error naming it; the pair in use stays, and the
        // same broken files are not retried.
        std::fs::write(&f.key, "not a key\n").unwrap();
        touch_later(&f.key);
        let err = tls.reload_if_changed().unwrap_err().to_string();
        assert!(err.contains(&f.key.display().to_string()), "{err}");
        assert_eq!(tls.certified_key().cert[0], second);
        assert!(!tls.reload_if_changed().unwrap());
    }
}
