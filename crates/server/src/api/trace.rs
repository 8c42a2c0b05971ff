//! One span per client request, and the request counter.
//!
//! Every routed request runs inside a `request` span (target
//! `meridian::request`) carrying its method, route, keyspace, key length,
//! status and latency, so whatever the handler logs can be followed back
//! to the request. The span and a closing event per request are at `debug`
//! (`MERIDIAN_LOG=info,meridian::request=debug` shows every request); a
//! request slower than [`SLOW`] is logged at `info` and an internal error
//! (500) at `warn` whatever the filter, with the same fields. Each answer
//! counts in `meridian_api_requests_total{route, method, status}`.

use std::time::{Duration, Instant};

use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
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
    let (keyspace, key_len) = params.as_ref().map_or(("", None), target);
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

/// The route as one of [`super::ROUTES`] (a `'static` label), or `other`.
/// The router's wildcard (`{*key}`) is the table's `{key}`.
fn static_route(route: &str) -> &'static str {
    super::ROUTES
        .iter()
        .find(|(r, _)| route.chars().filter(|c| *c != '*').eq(r.chars()))
        .map_or("other", |(r, _)| r)
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

/// The keyspace a request names (as sent, percent-encoded) and the length
/// in bytes of its key, decoded.
fn target(params: &RawPathParams) -> (&str, Option<usize>) {
    let mut keyspace = "";
    let mut key_len = None;
    for (name, value) in params {
        match name {
            "keyspace" | "name" => keyspace = value,
            "key" => key_len = Some(decoded_len(value)),
            _ => {}
        }
    }
    (keyspace, key_len)
}

/// Bytes of `raw` once its `%XX` escapes are decoded.
fn decoded_len(raw: &str) -> usize {
    raw.len().saturating_sub(2 * raw.matches('%').count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_labelled_from_the_route_table_and_keys_by_decoded_length() {
        assert_eq!(
            static_route("/v1/kv/{keyspace}/{key}"),
            "/v1/kv/{keyspace}/{key}"
        );
        assert_eq!(
            static_route("/v1/kv/{keyspace}/{*key}"),
            "/v1/kv/{keyspace}/{key}"
        );
        assert_eq!(static_route("/v1/nope"), "other");
        assert_eq!(decoded_len("user%2F42"), 7);
        assert_eq!(decoded_len("caf%C3%A9"), 5);
        assert_eq!(decoded_len(""), 0);
        assert_eq!(decoded_len("%"), 0, "a malformed escape does not underflow");
        assert_eq!(method_label(&Method::PATCH), "other");
    }
}
