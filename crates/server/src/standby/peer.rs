//! The peer-API side of standbys: heartbeats a leader answers, epoch
//! announcements a member answers, status queries before a takeover, and
//! the refusal a follower gives other regions (they ship to the leader).

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use meridian_core::replication::wire as core_wire;
use meridian_crdt::RegionId;

use super::wire::{self, Announce, Follow, StatusQuery};
use crate::error::HttpError;
use crate::peer::receiver::{Admission, Caller, PeerApi, answer_msg, open};

/// This member's role, as the peer API asks about it before it takes
/// replication ([`Admission`]): the standby state once this member's
/// replica id is settled, the role it started in until then.
pub struct Roles {
    /// Set once the replica id is settled.
    pub standby: OnceLock<Arc<super::Standby>>,
    starting_role: super::state::Role,
    region: RegionId,
}

impl Roles {
    /// The roles of a member of `region` that started as `starting_role`.
    pub fn new(region: RegionId, starting_role: super::state::Role) -> Self {
        Self {
            standby: OnceLock::new(),
            starting_role,
            region,
        }
    }
}

impl Admission for Roles {
    /// A request from another region reaching a follower: replication,
    /// forwarding and repairs go to the leader.
    fn refuse_region(&self, from: &str) -> Option<HttpError> {
        let (leading, leader) = match self.standby.get() {
            Some(s) => (s.leading(), s.leader().peer_url),
            // Not settled yet (a leader asking its peers at start): the role
            // it started in.
            None => (
                self.starting_role == super::state::Role::Leader,
                String::new(),
            ),
        };
        if leading || from == self.region.as_str() {
            return None;
        }
        Some(
            HttpError::misdirected(
                "not_leader",
                format!(
                    "this member of region {} is a standby: ship to its leader ({leader})",
                    self.region
                ),
            )
            .with(serde_json::json!({ "leader_peer_url": leader })),
        )
    }

    /// Replication from a member of this region that is not this standby's
    /// leader.
    fn refuse_member(&self, from: &meridian_crdt::ReplicaId) -> Option<HttpError> {
        let s = self.standby.get()?;
        if s.leading() || from.region != s.me.replica.region {
            return None;
        }
        let leader = s.leader();
        let m = leader.member?;
        if m.replica == *from {
            return None;
        }
        Some(
            HttpError::misdirected(
                "not_leader",
                format!(
                    "this standby follows {} ({}), not {from}: a leader at a newer epoch exists",
                    m.replica, leader.peer_url
                ),
            )
            .with(serde_json::json!({ "leader_peer_url": leader.peer_url, "epoch": s.epoch() })),
        )
    }
}

/// What the standby routes of the peer API share.
pub struct StandbyPeer {
    api: Arc<PeerApi>,
    roles: Arc<Roles>,
}

/// The standby routes of the peer API (`/peer/v1/standby/*`), which the
/// peer router runs behind its signature guard and body limit.
pub fn routes(api: Arc<PeerApi>, roles: Arc<Roles>) -> Router {
    Router::new()
        .route("/peer/v1/standby/follow", post(follow))
        .route("/peer/v1/standby/announce", post(announce))
        .route("/peer/v1/standby/status", post(status))
        .with_state(Arc::new(StandbyPeer { api, roles }))
}

/// The standby state, or the refusal: a member of another region, or not
/// settled yet.
fn member_of_region<'a>(
    roles: &'a Roles,
    from: &str,
) -> Result<&'a Arc<super::Standby>, Box<Response>> {
    let Some(s) = roles.standby.get() else {
        return Err(Box::new(
            HttpError::unavailable("starting", "this member is starting: ask again in a moment")
                .into_response(),
        ));
    };
    if from != s.me.replica.region.as_str() {
        return Err(Box::new(
            HttpError::forbidden(
                "other_region",
                "standby messages come from members of this region only",
            )
            .into_response(),
        ));
    }
    Ok(s)
}

/// A standby message's version field.
trait Versioned {
    fn version(&self) -> u8;
}

impl Versioned for Follow {
    fn version(&self) -> u8 {
        self.v
    }
}

impl Versioned for Announce {
    fn version(&self) -> u8 {
        self.v
    }
}

impl Versioned for StatusQuery {
    fn version(&self) -> u8 {
        self.v
    }
}

/// Opens a signed standby message from a member of this region: the
/// sender's name, this member's standby state and the message; or the
/// refusal (bad signature, another region, starting, undecodable, another
/// format version).
fn receive<T: serde::de::DeserializeOwned + Versioned>(
    sp: &StandbyPeer,
    h: &HeaderMap,
    label: &str,
    body: &Result<Bytes, BytesRejection>,
) -> Result<(Caller, Arc<super::Standby>, T), Box<Response>> {
    let (from, payload) = open(&sp.api, h, label, body)?;
    let s = member_of_region(&sp.roles, &from)?.clone();
    let msg: T = core_wire::decode_msg(payload).map_err(|e| {
        Box::new(HttpError::bad_request(format!("standby message: {e}")).into_response())
    })?;
    if msg.version() != wire::VERSION {
        return Err(Box::new(
            HttpError::bad_request(format!(
                "standby message version {}; this build speaks {}",
                msg.version(),
                wire::VERSION
            ))
            .into_response(),
        ));
    }
    Ok((from, s, msg))
}

/// `POST /peer/v1/standby/follow`.
async fn follow(
    State(sp): State<Arc<StandbyPeer>>,
    h: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let api = &sp.api;
    let (from, s, msg): (_, _, Follow) = match receive(&sp, &h, "follow", &body) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if msg.member.replica == s.me.replica {
        return HttpError::conflict(
            "follows_itself",
            "this member is the one following: its leader URL leads back to itself",
        )
        .into_response();
    }
    if s.leading() {
        s.followers.heard(&msg.member);
        s.learn([msg.member.clone()]);
    }
    answer_msg(api, &from, &s.status(api.reader.published().vv.clone()))
}

/// `POST /peer/v1/standby/announce`.
async fn announce(
    State(sp): State<Arc<StandbyPeer>>,
    h: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let api = &sp.api;
    let (from, s, msg): (_, _, Announce) = match receive(&sp, &h, "announce", &body) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if msg.leader.replica != s.me.replica {
        if s.leading() {
            if s.outranked_by(&msg.leader.replica, msg.epoch) {
                s.demote(&msg.leader.peer_url, msg.epoch);
            }
        } else if msg.epoch >= s.epoch() {
            s.follow_instead(&msg.leader.peer_url, msg.epoch);
        }
        s.learn([msg.leader.clone()]);
    }
    answer_msg(api, &from, &s.status(api.reader.published().vv.clone()))
}

/// `POST /peer/v1/standby/status`.
async fn status(
    State(sp): State<Arc<StandbyPeer>>,
    h: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let api = &sp.api;
    let (from, s, _): (_, _, StatusQuery) = match receive(&sp, &h, "standby-status", &body) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    answer_msg(api, &from, &s.status(api.reader.published().vv.clone()))
}
