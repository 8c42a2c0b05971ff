//! A hostile client against a real `meridian serve` process: every limit at
//! and just over, forged headers, schema changes, a full disk. Each refusal
//! is a 4xx with a JSON body naming what was wrong; nothing half-written;
//! the region restarts from everything it accepted.

use std::time::Duration;

use http::Method;
use meridian_core::budget::{MAX_MUTATIONS, MAX_OBJECT, MAX_OP, MAX_SIBLING_CAP, MAX_VALUE};
use meridian_crdt::{RegionId, ReplicaId, Seq, VersionVector};
use meridian_harness::node::{Node, NodeSpec};
use serde_json::{Value, json};

mod common;
use common::{Api, Resp};

/// A JSON string body of exactly `len` bytes (quotes included), distinct per tag.
fn json_string(tag: usize, len: usize) -> String {
    format!("\"{tag:08}{}\"", "v".repeat(len - 10))
}

async fn put_raw(api: &Api, path: &str, body: String, headers: &[(&str, &str)]) -> Resp {
    let mut h = vec![("content-type", "application/json")];
    h.extend_from_slice(headers);
    api.req(Method::PUT, path, &h, body).await
}

fn is_json_error(r: &Resp, status: u16, code: &str) -> bool {
    r.status == status && r.json()["error"] == json!(code) && r.json()["message"].is_string()
}

#[tokio::test]
async fn every_limit_at_and_over_is_a_4xx_and_the_region_restarts_from_what_it_took() {
    let mut api = Api::start("hostile-limits").await;

    // Keys: 1024 bytes at most.
    let at = format!("/v1/kv/default/{}", "k".repeat(1024));
    assert_eq!(api.json(Method::PUT, &at, json!(1)).await.status, 200);
    let over = format!("/v1/kv/default/{}", "k".repeat(1025));
    let r = api.json(Method::PUT, &over, json!(1)).await;
    assert!(r.status == 400 && r.says("1025"), "{}", r.status);

    // Values: MAX_VALUE bytes at most.
    let r = put_raw(&api, "/v1/kv/default/v", json_string(0, MAX_VALUE), &[]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = put_raw(
        &api,
        "/v1/kv/default/v2",
        json_string(1, MAX_VALUE + 1),
        &[],
    )
    .await;
    assert!(
        r.status == 413 && r.json()["message"].is_string(),
        "{}",
        r.status
    );
    assert_eq!(api.get("/v1/kv/default/v2").await.status, 404);

    // Siblings: the cap is bounded so that cap x value fits the object budget.
    let over_cap = json!({"policy": "mv", "sibling_cap": MAX_SIBLING_CAP + 1});
    let r = api.json(Method::PUT, "/v1/keyspaces/m", over_cap).await;
    assert!(is_json_error(&r, 400, "invalid_keyspace") && r.says("sibling_cap"));
    let at_cap = json!({"policy": "mv", "sibling_cap": MAX_SIBLING_CAP});
    assert!(
        api.json(Method::PUT, "/v1/keyspaces/m", at_cap)
            .await
            .status
            < 300
    );
    for i in 0..(MAX_SIBLING_CAP as usize + 4) {
        let r = put_raw(&api, "/v1/kv/m/k", json_string(i, MAX_VALUE), &[]).await;
        assert_eq!(r.status, 200, "blind mv put {i}");
    }

    // Set members: the object budget, then a replace too big for one op.
    let r = api
        .json(Method::PUT, "/v1/keyspaces/s", json!({"policy": "set"}))
        .await;
    assert!(r.status < 300);
    let mut members = 0usize;
    let refusal = loop {
        let member: Value = serde_json::from_str(&json_string(members, MAX_VALUE - 16)).unwrap();
        let r = api
            .json(
                Method::POST,
                "/v1/kv/s/big",
                json!({"op": "add", "values": [member]}),
            )
            .await;
        if r.status != 200 {
            break r;
        }
        members += 1;
        assert!(members < 100, "the set never reached its budget");
    };
    assert!(
        is_json_error(&refusal, 413, "object_too_large"),
        "{}",
        refusal.status
    );
    let body = refusal.json();
    assert_eq!(
        (&body["keyspace"], &body["key"]),
        (&json!("s"), &json!("big"))
    );
    assert_eq!(body["limit"], json!(MAX_OBJECT));
    let r = api.json(Method::PUT, "/v1/kv/s/big", json!([])).await;
    assert!(is_json_error(&r, 413, "op_too_large"), "{}", r.status);
    assert_eq!(r.json()["limit"], json!(MAX_OP));
    let count = |r: &Resp| r.json()["value"].as_array().map_or(0, Vec::len);
    assert_eq!(count(&api.get("/v1/kv/s/big").await), members);

    // Batches: MAX_MUTATIONS changes at most.
    let ops = |n: usize| {
        let ops: Vec<Value> = (0..n)
            .map(|i| json!({"keyspace": "default", "key": format!("b{n}-{i}"), "op": "put", "value": i}))
            .collect();
        json!({ "ops": ops })
    };
    assert_eq!(
        api.json(Method::POST, "/v1/batch", ops(MAX_MUTATIONS))
            .await
            .status,
        200
    );
    let r = api
        .json(Method::POST, "/v1/batch", ops(MAX_MUTATIONS + 1))
        .await;
    assert!(r.status == 413 && r.says("1001"), "{}", r.status);
    assert_eq!(api.get("/v1/kv/default/b1001-0").await.status, 404);

    // A forged context (claiming seq 2^62 of this region) cannot hide later writes.
    let status = api.get("/v1/status").await.json();
    let replica = ReplicaId::new(
        RegionId::new(status["replica"]["region"].as_str().unwrap()).unwrap(),
        status["replica"]["incarnation"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap(),
    );
    let forged: VersionVector = [(replica, Seq(1 << 62))].into_iter().collect();
    let forged = meridian_core::token::encode(&forged);
    let r = put_raw(
        &api,
        "/v1/kv/m/ctx",
        "\"forged\"".into(),
        &[("meridian-context", &forged)],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        put_raw(&api, "/v1/kv/m/ctx", "\"later\"".into(), &[])
            .await
            .status,
        200
    );
    let seen = api.get("/v1/kv/m/ctx").await.json().to_string();
    assert!(seen.contains("later"), "a later write vanished: {seen}");

    // Tokens: malformed is a 400; one claiming writes that do not exist
    // waits its bound, then 503 naming what the region lacks.
    let r = api
        .req(
            Method::GET,
            "/v1/kv/default/v",
            &[("meridian-token", "%%%")],
            "",
        )
        .await;
    assert!(is_json_error(&r, 400, "bad_request"), "{}", r.status);
    let ahead = [
        ("meridian-token", forged.as_str()),
        ("meridian-wait-ms", "100"),
    ];
    let r = api.req(Method::GET, "/v1/kv/default/v", &ahead, "").await;
    assert!(is_json_error(&r, 503, "behind_token"), "{}", r.status);

    // A schema change that would make patches no-ops: 409, nothing changed.
    let doc = json!({"policy": "doc", "schema": {"likes": "counter"}});
    assert!(api.json(Method::PUT, "/v1/keyspaces/d", doc).await.status < 300);
    let r = api
        .json(
            Method::POST,
            "/v1/kv/d/p",
            json!({"op": "patch", "doc": {"likes": 2}}),
        )
        .await;
    assert_eq!(r.status, 200);
    let lww = json!({"policy": "doc", "schema": {"likes": "lww"}});
    let r = api.json(Method::PUT, "/v1/keyspaces/d", lww).await;
    assert!(
        is_json_error(&r, 409, "schema_change") && r.says("likes"),
        "{}",
        r.status
    );
    let r = api
        .json(
            Method::POST,
            "/v1/kv/d/p",
            json!({"op": "patch", "doc": {"likes": 3}}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        api.get("/v1/kv/d/p").await.json()["value"]["likes"],
        json!(5)
    );

    // Everything accepted is there after kill -9 and a restart.
    let ops_before = api.get("/v1/status").await.json()["ops"].clone();
    api.node.restart().await.unwrap();
    assert_eq!(api.get("/v1/status").await.json()["ops"], ops_before);
    assert_eq!(count(&api.get("/v1/kv/s/big").await), members);
    let siblings = api.get("/v1/kv/m/k").await.json();
    assert_eq!(
        siblings["siblings"].as_array().map(Vec::len),
        Some(MAX_SIBLING_CAP as usize),
        "{}",
        siblings.to_string().chars().take(200).collect::<String>()
    );
    assert_eq!(
        api.get("/v1/kv/d/p").await.json()["value"]["likes"],
        json!(5)
    );
    // And it still takes writes.
    assert_eq!(
        api.json(Method::PUT, "/v1/kv/default/after", json!(1))
            .await
            .status,
        200
    );
}

/// Runs `cmd`; whether it exited 0.
fn sh(cmd: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", cmd])
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test]
async fn a_full_disk_fails_health_and_the_process_exits_non_zero() {
    // Before: after the writer's fatal error the process kept running and
    // /healthz answered 200, so no orchestrator ever restarted it.
    let dir = std::env::temp_dir().join(format!("meridian-fulldisk-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let mount = dir.display().to_string();
    assert!(
        sh(&format!("mount -t tmpfs -o size=24m tmpfs {mount}")),
        "this test needs to mount a small tmpfs (run as root, as CI does)"
    );
    struct Unmount(String);
    impl Drop for Unmount {
        fn drop(&mut self) {
            sh(&format!("umount -l {}", self.0));
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _unmount = Unmount(mount);
    let spec = NodeSpec::new("us-east", &dir.join("data"));
    let mut node = Node::start(std::path::Path::new(env!("CARGO_BIN_EXE_meridian")), spec)
        .await
        .expect("start");
    let c = node.client();
    let mut refused = false;
    for i in 0..200 {
        let v = json!("x".repeat(512 << 10));
        if let Err(e) = c.put("default", &format!("k{i}"), &v).await {
            println!("write {i} refused: {e}");
            refused = true;
            break;
        }
    }
    assert!(refused, "24 MiB of disk never filled");
    assert!(
        !c.healthy().await,
        "/healthz must not answer 200 after a fatal error"
    );
    let status = node.wait_exit(Duration::from_secs(30)).await;
    let status = status.expect("the process exits by itself once its writer failed");
    assert!(!status.success(), "exit status {status}");
}
