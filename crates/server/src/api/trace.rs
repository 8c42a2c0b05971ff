//! One span per client request, and the request counter.
//!
//! Every routed request runs inside a `request` span (target
//! `meridian::request`) carrying its method, route, keyspace, key length,
//! status and latency, so whatever the handler logs can be followed back
//! to the request. The span and a closing event per request are at `debug`
//! (`MERIDIAN_LOG=info,meridian::request=debug` shows every request); a
//! request slower than [`SLOW`] is logged at `info` and an internal error
//! (500) at `warn`, with the same fields, so the default filter shows them.
//! Each routed answer counts in
//! `meridian_api_requests_total{route, method, status}`; refusals before
//! routing (a missing or bad token: 401) count in
//! `meridian_security_refused_total` instead, and unknown paths (404
//! `no_route`, 405) in neither. A handler that panics answers a JSON 500
//! ([`catch_panic`]), counted and logged like any other.

use std::time::{Duration, Instant};

use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;
use tracing::field::Empty;

use super::AppState;

/// A request at least this slow is logged at `info`.
pub const SLOW: Duration = Duration::from_secs(1);

/// Target of request spans and events (for `MERIDIAN_LOG` filters).
pub const TARGET: &str = "meridian::request";

/// The route layer: span, counter, slow and failed requests.
pub async fn trace(
    State(app): State<AppState>,
    route: Option<MatchedPath>,
    params: Result<RawPathParams, RawPathParamsRejection>,
    req: Request,
    next: Next,
) -> Response {
    let t = Instant::now();
    let route = route.as_ref().map_or("", |r| static_route(r.as_str()));
    let method = method_label(req.method());
    let (keyspace, key_len) = params.as_ref().map_or(("", None), |p| target(route, p));
    let span = tracing::debug_span!(
        target: TARGET,
        "request",
        method,
        route,
        keyspace,
        key_len,
        status = Empty,
        latency_ms = Empty,
    );
    let resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status().as_u16();
    let took = t.elapsed();
    let latency_ms = took.as_secs_f64() * 1000.0;
    span.record("status", status);
    span.record("latency_ms", latency_ms);
    app.metrics.request(route, method, status);
    if status == 500 {
        tracing::warn!(target: TARGET, parent: &span, method, route, keyspace, key_len, status, latency_ms, "request failed");
    } else if took >= SLOW {
        tracing::info!(target: TARGET, parent: &span, method, route, keyspace, key_len, status, latency_ms, "slow request");
    } else {
        tracing::debug!(target: TARGET, parent: &span, "request");
    }
    resp
}

/// A handler (or the gate, or the right check) that panics answers a
/// JSON 500, which the trace layer above counts and logs, instead of the
/// connection dropping with no answer. The region keeps serving; the
/// panic is logged at `error` with what it said.
pub async fn catch_panic(req: Request, next: Next) -> Response {
    use futures_util::FutureExt as _;
    match std::panic::AssertUnwindSafe(next.run(req))
        .catch_unwind()
        .await
    {
        Ok(resp) => resp,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            tracing::error!(target: TARGET, panic = %what, "request handler panicked");
            // What it said stays in the log. A write may have been taken
            // before the panic: the outcome is unknown, as after any 500.
            crate::error::HttpError::internal(
                "the request failed inside the region (logged); if it was a write, it may or may not have been taken; the region keeps serving",
            )
            .into_response()
        }
    }
}

/// The route as one of the document's ([`super::openapi::routes`], a
/// `'static` label), or `other`. The router's wildcard (`{*key}`) is the
/// document's `{key}`.
fn static_route(route: &str) -> &'static str {
    super::openapi::routes()
        .iter()
        .find(|r| route.chars().filter(|c| *c != '*').eq(r.path.chars()))
        .map_or("other", |r| r.path.as_str())
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        _ => "other",
    }
}

/// The keyspace a request names and the length in bytes of its key (path
/// parameters arrive percent-decoded). `{name}` is a keyspace only under
/// `/v1/keyspaces/`.
fn target<'a>(route: &str, params: &'a RawPathParams) -> (&'a str, Option<usize>) {
    let mut keyspace = "";
    let mut key_len = None;
    for (name, value) in params {
        match name {
            "keyspace" => keyspace = value,
            "name" if route.starts_with("/v1/keyspaces/") => keyspace = value,
            "key" => key_len = Some(value.len()),
            _ => {}
        }
    }
    (keyspace, key_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_answers_a_json_500_and_the_router_keeps_serving() {
        use tower::ServiceExt as _;
        async fn boom() -> &'static str {
            panic!("boom at the handler")
        }
        async fn fine() -> &'static str {
            "fine"
        }
        let app = axum::Router::new()
            .route("/boom", axum::routing::get(boom))
            .route("/fine", axum::routing::get(fine))
            .route_layer(axum::middleware::from_fn(catch_panic));
        let req = |path: &str| {
            axum::http::Request::builder()
                .uri(path)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let r = app.clone().oneshot(req("/boom")).await.unwrap();
        assert_eq!(r.status(), 500);
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "internal");
        let message = v["message"].as_str().unwrap();
        assert!(message.contains("may or may not have been taken"), "{v}");
        assert!(
            !message.contains("boom"),
            "the panic's text stays in the log: {v}"
        );
        let r = app.oneshot(req("/fine")).await.unwrap();
        assert_eq!(r.status(), 200);
    }

    #[test]
    fn routes_are_labelled_from_the_route_table() {
        assert_eq!(
            static_route("/v1/kv/{keyspace}/{key}"),
            "/v1/kv/{keyspace}/{key}"
        );
        assert_eq!(
            static_route("/v1/kv/{keyspace}/{*key}"),
            "/v1/kv/{keyspace}/{key}"
        );
        assert_eq!(static_route("/v1/nope"), "other");
        assert_eq!(method_label(&Method::PATCH), "other");
    }
}
