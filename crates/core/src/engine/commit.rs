//! Sealing a group and committing it: the engine's half of the protocol
//! [`super::driver`] runs. A sealed group's ops go to the log; once they
//! are durable, [`Engine::commit_group`] writes its overlay, ledger entries
//! and checkpoint in one batch and publishes it.

use super::stage::Source;
use super::{Engine, Old, store};
use std::sync::{Arc, PoisonError};

use meridian_crdt::codec;
use meridian_crdt::{Hlc, VersionVector};

use super::request::WriteError;
use crate::log::Lsn;
use crate::op::Op;
use crate::state::{Backend, Batch, StoreError};

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

/// Identifies a sealed group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupId(pub u64);

impl<B: Backend> Engine<B> {
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
}
