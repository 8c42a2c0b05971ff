//! Keyspace administration: `/v1/keyspaces` and `/v1/keyspaces/{name}`.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use meridian_core::{KeyspaceDef, KeyspaceName, WriteConcern};
use meridian_crdt::{DocSchema, Policy};
use serde::Deserialize;
use serde_json::json;

use super::openapi::answers::NamePath;
use super::openapi::schemas as doc;
use super::{AppInner, AppState, MAX_SMALL_BODY, body, respond};
use crate::error::HttpError;
use crate::region::writer::DefineDone;

/// The body of `PUT /v1/keyspaces/{name}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyspaceBody {
    /// Must match the path when given.
    #[schema(pattern = r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    pub name: Option<String>,
    /// `lww`, `mv`, `counter`, `set`, `doc`, `custom`.
    #[schema(value_type = super::openapi::PolicyName)]
    pub policy: Policy,
    /// Default write concern.
    #[schema(value_type = Option<super::openapi::WriteConcernName>)]
    pub write_concern: Option<WriteConcern>,
    /// `mv`: sibling cap.
    #[schema(minimum = 1, maximum = 1024)]
    pub sibling_cap: Option<u32>,
    /// `doc`: field rules.
    #[schema(value_type = Option<Object>)]
    pub schema: Option<DocSchema>,
    /// Conflict-ledger entries kept.
    #[schema(maximum = 1_000_000)]
    pub ledger_capacity: Option<u32>,
    /// `custom`: the merge function (a built-in or a registered script).
    pub merge: Option<String>,
    /// `custom` with `region-priority`: regions, highest priority first.
    #[schema(value_type = Option<Vec<super::openapi::RegionName>>)]
    pub region_order: Option<Vec<meridian_crdt::RegionId>>,
    /// Default in-region write concern (`leader`, `standby`, `region-all`).
    #[schema(value_type = Option<super::openapi::StandbyConcernName>)]
    pub standby_concern: Option<meridian_core::RegionConcern>,
    /// Let an unmet in-region concern succeed as the leader alone (counted).
    pub standby_downgrade: Option<bool>,
}

fn describe(app: &AppInner, def: &KeyspaceDef) -> serde_json::Value {
    let p = app.reader.published();
    let mut v = serde_json::to_value(def).unwrap_or_default();
    if let serde_json::Value::Object(m) = &mut v {
        if let Some(d) = p.digests.get(&def.name) {
            m.insert("digest".into(), json!(format!("{d:032x}")));
        }
        if let Some(c) = p.ledger.get(&def.name) {
            m.insert("conflicts_stored".into(), json!(c.len()));
            m.insert("conflicts_dropped".into(), json!(c.dropped));
        }
    }
    v
}

#[utoipa::path(
    put,
    path = "/v1/keyspaces/{name}",
    tag = "keyspaces",
    operation_id = "putKeyspace",
    summary = "Create or update a keyspace",
    description = "Idempotent: the same definition again changes nothing. Settings other than the policy can change; the policy cannot.",
    params(NamePath),
    request_body(content((KeyspaceBody = "application/json"), (KeyspaceBody = "application/msgpack"))),
    responses(
        (status = 201, description = "Created.", content(
            (doc::KeyspaceWritten = "application/json"), (doc::KeyspaceWritten = "application/msgpack"))),
        (status = 200, description = "Unchanged, or settings updated (`changed`).", content(
            (doc::KeyspaceWritten = "application/json"), (doc::KeyspaceWritten = "application/msgpack"))),
        (status = 400, description = "Invalid name or body (unknown field, value out of range).", body = doc::Error),
        (status = 409, description = "The keyspace exists with another policy (`policy_change`; `existing` holds its definition).", body = doc::Error),
        (status = 413, description = "Body over 64 KiB.", body = doc::Error),
        (status = 415, description = "A content type other than JSON or MessagePack.", body = doc::Error),
        (status = 503, description = "The region is stopping.", body = doc::Error),
    ),
)]
/// `PUT /v1/keyspaces/{name}`: create (201), or update settings other than
/// the policy (200); same definition again: 200, nothing written; another
/// policy: 409.
pub async fn put(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    h: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let Path(name) = path.map_err(|e| HttpError::bad_request(format!("bad path: {e}")))?;
    let name = KeyspaceName::new(name).map_err(|e| HttpError::bad_request(e.to_string()))?;
    let bytes = body::bytes(body, MAX_SMALL_BODY)?;
    let b: KeyspaceBody = body::parse_settings(body::format(&h)?, &bytes)?;
    if let Some(n) = &b.name
        && n != name.as_str()
    {
        return Err(HttpError::bad_request(format!(
            "body names keyspace {n:?} but the path names {:?}",
            name.as_str()
        )));
    }
    let existed = app.reader.published().registry.get(name.as_str()).cloned();
    let mut def = existed
        .clone()
        .filter(|d| d.policy == b.policy)
        .unwrap_or_else(|| KeyspaceDef::new(name.clone(), b.policy));
    def.policy = b.policy;
    if let Some(w) = b.write_concern {
        def.write_concern = w;
    }
    if let Some(c) = b.sibling_cap {
        def.sibling_cap = c;
    }
    if let Some(s) = b.schema {
        def.schema = s;
    }
    if let Some(c) = b.ledger_capacity {
        def.ledger_capacity = c;
    }
    if let Some(m) = b.merge {
        // A region order belongs to region-priority: moving to another
        // merge drops it unless the body gives one.
        if m != "region-priority" && b.region_order.is_none() {
            def.region_order.clear();
        }
        def.merge = Some(m);
    }
    if let Some(o) = b.region_order {
        def.region_order = o;
    }
    if let Some(c) = b.standby_concern {
        def.standby_concern = c;
    }
    if let Some(d) = b.standby_downgrade {
        def.standby_downgrade = d;
    }
    let outcome = app
        .writer
        .define(def.clone())
        .await
        .map_err(|e| HttpError::unavailable("stopping", e.to_string()))??;
    let (status, vv, changed) = define_status(&app, outcome, existed.is_some());
    let body = json!({"keyspace": describe(&app, &def), "created": status == StatusCode::CREATED, "changed": changed});
    Ok(respond(status, &h, &body, Some(&vv)))
}

/// How a definition (keyspace or merge) is answered: 201 when it is new,
/// 200 otherwise, with the version vector to give as the token and whether
/// anything changed.
pub(super) fn define_status(
    app: &AppInner,
    outcome: DefineDone,
    existed: bool,
) -> (StatusCode, meridian_crdt::VersionVector, bool) {
    match outcome {
        DefineDone::Unchanged => (StatusCode::OK, app.reader.published().vv.clone(), false),
        DefineDone::Written(vv) if !existed => (StatusCode::CREATED, vv, true),
        DefineDone::Written(vv) => (StatusCode::OK, vv, true),
    }
}

#[utoipa::path(
    get,
    path = "/v1/keyspaces/{name}",
    tag = "keyspaces",
    operation_id = "getKeyspace",
    summary = "Describe a keyspace",
    params(NamePath),
    responses(
        (status = 200, description = "The keyspace.", content(
            (doc::Keyspace = "application/json"), (doc::Keyspace = "application/msgpack"))),
        (status = 400, description = "Not a keyspace name.", body = doc::Error),
        (status = 404, description = "Unknown keyspace.", body = doc::Error),
    ),
)]
/// `GET /v1/keyspaces/{name}`.
pub async fn get(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    h: HeaderMap,
) -> Result<Response, HttpError> {
    let Path(name) = path.map_err(|e| HttpError::bad_request(format!("bad path: {e}")))?;
    let p = app.reader.published();
    let def = p.registry.get(&name).ok_or_else(|| {
        HttpError::missing(
            "unknown_keyspace",
            format!("keyspace {name:?} does not exist"),
        )
    })?;
    Ok(respond(
        StatusCode::OK,
        &h,
        &describe(&app, def),
        Some(&p.vv),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/keyspaces",
    tag = "keyspaces",
    operation_id = "listKeyspaces",
    summary = "List keyspaces",
    responses(
        (status = 200, description = "Every keyspace.", content(
            (doc::Keyspaces = "application/json"), (doc::Keyspaces = "application/msgpack"))),
    ),
)]
/// `GET /v1/keyspaces`.
pub async fn list(State(app): State<AppState>, h: HeaderMap) -> Result<Response, HttpError> {
    let p = app.reader.published();
    let all: Vec<serde_json::Value> = p.registry.iter().map(|d| describe(&app, d)).collect();
    Ok(respond(
        StatusCode::OK,
        &h,
        &json!({"keyspaces": all}),
        Some(&p.vv),
    ))
}
