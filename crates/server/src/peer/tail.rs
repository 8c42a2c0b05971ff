//! The in-memory tail of committed ops, so senders that keep up never read
//! the disk; and the log index they consult when they fall behind it.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use meridian_core::log::LogIndex;
use meridian_core::{Lsn, Op};
use meridian_crdt::{VersionVector, codec};
use tokio::sync::watch;

/// The ops in memory, with their encoded sizes.
#[derive(Default)]
struct Tail {
    ops: VecDeque<(Lsn, Arc<Op>, usize)>,
    bytes: usize,
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
        for op in ops {
            let size = codec::encoded_len(&*op).unwrap_or(usize::MAX / 4);
            q.bytes += size;
            q.ops.push_back((lsn, op, size));
            lsn.0 += 1;
            pushed = true;
        }
        while q.ops.len() > 1 && (q.ops.len() > self.capacity || q.bytes > self.max_bytes) {
            if let Some((_, _, size)) = q.ops.pop_front() {
                q.bytes -= size;
            }
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
        let q = self.ops.lock().unwrap_or_else(PoisonError::into_inner);
        let front = q.ops.front().map(|(l, _, _)| *l)?;
        if from < front {
            return None;
        }
        let skip = (from.0 - front.0) as usize;
        Some(
            q.ops
                .iter()
                .skip(skip)
                .take(max)
                .map(|(l, op, _)| (*l, op.clone()))
                .collect(),
        )
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
    pub fn missing_bytes(&self, acked: &VersionVector) -> u64 {
        let q = self.ops.lock().unwrap_or_else(PoisonError::into_inner);
        q.ops
            .iter()
            .filter(|(_, op, _)| !acked.covers(&op.dot))
            .map(|(_, _, size)| *size as u64)
            .sum()
    }

    /// Wall time (ms) of the oldest op in the tail a peer at `acked` lacks:
    /// how far behind the peer is in time.
    pub fn oldest_missing_wall(&self, acked: &VersionVector) -> Option<u64> {
        let q = self.ops.lock().unwrap_or_else(PoisonError::into_inner);
        q.ops
            .iter()
            .find(|(_, op, _)| !acked.covers(&op.dot))
            .map(|(_, op, _)| op.hlc.wall_ms())
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
