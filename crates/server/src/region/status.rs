//! Facts about the op log that status and metrics show, updated by the writer.

use std::sync::atomic::{AtomicU64, Ordering};

use meridian_core::Log;
use meridian_crdt::VersionVector;
use serde_json::json;

/// How stale the `state_bytes` of a status page or a scrape may be:
/// measuring lists the store's files, and consoles poll every 2 s.
pub const STATE_BYTES_AGE: std::time::Duration = std::time::Duration::from_secs(5);

/// Op log figures, readable from any thread.
#[derive(Debug, Default)]
pub struct LogInfo {
    bytes: AtomicU64,
    segments: AtomicU64,
    start_lsn: AtomicU64,
    end_lsn: AtomicU64,
}

/// A copy of [`LogInfo`] at one moment.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct LogSnapshot {
    /// Bytes on disk.
    pub bytes: u64,
    /// Segment files.
    pub segments: u64,
    /// Oldest retained record.
    pub start_lsn: u64,
    /// One past the newest record.
    pub end_lsn: u64,
}

impl LogInfo {
    /// Reads the figures off the log.
    pub fn update(&self, log: &Log) {
        self.bytes.store(log.bytes(), Ordering::Relaxed);
        self.segments
            .store(log.segments().count() as u64, Ordering::Relaxed);
        self.start_lsn.store(log.start_lsn().0, Ordering::Relaxed);
        self.end_lsn.store(log.end_lsn().0, Ordering::Relaxed);
    }

    /// The current figures.
    pub fn snapshot(&self) -> LogSnapshot {
        LogSnapshot {
            bytes: self.bytes.load(Ordering::Relaxed),
            segments: self.segments.load(Ordering::Relaxed),
            start_lsn: self.start_lsn.load(Ordering::Relaxed),
            end_lsn: self.end_lsn.load(Ordering::Relaxed),
        }
    }
}

/// A version vector as JSON: one entry per origin.
pub fn vv_json(vv: &VersionVector) -> serde_json::Value {
    json!(vv
        .iter()
        .map(|(r, s)| json!({"region": r.region.as_str(), "incarnation": r.incarnation.to_string(), "seq": s.0}))
        .collect::<Vec<_>>())
}
