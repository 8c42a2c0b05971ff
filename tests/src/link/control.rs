//! The HTTP control API (routes listed in the [module docs](super)).
//!
//! Bodies are read as raw bytes and decoded here, not by axum's `Json`
//! extractor, so that every bad body gets a JSON error naming the problem
//! instead of axum's plain-text rejection.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use tracing::instrument;

use super::table::LinkTable;
use super::{LinkError, LinkInfo, LinkSpecPatch};

type Table = State<Arc<LinkTable>>;

/// The control API over a link table.
pub(crate) fn router(table: Arc<LinkTable>) -> Router {
    Router::new()
        .route("/links", get(list_links))
        .route("/links/{from}/{to}", get(get_link).put(put_link))
        .route("/partition", post(partition))
        .route("/heal", post(heal))
        .fallback(unknown_route)
        .with_state(table)
}

/// A [`LinkError`] as an HTTP answer: `{"error": "..."}` with a 4xx for the
/// caller's mistakes and a 500 for the rest.
struct ApiError(LinkError);

impl From<LinkError> for ApiError {
    fn from(err: LinkError) -> Self {
        ApiError(err)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self.0 {
            LinkError::UnknownLink { .. }
            | LinkError::UnknownPair { .. }
            | LinkError::UnknownRegion { .. } => StatusCode::NOT_FOUND,
            LinkError::DuplicateLink { .. } => StatusCode::CONFLICT,
            LinkError::BadRegion { .. }
            | LinkError::BadSpec { .. }
            | LinkError::BadLinkArg { .. }
            | LinkError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            LinkError::Bind { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            LinkError::ShutDown => StatusCode::SERVICE_UNAVAILABLE,
        };
        (status, Json(json!({ "error": self.0.to_string() }))).into_response()
    }
}

async fn list_links(State(table): Table) -> Json<Value> {
    Json(json!({ "links": table.all() }))
}

#[instrument(skip(table))]
async fn get_link(
    State(table): Table,
    Path((from, to)): Path<(String, String)>,
) -> Result<Json<LinkInfo>, ApiError> {
    Ok(Json(table.info(&from, &to)?))
}

#[instrument(skip(table, body))]
async fn put_link(
    State(table): Table,
    Path((from, to)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<LinkInfo>, ApiError> {
    // Unknown link first: a 404 says more than a complaint about the body.
    table.get(&from, &to)?;
    let patch = LinkSpecPatch::from_json(&body)?;
    table.patch(&from, &to, &patch)?;
    Ok(Json(table.info(&from, &to)?))
}

/// What `/partition` and `/heal` act on.
enum Target {
    All,
    Pair(String, String),
    Region(String),
}

const TARGET_SHAPES: &str = r#"expected {"a": region, "b": region} or {"isolate": region}"#;

/// Reads `{}` (or an empty body), `{"a", "b"}` or `{"isolate"}`.
fn parse_target(body: &Bytes) -> Result<Target, LinkError> {
    let mut fields = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(fields)) => fields,
            Ok(_) => return Err(bad_request(TARGET_SHAPES.to_owned())),
            Err(err) => return Err(bad_request(format!("body is not valid JSON: {err}"))),
        }
    };
    let mut take = |key: &str| -> Result<Option<String>, LinkError> {
        match fields.remove(key) {
            None => Ok(None),
            Some(Value::String(region)) => Ok(Some(region)),
            Some(other) => Err(bad_request(format!(
                "`{key}` must be a region name string, got {other}"
            ))),
        }
    };
    let target = match (take("a")?, take("b")?, take("isolate")?) {
        (None, None, None) => Target::All,
        (Some(a), Some(b), None) => Target::Pair(a, b),
        (None, None, Some(region)) => Target::Region(region),
        _ => return Err(bad_request(TARGET_SHAPES.to_owned())),
    };
    if let Some(unknown) = fields.keys().next() {
        return Err(bad_request(format!(
            "unknown field `{unknown}`; {TARGET_SHAPES}"
        )));
    }
    Ok(target)
}

fn bad_request(reason: String) -> LinkError {
    LinkError::BadRequest { reason }
}

#[instrument(skip(table, body))]
async fn partition(State(table): Table, body: Bytes) -> Result<Json<Value>, ApiError> {
    let changed = match parse_target(&body)? {
        Target::Pair(a, b) => table.partition(&a, &b)?,
        Target::Region(region) => table.isolate(&region)?,
        // Partitioning everything is almost surely a forgotten body.
        Target::All => return Err(bad_request(TARGET_SHAPES.to_owned()).into()),
    };
    Ok(Json(json!({ "links_changed": changed })))
}

#[instrument(skip(table, body))]
async fn heal(State(table): Table, body: Bytes) -> Result<Json<Value>, ApiError> {
    let changed = match parse_target(&body)? {
        Target::All => table.heal_all(),
        Target::Pair(a, b) => table.heal(&a, &b)?,
        Target::Region(_) => {
            return Err(bad_request(
                r#"heal takes {} (everything) or {"a": region, "b": region}"#.to_owned(),
            )
            .into());
        }
    };
    Ok(Json(json!({ "links_changed": changed })))
}

async fn unknown_route() -> (StatusCode, Json<Value>) {
    (
        StatusCode::NOT_FOUND,
        Json(json!({
            "error": "no such endpoint; try GET /links, GET|PUT /links/{from}/{to}, POST /partition, POST /heal"
        })),
    )
}
