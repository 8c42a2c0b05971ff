//! Merge functions: `/v1/merges` and `/v1/merges/{name}`.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use meridian_core::merge::{MergeDef, builtin};
use serde::Deserialize;
use serde_json::json;

use super::error::{self, ApiError};
use super::{AppState, body, respond};

/// Largest body of `PUT /v1/merges/{name}`: a 64 KiB script escaped, and
/// samples.
pub const MAX_MERGE_BODY: usize = 512 << 10;

/// The body of `PUT /v1/merges/{name}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeBody {
    /// Rhai source defining `fn merge(versions)`.
    pub script: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Values to check the script on: each a list of 2 to 16 version
    /// values, oldest first. Without them, built-in samples are used.
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

/// `PUT /v1/merges/{name}`: register (201) or replace (200) a script; the
/// same script again: 200, nothing written. A script that does not compile,
/// has no `merge` function, or fails or differs between two runs on the
/// samples: 400 with line, column and reason.
pub async fn put(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    h: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Path(name) = path.map_err(|e| ApiError::bad_request(format!("bad path: {e}")))?;
    let bytes = body::bytes(body, MAX_MERGE_BODY)?;
    let b: MergeBody = body::parse(body::format(&h)?, &bytes)?;
    // Compiling and running the samples can take up to the scripts'
    // wall-time limit per run: off the async workers.
    let checked = tokio::task::spawn_blocking(move || {
        MergeDef::check(&name, &b.script, &b.description, b.samples.as_deref()).map(|(d, _)| d)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?;
    let def = checked.map_err(error::merge_def)?;
    let existed = app
        .reader
        .published()
        .registry
        .merge_def(&def.name)
        .is_some();
    let outcome =
        app.writer.define_merge(def.clone()).await.map_err(|e| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "stopping", e.to_string())
        })??;
    let (status, vv, changed) = super::keyspaces::define_status(&app, outcome, existed);
    let body = json!({
        "merge": describe(&def, false),
        "created": status == StatusCode::CREATED,
        "changed": changed,
    });
    Ok(respond(status, &h, &body, Some(&vv)))
}

/// `GET /v1/merges/{name}`: a script with its source and hash, or a built-in.
pub async fn get(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    let Path(name) = path.map_err(|e| ApiError::bad_request(format!("bad path: {e}")))?;
    let p = app.reader.published();
    let body = if builtin::is_builtin(&name) {
        builtin_entry(&name)
    } else {
        let def = p.registry.merge_def(&name).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_merge",
                format!("no merge function named {name:?}"),
            )
        })?;
        describe(def, true)
    };
    Ok(respond(StatusCode::OK, &h, &body, Some(&p.vv)))
}

/// `GET /v1/merges`: the built-ins, then every registered script.
pub async fn list(State(app): State<AppState>, h: HeaderMap) -> Result<Response, ApiError> {
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
