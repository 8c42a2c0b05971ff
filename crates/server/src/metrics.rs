//! Prometheus metrics: `meridian_<subsystem>_<thing>_<unit>`, labelled with
//! the region. Histograms and counters are recorded where things happen;
//! figures a subsystem already keeps (the engine's counters, the peer
//! links', the standby's) are read at scrape time by a collector that the
//! subsystem attaches ([`Metrics::attach`]): `region::metrics`,
//! `peer::metrics`, `standby::metrics`. This module imports none of them.
//!
//! Why past ~400 lines: every metric family is declared here with its help
//! text, so the names are read in one place.

use std::sync::Arc;

use meridian_crdt::RegionId;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of request metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct OpLabels {
    /// `put`, `get`, `delete`, `op`, `batch`, `list`.
    pub op: String,
}

/// Labels of ownership outcomes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct OwnershipLabels {
    /// The keyspace.
    pub keyspace: String,
    /// The rule's index, or `default`.
    pub rule: String,
    /// `forwarded`, `rejected`, `fallback` or `unreachable`.
    pub outcome: String,
}

/// Labels of refusals made for security and limits.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct RefusedLabels {
    /// `auth`, `client_listener`, `peer_listener` or `peer`.
    pub what: &'static str,
    /// Why (`missing`, `invalid`, `forbidden`, `connections`,
    /// `header_timeout`, `tls_handshake`, `replayed`, `stale`, ...).
    pub reason: &'static str,
}

/// Labels of a listener's figures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct ListenerLabels {
    /// `client_listener` or `peer_listener`.
    pub listener: &'static str,
}

/// Labels of the request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct RequestLabels {
    /// The route, as in the API's route table (`/v1/kv/{keyspace}/{key}`).
    pub route: &'static str,
    /// `GET`, `PUT`, `POST`, `DELETE`, `HEAD` or `other`.
    pub method: &'static str,
    /// The answer's HTTP status.
    pub status: u16,
}

/// The region's metrics.
pub struct Metrics {
    registry: std::sync::Mutex<Registry>,
    /// Write latency, request received to answered.
    pub write_seconds: Family<OpLabels, Histogram>,
    /// Read latency.
    pub read_seconds: Family<OpLabels, Histogram>,
    /// Duration of each op-log fdatasync.
    pub fsync_seconds: Histogram,
    /// Ops per group commit.
    pub group_ops: Histogram,
    /// Time to commit a group once durable (state batch, publish, answers).
    pub commit_seconds: Histogram,
    /// Writes to keys owned elsewhere, by what became of them.
    pub ownership_writes: Family<OwnershipLabels, prometheus_client::metrics::counter::Counter>,
    /// When the last backup completed, Unix seconds (0: none since start).
    pub backup_last_success: prometheus_client::metrics::gauge::Gauge,
    /// Backups that failed.
    pub backup_failures: prometheus_client::metrics::counter::Counter,
    /// Archive runs that failed (the log is not trimmed meanwhile).
    pub archive_failures: prometheus_client::metrics::counter::Counter,
    /// Op log bytes on disk not yet archived to the backup target.
    pub archive_lag_bytes: prometheus_client::metrics::gauge::Gauge,
    /// Requests and connections refused by access control and limits.
    pub refused: Family<RefusedLabels, prometheus_client::metrics::counter::Counter>,
    /// Open connections, per listener.
    pub listener_connections: Family<ListenerLabels, prometheus_client::metrics::gauge::Gauge>,
    /// Where a write's time goes, stage by stage (see [`WriteStages`]).
    pub stages: WriteStages,
    /// Answers of the client API by route, method and status.
    pub requests: Family<RequestLabels, prometheus_client::metrics::counter::Counter>,
    /// Handles of the request histograms by (op, write), made once.
    handles: std::sync::RwLock<std::collections::HashMap<(&'static str, bool), Histogram>>,
}

/// The label of a write stage.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct StageLabels {
    /// The stage.
    pub stage: &'static str,
}

/// Where a write's time goes, one histogram per stage of the pipeline, in
/// order (handles made once, so observing takes no label lookup). Per
/// write: `queue`, `stage`, `group_wait`, `wake`; per group: `log_write`,
/// `fsync` (the same figure as `log_fsync_seconds`), `commit`, `publish`,
/// `answer`. Their means add up to most of `api_write_seconds`; the rest is
/// HTTP, routing, access checks and decoding.
#[derive(Clone, Debug)]
pub struct WriteStages {
    /// Sent to the writer until the stager takes it.
    pub queue: Histogram,
    /// Staging one write (validation, stamping, the group's overlay).
    pub stage: Histogram,
    /// Staged until its group is sealed (the previous group's fsync and
    /// commit run meanwhile).
    pub group_wait: Histogram,
    /// Appending a sealed group to the op log (one write).
    pub log_write: Histogram,
    /// The group's fdatasync.
    pub fsync: Histogram,
    /// Committing a durable group (state batch, ledger, checkpoint record).
    pub commit: Histogram,
    /// Publishing it: the version vector watch and the replication feed.
    pub publish: Histogram,
    /// Answering the group's writers (tokens).
    pub answer: Histogram,
    /// Answer sent until the request's task runs again.
    pub wake: Histogram,
}

impl WriteStages {
    fn register(registry: &mut Registry) -> Self {
        let family = Family::<StageLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_001, 2.0, 24))
        });
        registry.register(
            "write_stage_seconds",
            "Where a write's time goes, per stage of the write pipeline",
            family.clone(),
        );
        let h = |stage| family.get_or_create(&StageLabels { stage }).clone();
        Self {
            queue: h("queue"),
            stage: h("stage"),
            group_wait: h("group_wait"),
            log_write: h("log_write"),
            fsync: h("fsync"),
            commit: h("commit"),
            publish: h("publish"),
            answer: h("answer"),
            wake: h("wake"),
        }
    }
}

fn latency_family() -> Family<OpLabels, Histogram> {
    Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.000_05, 2.0, 20)))
}

impl Metrics {
    /// Metrics for `region`, registered and empty.
    pub fn new(region: &RegionId) -> Arc<Self> {
        let mut registry = Registry::with_prefix_and_labels(
            "meridian",
            [(
                std::borrow::Cow::Borrowed("region"),
                std::borrow::Cow::Owned(region.to_string()),
            )]
            .into_iter(),
        );
        let write_seconds = latency_family();
        let read_seconds = latency_family();
        // Exported from the start (empty), as dashboards expect.
        let _ = write_seconds.get_or_create(&OpLabels { op: "put".into() });
        let _ = read_seconds.get_or_create(&OpLabels { op: "get".into() });
        let fsync_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 20));
        let group_ops = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        let commit_seconds = Histogram::new(exponential_buckets(0.000_01, 2.0, 20));
        registry.register(
            "api_write_seconds",
            "Write latency from request to durable answer",
            write_seconds.clone(),
        );
        registry.register("api_read_seconds", "Read latency", read_seconds.clone());
        registry.register(
            "log_fsync_seconds",
            "Duration of each op-log fdatasync",
            fsync_seconds.clone(),
        );
        registry.register(
            "log_group_commit_ops",
            "Ops made durable by one fdatasync",
            group_ops.clone(),
        );
        registry.register(
            "engine_commit_seconds",
            "Time to commit a durable group: state batch, publish, answers",
            commit_seconds.clone(),
        );
        let ownership_writes = Family::default();
        registry.register(
            "ownership_writes",
            "Writes to keys another region owns: forwarded, rejected (421), taken here by fallback, or refused (owner unreachable)",
            ownership_writes.clone(),
        );
        let backup_last_success = prometheus_client::metrics::gauge::Gauge::default();
        registry.register(
            "backup_last_success_timestamp_seconds",
            "When the last backup of this region completed (0: none since start)",
            backup_last_success.clone(),
        );
        let backup_failures = prometheus_client::metrics::counter::Counter::default();
        registry.register(
            "backup_failures",
            "Backups that failed",
            backup_failures.clone(),
        );
        let archive_failures = prometheus_client::metrics::counter::Counter::default();
        registry.register(
            "backup_archive_failures",
            "Op log archive runs that failed (the log is not trimmed until one succeeds)",
            archive_failures.clone(),
        );
        let archive_lag_bytes = prometheus_client::metrics::gauge::Gauge::default();
        registry.register(
            "backup_archive_lag_bytes",
            "Op log bytes on disk not yet archived to the backup target",
            archive_lag_bytes.clone(),
        );
        let refused =
            Family::<RefusedLabels, prometheus_client::metrics::counter::Counter>::default();
        registry.register(
            "security_refused",
            "Requests and connections refused by access control, TLS, replay checks and limits",
            refused.clone(),
        );
        // The client API's refusals start at zero, so the family is exported
        // (and rates are defined) before the first one.
        for reason in ["missing", "invalid", "forbidden"] {
            let _ = refused.get_or_create(&RefusedLabels {
                what: "auth",
                reason,
            });
        }
        let listener_connections =
            Family::<ListenerLabels, prometheus_client::metrics::gauge::Gauge>::default();
        registry.register(
            "listener_connections",
            "Open connections, per listener (at most [limits] max_connections each)",
            listener_connections.clone(),
        );
        let requests =
            Family::<RequestLabels, prometheus_client::metrics::counter::Counter>::default();
        registry.register(
            "api_requests",
            "Answers of the client API's routes by route, method and HTTP status (refused tokens count in security_refused)",
            requests.clone(),
        );
        let started =
            prometheus_client::metrics::gauge::Gauge::<f64, std::sync::atomic::AtomicU64>::default(
            );
        started.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        registry.register(
            "region_start_time_seconds",
            "When this process started serving the region, Unix seconds (a restart changes it)",
            started,
        );
        let stages = WriteStages::register(&mut registry);
        Arc::new(Self {
            registry: std::sync::Mutex::new(registry),
            write_seconds,
            read_seconds,
            fsync_seconds,
            group_ops,
            commit_seconds,
            ownership_writes,
            backup_last_success,
            backup_failures,
            archive_failures,
            archive_lag_bytes,
            refused,
            listener_connections,
            stages,
            requests,
            handles: std::sync::RwLock::new(std::collections::HashMap::new()),
        })
    }

    /// Counts a write to a key owned elsewhere: `rule` is the rule that
    /// matched (`None`: the default), `outcome` what became of it.
    pub fn ownership(&self, keyspace: &str, rule: Option<usize>, outcome: &str) {
        self.ownership_writes
            .get_or_create(&OwnershipLabels {
                keyspace: keyspace.to_string(),
                rule: rule.map_or_else(|| "default".to_string(), |i| i.to_string()),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Counts one answer of the client API.
    pub fn request(&self, route: &'static str, method: &'static str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status,
            })
            .inc();
    }

    /// Records a request's latency under `op`.
    pub fn observe(&self, op: &'static str, write: bool, seconds: f64) {
        let found = self
            .handles
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(op, write))
            .cloned();
        let h = match found {
            Some(h) => h,
            None => {
                let family = if write {
                    &self.write_seconds
                } else {
                    &self.read_seconds
                };
                let h = family.get_or_create(&OpLabels { op: op.into() }).clone();
                self.handles
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert((op, write), h.clone());
                h
            }
        };
        h.observe(seconds);
    }

    /// Adds a collector that reads a subsystem's figures at each scrape:
    /// the engine's, the peer links', the standby's. Each subsystem
    /// attaches its own once it is running, so this module imports none of
    /// them. Attach each collector once: a second copy would repeat its
    /// families and Prometheus would refuse the scrape.
    pub fn attach(&self, collector: Box<dyn Collector>) {
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .register_collector(collector);
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let reg = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
        out
    }
}

pub(crate) fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

pub(crate) fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: i64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Metrics {
    /// Counts one refusal.
    pub fn refuse(&self, what: &'static str, reason: &'static str) {
        self.refused
            .get_or_create(&RefusedLabels { what, reason })
            .inc();
    }

    /// How many refusals of `what` for `reason` so far.
    pub fn refused(&self, what: &'static str, reason: &'static str) -> u64 {
        self.refused
            .get_or_create(&RefusedLabels { what, reason })
            .get()
    }
}

pub(crate) fn per_peer(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    counter_type: bool,
    values: &[(String, i64)],
) -> Result<(), std::fmt::Error> {
    let ty = if counter_type {
        ConstCounter::new(0u64).metric_type()
    } else {
        ConstGauge::new(0i64).metric_type()
    };
    let mut fam = enc.encode_descriptor(name, help, None, ty)?;
    for (peer, v) in values {
        let labels = [("peer", peer.clone())];
        if counter_type {
            ConstCounter::new((*v).max(0) as u64).encode(fam.encode_family(&labels)?)?;
        } else {
            ConstGauge::new(*v).encode(fam.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

/// A per-peer gauge in seconds from figures kept in milliseconds.
pub(crate) fn per_peer_seconds(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    millis: &[(String, i64)],
) -> Result<(), std::fmt::Error> {
    let mut fam = enc.encode_descriptor(name, help, None, ConstGauge::new(0f64).metric_type())?;
    for (peer, ms) in millis {
        let labels = [("peer", peer.clone())];
        ConstGauge::new(*ms as f64 / 1000.0).encode(fam.encode_family(&labels)?)?;
    }
    Ok(())
}
