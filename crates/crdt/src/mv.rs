//! Multi-value register: concurrent writes are all kept, as siblings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::conflict::Conflict;
use crate::hlc::{Hlc, Version};
use crate::id::Dot;
use crate::replicated::{Crdt, OpMeta};
use crate::vv::VersionVector;

/// A register that keeps every value no write has replaced.
///
/// Each value (sibling) is tagged with the dot of the write that made it. A
/// write carries a causal context, the siblings it saw, and replaces exactly
/// those; concurrent writes become siblings side by side. A reader sees all
/// siblings plus the register's context, and writing back with that context
/// resolves them.
///
/// # Sibling cap
/// Writes that carry no context (blind writes) replace nothing, so siblings
/// could pile up. [`MvRegister::put_op`] takes a cap: when the write would
/// leave more than `cap` siblings, the op's context is widened to cover the
/// oldest ones by `(hlc, replica)`, so the op itself replaces them. The rule
/// is decided once, at the origin, and carried in the op, so every region
/// drops the same siblings. Concurrent writes in other regions can still push
/// the count above the cap until the next write; each region's writes bound
/// it again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MvRegister<V> {
    siblings: BTreeMap<Dot, Sibling<V>>,
    ctx: VersionVector,
}

impl<V> Default for MvRegister<V> {
    fn default() -> Self {
        Self {
            siblings: BTreeMap::new(),
            ctx: VersionVector::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Sibling<V> {
    hlc: Hlc,
    value: V,
    /// A merge write-back: the version it stands for in canonical order
    /// (see [`MergeStamp::at`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    at: Option<Version>,
}

/// A change to an [`MvRegister`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MvOp<V> {
    /// Write `value`, replacing the siblings covered by `ctx`.
    #[serde(rename = "p")]
    Put {
        /// What the writer saw.
        ctx: VersionVector,
        /// The new value.
        value: V,
    },
    /// Remove the siblings covered by `ctx` (a tombstone that leaves
    /// concurrent writes alone).
    #[serde(rename = "d")]
    Delete {
        /// What the deleter saw.
        ctx: VersionVector,
    },
    /// Write `value`, the result of merging the siblings covered by `ctx`
    /// (a merge function's write-back). Applies exactly as [`MvOp::Put`];
    /// `by` says what produced the value, so every region can record the
    /// same resolution.
    #[serde(rename = "g")]
    Merge {
        /// The siblings merged (and everything the merger had seen).
        ctx: VersionVector,
        /// The merged value.
        value: V,
        /// What produced it.
        by: MergeStamp,
    },
}

/// What a merge write-back ran: carried in the op so every region records
/// the same function, hash and inputs for one resolution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeStamp {
    /// The merge function's name.
    pub function: String,
    /// Content hash of the function that ran (hex SHA-256 of a script;
    /// a fixed tag for a built-in).
    pub hash: String,
    /// The versions merged, in the canonical order they were passed.
    pub inputs: Vec<Version>,
    /// Set when the function failed and the newest input was kept
    /// (last-writer-wins) instead: the error.
    pub failed: Option<String>,
    /// Where the merged value stands among versions, for later merges: the
    /// newest input holding exactly the merged value (a merge that picked
    /// one version), else the newest input. A write-back is thus ordered,
    /// and shows the region, of what it stands for, not of when and where
    /// the merger wrote it.
    #[serde(default)]
    pub at: Option<Version>,
}

/// A built put, with how many siblings the cap made it replace.
#[derive(Clone, Debug, PartialEq)]
pub struct MvPut<V> {
    /// The op to ship.
    pub op: MvOp<V>,
    /// Siblings replaced only because of the cap (not seen by the writer).
    pub pruned: usize,
}

impl<V: Clone + PartialEq> MvRegister<V> {
    /// The newest timestamp among the siblings.
    pub fn max_hlc(&self) -> Option<Hlc> {
        self.siblings.values().map(|s| s.hlc).max()
    }

    /// The op that writes `value` having seen `seen` (`None` for a blind write
    /// that replaces nothing), keeping at most `cap` siblings (at least 1).
    pub fn put_op(&self, seen: Option<&VersionVector>, value: V, cap: usize) -> MvPut<V> {
        let mut ctx = seen.cloned().unwrap_or_default();
        let mut survivors: Vec<(Hlc, &Dot)> = self
            .siblings
            .iter()
            .filter(|(d, _)| !ctx.covers(d))
            .map(|(d, s)| (s.hlc, d))
            .collect();
        let cap = cap.max(1);
        let mut pruned = 0;
        if survivors.len() + 1 > cap {
            survivors.sort_by(|a, b| (a.0, &a.1.replica).cmp(&(b.0, &b.1.replica)));
            let excess = survivors.len() + 1 - cap;
            for (_, dot) in &survivors[..excess] {
                ctx.add(dot);
            }
            // Widening an entry can cover more than the chosen siblings (older
            // ones from the same replica); count what the op really replaces.
            pruned = survivors.iter().filter(|(_, d)| ctx.covers(d)).count();
        }
        MvPut {
            op: MvOp::Put { ctx, value },
            pruned,
        }
    }

    /// How many siblings a write having seen `seen` leaves in place.
    pub fn survivors(&self, seen: Option<&VersionVector>) -> usize {
        match seen {
            Some(ctx) => self.siblings.keys().filter(|d| !ctx.covers(d)).count(),
            None => self.siblings.len(),
        }
    }

    /// The op that removes what the deleter saw (`None`: all this replica has).
    pub fn delete_op(&self, seen: Option<&VersionVector>) -> MvOp<V> {
        MvOp::Delete {
            ctx: seen.cloned().unwrap_or_else(|| self.ctx.clone()),
        }
    }

    /// The siblings in `(hlc, replica)` order, oldest first. A merge
    /// write-back appears as the version it stands for
    /// ([`MergeStamp::at`]): ordered, and named, as that one.
    pub fn siblings(&self) -> Vec<(Version, &V)> {
        let mut out: Vec<(Version, &V)> = self
            .siblings
            .iter()
            .map(|(d, s)| {
                let v =
                    s.at.clone()
                        .unwrap_or_else(|| Version::new(s.hlc, d.clone()));
                (v, &s.value)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp_stamp(&b.0));
        out
    }

    /// The op that replaces every sibling with `value`, their merge.
    pub fn merge_op(&self, value: V, by: MergeStamp) -> MvOp<V> {
        MvOp::Merge {
            ctx: self.ctx.clone(),
            value,
            by,
        }
    }

    /// The causal context a reader passes back to replace what it saw.
    pub fn context(&self) -> &VersionVector {
        &self.ctx
    }

    /// Number of siblings.
    pub fn len(&self) -> usize {
        self.siblings.len()
    }

    /// Whether there are no siblings.
    pub fn is_empty(&self) -> bool {
        self.siblings.is_empty()
    }

    fn remove_covered(&mut self, ctx: &VersionVector) {
        self.siblings.retain(|d, _| !ctx.covers(d));
    }
}

impl<V: Clone + PartialEq> Crdt for MvRegister<V> {
    type Op = MvOp<V>;
    type Value = V;

    fn apply(&mut self, op: &MvOp<V>, meta: &OpMeta<'_>) -> Vec<Conflict<V>> {
        if self.ctx.covers(meta.dot) {
            return Vec::new(); // seen already, or replaced by a write that saw it
        }
        let ctx = match op {
            MvOp::Put { ctx, .. } | MvOp::Delete { ctx } | MvOp::Merge { ctx, .. } => ctx,
        };
        self.remove_covered(ctx);
        let (value, at) = match op {
            MvOp::Put { value, .. } => (Some(value), None),
            MvOp::Merge { value, by, .. } => (Some(value), by.at.clone()),
            MvOp::Delete { .. } => (None, None),
        };
        if let Some(value) = value {
            self.siblings.insert(
                meta.dot.clone(),
                Sibling {
                    hlc: meta.hlc,
                    value: value.clone(),
                    at,
                },
            );
        }
        self.ctx.merge(ctx);
        self.ctx.add(meta.dot);
        Vec::new()
    }

    fn merge(&mut self, other: &Self) {
        // Keep a sibling if the other side has it too, or has never seen it.
        let theirs = &other.siblings;
        self.siblings
            .retain(|d, _| theirs.contains_key(d) || !other.ctx.covers(d));
        for (d, s) in theirs {
            if !self.ctx.covers(d) {
                self.siblings.insert(d.clone(), s.clone());
            }
        }
        self.ctx.merge(&other.ctx);
    }

    fn is_live(&self) -> bool {
        !self.siblings.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{RegionId, ReplicaId, Seq};
    use uuid::Uuid;

    fn dot(n: &str, s: u64) -> Dot {
        Dot::new(
            ReplicaId::new(RegionId::new(n).unwrap(), Uuid::from_u128(3)),
            Seq(s),
        )
    }

    fn apply(reg: &mut MvRegister<u32>, op: &MvOp<u32>, d: Dot, wall: u64) {
        let deps = VersionVector::new();
        reg.apply(
            op,
            &OpMeta {
                dot: &d,
                hlc: Hlc::new(wall, 0).unwrap(),
                deps: &deps,
            },
        );
    }

    fn values(reg: &MvRegister<u32>) -> Vec<u32> {
        reg.siblings().into_iter().map(|(_, v)| *v).collect()
    }

    #[test]
    fn concurrent_writes_become_siblings_and_a_context_write_resolves_them() {
        let mut r = MvRegister::default();
        let a = r.put_op(None, 1, 8).op;
        let b = r.put_op(None, 2, 8).op;
        apply(&mut r, &a, dot("x", 1), 10);
        apply(&mut r, &b, dot("y", 1), 11);
        assert_eq!(values(&r), vec![1, 2]);
        let resolve = r.put_op(Some(r.context()), 3, 8).op;
        apply(&mut r, &resolve, dot("x", 2), 12);
        assert_eq!(values(&r), vec![3]);
    }

    #[test]
    fn a_write_keeps_siblings_it_did_not_see() {
        let mut r = MvRegister::default();
        let op = r.put_op(None, 1, 8).op;
        apply(&mut r, &op, dot("x", 1), 10);
        let seen = r.context().clone();
        let op = r.put_op(None, 2, 8).op;
        apply(&mut r, &op, dot("y", 1), 11);
        let op = r.put_op(Some(&seen), 3, 8).op;
        apply(&mut r, &op, dot("x", 2), 12);
        assert_eq!(values(&r), vec![2, 3]);
    }

    #[test]
    fn the_cap_replaces_the_oldest_siblings() {
        let mut r = MvRegister::default();
        for (i, n) in ["a", "b", "c", "d"].iter().enumerate() {
            let put = r.put_op(None, i as u32, 3);
            apply(&mut r, &put.op, dot(n, 1), 10 + i as u64);
        }
        assert_eq!(values(&r), vec![1, 2, 3]);
        let put = r.put_op(None, 9, 3);
        assert_eq!(put.pruned, 1);
        apply(&mut r, &put.op, dot("e", 1), 20);
        assert_eq!(values(&r), vec![2, 3, 9]);
    }

    #[test]
    fn delete_leaves_concurrent_writes() {
        let mut r = MvRegister::default();
        let op = r.put_op(None, 1, 8).op;
        apply(&mut r, &op, dot("x", 1), 10);
        let del = r.delete_op(None);
        let mut other = r.clone();
        let op = other.put_op(None, 2, 8).op;
        apply(&mut other, &op, dot("y", 1), 11);
        apply(&mut r, &del, dot("x", 2), 12);
        assert!(!r.is_live());
        apply(&mut other, &del, dot("x", 2), 12);
        assert_eq!(values(&other), vec![2]);
    }

    #[test]
    fn a_late_op_already_replaced_stays_out() {
        // y's put, whose context covers x:1, arrives before x:1 itself.
        let mut r = MvRegister::default();
        let seen: VersionVector = [(dot("x", 1).replica, Seq(1))].into_iter().collect();
        apply(
            &mut r,
            &MvOp::Put {
                ctx: seen,
                value: 2,
            },
            dot("y", 1),
            12,
        );
        apply(
            &mut r,
            &MvOp::Put {
                ctx: VersionVector::new(),
                value: 1,
            },
            dot("x", 1),
            10,
        );
        assert_eq!(values(&r), vec![2]);
    }
}
