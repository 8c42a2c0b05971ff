//! `POST /v1/batch`: several changes applied atomically, as one op.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use meridian_core::{Key, MutationRequest, WriteRequest};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::kv::{OpBody, write};
use super::{AppState, MAX_BATCH_BODY, body, render, respond};

/// The body of a batch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    /// The changes, at most one per key.
    pub ops: Vec<BatchItem>,
}

/// One change in a batch.
#[derive(Debug, Deserialize)]
pub struct BatchItem {
    /// The keyspace.
    pub keyspace: String,
    /// The key.
    pub key: String,
    /// The change (`{"op": "put", "value": ...}`, `{"op": "incr", "by": 1}`, ...).
    #[serde(flatten)]
    pub op: OpBody,
}

/// `POST /v1/batch`.
pub async fn post(
    State(app): State<AppState>,
    h: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let t = Instant::now();
    let bytes = body::bytes(body, MAX_BATCH_BODY)?;
    let b: BatchBody = body::parse(body::format(&h)?, &bytes)?;
    let mut mutations = Vec::with_capacity(b.ops.len());
    let mut names = Vec::with_capacity(b.ops.len());
    for (i, item) in b.ops.into_iter().enumerate() {
        let key =
            Key::new(item.key).map_err(|e| ApiError::bad_request(format!("ops[{i}].key: {e}")))?;
        names.push((item.keyspace.clone(), key.clone()));
        mutations.push(MutationRequest {
            keyspace: item.keyspace,
            key,
            change: item.op.into_change()?,
        });
    }
    let done = write(&app, &h, WriteRequest { mutations }).await?;
    app.metrics
        .observe("batch", true, t.elapsed().as_secs_f64());
    let results: Vec<serde_json::Value> = names
        .iter()
        .zip(&done.counters)
        .map(|((ks, key), c)| {
            let mut r = json!({"keyspace": ks, "key": key.as_str()});
            if let (Some(v), serde_json::Value::Object(m)) = (c, &mut r) {
                m.insert("value".into(), render::counter(*v));
            }
            r
        })
        .collect();
    let body = json!({
        "version": render::version(&done.version),
        "token": meridian_core::token::encode(&done.vv),
        "results": results,
    });
    Ok(respond(StatusCode::OK, &h, &body, Some(&done.vv)))
}
