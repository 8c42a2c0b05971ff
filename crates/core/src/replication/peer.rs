//! What a region knows about shipping ops to one peer, free of any I/O.
//!
//! The driver (a tokio task in the server, a loop in simulations) asks
//! [`PeerSync::fill`] for the next batch, ships it, and reports back with
//! [`PeerSync::on_ack`] or [`PeerSync::on_failure`].

use std::collections::BTreeMap;
use std::sync::Arc;

use meridian_crdt::{ReplicaId, Seq, VersionVector};

use crate::log::Lsn;
use crate::op::Op;

/// Shipping state for one peer.
///
/// # Invariants
/// - `acked` only grows, and only from the peer's own acks: it is what the
///   peer holds durably.
/// - `shipped` covers `acked`; it also covers ops sent and not yet acked.
///   A failure resets it to `acked`, so nothing unacknowledged is ever
///   considered delivered.
/// - Ops are offered in the local log's order, which is a causal order, so
///   the peer can apply them as they come.
#[derive(Clone, Debug, Default)]
pub struct PeerSync {
    acked: VersionVector,
    shipped: VersionVector,
    cursor: Lsn,
    /// The first position [`PeerSync::fill_holding`] held an op back at
    /// since the last [`PeerSync::release_held`].
    held_from: Option<Lsn>,
    /// The origins of the ops held back since then: each one's later ops
    /// are held too (`shipped` is a high-water mark per origin, so shipping
    /// a later op would count the held one as shipped).
    held_origins: std::collections::BTreeSet<ReplicaId>,
}

/// How much one batch may carry.
#[derive(Clone, Copy, Debug)]
pub struct BatchLimits {
    /// Most ops.
    pub max_ops: usize,
    /// Most payload bytes: the sum of the ops' encoded sizes stays at or
    /// below it, except that an op larger than it travels alone.
    pub max_bytes: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            max_ops: 4096,
            max_bytes: crate::budget::BATCH_TARGET,
        }
    }
}

impl PeerSync {
    /// A peer we know nothing about yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// (Re)connected: the peer says it holds `peer_vv`; shipping restarts
    /// at log position `start` (see [`crate::log::shipping_start`]).
    pub fn connected(&mut self, peer_vv: &VersionVector, start: Lsn) {
        self.acked.merge(peer_vv);
        self.shipped = self.acked.clone();
        self.cursor = start;
        self.held_from = None;
        self.held_origins.clear();
    }

    /// What the peer holds durably, as far as we know.
    pub fn acked(&self) -> &VersionVector {
        &self.acked
    }

    /// What has been sent (acked or in flight).
    pub fn shipped(&self) -> &VersionVector {
        &self.shipped
    }

    /// The next log position to look at.
    pub fn cursor(&self) -> Lsn {
        self.cursor
    }

    /// The peer acknowledged holding `vv` durably.
    pub fn on_ack(&mut self, vv: &VersionVector) {
        self.acked.merge(vv);
        self.shipped.merge(vv);
    }

    /// A state transfer covering `vv` is on its way: its ops count as in
    /// flight (so no second transfer starts) until acknowledged or failed.
    pub fn sent_state(&mut self, vv: &VersionVector) {
        self.shipped.merge(vv);
    }

    /// A send failed: forget what was in flight; shipping restarts at `start`.
    pub fn on_failure(&mut self, start: Lsn) {
        self.shipped = self.acked.clone();
        self.cursor = start;
        self.held_from = None;
        self.held_origins.clear();
    }

    /// Where the first op held back by [`PeerSync::fill_holding`] is, if
    /// any is.
    pub fn held(&self) -> Option<Lsn> {
        self.held_from
    }

    /// Goes back to the first op held back, so the next fills offer again
    /// what the peer still lacks (what it acknowledged meanwhile, from
    /// another sender, is covered and passed over).
    pub fn release_held(&mut self) {
        if let Some(at) = self.held_from.take() {
            self.cursor = self.cursor.min(at);
        }
        self.held_origins.clear();
    }

    /// Takes from `source` (ops in log order, from the cursor on) the ops the
    /// peer lacks, up to `limits`. Stops at the first gap in positions (the
    /// source does not hold what follows).
    pub fn fill(
        &mut self,
        source: impl IntoIterator<Item = (Lsn, Arc<Op>)>,
        limits: BatchLimits,
        size_of: impl Fn(&Op) -> usize,
    ) -> Vec<Arc<Op>> {
        self.fill_holding(source, limits, size_of, |_, _| false)
    }

    /// As [`PeerSync::fill`], passing over the ops the peer lacks that
    /// `hold` says to hold back for now (a region's relays of another
    /// region's ops, which their origin likely ships to the peer itself):
    /// they are not counted as shipped, and [`PeerSync::held`] says where
    /// the first of them is until [`PeerSync::release_held`] goes back to
    /// it. What the peer receives meanwhile still arrives in causal order
    /// for each origin; an op whose past is held back waits in the peer's
    /// causal buffer.
    pub fn fill_holding(
        &mut self,
        source: impl IntoIterator<Item = (Lsn, Arc<Op>)>,
        limits: BatchLimits,
        size_of: impl Fn(&Op) -> usize,
        hold: impl Fn(Lsn, &Op) -> bool,
    ) -> Vec<Arc<Op>> {
        let mut out = Vec::new();
        let mut bytes = 0;
        for (lsn, op) in source {
            if lsn < self.cursor {
                continue;
            }
            if lsn > self.cursor {
                break; // a hole: the rest must come from elsewhere
            }
            if out.len() >= limits.max_ops {
                break;
            }
            // Anything not next in the peer's sequence for its origin is
            // either covered already or (after a reset) re-shipped in order.
            if self.shipped.covers(&op.dot) {
                self.cursor = Lsn(lsn.0 + 1);
                continue;
            }
            if self.held_origins.contains(&op.dot.replica) || hold(lsn, &op) {
                if !self.held_origins.contains(&op.dot.replica) {
                    self.held_origins.insert(op.dot.replica.clone());
                }
                self.held_from.get_or_insert(lsn);
                self.cursor = Lsn(lsn.0 + 1);
                continue;
            }
            let size = size_of(&op);
            if !out.is_empty() && bytes + size > limits.max_bytes {
                break; // the next batch starts with it
            }
            self.cursor = Lsn(lsn.0 + 1);
            bytes += size;
            self.shipped.add(&op.dot);
            out.push(op);
        }
        out
    }

    /// Ops we have that the peer has not acknowledged: `Σ max(0, ours - acked)`.
    pub fn lag_ops(&self, ours: &VersionVector) -> u64 {
        ours.iter()
            .map(|(r, s)| s.0.saturating_sub(self.acked.get(r).0))
            .sum()
    }
}

/// Whether a peer at `peer_vv` needs ops this region no longer has in its
/// log (retention removed them, or they came by state transfer): then only
/// a state transfer can bring it up to date.
pub fn needs_state_transfer(
    ours: &VersionVector,
    floors: &BTreeMap<ReplicaId, Seq>,
    peer_vv: &VersionVector,
) -> bool {
    ours.iter().any(|(r, have)| {
        let theirs = peer_vv.get(r);
        if have <= theirs {
            return false;
        }
        // The next op the peer needs from r must still be in our log.
        match floors.get(r) {
            Some(floor) => floor.0 > theirs.0 + 1,
            None => true,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{SegmentOrigins, shipping_start};
    use crate::op::{Key, KeyspaceName, Mutation};
    use meridian_crdt::{Dot, Hlc, LwwOp, ObjectOp, RegionId};
    use uuid::Uuid;

    fn rep(n: &str) -> ReplicaId {
        ReplicaId::new(RegionId::new(n).unwrap(), Uuid::from_u128(n.len() as u128))
    }

    fn op(r: &ReplicaId, seq: u64) -> Arc<Op> {
        Arc::new(Op {
            dot: Dot::new(r.clone(), Seq(seq)),
            hlc: Hlc::new(seq, 0).unwrap(),
            deps: VersionVector::new(),
            mutations: vec![Mutation {
                keyspace: KeyspaceName::default_keyspace(),
                key: Key::new("k").unwrap(),
                op: ObjectOp::Lww(LwwOp::Delete),
            }],
        })
    }

    fn log(ops: &[Arc<Op>]) -> Vec<(Lsn, Arc<Op>)> {
        ops.iter()
            .enumerate()
            .map(|(i, o)| (Lsn(i as u64 + 1), o.clone()))
            .collect()
    }

    #[test]
    fn ships_only_what_the_peer_lacks_and_resends_after_failure() {
        let (a, b) = (rep("a"), rep("bb"));
        let l = log(&[op(&a, 1), op(&b, 1), op(&a, 2), op(&b, 2)]);
        let mut p = PeerSync::new();
        // The peer already has b's ops (it is b).
        let peer: VersionVector = [(b.clone(), Seq(2))].into_iter().collect();
        p.connected(&peer, Lsn(1));
        let batch = p.fill(l.clone(), BatchLimits::default(), |_| 10);
        assert_eq!(
            batch.iter().map(|o| o.dot.seq.0).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert!(batch.iter().all(|o| o.dot.replica == a));
        assert!(
            p.fill(l.clone(), BatchLimits::default(), |_| 10).is_empty(),
            "nothing twice"
        );
        // The send failed: everything unacked goes again.
        p.on_failure(Lsn(1));
        assert_eq!(p.fill(l.clone(), BatchLimits::default(), |_| 10).len(), 2);
        p.on_ack(
            &[(a.clone(), Seq(2)), (b.clone(), Seq(2))]
                .into_iter()
                .collect(),
        );
        p.on_failure(Lsn(1));
        assert!(
            p.fill(l, BatchLimits::default(), |_| 10).is_empty(),
            "acked ops never go again"
        );
        assert_eq!(p.lag_ops(&[(a.clone(), Seq(2))].into_iter().collect()), 0);
    }

    #[test]
    fn held_back_relays_go_after_release_unless_the_peer_got_them_meanwhile() {
        // This region is a; it relays c's ops to a peer.
        let (a, c) = (rep("a"), rep("ccc"));
        let l = log(&[op(&c, 1), op(&a, 1), op(&c, 2), op(&c, 3), op(&a, 2)]);
        let mut p = PeerSync::new();
        p.connected(&VersionVector::new(), Lsn(1));
        let lim = BatchLimits::default();
        // c:1 is held; c:2 would not be (say it aged past the hold while
        // the sender was busy), but goes with c:1 as one origin's run, or
        // shipping it would count c:1 as shipped.
        let held = |_: Lsn, o: &Op| o.dot.replica == c && o.dot.seq.0 == 1;
        let batch = p.fill_holding(l.clone(), lim, |_| 1, held);
        assert_eq!(
            batch
                .iter()
                .map(|o| (o.dot.replica == a, o.dot.seq.0))
                .collect::<Vec<_>>(),
            vec![(true, 1), (true, 2)]
        );
        assert_eq!(p.held(), Some(Lsn(1)));
        assert!(!p.shipped().covers(&Dot::new(c.clone(), Seq(1))));
        // Released with nothing heard from the peer: c's ops go, in order,
        // and a's not again.
        p.release_held();
        assert_eq!(p.held(), None);
        let batch = p.fill_holding(l.clone(), lim, |_| 1, |_, _| false);
        assert_eq!(
            batch
                .iter()
                .map(|o| (o.dot.replica == c, o.dot.seq.0))
                .collect::<Vec<_>>(),
            vec![(true, 1), (true, 2), (true, 3)]
        );
        // Another round: the peer acknowledges c's ops from c itself while
        // they are held; after release they are passed over.
        let mut q = PeerSync::new();
        q.connected(&VersionVector::new(), Lsn(1));
        let relays = |_: Lsn, o: &Op| o.dot.replica == c;
        assert_eq!(q.fill_holding(l.clone(), lim, |_| 1, relays).len(), 2);
        q.on_ack(
            &[(c.clone(), Seq(3)), (a.clone(), Seq(2))]
                .into_iter()
                .collect(),
        );
        q.release_held();
        assert!(
            q.fill_holding(l.clone(), lim, |_| 1, |_, _| false)
                .is_empty()
        );
        assert_eq!(q.cursor(), Lsn(6));
        // A failure forgets what was held (shipping restarts anyway).
        let mut r = PeerSync::new();
        r.connected(&VersionVector::new(), Lsn(1));
        r.fill_holding(l, lim, |_| 1, relays);
        r.on_failure(Lsn(1));
        assert_eq!(r.held(), None);
    }

    #[test]
    fn limits_and_holes_stop_a_batch() {
        let a = rep("a");
        let l = log(&[op(&a, 1), op(&a, 2), op(&a, 3)]);
        let mut p = PeerSync::new();
        p.connected(&VersionVector::new(), Lsn(1));
        let lim = BatchLimits {
            max_ops: 2,
            max_bytes: 1 << 20,
        };
        assert_eq!(p.fill(l.clone(), lim, |_| 1).len(), 2);
        assert_eq!(p.cursor(), Lsn(3));
        // A source that starts past the cursor has a hole: nothing taken.
        let later = vec![(Lsn(5), op(&a, 5))];
        assert!(p.fill(later, lim, |_| 1).is_empty());
        assert_eq!(p.fill(l, lim, |_| 1).len(), 1);
    }

    #[test]
    fn batches_stay_within_their_bytes_and_a_large_op_travels_alone() {
        let a = rep("a");
        let l = log(&[op(&a, 1), op(&a, 2), op(&a, 3), op(&a, 4)]);
        let mut p = PeerSync::new();
        p.connected(&VersionVector::new(), Lsn(1));
        let lim = BatchLimits {
            max_ops: 100,
            max_bytes: 100,
        };
        // Sizes 40, 70, 300, 10: [1], [2], [3] alone, [4].
        let size = |o: &Op| [40, 70, 300, 10][o.dot.seq.0 as usize - 1];
        let seqs = |b: Vec<Arc<Op>>| b.iter().map(|o| o.dot.seq.0).collect::<Vec<_>>();
        assert_eq!(seqs(p.fill(l.clone(), lim, size)), vec![1]);
        assert_eq!(seqs(p.fill(l.clone(), lim, size)), vec![2]);
        assert_eq!(seqs(p.fill(l.clone(), lim, size)), vec![3]);
        assert_eq!(seqs(p.fill(l.clone(), lim, size)), vec![4]);
        assert!(p.fill(l, lim, size).is_empty());
    }

    #[test]
    fn where_to_start_and_when_a_state_transfer_is_needed() {
        let a = rep("a");
        let segs: Vec<SegmentOrigins> = vec![
            (
                Lsn(1),
                [(a.clone(), (Seq(10), Seq(19)))].into_iter().collect(),
            ),
            (
                Lsn(11),
                [(a.clone(), (Seq(20), Seq(29)))].into_iter().collect(),
            ),
        ];
        let at = |s| -> VersionVector { [(a.clone(), Seq(s))].into_iter().collect() };
        assert_eq!(shipping_start(&segs, &at(5), Lsn(21)), Lsn(1));
        assert_eq!(shipping_start(&segs, &at(22), Lsn(21)), Lsn(11));
        assert_eq!(shipping_start(&segs, &at(29), Lsn(21)), Lsn(21));
        let floors: BTreeMap<ReplicaId, Seq> = [(a.clone(), Seq(10))].into_iter().collect();
        assert!(
            !needs_state_transfer(&at(29), &floors, &at(9)),
            "seq 10 is still here"
        );
        assert!(
            needs_state_transfer(&at(29), &floors, &at(8)),
            "seq 9 is gone"
        );
        assert!(!needs_state_transfer(&at(29), &floors, &at(29)));
        assert!(
            needs_state_transfer(&at(29), &BTreeMap::new(), &at(3)),
            "none of a's ops are in the log"
        );
    }
}
