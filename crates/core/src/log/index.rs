//! What the log tells replication about itself: per segment, which seqs of
//! which origin it holds, so a sender finds where a peer's needs start
//! without reading the log. Built by [`super::Log::index`].

use std::collections::BTreeMap;
use std::sync::Arc;

use meridian_crdt::{ReplicaId, Seq, VersionVector};

use super::{Lsn, Runs};

/// Per segment: its first log position and the seq range of each origin.
pub type SegmentOrigins = (Lsn, BTreeMap<ReplicaId, (Seq, Seq)>);

/// Where shipping to a peer at `peer_vv` must start: the first segment that
/// holds an op the peer lacks (or the end of the log: `end`).
pub fn shipping_start(segments: &[SegmentOrigins], peer_vv: &VersionVector, end: Lsn) -> Lsn {
    segments
        .iter()
        .find(|(_, origins)| origins.iter().any(|(r, (_, hi))| *hi > peer_vv.get(r)))
        .map_or(end, |(first, _)| *first)
}

/// A summary of the log for replication (see [`super::Log::index`]).
#[derive(Clone, Debug, Default)]
pub struct LogIndex {
    /// Per sealed segment: first position and per-origin seq ranges
    /// (shared: rebuilt only when a segment is sealed or removed).
    pub sealed: Arc<Vec<SegmentOrigins>>,
    /// First position of the segment being written.
    pub active_first: Lsn,
    /// Per-origin seq ranges in the segment being written.
    pub active_origins: BTreeMap<ReplicaId, (Seq, Seq)>,
    /// One past the last record.
    pub end: Lsn,
    /// Per origin, the run of seqs the log holds at its top.
    pub runs: Runs,
}

impl LogIndex {
    /// Where shipping to a peer at `peer_vv` must start. The segment being
    /// written is always searched, so a stale index errs towards resending.
    pub fn start_for(&self, peer_vv: &VersionVector) -> Lsn {
        shipping_start(&self.sealed, peer_vv, self.active_first)
    }

    /// Per origin, the lowest seq from which every op up to the highest
    /// one is in the log (see [`Runs`]).
    pub fn floors(&self) -> BTreeMap<ReplicaId, Seq> {
        let mut out: BTreeMap<ReplicaId, Seq> = BTreeMap::new();
        let all = self
            .sealed
            .iter()
            .map(|(_, o)| o)
            .chain(std::iter::once(&self.active_origins));
        for origins in all {
            for (r, (lo, _)) in origins {
                out.entry(r.clone())
                    .and_modify(|f| *f = (*f).min(*lo))
                    .or_insert(*lo);
            }
        }
        self.runs.floors(&out)
    }
}
