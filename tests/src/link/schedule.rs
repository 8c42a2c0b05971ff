//! When each chunk of a stream is delivered: the pure core of the delay
//! line, kept free of sockets so its guarantees are unit-tested.

use std::time::Duration;

use tokio::time::Instant;

use super::LinkSpec;
use super::rng::Draws;

/// The delivery clock of one direction of one connection.
///
/// # Invariants
/// - Delivery times never decrease: a chunk is delivered at
///   `max(previous delivery, arrival + delay)`, so bytes stay in order (TCP's
///   head-of-line blocking) however large the jitter.
/// - Draws come from this schedule's own seeded PRNG, in chunk order, so a
///   seed replays the same decisions for the same chunks.
#[derive(Debug)]
pub(crate) struct Schedule {
    rng: Draws,
    last: Option<Instant>,
}

/// What happens to one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Forward the chunk at `at`; `lost` says it paid the loss penalty.
    Deliver { at: Instant, lost: bool },
    /// Reset the connection instead (the `close` draw hit).
    Reset,
}

impl Schedule {
    pub(crate) fn new(seed: u64) -> Self {
        Schedule {
            rng: Draws::new(seed),
            last: None,
        }
    }

    /// Decides the fate of a data chunk that arrived at `arrival`.
    pub(crate) fn chunk(&mut self, arrival: Instant, spec: &LinkSpec) -> Verdict {
        if self.rng.chance(spec.close) {
            return Verdict::Reset;
        }
        let lost = self.rng.chance(spec.loss);
        let at = self.delivery(arrival, spec, lost);
        Verdict::Deliver { at, lost }
    }

    /// When to deliver the end of the stream (the FIN): after all data, and
    /// a latency away like any segment. A FIN is never lost or reset here.
    pub(crate) fn end(&mut self, arrival: Instant, spec: &LinkSpec) -> Instant {
        self.delivery(arrival, spec, false)
    }

    fn delivery(&mut self, arrival: Instant, spec: &LinkSpec, lost: bool) -> Instant {
        let jitter = spec.jitter_ms;
        let mut delay_ms = spec.latency_ms;
        if jitter > 0 {
            // latency + uniform(-jitter..=jitter), floored at zero.
            delay_ms = (delay_ms + self.rng.up_to(2 * jitter)).saturating_sub(jitter);
        }
        if lost {
            delay_ms += spec.loss_delay_ms;
        }
        let at = arrival + Duration::from_millis(delay_ms);
        let at = self.last.map_or(at, |previous| at.max(previous));
        self.last = Some(at);
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Delivery times, as offsets from the first arrival, of `n` chunks
    /// arriving one millisecond apart.
    fn deliveries(seed: u64, spec: &LinkSpec, n: u64) -> Vec<Duration> {
        let start = Instant::now();
        let mut schedule = Schedule::new(seed);
        (0..n)
            .map(
                |i| match schedule.chunk(start + Duration::from_millis(i), spec) {
                    Verdict::Deliver { at, .. } => at - start,
                    Verdict::Reset => panic!("unexpected reset"),
                },
            )
            .collect()
    }

    #[test]
    fn deliveries_keep_order_under_large_jitter() {
        let spec = LinkSpec::latency(10).with_jitter(500);
        let times = deliveries(1, &spec, 1000);
        assert!(times.windows(2).all(|pair| pair[0] <= pair[1]));
        // The jitter really varied the delay: some chunks were held back
        // behind a slower predecessor, some were not.
        let distinct = times.windows(2).filter(|pair| pair[0] != pair[1]).count();
        assert!(distinct > 10 && distinct < 999, "{distinct}");
    }

    #[test]
    fn delay_stays_within_latency_plus_minus_jitter() {
        let start = Instant::now();
        let spec = LinkSpec::latency(100).with_jitter(30);
        let mut schedule = Schedule::new(9);
        for _ in 0..1000 {
            // Same arrival each time, so each delivery is max(previous, own delay).
            let Verdict::Deliver { at, .. } = schedule.chunk(start, &spec) else {
                panic!("unexpected reset");
            };
            assert!(at >= start + Duration::from_millis(70));
            assert!(at <= start + Duration::from_millis(130));
        }
    }

    #[test]
    fn same_seed_same_schedule() {
        let spec = LinkSpec::latency(5).with_jitter(50).with_loss(0.2);
        assert_eq!(deliveries(7, &spec, 200), deliveries(7, &spec, 200));
        assert_ne!(deliveries(7, &spec, 200), deliveries(8, &spec, 200));
    }

    #[test]
    fn loss_adds_its_delay_and_close_resets() {
        let start = Instant::now();
        let lossy = LinkSpec::latency(10).with_loss(1.0);
        assert_eq!(
            Schedule::new(1).chunk(start, &lossy),
            Verdict::Deliver {
                at: start + Duration::from_millis(210),
                lost: true
            }
        );
        let closing = LinkSpec::latency(10).with_close(1.0);
        assert_eq!(Schedule::new(1).chunk(start, &closing), Verdict::Reset);
    }

    #[test]
    fn end_of_stream_follows_the_data() {
        let start = Instant::now();
        let mut schedule = Schedule::new(3);
        let Verdict::Deliver { at, .. } = schedule.chunk(start, &LinkSpec::latency(500)) else {
            panic!("unexpected reset");
        };
        // The latency dropped to zero, yet the FIN still waits for the data.
        assert_eq!(schedule.end(start, &LinkSpec::latency(0)), at);
    }
}
