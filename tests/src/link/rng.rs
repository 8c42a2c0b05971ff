//! Seeded draws (fastrand's generator), so a test can replay the exact
//! jitter, loss and reset draws of a failing run from its seed, and the
//! seed derivation that gives every link and direction its own stream.

use std::time::{SystemTime, UNIX_EPOCH};

/// A seed taken from the wall clock, for runs that did not ask for one.
/// Print it: it is what replays the run.
pub fn seed_from_time() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or(0);
    // Fold the high bits in so two seeds taken close together still differ
    // in every bit after mixing.
    mix((nanos as u64) ^ ((nanos >> 64) as u64))
}

/// Derives an independent seed for a sub-stream (a link, a connection, a
/// direction) from a parent seed, so streams never share draws and adding
/// one link does not shift another link's numbers.
pub(crate) fn derive(parent: u64, part: u64) -> u64 {
    mix(parent ^ mix(part.wrapping_add(0x9e37_79b9_7f4a_7c15)))
}

/// FNV-1a of a name: a stable number for a region name, to derive seeds.
pub(crate) fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One stream of draws: the same seed gives the same sequence.
#[derive(Debug, Clone)]
pub(crate) struct Draws(fastrand::Rng);

impl Draws {
    pub(crate) fn new(seed: u64) -> Self {
        Draws(fastrand::Rng::with_seed(seed))
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn next_f64(&mut self) -> f64 {
        self.0.f64()
    }

    /// True with probability `p`; never draws when `p` is 0, so a clean
    /// link consumes no randomness.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.next_f64() < p
    }

    /// Uniform in `0..=max`.
    pub(crate) fn up_to(&mut self, max: u64) -> u64 {
        self.0.u64(..=max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let mut a = Draws::new(42);
        let mut b = Draws::new(42);
        let xs: Vec<u64> = (0..8).map(|_| a.up_to(u64::MAX)).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.up_to(u64::MAX)).collect();
        assert_eq!(xs, ys);
        assert_ne!(Draws::new(43).up_to(u64::MAX), xs[0]);
    }

    #[test]
    fn ranges_hold() {
        let mut rng = Draws::new(7);
        for _ in 0..10_000 {
            let x = rng.next_f64();
            assert!((0.0..1.0).contains(&x));
            assert!(rng.up_to(10) <= 10);
        }
        assert!(!rng.chance(0.0));
        assert!(rng.chance(1.0));
        assert_eq!(rng.up_to(0), 0);
    }

    #[test]
    fn derived_seeds_differ() {
        assert_ne!(derive(1, 0), derive(1, 1));
        assert_ne!(derive(1, 0), derive(2, 0));
        assert_ne!(name_hash("us-east"), name_hash("eu-west"));
    }
}
