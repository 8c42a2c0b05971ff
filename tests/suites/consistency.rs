//! The consistency a user can choose, against real processes through the
//! link emulator: write concerns, causal tokens (read-your-writes,
//! monotonic reads, monotonic writes, writes-follow-reads), quorum reads
//! with read repair, the conflict ledger, anti-entropy and tombstones.
//!
//! Past ~400 lines because STYLE keeps one test binary per topic: these cases
//! share the fixtures at the top of this file.

use std::time::Duration;

use meridian_client::{ClientError, Options, Session};
use meridian_harness::cluster::Cluster;
use serde_json::{Value, json};

/// Polls `/v1/status` until the counter `field` is above 0 or `within`
/// passes; returns its last value.
async fn status_count(c: &meridian_client::Client, field: &str, within: Duration) -> u64 {
    let deadline = std::time::Instant::now() + within;
    loop {
        let n = c.status().await.unwrap()[field].as_u64().unwrap();
        if n > 0 || std::time::Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn concern(c: &str, timeout_ms: u64) -> Options {
    Options {
        write_concern: Some(c.into()),
        concern_timeout_ms: Some(timeout_ms),
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_concerns_wait_for_regions_and_never_roll_back() {
    let c = Cluster::builder().latency_ms(5).start().await.unwrap();
    let east = c.client("us-east");
    // All regions reachable: every concern is met.
    for wc in ["local", "one", "majority", "all"] {
        east.put_with(
            "default",
            &format!("ok-{wc}"),
            &json!(wc),
            &concern(wc, 5_000),
        )
        .await
        .unwrap();
    }
    // us-east cut from eu-west only: one and majority still work, all cannot.
    c.partition("us-east", "eu-west").unwrap();
    east.put_with("default", "one", &json!(1), &concern("one", 5_000))
        .await
        .unwrap();
    east.put_with(
        "default",
        "majority",
        &json!(1),
        &concern("majority", 5_000),
    )
    .await
    .unwrap();
    let e = east
        .put_with(
            "default",
            "all",
            &json!("durable here"),
            &concern("all", 700),
        )
        .await
        .unwrap_err();
    let ClientError::Http {
        status, code, body, ..
    } = &e
    else {
        panic!("{e}")
    };
    assert_eq!((*status, code.as_str()), (504, "write_concern_timeout"));
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("will still replicate"),
        "{body}"
    );
    assert_eq!(body["required"], json!(3));
    assert_eq!(
        body["held_by"].as_array().unwrap().len(),
        2,
        "us-east and ap-south hold it"
    );
    // Not rolled back: readable here now, and everywhere after the heal.
    assert_eq!(
        east.get("default", "all").await.unwrap().unwrap().value(),
        Some(&json!("durable here"))
    );
    c.heal();
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    for r in &c.regions {
        let v = c.client(r).get("default", "all").await.unwrap();
        assert_eq!(v.unwrap().value(), Some(&json!("durable here")), "{r}");
    }
    // Fully cut off: one fails too; local still succeeds at once.
    c.partition_off("us-east").unwrap();
    let e = east
        .put_with("default", "lonely", &json!(1), &concern("one", 500))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(504));
    east.put_with("default", "lonely-local", &json!(1), &concern("local", 500))
        .await
        .unwrap();
    // The keyspace default applies when the request names none.
    east.define_keyspace("strict", &json!({"policy": "lww", "write_concern": "all"}))
        .await
        .unwrap();
    c.heal();
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    c.partition("us-east", "ap-south").unwrap();
    let e = east
        .put_with(
            "strict",
            "k",
            &json!(1),
            &Options {
                concern_timeout_ms: Some(500),
                ..Options::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(504), "keyspace default write concern all");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_with_the_writers_token_never_sees_an_older_value() {
    let c = Cluster::builder()
        .pair_latency_ms("us-east", "eu-west", 80)
        .latency_ms(5)
        .start()
        .await
        .unwrap();
    let (east, west) = (c.client("us-east"), c.client("eu-west"));
    let sessions = 20;
    let pairs_each = 50;
    let mut tasks = Vec::new();
    for s in 0..sessions {
        let (east, west) = (east.clone(), west.clone());
        tasks.push(tokio::spawn(async move {
            let key = format!("session-{s}");
            let (mut fresh, mut unavailable) = (0u32, 0u32);
            for i in 0..pairs_each {
                let w = east.put("default", &key, &json!(i)).await.unwrap();
                let opts = Options {
                    token: Some(w.token.clone()),
                    wait_ms: Some(400),
                    ..Options::default()
                };
                match west.get_with("default", &key, &opts).await {
                    Ok((Some(e), _)) => {
                        let got = e.value().and_then(Value::as_i64).unwrap();
                        assert!(
                            got >= i,
                            "session {s}: wrote {i}, then read {got} with the write's token"
                        );
                        fresh += 1;
                    }
                    Ok((None, _)) => panic!("session {s}: the token's write is missing"),
                    Err(e) if e.is_code("behind_token") => unavailable += 1,
                    Err(e) => panic!("{e}"),
                }
            }
            (fresh, unavailable)
        }));
    }
    let (mut fresh, mut unavailable) = (0, 0);
    for t in tasks {
        let (f, u) = t.await.unwrap();
        fresh += f;
        unavailable += u;
    }
    println!(
        "read-your-writes across an 80 ms link: {fresh} fresh reads, {unavailable} answered 503, 0 stale, of {} pairs",
        sessions * pairs_each
    );
    assert_eq!(fresh + unavailable, (sessions * pairs_each) as u32);
    assert!(fresh > 0);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_get_monotonic_reads_monotonic_writes_and_writes_follow_reads() {
    let c = Cluster::builder().latency_ms(30).start().await.unwrap();
    // Monotonic reads: having read a value in us-east, a read in ap-south
    // never returns anything older.
    let s = Session::new(c.client("us-east")).with_wait_ms(5_000);
    for i in 0..5 {
        c.client("us-east")
            .put("default", "mr", &json!(i))
            .await
            .unwrap();
    }
    let seen = s
        .get("default", "mr")
        .await
        .unwrap()
        .unwrap()
        .value()
        .cloned();
    let s2 = s.with_client(c.client("ap-south"));
    assert_eq!(
        s2.get("default", "mr")
            .await
            .unwrap()
            .unwrap()
            .value()
            .cloned(),
        seen,
        "monotonic reads"
    );

    // Monotonic writes: a session's second write, made in another region,
    // is applied after its first everywhere: no region shows the first
    // after having shown the second.
    let w = Session::new(c.client("us-east")).with_wait_ms(5_000);
    w.put("default", "mw", &json!("first")).await.unwrap();
    let w2 = w.with_client(c.client("eu-west"));
    w2.put("default", "mw", &json!("second")).await.unwrap();
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    for r in &c.regions {
        assert_eq!(
            c.client(r)
                .get("default", "mw")
                .await
                .unwrap()
                .unwrap()
                .value(),
            Some(&json!("second")),
            "{r}"
        );
    }

    // Writes follow reads: a reply written after reading a post is never
    // visible anywhere without the post.
    let author = c.client("us-east");
    let post = author
        .put("default", "post", &json!("hello"))
        .await
        .unwrap();
    let reader = Session::new(c.client("eu-west")).with_wait_ms(5_000);
    reader.set_token(Some(post.token));
    assert!(reader.get("default", "post").await.unwrap().is_some());
    reader
        .put("default", "reply", &json!("hi back"))
        .await
        .unwrap();
    // Wherever the reply is visible, the post is too.
    for r in &c.regions {
        let cl = c.client(r);
        for _ in 0..200 {
            if cl.get("default", "reply").await.unwrap().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(cl.get("default", "reply").await.unwrap().is_some(), "{r}");
        assert!(
            cl.get("default", "post").await.unwrap().is_some(),
            "{r} shows the reply without the post"
        );
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_in_three_partitioned_regions_leave_one_winner_and_two_ledgered_losers() {
    let c = Cluster::builder().latency_ms(5).start().await.unwrap();
    c.partition("us-east", "eu-west").unwrap();
    c.partition("us-east", "ap-south").unwrap();
    c.partition("eu-west", "ap-south").unwrap();
    for r in &c.regions {
        c.client(r)
            .put("default", "contested", &json!(format!("from {r}")))
            .await
            .unwrap();
    }
    c.heal();
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    let winner = c
        .client("us-east")
        .get("default", "contested")
        .await
        .unwrap()
        .unwrap()
        .value()
        .cloned()
        .unwrap();
    for r in &c.regions {
        let cl = c.client(r);
        assert_eq!(
            cl.get("default", "contested")
                .await
                .unwrap()
                .unwrap()
                .value(),
            Some(&winner),
            "{r}"
        );
        let ledger = cl
            .conflicts("keyspace=default&key=contested")
            .await
            .unwrap();
        let entries = ledger["conflicts"].as_array().unwrap();
        let losers: std::collections::BTreeSet<String> = entries
            .iter()
            .map(|e| e["losers"][0]["origin"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(entries.len(), 2, "{r}: {ledger}");
        let winner_origin = winner
            .as_str()
            .unwrap()
            .trim_start_matches("from ")
            .to_string();
        let expected: std::collections::BTreeSet<String> = c
            .regions
            .iter()
            .filter(|x| **x != winner_origin)
            .cloned()
            .collect();
        assert_eq!(losers, expected, "{r}: the losers and their origins");
        for e in entries {
            assert_eq!(
                e["ambiguous"],
                json!(true),
                "written within the clock-offset bound"
            );
            assert!(
                e["losers"][0]["value"]
                    .as_str()
                    .unwrap()
                    .starts_with("from ")
            );
        }
    }
    let m = c.client("us-east").status().await.unwrap();
    assert!(m["ops"].as_u64().unwrap() >= 3);
    c.stop().await;
}

/// Removes keys from a stopped region's state files (damage that the op
/// log and version vector know nothing about).
fn damage(state: &std::path::Path, keys: &[String]) {
    use meridian_core::{Backend, FjallBackend};
    let db = FjallBackend::open(state).unwrap();
    let mut b = meridian_core::state::Batch::new();
    for k in keys {
        b.delete("k.default", k.clone().into_bytes());
    }
    db.write(b).unwrap();
    db.persist().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_reads_merge_a_majority_and_repair_regions_behind() {
    // Anti-entropy off: only read repair can fix what is broken below.
    let mut c = Cluster::builder()
        .latency_ms(5)
        .env("MERIDIAN_ANTI_ENTROPY_INTERVAL_MS", "0")
        .start()
        .await
        .unwrap();
    c.client("us-east")
        .put("default", "q", &json!("v1"))
        .await
        .unwrap();
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    // eu-west loses the key on disk; its version vector still says it has it,
    // so replication will never send it again.
    c.stop_region("eu-west").await.unwrap();
    damage(&c.dir().join("eu-west").join("state"), &["q".to_string()]);
    c.restart("eu-west").await.unwrap();
    let west = c.client("eu-west");
    assert!(west.get("default", "q").await.unwrap().is_none());
    let quorum = Options {
        read: Some("quorum".into()),
        ..Options::default()
    };
    let (e, _) = west.get_with("default", "q", &quorum).await.unwrap();
    assert_eq!(
        e.unwrap().value(),
        Some(&json!("v1")),
        "a majority read merges what the majority holds"
    );
    let mut repaired = false;
    for _ in 0..100 {
        if west.get("default", "q").await.unwrap().is_some() {
            repaired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        repaired,
        "read repair wrote the merge back where it was missing"
    );
    // The repair is counted once it is durable.
    let counted = status_count(&west, "read_repairs", Duration::from_secs(2)).await;
    assert!(counted >= 1, "read repairs counted");
    // Without a majority reachable, a quorum read says so.
    c.partition_off("eu-west").unwrap();
    let opts = Options {
        read: Some("quorum".into()),
        concern_timeout_ms: Some(500),
        ..Options::default()
    };
    let e = west.get_with("default", "q", &opts).await.unwrap_err();
    assert!(e.is_code("quorum_unavailable"), "{e}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_entropy_repairs_state_damaged_on_disk_while_a_region_was_down() {
    let mut c = Cluster::builder()
        .regions(["us-east", "eu-west"])
        .env("MERIDIAN_ANTI_ENTROPY_INTERVAL_MS", "300")
        .start()
        .await
        .unwrap();
    let east = c.client("us-east");
    for i in 0..200 {
        east.put("default", &format!("k{i:03}"), &json!(i))
            .await
            .unwrap();
    }
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    // Stop eu-west cleanly, then damage its files: remove 20 keys.
    c.stop_region("eu-west").await.unwrap();
    let lost: Vec<String> = (0..20).map(|i| format!("k{i:03}")).collect();
    damage(&c.dir().join("eu-west").join("state"), &lost);
    c.restart("eu-west").await.unwrap();
    let west = c.client("eu-west");
    assert!(
        west.get("default", "k000").await.unwrap().is_none(),
        "the damage is real"
    );
    // Same version vectors, different digests: anti-entropy finds and repairs it.
    for k in &lost {
        let mut ok = false;
        for _ in 0..100 {
            if west.get("default", k).await.unwrap().is_some() {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ok, "{k} repaired");
    }
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    let mut counted = 0;
    for r in &c.regions {
        let s = c.client(r).status().await.unwrap();
        counted += s["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["anti_entropy_repairs"].as_u64().unwrap())
            .sum::<u64>();
    }
    assert!(counted >= 20, "repairs counted: {counted}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_deleted_during_a_partition_stays_deleted_when_a_stale_region_rejoins() {
    let c = Cluster::builder()
        .env("MERIDIAN_OP_LOG__SEGMENT_MB", "1")
        .env("MERIDIAN_OP_LOG__RETENTION_MB", "1")
        .env("MERIDIAN_CHECKPOINT_INTERVAL_MS", "200")
        .env("MERIDIAN_TOMBSTONE_GC_INTERVAL_MS", "200")
        .start()
        .await
        .unwrap();
    let east = c.client("us-east");
    east.put("default", "doomed", &json!("alive"))
        .await
        .unwrap();
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    c.partition_off("ap-south").unwrap();
    east.delete("default", "doomed").await.unwrap();
    // Compact: enough traffic for retention to drop the delete's segment,
    // and time for tombstone collection to run (it must not collect a
    // tombstone ap-south has not acknowledged).
    let pad = "p".repeat(1000);
    for i in 0..3000 {
        east.put("default", &format!("fill-{i}"), &json!(pad))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let s = east.status().await.unwrap();
    assert!(
        s["log"]["start_lsn"].as_u64().unwrap() > 2,
        "the delete's segment is gone: {}",
        s["log"]
    );
    assert_eq!(
        s["tombstones_collected"],
        json!(0),
        "ap-south has not acknowledged the delete"
    );
    assert_eq!(
        c.client("ap-south")
            .get("default", "doomed")
            .await
            .unwrap()
            .unwrap()
            .value(),
        Some(&json!("alive"))
    );
    c.heal();
    c.wait_converged(Duration::from_secs(60)).await.unwrap();
    for r in &c.regions {
        assert!(
            c.client(r)
                .get("default", "doomed")
                .await
                .unwrap()
                .is_none(),
            "{r} brought the key back"
        );
    }
    // Now every region has the delete: the tombstone can go, and the key
    // stays deleted.
    let collected = status_count(&east, "tombstones_collected", Duration::from_secs(10)).await;
    assert!(collected >= 1, "the stable tombstone is collected");
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    for r in &c.regions {
        assert!(
            c.client(r)
                .get("default", "doomed")
                .await
                .unwrap()
                .is_none(),
            "{r}"
        );
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_count_for_the_region_that_sent_them_not_for_the_name_used() {
    // Before: acks named no replica, so a second name for eu-west and a
    // "peer" whose URL led back to us-east itself each counted as a region:
    // write concern `all` answered 200 with two regions holding the write.
    use meridian_harness::link::{LinkEmulator, LinkSpec};
    use meridian_harness::node::{Node, NodeSpec, meridian_bin};
    use std::net::SocketAddr;
    let dir = std::env::temp_dir().join(format!("meridian-ackbind-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, "ack-binding-test-secret-0123456789").unwrap();
    let peer_spec = |region: &str| {
        let mut s = NodeSpec::new(region, &dir.join(region));
        s.peer_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        s.args = vec!["--cluster-secret-file".into(), secret.display().to_string()];
        s
    };
    let west = Node::start(&meridian_bin(), peer_spec("eu-west"))
        .await
        .unwrap();
    let west_peer = west.peer_addr().unwrap();
    // The loop: a link that will lead from us-east back to us-east.
    let emu = LinkEmulator::new(1);
    let nowhere = SocketAddr::from(([127, 0, 0, 1], 1));
    let back = emu
        .add_link("us-east", "ap-south", nowhere, LinkSpec::latency(0))
        .await
        .unwrap();
    let mut spec = peer_spec("us-east");
    for (name, addr) in [
        ("eu-west", west_peer),
        ("eu-copy", west_peer),
        ("ap-south", back),
    ] {
        spec.args.push("--peer".into());
        spec.args.push(format!("{name}=http://{addr}"));
    }
    let east = Node::start(&meridian_bin(), spec).await.unwrap();
    emu.set_upstream("us-east", "ap-south", east.peer_addr().unwrap())
        .unwrap();
    let c = east.client();
    // The real peer acknowledges: `one` is met.
    c.put_with("default", "k1", &json!(1), &concern("one", 10_000))
        .await
        .unwrap();
    // Four names, two regions: `all` cannot be met, and says who holds it.
    let e = c
        .put_with("default", "k2", &json!(2), &concern("all", 2_000))
        .await
        .unwrap_err();
    let ClientError::Http { status, body, .. } = e else {
        panic!("expected a 504, got {e}");
    };
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["held_by"], json!(["us-east", "eu-west"]), "{body}");
    // The status says why the other two links count for nothing.
    let s = c.status().await.unwrap();
    let text = s["peers"].to_string();
    assert!(text.contains("leads back to this region"), "{text}");
    assert!(text.contains("answers as region eu-west"), "{text}");
    drop(east);
    drop(west);
    let _ = std::fs::remove_dir_all(&dir);
}
