//! `[auth]`, `[tls]` and `[limits]`: who may call, how the listeners are
//! encrypted, and how much any caller may hold open.
//!
//! Past ~400 lines only with its unit tests, which STYLE keeps beside the
//! code; the code itself is under 400.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Whether the client API asks for tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every request but health and the OpenAPI document needs a bearer
    /// token with the right for it (the default).
    #[default]
    Tokens,
    /// No tokens: anyone who reaches the client port may do anything.
    /// Accepted only when the client API listens on loopback.
    Open,
}

/// `[auth]` as written.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `tokens` (default) or `open` (loopback only).
    #[serde(default)]
    pub mode: AuthMode,
    /// A file holding the bootstrap admin token: admin on everything, kept
    /// in configuration (never replicated). Use it to create real tokens.
    #[serde(default)]
    pub bootstrap_token_file: Option<PathBuf>,
    /// The bootstrap token itself (prefer the file; set through
    /// `MERIDIAN_AUTH__BOOTSTRAP_TOKEN`).
    #[serde(default)]
    pub bootstrap_token: Option<String>,
}

/// `[tls]` as written: certificates for both listeners, and what peers
/// trust. Files are read at start and again whenever they change.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain of the client (and, by default, peer) listener.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// With it, clients must present a certificate this CA signed (mutual
    /// TLS on the client API, beside tokens).
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// The CA peers' certificates chain to: `https://` peer URLs are
    /// verified against it (and only it).
    #[serde(default)]
    pub peer_ca_file: Option<PathBuf>,
    /// Mutual TLS between peers: the peer listener requires a certificate
    /// signed by `peer_ca_file`, and this region presents its own.
    #[serde(default)]
    pub peer_mtls: bool,
}

impl TlsConfig {
    /// Checks that the files asked for come in their pairs; they are read
    /// when the region starts.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => {
                return Err(("tls.key_file", "cert_file needs its key_file".into()));
            }
            (None, Some(_)) => {
                return Err(("tls.cert_file", "key_file needs its cert_file".into()));
            }
            _ => {}
        }
        if self.cert_file.is_none() && self.client_ca_file.is_some() {
            return Err((
                "tls.client_ca_file",
                "client certificates need TLS on the listener: set cert_file and key_file".into(),
            ));
        }
        if self.peer_mtls && (self.peer_ca_file.is_none() || self.cert_file.is_none()) {
            return Err((
                "tls.peer_mtls",
                "mutual TLS between peers needs peer_ca_file and this region's cert_file and key_file".into(),
            ));
        }
        Ok(())
    }

    /// Whether the listeners speak TLS.
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }
}

fn default_max_connections() -> usize {
    4096
}
fn default_header_read_ms() -> u64 {
    10_000
}
fn default_request_ms() -> u64 {
    // Above the longest a request may ask to wait: 60 s for its causal
    // token, then 60 s for its write concern.
    150_000
}
fn default_idle_ms() -> u64 {
    120_000
}
fn default_max_keyspaces() -> usize {
    1_000
}
fn default_max_merges() -> usize {
    256
}
fn default_max_tokens() -> usize {
    10_000
}
fn default_max_read_repairs() -> usize {
    64
}
fn default_ledger_mb() -> u64 {
    64
}

/// `[limits]` as written.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Most open connections per listener; more wait in the kernel's
    /// backlog until one closes.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A connection that has not sent a whole request head (or finished its
    /// TLS handshake) this long after it opened or after its last answer is
    /// closed, ms.
    #[serde(default = "default_header_read_ms")]
    pub header_read_timeout_ms: u64,
    /// A request not answered in this long gets `503 request_timeout`, ms
    /// (writes that reached the writer still complete; their outcome is
    /// unknown to the client, as with any timeout).
    #[serde(default = "default_request_ms")]
    pub request_timeout_ms: u64,
    /// A connection with no request in flight for this long is closed, ms.
    #[serde(default = "default_idle_ms")]
    pub idle_timeout_ms: u64,
    /// Most keyspaces clients may define.
    #[serde(default = "default_max_keyspaces")]
    pub max_keyspaces: usize,
    /// Most merge scripts clients may register.
    #[serde(default = "default_max_merges")]
    pub max_merges: usize,
    /// Most live access tokens.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    /// Most read repairs (after quorum reads) in flight; past it a repair
    /// is skipped and left to anti-entropy.
    #[serde(default = "default_max_read_repairs")]
    pub max_read_repairs: usize,
    /// Most bytes one keyspace's conflict ledger keeps, MiB (beside its
    /// entry count, `ledger_capacity`): the oldest entries go first.
    #[serde(default = "default_ledger_mb")]
    pub ledger_mb_per_keyspace: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: default_max_connections(),
            header_read_timeout_ms: default_header_read_ms(),
            request_timeout_ms: default_request_ms(),
            idle_timeout_ms: default_idle_ms(),
            max_keyspaces: default_max_keyspaces(),
            max_merges: default_max_merges(),
            max_tokens: default_max_tokens(),
            max_read_repairs: default_max_read_repairs(),
            ledger_mb_per_keyspace: default_ledger_mb(),
        }
    }
}

/// Checked limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Per listener.
    pub max_connections: usize,
    /// See [`LimitsConfig::header_read_timeout_ms`].
    pub header_read: Duration,
    /// See [`LimitsConfig::request_timeout_ms`].
    pub request: Duration,
    /// See [`LimitsConfig::idle_timeout_ms`].
    pub idle: Duration,
    /// Definitions.
    pub max_keyspaces: usize,
    /// Merge scripts.
    pub max_merges: usize,
    /// Live tokens.
    pub max_tokens: usize,
    /// Read repairs in flight.
    pub max_read_repairs: usize,
    /// Ledger bytes per keyspace.
    pub ledger_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        LimitsConfig::default()
            .validate()
            .unwrap_or_else(|_| unreachable!("the default limits are valid"))
    }
}

impl LimitsConfig {
    /// Checks each limit; the error names the field.
    pub fn validate(&self) -> Result<Limits, (&'static str, String)> {
        let range = |name: &'static str, v: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err((name, format!("must be in {lo}..={hi}, not {v}")))
            }
        };
        range(
            "limits.max_connections",
            self.max_connections as u64,
            1,
            1_000_000,
        )?;
        range(
            "limits.header_read_timeout_ms",
            self.header_read_timeout_ms,
            100,
            600_000,
        )?;
        range(
            "limits.request_timeout_ms",
            self.request_timeout_ms,
            100,
            3_600_000,
        )?;
        range(
            "limits.idle_timeout_ms",
            self.idle_timeout_ms,
            100,
            86_400_000,
        )?;
        range(
            "limits.max_keyspaces",
            self.max_keyspaces as u64,
            1,
            100_000,
        )?;
        range("limits.max_merges", self.max_merges as u64, 0, 10_000)?;
        range("limits.max_tokens", self.max_tokens as u64, 1, 1_000_000)?;
        range(
            "limits.max_read_repairs",
            self.max_read_repairs as u64,
            1,
            100_000,
        )?;
        range(
            "limits.ledger_mb_per_keyspace",
            self.ledger_mb_per_keyspace,
            1,
            1 << 20,
        )?;
        Ok(Limits {
            max_connections: self.max_connections,
            header_read: Duration::from_millis(self.header_read_timeout_ms),
            request: Duration::from_millis(self.request_timeout_ms),
            idle: Duration::from_millis(self.idle_timeout_ms),
            max_keyspaces: self.max_keyspaces,
            max_merges: self.max_merges,
            max_tokens: self.max_tokens,
            max_read_repairs: self.max_read_repairs,
            ledger_bytes: self.ledger_mb_per_keyspace << 20,
        })
    }
}

/// Shortest bootstrap token accepted, in bytes.
pub const MIN_BOOTSTRAP: usize = 32;

/// Checked `[auth]`.
#[derive(Clone, Debug)]
pub enum Auth {
    /// Tokens, with the bootstrap token's SHA-256 if one is configured.
    Tokens {
        /// Lower-case hex SHA-256 of the bootstrap token.
        bootstrap: Option<String>,
    },
    /// No tokens (loopback only).
    Open,
}

impl AuthConfig {
    /// Checks the mode against where the client API listens, and reads the
    /// bootstrap token.
    pub fn validate(&self, listen: SocketAddr) -> Result<Auth, (&'static str, String)> {
        if self.mode == AuthMode::Open {
            if !listen.ip().is_loopback() {
                return Err((
                    "auth.mode",
                    format!(
                        "\"open\" (no tokens) is only allowed when the client API listens on loopback, not {listen}; use tokens (the default) with a bootstrap token"
                    ),
                ));
            }
            return Ok(Auth::Open);
        }
        let token = match (&self.bootstrap_token_file, &self.bootstrap_token) {
            (Some(f), _) => Some(std::fs::read_to_string(f).map_err(|e| {
                (
                    "auth.bootstrap_token_file",
                    format!("cannot read {}: {e}", f.display()),
                )
            })?),
            (None, Some(t)) => Some(t.clone()),
            (None, None) => None,
        };
        let bootstrap = match token {
            Some(t) => {
                let t = t.trim();
                if t.len() < MIN_BOOTSTRAP {
                    return Err((
                        "auth.bootstrap_token_file",
                        format!(
                            "the bootstrap token is {} bytes; it must be at least {MIN_BOOTSTRAP} (meridian token new makes one)",
                            t.len()
                        ),
                    ));
                }
                Some(super::auth::hash(t))
            }
            None => None,
        };
        Ok(Auth::Tokens { bootstrap })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_only_on_loopback() {
        let open = AuthConfig {
            mode: AuthMode::Open,
            ..AuthConfig::default()
        };
        assert!(matches!(
            open.validate("127.0.0.1:7070".parse().unwrap()),
            Ok(Auth::Open)
        ));
        assert!(matches!(
            open.validate("[::1]:7070".parse().unwrap()),
            Ok(Auth::Open)
        ));
        let (field, why) = open.validate("0.0.0.0:7070".parse().unwrap()).unwrap_err();
        assert_eq!(field, "auth.mode");
        assert!(why.contains("loopback"), "{why}");
    }

    #[test]
    fn bootstrap_token_at_and_under_its_length() {
        let at = AuthConfig {
            bootstrap_token: Some("x".repeat(MIN_BOOTSTRAP)),
            ..AuthConfig::default()
        };
        let Ok(Auth::Tokens { bootstrap: Some(h) }) = at.validate("0.0.0.0:1".parse().unwrap())
        else {
            panic!("a {MIN_BOOTSTRAP}-byte token is accepted");
        };
        assert_eq!(h, crate::security::auth::hash(&"x".repeat(MIN_BOOTSTRAP)));
        let under = AuthConfig {
            bootstrap_token: Some("x".repeat(MIN_BOOTSTRAP - 1)),
            ..AuthConfig::default()
        };
        assert!(under.validate("0.0.0.0:1".parse().unwrap()).is_err());
    }

    #[test]
    fn limits_at_and_over_their_bounds() {
        let ok = LimitsConfig {
            max_connections: 1,
            header_read_timeout_ms: 100,
            ..LimitsConfig::default()
        };
        assert!(ok.validate().is_ok());
        let zero = LimitsConfig {
            max_connections: 0,
            ..LimitsConfig::default()
        };
        assert_eq!(zero.validate().unwrap_err().0, "limits.max_connections");
        let quick = LimitsConfig {
            header_read_timeout_ms: 99,
            ..LimitsConfig::default()
        };
        assert_eq!(
            quick.validate().unwrap_err().0,
            "limits.header_read_timeout_ms"
        );
    }
}
