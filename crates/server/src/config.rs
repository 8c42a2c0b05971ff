//! Configuration: a TOML file, then `MERIDIAN_` environment overrides, then
//! command-line flags, then [`Config::validate`], whose errors name the field
//! and what it accepts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use meridian_core::{KeyspaceDef, KeyspaceName, LogOptions, WriteConcern};
use meridian_crdt::{DocSchema, Policy, RegionId};
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

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<Valid, ConfigError> {
        let region = RegionId::new(self.region.clone()).map_err(|e| {
            if self.region.is_empty() {
                field(
                    "region",
                    "required (--region, MERIDIAN_REGION or `region` in the config file)",
                )
            } else {
                field("region", e.to_string())
            }
        })?;
        if self.data_dir.as_os_str().is_empty() {
            return Err(field(
                "data_dir",
                "required (--data-dir, MERIDIAN_DATA_DIR or `data_dir` in the config file)",
            ));
        }
        if !(1..=1024).contains(&self.op_log.segment_mb) {
            return Err(field(
                "op_log.segment_mb",
                format!("{} is outside 1..=1024", self.op_log.segment_mb),
            ));
        }
        let backup = match &self.backup.target {
            None => None,
            Some(t) => Some(
                crate::backup::target::TargetSpec::parse(
                    t,
                    self.backup.endpoint.clone(),
                    self.backup.s3_region.clone(),
                    self.backup.credentials_file.clone(),
                )
                .map_err(|e| field("backup.target", e.to_string()))?,
            ),
        };
        if backup.is_some() && self.backup.archive_interval_ms < 100 {
            return Err(field("backup.archive_interval_ms", "must be at least 100"));
        }
        if self.checkpoint_interval_ms < 100 {
            return Err(field("checkpoint_interval_ms", "must be at least 100"));
        }
        if self.max_clock_offset_ms == 0 || self.max_clock_offset_ms > 60_000 {
            return Err(field(
                "max_clock_offset_ms",
                format!("{} is outside 1..=60000", self.max_clock_offset_ms),
            ));
        }
        let mut keyspaces = Vec::new();
        for (i, k) in self.keyspaces.iter().enumerate() {
            let at = |f: &str| format!("keyspaces[{i}].{f}");
            let name =
                KeyspaceName::new(k.name.clone()).map_err(|e| field(at("name"), e.to_string()))?;
            let policy: Policy = k
                .policy
                .parse()
                .map_err(|e: meridian_crdt::UnknownPolicy| field(at("policy"), e.to_string()))?;
            let mut def = KeyspaceDef::new(name, policy);
            if let Some(w) = &k.write_concern {
                def.write_concern = w
                    .parse::<WriteConcern>()
                    .map_err(|e| field(at("write_concern"), e.to_string()))?;
            }
            if let Some(c) = k.sibling_cap {
                def.sibling_cap = c;
            }
            if let Some(s) = &k.schema {
                def.schema = s.clone();
            }
            if let Some(c) = k.ledger_capacity {
                def.ledger_capacity = c;
            }
            def.merge = k.merge.clone();
            if let Some(c) = &k.standby_concern {
                def.standby_concern = c.parse().map_err(
                    |e: meridian_core::engine::keyspaces::UnknownWriteConcern| {
                        field(at("standby_concern"), e.to_string())
                    },
                )?;
            }
            def.standby_downgrade = k.standby_downgrade;
            for r in k.region_order.iter().flatten() {
                def.region_order.push(
                    RegionId::new(r.clone())
                        .map_err(|e| field(at("region_order"), e.to_string()))?,
                );
            }
            def.validate().map_err(|e| match e {
                meridian_core::engine::keyspaces::DefError::Field { field: f, reason } => {
                    field(at(f), reason)
                }
            })?;
            if keyspaces.iter().any(|d: &KeyspaceDef| d.name == def.name) {
                return Err(field(
                    at("name"),
                    format!("keyspace {} is declared twice", def.name),
                ));
            }
            keyspaces.push(def);
        }
        let max = meridian_core::budget::MAX_WRITERS;
        if self.peers.len() + 1 > max {
            return Err(field(
                "peers",
                format!(
                    "{} regions in all, over the {max} whose concurrent writes the object read limit allows for",
                    self.peers.len() + 1
                ),
            ));
        }
        let mut peers = Vec::new();
        let mut client_urls = std::collections::BTreeMap::new();
        let mut standby_urls = std::collections::BTreeMap::new();
        for (i, p) in self.peers.iter().enumerate() {
            let name = RegionId::new(p.name.clone())
                .map_err(|e| field(format!("peers[{i}].name"), e.to_string()))?;
            if name == region {
                return Err(field(
                    format!("peers[{i}].name"),
                    "a region is not its own peer",
                ));
            }
            if peers.iter().any(|(n, _): &(RegionId, String)| *n == name) {
                return Err(field(
                    format!("peers[{i}].name"),
                    format!("peer {name} is listed twice"),
                ));
            }
            let url = crate::standby::config::base_url(&p.url)
                .map_err(|m| field(format!("peers[{i}].url"), m))?;
            if url.starts_with("https://") && self.tls.peer_ca_file.is_none() {
                return Err(field(
                    format!("peers[{i}].url"),
                    format!(
                        "{url} is https: set [tls] peer_ca_file to the CA that signed the peers' certificates"
                    ),
                ));
            }
            if let Some(c) = &p.client_url {
                let c = c.trim_end_matches('/').to_string();
                if !c.starts_with("http://") && !c.starts_with("https://") {
                    return Err(field(
                        format!("peers[{i}].client_url"),
                        format!("{c:?} must look like http://host:port"),
                    ));
                }
                client_urls.insert(name.clone(), c);
            }
            let mut standbys = Vec::new();
            for (j, u) in p.standby_urls.iter().enumerate() {
                standbys.push(
                    crate::standby::config::base_url(u)
                        .map_err(|m| field(format!("peers[{i}].standby_urls[{j}]"), m))?,
                );
            }
            if !standbys.is_empty() {
                standby_urls.insert(name.clone(), standbys);
            }
            peers.push((name, url));
        }
        let secret = match (&self.cluster_secret_file, &self.cluster_secret) {
            (Some(f), _) => {
                let bytes = std::fs::read(f).map_err(|e| {
                    field(
                        "cluster_secret_file",
                        format!("cannot read {}: {e}", f.display()),
                    )
                })?;
                Some(
                    crate::peer::auth::Secret::new(&bytes)
                        .map_err(|e| field("cluster_secret_file", e.to_string()))?,
                )
            }
            (None, Some(s)) => Some(
                crate::peer::auth::Secret::new(s.as_bytes())
                    .map_err(|e| field("cluster_secret", e.to_string()))?,
            ),
            (None, None) => None,
        };
        if (!peers.is_empty() || self.peer_listen.is_some()) && secret.is_none() {
            return Err(field(
                "cluster_secret_file",
                "replication needs a cluster secret (--cluster-secret-file, MERIDIAN_CLUSTER_SECRET or `cluster_secret_file`)",
            ));
        }
        if !peers.is_empty() && self.peer_listen.is_none() {
            return Err(field(
                "peer_listen",
                "regions with peers need a peer listener (--peer-listen or `peer_listen`) so the peers can reach them",
            ));
        }
        if !(1..=100_000).contains(&self.replication.max_batch_ops) {
            return Err(field("replication.max_batch_ops", "must be in 1..=100000"));
        }
        for (name, p) in [
            (
                "replication.fault_duplicate",
                self.replication.fault_duplicate,
            ),
            ("replication.fault_delay", self.replication.fault_delay),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(field(name, "must be a probability in 0..=1"));
            }
        }
        if self.replication.linger_ms > 1_000 {
            return Err(field("replication.linger_ms", "must be at most 1000"));
        }
        let standby = self
            .standby
            .validate(self.listen, self.peer_listen, secret.is_some())
            .map_err(|(f, m)| field(f, m))?;
        // Every https URL this region calls is checked against the peer
        // CA: without one, nothing would be trusted and the calls would
        // fail at run time (after a failover, on a standby's first write).
        if self.tls.peer_ca_file.is_none() {
            let https =
                |u: &Option<String>| u.as_deref().is_some_and(|u| u.starts_with("https://"));
            let mut named: Vec<(String, bool)> = vec![
                ("standby.follow".into(), https(&self.standby.follow)),
                (
                    "standby.advertise_peer_url".into(),
                    https(&self.standby.advertise_peer_url),
                ),
                // Serving TLS to peers: members and peers reach each other
                // over https (a standby's leader, a leader's standbys).
                (
                    "tls.peer_ca_file".into(),
                    self.tls.enabled() && self.peer_listen.is_some(),
                ),
            ];
            for (i, p) in self.peers.iter().enumerate() {
                for (j, u) in p.standby_urls.iter().enumerate() {
                    named.push((
                        format!("peers[{i}].standby_urls[{j}]"),
                        u.starts_with("https://"),
                    ));
                }
            }
            if let Some((f, _)) = named.into_iter().find(|(_, bad)| *bad) {
                return Err(field(
                    f,
                    "an https member or peer needs [tls] peer_ca_file (the CA its certificate chains to)",
                ));
            }
        }
        let auth = self
            .auth
            .validate(self.listen)
            .map_err(|(f, m)| field(f, m))?;
        let limits = self.limits.validate().map_err(|(f, m)| field(f, m))?;
        self.tls.validate().map_err(|(f, m)| field(f, m))?;
        Ok(Valid {
            auth,
            limits,
            tls: self.tls.clone(),
            standby,
            standby_urls,
            anti_entropy_interval_ms: self.anti_entropy_interval_ms,
            tombstone_gc_interval_ms: self.tombstone_gc_interval_ms,
            peer_listen: self.peer_listen,
            peers,
            client_urls,
            secret,
            replication: self.replication.clone(),
            region,
            listen: self.listen,
            data_dir: self.data_dir.clone(),
            log: LogOptions {
                segment_bytes: self.op_log.segment_mb << 20,
                retention_bytes: self.op_log.retention_mb << 20,
                retention_ms: self.op_log.retention_hours * 3_600_000,
                // Set by the region when it archives to a backup target.
                pin: None,
            },
            backup: backup.map(|target| BackupSettings {
                target,
                archive_interval_ms: self.backup.archive_interval_ms,
                every_ms: self.backup.every_ms,
                keep_last: self.backup.keep_last,
                keep_ms: self.backup.keep_hours.saturating_mul(3_600_000),
                undo_ms: self.backup.undo_window_hours.saturating_mul(3_600_000),
            }),
            checkpoint_interval_ms: self.checkpoint_interval_ms,
            max_clock_offset_ms: self.max_clock_offset_ms,
            keyspaces,
            clock_skew_ms: self.clock_skew_ms,
        })
    }
}

/// A checked configuration.
#[derive(Clone, Debug)]
pub struct Valid {
    /// This region.
    pub region: RegionId,
    /// Client API address.
    pub listen: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Op log options.
    pub log: LogOptions,
    /// Checkpoint interval.
    pub checkpoint_interval_ms: u64,
    /// Clock-offset bound.
    pub max_clock_offset_ms: u64,
    /// Keyspaces to ensure at startup.
    pub keyspaces: Vec<KeyspaceDef>,
    /// Wall-clock shift (tests).
    pub clock_skew_ms: i64,
    /// Peer API address.
    pub peer_listen: Option<SocketAddr>,
    /// Peers: region and peer URL.
    pub peers: Vec<(RegionId, String)>,
    /// Peers' client API URLs, where configured.
    pub client_urls: std::collections::BTreeMap<RegionId, String>,
    /// The cluster secret.
    pub secret: Option<crate::peer::auth::Secret>,
    /// Replication tuning.
    pub replication: ReplicationConfig,
    /// Anti-entropy interval, ms (0: off).
    pub anti_entropy_interval_ms: u64,
    /// Tombstone collection interval, ms (0: off).
    pub tombstone_gc_interval_ms: u64,
    /// Backups, when a target is configured.
    pub backup: Option<BackupSettings>,
    /// Standby settings.
    pub standby: crate::standby::config::StandbySettings,
    /// Peers' standby peer URLs, where configured.
    pub standby_urls: std::collections::BTreeMap<RegionId, Vec<String>>,
    /// Client authentication.
    pub auth: crate::security::config::Auth,
    /// Limits.
    pub limits: crate::security::config::Limits,
    /// TLS files.
    pub tls: crate::security::config::TlsConfig,
}

/// Checked backup settings.
#[derive(Clone, Debug)]
pub struct BackupSettings {
    /// Where backups go.
    pub target: crate::backup::target::TargetSpec,
    /// Archive interval, ms.
    pub archive_interval_ms: u64,
    /// Scheduled backups, ms (0: off).
    pub every_ms: u64,
    /// Retention by count (0: off).
    pub keep_last: u32,
    /// Retention by age, ms (0: off).
    pub keep_ms: u64,
    /// The undo window, ms.
    pub undo_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loads `toml` as the config file. Inside a figment jail, so it runs
    /// apart from the tests that set MERIDIAN_* variables (it once read a
    /// region another test had set).
    #[allow(clippy::result_large_err)]
    fn with_file(toml: &str) -> Result<Config, ConfigError> {
        let mut out = None;
        figment::Jail::expect_with(|jail| {
            let p = jail.directory().join("m.toml");
            std::fs::write(&p, toml).unwrap();
            out = Some(Config::load(Some(&p), &Overrides::default()));
            Ok(())
        });
        out.expect("the jail ran")
    }

    #[test]
    fn backup_settings_are_checked() {
        let base = "region = \"eu-west\"\ndata_dir = \"/tmp/x\"\n";
        let v = with_file(base).unwrap().validate().unwrap();
        assert!(v.backup.is_none(), "no target: no backups");
        assert!(v.log.pin.is_none());
        let v = with_file(&format!(
            "{base}[backup]\ntarget = \"s3://bkt/eu\"\nendpoint = \"http://127.0.0.1:9000\"\nkeep_last = 7\nkeep_hours = 48\nundo_window_hours = 2\n"
        ))
        .unwrap()
        .validate()
        .unwrap();
        let b = v.backup.unwrap();
        assert_eq!(b.target.url, "s3://bkt/eu");
        assert_eq!((b.keep_last, b.keep_ms), (7, 48 * 3_600_000));
        assert_eq!(b.archive_interval_ms, 60_000);
        assert_eq!(b.undo_ms, 2 * 3_600_000);
        let v = with_file(&format!("{base}[backup]\ntarget = \"/b\"\n"))
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(
            v.backup.unwrap().undo_ms,
            24 * 3_600_000,
            "a day by default"
        );
        for (bad, field_) in [
            ("target = \"relative\"", "backup.target"),
            (
                "target = \"/abs\"\nendpoint = \"http://x\"",
                "backup.target",
            ),
            (
                "target = \"/abs\"\narchive_interval_ms = 99",
                "backup.archive_interval_ms",
            ),
        ] {
            let e = with_file(&format!("{base}[backup]\n{bad}\n"))
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("`{field_}`")), "{bad}: {e}");
        }
        let e = with_file(&format!("{base}[backup]\ntarget = \"/a\"\nbucket = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("bucket"), "{e}");
    }

    #[test]
    fn https_members_and_peers_need_the_peer_ca() {
        let base = "region = \"eu-west\"\ndata_dir = \"/tmp/x\"\ncluster_secret = \"0123456789abcdef0123\"\npeer_listen = \"127.0.0.1:7170\"\n";
        let err = |extra: &str| {
            with_file(&format!("{base}{extra}"))
                .unwrap()
                .validate()
                .err()
                .map(|e| e.to_string())
        };
        let peer = "[[peers]]\nname = \"us-east\"\nurl = \"https://u:7170\"\n";
        assert!(err(peer).unwrap().contains("peers[0].url"));
        let standby = "[[peers]]\nname = \"us-east\"\nurl = \"http://u:7170\"\nstandby_urls = [\"https://u2:7170\"]\n";
        assert!(err(standby).unwrap().contains("peers[0].standby_urls[0]"));
        let follow = "[standby]\nfollow = \"https://leader:7170\"\n";
        assert!(err(follow).unwrap().contains("standby.follow"));
        let serving = "[tls]\ncert_file = \"/c\"\nkey_file = \"/k\"\n";
        assert!(err(serving).unwrap().contains("tls.peer_ca_file"));
        // With the CA: all accepted.
        assert_eq!(
            err(&format!(
                "{peer}[tls]\ncert_file = \"/c\"\nkey_file = \"/k\"\npeer_ca_file = \"/ca\"\n"
            )),
            None
        );
    }

    #[test]
    fn file_values_and_validation_errors_name_the_field() {
        let c = with_file("region = \"eu-west\"\ndata_dir = \"/tmp/x\"\n[[keyspaces]]\nname = \"hits\"\npolicy = \"counter\"\n").unwrap();
        let v = c.validate().unwrap();
        assert_eq!(v.region.as_str(), "eu-west");
        assert_eq!(v.keyspaces[0].policy, Policy::Counter);

        let c = with_file("region = \"eu-west\"\ndata_dir = \"/tmp/x\"\n[[keyspaces]]\nname = \"hits\"\npolicy = \"crdt\"\n").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert_eq!(
            e,
            "configuration field `keyspaces[0].policy`: unknown policy \"crdt\": expected one of lww, mv, counter, set, doc, custom"
        );

        let c = with_file("region = \"eu-west\"\ndata_dir = \"/tmp/x\"\n[[keyspaces]]\nname = \"prices\"\npolicy = \"custom\"\nmerge = \"region-priority\"\nregion_order = [\"eu-west\", \"us-east\"]\n").unwrap();
        let v = c.validate().unwrap();
        assert_eq!(v.keyspaces[0].policy, Policy::Custom);
        assert_eq!(v.keyspaces[0].merge.as_deref(), Some("region-priority"));
        assert_eq!(v.keyspaces[0].region_order.len(), 2);
        let c = with_file("region = \"eu-west\"\ndata_dir = \"/tmp/x\"\n[[keyspaces]]\nname = \"prices\"\npolicy = \"custom\"\n").unwrap();
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "configuration field `keyspaces[0].merge`: a custom keyspace names its merge function"
        );

        let c = with_file("region = \"EU\"\ndata_dir = \"/tmp/x\"\n").unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("configuration field `region`")
        );

        let e = with_file("region = \"eu\"\nlisten = 5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen"), "{e}");
        let e = with_file("regoin = \"eu\"\n").unwrap_err().to_string();
        assert!(e.contains("regoin"), "{e}");

        let peers: String = (0..10)
            .map(|i| {
                format!(
                    "[[peers]]\nname = \"p{i}\"\nurl = \"http://127.0.0.1:{}\"\n",
                    9000 + i
                )
            })
            .collect();
        let c = with_file(&format!("region = \"eu\"\ndata_dir = \"/tmp/x\"\n{peers}")).unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("`peers`: 11 regions in all, over the 10"), "{e}");

        let c = with_file(
            "region = \"eu\"\ndata_dir = \"/tmp/x\"\n[replication]\nfault_duplicate = 1.5\n",
        )
        .unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("`replication.fault_duplicate`: must be a probability"),
            "{e}"
        );
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error
    fn the_environment_overrides_the_file_and_other_variables_are_left_alone() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("m.toml", "region = \"eu-west\"\ndata_dir = \"/tmp/x\"\n")?;
            jail.set_env("MERIDIAN_OP_LOG__SEGMENT_MB", "3");
            jail.set_env("MERIDIAN_REGION", "ap-south");
            jail.set_env("MERIDIAN_BIN", "/not/a/config/key");
            let c = Config::load(Some(std::path::Path::new("m.toml")), &Overrides::default())
                .map_err(|e| e.to_string())?;
            assert_eq!(c.op_log.segment_mb, 3);
            assert_eq!(c.region, "ap-south");
            Ok(())
        });
    }

    #[test]
    fn overrides_beat_the_file() {
        let dir = meridian_core::testdir::TestDir::new("config-o");
        let p = dir.path().join("m.toml");
        std::fs::write(&p, "region = \"eu-west\"\ndata_dir = \"/tmp/x\"\n").unwrap();
        let o = Overrides {
            region: Some("ap-south".into()),
            ..Overrides::default()
        };
        let c = Config::load(Some(&p), &o).unwrap();
        assert_eq!(c.region, "ap-south");
        let e = Config::default().validate().unwrap_err().to_string();
        assert!(e.contains("`region`: required"), "{e}");
    }
}
