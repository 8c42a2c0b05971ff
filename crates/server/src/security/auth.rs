//! Who is calling, and may they: bearer tokens on the client API.
//!
//! This module holds the rules: what a token is ([`hash`], [`generate`]),
//! who the caller is ([`Caller`]), which right a route needs ([`need`]) and
//! whether the caller has it ([`Caller::require`], `403` without it). The
//! client router's two layers that apply them to every request live with
//! the router, in `crate::api::auth`. A batch names its keys in its body:
//! its handler asks [`Caller::require`] for each.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::Method;
use meridian_core::access::{Right, TokenDef};
use serde_json::json;

use crate::error::HttpError;

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
    pub fn require(&self, need: &Need) -> Result<(), HttpError> {
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

fn forbidden(caller: &Caller, need: &Need) -> HttpError {
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
    HttpError::forbidden(
        "forbidden",
        format!(
            "token {} does not grant {what}",
            caller.id().unwrap_or("(this token)")
        ),
    )
    .with(json!({"needs": describe(need), "token": caller.id()}))
}

/// Equal bytes, compared in time that does not depend on where they differ.
pub fn constant_eq(a: &[u8], b: &[u8]) -> bool {
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
    // Decoded by the crate the handlers' query extractor decodes with
    // (serde_urlencoded reads through form_urlencoded), so the keyspace
    // checked here is the one the handler reads.
    let q = |name: &str| {
        query.and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
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
    fn query_values_are_decoded_as_the_handler_reads_them() {
        let on = |q: &str| match need("/v1/conflicts", &Method::GET, &params(&[]), Some(q)) {
            Need::On(Right::Read, ks, None) => ks,
            other => panic!("unexpected need {other:?}"),
        };
        assert_eq!(on("keyspace=a%2Fb+c").as_deref(), Some("a/b c"));
        assert_eq!(on("keyspace=100%").as_deref(), Some("100%"));
        assert_eq!(on("keyspace=%zz").as_deref(), Some("%zz"));
        assert_eq!(on("after=x&key%73pace=k").as_deref(), Some("k"));
        assert_eq!(on("after=x").as_deref(), None);
    }
}
