//! The client API of a follower: reads are served here (refused with 503
//! when staler than `meridian-max-staleness-ms` allows); writes, and
//! anything else that changes state, go to the leader: forwarded (the
//! default) or answered `421` with the leader's URL.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;

use super::{AppState, MAX_BATCH_BODY, headers};
use crate::error::HttpError;
use crate::standby::config::FollowerWrites;

/// Header naming the follower that passed a write on (a forwarded write is
/// never forwarded again: two standbys naming each other cannot loop).
pub const FORWARDED_BY: &str = "meridian-forwarded-by";
/// Longest a forwarded request may take (a write concern may wait).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(155);
/// Largest answer relayed from the leader.
const MAX_ANSWER: usize = 64 << 20;

type Forwarder = HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The client that relays writes to the leader's client API (over TLS
/// with the peer CA when the leader's URL is `https://`).
fn forwarder() -> &'static Forwarder {
    static C: OnceLock<Forwarder> = OnceLock::new();
    C.get_or_init(|| {
        HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(crate::security::tls::outbound_connector(false))
    })
}

/// Paths a follower answers itself whatever the method.
fn local(path: &str) -> bool {
    path == "/v1/admin/promote"
}

/// The middleware in front of every client route.
pub async fn gate(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let s = &app.standby;
    let reading = matches!(*req.method(), Method::GET | Method::HEAD);
    if reading {
        match headers::max_staleness_ms(req.headers()) {
            Err(e) => return e.into_response(),
            Ok(Some(max)) => {
                let stale = s.staleness_ms(app.clock.now_ms());
                if stale.is_none_or(|ms| ms > max) {
                    s.counters
                        .too_stale
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return HttpError::unavailable("too_stale",
                        match stale {
                            Some(ms) => format!(
                                "this standby may be {ms} ms behind its leader, over the {max} ms asked for: read at the leader, or allow more"
                            ),
                            None => format!(
                                "this standby has not caught up with its leader since it started: it cannot promise {max} ms"
                            ),
                        },
                    )
                    .with(json!({
                        "staleness_ms": stale,
                        "max_staleness_ms": max,
                        "leader": s.leader().member.map(|m| m.client_url),
                    }))
                    .into_response();
                }
            }
            Ok(None) => {}
        }
    }
    // Quorum and owner reads ask other regions: a standby has no links to
    // them, its leader does.
    let remote_read = reading
        && req
            .headers()
            .get(headers::READ)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| matches!(v.trim(), "quorum" | "owner"));
    if s.leading() || (reading && !remote_read) || local(req.uri().path()) {
        return until_role_change(s, reading, next.run(req)).await;
    }
    let Some(leader) = s.leader().member.map(|m| m.client_url) else {
        return HttpError::unavailable("no_leader",
            "this member is a standby and has not reached its region's leader: nothing can be written here now",
        )
        .into_response();
    };
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    if s.settings.writes == FollowerWrites::Reject || req.headers().contains_key(FORWARDED_BY) {
        return HttpError::misdirected(
            "not_leader",
            format!("this member is a standby: write to the region's leader at {leader}"),
        )
        .with(json!({ "url": format!("{leader}{path}"), "leader": leader }))
        .into_response();
    }
    s.counters
        .forwarded
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    until_role_change(s, false, forward(&app, &leader, &path, req)).await
}

/// Runs a request unless the member's role changes first: then it is
/// answered `503 role_change` at once, so the region can restart without
/// waiting for a request that waits on a token, a concern or a hung
/// leader. A write already handed to the writer may still commit (it is
/// never lost: it ships to the new leader); the answer says so.
async fn until_role_change(
    s: &crate::standby::Standby,
    reading: bool,
    run: impl std::future::Future<Output = Response>,
) -> Response {
    let mut changes = s.changes();
    tokio::select! {
        r = run => r,
        _ = changes.wait_for(Option::is_some) => HttpError::unavailable("role_change",
            if reading {
                "this member is changing role (a failover): read again in a moment".to_string()
            } else {
                "this member is changing role (a failover): the write may or may not have been applied; read it back before retrying".to_string()
            },
        )
        .into_response(),
    }
}

/// Passes `req` to the leader and relays its answer.
async fn forward(app: &AppState, leader: &str, path: &str, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_BATCH_BODY + (64 << 10)).await {
        Ok(b) => b,
        Err(e) => {
            return HttpError::too_large(format!(
                "body over the largest request ({MAX_BATCH_BODY} bytes): {e}"
            ))
            .into_response();
        }
    };
    let mut b = http::Request::builder()
        .method(parts.method)
        .uri(format!("{leader}{path}"));
    for (k, v) in &parts.headers {
        if !matches!(
            k.as_str(),
            "host" | "content-length" | "connection" | "transfer-encoding" | "keep-alive"
        ) {
            b = b.header(k, v);
        }
    }
    let me = app.standby.me.replica.to_string();
    b = b.header(
        FORWARDED_BY,
        HeaderValue::from_str(&me).unwrap_or(HeaderValue::from_static("standby")),
    );
    let Ok(out) = b.body(Full::new(bytes)) else {
        return HttpError::bad_request("the request cannot be passed on as it is").into_response();
    };
    let sent = tokio::time::timeout(FORWARD_TIMEOUT, forwarder().request(out)).await;
    let resp = match sent {
        Ok(Ok(r)) => r,
        Ok(Err(e)) if e.is_connect() => {
            return HttpError::unavailable("leader_unreachable",
                format!("this standby cannot reach its leader at {leader}: nothing was written; try again (a failover may be under way)"),
            )
            .into_response();
        }
        Ok(Err(e)) => return outcome_unknown(leader, &e.to_string()),
        Err(_) => return outcome_unknown(leader, "no answer in time"),
    };
    let (parts, body) = resp.into_parts();
    let body = match http_body_util::Limited::new(body, MAX_ANSWER)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => return outcome_unknown(leader, &e.to_string()),
    };
    let mut r = Response::builder().status(parts.status);
    for (k, v) in &parts.headers {
        if !matches!(
            k.as_str(),
            "content-length" | "connection" | "transfer-encoding" | "keep-alive"
        ) {
            r = r.header(k, v);
        }
    }
    r.body(Body::from(body))
        .unwrap_or_else(|_| HttpError::internal("relaying the leader's answer").into_response())
}

fn outcome_unknown(leader: &str, why: &str) -> Response {
    HttpError::bad_gateway("forward_outcome_unknown",
        format!("the write went to the leader at {leader} but its answer was lost ({why}): it may or may not have been applied; read it back before retrying"),
    )
    .into_response()
}

#[utoipa::path(
    post,
    path = "/v1/admin/promote",
    tag = "standbys",
    operation_id = "promote",
    summary = "Promote this standby to its region's leader",
    description = "Sent to a standby: it leads its region from now on, at the next epoch, as its own replica (a new incarnation), keeping everything it applied. It restarts its region as the leader in a moment and tells every member it knows of the new epoch; an old leader that hears of it steps down.",
    responses(
        (status = 202, description = "Promoted; restarting as the leader.", body = crate::api::openapi::schemas::Promoted),
        (status = 409, description = "This member leads its region already.", body = crate::api::openapi::schemas::Error),
    ),
)]
/// `POST /v1/admin/promote`: this standby leads from now on (at the next
/// epoch); the process restarts its region as the leader.
pub async fn promote(State(app): State<AppState>) -> Response {
    let s: &Arc<crate::standby::Standby> = &app.standby;
    match s.promote("asked through the API") {
        Some(epoch) => (
            StatusCode::ACCEPTED,
            axum::Json(json!({
                "promoted": true,
                "epoch": epoch,
                "replica": s.me.replica.incarnation.to_string(),
                "message": "this member leads its region from now on; it restarts as the leader in a moment",
            })),
        )
            .into_response(),
        None => HttpError::conflict("already_leader",
            "this member leads its region already (or is changing role)",
        )
        .into_response(),
    }
}

#[utoipa::path(
    get,
    path = "/healthz/leader",
    tag = "status",
    operation_id = "leaderHealth",
    summary = "Whether this member leads its region",
    description = "A readiness probe for a write Service: 200 on the region's leader, 503 on a standby.",
    security(()),
    responses(
        (status = 200, description = "This member leads its region.", body = crate::api::openapi::schemas::Role),
        (status = 503, description = "This member is a standby.", body = crate::api::openapi::schemas::Role),
    ),
)]
/// `GET /healthz/leader`: 200 on the region's leader, 503 on a standby (a
/// readiness probe that puts a write Service on the leader only).
pub async fn leader_health(State(app): State<AppState>) -> Response {
    let s = &app.standby;
    let body = json!({
        "role": if s.leading() { "leader" } else { "follower" },
        "epoch": s.epoch(),
        "region": s.me.replica.region.as_str(),
    });
    let status = if s.leading() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}
