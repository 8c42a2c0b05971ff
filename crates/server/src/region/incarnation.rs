//! Whether this incarnation's own seqs are safe to issue.
//!
//! A region numbers its own ops 1, 2, 3, ... under its incarnation. If its
//! log or state was lost or rolled back (a restored disk, a VM snapshot,
//! `--repair-log`) while its identity survived, it would issue seqs its
//! peers already hold, and they would drop the new writes as duplicates.
//! Two checks keep that from happening:
//!
//! - at start, a region that knows it may have lost its own ops (a repaired
//!   log, or an identity with no own op recovered) continues as a new
//!   incarnation (see `Region::open`);
//! - every replication session starts with the peer's version vector: a
//!   peer holding more of this incarnation's ops than this region has
//!   proves a rollback. The region then records a new incarnation, fails
//!   (health checks say why) and exits, so it restarts as the new one; the
//!   old incarnation's ops come back from the peers as anyone's would.
//!
//! After a restart of an existing incarnation, local writes wait until one
//! peer has confirmed the region's own seqs (or [`PEER_CHECK_WAIT`] passed
//! with no peer reachable, when the region takes writes on its own word),
//! so the check normally runs before any new seq is issued. A new
//! incarnation (a new data directory, or one just re-incarnated) has issued
//! nothing and does not wait.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use meridian_crdt::{RegionId, ReplicaId, VersionVector};
use tokio::sync::watch;

use super::identity;

/// How long local writes wait for a peer to confirm this incarnation's seqs
/// after a start, before the region takes them anyway.
pub const PEER_CHECK_WAIT: Duration = Duration::from_secs(3);

/// This incarnation's standing: confirmed by a peer, or retired.
pub struct Incarnation {
    dir: PathBuf,
    replica: Mutex<ReplicaId>,
    fatal: watch::Sender<Option<Arc<str>>>,
    confirmed: watch::Sender<bool>,
}

impl Incarnation {
    /// For `replica` in data directory `dir`; `fatal` is the writer's
    /// failure signal; `confirmed` starts true when there are no peers.
    pub fn new(
        dir: PathBuf,
        replica: ReplicaId,
        fatal: watch::Sender<Option<Arc<str>>>,
        confirmed: bool,
    ) -> Self {
        Self {
            dir,
            replica: Mutex::new(replica),
            fatal,
            confirmed: watch::channel(confirmed).0,
        }
    }

    /// Checks a peer's version vector against this region's own: `Err`
    /// (and the region retired) when the peer holds own ops this region
    /// lacks; otherwise local writes may go.
    pub fn check_peer(
        &self,
        peer: &RegionId,
        peer_vv: &VersionVector,
        ours: &VersionVector,
    ) -> Result<(), String> {
        let me = self
            .replica
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let theirs = peer_vv.get(&me);
        let have = ours.get(&me);
        if theirs > have {
            let reason = format!(
                "this region's log was rolled back: peer {peer} holds seq {} of incarnation {me}, this region only {}. It continues as a new incarnation after a restart; the lost ops come back from the peers",
                theirs.0, have.0
            );
            self.retire(&reason);
            return Err(reason);
        }
        self.confirmed.send_replace(true);
        Ok(())
    }

    /// Lets local writes go without a peer's word (none reachable in time).
    pub fn confirm_alone(&self) {
        if !*self.confirmed.borrow() {
            tracing::warn!(
                wait_ms = PEER_CHECK_WAIT.as_millis() as u64,
                "no peer confirmed this incarnation's seqs in time: taking writes on this region's own word"
            );
        }
        self.confirmed.send_replace(true);
    }

    /// Waits until local writes may go; `false` if the region was retired.
    pub async fn wait_confirmed(&self) -> bool {
        if *self.confirmed.borrow() {
            return self.fatal.borrow().is_none();
        }
        let mut rx = self.confirmed.subscribe();
        let mut fatal = self.fatal.subscribe();
        let confirmed = tokio::select! {
            r = rx.wait_for(|c| *c) => r.is_ok(),
            _ = fatal.wait_for(Option::is_some) => false,
        };
        confirmed && self.fatal.borrow().is_none()
    }

    fn retire(&self, reason: &str) {
        let mut replica = self.replica.lock().unwrap_or_else(PoisonError::into_inner);
        let old = replica.clone();
        let message = match identity::reincarnate_at(&self.dir, &mut replica) {
            Ok(()) => {
                tracing::error!(old = %old, new = %*replica, reason, "incarnation retired");
                reason.to_string()
            }
            Err(e) => format!("{reason} (recording the new incarnation failed: {e})"),
        };
        self.fatal.send_replace(Some(Arc::from(message)));
    }
}
