//! Clients that survive a region: a session over all three regions keeps
//! going when its preferred region is killed, keeps its reads on its
//! writes across the switch and back, and never counts an increment twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use meridian_client::{Client, ClientError, Options};
use meridian_harness::bench::failover::{FailoverSpec, Fault, run_once};
use meridian_harness::cluster::Cluster;
use meridian_harness::node::meridian_bin;
use serde_json::json;

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("meridian-failover-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_carries_on_through_its_region_dying_and_coming_back() {
    let dir = tmp("session");
    let spec = FailoverSpec {
        bin: meridian_bin(),
        dir: dir.clone(),
        latency_ms: 5,
        write_concern: "majority".into(),
        warmup: Duration::from_secs(2),
        down: Duration::from_secs(3),
        runs: 1,
        fault: Fault::Kill,
        timeout: Duration::from_secs(10),
    };
    let run = run_once(&spec, &dir).await.unwrap();
    eprintln!("{run:#?}");
    assert!(run.acked > 20, "the loop made progress: {run:?}");
    assert_eq!(run.missing, 0, "acknowledged writes lost: {run:?}");
    assert_eq!(run.ryw_violations, 0, "{run:?}");
    assert_eq!(run.errors_outside_window, 0, "{run:?}");
    assert!(
        run.errors.is_empty(),
        "the client moved on by itself, the loop saw no error: {run:?}"
    );
    let elsewhere: u64 = run
        .served
        .iter()
        .filter(|(r, _)| *r != "us-east")
        .map(|(_, n)| n)
        .sum();
    assert!(
        elsewhere > 0,
        "other regions served while us-east was dead: {run:?}"
    );
    assert!(run.window_ms > 0.0, "{run:?}");
    assert!(
        run.return_ms.is_some(),
        "the session came back to us-east: {run:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_increment_cut_off_by_its_region_dying_is_indeterminate_never_doubled() {
    let dir = tmp("incr");
    let mut c = Cluster::builder()
        .binary(&meridian_bin())
        .dir(&dir)
        .start()
        .await
        .unwrap();
    let urls: Vec<String> = ["us-east", "eu-west", "ap-south"]
        .iter()
        .map(|r| c.url(r).unwrap())
        .collect();
    let client = Client::builder().regions(urls.clone()).build().unwrap();
    client
        .define_keyspace("hits", &json!({"policy": "counter"}))
        .await
        .unwrap();
    c.wait_converged(Duration::from_secs(30)).await.unwrap();

    // 1. An increment in flight when us-east dies: cut off from its peers,
    // us-east makes it durable and waits for `all`; the kill ends the wait.
    c.partition_off("us-east").unwrap();
    let in_flight = {
        let client = client.clone();
        tokio::spawn(async move {
            let opts = Options {
                write_concern: Some("all".into()),
                concern_timeout_ms: Some(30_000),
                timeout_ms: Some(40_000),
                ..Options::default()
            };
            client
                .op_with("hits", "k", &json!({"op": "incr", "by": 5}), &opts)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    c.kill("us-east").await.unwrap();
    let err = in_flight.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, ClientError::Indeterminate { region, .. } if *region == urls[0]),
        "{err:?}"
    );
    // Not sent again elsewhere.
    for r in ["eu-west", "ap-south"] {
        let v = c.client(r).get("hits", "k").await.unwrap();
        assert!(v.is_none(), "{r} holds {v:?}");
    }

    // 2. A loop of increments through the kill and the restart: each one
    // is acknowledged, refused, or indeterminate.
    let stop = Arc::new(AtomicBool::new(false));
    let looper = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut acked, mut unknown, mut failed) = (0i64, 0i64, 0u64);
            while !stop.load(Ordering::SeqCst) {
                match client.incr("hits", "loop", 1).await {
                    Ok(_) => acked += 1,
                    Err(e) if e.is_indeterminate() => unknown += 1,
                    Err(_) => failed += 1,
                }
            }
            (acked, unknown, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.restart("us-east").await.unwrap();
    c.heal();
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.kill("us-east").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.restart("us-east").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let (acked, unknown, failed) = looper.await.unwrap();
    eprintln!("loop: {acked} acknowledged, {unknown} indeterminate, {failed} refused");
    assert!(acked > 10, "{acked}");

    c.wait_converged(Duration::from_secs(60)).await.unwrap();
    for r in ["us-east", "eu-west", "ap-south"] {
        let read = |k: &'static str| {
            let c = c.client(r);
            async move {
                c.get("hits", k)
                    .await
                    .unwrap()
                    .and_then(|e| e.value().and_then(|v| v.as_i64()))
            }
        };
        // The increment us-east made durable before it died is there once.
        assert_eq!(read("k").await, Some(5), "{r}");
        let total = read("loop").await.unwrap_or(0);
        assert!(
            (acked..=acked + unknown).contains(&total),
            "{r}: counter {total}, {acked} acknowledged, {unknown} indeterminate"
        );
    }
    c.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
