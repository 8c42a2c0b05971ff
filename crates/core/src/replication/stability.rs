//! When a tombstone may go: the causally stable cut.

use meridian_crdt::{Hlc, RegionId, VersionVector};

use crate::engine::StableCut;

/// What this region knows about one peer, for the cut.
#[derive(Clone, Debug)]
pub struct PeerKnowledge {
    /// The peer's region.
    pub region: RegionId,
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
pub fn stable_cut(
    ours: &VersionVector,
    our_hlc: Hlc,
    peers: &[PeerKnowledge],
) -> Option<StableCut> {
    let mut stable = ours.clone();
    let mut watermark = our_hlc;
    for p in peers {
        let (hlc, acked_then) = p.last_ack.as_ref()?;
        stable = stable.meet(&p.acked);
        let complete = acked_then
            .iter()
            .filter(|(r, _)| r.region == p.region)
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
        let peer = PeerKnowledge {
            region: RegionId::new("bb").unwrap(),
            acked: vv(&[("a", 8), ("bb", 5)]),
            last_ack: Some((h(500), vv(&[("a", 8), ("bb", 5)]))),
        };
        let cut = stable_cut(&ours, h(900), std::slice::from_ref(&peer)).unwrap();
        assert_eq!(cut.stable, vv(&[("a", 8), ("bb", 5)]));
        assert_eq!(cut.watermark, h(500));
        // A peer whose own ops (as of its ack) are not all here yet: an op of
        // it stamped below its clock may still be on its way: no cut.
        let behind = PeerKnowledge {
            last_ack: Some((h(500), vv(&[("a", 8), ("bb", 7)]))),
            ..peer.clone()
        };
        assert!(stable_cut(&ours, h(900), &[behind]).is_none());
        // A peer never heard from: no cut.
        let silent = PeerKnowledge {
            last_ack: None,
            ..peer
        };
        assert!(stable_cut(&ours, h(900), &[silent]).is_none());
        // Alone: everything applied here is stable.
        let alone = stable_cut(&ours, h(900), &[]).unwrap();
        assert_eq!((alone.stable, alone.watermark), (ours, h(900)));
    }
}
