//! `POST /v1/batch`: several changes applied atomically, as one op.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use meridian_core::{Key, MutationRequest, WriteRequest};
use serde::Deserialize;
use serde_json::json;

use super::headers::WriteHeaders;
use super::kv::{OpBody, write};
use super::openapi::answers::WriteErrors;
use super::openapi::schemas as doc;
use super::owner::Written;
use super::{AppState, MAX_BATCH_BODY, body, render, respond};
use crate::error::HttpError;
use crate::peer::forward::ForwardedBy;
use crate::security::auth::{Caller, Need};
use meridian_core::access::Right;

/// The body of a batch.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    /// The changes, at most one per key.
    #[schema(min_items = 1, max_items = 1000)]
    pub ops: Vec<BatchItem>,
}

/// One change in a batch.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct BatchItem {
    /// The keyspace.
    #[schema(pattern = r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    pub keyspace: String,
    /// The key: 1 to 1024 bytes.
    #[schema(min_length = 1)]
    pub key: String,
    /// The change (`{"op": "put", "value": ...}`, `{"op": "incr", "by": 1}`, ...).
    #[serde(flatten)]
    pub op: OpBody,
}

#[utoipa::path(
    post,
    path = "/v1/batch",
    tag = "keys",
    operation_id = "batch",
    summary = "Apply several changes atomically",
    description = "All changes become one op: applied together in every region, or refused together. At most 1000 changes, one per key.",
    params(WriteHeaders),
    request_body(content((BatchBody = "application/json"), (BatchBody = "application/msgpack"))),
    responses(
        (status = 200, description = "Durable in this region as one unit.", content(
            (doc::BatchWritten = "application/json"), (doc::BatchWritten = "application/msgpack"))),
        WriteErrors,
    ),
)]
/// `POST /v1/batch`.
pub async fn post(
    State(app): State<AppState>,
    method: Method,
    uri: Uri,
    fwd: Option<Extension<ForwardedBy>>,
    caller: Option<Extension<Caller>>,
    h: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let t = Instant::now();
    let bytes = body::bytes(body, MAX_BATCH_BODY)?;
    let b: BatchBody = body::parse_object(body::format(&h)?, &bytes)?;
    let mut mutations = Vec::with_capacity(b.ops.len());
    let mut names = Vec::with_capacity(b.ops.len());
    for (i, item) in b.ops.into_iter().enumerate() {
        let key =
            Key::new(item.key).map_err(|e| HttpError::bad_request(format!("ops[{i}].key: {e}")))?;
        // The authorize layer let the batch in on any live token (or open
        // mode); each key needs its write right. No caller: refused.
        let Some(Extension(caller)) = &caller else {
            return Err(HttpError::unauthenticated(
                "unauthenticated",
                "this endpoint needs a token",
            ));
        };
        let need = Need::On(
            Right::Write,
            Some(item.keyspace.clone()),
            Some(key.as_str().to_string()),
        );
        if let Err(e) = caller.require(&need) {
            app.metrics.refuse("auth", "forbidden");
            return Err(e);
        }
        names.push((item.keyspace.clone(), key.clone()));
        mutations.push(MutationRequest {
            keyspace: item.keyspace,
            key,
            change: item.op.into_change()?,
        });
    }
    let raw = super::kv::raw(method, uri, bytes, fwd);
    let req = WriteRequest {
        deadline_ms: None,
        not_before_ms: None,
        fallback: false,
        mutations,
    };
    let (done, fallback_owner) = match write(&app, &h, &raw, req).await? {
        Written::Here(done) => (done, None),
        Written::Fallback(done, owner) => (done, Some(owner)),
        Written::Owner(resp) => return Ok(resp),
    };
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
        "region": app.replica.region.as_str(),
    });
    let mut resp = respond(StatusCode::OK, &h, &body, Some(&done.vv));
    if let Some(owner) = fallback_owner {
        super::owner::mark_fallback(&mut resp, &owner);
    }
    Ok(resp)
}
