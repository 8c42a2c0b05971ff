//! The wall clock the region stamps writes with.

use std::time::{SystemTime, UNIX_EPOCH};

/// System time in ms since the Unix epoch, shifted by a fixed skew (tests
/// use the skew to emulate a region whose clock is wrong).
#[derive(Clone, Copy, Debug, Default)]
pub struct WallClock {
    skew_ms: i64,
}

impl WallClock {
    /// A clock shifted by `skew_ms`.
    pub fn new(skew_ms: i64) -> Self {
        Self { skew_ms }
    }

    /// Now, in ms since the epoch.
    pub fn now_ms(&self) -> u64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        real.saturating_add_signed(self.skew_ms)
    }
}
