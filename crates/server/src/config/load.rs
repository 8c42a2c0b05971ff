//! Where a configuration comes from, in order: defaults, the TOML file,
//! `MERIDIAN_` environment variables, command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Serialize;

use super::*;

/// Command-line values that override file and environment.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Overrides {
    /// `--region`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// `--listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// `--data-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// `--peer-listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_listen: Option<SocketAddr>,
    /// `--peer NAME=URL` (replaces the file's list when given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<PeerEntry>>,
    /// `--cluster-secret-file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_secret_file: Option<PathBuf>,
    /// `--clock-skew-ms` (tests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock_skew_ms: Option<i64>,
    /// `--follow`, `--advertise-*`, `--failover-timeout-ms`.
    #[serde(skip_serializing_if = "StandbyOverrides::is_empty")]
    pub standby: StandbyOverrides,
}

/// Command-line values for `[standby]`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StandbyOverrides {
    /// `--follow URL`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub follow: Option<String>,
    /// `--advertise-peer-url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_peer_url: Option<String>,
    /// `--advertise-client-url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_client_url: Option<String>,
    /// `--failover-timeout-ms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failover_timeout_ms: Option<u64>,
}

impl StandbyOverrides {
    fn is_empty(&self) -> bool {
        self.follow.is_none()
            && self.advertise_peer_url.is_none()
            && self.advertise_client_url.is_none()
            && self.failover_timeout_ms.is_none()
    }
}

/// Top-level keys the environment may set (`MERIDIAN_<KEY>`, nested with `__`).
const ENV_KEYS: &[&str] = &[
    "region",
    "listen",
    "data_dir",
    "op_log",
    "checkpoint_interval_ms",
    "max_clock_offset_ms",
    "clock_skew_ms",
    "peer_listen",
    "cluster_secret",
    "cluster_secret_file",
    "replication",
    "anti_entropy_interval_ms",
    "tombstone_gc_interval_ms",
    "backup",
    "standby",
    "auth",
    "tls",
    "limits",
];

impl Config {
    /// Loads defaults, then `file`, then the environment, then `overrides`.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(f) = file {
            if !f.exists() {
                return Err(field(
                    "--config",
                    format!("file {} does not exist", f.display()),
                ));
            }
            fig = fig.merge(Toml::file(f));
        }
        // `split` runs first: nested keys arrive as `op_log.segment_mb`.
        let env = Env::prefixed("MERIDIAN_").split("__").filter(|k| {
            let k = k.as_str().to_ascii_lowercase();
            ENV_KEYS
                .iter()
                .any(|p| k == *p || k.starts_with(&format!("{p}.")))
        });
        fig = fig.merge(env).merge(Serialized::globals(overrides));
        fig.extract().map_err(|e| ConfigError::Load(Box::new(e)))
    }
}
