//! The bandwidth cap of one direction of a link.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Serialises deliveries onto a link of limited rate, shared by every
/// connection of the link (a WAN link's capacity is shared, not per flow).
///
/// A chunk of `n` bytes occupies the link for `n / rate` seconds starting
/// when the link is free, and is delivered when its last byte is through.
#[derive(Debug)]
pub(crate) struct Pacer {
    next_free: Mutex<Instant>,
}

impl Pacer {
    pub(crate) fn new() -> Self {
        Pacer {
            next_free: Mutex::new(Instant::now()),
        }
    }

    /// Reserves the link for `bytes` at `rate` bytes/s and returns when the
    /// chunk is fully through; `None` when the rate is unlimited (0).
    pub(crate) fn reserve(&self, bytes: usize, rate: u64) -> Option<Instant> {
        if rate == 0 {
            return None;
        }
        let busy_for = Duration::from_secs_f64(bytes as f64 / rate as f64);
        let now = Instant::now();
        // Lock held only for this arithmetic; never across an await.
        let mut next_free = self
            .next_free
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let done = (*next_free).max(now) + busy_for;
        *next_free = done;
        Some(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_queue_behind_each_other() {
        let pacer = Pacer::new();
        assert_eq!(pacer.reserve(1000, 0), None);
        let start = Instant::now();
        let first = pacer.reserve(50_000, 100_000).unwrap();
        let second = pacer.reserve(50_000, 100_000).unwrap();
        assert!(first >= start + Duration::from_millis(500));
        assert!(second >= first + Duration::from_millis(500));
    }
}
