//! Per-link counters.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// A snapshot of one directed link's counters since it was added.
///
/// "Forward" is `from -> to` (what the connecting region sends), "reverse"
/// is `to -> from` (the answers). Bytes count when delivered, not when read,
/// so bytes still waiting out their latency are not included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStats {
    /// Bytes delivered from `from` to `to`.
    pub bytes_forward: u64,
    /// Bytes delivered from `to` back to `from`.
    pub bytes_reverse: u64,
    /// TCP connections accepted on the link's port, refused ones included.
    pub connections_accepted: u64,
    /// Connections accepted while the link was partitioned and reset at once.
    pub connections_refused: u64,
    /// Open connections the emulator reset: by a partition or a `close` draw.
    pub connections_cut: u64,
    /// Connections currently open.
    pub connections_open: u64,
    /// Connections dropped because the upstream could not be reached.
    pub upstream_failures: u64,
    /// Chunks that drew `loss` and were delayed by `loss_delay_ms`.
    pub chunks_lost: u64,
}

/// The live counters behind [`LinkStats`], updated lock-free by the
/// connection tasks. Relaxed ordering: each counter is independent and only
/// ever read as a snapshot.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) bytes_forward: AtomicU64,
    pub(crate) bytes_reverse: AtomicU64,
    pub(crate) connections_accepted: AtomicU64,
    pub(crate) connections_refused: AtomicU64,
    pub(crate) connections_cut: AtomicU64,
    pub(crate) connections_open: AtomicU64,
    pub(crate) upstream_failures: AtomicU64,
    pub(crate) chunks_lost: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> LinkStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        LinkStats {
            bytes_forward: get(&self.bytes_forward),
            bytes_reverse: get(&self.bytes_reverse),
            connections_accepted: get(&self.connections_accepted),
            connections_refused: get(&self.connections_refused),
            connections_cut: get(&self.connections_cut),
            connections_open: get(&self.connections_open),
            upstream_failures: get(&self.upstream_failures),
            chunks_lost: get(&self.chunks_lost),
        }
    }

    /// Counts a connection as open until the guard drops, however the
    /// connection task ends (even by abort).
    pub(crate) fn open_guard(&self) -> OpenGuard<'_> {
        Counters::add(&self.connections_open, 1);
        OpenGuard(&self.connections_open)
    }
}

/// See [`Counters::open_guard`].
pub(crate) struct OpenGuard<'a>(&'a AtomicU64);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
