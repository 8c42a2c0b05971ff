//! Every failure the server answers over HTTP, on the client API and the
//! peer API alike, and its status code: the one place where failures become
//! HTTP. It sits below every subsystem (`api`, `peer`, `standby`,
//! `security`), so each can refuse a request without importing another.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use meridian_core::{ReadError, WriteError};
use serde_json::json;

/// A refusal or failure answered over HTTP: a status, a stable code and a
/// message for people, as the JSON body `{"error": code, "message": ...}`.
#[derive(Debug)]
///
/// The fields are private: a status is chosen only by the constructors
/// below.
pub struct HttpError {
    status: StatusCode,
    code: &'static str,
    message: String,
    extra: Option<serde_json::Value>,
}

impl HttpError {
    /// An error with no extra fields. Private: a status is chosen by one of
    /// the constructors below, so every failure's status is decided here.
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
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

    /// 404 with its own code: the named thing (keyspace, backup, token,
    /// merge, route) is not there.
    pub fn missing(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 401: no credentials, or ones that prove nothing.
    pub fn unauthenticated(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// 403: the caller is known and may not do this.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    /// 405: the route exists, not with this method.
    pub fn method_not_allowed(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, code, message)
    }

    /// 409: the request contradicts what exists (a name taken, a change in
    /// progress, an older epoch).
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 410: it existed and is gone for good.
    pub fn gone(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, code, message)
    }

    /// 415: a body in a format this endpoint does not read.
    pub fn unsupported_media(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, code, message)
    }

    /// 421: the right place for this request is another region or member
    /// (the body says which).
    pub fn misdirected(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::MISDIRECTED_REQUEST, code, message)
    }

    /// 422: well formed, and not something that can be done.
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 502: the region or member this was passed on to failed to answer.
    pub fn bad_gateway(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, code, message)
    }

    /// 503: not now (starting, stopping, standing by, a deadline or clock
    /// check): nothing was done, ask again.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    /// 504: done here, and what it waited for did not happen in time (the
    /// body says what holds the write).
    pub fn timed_out(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, code, message)
    }

    /// A rejection whose status an extractor already chose (axum's body
    /// limits and parsers), in this error's body shape.
    pub fn rejection(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self::new(status, code, message)
    }

    /// Adds fields to the body.
    pub fn with(mut self, extra: serde_json::Value) -> Self {
        self.extra = Some(extra);
        self
    }

    /// HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Machine-readable code (`not_found`, `unsupported_op`, ...).
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// What was wrong, in a sentence.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The extra body fields, to add to.
    pub fn extra_mut(&mut self) -> Option<&mut serde_json::Value> {
        self.extra.as_mut()
    }
}

impl IntoResponse for HttpError {
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

impl From<WriteError> for HttpError {
    fn from(e: WriteError) -> Self {
        use WriteError as W;
        let message = e.to_string();
        match e {
            W::UnknownKeyspace(_) => {
                HttpError::new(StatusCode::NOT_FOUND, "unknown_keyspace", message)
            }
            W::Name(_) | W::Empty | W::DuplicateKey { .. } => HttpError::bad_request(message),
            W::TooMany { .. } => {
                HttpError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_many_ops", message)
            }
            W::ValueTooLarge { .. } => HttpError::too_large(message),
            W::OpTooLarge {
                keyspace,
                key,
                len,
                max,
            } => HttpError::new(StatusCode::PAYLOAD_TOO_LARGE, "op_too_large", message).with(
                json!({"keyspace": keyspace, "key": key, "encoded_bytes": len, "limit": max}),
            ),
            W::ObjectTooLarge {
                keyspace,
                key,
                len,
                max,
            } => HttpError::new(StatusCode::PAYLOAD_TOO_LARGE, "object_too_large", message).with(
                json!({"keyspace": keyspace, "key": key, "encoded_bytes": len, "limit": max}),
            ),
            W::Unsupported { .. } => {
                HttpError::new(StatusCode::UNPROCESSABLE_ENTITY, "unsupported_op", message)
            }
            W::Counter(_) => HttpError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "counter_overflow",
                message,
            ),
            W::Doc(_) => HttpError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_patch", message),
            W::Definition(_) => HttpError::new(StatusCode::BAD_REQUEST, "invalid_keyspace", message),
            W::PolicyChange { current, .. } => {
                HttpError::new(StatusCode::CONFLICT, "policy_change", message)
                    .with(json!({"existing": *current}))
            }
            W::TypeClash { .. } => HttpError::new(StatusCode::CONFLICT, "type_clash", message),
            W::SchemaChange { current, .. } => {
                HttpError::new(StatusCode::CONFLICT, "schema_change", message)
                    .with(json!({"existing": *current}))
            }
            W::MergePending {
                keyspace,
                key,
                versions,
                cap,
            } => HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "merge_pending", message)
                .with(json!({"keyspace": keyspace, "key": key, "versions": versions, "cap": cap})),
            W::StaleContext { .. } => HttpError::new(StatusCode::CONFLICT, "stale_context", message),
            W::NotMerger { merger, .. } => {
                HttpError::new(StatusCode::CONFLICT, "not_merger", message)
                    .with(json!({"merger": merger.as_str()}))
            }
            W::BadToken(_) => HttpError::new(StatusCode::BAD_REQUEST, "invalid_token_def", message),
            W::Limit { what, max } => {
                HttpError::new(StatusCode::UNPROCESSABLE_ENTITY, "limit_reached", message)
                    .with(json!({"what": what, "limit": max}))
            }
            W::UnknownMerge(name) => {
                HttpError::new(StatusCode::BAD_REQUEST, "unknown_merge", message)
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
            } => HttpError::new(StatusCode::MISDIRECTED_REQUEST, "not_owner", message).with(
                json!({"keyspace": keyspace, "key": key, "owner": owner.as_str(), "epoch": epoch.0, "rule": rule, "url": null}),
            ),
            W::HandoffPending {
                keyspace,
                key,
                epoch,
                waiting,
            } => HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "handoff_pending", message).with(
                json!({"keyspace": keyspace, "key": key, "epoch": epoch.0, "waiting_for": waiting, "retry_after_ms": 100}),
            ),
            W::NotSteward { steward } => {
                HttpError::new(StatusCode::MISDIRECTED_REQUEST, "not_steward", message)
                    .with(json!({"steward": steward.as_str()}))
            }
            W::Map(e) => {
                use meridian_core::ownership::MapError as M;
                match e {
                    M::Stale { current, .. } => {
                        HttpError::new(StatusCode::CONFLICT, "stale_epoch", message)
                            .with(json!({"epoch": current.0}))
                    }
                    M::NoMap(_) => HttpError::new(StatusCode::NOT_FOUND, "no_map", message),
                    M::NoSuchRule(_) => {
                        HttpError::new(StatusCode::NOT_FOUND, "no_such_rule", message)
                    }
                    _ => HttpError::new(StatusCode::BAD_REQUEST, "invalid_map", message),
                }
            }
            W::NotReady => HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", message),
            W::DeadlinePassed {
                deadline_ms,
                now_ms,
            } => HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "deadline_passed", message)
                .with(json!({"deadline_ms": deadline_ms, "now_ms": now_ms})),
            W::Clock(_) => HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "clock", message),
            W::Store(_) | W::Log(_) => HttpError::internal(message),
        }
    }
}

/// A merge script that was not registered: 400 with where and why (409
/// for a built-in's name).
pub fn merge_def(e: meridian_core::merge::MergeDefError) -> HttpError {
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
    HttpError::new(status, "invalid_merge", message).with(extra)
}

impl From<ReadError> for HttpError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::UnknownKeyspace(_) => {
                HttpError::new(StatusCode::NOT_FOUND, "unknown_keyspace", e.to_string())
            }
            ReadError::Store(_) => HttpError::internal(e.to_string()),
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
        let resp = HttpError::from(e).into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[axum::http::header::RETRY_AFTER], "1");
        let other = HttpError::not_found("x").into_response();
        assert!(
            other
                .headers()
                .get(axum::http::header::RETRY_AFTER)
                .is_none()
        );
    }
}
