//! Standbys inside a region, on real processes: a leader killed under load
//! loses no write acknowledged with `standby`; a split brain (leader cut off
//! from its standby, both taking writes) loses nothing when it heals; reads
//! at a standby with a token see the writes made at the leader; the
//! staleness bound, forwarding, `421` and the concern that cannot be met.
//!
//! Past ~400 lines because STYLE keeps one test binary per topic: these cases
//! share the fixtures at the top of this file.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use meridian_client::{Client, Options};
use meridian_harness::cluster::Cluster;
use serde_json::{Value, json};

/// One server set at a time: each test runs several on two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The seq in a version (`eu-west:17@1796...`).
fn seq_of(version: &str) -> u64 {
    version
        .split_once(':')
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(s, _)| s.parse().ok())
        .unwrap_or_else(|| panic!("version {version:?} has no seq"))
}

/// The highest seq `status` holds from the replica `incarnation`.
fn held_from(status: &Value, incarnation: &str) -> u64 {
    status["vv"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["incarnation"] == incarnation)
        .and_then(|e| e["seq"].as_u64())
        .unwrap_or(0)
}

fn concern(c: &str) -> Options {
    Options {
        write_concern: Some(c.into()),
        timeout_ms: Some(5_000),
        ..Options::default()
    }
}

/// Writes `prefix-N` with `concern` at `c` until `stop`; what was acknowledged.
fn writer(
    c: Client,
    prefix: &'static str,
    concern_name: &'static str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<(String, String)>> {
    tokio::spawn(async move {
        let mut acked = Vec::new();
        let opts = concern(concern_name);
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let key = format!("{prefix}-{i}");
            i += 1;
            match c.put_with("default", &key, &json!(i), &opts).await {
                Ok(w) => acked.push((key, w.version)),
                Err(_) => break, // the leader is gone
            }
        }
        acked
    })
}

/// Waits up to 20 s for member `m` to report `role`; its status (a member
/// refuses connections for a moment while it restarts in a new role).
async fn wait_role(c: &Cluster, m: &str, role: &str) -> Value {
    let t = std::time::Instant::now();
    loop {
        let s = c.member_client(m).status().await.unwrap_or_default();
        if s["standby"]["role"] == role {
            return s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{m} is not {role} after 20 s: {}",
            s["standby"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits up to 15 s until `leader` lists `n` standbys.
async fn wait_standbys(c: &Cluster, leader: &str, n: usize) {
    let t = std::time::Instant::now();
    loop {
        let s = c.member_client(leader).status().await.unwrap();
        if s["standby"]["followers"].as_array().map_or(0, Vec::len) >= n {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "{leader} lists fewer than {n} standbys: {}",
            s["standby"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits up to 10 s until standby `m` has heard from its leader.
async fn wait_reached_leader(c: &Cluster, m: &str) {
    let t = std::time::Instant::now();
    loop {
        let s = c.member_client(m).status().await.unwrap();
        if s["standby"]["leader"]["client_url"].is_string() {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{m} never reached its leader: {}",
            s["standby"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Which of `writes` member `m` does not hold.
async fn missing(c: &Cluster, m: &str, writes: &[(String, String)]) -> Vec<(String, String)> {
    let client = c.member_client(m);
    let mut out = Vec::new();
    for (k, v) in writes {
        match client.get("default", k).await {
            Ok(Some(e)) if e.version() == Some(v.as_str()) => {}
            Ok(Some(e)) => panic!("{k}: {m} holds version {:?}, acknowledged {v}", e.version()),
            Ok(None) => out.push((k.clone(), v.clone())),
            Err(e) => panic!("reading {k} at {m}: {e}"),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_the_leader_under_load_keeps_every_write_acknowledged_with_standby() {
    let _one = SERIAL.lock().await;
    let mut c = Cluster::builder()
        .regions(["eu-west"])
        .standbys(1)
        .start()
        .await
        .unwrap();
    // A standby 20 ms away: `local` writes run ahead of it, so the tail
    // the kill loses is real, and `standby` writes must wait for it.
    c.latency("eu-west", "eu-west-s1", 20).unwrap();
    let before = c.member_client("eu-west").status().await.unwrap();
    let old = before["replica"]["incarnation"]
        .as_str()
        .unwrap()
        .to_string();
    // The standby has said it is there before the load starts.
    wait_standbys(&c, "eu-west", 1).await;
    let stop = Arc::new(AtomicBool::new(false));
    let leader = c.member_client("eu-west");
    let tasks = vec![
        writer(leader.clone(), "s1", "standby", stop.clone()),
        writer(leader.clone(), "s2", "standby", stop.clone()),
        writer(leader.clone(), "l1", "local", stop.clone()),
        writer(leader.clone(), "l2", "local", stop.clone()),
    ];
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.kill("eu-west").await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let mut standby_acked = Vec::new();
    let mut local_acked = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let acked = t.await.unwrap();
        if i < 2 {
            standby_acked.extend(acked);
        } else {
            local_acked.extend(acked);
        }
    }
    assert!(
        standby_acked.len() >= 50,
        "{} standby writes",
        standby_acked.len()
    );
    assert!(
        local_acked.len() >= 50,
        "{} local writes",
        local_acked.len()
    );
    let new = c
        .wait_leader_other_than("eu-west", "eu-west", Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(new, "eu-west-s1");
    let status = c.member_client(&new).status().await.unwrap();
    let held = held_from(&status, &old);
    let lost_standby = missing(&c, &new, &standby_acked).await;
    assert!(
        lost_standby.is_empty(),
        "writes acknowledged with standby missing at the promoted standby: {lost_standby:?}"
    );
    for (k, v) in &standby_acked {
        assert!(
            seq_of(v) <= held,
            "{k} ({v}) acknowledged with standby, past {held}"
        );
    }
    let lost_local = missing(&c, &new, &local_acked).await;
    eprintln!(
        "local writes acknowledged {}, not on the promoted standby {} (all past seq {held}, the last the standby held)",
        local_acked.len(),
        lost_local.len()
    );
    for (k, v) in &lost_local {
        assert!(
            seq_of(v) > held,
            "{k} ({v}) is missing although the standby held up to seq {held}"
        );
    }
    // The new leader takes writes.
    c.member_client(&new)
        .put("default", "after", &json!("failover"))
        .await
        .unwrap();
    // The old leader's disk survived: restarted, it steps down, and what
    // the standby lacked ships to the new leader. Nothing is lost.
    c.restart("eu-west").await.unwrap();
    wait_role(&c, "eu-west", "follower").await;
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    let all: Vec<_> = standby_acked.iter().chain(&local_acked).cloned().collect();
    let lost = missing(&c, &new, &all).await;
    assert!(
        lost.is_empty(),
        "lost after the old leader returned: {lost:?}"
    );
    assert_eq!(
        c.member_client("eu-west")
            .get("default", "after")
            .await
            .unwrap()
            .and_then(|e| e.value().cloned()),
        Some(json!("failover")),
        "the demoted leader follows the new one"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_brain_loses_nothing_and_rolls_nothing_back() {
    let _one = SERIAL.lock().await;
    let c = Cluster::builder()
        .regions(["us-east", "eu-west"])
        .standbys(1)
        .latency_ms(5)
        // Only the promotion asked for below: the test decides when.
        .args(["--failover-timeout-ms", "0"])
        .start()
        .await
        .unwrap();
    wait_reached_leader(&c, "eu-west-s1").await;
    c.member_client("eu-west")
        .put("default", "before", &json!(1))
        .await
        .unwrap();
    c.wait_converged(Duration::from_secs(20)).await.unwrap();
    // Cut the leader from its standby; us-east still reaches both.
    c.partition("eu-west", "eu-west-s1").unwrap();
    let promoted = c.member_client("eu-west-s1").promote().await.unwrap();
    assert_eq!(promoted["epoch"], 2, "{promoted}");
    c.wait_leader_other_than("eu-west", "eu-west", Duration::from_secs(10))
        .await
        .unwrap();
    // Both sides take writes: the old leader does not know yet.
    let mut acked: BTreeMap<String, Value> = BTreeMap::new();
    for i in 0..20 {
        for (m, side) in [("eu-west", "old"), ("eu-west-s1", "new"), ("us-east", "us")] {
            let key = format!("{side}-{i}");
            let v = json!({"side": side, "i": i});
            if let Err(e) = c.member_client(m).put("default", &key, &v).await {
                panic!("{key} at {m}: {e}");
            }
            acked.insert(key, v);
        }
        // The same key on both sides: a conflict LWW resolves, both kept in
        // the ledger.
        c.member_client("eu-west")
            .put("default", "both", &json!(format!("old-{i}")))
            .await
            .unwrap();
        c.member_client("eu-west-s1")
            .put("default", "both", &json!(format!("new-{i}")))
            .await
            .unwrap();
    }
    let old_status = c.member_client("eu-west").status().await.unwrap();
    assert_eq!(
        old_status["standby"]["role"], "leader",
        "cut off, the old leader still leads its side"
    );
    c.heal();
    // The old leader hears of epoch 2 and steps down.
    let s = wait_role(&c, "eu-west", "follower").await;
    assert_eq!(s["standby"]["epoch"], 2);
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    for m in ["us-east", "eu-west", "eu-west-s1"] {
        let client = c.member_client(m);
        for (k, v) in &acked {
            let got = client.get("default", k).await.unwrap();
            assert_eq!(
                got.as_ref().and_then(|e| e.value()),
                Some(v),
                "{k} at {m}: acknowledged on one side of the split brain"
            );
        }
    }
    // One winner everywhere for the key both sides wrote.
    let mut winners = Vec::new();
    for m in ["us-east", "eu-west", "eu-west-s1"] {
        winners.push(
            c.member_client(m)
                .get("default", "both")
                .await
                .unwrap()
                .and_then(|e| e.value().cloned()),
        );
    }
    assert!(winners.windows(2).all(|w| w[0] == w[1]), "{winners:?}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_serves_reads_on_tokens_and_passes_writes_to_its_leader() {
    let _one = SERIAL.lock().await;
    let c = Cluster::builder()
        .regions(["eu-west"])
        .standbys(1)
        .args(["--failover-timeout-ms", "0"])
        .start()
        .await
        .unwrap();
    let leader = c.member_client("eu-west");
    let standby = c.member_client("eu-west-s1");
    wait_reached_leader(&c, "eu-west-s1").await;
    // Read-your-writes: write at the leader, read at the standby with the
    // token, 200 times in a row.
    let mut violations = 0;
    for i in 0..200 {
        let w = leader
            .put("default", &format!("ryw-{}", i % 10), &json!(i))
            .await
            .unwrap();
        let opts = Options {
            token: Some(w.token.clone()),
            ..Options::default()
        };
        let got = standby
            .get_with("default", &format!("ryw-{}", i % 10), &opts)
            .await
            .unwrap();
        if got.0.as_ref().and_then(|e| e.value()) != Some(&json!(i)) {
            violations += 1;
        }
    }
    assert_eq!(violations, 0, "read-your-writes violations at the standby");

    // A write sent to the standby reaches the leader.
    let forwarded = |s: &Value| s["standby"]["forwarded_writes"].as_u64().unwrap();
    let before = forwarded(&standby.status().await.unwrap());
    let w = standby
        .put("default", "via-standby", &json!("x"))
        .await
        .unwrap();
    let opts = Options {
        token: Some(w.token.clone()),
        ..Options::default()
    };
    assert_eq!(
        leader
            .get_with("default", "via-standby", &opts)
            .await
            .unwrap()
            .0
            .and_then(|e| e.value().cloned()),
        Some(json!("x"))
    );
    let st = standby.status().await.unwrap();
    assert_eq!(
        forwarded(&st),
        before + 1,
        "the standby passed the write on"
    );

    // The status of both: roles, lag figures.
    let ls = leader.status().await.unwrap();
    assert_eq!(ls["standby"]["role"], "leader");
    let f = &ls["standby"]["followers"][0];
    for field in ["lag_ops", "lag_bytes", "lag_ms"] {
        assert!(f[field].is_u64(), "{field}: {f}");
    }
    let metrics = reqwest_text(&c.url("eu-west").unwrap(), "/metrics").await;
    for name in [
        "meridian_standby_lag_ops",
        "meridian_standby_lag_bytes",
        "meridian_standby_lag_seconds",
        "meridian_standby_leader 1",
    ] {
        assert!(metrics.contains(name), "{name} not in the leader's metrics");
    }

    // Staleness: fresh now, then the leader is paused and the bound is
    // passed.
    let url = c.url("eu-west-s1").unwrap();
    assert_eq!(
        get_status(&url, "/v1/kv/default/ryw-1", Some(2_000)).await,
        200
    );
    c.pause("eu-west").unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        get_status(&url, "/v1/kv/default/ryw-1", Some(1_000)).await,
        503,
        "a standby 1.5 s from its leader serves a read asking for at most 1 s"
    );
    assert_eq!(
        get_status(&url, "/v1/kv/default/ryw-1", None).await,
        200,
        "without the header, reads are served"
    );
    c.resume("eu-west").unwrap();
    let t = std::time::Instant::now();
    while get_status(&url, "/v1/kv/default/ryw-1", Some(1_000)).await != 200 {
        assert!(t.elapsed() < Duration::from_secs(10), "never fresh again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_concern_not_met_is_a_504_unless_the_keyspace_allows_the_downgrade() {
    let _one = SERIAL.lock().await;
    let mut c = Cluster::builder()
        .regions(["eu-west"])
        .standbys(1)
        .args(["--failover-timeout-ms", "0"])
        .start()
        .await
        .unwrap();
    let leader = c.member_client("eu-west");
    wait_standbys(&c, "eu-west", 1).await;
    let quick = Options {
        write_concern: Some("standby".into()),
        concern_timeout_ms: Some(500),
        ..Options::default()
    };
    leader
        .put_with("default", "ok", &json!(1), &quick)
        .await
        .unwrap();
    leader
        .put_with(
            "default",
            "ok-all",
            &json!(1),
            &Options {
                write_concern: Some("one+region-all".into()),
                ..quick.clone()
            },
        )
        .await
        .expect("one+region-all with one region: every standby holds it");
    c.kill("eu-west-s1").await.unwrap();
    let e = leader
        .put_with("default", "unmet", &json!(1), &quick)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(504), "{e}");
    assert!(e.is_code("write_concern_timeout"), "{e}");
    // Durable at the leader all the same: never rolled back.
    assert!(leader.get("default", "unmet").await.unwrap().is_some());
    // A keyspace that allows the downgrade: 200, counted.
    leader
        .define_keyspace(
            "relaxed",
            &json!({"policy": "lww", "standby_concern": "standby", "standby_downgrade": true}),
        )
        .await
        .unwrap();
    let relaxed = Options {
        concern_timeout_ms: Some(300),
        ..Options::default()
    };
    leader
        .put_with("relaxed", "k", &json!(1), &relaxed)
        .await
        .expect("downgraded");
    // A concern the request names is never downgraded.
    let e = leader
        .put_with(
            "relaxed",
            "named",
            &json!(1),
            &Options {
                write_concern: Some("standby".into()),
                ..relaxed.clone()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(504), "{e}");
    let s = leader.status().await.unwrap();
    assert_eq!(s["standby"]["concern_downgrades"], 1, "{}", s["standby"]);
    assert!(s["standby"]["concern_timeouts"].as_u64().unwrap() >= 1);
    // Bad concern names are a 400 that says what is allowed.
    let e = leader
        .put_with(
            "default",
            "x",
            &json!(1),
            &Options {
                write_concern: Some("standby+region-all".into()),
                ..Options::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    assert!(e.to_string().contains("region-all"), "{e}");
    c.stop().await;
}

/// A GET's status, with `meridian-max-staleness-ms` when given.
async fn get_status(base: &str, path: &str, max_staleness: Option<u64>) -> u16 {
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let mut b = http::Request::builder().uri(format!("{base}{path}"));
    if let Some(ms) = max_staleness {
        b = b.header("meridian-max-staleness-ms", ms.to_string());
    }
    let req = b
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    http.request(req).await.unwrap().status().as_u16()
}

/// A GET's body as text.
async fn reqwest_text(base: &str, path: &str) -> String {
    use http_body_util::BodyExt;
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let req = http::Request::builder()
        .uri(format!("{base}{path}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = http.request(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_standbys_one_takes_over_and_the_other_follows_it() {
    let _one = SERIAL.lock().await;
    let mut c = Cluster::builder()
        .regions(["eu-west"])
        .standbys(2)
        .start()
        .await
        .unwrap();
    let leader = c.member_client("eu-west");
    wait_standbys(&c, "eu-west", 2).await;
    let mut acked = Vec::new();
    for i in 0..100 {
        let w = leader
            .put_with(
                "default",
                &format!("k{i}"),
                &json!(i),
                &concern("region-all"),
            )
            .await
            .unwrap();
        acked.push((format!("k{i}"), w.version));
    }
    c.kill("eu-west").await.unwrap();
    let new = c
        .wait_leader_other_than("eu-west", "eu-west", Duration::from_secs(20))
        .await
        .unwrap();
    let other = if new == "eu-west-s1" {
        "eu-west-s2"
    } else {
        "eu-west-s1"
    };
    // The other standby follows the new leader, and only one leads.
    let t = std::time::Instant::now();
    loop {
        let s = c.member_client(other).status().await.unwrap_or_default();
        let n = c.member_client(&new).status().await.unwrap_or_default();
        if s["standby"]["role"] == "follower"
            && s["standby"]["leader"]["replica"] == n["replica"]["incarnation"]
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{other} does not follow {new}: {}",
            s["standby"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(c.leader_of("eu-west").await.as_deref(), Some(new.as_str()));
    for m in [new.as_str(), other] {
        let lost = missing(&c, m, &acked).await;
        assert!(
            lost.is_empty(),
            "region-all writes missing at {m}: {lost:?}"
        );
    }
    // Writes go on through either survivor.
    let w = c
        .member_client(other)
        .put("default", "after", &json!(1))
        .await
        .unwrap();
    let got = c
        .member_client(&new)
        .get_with(
            "default",
            "after",
            &Options {
                token: Some(w.token),
                ..Options::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(got.0.and_then(|e| e.value().cloned()), Some(json!(1)));
    c.stop().await;
}
