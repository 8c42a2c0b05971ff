//! A leader's followers: registered by their heartbeats, each with a
//! sender that ships it the leader's log, and the link figures (lag in ops,
//! bytes and ms) that `standby` and `region-all` write concerns wait on.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use meridian_core::{FjallBackend, Reader};
use meridian_crdt::{Dot, ReplicaId, VersionVector};
use serde_json::json;

use super::wire::Member;
use crate::peer::auth::Secret;
use crate::peer::sender::{Sender, SenderOptions};
use crate::peer::status::PeerStatus;
use crate::region::clock::WallClock;
use crate::region::feed::Feed;
use crate::region::incarnation::Incarnation;
use crate::shutdown::Shutdown;

/// A follower not heard from for this long no longer counts toward
/// `region-all` (it is shown as gone; its sender keeps trying).
pub const LIVE_FOR: Duration = Duration::from_secs(10);
/// A follower not heard from for this long is forgotten, its sender stopped.
pub const FORGET_AFTER: Duration = Duration::from_secs(300);

/// What a leader needs to start a sender to a follower.
pub struct SenderKit {
    /// This leader.
    pub me: ReplicaId,
    /// The cluster secret.
    pub secret: Secret,
    /// The committed-ops feed.
    pub feed: Arc<Feed>,
    /// Reads (state transfers).
    pub reader: Reader<FjallBackend>,
    /// Wall clock.
    pub clock: WallClock,
    /// Sender tuning.
    pub opts: SenderOptions,
    /// Rollback checks.
    pub incarnation: Arc<Incarnation>,
    /// Poked on every ack (write concerns wait on it).
    pub acks: Arc<tokio::sync::watch::Sender<u64>>,
    /// Stops the senders with the region.
    pub stop: Shutdown,
}

/// One follower.
pub struct Follower {
    /// How it is reached.
    pub member: Member,
    /// Its link figures (what it acknowledged durably).
    pub link: Arc<PeerStatus>,
    /// Its last heartbeat.
    pub last_seen: Instant,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The followers of a leader.
#[derive(Default)]
pub struct Followers {
    inner: Mutex<BTreeMap<ReplicaId, Follower>>,
    kit: OnceLock<SenderKit>,
}

impl Followers {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<ReplicaId, Follower>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Arms the registry (once the leader replicates).
    pub fn arm(&self, kit: SenderKit) {
        let _ = self.kit.set(kit);
    }

    /// A heartbeat from `m`: registers it (starting its sender) or
    /// refreshes it. Returns whether it is new.
    pub fn heard(&self, m: &Member) -> bool {
        let Some(kit) = self.kit.get() else {
            return false;
        };
        let mut g = self.lock();
        // Forgotten: silent too long, or the same member under a new
        // replica id (a standby restarted as a new incarnation): one
        // member, one entry, or `region-all` would wait for a ghost.
        g.retain(|r, f| {
            f.last_seen.elapsed() < FORGET_AFTER
                && (f.member.peer_url != m.peer_url || *r == m.replica)
        });
        if let Some(f) = g.get_mut(&m.replica)
            && f.member == *m
        {
            f.last_seen = Instant::now();
            return false;
        }
        let link = PeerStatus::new(
            m.replica.region.clone(),
            m.peer_url.clone(),
            kit.acks.clone(),
        );
        let sender = Sender::new(
            kit.me.clone(),
            link.clone(),
            kit.secret.clone(),
            kit.feed.clone(),
            kit.reader.clone(),
            kit.clock,
            kit.opts,
            kit.incarnation.clone(),
        );
        let task = tokio::spawn(sender.run(kit.stop.clone()));
        tracing::info!(follower = %m.replica, url = %m.peer_url, "standby registered: shipping the log to it");
        g.insert(
            m.replica.clone(),
            Follower {
                member: m.clone(),
                link,
                last_seen: Instant::now(),
                task,
            },
        );
        true
    }

    /// Peer URLs of followers heard from within [`LIVE_FOR`].
    pub fn live_urls(&self) -> Vec<String> {
        self.lock()
            .values()
            .filter(|f| f.last_seen.elapsed() < LIVE_FOR)
            .map(|f| f.member.peer_url.clone())
            .collect()
    }

    /// Every registered follower's link (what each acknowledged).
    pub fn links(&self) -> Vec<Arc<PeerStatus>> {
        self.lock()
            .values()
            .filter(|f| f.last_seen.elapsed() < FORGET_AFTER)
            .map(|f| f.link.clone())
            .collect()
    }

    /// Every follower, as members.
    pub fn members(&self) -> Vec<Member> {
        self.lock().values().map(|f| f.member.clone()).collect()
    }

    /// Followers heard from within [`LIVE_FOR`].
    pub fn live(&self) -> usize {
        self.lock()
            .values()
            .filter(|f| f.last_seen.elapsed() < LIVE_FOR)
            .count()
    }

    /// Followers holding `dot` durably, and how many are registered (heard
    /// from within [`FORGET_AFTER`]: `region-all` waits for each).
    pub fn holding(&self, dot: &Dot) -> (Vec<ReplicaId>, usize) {
        let g = self.lock();
        let registered = g
            .values()
            .filter(|f| f.last_seen.elapsed() < FORGET_AFTER)
            .count();
        let holders = g
            .values()
            .filter(|f| f.last_seen.elapsed() < FORGET_AFTER && f.link.acked_vv().covers(dot))
            .map(|f| f.member.replica.clone())
            .collect();
        (holders, registered)
    }

    /// Every follower's figures: `(replica, lag ops, lag bytes, lag ms,
    /// live)`.
    pub fn lags(
        &self,
        ours: &VersionVector,
        feed: Option<&Feed>,
        now_ms: u64,
    ) -> Vec<(ReplicaId, u64, u64, u64, bool)> {
        self.lock()
            .values()
            .map(|f| {
                let acked = f.link.acked_vv();
                (
                    f.member.replica.clone(),
                    f.link.lag_ops(ours),
                    feed.map_or(0, |feed| feed.missing_bytes(&acked)),
                    f.link.lag_ms(ours, feed, now_ms),
                    f.last_seen.elapsed() < LIVE_FOR,
                )
            })
            .collect()
    }

    /// Every follower as JSON for `/v1/status`.
    pub fn to_json(
        &self,
        ours: &VersionVector,
        feed: Option<&Feed>,
        now_ms: u64,
    ) -> Vec<serde_json::Value> {
        self.lock()
            .values()
            .map(|f| {
                let acked = f.link.acked_vv();
                let link = f.link.to_json(ours, feed, now_ms);
                json!({
                    "replica": f.member.replica.incarnation.to_string(),
                    "peer_url": f.member.peer_url,
                    "client_url": f.member.client_url,
                    "live": f.last_seen.elapsed() < LIVE_FOR,
                    "last_heartbeat_ms_ago": f.last_seen.elapsed().as_millis() as u64,
                    "link": link["link"],
                    "lag_ops": f.link.lag_ops(ours),
                    "lag_bytes": feed.map_or(0, |feed| feed.missing_bytes(&acked)),
                    "lag_ms": f.link.lag_ms(ours, feed, now_ms),
                    "state_transfers": link["state_transfers"],
                    "last_error": link["last_error"],
                })
            })
            .collect()
    }
}
