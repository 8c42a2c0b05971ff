//! Which seqs of each origin the log really holds at its top.
//!
//! A log does not always hold every op from its oldest one up: ops that
//! arrived by state transfer are in the state store only, so the log can
//! jump from an origin's seq 10 to its seq 100. Shipping from such a log to
//! a peer at seq 20 would send 100 first, which the peer can never apply.
//! [`Runs`] keeps, per origin, the run of consecutive seqs ending at the
//! highest one logged: only seqs inside it can be shipped from the log.

use std::collections::BTreeMap;

use meridian_crdt::{ReplicaId, Seq};

/// Per origin: the first and last seq of the unbroken run of logged seqs
/// that ends at the highest one.
///
/// # Invariants
/// Every seq from `floor` to `last` of an origin was noted (in log order);
/// a seq above `last + 1` starts a new run. Seqs at or below `last` (a
/// re-logged duplicate) change nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Runs(BTreeMap<ReplicaId, (Seq, Seq)>);

impl Runs {
    /// Notes that `origin`'s `seq` was logged after everything noted so far.
    pub fn note(&mut self, origin: &ReplicaId, seq: Seq) {
        match self.0.get_mut(origin) {
            Some((floor, last)) => {
                if seq.0 == last.0 + 1 {
                    *last = seq;
                } else if seq > *last {
                    *floor = seq;
                    *last = seq;
                }
            }
            None => {
                self.0.insert(origin.clone(), (seq, seq));
            }
        }
    }

    /// The highest seq of `origin` logged (after everything noted so far).
    pub fn last(&self, origin: &ReplicaId) -> Option<Seq> {
        self.0.get(origin).map(|(_, last)| *last)
    }

    /// Per origin, the lowest seq from which every op up to the highest
    /// logged one is in the log, given `retained`: the lowest seq per origin
    /// still in the log's segments (retention removes from the bottom).
    pub fn floors(&self, retained: &BTreeMap<ReplicaId, Seq>) -> BTreeMap<ReplicaId, Seq> {
        retained
            .iter()
            .map(|(r, lo)| {
                let floor = self.0.get(r).map_or(*lo, |(f, _)| (*f).max(*lo));
                (r.clone(), floor)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_crdt::RegionId;
    use uuid::Uuid;

    #[test]
    fn a_jump_starts_a_new_run_and_duplicates_change_nothing() {
        let a = ReplicaId::new(RegionId::new("a").unwrap(), Uuid::from_u128(1));
        let mut runs = Runs::default();
        for s in 1..=10 {
            runs.note(&a, Seq(s));
        }
        let retained: BTreeMap<_, _> = [(a.clone(), Seq(1))].into_iter().collect();
        assert_eq!(runs.floors(&retained)[&a], Seq(1));
        // A state transfer covered 11..99; the log goes on at 100.
        runs.note(&a, Seq(100));
        runs.note(&a, Seq(101));
        assert_eq!(runs.floors(&retained)[&a], Seq(100));
        // A duplicate below the top changes nothing.
        runs.note(&a, Seq(50));
        assert_eq!(runs.floors(&retained)[&a], Seq(100));
        // Retention above the run's floor wins.
        let later: BTreeMap<_, _> = [(a.clone(), Seq(101))].into_iter().collect();
        assert_eq!(runs.floors(&later)[&a], Seq(101));
    }
}
