//! What each peer link is doing, for `/v1/status` and metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use meridian_crdt::{RegionId, VersionVector};
use serde_json::json;

use super::tail::Feed;

/// The state of a link to one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// Not connected yet, or connecting.
    Connecting,
    /// Talking.
    Connected,
    /// Waiting before reconnecting after an error.
    Backoff,
    /// Sending a state snapshot.
    Transferring,
}

impl LinkState {
    fn as_str(self) -> &'static str {
        match self {
            LinkState::Connecting => "connecting",
            LinkState::Connected => "connected",
            LinkState::Backoff => "backoff",
            LinkState::Transferring => "state_transfer",
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: LinkState,
    acked: VersionVector,
    last_error: Option<String>,
    clock_offset_ms: Option<i64>,
    peer_held: u64,
    peer_buffered: u64,
}

/// One peer link's figures.
#[derive(Debug)]
pub struct PeerStatus {
    /// The peer's region.
    pub name: RegionId,
    /// Its peer URL.
    pub url: String,
    inner: Mutex<Inner>,
    /// Payload bytes sent (batches and state pages).
    pub bytes: AtomicU64,
    /// Batches sent.
    pub batches: AtomicU64,
    /// Ops sent (resends included).
    pub ops: AtomicU64,
    /// State transfers completed.
    pub transfers: AtomicU64,
    /// Failed sessions (errors that forced a reconnect).
    pub errors: AtomicU64,
}

impl PeerStatus {
    /// A link not yet connected.
    pub fn new(name: RegionId, url: String) -> Arc<Self> {
        Arc::new(Self {
            name,
            url,
            inner: Mutex::new(Inner {
                state: LinkState::Connecting,
                acked: VersionVector::new(),
                last_error: None,
                clock_offset_ms: None,
                peer_held: 0,
                peer_buffered: 0,
            }),
            bytes: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            ops: AtomicU64::new(0),
            transfers: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the link state.
    pub fn set_state(&self, s: LinkState) {
        self.lock().state = s;
    }

    /// The link state.
    pub fn state(&self) -> LinkState {
        self.lock().state
    }

    /// Records an error.
    pub fn error(&self, e: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut g = self.lock();
        g.last_error = Some(e.to_string());
        g.state = LinkState::Backoff;
    }

    /// Records what the peer acknowledged.
    pub fn acked(
        &self,
        vv: &VersionVector,
        clock_offset_ms: Option<i64>,
        held: u32,
        buffered: u32,
    ) {
        let mut g = self.lock();
        g.acked.merge(vv);
        if clock_offset_ms.is_some() {
            g.clock_offset_ms = clock_offset_ms;
        }
        g.peer_held += u64::from(held);
        g.peer_buffered = u64::from(buffered);
    }

    /// What the peer holds durably, as far as we know.
    pub fn acked_vv(&self) -> VersionVector {
        self.lock().acked.clone()
    }

    /// Ops we have that the peer has not acknowledged.
    pub fn lag_ops(&self, ours: &VersionVector) -> u64 {
        let g = self.lock();
        ours.iter()
            .map(|(r, s)| s.0.saturating_sub(g.acked.get(r).0))
            .sum()
    }

    /// Milliseconds since the oldest op the peer lacks was written (0 when it lacks none).
    pub fn lag_ms(&self, ours: &VersionVector, feed: Option<&Feed>, now_ms: u64) -> u64 {
        if self.lag_ops(ours) == 0 {
            return 0;
        }
        let acked = self.acked_vv();
        feed.and_then(|f| f.oldest_missing_wall(&acked))
            .map_or(0, |wall| now_ms.saturating_sub(wall))
    }

    /// The estimated clock offset of the peer, ms (peer minus us).
    pub fn clock_offset_ms(&self) -> Option<i64> {
        self.lock().clock_offset_ms
    }

    /// This link as JSON for `/v1/status`.
    pub fn to_json(
        &self,
        ours: &VersionVector,
        feed: Option<&Feed>,
        now_ms: u64,
    ) -> serde_json::Value {
        let lag_ops = self.lag_ops(ours);
        let lag_ms = self.lag_ms(ours, feed, now_ms);
        let g = self.lock();
        json!({
            "region": self.name.as_str(),
            "url": self.url,
            "link": g.state.as_str(),
            "acked_vv": crate::api::status::vv_json(&g.acked),
            "lag_ops": lag_ops,
            "lag_ms": lag_ms,
            "bytes_sent": self.bytes.load(Ordering::Relaxed),
            "batches_sent": self.batches.load(Ordering::Relaxed),
            "ops_sent": self.ops.load(Ordering::Relaxed),
            "state_transfers": self.transfers.load(Ordering::Relaxed),
            "errors": self.errors.load(Ordering::Relaxed),
            "last_error": g.last_error,
            "clock_offset_ms": g.clock_offset_ms,
            "peer_held_for_clock": g.peer_held,
            "peer_causal_buffered": g.peer_buffered,
        })
    }
}

/// Every peer link of the region, plus refused requests.
#[derive(Debug, Default)]
pub struct Peers {
    /// The links.
    pub links: Vec<Arc<PeerStatus>>,
    /// Peer requests refused for a bad or missing signature.
    pub auth_failures: AtomicU64,
    /// Peer batches received.
    pub batches_received: AtomicU64,
}
