//! Backups and rewind: `/v1/admin/backups...` and `/v1/admin/rewind`.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use meridian_crdt::Hlc;
use serde::Deserialize;
use serde_json::json;

use super::openapi::answers::{BackupErrors, BackupIdPath};
use super::openapi::schemas::{self as doc, RewindTime};
use super::{AppState, MAX_SMALL_BODY, body};
use crate::backup::{BackupError, Backups, Summary};
use crate::error::HttpError;

fn backups(app: &AppState) -> Result<Arc<Backups>, HttpError> {
    app.backups.clone().ok_or_else(|| {
        HttpError::conflict(
            "no_backup_target",
            "this region has no backup target: set [backup] target in its config",
        )
    })
}

/// Maps a backup failure to its answer.
pub fn backup_error(e: BackupError) -> HttpError {
    match e {
        BackupError::Unknown(id) => {
            HttpError::missing("unknown_backup", format!("no complete backup {id}"))
        }
        e @ BackupError::Running(_) => HttpError::conflict("backup_running", e.to_string()),
        e @ BackupError::Leased(_) => HttpError::conflict("backup_in_use", e.to_string()),
        BackupError::Damaged { file, reason } => HttpError::unprocessable(
            "backup_damaged",
            format!("backup file {file} is damaged: {reason}"),
        )
        .with(json!({ "file": file })),
        BackupError::NoBase(m) => HttpError::conflict("history_unavailable", m),
        BackupError::Refused(m) => HttpError::conflict("rewind_refused", m),
        BackupError::Stopped => HttpError::unavailable("stopping", e.to_string()),
        e @ BackupError::Target(_) => HttpError::bad_gateway("backup_target", e.to_string()),
        e @ BackupError::Local(_) => HttpError::internal(e.to_string()),
    }
}

fn backup_id(path: Result<Path<String>, PathRejection>) -> Result<String, HttpError> {
    let Path(id) = path.map_err(|e| HttpError::bad_request(e.body_text()))?;
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && id != "."
        && id != "..";
    if !ok {
        return Err(HttpError::bad_request(
            "a backup id is 1-64 of a-z, A-Z, 0-9, '-', '_', '.'",
        ));
    }
    Ok(id)
}

/// `?wait=true` on create.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CreateQuery {
    /// Wait for the backup and answer 201 with its summary.
    #[serde(default)]
    #[param(nullable = false)]
    wait: Option<bool>,
}

#[utoipa::path(
    post,
    path = "/v1/admin/backups",
    tag = "backups",
    operation_id = "createBackup",
    summary = "Take a backup",
    description = "A consistent snapshot of the state plus the op log to roll it forward, written to the region's backup target while writes go on; the manifest is written last, so a backup cut short is never listed.",
    params(CreateQuery),
    responses(
        (status = 202, description = "Started.", body = doc::BackupStarted),
        (status = 201, description = "Taken (with `wait=true`).", body = doc::BackupSummary),
        BackupErrors,
    ),
)]
/// `POST /v1/admin/backups`: starts a backup (202 with its id), or with
/// `?wait=true` takes it and answers 201 with its summary.
pub async fn create(
    State(app): State<AppState>,
    q: Result<Query<CreateQuery>, QueryRejection>,
) -> Result<Response, HttpError> {
    let Query(q) = q.map_err(|e| HttpError::bad_request(e.body_text()))?;
    let b = backups(&app)?;
    if q.wait.unwrap_or(false) {
        let m = b.create_now().await.map_err(backup_error)?;
        return Ok((StatusCode::CREATED, Json(Summary::of(&m))).into_response());
    }
    let id = b.start().map_err(backup_error)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "id": id, "status": "running" })),
    )
        .into_response())
}

#[utoipa::path(
    get,
    path = "/v1/admin/backups",
    tag = "backups",
    operation_id = "listBackups",
    summary = "List this region's backups",
    responses(
        (status = 200, description = "Complete backups, oldest first, and backups running or failed lately.", body = doc::Backups),
        BackupErrors,
    ),
)]
/// `GET /v1/admin/backups`: complete backups (oldest first) and those
/// running or failed lately.
pub async fn list(State(app): State<AppState>) -> Result<Response, HttpError> {
    let b = backups(&app)?;
    let all = b.list().await.map_err(backup_error)?;
    let listed: Vec<Summary> = all.iter().map(Summary::of).collect();
    let damaged = b.damaged().await.map_err(backup_error)?;
    Ok(Json(json!({
        "target": b.target_url(),
        "backups": listed,
        "jobs": b.jobs_list(),
        "damaged": damaged,
    }))
    .into_response())
}

#[utoipa::path(
    get,
    path = "/v1/admin/backups/{id}",
    tag = "backups",
    operation_id = "getBackup",
    summary = "Show a backup",
    params(BackupIdPath),
    responses(
        (status = 200, description = "A complete backup's manifest, or a running or failed backup's progress.", body = doc::BackupManifest),
        BackupErrors,
    ),
)]
/// `GET /v1/admin/backups/{id}`: a complete backup's manifest, or a
/// running (or failed) one's progress.
pub async fn get(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, HttpError> {
    let id = backup_id(path)?;
    let b = backups(&app)?;
    if let Some(p) = b.job(&id) {
        return Ok(Json(p).into_response());
    }
    let m = b.manifest(&id).await.map_err(backup_error)?;
    let mut v = serde_json::to_value(&m).map_err(|e| HttpError::internal(e.to_string()))?;
    if let Some(o) = v.as_object_mut() {
        o.insert("status".into(), json!("complete"));
        o.insert("summary".into(), json!(Summary::of(&m)));
    }
    Ok(Json(v).into_response())
}

#[utoipa::path(
    delete,
    path = "/v1/admin/backups/{id}",
    tag = "backups",
    operation_id = "deleteBackup",
    summary = "Delete a backup",
    params(BackupIdPath),
    responses(
        (status = 200, description = "Deleted, with the files no other backup needed.", body = doc::Pruned),
        BackupErrors,
    ),
)]
/// `DELETE /v1/admin/backups/{id}`.
pub async fn delete(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, HttpError> {
    let id = backup_id(path)?;
    let b = backups(&app)?;
    let p = b.delete(&id).await.map_err(backup_error)?;
    Ok(Json(p).into_response())
}

#[utoipa::path(
    post,
    path = "/v1/admin/backups/{id}/verify",
    tag = "backups",
    operation_id = "verifyBackup",
    summary = "Verify a backup",
    description = "Reads every file a restore from this backup would read (its snapshot and the archived log after it), checks each size and SHA-256, loads the snapshot and replays the log in memory.",
    params(BackupIdPath),
    responses(
        (status = 200, description = "Every file matched and replayed.", body = doc::Verified),
        BackupErrors,
    ),
)]
/// `POST /v1/admin/backups/{id}/verify`: every checksum, then a replay.
pub async fn verify(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, HttpError> {
    let id = backup_id(path)?;
    let b = backups(&app)?;
    // Run apart from the request, so a client that goes away does not
    // leave its scratch store behind.
    let v = b
        .spawn({
            let b = b.clone();
            async move { b.verify(&id).await }
        })
        .await
        .map_err(|e| HttpError::internal(e.to_string()))?
        .map_err(backup_error)?;
    Ok(Json(json!({ "ok": true, "verified": v })).into_response())
}

/// Body of `POST /v1/admin/backups/prune`.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PruneBody {
    /// Keep the newest N.
    #[serde(default)]
    #[schema(maximum = 4294967295_u32)]
    keep_last: Option<u32>,
    /// Keep those younger than this many hours (at most 5124095576030,
    /// which is u64::MAX milliseconds).
    #[serde(default)]
    #[schema(maximum = 5124095576030_u64)]
    keep_hours: Option<u64>,
}

#[utoipa::path(
    post,
    path = "/v1/admin/backups/prune",
    tag = "backups",
    operation_id = "pruneBackups",
    summary = "Apply backup retention",
    description = "Keeps the newest `keep_last` and those younger than `keep_hours` (either rule keeps a backup); the newest backup, and the newest one older than the undo window, are always kept. Files no kept backup needs are deleted. Without a body, the configured rules apply.",
    request_body(content((Option<PruneBody> = "application/json"), (Option<PruneBody> = "application/msgpack"))),
    responses(
        (status = 200, description = "What was removed.", body = doc::Pruned),
        BackupErrors,
        (status = 413, description = "Body over 64 KiB.", body = doc::Error),
        (status = 415, description = "A content type other than JSON or MessagePack.", body = doc::Error),
    ),
)]
/// `POST /v1/admin/backups/prune`: applies retention (the body's rules,
/// else the configured ones).
pub async fn prune(
    State(app): State<AppState>,
    h: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let bytes = body::bytes(body, MAX_SMALL_BODY)?;
    let p: PruneBody = if bytes.is_empty() || bytes.as_ref() == b"null" {
        PruneBody::default()
    } else {
        body::parse_settings(body::format(&h)?, &bytes)?
    };
    let b = backups(&app)?;
    let r = match (p.keep_last, p.keep_hours) {
        (None, None) => b.prune_configured().await,
        (last, hours) => {
            let ms = hours
                .unwrap_or(0)
                .checked_mul(3_600_000)
                .ok_or_else(|| HttpError::bad_request("keep_hours is too large"))?;
            b.prune(last.unwrap_or(0), ms).await
        }
    }
    .map_err(backup_error)?;
    Ok(Json(r).into_response())
}

/// Body of `POST /v1/admin/rewind`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RewindBody {
    /// The keyspace.
    #[schema(pattern = r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    keyspace: String,
    /// Only keys starting with this (default: every key).
    #[serde(default)]
    prefix: String,
    /// RFC 3339 (`2026-12-01T20:15:00Z`), or Unix ms (a number, or digits).
    #[schema(value_type = RewindTime)]
    to_time: serde_json::Value,
    /// Only list what would change.
    #[serde(default)]
    dry_run: bool,
}

/// Parses a time: RFC 3339 text or Unix ms (a number or digits).
pub fn parse_time(v: &serde_json::Value) -> Result<u64, String> {
    match v {
        serde_json::Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| format!("{n} is not a Unix time in ms")),
        serde_json::Value::String(s) => parse_time_str(s),
        other => Err(format!("{other} is not a time (RFC 3339 text or Unix ms)")),
    }
}

/// Parses RFC 3339 text or Unix ms digits.
pub fn parse_time_str(s: &str) -> Result<u64, String> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|_| format!("{s} is too large"));
    }
    let t = humantime::parse_rfc3339_weak(s)
        .map_err(|e| format!("{s:?} is not RFC 3339 (2026-12-01T20:15:00Z) or Unix ms: {e}"))?;
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .map_err(|_| format!("{s} is before 1970"))
}

/// The HLC that ends millisecond `ms`: everything stamped in it is kept.
pub fn end_of_ms(ms: u64) -> Result<Hlc, String> {
    Hlc::new(ms, u16::MAX).map_err(|e| format!("{ms}: {e}"))
}

#[utoipa::path(
    post,
    path = "/v1/admin/rewind",
    tag = "backups",
    operation_id = "rewind",
    summary = "Rewind a key range to a time",
    description = "Computes each key's value at `to_time` from history (the newest backup at or before it, and the archived log after it) and writes the keys whose value differs back as new ops, which replicate like any write; keys created after the time are deleted. `dry_run` only lists.",
    request_body(content((RewindBody = "application/json"), (RewindBody = "application/msgpack"))),
    responses(
        (status = 200, description = "What changed (or, dry, would change).", body = doc::Rewound),
        (status = 400, description = "Bad body or time (in the future, unparseable).", body = doc::Error),
        (status = 404, description = "No such keyspace.", body = doc::Error),
        (status = 409, description = "No backup target (`no_backup_target`), no history reaching back to the time (`history_unavailable`), or a rewind the keyspace cannot take (`rewind_refused`).", body = doc::Error),
        (status = 413, description = "Body over 64 KiB.", body = doc::Error),
        (status = 415, description = "A content type other than JSON or MessagePack.", body = doc::Error),
        (status = 422, description = "A history file is damaged (`backup_damaged`).", body = doc::Error),
        (status = 502, description = "The backup target failed (`backup_target`).", body = doc::Error),
        (status = 503, description = "The region is stopping.", body = doc::Error),
    ),
)]
/// `POST /v1/admin/rewind`: a key range back to its value at a time, as
/// new writes (or, with `dry_run`, the list of what would change).
pub async fn rewind(
    State(app): State<AppState>,
    h: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let bytes = body::bytes(body, MAX_SMALL_BODY)?;
    let r: RewindBody = body::parse_settings(body::format(&h)?, &bytes)?;
    let ks = meridian_core::KeyspaceName::new(r.keyspace.clone())
        .map_err(|e| HttpError::bad_request(format!("keyspace: {e}")))?;
    if app.reader.published().registry.get(ks.as_str()).is_none() || ks.is_system() {
        return Err(HttpError::not_found(format!("no keyspace {ks}")));
    }
    let ms = parse_time(&r.to_time).map_err(|m| HttpError::bad_request(format!("to_time: {m}")))?;
    if ms > app.clock.now_ms() {
        return Err(HttpError::bad_request("to_time is in the future"));
    }
    let to = end_of_ms(ms).map_err(|m| HttpError::bad_request(format!("to_time: {m}")))?;
    let b = backups(&app)?;
    // Run apart from the request: a client that goes away does not stop a
    // rewind between two of its writes.
    let (writer, reader, prefix) = (app.writer.clone(), app.reader.clone(), r.prefix.clone());
    let job = b.clone().spawn(async move {
        b.rewind(&writer, &reader, &ks, &prefix, to, r.dry_run)
            .await
    });
    let out = job
        .await
        .map_err(|e| HttpError::internal(e.to_string()))?
        .map_err(backup_error)?;
    Ok(Json(out).into_response())
}
