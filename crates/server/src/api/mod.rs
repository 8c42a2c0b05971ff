//! The client HTTP API: routes, shared state and the helpers every handler
//! uses. Start reading at [`router`]; the write path continues in [`kv`],
//! then the region's writer thread (`crate::region::writer`), then
//! `meridian_core::engine`.

pub mod accept;
pub mod auth;
pub mod backups;
pub mod batch;
pub mod body;
pub mod conflicts;
pub mod consistency;
pub mod console;
pub mod gate;
pub mod headers;
pub mod keyspaces;
pub mod kv;
pub mod merges;
pub mod openapi;
pub mod owner;
pub mod ownership;
pub mod render;
pub mod status;
pub mod tokens;
pub mod trace;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use meridian_core::{FjallBackend, Reader};
use meridian_crdt::{ReplicaId, VersionVector};
use tokio::sync::watch;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::error::HttpError;
use crate::metrics::Metrics;
use crate::region::WriterHandle;
use crate::region::status::LogInfo;

/// Largest body of a single-key request: a 1 MiB value plus room for JSON escaping.
pub const MAX_KV_BODY: usize = (1 << 20) + (64 << 10);
/// Largest body of `POST /v1/batch`.
pub const MAX_BATCH_BODY: usize = 16 << 20;
/// Largest body of other requests.
pub const MAX_SMALL_BODY: usize = 64 << 10;

/// What handlers share.
pub struct AppInner {
    /// This region's replica id.
    pub replica: ReplicaId,
    /// Reads.
    pub reader: Reader<FjallBackend>,
    /// Writes.
    pub writer: WriterHandle,
    /// The published version vector.
    pub vv: watch::Receiver<VersionVector>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Op log figures.
    pub log_info: Arc<LogInfo>,
    /// When the region started.
    pub started: Instant,
    /// Peer links.
    pub peers: Arc<crate::peer::status::Peers>,
    /// Committed ops (for lag figures), when replicating.
    pub feed: Option<Arc<crate::region::feed::Feed>>,
    /// The region's wall clock.
    pub clock: crate::region::clock::WallClock,
    /// Signed calls to peers (quorum reads, read repair), when replicating.
    pub peer_client: Option<crate::peer::client::PeerClient>,
    /// The writer's fatal error, once it has had one.
    pub fatal: watch::Receiver<Option<Arc<str>>>,
    /// Other regions' client API URLs, where configured (named in `421`
    /// answers).
    pub client_urls: std::collections::BTreeMap<meridian_crdt::RegionId, String>,
    /// Backups, when a target is configured.
    pub backups: Option<Arc<crate::backup::Backups>>,
    /// This member's role in its region, its standbys or its leader.
    pub standby: Arc<crate::standby::Standby>,
    /// Whether callers need tokens.
    pub auth: crate::security::config::Auth,
    /// Read repairs in flight (at most `[limits] max_read_repairs`).
    pub repairs: Arc<tokio::sync::Semaphore>,
}

/// Handler state: cheap to clone.
pub type AppState = Arc<AppInner>;

/// Every route with its handlers, registered once for both the router and
/// the OpenAPI document ([`openapi::document`]).
pub fn routed() -> OpenApiRouter<AppState> {
    let small = || DefaultBodyLimit::max(MAX_SMALL_BODY);
    OpenApiRouter::with_openapi(openapi::frame())
        .routes(routes!(kv::list))
        .routes(
            routes!(kv::get, kv::put, kv::delete, kv::op).layer(DefaultBodyLimit::max(MAX_KV_BODY)),
        )
        .routes(routes!(batch::post).layer(DefaultBodyLimit::max(MAX_BATCH_BODY)))
        .routes(routes!(keyspaces::list))
        .routes(routes!(keyspaces::get, keyspaces::put).layer(small()))
        .routes(routes!(ownership::get, ownership::put).layer(small()))
        .routes(routes!(ownership::transfer).layer(small()))
        .routes(routes!(merges::list))
        .routes(
            routes!(merges::get, merges::put).layer(DefaultBodyLimit::max(merges::MAX_MERGE_BODY)),
        )
        .routes(routes!(conflicts::get))
        .routes(routes!(status::status))
        .routes(routes!(backups::list, backups::create))
        .routes(routes!(backups::prune).layer(small()))
        .routes(routes!(backups::get, backups::delete))
        .routes(routes!(backups::verify))
        .routes(routes!(backups::rewind).layer(small()))
        .routes(routes!(gate::promote))
        .routes(routes!(tokens::list, tokens::create).layer(small()))
        .routes(routes!(tokens::get, tokens::revoke))
        .routes(routes!(status::openapi))
        .routes(routes!(console::page))
        .routes(routes!(console::script))
        .routes(routes!(status::healthz))
        .routes(routes!(gate::leader_health))
        .routes(routes!(status::metrics))
}

/// The client API router.
pub fn router(state: AppState) -> Router {
    // Built now, not by the first request that the trace layer labels.
    let _ = openapi::routes();
    let (routes, _) = routed().split_for_parts();
    routes
        // Once the route is known (authentication ran before routing):
        // the right for it, then, on a standby, the gate that forwards
        // writes to the leader. Nothing is buffered or forwarded for a
        // caller without the right.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            gate::gate,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ))
        // A panic below answers a 500 that the trace layer counts.
        .route_layer(axum::middleware::from_fn(trace::catch_panic))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            trace::trace,
        ))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .with_state(state)
}

async fn no_route() -> HttpError {
    HttpError::missing("no_route", "no such endpoint; see /v1/openapi.json")
}

async fn method_not_allowed() -> HttpError {
    HttpError::method_not_allowed(
        "method_not_allowed",
        "this endpoint does not take that method; see /v1/openapi.json",
    )
}

/// Waits until the region has applied everything `token` covers, for at
/// most `wait_ms`; else a 503 naming the origins it lacks.
pub async fn wait_for(
    state: &AppInner,
    token: &VersionVector,
    wait_ms: u64,
) -> Result<(), HttpError> {
    let mut rx = state.vv.clone();
    if rx.borrow().covers_all(token) {
        return Ok(());
    }
    let covered = tokio::time::timeout(
        Duration::from_millis(wait_ms),
        rx.wait_for(|vv| vv.covers_all(token)),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    if covered {
        return Ok(());
    }
    let have = rx.borrow().clone();
    let lacking: Vec<serde_json::Value> = have
        .missing(token)
        .map(|(origin, mine, want)| {
            serde_json::json!({
                "region": origin.region.as_str(),
                "incarnation": origin.incarnation.to_string(),
                "have": mine.0,
                "need": want.0,
            })
        })
        .collect();
    let names: Vec<String> = have
        .missing(token)
        .map(|(o, _, _)| o.region.to_string())
        .collect();
    Err(HttpError::unavailable("behind_token",
        format!(
            "this region has not yet applied everything the token covers (behind on {}) after waiting {wait_ms} ms; retry, or read elsewhere",
            names.join(", ")
        ),
    )
    .with(serde_json::json!({"lacking": lacking})))
}

pub use accept::wants_msgpack;

/// A body as JSON (or MessagePack if asked for) with a token header.
pub fn respond(
    status: StatusCode,
    req_headers: &HeaderMap,
    body: &serde_json::Value,
    vv: Option<&VersionVector>,
) -> Response {
    let mut resp = if wants_msgpack(req_headers) {
        match rmp_serde::to_vec_named(body) {
            Ok(bytes) => (
                status,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/msgpack"),
                )],
                bytes,
            )
                .into_response(),
            Err(e) => HttpError::internal(e.to_string()).into_response(),
        }
    } else {
        (status, axum::Json(body)).into_response()
    };
    if let Some(vv) = vv {
        let (k, v) = headers::token_header(vv);
        resp.headers_mut().insert(k, v);
    }
    resp
}
