//! Access tokens on a real region: every route refuses a caller with no
//! token (401) or without the right (403) and serves one with it; tokens
//! are revoked for good and expire.
//!
//! Past ~400 lines because STYLE keeps one test binary per topic: these cases
//! share the fixtures at the top of this file.

mod common;

use std::collections::BTreeSet;

use bytes::Bytes;
use common::{Api, Resp};
use http::Method;
use serde_json::{Value, json};

const BOOTSTRAP: &str = "bootstrap-admin-token-0123456789abcdef";

async fn secured(tag: &str) -> Api {
    Api::start_with(tag, |s| s.with_tokens(BOOTSTRAP)).await
}

async fn call(api: &Api, method: Method, path: &str, token: Option<&str>, body: Value) -> Resp {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(b) = &bearer {
        headers.push(("authorization", b.as_str()));
    }
    let bytes = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(serde_json::to_vec(&body).unwrap())
    };
    api.req(method, path, &headers, bytes).await
}

async fn token(api: &Api, grants: Value) -> (String, String) {
    let r = call(
        api,
        Method::POST,
        "/v1/admin/tokens",
        Some(BOOTSTRAP),
        json!({"name": "test", "grants": grants}),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert!(v["token"].as_str().unwrap().starts_with("mrd_"));
    (
        v["token"].as_str().unwrap().to_string(),
        v["id"].as_str().unwrap().to_string(),
    )
}

/// One request of every route: who must be refused (403) and who served.
struct Case {
    method: Method,
    path: String,
    body: Value,
    /// Refused with 403.
    denied: &'static [&'static str],
    /// Not refused (the answer is the route's own: 2xx, or a 4xx/5xx about
    /// the request, never 401/403).
    allowed: &'static [&'static str],
}

#[tokio::test]
async fn every_route_wants_a_token_and_the_right_one() {
    let api = secured("access-routes").await;
    // Setup as the bootstrap admin: a keyspace, a value to read.
    let r = call(
        &api,
        Method::PUT,
        "/v1/keyspaces/orders",
        Some(BOOTSTRAP),
        json!({"policy": "lww"}),
    )
    .await;
    assert!(r.status == 201 || r.status == 200, "{}", r.status);
    let r = call(
        &api,
        Method::PUT,
        "/v1/kv/orders/eu/1",
        Some(BOOTSTRAP),
        json!("first"),
    )
    .await;
    assert_eq!(r.status, 200);

    let (reader, _) = token(&api, json!([{"keyspace": "orders", "rights": ["read"]}])).await;
    let (writer, writer_id) = token(
        &api,
        json!([{"keyspace": "orders", "prefix": "eu/", "rights": ["write"]}]),
    )
    .await;
    let (admin, _) = token(&api, json!([{"keyspace": "*", "rights": ["admin"]}])).await;
    let tok = |name: &str| match name {
        "reader" => reader.clone(),
        "writer" => writer.clone(),
        "admin" => admin.clone(),
        _ => unreachable!(),
    };
    let c = |method: Method, path: &str, body: Value, denied, allowed| Case {
        method,
        path: path.to_string(),
        body,
        denied,
        allowed,
    };
    let cases = vec![
        c(
            Method::GET,
            "/v1/kv/orders?prefix=eu/",
            Value::Null,
            &["writer"],
            &["reader", "admin"],
        ),
        c(
            Method::GET,
            "/v1/kv/orders/eu/1",
            Value::Null,
            &["writer"],
            &["reader", "admin"],
        ),
        c(
            Method::PUT,
            "/v1/kv/orders/eu/1",
            json!("v"),
            &["reader"],
            &["writer", "admin"],
        ),
        c(
            Method::PUT,
            "/v1/kv/orders/us/1",
            json!("v"),
            &["reader", "writer"],
            &["admin"],
        ),
        c(
            Method::POST,
            "/v1/kv/orders/eu/2",
            json!({"op": "put", "value": 1}),
            &["reader"],
            &["writer", "admin"],
        ),
        c(
            Method::DELETE,
            "/v1/kv/orders/eu/2",
            Value::Null,
            &["reader"],
            &["writer", "admin"],
        ),
        c(
            Method::POST,
            "/v1/batch",
            json!({"ops": [{"keyspace": "orders", "key": "eu/3", "op": "put", "value": 3}]}),
            &["reader"],
            &["writer", "admin"],
        ),
        c(
            Method::POST,
            "/v1/batch",
            json!({"ops": [{"keyspace": "orders", "key": "eu/4", "op": "put", "value": 4}, {"keyspace": "orders", "key": "us/4", "op": "put", "value": 4}]}),
            &["reader", "writer"],
            &["admin"],
        ),
        c(
            Method::GET,
            "/v1/keyspaces",
            Value::Null,
            &["writer"],
            &["reader", "admin"],
        ),
        c(
            Method::GET,
            "/v1/keyspaces/orders",
            Value::Null,
            &["writer"],
            &["reader", "admin"],
        ),
        c(
            Method::PUT,
            "/v1/keyspaces/orders",
            json!({"policy": "lww"}),
            &["reader", "writer"],
            &["admin"],
        ),
        c(
            Method::GET,
            "/v1/keyspaces/orders/ownership",
            Value::Null,
            &["writer"],
            &["reader", "admin"],
        ),
        c(
            Method::PUT,
            "/v1/keyspaces/orders/ownership",
            json!({}),
            &["reader", "writer"],
            &["admin"],
        ),
        c(
            Method::POST,
            "/v1/keyspaces/orders/ownership/transfer",
            json!({}),
            &["reader", "writer"],
            &["admin"],
        ),
        c(
            Method::GET,
            "/v1/merges",
            Value::Null,
            &["writer"],
            &["reader", "admin"],
        ),
        c(
            Method::GET,
            "/v1/merges/lww",
            Value::Null,
            &["writer"],
            &["reader", "admin"],
        ),
        c(
            Method::PUT,
            "/v1/merges/m1",
            json!({"script": "fn merge(v) { v[0] }"}),
            &["reader", "writer"],
            &["admin"],
        ),
        c(
            Method::GET,
            "/v1/conflicts?keyspace=orders",
            Value::Null,
            &["writer"],
            &["reader", "admin"],
        ),
        c(
            Method::GET,
            "/v1/conflicts",
            Value::Null,
            &["reader", "writer"],
            &["admin"],
        ),
        c(
            Method::GET,
            "/v1/status",
            Value::Null,
            &["writer"],
            &["reader", "admin"],
        ),
        c(
            Method::GET,
            "/metrics",
            Value::Null,
            &["writer"],
            &["reader", "admin"],
        ),
        c(
            Method::GET,
            "/v1/admin/backups",
            Value::Null,
            &["reader", "writer"],
            &["admin"],
        ),
        c(
            Method::POST,
            "/v1/admin/backups",
            Value::Null,
            &["reader", "writer"],
            &["admin"],
        ),
        c(
            Method::POST,
            "/v1/admin/backups/prune",
            Value::Null,
            &["reader", "writer"],
            &["admin"],
        ),
        c(
            Method::GET,
            "/v1/admin/backups/b1",
            Value::Null,
            &["reader", "writer"],
            &["admin"],
        ),
        c(
            Method::DELETE,
            "/v1/admin/backups/b1",
            Value::Null,
            &["reader", "writer"],
            &["admin"],
        ),
        c(
            Method::POST,
            "/v1/admin/backups/b1/verify",
            Value::Null,
            &["reader", "writer"],
            &["admin"],
        ),
        c(
            Method::POST,
            "/v1/admin/rewind",
            json!({}),
            &["reader", "writer"],
            &["admin"],
        ),
        c(
            Method::POST,
            "/v1/admin/promote",
            Value::Null,
            &["reader", "writer"],
            &["admin"],
        ),
        c(
            Method::GET,
            "/v1/admin/tokens",
            Value::Null,
            &["reader", "writer"],
            &["admin"],
        ),
        c(
            Method::POST,
            "/v1/admin/tokens",
            json!({"grants": [{"keyspace": "orders", "rights": ["read"]}]}),
            &["reader", "writer"],
            &["admin"],
        ),
        c(
            Method::GET,
            &format!("/v1/admin/tokens/{writer_id}"),
            Value::Null,
            &["reader", "writer"],
            &["admin"],
        ),
        c(
            Method::DELETE,
            "/v1/admin/tokens/nosuchtoken",
            Value::Null,
            &["reader", "writer"],
            &["admin"],
        ),
    ];
    // Every route of the API is exercised (public ones below).
    let public = meridian_server::security::auth::PUBLIC;
    assert!(public.contains(&"/ui") && public.contains(&"/healthz"));
    let covered: BTreeSet<(String, String)> = cases
        .iter()
        .map(|c| {
            let route = meridian_server::api::openapi::routes()
                .iter()
                .map(|r| r.path.as_str())
                .find(|p| matches_route(p, c.path.split('?').next().unwrap()))
                .unwrap_or_else(|| panic!("{} matches no route", c.path));
            (route.to_string(), c.method.as_str().to_lowercase())
        })
        .collect();
    for r in meridian_server::api::openapi::routes() {
        let route = &r.path.as_str();
        for m in &r.methods {
            if public.contains(route) {
                continue;
            }
            assert!(
                covered.contains(&(route.to_string(), m.to_string())),
                "{m} {route} has no case"
            );
        }
    }

    // A batch the token covers only in part is refused whole: neither key
    // is written.
    let half = json!({"ops": [
        {"keyspace": "orders", "key": "eu/9", "op": "put", "value": 9},
        {"keyspace": "orders", "key": "us/9", "op": "put", "value": 9},
    ]});
    let r = call(&api, Method::POST, "/v1/batch", Some(&writer), half).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["needs"]["key"], json!("us/9"));
    for key in ["eu/9", "us/9"] {
        let r = call(
            &api,
            Method::GET,
            &format!("/v1/kv/orders/{key}"),
            Some(&admin),
            Value::Null,
        )
        .await;
        assert_eq!(
            r.status,
            404,
            "{key} written by a refused batch: {:?}",
            r.json()
        );
    }

    for case in &cases {
        let r = call(
            &api,
            case.method.clone(),
            &case.path,
            None,
            case.body.clone(),
        )
        .await;
        assert_eq!(
            r.status, 401,
            "{} {} without a token",
            case.method, case.path
        );
        assert_eq!(r.code(), "unauthenticated");
        assert!(r.headers.contains_key("www-authenticate"));
        let r = call(
            &api,
            case.method.clone(),
            &case.path,
            Some("mrd_nope_nope"),
            case.body.clone(),
        )
        .await;
        assert_eq!(
            r.status, 401,
            "{} {} with a bad token",
            case.method, case.path
        );
        assert_eq!(r.code(), "invalid_token");
        for who in case.denied {
            let r = call(
                &api,
                case.method.clone(),
                &case.path,
                Some(&tok(who)),
                case.body.clone(),
            )
            .await;
            assert_eq!(
                r.status,
                403,
                "{} {} as {who}: {:?}",
                case.method,
                case.path,
                String::from_utf8_lossy(&r.body)
            );
            assert_eq!(r.code(), "forbidden");
            assert!(r.json()["needs"]["right"].is_string());
        }
        for who in case.allowed {
            let r = call(
                &api,
                case.method.clone(),
                &case.path,
                Some(&tok(who)),
                case.body.clone(),
            )
            .await;
            assert!(
                r.status != 401 && r.status != 403,
                "{} {} as {who}: {} {:?}",
                case.method,
                case.path,
                r.status,
                String::from_utf8_lossy(&r.body)
            );
        }
    }
    for p in public.iter().copied() {
        assert_eq!(
            call(&api, Method::GET, p, None, Value::Null).await.status,
            200,
            "{p}"
        );
        // Public for reading only: another method there needs a token too.
        let r = call(&api, Method::POST, p, None, json!({})).await;
        assert_eq!(r.status, 401, "POST {p}");
    }
    // The right token's writes were.
    let r = call(
        &api,
        Method::GET,
        "/v1/kv/orders/eu/3",
        Some(&reader),
        Value::Null,
    )
    .await;
    assert_eq!(r.json()["value"], json!(3));
    // Refusals are counted.
    let m = call(&api, Method::GET, "/metrics", Some(&admin), Value::Null).await;
    let text = String::from_utf8_lossy(&m.body).to_string();
    for reason in ["missing", "invalid", "forbidden"] {
        let line = text
            .lines()
            .find(|l| {
                l.starts_with("meridian_security_refused_total")
                    && l.contains("what=\"auth\"")
                    && l.contains(&format!("reason=\"{reason}\""))
            })
            .unwrap_or_else(|| panic!("no {reason} refusal counted:\n{text}"));
        let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n >= 1.0, "{line}");
    }
}

fn matches_route(route: &str, path: &str) -> bool {
    let r: Vec<&str> = route.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    if route.ends_with("{key}") {
        return p.len() >= r.len()
            && r[..r.len() - 1]
                .iter()
                .zip(&p)
                .all(|(a, b)| a.starts_with('{') || a == b);
    }
    r.len() == p.len() && r.iter().zip(&p).all(|(a, b)| a.starts_with('{') || a == b)
}

#[tokio::test]
async fn revoked_and_expired_tokens_are_refused_and_stay_refused() {
    let api = secured("access-revoke").await;
    let (t, id) = token(
        &api,
        json!([{"keyspace": "default", "rights": ["read", "write"]}]),
    )
    .await;
    let r = call(&api, Method::PUT, "/v1/kv/default/k", Some(&t), json!(1)).await;
    assert_eq!(r.status, 200);
    let r = call(
        &api,
        Method::DELETE,
        &format!("/v1/admin/tokens/{id}"),
        Some(BOOTSTRAP),
        Value::Null,
    )
    .await;
    assert_eq!((r.status, r.json()["changed"].clone()), (200, json!(true)));
    let r = call(&api, Method::PUT, "/v1/kv/default/k", Some(&t), json!(2)).await;
    assert_eq!((r.status, r.code().as_str()), (401, "invalid_token"));
    // Gone for good: the record answers 410, with when.
    let r = call(
        &api,
        Method::GET,
        &format!("/v1/admin/tokens/{id}"),
        Some(BOOTSTRAP),
        Value::Null,
    )
    .await;
    assert_eq!((r.status, r.code().as_str()), (410, "revoked"));
    assert!(r.json()["revoked_ms"].is_u64() && r.json()["id"] == json!(id));
    // Again: nothing changes, still refused.
    let r = call(
        &api,
        Method::DELETE,
        &format!("/v1/admin/tokens/{id}"),
        Some(BOOTSTRAP),
        Value::Null,
    )
    .await;
    assert_eq!((r.status, r.json()["changed"].clone()), (200, json!(false)));
    let listed = call(
        &api,
        Method::GET,
        "/v1/admin/tokens",
        Some(BOOTSTRAP),
        Value::Null,
    )
    .await
    .json();
    let entry = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == json!(id))
        .unwrap()
        .clone();
    assert!(entry["revoked_ms"].is_u64());
    assert!(
        entry.get("hash").is_none() && entry.get("token").is_none(),
        "{entry}"
    );
    // The value the revoked token tried to write is not there.
    let r = call(
        &api,
        Method::GET,
        "/v1/kv/default/k",
        Some(BOOTSTRAP),
        Value::Null,
    )
    .await;
    assert_eq!(r.json()["value"], json!(1));

    // Expiry.
    let r = call(
        &api,
        Method::POST,
        "/v1/admin/tokens",
        Some(BOOTSTRAP),
        json!({"grants": [{"keyspace": "default", "rights": ["read"]}], "expires_in_s": 1}),
    )
    .await;
    let short = r.json()["token"].as_str().unwrap().to_string();
    assert_eq!(
        call(
            &api,
            Method::GET,
            "/v1/kv/default/k",
            Some(&short),
            Value::Null
        )
        .await
        .status,
        200
    );
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert_eq!(
        call(
            &api,
            Method::GET,
            "/v1/kv/default/k",
            Some(&short),
            Value::Null
        )
        .await
        .status,
        401
    );

    // Bad definitions: 400 with what was wrong; none made.
    for (body, needle) in [
        (json!({"grants": []}), "grants"),
        (
            json!({"grants": [{"keyspace": "Bad Name", "rights": ["read"]}]}),
            "grant 0",
        ),
        (
            json!({"grants": [{"keyspace": "x", "rights": []}]}),
            "no rights",
        ),
        (
            json!({"grants": [{"keyspace": "x", "rights": ["root"]}]}),
            "root",
        ),
        (
            json!({"grants": [{"keyspace": "x", "rights": ["read"]}], "expires_in_s": 0}),
            "expires_in_s",
        ),
        (
            json!({"grants": [{"keyspace": "x", "rights": ["read"]}], "name": "n".repeat(129)}),
            "128",
        ),
    ] {
        let r = call(
            &api,
            Method::POST,
            "/v1/admin/tokens",
            Some(BOOTSTRAP),
            body.clone(),
        )
        .await;
        assert_eq!(r.status, 400, "{body}: {:?}", r.json());
        assert!(
            r.json()["message"].as_str().unwrap().contains(needle),
            "{body}: {:?}",
            r.json()
        );
    }
    // A token survives a restart (it is data), the revocation too.
    let (kept, _) = token(&api, json!([{"keyspace": "default", "rights": ["read"]}])).await;
    let mut api = api;
    api.node.restart().await.unwrap();
    assert_eq!(
        call(
            &api,
            Method::GET,
            "/v1/kv/default/k",
            Some(&kept),
            Value::Null
        )
        .await
        .status,
        200
    );
    assert_eq!(
        call(&api, Method::GET, "/v1/kv/default/k", Some(&t), Value::Null)
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn the_token_limit_holds_at_and_over_it() {
    let api = Api::start_with("access-limit", |s| {
        let mut s = s.with_tokens(BOOTSTRAP);
        s.env
            .push(("MERIDIAN_LIMITS__MAX_TOKENS".into(), "2".into()));
        s
    })
    .await;
    let grants = json!([{"keyspace": "default", "rights": ["read"]}]);
    let (_, first) = token(&api, grants.clone()).await;
    token(&api, grants.clone()).await;
    let r = call(
        &api,
        Method::POST,
        "/v1/admin/tokens",
        Some(BOOTSTRAP),
        json!({"grants": grants}),
    )
    .await;
    assert_eq!((r.status, r.code().as_str()), (422, "limit_reached"));
    assert_eq!(r.json()["limit"], json!(2));
    // A revoked token no longer counts.
    call(
        &api,
        Method::DELETE,
        &format!("/v1/admin/tokens/{first}"),
        Some(BOOTSTRAP),
        Value::Null,
    )
    .await;
    token(&api, grants).await;
}

#[tokio::test]
async fn open_mode_is_refused_off_loopback() {
    let dir = std::env::temp_dir().join(format!("meridian-access-open-{}", std::process::id()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args([
            "serve",
            "--region",
            "us-east",
            "--listen",
            "0.0.0.0:0",
            "--data-dir",
        ])
        .arg(&dir)
        .env("MERIDIAN_AUTH__MODE", "open")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("auth.mode") && err.contains("loopback"),
        "{err}"
    );
}

#[tokio::test]
async fn keyspace_and_merge_limits_hold_at_and_over_them() {
    let api = Api::start_with("access-def-limits", |mut s| {
        // `default` is one keyspace: room for one more.
        s.env
            .push(("MERIDIAN_LIMITS__MAX_KEYSPACES".into(), "2".into()));
        s.env
            .push(("MERIDIAN_LIMITS__MAX_MERGES".into(), "1".into()));
        s
    })
    .await;
    let put = |path: String, body: Value| {
        let api = &api;
        async move { api.json(Method::PUT, &path, body).await }
    };
    assert_eq!(
        put("/v1/keyspaces/one".into(), json!({"policy": "lww"}))
            .await
            .status,
        201
    );
    let r = put("/v1/keyspaces/two".into(), json!({"policy": "lww"})).await;
    assert_eq!((r.status, r.code().as_str()), (422, "limit_reached"));
    assert_eq!(r.json()["what"], json!("keyspaces"));
    // Updating one that exists is not a new one.
    let r = put(
        "/v1/keyspaces/one".into(),
        json!({"policy": "lww", "ledger_capacity": 5}),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let script = json!({"script": "fn merge(versions) { versions[0] }"});
    assert_eq!(
        put("/v1/merges/first".into(), script.clone()).await.status,
        201
    );
    let r = put("/v1/merges/second".into(), script.clone()).await;
    assert_eq!((r.status, r.code().as_str()), (422, "limit_reached"));
    assert_eq!(r.json()["what"], json!("merges"));
    // Replacing the registered one is allowed.
    let r = put(
        "/v1/merges/first".into(),
        json!({"script": "fn merge(versions) { versions[versions.len() - 1] }"}),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    // Nothing half-made: the refused ones do not exist.
    assert_eq!(api.get("/v1/keyspaces/two").await.status, 404);
    assert_eq!(api.get("/v1/merges/second").await.status, 404);
}
