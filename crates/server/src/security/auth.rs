//! Who is calling, and may they: bearer tokens on the client API.
//!
//! Two layers of the client router do it. [`authenticate`] runs first, on
//! every request: it finds the caller ([`Caller`]) from the
//! `Authorization: Bearer` header (`401` when there is none or it is not a
//! live token) and leaves it in the request's extensions. [`authorize`]
//! runs once the route is known: the route, method and path parameters say
//! which right is needed on which keyspace and key ([`need`]); without it,
//! `403`. A batch names its keys in its body: its handler asks
//! [`Caller::require`] for each.
//!
//! A request a peer region forwards (keys it owns here) carries the
//! forwarding region's word: it authorized the caller with the same
//! replicated tokens.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use meridian_core::access::{Right, TokenDef};
use serde_json::json;

use super::config::Auth;
use crate::api::AppState;
use crate::api::error::ApiError;
use crate::peer::forward::ForwardedBy;

/// Paths anyone may call: health checks, the API description and the
/// console's page and script (the data it shows needs the caller's token).
pub const PUBLIC: &[&str] = &[
    "/healthz",
    "/healthz/leader",
    "/v1/openapi.json",
    "/ui",
    "/ui/app.js",
];

/// Prefix of every token this build makes.
pub const TOKEN_PREFIX: &str = "mrd_";

/// Lower-case hex SHA-256 of a token.
pub fn hash(token: &str) -> String {
    meridian_core::backup::manifest::sha256_hex(token.as_bytes())
}

/// A new token: `mrd_ID_SECRET`, its id and its hash. The secret is 256
/// bits from the operating system's generator (two v4 UUIDs carry 244
/// random bits; a third makes the id).
pub fn generate() -> (String, String, String) {
    let id = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let token = format!("{TOKEN_PREFIX}{id}_{secret}");
    let h = hash(&token);
    (token, id, h)
}

/// Who is calling.
#[derive(Clone, Debug)]
pub enum Caller {
    /// The region runs open (loopback only): anyone may do anything.
    Open,
    /// The configured bootstrap token: admin on everything.
    Bootstrap,
    /// A replicated token.
    Token(Arc<TokenDef>),
    /// A peer region forwarding a request it authorized.
    Peer,
}

/// What a request needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Need {
    /// Nothing but a live token (the handler checks more).
    Token,
    /// `right` on anything (status, lists of definitions).
    Any(Right),
    /// `right` on `key` of `keyspace` (`None` keyspace: the cluster;
    /// `None` key: the whole keyspace).
    On(Right, Option<String>, Option<String>),
    /// `right` on the keys of `keyspace` starting with a prefix (a listing).
    Prefix(Right, String, String),
}

impl Caller {
    /// Whether this caller may do what `need` says.
    pub fn allows(&self, need: &Need) -> bool {
        match self {
            Caller::Open | Caller::Bootstrap | Caller::Peer => true,
            Caller::Token(t) => match need {
                Need::Token => true,
                Need::Any(r) => t.allows_any(*r),
                Need::On(r, ks, key) => t.allows(*r, ks.as_deref(), key.as_deref()),
                Need::Prefix(r, ks, p) => t.allows_prefix(*r, ks, p),
            },
        }
    }

    /// `Ok` when allowed, else the `403` saying what was missing.
    pub fn require(&self, need: &Need) -> Result<(), ApiError> {
        if self.allows(need) {
            Ok(())
        } else {
            Err(forbidden(self, need))
        }
    }

    /// The token id, for logs and answers.
    pub fn id(&self) -> Option<&str> {
        match self {
            Caller::Token(t) => Some(&t.id),
            _ => None,
        }
    }
}

fn describe(need: &Need) -> serde_json::Value {
    match need {
        Need::Token => json!({"right": "any"}),
        Need::Any(r) => json!({"right": r.as_str(), "keyspace": "any"}),
        Need::On(r, ks, key) => json!({
            "right": r.as_str(),
            "keyspace": ks.as_deref().unwrap_or("*"),
            "key": key,
        }),
        Need::Prefix(r, ks, p) => json!({"right": r.as_str(), "keyspace": ks, "prefix": p}),
    }
}

fn forbidden(caller: &Caller, need: &Need) -> ApiError {
    let what = match need {
        Need::Token => "this".to_string(),
        Need::Any(r) => format!("{} on some keyspace", r.as_str()),
        Need::On(r, Some(ks), Some(k)) => format!("{} on key {k:?} of keyspace {ks:?}", r.as_str()),
        Need::On(r, Some(ks), None) => format!("{} on all of keyspace {ks:?}", r.as_str()),
        Need::On(r, None, _) => format!("{} on every keyspace (\"*\")", r.as_str()),
        Need::Prefix(r, ks, p) => {
            format!("{} on keys of {ks:?} starting with {p:?}", r.as_str())
        }
    };
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!(
            "token {} does not grant {what}",
            caller.id().unwrap_or("(this token)")
        ),
    )
    .with(json!({"needs": describe(need), "token": caller.id()}))
}

fn unauthenticated(code: &'static str, message: &str) -> Response {
    let mut r = ApiError::new(StatusCode::UNAUTHORIZED, code, message).into_response();
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

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a route needs: from its template, method, decoded path parameters
/// and query.
pub fn need(
    route: &str,
    method: &Method,
    params: &BTreeMap<String, String>,
    query: Option<&str>,
) -> Need {
    let reading = matches!(*method, Method::GET | Method::HEAD);
    let p = |k: &str| params.get(k).cloned();
    let q = |name: &str| {
        query.and_then(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| decode(v))
        })
    };
    let mode = if reading { Right::Read } else { Right::Write };
    match route {
        "/v1/kv/{keyspace}" => Need::Prefix(
            Right::Read,
            p("keyspace").unwrap_or_default(),
            q("prefix").unwrap_or_default(),
        ),
        "/v1/kv/{keyspace}/{*key}" => Need::On(mode, p("keyspace"), p("key")),
        "/v1/batch" => Need::Token,
        "/v1/keyspaces" | "/v1/merges" | "/v1/merges/{name}" | "/v1/status" | "/metrics" => {
            if reading {
                Need::Any(Right::Read)
            } else {
                Need::On(Right::Admin, None, None)
            }
        }
        "/v1/keyspaces/{name}" | "/v1/keyspaces/{name}/ownership" if reading => {
            Need::On(Right::Read, p("name"), None)
        }
        "/v1/keyspaces/{name}"
        | "/v1/keyspaces/{name}/ownership"
        | "/v1/keyspaces/{name}/ownership/transfer" => Need::On(Right::Admin, p("name"), None),
        "/v1/conflicts" => Need::On(Right::Read, q("keyspace"), None),
        _ => Need::On(Right::Admin, None, None),
    }
}

/// `%XX` and `+` decoded, as the query extractor does.
fn decode(v: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn params(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn routes_need_the_right_right() {
        let kv = params(&[("keyspace", "orders"), ("key", "eu/1")]);
        assert_eq!(
            need("/v1/kv/{keyspace}/{*key}", &Method::GET, &kv, None),
            Need::On(Right::Read, Some("orders".into()), Some("eu/1".into()))
        );
        assert_eq!(
            need("/v1/kv/{keyspace}/{*key}", &Method::DELETE, &kv, None),
            Need::On(Right::Write, Some("orders".into()), Some("eu/1".into()))
        );
        assert_eq!(
            need(
                "/v1/kv/{keyspace}",
                &Method::GET,
                &kv,
                Some("limit=3&prefix=eu%2F")
            ),
            Need::Prefix(Right::Read, "orders".into(), "eu/".into())
        );
        assert_eq!(
            need("/v1/admin/tokens", &Method::GET, &kv, None),
            Need::On(Right::Admin, None, None)
        );
        assert_eq!(
            need(
                "/v1/keyspaces/{name}",
                &Method::PUT,
                &params(&[("name", "orders")]),
                None
            ),
            Need::On(Right::Admin, Some("orders".into()), None)
        );
        assert_eq!(
            need("/v1/conflicts", &Method::GET, &kv, Some("keyspace=orders")),
            Need::On(Right::Read, Some("orders".into()), None)
        );
    }

    #[test]
    fn tokens_are_random_and_hash_to_what_is_stored() {
        let (a, id, h) = generate();
        let (b, _, _) = generate();
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("{TOKEN_PREFIX}{id}_")));
        assert_eq!(h, hash(&a));
        assert_eq!(h.len(), 64);
        assert!(meridian_core::access::valid_id(&id));
    }

    #[test]
    fn query_values_decode() {
        assert_eq!(decode("a%2Fb+c"), "a/b c");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
    }
}
