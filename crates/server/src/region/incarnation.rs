//! Whether this incarnation's own seqs are safe to issue.
//!
//! A region numbers its own ops 1, 2, 3, ... under its incarnation. If its
//! log or state was lost or rolled back (a restored disk, a VM snapshot,
//! `--repair-log`) while its identity survived, it would issue seqs its
//! peers already hold, and they would drop the new writes as duplicates.
//! Three checks keep that from happening:
//!
//! - at start, a region that knows it may have lost its own ops (a repaired
//!   log, own ops logged but not applied, or a known identity with no own
//!   op recovered) continues as a new incarnation (`Region::open`);
//! - an existing incarnation restarted with peers asks every peer for its
//!   version vector before it takes a write, and goes on as it is only if
//!   all answered and none holds an own op it lacks; otherwise it continues
//!   as a new incarnation (`Region::settle_incarnation`, called by `serve`
//!   before the client API opens);
//! - every replication session starts with the peer's version vector: a
//!   peer holding more of this incarnation's ops than this region has (a
//!   rollback nothing above caught) retires it: the region records a new
//!   incarnation, stops taking writes, fails health checks with the reason
//!   and exits, so it restarts as the new one. The old incarnation's ops
//!   come back from the peers as anyone's would.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use meridian_crdt::{RegionId, ReplicaId, VersionVector};
use tokio::sync::watch;

use super::identity;

/// How long a restarted region waits for its peers' version vectors before
/// it continues as a new incarnation instead.
pub const PEER_CHECK_WAIT: Duration = Duration::from_secs(3);

/// This incarnation's standing.
pub struct Incarnation {
    dir: PathBuf,
    replica: Mutex<ReplicaId>,
    fatal: watch::Sender<Option<Arc<str>>>,
}

impl Incarnation {
    /// For `replica` in data directory `dir`; `fatal` is the writer's
    /// failure signal (a retired incarnation stops the region through it).
    pub fn new(dir: PathBuf, replica: ReplicaId, fatal: watch::Sender<Option<Arc<str>>>) -> Self {
        Self {
            dir,
            replica: Mutex::new(replica),
            fatal,
        }
    }

    /// The replica id the region runs as now.
    pub fn replica(&self) -> ReplicaId {
        self.replica
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The region continues as `replica`.
    pub fn set_replica(&self, replica: ReplicaId) {
        *self.replica.lock().unwrap_or_else(PoisonError::into_inner) = replica;
    }

    /// Checks a peer's version vector against this region's own: `Err`
    /// (and the incarnation retired) when the peer holds own ops this region
    /// lacks.
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
        Ok(())
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
