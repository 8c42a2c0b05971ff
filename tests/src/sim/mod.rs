//! Deterministic simulation of whole clusters in one thread.
//!
//! Real engines ([`meridian_core::Engine`] on the in-memory backend), the
//! real per-peer shipping state machine and the real wire format, driven by
//! a seeded scheduler over a simulated network: random partitions, delays,
//! duplicated and reordered batches, lost messages, crashes with restarts
//! (state since the last checkpoint lost, the op log kept), clock skew, and
//! log retention that forces state transfers. After a heal the cluster must
//! reach quiescence with equal digests, every acknowledged write present,
//! counters exact and sets as their add-wins semantics say; and owned keys,
//! handed between regions at random, never written by two regions in one
//! epoch nor concurrently.
//!
//! The same seed always replays the same run.
//!
//! Why past ~400 lines: the simulator's step loop, settling and the checks
//! after it, read together with `region.rs`.

mod model;
mod net;
mod reads;
mod region;

use std::collections::BTreeSet;
use std::fmt::Write as _;

pub use model::Model;
use net::{Msg, Net};
use region::SimRegion;

/// The run's only source of randomness: fastrand's generator from the
/// run's seed, so a failing seed replays exactly.
#[derive(Clone, Debug)]
pub struct Rng(fastrand::Rng);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(fastrand::Rng::with_seed(seed))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.u64(..)
    }

    /// Uniform in `0..n` (`n > 0`; 0 counts as 1).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0.u64(..n.max(1))
    }

    /// True with probability `p` percent.
    pub fn chance(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

/// Shape of a run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed.
    pub seed: u64,
    /// Regions (3 to 5).
    pub regions: usize,
    /// Steps of faulty operation before the heal.
    pub steps: usize,
    /// Largest clock skew of a region, ms (either way).
    pub max_skew_ms: i64,
    /// Steps that are owned writes (97 in 100) or handoffs instead
    /// (percent): 0 keeps
    /// the standard mix (a few percent).
    pub ownership_share: u64,
}

impl SimConfig {
    /// The standard run for a seed: 3 to 5 regions, a few hundred steps.
    pub fn for_seed(seed: u64) -> Self {
        let mut r = Rng::new(seed ^ 0x51_4d);
        Self {
            seed,
            regions: 3 + r.below(3) as usize,
            steps: 300 + r.below(200) as usize,
            max_skew_ms: 2_000,
            ownership_share: 0,
        }
    }

    /// A run for `seed` where `share` percent of the steps are writes to
    /// owned keys (97 in 100) and handoffs of their ranges.
    pub fn ownership_heavy(seed: u64, share: u64) -> Self {
        Self {
            ownership_share: share.min(90),
            ..Self::for_seed(seed)
        }
    }
}

/// What a finished run saw.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    /// Client writes acknowledged.
    pub acked: u64,
    /// Writes whose outcome the client could not know (crash after the log).
    pub indeterminate: u64,
    /// Batches delivered (duplicates included).
    pub batches: u64,
    /// Batches duplicated by the network.
    pub duplicated: u64,
    /// Messages lost (partitions, random loss, crashed receivers).
    pub lost: u64,
    /// Crashes.
    pub crashes: u64,
    /// State transfers completed.
    pub transfers: u64,
    /// Ops refused for being too far in the future.
    pub held: u64,
    /// Steps to quiescence after the heal.
    pub settle_steps: u64,
    /// Stable tombstones collected.
    pub collected: u64,
    /// Versions of custom keys acknowledged.
    pub custom_acked: u64,
    /// Merge write-backs staged (since each region's last start).
    pub merges_written: u64,
    /// Handoffs of owned ranges asked of the steward.
    pub handoffs: u64,
    /// Durable writes to owned keys.
    pub owned_writes: u64,
    /// Ops logged a second time after a crash orphaned their first record
    /// (see `SimRegion::check_log_dots_are_unique`).
    pub relogged: u64,
}

/// Why a run failed: what was wrong, and how to replay it.
#[derive(Debug)]
pub struct SimFailure {
    /// The seed.
    pub seed: u64,
    /// What was wrong.
    pub reason: String,
}

impl std::fmt::Display for SimFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "simulation seed {} failed: {}\n  replay: SIM_SEED={} cargo test -p meridian-harness --test sim -- --ignored replay --nocapture",
            self.seed, self.reason, self.seed
        )
    }
}

struct Sim {
    rng: Rng,
    now: u64,
    regions: Vec<SimRegion>,
    net: Net,
    model: Model,
    partitions: BTreeSet<(usize, usize)>,
    report: SimReport,
    trace: Vec<String>,
    /// The region that changes ownership maps.
    steward: usize,
    /// See [`SimConfig::ownership_share`].
    ownership_share: u64,
}

/// Runs one seeded simulation to quiescence and checks it.
pub fn run(cfg: SimConfig) -> Result<SimReport, SimFailure> {
    let mut sim = Sim::new(cfg.clone());
    let fail = |reason: String, sim: &Sim| {
        let mut r = reason;
        if std::env::var_os("SIM_TRACE").is_some() {
            let _ = write!(r, "\n  last events:\n    {}", sim.trace.join("\n    "));
        }
        SimFailure {
            seed: cfg.seed,
            reason: r,
        }
    };
    for _ in 0..cfg.steps {
        if let Err(e) = sim.step() {
            return Err(fail(e, &sim));
        }
    }
    if let Err(e) = sim.settle() {
        return Err(fail(e, &sim));
    }
    if let Err(e) = sim.check() {
        return Err(fail(e, &sim));
    }
    Ok(sim.report)
}

impl Sim {
    fn new(cfg: SimConfig) -> Self {
        let mut rng = Rng::new(cfg.seed);
        let names = ["us-east", "eu-west", "ap-south", "sa-east", "af-south"];
        // Clocks disagree by up to 100 ms; in a third of the runs one region
        // is off by up to max_skew_ms (beyond the 500 ms bound: its ops are
        // held back until its clock is fixed at the heal).
        let skewed = if rng.chance(33) {
            rng.below(cfg.regions as u64) as usize
        } else {
            usize::MAX
        };
        let regions: Vec<SimRegion> = (0..cfg.regions)
            .map(|i| {
                let skew = if i == skewed {
                    rng.below(cfg.max_skew_ms as u64 * 2 + 1) as i64 - cfg.max_skew_ms
                } else {
                    rng.below(201) as i64 - 100
                };
                SimRegion::new(&names[..cfg.regions], i, skew)
            })
            .collect();
        let mut sim = Self {
            rng,
            now: 1_800_000_000_000,
            regions,
            net: Net::default(),
            model: Model::default(),
            partitions: BTreeSet::new(),
            report: SimReport::default(),
            trace: Vec::new(),
            steward: 0,
            ownership_share: cfg.ownership_share,
        };
        // Keyspaces are created in one region and replicate like data.
        let now = sim.now;
        sim.regions[0].define_keyspaces(now);
        let steward = SimRegion::steward_index(&names[..cfg.regions]);
        sim.regions[steward].define_owned(now);
        sim.steward = steward;
        if cfg.ownership_share > 0 {
            // Ownership-heavy runs: the definitions and the map reach
            // every region before the faults start.
            for from in [0, steward] {
                for to in 0..cfg.regions {
                    if to != from {
                        let _ = sim.ship(from, to);
                    }
                }
            }
            while let Some((from, to, msg)) = sim.net.take_any() {
                let _ = sim.deliver(from, to, msg, false);
            }
        }
        sim
    }

    fn note(&mut self, event: String) {
        self.trace.push(event);
        if self.trace.len() > 60 {
            self.trace.remove(0);
        }
    }

    fn cut(&self, a: usize, b: usize) -> bool {
        self.partitions.contains(&(a.min(b), a.max(b)))
    }

    fn step(&mut self) -> Result<(), String> {
        self.now += 1 + self.rng.below(20);
        let n = self.regions.len();
        if self.ownership_share > 0 && self.rng.below(100) < self.ownership_share {
            return if self.rng.chance(97) {
                self.owned_write_step()
            } else {
                self.handoff_step()
            };
        }
        match self.rng.below(100) {
            0..=39 => {
                let r = self.rng.below(n as u64) as usize;
                if self.regions[r].up {
                    let now = self.now;
                    let ev = self.regions[r].client_write(
                        now,
                        &mut self.rng,
                        &mut self.model,
                        &mut self.report,
                    )?;
                    self.note(format!("write at {}: {ev}", self.regions[r].name));
                }
            }
            40..=64 => {
                let (a, b) = (
                    self.rng.below(n as u64) as usize,
                    self.rng.below(n as u64) as usize,
                );
                if a != b {
                    self.ship(a, b)?;
                }
            }
            65..=84 => self.deliver_some()?,
            85..=88 => {
                let (a, b) = (
                    self.rng.below(n as u64) as usize,
                    self.rng.below(n as u64) as usize,
                );
                if a != b {
                    let key = (a.min(b), a.max(b));
                    if !self.partitions.remove(&key) {
                        self.partitions.insert(key);
                    }
                    self.note(format!("toggle partition {a}-{b}"));
                }
            }
            89..=90 => {
                let r = self.rng.below(n as u64) as usize;
                if self.regions[r].up {
                    self.regions[r].crash();
                    self.report.crashes += 1;
                    self.note(format!("crash {}", self.regions[r].name));
                } else {
                    self.regions[r].restart()?;
                    self.note(format!("restart {}", self.regions[r].name));
                }
            }
            91..=92 => {
                let r = self.rng.below(n as u64) as usize;
                if self.regions[r].up {
                    let now = self.now;
                    self.regions[r].checkpoint_and_trim(now, &mut self.rng)?;
                }
            }
            93..=94 => {
                let r = self.rng.below(n as u64) as usize;
                if self.regions[r].up {
                    let collected = self.regions[r].collect_tombstones()?;
                    self.report.collected += collected;
                }
            }
            95..=96 => self.owned_write_step()?,
            97 => self.handoff_step()?,
            _ => {
                // Timeouts: a sender gives up on what it had in flight.
                let r = self.rng.below(n as u64) as usize;
                self.regions[r].reset_peers();
            }
        }
        Ok(())
    }

    fn owned_write_step(&mut self) -> Result<(), String> {
        let n = self.regions.len();
        // A write to an owned key, sent to its owner by the map of
        // the region the client reached (the forward), if the two
        // can talk.
        let r = self.rng.below(n as u64) as usize;
        let key = format!("o{}/k{}", self.rng.below(2), self.rng.below(3));
        if self.regions[r].up {
            let owner = self.regions[r].owner_of(&key);
            let target = owner
                .and_then(|o| self.regions.iter().position(|g| g.name == o))
                .unwrap_or(r);
            if self.regions[target].up && !self.cut(r, target) {
                let now = self.now;
                let ev = self.regions[target].owned_write(
                    now,
                    key,
                    &mut self.rng,
                    &mut self.model,
                    &mut self.report,
                )?;
                self.note(format!("write at {}: {ev}", self.regions[target].name));
            }
        }
        Ok(())
    }

    fn handoff_step(&mut self) -> Result<(), String> {
        let n = self.regions.len();
        // A handoff of an owned range, during whatever partitions
        // and crashes are under way.
        let s = self.steward;
        if self.regions[s].up {
            let rule = self.rng.below(2) as usize;
            let to = self.rng.below(n as u64) as usize;
            let now = self.now;
            let ev = self.regions[s].transfer(now, rule, to)?;
            self.report.handoffs += 1;
            self.note(format!("handoff: {ev}"));
        }
        Ok(())
    }

    /// Region `a` ships to `b` what `b` lacks (or a state transfer).
    fn ship(&mut self, a: usize, b: usize) -> Result<(), String> {
        if !self.regions[a].up {
            return Ok(());
        }
        let now = self.now;
        let Some(msg) = self.regions[a].next_message(b, now)? else {
            return Ok(());
        };
        let delay = 5 + self.rng.below(200);
        let dup = self.rng.chance(10);
        if dup {
            self.report.duplicated += 1;
            self.net
                .send(now + delay + self.rng.below(100), a, b, msg.clone());
        }
        self.net.send(now + delay, a, b, msg);
        Ok(())
    }

    /// Delivers some due messages, in random order (reordering).
    fn deliver_some(&mut self) -> Result<(), String> {
        let count = 1 + self.rng.below(4);
        for _ in 0..count {
            let Some((from, to, msg)) = self.net.take_due(self.now, &mut self.rng) else {
                return Ok(());
            };
            self.deliver(from, to, msg, true)?;
        }
        Ok(())
    }

    fn deliver(&mut self, from: usize, to: usize, msg: Msg, lossy: bool) -> Result<(), String> {
        if self.cut(from, to) || !self.regions[to].up || (lossy && self.rng.chance(3)) {
            self.report.lost += 1;
            return Ok(());
        }
        let now = self.now;
        match msg {
            Msg::Batch(bytes) => {
                self.report.batches += 1;
                // Crashes only while faults run (not while settling).
                let crash = match (lossy, self.rng.below(300)) {
                    (true, 0) => region::CrashAt::BeforeSync,
                    (true, 1) => region::CrashAt::AfterLog,
                    (true, 2) => region::CrashAt::AfterCommit,
                    _ => region::CrashAt::Never,
                };
                let Some((ack, held)) = self.regions[to].receive(&bytes, now, crash)? else {
                    self.report.crashes += 1;
                    self.note(format!(
                        "{} crashed applying a batch ({crash:?})",
                        self.regions[to].name
                    ));
                    return Ok(());
                };
                self.report.held += held;
                let delay = 5 + self.rng.below(200);
                let hlc = self.regions[to].hlc();
                self.net.send(now + delay, to, from, Msg::Ack(ack, hlc));
            }
            Msg::Ack(vv, hlc) => {
                if self.regions[to].up {
                    self.regions[to].on_ack(from, &vv, hlc);
                }
            }
            Msg::State(t) => {
                // Crash mid-transfer now and then: after the adopted ops are
                // logged, or after the state commit, before its checkpoint.
                let crash = match (lossy, self.rng.below(100)) {
                    (true, 0..=3) => region::CrashAt::BeforeSync,
                    (true, 4..=7) => region::CrashAt::AfterLog,
                    (true, 8..=11) => region::CrashAt::AfterCommit,
                    _ => region::CrashAt::Never,
                };
                let Some(ack) = self.regions[to].install(&t, now, crash)? else {
                    if crash == region::CrashAt::Never {
                        self.report.held += 1;
                    } else {
                        self.report.crashes += 1;
                        self.note(format!(
                            "{} crashed in a state transfer ({crash:?})",
                            self.regions[to].name
                        ));
                    }
                    self.regions[from].reset_peer(to);
                    return Ok(());
                };
                self.report.transfers += 1;
                self.note(format!(
                    "state transfer {} -> {}",
                    self.regions[from].name, self.regions[to].name
                ));
                let delay = 5 + self.rng.below(200);
                let hlc = self.regions[to].hlc();
                self.net.send(now + delay, to, from, Msg::Ack(ack, hlc));
            }
        }
        Ok(())
    }

    /// Heals everything and runs until nothing is left to ship.
    fn settle(&mut self) -> Result<(), String> {
        self.partitions.clear();
        for r in 0..self.regions.len() {
            if !self.regions[r].up {
                self.regions[r].restart()?;
            }
            self.regions[r].fix_clock();
            self.regions[r].reset_peers();
        }
        let n = self.regions.len();
        for round in 0..2_000u64 {
            // Time passes: skewed clocks catch up with held ops.
            self.now += 50;
            for a in 0..n {
                for b in 0..n {
                    if a != b {
                        let now = self.now;
                        if let Some(msg) = self.regions[a].next_message(b, now)? {
                            self.net.send(now, a, b, msg);
                        }
                    }
                }
            }
            while let Some((from, to, msg)) = self.net.take_any() {
                self.deliver(from, to, msg, false)?;
            }
            let mut owed = false;
            for r in &mut self.regions {
                owed |= r.write_back(self.now)?;
            }
            let first = self.regions[0].vv();
            let converged = !owed && self.regions.iter().all(|r| r.vv() == first && r.idle());
            if converged && round > 0 {
                self.report.settle_steps = round;
                // Quiet and converged: tombstones are stable now; collect
                // them everywhere (the checks that follow must still hold).
                for r in &mut self.regions {
                    self.report.collected += r.collect_tombstones()?;
                }
                let after = self.regions[0].digests();
                if self.regions.iter().any(|r| r.digests() != after) {
                    return Err("collecting stable tombstones made regions differ".into());
                }
                return Ok(());
            }
            if round % 10 == 9 {
                for r in &mut self.regions {
                    r.reset_peers();
                }
            }
        }
        let vvs: Vec<String> = self
            .regions
            .iter()
            .map(|r| {
                format!(
                    "{}: {} ops, buffered {}",
                    r.name,
                    r.vv().total(),
                    r.buffered()
                )
            })
            .collect();
        Err(format!("no quiescence after the heal: {}", vvs.join("; ")))
    }

    fn check(&mut self) -> Result<(), String> {
        let first = &self.regions[0];
        let digests = first.digests();
        for r in &self.regions[1..] {
            if r.digests() != digests {
                return Err(format!(
                    "digests differ between {} and {}: {:?} vs {:?}",
                    first.name,
                    r.name,
                    digests,
                    r.digests()
                ));
            }
        }
        for r in &self.regions {
            self.report.relogged += r.check_log_dots_are_unique()?;
            self.model.check(r)?;
        }
        self.report.owned_writes = self.model.check_owned()? as u64;
        let epoch = self.regions[0].owned_epoch();
        if let Some(r) = self.regions.iter().find(|r| r.owned_epoch() != epoch) {
            return Err(format!(
                "ownership maps differ: {} at epoch {}, {} at {epoch}",
                r.name,
                r.owned_epoch(),
                self.regions[0].name
            ));
        }
        self.report.acked = self.model.acked;
        self.report.indeterminate = self.model.indeterminate;
        self.report.custom_acked = self.model.custom_acked;
        self.report.merges_written = self
            .regions
            .iter()
            .map(|r| r.engine_ref().reader().published().stats.merges_written)
            .sum();
        Ok(())
    }
}
