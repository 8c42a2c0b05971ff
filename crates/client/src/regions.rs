//! The regions a client may talk to, in order of preference, with what it
//! has learned about each one's health.
//!
//! A region that fails (no connection, a timeout, a server error) is set
//! aside; calls go to the next region meanwhile. A background watcher
//! probes the region's `/healthz` each time a backoff passes (growing with
//! each failure in a row, with jitter, so many clients do not come back at
//! once) and puts it back at its place in the order as soon as it answers:
//! a client returns to its preferred region without any application call
//! paying for a region that is still dead. A call tries set-aside regions
//! only when every other region has failed it too.
//!
//! Past ~400 lines only with its unit tests, which STYLE keeps beside the
//! code; the code itself is under 400.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// How long a failed region is set aside.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    /// After the first failure.
    pub min: Duration,
    /// At most, however many failures in a row.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            min: Duration::from_millis(200),
            max: Duration::from_secs(2),
        }
    }
}

impl Backoff {
    fn schedule(&self) -> ExponentialBackoff {
        ExponentialBuilder::new()
            .with_min_delay(self.min)
            .with_max_delay(self.max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
    }
}

/// One region's URL and health.
pub(crate) struct Endpoint {
    pub(crate) base: String,
    health: Mutex<Health>,
}

#[derive(Default)]
struct Health {
    /// Set aside until then.
    down_until: Option<Instant>,
    /// The delays still to come while it keeps failing.
    schedule: Option<ExponentialBackoff>,
    /// Consecutive failures.
    failures: u32,
    /// Round trip of `/healthz`, when measured.
    rtt: Option<Duration>,
    /// A background watcher is running.
    probing: bool,
    /// Which watcher is the current one (a newer one replaces an older one
    /// still asleep).
    watch_gen: u64,
    /// Behind a session's token until then: tried after the regions that
    /// are not (it answers; it is catching up).
    lagging_until: Option<Instant>,
}

/// How long a region that answered `503 behind_token` goes after the
/// others: about the time a region needs to catch up after a restart,
/// short enough that a client soon returns to its nearest region.
pub const LAGGING_HOLD: Duration = Duration::from_secs(1);

impl Endpoint {
    fn new(base: String) -> Self {
        Endpoint {
            base,
            health: Mutex::new(Health::default()),
        }
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A call succeeded there: back in its place, its backoff reset.
    pub(crate) fn succeeded(&self) {
        let mut h = self.health();
        h.down_until = None;
        h.schedule = None;
        h.failures = 0;
        h.probing = false;
        h.lagging_until = None;
    }

    /// Its `/healthz` answered: back in its place, but its backoff goes on
    /// from where it was, so a region whose health check passes while its
    /// calls fail is not brought back ever faster.
    pub(crate) fn probe_succeeded(&self, generation: u64) {
        let mut h = self.health();
        if h.probing && h.watch_gen == generation {
            h.down_until = None;
            h.probing = false;
        }
    }

    /// It answered that it is behind the call's token: try it after the
    /// others for [`LAGGING_HOLD`].
    pub(crate) fn lagging(&self) {
        self.health().lagging_until = Instant::now().checked_add(LAGGING_HOLD);
    }

    fn is_lagging(&self, now: Instant) -> bool {
        self.health().lagging_until.is_some_and(|t| t > now)
    }

    /// It failed: set aside for the next delay of its backoff. Failures of
    /// calls that were already in flight when it was set aside do not
    /// lengthen the backoff.
    pub(crate) fn failed(&self, backoff: &Backoff) {
        let now = Instant::now();
        let mut h = self.health();
        if h.down_until.is_some_and(|t| t > now) {
            return;
        }
        Self::set_aside(&mut h, now, backoff);
    }

    /// Watcher `generation`'s probe failed: set aside for the next delay,
    /// unless the region came back meanwhile or a newer watcher took over
    /// (then `false`: the watcher stops).
    pub(crate) fn probe_failed(&self, generation: u64, backoff: &Backoff) -> bool {
        let mut h = self.health();
        if !(h.probing && h.watch_gen == generation) {
            return false;
        }
        Self::set_aside(&mut h, Instant::now(), backoff);
        true
    }

    fn set_aside(h: &mut Health, now: Instant, backoff: &Backoff) {
        let delay = h
            .schedule
            .get_or_insert_with(|| backoff.schedule())
            .next()
            .unwrap_or(backoff.max);
        h.down_until = Some(now.checked_add(delay).unwrap_or(now));
        h.failures = h.failures.saturating_add(1);
    }

    /// Until when it is set aside; it stays set aside past that time until
    /// a probe or a call succeeds there.
    fn down_until(&self) -> Option<Instant> {
        self.health().down_until
    }

    /// Whether a background watcher should start for it (it is set aside
    /// and none runs): the new watcher's generation.
    pub(crate) fn take_watch(&self) -> Option<u64> {
        let mut h = self.health();
        if h.down_until.is_none() || h.probing {
            return None;
        }
        h.probing = true;
        h.watch_gen += 1;
        Some(h.watch_gen)
    }

    /// Until when watcher `generation` should sleep: `None` when it should
    /// stop (the region is back, or a newer watcher took over).
    pub(crate) fn watch_until(&self, generation: u64) -> Option<Instant> {
        let h = self.health();
        (h.probing && h.watch_gen == generation)
            .then_some(h.down_until)
            .flatten()
    }

    /// Watcher `generation` ended (however: finished, aborted, panicked).
    pub(crate) fn watch_ended(&self, generation: u64) {
        let mut h = self.health();
        if h.watch_gen == generation {
            h.probing = false;
        }
    }

    /// Until when it is set aside (`None`: it is back).
    #[cfg(test)]
    pub(crate) fn set_aside_until(&self) -> Option<Instant> {
        self.down_until()
    }
}

/// A region as the client sees it (for status displays and tests).
#[derive(Clone, Debug, PartialEq)]
pub struct RegionHealth {
    /// Its base URL.
    pub url: String,
    /// Whether calls go to it (false from a failure until a probe or a
    /// call succeeds there again).
    pub up: bool,
    /// Consecutive failures.
    pub failures: u32,
    /// Round trip of `/healthz`, when [`crate::Client::rank`] measured it.
    pub rtt: Option<Duration>,
}

/// The configured regions and the order calls try them in.
pub(crate) struct Regions {
    endpoints: Vec<Endpoint>,
    /// Indexes into `endpoints`, most preferred first.
    order: Mutex<Vec<usize>>,
    pub(crate) backoff: Backoff,
}

impl Regions {
    pub(crate) fn new(bases: Vec<String>, backoff: Backoff) -> Self {
        let order = (0..bases.len()).collect();
        Regions {
            endpoints: bases.into_iter().map(Endpoint::new).collect(),
            order: Mutex::new(order),
            backoff,
        }
    }

    fn order(&self) -> Vec<usize> {
        self.order
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The regions to try for one call: those not set aside, in order of
    /// preference (those lagging behind a token last among them), then
    /// those set aside, soonest back first (a call tries every region
    /// before it gives up).
    pub(crate) fn plan(&self) -> Vec<&Endpoint> {
        let now = Instant::now();
        let (up, mut down): (Vec<_>, Vec<_>) = self
            .order()
            .into_iter()
            .map(|i| &self.endpoints[i])
            .partition(|e| e.down_until().is_none());
        let (mut plan, mut lagging): (Vec<_>, Vec<_>) =
            up.into_iter().partition(|e| !e.is_lagging(now));
        down.sort_by_key(|e| e.down_until());
        plan.append(&mut lagging);
        plan.append(&mut down);
        plan
    }

    /// The configured region with this base URL.
    pub(crate) fn find(&self, base: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.base == base)
    }

    /// The most preferred region.
    pub(crate) fn first(&self) -> &Endpoint {
        &self.endpoints[self.order()[0]]
    }

    pub(crate) fn all(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Records measured round trips and orders by them (unmeasured, i.e.
    /// unreachable, regions last, in their configured order).
    pub(crate) fn rank(&self, rtts: &[Option<Duration>]) {
        for (e, rtt) in self.endpoints.iter().zip(rtts) {
            e.health().rtt = *rtt;
        }
        let mut order: Vec<usize> = (0..self.endpoints.len()).collect();
        order.sort_by_key(|i| (rtts[*i].is_none(), rtts[*i], *i));
        *self.order.lock().unwrap_or_else(PoisonError::into_inner) = order;
    }

    /// Each region's health, in order of preference.
    pub(crate) fn health(&self) -> Vec<RegionHealth> {
        self.order()
            .into_iter()
            .map(|i| {
                let e = &self.endpoints[i];
                let h = e.health();
                RegionHealth {
                    url: e.base.clone(),
                    up: h.down_until.is_none(),
                    failures: h.failures,
                    rtt: h.rtt,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regions() -> Regions {
        Regions::new(
            vec!["http://a".into(), "http://b".into(), "http://c".into()],
            Backoff {
                min: Duration::from_secs(60),
                max: Duration::from_secs(120),
            },
        )
    }

    fn bases(r: &Regions) -> Vec<&str> {
        r.plan().into_iter().map(|e| e.base.as_str()).collect()
    }

    #[test]
    fn a_failed_region_goes_last_and_comes_back_when_it_answers() {
        let r = regions();
        assert_eq!(bases(&r), ["http://a", "http://b", "http://c"]);
        r.all()[0].failed(&r.backoff);
        assert_eq!(bases(&r), ["http://b", "http://c", "http://a"]);
        r.all()[1].failed(&r.backoff);
        // Both set aside: the one due back sooner (by its jittered delay)
        // is tried first.
        let plan = r.plan();
        assert_eq!(plan[0].base, "http://c");
        assert!(plan[1].down_until() <= plan[2].down_until());
        r.all()[0].succeeded();
        assert_eq!(bases(&r), ["http://a", "http://c", "http://b"]);
        let h = r.health();
        assert!(h[0].up && !h[1].up && h[2].up);
        assert_eq!(h[1].failures, 1);
    }

    #[test]
    fn failures_while_set_aside_do_not_lengthen_the_backoff() {
        let r = regions();
        let e = &r.all()[0];
        e.failed(&r.backoff);
        let first = e.down_until();
        for _ in 0..10 {
            e.failed(&r.backoff);
        }
        assert_eq!(e.down_until(), first);
        assert_eq!(r.health()[0].failures, 1);
    }

    #[test]
    fn one_watcher_per_set_aside_region_and_only_a_success_brings_it_back() {
        let r = regions();
        let a = &r.all()[0];
        assert_eq!(a.take_watch(), None, "nothing to watch while it is up");
        a.failed(&r.backoff);
        let g = a.take_watch().unwrap();
        assert_eq!(a.take_watch(), None, "one watcher at a time");
        assert!(a.watch_until(g).is_some());
        assert!(a.probe_failed(g, &r.backoff));
        assert_eq!(r.health()[0].failures, 2);
        assert!(!r.health()[0].up, "still set aside");
        a.probe_succeeded(g);
        assert!(r.health()[0].up);
        assert_eq!(
            r.health()[0].failures,
            2,
            "a probe does not reset the backoff"
        );
        assert_eq!(a.watch_until(g), None, "the watcher stops");
        a.failed(&r.backoff);
        let g2 = a.take_watch().unwrap();
        assert!(g2 > g);
        a.succeeded();
        assert_eq!(a.set_aside_until(), None);
        assert_eq!(r.health()[0].failures, 0, "a call success does");
        assert_eq!(a.watch_until(g2), None);
    }

    #[test]
    fn a_probe_failing_after_a_call_brought_the_region_back_changes_nothing() {
        let r = regions();
        let a = &r.all()[0];
        a.failed(&r.backoff);
        let g = a.take_watch().unwrap();
        a.succeeded();
        assert!(!a.probe_failed(g, &r.backoff), "the watcher stops");
        assert!(r.health()[0].up, "not set aside again with nobody watching");
    }

    #[test]
    fn a_watcher_that_ends_without_a_verdict_lets_the_next_one_start() {
        let r = regions();
        let a = &r.all()[0];
        a.failed(&r.backoff);
        let g = a.take_watch().unwrap();
        a.watch_ended(g);
        assert!(a.take_watch().is_some(), "not stuck as watched forever");
    }

    #[test]
    fn a_lagging_region_goes_after_the_others_but_before_those_set_aside() {
        let r = regions();
        r.all()[2].failed(&r.backoff);
        r.all()[0].lagging();
        assert_eq!(bases(&r), ["http://b", "http://a", "http://c"]);
        assert!(r.health()[0].up, "lagging is not down");
    }

    #[test]
    fn ranking_puts_the_nearest_first_and_the_unreachable_last() {
        let r = regions();
        let ms = |n| Some(Duration::from_millis(n));
        r.rank(&[None, ms(30), ms(5)]);
        assert_eq!(bases(&r), ["http://c", "http://b", "http://a"]);
        assert_eq!(r.first().base, "http://c");
    }
}
