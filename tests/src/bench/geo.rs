//! `meridian bench geo`: replication across emulated WAN links, on a local
//! three-region cluster of real processes.
//!
//! 1. Local writes at a fixed rate into one region, with 0 ms links and then
//!    with the WAN latency: a write's latency must not depend on the WAN.
//! 2. At the WAN latency: replication lag (ack in one region to visible in
//!    the next) and bytes on the wire per replicated op.
//! 3. A region cut off for a while under the same write rate, then healed:
//!    the backlog it built and the time to converge.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::hist::Percentiles;
use super::load::{self, Dist, LoadSpec, Mix};
use crate::cluster::Cluster;

/// What to run.
#[derive(Clone, Debug)]
pub struct GeoSpec {
    /// The `meridian` binary.
    pub bin: PathBuf,
    /// Where data goes (a real disk).
    pub dir: PathBuf,
    /// One-way WAN latency, ms.
    pub latency_ms: u64,
    /// Writes per second.
    pub rate: f64,
    /// Length of each measured phase.
    pub duration: Duration,
    /// How long the region stays cut off in phase 3 (0: skip).
    pub partition: Duration,
    /// Value size, bytes.
    pub value_size: usize,
}

/// The figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GeoReport {
    /// Local write latency with 0 ms links.
    pub local_at_0: Percentiles,
    /// Local write latency with WAN links.
    pub local_at_wan: Percentiles,
    /// Replication lag at WAN latency (raw: includes the one-way delay).
    pub lag: Percentiles,
    /// The one-way delay subtracted for the "above the wire" figures.
    pub latency_ms: u64,
    /// Bytes on the wire per replicated op, sender to receiver.
    pub bytes_per_op_forward: f64,
    /// Bytes on the wire per replicated op, both directions (acks included).
    pub bytes_per_op_total: f64,
    /// Key plus value bytes of one op.
    pub payload_bytes: u64,
    /// Of the forward bytes: the batch bodies' (the sender's count, before
    /// signing and HTTP/2 framing), per op shipped.
    pub body_bytes_per_op: f64,
    /// Ops per batch shipped from us-east to eu-west.
    pub ops_per_batch: f64,
    /// The wire version the us-east to eu-west session spoke.
    pub wire_version: u64,
    /// Ops ap-south relayed to eu-west per op us-east shipped to it (eu-west
    /// had each from us-east directly: these are copies).
    pub relayed_per_op: f64,
    /// Ops the cut-off region held that the others lacked at the heal.
    pub backlog_ops: u64,
    /// From heal to equal version vectors and digests everywhere, ms.
    pub converge_ms: u64,
    /// From heal to the cut-off region's first op from the others, ms
    /// (reconnect, handshake, one trip over the link).
    pub heal_noticed_ms: u64,
    /// From heal to the cut-off region holding every op of the others, ms.
    pub heal_applied_ms: u64,
    /// Ops the cut-off region took in after the heal.
    pub heal_ops: u64,
    /// How long the region was cut off, s.
    pub partition_s: u64,
}

fn writes(
    urls: Vec<String>,
    spec: &GeoSpec,
    duration: Duration,
    probe: Option<String>,
) -> LoadSpec {
    LoadSpec {
        urls,
        duration,
        concurrency: 512,
        rate: Some(spec.rate),
        value_size: spec.value_size,
        keys: 10_000_000,
        dist: Dist::Uniform,
        mix: Mix {
            put: 1,
            get: 0,
            incr: 0,
            add: 0,
        },
        probe_every: if probe.is_some() { 1 } else { 0 },
        probe_to: probe,
        write_concern: None,
        progress: false,
        failover: false,
    }
}

/// What `from`'s sender to `to` counts: body bytes, batches and ops
/// shipped, and its session's wire version.
async fn shipped(c: &Cluster, from: &str, to: &str) -> Result<(u64, u64, u64, u64), String> {
    let s = c.client(from).status().await.map_err(|e| e.to_string())?;
    let p = s["peers"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["region"] == to))
        .ok_or_else(|| format!("{from} has no link to {to}"))?;
    let n = |k: &str| p[k].as_u64().unwrap_or(0);
    Ok((
        n("bytes_sent"),
        n("batches_sent"),
        n("ops_sent"),
        n("wire_version"),
    ))
}

/// Runs all three phases.
pub async fn run(spec: GeoSpec) -> Result<GeoReport, String> {
    let _ = std::fs::remove_dir_all(&spec.dir);
    std::fs::create_dir_all(&spec.dir).map_err(|e| e.to_string())?;
    let c = Cluster::builder()
        .binary(&spec.bin)
        .dir(&spec.dir)
        .start()
        .await
        .map_err(|e| e.to_string())?;
    let east = c.url("us-east").map_err(|e| e.to_string())?;
    let west = c.url("eu-west").map_err(|e| e.to_string())?;
    let mut r = GeoReport {
        latency_ms: spec.latency_ms,
        // Keys are "bench-" and 8 digits; values value_size bytes.
        payload_bytes: 14 + spec.value_size as u64,
        ..GeoReport::default()
    };

    eprintln!("phase 1a: {} writes/s into us-east, 0 ms links", spec.rate);
    let at0 = load::run(writes(vec![east.clone()], &spec, spec.duration, None)).await?;
    r.local_at_0 = at0.regions[0].write_latency;
    for (a, b) in [
        ("us-east", "eu-west"),
        ("us-east", "ap-south"),
        ("eu-west", "ap-south"),
    ] {
        c.latency(a, b, spec.latency_ms)
            .map_err(|e| e.to_string())?;
    }
    c.wait_converged(Duration::from_secs(60))
        .await
        .map_err(|e| e.to_string())?;

    eprintln!(
        "phase 1b+2: {} writes/s into us-east, {} ms links, each read in eu-west with its token",
        spec.rate, spec.latency_ms
    );
    let before = c.links().stats("us-east", "eu-west").ok_or("no link")?;
    let shipped_before = shipped(&c, "us-east", "eu-west").await?;
    let relayed_before = shipped(&c, "ap-south", "eu-west").await?;
    let wan = load::run(writes(
        vec![east.clone()],
        &spec,
        spec.duration,
        Some(west.clone()),
    ))
    .await?;
    r.local_at_wan = wan.regions[0].write_latency;
    r.lag = wan.lag.unwrap_or_default();
    c.wait_converged(Duration::from_secs(60))
        .await
        .map_err(|e| e.to_string())?;
    let after = c.links().stats("us-east", "eu-west").ok_or("no link")?;
    let shipped_after = shipped(&c, "us-east", "eu-west").await?;
    let relayed_after = shipped(&c, "ap-south", "eu-west").await?;
    let ops = (shipped_after.2 - shipped_before.2).max(1) as f64;
    r.body_bytes_per_op = (shipped_after.0 - shipped_before.0) as f64 / ops;
    r.ops_per_batch = ops / (shipped_after.1 - shipped_before.1).max(1) as f64;
    r.wire_version = shipped_after.3;
    r.relayed_per_op = (relayed_after.2 - relayed_before.2) as f64 / ops;
    // Every write went into us-east and crossed this link once (acks come back on it).
    let replicated = wan.regions[0].ok.max(1) as f64;
    r.bytes_per_op_forward = (after.bytes_forward - before.bytes_forward) as f64 / replicated;
    r.bytes_per_op_total = (after.bytes_forward + after.bytes_reverse
        - before.bytes_forward
        - before.bytes_reverse) as f64
        / replicated;

    if !spec.partition.is_zero() {
        eprintln!(
            "phase 3: us-east cut off for {} s under {} writes/s",
            spec.partition.as_secs(),
            spec.rate
        );
        c.partition_off("us-east").map_err(|e| e.to_string())?;
        let cut = writes(
            vec![east.clone(), west.clone()],
            &spec,
            spec.partition,
            None,
        );
        load::run(cut).await?;
        let s = c
            .client("us-east")
            .status()
            .await
            .map_err(|e| e.to_string())?;
        r.backlog_ops = s["peers"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter_map(|p| p["lag_ops"].as_u64())
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        r.partition_s = spec.partition.as_secs();
        let east_client = c.client("us-east");
        let ops_of = |s: &serde_json::Value| s["ops"].as_u64().unwrap_or(0);
        let before = ops_of(&east_client.status().await.map_err(|e| e.to_string())?);
        let t = Instant::now();
        // Its wall time lines the heal up with the regions' logs (GEO_KEEP).
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        eprintln!("phase 3: healed at {unix_ms} (Unix ms)");
        c.heal();
        // Beside the convergence check: us-east's op count every 10 ms,
        // to split the time into noticing the heal and applying the backlog.
        let done = std::sync::atomic::AtomicBool::new(false);
        let sample = async {
            let mut samples = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(s) = east_client.status().await {
                    samples.push((t.elapsed().as_millis() as u64, ops_of(&s)));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            samples
        };
        let converge = async {
            let r = c.wait_converged(Duration::from_secs(120)).await;
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            r
        };
        let (converged, samples) = tokio::join!(converge, sample);
        converged.map_err(|e| e.to_string())?;
        r.converge_ms = t.elapsed().as_millis() as u64;
        let after = ops_of(&east_client.status().await.map_err(|e| e.to_string())?);
        r.heal_ops = after.saturating_sub(before);
        r.heal_noticed_ms = samples
            .iter()
            .find(|(_, n)| *n > before)
            .map_or(r.converge_ms, |(ms, _)| *ms);
        r.heal_applied_ms = samples
            .iter()
            .find(|(_, n)| *n >= after)
            .map_or(r.converge_ms, |(ms, _)| *ms);
    }
    c.stop().await;
    // GEO_KEEP=1 keeps the data directory, with each region's log.
    if std::env::var_os("GEO_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&spec.dir);
    }
    Ok(r)
}

impl GeoReport {
    /// The report as a table for people.
    pub fn table(&self) -> String {
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let l = self.latency_ms as f64;
        let mut out = String::new();
        out.push_str("| figure | value | target |\n|---|---:|---|\n");
        out.push_str(&format!(
            "| local write p50 / p99, 0 ms links | {:.2} / {:.2} ms | |\n",
            self.local_at_0.p50, self.local_at_0.p99
        ));
        out.push_str(&format!(
            "| local write p50 / p99, {} ms links | {:.2} / {:.2} ms | |\n",
            self.latency_ms, self.local_at_wan.p50, self.local_at_wan.p99
        ));
        out.push_str(&format!(
            "| ratio p50 / p99 | {:.2} / {:.2} | <= 1.2 |\n",
            ratio(self.local_at_wan.p50, self.local_at_0.p50),
            ratio(self.local_at_wan.p99, self.local_at_0.p99)
        ));
        out.push_str(&format!(
            "| replication lag p50 / p99 (ack in us-east to visible in eu-west) | {:.1} / {:.1} ms | |\n",
            self.lag.p50, self.lag.p99
        ));
        out.push_str(&format!(
            "| ... minus the {} ms one-way delay | {:.1} / {:.1} ms | p99 <= 15 ms |\n",
            self.latency_ms,
            self.lag.p50 - l,
            self.lag.p99 - l
        ));
        out.push_str(&format!(
            "| bytes on the wire per replicated op (forward / with acks) | {:.0} / {:.0} (key+value {}: {:.2}x / {:.2}x) | <= 1.3x with acks |\n",
            self.bytes_per_op_forward,
            self.bytes_per_op_total,
            self.payload_bytes,
            self.bytes_per_op_forward / self.payload_bytes as f64,
            self.bytes_per_op_total / self.payload_bytes as f64
        ));
        out.push_str(&format!(
            "| ... of which batch bodies, per op (wire version {}, {:.1} ops per batch) | {:.0} | |\n",
            self.wire_version, self.ops_per_batch, self.body_bytes_per_op
        ));
        out.push_str(&format!(
            "| copies of us-east's ops that ap-south relayed to eu-west, per op (not in the figures above) | {:.2} | |\n",
            self.relayed_per_op
        ));
        if self.partition_s > 0 {
            out.push_str(&format!(
                "| convergence after a {} s partition (backlog {} ops) | {:.2} s | <= 1 s |\n",
                self.partition_s,
                self.backlog_ops,
                self.converge_ms as f64 / 1000.0
            ));
            let applying = self.heal_applied_ms.saturating_sub(self.heal_noticed_ms);
            out.push_str(&format!(
                "| ... heal noticed (first op in us-east) / backlog in (all {} ops) | {} / {} ms | |\n",
                self.heal_ops, self.heal_noticed_ms, self.heal_applied_ms
            ));
            // Sampled every 10 ms: the backlog took at most one sample
            // period more than the samples show, so this is a lower bound.
            out.push_str(&format!(
                "| ... backlog apply rate in us-east (lower bound) | {:.0} ops/s | >= 100,000 |\n",
                self.heal_ops as f64 * 1000.0 / (applying + 10) as f64
            ));
        }
        out
    }
}

/// One write concern's figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ConcernRow {
    /// The concern.
    pub concern: String,
    /// Write latency, ms.
    pub latency: Percentiles,
    /// Writes answered 504 (concern not met in time).
    pub timeouts: u64,
}

/// Write latency under each write concern at WAN latency (closed loop,
/// `concurrency` writers into us-east).
pub async fn concerns(spec: GeoSpec, concurrency: usize) -> Result<Vec<ConcernRow>, String> {
    let _ = std::fs::remove_dir_all(&spec.dir);
    std::fs::create_dir_all(&spec.dir).map_err(|e| e.to_string())?;
    let c = Cluster::builder()
        .binary(&spec.bin)
        .dir(&spec.dir)
        .latency_ms(spec.latency_ms)
        .start()
        .await
        .map_err(|e| e.to_string())?;
    let east = c.url("us-east").map_err(|e| e.to_string())?;
    c.wait_converged(Duration::from_secs(30))
        .await
        .map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for concern in ["local", "one", "majority", "all"] {
        eprintln!(
            "write concern {concern}: {concurrency} writers into us-east, {} ms links",
            spec.latency_ms
        );
        let report = load::run(LoadSpec {
            urls: vec![east.clone()],
            duration: spec.duration,
            concurrency,
            rate: None,
            value_size: spec.value_size,
            keys: 1_000_000,
            dist: Dist::Uniform,
            mix: Mix {
                put: 1,
                get: 0,
                incr: 0,
                add: 0,
            },
            probe_every: 0,
            probe_to: None,
            write_concern: Some(concern.to_string()),
            progress: false,
            failover: false,
        })
        .await?;
        let r = &report.regions[0];
        rows.push(ConcernRow {
            concern: concern.to_string(),
            latency: r.write_latency,
            timeouts: r
                .errors
                .iter()
                .filter(|(k, _)| k.starts_with("504"))
                .map(|(_, v)| *v)
                .sum(),
        });
    }
    c.stop().await;
    let _ = std::fs::remove_dir_all(&spec.dir);
    Ok(rows)
}
