//! `meridian bench failover`: an application session that prefers us-east,
//! on a local three-region cluster of real processes, while us-east is
//! killed (`kill -9`) and later restarted, or paused (`SIGSTOP`) and
//! resumed.
//!
//! One loop, through one [`Session`] over a client of all three regions
//! (us-east first), with the write concern given (default `majority`, so
//! what us-east acknowledged is elsewhere too), writes a new key `w/N`,
//! overwrites one key `cur` with N, reads `cur` back and reads the
//! previous iteration's key. It measures:
//!
//! - the failover window: the last success at us-east before the kill to
//!   the first success at another region;
//! - the return: us-east answering health checks again to the first
//!   success at us-east;
//! - errors the loop saw, inside the window and outside it;
//! - read-your-writes violations: a read of `cur` that does not show the
//!   session's last write, or of the previous key that does not show it
//!   (that read is the first one in a new region after a switch);
//! - after the cluster converges, every acknowledged write read back in
//!   every region (missing ones are lost writes), and `cur` holding the
//!   last value the session wrote in every region (the loop stops writing
//!   `cur` when the fault ends; an older value means a copy of a write the
//!   client sent again was taken late and undid later writes).
//!
//! Why past ~400 lines: one benchmark: the session's loop, the faults and the
//! report.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use meridian_client::{Client, Session};
use serde::Serialize;
use serde_json::{Value, json};

use crate::cluster::Cluster;

/// The keyspace the loop writes.
const KEYSPACE: &str = "failover";

/// What to run.
#[derive(Clone, Debug)]
pub struct FailoverSpec {
    /// The `meridian` binary.
    pub bin: PathBuf,
    /// Where data goes (a real disk).
    pub dir: PathBuf,
    /// One-way latency of every link, ms.
    pub latency_ms: u64,
    /// Write concern of the loop's writes.
    pub write_concern: String,
    /// Loop time before the kill.
    pub warmup: Duration,
    /// How long us-east stays dead.
    pub down: Duration,
    /// Runs (a new cluster each).
    pub runs: usize,
    /// What happens to us-east.
    pub fault: Fault,
    /// The client's per-region timeout.
    pub timeout: Duration,
}

/// What happens to us-east.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9`, then a restart: connections are refused meanwhile.
    Kill,
    /// `SIGSTOP`, then `SIGCONT`: connections are accepted and never
    /// answered, so only the client's timeout notices.
    Pause,
}

impl std::str::FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "kill" => Ok(Fault::Kill),
            "pause" => Ok(Fault::Pause),
            other => Err(format!("unknown fault {other:?}: kill or pause")),
        }
    }
}

/// One run's figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FailoverRun {
    /// Last success at us-east before the kill to the first success
    /// elsewhere, ms.
    pub window_ms: f64,
    /// us-east healthy again to the loop's first success there, ms (`None`:
    /// it never came back within 60 s).
    pub return_ms: Option<f64>,
    /// Longest time between two successes in the whole run, ms.
    pub longest_gap_ms: f64,
    /// Calls that succeeded.
    pub ok: u64,
    /// Calls that failed, by kind.
    pub errors: BTreeMap<String, u64>,
    /// Failed calls outside the failover window.
    pub errors_outside_window: u64,
    /// Reads of the key just written that did not show the write.
    pub ryw_violations: u64,
    /// Successes per answering region.
    pub served: BTreeMap<String, u64>,
    /// Writes acknowledged.
    pub acked: u64,
    /// Acknowledged writes missing in some region after convergence.
    pub missing: u64,
    /// Regions where `cur` did not end at the session's last write.
    pub cur_wrong: u64,
}

/// All runs.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FailoverReport {
    /// Each run.
    pub runs: Vec<FailoverRun>,
    /// Median failover window, ms.
    pub window_ms_median: f64,
    /// Median return, ms.
    pub return_ms_median: Option<f64>,
}

/// One call of the loop, as the application saw it.
struct Event {
    at: Instant,
    ok: bool,
    /// Which region answered (its name), when it succeeded.
    region: Option<String>,
    error: Option<String>,
}

/// Runs `spec.runs` times and reports each run and the medians.
pub async fn run(spec: &FailoverSpec) -> Result<FailoverReport, String> {
    let mut report = FailoverReport::default();
    for i in 0..spec.runs.max(1) {
        eprintln!(
            "run {}: us-east {} after {:?}",
            i + 1,
            if spec.fault == Fault::Kill {
                "killed"
            } else {
                "paused"
            },
            spec.warmup
        );
        let dir = spec.dir.join(format!("run-{i}"));
        report.runs.push(run_once(spec, &dir).await?);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    report.window_ms_median =
        median(report.runs.iter().map(|r| r.window_ms).collect()).unwrap_or(0.0);
    report.return_ms_median = median(report.runs.iter().filter_map(|r| r.return_ms).collect());
    Ok(report)
}

/// One cluster, one kill, one restart.
pub async fn run_once(spec: &FailoverSpec, dir: &std::path::Path) -> Result<FailoverRun, String> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let err = |e: crate::cluster::ClusterError| e.to_string();
    let mut c = Cluster::builder()
        .binary(&spec.bin)
        .dir(dir)
        .latency_ms(spec.latency_ms)
        .start()
        .await
        .map_err(err)?;
    let names = ["us-east", "eu-west", "ap-south"];
    let mut urls = Vec::new();
    for n in names {
        urls.push(c.url(n).map_err(err)?);
    }
    let region_of: BTreeMap<String, String> = urls
        .iter()
        .cloned()
        .zip(names.iter().map(|s| s.to_string()))
        .collect();
    let client = Client::builder()
        .regions(urls.clone())
        .timeout(spec.timeout)
        .build()
        .map_err(|e| e.to_string())?;
    client
        .define_keyspace(KEYSPACE, &json!({"policy": "lww"}))
        .await
        .map_err(|e| e.to_string())?;
    c.wait_converged(Duration::from_secs(30))
        .await
        .map_err(err)?;
    let session = Arc::new(
        Session::new(client)
            .with_wait_ms(2_000)
            .with_write_concern(&spec.write_concern),
    );

    let stop = Arc::new(AtomicBool::new(false));
    let freeze = Arc::new(AtomicBool::new(false));
    let app = tokio::spawn(app_loop(
        session.clone(),
        region_of,
        stop.clone(),
        freeze.clone(),
    ));

    tokio::time::sleep(spec.warmup).await;
    let killed = Instant::now();
    match spec.fault {
        Fault::Kill => c.kill("us-east").await.map_err(err)?,
        Fault::Pause => c.pause("us-east").map_err(err)?,
    }
    tokio::time::sleep(spec.down).await;
    // `cur` stays as it is from here: a late copy that lands when us-east
    // comes back would show in the final check instead of being
    // overwritten by the next iteration.
    freeze.store(true, Ordering::SeqCst);
    match spec.fault {
        Fault::Kill => c.restart("us-east").await.map_err(err)?,
        Fault::Pause => c.resume("us-east").map_err(err)?,
    }
    let back = Instant::now();
    // Until the loop is served by us-east again (or 60 s), then a little more.
    let deadline = back + Duration::from_secs(60);
    while Instant::now() < deadline && !returned(&session, &urls[0]) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    let out = app.await.map_err(|e| e.to_string())?;
    let acked = &out.acked;

    let mut run = summarize(&out.events, killed, back);
    run.ryw_violations = out.ryw;
    run.acked = acked.len() as u64;

    c.wait_converged(Duration::from_secs(60))
        .await
        .map_err(err)?;
    for n in names {
        let rows = c
            .client(n)
            .dump(KEYSPACE)
            .await
            .map_err(|e| e.to_string())?;
        let have: BTreeMap<&str, &Value> = rows
            .iter()
            .filter_map(|r| Some((r.get("key")?.as_str()?, r.get("value")?)))
            .collect();
        run.missing += acked
            .iter()
            .filter(|(k, v)| have.get(k.as_str()) != Some(&&json!(v)))
            .count() as u64;
        let cur = have.get("cur").and_then(|v| v.as_i64());
        if !cur.is_some_and(|v| out.cur_may_be.contains(&v)) {
            eprintln!("{n}: cur is {cur:?}, expected one of {:?}", out.cur_may_be);
            run.cur_wrong += 1;
        }
    }
    c.stop().await;
    Ok(run)
}

/// Whether the session's client is back at its preferred region: it is up
/// with no failure since its last success (the kill made it fail, so this
/// holds only once a call succeeded there again).
fn returned(session: &Session, preferred: &str) -> bool {
    let h = session.client().regions();
    h.first()
        .is_some_and(|r| r.url == preferred && r.up && r.failures == 0)
}

/// What the loop saw.
struct LoopOut {
    events: Vec<Event>,
    /// Acknowledged `w/N` writes.
    acked: Vec<(String, i64)>,
    ryw: u64,
    /// The values `cur` may end at: the last acknowledged write of it and
    /// any whose outcome was unknown after it.
    cur_may_be: Vec<i64>,
}

fn event(served: Result<Option<String>, String>, region_of: &BTreeMap<String, String>) -> Event {
    let (ok, region, error) = match served {
        Ok(url) => (
            true,
            url.map(|u| region_of.get(&u).cloned().unwrap_or(u)),
            None,
        ),
        Err(e) => (false, None, Some(e)),
    };
    Event {
        at: Instant::now(),
        ok,
        region,
        error,
    }
}

/// One iteration per N, until told to stop: `w/N` = N, `cur` = N, read
/// `cur`, read `w/(N-1)`.
async fn app_loop(
    session: Arc<Session>,
    region_of: BTreeMap<String, String>,
    stop: Arc<AtomicBool>,
    freeze: Arc<AtomicBool>,
) -> LoopOut {
    let mut out = LoopOut {
        events: Vec::new(),
        acked: Vec::new(),
        ryw: 0,
        cur_may_be: Vec::new(),
    };
    let mut i: i64 = 0;
    let mut prev_acked = false;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let key = format!("w/{i:08}");
        let w = session.put(KEYSPACE, &key, &json!(i)).await;
        let acked_now = w.is_ok();
        if acked_now {
            out.acked.push((key.clone(), i));
        }
        out.events.push(event(
            w.map(|w| Some(w.served_by)).map_err(|e| e.kind()),
            &region_of,
        ));
        let frozen = freeze.load(Ordering::SeqCst);
        let value = json!(i);
        match (!frozen).then(|| session.put(KEYSPACE, "cur", &value)) {
            None => {}
            Some(put) => match put.await {
                Ok(w) => {
                    out.cur_may_be = vec![i];
                    out.events.push(event(Ok(Some(w.served_by)), &region_of));
                }
                Err(e) => {
                    if e.is_indeterminate() {
                        out.cur_may_be.push(i);
                    }
                    out.events.push(event(Err(e.kind()), &region_of));
                }
            },
        }
        if !frozen && out.cur_may_be.last() == Some(&i) {
            match session.get(KEYSPACE, "cur").await {
                Ok(entry) => {
                    let seen = entry
                        .as_ref()
                        .and_then(|e| e.value())
                        .and_then(|v| v.as_i64());
                    // The session's last write, or (after an unknown
                    // outcome) an earlier one that was taken after all.
                    if !seen.is_some_and(|v| out.cur_may_be.contains(&v)) {
                        out.ryw += 1;
                    }
                    out.events
                        .push(event(Ok(entry.map(|e| e.served_by)), &region_of));
                }
                Err(e) => out.events.push(event(Err(e.kind()), &region_of)),
            }
        }
        if prev_acked {
            let prev = format!("w/{:08}", i - 1);
            match session.get(KEYSPACE, &prev).await {
                Ok(entry) => {
                    if entry.as_ref().and_then(|e| e.value()) != Some(&json!(i - 1)) {
                        out.ryw += 1;
                    }
                    out.events
                        .push(event(Ok(entry.map(|e| e.served_by)), &region_of));
                }
                Err(e) => out.events.push(event(Err(e.kind()), &region_of)),
            }
        }
        prev_acked = acked_now;
    }
    out
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summarize(events: &[Event], killed: Instant, back: Instant) -> FailoverRun {
    let mut run = FailoverRun::default();
    let east = Some("us-east".to_string());
    let last_east = events
        .iter()
        .filter(|e| e.ok && e.at <= killed && e.region == east)
        .map(|e| e.at)
        .max();
    let first_elsewhere = events
        .iter()
        .filter(|e| e.ok && e.at > killed && e.region.is_some() && e.region != east)
        .map(|e| e.at)
        .min();
    if let (Some(a), Some(b)) = (last_east, first_elsewhere) {
        run.window_ms = ms(b.duration_since(a));
    }
    run.return_ms = events
        .iter()
        .filter(|e| e.ok && e.at > back && e.region == east)
        .map(|e| ms(e.at.duration_since(back)))
        .next();
    let mut prev: Option<Instant> = None;
    for e in events {
        if e.ok {
            run.ok += 1;
            if let Some(r) = &e.region {
                *run.served.entry(r.clone()).or_default() += 1;
            }
            if let Some(p) = prev {
                run.longest_gap_ms = run.longest_gap_ms.max(ms(e.at.duration_since(p)));
            }
            prev = Some(e.at);
        } else {
            *run.errors
                .entry(e.error.clone().unwrap_or_default())
                .or_default() += 1;
            let in_window = e.at >= killed && first_elsewhere.is_none_or(|b| e.at <= b);
            if !in_window {
                run.errors_outside_window += 1;
            }
        }
    }
    run
}

impl FailoverReport {
    /// The report as a table for people.
    pub fn table(&self) -> String {
        let mut out = String::from(
            "| run | failover window ms | return ms | longest gap ms | ok calls | errors (outside window) | read-your-writes violations | acked writes | missing | `cur` wrong |\n|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|\n",
        );
        for (i, r) in self.runs.iter().enumerate() {
            let errors = if r.errors.is_empty() {
                "none".to_string()
            } else {
                r.errors
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            out.push_str(&format!(
                "| {} | {:.1} | {} | {:.1} | {} | {} ({}) | {} | {} | {} | {} |\n",
                i + 1,
                r.window_ms,
                r.return_ms.map_or("never".into(), |v| format!("{v:.0}")),
                r.longest_gap_ms,
                r.ok,
                errors,
                r.errors_outside_window,
                r.ryw_violations,
                r.acked,
                r.missing,
                r.cur_wrong
            ));
        }
        out.push_str(&format!(
            "\nmedian failover window: {:.1} ms; median return to us-east: {}\n",
            self.window_ms_median,
            self.return_ms_median
                .map_or("never".into(), |v| format!("{v:.0} ms"))
        ));
        out
    }
}
