//! The web console at `/ui`: one page and its script, embedded in the
//! binary. They are public (like `/healthz`); every figure they show comes
//! from the API the page then calls with the caller's own token, so the
//! console can read no more than that token can. It writes nothing.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");

/// Only this origin's script and API; no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

fn asset(content_type: &'static str, text: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
        ],
        text,
    )
        .into_response()
}

#[utoipa::path(
    get,
    path = "/ui",
    tag = "console",
    operation_id = "console",
    summary = "The web console",
    security(()),
    responses(
        (status = 200, description = "The console's page (read-only views over this API; data needs the caller's token).", content((String = "text/html"))),
    ),
)]
/// `GET /ui`.
pub async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

#[utoipa::path(
    get,
    path = "/ui/app.js",
    tag = "console",
    operation_id = "consoleScript",
    summary = "The web console's script",
    security(()),
    responses(
        (status = 200, description = "The console's script.", content((String = "text/javascript"))),
    ),
)]
/// `GET /ui/app.js`.
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}
