//! Every nemesis suite, briefly, on real processes: faults under the mixed
//! workload, then heal and every checker. The reports are printed (run with
//! `--nocapture` to see them); `meridian bench nemesis --suite NAME
//! --duration 5m` runs the same suites long.
//!
//! `NEMESIS_SEED=N` replays another fault schedule.

use std::time::Duration;

use meridian_harness::nemesis::{self, Options, Suite};

/// One suite at a time: each runs three to five servers on two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn suite(s: Suite, secs: u64) {
    let _one_at_a_time = SERIAL.lock().await;
    let mut o = Options::new(s, Duration::from_secs(secs));
    o.seed = std::env::var("NEMESIS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let out = nemesis::run(&o).await.expect("the suite ran");
    println!("{out}");
    assert!(out.ok(), "checks failed:\n{out}");
    assert!(
        out.timeline
            .iter()
            .filter(|t| !t.contains("checked"))
            .count()
            >= 3,
        "faults were applied:\n{out}"
    );
    assert!(
        out.history.ok >= 100,
        "the workload must make progress:\n{out}"
    );
    assert!(out.verdict.checked() >= out.history.ok / 2, "{out}");
    if let Some((dup, delayed)) = out.batch_faults {
        assert!(
            dup > 0 && delayed > 0,
            "batches were duplicated and delayed:\n{out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_halves() {
    suite(Suite::PartitionHalves, 12).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_partition() {
    suite(Suite::RingPartition, 12).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_restart() {
    suite(Suite::KillRestart, 12).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_a_leader_30_s() {
    suite(Suite::Pause, 34).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_skew() {
    suite(Suite::ClockSkew, 14).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_and_reordered_batches() {
    suite(Suite::DupReorder, 12).await;
}

/// A region's leader killed, its standby promoted, the old leader back as
/// a standby: every acknowledged write kept (the checkers), the workload
/// carried on through the failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_a_standby() {
    suite(Suite::Failover, 16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_combined() {
    suite(Suite::Combined, 24).await;
}

/// The checkers themselves: a write the history says was acknowledged, then
/// removed behind the workload's back, must be reported lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkers_report_writes_removed_behind_the_workloads_back() {
    use meridian_harness::check;
    use meridian_harness::cluster::Cluster;
    use meridian_harness::workload;
    use serde_json::json;

    let _one_at_a_time = SERIAL.lock().await;
    let c = Cluster::builder().start().await.unwrap();
    workload::define_keyspaces(&c.client("us-east"))
        .await
        .unwrap();
    let clients: Vec<_> = c.regions.iter().map(|r| (r.clone(), c.client(r))).collect();
    let (stop, history, tasks) = workload::start_writers(&clients, 2, 3_000);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let h = workload::stop_writers(stop, history, tasks).await;
    let clean = check::check_all(&c, &h, Duration::from_secs(30)).await;
    assert!(clean.ok(), "{clean}");

    // Behind the history's back: delete an acknowledged put, remove an
    // acknowledged set member, and push a counter past what was acknowledged.
    let west = c.client("eu-west");
    let (put, _) = h.puts.iter().next().expect("the workload put something");
    west.delete("default", put).await.unwrap();
    let (set, member) = h
        .sets
        .iter()
        .find_map(|(k, ms)| {
            ms.iter()
                .find(|(_, m)| m.added.is_some() && !m.removed && !m.remove_unknown)
                .map(|(m, _)| (k.clone(), m.clone()))
        })
        .expect("an acknowledged member");
    west.remove("tags", &set, &[json!(member)]).await.unwrap();
    let (counter, _) = h.counters.iter().next().expect("a counter");
    west.incr("hits", counter, 1_000).await.unwrap();

    let v = check::check_all(&c, &h, Duration::from_secs(30)).await;
    println!("{v}");
    let report = |name: &str| v.reports.iter().find(|r| r.name == name).unwrap().clone();
    assert_eq!(
        report("lww").lost,
        3,
        "the deleted put, in each of 3 regions:\n{v}"
    );
    assert_eq!(
        report("set-full").lost,
        3,
        "the removed member, in each region:\n{v}"
    );
    assert_eq!(
        report("counters").wrong,
        3,
        "the counter above every reachable sum:\n{v}"
    );
    assert_eq!(
        report("convergence").wrong,
        0,
        "the regions still agree:\n{v}"
    );
    c.stop().await;
}
