//! What each peer link is doing, for `/v1/status` and metrics.
//!
//! Past ~400 lines only with its unit tests, which STYLE keeps beside the
//! code; the code itself is under 400.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use meridian_crdt::{RegionId, ReplicaId, VersionVector};
use serde_json::json;

use crate::region::feed::Feed;

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
    /// The peer's clock at its latest ack, with the version vector it acked then.
    last_ack: Option<(meridian_crdt::Hlc, VersionVector)>,
    /// The replica that sent the acks above.
    replica: Option<ReplicaId>,
}

/// One peer link's figures.
#[derive(Debug)]
pub struct PeerStatus {
    /// The peer's region.
    pub name: RegionId,
    /// Its peer URLs: the leader's first, then its standbys' (after a
    /// failover one of those leads).
    candidates: Vec<String>,
    url: Mutex<String>,
    inner: Mutex<Inner>,
    /// Payload bytes sent (batches and state pages).
    pub bytes: AtomicU64,
    /// Batches sent.
    pub batches: AtomicU64,
    /// Ops sent (resends included).
    pub ops: AtomicU64,
    /// State transfers completed.
    pub transfers: AtomicU64,
    /// The wire version of the current (or last) session; 0 before one.
    pub wire: std::sync::atomic::AtomicU8,
    /// Batches sent twice by an injected fault (tests only).
    pub fault_duplicated: AtomicU64,
    /// Batches held back by an injected fault (tests only).
    pub fault_delayed: AtomicU64,
    /// Failed sessions (errors that forced a reconnect).
    pub errors: AtomicU64,
    /// Anti-entropy repairs: keys fixed here or at the peer after comparing.
    pub repairs: AtomicU64,
    /// Anti-entropy comparisons completed.
    pub ae_rounds: AtomicU64,
    /// Answers refused because another region signed them, or signed them
    /// for another request (a misrouted URL, a replayed answer).
    pub wrong_peer: AtomicU64,
    /// Empty batches sent to learn what the peer holds before relaying
    /// ops held back.
    pub probes: AtomicU64,
    /// Poked when a signed request from this region arrives: it is
    /// reachable again, so a sender waiting out a reconnect delay to it
    /// tries at once (a healed partition is noticed by whichever side
    /// reconnects first).
    pub heard: tokio::sync::Notify,
    acks: Arc<tokio::sync::watch::Sender<u64>>,
}

impl PeerStatus {
    /// A link not yet connected; `acks` is poked on every ack.
    pub fn new(
        name: RegionId,
        url: String,
        acks: Arc<tokio::sync::watch::Sender<u64>>,
    ) -> Arc<Self> {
        Self::with_standbys(name, url, Vec::new(), acks)
    }

    /// A link to a region reached at `url`, or, when that is not its
    /// leader, at one of `standbys`.
    pub fn with_standbys(
        name: RegionId,
        url: String,
        standbys: Vec<String>,
        acks: Arc<tokio::sync::watch::Sender<u64>>,
    ) -> Arc<Self> {
        let mut candidates = vec![url.clone()];
        candidates.extend(standbys.into_iter().filter(|u| *u != url));
        Arc::new(Self {
            name,
            candidates,
            url: Mutex::new(url),
            inner: Mutex::new(Inner {
                state: LinkState::Connecting,
                acked: VersionVector::new(),
                last_error: None,
                clock_offset_ms: None,
                peer_held: 0,
                peer_buffered: 0,
                last_ack: None,
                replica: None,
            }),
            bytes: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            ops: AtomicU64::new(0),
            transfers: AtomicU64::new(0),
            wire: std::sync::atomic::AtomicU8::new(0),
            fault_duplicated: AtomicU64::new(0),
            fault_delayed: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            repairs: AtomicU64::new(0),
            ae_rounds: AtomicU64::new(0),
            wrong_peer: AtomicU64::new(0),
            probes: AtomicU64::new(0),
            heard: tokio::sync::Notify::new(),
            acks,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `url` is one of this peer region's members (its leader's or
    /// a standby's peer URL).
    pub fn answers_at(&self, url: &str) -> bool {
        self.candidates.iter().any(|c| c == url) || self.url() == url
    }

    /// The peer URL in use.
    pub fn url(&self) -> String {
        self.url
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Uses `url` from now on (a standby's leader moved).
    pub fn set_url(&self, url: &str) {
        *self.url.lock().unwrap_or_else(PoisonError::into_inner) = url.to_string();
    }

    /// After a failed session: the next candidate URL (the region's
    /// leader may have moved to a standby). Returns whether it changed.
    pub fn rotate(&self) -> bool {
        if self.candidates.len() < 2 {
            return false;
        }
        let mut g = self.url.lock().unwrap_or_else(PoisonError::into_inner);
        let i = self.candidates.iter().position(|u| *u == *g).unwrap_or(0);
        *g = self.candidates[(i + 1) % self.candidates.len()].clone();
        true
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

    /// Records what the peer acknowledged (and its clock then). An ack
    /// from another incarnation than the earlier ones (the peer's data was
    /// wiped) replaces what they acknowledged instead of adding to it: the
    /// new incarnation holds only what it says.
    pub fn acked(
        &self,
        replica: Option<&ReplicaId>,
        vv: &VersionVector,
        hlc: meridian_crdt::Hlc,
        clock_offset_ms: Option<i64>,
        held: u32,
        buffered: u32,
    ) {
        {
            let mut g = self.lock();
            if let Some(r) = replica {
                if g.replica.as_ref().is_some_and(|old| old != r) {
                    tracing::warn!(peer = %self.name, old = ?g.replica, new = %r, "peer came back as a new incarnation: forgetting its old acks");
                    g.acked = VersionVector::new();
                    g.last_ack = None;
                }
                g.replica = Some(r.clone());
            }
            g.acked.merge(vv);
            if clock_offset_ms.is_some() {
                g.clock_offset_ms = clock_offset_ms;
            }
            g.peer_held += u64::from(held);
            g.peer_buffered = u64::from(buffered);
            if g.last_ack.as_ref().is_none_or(|(h, _)| hlc >= *h) {
                g.last_ack = Some((hlc, vv.clone()));
            }
        }
        self.acks.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The replica (incarnation) the acks came from, once one named it.
    pub fn replica(&self) -> Option<ReplicaId> {
        self.lock().replica.clone()
    }

    /// The peer's clock at its latest ack and the version vector of that ack.
    pub fn last_ack(&self) -> Option<(meridian_crdt::Hlc, VersionVector)> {
        self.lock().last_ack.clone()
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
            "url": self.url(),
            "link": g.state.as_str(),
            "acked_vv": crate::region::status::vv_json(&g.acked),
            "lag_ops": lag_ops,
            "lag_ms": lag_ms,
            "bytes_sent": self.bytes.load(Ordering::Relaxed),
            "batches_sent": self.batches.load(Ordering::Relaxed),
            "ops_sent": self.ops.load(Ordering::Relaxed),
            "state_transfers": self.transfers.load(Ordering::Relaxed),
            "relay_probes": self.probes.load(Ordering::Relaxed),
            "wire_version": self.wire.load(Ordering::Relaxed),
            "batches_duplicated_by_fault": self.fault_duplicated.load(Ordering::Relaxed),
            "batches_delayed_by_fault": self.fault_delayed.load(Ordering::Relaxed),
            "anti_entropy_rounds": self.ae_rounds.load(Ordering::Relaxed),
            "anti_entropy_repairs": self.repairs.load(Ordering::Relaxed),
            "errors": self.errors.load(Ordering::Relaxed),
            "answers_refused_wrong_peer": self.wrong_peer.load(Ordering::Relaxed),
            "last_error": g.last_error,
            "clock_offset_ms": g.clock_offset_ms,
            "peer_held_for_clock": g.peer_held,
            "peer_causal_buffered": g.peer_buffered,
        })
    }
}

/// Every peer link of the region, plus refused requests.
#[derive(Debug)]
pub struct Peers {
    /// The links.
    pub links: Vec<Arc<PeerStatus>>,
    /// Peer requests refused for a bad or missing signature.
    pub auth_failures: AtomicU64,
    /// Peer batches received.
    pub batches_received: AtomicU64,
    /// Read repairs made by quorum reads (keys pushed to a region that was behind).
    pub read_repairs: AtomicU64,
    acks: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Peers {
    /// Links to `peers` (region, peer URL), each also reachable at its
    /// `standbys`' URLs.
    pub fn new(
        peers: &[(RegionId, String)],
        standbys: &std::collections::BTreeMap<RegionId, Vec<String>>,
    ) -> Self {
        let (tx, _) = tokio::sync::watch::channel(0);
        let acks = Arc::new(tx);
        Self {
            links: peers
                .iter()
                .map(|(n, u)| {
                    PeerStatus::with_standbys(
                        n.clone(),
                        u.clone(),
                        standbys.get(n).cloned().unwrap_or_default(),
                        acks.clone(),
                    )
                })
                .collect(),
            auth_failures: AtomicU64::new(0),
            batches_received: AtomicU64::new(0),
            read_repairs: AtomicU64::new(0),
            acks,
        }
    }

    /// The sender side of the ack signal (standby links poke it too).
    pub fn acks_sender(&self) -> Arc<tokio::sync::watch::Sender<u64>> {
        self.acks.clone()
    }

    /// Wakes on every ack from any peer.
    pub fn subscribe_acks(&self) -> tokio::sync::watch::Receiver<u64> {
        self.acks.subscribe()
    }

    /// Regions in the cluster, this one included.
    pub fn regions(&self) -> usize {
        self.links.len() + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_crdt::Seq;

    #[test]
    fn a_new_incarnation_of_a_peer_replaces_what_the_old_one_acknowledged() {
        // Before: a wiped peer's old acked vector lingered, so writes it no
        // longer held still counted toward write concerns and stability.
        let (acks, _) = tokio::sync::watch::channel(0);
        let link = PeerStatus::new(
            RegionId::new("eu-west").unwrap(),
            "http://x".into(),
            Arc::new(acks),
        );
        let old = ReplicaId::new(RegionId::new("eu-west").unwrap(), uuid::Uuid::from_u128(1));
        let new = ReplicaId::new(RegionId::new("eu-west").unwrap(), uuid::Uuid::from_u128(2));
        let me = ReplicaId::new(RegionId::new("us-east").unwrap(), uuid::Uuid::from_u128(3));
        let vv = |s| -> VersionVector { [(me.clone(), Seq(s))].into_iter().collect() };
        link.acked(Some(&old), &vv(100), meridian_crdt::Hlc::ZERO, None, 0, 0);
        link.acked(Some(&old), &vv(50), meridian_crdt::Hlc::ZERO, None, 0, 0);
        assert_eq!(link.acked_vv(), vv(100), "one incarnation's acks add up");
        link.acked(Some(&new), &vv(3), meridian_crdt::Hlc::ZERO, None, 0, 0);
        assert_eq!(
            link.acked_vv(),
            vv(3),
            "the wiped peer holds only what it says"
        );
        assert_eq!(link.last_ack().map(|(_, v)| v), Some(vv(3)));
    }

    #[test]
    fn a_failed_session_moves_to_the_next_url_and_back() {
        let (acks, _) = tokio::sync::watch::channel(0);
        let link = PeerStatus::with_standbys(
            RegionId::new("eu-west").unwrap(),
            "http://a:1".into(),
            vec!["http://b:1".into(), "http://a:1".into()],
            Arc::new(acks),
        );
        assert_eq!(link.url(), "http://a:1");
        assert!(link.rotate());
        assert_eq!(link.url(), "http://b:1");
        assert!(link.rotate());
        assert_eq!(
            link.url(),
            "http://a:1",
            "the leader's URL is not listed twice"
        );
        let (acks, _) = tokio::sync::watch::channel(0);
        let alone = PeerStatus::new(
            RegionId::new("eu-west").unwrap(),
            "http://a:1".into(),
            Arc::new(acks),
        );
        assert!(!alone.rotate());
        assert_eq!(alone.url(), "http://a:1");
    }
}
