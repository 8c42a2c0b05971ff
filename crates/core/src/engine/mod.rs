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
//! 2. effect: the driver seals the group ([`Engine::seal`]), appends its ops
//!    ([`Engine::group_ops`]) to the op log and syncs it (one fsync for the
//!    whole group). While that fsync runs, the next group can already be
//!    staged: each group keeps its own overlay, layered on the groups before
//!    it (pipelined group commit);
//! 3. [`Engine::commit_group`], oldest group first, writes that group's
//!    overlay, conflict-ledger entries and checkpoint to the state store in
//!    one atomic batch, publishes the version vector as of that group to
//!    readers and returns what each op did (so the driver can answer clients
//!    and feed peers).
//!
//! The order of these steps is written once, in [`driver`]
//! ([`Engine::begin`], [`Engine::finish`], [`Engine::step`]): the server's
//! writer, recovery and the simulator all run it. [`Engine::commit`] does
//! seal-and-commit in one call for callers that logged the ops themselves
//! (tests, replay).
//!
//! Readers ([`Reader`]) work concurrently on the state store and never see a
//! write before it is durable.

mod admit;
pub mod build;
mod bulk;
pub mod causal;
pub mod driver;
pub mod keyspaces;
pub mod ledger;
mod merging;
mod owning;
pub mod reader;
pub mod request;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

use meridian_crdt::codec;
use meridian_crdt::{
    Clock, ClockError, Crdt, Dot, Hlc, Object, OpMeta, Policy, ReplicaId, Seq, Value, VersionVector,
};

use crate::budget::growth_bound;
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
    /// Most keyspaces this region lets a client define (definitions that
    /// arrive from peers are always taken: refusing them would split the
    /// cluster).
    pub max_keyspaces: usize,
    /// Most merge scripts a client may register here.
    pub max_merges: usize,
    /// Most live access tokens a client may create here.
    pub max_tokens: usize,
    /// Most encoded bytes one keyspace's conflict ledger keeps.
    pub ledger_bytes: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_clock_offset_ms: 500,
            causal_buffer_ops: 100_000,
            max_keyspaces: 1_000,
            max_merges: 256,
            max_tokens: 10_000,
            ledger_bytes: 64 << 20,
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
    /// Stable tombstones removed since start.
    pub tombstones_collected: u64,
    /// Merge write-backs this region staged since start.
    pub merges_written: u64,
    /// Of those, how many kept the newest version because the function
    /// failed.
    pub merges_failed: u64,
    /// Writes refused because a custom key held its cap of unmerged
    /// versions.
    pub merges_pending_refused: u64,
    /// Writes taken for keys owned elsewhere (ownership fallback), per
    /// keyspace.
    pub ownership_fallbacks: BTreeMap<KeyspaceName, u64>,
}

/// What tombstone collection may rely on: see [`Engine::collect`].
#[derive(Clone, Debug, Default)]
pub struct StableCut {
    /// Ops every region is known to have applied.
    pub stable: VersionVector,
    /// Every op that can still arrive here is stamped above this.
    pub watermark: Hlc,
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
    /// Per origin, the highest seq of an op this region holds in its causal
    /// buffer (received, not applied yet): with `vv`, every op it has seen.
    pub buffered_top: VersionVector,
}

/// The handle through which the writer publishes and readers look.
///
/// # Correctness
/// A group's state becomes visible in the store a moment before its
/// version vector is published. So there are two vectors: `published.vv`
/// (raised after the store write: everything it covers is visible; what a
/// token is waited against) and `upper` (raised before it: it covers
/// everything a reader can see; what a read's token is taken from). A token
/// thus covers what its read returned, and a region serves a token only
/// once it shows everything the token covers.
pub struct Shared {
    published: RwLock<Arc<Published>>,
    upper: RwLock<VersionVector>,
    /// Per keyspace, the digest tree as of the last commit.
    trees: RwLock<BTreeMap<KeyspaceName, store::Tree>>,
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
        self.raise_upper(&p.vv);
        *self
            .published
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(p);
    }

    /// Covers everything a reader can see in the store now: take a read's
    /// token from this, after reading the state.
    pub fn upper(&self) -> VersionVector {
        self.upper
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn raise_upper(&self, vv: &VersionVector) {
        self.upper
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .merge(vv);
    }

    /// A keyspace's digest tree (256 bucket digests) as of the last commit.
    pub fn tree(&self, ks: &KeyspaceName) -> Option<store::Tree> {
        self.trees
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(ks)
            .cloned()
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
    /// The group holds transferred state, which the op log does not: call
    /// [`Engine::checkpoint`] before acknowledging it.
    pub needs_checkpoint: bool,
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

/// One key's state as a group left it, and what its digest contribution
/// was before the group.
struct Dirty {
    obj: Object,
    old: Old,
    /// Collected (a stable tombstone): remove the key from the store.
    removed: bool,
    /// An upper bound of the object's encoded size (`None`: unknown), so
    /// the object budget is checked exactly only near its limit.
    size: Option<usize>,
    /// The exact size the next staged op leaves, when the budget check
    /// measured it.
    measured: Option<usize>,
}

enum Old {
    /// Read from the state store: its contribution then.
    Stored(u128),
    /// Taken from an earlier group still waiting: its contribution is known
    /// once that group commits.
    Pending,
}

/// Ops staged together and made durable together.
#[derive(Default)]
struct Group {
    id: u64,
    ops: Vec<Staged>,
    dirty: HashMap<(KeyspaceName, Key), Dirty>,
    conflicts: Vec<ledger::LedgerEntry>,
    /// Set when sealed: the version vector and registry as of this group.
    vv: VersionVector,
    registry: Option<Arc<Registry>>,
    hlc: Hlc,
    /// State arrived by transfer (not in the op log): the group must be made
    /// durable in the state store itself before it is acknowledged.
    installed: bool,
    /// What installed objects may reflect beyond `vv` (see [`Shared`]).
    covers: VersionVector,
}

/// Identifies a sealed group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupId(pub u64);

/// One region's replication engine. See the module docs for the cycle.
pub struct Engine<B: Backend> {
    me: ReplicaId,
    cfg: EngineConfig,
    clock: Clock,
    backend: Arc<B>,
    shared: Arc<Shared>,
    vv: VersionVector,
    registry: Registry,
    current: Group,
    sealed: std::collections::VecDeque<Group>,
    next_group: u64,
    /// Digest contributions written by committed groups, for later groups
    /// that took those keys from them; emptied when no group waits.
    recent: HashMap<(KeyspaceName, Key), u128>,
    digests: BTreeMap<KeyspaceName, u128>,
    ledger: Ledger,
    buffer: CausalBuffer,
    lsn: u64,
    stats: EngineStats,
    gc_cursor: Option<(KeyspaceName, Vec<u8>)>,
    /// The stable cuts of collections that removed tombstones (since
    /// start): states older than this may hold values those tombstones beat.
    collected_cut: VersionVector,
    /// Custom keys holding several versions, whose merge this region may
    /// owe ([`Engine::merge_due`]).
    due_merges: std::collections::BTreeSet<(KeyspaceName, Key)>,
    /// Every region of the cluster, once write-backs are enabled
    /// ([`Engine::enable_merges`]).
    merge_regions: Option<Vec<meridian_crdt::RegionId>>,
    /// Where the sweep of stored custom keys for owed merges stands
    /// (keyspace, next key); `None` when no sweep runs.
    merge_sweep: Option<(KeyspaceName, Vec<u8>)>,
    /// Keys were forgotten (too many due): sweep again after this sweep.
    sweep_again: bool,
    /// Write-backs wait until the vector covers this (see
    /// [`Engine::enable_merges_after`]).
    merge_hold: VersionVector,
    /// Keys whose merge failed, with whether the failure may pass by
    /// itself (tried again by [`Engine::retry_failed_merges`]).
    failed_merges: BTreeMap<(KeyspaceName, Key), bool>,
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
                match system_entry(k, &obj) {
                    Some(SystemEntry::Keyspace(def)) => registry.insert(def),
                    Some(SystemEntry::Merge(def)) => registry.insert_merge(def),
                    Some(SystemEntry::Map(ks, map)) => registry.insert_map(ks, map),
                    Some(SystemEntry::Owned(ks)) => registry.mark_owned(ks),
                    Some(SystemEntry::Fence(ks, r, f)) => registry.insert_fence(ks, r, f),
                    Some(SystemEntry::Token(def)) => registry.insert_token(def),
                    Some(SystemEntry::Revoked(id, at)) => registry.revoke_token(id, at),
                    None => {}
                }
                start = k.clone();
                start.push(0);
            }
        }
        let names: Vec<KeyspaceName> = registry.iter().map(|d| d.name.clone()).collect();
        let mut digests = BTreeMap::new();
        let mut trees = BTreeMap::new();
        for ks in names.iter().chain(std::iter::once(&sys)) {
            let tree = store::compute_tree(&*backend, ks)?;
            digests.insert(ks.clone(), store::tree_digest(&tree));
            trees.insert(ks.clone(), tree);
        }
        let ledger = Ledger::load(&*backend, names.iter())?;
        let buffer = CausalBuffer::new(cfg.causal_buffer_ops);
        let mut engine = Self {
            me,
            cfg,
            clock,
            backend,
            shared: Arc::new(Shared {
                upper: RwLock::new(ckpt.vv.clone()),
                published: RwLock::new(Arc::new(Published {
                    vv: ckpt.vv.clone(),
                    registry: Arc::new(registry.clone()),
                    digests: BTreeMap::new(),
                    ledger: BTreeMap::new(),
                    hlc: ckpt.hlc,
                    lsn: ckpt.lsn,
                    stats: EngineStats::default(),
                    buffered_top: VersionVector::new(),
                })),
                trees: RwLock::new(trees),
            }),
            vv: ckpt.vv,
            registry,
            current: Group::default(),
            sealed: std::collections::VecDeque::new(),
            next_group: 1,
            recent: HashMap::new(),
            digests,
            ledger,
            buffer,
            lsn: ckpt.lsn,
            stats: EngineStats::default(),
            gc_cursor: None,
            collected_cut: VersionVector::new(),
            due_merges: std::collections::BTreeSet::new(),
            merge_regions: None,
            merge_sweep: None,
            sweep_again: false,
            failed_merges: BTreeMap::new(),
            merge_hold: VersionVector::new(),
        };
        engine.publish(None);
        Ok(engine)
    }

    /// This region's replica id.
    pub fn replica(&self) -> &ReplicaId {
        &self.me
    }

    /// Continues as a new incarnation `me` (same region): local ops from
    /// now on are stamped with it, its seqs starting at 1. The old
    /// incarnation's ops stay what they are: ops of another replica, which
    /// peers may still send. Call after recovery, before any local write.
    pub fn reincarnate(&mut self, me: ReplicaId) {
        self.me = me;
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

    /// Ops staged in the current (unsealed) group, in order.
    pub fn staged(&self) -> impl Iterator<Item = &Op> {
        self.current.ops.iter().map(|s| &s.op)
    }

    /// Whether the current group holds anything to commit (ops, or ledger
    /// entries of merges that could not be written back).
    pub fn has_staged(&self) -> bool {
        !self.current.ops.is_empty() || !self.current.conflicts.is_empty()
    }

    /// Closes the current group (if it holds anything) so it can be logged;
    /// staging goes on in a new group layered on top of it.
    pub fn seal(&mut self) -> Option<GroupId> {
        if self.current.ops.is_empty()
            && !self.current.installed
            && self.current.conflicts.is_empty()
        {
            return None;
        }
        let mut g = std::mem::take(&mut self.current);
        g.id = self.next_group;
        self.next_group += 1;
        g.vv = self.vv.clone();
        g.registry = Some(Arc::new(self.registry.clone()));
        g.hlc = self.clock.last();
        let id = GroupId(g.id);
        self.sealed.push_back(g);
        Some(id)
    }

    /// The ops of a sealed group, in order: append these to the log.
    pub fn group_ops(&self, id: GroupId) -> impl Iterator<Item = &Op> {
        self.sealed
            .iter()
            .filter(move |g| g.id == id.0)
            .flat_map(|g| g.ops.iter().map(|s| &s.op))
    }

    /// Number of ops in a sealed group.
    pub fn group_len(&self, id: GroupId) -> usize {
        self.sealed
            .iter()
            .find(|g| g.id == id.0)
            .map_or(0, |g| g.ops.len())
    }

    /// Validates and stamps a client write and applies it to the overlay.
    /// Nothing is staged when it fails: a refused batch changes nothing.
    pub fn submit(&mut self, now_ms: u64, req: WriteRequest) -> Result<(), WriteError> {
        if req.mutations.is_empty() {
            return Err(WriteError::Empty);
        }
        // A floor: the write (and so everything after it here) is stamped
        // above it. Refused when it is further ahead than a peer's
        // timestamp may be; the clock moves to it only once the write is
        // about to be stamped, so a refused request leaves it alone.
        // The floor is the whole of its millisecond (logical counter at its
        // top): the write is stamped above every timestamp a copy taken
        // before that deadline can carry.
        let floor = req
            .not_before_ms
            .map(|f| Hlc::new(f, u16::MAX))
            .transpose()?;
        // The deadline bounds the timestamp the write will carry (the
        // clock's, which may run ahead of the wall clock), exactly as it
        // will be stamped.
        let stamp_ms = self.clock.peek(now_ms, floor)?.wall_ms();
        if let Some(deadline_ms) = req.deadline_ms.filter(|d| stamp_ms > *d) {
            return Err(WriteError::DeadlinePassed {
                deadline_ms,
                now_ms: stamp_ms,
            });
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
        let mut fallbacks = Vec::new();
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
            if let Change::Put { value, .. } = change
                && value.len() > MAX_VALUE
            {
                return Err(WriteError::ValueTooLarge {
                    len: value.len(),
                    max: MAX_VALUE,
                });
            }
            // Keys owned elsewhere, or not yet here (a handoff): refused,
            // unless the owner is unreachable and the map falls back.
            if let Some(f) = self.admit_owned(&def.name, key, req.fallback)? {
                fallbacks.push(f);
            }
            let asked = change;
            // Deletes and context writes of custom keys: only at the merger,
            // checked against the key's state below (merging.rs).
            let region_vv = self.admit_custom(&def, key, asked)?;
            // A client's context can claim anything; clamp it to what this
            // region has seen, so a forged one cannot cover writes that do
            // not exist yet (which would make them invisible).
            let clamped;
            let change = match change {
                Change::Put {
                    value,
                    context: Some(c),
                } => {
                    clamped = Change::Put {
                        value: value.clone(),
                        context: Some(c.meet(&self.vv)),
                    };
                    &clamped
                }
                Change::Delete { context: Some(c) } => {
                    clamped = Change::Delete {
                        context: Some(c.meet(&self.vv)),
                    };
                    &clamped
                }
                other => other,
            };
            let me = self.me.clone();
            let current = self.load(&def.name, key, def.policy)?;
            // A key holding state of a higher-ranked policy (written under a
            // concurrent definition of the keyspace that lost) ignores ops of
            // the keyspace's policy in every region: refuse, never ack a no-op.
            if current.obj.policy() > def.policy.storage() {
                return Err(WriteError::TypeClash {
                    keyspace: def.name.to_string(),
                    key: key.to_string(),
                    held: current.obj.policy(),
                    policy: def.policy,
                });
            }
            let change = match &region_vv {
                Some(vv) => merging::compare_and_set(&def, key, &current.obj, vv, asked)?,
                None => change,
            };
            let built = match build::build(&def, key, &current.obj, &me, change) {
                Ok(b) => b,
                Err(e) => {
                    if matches!(e, WriteError::MergePending { .. }) {
                        self.stats.merges_pending_refused += 1;
                    }
                    return Err(e);
                }
            };
            pruned += built.pruned;
            mutations.push(Mutation {
                keyspace: def.name,
                key: key.clone(),
                op: built.op,
            });
        }
        self.stats.siblings_pruned += pruned as u64;
        if let Some(f) = floor {
            self.clock.observe(f, now_ms)?;
        }
        self.stage_local(now_ms, mutations)?;
        self.record_fallbacks(fallbacks);
        Ok(())
    }

    /// Creates or updates a keyspace definition. `Ok(false)` when the
    /// definition is already exactly this (nothing staged).
    pub fn define(&mut self, now_ms: u64, def: KeyspaceDef) -> Result<bool, WriteError> {
        def.validate()?;
        if let Some(m) = def
            .merge_names()
            .into_iter()
            .find(|m| !self.registry.has_merge(m))
        {
            return Err(WriteError::UnknownMerge(m.to_string()));
        }
        if let Some(existing) = self.registry.get(def.name.as_str()) {
            if existing.policy != def.policy {
                return Err(WriteError::PolicyChange {
                    name: def.name.to_string(),
                    existing: existing.policy,
                    requested: def.policy,
                    current: Box::new(existing.clone()),
                });
            }
            if let Some((field, from, to)) = existing.schema.first_change(&def.schema) {
                return Err(WriteError::SchemaChange {
                    name: def.name.to_string(),
                    field,
                    from,
                    to,
                    current: Box::new(existing.clone()),
                });
            }
            if *existing == def {
                return Ok(false);
            }
        } else if self.registry.iter().count() >= self.cfg.max_keyspaces {
            return Err(WriteError::Limit {
                what: "keyspaces",
                max: self.cfg.max_keyspaces,
            });
        }
        let key = Key::new(def.name.as_str())?;
        self.put_system(now_ms, key, &def)?;
        Ok(true)
    }

    /// Creates or replaces an access token. `Ok(false)` when exactly this
    /// is defined already. A token id that was revoked is refused: a
    /// revocation is for good.
    pub fn define_token(
        &mut self,
        now_ms: u64,
        def: crate::access::TokenDef,
    ) -> Result<bool, WriteError> {
        let max_tokens = self.cfg.max_tokens;
        def.validate()
            .map_err(|e| WriteError::BadToken(e.to_string()))?;
        let tokens = self.registry.tokens();
        if tokens.is_revoked(&def.id) {
            return Err(WriteError::BadToken(format!(
                "token {} was revoked; a revoked id is never reused",
                def.id
            )));
        }
        match tokens.get(&def.id) {
            Some((held, _)) if **held == def => return Ok(false),
            Some(_) => {}
            None if tokens.live_count(now_ms) >= max_tokens => {
                return Err(WriteError::Limit {
                    what: "tokens",
                    max: max_tokens,
                });
            }
            None => {}
        }
        let key = Key::new(def.key())?;
        self.put_system(now_ms, key, &def)?;
        Ok(true)
    }

    /// Revokes a token, for good. `Ok(false)` when it was revoked already.
    /// An id this region has not seen defined is revoked too: a token made
    /// in another region may not have arrived yet, and must be refused
    /// once it does.
    pub fn revoke_token(&mut self, now_ms: u64, id: &str) -> Result<bool, WriteError> {
        if !crate::access::valid_id(id) {
            return Err(WriteError::BadToken(format!(
                "token id {id:?} is invalid: use 1 to 64 characters from a-z and 0-9"
            )));
        }
        if self.registry.tokens().is_revoked(id) {
            return Ok(false);
        }
        let key = Key::new(format!("{}{id}", crate::access::REVOKED_PREFIX))?;
        self.put_system(now_ms, key, &crate::access::Revocation { at_ms: now_ms })?;
        Ok(true)
    }

    /// Stages `value` as the last-writer-wins JSON of a system key.
    fn put_system(
        &mut self,
        now_ms: u64,
        key: Key,
        value: &impl serde::Serialize,
    ) -> Result<(), WriteError> {
        let sys = KeyspaceName::system();
        let json =
            serde_json::to_value(value).map_err(|e| StoreError::encode("system entry", e))?;
        let value = Value::Json(meridian_crdt::Json::from_value(&json));
        let current = self.load(&sys, &key, Policy::Lww)?;
        let Object::Lww(reg) = &current.obj else {
            return Err(StoreError::Invariant("a system entry is not lww".into()).into());
        };
        let op = meridian_crdt::ObjectOp::Lww(reg.set_op(value));
        self.stage_local(
            now_ms,
            vec![Mutation {
                keyspace: sys,
                key,
                op,
            }],
        )
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
        self.check_budget(&op)?;
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
    ///
    /// # Correctness
    /// A record is applied only when it is causally ready, exactly as a
    /// received op: next in its origin's sequence, dependencies covered. The
    /// log can hold ops whose causal past is in no record (they followed a
    /// state transfer, which lives in the state store only, and the crash
    /// came before the state was persisted): those wait in the causal buffer
    /// instead of raising the version vector past ops the state lacks, and
    /// peers send the missing past again.
    pub fn replay(&mut self, op: Op) -> Result<(), WriteError> {
        self.clock.restore(op.hlc);
        if self.vv.covers(&op.dot) {
            return Ok(());
        }
        let ready =
            self.vv.get(&op.dot.replica).next() == Some(op.dot.seq) && self.vv.covers_all(&op.deps);
        if !ready {
            if self.buffer.insert(op).is_err() {
                self.stats.buffer_overflow += 1;
            }
            return Ok(());
        }
        self.stage(op, Source::Replay)?;
        while let Some(next) = self.buffer.pop_ready(&self.vv) {
            self.stage(next, Source::Replay)?;
        }
        Ok(())
    }

    /// Number of ops in the current group.
    pub fn staged_len(&self) -> usize {
        self.current.ops.len()
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
            let def = self.registry.get(m.keyspace.as_str());
            let policy = def.map(|d| d.policy).unwrap_or(m.op.policy());
            let mergeable = def.is_some_and(|d| d.policy == Policy::Custom);
            let bound = self.cfg.max_clock_offset_ms;
            let op_len =
                codec::encoded_len(&m.op).map_err(|e| StoreError::encode("mutation", e))?;
            let entry = self.load(&m.keyspace, &m.key, policy)?;
            entry.removed = false;
            let merged = merging::merges_in(&entry.obj, &m.op);
            let conflicts = entry.obj.apply(&m.op, &meta);
            entry.size = match entry.measured.take() {
                Some(exact) => Some(exact),
                None => entry.size.map(|s| s.saturating_add(growth_bound(op_len))),
            };
            counters.push(match &entry.obj {
                Object::Counter(c) => Some(c.value()),
                _ => None,
            });
            let def_update = if m.keyspace.is_system() {
                system_entry(m.key.as_str().as_bytes(), &entry.obj)
            } else {
                None
            };
            let unmerged = mergeable && merging::unmerged(&entry.obj);
            for c in conflicts {
                *self.stats.conflicts.entry(m.keyspace.clone()).or_default() += 1;
                let e = self.ledger.record(&m.keyspace, &m.key, c, bound, now);
                self.current.conflicts.push(e);
            }
            for applied in merged {
                let version = meridian_crdt::Version::new(op.hlc, op.dot.clone());
                self.record_merge(&m.keyspace, &m.key, version, applied, now);
            }
            if unmerged {
                self.note_merge(&m.keyspace, &m.key);
            }
            if let Some(entry) = def_update {
                self.take_definition(entry);
            }
        }
        self.vv.add(&op.dot);
        *self
            .stats
            .applied
            .entry(op.dot.replica.clone())
            .or_default() += 1;
        self.current.ops.push(Staged {
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
        if !self.current.dirty.contains_key(&slot) {
            // The newest sealed group that touched the key has its state;
            // else the store.
            let earlier = self
                .sealed
                .iter()
                .rev()
                .find_map(|g| g.dirty.get(&slot))
                .map(|d| (d.obj.clone(), d.size));
            let d = match earlier {
                Some((obj, size)) => Dirty {
                    obj,
                    old: Old::Pending,
                    removed: false,
                    size,
                    measured: None,
                },
                None => match self
                    .backend
                    .get(&store::table(ks), key.as_str().as_bytes())?
                {
                    Some(bytes) => {
                        let obj = store::decode_object(ks, key.as_str().as_bytes(), &bytes)?;
                        let old = store::object_contribution(key.as_str().as_bytes(), &obj, &bytes);
                        Dirty {
                            obj,
                            old: Old::Stored(old),
                            removed: false,
                            size: Some(bytes.len()),
                            measured: None,
                        }
                    }
                    None => Dirty {
                        obj: Object::empty(policy),
                        old: Old::Stored(0),
                        removed: false,
                        size: Some(64),
                        measured: None,
                    },
                },
            };
            self.current.dirty.insert(slot.clone(), d);
        }
        self.current
            .dirty
            .get_mut(&slot)
            .ok_or_else(|| StoreError::Invariant("a dirty entry vanished".into()))
    }

    /// Seals and commits everything staged, for drivers without a pipeline:
    /// call only once the log holds every staged op durably. `last_lsn` is
    /// the log position of the last one (`None` when nothing was logged,
    /// e.g. after a pure replay).
    pub fn commit(&mut self, last_lsn: Option<Lsn>) -> Result<Committed, WriteError> {
        self.seal();
        let mut all = Committed {
            vv: self.shared.get().vv.clone(),
            applied: Vec::new(),
            needs_checkpoint: false,
        };
        while let Some(id) = self.sealed.front().map(|g| GroupId(g.id)) {
            let more = self.sealed.len() > 1;
            let c = self.commit_group(id, if more { None } else { last_lsn })?;
            all.vv = c.vv;
            all.applied.extend(c.applied);
            all.needs_checkpoint |= c.needs_checkpoint;
        }
        if self.sealed.is_empty() && all.applied.is_empty() {
            // Nothing staged: still record the log position (recovery).
            if let Some(l) = last_lsn {
                self.lsn = l.0;
            }
            self.shared.raise_upper(&self.vv);
            self.write_checkpoint(Batch::new(), self.vv.clone(), self.clock.last())?;
            self.publish(None);
            all.vv = self.vv.clone();
        }
        Ok(all)
    }

    /// Makes the oldest sealed group visible: one atomic batch with its
    /// state, its ledger entries and the checkpoint as of it. Call only once
    /// the log holds the group durably; `last_lsn` is the log position of its
    /// last op.
    pub fn commit_group(
        &mut self,
        id: GroupId,
        last_lsn: Option<Lsn>,
    ) -> Result<Committed, WriteError> {
        let Some(g) = self.sealed.front() else {
            return Err(StoreError::Invariant(format!("no sealed group {}", id.0)).into());
        };
        if g.id != id.0 {
            return Err(StoreError::Invariant(format!(
                "groups commit in order: {} is next, not {}",
                g.id, id.0
            ))
            .into());
        }
        let Some(mut g) = self.sealed.pop_front() else {
            return Err(StoreError::Invariant("a sealed group vanished".into()).into());
        };
        let later_waiting = !self.sealed.is_empty() || !self.current.dirty.is_empty();
        let mut batch = Batch::new();
        for ((ks, key), d) in g.dirty.drain() {
            let bytes = codec::encode(&d.obj).map_err(|e| StoreError::encode("object", e))?;
            let new = store::object_contribution(key.as_str().as_bytes(), &d.obj, &bytes);
            let old = match d.old {
                Old::Stored(h) => h,
                Old::Pending => self
                    .recent
                    .get(&(ks.clone(), key.clone()))
                    .copied()
                    .unwrap_or(0),
            };
            let new = if d.removed { 0 } else { new };
            let digest = self.digests.entry(ks.clone()).or_insert(0);
            *digest = digest.wrapping_sub(old).wrapping_add(new);
            {
                let mut trees = self
                    .shared
                    .trees
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                let tree = trees
                    .entry(ks.clone())
                    .or_insert_with(|| vec![0; store::BUCKETS]);
                let b = &mut tree[store::bucket_of(key.as_str().as_bytes())];
                *b = b.wrapping_sub(old).wrapping_add(new);
            }
            if d.removed {
                batch.delete(&store::table(&ks), key.as_str().as_bytes().to_vec());
            } else {
                batch.put(&store::table(&ks), key.as_str().as_bytes().to_vec(), bytes);
            }
            if later_waiting {
                self.recent.insert((ks, key), new);
            }
        }
        if !later_waiting {
            self.recent.clear();
        }
        let registry = g
            .registry
            .clone()
            .unwrap_or_else(|| Arc::new(self.registry.clone()));
        self.ledger.flush(
            std::mem::take(&mut g.conflicts),
            &mut batch,
            &*self.backend,
            |ks| {
                registry
                    .get(ks.as_str())
                    .map_or(10_000, |d| u64::from(d.ledger_capacity))
            },
            self.cfg.ledger_bytes,
        )?;
        if let Some(l) = last_lsn {
            self.lsn = l.0;
        }
        // Readers can see the group once the batch is written: raise the
        // vector their tokens come from first.
        self.shared.raise_upper(&g.vv);
        self.shared.raise_upper(&g.covers);
        self.write_checkpoint(batch, g.vv.clone(), g.hlc)?;
        self.publish(Some((g.vv.clone(), registry)));
        let applied = g
            .ops
            .drain(..)
            .map(|s| Applied {
                op: Arc::new(s.op),
                source: s.source,
                counters: s.counters,
            })
            .collect();
        Ok(Committed {
            vv: g.vv,
            applied,
            needs_checkpoint: g.installed,
        })
    }

    fn write_checkpoint(
        &mut self,
        mut batch: Batch,
        vv: VersionVector,
        hlc: Hlc,
    ) -> Result<(), StoreError> {
        let (k, v) = store::checkpoint_entry(&store::Checkpoint {
            vv,
            lsn: self.lsn,
            hlc,
        })?;
        batch.put(store::META, k, v);
        self.backend.write(batch)
    }

    /// Makes the state store durable up to the last commit (an fsync): after
    /// this, log records at or below the returned LSN are no longer needed
    /// for recovery.
    pub fn checkpoint(&self) -> Result<Lsn, StoreError> {
        self.backend.persist()?;
        Ok(Lsn(self.lsn))
    }

    /// What a checkpoint taken now would cover, and the store to persist:
    /// lets a driver run the (slow) fsync without holding the engine.
    /// Persisting `store` makes every op at or below the LSN durable.
    pub fn checkpoint_handle(&self) -> (Lsn, Arc<B>) {
        (Lsn(self.lsn), self.backend.clone())
    }

    fn publish(&mut self, as_of: Option<(VersionVector, Arc<Registry>)>) {
        self.stats.buffered = self.buffer.len();
        let (vv, registry) =
            as_of.unwrap_or_else(|| (self.vv.clone(), Arc::new(self.registry.clone())));
        self.shared.set(Published {
            vv,
            registry,
            digests: self.digests.clone(),
            ledger: self.ledger.counts().clone(),
            hlc: self.clock.last(),
            lsn: self.lsn,
            stats: self.stats.clone(),
            buffered_top: self.buffer.tops(),
        });
    }

    /// Seq of this region's next op.
    pub fn next_seq(&self) -> Seq {
        self.vv.get(&self.me).next().unwrap_or(Seq(u64::MAX))
    }
}

impl<B: Backend> Engine<B> {
    /// Installs a definition read from the system keyspace (an op, a
    /// transfer or a repair): keyspaces get a digest, and merges owed may
    /// now succeed.
    fn take_definition(&mut self, entry: SystemEntry) {
        match entry {
            SystemEntry::Keyspace(def) => {
                self.digests.entry(def.name.clone()).or_insert(0);
                let custom = def.policy == Policy::Custom;
                self.registry.insert(def);
                if custom {
                    self.merges_changed();
                }
            }
            SystemEntry::Merge(def) => {
                self.registry.insert_merge(def);
                self.merges_changed();
            }
            SystemEntry::Map(ks, map) => self.registry.insert_map(ks, map),
            SystemEntry::Owned(ks) => self.registry.mark_owned(ks),
            SystemEntry::Fence(ks, region, fence) => self.registry.insert_fence(ks, region, fence),
            SystemEntry::Token(def) => self.registry.insert_token(def),
            SystemEntry::Revoked(id, at) => self.registry.revoke_token(id, at),
        }
    }
}

/// What a system-keyspace entry defines.
enum SystemEntry {
    Keyspace(KeyspaceDef),
    Merge(crate::merge::MergeDef),
    Map(KeyspaceName, crate::ownership::OwnershipMap),
    Owned(KeyspaceName),
    Fence(
        KeyspaceName,
        meridian_crdt::RegionId,
        crate::ownership::Fence,
    ),
    Token(crate::access::TokenDef),
    Revoked(String, u64),
}

/// The definition a system-keyspace entry holds, if it holds one: a merge
/// script under `merge/NAME`, else a keyspace (named by the key).
fn system_entry(key: &[u8], obj: &Object) -> Option<SystemEntry> {
    let Object::Lww(reg) = obj else { return None };
    let Some(Value::Json(j)) = reg.value() else {
        return None;
    };
    let text = std::str::from_utf8(key).ok()?;
    if let Some(ks) = text.strip_prefix(crate::ownership::OWNED_PREFIX) {
        return KeyspaceName::new(ks).ok().map(SystemEntry::Owned);
    }
    if let Some(ks) = text.strip_prefix(crate::ownership::MAP_PREFIX) {
        let ks = KeyspaceName::new(ks).ok()?;
        return serde_json::from_str(j.as_str())
            .ok()
            .map(|m| SystemEntry::Map(ks, m));
    }
    if let Some(rest) = text.strip_prefix(crate::ownership::FENCE_PREFIX) {
        let (ks, region) = rest.split_once('/')?;
        let ks = KeyspaceName::new(ks).ok()?;
        let region = meridian_crdt::RegionId::new(region).ok()?;
        return serde_json::from_str(j.as_str())
            .ok()
            .map(|f| SystemEntry::Fence(ks, region, f));
    }
    if let Some(id) = text.strip_prefix(crate::access::TOKEN_PREFIX) {
        return serde_json::from_str::<crate::access::TokenDef>(j.as_str())
            .ok()
            .filter(|d| d.id == id && d.validate().is_ok())
            .map(SystemEntry::Token);
    }
    if let Some(id) = text.strip_prefix(crate::access::REVOKED_PREFIX) {
        return serde_json::from_str::<crate::access::Revocation>(j.as_str())
            .ok()
            .map(|r| SystemEntry::Revoked(id.to_string(), r.at_ms));
    }
    if key.starts_with(crate::merge::def::KEY_PREFIX.as_bytes()) {
        serde_json::from_str(j.as_str())
            .ok()
            .map(SystemEntry::Merge)
    } else {
        serde_json::from_str(j.as_str())
            .ok()
            .map(SystemEntry::Keyspace)
    }
}
