//! Merge functions: `/v1/merges` and `/v1/merges/{name}`.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use meridian_core::merge::{MergeDef, builtin};
use serde::Deserialize;
use serde_json::json;

use super::openapi::answers::MergeNamePath;
use super::openapi::schemas as doc;
use super::{AppState, body, respond};
use crate::error::{self, HttpError};

/// Largest body of `PUT /v1/merges/{name}`: a 64 KiB script escaped, and
/// samples.
pub const MAX_MERGE_BODY: usize = 512 << 10;

/// The body of `PUT /v1/merges/{name}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeBody {
    /// Rhai source defining `fn merge(versions)`.
    #[schema(max_length = 65536)]
    pub script: String,
    /// What it is for.
    #[serde(default)]
    #[schema(max_length = 4096)]
    pub description: String,
    /// Values to check the script on: each a list of 2 to 16 version
    /// values, oldest first. Without them, built-in samples are used.
    #[schema(min_items = 1, max_items = 16)]
    pub samples: Option<Vec<Vec<serde_json::Value>>>,
}

fn describe(def: &MergeDef, with_script: bool) -> serde_json::Value {
    let mut v = json!({
        "name": def.name,
        "builtin": false,
        "hash": def.hash,
        "description": def.description,
    });
    if with_script {
        v["script"] = json!(def.script);
    }
    v
}

fn builtin_entry(name: &str) -> serde_json::Value {
    json!({"name": name, "builtin": true, "hash": format!("builtin:{name}")})
}

#[utoipa::path(
    put,
    path = "/v1/merges/{name}",
    tag = "merges",
    operation_id = "putMerge",
    summary = "Register or replace a merge script",
    description = "The script is compiled and run twice on the samples before it is stored; it is then replicated to every region. Replacing a script gives it a new hash; resolutions written back before keep the hash they ran.",
    params(MergeNamePath),
    request_body(content((MergeBody = "application/json"), (MergeBody = "application/msgpack"))),
    responses(
        (status = 201, description = "Registered.", content(
            (doc::MergeWritten = "application/json"), (doc::MergeWritten = "application/msgpack"))),
        (status = 200, description = "Replaced (`changed`), or the same script again.", content(
            (doc::MergeWritten = "application/json"), (doc::MergeWritten = "application/msgpack"))),
        (status = 400, description = "`invalid_merge`: a bad name, a syntax error, no merge function, or a sample that failed or gave two results; `line`, `column`, `reason` and `sample` say where.", body = doc::Error),
        (status = 409, description = "`invalid_merge`: the name is a built-in's.", body = doc::Error),
        (status = 413, description = "Body over 512 KiB.", body = doc::Error),
        (status = 415, description = "A content type other than JSON or MessagePack.", body = doc::Error),
        (status = 503, description = "The region is stopping (`stopping`) or its clock cannot stamp (`clock`).", body = doc::Error),
    ),
)]
/// `PUT /v1/merges/{name}`: register (201) or replace (200) a script; the
/// same script again: 200, nothing written. A script that does not compile,
/// has no `merge` function, or fails or differs between two runs on the
/// samples: 400 with line, column and reason.
pub async fn put(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    h: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let Path(name) = path.map_err(|e| HttpError::bad_request(format!("bad path: {e}")))?;
    let bytes = body::bytes(body, MAX_MERGE_BODY)?;
    let b: MergeBody = body::parse_object(body::format(&h)?, &bytes)?;
    // Compiling and running the samples can take up to the scripts'
    // wall-time limit per run: off the async workers.
    let checked = tokio::task::spawn_blocking(move || {
        MergeDef::check(&name, &b.script, &b.description, b.samples.as_deref()).map(|(d, _)| d)
    })
    .await
    .map_err(|e| HttpError::internal(e.to_string()))?;
    let def = checked.map_err(error::merge_def)?;
    let existed = app
        .reader
        .published()
        .registry
        .merge_def(&def.name)
        .is_some();
    let outcome = app
        .writer
        .define_merge(def.clone())
        .await
        .map_err(|e| HttpError::unavailable("stopping", e.to_string()))??;
    let (status, vv, changed) = super::keyspaces::define_status(&app, outcome, existed);
    let body = json!({
        "merge": describe(&def, false),
        "created": status == StatusCode::CREATED,
        "changed": changed,
    });
    Ok(respond(status, &h, &body, Some(&vv)))
}

#[utoipa::path(
    get,
    path = "/v1/merges/{name}",
    tag = "merges",
    operation_id = "getMerge",
    summary = "Describe a merge function",
    params(MergeNamePath),
    responses(
        (status = 200, description = "A built-in, or a script with its source and hash.", content(
            (doc::Merge = "application/json"), (doc::Merge = "application/msgpack"))),
        (status = 400, description = "Not a merge name.", body = doc::Error),
        (status = 404, description = "No such merge (`unknown_merge`).", body = doc::Error),
    ),
)]
/// `GET /v1/merges/{name}`: a script with its source and hash, or a built-in.
pub async fn get(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    h: HeaderMap,
) -> Result<Response, HttpError> {
    let Path(name) = path.map_err(|e| HttpError::bad_request(format!("bad path: {e}")))?;
    let p = app.reader.published();
    let body = if builtin::is_builtin(&name) {
        builtin_entry(&name)
    } else {
        let def = p.registry.merge_def(&name).ok_or_else(|| {
            HttpError::missing("unknown_merge", format!("no merge function named {name:?}"))
        })?;
        describe(def, true)
    };
    Ok(respond(StatusCode::OK, &h, &body, Some(&p.vv)))
}

#[utoipa::path(
    get,
    path = "/v1/merges",
    tag = "merges",
    operation_id = "listMerges",
    summary = "List merge functions",
    responses(
        (status = 200, description = "The built-ins, then every registered script.", content(
            (doc::Merges = "application/json"), (doc::Merges = "application/msgpack"))),
    ),
)]
/// `GET /v1/merges`: the built-ins, then every registered script.
pub async fn list(State(app): State<AppState>, h: HeaderMap) -> Result<Response, HttpError> {
    let p = app.reader.published();
    let mut all: Vec<serde_json::Value> = builtin::NAMES.iter().map(|n| builtin_entry(n)).collect();
    all.extend(p.registry.merge_defs().map(|d| describe(d, false)));
    Ok(respond(
        StatusCode::OK,
        &h,
        &json!({"merges": all}),
        Some(&p.vv),
    ))
}
