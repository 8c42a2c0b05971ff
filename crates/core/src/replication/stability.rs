//! When a tombstone may go: the causally stable cut.

use std::collections::BTreeSet;

use meridian_crdt::{Hlc, RegionId, ReplicaId, VersionVector};

use crate::engine::StableCut;

/// What this region knows about one peer, for the cut.
#[derive(Clone, Debug)]
pub struct PeerKnowledge {
    /// The peer's region.
    pub region: RegionId,
    /// The replica (incarnation) its acks came from; `None` before any.
    pub replica: Option<ReplicaId>,
    /// Everything it has acknowledged holding.
    pub acked: VersionVector,
    /// Its clock at its latest ack, with the version vector of that ack.
    pub last_ack: Option<(Hlc, VersionVector)>,
}

/// The cut tombstone collection may rely on (see
/// [`crate::Engine::collect`]), or `None` when some peer is not known well
/// enough yet.
///
/// # Correctness
/// - `stable` is what every region is known to have applied: the meet of
///   this region's version vector and every peer's acknowledged one.
/// - `watermark` bounds the stamps of ops that can still arrive here. A
///   peer's later ops are stamped above its clock at its latest ack; its
///   earlier ones are all here once this region holds every op of that peer
///   the ack covered (otherwise the peer is not yet accounted for and there
///   is no cut). Ops relayed from a third region are bounded by that
///   region's own entry, as every region is a peer of every other.
/// - Ops of an incarnation that is no longer live (a region that came back
///   as a new incarnation, this one included) are bounded by no live clock:
///   every such op any peer had at its latest ack must be here too, or
///   there is no cut.
pub fn stable_cut(
    me: &ReplicaId,
    ours: &VersionVector,
    our_hlc: Hlc,
    peers: &[PeerKnowledge],
) -> Option<StableCut> {
    let mut live: BTreeSet<&ReplicaId> = BTreeSet::from([me]);
    for p in peers {
        live.insert(p.replica.as_ref()?);
    }
    let mut stable = ours.clone();
    let mut watermark = our_hlc;
    for p in peers {
        let (hlc, acked_then) = p.last_ack.as_ref()?;
        stable = stable.meet(&p.acked);
        let complete = acked_then
            .iter()
            .filter(|(r, _)| r.region == p.region || !live.contains(r))
            .all(|(r, s)| ours.get(r) >= s);
        if !complete {
            return None;
        }
        watermark = watermark.min(*hlc);
    }
    Some(StableCut { stable, watermark })
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_crdt::{ReplicaId, Seq};
    use uuid::Uuid;

    fn rep(n: &str) -> ReplicaId {
        ReplicaId::new(RegionId::new(n).unwrap(), Uuid::from_u128(n.len() as u128))
    }

    fn vv(e: &[(&str, u64)]) -> VersionVector {
        e.iter().map(|(n, s)| (rep(n), Seq(*s))).collect()
    }

    fn h(ms: u64) -> Hlc {
        Hlc::new(ms, 0).unwrap()
    }

    #[test]
    fn the_cut_is_the_meet_and_the_lowest_accounted_clock() {
        let ours = vv(&[("a", 10), ("bb", 5)]);
        let me = rep("a");
        let peer = PeerKnowledge {
            region: RegionId::new("bb").unwrap(),
            replica: Some(rep("bb")),
            acked: vv(&[("a", 8), ("bb", 5)]),
            last_ack: Some((h(500), vv(&[("a", 8), ("bb", 5)]))),
        };
        let cut = stable_cut(&me, &ours, h(900), std::slice::from_ref(&peer)).unwrap();
        assert_eq!(cut.stable, vv(&[("a", 8), ("bb", 5)]));
        assert_eq!(cut.watermark, h(500));
        // A peer whose own ops (as of its ack) are not all here yet: an op of
        // it stamped below its clock may still be on its way: no cut.
        let behind = PeerKnowledge {
            last_ack: Some((h(500), vv(&[("a", 8), ("bb", 7)]))),
            ..peer.clone()
        };
        assert!(stable_cut(&me, &ours, h(900), &[behind]).is_none());
        // A peer never heard from: no cut.
        let silent = PeerKnowledge {
            last_ack: None,
            ..peer
        };
        assert!(stable_cut(&me, &ours, h(900), &[silent]).is_none());
        // Alone: everything applied here is stable.
        let alone = stable_cut(&me, &ours, h(900), &[]).unwrap();
        assert_eq!((alone.stable, alone.watermark), (ours.clone(), h(900)));
    }

    #[test]
    fn ops_of_a_dead_incarnation_a_peer_holds_must_all_be_here() {
        // Before: only the peer's own region's entries were checked, so ops
        // of a wiped region's old incarnation that a peer held (bounded by
        // no live clock) could still arrive below the watermark after the
        // tombstone they precede was collected.
        let me = rep("a");
        let dead = ReplicaId::new(RegionId::new("ccc").unwrap(), Uuid::from_u128(99));
        let ours = vv(&[("a", 10), ("bb", 5)]);
        let with_dead = |s| -> VersionVector {
            let mut v = vv(&[("a", 10), ("bb", 5)]);
            v.raise(&dead, Seq(s));
            v
        };
        let peer = |acked: VersionVector| PeerKnowledge {
            region: RegionId::new("bb").unwrap(),
            replica: Some(rep("bb")),
            acked: acked.clone(),
            last_ack: Some((h(500), acked)),
        };
        assert!(stable_cut(&me, &ours, h(900), &[peer(with_dead(3))]).is_none());
        let mut ours_too = ours.clone();
        ours_too.raise(&dead, Seq(3));
        assert!(stable_cut(&me, &ours_too, h(900), &[peer(with_dead(3))]).is_some());
        // A peer whose replica is not known yet: no cut.
        let unknown = PeerKnowledge {
            replica: None,
            ..peer(ours.clone())
        };
        assert!(stable_cut(&me, &ours, h(900), &[unknown]).is_none());
    }
}
