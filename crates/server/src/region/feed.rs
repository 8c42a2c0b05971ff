//! The in-memory tail of committed ops, so senders that keep up never read
//! the disk; and the log index they consult when they fall behind it.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Instant;

use meridian_core::log::LogIndex;
use meridian_core::replication::{BatchLimits, PeerSync};
use meridian_core::{Lsn, Op};
use meridian_crdt::{ReplicaId, Seq, VersionVector, codec};
use tokio::sync::watch;

/// The ops in memory, with their encoded sizes.
#[derive(Default)]
struct Tail {
    /// Each op, its encoded size and when it was committed here.
    ops: VecDeque<(Lsn, Arc<Op>, usize, Instant)>,
    bytes: usize,
    /// The same ops per origin, in log order (so in rising seq order: a
    /// region applies an origin's ops in seq order), for the per-peer
    /// figures: what a peer lacks is, per origin, a suffix of this.
    by_origin: HashMap<ReplicaId, VecDeque<Entry>>,
}

/// One op of an origin's run in the tail.
struct Entry {
    seq: Seq,
    wall_ms: u64,
    /// Encoded bytes of this origin's ops pushed before this one, and up
    /// to and including it (running totals: a suffix's bytes are one
    /// subtraction).
    before: u64,
    through: u64,
}

impl Tail {
    fn push_back(&mut self, lsn: Lsn, op: Arc<Op>, size: usize, at: Instant) {
        let run = match self.by_origin.get_mut(&op.dot.replica) {
            Some(run) => run,
            None => self.by_origin.entry(op.dot.replica.clone()).or_default(),
        };
        let before = run.back().map_or(0, |e| e.through);
        run.push_back(Entry {
            seq: op.dot.seq,
            wall_ms: op.hlc.wall_ms(),
            before,
            through: before.saturating_add(size as u64),
        });
        self.bytes += size;
        self.ops.push_back((lsn, op, size, at));
    }

    fn pop_front(&mut self) {
        let Some((_, op, size, _)) = self.ops.pop_front() else {
            return;
        };
        self.bytes -= size;
        // The oldest op overall is the oldest of its origin.
        if let Some(run) = self.by_origin.get_mut(&op.dot.replica) {
            run.pop_front();
            if run.is_empty() {
                self.by_origin.remove(&op.dot.replica);
            }
        }
    }

    /// Per origin with ops in the tail that `acked` lacks: its run, and
    /// where in it the lacking suffix (seqs above `acked`'s) begins.
    fn missing(&self, acked: &VersionVector) -> impl Iterator<Item = (&VecDeque<Entry>, usize)> {
        self.by_origin.iter().filter_map(|(origin, run)| {
            let have = acked.get(origin);
            let at = run.partition_point(|e| e.seq <= have);
            (at < run.len()).then_some((run, at))
        })
    }
}

/// What the writer hands to replication.
///
/// # Invariants
/// - `end` never moves back: a commit with no ops (an install, a repair, a
///   collection) leaves it where it was.
/// - The tail holds at most `capacity` ops and `max_bytes` encoded bytes
///   (the newest op always, however large); older ops are read from disk.
pub struct Feed {
    ops: Mutex<Tail>,
    capacity: usize,
    max_bytes: usize,
    end: watch::Sender<Lsn>,
    index: RwLock<Arc<LogIndex>>,
    /// The op log directory (for reading behind the tail).
    pub log_dir: PathBuf,
}

impl Feed {
    /// A feed keeping the last `capacity` committed ops, and at most
    /// `max_bytes` of them, in memory.
    pub fn new(capacity: usize, max_bytes: usize, log_dir: PathBuf, index: LogIndex) -> Self {
        let (end, _) = watch::channel(index.end);
        Self {
            ops: Mutex::new(Tail::default()),
            capacity,
            max_bytes,
            end,
            index: RwLock::new(Arc::new(index)),
            log_dir,
        }
    }

    /// Committed ops, the first at `first`; then the log's new index.
    /// A commit without ops (`first` is then meaningless) changes only
    /// the index.
    pub fn push(&self, first: Lsn, ops: impl IntoIterator<Item = Arc<Op>>, index: LogIndex) {
        let mut q = self.ops.lock().unwrap_or_else(PoisonError::into_inner);
        let mut lsn = first;
        let mut pushed = false;
        let at = Instant::now();
        for op in ops {
            let size = codec::encoded_len(&*op).unwrap_or(usize::MAX / 4);
            q.push_back(lsn, op, size, at);
            lsn.0 += 1;
            pushed = true;
        }
        while q.ops.len() > 1 && (q.ops.len() > self.capacity || q.bytes > self.max_bytes) {
            q.pop_front();
        }
        drop(q);
        *self.index.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(index);
        if pushed {
            self.end.send_if_modified(|end| {
                let moved = lsn > *end;
                if moved {
                    *end = lsn;
                }
                moved
            });
        }
    }

    /// Encoded bytes of the ops in memory.
    pub fn bytes(&self) -> usize {
        self.ops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .bytes
    }

    /// Ops from `from` on (at most `max`), if the tail still holds `from`.
    pub fn read(&self, from: Lsn, max: usize) -> Option<Vec<(Lsn, Arc<Op>)>> {
        let ops = self.read_timed(from, max)?;
        Some(ops.into_iter().map(|(l, op, _)| (l, op)).collect())
    }

    /// As [`Feed::read`], with when each op was committed here.
    fn read_timed(&self, from: Lsn, max: usize) -> Option<Vec<(Lsn, Arc<Op>, Instant)>> {
        let q = self.ops.lock().unwrap_or_else(PoisonError::into_inner);
        let front = q.ops.front().map(|(l, ..)| *l)?;
        if from < front {
            return None;
        }
        let skip = ((from.0 - front.0) as usize).min(q.ops.len());
        Some(
            q.ops
                .range(skip..)
                .take(max)
                .map(|(l, op, _, at)| (*l, op.clone(), *at))
                .collect(),
        )
    }

    /// The next batch for a peer from the in-memory tail; `None` when the
    /// tail no longer holds the peer's cursor (the disk has it).
    ///
    /// Reads on past ops the peer holds already. Shipping restarts at the
    /// start of the first segment holding an op the peer lacks, so after a
    /// partition most of what follows the cursor can be ops the peer has;
    /// returning the empty batch of a read that held only those left the
    /// sender waiting for the next commit (or 500 ms) per read, 2-3 s of
    /// a 60 s partition's heal (docs/benchmarks.md).
    pub fn next_batch(
        &self,
        sync: &mut PeerSync,
        limits: BatchLimits,
        size: impl Fn(&Op) -> usize,
    ) -> Option<Vec<Arc<Op>>> {
        self.next_batch_holding(sync, limits, size, |_, _| false)
    }

    /// As [`Feed::next_batch`], holding back the ops `hold` says to, given
    /// each op and when it was committed here ([`PeerSync::fill_holding`]).
    pub fn next_batch_holding(
        &self,
        sync: &mut PeerSync,
        limits: BatchLimits,
        size: impl Fn(&Op) -> usize,
        hold: impl Fn(&Op, Instant) -> bool,
    ) -> Option<Vec<Arc<Op>>> {
        loop {
            let read = self.read_timed(sync.cursor(), limits.max_ops * 4)?;
            let first = read.first().map_or(0, |(l, ..)| l.0);
            let times: Vec<Instant> = read.iter().map(|(.., at)| *at).collect();
            let ops = read.into_iter().map(|(l, op, _)| (l, op));
            let before = sync.cursor();
            let held = |lsn: Lsn, op: &Op| {
                let at = lsn.0.checked_sub(first).and_then(|i| times.get(i as usize));
                at.is_some_and(|at| hold(op, *at))
            };
            let batch = sync.fill_holding(ops, limits, &size, held);
            if !batch.is_empty() || sync.cursor() == before {
                return Some(batch);
            }
        }
    }

    /// One past the last committed op.
    pub fn end(&self) -> Lsn {
        *self.end.borrow()
    }

    /// Wakes when new ops are committed.
    pub fn subscribe(&self) -> watch::Receiver<Lsn> {
        self.end.subscribe()
    }

    /// The log index as of the last commit.
    pub fn index(&self) -> Arc<LogIndex> {
        self.index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Encoded bytes of the ops in the in-memory tail that `acked` lacks:
    /// a peer further behind than the tail lacks at least this much.
    ///
    /// A binary search per origin: status and metrics ask for it per peer
    /// on every call, under the lock commits take (a scan of a full tail
    /// held it for tens of milliseconds each time).
    pub fn missing_bytes(&self, acked: &VersionVector) -> u64 {
        let q = self.ops.lock().unwrap_or_else(PoisonError::into_inner);
        q.missing(acked)
            .map(|(run, at)| run.back().map_or(0, |e| e.through) - run[at].before)
            .sum()
    }

    /// Wall time (ms) of the oldest op in the tail a peer at `acked` lacks
    /// (the earliest of each origin's first missing op): how far behind
    /// the peer is in time (an origin's HLCs rise with its seqs, so its first
    /// missing op is its oldest). As cheap as [`Feed::missing_bytes`].
    pub fn oldest_missing_wall(&self, acked: &VersionVector) -> Option<u64> {
        let q = self.ops.lock().unwrap_or_else(PoisonError::into_inner);
        q.missing(acked).map(|(run, at)| run[at].wall_ms).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_crdt::{Dot, Hlc, RegionId, ReplicaId, Seq};

    fn op(seq: u64, bytes: usize) -> Arc<Op> {
        let me = ReplicaId::new(RegionId::new("us-east").unwrap(), uuid::Uuid::from_u128(1));
        let key = meridian_core::Key::new("k").unwrap();
        let value = meridian_crdt::Value::Bytes(vec![0; bytes]);
        Arc::new(Op {
            dot: Dot::new(me, Seq(seq)),
            hlc: Hlc::ZERO,
            deps: VersionVector::new(),
            mutations: vec![meridian_core::Mutation {
                keyspace: meridian_core::KeyspaceName::default_keyspace(),
                key,
                op: meridian_crdt::ObjectOp::Lww(meridian_crdt::LwwOp::Set(value)),
            }],
        })
    }

    fn feed(capacity: usize, max_bytes: usize) -> Feed {
        let index = LogIndex {
            end: Lsn(1),
            ..LogIndex::default()
        };
        Feed::new(capacity, max_bytes, PathBuf::from("/nonexistent"), index)
    }

    #[test]
    fn a_commit_without_ops_never_moves_the_end_back() {
        // Before: a group with no ops pushed Lsn(0) and reset the end, so
        // ops still lingering waited for the next write.
        let f = feed(100, 1 << 20);
        f.push(Lsn(1), [op(1, 10), op(2, 10)], LogIndex::default());
        assert_eq!(f.end(), Lsn(3));
        f.push(Lsn(0), [], LogIndex::default());
        assert_eq!(f.end(), Lsn(3));
        assert_eq!(f.read(Lsn(1), 10).map(|v| v.len()), Some(2));
    }

    #[test]
    fn what_a_peer_lacks_is_counted_per_origin_as_a_full_scan_would() {
        let a = ReplicaId::new(RegionId::new("us-east").unwrap(), uuid::Uuid::from_u128(1));
        let b = ReplicaId::new(RegionId::new("eu-west").unwrap(), uuid::Uuid::from_u128(2));
        let mk = |r: &ReplicaId, seq: u64, wall: u64, bytes: usize| {
            let mut o = (*op(seq, bytes)).clone();
            o.dot = Dot::new(r.clone(), Seq(seq));
            o.hlc = Hlc::new(wall, 0).unwrap();
            Arc::new(o)
        };
        // Interleaved origins, b's seqs with a gap (a state transfer in
        // between), varied sizes; a tail of 40 ops, so the oldest go. Each
        // origin's clock rises with its seqs (HLCs do), b's far behind a's:
        // the oldest op a peer lacks need not be the first in log order.
        let f = feed(40, 1 << 20);
        let mut all = Vec::new();
        let (mut sa, mut sb) = (0, 0);
        for i in 0..100u64 {
            let o = if i % 3 == 0 {
                sb += if i == 30 { 5 } else { 1 };
                mk(&b, sb, 500 + i, 10 + (i as usize % 7))
            } else {
                sa += 1;
                mk(&a, sa, 1_000 + i, 20 + (i as usize % 5))
            };
            all.push(o.clone());
            f.push(Lsn(i + 1), [o], LogIndex::default());
        }
        let tail: Vec<_> = all[all.len() - 40..].to_vec();
        let size = |o: &Op| codec::encoded_len(o).unwrap() as u64;
        for (ha, hb) in [(0, 0), (50, 0), (0, 20), (60, 30), (66, 34), (1000, 1000)] {
            let acked: VersionVector = [(a.clone(), Seq(ha)), (b.clone(), Seq(hb))]
                .into_iter()
                .collect();
            let lacks: Vec<_> = tail.iter().filter(|o| !acked.covers(&o.dot)).collect();
            let bytes: u64 = lacks.iter().map(|o| size(o)).sum();
            let oldest = lacks.iter().map(|o| o.hlc.wall_ms()).min();
            assert_eq!(f.missing_bytes(&acked), bytes, "acked {ha}/{hb}");
            assert_eq!(f.oldest_missing_wall(&acked), oldest, "acked {ha}/{hb}");
        }
        assert_eq!(f.read(Lsn(500), 10).map(|v| v.len()), Some(0));
    }

    #[test]
    fn a_batch_reads_on_past_what_the_peer_holds() {
        // Shipping restarts at a segment's start: the peer holds the first
        // 50,000 ops there already and lacks the 10 after them.
        let f = feed(100_000, 1 << 30);
        f.push(Lsn(1), (1..=50_010).map(|s| op(s, 10)), LogIndex::default());
        let me = op(1, 1).dot.replica.clone();
        let mut sync = PeerSync::new();
        let held: VersionVector = [(me, Seq(50_000))].into_iter().collect();
        sync.connected(&held, Lsn(1));
        let limits = BatchLimits {
            max_ops: 100,
            ..BatchLimits::default()
        };
        let size = |o: &Op| codec::encoded_len(o).unwrap();
        let batch = f.next_batch(&mut sync, limits, size).unwrap();
        let seqs: Vec<u64> = batch.iter().map(|o| o.dot.seq.0).collect();
        assert_eq!(seqs, (50_001..=50_010).collect::<Vec<_>>());
        // Then nothing more, without looping, at the tail's end.
        assert_eq!(
            f.next_batch(&mut sync, limits, size).map(|b| b.len()),
            Some(0)
        );
        // Behind the tail: the disk's turn.
        let mut behind = PeerSync::new();
        behind.connected(&VersionVector::new(), Lsn(0));
        assert!(f.next_batch(&mut behind, limits, size).is_none());
    }

    #[test]
    fn the_tail_is_bounded_by_bytes_and_keeps_the_newest_op() {
        let f = feed(1000, 10_000);
        f.push(Lsn(1), (1..=5).map(|s| op(s, 3_000)), LogIndex::default());
        assert!(f.bytes() <= 10_000, "{}", f.bytes());
        assert!(f.read(Lsn(1), 10).is_none(), "the oldest went to disk");
        assert_eq!(f.read(Lsn(3), 10).map(|v| v.len()), Some(3));
        // One op larger than the whole budget stays (it is the newest).
        f.push(Lsn(6), [op(6, 50_000)], LogIndex::default());
        assert_eq!(f.read(Lsn(6), 10).map(|v| v.len()), Some(1));
        assert_eq!(f.end(), Lsn(7));
    }
}
