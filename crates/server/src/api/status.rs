//! Status, health, metrics and the OpenAPI document.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::openapi::schemas as doc;
use super::{AppState, respond};
use crate::error::HttpError;
use crate::region::status::STATE_BYTES_AGE;

#[utoipa::path(
    get,
    path = "/v1/status",
    tag = "status",
    operation_id = "status",
    summary = "Region status",
    responses(
        (status = 200, description = "Region, replica, version vector, digests per keyspace, op log, peers with lag, standbys.", content(
            (doc::Status = "application/json"), (doc::Status = "application/msgpack"))),
    ),
)]
/// `GET /v1/status`.
pub async fn status(State(app): State<AppState>, h: HeaderMap) -> Result<Response, HttpError> {
    let p = app.reader.published();
    let keyspaces: Vec<serde_json::Value> = p
        .registry
        .iter()
        .map(|d| {
            json!({
                "name": d.name.as_str(),
                "policy": d.policy,
                "digest": format!("{:032x}", p.digests.get(&d.name).copied().unwrap_or(0)),
                "ownership": p.registry.ownership(d.name.as_str()).map(|m| json!({
                    "epoch": m.epoch().0,
                    "rules": m.layout.rules.len(),
                    "default": m.layout.default,
                    "mode": m.mode,
                    "fallback": m.fallback,
                })),
            })
        })
        .collect();
    let body = json!({
        "region": app.replica.region.as_str(),
        "replica": {"region": app.replica.region.as_str(), "incarnation": app.replica.incarnation.to_string()},
        "vv": crate::region::status::vv_json(&p.vv),
        "token": meridian_core::token::encode(&p.vv),
        "ops": p.vv.total(),
        "hlc": p.hlc.to_string(),
        "keyspaces": keyspaces,
        "log": app.log_info.snapshot(),
        "state_bytes": app.reader.disk_bytes_recent(STATE_BYTES_AGE),
        "causal_buffered": p.stats.buffered,
        "held_for_clock": p.stats.held_for_clock,
        "tombstones_collected": p.stats.tombstones_collected,
        "merges": {"written_back": p.stats.merges_written, "failed": p.stats.merges_failed, "pending_refusals": p.stats.merges_pending_refused},
        "ownership_fallback_writes": p.stats.ownership_fallbacks.iter().map(|(k, n)| (k.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "read_repairs": app.peers.read_repairs.load(std::sync::atomic::Ordering::Relaxed),
        "uptime_s": app.started.elapsed().as_secs(),
        "peers": app.peers.links.iter().map(|l| l.to_json(&p.vv, app.feed.as_deref(), app.clock.now_ms())).collect::<Vec<_>>(),
        "peer_auth_failures": app.peers.auth_failures.load(std::sync::atomic::Ordering::Relaxed),
        "standby": standby_json(&app, &p.vv),
    });
    Ok(respond(StatusCode::OK, &h, &body, Some(&p.vv)))
}

/// This member's role, epoch, leader or followers, for `/v1/status`.
fn standby_json(app: &super::AppInner, vv: &meridian_crdt::VersionVector) -> serde_json::Value {
    use std::sync::atomic::Ordering::Relaxed;
    let s = &app.standby;
    let now = app.clock.now_ms();
    let leader = s.leader();
    json!({
        "role": if s.leading() { "leader" } else { "follower" },
        "epoch": s.epoch(),
        "peer_url": s.me.peer_url,
        "client_url": s.me.client_url,
        "leader": (!s.leading()).then(|| json!({
            "peer_url": leader.peer_url,
            "client_url": leader.member.as_ref().map(|m| m.client_url.clone()),
            "replica": leader.member.as_ref().map(|m| m.replica.incarnation.to_string()),
            "last_heard_ms_ago": s.last_contact().map(|t| t.elapsed().as_millis() as u64),
        })),
        "staleness_ms": s.staleness_ms(now),
        "followers": s.followers.to_json(vv, app.feed.as_deref(), now),
        "members_known": s.others().len(),
        "concern_downgrades": s.counters.downgrades.load(Relaxed),
        "concern_timeouts": s.counters.timeouts.load(Relaxed),
        "forwarded_writes": s.counters.forwarded.load(Relaxed),
        "stale_reads_refused": s.counters.too_stale.load(Relaxed),
    })
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "status",
    operation_id = "healthz",
    summary = "Liveness and readiness",
    security(()),
    responses(
        (status = 200, description = "The region serves.", body = doc::Health),
        (status = 503, description = "The region's writer failed (the process then exits non-zero).", body = doc::Health),
    ),
)]
/// `GET /healthz`: 200 while the region serves; 503 naming the error once
/// the writer has failed (the process then exits non-zero).
pub async fn healthz(State(app): State<AppState>) -> Response {
    if let Some(e) = app.fatal.borrow().clone() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({
                "status": "failed",
                "region": app.replica.region.as_str(),
                "error": &*e,
            })),
        )
            .into_response();
    }
    (
        StatusCode::OK,
        axum::Json(json!({"status": "ok", "region": app.replica.region.as_str()})),
    )
        .into_response()
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "status",
    operation_id = "metrics",
    summary = "Prometheus metrics",
    responses(
        (status = 200, description = "OpenMetrics text.", content((String = "application/openmetrics-text"))),
    ),
)]
/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics(State(app): State<AppState>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        app.metrics.render(),
    )
        .into_response()
}

#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "status",
    operation_id = "openapi",
    summary = "This document",
    security(()),
    responses(
        (status = 200, description = "OpenAPI 3.1, generated from the handlers.", body = Object),
    ),
)]
/// `GET /v1/openapi.json`.
pub async fn openapi() -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        super::openapi::json(),
    )
        .into_response()
}
