//! `meridian bench standby`: one region, a leader and a standby, on real
//! processes with default settings (2 s failover timeout).
//!
//! 1. Write throughput and latency with `local` and then `standby` write
//!    concern: `writers` closed loops of 100-byte PUTs for `duration` each,
//!    in the same run, so the ratio is what to read.
//! 2. Failover, `runs` times: kill -9 the leader, then PUT at the standby
//!    every 20 ms until one succeeds (a standby passes writes to its leader:
//!    the first success is the first write the new leader took). Failover
//!    time = leader death to that success. The old leader is then started
//!    again; it steps down and follows, and the next run kills the member
//!    that leads now.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use meridian_client::{Client, Options};
use serde::Serialize;
use serde_json::json;

use super::hist::{Percentiles, Samples};
use crate::cluster::Cluster;

/// What to run.
#[derive(Clone, Debug)]
pub struct StandbySpec {
    /// The `meridian` binary.
    pub bin: PathBuf,
    /// Where data goes.
    pub dir: PathBuf,
    /// Closed-loop writers per concern.
    pub writers: usize,
    /// How long each concern is loaded.
    pub duration: Duration,
    /// Failovers measured.
    pub runs: usize,
}

/// One concern's figures.
#[derive(Clone, Debug, Serialize)]
pub struct ConcernFigures {
    /// The write concern.
    pub concern: String,
    /// Acknowledged PUTs per second.
    pub ops_s: f64,
    /// Latency, ms.
    pub latency: Percentiles,
    /// Errors (not acknowledged).
    pub errors: u64,
}

/// What it measured.
#[derive(Clone, Debug, Serialize)]
pub struct StandbyReport {
    /// `local`, then `standby`.
    pub concerns: Vec<ConcernFigures>,
    /// Each failover, ms from kill -9 to the first write the new leader took.
    pub failover_ms: Vec<u64>,
    /// Their median.
    pub failover_median_ms: u64,
}

impl StandbyReport {
    /// A table for people.
    pub fn table(&self) -> String {
        let mut out = String::from("concern   ops/s      p50 ms   p99 ms   errors\n");
        for c in &self.concerns {
            out.push_str(&format!(
                "{:<9} {:>8.0} {:>9.2} {:>8.2} {:>8}\n",
                c.concern, c.ops_s, c.latency.p50, c.latency.p99, c.errors
            ));
        }
        if let [l, s] = &self.concerns[..] {
            out.push_str(&format!(
                "standby / local: throughput {:.2}x, p99 {:.2}x\n",
                s.ops_s / l.ops_s.max(1e-9),
                s.latency.p99 / l.latency.p99.max(1e-9)
            ));
        }
        out.push_str(&format!(
            "failover (kill -9 to first write at the new leader), {} runs: median {} ms; each {:?}\n",
            self.failover_ms.len(),
            self.failover_median_ms,
            self.failover_ms
        ));
        out
    }
}

async fn load(c: &Client, concern: &str, writers: usize, d: Duration) -> ConcernFigures {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (c, stop, concern) = (c.clone(), stop.clone(), concern.to_string());
        tasks.push(tokio::spawn(async move {
            let opts = Options {
                write_concern: Some(concern.clone()),
                ..Options::default()
            };
            let value = json!("x".repeat(100));
            let (mut s, mut errors, mut i) = (Samples::default(), 0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let key = format!("{concern}-{w}-{i}");
                i += 1;
                match c.put_with("default", &key, &value, &opts).await {
                    Ok(_) => s.record(t.elapsed().as_micros() as u64),
                    Err(_) => errors += 1,
                }
            }
            (s, errors)
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(d).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Samples::default();
    let mut errors = 0;
    for t in tasks {
        if let Ok((s, e)) = t.await {
            all.extend(&s);
            errors += e;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    ConcernFigures {
        concern: concern.to_string(),
        ops_s: all.len() as f64 / secs,
        latency: all.percentiles(),
        errors,
    }
}

/// Waits until `leader` has a live standby that holds everything it has.
async fn standby_caught_up(c: &Client, within: Duration) -> Result<(), String> {
    let t = Instant::now();
    loop {
        if let Ok(s) = c.status().await {
            let f = &s["standby"]["followers"];
            let ok = f.as_array().is_some_and(|fs| {
                fs.iter()
                    .any(|f| f["live"] == json!(true) && f["lag_ops"] == json!(0))
            });
            if ok {
                return Ok(());
            }
        }
        if t.elapsed() > within {
            return Err(format!("no caught-up standby after {} s", within.as_secs()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the benchmark on a fresh cluster under `spec.dir`.
pub async fn run(spec: &StandbySpec) -> Result<StandbyReport, String> {
    let _ = std::fs::remove_dir_all(&spec.dir);
    let mut c = Cluster::builder()
        .regions(["eu-west"])
        .standbys(1)
        .binary(&spec.bin)
        .dir(&spec.dir)
        .start()
        .await
        .map_err(|e| e.to_string())?;
    let result = measure(&mut c, spec).await;
    c.stop().await;
    result
}

async fn measure(c: &mut Cluster, spec: &StandbySpec) -> Result<StandbyReport, String> {
    let members = ["eu-west".to_string(), "eu-west-s1".to_string()];
    standby_caught_up(&c.member_client(&members[0]), Duration::from_secs(30)).await?;
    let leader = c.member_client(&members[0]);
    let mut concerns = Vec::new();
    for concern in ["local", "standby"] {
        concerns.push(load(&leader, concern, spec.writers, spec.duration).await);
    }
    let mut failover_ms = Vec::new();
    let mut leading = 0;
    for _ in 0..spec.runs {
        let (old, next) = (&members[leading], &members[1 - leading]);
        standby_caught_up(&c.member_client(old), Duration::from_secs(60)).await?;
        let to = c.member_client(next);
        let quick = Options {
            timeout_ms: Some(1_000),
            ..Options::default()
        };
        c.kill(old).await.map_err(|e| e.to_string())?;
        let t = Instant::now();
        loop {
            if to
                .put_with(
                    "default",
                    "failover-probe",
                    &json!(failover_ms.len()),
                    &quick,
                )
                .await
                .is_ok()
            {
                break;
            }
            if t.elapsed() > Duration::from_secs(60) {
                return Err(format!("{next} took no write within 60 s of {old}'s kill"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        failover_ms.push(t.elapsed().as_millis() as u64);
        c.restart(old).await.map_err(|e| e.to_string())?;
        leading = 1 - leading;
    }
    let mut sorted = failover_ms.clone();
    sorted.sort_unstable();
    let failover_median_ms = sorted.get(sorted.len() / 2).copied().unwrap_or(0);
    Ok(StandbyReport {
        concerns,
        failover_ms,
        failover_median_ms,
    })
}
