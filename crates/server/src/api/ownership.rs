//! Ownership-map routes: `GET|PUT /v1/keyspaces/{name}/ownership` and
//! `POST /v1/keyspaces/{name}/ownership/transfer`. Changes are made by the
//! cluster's steward (its first region by name); other regions forward
//! them there.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use meridian_core::ownership::{self, Epoch, MapRequest, RuleRef};
use meridian_crdt::RegionId;
use serde::Deserialize;
use serde_json::json;

use super::openapi::OwnershipBody;
use super::openapi::answers::NamePath;
use super::openapi::schemas as doc;
use super::{AppInner, AppState, MAX_SMALL_BODY, body, consistency, headers, respond};
use crate::error::HttpError;
use crate::peer::forward::{self, ForwardedBy};
use crate::region::writer::OwnershipChange;

/// Every region of the cluster, this one included.
fn cluster(app: &AppInner) -> Vec<RegionId> {
    let mut r: Vec<RegionId> = app.peers.links.iter().map(|l| l.name.clone()).collect();
    r.push(app.replica.region.clone());
    r.sort();
    r
}

fn keyspace_of(
    app: &AppInner,
    path: Result<Path<String>, PathRejection>,
) -> Result<String, HttpError> {
    let Path(name) = path.map_err(|e| HttpError::bad_request(format!("bad path: {e}")))?;
    if app.reader.published().registry.get(&name).is_none() {
        return Err(HttpError::missing(
            "unknown_keyspace",
            format!("keyspace {name:?} does not exist"),
        ));
    }
    Ok(name)
}

/// The keyspace a change names (checked by the steward, which may know a
/// keyspace this region has not received yet).
fn keyspace_named(path: Result<Path<String>, PathRejection>) -> Result<String, HttpError> {
    let Path(name) = path.map_err(|e| HttpError::bad_request(format!("bad path: {e}")))?;
    meridian_core::KeyspaceName::new(name.clone())
        .map_err(|e| HttpError::bad_request(e.to_string()))?;
    Ok(name)
}

/// A map as clients see it.
fn describe(app: &AppInner, keyspace: &str) -> serde_json::Value {
    let reg = app.reader.published().registry.clone();
    let map = reg.ownership(keyspace).cloned().unwrap_or_default();
    let fences: serde_json::Map<String, serde_json::Value> = reg
        .get(keyspace)
        .map(|d| {
            reg.fences(&d.name)
                .map(|(r, f)| (r.to_string(), json!(f.epoch.0)))
                .collect()
        })
        .unwrap_or_default();
    let regions = cluster(app);
    json!({
        "keyspace": keyspace,
        "epoch": map.epoch().0,
        "rules": map.layout.rules,
        "default": map.layout.default,
        "mode": map.mode,
        "fallback": map.fallback,
        "steward": ownership::steward(&regions),
        "fences": fences,
    })
}

#[utoipa::path(
    get,
    path = "/v1/keyspaces/{name}/ownership",
    tag = "ownership",
    operation_id = "getOwnership",
    summary = "A keyspace's ownership map",
    params(NamePath),
    responses(
        (status = 200, description = "The map (epoch 0 and no rules when none was set), the steward and each region's latest fence.", content(
            (doc::Ownership = "application/json"), (doc::Ownership = "application/msgpack"))),
        (status = 400, description = "Not a keyspace name.", body = doc::Error),
        (status = 404, description = "Unknown keyspace.", body = doc::Error),
    ),
)]
/// `GET /v1/keyspaces/{name}/ownership`: the map (epoch 0 and no rules
/// when none was set), the steward and each region's latest fence.
pub async fn get(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    h: HeaderMap,
) -> Result<Response, HttpError> {
    let ks = keyspace_of(&app, path)?;
    let p = app.reader.published();
    Ok(respond(
        StatusCode::OK,
        &h,
        &describe(&app, &ks),
        Some(&p.vv),
    ))
}

/// The body of a transfer.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferBody {
    /// The rule: its index, `"default"`, or what it matches.
    #[schema(value_type = super::openapi::RuleRef)]
    pub rule: RuleRef,
    /// The new owner.
    #[schema(value_type = super::openapi::RegionName)]
    pub to: RegionId,
    /// Only if the map is still at this epoch.
    #[serde(default)]
    #[schema(value_type = Option<u64>, maximum = 18446744073709551615_u64)]
    pub epoch: Option<Epoch>,
}

#[utoipa::path(
    put,
    path = "/v1/keyspaces/{name}/ownership",
    tag = "ownership",
    operation_id = "putOwnership",
    summary = "Set a keyspace's ownership map",
    description = "Made by the steward (the cluster's first region by name); other regions forward it. Each change raises the epoch by one; owner changes are fenced.",
    params(NamePath),
    request_body(content((OwnershipBody = "application/json"), (OwnershipBody = "application/msgpack"))),
    responses(
        (status = 200, description = "The map after the change (`changed` says whether anything did), in effect in every region (`in_effect: true`).", content(
            (doc::Ownership = "application/json"), (doc::Ownership = "application/msgpack"))),
        (status = 202, description = "The change is made, but after waiting `meridian-timeout-ms` (default 5,000) some regions (`waiting_for`) have not applied it yet (`in_effect: false`); they take writes under the map they hold until they do.", content(
            (doc::Ownership = "application/json"), (doc::Ownership = "application/msgpack"))),
        (status = 400, description = "Invalid map: overlapping rules, an empty range, an unknown region, too many rules (`invalid_map`), or a bad body.", body = doc::Error),
        (status = 404, description = "Unknown keyspace, no map, or no such rule.", body = doc::Error),
        (status = 409, description = "The map is no longer at the `epoch` given (`stale_epoch`).", body = doc::Error),
        (status = 413, description = "Body over 64 KiB.", body = doc::Error),
        (status = 415, description = "A content type other than JSON or MessagePack.", body = doc::Error),
        (status = 503, description = "The steward cannot be reached (`steward_unreachable`) or is starting, or the region is stopping.", body = doc::Error),
    ),
)]
/// `PUT /v1/keyspaces/{name}/ownership`: sets the whole map (a
/// compare-and-set when the body names the `epoch` it follows).
#[allow(clippy::too_many_arguments)]
pub async fn put(
    State(app): State<AppState>,
    method: Method,
    uri: Uri,
    fwd: Option<Extension<ForwardedBy>>,
    path: Result<Path<String>, PathRejection>,
    h: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let ks = keyspace_named(path)?;
    let bytes = body::bytes(body, MAX_SMALL_BODY)?;
    let req: MapRequest = body::parse_settings(body::format(&h)?, &bytes)?;
    let regions = cluster(&app);
    req.validate(&regions)
        .map_err(meridian_core::WriteError::from)?;
    change(
        &app,
        (method, uri, fwd, &h, bytes),
        ks,
        OwnershipChange::Set(req),
    )
    .await
}

#[utoipa::path(
    post,
    path = "/v1/keyspaces/{name}/ownership/transfer",
    tag = "ownership",
    operation_id = "transferOwnership",
    summary = "Move one rule to another region (fenced handoff)",
    params(NamePath),
    request_body(content((TransferBody = "application/json"), (TransferBody = "application/msgpack"))),
    responses(
        (status = 200, description = "The map after the change (`changed` says whether anything did), in effect in every region (`in_effect: true`).", content(
            (doc::Ownership = "application/json"), (doc::Ownership = "application/msgpack"))),
        (status = 202, description = "The change is made, but after waiting `meridian-timeout-ms` (default 5,000) some regions (`waiting_for`) have not applied it yet (`in_effect: false`); they take writes under the map they hold until they do.", content(
            (doc::Ownership = "application/json"), (doc::Ownership = "application/msgpack"))),
        (status = 400, description = "Invalid map: overlapping rules, an empty range, an unknown region, too many rules (`invalid_map`), or a bad body.", body = doc::Error),
        (status = 404, description = "Unknown keyspace, no map, or no such rule.", body = doc::Error),
        (status = 409, description = "The map is no longer at the `epoch` given (`stale_epoch`).", body = doc::Error),
        (status = 413, description = "Body over 64 KiB.", body = doc::Error),
        (status = 415, description = "A content type other than JSON or MessagePack.", body = doc::Error),
        (status = 503, description = "The steward cannot be reached (`steward_unreachable`) or is starting, or the region is stopping.", body = doc::Error),
    ),
)]
/// `POST /v1/keyspaces/{name}/ownership/transfer`: moves one rule to
/// another region, fenced.
#[allow(clippy::too_many_arguments)]
pub async fn transfer(
    State(app): State<AppState>,
    method: Method,
    uri: Uri,
    fwd: Option<Extension<ForwardedBy>>,
    path: Result<Path<String>, PathRejection>,
    h: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let ks = keyspace_named(path)?;
    let bytes = body::bytes(body, MAX_SMALL_BODY)?;
    let b: TransferBody = body::parse_settings(body::format(&h)?, &bytes)?;
    let change_ = OwnershipChange::Transfer {
        which: b.rule,
        to: b.to,
        epoch: b.epoch,
    };
    change(&app, (method, uri, fwd, &h, bytes), ks, change_).await
}

type Request<'a> = (
    Method,
    Uri,
    Option<Extension<ForwardedBy>>,
    &'a HeaderMap,
    Bytes,
);

/// Makes a change here when this region is the steward, else sends it to
/// the steward (once: a forwarded change is answered where it lands).
async fn change(
    app: &AppInner,
    (method, uri, fwd, h, bytes): Request<'_>,
    ks: String,
    change: OwnershipChange,
) -> Result<Response, HttpError> {
    let regions = cluster(app);
    let steward = ownership::steward(&regions)
        .cloned()
        .unwrap_or_else(|| app.replica.region.clone());
    if steward != app.replica.region && fwd.is_none() {
        return forward::send(app.peer_client.as_ref(), &steward, &method, &uri, h, &bytes)
            .await
            .map_err(|e| {
                HttpError::unavailable(
                    "steward_unreachable",
                    format!("{e}; ownership maps change only at the steward (writes go on)"),
                )
                .with(json!({"steward": steward.as_str()}))
            });
    }
    // Checked before anything changes.
    let wait_ms = headers::timeout_ms(h, consistency::DEFAULT_CONCERN_TIMEOUT_MS)?;
    let outcome = app
        .writer
        .own(ks.clone(), change)
        .await
        .map_err(|e| HttpError::unavailable("stopping", e.to_string()))??;
    let (vv, changed) = match outcome {
        crate::region::writer::DefineDone::Unchanged => (app.reader.published().vv.clone(), false),
        crate::region::writer::DefineDone::Written(vv) => (vv, true),
    };
    // Made: answered once every region judges writes by it, so a write
    // taken anywhere after this answer is judged by the new map (until a
    // region applies it, it takes writes under the map it holds, and for
    // a keyspace's first map those are ownerless and may conflict).
    let waiting = wait_in_effect(app, &ks, wait_ms).await;
    let mut body = describe(app, &ks);
    if let serde_json::Value::Object(m) = &mut body {
        m.insert("changed".into(), json!(changed));
        m.insert("in_effect".into(), json!(waiting.is_empty()));
        m.insert("waiting_for".into(), json!(waiting));
    }
    let status = if waiting.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok(respond(status, h, &body, Some(&vv)))
}

/// The regions that do not yet judge writes to `keyspace` by its current
/// map: those without a fence at its epoch, as this region has them.
fn not_in_effect(app: &AppInner, keyspace: &str) -> Vec<RegionId> {
    let p = app.reader.published();
    let (Some(def), Some(map)) = (p.registry.get(keyspace), p.registry.ownership(keyspace)) else {
        return Vec::new();
    };
    cluster(app)
        .into_iter()
        .filter(|r| {
            p.registry
                .fence(&def.name, r)
                .is_none_or(|f| f.epoch < map.epoch())
        })
        .collect()
}

/// Waits up to `wait_ms` for every region's fence at `keyspace`'s current
/// epoch to arrive here; the regions still without one.
async fn wait_in_effect(app: &AppInner, keyspace: &str, wait_ms: u64) -> Vec<RegionId> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
    let mut vv = app.vv.clone();
    loop {
        let waiting = not_in_effect(app, keyspace);
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if waiting.is_empty() || left.is_zero() {
            return waiting;
        }
        // A fence moves the vector; the tick bounds the wait should the
        // vector be published before the registry that came with it.
        let tick = left.min(Duration::from_millis(50));
        if let Ok(Err(_)) = tokio::time::timeout(tick, vv.changed()).await {
            // The region is stopping: no fence will arrive here.
            tokio::time::sleep(tick).await;
        }
    }
}
