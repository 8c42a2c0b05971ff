//! Clients that survive a region: a session over all three regions keeps
//! going when its preferred region is killed, keeps its reads on its
//! writes across the switch and back, and never counts an increment twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use meridian_client::{Client, ClientError, Options};
use meridian_harness::bench::failover::{FailoverRun, FailoverSpec, Fault, run_once};
use meridian_harness::cluster::Cluster;
use meridian_harness::node::meridian_bin;
use serde_json::json;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Outcome {
    Acked,
    Unknown,
    Refused,
}

/// One run of the failover scenario on a fresh cluster: 5 ms links, a
/// `majority` session, us-east faulted after 2 s for 3 s.
async fn one_run(dir: &std::path::Path, fault: Fault, timeout: Duration) -> FailoverRun {
    let spec = FailoverSpec {
        bin: meridian_bin(),
        dir: dir.to_path_buf(),
        latency_ms: 5,
        write_concern: "majority".into(),
        warmup: Duration::from_secs(2),
        down: Duration::from_secs(3),
        runs: 1,
        fault,
        timeout,
    };
    let run = run_once(&spec, dir).await.unwrap();
    eprintln!("{run:#?}");
    run
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `PUT default/cur` = `value` at `region` with `headers`, as a client
/// would send it by hand; the status.
async fn put_cur(c: &Cluster, region: &str, value: &'static str, headers: &[(&str, u64)]) -> u16 {
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let mut b = http::Request::builder()
        .method("PUT")
        .uri(format!("{}/v1/kv/default/cur", c.url(region).unwrap()))
        .header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, v.to_string());
    }
    let body = http_body_util::Full::new(bytes::Bytes::from(value));
    http.request(b.body(body).unwrap())
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// After convergence, `default/cur` is `want` in every region.
async fn cur_everywhere(c: &Cluster, want: serde_json::Value) {
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    for r in ["us-east", "eu-west", "ap-south"] {
        let v = c.client(r).get("default", "cur").await.unwrap();
        assert_eq!(
            v.as_ref().and_then(|e| e.value()),
            Some(&want),
            "{r}: the last write stands"
        );
    }
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("meridian-failover-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_carries_on_through_its_region_dying_and_coming_back() {
    let dir = tmp("session");
    let run = one_run(&dir, Fault::Kill, Duration::from_secs(10)).await;
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
    // Kill once us-east has taken it (it shows there; the answer waits
    // for `all`, which the cut-off links cannot give).
    let east = c.client("us-east");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while east.get("hits", "k").await.unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "us-east never took it"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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

    // 2. A loop of increments through kills and restarts, one counter per
    // increment so a double count cannot hide: each is acknowledged
    // (exactly 1 everywhere), refused (absent), or indeterminate (0 or 1).
    let stop = Arc::new(AtomicBool::new(false));
    let looper = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let key = format!("loop/{n:06}");
                let outcome = match client.incr("hits", &key, 1).await {
                    Ok(_) => Outcome::Acked,
                    Err(e) if e.is_indeterminate() => Outcome::Unknown,
                    Err(_) => Outcome::Refused,
                };
                outcomes.push((key, outcome));
            }
            outcomes
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
    let outcomes = looper.await.unwrap();
    let count = |o: Outcome| outcomes.iter().filter(|(_, x)| *x == o).count();
    eprintln!(
        "loop: {} acknowledged, {} indeterminate, {} refused",
        count(Outcome::Acked),
        count(Outcome::Unknown),
        count(Outcome::Refused)
    );
    assert!(count(Outcome::Acked) > 10);

    c.wait_converged(Duration::from_secs(60)).await.unwrap();
    for r in ["us-east", "eu-west", "ap-south"] {
        let values: std::collections::BTreeMap<String, i64> = c
            .client(r)
            .dump("hits")
            .await
            .unwrap()
            .iter()
            .filter_map(|row| Some((row["key"].as_str()?.to_string(), row["value"].as_i64()?)))
            .collect();
        // The increment us-east made durable before it died is there once.
        assert_eq!(values.get("k"), Some(&5), "{r}");
        for (key, outcome) in &outcomes {
            let v = values.get(key).copied().unwrap_or(0);
            let allowed: &[i64] = match outcome {
                Outcome::Acked => &[1],
                Outcome::Unknown => &[0, 1],
                Outcome::Refused => &[0],
            };
            assert!(allowed.contains(&v), "{r}: {key} is {v} after {outcome:?}");
        }
    }
    c.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_carries_on_through_its_region_hanging_and_nothing_it_sent_there_lands_late() {
    // SIGSTOP: us-east accepts connections and never answers, so only the
    // client's timeout (1 s here) moves the session on. The put it gave up
    // on stays queued at us-east; when us-east resumes it must refuse it
    // (its deadline passed), or `cur` would go back to an older value.
    let dir = tmp("pause");
    let run = one_run(&dir, Fault::Pause, Duration::from_secs(1)).await;
    assert!(run.acked > 20, "{run:?}");
    assert_eq!(run.missing, 0, "{run:?}");
    assert_eq!(run.cur_wrong, 0, "a late copy undid later writes: {run:?}");
    assert_eq!(run.ryw_violations, 0, "{run:?}");
    assert_eq!(run.errors_outside_window, 0, "{run:?}");
    assert!(run.window_ms >= 900.0, "the timeout noticed it: {run:?}");
    assert!(run.return_ms.is_some(), "{run:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_stuck_at_a_hung_region_is_refused_there_when_it_resumes() {
    // The first copy of a write reaches us-east while it hangs (SIGSTOP)
    // and stays in its socket: the connection is held open, as a client or
    // proxy that has not noticed may hold it. The client gives up and sends
    // the write to eu-west with the first copy's deadline as its floor,
    // then writes again. When us-east resumes it gets to the stuck copy
    // with a newer clock than both: without the deadline it would take it
    // and the key would go back to the older value everywhere.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tmp("late");
    let c = Cluster::builder()
        .binary(&meridian_bin())
        .dir(&dir)
        .latency_ms(5)
        .start()
        .await
        .unwrap();
    let west = c.client("eu-west");
    west.put("default", "cur", &json!(0)).await.unwrap();
    c.wait_converged(Duration::from_secs(30)).await.unwrap();

    // The deadline is taken before the pause: a test thread slowed down by
    // a loaded machine then only makes the copy later, never early (taken
    // after, a delay before it pushed the deadline past the moment us-east
    // resumed, and the copy was taken in time).
    let deadline = unix_ms() + 750;
    c.pause("us-east").unwrap();
    let addr = c
        .url("us-east")
        .unwrap()
        .trim_start_matches("http://")
        .to_string();
    let mut stuck = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let req = format!(
        "PUT /v1/kv/default/cur HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: 1\r\nmeridian-deadline-ms: {deadline}\r\n\r\n1"
    );
    stuck.write_all(req.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_000)).await;

    // What the client does next: the copy sent on, with the floor, then a
    // later write.
    assert_eq!(
        put_cur(&c, "eu-west", "1", &[("meridian-not-before-ms", deadline)]).await,
        200
    );
    assert_eq!(put_cur(&c, "eu-west", "2", &[]).await, 200);

    c.resume("us-east").unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stuck.read(&mut answer))
        .await
        .expect("us-east answers the stuck copy")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).to_string();
    assert!(
        answer.starts_with("HTTP/1.1 503") && answer.contains("deadline_passed"),
        "{answer}"
    );
    cur_everywhere(&c, json!(2)).await;
    c.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_sent_on_is_stamped_above_the_first_where_the_clock_runs_behind() {
    // The first copy of a write is taken at us-east (cut off: it reaches no
    // one) and its answer is lost. The client sends it on to eu-west, whose
    // clock runs 1.5 s behind (within the 3 s bound this cluster allows),
    // then writes again. Stamped by eu-west's clock alone both would be
    // older than the first copy, which would win when us-east rejoins; the
    // floor (the first copy's deadline) puts them above it.
    let dir = tmp("floor");
    let c = Cluster::builder()
        .binary(&meridian_bin())
        .dir(&dir)
        .latency_ms(5)
        .env("MERIDIAN_MAX_CLOCK_OFFSET_MS", "3000")
        .clock_skew_ms("eu-west", -1_500)
        .start()
        .await
        .unwrap();
    c.client("us-east")
        .put("default", "cur", &json!(0))
        .await
        .unwrap();
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    c.partition_off("us-east").unwrap();

    // What the client sends: a deadline 1 s out; sent on once it passed.
    let deadline = unix_ms() + 1_000;
    let first = put_cur(&c, "us-east", "1", &[("meridian-deadline-ms", deadline)]).await;
    assert_eq!(first, 200, "taken; the client never hears it");
    while unix_ms() <= deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        put_cur(&c, "eu-west", "1", &[("meridian-not-before-ms", deadline)]).await,
        200
    );
    assert_eq!(put_cur(&c, "eu-west", "2", &[]).await, 200);

    c.heal();
    cur_everywhere(&c, json!(2)).await;
    c.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
