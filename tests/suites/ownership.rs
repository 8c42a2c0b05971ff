//! Ownership maps between real processes through the link emulator: writes
//! at a non-owner forwarded (or refused with 421), a fenced handoff under
//! steady writes from every region that loses nothing and conflicts
//! nowhere, and a fallback that keeps writes available during a partition
//! and records each one.
//!
//! Past ~400 lines because STYLE keeps one test binary per topic: these cases
//! share the fixtures at the top of this file.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use meridian_client::{Client, ClientError, Options};
use meridian_harness::cluster::{Cluster, ClusterBuilder};
use serde_json::{Value, json};

/// Writes `value` at `c`, retrying while a handoff is pending; the answer
/// body, or the last error.
async fn put_retrying(c: &Client, key: &str, value: &Value) -> Result<Value, ClientError> {
    let mut last = None;
    for _ in 0..100 {
        match c.put("profiles", key, value).await {
            Ok(w) => return Ok(w.body),
            Err(e) if e.status() == Some(503) => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or(ClientError::Invalid("no attempt".into())))
}

async fn setup(latency_ms: u64) -> Cluster {
    setup_with(Cluster::builder().latency_ms(latency_ms)).await
}

/// A cluster from `builder` with the `profiles` keyspace, converged.
async fn setup_with(builder: ClusterBuilder) -> Cluster {
    let c = builder.start().await.unwrap();
    c.client("us-east")
        .define_keyspace("profiles", &json!({"policy": "lww"}))
        .await
        .unwrap();
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    c
}

fn http_error(e: &ClientError) -> (u16, &Value) {
    match (e.status(), e.body()) {
        (Some(status), Some(body)) => (status, body),
        _ => panic!("expected an HTTP error, got {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_at_a_non_owner_is_forwarded_or_refused_by_mode() {
    let c = setup(20).await;
    let us = c.client("us-east");
    // Set at us-east, made by the steward (ap-south, the first by name).
    let map = us
        .set_ownership(
            "profiles",
            &json!({"rules": [{"prefix": "eu/", "owner": "eu-west"}, {"prefix": "us/", "owner": "us-east"}]}),
        )
        .await
        .unwrap();
    assert_eq!(map["epoch"], 1, "{map}");
    assert_eq!(map["steward"], "ap-south");
    // A bad map: 400 naming the rules, nothing changes.
    let bad = us
        .set_ownership(
            "profiles",
            &json!({"rules": [{"prefix": "eu/", "owner": "eu-west"}, {"prefix": "eu/de/", "owner": "us-east"}]}),
        )
        .await
        .unwrap_err();
    let (status, body) = http_error(&bad);
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_map")));
    assert!(
        body["message"].as_str().unwrap().contains("rule 0"),
        "{body}"
    );
    let bad = us
        .set_ownership("profiles", &json!({"rules": [], "default": "mars"}))
        .await
        .unwrap_err();
    assert_eq!(http_error(&bad).0, 400);

    // The owner takes its first write once every region's fence is in.
    let at_owner = put_retrying(&c.client("eu-west"), "eu/alice", &json!({"n": 1}))
        .await
        .unwrap();
    assert_eq!(at_owner["region"], "eu-west");
    // Local writes for comparison, then forwarded ones: one round trip more.
    let mut local = Vec::new();
    let mut forwarded = Vec::new();
    for i in 0..10 {
        let t = Instant::now();
        put_retrying(&us, &format!("us/{i}"), &json!(i))
            .await
            .unwrap();
        local.push(t.elapsed());
        let t = Instant::now();
        let b = put_retrying(&us, &format!("eu/{i}"), &json!(i))
            .await
            .unwrap();
        forwarded.push(t.elapsed());
        assert_eq!(b["region"], "eu-west", "the answer names the owner: {b}");
    }
    local.sort();
    forwarded.sort();
    println!(
        "median write at the owner: {:?}; forwarded from us-east to eu-west (link RTT 40 ms): {:?}",
        local[5], forwarded[5]
    );
    assert!(
        forwarded[5] >= Duration::from_millis(40),
        "a forwarded write crosses the link: {:?}",
        forwarded[5]
    );
    // The forwarded write is at the owner, then everywhere.
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    for r in ["us-east", "eu-west", "ap-south"] {
        let e = c.client(r).get("profiles", "eu/3").await.unwrap().unwrap();
        assert_eq!(e.value(), Some(&json!(3)), "{r}");
    }

    // Mode reject: 421 naming the owner and the epoch.
    let map = us
        .set_ownership(
            "profiles",
            &json!({"rules": [{"prefix": "eu/", "owner": "eu-west"}, {"prefix": "us/", "owner": "us-east"}], "mode": "reject", "epoch": 1}),
        )
        .await
        .unwrap();
    assert_eq!(map["epoch"], 2);
    // A stale compare-and-set changes nothing.
    let stale = us
        .set_ownership("profiles", &json!({"rules": [], "epoch": 1}))
        .await
        .unwrap_err();
    assert_eq!(http_error(&stale).0, 409);
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    let refused = us.put("profiles", "eu/bob", &json!(1)).await.unwrap_err();
    let (status, body) = http_error(&refused);
    assert_eq!(status, 421, "{body}");
    assert_eq!(body["error"], "not_owner");
    assert_eq!(body["owner"], "eu-west");
    assert_eq!(body["epoch"], 2);
    assert!(us.get("profiles", "eu/bob").await.unwrap().is_none());
    // A batch across owners: 400 naming the keys, nothing written.
    let across = us
        .batch(
            &[
                json!({"keyspace": "profiles", "key": "us/x", "op": "put", "value": 1}),
                json!({"keyspace": "profiles", "key": "eu/x", "op": "put", "value": 1}),
            ],
            &Options::default(),
        )
        .await
        .unwrap_err();
    let (status, body) = http_error(&across);
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("spans_owners"))
    );
    assert_eq!(body["keys"].as_array().unwrap().len(), 2, "{body}");
    assert!(us.get("profiles", "us/x").await.unwrap().is_none());
    // Reads from the owner.
    let opts = Options {
        read: Some("owner".into()),
        ..Options::default()
    };
    let (e, _) = us.get_with("profiles", "eu/alice", &opts).await.unwrap();
    let e = e.unwrap();
    assert_eq!(e.value(), Some(&json!({"n": 1})));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_map_change_answers_once_every_region_judges_writes_by_it() {
    // ap-south (the steward) is near us-east and far from eu-west: the
    // steward's answer reaches us-east long before the map reaches eu-west.
    let c = setup_with(
        Cluster::builder()
            .latency_ms(5)
            .pair_latency_ms("ap-south", "eu-west", 300)
            .pair_latency_ms("us-east", "eu-west", 300),
    )
    .await;
    let us = c.client("us-east");
    let map = us
        .set_ownership(
            "profiles",
            &json!({"rules": [{"prefix": "eu/", "owner": "eu-west"}]}),
        )
        .await
        .unwrap();
    assert_eq!(map["epoch"], 1, "{map}");
    assert_eq!(map["in_effect"], true, "{map}");
    assert_eq!(map["waiting_for"], json!([]), "{map}");
    // In effect: every region already judges writes by the map, so none
    // takes a write to eu/ as ownerless any more.
    for r in ["us-east", "eu-west", "ap-south"] {
        let m = c.client(r).ownership("profiles").await.unwrap();
        assert_eq!(m["epoch"], 1, "{r}: {m}");
    }
    // A region cut off cannot apply the next change: the answer says the
    // change is made but not yet in effect there (202), after the wait the
    // request allows.
    c.partition_off("eu-west").unwrap();
    let opts = Options {
        concern_timeout_ms: Some(500),
        ..Options::default()
    };
    let t = Instant::now();
    let moved = us
        .transfer_ownership_with("profiles", &json!({"rule": 0, "to": "us-east"}), &opts)
        .await
        .unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(moved["epoch"], 2, "{moved}");
    assert_eq!(moved["in_effect"], false, "{moved}");
    assert_eq!(moved["waiting_for"], json!(["eu-west"]), "{moved}");
    // Healed, the same change again is unchanged and in effect.
    c.heal();
    let again = us
        .transfer_ownership("profiles", &json!({"rule": 0, "to": "us-east"}))
        .await
        .unwrap();
    assert_eq!(
        (&again["epoch"], &again["changed"], &again["in_effect"]),
        (&json!(2), &json!(false), &json!(true)),
        "{again}"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handoff_under_writes_from_every_region_loses_nothing_and_conflicts_nowhere() {
    let c = setup(10).await;
    let us = c.client("us-east");
    // Answered once in effect everywhere: from here no region takes a
    // write to eu/ as ownerless (those could conflict with the owner's).
    let map = us
        .set_ownership(
            "profiles",
            &json!({"rules": [{"prefix": "eu/", "owner": "eu-west"}]}),
        )
        .await
        .unwrap();
    assert_eq!(map["in_effect"], true, "{map}");
    put_retrying(&c.client("eu-west"), "eu/warm", &json!(0))
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for region in ["us-east", "eu-west", "ap-south"] {
        let client = c.client(region);
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            // Every write hits one of a few shared keys (two regions taking
            // writes there at once would conflict) and a key of its own
            // (which must survive).
            let mut acked = BTreeMap::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let own = format!("eu/{region}-{n}");
                let hot = format!("eu/hot{}", n % 4);
                let ops = [
                    json!({"keyspace": "profiles", "key": own, "op": "put", "value": n}),
                    json!({"keyspace": "profiles", "key": hot, "op": "put", "value": format!("{region}-{n}")}),
                ];
                match client.batch(&ops, &Options::default()).await {
                    Ok(_) => {
                        acked.insert(own, n);
                    }
                    // A handoff in progress, or the owner just changed.
                    Err(e) if matches!(e.status(), Some(503) | Some(421)) => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => panic!("{region}: {e}"),
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let moved = us
        .transfer_ownership(
            "profiles",
            &json!({"rule": {"prefix": "eu/"}, "to": "us-east"}),
        )
        .await
        .unwrap();
    assert_eq!(moved["epoch"], 2, "{moved}");
    assert_eq!(moved["in_effect"], true, "{moved}");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let back = us
        .transfer_ownership("profiles", &json!({"rule": 0, "to": "ap-south"}))
        .await
        .unwrap();
    assert_eq!(back["epoch"], 3);
    assert_eq!(back["in_effect"], true, "{back}");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = BTreeMap::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    assert!(acked.len() > 50, "the writers wrote ({} acks)", acked.len());
    c.wait_converged(Duration::from_secs(60)).await.unwrap();
    for r in ["us-east", "eu-west", "ap-south"] {
        let client = c.client(r);
        for (key, n) in &acked {
            let e = client.get("profiles", key).await.unwrap();
            assert_eq!(
                e.and_then(|e| e.value().cloned()),
                Some(json!(n)),
                "{r}: acknowledged {key} lost"
            );
        }
        let ledger = client
            .conflicts("keyspace=profiles&limit=1000")
            .await
            .unwrap();
        assert_eq!(
            ledger["conflicts"].as_array().map(Vec::len),
            Some(0),
            "{r}: owned keys never conflict: {ledger}"
        );
        let map = client.ownership("profiles").await.unwrap();
        assert_eq!(map["epoch"], 3, "{r}");
        assert_eq!(map["rules"][0]["owner"], "ap-south");
    }
    println!(
        "two handoffs under writes from three regions: {} acknowledged keys, all present in every region, 0 conflicts",
        acked.len()
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_keeps_writes_available_during_a_partition_and_records_each() {
    let c = setup(5).await;
    let us = c.client("us-east");
    us.set_ownership(
        "profiles",
        &json!({"rules": [{"prefix": "eu/", "owner": "eu-west"}], "fallback": "reject"}),
    )
    .await
    .unwrap();
    put_retrying(&c.client("eu-west"), "eu/warm", &json!(0))
        .await
        .unwrap();
    c.partition("us-east", "eu-west").unwrap();
    // Fallback reject: 503 naming the owner, nothing written.
    let refused = us.put("profiles", "eu/r", &json!(1)).await.unwrap_err();
    let (status, body) = http_error(&refused);
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("owner_unreachable")),
        "{body}"
    );
    assert_eq!(body["owner"], "eu-west");
    assert!(us.get("profiles", "eu/r").await.unwrap().is_none());
    // Fallback accept (the steward, ap-south, is still reachable).
    us.set_ownership(
        "profiles",
        &json!({"rules": [{"prefix": "eu/", "owner": "eu-west"}], "fallback": "accept"}),
    )
    .await
    .unwrap();
    let mut taken = 0;
    for i in 0..5 {
        let b = put_retrying(&us, &format!("eu/f{i}"), &json!(i))
            .await
            .unwrap();
        assert_eq!(b["region"], "us-east", "taken here: {b}");
        taken += 1;
    }
    let ledger = us.conflicts("keyspace=profiles&limit=100").await.unwrap();
    let fallbacks: Vec<&Value> = ledger["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["rule"] == "ownership_fallback")
        .collect();
    assert_eq!(
        fallbacks.len(),
        taken,
        "each fallback write recorded: {ledger}"
    );
    c.heal();
    c.wait_converged(Duration::from_secs(60)).await.unwrap();
    let eu = c.client("eu-west");
    for i in 0..5 {
        let e = eu
            .get("profiles", &format!("eu/f{i}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(e.value(), Some(&json!(i)));
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handoff_survives_a_partition_of_the_old_owner_and_its_kill() {
    let mut c = setup(10).await;
    let us = c.client("us-east");
    us.set_ownership(
        "profiles",
        &json!({"rules": [{"prefix": "eu/", "owner": "eu-west"}]}),
    )
    .await
    .unwrap();
    let eu = c.client("eu-west");
    put_retrying(&eu, "eu/before", &json!(0)).await.unwrap();
    // The old owner is cut off from everyone, then the range moves: it has
    // not heard, so it still owns the range at its epoch and keeps taking
    // writes there; the new owner must not take any until it has them.
    c.partition_off("eu-west").unwrap();
    let moved = us
        .transfer_ownership("profiles", &json!({"rule": 0, "to": "us-east"}))
        .await
        .unwrap();
    assert_eq!(moved["epoch"], 2);
    let mut taken_by_old = Vec::new();
    for i in 0..5 {
        let key = format!("eu/cut{i}");
        eu.put("profiles", &key, &json!(i)).await.unwrap();
        taken_by_old.push((key, i));
    }
    // At the new owner: refused while the old owner's fence is missing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pending = us
        .put("profiles", "eu/cut0", &json!("new"))
        .await
        .unwrap_err();
    let (status, body) = http_error(&pending);
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("handoff_pending")),
        "{body}"
    );
    assert!(
        body["waiting_for"].to_string().contains("eu-west"),
        "{body}"
    );
    // The old owner dies (kill -9) before it ever hears of the handoff, and
    // comes back still cut off; then the partition heals.
    c.kill("eu-west").await.unwrap();
    c.restart("eu-west").await.unwrap();
    c.heal();
    // Once its fence arrives the new owner takes writes, after the old
    // owner's: the key ends with the new value everywhere, no conflict.
    let b = put_retrying(&us, "eu/cut0", &json!("new")).await.unwrap();
    assert_eq!(b["region"], "us-east");
    c.wait_converged(Duration::from_secs(60)).await.unwrap();
    for r in ["us-east", "eu-west", "ap-south"] {
        let client = c.client(r);
        let e = client.get("profiles", "eu/cut0").await.unwrap().unwrap();
        assert_eq!(e.value(), Some(&json!("new")), "{r}");
        for (key, i) in &taken_by_old[1..] {
            let e = client.get("profiles", key).await.unwrap().unwrap();
            assert_eq!(e.value(), Some(&json!(i)), "{r}: {key} lost");
        }
        let ledger = client
            .conflicts("keyspace=profiles&limit=100")
            .await
            .unwrap();
        assert_eq!(
            ledger["conflicts"].as_array().map(Vec::len),
            Some(0),
            "{r}: {ledger}"
        );
    }
    c.stop().await;
}
