//! Fences, and the admission of a write under an ownership map.
//!
//! Every region, once it has applied a map at a new epoch, writes a fence:
//! the epoch and its version vector at that moment, as a replicated system
//! entry. From then on it judges writes by that map, so every write it
//! took under an earlier map is covered by the fence.
//!
//! A region takes a write to a key it owns at epoch `e` only once, for
//! every other region `X`, either `X`'s latest fence (covered by this
//! region's vector) is at `e` or later, or `X` could take writes to the key
//! in none of the epochs from its fence up to `e - 1` (it neither owned the
//! key nor was the key ownerless then). So every write another region took
//! to the key under an earlier epoch is already applied here when the
//! owner takes its first: the owner's writes follow them causally, and no
//! two regions take writes to the key at the same epoch. Writes taken by
//! fallback (`accept`) are covered too: in an epoch whose map accepted
//! fallbacks, every region counts as one that may have written a key
//! another region owned.

use meridian_crdt::{RegionId, VersionVector};
use serde::{Deserialize, Serialize};

use super::Epoch;
use super::map::{KeyRef, Mode, OwnershipMap};

/// A region's fence for a keyspace: it judges writes by the map at
/// `epoch` or later, and every write it took before is in `vv`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    /// The epoch it applied.
    pub epoch: Epoch,
    /// Its version vector then.
    pub vv: VersionVector,
}

/// How a region may treat a write to one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// No owner: any region takes it.
    Open,
    /// This region owns the key and may take it.
    Owner,
    /// Another region owns it.
    Elsewhere {
        /// The owner.
        owner: RegionId,
        /// The map's epoch.
        epoch: Epoch,
        /// The rule that matched (`None`: the default).
        rule: Option<usize>,
        /// What the map says non-owners do.
        mode: Mode,
    },
    /// This region owns the key since `epoch` but has not yet applied
    /// every write the earlier owners took: retry shortly.
    Pending {
        /// The map's epoch.
        epoch: Epoch,
        /// The regions whose fence it waits for.
        waiting: Vec<RegionId>,
    },
}

/// How region `me` may treat a write to `key` under `map`, given the
/// fences it has applied (`fence` gives a region's latest), the cluster's
/// `regions` and its own vector `vv`.
pub fn admit<'a>(
    map: &OwnershipMap,
    fence: impl Fn(&RegionId) -> Option<&'a Fence>,
    me: &RegionId,
    regions: &[RegionId],
    vv: &VersionVector,
    key: &str,
) -> Admission {
    let epoch = map.epoch();
    let key = KeyRef::new(key);
    let rule = map.layout.rule_of_ref(&key);
    let owner = match rule {
        Some(i) => Some(&map.layout.rules[i].owner),
        None => map.layout.default.as_ref(),
    };
    let Some(owner) = owner else {
        return Admission::Open;
    };
    if owner != me {
        return Admission::Elsewhere {
            owner: owner.clone(),
            epoch,
            rule,
            mode: map.mode,
        };
    }
    let mut waiting = Vec::new();
    for x in regions.iter().filter(|x| *x != me) {
        let from = fence(x)
            .filter(|f| vv.covers_all(&f.vv))
            .map_or(Epoch(0), |f| f.epoch);
        let mut e = from;
        while e < epoch {
            let could_take = match map.layout_at(e) {
                // No owner, its own, or taken by fallback (while another
                // region owned it: fallbacks while this region owned the
                // key were concurrent with its writes already, recorded).
                Some(l) => {
                    let owner = l.owner_of_ref(&key);
                    owner.is_none_or(|o| o == x) || (l.fallback_accept && owner != Some(me))
                }
                // Forgotten: it may have.
                None => true,
            };
            if could_take {
                waiting.push(x.clone());
                break;
            }
            e = Epoch(e.0 + 1);
        }
    }
    if waiting.is_empty() {
        Admission::Owner
    } else {
        Admission::Pending { epoch, waiting }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use meridian_crdt::{ReplicaId, Seq};

    use super::super::map::{MapRequest, Match, Rule};
    use super::*;

    fn r(s: &str) -> RegionId {
        RegionId::new(s).unwrap()
    }

    fn owned_by(owner: &str) -> MapRequest {
        MapRequest {
            rules: vec![Rule {
                matcher: Match::Prefix("k".into()),
                owner: r(owner),
            }],
            ..MapRequest::default()
        }
    }

    fn vv(entries: &[(&str, u64)]) -> VersionVector {
        entries
            .iter()
            .map(|(reg, s)| (ReplicaId::new(r(reg), uuid::Uuid::from_u128(1)), Seq(*s)))
            .collect()
    }

    #[test]
    fn a_handoff_waits_for_the_old_owners_fence_only() {
        let regions = [r("a"), r("b"), r("c")];
        let e1 = OwnershipMap::default()
            .next(&owned_by("a"), Epoch(0))
            .unwrap();
        let mut fences = BTreeMap::new();
        let none = VersionVector::new();
        // A new map: a waits for every region (each could write the
        // ownerless key before it applied the map).
        let admitted = |f: &BTreeMap<RegionId, Fence>, me: &str, m: &OwnershipMap, v| {
            admit(m, |x| f.get(x), &r(me), &regions, &v, "k1")
        };
        assert_eq!(
            admitted(&fences, "a", &e1, none.clone()),
            Admission::Pending {
                epoch: Epoch(1),
                waiting: vec![r("b"), r("c")]
            }
        );
        assert!(matches!(
            admitted(&fences, "b", &e1, none.clone()),
            Admission::Elsewhere { owner, epoch: Epoch(1), rule: Some(0), .. } if owner == r("a")
        ));
        fences.insert(
            r("b"),
            Fence {
                epoch: Epoch(1),
                vv: vv(&[("b", 3)]),
            },
        );
        fences.insert(
            r("c"),
            Fence {
                epoch: Epoch(1),
                vv: vv(&[("c", 2)]),
            },
        );
        // A fence the vector does not cover yet does not count.
        assert!(matches!(
            admitted(&fences, "a", &e1, vv(&[("b", 3)])),
            Admission::Pending { ref waiting, .. } if waiting == &[r("c")]
        ));
        assert_eq!(
            admitted(&fences, "a", &e1, vv(&[("b", 3), ("c", 2)])),
            Admission::Owner
        );
        // Handoff a -> b at epoch 2: b waits for a's fence at 2, not for c
        // (c's fence is at 1, and c could not write the key at epoch 1).
        let e2 = e1.next(&owned_by("b"), Epoch(1)).unwrap();
        let seen = vv(&[("b", 3), ("c", 2), ("a", 9)]);
        assert_eq!(
            admitted(&fences, "b", &e2, seen.clone()),
            Admission::Pending {
                epoch: Epoch(2),
                waiting: vec![r("a")]
            }
        );
        fences.insert(
            r("a"),
            Fence {
                epoch: Epoch(2),
                vv: vv(&[("a", 9), ("b", 3), ("c", 2)]),
            },
        );
        assert_eq!(admitted(&fences, "b", &e2, seen.clone()), Admission::Owner);
        // Keys no rule matches stay open.
        let open = admit(&e2, |_| None, &r("c"), &regions, &none, "other");
        assert_eq!(open, Admission::Open);
        // A layout forgotten by the history counts as "may have written".
        let mut e3 = e2.next(&owned_by("c"), Epoch(1)).unwrap();
        e3.history.clear();
        fences.insert(
            r("a"),
            Fence {
                epoch: Epoch(1),
                vv: vv(&[("a", 1)]),
            },
        );
        assert!(matches!(
            admitted(&fences, "c", &e3, seen),
            Admission::Pending { ref waiting, .. } if waiting.contains(&r("a"))
        ));
    }
}
