//! Every error the HTTP API can answer, and its status code: the one place
//! where failures become HTTP.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use meridian_core::{ReadError, WriteError};
use serde_json::json;

/// An API failure: a status, a stable code and a message for people.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine-readable code (`not_found`, `unsupported_op`, ...).
    pub code: &'static str,
    /// What was wrong, in a sentence.
    pub message: String,
    /// Extra fields merged into the body.
    pub extra: Option<serde_json::Value>,
}

impl ApiError {
    /// An error with no extra fields.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            extra: None,
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 404: nothing there.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 413: a body over its limit.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    /// 500: our fault.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// Adds fields to the body.
    pub fn with(mut self, extra: serde_json::Value) -> Self {
        self.extra = Some(extra);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.code, "message": self.message});
        if let (Some(serde_json::Value::Object(extra)), serde_json::Value::Object(b)) =
            (self.extra, &mut body)
        {
            b.extend(extra);
        }
        let mut resp = (self.status, axum::Json(body)).into_response();
        // Worth retrying here shortly: say when.
        if self.code == "handoff_pending" {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        resp
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        use WriteError as W;
        let message = e.to_string();
        match e {
            W::UnknownKeyspace(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_keyspace", message)
            }
            W::Name(_) | W::Empty | W::DuplicateKey { .. } => ApiError::bad_request(message),
            W::TooMany { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_many_ops", message)
            }
            W::ValueTooLarge { .. } => ApiError::too_large(message),
            W::OpTooLarge {
                keyspace,
                key,
                len,
                max,
            } => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "op_too_large", message).with(
                json!({"keyspace": keyspace, "key": key, "encoded_bytes": len, "limit": max}),
            ),
            W::ObjectTooLarge {
                keyspace,
                key,
                len,
                max,
            } => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "object_too_large", message).with(
                json!({"keyspace": keyspace, "key": key, "encoded_bytes": len, "limit": max}),
            ),
            W::Unsupported { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unsupported_op", message)
            }
            W::Counter(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "counter_overflow",
                message,
            ),
            W::Doc(_) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_patch", message),
            W::Definition(_) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_keyspace", message),
            W::PolicyChange { current, .. } => {
                ApiError::new(StatusCode::CONFLICT, "policy_change", message)
                    .with(json!({"existing": *current}))
            }
            W::TypeClash { .. } => ApiError::new(StatusCode::CONFLICT, "type_clash", message),
            W::SchemaChange { current, .. } => {
                ApiError::new(StatusCode::CONFLICT, "schema_change", message)
                    .with(json!({"existing": *current}))
            }
            W::MergePending {
                keyspace,
                key,
                versions,
                cap,
            } => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "merge_pending", message)
                .with(json!({"keyspace": keyspace, "key": key, "versions": versions, "cap": cap})),
            W::StaleContext { .. } => ApiError::new(StatusCode::CONFLICT, "stale_context", message),
            W::NotMerger { merger, .. } => {
                ApiError::new(StatusCode::CONFLICT, "not_merger", message)
                    .with(json!({"merger": merger.as_str()}))
            }
            W::BadToken(_) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_token_def", message),
            W::Limit { what, max } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "limit_reached", message)
                    .with(json!({"what": what, "limit": max}))
            }
            W::UnknownMerge(name) => {
                ApiError::new(StatusCode::BAD_REQUEST, "unknown_merge", message)
                    .with(json!({"merge": name}))
            }
            W::MergeDef(e) => merge_def(e),
            W::NotOwner {
                keyspace,
                key,
                owner,
                epoch,
                rule,
                ..
            } => ApiError::new(StatusCode::MISDIRECTED_REQUEST, "not_owner", message).with(
                json!({"keyspace": keyspace, "key": key, "owner": owner.as_str(), "epoch": epoch.0, "rule": rule, "url": null}),
            ),
            W::HandoffPending {
                keyspace,
                key,
                epoch,
                waiting,
            } => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "handoff_pending", message).with(
                json!({"keyspace": keyspace, "key": key, "epoch": epoch.0, "waiting_for": waiting, "retry_after_ms": 100}),
            ),
            W::NotSteward { steward } => {
                ApiError::new(StatusCode::MISDIRECTED_REQUEST, "not_steward", message)
                    .with(json!({"steward": steward.as_str()}))
            }
            W::Map(e) => {
                use meridian_core::ownership::MapError as M;
                match e {
                    M::Stale { current, .. } => {
                        ApiError::new(StatusCode::CONFLICT, "stale_epoch", message)
                            .with(json!({"epoch": current.0}))
                    }
                    M::NoMap(_) => ApiError::new(StatusCode::NOT_FOUND, "no_map", message),
                    M::NoSuchRule(_) => {
                        ApiError::new(StatusCode::NOT_FOUND, "no_such_rule", message)
                    }
                    _ => ApiError::new(StatusCode::BAD_REQUEST, "invalid_map", message),
                }
            }
            W::NotReady => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", message),
            W::DeadlinePassed {
                deadline_ms,
                now_ms,
            } => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "deadline_passed", message)
                .with(json!({"deadline_ms": deadline_ms, "now_ms": now_ms})),
            W::Clock(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "clock", message),
            W::Store(_) | W::Log(_) => ApiError::internal(message),
        }
    }
}

/// A merge script that was not registered: 400 with where and why (409
/// for a built-in's name).
pub fn merge_def(e: meridian_core::merge::MergeDefError) -> ApiError {
    use meridian_core::merge::MergeDefError as M;
    let message = format!("invalid merge script: {e}");
    let at = |err: &meridian_core::merge::MergeError| json!({"line": err.line, "column": err.column, "reason": err.reason});
    let extra = match &e {
        M::Script(err) => at(err),
        M::SampleFailed { index, error } => {
            let mut v = at(error);
            v["sample"] = json!(index);
            v
        }
        M::Nondeterministic { index, .. } => json!({"sample": index}),
        _ => json!({}),
    };
    // The name is taken by a built-in: a conflict with what exists, not a
    // malformed script.
    let status = match e {
        M::Builtin(_) => StatusCode::CONFLICT,
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, "invalid_merge", message).with(extra)
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::UnknownKeyspace(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_keyspace", e.to_string())
            }
            ReadError::Store(_) => ApiError::internal(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_handoff_says_when_to_retry() {
        let e = WriteError::HandoffPending {
            keyspace: "profiles".into(),
            key: "eu/1".into(),
            epoch: meridian_core::ownership::Epoch(2),
            waiting: vec![meridian_crdt::RegionId::new("eu-west").unwrap()],
        };
        let resp = ApiError::from(e).into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[axum::http::header::RETRY_AFTER], "1");
        let other = ApiError::not_found("x").into_response();
        assert!(
            other
                .headers()
                .get(axum::http::header::RETRY_AFTER)
                .is_none()
        );
    }
}
