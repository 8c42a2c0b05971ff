//! Hybrid logical clocks: timestamps that follow physical time and never run
//! backwards, so the order they give respects causality.
//!
//! The clock logic takes the current wall time as an argument; nothing here
//! reads a clock (Kulkarni et al., "Logical Physical Clocks", 2014).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::id::{Dot, ReplicaId};

/// What can go wrong when the clock moves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    /// A received timestamp is further ahead of local time than the cluster
    /// allows. Applying it would drag this clock (and every later write) into
    /// the future, so the caller must hold the op back instead.
    #[error(
        "remote timestamp {remote} is {ahead_ms} ms ahead of local time (max offset {max_offset_ms} ms)"
    )]
    AheadOfLocal {
        /// The remote timestamp.
        remote: Hlc,
        /// How far ahead of local wall time it is.
        ahead_ms: u64,
        /// The configured bound.
        max_offset_ms: u64,
    },
    /// Wall time past the 48-bit range (year 10889): the clock refuses rather
    /// than wrap.
    #[error("wall time {wall_ms} ms does not fit in 48 bits")]
    WallOverflow {
        /// The wall time that did not fit.
        wall_ms: u64,
    },
}

/// A hybrid logical clock timestamp: 48 bits of wall-clock milliseconds since
/// the Unix epoch, then 16 bits of logical counter.
///
/// Ordering is numeric on the packed value, i.e. by wall time, then logical.
/// Two ops from different replicas can carry the same `Hlc`; [`Stamp`] breaks
/// that tie by replica id.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hlc(u64);

impl Hlc {
    /// Largest wall time that fits.
    pub const MAX_WALL_MS: u64 = (1 << 48) - 1;
    /// The zero timestamp, before any event.
    pub const ZERO: Hlc = Hlc(0);

    /// A timestamp from its parts.
    pub fn new(wall_ms: u64, logical: u16) -> Result<Hlc, ClockError> {
        if wall_ms > Self::MAX_WALL_MS {
            return Err(ClockError::WallOverflow { wall_ms });
        }
        Ok(Hlc(wall_ms << 16 | u64::from(logical)))
    }

    /// Wall-clock milliseconds since the Unix epoch.
    pub fn wall_ms(self) -> u64 {
        self.0 >> 16
    }

    /// The logical counter within one millisecond.
    pub fn logical(self) -> u16 {
        (self.0 & 0xffff) as u16
    }

    /// The packed 64-bit form (wall << 16 | logical).
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// From the packed form; every `u64` is a valid timestamp.
    pub fn from_u64(v: u64) -> Hlc {
        Hlc(v)
    }

    /// The next timestamp after `self` at the same or a later wall time.
    /// A full logical counter carries into the wall time (so the clock runs at
    /// most one millisecond ahead per 65,536 events in a millisecond).
    fn successor(self) -> Result<Hlc, ClockError> {
        match self.logical().checked_add(1) {
            Some(l) => Hlc::new(self.wall_ms(), l),
            None => Hlc::new(self.wall_ms() + 1, 0),
        }
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.wall_ms(), self.logical())
    }
}

impl fmt::Debug for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hlc({self})")
    }
}

impl Serialize for Hlc {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for Hlc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u64::deserialize(d).map(Hlc)
    }
}

/// The total order over ops: HLC first, then replica id.
///
/// Two different ops never share a stamp, because a replica never issues the
/// same HLC twice.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    /// When.
    pub hlc: Hlc,
    /// Who, breaking HLC ties.
    pub replica: ReplicaId,
}

/// A version of a value: the op that wrote it (its dot) and when (its HLC).
///
/// Versions order by [`Stamp`]: HLC, then replica.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Version {
    /// When the op was stamped.
    pub hlc: Hlc,
    /// Which op.
    pub dot: Dot,
}

impl Version {
    /// A version from its parts.
    pub fn new(hlc: Hlc, dot: Dot) -> Self {
        Self { hlc, dot }
    }

    /// The stamp this version orders by.
    pub fn stamp(&self) -> Stamp {
        Stamp {
            hlc: self.hlc,
            replica: self.dot.replica.clone(),
        }
    }

    /// Compares two versions in the total order (HLC, then replica, then seq).
    pub fn cmp_stamp(&self, other: &Version) -> std::cmp::Ordering {
        (self.hlc, &self.dot.replica, self.dot.seq).cmp(&(
            other.hlc,
            &other.dot.replica,
            other.dot.seq,
        ))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}@{}",
            self.dot.replica.region, self.dot.seq, self.hlc
        )
    }
}

/// One replica's hybrid logical clock.
///
/// # Invariants
/// Every timestamp it returns is strictly greater than every timestamp it
/// returned or observed before, whatever `now_ms` says: the clock never goes
/// backwards, and an event that follows another in causal order gets a higher
/// timestamp.
#[derive(Clone, Debug)]
pub struct Clock {
    last: Hlc,
    max_offset_ms: u64,
}

impl Clock {
    /// A clock that refuses remote timestamps more than `max_offset_ms`
    /// ahead of local wall time.
    pub fn new(max_offset_ms: u64) -> Self {
        Self {
            last: Hlc::ZERO,
            max_offset_ms,
        }
    }

    /// The highest timestamp issued or observed so far.
    pub fn last(&self) -> Hlc {
        self.last
    }

    /// The configured maximum offset.
    pub fn max_offset_ms(&self) -> u64 {
        self.max_offset_ms
    }

    /// Raises the clock to at least `hlc`, without checking the offset; used
    /// on restart with timestamps this replica itself wrote to disk.
    pub fn restore(&mut self, hlc: Hlc) {
        self.last = self.last.max(hlc);
    }

    /// A timestamp for a local event at wall time `now_ms`.
    pub fn tick(&mut self, now_ms: u64) -> Result<Hlc, ClockError> {
        let next = if now_ms > self.last.wall_ms() {
            Hlc::new(now_ms, 0)?
        } else {
            self.last.successor()?
        };
        self.last = next;
        Ok(next)
    }

    /// The timestamp the next local event would get at wall time `now_ms`,
    /// after observing `floor` if given (what [`Clock::observe`] then
    /// [`Clock::tick`] would return), without moving the clock.
    pub fn peek(&self, now_ms: u64, floor: Option<Hlc>) -> Result<Hlc, ClockError> {
        let mut c = self.clone();
        if let Some(f) = floor {
            c.observe(f, now_ms)?;
        }
        c.tick(now_ms)
    }

    /// Checks a received timestamp against the offset bound without moving
    /// the clock.
    pub fn check(&self, remote: Hlc, now_ms: u64) -> Result<(), ClockError> {
        let limit = now_ms.saturating_add(self.max_offset_ms);
        if remote.wall_ms() > limit {
            return Err(ClockError::AheadOfLocal {
                remote,
                ahead_ms: remote.wall_ms() - now_ms,
                max_offset_ms: self.max_offset_ms,
            });
        }
        Ok(())
    }

    /// Merges a received timestamp at wall time `now_ms` and returns the
    /// timestamp of the receive event, which is greater than both `remote`
    /// and everything before. Refuses (and leaves the clock untouched) when
    /// `remote` is more than the max offset ahead of `now_ms`.
    pub fn observe(&mut self, remote: Hlc, now_ms: u64) -> Result<Hlc, ClockError> {
        self.check(remote, now_ms)?;
        let top = self.last.max(remote);
        let next = if now_ms > top.wall_ms() {
            Hlc::new(now_ms, 0)?
        } else {
            top.successor()?
        };
        self.last = next;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_says_what_the_next_tick_gives_and_moves_nothing() {
        let mut c = Clock::new(500);
        c.tick(1_000).unwrap();
        let floor = Hlc::new(1_200, u16::MAX).unwrap();
        let p = c.peek(1_000, Some(floor)).unwrap();
        assert_eq!(c.last(), Hlc::new(1_000, 0).unwrap(), "not moved");
        assert!(
            p > floor,
            "above every timestamp of the floor's millisecond"
        );
        assert_eq!(p.wall_ms(), 1_201);
        c.observe(floor, 1_000).unwrap();
        assert_eq!(c.tick(1_000).unwrap(), p);
        assert!(c.peek(1_000, Some(Hlc::new(5_000, 0).unwrap())).is_err());
    }

    #[test]
    fn tick_follows_wall_time_and_never_goes_back() {
        let mut c = Clock::new(500);
        let a = c.tick(1_000).unwrap();
        assert_eq!((a.wall_ms(), a.logical()), (1_000, 0));
        let b = c.tick(1_000).unwrap();
        assert_eq!((b.wall_ms(), b.logical()), (1_000, 1));
        let d = c.tick(900).unwrap(); // the wall clock stepped back
        assert!(d > b);
        assert_eq!(d.wall_ms(), 1_000);
        let e = c.tick(2_000).unwrap();
        assert_eq!((e.wall_ms(), e.logical()), (2_000, 0));
    }

    #[test]
    fn logical_overflow_carries_into_the_wall_time() {
        let mut c = Clock::new(500);
        let mut prev = c.tick(5).unwrap();
        for _ in 0..70_000 {
            let next = c.tick(5).unwrap();
            assert!(next > prev);
            prev = next;
        }
        assert_eq!(prev.wall_ms(), 6);
        assert_eq!(prev.logical(), (70_000 - 65_536) as u16);
    }

    #[test]
    fn observe_moves_past_the_remote() {
        let mut c = Clock::new(500);
        c.tick(1_000).unwrap();
        let remote = Hlc::new(1_200, 7).unwrap();
        let got = c.observe(remote, 1_000).unwrap();
        assert_eq!((got.wall_ms(), got.logical()), (1_200, 8));
        assert!(c.tick(1_000).unwrap() > got);
    }

    #[test]
    fn observe_refuses_far_future_timestamps() {
        let mut c = Clock::new(500);
        let before = c.tick(1_000).unwrap();
        let far = Hlc::new(1_501, 0).unwrap();
        let err = c.observe(far, 1_000).unwrap_err();
        assert_eq!(
            err,
            ClockError::AheadOfLocal {
                remote: far,
                ahead_ms: 501,
                max_offset_ms: 500
            }
        );
        assert_eq!(
            c.last(),
            before,
            "a refused timestamp must not move the clock"
        );
        assert!(c.observe(Hlc::new(1_500, 0).unwrap(), 1_000).is_ok());
    }

    #[test]
    fn wall_time_past_48_bits_is_an_error() {
        let mut c = Clock::new(500);
        assert!(matches!(
            c.tick(1 << 48),
            Err(ClockError::WallOverflow { .. })
        ));
        let mut c = Clock::new(500);
        c.restore(Hlc::new(Hlc::MAX_WALL_MS, u16::MAX).unwrap());
        assert!(c.tick(0).is_err());
    }

    #[test]
    fn packing_round_trips() {
        let h = Hlc::new(1_764_172_170_123, 42).unwrap();
        assert_eq!(Hlc::from_u64(h.as_u64()), h);
        assert_eq!(h.to_string(), "1764172170123.42");
    }
}
