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
//!
//! # Where each step lives
//! - this file: the engine's data (the group overlays, the engine itself)
//!   and opening it;
//! - [`request`] what a client asks; `stage.rs` the events (submit,
//!   receive, replay) up to the overlay, with `admit.rs` (budgets),
//!   `owning.rs` (ownership) and `merging.rs` (custom merges) beside it;
//! - `commit.rs` sealing and committing a group; [`driver`] the order of
//!   the steps every driver runs; `publish.rs` what readers then see;
//! - `system.rs` keyspace, merge, ownership and token definitions, stored
//!   as system-keyspace entries, with [`keyspaces`] (definitions and their
//!   registry) and [`concern`] (write concerns); `bulk.rs` state transfer, repair and
//!   tombstone collection; [`store`] the layout in the state store;
//!   [`ledger`] the conflict ledger; [`reader`] the read side.

mod admit;
pub mod build;
mod bulk;
pub mod causal;
mod commit;
pub mod concern;
pub mod driver;
pub mod keyspaces;
pub mod ledger;
mod merging;
mod owning;
mod publish;
pub mod reader;
pub mod request;
mod stage;
pub mod store;
mod system;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use meridian_crdt::{Clock, Hlc, Object, ReplicaId, Seq, VersionVector};

use crate::op::{Key, KeyspaceName, Op};
use crate::state::{Backend, StoreError};
use causal::CausalBuffer;
use keyspaces::Registry;
use ledger::Ledger;
use request::WriteError;

pub use commit::{Applied, Committed, GroupId};
pub use publish::{Published, Shared};
pub use reader::{Read, ReadError, Reader};
pub use stage::{Received, Source};
use system::{SystemEntry, system_entry};

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

struct Staged {
    op: Op,
    source: Source,
    counters: Vec<Option<i128>>,
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

    /// Seq of this region's next op.
    pub fn next_seq(&self) -> Seq {
        self.vv.get(&self.me).next().unwrap_or(Seq(u64::MAX))
    }
}
