//! Last-writer-wins register.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::conflict::Conflict;
use crate::hlc::Version;
use crate::replicated::{Crdt, OpMeta};

/// A register holding the value of the write with the highest stamp
/// `(hlc, replica)`. Deletes are writes of "no value" (tombstones) and take
/// part in the same order, so a delete wins over older writes and loses to
/// newer ones.
///
/// Because HLCs follow causality, a write that had seen the current value
/// always wins over it. Only concurrent writes can lose, and every loss is
/// reported as a [`Conflict`] so the engine can put it in the ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LwwRegister<V> {
    current: Option<Entry<V>>,
}

impl<V> Default for LwwRegister<V> {
    fn default() -> Self {
        Self { current: None }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Entry<V> {
    version: Version,
    value: Option<V>,
}

/// A change to an [`LwwRegister`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LwwOp<V> {
    /// Write a value.
    #[serde(rename = "s")]
    Set(V),
    /// Write a tombstone.
    #[serde(rename = "d")]
    Delete,
}

impl<V: Clone + PartialEq> LwwRegister<V> {
    /// The op that writes `value`.
    pub fn set_op(&self, value: V) -> LwwOp<V> {
        LwwOp::Set(value)
    }

    /// The op that deletes the value.
    pub fn delete_op(&self) -> LwwOp<V> {
        LwwOp::Delete
    }

    /// The live value, `None` when absent or deleted.
    pub fn value(&self) -> Option<&V> {
        self.current.as_ref().and_then(|e| e.value.as_ref())
    }

    /// The newest timestamp the register holds.
    pub fn max_hlc(&self) -> Option<crate::Hlc> {
        self.version().map(|v| v.hlc)
    }

    /// The version of the current value (or tombstone).
    pub fn version(&self) -> Option<&Version> {
        self.current.as_ref().map(|e| &e.version)
    }

    /// Whether the register holds a tombstone.
    pub fn is_tombstone(&self) -> bool {
        self.current.as_ref().is_some_and(|e| e.value.is_none())
    }
}

impl<V: Clone + PartialEq> Crdt for LwwRegister<V> {
    type Op = LwwOp<V>;
    type Value = V;

    fn apply(&mut self, op: &LwwOp<V>, meta: &OpMeta<'_>) -> Vec<Conflict<V>> {
        let incoming = Entry {
            version: meta.version(),
            value: match op {
                LwwOp::Set(v) => Some(v.clone()),
                LwwOp::Delete => None,
            },
        };
        let Some(current) = self.current.as_mut() else {
            self.current = Some(incoming);
            return Vec::new();
        };
        match incoming.version.cmp_stamp(&current.version) {
            Ordering::Equal => Vec::new(), // the same op again
            Ordering::Greater => {
                // A causal overwrite (the op had seen the current value) is
                // not a conflict; a concurrent one is.
                let concurrent = !meta.deps.covers(&current.version.dot);
                let old = std::mem::replace(current, incoming);
                if concurrent {
                    vec![Conflict {
                        path: Vec::new(),
                        winner: current.version.clone(),
                        winner_value: current.value.clone(),
                        loser: old.version,
                        loser_value: old.value,
                    }]
                } else {
                    Vec::new()
                }
            }
            // A lower stamp cannot have seen the current value (HLCs follow
            // causality), so this is a concurrent write losing.
            Ordering::Less => vec![Conflict {
                path: Vec::new(),
                winner: current.version.clone(),
                winner_value: current.value.clone(),
                loser: incoming.version,
                loser_value: incoming.value,
            }],
        }
    }

    fn merge(&mut self, other: &Self) {
        if let Some(theirs) = &other.current {
            let replace = match &self.current {
                None => true,
                Some(mine) => theirs.version.cmp_stamp(&mine.version) == Ordering::Greater,
            };
            if replace {
                self.current = Some(theirs.clone());
            }
        }
    }

    fn is_live(&self) -> bool {
        self.value().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Hlc;
    use crate::id::{Dot, RegionId, ReplicaId, Seq};
    use crate::vv::VersionVector;
    use uuid::Uuid;

    fn rep(n: &str) -> ReplicaId {
        ReplicaId::new(RegionId::new(n).unwrap(), Uuid::from_u128(7))
    }

    fn apply(
        reg: &mut LwwRegister<&'static str>,
        op: LwwOp<&'static str>,
        who: &str,
        seq: u64,
        wall: u64,
        deps: &VersionVector,
    ) -> Vec<Conflict<&'static str>> {
        let dot = Dot::new(rep(who), Seq(seq));
        reg.apply(
            &op,
            &OpMeta {
                dot: &dot,
                hlc: Hlc::new(wall, 0).unwrap(),
                deps,
            },
        )
    }

    #[test]
    fn causal_overwrite_is_not_a_conflict() {
        let mut r = LwwRegister::default();
        let none = VersionVector::new();
        assert!(apply(&mut r, LwwOp::Set("a"), "x", 1, 10, &none).is_empty());
        let saw: VersionVector = [(rep("x"), Seq(1))].into_iter().collect();
        assert!(apply(&mut r, LwwOp::Set("b"), "y", 1, 20, &saw).is_empty());
        assert_eq!(r.value(), Some(&"b"));
    }

    #[test]
    fn concurrent_writes_report_the_loser_either_way() {
        let none = VersionVector::new();
        let mut r1 = LwwRegister::default();
        apply(&mut r1, LwwOp::Set("old"), "x", 1, 10, &none);
        let c = apply(&mut r1, LwwOp::Set("new"), "y", 1, 20, &none);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].loser_value, Some("old"));
        assert_eq!(c[0].winner_value, Some("new"));

        let mut r2 = LwwRegister::default();
        apply(&mut r2, LwwOp::Set("new"), "y", 1, 20, &none);
        let c2 = apply(&mut r2, LwwOp::Set("old"), "x", 1, 10, &none);
        assert_eq!(c2, c);
        assert_eq!(r1, r2);
        assert!(c[0].is_ambiguous(500));
        assert!(!c[0].is_ambiguous(10));
    }

    #[test]
    fn ties_on_hlc_break_by_replica() {
        let none = VersionVector::new();
        let mut r = LwwRegister::default();
        apply(&mut r, LwwOp::Set("from-b"), "b", 1, 10, &none);
        apply(&mut r, LwwOp::Set("from-a"), "a", 1, 10, &none);
        assert_eq!(r.value(), Some(&"from-b"));
    }

    #[test]
    fn delete_is_a_tombstone_in_the_same_order() {
        let none = VersionVector::new();
        let mut r = LwwRegister::default();
        apply(&mut r, LwwOp::Set("v"), "a", 1, 10, &none);
        let saw: VersionVector = [(rep("a"), Seq(1))].into_iter().collect();
        apply(&mut r, LwwOp::Delete, "a", 2, 11, &saw);
        assert!(r.is_tombstone());
        assert!(!r.is_live());
        // A concurrent older write does not resurrect it.
        let c = apply(&mut r, LwwOp::Set("late"), "b", 1, 5, &none);
        assert_eq!(c[0].winner_value, None);
        assert!(!r.is_live());
    }
}
