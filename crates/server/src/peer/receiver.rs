//! The peer API (its own listener): signed requests from other regions.
//!
//! - `POST /peer/v1/hello`: a session starts; answers this region's version vector.
//! - `POST /peer/v1/ops`: a batch of ops; answered once the applicable ones are durable.
//! - `POST /peer/v1/state`: a page of a state transfer.
//!
//! Every body is `HMAC tag || payload` (see [`super::auth`]); anything that
//! does not verify gets 401 and is counted. Every answer is signed for the caller.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use meridian_core::replication::wire::{self, Ack};
use meridian_core::{FjallBackend, Reader};
use meridian_crdt::{Object, RegionId, codec};

use super::auth::Secret;
use super::status::Peers;
use crate::api::error::ApiError;
use crate::region::WriterHandle;
use crate::region::clock::WallClock;

/// Largest peer request body.
pub const MAX_PEER_BODY: usize = 40 << 20;

/// What the peer API shares.
pub struct PeerApi {
    /// The cluster secret.
    pub secret: Secret,
    /// Writes (received ops go through the same writer as client writes).
    pub writer: WriterHandle,
    /// Reads.
    pub reader: Reader<FjallBackend>,
    /// Link figures (auth failures are counted here).
    pub peers: Arc<Peers>,
    /// Wall clock.
    pub clock: WallClock,
}

/// The peer router.
pub fn router(api: Arc<PeerApi>) -> Router {
    Router::new()
        .route("/peer/v1/hello", post(hello))
        .route("/peer/v1/ops", post(ops))
        .route("/peer/v1/state", post(state))
        .layer(DefaultBodyLimit::max(MAX_PEER_BODY))
        .fallback(|| async { ApiError::not_found("no such peer endpoint") })
        .with_state(api)
}

fn unauthorized(api: &PeerApi, why: &str) -> Response {
    api.peers.auth_failures.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(reason = why, "peer request refused: not authenticated");
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", why).into_response()
}

/// Checks the caller's name and signature; returns the caller and payload.
fn open<'a>(
    api: &PeerApi,
    h: &HeaderMap,
    label: &str,
    body: &'a Result<Bytes, BytesRejection>,
) -> Result<(String, &'a [u8]), Box<Response>> {
    let body = match body {
        Ok(b) => b,
        Err(r) => {
            return Err(Box::new(
                ApiError::new(r.status(), "bad_body", r.body_text()).into_response(),
            ));
        }
    };
    let from = h
        .get("meridian-peer")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| RegionId::new(v).ok())
        .ok_or_else(|| Box::new(unauthorized(api, "missing or invalid meridian-peer header")))?;
    let payload = api
        .secret
        .open(label, from.as_str(), body)
        .ok_or_else(|| Box::new(unauthorized(api, "signature does not verify")))?;
    Ok((from.to_string(), payload))
}

fn answer(api: &PeerApi, from: &str, ack: &Ack) -> Response {
    match wire::encode_ack(ack) {
        Ok(bytes) => (StatusCode::OK, api.secret.sign("ack", from, &bytes)).into_response(),
        Err(e) => ApiError::internal(e.to_string()).into_response(),
    }
}

fn stopping(e: impl std::fmt::Display) -> Response {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "stopping", e.to_string()).into_response()
}

async fn hello(
    State(api): State<Arc<PeerApi>>,
    h: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (from, payload) = match open(&api, &h, "hello", &body) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if let Err(e) = wire::decode_hello(payload) {
        return ApiError::bad_request(e.to_string()).into_response();
    }
    let p = api.reader.published();
    answer(
        &api,
        &from,
        &Ack {
            vv: p.vv.clone(),
            now_ms: api.clock.now_ms(),
            held: 0,
            buffered: p.stats.buffered as u32,
        },
    )
}

async fn ops(
    State(api): State<Arc<PeerApi>>,
    h: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (from, payload) = match open(&api, &h, "ops", &body) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let batch = match wire::decode(payload) {
        Ok(b) => b,
        Err(e) => return ApiError::bad_request(format!("batch: {e}")).into_response(),
    };
    api.peers.batches_received.fetch_add(1, Ordering::Relaxed);
    match api.writer.receive(batch.ops).await {
        Ok(Ok((r, vv))) => answer(
            &api,
            &from,
            &Ack {
                vv,
                now_ms: api.clock.now_ms(),
                held: r.held.len() as u32,
                buffered: r.buffered as u32,
            },
        ),
        Ok(Err(e)) => ApiError::from(e).into_response(),
        Err(e) => stopping(e),
    }
}

async fn state(
    State(api): State<Arc<PeerApi>>,
    h: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (from, payload) = match open(&api, &h, "state", &body) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let page = match wire::decode_state(payload) {
        Ok(p) => p,
        Err(e) => return ApiError::bad_request(format!("state page: {e}")).into_response(),
    };
    let mut entries = Vec::with_capacity(page.entries.len());
    for (ks, key, bytes) in page.entries {
        match codec::decode::<Object>(&bytes, 256 << 20) {
            Ok(obj) => entries.push((ks, key, obj)),
            Err(e) => {
                return ApiError::bad_request(format!("state object {ks}/{key}: {e}"))
                    .into_response();
            }
        }
    }
    let adopt = page.done.then_some((page.vv, page.hlc));
    match api.writer.install(entries, adopt).await {
        Ok(Ok(vv)) => answer(
            &api,
            &from,
            &Ack {
                vv,
                now_ms: api.clock.now_ms(),
                held: 0,
                buffered: 0,
            },
        ),
        Ok(Err(e)) => ApiError::from(e).into_response(),
        Err(e) => stopping(e),
    }
}
