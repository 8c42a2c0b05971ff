//! Add-wins observed-remove set.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::conflict::Conflict;
use crate::id::Dot;
use crate::replicated::{Crdt, OpMeta};
use crate::vv::VersionVector;

/// A set where a remove takes away only the adds it observed.
///
/// Every add tags its elements with the op's dot; a remove drops the tags
/// its origin had seen (the dots covered by the op's `deps`). So:
/// - an add concurrent with a remove of the same element survives it (add wins);
/// - an add the remover had seen stays removed in every region, whichever
///   arrives first: with causal delivery the add is applied before the
///   remove, and when a state that already reflects the remove is merged in
///   first, the set's causal context marks the add's dot as seen, so the add
///   is ignored when it comes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrSet<V: Ord> {
    entries: BTreeMap<V, BTreeSet<Dot>>,
    ctx: VersionVector,
}

impl<V: Ord> Default for OrSet<V> {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
            ctx: VersionVector::new(),
        }
    }
}

/// A change to an [`OrSet`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrSetOp<V> {
    /// Remove `remove` (as observed), then add `add` with a fresh tag. An
    /// element in both ends up present.
    #[serde(rename = "u")]
    Update {
        /// Elements to add.
        add: Vec<V>,
        /// Elements to remove.
        remove: Vec<V>,
    },
    /// Remove every element the origin had observed (delete).
    #[serde(rename = "c")]
    Clear,
}

impl<V: Ord + Clone> OrSet<V> {
    /// The op that adds `values`.
    pub fn add_op(&self, values: Vec<V>) -> OrSetOp<V> {
        OrSetOp::Update {
            add: values,
            remove: Vec::new(),
        }
    }

    /// The op that removes `values` as this replica sees them.
    pub fn remove_op(&self, values: Vec<V>) -> OrSetOp<V> {
        OrSetOp::Update {
            add: Vec::new(),
            remove: values,
        }
    }

    /// The op that removes everything this replica sees.
    pub fn clear_op(&self) -> OrSetOp<V> {
        OrSetOp::Clear
    }

    /// Whether `v` is in the set.
    pub fn contains(&self, v: &V) -> bool {
        self.entries.contains_key(v)
    }

    /// The elements in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = &V> {
        self.entries.keys()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the set has no elements.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn drop_observed(&mut self, v: &V, seen: &VersionVector) {
        if let Some(tags) = self.entries.get_mut(v) {
            tags.retain(|d| !seen.covers(d));
            if tags.is_empty() {
                self.entries.remove(v);
            }
        }
    }
}

impl<V: Ord + Clone> Crdt for OrSet<V> {
    type Op = OrSetOp<V>;
    type Value = std::convert::Infallible;

    fn apply(&mut self, op: &OrSetOp<V>, meta: &OpMeta<'_>) -> Vec<Conflict<Self::Value>> {
        if self.ctx.covers(meta.dot) {
            return Vec::new(); // applied before, or merged in already
        }
        match op {
            OrSetOp::Update { add, remove } => {
                for v in remove {
                    self.drop_observed(v, meta.deps);
                }
                for v in add {
                    self.entries
                        .entry(v.clone())
                        .or_default()
                        .insert(meta.dot.clone());
                }
            }
            OrSetOp::Clear => {
                self.entries.retain(|_, tags| {
                    tags.retain(|d| !meta.deps.covers(d));
                    !tags.is_empty()
                });
            }
        }
        self.ctx.add(meta.dot);
        Vec::new()
    }

    fn merge(&mut self, other: &Self) {
        let mine = std::mem::take(&mut self.entries);
        let mut keys: BTreeSet<&V> = mine.keys().collect();
        keys.extend(other.entries.keys());
        let empty = BTreeSet::new();
        let mut out = BTreeMap::new();
        for v in keys {
            let a = mine.get(v).unwrap_or(&empty);
            let b = other.entries.get(v).unwrap_or(&empty);
            let tags: BTreeSet<Dot> = a
                .iter()
                .filter(|d| b.contains(d) || !other.ctx.covers(d))
                .chain(b.iter().filter(|d| !self.ctx.covers(d)))
                .cloned()
                .collect();
            if !tags.is_empty() {
                out.insert(v.clone(), tags);
            }
        }
        self.entries = out;
        self.ctx.merge(&other.ctx);
    }

    fn is_live(&self) -> bool {
        !self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Hlc;
    use crate::id::{RegionId, ReplicaId, Seq};
    use uuid::Uuid;

    fn dot(n: &str, s: u64) -> Dot {
        Dot::new(
            ReplicaId::new(RegionId::new(n).unwrap(), Uuid::from_u128(4)),
            Seq(s),
        )
    }

    fn apply(set: &mut OrSet<u8>, op: &OrSetOp<u8>, d: &Dot, deps: &VersionVector) {
        set.apply(
            op,
            &OpMeta {
                dot: d,
                hlc: Hlc::new(1, 0).unwrap(),
                deps,
            },
        );
    }

    #[test]
    fn concurrent_add_survives_a_remove() {
        let none = VersionVector::new();
        let mut a = OrSet::default();
        let add1 = a.add_op(vec![1]);
        apply(&mut a, &add1, &dot("a", 1), &none);
        let mut b = a.clone();
        // a removes 1 having seen a:1; b re-adds 1 concurrently.
        let saw: VersionVector = [(dot("a", 1).replica, Seq(1))].into_iter().collect();
        let rm = a.remove_op(vec![1]);
        apply(&mut a, &rm, &dot("a", 2), &saw);
        let readd = b.add_op(vec![1]);
        apply(&mut b, &readd, &dot("b", 1), &saw);
        apply(&mut a, &readd, &dot("b", 1), &saw);
        apply(&mut b, &rm, &dot("a", 2), &saw);
        assert_eq!(a, b);
        assert!(a.contains(&1));
    }

    #[test]
    fn observed_add_stays_removed_when_the_removal_arrives_first() {
        let none = VersionVector::new();
        let mut a = OrSet::default();
        let add = a.add_op(vec![7]);
        apply(&mut a, &add, &dot("a", 1), &none);
        let saw: VersionVector = [(dot("a", 1).replica, Seq(1))].into_iter().collect();
        let rm = a.remove_op(vec![7]);
        apply(&mut a, &rm, &dot("a", 2), &saw);
        // b learns of the removal through a state merge before the add op arrives.
        let mut b = OrSet::default();
        b.merge(&a);
        apply(&mut b, &add, &dot("a", 1), &none);
        assert!(!b.contains(&7));
        assert_eq!(a, b);
    }

    #[test]
    fn merge_keeps_unseen_adds_and_drops_removed_ones() {
        let none = VersionVector::new();
        let mut a = OrSet::default();
        apply(
            &mut a,
            &OrSetOp::Update {
                add: vec![1, 2],
                remove: vec![],
            },
            &dot("a", 1),
            &none,
        );
        let mut b = a.clone();
        let saw: VersionVector = [(dot("a", 1).replica, Seq(1))].into_iter().collect();
        apply(
            &mut b,
            &OrSetOp::Update {
                add: vec![],
                remove: vec![1],
            },
            &dot("b", 1),
            &saw,
        );
        apply(
            &mut a,
            &OrSetOp::Update {
                add: vec![3],
                remove: vec![],
            },
            &dot("a", 2),
            &saw,
        );
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab, ba);
        assert_eq!(ab.iter().copied().collect::<Vec<_>>(), vec![2, 3]);
    }

    #[test]
    fn clear_removes_only_what_was_seen() {
        let none = VersionVector::new();
        let mut a = OrSet::default();
        let op = a.add_op(vec![1]);
        apply(&mut a, &op, &dot("a", 1), &none);
        let saw: VersionVector = [(dot("a", 1).replica, Seq(1))].into_iter().collect();
        let op = a.add_op(vec![2]);
        apply(&mut a, &op, &dot("b", 1), &none);
        apply(&mut a, &OrSetOp::Clear, &dot("a", 2), &saw);
        assert_eq!(a.iter().copied().collect::<Vec<_>>(), vec![2]);
    }
}
