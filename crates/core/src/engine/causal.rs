//! Remote ops that arrived before their causal past: held until it is here.

use std::collections::BTreeMap;

use meridian_crdt::{ReplicaId, Seq, VersionVector};

use crate::op::Op;

/// A bounded buffer of ops waiting for their dependencies.
///
/// # Invariants
/// Holds at most `limit` ops; an op already covered by the version vector
/// it is drained against is dropped, never returned.
pub struct CausalBuffer {
    by_origin: BTreeMap<ReplicaId, BTreeMap<Seq, Op>>,
    len: usize,
    limit: usize,
}

impl CausalBuffer {
    /// An empty buffer holding at most `limit` ops.
    pub fn new(limit: usize) -> Self {
        Self {
            by_origin: BTreeMap::new(),
            len: 0,
            limit,
        }
    }

    /// Keeps `op` for later. Returns it back when the buffer is full (the
    /// sender will ship it again).
    pub fn insert(&mut self, op: Op) -> Result<(), Op> {
        if self.len >= self.limit {
            return Err(op);
        }
        let slot = self.by_origin.entry(op.dot.replica.clone()).or_default();
        if slot.insert(op.dot.seq, op).is_none() {
            self.len += 1;
        }
        Ok(())
    }

    /// Removes and returns one op that can be applied on top of `vv` (the
    /// next seq of its origin, dependencies covered), dropping ops `vv`
    /// already covers.
    pub fn pop_ready(&mut self, vv: &VersionVector) -> Option<Op> {
        let mut ready = None;
        for (origin, ops) in self.by_origin.iter_mut() {
            let have = vv.get(origin);
            while let Some(entry) = ops.first_entry() {
                if *entry.key() <= have {
                    entry.remove();
                    self.len -= 1;
                } else {
                    break;
                }
            }
            if let Some(entry) = ops.first_entry()
                && have.next() == Some(*entry.key())
                && vv.covers_all(&entry.get().deps)
            {
                ready = Some(entry.remove());
                self.len -= 1;
                break;
            }
        }
        self.by_origin.retain(|_, ops| !ops.is_empty());
        ready
    }

    /// Per origin, the highest seq waiting.
    pub fn tops(&self) -> VersionVector {
        let mut out = VersionVector::new();
        for (origin, ops) in &self.by_origin {
            if let Some((seq, _)) = ops.last_key_value() {
                out.raise(origin, *seq);
            }
        }
        out
    }

    /// Ops waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}
