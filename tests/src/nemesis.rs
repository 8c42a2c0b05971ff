//! Nemesis suites: a schedule of faults on a real cluster under the mixed
//! workload, then heal, wait for convergence and run every checker.
//!
//! Each suite is named (`meridian bench nemesis --suite NAME`, or
//! [`Suite::parse`]) and scales with the run's duration: it repeats its
//! fault as often as the duration allows, each fault held for a few seconds
//! (a pause for up to [`Options::pause`]), with a quiet spell between.
//! Faults are drawn from a seeded generator and every one is logged with its
//! time, so a failing run says what happened when.
//!
//! Why past ~400 lines: the fault schedule (each fault's start and heal) and
//! the suites built from it.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::check::{self, Verdict};
use crate::cluster::{Cluster, ClusterError};
use crate::link::LinkSpecPatch;
use crate::workload::{self, History};

/// A named schedule of faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suite {
    /// Five regions split into two sides (2 | 3), again and again.
    PartitionHalves,
    /// Five regions in a ring: each reaches only its two neighbours, so
    /// every write crosses the cluster by relay.
    RingPartition,
    /// SIGKILL a region, restart it a few seconds later.
    KillRestart,
    /// SIGSTOP a region (up to [`Options::pause`], 30 s by default), then
    /// SIGCONT: its clients time out, its peers see it hang, not close.
    Pause,
    /// Restart one region with its wall clock 2 s ahead, then 2 s behind.
    ClockSkew,
    /// Every sender duplicates and delays (reorders) batches; links jitter
    /// and reset connections now and then.
    DupReorder,
    /// All of the above at random on five regions.
    Combined,
    /// Two regions with a standby each: kill -9 a region's leader, its
    /// standby takes over, the old leader restarts and steps down.
    Failover,
}

impl Suite {
    /// Every suite, in the order CI runs them.
    pub const ALL: [Suite; 8] = [
        Suite::PartitionHalves,
        Suite::RingPartition,
        Suite::KillRestart,
        Suite::Pause,
        Suite::ClockSkew,
        Suite::DupReorder,
        Suite::Combined,
        Suite::Failover,
    ];

    /// The suite's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Suite::PartitionHalves => "partition-halves",
            Suite::RingPartition => "ring-partition",
            Suite::KillRestart => "kill-restart",
            Suite::Pause => "pause",
            Suite::ClockSkew => "clock-skew",
            Suite::DupReorder => "dup-reorder",
            Suite::Combined => "combined",
            Suite::Failover => "failover",
        }
    }

    /// The suite named `s`.
    pub fn parse(s: &str) -> Result<Suite, String> {
        Suite::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Suite::ALL.iter().map(|x| x.name()).collect();
                format!("no nemesis suite {s:?}; the suites: {}", names.join(", "))
            })
    }

    fn regions(self) -> Vec<String> {
        let n = match self {
            Suite::PartitionHalves | Suite::RingPartition | Suite::Combined => 5,
            Suite::Failover => 2,
            _ => 3,
        };
        ["us-east", "eu-west", "ap-south", "sa-east", "af-south"][..n]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn faulty_batches(self) -> bool {
        matches!(self, Suite::DupReorder | Suite::Combined)
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How to run a suite.
#[derive(Clone, Debug)]
pub struct Options {
    /// Which.
    pub suite: Suite,
    /// How long faults and load last (heal and checks come after).
    pub duration: Duration,
    /// Mixed writers per region.
    pub writers_per_region: usize,
    /// One-way latency of every link, ms.
    pub latency_ms: u64,
    /// Longest pause (SIGSTOP) of a region.
    pub pause: Duration,
    /// Convergence bound after heal.
    pub converge_within: Duration,
    /// Seed of the fault schedule and of the link emulator.
    pub seed: u64,
    /// The `meridian` binary (default: next to the running executable).
    pub binary: Option<PathBuf>,
    /// Where the regions' data goes (default: a fresh temporary directory,
    /// removed afterwards).
    pub dir: Option<PathBuf>,
}

impl Options {
    /// `suite` for `duration` with the defaults: 3 writers per region,
    /// 20 ms links, pauses up to 30 s, convergence within 60 s, seed 1.
    pub fn new(suite: Suite, duration: Duration) -> Self {
        Self {
            suite,
            duration,
            writers_per_region: 3,
            latency_ms: 20,
            pause: Duration::from_secs(30),
            converge_within: Duration::from_secs(60),
            seed: 1,
            binary: None,
            dir: None,
        }
    }
}

/// What a run did and what the checkers said.
#[derive(Debug)]
pub struct Outcome {
    /// Which suite.
    pub suite: Suite,
    /// Its seed.
    pub seed: u64,
    /// Regions.
    pub regions: Vec<String>,
    /// The faults, with their times since the start.
    pub timeline: Vec<String>,
    /// The operations.
    pub history: History,
    /// The checkers' reports.
    pub verdict: Verdict,
    /// Batches the senders duplicated and delayed on purpose (suites with
    /// batch faults; counted since each region's last start).
    pub batch_faults: Option<(u64, u64)>,
}

impl Outcome {
    /// True when every checker passed.
    pub fn ok(&self) -> bool {
        self.verdict.ok()
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "nemesis {} (seed {}, regions {}): {}",
            self.suite,
            self.seed,
            self.regions.join(" "),
            if self.ok() { "PASS" } else { "FAIL" }
        )?;
        for t in &self.timeline {
            writeln!(f, "  {t}")?;
        }
        writeln!(f, "  ops: {}", check::summary(&self.history))?;
        for line in self.verdict.to_string().lines() {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

/// The schedule's draws, from one seed (fastrand's seeded generator), so a
/// failing schedule replays from the seed it printed.
struct Rng(fastrand::Rng);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(fastrand::Rng::with_seed(seed))
    }

    fn below(&mut self, n: usize) -> usize {
        self.0.usize(..n.max(1))
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.0.u64(lo..=hi))
    }

    fn shuffled(&mut self, items: &[String]) -> Vec<String> {
        let mut v = items.to_vec();
        self.0.shuffle(&mut v);
        v
    }
}

/// The fault kinds a schedule draws from.
#[derive(Clone, Copy, Debug)]
enum Fault {
    Halves,
    Ring,
    Kill,
    Pause,
    Skew,
    Flaky,
    Failover,
}

struct Schedule {
    start: Instant,
    deadline: Instant,
    rng: Rng,
    timeline: Vec<String>,
    paused: Vec<String>,
    killed: Vec<String>,
}

impl Schedule {
    fn log(&mut self, what: String) {
        let line = format!("{:>6.1}s  {what}", self.start.elapsed().as_secs_f64());
        tracing::info!("{line}");
        self.timeline.push(line);
    }

    fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Sleeps a random `lo..=hi` ms, cut short at the deadline.
    async fn hold_for(&mut self, lo: u64, hi: u64) {
        let d = self.rng.millis(lo, hi);
        tokio::time::sleep(d.min(self.left())).await;
    }

    async fn fault(
        &mut self,
        c: &mut Cluster,
        kind: Fault,
        pause: Duration,
    ) -> Result<(), ClusterError> {
        let regions = c.regions.clone();
        match kind {
            Fault::Halves => {
                let order = self.rng.shuffled(&regions);
                let (a, b) = order.split_at(order.len() / 2);
                for x in a {
                    for y in b {
                        c.partition(x, y)?;
                    }
                }
                self.log(format!("partition {} | {}", a.join(" "), b.join(" ")));
                self.hold_for(2_000, 5_000).await;
                c.heal();
                self.log("heal".into());
            }
            Fault::Ring => {
                let order = self.rng.shuffled(&regions);
                let n = order.len();
                let adjacent = |i: usize, j: usize| (i + 1) % n == j || (j + 1) % n == i;
                for i in 0..n {
                    for j in i + 1..n {
                        if !adjacent(i, j) {
                            c.partition(&order[i], &order[j])?;
                        }
                    }
                }
                self.log(format!(
                    "ring {} (each reaches only its neighbours)",
                    order.join(" - ")
                ));
                self.hold_for(2_000, 5_000).await;
                c.heal();
                self.log("heal".into());
            }
            Fault::Kill => {
                let r = regions[self.rng.below(regions.len())].clone();
                c.kill(&r).await?;
                self.killed.push(r.clone());
                self.log(format!("kill -9 {r}"));
                self.hold_for(1_000, 3_000).await;
                c.restart(&r).await?;
                self.killed.retain(|k| k != &r);
                self.log(format!("restart {r}"));
            }
            Fault::Failover => {
                let r = regions[self.rng.below(regions.len())].clone();
                let Some(leader) = c.leader_of(&r).await else {
                    self.log(format!("{r} has no leader to kill: skipped"));
                    return Ok(());
                };
                c.kill(&leader).await?;
                self.killed.push(leader.clone());
                let t = Instant::now();
                self.log(format!("kill -9 {leader}, the leader of {r}"));
                let new = c
                    .wait_leader_other_than(&r, &leader, Duration::from_secs(20))
                    .await?;
                self.log(format!(
                    "{new} leads {r} after {} ms",
                    t.elapsed().as_millis()
                ));
                self.hold_for(1_000, 2_000).await;
                c.restart(&leader).await?;
                self.killed.retain(|k| k != &leader);
                self.log(format!(
                    "restart {leader} (it steps down and follows {new})"
                ));
            }
            Fault::Pause => {
                let r = regions[self.rng.below(regions.len())].clone();
                let d = pause.min(self.left().saturating_sub(Duration::from_secs(1)));
                c.pause(&r)?;
                self.paused.push(r.clone());
                self.log(format!("pause {r} (SIGSTOP) for {:.1} s", d.as_secs_f64()));
                tokio::time::sleep(d).await;
                c.resume(&r)?;
                self.paused.retain(|p| p != &r);
                self.log(format!("resume {r} (SIGCONT)"));
            }
            Fault::Skew => {
                let r = regions[self.rng.below(regions.len())].clone();
                let ms = if self.rng.below(2) == 0 {
                    2_000
                } else {
                    -2_000
                };
                c.set_clock_skew(&r, ms).await?;
                self.log(format!("restart {r} with its clock {ms:+} ms"));
                self.hold_for(3_000, 6_000).await;
                let back = -ms;
                c.set_clock_skew(&r, back).await?;
                self.log(format!("restart {r} with its clock {back:+} ms"));
                self.hold_for(3_000, 6_000).await;
                c.set_clock_skew(&r, 0).await?;
                self.log(format!("restart {r} with its clock right"));
            }
            Fault::Flaky => {
                let patch = LinkSpecPatch {
                    jitter_ms: Some(15),
                    close: Some(0.002),
                    ..LinkSpecPatch::default()
                };
                for l in c.links().links() {
                    c.links().update_spec(&l.from, &l.to, &patch)?;
                }
                self.log("links jitter 15 ms and reset 0.2% of chunks".into());
                self.hold_for(3_000, 6_000).await;
                let calm = LinkSpecPatch {
                    jitter_ms: Some(0),
                    close: Some(0.0),
                    ..LinkSpecPatch::default()
                };
                for l in c.links().links() {
                    c.links().update_spec(&l.from, &l.to, &calm)?;
                }
                self.log("links steady".into());
            }
        }
        Ok(())
    }

    /// Undoes whatever a failed fault step left behind.
    async fn undo(&mut self, c: &mut Cluster) {
        c.heal();
        for r in std::mem::take(&mut self.paused) {
            let _ = c.resume(&r);
        }
        for r in std::mem::take(&mut self.killed) {
            let _ = c.restart(&r).await;
        }
    }
}

/// Runs one suite: start the cluster, load it, apply the schedule, heal,
/// check. The cluster is stopped before this returns.
pub async fn run(opts: &Options) -> Result<Outcome, ClusterError> {
    let suite = opts.suite;
    let mut b = Cluster::builder()
        .regions(suite.regions())
        .latency_ms(opts.latency_ms)
        .seed(opts.seed);
    if let Some(bin) = &opts.binary {
        b = b.binary(bin);
    }
    if let Some(d) = &opts.dir {
        b = b.dir(d);
    }
    if suite == Suite::Failover {
        b = b.standbys(1);
    }
    if suite.faulty_batches() {
        b = b
            .env("MERIDIAN_REPLICATION__FAULT_DUPLICATE", "0.2")
            .env("MERIDIAN_REPLICATION__FAULT_DELAY", "0.2");
    }
    let mut c = b.start().await?;
    let result = drive(&mut c, opts).await;
    c.stop().await;
    result
}

async fn drive(c: &mut Cluster, opts: &Options) -> Result<Outcome, ClusterError> {
    let first = c.regions[0].clone();
    workload::define_keyspaces(&c.client(&first))
        .await
        .map_err(|e| ClusterError::Setup(format!("defining the workload's keyspaces: {e}")))?;
    c.wait_converged(Duration::from_secs(30)).await?;
    let clients: Vec<_> = c.regions.iter().map(|r| (r.clone(), c.client(r))).collect();
    let (stop, history, tasks) = workload::start_writers(&clients, opts.writers_per_region, 3_000);
    let start = Instant::now();
    let mut s = Schedule {
        start,
        deadline: start + opts.duration,
        rng: Rng::new(opts.seed),
        timeline: Vec::new(),
        paused: Vec::new(),
        killed: Vec::new(),
    };
    if opts.suite.faulty_batches() {
        s.log("every sender duplicates 20% and delays 20% of its batches".into());
    }
    let mut step: Result<(), ClusterError> = Ok(());
    // A quiet start, so every suite also measures some healthy traffic.
    s.hold_for(500, 1_500).await;
    while step.is_ok() && s.left() > Duration::from_millis(500) {
        let kind = match opts.suite {
            Suite::PartitionHalves => Fault::Halves,
            Suite::RingPartition => Fault::Ring,
            Suite::KillRestart => Fault::Kill,
            Suite::Pause => Fault::Pause,
            Suite::ClockSkew => Fault::Skew,
            Suite::DupReorder => Fault::Flaky,
            Suite::Failover => Fault::Failover,
            Suite::Combined => [
                Fault::Halves,
                Fault::Ring,
                Fault::Kill,
                Fault::Pause,
                Fault::Skew,
                Fault::Flaky,
            ][s.rng.below(6)],
        };
        // In the combined suite, pauses stay short so other faults get turns.
        let pause = match opts.suite {
            Suite::Combined => opts.pause.min(Duration::from_secs(5)),
            _ => opts.pause,
        };
        step = s.fault(c, kind, pause).await;
        s.hold_for(1_000, 2_000).await;
    }
    s.undo(c).await;
    let h = workload::stop_writers(stop, history, tasks).await;
    step?;
    s.log("load stopped, every fault healed".into());
    let mut batch_faults = None;
    if opts.suite.faulty_batches() {
        let (mut dup, mut delayed) = (0, 0);
        for st in c.statuses().await.values().flatten() {
            for p in st["peers"].as_array().into_iter().flatten() {
                dup += p["batches_duplicated_by_fault"].as_u64().unwrap_or(0);
                delayed += p["batches_delayed_by_fault"].as_u64().unwrap_or(0);
            }
        }
        s.log(format!(
            "senders duplicated {dup} and delayed {delayed} batches"
        ));
        batch_faults = Some((dup, delayed));
    }
    let verdict = check::check_all(c, &h, opts.converge_within).await;
    s.log("checked".into());
    Ok(Outcome {
        suite: opts.suite,
        seed: opts.seed,
        regions: c.regions.clone(),
        timeline: s.timeline,
        history: h,
        verdict,
        batch_faults,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_suite_parses_by_its_name_and_unknown_names_list_them() {
        for s in Suite::ALL {
            assert_eq!(Suite::parse(s.name()), Ok(s));
        }
        let e = Suite::parse("meteor").unwrap_err();
        assert!(
            e.contains("partition-halves") && e.contains("combined"),
            "{e}"
        );
    }

    #[test]
    fn a_shuffle_is_a_permutation_and_the_seed_replays_it() {
        let items: Vec<String> = (0..5).map(|i| i.to_string()).collect();
        let a = Rng::new(7).shuffled(&items);
        let b = Rng::new(7).shuffled(&items);
        assert_eq!(a, b);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, items);
    }
}
