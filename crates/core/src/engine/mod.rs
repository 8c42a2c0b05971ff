//! The replication engine of one region: events in, effects out.
//!
//! The engine holds everything about the region that changes with writes
//! (clock, version vector, keyspace registry, the state being changed) and
//! is driven by one writer (a thread in the server, a loop in simulations):
//!
//! 1. events: [`Engine::submit`] (a client write), [`Engine::receive`]
//!    (ops from a peer), [`Engine::replay`] (a log record at startup). Each
//!    validates, stamps (local writes only) and applies ops to a private
//!    overlay of the state, nothing visible yet;
//! 2. effect: the driver appends [`Engine::staged`] to the op log and syncs it
//!    (one fsync for the whole group);
//! 3. [`Engine::commit`] writes the overlay, the conflict ledger and the
//!    checkpoint to the state store in one atomic batch, publishes the new
//!    version vector to readers and returns what each staged op did (so the
//!    driver can answer clients and feed peers).
//!
//! Readers ([`Reader`]) work concurrently on the state store and never see a
//! write before it is durable.

pub mod build;
pub mod causal;
pub mod keyspaces;
pub mod ledger;
pub mod reader;
pub mod request;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

use meridian_crdt::codec;
use meridian_crdt::{
    Clock, ClockError, Crdt, Dot, Hlc, Object, OpMeta, Policy, ReplicaId, Seq, Value, VersionVector,
};

use crate::log::Lsn;
use crate::op::{Key, KeyspaceName, Mutation, Op};
use crate::state::{Backend, Batch, StoreError};
use causal::CausalBuffer;
use keyspaces::{KeyspaceDef, Registry};
use ledger::{Ledger, LedgerCounts};
use request::{Change, MAX_MUTATIONS, MAX_VALUE, MutationRequest, WriteError, WriteRequest};

pub use reader::{Read, ReadError, Reader};

/// Engine settings.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Remote ops whose HLC is further ahead of local time are held back;
    /// conflicts closer than this are flagged ambiguous.
    pub max_clock_offset_ms: u64,
    /// Most remote ops kept waiting for their causal past.
    pub causal_buffer_ops: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_clock_offset_ms: 500,
            causal_buffer_ops: 100_000,
        }
    }
}

/// Counters the engine keeps for metrics and status.
#[derive(Clone, Debug, Default)]
pub struct EngineStats {
    /// Ops applied since start, per origin.
    pub applied: BTreeMap<ReplicaId, u64>,
    /// Remote ops refused because their HLC was too far ahead.
    pub held_for_clock: u64,
    /// The largest clock lead seen on a refused op, in ms.
    pub last_held_ahead_ms: u64,
    /// Remote ops dropped because the causal buffer was full.
    pub buffer_overflow: u64,
    /// Ops waiting in the causal buffer.
    pub buffered: usize,
    /// `mv` siblings replaced because of the cap.
    pub siblings_pruned: u64,
    /// Conflicts recorded since start, per keyspace.
    pub conflicts: BTreeMap<KeyspaceName, u64>,
}

/// What readers see: the state of the last commit.
#[derive(Clone, Debug)]
pub struct Published {
    /// The region's version vector: every op it covers is in the state.
    pub vv: VersionVector,
    /// Keyspace definitions.
    pub registry: Arc<Registry>,
    /// Digest per keyspace (see [`store::contribution`]).
    pub digests: BTreeMap<KeyspaceName, u128>,
    /// Conflict-ledger counts per keyspace.
    pub ledger: BTreeMap<KeyspaceName, LedgerCounts>,
    /// Highest HLC issued or seen.
    pub hlc: Hlc,
    /// Log position of the last op in the state.
    pub lsn: u64,
    /// Counters.
    pub stats: EngineStats,
}

/// The handle through which the writer publishes and readers look.
pub struct Shared {
    published: RwLock<Arc<Published>>,
}

impl Shared {
    /// The latest published view.
    pub fn get(&self) -> Arc<Published> {
        self.published
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, p: Published) {
        *self
            .published
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(p);
    }
}

/// Where a staged op came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A client of this region.
    Local,
    /// A peer.
    Remote,
    /// The log, at startup.
    Replay,
}

struct Staged {
    op: Op,
    source: Source,
    counters: Vec<Option<i128>>,
}

/// What one committed op did.
#[derive(Clone, Debug)]
pub struct Applied {
    /// The op (ready to ship to peers).
    pub op: Arc<Op>,
    /// Where it came from.
    pub source: Source,
    /// Per mutation: the counter's value after it, for counter keys.
    pub counters: Vec<Option<i128>>,
}

/// What a commit made durable and visible.
#[derive(Debug)]
pub struct Committed {
    /// The version vector now published.
    pub vv: VersionVector,
    /// The ops, in log order.
    pub applied: Vec<Applied>,
}

/// What became of the ops of a received batch.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// Staged for this commit (including buffered ops they unblocked).
    pub staged: usize,
    /// Already applied: ignored.
    pub duplicates: usize,
    /// Waiting for their causal past.
    pub buffered: usize,
    /// Refused: buffer full (the peer will send them again).
    pub overflow: usize,
    /// Refused: HLC too far ahead of local time, with the lead in ms.
    pub held: Vec<(Dot, u64)>,
}

struct Dirty {
    obj: Object,
    old: u128,
}

/// One region's replication engine. See the module docs for the cycle.
pub struct Engine<B: Backend> {
    me: ReplicaId,
    cfg: EngineConfig,
    clock: Clock,
    backend: Arc<B>,
    shared: Arc<Shared>,
    vv: VersionVector,
    registry: Registry,
    dirty: HashMap<(KeyspaceName, Key), Dirty>,
    digests: BTreeMap<KeyspaceName, u128>,
    ledger: Ledger,
    staged: Vec<Staged>,
    buffer: CausalBuffer,
    lsn: u64,
    stats: EngineStats,
}

impl<B: Backend> Engine<B> {
    /// Opens the engine on a state store: loads the checkpoint, the keyspace
    /// registry, digests and ledger counts. Replay the log next
    /// ([`Engine::replay`], then [`Engine::commit`]).
    pub fn open(me: ReplicaId, cfg: EngineConfig, backend: Arc<B>) -> Result<Self, StoreError> {
        let ckpt = store::load_checkpoint(&*backend)?;
        let mut clock = Clock::new(cfg.max_clock_offset_ms);
        clock.restore(ckpt.hlc);
        let mut registry = Registry::default();
        let sys = KeyspaceName::system();
        let mut start = Vec::new();
        loop {
            let page = backend.scan(&store::table(&sys), b"", &start, 256)?;
            if page.is_empty() {
                break;
            }
            for (k, v) in &page {
                let obj = store::decode_object(&sys, k, v)?;
                if let Some(def) = definition_of(&obj) {
                    registry.insert(def);
                }
                start = k.clone();
                start.push(0);
            }
        }
        let names: Vec<KeyspaceName> = registry.iter().map(|d| d.name.clone()).collect();
        let mut digests = BTreeMap::new();
        for ks in names.iter().chain(std::iter::once(&sys)) {
            digests.insert(ks.clone(), store::load_digest(&*backend, ks)?);
        }
        let ledger = Ledger::load(&*backend, names.iter())?;
        let buffer = CausalBuffer::new(cfg.causal_buffer_ops);
        let mut engine = Self {
            me,
            cfg,
            clock,
            backend,
            shared: Arc::new(Shared {
                published: RwLock::new(Arc::new(Published {
                    vv: ckpt.vv.clone(),
                    registry: Arc::new(registry.clone()),
                    digests: BTreeMap::new(),
                    ledger: BTreeMap::new(),
                    hlc: ckpt.hlc,
                    lsn: ckpt.lsn,
                    stats: EngineStats::default(),
                })),
            }),
            vv: ckpt.vv,
            registry,
            dirty: HashMap::new(),
            digests,
            ledger,
            staged: Vec::new(),
            buffer,
            lsn: ckpt.lsn,
            stats: EngineStats::default(),
        };
        engine.publish();
        Ok(engine)
    }

    /// This region's replica id.
    pub fn replica(&self) -> &ReplicaId {
        &self.me
    }

    /// The version vector including staged ops.
    pub fn vv(&self) -> &VersionVector {
        &self.vv
    }

    /// The keyspace registry including staged definitions.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The handle readers use.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// A reader on this engine's state.
    pub fn reader(&self) -> Reader<B> {
        Reader::new(self.backend.clone(), self.shared.clone())
    }

    /// The clock (for status and tests).
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Ops staged for the current group, in order: append these to the log.
    pub fn staged(&self) -> impl Iterator<Item = &Op> {
        self.staged.iter().map(|s| &s.op)
    }

    /// Whether anything is staged.
    pub fn has_staged(&self) -> bool {
        !self.staged.is_empty()
    }

    /// Validates and stamps a client write and applies it to the overlay.
    /// Nothing is staged when it fails: a refused batch changes nothing.
    pub fn submit(&mut self, now_ms: u64, req: WriteRequest) -> Result<(), WriteError> {
        if req.mutations.is_empty() {
            return Err(WriteError::Empty);
        }
        if req.mutations.len() > MAX_MUTATIONS {
            return Err(WriteError::TooMany {
                count: req.mutations.len(),
                max: MAX_MUTATIONS,
            });
        }
        let mut seen = std::collections::HashSet::new();
        let mut mutations = Vec::with_capacity(req.mutations.len());
        let mut pruned = 0;
        for MutationRequest {
            keyspace,
            key,
            change,
        } in &req.mutations
        {
            let def = self
                .registry
                .get(keyspace)
                .ok_or_else(|| WriteError::UnknownKeyspace(keyspace.clone()))?
                .clone();
            if !seen.insert((def.name.clone(), key.clone())) {
                return Err(WriteError::DuplicateKey {
                    keyspace: keyspace.clone(),
                    key: key.to_string(),
                });
            }
            if let Change::Put { value, .. } = change {
                if value.len() > MAX_VALUE {
                    return Err(WriteError::ValueTooLarge {
                        len: value.len(),
                        max: MAX_VALUE,
                    });
                }
            }
            let me = self.me.clone();
            let current = self.load(&def.name, key, def.policy)?;
            let built = build::build(&def, &current.obj, &me, change)?;
            pruned += built.pruned;
            mutations.push(Mutation {
                keyspace: def.name,
                key: key.clone(),
                op: built.op,
            });
        }
        self.stats.siblings_pruned += pruned as u64;
        self.stage_local(now_ms, mutations)
    }

    /// Creates or updates a keyspace definition. `Ok(false)` when the
    /// definition is already exactly this (nothing staged).
    pub fn define(&mut self, now_ms: u64, def: KeyspaceDef) -> Result<bool, WriteError> {
        def.validate()?;
        if let Some(existing) = self.registry.get(def.name.as_str()) {
            if existing.policy != def.policy {
                return Err(WriteError::PolicyChange {
                    name: def.name.to_string(),
                    existing: existing.policy,
                    requested: def.policy,
                    current: Box::new(existing.clone()),
                });
            }
            if *existing == def {
                return Ok(false);
            }
        }
        let sys = KeyspaceName::system();
        let key = Key::new(def.name.as_str())?;
        let json = serde_json::to_value(&def).map_err(|e| StoreError::Backend(e.to_string()))?;
        let value = Value::Json(meridian_crdt::Json::from_value(&json));
        let current = self.load(&sys, &key, Policy::Lww)?;
        let Object::Lww(reg) = &current.obj else {
            return Err(StoreError::Backend("keyspace registry entry is not lww".into()).into());
        };
        let op = meridian_crdt::ObjectOp::Lww(reg.set_op(value));
        self.stage_local(
            now_ms,
            vec![Mutation {
                keyspace: sys,
                key,
                op,
            }],
        )?;
        Ok(true)
    }

    fn stage_local(&mut self, now_ms: u64, mutations: Vec<Mutation>) -> Result<(), WriteError> {
        let hlc = self.clock.tick(now_ms)?;
        let seq =
            self.vv
                .get(&self.me)
                .next()
                .ok_or(WriteError::Clock(ClockError::WallOverflow {
                    wall_ms: u64::MAX,
                }))?;
        let op = Op {
            dot: Dot::new(self.me.clone(), seq),
            hlc,
            deps: self.vv.clone(),
            mutations,
        };
        self.stage(op, Source::Local)
    }

    /// Takes ops shipped by a peer: duplicates are ignored, ops whose causal
    /// past is missing wait in a bounded buffer, ops too far in the future
    /// are refused; the rest are staged, in causal order.
    pub fn receive(&mut self, now_ms: u64, ops: Vec<Op>) -> Result<Received, WriteError> {
        let mut r = Received::default();
        for op in ops {
            if self.vv.covers(&op.dot) {
                r.duplicates += 1;
                continue;
            }
            if let Err(ClockError::AheadOfLocal { ahead_ms, .. }) = self.clock.check(op.hlc, now_ms)
            {
                self.stats.held_for_clock += 1;
                self.stats.last_held_ahead_ms = ahead_ms;
                r.held.push((op.dot.clone(), ahead_ms));
                continue;
            }
            let ready = self.vv.get(&op.dot.replica).next() == Some(op.dot.seq)
                && self.vv.covers_all(&op.deps);
            if ready {
                self.stage_remote(now_ms, op)?;
                r.staged += 1;
            } else if self.buffer.insert(op).is_ok() {
                r.buffered += 1;
            } else {
                self.stats.buffer_overflow += 1;
                r.overflow += 1;
            }
            while let Some(next) = self.buffer.pop_ready(&self.vv) {
                // A buffered op can have become too far ahead only if local
                // time went back; check again anyway.
                if self.clock.check(next.hlc, now_ms).is_err() {
                    self.stats.held_for_clock += 1;
                    continue;
                }
                self.stage_remote(now_ms, next)?;
                r.staged += 1;
            }
        }
        self.stats.buffered = self.buffer.len();
        Ok(r)
    }

    fn stage_remote(&mut self, now_ms: u64, op: Op) -> Result<(), WriteError> {
        self.clock.observe(op.hlc, now_ms)?;
        self.stage(op, Source::Remote)
    }

    /// Applies a log record during startup recovery (skipping what the
    /// state already holds). Call [`Engine::commit`] after the last one, and
    /// now and then during a long replay to bound memory.
    pub fn replay(&mut self, op: Op) -> Result<(), WriteError> {
        self.clock.restore(op.hlc);
        if self.vv.covers(&op.dot) {
            return Ok(());
        }
        self.stage(op, Source::Replay)
    }

    /// Number of staged ops.
    pub fn staged_len(&self) -> usize {
        self.staged.len()
    }

    fn stage(&mut self, op: Op, source: Source) -> Result<(), WriteError> {
        let meta = OpMeta {
            dot: &op.dot,
            hlc: op.hlc,
            deps: &op.deps,
        };
        let mut counters = Vec::with_capacity(op.mutations.len());
        let now = self.clock.last();
        for m in &op.mutations {
            let policy = self
                .registry
                .get(m.keyspace.as_str())
                .map(|d| d.policy)
                .unwrap_or(m.op.policy());
            let bound = self.cfg.max_clock_offset_ms;
            let entry = self.load(&m.keyspace, &m.key, policy)?;
            let conflicts = entry.obj.apply(&m.op, &meta);
            counters.push(match &entry.obj {
                Object::Counter(c) => Some(c.value()),
                _ => None,
            });
            let def_update = if m.keyspace.is_system() {
                definition_of(&entry.obj)
            } else {
                None
            };
            for c in conflicts {
                *self.stats.conflicts.entry(m.keyspace.clone()).or_default() += 1;
                self.ledger.record(&m.keyspace, &m.key, c, bound, now);
            }
            if let Some(def) = def_update {
                self.digests.entry(def.name.clone()).or_insert(0);
                self.registry.insert(def);
            }
        }
        self.vv.add(&op.dot);
        *self
            .stats
            .applied
            .entry(op.dot.replica.clone())
            .or_default() += 1;
        self.staged.push(Staged {
            op,
            source,
            counters,
        });
        Ok(())
    }

    fn load(
        &mut self,
        ks: &KeyspaceName,
        key: &Key,
        policy: Policy,
    ) -> Result<&mut Dirty, StoreError> {
        let slot = (ks.clone(), key.clone());
        if !self.dirty.contains_key(&slot) {
            let stored = self
                .backend
                .get(&store::table(ks), key.as_str().as_bytes())?;
            let d = match stored {
                Some(bytes) => Dirty {
                    obj: store::decode_object(ks, key.as_str().as_bytes(), &bytes)?,
                    old: store::contribution(key.as_str().as_bytes(), &bytes),
                },
                None => Dirty {
                    obj: Object::empty(policy),
                    old: 0,
                },
            };
            self.dirty.insert(slot.clone(), d);
        }
        // Just inserted or already there.
        self.dirty
            .get_mut(&slot)
            .ok_or_else(|| StoreError::Backend("dirty entry vanished".into()))
    }

    /// Makes the staged ops visible: one atomic batch with their state, the
    /// ledger and the checkpoint. Call only once the log holds them durably;
    /// `last_lsn` is the log position of the last staged op (unchanged when
    /// nothing was logged, e.g. after a pure replay).
    pub fn commit(&mut self, last_lsn: Option<Lsn>) -> Result<Committed, WriteError> {
        let mut batch = Batch::new();
        for ((ks, key), d) in self.dirty.drain() {
            let bytes = codec::encode(&d.obj).map_err(|e| StoreError::Backend(e.to_string()))?;
            let new = store::contribution(key.as_str().as_bytes(), &bytes);
            let digest = self.digests.entry(ks.clone()).or_insert(0);
            *digest = digest.wrapping_sub(d.old).wrapping_add(new);
            batch.put(&store::table(&ks), key.as_str().as_bytes().to_vec(), bytes);
        }
        let registry = &self.registry;
        self.ledger.flush(&mut batch, |ks| {
            registry
                .get(ks.as_str())
                .map_or(10_000, |d| u64::from(d.ledger_capacity))
        })?;
        for (ks, d) in &self.digests {
            batch.put(store::META, store::digest_key(ks), d.to_le_bytes().to_vec());
        }
        if let Some(l) = last_lsn {
            self.lsn = l.0;
        }
        let (k, v) = store::checkpoint_entry(&store::Checkpoint {
            vv: self.vv.clone(),
            lsn: self.lsn,
            hlc: self.clock.last(),
        })?;
        batch.put(store::META, k, v);
        self.backend.write(batch)?;
        self.publish();
        let applied = self
            .staged
            .drain(..)
            .map(|s| Applied {
                op: Arc::new(s.op),
                source: s.source,
                counters: s.counters,
            })
            .collect();
        Ok(Committed {
            vv: self.vv.clone(),
            applied,
        })
    }

    /// Makes the state store durable up to the last commit (an fsync): after
    /// this, log records at or below the returned LSN are no longer needed
    /// for recovery.
    pub fn checkpoint(&self) -> Result<Lsn, StoreError> {
        self.backend.persist()?;
        Ok(Lsn(self.lsn))
    }

    fn publish(&mut self) {
        self.stats.buffered = self.buffer.len();
        self.shared.set(Published {
            vv: self.vv.clone(),
            registry: Arc::new(self.registry.clone()),
            digests: self.digests.clone(),
            ledger: self.ledger.counts().clone(),
            hlc: self.clock.last(),
            lsn: self.lsn,
            stats: self.stats.clone(),
        });
    }

    /// Seq of this region's next op.
    pub fn next_seq(&self) -> Seq {
        self.vv.get(&self.me).next().unwrap_or(Seq(u64::MAX))
    }
}

/// The keyspace definition held by a `_keyspaces` entry, if it holds one.
fn definition_of(obj: &Object) -> Option<KeyspaceDef> {
    let Object::Lww(reg) = obj else { return None };
    let Some(Value::Json(j)) = reg.value() else {
        return None;
    };
    serde_json::from_str(j.as_str()).ok()
}
