//! Checking a configuration ([`Config::validate`]) into [`Valid`], whose
//! parts each subsystem takes; every error names the field.

use std::net::SocketAddr;
use std::path::PathBuf;

use meridian_core::{KeyspaceDef, KeyspaceName, LogOptions, WriteConcern};
use meridian_crdt::{Policy, RegionId};

use crate::backup::BackupSettings;

use super::*;

impl Config {
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
                    |e: meridian_core::engine::concern::UnknownWriteConcern| {
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
        if !(1..=meridian_core::replication::compact::VERSION)
            .contains(&self.replication.wire_version)
        {
            return Err(field("replication.wire_version", "must be 1 or 2"));
        }
        if self.replication.relay_hold_ms > 10_000 {
            return Err(field("replication.relay_hold_ms", "must be at most 10000"));
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

impl Valid {
    /// What opening the region's data directory needs.
    pub fn region_settings(&self) -> crate::region::Settings {
        crate::region::Settings {
            data_dir: self.data_dir.clone(),
            region: self.region.clone(),
            clock_skew_ms: self.clock_skew_ms,
            engine: meridian_core::EngineConfig {
                max_clock_offset_ms: self.max_clock_offset_ms,
                max_keyspaces: self.limits.max_keyspaces,
                max_merges: self.limits.max_merges,
                max_tokens: self.limits.max_tokens,
                ledger_bytes: self.limits.ledger_bytes,
                ..meridian_core::EngineConfig::default()
            },
            log: self.log.clone(),
            archive: self.backup.is_some(),
            peers: !self.peers.is_empty() && self.secret.is_some(),
        }
    }
}
