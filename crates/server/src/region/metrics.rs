//! The engine's and the log's figures for a scrape: ops applied, conflicts,
//! refusals, buffers, log and state sizes, all read from what the writer
//! publishes.

use std::sync::Arc;

use meridian_core::{FjallBackend, Reader};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;

use super::status::{LogInfo, STATE_BYTES_AGE};
use crate::metrics::{counter, gauge};

/// Encodes the engine's and the log's figures at each scrape.
pub struct EngineCollector {
    /// The log's sizes.
    pub log: Arc<LogInfo>,
    /// What the writer publishes after each commit, and the state
    /// store's size on disk.
    pub reader: Reader<FjallBackend>,
}

impl std::fmt::Debug for EngineCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EngineCollector")
    }
}

impl Collector for EngineCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let v = self;
        let p = v.reader.published();
        {
            let c = ConstCounter::new(0u64);
            let mut fam = enc.encode_descriptor(
                "engine_ops_applied",
                "Ops applied since start, by origin region",
                None,
                c.metric_type(),
            )?;
            for (origin, n) in &p.stats.applied {
                let labels = [("origin", origin.region.to_string())];
                ConstCounter::new(*n).encode(fam.encode_family(&labels)?)?;
            }
        }
        {
            let c = ConstCounter::new(0u64);
            let mut fam = enc.encode_descriptor(
                "engine_lww_conflicts",
                "Last-writer-wins conflicts resolved since start, by keyspace",
                None,
                c.metric_type(),
            )?;
            for (ks, n) in &p.stats.conflicts {
                let labels = [("keyspace", ks.to_string())];
                ConstCounter::new(*n).encode(fam.encode_family(&labels)?)?;
            }
        }
        {
            let c = ConstCounter::new(0u64);
            let mut fam = enc.encode_descriptor(
                "engine_remote_ops_refused",
                "Remote ops refused, by reason: clock_ahead (HLC too far ahead of local time), causal_buffer_full",
                None,
                c.metric_type(),
            )?;
            for (reason, n) in [
                ("clock_ahead", p.stats.held_for_clock),
                ("causal_buffer_full", p.stats.buffer_overflow),
            ] {
                ConstCounter::new(n).encode(fam.encode_family(&[("reason", reason)])?)?;
            }
        }
        counter(
            &mut enc,
            "engine_tombstones_collected",
            "Stable tombstones removed",
            p.stats.tombstones_collected,
        )?;
        counter(
            &mut enc,
            "engine_siblings_pruned",
            "mv siblings replaced because of the sibling cap",
            p.stats.siblings_pruned,
        )?;
        counter(
            &mut enc,
            "merge_writebacks",
            "Merge write-backs of custom keys and doc merge fields staged by this region",
            p.stats.merges_written,
        )?;
        counter(
            &mut enc,
            "merge_failures",
            "Merge write-backs that kept the newest version because the function failed",
            p.stats.merges_failed,
        )?;
        counter(
            &mut enc,
            "merge_refused_writes",
            "Writes refused because a custom key held its cap of unmerged versions",
            p.stats.merges_pending_refused,
        )?;
        gauge(
            &mut enc,
            "engine_causal_buffered_ops",
            "Remote ops waiting for their causal past",
            p.stats.buffered as i64,
        )?;
        gauge(
            &mut enc,
            "engine_known_ops",
            "Ops in the region's version vector (every op it holds, from every origin)",
            p.vv.total() as i64,
        )?;
        let log = v.log.snapshot();
        gauge(
            &mut enc,
            "log_bytes",
            "Op log size on disk",
            log.bytes as i64,
        )?;
        gauge(
            &mut enc,
            "log_segments",
            "Op log segment files",
            log.segments as i64,
        )?;
        gauge(
            &mut enc,
            "state_bytes",
            "State store size on disk",
            v.reader.disk_bytes_recent(STATE_BYTES_AGE) as i64,
        )?;
        Ok(())
    }
}
