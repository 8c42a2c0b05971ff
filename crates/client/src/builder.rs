//! Building a [`Client`]: which regions, in what order, with which
//! timeouts and backoff.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::client::{Client, Inner};
use crate::error::ClientError;
use crate::regions::{Backoff, Regions};

/// Configures a [`Client`]. `Client::builder().regions([nearest, next,
/// ...]).build()`.
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    urls: Vec<String>,
    backoff: Backoff,
    timeout: Duration,
    connect_timeout: Duration,
    rank_every: Option<Duration>,
    access_token: Option<String>,
    ca_file: Option<std::path::PathBuf>,
    identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            urls: Vec::new(),
            backoff: Backoff::default(),
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            rank_every: None,
            access_token: None,
            ca_file: None,
            identity: None,
        }
    }
}

impl ClientBuilder {
    /// Adds a region's client API URL (`http://host:port`), after those
    /// already added: calls go to the first region that is up.
    pub fn region(mut self, url: impl Into<String>) -> Self {
        self.urls.push(url.into());
        self
    }

    /// Adds regions in order of preference (nearest first).
    pub fn regions<S: Into<String>>(mut self, urls: impl IntoIterator<Item = S>) -> Self {
        self.urls.extend(urls.into_iter().map(Into::into));
        self
    }

    /// How often a region that failed is probed (`/healthz`, in the
    /// background) to bring it back: `min` after the first failure,
    /// doubling (plus jitter of up to the delay itself) up to `max` while
    /// it keeps failing. Default 200 ms to 2 s.
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff = Backoff {
            min,
            max: max.max(min),
        };
        self
    }

    /// How long one region may take to answer before the call counts it as
    /// failed (default 10 s; [`crate::Options::timeout_ms`] overrides it per
    /// call). A write that timed out may have been applied.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// How long connecting to a region may take (default 2 s, at most the
    /// timeout): a region that cannot be reached costs a call this much
    /// before it moves on.
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// Sends `Authorization: Bearer TOKEN` with every call (an access
    /// token from `meridian ctl token create`, or the bootstrap token).
    pub fn access_token(mut self, token: impl Into<String>) -> Self {
        self.access_token = Some(token.into());
        self
    }

    /// Trusts regions whose certificates chain to the CA in this PEM file
    /// (and only those): `https://` URLs need it.
    pub fn ca_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Presents this certificate and key (PEM files) to regions that ask
    /// for client certificates (mutual TLS).
    pub fn identity(
        mut self,
        cert: impl Into<std::path::PathBuf>,
        key: impl Into<std::path::PathBuf>,
    ) -> Self {
        self.identity = Some((cert.into(), key.into()));
        self
    }

    /// Orders the regions by measured round trip (`/healthz`, nearest
    /// first) now and every `every` after, instead of the order given.
    /// Needs a tokio runtime; the measuring task ends with the last clone
    /// of the client.
    pub fn rank_every(mut self, every: Duration) -> Self {
        self.rank_every = Some(every);
        self
    }

    /// The client. Fails when no URL was given, a URL is not `http://`, or
    /// the same region was given twice.
    pub fn build(self) -> Result<Client, ClientError> {
        let mut bases: Vec<String> = Vec::with_capacity(self.urls.len());
        for url in &self.urls {
            let base = url.trim_end_matches('/').to_string();
            let scheme_len = if base.starts_with("http://") {
                "http://".len()
            } else if base.starts_with("https://") {
                if self.ca_file.is_none() {
                    return Err(ClientError::Invalid(format!(
                        "region URL {url:?} is https: give the CA that signed its certificate (ca_file)"
                    )));
                }
                "https://".len()
            } else {
                return Err(ClientError::Invalid(format!(
                    "region URL {url:?} must be http://host:port or https://host:port"
                )));
            };
            if base.len() == scheme_len {
                return Err(ClientError::Invalid(format!(
                    "region URL {url:?} has no host"
                )));
            }
            if bases.contains(&base) {
                return Err(ClientError::Invalid(format!("region {base} given twice")));
            }
            bases.push(base);
        }
        if bases.is_empty() {
            return Err(ClientError::Invalid("a client needs a region URL".into()));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.enforce_http(false);
        // Connecting never outlasts the attempt: a connection that was
        // never made is then `Unreachable` (safe to send elsewhere), not a
        // timeout whose outcome is unknown.
        connector.set_connect_timeout(Some(
            self.connect_timeout.min(self.timeout.saturating_mul(3) / 4),
        ));
        let tls = match &self.ca_file {
            Some(ca) => crate::tls::client_config(
                ca,
                self.identity
                    .as_ref()
                    .map(|(c, k)| (c.as_path(), k.as_path())),
            )
            .map_err(|e| ClientError::Invalid(e.to_string()))?,
            None => crate::tls::trust_nothing(),
        };
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let http = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let client = Client {
            inner: Arc::new(Inner {
                regions: Regions::new(bases, self.backoff),
                http,
                timeout_ms: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
                failovers: AtomicU64::new(0),
                ranker: Mutex::new(None),
                probes: Mutex::new(tokio::task::JoinSet::new()),
                bearer: self.access_token.map(|t| format!("Bearer {}", t.trim())),
            }),
        };
        if let Some(every) = self.rank_every {
            let rt = tokio::runtime::Handle::try_current().map_err(|_| {
                ClientError::Invalid("rank_every needs a tokio runtime to measure in".into())
            })?;
            let weak = Arc::downgrade(&client.inner);
            let task = rt.spawn(async move {
                loop {
                    let Some(inner) = weak.upgrade() else { return };
                    Client { inner }.rank().await;
                    tokio::time::sleep(every).await;
                }
            });
            *client
                .inner
                .ranker
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(task);
        }
        Ok(client)
    }
}
