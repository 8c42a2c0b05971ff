//! The loops that keep a region's members in step: a follower's heartbeat
//! to its leader (which also tells it how fresh it is, and when to take
//! over), and a leader's announcements of its epoch to every member it
//! knows (so an old leader that comes back steps down).

use std::sync::Arc;
use std::time::Duration;

use meridian_core::{FjallBackend, Reader};
use meridian_crdt::VersionVector;
use tokio::sync::watch;

use super::Standby;
use super::wire::{self, Announce, Follow, MemberStatus, StatusQuery};
use crate::peer::client::PeerClient;
use crate::peer::status::PeerStatus;
use crate::region::clock::WallClock;
use crate::shutdown::Shutdown;

/// How long a status query before a takeover may take.
const ASK_MEMBER: Duration = Duration::from_millis(500);
/// How often a leader announces its epoch to members not following it.
const ANNOUNCE_EVERY: Duration = Duration::from_millis(500);

/// Heartbeats in a row that find the leader holding everything this
/// member has before the upstream sender is stopped.
const UPSTREAM_IDLE: u32 = 5;

/// A follower: heartbeats to the leader every `heartbeat_ms`; takes over
/// when the leader has been silent for `failover_timeout_ms` and no other
/// member is more caught up. `upstream` is the link of the follower's own
/// sender to its leader, moved along when the leader does; the sender
/// (`spawn_upstream` starts it) runs only while this member holds ops the
/// leader lacks (a demoted leader's writes), so ops from the leader are
/// not echoed back to it.
#[allow(clippy::too_many_arguments)]
pub async fn run_follower(
    s: Arc<Standby>,
    client: PeerClient,
    reader: Reader<FjallBackend>,
    clock: WallClock,
    upstream: Arc<PeerStatus>,
    spawn_upstream: impl Fn() -> tokio::task::JoinHandle<()>,
    mut vv: watch::Receiver<VersionVector>,
    stop: Shutdown,
) {
    let mut shipping: Option<tokio::task::JoinHandle<()>> = None;
    let mut idle = 0u32;
    // After leaving a takeover to another member: give it a failover
    // timeout to promote and announce (it restarts meanwhile, and a member
    // that does not answer is not waited for).
    let mut hold_off: Option<std::time::Instant> = None;

    let every = Duration::from_millis(s.settings.heartbeat_ms);
    let wait = (every * 2).max(Duration::from_millis(500));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
            r = vv.changed() => {
                if r.is_err() {
                    return;
                }
                let ours = vv.borrow_and_update().clone();
                s.applied(&ours);
                continue;
            }
        }
        if s.pending_change().is_some() {
            return;
        }
        let leader = s.leader().peer_url;
        if leader.is_empty() {
            continue;
        }
        if upstream.url() != leader {
            upstream.set_url(&leader);
        }
        let asked = clock.now_ms();
        // What this member holds before asking: anything in it the
        // leader's answer lacks did not come from the leader.
        let before = reader.published().vv.clone();
        let msg = Follow {
            v: wire::VERSION,
            member: s.me.clone(),
            epoch: s.epoch(),
        };
        // Never past the takeover deadline: the check below runs on time.
        let timeout = Duration::from_millis(s.settings.failover_timeout_ms);
        let wait = match s.last_contact() {
            Some(t) if !timeout.is_zero() => wait
                .min(timeout.saturating_sub(t.elapsed()))
                .max(Duration::from_millis(50)),
            _ => wait,
        };
        let r: Result<Result<MemberStatus, _>, _> = tokio::time::timeout(
            wait,
            client.call(&leader, "/peer/v1/standby/follow", "follow", &msg),
        )
        .await;
        match r {
            Ok(Ok(st)) if st.leading && st.epoch >= s.epoch() => {
                if !st.vv.covers_all(&before) {
                    idle = 0;
                    if shipping.is_none() {
                        tracing::info!(%leader, "this member holds ops its leader lacks: shipping them");
                        shipping = Some(spawn_upstream());
                    }
                } else {
                    idle += 1;
                    if idle >= UPSTREAM_IDLE
                        && let Some(h) = shipping.take()
                    {
                        h.abort();
                    }
                }
                let members = st.members.clone();
                s.heard_leader(st.member, st.epoch, st.vv, asked);
                s.learn(members);
            }
            Ok(Ok(st)) if st.leading => {
                tracing::warn!(%leader, its_epoch = st.epoch, our_epoch = s.epoch(), "the member followed leads at an older epoch: not counting it");
            }
            Ok(Ok(st)) => {
                // Not a leader (any more): follow the one it names.
                if let Some(l) = st.leader.filter(|l| !l.is_empty() && *l != s.me.peer_url) {
                    s.follow_instead(&l, st.epoch);
                }
            }
            Ok(Err(e)) => tracing::debug!(%leader, error = %e, "heartbeat failed"),
            Err(_) => tracing::debug!(%leader, "heartbeat timed out"),
        }
        s.applied(&reader.published().vv);
        let timeout = s.settings.failover_timeout_ms;
        // Only a follower that has reached its leader in this run takes
        // over on its own: one that never did may be the one cut off.
        if timeout > 0
            && let Some(t) = s.last_contact()
            && t.elapsed() > Duration::from_millis(timeout)
            && hold_off.is_none_or(|h| h.elapsed() > Duration::from_millis(timeout))
        {
            match take_over(&s, &client, &reader).await {
                TakeOver::Promoted => return,
                TakeOver::LeftToOther => hold_off = Some(std::time::Instant::now()),
                TakeOver::Not => {}
            }
        }
    }
}

/// Asks the other members before taking over: one that leads at this
/// epoch or later is followed instead; one that still hears the leader
/// means the leader is alive; one more caught up (more ops applied, then
/// the lower replica id) that would take over is left to. Members that do
/// not answer are not waited for. Returns whether this member promoted.
async fn take_over(s: &Standby, client: &PeerClient, reader: &Reader<FjallBackend>) -> TakeOver {
    let mine = reader.published().vv.total();
    let view = s.leader();
    let leader = view.peer_url;
    let ours = view.member.map(|m| m.replica);
    let q = StatusQuery { v: wire::VERSION };
    for m in s.others() {
        if m.peer_url == leader || m.replica == s.me.replica {
            continue;
        }
        let r: Result<Result<MemberStatus, _>, _> = tokio::time::timeout(
            ASK_MEMBER,
            client.call(&m.peer_url, "/peer/v1/standby/status", "standby-status", &q),
        )
        .await;
        let Ok(Ok(st)) = r else { continue };
        if st.leading && st.epoch >= s.epoch() {
            s.follow_instead(&m.peer_url, st.epoch);
            return TakeOver::Not;
        }
        // Another standby hears a leader: ours (it is alive, and this
        // member is the one cut off), or a newer one (follow it).
        if st
            .heard_leader_ms_ago
            .is_some_and(|ms| ms < s.settings.failover_timeout_ms)
        {
            let same = match (&st.leader_replica, &ours) {
                (Some(a), Some(b)) => a == b,
                _ => st.leader.as_deref() == Some(leader.as_str()),
            };
            if same {
                tracing::info!(other = %st.member.replica, "leader silent here but heard by another standby: not taking over");
            } else if let Some(l) = st.leader.filter(|_| st.epoch >= s.epoch()) {
                s.follow_instead(&l, st.epoch);
            }
            return TakeOver::Not;
        }
        let theirs = st.vv.total();
        if st.may_take_over
            && (theirs > mine || (theirs == mine && st.member.replica < s.me.replica))
        {
            tracing::info!(other = %st.member.replica, theirs, mine, "leader silent: a more caught-up standby takes over");
            return TakeOver::LeftToOther;
        }
    }
    match s.promote("the leader was silent for failover_timeout_ms") {
        Some(_) => TakeOver::Promoted,
        None => TakeOver::Not,
    }
}

/// What [`take_over`] decided.
enum TakeOver {
    /// This member leads from now on.
    Promoted,
    /// Another member is better placed: wait for it.
    LeftToOther,
    /// Not now (the leader lives, or another leads).
    Not,
}

/// A leader: tells every member it knows that does not follow it of its
/// epoch, every [`ANNOUNCE_EVERY`]; steps down if one outranks it.
pub async fn run_announcer(s: Arc<Standby>, client: PeerClient, stop: Shutdown) {
    let mut tick = tokio::time::interval(ANNOUNCE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if s.pending_change().is_some() {
            return;
        }
        // Members following this leader now need no telling; one that has
        // gone quiet may follow another.
        let following: Vec<String> = s.followers.live_urls();
        let msg = Announce {
            v: wire::VERSION,
            leader: s.me.clone(),
            epoch: s.epoch(),
        };
        for url in s.announce_targets() {
            if following.contains(&url) {
                continue;
            }
            let r: Result<Result<MemberStatus, _>, _> = tokio::time::timeout(
                Duration::from_secs(1),
                client.call(&url, "/peer/v1/standby/announce", "announce", &msg),
            )
            .await;
            let Ok(Ok(st)) = r else { continue };
            if st.member.replica == s.me.replica {
                continue;
            }
            if st.leading && s.outranked_by(&st.member.replica, st.epoch) {
                s.demote(&url, st.epoch);
                return;
            }
            if !st.leading
                && st.epoch > s.epoch()
                && let Some(l) = st.leader.filter(|l| !l.is_empty() && *l != s.me.peer_url)
            {
                s.demote(&l, st.epoch);
                return;
            }
        }
    }
}
