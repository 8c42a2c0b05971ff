//! Version vectors: what a replica (or a key) has seen, per origin.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::de::{SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::id::{Dot, ReplicaId, Seq};

/// How two version vectors relate in causal order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CausalOrder {
    /// Both have seen exactly the same.
    Equal,
    /// `self` has seen a strict subset of `other`.
    Before,
    /// `self` has seen a strict superset of `other`.
    After,
    /// Each has seen something the other has not.
    Concurrent,
}

/// A map origin -> highest seq seen from it. Missing origins are seq 0.
///
/// For a replica, an entry `r -> n` means every op of `r` with seq `<= n` has
/// been applied. For one key's causal context it means every op of `r` with
/// seq `<= n` *that touched this key* is reflected in the key's state (causal
/// delivery makes the two readings agree).
///
/// # Encoding
/// A sequence of `[replica, seq]` pairs in ascending replica order with no
/// zero seqs: one encoding per value, so equal vectors give equal bytes.
/// Decoding rejects anything else.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct VersionVector(BTreeMap<ReplicaId, Seq>);

impl VersionVector {
    /// The empty vector (has seen nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// The highest seq seen from `origin` (0 when none).
    pub fn get(&self, origin: &ReplicaId) -> Seq {
        self.0.get(origin).copied().unwrap_or(Seq::ZERO)
    }

    /// Raises the entry for `origin` to at least `seq`.
    pub fn raise(&mut self, origin: &ReplicaId, seq: Seq) {
        if seq == Seq::ZERO {
            return;
        }
        match self.0.get_mut(origin) {
            Some(s) => *s = (*s).max(seq),
            None => {
                self.0.insert(origin.clone(), seq);
            }
        }
    }

    /// Records `dot` as seen (raises its origin's entry to its seq).
    pub fn add(&mut self, dot: &Dot) {
        self.raise(&dot.replica, dot.seq);
    }

    /// Whether `dot` is covered: its seq is at or below the entry for its origin.
    pub fn covers(&self, dot: &Dot) -> bool {
        dot.seq != Seq::ZERO && self.get(&dot.replica) >= dot.seq
    }

    /// Whether every entry of `other` is covered by `self` (`other <= self`).
    pub fn covers_all(&self, other: &VersionVector) -> bool {
        other.0.iter().all(|(r, s)| self.get(r) >= *s)
    }

    /// Pointwise maximum with `other`.
    pub fn merge(&mut self, other: &VersionVector) {
        for (r, s) in &other.0 {
            self.raise(r, *s);
        }
    }

    /// How `self` relates to `other` in causal order.
    pub fn compare(&self, other: &VersionVector) -> CausalOrder {
        let self_le = other.covers_all(self);
        let other_le = self.covers_all(other);
        match (self_le, other_le) {
            (true, true) => CausalOrder::Equal,
            (true, false) => CausalOrder::Before,
            (false, true) => CausalOrder::After,
            (false, false) => CausalOrder::Concurrent,
        }
    }

    /// The origins where `other` is ahead of `self`, with `(self, other)` seqs:
    /// what `self` still lacks to cover `other`.
    pub fn missing<'a>(
        &'a self,
        other: &'a VersionVector,
    ) -> impl Iterator<Item = (&'a ReplicaId, Seq, Seq)> + 'a {
        other.0.iter().filter_map(move |(r, s)| {
            let mine = self.get(r);
            (mine < *s).then_some((r, mine, *s))
        })
    }

    /// Entries in ascending origin order.
    pub fn iter(&self) -> impl Iterator<Item = (&ReplicaId, Seq)> {
        self.0.iter().map(|(r, s)| (r, *s))
    }

    /// Number of origins with a non-zero entry.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether nothing has been seen.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sum of all entries: the number of ops a replica with this vector has
    /// applied (seqs are contiguous from 1).
    pub fn total(&self) -> u64 {
        self.0.values().map(|s| s.0).sum()
    }

    /// The pointwise minimum of `self` and `other`: what both have seen.
    pub fn meet(&self, other: &VersionVector) -> VersionVector {
        let mut out = VersionVector::new();
        for (r, s) in &self.0 {
            let m = (*s).min(other.get(r));
            out.raise(r, m);
        }
        out
    }
}

impl PartialOrd for VersionVector {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match self.compare(other) {
            CausalOrder::Equal => Some(Ordering::Equal),
            CausalOrder::Before => Some(Ordering::Less),
            CausalOrder::After => Some(Ordering::Greater),
            CausalOrder::Concurrent => None,
        }
    }
}

impl FromIterator<(ReplicaId, Seq)> for VersionVector {
    fn from_iter<I: IntoIterator<Item = (ReplicaId, Seq)>>(iter: I) -> Self {
        let mut vv = VersionVector::new();
        for (r, s) in iter {
            vv.raise(&r, s);
        }
        vv
    }
}

impl Serialize for VersionVector {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for entry in &self.0 {
            seq.serialize_element(&entry)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for VersionVector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = VersionVector;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a sequence of [replica, seq] pairs in ascending replica order")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<VersionVector, A::Error> {
                let mut map = BTreeMap::new();
                let mut last: Option<ReplicaId> = None;
                while let Some((r, s)) = a.next_element::<(ReplicaId, Seq)>()? {
                    if s == Seq::ZERO {
                        return Err(serde::de::Error::custom("version vector entry with seq 0"));
                    }
                    if last.as_ref().is_some_and(|l| *l >= r) {
                        return Err(serde::de::Error::custom(
                            "version vector entries out of order or repeated",
                        ));
                    }
                    last = Some(r.clone());
                    map.insert(r, s);
                }
                Ok(VersionVector(map))
            }
        }
        d.deserialize_seq(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::RegionId;
    use uuid::Uuid;

    fn r(name: &str) -> ReplicaId {
        ReplicaId::new(RegionId::new(name).unwrap(), Uuid::from_u128(1))
    }

    fn vv(entries: &[(&str, u64)]) -> VersionVector {
        entries.iter().map(|(n, s)| (r(n), Seq(*s))).collect()
    }

    #[test]
    fn compare_covers_all_four_cases() {
        assert_eq!(
            vv(&[("a", 1)]).compare(&vv(&[("a", 1)])),
            CausalOrder::Equal
        );
        assert_eq!(
            vv(&[("a", 1)]).compare(&vv(&[("a", 2)])),
            CausalOrder::Before
        );
        assert_eq!(
            vv(&[("a", 2), ("b", 1)]).compare(&vv(&[("a", 2)])),
            CausalOrder::After
        );
        assert_eq!(
            vv(&[("a", 2)]).compare(&vv(&[("b", 1)])),
            CausalOrder::Concurrent
        );
        assert_eq!(
            VersionVector::new().compare(&VersionVector::new()),
            CausalOrder::Equal
        );
    }

    #[test]
    fn covers_and_missing() {
        let v = vv(&[("a", 3)]);
        assert!(v.covers(&Dot::new(r("a"), Seq(3))));
        assert!(!v.covers(&Dot::new(r("a"), Seq(4))));
        assert!(!v.covers(&Dot::new(r("b"), Seq(1))));
        let other = vv(&[("a", 5), ("b", 1)]);
        let lacks: Vec<_> = v
            .missing(&other)
            .map(|(r, m, o)| (r.region.to_string(), m.0, o.0))
            .collect();
        assert_eq!(lacks, vec![("a".into(), 3, 5), ("b".into(), 0, 1)]);
    }

    #[test]
    fn merge_and_meet() {
        let mut a = vv(&[("a", 3), ("b", 1)]);
        let b = vv(&[("a", 1), ("c", 2)]);
        assert_eq!(a.meet(&b), vv(&[("a", 1)]));
        a.merge(&b);
        assert_eq!(a, vv(&[("a", 3), ("b", 1), ("c", 2)]));
        assert_eq!(a.total(), 6);
    }

    #[test]
    fn encoding_is_canonical_and_checked() {
        let v = vv(&[("b", 2), ("a", 1)]);
        let bytes = rmp_serde::to_vec(&v).unwrap();
        assert_eq!(rmp_serde::from_slice::<VersionVector>(&bytes).unwrap(), v);
        // Out-of-order entries are refused.
        let swapped = rmp_serde::to_vec(&vec![(r("b"), Seq(2)), (r("a"), Seq(1))]).unwrap();
        assert!(rmp_serde::from_slice::<VersionVector>(&swapped).is_err());
        let zero = rmp_serde::to_vec(&vec![(r("a"), Seq(0))]).unwrap();
        assert!(rmp_serde::from_slice::<VersionVector>(&zero).is_err());
    }
}
