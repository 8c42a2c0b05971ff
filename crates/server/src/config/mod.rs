//! Configuration: a TOML file, then `MERIDIAN_` environment overrides, then
//! command-line flags, then [`Config::validate`], whose errors name the field
//! and what it accepts.
//!
//! This file is the file's layout ([`Config`] and its sections, each field
//! documented where it is declared, defaults as functions); [`load`] reads
//! the sources in order; [`valid`] checks them into [`Valid`].

use std::net::SocketAddr;
use std::path::PathBuf;

use meridian_crdt::DocSchema;
use serde::{Deserialize, Serialize};

/// A configuration problem, naming the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or environment could not be read or has a wrong type;
    /// figment's message names the source (file, env var) of the bad value.
    #[error("configuration: {0}")]
    Load(Box<figment::Error>),
    /// A value of the right type but not allowed.
    #[error("configuration field `{field}`: {message}")]
    Field {
        /// Dotted field path.
        field: String,
        /// What is wrong and what is allowed.
        message: String,
    },
}

fn field(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field: field.into(),
        message: message.into(),
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7070))
}
fn default_segment_mb() -> u64 {
    64
}
fn default_retention_mb() -> u64 {
    4096
}
fn default_retention_hours() -> u64 {
    168
}
fn default_checkpoint_ms() -> u64 {
    5_000
}
fn default_max_clock_offset_ms() -> u64 {
    500
}

/// Everything `meridian serve` reads.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This region's name (`us-east`): 1-32 of a-z, 0-9, '-', starting with a letter.
    #[serde(default)]
    pub region: String,
    /// Address of the client API.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where the op log and state live. Created if missing.
    #[serde(default)]
    pub data_dir: PathBuf,
    /// Op log settings (`[op_log]`).
    #[serde(default)]
    pub op_log: LogConfig,
    /// How often the state store is made durable (and the log may shrink), in ms.
    #[serde(default = "default_checkpoint_ms")]
    pub checkpoint_interval_ms: u64,
    /// Remote timestamps further ahead of local time are held back; LWW
    /// conflicts closer than this are flagged ambiguous.
    #[serde(default = "default_max_clock_offset_ms")]
    pub max_clock_offset_ms: u64,
    /// Keyspaces to create at startup if missing.
    #[serde(default)]
    pub keyspaces: Vec<KeyspaceConfig>,
    /// Tests only: shift this region's wall clock by this many ms.
    #[serde(default)]
    pub clock_skew_ms: i64,
    /// Address of the peer API (replication from other regions).
    #[serde(default)]
    pub peer_listen: Option<SocketAddr>,
    /// The other regions and their peer URLs.
    #[serde(default)]
    pub peers: Vec<PeerEntry>,
    /// File holding the cluster secret (at least 16 bytes) that signs every
    /// peer message.
    #[serde(default)]
    pub cluster_secret_file: Option<PathBuf>,
    /// The cluster secret itself (prefer `cluster_secret_file`; set through
    /// `MERIDIAN_CLUSTER_SECRET`).
    #[serde(default)]
    pub cluster_secret: Option<String>,
    /// Replication tuning.
    #[serde(default)]
    pub replication: ReplicationConfig,
    /// How often to compare state with a peer (anti-entropy), ms; 0: never.
    #[serde(default = "default_ae_ms")]
    pub anti_entropy_interval_ms: u64,
    /// How often to collect stable tombstones, ms; 0: never.
    #[serde(default = "default_gc_ms")]
    pub tombstone_gc_interval_ms: u64,
    /// Backups (`[backup]`); off unless `target` is set.
    #[serde(default)]
    pub backup: BackupConfig,
    /// Standbys (`[standby]`): following the region's leader, failover.
    #[serde(default)]
    pub standby: crate::standby::config::StandbyConfig,
    /// Client authentication (`[auth]`).
    #[serde(default)]
    pub auth: crate::security::config::AuthConfig,
    /// TLS on the listeners and to peers (`[tls]`).
    #[serde(default)]
    pub tls: crate::security::config::TlsConfig,
    /// Connection, time and definition limits (`[limits]`).
    #[serde(default)]
    pub limits: crate::security::config::LimitsConfig,
}

fn default_archive_ms() -> u64 {
    60_000
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            target: None,
            endpoint: None,
            s3_region: None,
            credentials_file: None,
            archive_interval_ms: default_archive_ms(),
            every_ms: 0,
            keep_last: 0,
            keep_hours: 0,
            undo_window_hours: default_undo_hours(),
        }
    }
}
fn default_undo_hours() -> u64 {
    24
}

/// Backup settings: where backups go, how often, how many are kept.
/// Credentials never appear here in the clear unless put here: they come
/// from the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`) or `credentials_file`, and are never written into
/// a backup.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// `file:///absolute/dir` or `s3://bucket[/prefix]`; unset: no backups.
    #[serde(default)]
    pub target: Option<String>,
    /// S3: the endpoint of an S3-compatible server (`http://host:port`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// S3: the bucket's region (default `us-east-1`).
    #[serde(default)]
    pub s3_region: Option<String>,
    /// S3: a file of `access_key_id = ...` / `secret_access_key = ...`
    /// lines (else the environment's `AWS_*` variables).
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// How often sealed log segments are uploaded (and the segment being
    /// written sealed, when it holds records), ms: restores reach up to
    /// this far behind the present.
    #[serde(default = "default_archive_ms")]
    pub archive_interval_ms: u64,
    /// Take a backup every this many ms (0: only when asked).
    #[serde(default)]
    pub every_ms: u64,
    /// Retention: keep the newest N backups (0: no count rule).
    #[serde(default)]
    pub keep_last: u32,
    /// Retention: keep backups younger than this many hours (0: no age rule).
    #[serde(default)]
    pub keep_hours: u64,
    /// Whatever the rules, retention keeps what restores and rewinds to
    /// any time in the last this many hours (0: only the rules).
    #[serde(default = "default_undo_hours")]
    pub undo_window_hours: u64,
}

fn default_ae_ms() -> u64 {
    30_000
}
fn default_gc_ms() -> u64 {
    60_000
}

/// A peer region.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerEntry {
    /// Its region name.
    pub name: String,
    /// Its peer API, `http://host:port`.
    pub url: String,
    /// Its client API, `http://host:port` (optional: named to clients in
    /// `421 not_owner` answers).
    #[serde(default)]
    pub client_url: Option<String>,
    /// The peer APIs of its standbys: tried in turn when `url` does not
    /// answer or is not the region's leader (after a failover).
    #[serde(default)]
    pub standby_urls: Vec<String>,
}

fn default_linger_ms() -> u64 {
    5
}
fn default_batch_ops() -> usize {
    4096
}
fn default_relay_hold_ms() -> u64 {
    100
}
fn default_wire_version() -> u8 {
    meridian_core::replication::compact::VERSION
}

/// Replication tuning.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationConfig {
    /// How long a sender waits for more ops before sending a small batch, ms.
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
    /// Most ops per batch.
    #[serde(default = "default_batch_ops")]
    pub max_batch_ops: usize,
    /// The newest peer wire version this region offers, answers in and
    /// reads: 2 (the compact format), or 1 to speak only what builds before
    /// version 2 spoke (to test a mixed cluster against it).
    #[serde(default = "default_wire_version")]
    pub wire_version: u8,
    /// How long another region's ops wait before this region relays them
    /// to a peer that still lacks them, ms (their origin likely ships them
    /// to it directly meanwhile); 0 relays at once.
    #[serde(default = "default_relay_hold_ms")]
    pub relay_hold_ms: u64,
    /// Tests only: probability that a batch is sent twice.
    #[serde(default)]
    pub fault_duplicate: f64,
    /// Tests only: probability that a batch is held back 0-200 ms, so that
    /// later batches overtake it.
    #[serde(default)]
    pub fault_delay: f64,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        Self {
            linger_ms: default_linger_ms(),
            max_batch_ops: default_batch_ops(),
            wire_version: default_wire_version(),
            relay_hold_ms: default_relay_hold_ms(),
            fault_duplicate: 0.0,
            fault_delay: 0.0,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            region: String::new(),
            listen: default_listen(),
            data_dir: PathBuf::new(),
            op_log: LogConfig::default(),
            checkpoint_interval_ms: default_checkpoint_ms(),
            max_clock_offset_ms: default_max_clock_offset_ms(),
            keyspaces: Vec::new(),
            clock_skew_ms: 0,
            peer_listen: None,
            peers: Vec::new(),
            cluster_secret_file: None,
            cluster_secret: None,
            replication: ReplicationConfig::default(),
            anti_entropy_interval_ms: default_ae_ms(),
            tombstone_gc_interval_ms: default_gc_ms(),
            backup: BackupConfig::default(),
            standby: Default::default(),
            auth: Default::default(),
            tls: Default::default(),
            limits: Default::default(),
        }
    }
}

/// Op log settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Segment size before rolling to a new file, MiB.
    #[serde(default = "default_segment_mb")]
    pub segment_mb: u64,
    /// Keep at most this much log, MiB (0: no size limit).
    #[serde(default = "default_retention_mb")]
    pub retention_mb: u64,
    /// Drop segments older than this, hours (0: no age limit).
    #[serde(default = "default_retention_hours")]
    pub retention_hours: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_mb: default_segment_mb(),
            retention_mb: default_retention_mb(),
            retention_hours: default_retention_hours(),
        }
    }
}

/// A keyspace declared in the config file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyspaceConfig {
    /// Name.
    pub name: String,
    /// `lww`, `mv`, `counter`, `set`, `doc` or `custom`.
    pub policy: String,
    /// `local`, `one`, `majority` or `all`.
    #[serde(default)]
    pub write_concern: Option<String>,
    /// `mv`: sibling cap.
    #[serde(default)]
    pub sibling_cap: Option<u32>,
    /// `doc`: field rules.
    #[serde(default)]
    pub schema: Option<DocSchema>,
    /// Conflict-ledger entries to keep.
    #[serde(default)]
    pub ledger_capacity: Option<u32>,
    /// `custom`: the merge function (a built-in, or a script registered
    /// through the API before this keyspace is declared).
    #[serde(default)]
    pub merge: Option<String>,
    /// `custom` with `region-priority`: regions, highest priority first.
    #[serde(default)]
    pub region_order: Option<Vec<String>>,
    /// In-region write concern: `leader` (default), `standby`, `region-all`.
    #[serde(default)]
    pub standby_concern: Option<String>,
    /// Let an unmet in-region concern succeed as the leader alone (counted).
    #[serde(default)]
    pub standby_downgrade: bool,
}

mod load;
mod valid;

pub use load::{Overrides, StandbyOverrides};
pub use valid::Valid;

#[cfg(test)]
mod tests;
