//! Knowing which regions are up and which are near: the background
//! watcher that probes a set-aside region until it answers, and ranking by
//! measured round trip. The state they update is in [`crate::regions`].

use std::sync::{Arc, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use http::Method;

use crate::client::{Client, Inner, Options};
use crate::regions::RegionHealth;

/// Marks a region's watcher as ended when its task goes away.
struct WatchEnded {
    inner: std::sync::Weak<Inner>,
    base: String,
    generation: u64,
}

impl Drop for WatchEnded {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.upgrade()
            && let Some(e) = inner.regions.find(&self.base)
        {
            e.watch_ended(self.generation);
        }
    }
}

impl Client {
    /// Measures each region's round trip (the median of three `/healthz`
    /// calls, all regions at once) and orders them nearest first;
    /// regions that do not answer go last. Returns the new order.
    pub async fn rank(&self) -> Vec<RegionHealth> {
        let mut probes = tokio::task::JoinSet::new();
        for (i, e) in self.inner.regions.all().iter().enumerate() {
            let (client, base) = (self.clone(), e.base.clone());
            probes.spawn(async move {
                let mut rtts = Vec::with_capacity(3);
                for _ in 0..3 {
                    let t = Instant::now();
                    if client.healthz(&base).await {
                        rtts.push(t.elapsed());
                    }
                }
                rtts.sort();
                // A region that answered fewer than two of three is not ranked.
                (i, rtts.get(1).copied())
            });
        }
        let mut rtts = vec![None; self.inner.regions.all().len()];
        while let Some(done) = probes.join_next().await {
            if let Ok((i, rtt)) = done {
                rtts[i] = rtt;
            }
        }
        self.inner.regions.rank(&rtts);
        self.regions()
    }

    /// Watches a region that was just set aside: probes its `/healthz`
    /// whenever its backoff passes, until it answers (then it is back in
    /// the order) or a call succeeds there. The watcher holds the client
    /// only while it probes, and ends with it.
    pub(crate) fn watch(&self, e: &crate::regions::Endpoint) {
        let Some(generation) = e.take_watch() else {
            return;
        };
        let (weak, base) = (Arc::downgrade(&self.inner), e.base.clone());
        // However the watcher ends (the client dropped, the runtime shutting
        // down before it ran, a panic), the region can be watched again.
        let ended = WatchEnded {
            inner: weak.clone(),
            base: base.clone(),
            generation,
        };
        let mut probes = self
            .inner
            .probes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while probes.try_join_next().is_some() {}
        probes.spawn(async move {
            let _ended = ended;
            loop {
                let until = {
                    let Some(inner) = weak.upgrade() else { return };
                    let Some(until) = inner
                        .regions
                        .find(&base)
                        .and_then(|e| e.watch_until(generation))
                    else {
                        return;
                    };
                    until
                };
                tokio::time::sleep_until(until.into()).await;
                let Some(inner) = weak.upgrade() else { return };
                let client = Client { inner };
                let ok = client.healthz(&base).await;
                let regions = &client.inner.regions;
                let Some(e) = regions.find(&base) else { return };
                if ok {
                    e.probe_succeeded(generation);
                    return;
                }
                if !e.probe_failed(generation, &regions.backoff) {
                    return;
                }
            }
        });
    }

    pub(crate) async fn healthz(&self, base: &str) -> bool {
        let opts = Options {
            timeout_ms: Some(1_000),
            ..Options::default()
        };
        let r = self
            .attempt(
                &Method::GET,
                base,
                "/healthz",
                &Bytes::new(),
                &opts,
                crate::call::Stamp::default(),
            )
            .await;
        matches!(r, Ok(r) if r.status.is_success())
    }
}
