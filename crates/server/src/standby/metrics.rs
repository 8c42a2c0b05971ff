//! Standby metrics: this member's role and epoch, each follower's lag (on
//! a leader), staleness (on a follower), and what the in-region write
//! concerns did.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;

use super::Standby;
use crate::metrics::{counter, gauge};
use crate::region::feed::Feed;

/// Encodes the standby metrics at each scrape.
pub struct StandbyCollector {
    /// The standby state.
    pub standby: Arc<Standby>,
    /// The writer's feed, for the followers' lag figures.
    pub feed: Option<Arc<Feed>>,
}

impl std::fmt::Debug for StandbyCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StandbyCollector")
    }
}

fn per_follower(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(String, f64)],
) -> Result<(), std::fmt::Error> {
    let ty = ConstGauge::new(0f64).metric_type();
    let mut fam = enc.encode_descriptor(name, help, None, ty)?;
    for (f, v) in values {
        let labels = [("follower", f.clone())];
        ConstGauge::new(*v).encode(fam.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for StandbyCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.standby;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        gauge(
            &mut enc,
            "standby_leader",
            "1 while this member leads its region, 0 on a standby",
            i64::from(s.leading()),
        )?;
        gauge(
            &mut enc,
            "standby_epoch",
            "The region epoch this member knows (a leader's own)",
            s.epoch() as i64,
        )?;
        if let Some(ms) = s.staleness_ms(now) {
            let g = ConstGauge::new(ms as f64 / 1000.0);
            g.encode(enc.encode_descriptor(
                "standby_staleness_seconds",
                "How far behind its leader a standby's reads may be (0 on the leader)",
                None,
                g.metric_type(),
            )?)?;
        }
        let ours = s.followers_vv();
        let lags = s.followers.lags(&ours, self.feed.as_deref(), now);
        let name = |r: &meridian_crdt::ReplicaId| r.incarnation.to_string();
        per_follower(
            &mut enc,
            "standby_lag_ops",
            "Ops the leader has that the follower has not acknowledged",
            &lags
                .iter()
                .map(|l| (name(&l.0), l.1 as f64))
                .collect::<Vec<_>>(),
        )?;
        per_follower(
            &mut enc,
            "standby_lag_bytes",
            "Encoded bytes of the ops the follower lacks (those in the leader's in-memory tail)",
            &lags
                .iter()
                .map(|l| (name(&l.0), l.2 as f64))
                .collect::<Vec<_>>(),
        )?;
        per_follower(
            &mut enc,
            "standby_lag_seconds",
            "Age of the oldest op the follower has not acknowledged",
            &lags
                .iter()
                .map(|l| (name(&l.0), l.3 as f64 / 1000.0))
                .collect::<Vec<_>>(),
        )?;
        gauge(
            &mut enc,
            "standby_followers_live",
            "Followers heard from in the last 10 s",
            lags.iter().filter(|l| l.4).count() as i64,
        )?;
        counter(
            &mut enc,
            "standby_concern_downgrades",
            "Writes whose in-region concern was not met in time and that the keyspace let succeed as the leader alone",
            s.counters.downgrades.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "standby_concern_timeouts",
            "Writes answered 504 because the in-region concern was not met in time",
            s.counters.timeouts.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "standby_forwarded_writes",
            "Writes a standby passed to its leader",
            s.counters.forwarded.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "standby_stale_reads_refused",
            "Reads a standby refused for being staler than meridian-max-staleness-ms",
            s.counters.too_stale.load(Relaxed),
        )?;
        Ok(())
    }
}
