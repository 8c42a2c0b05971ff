//! Standbys inside a region: a leader and the followers that stream its op
//! log, and failover between them.
//!
//! A follower is a whole region process (its own log, state and replica id)
//! that takes ops only from its region's leader, over the peer protocol
//! regions already use between them: the leader runs one
//! [`crate::peer::sender::Sender`] per follower that has said it is there
//! ([`members`]). The follower serves reads and passes writes to the leader
//! (`crate::api::gate`). When the leader goes silent for `failover_timeout_ms`, the
//! most caught-up follower takes over at a higher epoch ([`follow`]); the
//! process restarts in the new role ([`Change`]), and a new leader tells
//! every member it knows of its epoch, so an old leader that comes back
//! steps down. Nothing is rolled back: a member's ops are ops like any
//! region's, and its sender ships whatever its new leader lacks.
//!
//! Roles and epochs are kept in `standby.json` ([`state`]).
//!
//! Why past ~400 lines: the `Standby` state (role, epoch, leader, members)
//! and its transitions: one state machine.

pub mod config;
pub mod follow;
pub mod members;
pub mod metrics;
pub mod peer;
pub mod state;
pub mod wire;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use meridian_crdt::{ReplicaId, VersionVector};
use tokio::sync::watch;

use config::StandbySettings;
use state::{Persisted, Role, StateError};
use wire::Member;

/// Most other members remembered (the newest).
const MAX_MEMBERS: usize = 32;

/// A role change: the new role is already in `standby.json`; the process
/// restarts into it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// This follower leads from now on, at `epoch`.
    Promote {
        /// The new epoch.
        epoch: u64,
    },
    /// This leader follows `leader` (a peer URL) from now on.
    Demote {
        /// The leader that outranks this one.
        leader: String,
        /// Its epoch.
        epoch: u64,
    },
}

/// What a follower knows of its leader.
#[derive(Clone, Debug, Default)]
pub struct LeaderView {
    /// Its peer URL.
    pub peer_url: String,
    /// Who answered there, once one did.
    pub member: Option<Member>,
}

/// Counters for status and metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Writes whose in-region concern was not met and that the keyspace
    /// allowed to succeed as `local`.
    pub downgrades: AtomicU64,
    /// Writes answered 504 because the in-region concern was not met.
    pub timeouts: AtomicU64,
    /// Writes a follower passed to its leader.
    pub forwarded: AtomicU64,
    /// Reads refused for being staler than asked.
    pub too_stale: AtomicU64,
}

/// This member's standby state while it runs in one role.
pub struct Standby {
    /// Settings.
    pub settings: StandbySettings,
    /// This member, as others reach it.
    pub me: Member,
    /// Its role for this run (a change restarts the process's region).
    pub role: Role,
    epoch: AtomicU64,
    leader: Mutex<LeaderView>,
    others: Mutex<Vec<Member>>,
    old_leaders: Vec<String>,
    /// A leader's followers.
    pub followers: members::Followers,
    /// A follower: wall ms up to which it is known to hold everything the
    /// leader had (0: never).
    fresh_at_ms: AtomicU64,
    /// A follower: leader answers not yet covered, oldest first.
    pending: Mutex<std::collections::VecDeque<(u64, VersionVector)>>,
    /// A follower: when the leader last answered (None: not in this run).
    contact: Mutex<Option<Instant>>,
    change: watch::Sender<Option<Change>>,
    /// Held across "is a role change pending?" and writing `standby.json`,
    /// so a late refresh never writes over a promotion or a demotion.
    saving: Mutex<()>,
    data_dir: PathBuf,
    /// Counters.
    pub counters: Counters,
    /// When this run started.
    pub started: Instant,
    vv: watch::Receiver<VersionVector>,
}

impl std::fmt::Debug for Standby {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Standby")
            .field("me", &self.me)
            .field("role", &self.role)
            .field("epoch", &self.epoch())
            .finish()
    }
}

/// `url` with an unspecified host (`0.0.0.0`, `[::]`) replaced by the host
/// of `reached` (a URL of the same member that worked).
fn reachable(url: &str, reached: &str) -> String {
    let split = |u: &str| {
        u.split_once("://")
            .map(|(scheme, rest)| (scheme.to_string(), rest.to_string()))
    };
    let (Some((scheme, hp)), Some((_, r))) = (split(url), split(reached)) else {
        return url.to_string();
    };
    let unspecified = hp
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_unspecified());
    if !unspecified {
        return url.to_string();
    }
    let port = hp.rsplit_once(':').map_or("", |(_, p)| p);
    let host = r.rsplit_once(':').map_or(r.as_str(), |(h, _)| h);
    format!("{scheme}://{host}:{port}")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The role a data directory starts in: what `standby.json` says, else the
/// configuration's (`follow` set: a follower), written down at once.
pub fn starting_role(
    data_dir: &std::path::Path,
    settings: &StandbySettings,
) -> Result<Persisted, StateError> {
    if let Some(p) = state::load(data_dir)? {
        return Ok(p);
    }
    let p = match settings
        .follow
        .as_ref()
        .filter(|_| settings.starts_as_follower())
    {
        Some(url) => Persisted {
            format: 1,
            role: Role::Follower,
            epoch: 0,
            leader: Some(url.clone()),
            members: Vec::new(),
            old_leaders: Vec::new(),
        },
        None => Persisted {
            format: 1,
            role: Role::Leader,
            epoch: 1,
            leader: None,
            members: Vec::new(),
            old_leaders: Vec::new(),
        },
    };
    std::fs::create_dir_all(data_dir).map_err(|e| StateError {
        path: data_dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    state::store(data_dir, &p)?;
    Ok(p)
}

impl Standby {
    /// The runtime of a member starting from `p`.
    pub fn new(
        settings: StandbySettings,
        me: Member,
        p: &Persisted,
        data_dir: PathBuf,
        vv: watch::Receiver<VersionVector>,
    ) -> Arc<Self> {
        let (change, _) = watch::channel(None);
        Arc::new(Self {
            settings,
            role: p.role,
            epoch: AtomicU64::new(p.epoch),
            leader: Mutex::new(LeaderView {
                peer_url: p.leader.clone().unwrap_or_default(),
                member: None,
            }),
            others: Mutex::new(
                p.members
                    .iter()
                    .filter(|m| m.peer_url != me.peer_url)
                    .cloned()
                    .collect(),
            ),
            old_leaders: p.old_leaders.clone(),
            me,
            followers: members::Followers::default(),
            fresh_at_ms: AtomicU64::new(0),
            pending: Mutex::new(Default::default()),
            contact: Mutex::new(None),
            change,
            saving: Mutex::new(()),
            data_dir,
            counters: Counters::default(),
            started: Instant::now(),
            vv,
        })
    }

    /// What this member has applied.
    pub fn followers_vv(&self) -> VersionVector {
        self.vv.borrow().clone()
    }

    /// Whether this member leads its region (in this run).
    pub fn leading(&self) -> bool {
        self.role == Role::Leader && self.change.borrow().is_none()
    }

    /// The epoch this member knows.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// A follower's leader.
    pub fn leader(&self) -> LeaderView {
        lock(&self.leader).clone()
    }

    /// The other members heard of.
    pub fn others(&self) -> Vec<Member> {
        lock(&self.others).clone()
    }

    /// Wakes once the role is to change.
    pub fn changes(&self) -> watch::Receiver<Option<Change>> {
        self.change.subscribe()
    }

    /// The pending role change, if any.
    pub fn pending_change(&self) -> Option<Change> {
        self.change.borrow().clone()
    }

    fn persisted(&self) -> Persisted {
        Persisted {
            format: 1,
            role: self.role,
            epoch: self.epoch(),
            leader: (self.role == Role::Follower).then(|| self.leader().peer_url),
            members: self.others(),
            old_leaders: self.old_leaders.clone(),
        }
    }

    /// Where a leader announces its epoch: every member heard of and every
    /// leader it took over from.
    pub fn announce_targets(&self) -> Vec<String> {
        let mut out: Vec<String> = self.others().into_iter().map(|m| m.peer_url).collect();
        for u in &self.old_leaders {
            if !out.contains(u) {
                out.push(u.clone());
            }
        }
        out.retain(|u| *u != self.me.peer_url && !u.is_empty());
        out
    }

    fn save(&self, p: &Persisted) {
        if let Err(e) = state::store(&self.data_dir, p) {
            tracing::error!(error = %e, "cannot record the standby state");
        }
    }

    /// Writes the current state unless a role change is pending (it wrote
    /// its own, which must stay).
    fn refresh(&self) {
        let _g = lock(&self.saving);
        if self.change.borrow().is_none() {
            self.save(&self.persisted());
        }
    }

    /// Adds members heard of (not this one), keeping the file current.
    pub fn learn(&self, members: impl IntoIterator<Item = Member>) {
        let mut changed = false;
        {
            let mut g = lock(&self.others);
            for m in members {
                if m.peer_url == self.me.peer_url {
                    continue;
                }
                match g.iter_mut().find(|o| o.peer_url == m.peer_url) {
                    Some(o) if *o == m => {}
                    Some(o) => {
                        *o = m;
                        changed = true;
                    }
                    None => {
                        g.push(m);
                        changed = true;
                    }
                }
            }
            // Bounded: the newest members heard of.
            let n = g.len();
            if n > MAX_MEMBERS {
                g.drain(..n - MAX_MEMBERS);
            }
        }
        if changed {
            self.refresh();
        }
    }

    /// A follower heard from its leader (`m`, at epoch `epoch`, holding
    /// `vv` when asked at wall time `asked_ms`).
    pub fn heard_leader(&self, mut m: Member, epoch: u64, vv: VersionVector, asked_ms: u64) {
        *lock(&self.contact) = Some(Instant::now());
        // A leader listening on every interface names 0.0.0.0: reach it at
        // the host its peer URL is reached at instead.
        let reached = self.leader().peer_url;
        m.client_url = reachable(&m.client_url, &reached);
        m.peer_url = reachable(&m.peer_url, &reached);
        lock(&self.leader).member = Some(m);
        if epoch > self.epoch() {
            self.epoch.store(epoch, Ordering::Relaxed);
            self.refresh();
        }
        let mut p = lock(&self.pending);
        p.push_back((asked_ms, vv));
        while p.len() > 64 {
            p.pop_front();
        }
    }

    /// A follower: marks fresh every leader answer that `ours` covers.
    pub fn applied(&self, ours: &VersionVector) {
        let mut p = lock(&self.pending);
        while let Some((t, vv)) = p.front() {
            if !ours.covers_all(vv) {
                break;
            }
            self.fresh_at_ms.fetch_max(*t, Ordering::Relaxed);
            p.pop_front();
        }
    }

    /// How stale a follower's reads may be, ms: since the newest moment it
    /// is known to have held everything its leader had. `None` before it
    /// ever caught up. A leader is never stale.
    pub fn staleness_ms(&self, now_ms: u64) -> Option<u64> {
        if self.role == Role::Leader {
            return Some(0);
        }
        match self.fresh_at_ms.load(Ordering::Relaxed) {
            0 => None,
            t => Some(now_ms.saturating_sub(t)),
        }
    }

    /// When a follower last heard from its leader.
    pub fn last_contact(&self) -> Option<Instant> {
        *lock(&self.contact)
    }

    /// A follower's leader moved to `peer_url` (told by a member).
    pub fn follow_instead(&self, peer_url: &str, epoch: u64) {
        {
            let mut l = lock(&self.leader);
            if l.peer_url == peer_url {
                return;
            }
            tracing::info!(from = %l.peer_url, to = %peer_url, epoch, "following another leader");
            *l = LeaderView {
                peer_url: peer_url.to_string(),
                member: None,
            };
        }
        self.epoch.fetch_max(epoch, Ordering::Relaxed);
        self.refresh();
    }

    /// Becomes the leader at the next epoch (written down first). Returns
    /// the epoch, or `None` when this member leads already or is changing.
    pub fn promote(&self, why: &str) -> Option<u64> {
        let _g = lock(&self.saving);
        if self.role == Role::Leader || self.change.borrow().is_some() {
            return None;
        }
        let epoch = self.epoch() + 1;
        let mut old_leaders = self.old_leaders.clone();
        let url = self.leader().peer_url;
        if !url.is_empty() && !old_leaders.contains(&url) {
            old_leaders.push(url);
        }
        self.save(&Persisted {
            format: 1,
            role: Role::Leader,
            epoch,
            leader: None,
            members: self.others(),
            old_leaders,
        });
        tracing::warn!(epoch, reason = why, replica = %self.me.replica, "promoted: this member leads the region from now on");
        self.change.send_replace(Some(Change::Promote { epoch }));
        Some(epoch)
    }

    /// Steps down to follow `leader` (a peer URL) at `epoch`.
    pub fn demote(&self, leader: &str, epoch: u64) {
        let _g = lock(&self.saving);
        if self.role != Role::Leader || self.change.borrow().is_some() {
            return;
        }
        self.save(&Persisted {
            format: 1,
            role: Role::Follower,
            epoch,
            leader: Some(leader.to_string()),
            members: self.others(),
            old_leaders: Vec::new(),
        });
        tracing::warn!(epoch, %leader, "a leader at a higher epoch exists: stepping down to follow it; this member's writes ship to it");
        self.change.send_replace(Some(Change::Demote {
            leader: leader.to_string(),
            epoch,
        }));
    }

    /// Whether a leader `m` at `epoch` outranks this member's own leadership.
    pub fn outranked_by(&self, m: &ReplicaId, epoch: u64) -> bool {
        wire::outranks(epoch, m, self.epoch(), &self.me.replica)
    }

    /// This member's answer to a status query.
    pub fn status(&self, vv: VersionVector) -> wire::MemberStatus {
        wire::MemberStatus {
            v: wire::VERSION,
            member: self.me.clone(),
            leading: self.leading(),
            epoch: self.epoch(),
            vv,
            leader: (self.role == Role::Follower).then(|| self.leader().peer_url),
            heard_leader_ms_ago: self.last_contact().map(|t| t.elapsed().as_millis() as u64),
            leader_replica: self.leader().member.map(|m| m.replica),
            may_take_over: self.role == Role::Follower
                && self.settings.failover_timeout_ms > 0
                && self.last_contact().is_some(),
            members: if self.role == Role::Leader {
                self.followers.members()
            } else {
                Vec::new()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_host_is_replaced_by_the_one_reached() {
        assert_eq!(
            reachable("http://0.0.0.0:7070", "http://eu-west:7170"),
            "http://eu-west:7070"
        );
        assert_eq!(
            reachable("http://[::]:7070", "http://10.0.0.5:7170"),
            "http://10.0.0.5:7070"
        );
        assert_eq!(
            reachable("http://10.0.0.9:7070", "http://eu-west:7170"),
            "http://10.0.0.9:7070",
            "a real address is kept"
        );
    }
}
