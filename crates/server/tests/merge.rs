//! Merge functions over HTTP against a real region: registration and its
//! checks, custom keyspaces, merged reads, the ledger.

mod common;

use common::Api;
use http::Method;
use serde_json::{Value, json};

const CART: &str = "fn merge(versions) {\n    let cart = #{};\n    for v in versions {\n        for item in v.value.keys() {\n            cart[item] = (cart[item] ?? 0) + v.value[item];\n        }\n    }\n    cart.filter(|item, qty| qty != 0)\n}\n";

fn cart_samples() -> Value {
    json!([[{"apple": 1}, {"apple": -1, "pear": 2}]])
}

#[tokio::test]
async fn bad_scripts_are_refused_with_where_and_why() {
    let api = Api::start("merge-bad").await;
    let put = |name: &str, body: Value| {
        let api = &api;
        let path = format!("/v1/merges/{name}");
        async move { api.json(Method::PUT, &path, body).await }
    };
    let r = put("m", json!({"script": "fn merge(v) {\n  let x = ;\n}"})).await;
    assert_eq!((r.status, r.code()), (400, "invalid_merge".into()));
    let b = r.json();
    assert_eq!(
        (b["line"].clone(), b["column"].clone()),
        (json!(2), json!(11)),
        "{b}"
    );
    assert!(
        r.says("invalid merge script: line 2, column 11: syntax error"),
        "{b}"
    );

    let r = put("m", json!({"script": "fn combine(a) { a }"})).await;
    assert!(
        r.says("the script defines no `fn merge(versions)` (one parameter)"),
        "{}",
        r.json()
    );

    // Stopped by the limits on the samples: an endless loop, runaway
    // recursion, a huge allocation.
    let r = put("m", json!({"script": "fn merge(v) { loop {} }"})).await;
    assert_eq!(r.status, 400);
    assert!(
        r.says("sample 0: stopped after 500000 operations (the limit)"),
        "{}",
        r.json()
    );
    let r = put(
        "m",
        json!({"script": "fn f(n) { f(n + 1) }\nfn merge(v) { f(0) }"}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.says("sample 0:"), "{}", r.json());
    let r = put(
        "m",
        json!({"script": "fn merge(v) { let a = []; a.pad(1000000, 0); a }"}),
    )
    .await;
    assert!(r.says("too large"), "{}", r.json());

    // No clock, no randomness: those functions do not exist.
    let r = put("m", json!({"script": "fn merge(v) { timestamp() }"})).await;
    assert!(r.says("Function not found: timestamp"), "{}", r.json());
    let r = put("m", json!({"script": "fn merge(v) { rand() }"})).await;
    assert!(r.says("Function not found: rand"), "{}", r.json());

    // A cart script errors on the built-in samples; samples shaped like its
    // data let it in.
    let r = put("cart", json!({"script": CART})).await;
    assert!(r.says("sample 1:"), "{}", r.json());
    assert_eq!(r.json()["sample"], json!(1));
    let r = put("cart", json!({"script": CART, "samples": [[{"a": 1}]]})).await;
    assert!(
        r.says("sample 0 has 1 versions; a merge sees 2 to 16"),
        "{}",
        r.json()
    );

    // Names and sizes.
    let r = put("sum", json!({"script": CART, "samples": cart_samples()})).await;
    assert!(r.says("\"sum\" is a built-in merge"), "{}", r.json());
    assert_eq!(r.status, 409, "a built-in's name is taken");
    let r = put("Bad", json!({"script": CART})).await;
    assert_eq!(r.status, 400);
    let head = "fn merge(v) { v[0].value }\n";
    let at_limit = format!("{head}{}", "/".repeat(65536 - head.len()));
    assert_eq!(at_limit.len(), 65536);
    let r = put("big", json!({"script": at_limit})).await;
    assert_eq!(r.status, 201, "{}", r.json());
    let over = format!("{at_limit}/");
    let r = put("big", json!({"script": over})).await;
    assert!(
        r.says("script of 65537 bytes is over the 65536-byte limit"),
        "{}",
        r.json()
    );
    let r = put("huge", json!({"script": "x".repeat(600 << 10)})).await;
    assert_eq!(r.status, 413);
    let r = put("m", json!({"script": CART, "colour": "red"})).await;
    assert_eq!(r.status, 400);

    // Nothing of the refused ones was stored.
    let names: Vec<Value> = api.get("/v1/merges").await.json()["merges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["builtin"] == json!(false))
        .map(|m| m["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("big")]);
    assert_eq!(api.get("/v1/merges/m").await.status, 404);
}

#[tokio::test]
async fn a_custom_keyspace_merges_its_versions_and_records_every_merge() {
    let api = Api::start("merge-cart").await;
    let r = api
        .json(
            Method::PUT,
            "/v1/merges/cart",
            json!({"script": CART, "description": "sum per item", "samples": cart_samples()}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    let hash = r.json()["merge"]["hash"].as_str().unwrap().to_string();
    assert_eq!(hash.len(), 64);
    let again = api
        .json(
            Method::PUT,
            "/v1/merges/cart",
            json!({"script": CART, "description": "sum per item", "samples": cart_samples()}),
        )
        .await;
    assert_eq!(
        (again.status, again.json()["changed"].clone()),
        (200, json!(false))
    );
    let got = api.get("/v1/merges/cart").await.json();
    assert_eq!(
        (got["script"].as_str(), got["hash"].as_str()),
        (Some(CART), Some(hash.as_str()))
    );
    let all = api.get("/v1/merges").await.json();
    assert_eq!(
        all["merges"].as_array().unwrap().len(),
        9,
        "8 built-ins and the cart"
    );

    let r = api
        .json(
            Method::PUT,
            "/v1/keyspaces/carts",
            json!({"policy": "custom", "merge": "nope"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "unknown_merge".into()));
    let r = api
        .json(
            Method::PUT,
            "/v1/keyspaces/carts",
            json!({"policy": "custom"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_keyspace".into()));
    let r = api
        .json(
            Method::PUT,
            "/v1/keyspaces/carts",
            json!({"policy": "custom", "merge": "cart"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    assert_eq!(r.json()["keyspace"]["policy"], json!("custom"));
    assert_eq!(r.json()["keyspace"]["merge"], json!("cart"));

    // A single region is every key's merger: each new version is merged
    // into the written-back cart at once.
    for change in [
        json!({"apple": 2}),
        json!({"pear": 1}),
        json!({"apple": -1}),
    ] {
        let r = api.json(Method::PUT, "/v1/kv/carts/alice", change).await;
        assert_eq!(r.status, 200, "{}", r.json());
    }
    let got = api.get("/v1/kv/carts/alice?versions=true").await;
    let b = got.json();
    assert_eq!(b["value"], json!({"apple": 1, "pear": 1}), "{b}");
    assert_eq!(b["versions"].as_array().unwrap().len(), 1, "{b}");
    assert!(b["context"].is_string());
    let c = api
        .get("/v1/conflicts?keyspace=carts&key=alice")
        .await
        .json();
    let entries = c["conflicts"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "one merge per second version: {c}");
    let last = &entries[1];
    assert_eq!(last["rule"], json!("merge"));
    assert_eq!(last["merge"]["function"], json!("cart"));
    assert_eq!(last["merge"]["hash"], json!(hash));
    assert_eq!(last["winner"]["value"], json!({"apple": 1, "pear": 1}));
    let inputs: Vec<Value> = last["losers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["value"].clone())
        .collect();
    assert_eq!(
        inputs,
        vec![json!({"apple": 2, "pear": 1}), json!({"apple": -1})]
    );

    let metrics = String::from_utf8(api.get("/metrics").await.body.to_vec()).unwrap();
    assert!(
        metrics.contains("meridian_merge_writebacks_total{region=\"us-east\"} 2"),
        "{metrics}"
    );
    let s = api.get("/v1/status").await.json();
    assert_eq!(s["merges"]["written_back"], json!(2));
    // Bytes and ops a custom keyspace does not take.
    let r = api
        .req(
            Method::PUT,
            "/v1/kv/carts/bob",
            &[("content-type", "application/octet-stream")],
            vec![1u8, 2],
        )
        .await;
    assert_eq!((r.status, r.code()), (422, "unsupported_op".into()));
    let r = api
        .json(Method::POST, "/v1/kv/carts/bob", json!({"op": "incr"}))
        .await;
    assert_eq!(r.status, 422);
    let r = api.get("/v1/kv/carts/alice?versions=maybe").await;
    assert_eq!(r.status, 400);
    // A value the script cannot take fails the merge at run time: the
    // newest version is kept (last-writer-wins), the ledger says why, and
    // the region goes on serving.
    api.json(Method::PUT, "/v1/kv/carts/carl", json!({"apple": 1}))
        .await;
    let r = api.json(Method::PUT, "/v1/kv/carts/carl", json!(5)).await;
    assert_eq!(r.status, 200);
    let got = api.get("/v1/kv/carts/carl").await.json();
    assert_eq!(got["value"], json!(5), "{got}");
    let c = api
        .get("/v1/conflicts?keyspace=carts&key=carl")
        .await
        .json();
    let e = &c["conflicts"][0];
    assert_eq!(e["rule"], json!("merge_failed"), "{c}");
    let why = e["merge"]["failed"].as_str().unwrap();
    assert!(why.starts_with("merge cart failed: line "), "{why}");
    assert_eq!(api.get("/healthz").await.status, 200);
    // Doc fields can name a merge too.
    let r = api
        .json(
            Method::PUT,
            "/v1/keyspaces/profiles",
            json!({"policy": "doc", "schema": {"cart": {"merge": "nope"}}}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (400, "unknown_merge".into()),
        "{}",
        r.json()
    );
    let r = api
        .json(Method::PUT, "/v1/keyspaces/profiles", json!({"policy": "doc", "schema": {"cart": {"merge": "cart"}, "tags": {"merge": "union"}}}))
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    let r = api
        .json(
            Method::POST,
            "/v1/kv/profiles/ann",
            json!({"op": "patch", "doc": {"cart": {"fig": 1}, "tags": ["x"], "name": "Ann"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    let b = api.get("/v1/kv/profiles/ann?versions=true").await.json();
    assert_eq!(
        b["value"],
        json!({"cart": {"fig": 1}, "tags": ["x"], "name": "Ann"}),
        "{b}"
    );
    assert_eq!(b["versions"]["cart"].as_array().unwrap().len(), 1, "{b}");
    // The listing shows merged values too.
    let l = api.get("/v1/kv/carts").await.json();
    assert_eq!(
        l["items"][0]["value"],
        json!({"apple": 1, "pear": 1}),
        "{l}"
    );
}
