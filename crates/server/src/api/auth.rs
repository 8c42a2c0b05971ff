//! The client router's two authentication layers, applying the rules of
//! [`crate::security::auth`] to every request.
//!
//! [`authenticate`] runs first, on every request: it finds the caller
//! ([`Caller`]) from the `Authorization: Bearer` header (`401` when there is
//! none or it is not a live token) and leaves it in the request's
//! extensions. [`authorize`] runs once the route is known: the route,
//! method and path parameters say which right is needed on which keyspace
//! and key ([`need`]); without it, `403`.
//!
//! A request a peer region forwards (keys it owns here) carries the
//! forwarding region's word: it authorized the caller with the same
//! replicated tokens.

use std::collections::BTreeMap;

use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::error::HttpError;
use crate::peer::forward::ForwardedBy;
use crate::security::auth::{Caller, PUBLIC, constant_eq, hash, need};
use crate::security::config::Auth;

fn unauthenticated(code: &'static str, message: &str) -> Response {
    let mut r = HttpError::unauthenticated(code, message).into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"meridian\""),
    );
    r
}

/// The first layer: finds the caller, or answers `401`.
pub async fn authenticate(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    let caller = if req.extensions().get::<ForwardedBy>().is_some() {
        Caller::Peer
    } else if let Auth::Tokens { bootstrap } = &app.auth {
        // Public for reading only: any other method there needs a token
        // like everything else (a standby would forward it as a write).
        if PUBLIC.contains(&req.uri().path()) && matches!(*req.method(), Method::GET | Method::HEAD)
        {
            return next.run(req).await;
        }
        let Some(value) = req.headers().get(header::AUTHORIZATION) else {
            app.metrics.refuse("auth", "missing");
            return unauthenticated(
                "unauthenticated",
                "this endpoint needs a token: send Authorization: Bearer TOKEN",
            );
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= 256);
        let Some(token) = token else {
            app.metrics.refuse("auth", "invalid");
            return unauthenticated(
                "invalid_token",
                "the Authorization header must be Bearer followed by a token",
            );
        };
        let h = hash(token);
        if bootstrap
            .as_deref()
            .is_some_and(|b| constant_eq(b.as_bytes(), h.as_bytes()))
        {
            Caller::Bootstrap
        } else {
            let p = app.reader.published();
            match p.registry.tokens().live(&h, app.clock.now_ms()) {
                Some(def) => Caller::Token(def.clone()),
                None => {
                    app.metrics.refuse("auth", "invalid");
                    return unauthenticated(
                        "invalid_token",
                        "the token is not valid here: unknown, revoked or expired (a token made in another region works here once it has replicated)",
                    );
                }
            }
        }
    } else {
        Caller::Open
    };
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// The second layer (after routing): `403` without the right.
pub async fn authorize(
    State(app): State<AppState>,
    route: Option<MatchedPath>,
    params: Option<Path<BTreeMap<String, String>>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(route) = route else {
        return next.run(req).await;
    };
    let Some(caller) = req.extensions().get::<Caller>().cloned() else {
        // Public paths carry no caller and need none; any other route
        // without one was not authenticated: refuse, never pass it on.
        if PUBLIC.contains(&route.as_str()) && matches!(*req.method(), Method::GET | Method::HEAD) {
            return next.run(req).await;
        }
        app.metrics.refuse("auth", "missing");
        return unauthenticated("unauthenticated", "this endpoint needs a token");
    };
    let params = params.map(|Path(p)| p).unwrap_or_default();
    let need = need(route.as_str(), req.method(), &params, req.uri().query());
    if let Err(e) = caller.require(&need) {
        app.metrics.refuse("auth", "forbidden");
        return e.into_response();
    }
    next.run(req).await
}
