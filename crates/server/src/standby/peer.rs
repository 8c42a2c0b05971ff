//! The peer-API side of standbys: heartbeats a leader answers, epoch
//! announcements a member answers, status queries before a takeover, and
//! the refusal a follower gives other regions (they ship to the leader).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use meridian_core::replication::wire as core_wire;

use super::wire::{self, Announce, Follow, StatusQuery};
use crate::api::error::ApiError;
use crate::peer::receiver::{PeerApi, answer_msg, open};

/// `421 not_leader` for a request from another region reaching a
/// follower: replication, forwarding and repairs go to the leader.
pub fn refuse_other_regions(api: &PeerApi, from: &str) -> Option<Response> {
    let (leading, region, leader) = match api.standby.get() {
        Some(s) => (
            s.leading(),
            s.me.replica.region.to_string(),
            s.leader().peer_url,
        ),
        // Not settled yet (a leader asking its peers at start): the role
        // it started in.
        None => (
            api.starting_role == super::state::Role::Leader,
            String::new(),
            String::new(),
        ),
    };
    if leading
        || from == region
        || (region.is_empty() && from == api.incarnation.replica().region.as_str())
    {
        return None;
    }
    Some(
        ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "not_leader",
            format!(
                "this member of region {} is a standby: ship to its leader ({leader})",
                api.incarnation.replica().region
            ),
        )
        .with(serde_json::json!({ "leader_peer_url": leader }))
        .into_response(),
    )
}

/// `421 not_leader` for replication from a member of this region that is
/// not this standby's leader (an old leader that has not heard of the new
/// epoch): its acks must not count as this standby holding its writes.
pub fn refuse_other_members(api: &PeerApi, from: &meridian_crdt::ReplicaId) -> Option<Response> {
    let s = api.standby.get()?;
    if s.leading() || from.region != s.me.replica.region {
        return None;
    }
    let leader = s.leader();
    let m = leader.member?;
    if m.replica == *from {
        return None;
    }
    Some(
        ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "not_leader",
            format!(
                "this standby follows {} ({}), not {from}: a leader at a newer epoch exists",
                m.replica, leader.peer_url
            ),
        )
        .with(serde_json::json!({ "leader_peer_url": leader.peer_url, "epoch": s.epoch() }))
        .into_response(),
    )
}

/// The standby state, or the refusal: a member of another region, or not
/// settled yet.
fn member_of_region<'a>(
    api: &'a PeerApi,
    from: &str,
) -> Result<&'a std::sync::Arc<super::Standby>, Box<Response>> {
    let Some(s) = api.standby.get() else {
        return Err(Box::new(
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "starting",
                "this member is starting: ask again in a moment",
            )
            .into_response(),
        ));
    };
    if from != s.me.replica.region.as_str() {
        return Err(Box::new(
            ApiError::new(
                StatusCode::FORBIDDEN,
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
    api: &PeerApi,
    h: &HeaderMap,
    label: &str,
    body: &Result<Bytes, BytesRejection>,
) -> Result<(crate::peer::receiver::Caller, Arc<super::Standby>, T), Box<Response>> {
    let (from, payload) = open(api, h, label, body)?;
    let s = member_of_region(api, &from)?.clone();
    let msg: T = core_wire::decode_msg(payload).map_err(|e| {
        Box::new(ApiError::bad_request(format!("standby message: {e}")).into_response())
    })?;
    if msg.version() != wire::VERSION {
        return Err(Box::new(
            ApiError::bad_request(format!(
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
pub async fn follow(
    State(api): State<Arc<PeerApi>>,
    h: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (from, s, msg): (_, _, Follow) = match receive(&api, &h, "follow", &body) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if msg.member.replica == s.me.replica {
        return ApiError::new(
            StatusCode::CONFLICT,
            "follows_itself",
            "this member is the one following: its leader URL leads back to itself",
        )
        .into_response();
    }
    if s.leading() {
        s.followers.heard(&msg.member);
        s.learn([msg.member.clone()]);
    }
    answer_msg(&api, &from, &s.status(api.reader.published().vv.clone()))
}

/// `POST /peer/v1/standby/announce`.
pub async fn announce(
    State(api): State<Arc<PeerApi>>,
    h: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (from, s, msg): (_, _, Announce) = match receive(&api, &h, "announce", &body) {
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
    answer_msg(&api, &from, &s.status(api.reader.published().vv.clone()))
}

/// `POST /peer/v1/standby/status`.
pub async fn status(
    State(api): State<Arc<PeerApi>>,
    h: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (from, s, _): (_, _, StatusQuery) = match receive(&api, &h, "standby-status", &body) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    answer_msg(&api, &from, &s.status(api.reader.published().vv.clone()))
}
