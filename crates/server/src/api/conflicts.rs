//! `GET /v1/conflicts`: the conflict ledger.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use meridian_core::engine::ledger::{LedgerEntry, LedgerQuery};
use meridian_core::{Key, KeyspaceName};
use serde::Deserialize;
use serde_json::json;

use super::openapi::schemas as doc;
use super::{AppState, render, respond};
use crate::error::HttpError;

/// Query of `GET /v1/conflicts`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ConflictQuery {
    /// Only this keyspace.
    #[param(nullable = false, pattern = r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    pub keyspace: Option<String>,
    /// Only this key (in every keyspace, unless `keyspace` is given).
    #[param(nullable = false, min_length = 1)]
    pub key: Option<String>,
    /// Only conflicts resolved at or after this time, ms since the epoch.
    #[param(nullable = false, maximum = 18446744073709551615_u64)]
    pub since: Option<u64>,
    /// Only entries after this id (paging within one keyspace).
    #[param(nullable = false, maximum = 18446744073709551615_u64)]
    pub after: Option<u64>,
    /// At most this many (default 100, at most 1000).
    #[param(nullable = false, minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// One ledger entry as JSON.
pub fn entry(e: &LedgerEntry) -> serde_json::Value {
    let side = |v: &meridian_crdt::Version, value: &Option<meridian_crdt::Value>| {
        json!({
            "version": render::version(v),
            "origin": v.dot.replica.region.as_str(),
            "hlc": v.hlc.to_string(),
            "value": value.as_ref().map(render::value),
            "deleted": value.is_none(),
        })
    };
    let losers: Vec<serde_json::Value> = match &e.merge {
        // A merge: every input, in the order the function saw them.
        Some(m) => m
            .inputs
            .iter()
            .map(|(v, value)| {
                let mut s = side(v, value);
                if value.is_none() {
                    // Not a delete: the value was not kept.
                    s["deleted"] = json!(false);
                }
                s
            })
            .collect(),
        None => vec![side(&e.loser, &e.loser_value)],
    };
    let mut out = json!({
        "id": e.id,
        "keyspace": e.keyspace.as_str(),
        "key": e.key.as_str(),
        "path": e.path,
        "rule": e.rule,
        "winner": side(&e.winner, &e.winner_value),
        "losers": losers,
        "ambiguous": e.ambiguous,
        "resolved_at_ms": e.recorded_at.wall_ms(),
    });
    if let Some(m) = &e.merge {
        out["merge"] = json!({
            "function": m.function,
            "hash": m.hash,
            "failed": m.failed,
            "values_omitted": m.values_omitted,
        });
    }
    out
}

#[utoipa::path(
    get,
    path = "/v1/conflicts",
    tag = "conflicts",
    operation_id = "conflicts",
    summary = "Query the conflict ledger",
    description = "What every merge decided: the winner, the losers, the rule and whether it had to break a tie.",
    params(ConflictQuery),
    responses(
        (status = 200, description = "Resolved conflicts, oldest first per keyspace.", content(
            (doc::Conflicts = "application/json"), (doc::Conflicts = "application/msgpack"))),
        (status = 400, description = "Bad query.", body = doc::Error),
        (status = 404, description = "Unknown keyspace.", body = doc::Error),
    ),
)]
/// `GET /v1/conflicts?keyspace=&key=&since=&after=&limit=`.
pub async fn get(
    State(app): State<AppState>,
    query: Result<Query<ConflictQuery>, QueryRejection>,
    h: HeaderMap,
) -> Result<Response, HttpError> {
    let Query(q) =
        query.map_err(|e| HttpError::bad_request(format!("bad query: {}", e.body_text())))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(HttpError::bad_request(format!(
            "limit {limit} is outside 1..=1000"
        )));
    }
    let keyspace = q
        .keyspace
        .map(KeyspaceName::new)
        .transpose()
        .map_err(|e| HttpError::bad_request(e.to_string()))?;
    let key = q
        .key
        .map(Key::new)
        .transpose()
        .map_err(|e| HttpError::bad_request(e.to_string()))?;
    let lq = LedgerQuery {
        keyspace,
        key,
        since_ms: q.since,
        after_id: q.after,
        limit,
    };
    let reader = app.reader.clone();
    let entries = tokio::task::spawn_blocking(move || reader.conflicts(&lq))
        .await
        .map_err(|e| HttpError::internal(e.to_string()))??;
    let p = app.reader.published();
    let body = json!({"conflicts": entries.iter().map(entry).collect::<Vec<_>>()});
    Ok(respond(StatusCode::OK, &h, &body, Some(&p.vv)))
}
