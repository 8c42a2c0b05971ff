//! The client API over real HTTP against a real `meridian serve` process:
//! every endpoint, and every error a client can provoke.
//!
//! Past ~400 lines because STYLE keeps one test binary per topic: these cases
//! share the fixtures at the top of this file.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};

mod common;
use common::Api;

#[tokio::test]
async fn put_get_delete_and_not_found() {
    let api = Api::start("kv").await;
    let r = api
        .json(
            Method::PUT,
            "/v1/kv/default/user%2F42",
            json!({"b": 1, "a": [true, null]}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let written = r.json();
    let version = written["version"].as_str().unwrap().to_string();
    assert!(version.starts_with("us-east:"), "{version}");
    assert_eq!(written["token"].as_str(), r.token().as_deref());

    let r = api.get("/v1/kv/default/user%2F42").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"key": "user/42", "value": {"a": [true, null], "b": 1}, "version": version})
    );
    assert!(r.token().is_some(), "every read carries a token");

    let r = api
        .req(
            Method::DELETE,
            "/v1/kv/default/user%2F42",
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = api.get("/v1/kv/default/user%2F42").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.code(), "not_found");
    assert!(r.says("user/42"), "{}", r.json());
    assert!(r.token().is_some(), "a 404 read carries a token too");

    // Unicode keys round-trip.
    let r = api
        .json(Method::PUT, "/v1/kv/default/caf%C3%A9", json!("x"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        api.get("/v1/kv/default/caf%C3%A9").await.json()["key"],
        json!("café")
    );
}

#[tokio::test]
async fn bodies_in_msgpack_and_bytes() {
    let api = Api::start("formats").await;
    let packed = rmp_serde::to_vec(&json!({"n": 7, "s": "hi"})).unwrap();
    let r = api
        .req(
            Method::PUT,
            "/v1/kv/default/m",
            &[("content-type", "application/msgpack")],
            packed,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        api.get("/v1/kv/default/m").await.json()["value"],
        json!({"n": 7, "s": "hi"})
    );
    let r = api
        .req(
            Method::GET,
            "/v1/kv/default/m",
            &[("accept", "application/msgpack")],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.headers["content-type"], "application/msgpack");
    let v: Value = rmp_serde::from_slice(&r.body).unwrap();
    assert_eq!(v["value"], json!({"n": 7, "s": "hi"}));

    let raw = vec![0u8, 159, 146, 150, 255];
    let r = api
        .req(
            Method::PUT,
            "/v1/kv/default/b",
            &[("content-type", "application/octet-stream")],
            raw.clone(),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = api
        .req(
            Method::GET,
            "/v1/kv/default/b",
            &[("accept", "application/octet-stream")],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.to_vec(), raw);
    assert!(r.headers.contains_key("meridian-version"));
    assert_eq!(
        api.get("/v1/kv/default/b").await.json()["value"],
        json!({"$bytes": "AJ+Slv8="})
    );

    let r = api
        .req(
            Method::PUT,
            "/v1/kv/default/x",
            &[("content-type", "text/plain")],
            "hi",
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (415, "unsupported_media_type")
    );
}

#[tokio::test]
async fn limits_and_malformed_input_are_4xx_with_json() {
    let api = Api::start("limits").await;
    let long_key = "k".repeat(1025);
    let r = api
        .json(Method::PUT, &format!("/v1/kv/default/{long_key}"), json!(1))
        .await;
    assert_eq!(r.status, 400);
    assert!(r.says("1025 bytes"), "{}", r.json());

    let big = format!("\"{}\"", "x".repeat((1 << 20) + 100));
    let r = api.req(Method::PUT, "/v1/kv/default/big", &[], big).await;
    assert_eq!(
        r.status,
        413,
        "{:?}",
        String::from_utf8_lossy(&r.body[..100.min(r.body.len())])
    );
    assert_eq!(r.code(), "too_large");

    // Just over 1 MiB of value inside the body limit: refused by the value check.
    let over = format!("\"{}\"", "y".repeat((1 << 20) + 10));
    let r = api.req(Method::PUT, "/v1/kv/default/over", &[], over).await;
    assert_eq!(r.status, 413);

    let deep = "[".repeat(65) + "]".repeat(65).as_str();
    let r = api.req(Method::PUT, "/v1/kv/default/deep", &[], deep).await;
    assert_eq!(r.status, 400);
    assert!(r.says("deeper than 64"), "{}", r.json());
    let ok = "[".repeat(64) + "]".repeat(64).as_str();
    assert_eq!(
        api.req(Method::PUT, "/v1/kv/default/deep", &[], ok)
            .await
            .status,
        200
    );

    let r = api
        .req(Method::PUT, "/v1/kv/default/bad", &[], "{\"a\":")
        .await;
    assert_eq!((r.status, r.code().as_str()), (400, "bad_request"));
    let r = api.req(Method::PUT, "/v1/kv/default/empty", &[], "").await;
    assert_eq!(r.status, 400);
    let r = api
        .req(
            Method::PUT,
            "/v1/kv/default/m",
            &[("content-type", "application/msgpack")],
            vec![0xdd, 0xff, 0xff, 0xff, 0xff],
        )
        .await;
    assert_eq!(r.status, 400);

    let r = api.json(Method::PUT, "/v1/kv/nope/k", json!(1)).await;
    assert_eq!((r.status, r.code().as_str()), (404, "unknown_keyspace"));
    let r = api
        .json(Method::POST, "/v1/kv/default/k", json!({"op": "incr"}))
        .await;
    assert_eq!((r.status, r.code().as_str()), (422, "unsupported_op"));
    let r = api
        .json(Method::POST, "/v1/kv/default/k", json!({"op": "explode"}))
        .await;
    assert_eq!(r.status, 400);
    assert!(r.says("unknown variant `explode`"), "{}", r.json());

    let r = api
        .req(
            Method::GET,
            "/v1/kv/default/k",
            &[("meridian-token", "%%%")],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = api
        .req(
            Method::PUT,
            "/v1/kv/default/k",
            &[("meridian-write-concern", "quorum")],
            "1",
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.says("expected one of local, one, majority, all"),
        "{}",
        r.json()
    );
    let r = api
        .req(
            Method::GET,
            "/v1/kv/default/k",
            &[("meridian-wait-ms", "soon")],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 400);

    assert_eq!(api.get("/v1/nothing").await.code(), "no_route");
    let r = api
        .req(Method::PATCH, "/v1/status", &[], Bytes::new())
        .await;
    assert_eq!((r.status, r.code().as_str()), (405, "method_not_allowed"));
    // Nothing above was written.
    assert_eq!(api.get("/v1/kv/default/bad").await.status, 404);
    assert_eq!(api.get("/v1/kv/default/big").await.status, 404);
}

#[tokio::test]
async fn counters_sets_docs_and_siblings() {
    let api = Api::start("policies").await;
    for (name, policy) in [
        ("hits", "counter"),
        ("tags", "set"),
        ("people", "doc"),
        ("carts", "mv"),
    ] {
        let body = if policy == "doc" {
            json!({"policy": policy, "schema": {"visits": "counter", "best": "max"}})
        } else {
            json!({"policy": policy})
        };
        assert_eq!(
            api.json(Method::PUT, &format!("/v1/keyspaces/{name}"), body)
                .await
                .status,
            201
        );
    }
    let r = api
        .json(
            Method::POST,
            "/v1/kv/hits/a",
            json!({"op": "incr", "by": 5}),
        )
        .await;
    assert_eq!(r.json()["value"], json!(5));
    let r = api
        .json(
            Method::POST,
            "/v1/kv/hits/a",
            json!({"op": "incr", "by": -2}),
        )
        .await;
    assert_eq!(r.json()["value"], json!(3));
    assert_eq!(api.get("/v1/kv/hits/a").await.json()["value"], json!(3));
    let r = api
        .json(
            Method::POST,
            "/v1/kv/hits/a",
            json!({"op": "incr", "by": i64::MAX}),
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (422, "counter_overflow"));
    let r = api.json(Method::PUT, "/v1/kv/hits/a", json!(1)).await;
    assert_eq!(r.status, 422);

    api.json(
        Method::POST,
        "/v1/kv/tags/t",
        json!({"op": "add", "values": ["b", "a", {"x": 1}]}),
    )
    .await;
    api.json(
        Method::POST,
        "/v1/kv/tags/t",
        json!({"op": "remove", "values": ["b"]}),
    )
    .await;
    assert_eq!(
        api.get("/v1/kv/tags/t").await.json()["value"],
        json!(["a", {"x": 1}])
    );
    api.json(Method::PUT, "/v1/kv/tags/t", json!(["z"])).await;
    assert_eq!(api.get("/v1/kv/tags/t").await.json()["value"], json!(["z"]));

    api.json(
        Method::POST,
        "/v1/kv/people/p",
        json!({"op": "patch", "doc": {"name": "Ann", "visits": 1, "best": 3}}),
    )
    .await;
    api.json(
        Method::POST,
        "/v1/kv/people/p",
        json!({"op": "patch", "doc": {"visits": 2, "best": 1, "name": null}}),
    )
    .await;
    assert_eq!(
        api.get("/v1/kv/people/p").await.json()["value"],
        json!({"visits": 3, "best": 3})
    );
    let r = api
        .json(
            Method::POST,
            "/v1/kv/people/p",
            json!({"op": "patch", "doc": {"visits": "x"}}),
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (422, "invalid_patch"));
    assert!(r.says("field visits"), "{}", r.json());

    api.json(Method::PUT, "/v1/kv/carts/c", json!(["apple"]))
        .await;
    api.json(Method::PUT, "/v1/kv/carts/c", json!(["pear"]))
        .await;
    let read = api.get("/v1/kv/carts/c").await.json();
    assert_eq!(read["siblings"].as_array().unwrap().len(), 2, "{read:?}");
    let ctx = read["context"].as_str().unwrap().to_string();
    let r = api
        .req(
            Method::PUT,
            "/v1/kv/carts/c",
            &[("meridian-context", &ctx)],
            "[\"apple\",\"pear\"]",
        )
        .await;
    assert_eq!(r.status, 200);
    let read = api.get("/v1/kv/carts/c").await.json();
    assert_eq!(
        read["siblings"],
        json!([{"value": ["apple", "pear"], "version": read["siblings"][0]["version"]}])
    );
    // An empty context is refused, not taken as none: none would be
    // "every version here", and the delete would remove siblings its
    // client never saw. Header and batch field alike; nothing changes.
    let r = api
        .req(
            Method::DELETE,
            "/v1/kv/carts/c",
            &[("meridian-context", "")],
            "",
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.json());
    let r = api
        .json(
            Method::POST,
            "/v1/batch",
            json!({"ops": [{"keyspace": "carts", "key": "c", "op": "delete", "context": ""}]}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.json());
    assert_eq!(
        api.get("/v1/kv/carts/c").await.json()["siblings"],
        read["siblings"]
    );
    // A whole number written with a zero fraction counts as that number;
    // past 2^53 (where a float is no longer the number written) it is
    // refused, not rounded.
    let r = api
        .json(
            Method::POST,
            "/v1/kv/hits/b",
            json!({"op": "incr", "by": 2.0}),
        )
        .await;
    assert_eq!(r.json()["value"], json!(2));
    let r = api
        .req(
            Method::POST,
            "/v1/kv/hits/b",
            &[],
            r#"{"op": "incr", "by": 9007199254740994.0}"#,
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.json());
    assert_eq!(api.get("/v1/kv/hits/b").await.json()["value"], json!(2));
}

#[tokio::test]
async fn batches_are_atomic() {
    let api = Api::start("batch").await;
    api.json(
        Method::PUT,
        "/v1/keyspaces/hits",
        json!({"policy": "counter"}),
    )
    .await;
    let r = api
        .json(
            Method::POST,
            "/v1/batch",
            json!({"ops": [
                {"keyspace": "default", "key": "a", "op": "put", "value": {"x": 1}},
                {"keyspace": "hits", "key": "a", "op": "incr", "by": 2},
                {"keyspace": "default", "key": "gone", "op": "delete"}
            ]}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(r.json()["results"][1]["value"], json!(2));
    let v1 = api.get("/v1/kv/default/a").await.json()["version"].clone();
    assert_eq!(v1, r.json()["version"], "one op, one version for every key");

    let r = api
        .json(
            Method::POST,
            "/v1/batch",
            json!({"ops": [
                {"keyspace": "default", "key": "b", "op": "put", "value": 1},
                {"keyspace": "hits", "key": "b", "op": "add", "values": [1]}
            ]}),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(
        api.get("/v1/kv/default/b").await.status,
        404,
        "a refused batch writes nothing"
    );

    let r = api
        .json(
            Method::POST,
            "/v1/batch",
            json!({"ops": [
                {"keyspace": "default", "key": "c", "op": "put", "value": 1},
                {"keyspace": "default", "key": "c", "op": "put", "value": 2}
            ]}),
        )
        .await;
    assert_eq!(r.status, 400);
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({"keyspace": "default", "key": format!("k{i}"), "op": "put", "value": i}))
        .collect();
    let r = api
        .json(Method::POST, "/v1/batch", json!({"ops": many}))
        .await;
    assert_eq!((r.status, r.code().as_str()), (413, "too_many_ops"));
    let r = api
        .json(Method::POST, "/v1/batch", json!({"ops": []}))
        .await;
    assert_eq!(r.status, 400);
    let r = api
        .json(Method::POST, "/v1/batch", json!({"operations": []}))
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn keyspace_admin() {
    let api = Api::start("keyspaces").await;
    let r = api
        .json(
            Method::PUT,
            "/v1/keyspaces/orders",
            json!({"policy": "lww"}),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["created"], json!(true));
    let r = api
        .json(
            Method::PUT,
            "/v1/keyspaces/orders",
            json!({"policy": "lww"}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["changed"], json!(false));
    let r = api
        .json(
            Method::PUT,
            "/v1/keyspaces/orders",
            json!({"policy": "lww", "write_concern": "majority"}),
        )
        .await;
    assert_eq!((r.status, r.json()["changed"].clone()), (200, json!(true)));
    let r = api
        .json(
            Method::PUT,
            "/v1/keyspaces/orders",
            json!({"policy": "counter"}),
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (409, "policy_change"));
    assert_eq!(r.json()["existing"]["policy"], json!("lww"));
    let r = api.get("/v1/keyspaces/orders").await;
    assert_eq!(r.json()["write_concern"], json!("majority"));
    let names: BTreeSet<String> = api.get("/v1/keyspaces").await.json()["keyspaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["default".to_string(), "orders".to_string()])
    );
    assert_eq!(api.get("/v1/keyspaces/nope").await.status, 404);
    let r = api
        .json(
            Method::PUT,
            "/v1/keyspaces/Bad%20Name",
            json!({"policy": "lww"}),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = api
        .json(
            Method::PUT,
            "/v1/keyspaces/x",
            json!({"policy": "lww", "colour": "red"}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.says("unknown field `colour`"), "{}", r.json());
    let r = api
        .json(Method::PUT, "/v1/keyspaces/x", json!({"policy": "crdt"}))
        .await;
    assert_eq!(r.status, 400);
    let r = api
        .json(
            Method::PUT,
            "/v1/keyspaces/x",
            json!({"policy": "mv", "sibling_cap": 0}),
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (400, "invalid_keyspace"));
    let r = api
        .json(
            Method::PUT,
            "/v1/keyspaces/x",
            json!({"name": "y", "policy": "lww"}),
        )
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn listing_pages_through_live_keys() {
    let api = Api::start("list").await;
    for i in 0..25 {
        api.json(
            Method::PUT,
            &format!("/v1/kv/default/user-{i:02}"),
            json!(i),
        )
        .await;
    }
    api.json(Method::PUT, "/v1/kv/default/other", json!(0))
        .await;
    api.req(Method::DELETE, "/v1/kv/default/user-03", &[], Bytes::new())
        .await;
    let mut keys = Vec::new();
    let mut after = String::new();
    loop {
        let q = if after.is_empty() {
            String::new()
        } else {
            format!("&after={after}")
        };
        let page = api
            .get(&format!("/v1/kv/default?prefix=user-&limit=10{q}"))
            .await
            .json();
        for item in page["items"].as_array().unwrap() {
            keys.push(item["key"].as_str().unwrap().to_string());
        }
        match page["next"].as_str() {
            Some(n) => after = n.to_string(),
            None => break,
        }
    }
    assert_eq!(keys.len(), 24);
    assert!(!keys.contains(&"user-03".to_string()));
    assert!(keys.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(api.get("/v1/kv/default?limit=0").await.status, 400);
    assert_eq!(api.get("/v1/kv/default?limit=5&colour=1").await.status, 400);
    assert_eq!(api.get("/v1/kv/nope").await.status, 404);
}

#[tokio::test]
async fn status_health_metrics_conflicts_and_tokens() {
    let api = Api::start("status").await;
    api.json(Method::PUT, "/v1/kv/default/k", json!(1)).await;
    let s = api.get("/v1/status").await.json();
    assert_eq!(s["region"], json!("us-east"));
    assert_eq!(s["ops"], json!(1));
    assert_eq!(s["vv"][0]["seq"], json!(1));
    assert_ne!(s["keyspaces"][0]["digest"], json!("0".repeat(32)));
    assert_eq!(api.get("/healthz").await.json()["status"], json!("ok"));
    let m = String::from_utf8(api.get("/metrics").await.body.to_vec()).unwrap();
    for name in [
        "meridian_api_write_seconds",
        "meridian_log_fsync_seconds",
        "meridian_engine_ops_applied_total",
        "meridian_log_bytes",
    ] {
        assert!(m.contains(name), "metrics lack {name}");
    }
    assert!(m.contains("region=\"us-east\""));
    // Every answer counts by route, method and status (the PUT above, the
    // /v1/status read).
    assert!(
        m.contains(concat!(r#"meridian_api_requests_total{region="us-east",route="/v1/kv/{keyspace}/{key}",method="PUT",status="200"} 1"#, "\n")),
        "{m}"
    );
    assert!(
        m.contains("route=\"/v1/status\",method=\"GET\",status=\"200\"} 1\n"),
        "{m}"
    );
    // Text logs written to a file carry no colour escapes.
    let log = std::fs::read(api.node.log_path()).unwrap();
    assert!(!log.is_empty());
    assert!(!log.contains(&0x1b), "ANSI escapes in a log file");

    let c = api.get("/v1/conflicts").await;
    assert_eq!(c.json(), json!({"conflicts": []}));
    assert_eq!(api.get("/v1/conflicts?keyspace=nope").await.status, 404);
    // A key alone is looked for in every keyspace.
    assert_eq!(
        api.get("/v1/conflicts?key=k").await.json(),
        json!({"conflicts": []})
    );
    assert_eq!(api.get("/v1/conflicts?limit=5000").await.status, 400);

    // A token from the future (this region has not seen seq 99): 503 after
    // the wait, naming the origin it lacks.
    let incarnation = s["replica"]["incarnation"].as_str().unwrap();
    let vv: meridian_crdt::VersionVector = [(
        meridian_crdt::ReplicaId::new(
            meridian_crdt::RegionId::new("us-east").unwrap(),
            incarnation.parse().unwrap(),
        ),
        meridian_crdt::Seq(99),
    )]
    .into_iter()
    .collect();
    let future = meridian_core::token::encode(&vv);
    let r = api
        .req(
            Method::GET,
            "/v1/kv/default/k",
            &[("meridian-token", &future), ("meridian-wait-ms", "100")],
            Bytes::new(),
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (503, "behind_token"));
    assert_eq!(r.json()["lacking"][0]["region"], json!("us-east"));
    assert_eq!(r.json()["lacking"][0]["need"], json!(99));
    // A token it has seen: answered at once.
    let own = s["token"].as_str().unwrap();
    let r = api
        .req(
            Method::GET,
            "/v1/kv/default/k",
            &[("meridian-token", own)],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn the_openapi_document_is_generated_and_every_route_in_it_is_served() {
    let api = Api::start("openapi").await;
    let served = api.get("/v1/openapi.json").await.json();
    let generated: Value = serde_json::from_str(meridian_server::api::openapi::json()).unwrap();
    assert_eq!(
        served, generated,
        "the region serves the generated document"
    );
    assert_eq!(served["openapi"], json!("3.1.0"));
    let documented: BTreeSet<(String, String)> = served["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(p, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (p.clone(), m.clone()))
        })
        .collect();
    let routes: BTreeSet<(String, String)> = meridian_server::api::openapi::routes()
        .iter()
        .flat_map(|r| r.methods.iter().map(|m| (r.path.clone(), m.to_string())))
        .collect();
    assert_eq!(documented, routes);
    // The client API, the console and the probes: 25 routes, 35 operations.
    assert_eq!(
        (
            routes.iter().map(|(p, _)| p).collect::<BTreeSet<_>>().len(),
            routes.len()
        ),
        (25, 35)
    );
    // Every documented route exists: the router answers it with something
    // other than its no-route or wrong-method fallback.
    for (path, method) in &routes {
        let concrete = path
            .replace("{keyspace}", "default")
            .replace("{key}", "k")
            .replace("{name}", "default");
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let r = api.req(m, &concrete, &[], Bytes::new()).await;
        if r.headers
            .get("content-type")
            .is_some_and(|c| c == "application/json")
        {
            let code = r.json()["error"].as_str().unwrap_or("").to_string();
            assert!(
                code != "no_route" && code != "method_not_allowed",
                "{method} {path} is not routed"
            );
        }
    }
    // And nothing undocumented is: a method the document does not list
    // for a route gets the wrong-method answer.
    let r = api
        .req(Method::PATCH, "/v1/kv/default/k", &[], Bytes::new())
        .await;
    assert_eq!((r.status, r.code().as_str()), (405, "method_not_allowed"));
    // The routes anyone may call are the ones the document says need no
    // token, and every other operation answers 401 and 403.
    let public = meridian_server::security::auth::PUBLIC;
    for (path, method) in &routes {
        let op = &served["paths"][path][method];
        let open = op["security"] == json!([{}]);
        assert_eq!(
            open,
            public.contains(&path.as_str()),
            "{method} {path}: security"
        );
        let answers = op["responses"].as_object().unwrap();
        assert_eq!(
            answers.contains_key("401") && answers.contains_key("403"),
            !open,
            "{method} {path}: 401/403"
        );
    }
    // Data answers document the token header they carry; error answers
    // and the backup routes (which carry none) do not.
    let get_key = &served["paths"]["/v1/kv/{keyspace}/{key}"]["get"]["responses"];
    assert!(get_key["200"]["headers"]["meridian-token"].is_object());
    assert!(get_key["404"]["headers"].get("meridian-token").is_none());
    let backups = &served["paths"]["/v1/admin/backups"]["get"]["responses"]["200"];
    assert!(backups["headers"].get("meridian-token").is_none());
    // The standby gate's answers are on every route behind it.
    let put_ks = &served["paths"]["/v1/keyspaces/{name}"]["put"]["responses"];
    for status in ["421", "502", "503"] {
        assert!(put_ks[status].is_object(), "PUT keyspace lacks {status}");
    }
    // Every error answer names the error body, and every path parameter
    // of a route is declared.
    for (path, method) in &routes {
        let op = &served["paths"][path][method];
        for (status, answer) in op["responses"].as_object().unwrap() {
            // (410 for a revoked token carries its record.)
            if status.starts_with('4') && status != "410" && answer.get("$ref").is_none() {
                assert_eq!(
                    answer["content"]["application/json"]["schema"]["$ref"],
                    json!("#/components/schemas/Error"),
                    "{method} {path} {status}"
                );
            }
        }
        let declared: BTreeSet<&str> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "path")
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        let in_path: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        assert_eq!(declared, in_path, "{method} {path}: path parameters");
    }
}

#[tokio::test]
async fn sigterm_finishes_cleanly_and_data_survives_restart() {
    let mut api = Api::start("restart").await;
    for i in 0..50 {
        api.json(Method::PUT, &format!("/v1/kv/default/k{i}"), json!(i))
            .await;
    }
    assert!(
        api.node.terminate(Duration::from_secs(10)).await.unwrap(),
        "exit 0 on SIGTERM"
    );
    api.node.restart().await.unwrap();
    for i in [0, 17, 49] {
        assert_eq!(
            api.get(&format!("/v1/kv/default/k{i}")).await.json()["value"],
            json!(i)
        );
    }
    assert_eq!(api.get("/v1/status").await.json()["ops"], json!(50));
}

#[tokio::test]
async fn a_data_dir_that_lost_its_own_ops_comes_back_as_a_new_incarnation() {
    // Its identity survived, its log and state did not: reusing the old
    // incarnation would reissue seqs that peers may already hold.
    let mut api = Api::start("reincarnate").await;
    let before = api.get("/v1/status").await.json()["replica"]["incarnation"].clone();
    assert_eq!(
        api.json(Method::PUT, "/v1/kv/default/k", json!(1))
            .await
            .status,
        200
    );
    assert!(api.node.terminate(Duration::from_secs(10)).await.unwrap());
    let data = api.dir.path().join("data");
    for part in ["log", "state"] {
        std::fs::remove_dir_all(data.join(part)).unwrap();
    }
    api.node.restart().await.unwrap();
    let after = api.get("/v1/status").await.json()["replica"]["incarnation"].clone();
    assert_ne!(before, after);
    assert_eq!(
        api.json(Method::PUT, "/v1/kv/default/k", json!(2))
            .await
            .status,
        200
    );
    // A plain restart keeps the incarnation.
    api.node.restart().await.unwrap();
    assert_eq!(
        api.get("/v1/status").await.json()["replica"]["incarnation"],
        after
    );
}

#[tokio::test]
async fn own_ops_logged_but_not_applied_retire_their_seqs() {
    // A crash after a state transfer's group was synced, before its state
    // was checkpointed, leaves own ops in the log whose causal past is gone;
    // peers may already have them from the log. Reusing their seqs would
    // give two ops one identity.
    use meridian_core::log::{Log, LogOptions};
    use meridian_core::{Key, KeyspaceName, Mutation, Op};
    use meridian_crdt::{Dot, Hlc, LwwOp, ObjectOp, RegionId, ReplicaId, Seq, VersionVector};
    let mut api = Api::start("logged-ahead").await;
    let status = api.get("/v1/status").await.json();
    let me = ReplicaId::new(
        RegionId::new("us-east").unwrap(),
        status["replica"]["incarnation"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap(),
    );
    assert_eq!(
        api.json(Method::PUT, "/v1/kv/default/k", json!(1))
            .await
            .status,
        200
    );
    assert!(api.node.terminate(Duration::from_secs(10)).await.unwrap());
    let other = ReplicaId::new(RegionId::new("eu-west").unwrap(), uuid::Uuid::from_u128(5));
    let deps: VersionVector = [(me.clone(), Seq(1)), (other, Seq(9))]
        .into_iter()
        .collect();
    let op = Op {
        dot: Dot::new(me.clone(), Seq(2)),
        hlc: Hlc::new(1_000, 0).unwrap(),
        deps,
        mutations: vec![Mutation {
            keyspace: KeyspaceName::default_keyspace(),
            key: Key::new("k2").unwrap(),
            op: ObjectOp::Lww(LwwOp::Set(meridian_crdt::Value::Bytes(vec![1]))),
        }],
    };
    let log_dir = api.dir.path().join("data").join("log");
    let (mut log, _) = Log::open(&log_dir, LogOptions::default(), false, |_, _| {}).unwrap();
    log.append([&op]).unwrap();
    log.sync().unwrap();
    drop(log);
    api.node.restart().await.unwrap();
    let after = api.get("/v1/status").await.json()["replica"]["incarnation"].clone();
    assert_ne!(after, json!(me.incarnation.to_string()));
    assert_eq!(
        api.json(Method::PUT, "/v1/kv/default/k", json!(2))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_write_whose_deadline_has_passed_is_refused_and_not_written() {
    let api = Api::start("deadline").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let past = (now - 1_000).to_string();
    let r = api
        .req(
            Method::PUT,
            "/v1/kv/default/late",
            &[("meridian-deadline-ms", past.as_str())],
            Bytes::from_static(b"1"),
        )
        .await;
    assert_eq!(r.status, 503, "{:?}", r.json());
    assert_eq!(r.code(), "deadline_passed");
    assert_eq!(r.json()["deadline_ms"], json!(now - 1_000));
    assert_eq!(api.get("/v1/kv/default/late").await.status, 404);
    let batch = json!({"ops": [{"keyspace": "default", "key": "late", "op": "put", "value": 1}]});
    let r = api
        .req(
            Method::POST,
            "/v1/batch",
            &[
                ("meridian-deadline-ms", past.as_str()),
                ("content-type", "application/json"),
            ],
            Bytes::from(batch.to_string()),
        )
        .await;
    assert_eq!((r.status, r.code()), (503, "deadline_passed".into()));
    assert_eq!(api.get("/v1/kv/default/late").await.status, 404);

    let future = (now + 60_000).to_string();
    let r = api
        .req(
            Method::PUT,
            "/v1/kv/default/late",
            &[("meridian-deadline-ms", future.as_str())],
            Bytes::from_static(b"2"),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let r = api
        .req(
            Method::PUT,
            "/v1/kv/default/late",
            &[("meridian-deadline-ms", "soon")],
            Bytes::from_static(b"3"),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "bad_request".into()));
    assert_eq!(api.get("/v1/kv/default/late").await.json()["value"], 2);
}

#[tokio::test]
async fn json_logs_carry_one_span_per_request() {
    let api = Api::start_with("jsonlog", |mut s| {
        s.args.extend(["--log-format".into(), "json".into()]);
        s.env
            .push(("MERIDIAN_LOG".into(), "info,meridian::request=debug".into()));
        s
    })
    .await;
    let r = api
        .json(Method::PUT, "/v1/kv/default/user%2F42", json!(1))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(api.get("/v1/kv/nope/k").await.status, 404);
    // The closing event is written after the answer: wait for it.
    let mut lines: Vec<Value> = Vec::new();
    for _ in 0..50 {
        let text = std::fs::read_to_string(api.node.log_path()).unwrap();
        lines = text
            .lines()
            // The harness's own lines (its start banner) are not the server's.
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        if lines
            .iter()
            .filter(|l| l["target"] == "meridian::request")
            .count()
            >= 2
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(lines.iter().any(|l| l["fields"]["message"] == "serving"));
    let requests: Vec<&Value> = lines
        .iter()
        .filter(|l| l["target"] == "meridian::request")
        .map(|l| &l["span"])
        .collect();
    let put = requests
        .iter()
        .find(|s| s["method"] == "PUT")
        .unwrap_or_else(|| panic!("no PUT span in {requests:?}"));
    assert_eq!(put["name"], "request");
    assert_eq!(put["route"], "/v1/kv/{keyspace}/{key}");
    assert_eq!(put["keyspace"], "default");
    assert_eq!(put["key_len"], 7, "user/42, decoded");
    assert_eq!(put["status"], 200);
    assert!(put["latency_ms"].as_f64().is_some_and(|ms| ms > 0.0));
    let missing = requests
        .iter()
        .find(|s| s["status"] == 404)
        .unwrap_or_else(|| panic!("no 404 span in {requests:?}"));
    assert_eq!(missing["keyspace"], "nope");
}
