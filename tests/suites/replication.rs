//! Multi-leader replication between real processes through the link
//! emulator: partitions under writes, relaying around a cut, a region killed
//! under load, and forged batches.
//!
//! Past ~400 lines because STYLE keeps one test binary per topic: these cases
//! share the fixtures at the top of this file.

use std::time::Duration;

use meridian_harness::check;
use meridian_harness::cluster::Cluster;
use meridian_harness::workload::{self, History};
use serde_json::json;

fn clients(c: &Cluster) -> Vec<(String, meridian_client::Client)> {
    c.regions.iter().map(|r| (r.clone(), c.client(r))).collect()
}

/// Runs `writers` mixed writers per region for `ms` milliseconds.
async fn write_for(c: &Cluster, writers: usize, ms: u64) -> History {
    let (stop, history, tasks) = workload::start_writers(&clients(c), writers, 3_000);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    workload::stop_writers(stop, history, tasks).await
}

/// Runs every checker and fails with their reports unless all pass.
async fn check_everywhere(c: &Cluster, h: &History) -> u64 {
    let v = check::check_all(c, h, Duration::from_secs(60)).await;
    println!("{}\n{v}", check::summary(h));
    assert!(v.ok(), "checks failed:\n{v}");
    v.checked()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_way_partition_under_writes_converges_after_heal() {
    let c = Cluster::builder().latency_ms(10).start().await.unwrap();
    workload::define_keyspaces(&c.client("us-east"))
        .await
        .unwrap();
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    c.partition("us-east", "eu-west").unwrap();
    c.partition("us-east", "ap-south").unwrap();
    c.partition("eu-west", "ap-south").unwrap();
    let h = write_for(&c, 4, 4_000).await;
    // While cut off, each region holds only its own writes.
    let s = c.statuses().await;
    let ops: Vec<u64> = s
        .values()
        .map(|s| s.as_ref().unwrap()["ops"].as_u64().unwrap())
        .collect();
    assert!(
        ops.windows(2).any(|w| w[0] != w[1]),
        "regions diverge during the partition: {ops:?}"
    );
    c.heal();
    let took = c.wait_converged(Duration::from_secs(60)).await.unwrap();
    let checked = check_everywhere(&c, &h).await;
    println!(
        "three-way partition: {} acknowledged, {} indeterminate, converged {took:?} after heal, {checked} checks in 3 regions, 0 lost",
        h.ok, h.indeterminate
    );
    assert!(h.ok > 200, "the workload must write ({} acks)", h.ok);
    c.stop().await;
}

/// A peer's entry in a region's status.
async fn link(c: &Cluster, from: &str, to: &str) -> serde_json::Value {
    let s = c.client(from).status().await.unwrap();
    s["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["region"] == to)
        .cloned()
        .unwrap_or_else(|| panic!("{from} has no link to {to}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_that_speaks_only_wire_version_1_replicates_with_the_others() {
    // ap-south speaks as a build from before wire version 2: it neither
    // offers nor answers in it, and refuses version-2 batches.
    let c = Cluster::builder()
        .latency_ms(10)
        .region_env("ap-south", "MERIDIAN_REPLICATION__WIRE_VERSION", "1")
        .start()
        .await
        .unwrap();
    workload::define_keyspaces(&c.client("us-east"))
        .await
        .unwrap();
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    let (stop, history, tasks) = workload::start_writers(&clients(&c), 3, 3_000);
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    // Then all between us-east and eu-west goes through ap-south, relayed
    // from version 2 into version 1 and out again.
    c.partition("us-east", "eu-west").unwrap();
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    c.heal();
    let h = workload::stop_writers(stop, history, tasks).await;
    c.wait_converged(Duration::from_secs(60)).await.unwrap();
    let checked = check_everywhere(&c, &h).await;
    assert!(h.ok > 200, "the workload must write ({} acks)", h.ok);
    for (from, to, want) in [
        ("us-east", "eu-west", 2),
        ("eu-west", "us-east", 2),
        ("us-east", "ap-south", 1),
        ("eu-west", "ap-south", 1),
        ("ap-south", "us-east", 1),
        ("ap-south", "eu-west", 1),
    ] {
        let l = link(&c, from, to).await;
        assert_eq!(l["wire_version"], want, "{from} -> {to}: {l}");
        // (The cut made sessions fail; a version mismatch never did.)
        assert!(
            !l["last_error"].to_string().contains("version"),
            "{from} -> {to}: {l}"
        );
    }
    // The same sender's own ops cost fewer bytes on the version-2 link.
    let per_op = |l: &serde_json::Value| {
        l["bytes_sent"].as_f64().unwrap() / l["ops_sent"].as_f64().unwrap().max(1.0)
    };
    let (v2, v1) = (
        per_op(&link(&c, "us-east", "eu-west").await),
        per_op(&link(&c, "us-east", "ap-south").await),
    );
    println!(
        "mixed wire versions: {} acknowledged, {checked} checks, bytes per op shipped {v2:.1} (version 2) / {v1:.1} (version 1)",
        h.ok
    );
    assert!(
        v2 + 5.0 < v1,
        "version 2 {v2:.1}, version 1 {v1:.1} bytes per op"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regions_do_not_relay_what_the_origin_ships_to_the_peer_itself() {
    let c = Cluster::builder().latency_ms(20).start().await.unwrap();
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    // (Sessions fail while the regions start; none may fail from here on.)
    let errors_before = (
        link(&c, "ap-south", "eu-west").await["errors"].clone(),
        link(&c, "eu-west", "ap-south").await["errors"].clone(),
    );
    let east = c.client("us-east");
    for i in 0..300 {
        east.put("default", &format!("direct-{i}"), &json!(i))
            .await
            .unwrap();
    }
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    let ops = |l: &serde_json::Value| l["ops_sent"].as_u64().unwrap();
    let direct = ops(&link(&c, "us-east", "eu-west").await);
    let relayed =
        ops(&link(&c, "ap-south", "eu-west").await) + ops(&link(&c, "eu-west", "ap-south").await);
    let asked = link(&c, "ap-south", "eu-west").await;
    let other = link(&c, "eu-west", "ap-south").await;
    let probes = asked["relay_probes"].clone();
    // ap-south wrote nothing: only probes told it what eu-west held. They
    // are answered like batches: no session failed on them.
    assert!(probes.as_u64().unwrap() > 0, "{asked}");
    assert_eq!(
        (asked["errors"].clone(), other["errors"].clone()),
        errors_before,
        "{asked}\n{other}"
    );
    println!(
        "300 writes in us-east: {direct} shipped to eu-west directly, {relayed} relayed between the others, {probes} probes"
    );
    assert!(direct >= 300, "{direct}");
    // Each of the others had every op from us-east before its hold was
    // over; a stray relay at a session's start is all that may cross.
    assert!(relayed <= 30, "{relayed} of 300 ops relayed");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_relays_between_two_that_cannot_reach_each_other() {
    let c = Cluster::builder().start().await.unwrap();
    c.partition("us-east", "eu-west").unwrap();
    let before = c.links().stats("us-east", "eu-west").unwrap().bytes_forward;
    let east = c.client("us-east");
    for i in 0..50 {
        east.put("default", &format!("relayed-{i}"), &json!(i))
            .await
            .unwrap();
    }
    let west = c.client("eu-west");
    let mut seen = 0;
    for _ in 0..100 {
        seen = 0;
        for i in 0..50 {
            if west
                .get("default", &format!("relayed-{i}"))
                .await
                .unwrap()
                .is_some()
            {
                seen += 1;
            }
        }
        if seen == 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, 50, "eu-west got us-east's writes through ap-south");
    let direct = c.links().stats("us-east", "eu-west").unwrap();
    assert_eq!(
        direct.bytes_forward, before,
        "nothing went over the cut link"
    );
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_killed_under_load_catches_up_and_loses_nothing() {
    let mut c = Cluster::builder().latency_ms(5).start().await.unwrap();
    workload::define_keyspaces(&c.client("us-east"))
        .await
        .unwrap();
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    let (stop, history, tasks) = workload::start_writers(&clients(&c), 4, 3_000);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    c.kill("eu-west").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    c.restart("eu-west").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let h = workload::stop_writers(stop, history, tasks).await;
    let took = c.wait_converged(Duration::from_secs(60)).await.unwrap();
    let checked = check_everywhere(&c, &h).await;
    println!(
        "kill -9 under load: {} acknowledged, {} indeterminate, {} refused; converged {took:?} after the load; {checked} checks, 0 lost",
        h.ok, h.indeterminate, h.failed
    );
    assert!(h.ok > 200);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_a_bad_signature_is_refused_counted_and_changes_nothing() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use meridian_core::replication::wire;
    use meridian_core::{Key, KeyspaceName, Mutation, Op};
    use meridian_crdt::{
        Dot, Hlc, Json, LwwOp, ObjectOp, RegionId, ReplicaId, Seq, Value, VersionVector,
    };

    let c = Cluster::builder()
        .regions(["us-east", "eu-west"])
        .start()
        .await
        .unwrap();
    let forger = ReplicaId::new(
        RegionId::new("mallory").unwrap(),
        uuid::Uuid::from_u128(666),
    );
    let op = Op {
        dot: Dot::new(forger.clone(), Seq(1)),
        hlc: Hlc::new(1, 0).unwrap(),
        deps: VersionVector::new(),
        mutations: vec![Mutation {
            keyspace: KeyspaceName::default_keyspace(),
            key: Key::new("forged").unwrap(),
            op: ObjectOp::Lww(LwwOp::Set(Value::Json(Json::parse("\"pwned\"").unwrap()))),
        }],
    };
    let batch = wire::encode(&forger, 1, &[op]).unwrap();
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let url = format!("{}/peer/v1/ops", c.peer_url("us-east").unwrap());
    let mut bodies = Vec::new();
    // A made-up tag; no tag at all; a valid-looking tag over other bytes.
    let mut forged = vec![0x5a; 32];
    forged.extend_from_slice(&batch);
    bodies.push(forged);
    bodies.push(batch.clone());
    let mut shifted = batch.clone();
    shifted.insert(0, 1);
    bodies.push(shifted);
    for body in bodies {
        let req = http::Request::post(&url)
            .header("meridian-peer", "mallory")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let resp = http.request(req).await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(status, 401, "{}", String::from_utf8_lossy(&text));
        assert!(String::from_utf8_lossy(&text).contains("unauthenticated"));
    }
    let s = c.client("us-east").status().await.unwrap();
    assert_eq!(s["peer_auth_failures"], json!(3));
    assert_eq!(s["ops"], json!(0), "nothing was applied");
    assert!(
        c.client("us-east")
            .get("default", "forged")
            .await
            .unwrap()
            .is_none()
    );
    let m = reqwest_free_metrics(&c.url("us-east").unwrap()).await;
    assert!(
        m.contains("meridian_peer_auth_failures_total{region=\"us-east\"} 3"),
        "{m}"
    );
    c.stop().await;
}

async fn reqwest_free_metrics(url: &str) -> String {
    use http_body_util::{BodyExt, Empty};
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    let resp = http
        .get(format!("{url}/metrics").parse().unwrap())
        .await
        .unwrap();
    String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_behind_the_log_retention_gets_a_state_transfer() {
    // Tiny log segments and retention, frequent checkpoints: the log forgets
    // fast, so a region cut off for a while can only catch up by state transfer.
    let c = Cluster::builder()
        .regions(["us-east", "eu-west"])
        .env("MERIDIAN_OP_LOG__SEGMENT_MB", "1")
        .env("MERIDIAN_OP_LOG__RETENTION_MB", "1")
        .env("MERIDIAN_CHECKPOINT_INTERVAL_MS", "200")
        .start()
        .await
        .unwrap();
    let east = c.client("us-east");
    east.define_keyspace("hits", &json!({"policy": "counter"}))
        .await
        .unwrap();
    east.put("default", "before", &json!("cut")).await.unwrap();
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    c.partition("us-east", "eu-west").unwrap();
    let pad = "x".repeat(1000);
    for i in 0..4000 {
        east.put("default", &format!("k{i:05}"), &json!({"i": i, "pad": pad}))
            .await
            .unwrap();
    }
    east.incr("hits", "n", 7).await.unwrap();
    east.delete("default", "before").await.unwrap();
    // Wait until retention has dropped the ops eu-west lacks.
    let mut trimmed = false;
    for _ in 0..100 {
        let s = east.status().await.unwrap();
        if s["log"]["start_lsn"].as_u64().unwrap() > 10 {
            trimmed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(trimmed, "retention should have dropped the oldest segments");
    c.heal();
    c.wait_converged(Duration::from_secs(60)).await.unwrap();
    let west = c.client("eu-west");
    assert_eq!(
        west.get("default", "k03999")
            .await
            .unwrap()
            .unwrap()
            .value()
            .unwrap()["i"],
        json!(3999)
    );
    assert_eq!(
        west.get("hits", "n").await.unwrap().unwrap().value(),
        Some(&json!(7))
    );
    assert!(
        west.get("default", "before").await.unwrap().is_none(),
        "the delete came too"
    );
    // The sender counts the transfer when the last page's ack comes back.
    let mut link = json!(null);
    for _ in 0..100 {
        link = east.status().await.unwrap()["peers"][0].clone();
        if link["state_transfers"].as_u64().unwrap() >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        link["state_transfers"].as_u64().unwrap() >= 1,
        "eu-west must have caught up by state transfer: {link}"
    );
    // Writes after the transfer flow as ops again.
    east.put("default", "after", &json!(1)).await.unwrap();
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    assert!(west.get("default", "after").await.unwrap().is_some());
    c.stop().await;
}

/// A string of about `n` bytes, distinct per `tag`.
fn big_string(tag: usize, n: usize) -> serde_json::Value {
    json!(format!("{tag:08}{}", "m".repeat(n - 8)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_legal_ops_of_every_policy_cross_a_healed_partition() {
    // Before the byte-bounded batches, the sender sized batches by a 64-byte
    // guess per op and kept resending one 40 MB batch the receiver refused.
    let c = Cluster::builder().latency_ms(5).start().await.unwrap();
    let east = c.client("us-east");
    for (name, def) in [
        ("bl", json!({"policy": "lww"})),
        ("bm", json!({"policy": "mv"})),
        ("bc", json!({"policy": "counter"})),
        ("bs", json!({"policy": "set"})),
        ("bd", json!({"policy": "doc"})),
    ] {
        east.define_keyspace(name, &def).await.unwrap();
    }
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    c.partition_off("eu-west").unwrap();
    const MB: usize = 1_000_000;
    for i in 0..40 {
        east.add("bs", &format!("s{}", i % 4), &[big_string(i, MB)])
            .await
            .unwrap_or_else(|e| panic!("set add {i}: {e}"));
    }
    for i in 0..20 {
        east.put("bm", "siblings", &big_string(i, MB))
            .await
            .unwrap();
        east.put("bl", &format!("l{i}"), &big_string(i, MB))
            .await
            .unwrap();
        east.patch("bd", "doc", &json!({ format!("f{i}"): big_string(i, MB) }))
            .await
            .unwrap();
        east.incr("bc", "n", 1).await.unwrap();
    }
    // One op near the op budget: a batch of 15 values of 1 MB.
    let ops: Vec<serde_json::Value> = (0..15)
        .map(|i| json!({"keyspace": "bl", "key": format!("batch-{i}"), "op": "put", "value": big_string(i, MB)}))
        .collect();
    east.batch(&ops, &Default::default()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.heal();
    let took = c.wait_converged(Duration::from_secs(120)).await.unwrap();
    let west = c.client("eu-west");
    let n = west.get("bc", "n").await.unwrap().expect("counter");
    assert_eq!(n.value(), Some(&json!(20)));
    for key in ["batch-14", "l19"] {
        assert!(west.get("bl", key).await.unwrap().is_some(), "{key}");
    }
    println!("largest legal ops: ~95 MB written behind a partition, converged {took:?} after heal");
    c.stop().await;
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_whose_disk_was_rolled_back_comes_back_as_a_new_incarnation_and_loses_nothing() {
    // Before: the rolled-back region reissued seqs 21.. that its peers
    // already held, and they dropped its new writes as duplicates.
    let mut c = Cluster::builder().latency_ms(5).start().await.unwrap();
    let east = c.client("us-east");
    let incarnation = |s: &serde_json::Value| s["replica"]["incarnation"].clone();
    let first = incarnation(&east.status().await.unwrap());
    for i in 0..20 {
        east.put("default", &format!("a{i}"), &json!(i))
            .await
            .unwrap();
    }
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    // A "VM snapshot" of us-east's log and state, taken while it is stopped.
    let data = c.dir().join("us-east");
    let snap = c.dir().join("us-east-snapshot");
    c.stop_region("us-east").await.unwrap();
    for part in ["log", "state"] {
        copy_dir(&data.join(part), &snap.join(part));
    }
    c.restart("us-east").await.unwrap();
    for i in 0..30 {
        east.put("default", &format!("b{i}"), &json!(i))
            .await
            .unwrap();
    }
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    // Roll the disk back; identity.json stays as it is.
    c.stop_region("us-east").await.unwrap();
    for part in ["log", "state"] {
        std::fs::remove_dir_all(data.join(part)).unwrap();
        copy_dir(&snap.join(part), &data.join(part));
    }
    c.restart("us-east").await.unwrap();
    // Its peers hold seq 50 of this incarnation, it has 20: before taking a
    // write it continues as a new incarnation.
    let second = incarnation(&east.status().await.unwrap());
    assert_ne!(first, second, "a new incarnation after the rollback");
    for i in 0..10 {
        east.put("default", &format!("c{i}"), &json!(i))
            .await
            .unwrap();
    }
    c.wait_converged(Duration::from_secs(60)).await.unwrap();
    for region in ["us-east", "eu-west", "ap-south"] {
        let cl = c.client(region);
        for (prefix, n) in [("a", 20), ("b", 30), ("c", 10)] {
            for i in 0..n {
                let got = cl.get("default", &format!("{prefix}{i}")).await.unwrap();
                assert_eq!(
                    got.and_then(|e| e.value().cloned()),
                    Some(json!(i)),
                    "{prefix}{i} in {region}"
                );
            }
        }
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_restarted_while_a_peer_is_unreachable_continues_as_a_new_incarnation() {
    // A peer that cannot answer might be the one holding own ops this
    // region lost: the region cannot rule out a rollback, so it does not
    // reuse its seqs.
    let mut c = Cluster::builder().latency_ms(5).start().await.unwrap();
    let east = c.client("us-east");
    let incarnation = |s: &serde_json::Value| s["replica"]["incarnation"].clone();
    let first = incarnation(&east.status().await.unwrap());
    for i in 0..10 {
        east.put("default", &format!("p{i}"), &json!(i))
            .await
            .unwrap();
    }
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    // A plain restart with every peer reachable keeps the incarnation.
    c.restart("us-east").await.unwrap();
    assert_eq!(incarnation(&east.status().await.unwrap()), first);
    c.partition("us-east", "ap-south").unwrap();
    c.restart("us-east").await.unwrap();
    let second = incarnation(&east.status().await.unwrap());
    assert_ne!(first, second);
    for i in 10..20 {
        east.put("default", &format!("p{i}"), &json!(i))
            .await
            .unwrap();
    }
    c.heal();
    c.wait_converged(Duration::from_secs(60)).await.unwrap();
    for region in ["eu-west", "ap-south"] {
        for i in 0..20 {
            let got = c
                .client(region)
                .get("default", &format!("p{i}"))
                .await
                .unwrap();
            assert_eq!(
                got.and_then(|e| e.value().cloned()),
                Some(json!(i)),
                "p{i} in {region}"
            );
        }
    }
    c.stop().await;
}

/// A cart merged by a script: every write is a change `{item: delta}`, the
/// script sums them per item. Written in three regions cut off from each
/// other, with one region killed (-9) and restarted while cut off; after the
/// heal every region shows the same cart, the sum of every acknowledged
/// change, as one version (the merger's write-back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cart_merged_by_a_script_converges_across_partitions_and_a_kill() {
    const CART: &str = "fn merge(versions) {\n  let cart = #{};\n  for v in versions {\n    for item in v.value.keys() {\n      cart[item] = (cart[item] ?? 0) + v.value[item];\n    }\n  }\n  cart.filter(|item, qty| qty != 0)\n}";
    let mut c = Cluster::builder().latency_ms(5).start().await.unwrap();
    let east = c.client("us-east");
    east.define_merge(
        "cart",
        &json!({"script": CART, "samples": [[{"a": 1}, {"a": -1, "b": 2}]]}),
    )
    .await
    .unwrap();
    east.define_keyspace("carts", &json!({"policy": "custom", "merge": "cart"}))
        .await
        .unwrap();
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    c.partition("us-east", "eu-west").unwrap();
    c.partition("us-east", "ap-south").unwrap();
    c.partition("eu-west", "ap-south").unwrap();
    let items = ["apple", "pear", "fig"];
    let mut expect: std::collections::BTreeMap<String, std::collections::BTreeMap<&str, i64>> =
        Default::default();
    let mut acked = 0;
    for round in 0..4 {
        for (ri, region) in c.regions.clone().iter().enumerate() {
            let client = c.client(region);
            for k in 0..4 {
                let key = format!("cart-{k}");
                let item = items[(round + ri + k) % 3];
                let delta = if (round + k) % 3 == 2 {
                    -1
                } else {
                    (ri + 1) as i64
                };
                client
                    .put("carts", &key, &json!({ item: delta }))
                    .await
                    .unwrap();
                acked += 1;
                *expect.entry(key).or_default().entry(item).or_default() += delta;
            }
        }
        if round == 1 {
            // Acknowledged, not yet shipped anywhere: must survive kill -9.
            c.kill("eu-west").await.unwrap();
            c.restart("eu-west").await.unwrap();
        }
    }
    // While cut off, a region that is not a key's merger holds its own
    // changes as separate versions, merged on read.
    let mut unmerged = 0;
    for region in &c.regions {
        for k in 0..4 {
            let e = c
                .client(region)
                .get("carts", &format!("cart-{k}"))
                .await
                .unwrap()
                .unwrap();
            if e.body["merge"]["versions"].as_u64().unwrap_or(1) > 1 {
                unmerged += 1;
            }
        }
    }
    assert!(
        unmerged >= 4,
        "versions kept apart during the partition: {unmerged}"
    );
    c.heal();
    c.wait_converged(Duration::from_secs(60)).await.unwrap();
    let want: std::collections::BTreeMap<String, serde_json::Value> = expect
        .iter()
        .map(|(k, cart)| {
            let m: serde_json::Map<String, serde_json::Value> = cart
                .iter()
                .filter(|(_, q)| **q != 0)
                .map(|(i, q)| (i.to_string(), json!(q)))
                .collect();
            (k.clone(), serde_json::Value::Object(m))
        })
        .collect();
    // Converged digests can still hold several versions for a moment:
    // wait for the write-backs to collapse them everywhere.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    loop {
        let mut done = true;
        for region in &c.regions {
            for (key, cart) in &want {
                let e = c.client(region).get("carts", key).await.unwrap().unwrap();
                if e.value() != Some(cart) || e.body.get("merge").is_some() {
                    done = false;
                    last = format!("{region} {key}: {} (want {cart})", e.body);
                }
            }
        }
        if done {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not collapsed: {last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every region's ledger holds the write-backs, naming the script.
    for region in &c.regions {
        let l = c
            .client(region)
            .conflicts("keyspace=carts&limit=1000")
            .await
            .unwrap();
        let merges = l["conflicts"].as_array().unwrap();
        assert!(!merges.is_empty(), "{region} recorded no merge");
        assert!(
            merges
                .iter()
                .all(|m| m["merge"]["function"] == json!("cart"))
        );
    }
    // Emptying a cart replaces its versions: only its merger takes that.
    let mut took = Vec::new();
    let mut named = Vec::new();
    for region in &c.regions {
        match c.client(region).delete("carts", "cart-0").await {
            Ok(_) => took.push(region.clone()),
            Err(meridian_client::ClientError::Http {
                status, code, body, ..
            }) => {
                assert_eq!((status, code.as_str()), (409, "not_merger"));
                named.push(body["merger"].as_str().unwrap().to_string());
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(
        took.len(),
        1,
        "exactly one region takes the delete: {took:?} {named:?}"
    );
    assert!(named.iter().all(|m| *m == took[0]), "{named:?} vs {took:?}");
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    for region in &c.regions {
        assert!(
            c.client(region)
                .get("carts", "cart-0")
                .await
                .unwrap()
                .is_none()
        );
    }
    println!(
        "cart: {acked} acknowledged changes in 3 partitioned regions, one killed; {unmerged} region-keys held unmerged versions while cut off; after the heal 4 carts equal to the sum everywhere, one version each; a delete taken only by the merger ({})",
        took[0]
    );
    c.stop().await;
}
