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

use super::openapi::answers::TokenIdPath;
use super::openapi::schemas as doc;
use super::{AppState, MAX_SMALL_BODY, body, respond};
use crate::error::HttpError;
use crate::region::writer::DefineDone;

/// Longest lifetime a token may be given, seconds (10 years).
pub const MAX_EXPIRES_IN_S: u64 = 10 * 365 * 86_400;

/// The body of `POST /v1/admin/tokens`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// What it is for.
    #[serde(default)]
    #[schema(max_length = 128)]
    pub name: String,
    /// What it allows.
    #[schema(value_type = Vec<super::openapi::Grant>, min_items = 1, max_items = 64)]
    pub grants: Vec<Grant>,
    /// Seconds until it stops working (none: until revoked).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 315_360_000)]
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

fn stopping(e: impl std::fmt::Display) -> HttpError {
    HttpError::unavailable("stopping", e.to_string())
}

fn unknown(id: &str) -> HttpError {
    HttpError::missing(
        "unknown_token",
        format!(
            "no token with id {id:?} in this region (one made elsewhere shows here once it has replicated)"
        ),
    )
}

#[utoipa::path(
    post,
    path = "/v1/admin/tokens",
    tag = "tokens",
    operation_id = "createToken",
    summary = "Create an access token",
    description = "A new token with the given grants. Its secret is in `token`, shown this once. It replicates as data: it works in every region once replicated. Needs admin on *.",
    request_body(content((NewToken = "application/json"), (NewToken = "application/msgpack"))),
    responses(
        (status = 201, description = "Created; `token` is the secret.", content(
            (doc::AccessToken = "application/json"), (doc::AccessToken = "application/msgpack"))),
        (status = 400, description = "A bad grant, name or lifetime.", body = doc::Error),
        (status = 413, description = "Body over 64 KiB.", body = doc::Error),
        (status = 415, description = "A content type other than JSON or MessagePack.", body = doc::Error),
        (status = 422, description = "The token limit is reached.", body = doc::Error),
        (status = 503, description = "The region is stopping.", body = doc::Error),
    ),
)]
/// `POST /v1/admin/tokens`: a new token (201), its secret in `token`.
pub async fn create(
    State(app): State<AppState>,
    h: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let bytes = body::bytes(body, MAX_SMALL_BODY)?;
    let b: NewToken = body::parse_settings(body::format(&h)?, &bytes)?;
    let now = app.clock.now_ms();
    let expires_ms = match b.expires_in_s {
        None => None,
        Some(s) if (1..=MAX_EXPIRES_IN_S).contains(&s) => Some(now.saturating_add(s * 1000)),
        Some(s) => {
            return Err(HttpError::bad_request(format!(
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

#[utoipa::path(
    get,
    path = "/v1/admin/tokens",
    tag = "tokens",
    operation_id = "listTokens",
    summary = "List access tokens",
    description = "Every token this region knows, revoked ones too; never their secrets (regions keep only SHA-256 hashes). Needs admin on *.",
    responses(
        (status = 200, description = "The tokens.", content(
            (doc::AccessTokens = "application/json"), (doc::AccessTokens = "application/msgpack"))),
    ),
)]
/// `GET /v1/admin/tokens`: every token this region knows (never secrets).
pub async fn list(State(app): State<AppState>, h: HeaderMap) -> Result<Response, HttpError> {
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

#[utoipa::path(
    get,
    path = "/v1/admin/tokens/{id}",
    tag = "tokens",
    operation_id = "getToken",
    summary = "Show an access token",
    params(TokenIdPath),
    responses(
        (status = 200, description = "The token.", content(
            (doc::AccessToken = "application/json"), (doc::AccessToken = "application/msgpack"))),
        (status = 400, description = "Bad id.", body = doc::Error),
        (status = 404, description = "No such token here (`unknown_token`).", body = doc::Error),
        (status = 410, description = "Revoked (`revoked`): the record, with `revoked_ms`, for audit. The listing shows it too.", content(
            (doc::AccessToken = "application/json"), (doc::AccessToken = "application/msgpack"))),
    ),
)]
/// `GET /v1/admin/tokens/{id}`: 200, or 410 once revoked.
pub async fn get(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    h: HeaderMap,
) -> Result<Response, HttpError> {
    let Path(id) = path.map_err(|e| HttpError::bad_request(format!("bad path: {e}")))?;
    let p = app.reader.published();
    let (def, revoked) = p.registry.tokens().get(&id).ok_or_else(|| unknown(&id))?;
    let mut body = describe(def, revoked);
    // Revoked is gone for good: 410, with the record (when, what it
    // allowed) for whoever audits it.
    let status = match revoked {
        None => StatusCode::OK,
        Some(ms) => {
            body["error"] = json!("revoked");
            body["message"] = json!(format!("token {id} was revoked at {ms} ms"));
            StatusCode::GONE
        }
    };
    Ok(respond(status, &h, &body, Some(&p.vv)))
}

#[utoipa::path(
    delete,
    path = "/v1/admin/tokens/{id}",
    tag = "tokens",
    operation_id = "revokeToken",
    summary = "Revoke an access token",
    description = "For good, in every region once replicated; a revoked id is never reused. Revoking again: 200 with `changed` false. An id this region has not seen (made in another region, not arrived yet) is revoked too (`known` false): the token is refused once it arrives.",
    params(TokenIdPath),
    responses(
        (status = 200, description = "Revoked.", content(
            (doc::Revoked = "application/json"), (doc::Revoked = "application/msgpack"))),
        (status = 400, description = "Not a token id.", body = doc::Error),
        (status = 503, description = "The region is stopping.", body = doc::Error),
    ),
)]
/// `DELETE /v1/admin/tokens/{id}`: revokes it, for good, in every region
/// once replicated. Revoking again: 200, `changed: false`. An id this
/// region has not seen (made elsewhere, not arrived yet) is revoked too
/// (`known: false`): it is refused once it arrives.
pub async fn revoke(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    h: HeaderMap,
) -> Result<Response, HttpError> {
    let Path(id) = path.map_err(|e| HttpError::bad_request(format!("bad path: {e}")))?;
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
