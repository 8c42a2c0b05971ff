//! Access tokens: `/v1/admin/tokens` and `/v1/admin/tokens/{id}` (admin on
//! `*`). A token's secret is shown once, in the answer that creates it;
//! regions keep its SHA-256 only.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use meridian_core::access::{Grant, TokenDef};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::{AppState, MAX_SMALL_BODY, body, respond};
use crate::region::writer::DefineDone;

/// Longest lifetime a token may be given, seconds (10 years).
pub const MAX_EXPIRES_IN_S: u64 = 10 * 365 * 86_400;

/// The body of `POST /v1/admin/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// What it is for.
    #[serde(default)]
    pub name: String,
    /// What it allows.
    pub grants: Vec<Grant>,
    /// Seconds until it stops working (none: until revoked).
    #[serde(default)]
    pub expires_in_s: Option<u64>,
}

fn describe(def: &TokenDef, revoked_ms: Option<u64>) -> serde_json::Value {
    json!({
        "id": def.id,
        "name": def.name,
        "grants": def.grants,
        "created_ms": def.created_ms,
        "expires_ms": def.expires_ms,
        "revoked_ms": revoked_ms,
    })
}

fn stopping(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "stopping", e.to_string())
}

fn unknown(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_token",
        format!(
            "no token with id {id:?} in this region (one made elsewhere shows here once it has replicated)"
        ),
    )
}

/// `POST /v1/admin/tokens`: a new token (201), its secret in `token`.
pub async fn create(
    State(app): State<AppState>,
    h: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body::bytes(body, MAX_SMALL_BODY)?;
    let b: NewToken = body::parse(body::format(&h)?, &bytes)?;
    let now = app.clock.now_ms();
    let expires_ms = match b.expires_in_s {
        None => None,
        Some(s) if (1..=MAX_EXPIRES_IN_S).contains(&s) => Some(now.saturating_add(s * 1000)),
        Some(s) => {
            return Err(ApiError::bad_request(format!(
                "expires_in_s must be in 1..={MAX_EXPIRES_IN_S}, not {s}"
            )));
        }
    };
    let (secret, id, hash) = crate::security::auth::generate();
    let def = TokenDef {
        id,
        hash,
        name: b.name,
        grants: b.grants,
        created_ms: now,
        expires_ms,
    };
    let outcome = app
        .writer
        .define_token(def.clone())
        .await
        .map_err(stopping)??;
    let vv = match outcome {
        DefineDone::Written(vv) => vv,
        DefineDone::Unchanged => app.reader.published().vv.clone(),
    };
    let mut out = describe(&def, None);
    out["token"] = json!(secret);
    Ok(respond(StatusCode::CREATED, &h, &out, Some(&vv)))
}

/// `GET /v1/admin/tokens`: every token this region knows (never secrets).
pub async fn list(State(app): State<AppState>, h: HeaderMap) -> Result<Response, ApiError> {
    let p = app.reader.published();
    let all: Vec<serde_json::Value> = p
        .registry
        .tokens()
        .iter()
        .map(|(d, r)| describe(d, r))
        .collect();
    Ok(respond(
        StatusCode::OK,
        &h,
        &json!({"tokens": all}),
        Some(&p.vv),
    ))
}

/// `GET /v1/admin/tokens/{id}`.
pub async fn get(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    let Path(id) = path.map_err(|e| ApiError::bad_request(format!("bad path: {e}")))?;
    let p = app.reader.published();
    let (def, revoked) = p.registry.tokens().get(&id).ok_or_else(|| unknown(&id))?;
    Ok(respond(
        StatusCode::OK,
        &h,
        &describe(def, revoked),
        Some(&p.vv),
    ))
}

/// `DELETE /v1/admin/tokens/{id}`: revokes it, for good, in every region
/// once replicated. Revoking again: 200, `changed: false`. An id this
/// region has not seen (made elsewhere, not arrived yet) is revoked too
/// (`known: false`): it is refused once it arrives.
pub async fn revoke(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    let Path(id) = path.map_err(|e| ApiError::bad_request(format!("bad path: {e}")))?;
    let known = app.reader.published().registry.tokens().get(&id).is_some();
    let outcome = app
        .writer
        .revoke_token(id.clone())
        .await
        .map_err(stopping)??;
    let (vv, changed) = match outcome {
        DefineDone::Written(vv) => (vv, true),
        DefineDone::Unchanged => (app.reader.published().vv.clone(), false),
    };
    Ok(respond(
        StatusCode::OK,
        &h,
        &json!({"id": id, "revoked": true, "changed": changed, "known": known}),
        Some(&vv),
    ))
}
