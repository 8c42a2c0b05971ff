//! The events: a client write ([`Engine::submit`]), ops from a peer
//! ([`Engine::receive`]), a log record at startup ([`Engine::replay`]) and
//! system definitions. Each is validated, stamped (local writes only) and
//! applied to the current group's private overlay: nothing is visible yet.
//!
//! Why past ~400 lines: the events (submit, receive, replay) share the
//! staging step they end in.

use super::{Dirty, Engine, Old, Staged, build, merging, store, system_entry};
use meridian_crdt::codec;
use meridian_crdt::{ClockError, Crdt, Dot, Hlc, Object, OpMeta, Policy};

use super::request::{Change, MAX_MUTATIONS, MAX_VALUE, MutationRequest, WriteError, WriteRequest};
use crate::budget::growth_bound;
use crate::op::{Key, KeyspaceName, Mutation, Op};
use crate::state::{Backend, StoreError};

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

impl<B: Backend> Engine<B> {
    /// Ops staged in the current (unsealed) group, in order.
    pub fn staged(&self) -> impl Iterator<Item = &Op> {
        self.current.ops.iter().map(|s| &s.op)
    }

    /// Whether the current group holds anything to commit (ops, or ledger
    /// entries of merges that could not be written back).
    pub fn has_staged(&self) -> bool {
        !self.current.ops.is_empty() || !self.current.conflicts.is_empty()
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

    pub(super) fn stage_local(
        &mut self,
        now_ms: u64,
        mutations: Vec<Mutation>,
    ) -> Result<(), WriteError> {
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

    pub(super) fn stage_remote(&mut self, now_ms: u64, op: Op) -> Result<(), WriteError> {
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

    pub(super) fn stage(&mut self, op: Op, source: Source) -> Result<(), WriteError> {
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

    pub(super) fn load(
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
}
