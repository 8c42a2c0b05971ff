//! Positive-negative counter.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::conflict::Conflict;
use crate::id::ReplicaId;
use crate::replicated::{Crdt, OpMeta};

/// Why a counter op could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CounterError {
    /// The result would leave the signed 64-bit range.
    #[error("counter overflow: {current} + {by} is outside the 64-bit signed range")]
    Overflow {
        /// The value this replica sees.
        current: i128,
        /// The requested change.
        by: i64,
    },
}

/// Totals of one replica's increments and decrements.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PnEntry {
    /// Sum of increments.
    pub inc: u64,
    /// Sum of decrements (as a positive number).
    pub dec: u64,
}

impl PnEntry {
    fn join(&mut self, other: &PnEntry) {
        self.inc = self.inc.max(other.inc);
        self.dec = self.dec.max(other.dec);
    }
}

/// A counter that every region can increment and decrement: increments and
/// decrements add up, never lost, never doubled.
///
/// Each replica keeps its own running totals; an op carries the origin's new
/// totals (not a delta), so applying it twice changes nothing. Deletion keeps
/// a *floor* (the totals the deleter saw): the value counts only what is
/// above it, so an increment concurrent with a delete survives it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PnCounter {
    entries: BTreeMap<ReplicaId, PnEntry>,
    floor: BTreeMap<ReplicaId, PnEntry>,
}

/// A change to a [`PnCounter`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CounterOp {
    /// The origin's totals after its increment or decrement.
    #[serde(rename = "t")]
    Totals(PnEntry),
    /// Reset to zero what the deleter saw.
    #[serde(rename = "d")]
    Delete(BTreeMap<ReplicaId, PnEntry>),
}

impl PnCounter {
    /// The op that adds `by` (negative to decrement) on behalf of `replica`.
    pub fn incr_op(&self, replica: &ReplicaId, by: i64) -> Result<CounterOp, CounterError> {
        let current = self.value();
        let overflow = CounterError::Overflow { current, by };
        let next = current + i128::from(by);
        if next > i128::from(i64::MAX) || next < i128::from(i64::MIN) {
            return Err(overflow);
        }
        let mut e = self.entries.get(replica).copied().unwrap_or_default();
        if by >= 0 {
            e.inc = e.inc.checked_add(by.unsigned_abs()).ok_or(overflow)?;
        } else {
            e.dec = e.dec.checked_add(by.unsigned_abs()).ok_or(overflow)?;
        }
        Ok(CounterOp::Totals(e))
    }

    /// The op that resets the counter as this replica sees it.
    pub fn delete_op(&self) -> CounterOp {
        CounterOp::Delete(self.entries.clone())
    }

    /// The current value: increments minus decrements above the floor. Wider
    /// than `i64` because concurrent changes in several regions can together
    /// leave the range each region checked on its own.
    pub fn value(&self) -> i128 {
        self.entries
            .iter()
            .map(|(r, e)| {
                let f = self.floor.get(r).copied().unwrap_or_default();
                i128::from(e.inc.saturating_sub(f.inc)) - i128::from(e.dec.saturating_sub(f.dec))
            })
            .sum()
    }
}

impl Crdt for PnCounter {
    type Op = CounterOp;
    type Value = std::convert::Infallible;

    fn apply(&mut self, op: &CounterOp, meta: &OpMeta<'_>) -> Vec<Conflict<Self::Value>> {
        match op {
            CounterOp::Totals(t) => self
                .entries
                .entry(meta.dot.replica.clone())
                .or_default()
                .join(t),
            CounterOp::Delete(seen) => {
                for (r, e) in seen {
                    self.floor.entry(r.clone()).or_default().join(e);
                    // The deleter saw these totals, so they exist.
                    self.entries.entry(r.clone()).or_default().join(e);
                }
            }
        }
        Vec::new()
    }

    fn merge(&mut self, other: &Self) {
        for (r, e) in &other.entries {
            self.entries.entry(r.clone()).or_default().join(e);
        }
        for (r, e) in &other.floor {
            self.floor.entry(r.clone()).or_default().join(e);
        }
    }

    /// Live when some replica's totals are above the floor: it has been
    /// changed since the last delete it saw.
    fn is_live(&self) -> bool {
        self.entries.iter().any(|(r, e)| {
            let f = self.floor.get(r).copied().unwrap_or_default();
            e.inc > f.inc || e.dec > f.dec
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Hlc;
    use crate::id::{Dot, RegionId, Seq};
    use crate::vv::VersionVector;
    use uuid::Uuid;

    fn rep(n: &str) -> ReplicaId {
        ReplicaId::new(RegionId::new(n).unwrap(), Uuid::from_u128(5))
    }

    fn apply(c: &mut PnCounter, op: &CounterOp, who: &str, seq: u64) {
        let d = Dot::new(rep(who), Seq(seq));
        let deps = VersionVector::new();
        c.apply(
            op,
            &OpMeta {
                dot: &d,
                hlc: Hlc::new(1, 0).unwrap(),
                deps: &deps,
            },
        );
    }

    #[test]
    fn increments_and_decrements_add_up_and_replays_do_not_double() {
        let mut c = PnCounter::default();
        let op = c.incr_op(&rep("a"), 5).unwrap();
        apply(&mut c, &op, "a", 1);
        apply(&mut c, &op, "a", 1);
        let op = c.incr_op(&rep("a"), -7).unwrap();
        apply(&mut c, &op, "a", 2);
        let op = c.incr_op(&rep("b"), 10).unwrap();
        apply(&mut c, &op, "b", 1);
        assert_eq!(c.value(), 8);
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        let mut c = PnCounter::default();
        let op = c.incr_op(&rep("a"), i64::MAX).unwrap();
        apply(&mut c, &op, "a", 1);
        let err = c.incr_op(&rep("a"), 1).unwrap_err();
        assert_eq!(
            err,
            CounterError::Overflow {
                current: i128::from(i64::MAX),
                by: 1
            }
        );
        assert!(c.incr_op(&rep("a"), i64::MIN).is_ok());
    }

    #[test]
    fn delete_keeps_concurrent_increments() {
        let mut a = PnCounter::default();
        let op = a.incr_op(&rep("a"), 3).unwrap();
        apply(&mut a, &op, "a", 1);
        let mut b = a.clone();
        let del = a.delete_op();
        apply(&mut a, &del, "a", 2);
        assert!(!a.is_live());
        assert_eq!(a.value(), 0);
        let inc = b.incr_op(&rep("b"), 2).unwrap();
        apply(&mut b, &inc, "b", 1);
        apply(&mut b, &del, "a", 2);
        apply(&mut a, &inc, "b", 1);
        assert_eq!(a, b);
        assert_eq!(a.value(), 2);
        assert!(a.is_live());
    }
}
