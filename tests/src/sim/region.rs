//! One simulated region: a real engine on the in-memory backend, a durable
//! op log (a vector that survives crashes), and a shipping state machine per
//! peer.
//!
//! Why past ~400 lines: every step the simulator takes at one region (write,
//! receive, transfer, crash at each commit step, restart, checkpoint,
//! collect) is a method here, so a failing seed's trace reads against one
//! file.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use meridian_core::engine::driver::OpLog;
use meridian_core::ownership::{MapRequest, RuleRef};
use meridian_core::replication::{
    BatchLimits, PeerKnowledge, PeerSync, compact, needs_state_transfer, stable_cut, wire,
};
use meridian_core::{
    Change, Engine, EngineConfig, Key, KeyspaceDef, KeyspaceName, LogError, Lsn, MemBackend,
    MutationRequest, Op, WriteError, WriteRequest,
};
use meridian_crdt::{
    Dot, Hlc, Json, Object, Policy, RegionId, ReplicaId, Seq, Value, VersionVector, codec,
};
use uuid::Uuid;

use super::model::Model;
use super::net::{Msg, Transfer};
use super::{Rng, SimReport};

/// Where a commit may be cut short by a crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashAt {
    /// It completes.
    Never,
    /// After the group's ops are appended, before the log is synced.
    BeforeSync,
    /// After the group's ops are durable in the log, before the state commit.
    AfterLog,
    /// After the state commit, before any checkpoint.
    AfterCommit,
}

/// The simulated op log: appended records, of which the synced prefix
/// survives a crash.
struct SimLog {
    records: Vec<(Lsn, Arc<Op>)>,
    synced: usize,
    next: u64,
}

impl SimLog {
    fn new() -> Self {
        Self {
            records: Vec::new(),
            synced: 0,
            next: 1,
        }
    }

    /// The first retained position (or the next one, when empty).
    fn start(&self) -> Lsn {
        self.records.first().map_or(Lsn(self.next), |(l, _)| *l)
    }

    /// Loses what was not synced.
    fn crash(&mut self) {
        if let Some((l, _)) = self.records.get(self.synced) {
            self.next = l.0;
        }
        self.records.truncate(self.synced);
    }
}

impl OpLog for SimLog {
    fn append_ops<'a>(&mut self, ops: impl Iterator<Item = &'a Op>) -> Result<Lsn, LogError> {
        let first = Lsn(self.next);
        for op in ops {
            self.records.push((Lsn(self.next), Arc::new(op.clone())));
            self.next += 1;
        }
        Ok(first)
    }
    fn sync_ops(&mut self) -> Result<(), LogError> {
        self.synced = self.records.len();
        Ok(())
    }
    fn retain(&mut self, _checkpoint: Lsn, _now_ms: u64) -> Result<usize, LogError> {
        Ok(0) // the simulation trims in checkpoint_and_trim
    }
}

/// One region of the simulation.
pub struct SimRegion {
    /// Its name.
    pub name: &'static str,
    id: ReplicaId,
    skew_ms: i64,
    /// Whether it runs.
    pub up: bool,
    backend: MemBackend,
    engine: Option<Engine<MemBackend>>,
    /// The op log: what was synced survives crashes; its front is trimmed
    /// by retention.
    log: SimLog,
    peers: Vec<PeerSync>,
    /// Per peer: from where in the log relays are held back (what was
    /// committed since the last release, as a server's relay hold does).
    relay_marks: Vec<Lsn>,
    connected: Vec<bool>,
    /// Per peer: its clock and version vector at its latest ack.
    last_ack: Vec<Option<(Hlc, VersionVector)>>,
    /// Per dot: how many restarts found a record of it in the log that
    /// replay could not apply (its causal past was in no record): each may
    /// be logged once more when that past arrives.
    orphaned: BTreeMap<Dot, u64>,
    /// Every region's name, by index (this one's at `index`).
    names: Vec<&'static str>,
    index: usize,
    writes: u64,
}

fn region_ids(names: &[&'static str]) -> Vec<RegionId> {
    names
        .iter()
        .map(|n| RegionId::new(*n).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

fn cfg() -> EngineConfig {
    EngineConfig {
        max_clock_offset_ms: 500,
        causal_buffer_ops: 10_000,
        ..EngineConfig::default()
    }
}

impl SimRegion {
    /// A fresh region.
    pub fn new(names: &[&'static str], index: usize, skew_ms: i64) -> Self {
        let name = names[index];
        let incarnation = index as u128 + 1;
        let regions = names.len();
        let id = ReplicaId::new(
            RegionId::new(name).unwrap_or_else(|e| panic!("{e}")),
            Uuid::from_u128(incarnation),
        );
        let backend = MemBackend::new();
        let mut engine = Engine::open(id.clone(), cfg(), Arc::new(backend.clone()))
            .unwrap_or_else(|e| panic!("{e}"));
        engine.enable_merges(region_ids(names));
        Self {
            name,
            id,
            skew_ms,
            up: true,
            backend,
            engine: Some(engine),
            log: SimLog::new(),
            peers: vec![PeerSync::new(); regions],
            relay_marks: vec![Lsn(0); regions],
            connected: vec![false; regions],
            last_ack: vec![None; regions],
            orphaned: BTreeMap::new(),
            names: names.to_vec(),
            index,
            writes: 0,
        }
    }

    fn local(&self, now: u64) -> u64 {
        now.saturating_add_signed(self.skew_ms)
    }

    /// Clocks are fixed (the heal).
    pub fn fix_clock(&mut self) {
        self.skew_ms = 0;
    }

    fn engine(&mut self) -> Result<&mut Engine<MemBackend>, String> {
        self.engine
            .as_mut()
            .ok_or_else(|| format!("{} is down", self.name))
    }

    pub(super) fn engine_ref(&self) -> &Engine<MemBackend> {
        self.engine
            .as_ref()
            .unwrap_or_else(|| panic!("{} is down", self.name))
    }

    /// Logs what is staged and commits it; returns the committed ops.
    fn commit(&mut self) -> Result<Vec<Arc<Op>>, String> {
        self.commit_or_crash(CrashAt::Never)?
            .ok_or_else(|| format!("{} crashed", self.name))
    }

    /// The commit protocol (the engine's driver: begin, sync, commit, make
    /// durable), crashing after the step `at` names: `None` when it crashed.
    fn commit_or_crash(&mut self, at: CrashAt) -> Result<Option<Vec<Arc<Op>>>, String> {
        let Self { engine, log, .. } = self;
        let e = engine.as_mut().ok_or("down")?;
        let Some(pending) = e.begin(log).map_err(|e| e.to_string())? else {
            return Ok(Some(Vec::new()));
        };
        if at == CrashAt::BeforeSync {
            self.crash();
            return Ok(None);
        }
        log.sync_ops().map_err(|e| e.to_string())?;
        if at == CrashAt::AfterLog {
            self.crash();
            return Ok(None);
        }
        let c = e.commit_pending(pending).map_err(|e| e.to_string())?;
        if at == CrashAt::AfterCommit {
            // State written to the store, not persisted: a crash loses it.
            self.crash();
            return Ok(None);
        }
        if c.needs_checkpoint {
            e.make_durable(log, 0).map_err(|e| e.to_string())?;
        }
        Ok(Some(c.applied.into_iter().map(|a| a.op).collect()))
    }

    /// Creates the simulation's keyspaces here.
    pub fn define_keyspaces(&mut self, now: u64) {
        let t = self.local(now);
        let e = self.engine().unwrap_or_else(|e| panic!("{e}"));
        for (name, policy) in [
            ("n", Policy::Counter),
            ("s", Policy::Set),
            ("m", Policy::Custom),
        ] {
            let mut def = KeyspaceDef::new(
                KeyspaceName::new(name).unwrap_or_else(|e| panic!("{e}")),
                policy,
            );
            if policy == Policy::Custom {
                // Versions summed by the merger's write-back.
                def.merge = Some("sum".into());
            }
            e.define(t, def).unwrap_or_else(|e| panic!("{e}"));
        }
        self.commit().unwrap_or_else(|e| panic!("{e}"));
    }

    /// Creates the owned keyspace `o` here (the steward) and its map: keys
    /// `o0/...` owned by the first region, `o1/...` by the second.
    pub fn define_owned(&mut self, now: u64) {
        let t = self.local(now);
        let owners = [self.names[0], self.names[1]];
        let e = self.engine().unwrap_or_else(|e| panic!("{e}"));
        let def = KeyspaceDef::new(
            KeyspaceName::new("o").unwrap_or_else(|e| panic!("{e}")),
            Policy::Lww,
        );
        e.define(t, def).unwrap_or_else(|e| panic!("{e}"));
        let req: MapRequest = serde_json::from_value(serde_json::json!({
            "rules": [{"prefix": "o0/", "owner": owners[0]}, {"prefix": "o1/", "owner": owners[1]}]
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        e.set_ownership(t, "o", &req)
            .unwrap_or_else(|e| panic!("{e}"));
        self.commit().unwrap_or_else(|e| panic!("{e}"));
    }

    /// As the steward: moves rule `rule` of `o`'s map to region `to`. What
    /// happened, for the trace.
    pub fn transfer(&mut self, now: u64, rule: usize, to: usize) -> Result<String, String> {
        let t = self.local(now);
        let target = RegionId::new(self.names[to]).map_err(|e| e.to_string())?;
        let e = self.engine()?;
        let r = e.transfer_ownership(t, "o", &RuleRef::Index(rule), &target, None);
        self.commit()?;
        Ok(match r {
            Ok(Some(m)) => format!("rule {rule} -> {target} at epoch {}", m.epoch()),
            Ok(None) => format!("rule {rule} already at {target}"),
            Err(e) => format!("rule {rule} -> {target} refused: {e}"),
        })
    }

    /// The steward of the cluster.
    pub fn steward_index(names: &[&'static str]) -> usize {
        (0..names.len()).min_by_key(|&i| names[i]).unwrap_or(0)
    }

    /// The epoch of `o`'s map here.
    pub fn owned_epoch(&self) -> u64 {
        self.engine_ref()
            .registry()
            .ownership("o")
            .map_or(0, |m| m.epoch().0)
    }

    /// One client write, with a small chance of crashing before it is
    /// durable (lost, never acknowledged) or after (durable, never
    /// acknowledged: outcome unknown to the client).
    pub fn client_write(
        &mut self,
        now: u64,
        rng: &mut Rng,
        model: &mut Model,
        report: &mut SimReport,
    ) -> Result<String, String> {
        let t = self.local(now);
        self.writes += 1;
        let key_n = format!("{}-{}", self.name, self.writes);
        // Write-backs and fences owed go out with this group, as the
        // server's writer does.
        self.engine()?.merge_due(t, 64).map_err(|e| e.to_string())?;
        if self.engine()?.write_fences(t).map_err(|e| e.to_string())? > 0 {
            self.commit()?;
        }
        let (ks, key, change, desc) = match rng.below(19) {
            16..=18 => {
                // Owned keys: taken only by the owner, never concurrently.
                let v = rng.below(1_000_000) as i64;
                let k = format!("o{}/k{}", rng.below(2), rng.below(3));
                (
                    "o",
                    k.clone(),
                    Change::Put {
                        value: Value::Json(Json::parse(&v.to_string()).map_err(|e| e.to_string())?),
                        context: None,
                    },
                    format!("owned put {k}={v}"),
                )
            }
            0..=3 => {
                let v = rng.below(1000) as i64;
                (
                    "default",
                    key_n.clone(),
                    Change::Put {
                        value: Value::Json(Json::parse(&v.to_string()).map_err(|e| e.to_string())?),
                        context: None,
                    },
                    format!("put {key_n}={v}"),
                )
            }
            4..=6 => {
                let by = 1 + rng.below(5) as i64;
                let k = format!("c{}", rng.below(3));
                ("n", k.clone(), Change::Incr(by), format!("incr {k} {by}"))
            }
            7..=8 => {
                let k = format!("s{}", rng.below(3));
                let e = format!("\"e{}\"", rng.below(6));
                (
                    "s",
                    k.clone(),
                    Change::Add(vec![Json::parse(&e).map_err(|e| e.to_string())?]),
                    format!("add {k} {e}"),
                )
            }
            9 => {
                let k = format!("s{}", rng.below(3));
                let e = format!("\"e{}\"", rng.below(6));
                (
                    "s",
                    k.clone(),
                    Change::Remove(vec![Json::parse(&e).map_err(|e| e.to_string())?]),
                    format!("remove {k} {e}"),
                )
            }
            14..=15 => {
                // Versions of a custom key every region adds to, summed.
                let by = 1 + rng.below(5) as i64;
                let k = format!("m{}", rng.below(2));
                (
                    "m",
                    k.clone(),
                    Change::Put {
                        value: Value::Json(
                            Json::parse(&by.to_string()).map_err(|e| e.to_string())?,
                        ),
                        context: None,
                    },
                    format!("version {k} +{by}"),
                )
            }
            10..=11 => {
                // Keys every region writes and deletes: LWW with tombstones
                // that get collected.
                let k = format!("shared-{}", rng.below(3));
                let v = 1000 + rng.below(1000) as i64;
                (
                    "default",
                    k.clone(),
                    Change::Put {
                        value: Value::Json(Json::parse(&v.to_string()).map_err(|e| e.to_string())?),
                        context: None,
                    },
                    format!("put {k}={v}"),
                )
            }
            _ => {
                let k = format!("shared-{}", rng.below(3));
                (
                    "default",
                    k.clone(),
                    Change::Delete { context: None },
                    format!("delete {k}"),
                )
            }
        };
        self.take_write(t, (ks, key, change, desc), rng, model, report)
    }

    /// A write to owned key `key` (of `o`), sent here because this region
    /// owns it by its map (the simulated forward).
    pub fn owned_write(
        &mut self,
        now: u64,
        key: String,
        rng: &mut Rng,
        model: &mut Model,
        report: &mut SimReport,
    ) -> Result<String, String> {
        let t = self.local(now);
        if self.engine()?.write_fences(t).map_err(|e| e.to_string())? > 0 {
            self.commit()?;
        }
        let v = rng.below(1_000_000) as i64;
        let change = Change::Put {
            value: Value::Json(Json::parse(&v.to_string()).map_err(|e| e.to_string())?),
            context: None,
        };
        let desc = format!("owned put {key}={v}");
        self.take_write(t, ("o", key, change, desc), rng, model, report)
    }

    /// The owner of owned key `key` under this region's map.
    pub fn owner_of(&self, key: &str) -> Option<String> {
        let map = self.engine_ref().registry().ownership("o")?;
        map.layout.owner_of(key).map(|r| r.to_string())
    }

    /// Submits one write and runs it through the commit protocol, crashing
    /// now and then; records what the client was told.
    fn take_write(
        &mut self,
        t: u64,
        (ks, key, change, desc): (&str, String, Change, String),
        rng: &mut Rng,
        model: &mut Model,
        report: &mut SimReport,
    ) -> Result<String, String> {
        // The keyspace may not have replicated here yet: then the write is refused.
        let req = WriteRequest {
            deadline_ms: None,
            not_before_ms: None,
            fallback: false,
            mutations: vec![MutationRequest {
                keyspace: ks.to_string(),
                key: Key::new(key.clone()).map_err(|e| e.to_string())?,
                change: change.clone(),
            }],
        };
        let epoch = self.owned_epoch();
        if let Err(e) = self.engine()?.submit(t, req) {
            return Ok(format!("{desc}: refused ({e})"));
        }
        // The write goes through the commit protocol, and now and then the
        // region dies at one of its steps.
        let fate = rng.below(100);
        let staged: Vec<Arc<Op>> = self.engine()?.staged().cloned().map(Arc::new).collect();
        let crash = match fate {
            0..=1 => CrashAt::BeforeSync,
            2 => CrashAt::AfterLog,
            3 => CrashAt::AfterCommit,
            _ => CrashAt::Never,
        };
        let done = self.commit_or_crash(crash)?;
        if crash == CrashAt::BeforeSync {
            report.crashes += 1;
            return Ok(format!("{desc}: crashed before the log sync"));
        }
        // Durable from here on (the log is synced).
        for op in &staged {
            model.ops.insert(op.dot.clone(), op.clone());
        }
        if ks == "o" {
            model.owned.push((key.clone(), epoch, self.index));
        }
        let acked = done.is_some();
        if !acked {
            // Durable, but the region died before answering.
            report.crashes += 1;
            model.indeterminate += 1;
        } else {
            model.acked += 1;
        }
        let shared = key.starts_with("shared-") || ks == "o";
        match (&change, acked) {
            _ if shared => {} // judged against every op, not per write
            (
                Change::Put {
                    value: Value::Json(j),
                    ..
                },
                acked,
            ) if ks == "m" => {
                let by: i64 = j.as_str().parse().unwrap_or(0);
                let e = model.summed.entry(key).or_default();
                if acked {
                    model.custom_acked += 1;
                    e.0 += by;
                } else {
                    e.1 += by;
                }
            }
            (
                Change::Put {
                    value: Value::Json(j),
                    ..
                },
                true,
            ) => {
                model.puts.insert(key, j.as_str().parse().unwrap_or(0));
            }
            (
                Change::Put {
                    value: Value::Json(j),
                    ..
                },
                false,
            ) => {
                model
                    .maybe_puts
                    .insert(key, j.as_str().parse().unwrap_or(0));
            }
            (Change::Incr(by), true) => model.counters.entry(key).or_default().0 += by,
            (Change::Incr(by), false) => model.counters.entry(key).or_default().1 += by,
            _ => {}
        }
        Ok(format!(
            "{desc}: {}",
            if acked {
                "acked"
            } else {
                "durable, crashed before the answer"
            }
        ))
    }

    /// The next message for peer `to`: ops it lacks, or a state transfer
    /// when it needs ops this log no longer has.
    pub fn next_message(&mut self, to: usize, now: u64) -> Result<Option<Msg>, String> {
        let start = self.log.start();
        if !self.connected[to] {
            self.peers[to].on_failure(start);
            self.connected[to] = true;
        }
        let ours = self.engine()?.reader().published().vv.clone();
        let mut runs = meridian_core::log::Runs::default();
        let lows: BTreeMap<ReplicaId, Seq> =
            self.log
                .records
                .iter()
                .fold(BTreeMap::new(), |mut m, (_, op)| {
                    runs.note(&op.dot.replica, op.dot.seq);
                    m.entry(op.dot.replica.clone())
                        .and_modify(|s: &mut Seq| *s = (*s).min(op.dot.seq))
                        .or_insert(op.dot.seq);
                    m
                });
        let floors = runs.floors(&lows);
        if needs_state_transfer(&ours, &floors, self.peers[to].shipped()) {
            let snap = self
                .engine()?
                .reader()
                .transfer_snapshot()
                .map_err(|e| e.to_string())?;
            let mut entries = Vec::new();
            for ks in &snap.keyspaces {
                let mut after: Option<Vec<u8>> = None;
                loop {
                    let page = snap
                        .page(
                            ks,
                            after.as_deref(),
                            100,
                            meridian_core::budget::PAGE_TARGET,
                        )
                        .map_err(|e| e.to_string())?;
                    if page.is_empty() {
                        break;
                    }
                    for (k, v) in page {
                        let key = Key::new(String::from_utf8_lossy(&k).into_owned())
                            .map_err(|e| e.to_string())?;
                        entries.push((ks.clone(), key, v));
                        after = Some(k);
                    }
                }
            }
            // Ops after the snapshot follow from the log.
            self.peers[to].sent_state(&snap.vv);
            return Ok(Some(Msg::State(Arc::new(Transfer {
                entries,
                vv: snap.vv,
                hlc: snap.hlc,
            }))));
        }
        let limits = BatchLimits {
            max_ops: 40,
            max_bytes: 64 << 10,
        };
        // Relays held back as a server's sender does: another region's ops
        // committed since the last release (a commit is all before the
        // mark or all after it, as a server's hold by commit time), with
        // releases now and then and whenever nothing else would go. Every
        // schedule so ships held and rewound relays among partitions,
        // crashes and duplicates.
        if now.is_multiple_of(4) {
            self.peers[to].release_held();
            self.relay_marks[to] = Lsn(self.log.next);
        }
        let (region, mark) = (self.id.region.clone(), self.relay_marks[to]);
        let hold = |lsn: Lsn, op: &Op| op.dot.replica.region != region && lsn >= mark;
        let records = self.log.records.iter().cloned();
        let mut batch = self.peers[to].fill_holding(records, limits, |_| 100, hold);
        if batch.is_empty() && self.peers[to].held().is_some() {
            self.peers[to].release_held();
            self.relay_marks[to] = Lsn(self.log.next);
            batch = self.peers[to].fill(self.log.records.iter().cloned(), limits, |_| 100);
        }
        if batch.is_empty() {
            return Ok(None);
        }
        // Both wire versions, turn about, so that every schedule ships
        // (and checks) each.
        let bytes = if self.log.records.len().is_multiple_of(2) {
            compact::encode(&self.id, self.local(now), &batch).map(|e| e.bytes)
        } else {
            wire::encode(&self.id, self.local(now), &batch)
        }
        .map_err(|e| e.to_string())?;
        Ok(Some(Msg::Batch(bytes)))
    }

    /// A batch arrived: apply, make durable, answer with the version vector.
    /// `None` when the region crashed at `crash` before answering.
    pub fn receive(
        &mut self,
        bytes: &[u8],
        now: u64,
        crash: CrashAt,
    ) -> Result<Option<(VersionVector, u64)>, String> {
        let batch =
            wire::decode(bytes).map_err(|e| format!("{}: undecodable batch: {e}", self.name))?;
        let t = self.local(now);
        let r = self
            .engine()?
            .receive(t, batch.ops)
            .map_err(|e| e.to_string())?;
        // Write-backs and fences owed go into the same group, as in the
        // server's writer.
        self.engine()?.merge_due(t, 64).map_err(|e| e.to_string())?;
        self.engine()?.write_fences(t).map_err(|e| e.to_string())?;
        if self.commit_or_crash(crash)?.is_none() {
            return Ok(None);
        }
        Ok(Some((self.vv(), r.held.len() as u64)))
    }

    /// A state transfer arrived: merge it, adopt its version vector, make it
    /// durable, answer. `None` when it is refused for being stamped too far
    /// ahead of this region's clock, or the region crashed at `crash` in
    /// the middle of it (the sender must send it again later).
    pub fn install(
        &mut self,
        t: &Transfer,
        now: u64,
        crash: CrashAt,
    ) -> Result<Option<VersionVector>, String> {
        let mut entries = Vec::new();
        for (ks, key, bytes) in &t.entries {
            let obj: Object = codec::decode(bytes, 1 << 24).map_err(|e| e.to_string())?;
            entries.push((ks.clone(), key.clone(), obj));
        }
        let local = self.local(now);
        let e = self.engine()?;
        match e
            .install(local, entries, &t.vv)
            .and_then(|()| e.adopt(local, &t.vv, t.hlc))
        {
            Ok(_) => {}
            Err(WriteError::Clock(_)) => {
                // What was merged before the refusal is a join: harmless.
                self.commit()?;
                return Ok(None);
            }
            Err(e) => return Err(e.to_string()),
        }
        if self.commit_or_crash(crash)?.is_none() {
            return Ok(None);
        }
        Ok(Some(self.vv()))
    }

    /// Forgets what was in flight to peer `to`: the next message starts
    /// again from what it acknowledged.
    pub fn reset_peer(&mut self, to: usize) {
        self.connected[to] = false;
    }

    /// An ack from peer `from`, with its clock.
    pub fn on_ack(&mut self, from: usize, vv: &VersionVector, hlc: Hlc) {
        self.peers[from].on_ack(vv);
        if self.last_ack[from].as_ref().is_none_or(|(h, _)| hlc >= *h) {
            self.last_ack[from] = Some((hlc, vv.clone()));
        }
    }

    /// This region's clock as published.
    pub fn hlc(&self) -> Hlc {
        self.engine_ref().reader().published().hlc
    }

    /// Collects stable tombstones, computing the cut as the server does:
    /// what every peer acknowledged, and the lowest clock among peers whose
    /// own ops up to their ack are all here.
    pub fn collect_tombstones(&mut self) -> Result<u64, String> {
        let p = self.engine_ref().reader().published();
        let mut peers = Vec::new();
        for (i, ack) in self.last_ack.iter().enumerate() {
            if i == self.index {
                continue;
            }
            let region = RegionId::new(self.names[i]).map_err(|e| e.to_string())?;
            peers.push(PeerKnowledge {
                replica: Some(ReplicaId::new(
                    region.clone(),
                    Uuid::from_u128(i as u128 + 1),
                )),
                region,
                acked: self.peers[i].acked().clone(),
                last_ack: ack.clone(),
            });
        }
        let Some(cut) = stable_cut(&self.id, &p.vv, p.hlc, &peers) else {
            return Ok(0);
        };
        let n = self
            .engine()?
            .collect(&cut, 1000)
            .map_err(|e| e.to_string())?;
        self.commit()?;
        Ok(n as u64)
    }

    /// Forget what was in flight to every peer (a timeout).
    pub fn reset_peers(&mut self) {
        self.connected.iter_mut().for_each(|c| *c = false);
    }

    /// Makes the state durable, then may drop a prefix of the log below the
    /// checkpoint (retention), which later forces state transfers.
    pub fn checkpoint_and_trim(&mut self, _now: u64, rng: &mut Rng) -> Result<(), String> {
        let lsn = self.engine()?.checkpoint().map_err(|e| e.to_string())?;
        if rng.chance(40) {
            let keep_from = self.log.records.len() / 2;
            let cut = self.log.records[..keep_from]
                .iter()
                .take_while(|(l, _)| *l <= lsn)
                .count();
            self.log.records.drain(..cut);
            self.log.synced = self.log.synced.saturating_sub(cut);
        }
        Ok(())
    }

    /// Loses everything not persisted; the log stays.
    pub fn crash(&mut self) {
        self.backend.crash();
        self.log.crash();
        self.engine = None;
        self.up = false;
        self.reset_peers();
        self.peers.iter_mut().for_each(|p| *p = PeerSync::new());
    }

    /// Reopens the engine and replays the log.
    pub fn restart(&mut self) -> Result<(), String> {
        let mut e = Engine::open(self.id.clone(), cfg(), Arc::new(self.backend.clone()))
            .map_err(|e| e.to_string())?;
        for (_, op) in &self.log.records {
            e.replay((**op).clone()).map_err(|e| e.to_string())?;
        }
        e.commit(Some(Lsn(self.log.next - 1)))
            .map_err(|e| e.to_string())?;
        let applied = e.reader().published().vv.clone();
        let unapplied: BTreeSet<&Dot> = self
            .log
            .records
            .iter()
            .map(|(_, op)| &op.dot)
            .filter(|d| !applied.covers(d))
            .collect();
        for dot in unapplied {
            *self.orphaned.entry(dot.clone()).or_default() += 1;
        }
        e.enable_merges(region_ids(&self.names));
        self.engine = Some(e);
        self.up = true;
        self.skew_ms = self.skew_ms.clamp(-100, 100);
        Ok(())
    }

    /// Stages and commits the merge write-backs this region owes (as the
    /// server's writer does when nothing else waits); whether any remain.
    pub fn write_back(&mut self, now: u64) -> Result<bool, String> {
        let t = self.local(now);
        let e = self.engine()?;
        e.merge_due(t, 64).map_err(|e| e.to_string())?;
        let fenced = e.write_fences(t).map_err(|e| e.to_string())?;
        self.commit()?;
        let e = self.engine()?;
        Ok(fenced > 0 || e.merges_due() || e.fences_owed())
    }

    /// The published version vector.
    pub fn vv(&self) -> VersionVector {
        self.engine_ref().reader().published().vv.clone()
    }

    /// Ops waiting in the causal buffer.
    pub fn buffered(&self) -> usize {
        self.engine_ref().reader().published().stats.buffered
    }

    /// Nothing waiting.
    pub fn idle(&self) -> bool {
        self.buffered() == 0
    }

    /// Digest per keyspace.
    pub fn digests(&self) -> BTreeMap<KeyspaceName, u128> {
        self.engine_ref().reader().published().digests.clone()
    }

    /// A dot names one op, logged once, or again only after a crash
    /// orphaned its first record.
    ///
    /// The same op can be logged twice, and only this way: it was logged in
    /// a commit that also installed a state transfer, the crash took the
    /// transfer back before the state was persisted, so replay keeps the
    /// record in the causal buffer (its past is in no record) and the op is
    /// logged again once a later transfer brings that past. The engine
    /// applies it once (its version vector covers it from then on), and the
    /// log's readers take repeats (`Runs`, the feed, peers). This refuses
    /// two different ops under one dot (a seq issued twice) and any repeat
    /// beyond what restarts orphaned (`orphaned`: a group logged twice, or
    /// an applied op logged again, fails here). Returns the repeats.
    pub fn check_log_dots_are_unique(&self) -> Result<u64, String> {
        let mut seen: BTreeMap<&Dot, (&Op, u64)> = BTreeMap::new();
        let mut repeats = 0;
        for (_, op) in &self.log.records {
            match seen.get_mut(&op.dot) {
                None => {
                    seen.insert(&op.dot, (op.as_ref(), 0));
                }
                Some((first, again)) if **first == **op => {
                    *again += 1;
                    repeats += 1;
                    let allowed = self.orphaned.get(&op.dot).copied().unwrap_or(0);
                    if *again > allowed {
                        return Err(format!(
                            "{}: op {} logged {} times, {allowed} of them after a restart orphaned it",
                            self.name,
                            op.dot,
                            *again + 1
                        ));
                    }
                }
                Some(_) => {
                    return Err(format!(
                        "{}: two different ops logged as {}",
                        self.name, op.dot
                    ));
                }
            }
        }
        Ok(repeats)
    }
}
