//! The in-memory tail of committed ops, so senders that keep up never read
//! the disk; and the log index they consult when they fall behind it.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use meridian_core::log::LogIndex;
use meridian_core::{Lsn, Op};
use meridian_crdt::VersionVector;
use tokio::sync::watch;

/// What the writer hands to replication.
pub struct Feed {
    ops: Mutex<VecDeque<(Lsn, Arc<Op>)>>,
    capacity: usize,
    end: watch::Sender<Lsn>,
    index: RwLock<Arc<LogIndex>>,
    /// The op log directory (for reading behind the tail).
    pub log_dir: PathBuf,
}

impl Feed {
    /// A feed keeping the last `capacity` committed ops in memory.
    pub fn new(capacity: usize, log_dir: PathBuf, index: LogIndex) -> Self {
        let (end, _) = watch::channel(index.end);
        Self {
            ops: Mutex::new(VecDeque::new()),
            capacity,
            end,
            index: RwLock::new(Arc::new(index)),
            log_dir,
        }
    }

    /// Committed ops, the first at `first`; then the log's new index.
    pub fn push(&self, first: Lsn, ops: impl IntoIterator<Item = Arc<Op>>, index: LogIndex) {
        let mut q = self.ops.lock().unwrap_or_else(PoisonError::into_inner);
        let mut lsn = first;
        for op in ops {
            q.push_back((lsn, op));
            lsn.0 += 1;
        }
        while q.len() > self.capacity {
            q.pop_front();
        }
        drop(q);
        *self.index.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(index);
        self.end.send_replace(lsn);
    }

    /// Ops from `from` on (at most `max`), if the tail still holds `from`.
    pub fn read(&self, from: Lsn, max: usize) -> Option<Vec<(Lsn, Arc<Op>)>> {
        let q = self.ops.lock().unwrap_or_else(PoisonError::into_inner);
        let front = q.front().map(|(l, _)| *l)?;
        if from < front {
            return None;
        }
        let skip = (from.0 - front.0) as usize;
        Some(q.iter().skip(skip).take(max).cloned().collect())
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

    /// Wall time (ms) of the oldest op in the tail a peer at `acked` lacks:
    /// how far behind the peer is in time.
    pub fn oldest_missing_wall(&self, acked: &VersionVector) -> Option<u64> {
        let q = self.ops.lock().unwrap_or_else(PoisonError::into_inner);
        q.iter()
            .find(|(_, op)| !acked.covers(&op.dot))
            .map(|(_, op)| op.hlc.wall_ms())
    }
}
