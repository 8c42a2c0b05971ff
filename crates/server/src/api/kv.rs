//! Key routes: `/v1/kv/{keyspace}` (list) and `/v1/kv/{keyspace}/{key}`
//! (get, put, delete, and ops by POST).
//!
//! Over ~400 lines because each handler carries its OpenAPI description
//! (about a fifth of the file) beside its code, where it is kept true.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use meridian_core::{Change, Key, MutationRequest, WriteError, WriteRequest};
use meridian_crdt::{Json, Object, Value};
use serde::Deserialize;
use serde_json::json;

use utoipa::{IntoParams, ToSchema};

use super::body::{self, Format};
use super::headers::{ContextHeader, KeyReadHeaders, ReadHeaders, WriteHeaders};
use super::openapi::Binary;
use super::openapi::answers::{KeyPath, KeyspacePath, ReadErrors, WriteErrors};
use super::openapi::schemas::{self as doc, Entry, Error, Listing};
use super::owner::{self, Raw, Written};
use super::{AppInner, AppState, MAX_KV_BODY, consistency, headers, render, respond, wait_for};
use crate::error::HttpError;
use crate::peer::forward::ForwardedBy;
use crate::region::writer::WriteDone;

/// An op sent by `POST /v1/kv/{keyspace}/{key}` (and inside batches).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum OpBody {
    /// `counter`: add `by` (default 1; negative subtracts).
    Incr {
        /// The amount.
        #[serde(default = "one", deserialize_with = "body::whole_i64")]
        by: i64,
    },
    /// `set`: add members.
    Add {
        /// The members.
        values: Vec<serde_json::Value>,
    },
    /// `set`: remove members.
    Remove {
        /// The members.
        values: Vec<serde_json::Value>,
    },
    /// `doc`: a JSON merge patch.
    Patch {
        /// The patch (an object).
        doc: serde_json::Map<String, serde_json::Value>,
    },
    /// Write a value (batches only; single keys use PUT).
    Put {
        /// The value.
        value: serde_json::Value,
        /// `mv`: context from a read.
        #[serde(default)]
        #[schema(min_length = 1)]
        context: Option<String>,
    },
    /// Delete (batches only; single keys use DELETE).
    Delete {
        /// `mv`: context from a read.
        #[serde(default)]
        #[schema(min_length = 1)]
        context: Option<String>,
    },
}

fn one() -> i64 {
    1
}

fn context(t: Option<&str>) -> Result<Option<meridian_crdt::VersionVector>, HttpError> {
    t.map(|t| {
        meridian_core::token::decode(t).map_err(|e| HttpError::bad_request(format!("context: {e}")))
    })
    .transpose()
}

impl OpBody {
    /// The engine change this op asks for.
    pub fn into_change(self) -> Result<Change, HttpError> {
        let jsons = |v: Vec<serde_json::Value>| v.iter().map(Json::from_value).collect();
        Ok(match self {
            OpBody::Incr { by } => Change::Incr(by),
            OpBody::Add { values } => Change::Add(jsons(values)),
            OpBody::Remove { values } => Change::Remove(jsons(values)),
            OpBody::Patch { doc } => Change::Patch(doc),
            OpBody::Put { value, context: c } => Change::Put {
                value: Value::Json(Json::from_value(&value)),
                context: context(c.as_deref())?,
            },
            OpBody::Delete { context: c } => Change::Delete {
                context: context(c.as_deref())?,
            },
        })
    }
}

/// The keyspace and key of a path, checked.
pub fn path_parts(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(String, Key), HttpError> {
    let Path((ks, key)) = path.map_err(|e| HttpError::bad_request(format!("bad path: {e}")))?;
    let key = Key::new(key).map_err(|e| HttpError::bad_request(e.to_string()))?;
    Ok((ks, key))
}

fn decode_value(h: &HeaderMap, bytes: &[u8]) -> Result<Value, HttpError> {
    match body::format(h)? {
        Format::Bytes => Ok(Value::Bytes(bytes.to_vec())),
        fmt => {
            if bytes.is_empty() {
                return Err(HttpError::bad_request(
                    "empty body: PUT takes the value as a JSON document (or application/octet-stream bytes)",
                ));
            }
            let v: serde_json::Value = body::parse(fmt, bytes)?;
            Ok(Value::Json(Json::from_value(&v)))
        }
    }
}

async fn wait_token(app: &AppInner, h: &HeaderMap) -> Result<(), HttpError> {
    let wait = headers::wait_ms(h)?;
    if let Some(tok) = headers::token(h)? {
        wait_for(app, &tok, wait).await?;
    }
    Ok(())
}

/// A write the engine refused.
enum Refused {
    /// Another region owns a key: carried on by [`owner::route`].
    NotOwner(WriteError),
    /// Anything else.
    Api(HttpError),
}

impl From<HttpError> for Refused {
    fn from(e: HttpError) -> Self {
        Refused::Api(e)
    }
}

/// Sends a write to the writer, waits for it to be durable here, then for
/// its write concern.
async fn take_here(
    app: &AppInner,
    h: &HeaderMap,
    mut req: WriteRequest,
) -> Result<WriteDone, Refused> {
    // Headers are checked before anything is written.
    let (concern, downgrade) = consistency::concern_for(app, h, &req)?;
    let timeout = headers::timeout_ms(h, consistency::DEFAULT_CONCERN_TIMEOUT_MS)?;
    req.deadline_ms = headers::unix_ms(h, headers::DEADLINE_MS)?;
    req.not_before_ms = headers::unix_ms(h, headers::NOT_BEFORE_MS)?;
    wait_token(app, h).await?;
    let done = match app.writer.write(req).await {
        Ok(Ok(done)) => done,
        Ok(Err(e @ WriteError::NotOwner { .. })) => return Err(Refused::NotOwner(e)),
        Ok(Err(e)) => return Err(Refused::Api(e.into())),
        Err(stopped) => {
            return Err(Refused::Api(HttpError::unavailable(
                "stopping",
                stopped.to_string(),
            )));
        }
    };
    consistency::wait_concern(app, &done, concern, downgrade, timeout).await?;
    Ok(done)
}

/// [`take_here`], for a write that is taken here or not at all.
pub async fn take(
    app: &AppInner,
    h: &HeaderMap,
    req: WriteRequest,
) -> Result<WriteDone, HttpError> {
    take_here(app, h, req).await.map_err(|r| match r {
        Refused::NotOwner(e) => owner::not_owner(app, e),
        Refused::Api(e) => e,
    })
}

/// Takes a write here, or carries it to the region that owns its keys
/// ([`owner::route`]).
pub async fn write(
    app: &AppInner,
    h: &HeaderMap,
    raw: &Raw,
    req: WriteRequest,
) -> Result<Written, HttpError> {
    // Kept only for keyspaces with a map: the owner may be unreachable
    // and the map's fallback take the write here after all.
    let retry = {
        let p = app.reader.published();
        owner::check_span(&p.registry, &req)?;
        owner::has_map(&p.registry, &req).then(|| req.clone())
    };
    match take_here(app, h, req).await {
        Ok(done) => Ok(Written::Here(done)),
        Err(Refused::NotOwner(e)) => owner::route(app, h, raw, retry, e).await,
        Err(Refused::Api(e)) => Err(e),
    }
}

/// The answer to a write, wherever it was taken.
pub fn answer(
    app: &AppInner,
    h: &HeaderMap,
    w: Written,
    extra: impl Fn(&WriteDone) -> Option<(&'static str, serde_json::Value)>,
) -> Response {
    let region = app.replica.region.as_str();
    match w {
        Written::Here(done) => written(h, region, &done, extra(&done)),
        Written::Fallback(done, owner) => {
            let mut resp = written(h, region, &done, extra(&done));
            owner::mark_fallback(&mut resp, &owner);
            resp
        }
        Written::Owner(resp) => resp,
    }
}

fn written(
    h: &HeaderMap,
    region: &str,
    done: &WriteDone,
    extra: Option<(&str, serde_json::Value)>,
) -> Response {
    if extra.is_none() && !super::wants_msgpack(h) {
        // The hot path: versions, tokens and region names are plain ASCII
        // (no escaping), so the body is formatted directly.
        let body = format!(
            "{{\"token\":\"{}\",\"version\":\"{}\",\"region\":\"{region}\"}}",
            done.token,
            render::version(&done.version)
        );
        let mut resp = (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&done.token) {
            resp.headers_mut().insert(headers::TOKEN, v);
        }
        return resp;
    }
    let mut body = json!({
        "version": render::version(&done.version),
        "token": &*done.token,
        "region": region,
    });
    if let (Some((k, v)), serde_json::Value::Object(m)) = (extra, &mut body) {
        m.insert(k.into(), v);
    }
    respond(StatusCode::OK, h, &body, Some(&done.vv))
}

fn observe(app: &AppInner, op: &'static str, t: Instant, write: bool) {
    app.metrics.observe(op, write, t.elapsed().as_secs_f64());
}

/// Writes one change to one key and records the request's latency as `op`.
async fn write_one(
    app: &AppInner,
    h: &HeaderMap,
    raw: &Raw,
    (keyspace, key): (String, Key),
    change: Change,
    op: &'static str,
    t: Instant,
) -> Result<Written, HttpError> {
    let req = WriteRequest {
        deadline_ms: None,
        not_before_ms: None,
        fallback: false,
        mutations: vec![MutationRequest {
            keyspace,
            key,
            change,
        }],
    };
    let done = write(app, h, raw, req).await?;
    observe(app, op, t, true);
    Ok(done)
}

/// The request as received, for forwarding.
pub fn raw(method: Method, uri: Uri, body: Bytes, fwd: Option<Extension<ForwardedBy>>) -> Raw {
    Raw {
        method,
        uri,
        body,
        forwarded: fwd.map(|Extension(f)| f),
    }
}

#[utoipa::path(
    put,
    path = "/v1/kv/{keyspace}/{*key}",
    tag = "keys",
    operation_id = "putKey",
    summary = "Write a value",
    description = "Body: the value as JSON (`application/json`, the default), MessagePack (`application/msgpack`) or raw bytes (`application/octet-stream`, lww and mv only). `set` keyspaces take an array (replaces the members), `doc` keyspaces an object (replaces the fields).",
    params(KeyPath, WriteHeaders, ContextHeader),
    request_body(content(
        (serde_json::Value = "application/json"),
        (serde_json::Value = "application/msgpack"),
        (Binary = "application/octet-stream"),
    )),
    responses(
        (status = 200, description = "Durable in this region (and in as many regions as the write concern asks).", content(
            (doc::Written = "application/json"), (doc::Written = "application/msgpack"))),
        WriteErrors,
    ),
)]
/// `PUT /v1/kv/{keyspace}/{key}`: write the body as the value.
pub async fn put(
    State(app): State<AppState>,
    method: Method,
    uri: Uri,
    fwd: Option<Extension<ForwardedBy>>,
    path: Result<Path<(String, String)>, PathRejection>,
    h: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let t = Instant::now();
    let target = path_parts(path)?;
    let bytes = body::bytes(body, MAX_KV_BODY)?;
    let value = decode_value(&h, &bytes)?;
    let change = Change::Put {
        value,
        context: headers::context(&h)?,
    };
    let raw = raw(method, uri, bytes, fwd);
    let w = write_one(&app, &h, &raw, target, change, "put", t).await?;
    Ok(answer(&app, &h, w, |_| None))
}

#[utoipa::path(
    delete,
    path = "/v1/kv/{keyspace}/{*key}",
    tag = "keys",
    operation_id = "deleteKey",
    summary = "Delete a key",
    description = "Writes a tombstone (replicated like any write). `mv` keys: with `meridian-context`, removes exactly the siblings the read saw.",
    params(KeyPath, WriteHeaders, ContextHeader),
    responses(
        (status = 200, description = "The delete is durable in this region.", content(
            (doc::Written = "application/json"), (doc::Written = "application/msgpack"))),
        WriteErrors,
    ),
)]
/// `DELETE /v1/kv/{keyspace}/{key}`.
pub async fn delete(
    State(app): State<AppState>,
    method: Method,
    uri: Uri,
    fwd: Option<Extension<ForwardedBy>>,
    path: Result<Path<(String, String)>, PathRejection>,
    h: HeaderMap,
) -> Result<Response, HttpError> {
    let t = Instant::now();
    let target = path_parts(path)?;
    let change = Change::Delete {
        context: headers::context(&h)?,
    };
    let raw = raw(method, uri, Bytes::new(), fwd);
    let w = write_one(&app, &h, &raw, target, change, "delete", t).await?;
    Ok(answer(&app, &h, w, |_| None))
}

#[utoipa::path(
    post,
    path = "/v1/kv/{keyspace}/{*key}",
    tag = "keys",
    operation_id = "opKey",
    summary = "Apply an op",
    description = "`counter`: `{\"op\": \"incr\", \"by\": N}`; `set`: `add` or `remove` with `values`; `doc`: `patch` with a JSON merge patch in `doc`.",
    params(KeyPath, WriteHeaders),
    request_body(content((OpBody = "application/json"), (OpBody = "application/msgpack"))),
    responses(
        (status = 200, description = "Durable in this region; counters answer their new `value`.", content(
            (doc::Written = "application/json"), (doc::Written = "application/msgpack"))),
        WriteErrors,
    ),
)]
/// `POST /v1/kv/{keyspace}/{key}`: an op (`incr`, `add`, `remove`, `patch`).
pub async fn op(
    State(app): State<AppState>,
    method: Method,
    uri: Uri,
    fwd: Option<Extension<ForwardedBy>>,
    path: Result<Path<(String, String)>, PathRejection>,
    h: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let t = Instant::now();
    let target = path_parts(path)?;
    let bytes = body::bytes(body, MAX_KV_BODY)?;
    let op: OpBody = body::parse(body::format(&h)?, &bytes).map_err(|e| {
        HttpError::bad_request(format!(
            "{}; an op is {{\"op\":\"incr\",\"by\":N}}, {{\"op\":\"add\",\"values\":[...]}}, {{\"op\":\"remove\",\"values\":[...]}} or {{\"op\":\"patch\",\"doc\":{{...}}}}",
            e.message()
        ))
    })?;
    let change = op.into_change()?;
    let raw = raw(method, uri, bytes, fwd);
    let w = write_one(&app, &h, &raw, target, change, "op", t).await?;
    Ok(answer(&app, &h, w, |done| {
        done.counters
            .first()
            .copied()
            .flatten()
            .map(|v| ("value", render::counter(v)))
    }))
}

/// Query of `GET /v1/kv/{keyspace}/{key}` (other parameters are ignored,
/// as they always were: caches and proxies add their own).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GetQuery {
    /// Custom keys, and docs with merge fields: also return the versions
    /// the value was merged from.
    #[serde(default)]
    pub versions: bool,
}

#[utoipa::path(
    get,
    path = "/v1/kv/{keyspace}/{*key}",
    tag = "keys",
    operation_id = "getKey",
    summary = "Read a key",
    params(KeyPath, GetQuery, ReadHeaders, KeyReadHeaders),
    responses(
        (status = 200, description = "The key's value (or `mv` siblings). With `Accept: application/octet-stream`, an lww bytes value comes back raw with `meridian-version`.", content(
            (Entry = "application/json"), (Entry = "application/msgpack"), (Binary = "application/octet-stream"))),
        (status = 421, description = "`meridian-read: owner` on a key another region owns, sent on by a region that could not forward it (`not_owner`).", body = Error),
        ReadErrors,
    ),
)]
/// `GET /v1/kv/{keyspace}/{key}?versions=`.
pub async fn get(
    State(app): State<AppState>,
    method: Method,
    uri: Uri,
    fwd: Option<Extension<ForwardedBy>>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<GetQuery>, QueryRejection>,
    h: HeaderMap,
) -> Result<Response, HttpError> {
    let t = Instant::now();
    let (keyspace, key) = path_parts(path)?;
    let Query(q) =
        query.map_err(|e| HttpError::bad_request(format!("bad query: {}", e.body_text())))?;
    let mode = headers::read_mode(&h)?;
    let at_owner = match mode {
        headers::ReadMode::Owner => owner::read_owner(&app, &keyspace, key.as_str())?,
        _ => None,
    };
    if let Some(o) = at_owner
        && fwd.is_none()
    {
        let raw = raw(method, uri, Bytes::new(), fwd);
        let resp = owner::read_at_owner(&app, &o, &h, &raw).await?;
        observe(&app, "get", t, false);
        return Ok(resp);
    }
    wait_token(&app, &h).await?;
    let read = match mode {
        headers::ReadMode::Local | headers::ReadMode::Owner => app.reader.get(&keyspace, &key)?,
        headers::ReadMode::Quorum => {
            let timeout = headers::timeout_ms(&h, consistency::DEFAULT_QUORUM_TIMEOUT_MS)?;
            let q = consistency::quorum_read(&app, &keyspace, &key, timeout).await?;
            let def = app.reader.get(&keyspace, &key)?.def;
            meridian_core::Read {
                def,
                object: q.object,
                vv: q.vv,
            }
        }
    };
    observe(&app, "get", t, false);
    let Some(obj) = read.live() else {
        let body = json!({
            "error": "not_found",
            "message": format!("key {:?} not found in keyspace {:?}", key.as_str(), keyspace),
        });
        return Ok(respond(StatusCode::NOT_FOUND, &h, &body, Some(&read.vv)));
    };
    let raw_wanted = {
        use super::accept::{JSON, MSGPACK, OCTETS, negotiate};
        negotiate(&h, &[JSON, MSGPACK[0], MSGPACK[1], MSGPACK[2], OCTETS]) == Some(OCTETS)
    };
    if let (true, Object::Lww(r)) = (raw_wanted, obj)
        && let (Some(Value::Bytes(b)), Some(v)) = (r.value(), r.version())
    {
        let mut resp = (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            )],
            b.clone(),
        )
            .into_response();
        let (k, tv) = headers::token_header(&read.vv);
        resp.headers_mut().insert(k, tv);
        if let Ok(hv) = HeaderValue::from_str(&render::version(v)) {
            resp.headers_mut().insert(headers::VERSION, hv);
        }
        return Ok(resp);
    }
    let mut body = serde_json::Map::new();
    body.insert("key".into(), json!(key.as_str()));
    let registry = app.reader.published().registry.clone();
    let fields = if render::runs_merges(&read.def, &registry) {
        let (def, obj, versions) = (read.def.clone(), obj.clone(), q.versions);
        tokio::task::spawn_blocking(move || render::object_in(&def, &registry, &obj, versions))
            .await
            .map_err(|e| HttpError::internal(e.to_string()))?
    } else {
        render::object_in(&read.def, &registry, obj, q.versions)
    };
    body.extend(fields);
    Ok(respond(
        StatusCode::OK,
        &h,
        &serde_json::Value::Object(body),
        Some(&read.vv),
    ))
}

/// Most time one listing page spends running merge functions.
const LIST_MERGE_BUDGET: std::time::Duration = std::time::Duration::from_millis(500);

/// Query of `GET /v1/kv/{keyspace}`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only keys starting with this.
    #[serde(default)]
    pub prefix: String,
    /// Page size (default 100, at most 1000).
    #[param(nullable = false, minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// Start after this key (the `next` of the previous page; empty: from
    /// the first key).
    #[param(nullable = false)]
    pub after: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/kv/{keyspace}",
    tag = "keys",
    operation_id = "listKeys",
    summary = "List keys",
    description = "Live keys in order, a page at a time: pass the answer's `next` as `after` for the next page.",
    params(KeyspacePath, ListQuery, ReadHeaders),
    responses(
        (status = 200, description = "A page of keys.", content(
            (Listing = "application/json"), (Listing = "application/msgpack"))),
        ReadErrors,
    ),
)]
/// `GET /v1/kv/{keyspace}?prefix=&limit=&after=`: live keys in order.
pub async fn list(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ListQuery>, QueryRejection>,
    h: HeaderMap,
) -> Result<Response, HttpError> {
    let t = Instant::now();
    let Path(keyspace) = path.map_err(|e| HttpError::bad_request(format!("bad path: {e}")))?;
    let Query(q) =
        query.map_err(|e| HttpError::bad_request(format!("bad query: {}", e.body_text())))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(HttpError::bad_request(format!(
            "limit {limit} is outside 1..=1000"
        )));
    }
    let after = q
        .after
        .filter(|a| !a.is_empty())
        .map(Key::new)
        .transpose()
        .map_err(|e| HttpError::bad_request(format!("after: {e}")))?;
    wait_token(&app, &h).await?;
    let reader = app.reader.clone();
    let registry = app.reader.published().registry.clone();
    // Listing and rendering run off the async workers: rendering a custom
    // keyspace runs merge functions, bounded by a time budget for the page.
    let (listing, items) = tokio::task::spawn_blocking(move || {
        let listing = reader.list(&keyspace, &q.prefix, after.as_ref(), limit)?;
        let def = registry.get(&keyspace).cloned();
        let budget = Instant::now() + LIST_MERGE_BUDGET;
        let items: Vec<serde_json::Value> = listing
            .items
            .iter()
            .map(|(k, obj)| {
                let mut m = serde_json::Map::new();
                m.insert("key".into(), json!(k.as_str()));
                match &def {
                    Some(d) => m.extend(render::listed(d, &registry, obj, budget)),
                    None => m.extend(render::object(obj)),
                }
                serde_json::Value::Object(m)
            })
            .collect();
        Ok::<_, meridian_core::ReadError>((listing, items))
    })
    .await
    .map_err(|e| HttpError::internal(e.to_string()))??;
    observe(&app, "list", t, false);
    let body = json!({
        "items": items,
        "next": listing.next.map(|k| k.as_str().to_string()),
    });
    Ok(respond(StatusCode::OK, &h, &body, Some(&listing.vv)))
}
