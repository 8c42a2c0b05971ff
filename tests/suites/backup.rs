//! Replication is not backup: backups to a directory and to a real
//! S3-compatible server (moto, started by the test), point-in-time restore
//! checked against an independent replay of the acknowledged history,
//! a kill during a backup, rewinding a deleted prefix everywhere, and
//! tampered files refused by name.
//!
//! Past ~400 lines because STYLE keeps one test binary per topic: these cases
//! share the fixtures at the top of this file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use meridian_client::{Client, Options};
use meridian_core::{Engine, EngineConfig, FjallBackend};
use meridian_crdt::{Object, RegionId, ReplicaId, Value as CrdtValue};
use meridian_harness::cluster::Cluster;
use meridian_harness::node::{Node, NodeSpec, meridian_bin};
use serde_json::{Value, json};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("meridian-backup-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Runs the `meridian` binary; (success, stdout, stderr).
fn meridian(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(meridian_bin())
        .args(args)
        .output()
        .expect("run meridian");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `meridian restore` of us-east from `target` into `out`, with `extra`
/// flags (`--to-time`, `--backup`).
fn restore_us_east(target: &str, extra: &[&str], out: &Path) -> (bool, String, String) {
    let out = out.to_str().unwrap();
    let mut args = vec!["restore", "--from", target, "--region", "us-east"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--data-dir", out]);
    meridian(&args)
}

/// `meridian ctl rewind default --prefix user/ --to-time T`, with `flags`
/// (`--json`, `--dry-run`).
fn rewind_users(url: &str, t: &str, flags: &[&str]) -> (bool, String, String) {
    let mut args: Vec<&str> = flags.iter().copied().filter(|f| *f == "--json").collect();
    args.extend_from_slice(&["rewind", "default", "--prefix", "user/", "--to-time", t]);
    args.extend(flags.iter().copied().filter(|f| *f != "--json"));
    ctl(url, &args)
}

fn ctl(url: &str, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["ctl", "--url", url, "--no-session"];
    all.extend_from_slice(args);
    meridian(&all)
}

/// `us-east:7@1796155719758.3` -> (wall, logical, region).
fn stamp(version: &str) -> Stamp {
    let (who, at) = version.split_once('@').expect("version has @");
    let region = who.split(':').next().unwrap().to_string();
    let (wall, logical) = at.split_once('.').expect("version has .");
    (wall.parse().unwrap(), logical.parse().unwrap(), region)
}

/// Everything live in a restored data directory, read straight from its
/// store: `keyspace/key` -> what a client would see.
fn read_restored(dir: &Path) -> BTreeMap<String, Value> {
    let backend = Arc::new(FjallBackend::open(&dir.join("state")).unwrap());
    let me = ReplicaId::new(RegionId::new("reader").unwrap(), uuid::Uuid::nil());
    let engine = Engine::open(me, EngineConfig::default(), backend).unwrap();
    let reader = engine.reader();
    let mut out = BTreeMap::new();
    for ks in ["default", "counters"] {
        let mut after = None;
        // A keyspace not restored (not defined at the time) lists nothing.
        while let Ok(page) = reader.list(ks, "", after.as_ref(), 1000) {
            for (k, o) in &page.items {
                let v = match o {
                    Object::Lww(r) => match r.value() {
                        Some(CrdtValue::Json(j)) => j.to_value(),
                        other => panic!("unexpected value {other:?}"),
                    },
                    Object::Counter(c) => json!(c.value() as i64),
                    other => panic!("unexpected object {other:?}"),
                };
                out.insert(format!("{ks}/{}", k.as_str()), v);
            }
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
    }
    out
}

/// A write's stamp: HLC wall ms, logical counter, origin region.
type Stamp = (u64, u64, String);

/// Every acknowledged write: key, stamp, and what it did.
#[derive(Clone, Debug)]
enum Did {
    Put(Value),
    Delete,
    Incr(i64),
}

type History = Vec<(String, Stamp, Did)>;

/// The state made of every acknowledged write stamped at or before `t`,
/// computed from the history alone: last writer wins on the stamp for
/// `default`, sums for `counters`.
fn replay(history: &History, t: u64) -> BTreeMap<String, Value> {
    let mut lww: BTreeMap<&str, (&Stamp, Option<&Value>)> = BTreeMap::new();
    let mut sums: BTreeMap<&str, i64> = BTreeMap::new();
    for (key, st, did) in history {
        if st.0 > t {
            continue;
        }
        match did {
            // A counter only ever incremented by 0 reads as absent (its
            // GET is a 404), so it is not in a restore's listing either.
            Did::Incr(0) if !sums.contains_key(key.as_str()) => {}
            Did::Incr(by) => *sums.entry(key).or_default() += by,
            Did::Put(v) => {
                if lww.get(key.as_str()).is_none_or(|(s, _)| *s < st) {
                    lww.insert(key, (st, Some(v)));
                }
            }
            Did::Delete => {
                if lww.get(key.as_str()).is_none_or(|(s, _)| *s < st) {
                    lww.insert(key, (st, None));
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    for (k, (_, v)) in lww {
        if let Some(v) = v {
            out.insert(k.to_string(), v.clone());
        }
    }
    for (k, n) in sums {
        out.insert(k.to_string(), json!(n));
    }
    out
}

async fn writer(c: Client, region: &'static str, seed: u64, ops: usize) -> History {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut h = History::new();
    for n in 0..ops {
        let r = rng.u64(..);
        let key_n = (r >> 8) % 12;
        let (key, did) = match r % 5 {
            0 => (
                format!("counters/c{}", key_n % 4),
                Did::Incr((r >> 20) as i64 % 9 - 3),
            ),
            1 => (format!("default/k{key_n}"), Did::Delete),
            _ => (
                format!("default/k{key_n}"),
                Did::Put(json!({"by": region, "n": n})),
            ),
        };
        let (ks, k) = key.split_once('/').unwrap();
        let w = match &did {
            Did::Put(v) => c.put(ks, k, v).await,
            Did::Delete => c.delete(ks, k).await,
            Did::Incr(by) => {
                c.op_with(ks, k, &json!({"op": "incr", "by": by}), &Options::default())
                    .await
            }
        }
        .unwrap_or_else(|e| panic!("{region}: write {key}: {e}"));
        h.push((key, stamp(&w.version), did));
        tokio::time::sleep(Duration::from_millis(3 + (r >> 40) % 5)).await;
    }
    h
}

/// Seals and archives everything the region has logged, without a backup
/// (a dry-run rewind archives first).
async fn archive_now(c: &Client) {
    let r = c
        .rewind(&json!({"keyspace": "default", "to_time": now_ms() - 1, "dry_run": true}))
        .await
        .unwrap();
    assert_eq!(r["dry_run"], true);
}

/// The backup a region takes of its log when it starts (it has none).
async fn first_backup(c: &Client) -> String {
    for _ in 0..500 {
        let v = c.backups().await.unwrap();
        if let Some(b) = v["backups"].as_array().and_then(|b| b.first()) {
            return b["id"].as_str().unwrap().to_string();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no first backup was taken");
}

async fn backup_now(c: &Client) -> String {
    // The region's own first backup may still run: wait for it.
    let started = loop {
        match c.start_backup().await {
            Ok(v) => break v,
            Err(e) if e.is_code("backup_running") => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("start a backup: {e}"),
        }
    };
    let id = started["id"].as_str().unwrap().to_string();
    for _ in 0..600 {
        let v = c.backup(&id).await.unwrap();
        match v["status"].as_str() {
            Some("running") => tokio::time::sleep(Duration::from_millis(20)).await,
            Some("complete") => return id,
            other => panic!("backup {id}: {other:?}: {v}"),
        }
    }
    panic!("backup {id} did not finish");
}

async fn backup_cluster(target: &str, interval_ms: u64) -> Cluster {
    let c = Cluster::builder()
        .regions(["us-east", "eu-west", "ap-south"])
        .latency_ms(15)
        .env("MERIDIAN_BACKUP__TARGET", target)
        .env(
            "MERIDIAN_BACKUP__ARCHIVE_INTERVAL_MS",
            &interval_ms.to_string(),
        )
        .start()
        .await
        .unwrap();
    c.client("us-east")
        .define_keyspace("counters", &json!({"policy": "counter"}))
        .await
        .unwrap();
    c.wait_converged(Duration::from_secs(20)).await.unwrap();
    c
}

/// Restores to 20 random times under a workload written in three regions:
/// each restored state equals the acknowledged history up to that time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restore_to_any_time_equals_the_acknowledged_history_up_to_it() {
    let dir = scratch("pitr");
    let target = format!("file://{}", dir.join("target").display());
    let cluster = backup_cluster(&target, 200).await;
    let east = cluster.client("us-east");
    let start = now_ms();
    backup_now(&east).await;
    let mut history = History::new();
    for (round, seed) in [(0u64, 11u64), (1, 23), (2, 37)] {
        let w: Vec<_> = ["us-east", "eu-west", "ap-south"]
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                tokio::spawn(writer(
                    cluster.client(r),
                    r,
                    seed * 1000 + i as u64 * 7 + 1,
                    60,
                ))
            })
            .collect();
        for h in w {
            history.extend(h.await.unwrap());
        }
        // Backups between rounds: restores start from different ones.
        if round < 2 {
            backup_now(&east).await;
        }
    }
    let end = now_ms();
    cluster
        .wait_converged(Duration::from_secs(30))
        .await
        .unwrap();
    archive_now(&east).await;

    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let mut times: Vec<u64> = (0..18)
        .map(|_| start + rng.u64(..) % (end - start + 1))
        .collect();
    // At the edges too: before any write, and after the last.
    times.push(start);
    times.push(end + 1);
    let mut distinct = std::collections::BTreeSet::new();
    for (i, t) in times.iter().enumerate() {
        let out = dir.join(format!("restored-{i}"));
        let (ok, stdout, stderr) = restore_us_east(&target, &["--to-time", &t.to_string()], &out);
        assert!(ok, "restore to {t}: {stdout}{stderr}");
        let got = read_restored(&out);
        let want = replay(&history, *t);
        assert_eq!(got, want, "restore to {t} (#{i}) differs from the history");
        distinct.insert(format!("{want:?}"));
    }
    assert!(
        distinct.len() > 10,
        "the times should reach many different states ({} did)",
        distinct.len()
    );
    assert_eq!(
        replay(&history, end + 1).len(),
        read_restored(&dir.join("restored-19")).len()
    );

    // A restored directory starts as a region (a new incarnation) and
    // serves what was restored.
    let restored = dir.join("restored-3");
    let want = read_restored(&restored);
    let node = Node::start(&meridian_bin(), NodeSpec::new("us-east", &restored))
        .await
        .unwrap();
    let listed = node.client().dump("default").await.unwrap();
    let served: BTreeMap<String, Value> = listed
        .iter()
        .map(|i| {
            (
                format!("default/{}", i["key"].as_str().unwrap()),
                i["value"].clone(),
            )
        })
        .collect();
    let want_default: BTreeMap<String, Value> = want
        .into_iter()
        .filter(|(k, _)| k.starts_with("default/"))
        .collect();
    assert_eq!(served, want_default);
    drop(node);

    // A restore refuses a directory that is not empty; a time long before
    // the first write restores the empty state.
    let (ok, _, stderr) = restore_us_east(&target, &[], &restored);
    assert!(!ok && stderr.contains("not empty"), "{stderr}");
    let early = dir.join("early");
    let (ok, _, stderr) = restore_us_east(
        &target,
        &["--to-time", &(start - 60_000).to_string()],
        &early,
    );
    // The region's first backup is of its empty state: before any write,
    // there was nothing.
    assert!(ok, "{stderr}");
    assert!(read_restored(&early).is_empty());
    cluster.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Delete a prefix in one region, let it replicate, rewind to before the
/// delete in another: every region shows the old values again; later
/// unrelated writes stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rewind_brings_a_deleted_prefix_back_everywhere() {
    let dir = scratch("rewind");
    let target = format!("file://{}", dir.join("target").display());
    let cluster = backup_cluster(&target, 500).await;
    let east = cluster.client("us-east");
    let west = cluster.client("eu-west");
    for i in 0..20 {
        east.put("default", &format!("user/{i:02}"), &json!({"name": i}))
            .await
            .unwrap();
    }
    east.put("default", "other/a", &json!("a1")).await.unwrap();
    east.incr("counters", "user/visits", 5).await.unwrap();
    backup_now(&east).await;
    cluster
        .wait_converged(Duration::from_secs(20))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let before = now_ms();
    tokio::time::sleep(Duration::from_millis(20)).await;

    // The mistake, in eu-west; it replicates everywhere.
    let ops: Vec<Value> = (0..20)
        .map(|i| json!({"keyspace": "default", "key": format!("user/{i:02}"), "op": "delete"}))
        .collect();
    west.batch(&ops, &Options::default()).await.unwrap();
    west.put("default", "user/new", &json!("made after"))
        .await
        .unwrap();
    // Unrelated writes after the time: kept.
    west.put("default", "other/a", &json!("a2")).await.unwrap();
    west.put("default", "other/b", &json!("b1")).await.unwrap();
    cluster
        .wait_converged(Duration::from_secs(20))
        .await
        .unwrap();
    assert!(east.get("default", "user/03").await.unwrap().is_none());

    // Rewound where the backups are (us-east), the mistake made elsewhere.
    let url = cluster.url("us-east").unwrap();
    let t = before.to_string();
    let (ok, out, err) = rewind_users(&url, &t, &["--json", "--dry-run"]);
    assert!(ok, "{out}{err}");
    let dry: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(dry["restored"], 20, "{dry}");
    assert_eq!(dry["deleted"], 1, "{dry}");
    assert_eq!(dry["dry_run"], true);
    // A dry run writes nothing.
    assert!(east.get("default", "user/03").await.unwrap().is_none());

    let (ok, out, err) = rewind_users(&url, &t, &[]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("20 restored, 1 deleted"), "{out}");
    cluster
        .wait_converged(Duration::from_secs(20))
        .await
        .unwrap();
    for r in ["us-east", "eu-west", "ap-south"] {
        let c = cluster.client(r);
        for i in 0..20 {
            let e = c
                .get("default", &format!("user/{i:02}"))
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{r}: user/{i:02} is still gone"));
            assert_eq!(e.value(), Some(&json!({"name": i})), "{r}");
        }
        assert!(c.get("default", "user/new").await.unwrap().is_none(), "{r}");
        let a = c.get("default", "other/a").await.unwrap().unwrap();
        assert_eq!(a.value(), Some(&json!("a2")), "{r}: outside the prefix");
        assert!(c.get("default", "other/b").await.unwrap().is_some(), "{r}");
    }
    // Rewinding again to the same time changes nothing.
    let (ok, out, err) = rewind_users(&url, &t, &["--json"]);
    assert!(ok, "{out}{err}");
    let again: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(again["restored"], 0, "{again}");
    assert_eq!(again["deleted"], 0, "{again}");

    // Keyspaces whose values a rewind cannot write back as they were are
    // refused up front.
    east.define_keyspace(
        "profiles",
        &json!({"policy": "doc", "schema": {"visits": "counter"}}),
    )
    .await
    .unwrap();
    east.define_keyspace("prices", &json!({"policy": "custom", "merge": "max"}))
        .await
        .unwrap();
    for ks in ["profiles", "prices"] {
        let e = east
            .rewind(&json!({"keyspace": ks, "to_time": before}))
            .await
            .unwrap_err();
        assert!(e.is_code("rewind_refused"), "{ks}: {e}");
    }
    // Bad requests are refused with a reason.
    for (body, code) in [
        (json!({"keyspace": "nope", "to_time": before}), 404),
        (json!({"keyspace": "default", "to_time": "soon"}), 400),
        (
            json!({"keyspace": "default", "to_time": now_ms() + 3_600_000}),
            400,
        ),
        (
            json!({"keyspace": "default", "to_time": before, "extra": 1}),
            400,
        ),
    ] {
        let e = cluster.client("us-east").rewind(&body).await.unwrap_err();
        assert_eq!(e.status(), Some(code), "{body}: {e}");
    }
    // Without a backup at or before the time, there is no history to
    // rewind from.
    let west_backups = west.backups().await.unwrap();
    for b in west_backups["backups"].as_array().unwrap() {
        west.delete_backup(b["id"].as_str().unwrap()).await.unwrap();
    }
    let e = west
        .rewind(&json!({"keyspace": "default", "to_time": before}))
        .await
        .unwrap_err();
    assert!(e.is_code("history_unavailable"), "{e}");
    cluster.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn one_region(dir: &Path, target: &str, extra_env: &[(&str, &str)]) -> NodeSpec {
    let mut spec = NodeSpec::new("us-east", &dir.join("data"));
    spec.env.extend([
        ("MERIDIAN_BACKUP__TARGET".into(), target.into()),
        ("MERIDIAN_BACKUP__ARCHIVE_INTERVAL_MS".into(), "300".into()),
    ]);
    for (k, v) in extra_env {
        spec.env.push((k.to_string(), v.to_string()));
    }
    spec
}

/// A backup cut short by kill -9 is never listed as complete; the next one
/// succeeds and verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_during_a_backup_never_lists_it() {
    let dir = scratch("kill");
    let target = format!("file://{}", dir.join("target").display());
    let mut node = Node::start(
        &meridian_bin(),
        one_region(
            &dir,
            &target,
            &[("MERIDIAN_BACKUP__UNDO_WINDOW_HOURS", "0")],
        ),
    )
    .await
    .unwrap();
    let c = node.client();
    // Enough state that a backup takes a while.
    let pad = "x".repeat(4000);
    let mut ops = Vec::new();
    for i in 0..12_000 {
        ops.push(json!({"keyspace": "default", "key": format!("k{i:05}"), "op": "put", "value": {"i": i, "pad": pad}}));
        if ops.len() == 500 {
            c.batch(&ops, &Options::default()).await.unwrap();
            ops.clear();
        }
    }
    let first = first_backup(&c).await;
    // Kill a backup while it runs (the job says so just before); should one
    // finish before the kill, take another.
    let mut killed = None;
    for _ in 0..5 {
        let started = c.start_backup().await.unwrap();
        let id = started["id"].as_str().unwrap().to_string();
        let v = c.backup(&id).await.unwrap();
        if v["status"] == "running" {
            killed = Some(id);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let id = killed.expect("every backup finished before it could be killed");
    node.kill9().await;
    node.restart().await.unwrap();
    let c = node.client();
    let listed = c.backups().await.unwrap();
    let ids: Vec<&str> = listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert!(
        !ids.contains(&id.as_str()),
        "cut-short backup listed: {listed}"
    );
    let e = c.verify_backup(&id).await.unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    // The next one succeeds, verifies, and holds every key.
    let next = backup_now(&c).await;
    let v = c.verify_backup(&next).await.unwrap();
    assert_eq!(v["ok"], true, "{v}");
    let m = c.backup(&next).await.unwrap();
    assert_eq!(m["keyspaces"]["default"], 12_000, "{m}");
    // Retention sweeps the orphan chunks of the killed backup (the
    // region's first backup goes: no undo window here).
    let pruned = c.prune_backups(&json!({"keep_last": 1})).await.unwrap();
    let gone: Vec<&str> = pruned["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        gone.contains(&first.as_str()) && !gone.contains(&next.as_str()),
        "{pruned}"
    );
    let chunks = std::fs::read_dir(dir.join("target/us-east/state"))
        .unwrap()
        .count();
    let named: std::collections::BTreeSet<&str> = m["state"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(chunks, named.len(), "orphan chunks left");
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Local log retention deletes a segment only once it is archived: with a
/// retention budget of 1 MiB and nothing archived, every segment stays;
/// once a backup archives them they go, and a restore from the region's
/// first (empty) backup still replays every write from the archive.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn log_retention_waits_for_the_archive() {
    let dir = scratch("pin");
    let target = format!("file://{}", dir.join("target").display());
    let mut spec = one_region(
        &dir,
        &target,
        &[
            ("MERIDIAN_OP_LOG__SEGMENT_MB", "1"),
            ("MERIDIAN_OP_LOG__RETENTION_MB", "1"),
            ("MERIDIAN_CHECKPOINT_INTERVAL_MS", "200"),
        ],
    );
    // The archiver's own rounds (the first comes at once) find nothing
    // sealed; later ones come after the test.
    spec.env.push((
        "MERIDIAN_BACKUP__ARCHIVE_INTERVAL_MS".into(),
        "3600000".into(),
    ));
    let node = Node::start(&meridian_bin(), spec).await.unwrap();
    let c = node.client();
    let first = first_backup(&c).await;
    let pad = "y".repeat(8000);
    for part in 0..6 {
        let ops: Vec<Value> = (0..128)
            .map(|i| json!({"keyspace": "default", "key": format!("p{part}-{i:03}"), "op": "put", "value": pad}))
            .collect();
        c.batch(&ops, &Options::default()).await.unwrap();
    }
    let segments = || {
        std::fs::read_dir(dir.join("data/log"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "seg")
            })
            .count()
    };
    // Several checkpoints later: nothing archived, nothing removed.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let held = segments();
    assert!(
        held >= 6,
        "segments removed before they were archived: {held} left"
    );
    // A backup archives them; retention then removes them.
    backup_now(&c).await;
    let mut left = held;
    for _ in 0..100 {
        left = segments();
        if left <= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(left <= 2, "archived segments were kept: {left} of {held}");
    drop(node);
    let out = dir.join("restored");
    let (ok, stdout, stderr) = restore_us_east(&target, &["--backup", &first], &out);
    assert!(ok, "{stdout}{stderr}");
    assert_eq!(read_restored(&out).len(), 6 * 128, "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else if e.file_name() != "LOCK" {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// A data directory rolled back (a disk snapshot put back) issues log
/// positions the archive already holds with other records: the archiver
/// sees a local segment that differs from its archived copy and archives
/// the log afresh under a new id, never mixing the two; a restore of the
/// new log holds what the rolled-back region holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolled_back_log_is_archived_apart() {
    let dir = scratch("fork");
    let target = format!("file://{}", dir.join("target").display());
    let data = dir.join("data");
    let mut node = Node::start(
        &meridian_bin(),
        one_region(&dir, &target, &[("MERIDIAN_OP_LOG__SEGMENT_MB", "1")]),
    )
    .await
    .unwrap();
    let pad = "z".repeat(4000);
    let write = |c: Client, tag: &'static str| {
        let pad = pad.clone();
        async move {
            for part in 0..3 {
                let ops: Vec<Value> = (0..200)
                    .map(|i| json!({"keyspace": "default", "key": format!("{tag}-{part}-{i:03}"), "op": "put", "value": pad}))
                    .collect();
                c.batch(&ops, &Options::default()).await.unwrap();
            }
        }
    };
    first_backup(&node.client()).await;
    write(node.client(), "before").await;
    let before = backup_now(&node.client()).await;
    let old_log = node.client().backup(&before).await.unwrap()["log_id"]
        .as_str()
        .unwrap()
        .to_string();
    // The disk snapshot.
    node.terminate(Duration::from_secs(10)).await.unwrap();
    copy_dir(&data, &dir.join("snapshot"));
    node.restart().await.unwrap();
    write(node.client(), "lost").await;
    archive_now(&node.client()).await;
    // The snapshot put back.
    node.terminate(Duration::from_secs(10)).await.unwrap();
    std::fs::remove_dir_all(&data).unwrap();
    copy_dir(&dir.join("snapshot"), &data);
    node.restart().await.unwrap();
    let c = node.client();
    write(c.clone(), "after").await;
    let after = backup_now(&c).await;
    let m = c.backup(&after).await.unwrap();
    let new_log = m["log_id"].as_str().unwrap();
    assert_ne!(
        new_log, old_log,
        "the rolled-back log was archived under its old id"
    );
    assert_eq!(c.verify_backup(&after).await.unwrap()["ok"], true);
    assert_eq!(c.verify_backup(&before).await.unwrap()["ok"], true);
    drop(node);
    let out = dir.join("restored");
    let (ok, stdout, stderr) = restore_us_east(&target, &[], &out);
    assert!(ok, "{stdout}{stderr}");
    let got = read_restored(&out);
    let count = |tag: &str| {
        got.keys()
            .filter(|k| k.starts_with(&format!("default/{tag}-")))
            .count()
    };
    assert_eq!(
        (count("before"), count("lost"), count("after")),
        (600, 0, 600)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tampered file, a missing file and a manifest naming a path outside
/// its folder: verify and restore refuse each, naming the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tampered_backups_are_refused_naming_the_file() {
    let dir = scratch("tamper");
    let tdir = dir.join("target");
    let target = format!("file://{}", tdir.display());
    let node = Node::start(
        &meridian_bin(),
        one_region(
            &dir,
            &target,
            &[("MERIDIAN_BACKUP__UNDO_WINDOW_HOURS", "0")],
        ),
    )
    .await
    .unwrap();
    let c = node.client();
    let auto = first_backup(&c).await;
    for i in 0..50 {
        c.put("default", &format!("k{i}"), &json!(i)).await.unwrap();
    }
    let id = backup_now(&c).await;
    for i in 50..80 {
        c.put("default", &format!("k{i}"), &json!(i)).await.unwrap();
    }
    let id2 = backup_now(&c).await;
    // Writes after the backup: archived segments a restore from it reads.
    for i in 80..90 {
        c.put("default", &format!("k{i}"), &json!(i)).await.unwrap();
    }
    archive_now(&c).await;
    assert_eq!(c.verify_backup(&id2).await.unwrap()["ok"], true);
    let m = c.backup(&id2).await.unwrap();
    let chunk = m["state"][0]["name"].as_str().unwrap().to_string();
    let log = m["log_id"].as_str().unwrap();
    let after = m["lsn"].as_u64().unwrap() + 1;
    let mut later = Vec::new();
    for e in std::fs::read_dir(tdir.join(format!("us-east/wal/{log}"))).unwrap() {
        let p = e.unwrap().path();
        if p.to_string_lossy().ends_with(".seg.json") {
            let r: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            if r["end_lsn"].as_u64().unwrap() > after {
                later.push(r["name"].as_str().unwrap().to_string());
            }
        }
    }
    later.sort();
    let seg = later
        .last()
        .expect("a segment archived after the backup")
        .clone();

    // One byte of a chunk flipped.
    let chunk_path = tdir.join(&chunk);
    let good = std::fs::read(&chunk_path).unwrap();
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x55;
    std::fs::write(&chunk_path, &bad).unwrap();
    let e = c.verify_backup(&id2).await.unwrap_err();
    assert_eq!(e.status(), Some(422), "{e}");
    assert_eq!(e.body().unwrap()["file"], chunk.as_str(), "{e}");
    let out = dir.join("r1");
    let (ok, _, err) = restore_us_east(&target, &["--backup", &id2], &out);
    assert!(!ok && err.contains(&chunk), "{err}");
    // A failed restore leaves the directory as it found it.
    let left: Vec<_> = std::fs::read_dir(&out)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "a failed restore left {left:?}");
    std::fs::write(&chunk_path, &good).unwrap();

    // A segment cut short.
    let seg_path = tdir.join(&seg);
    let good = std::fs::read(&seg_path).unwrap();
    std::fs::write(&seg_path, &good[..good.len() - 1]).unwrap();
    let e = c.verify_backup(&id2).await.unwrap_err();
    assert_eq!(e.body().unwrap()["file"], seg.as_str(), "{e}");
    let out = dir.join("r-seg");
    let (ok, _, err) = restore_us_east(&target, &[], &out);
    assert!(!ok && err.contains(&seg), "{err}");
    std::fs::remove_file(&seg_path).unwrap();
    let e = c.verify_backup(&id2).await.unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");
    std::fs::write(&seg_path, &good).unwrap();
    assert_eq!(c.verify_backup(&id2).await.unwrap()["ok"], true);

    // A manifest naming a file outside the region's folder.
    let mpath = tdir.join(format!("us-east/backups/{id}.json"));
    let text = std::fs::read_to_string(&mpath).unwrap();
    let mut evil: Value = serde_json::from_str(&text).unwrap();
    evil["state"][0]["name"] = json!("us-east/../../../etc/passwd");
    std::fs::write(&mpath, serde_json::to_vec(&evil).unwrap()).unwrap();
    let e = c.verify_backup(&id).await.unwrap_err();
    assert!(e.to_string().contains("etc/passwd"), "{e}");
    let out = dir.join("r2");
    let (ok, _, err) = restore_us_east(&target, &["--backup", &id], &out);
    assert!(!ok && err.contains("etc/passwd"), "{err}");
    evil["state"][0]["name"] = json!("eu-west/state/x.chunk");
    std::fs::write(&mpath, serde_json::to_vec(&evil).unwrap()).unwrap();
    let e = c.verify_backup(&id).await.unwrap_err();
    assert!(e.to_string().contains("outside"), "{e}");
    std::fs::write(&mpath, &text).unwrap();

    // A restore's lease keeps retention off the backup it reads.
    let leases = tdir.join("us-east/leases");
    std::fs::create_dir_all(&leases).unwrap();
    let lease = leases.join("l1.json");
    std::fs::write(
        &lease,
        serde_json::to_vec(&json!({"backup": id, "expires_ms": now_ms() + 600_000})).unwrap(),
    )
    .unwrap();
    let p = c.prune_backups(&json!({"keep_last": 1})).await.unwrap();
    assert_eq!(p["backups"], json!([auto]), "a leased backup went: {p}");
    let e = c.delete_backup(&id).await.unwrap_err();
    assert!(e.is_code("backup_in_use"), "{e}");
    // An expired lease holds nothing (and is swept).
    std::fs::write(
        &lease,
        serde_json::to_vec(&json!({"backup": id, "expires_ms": 1})).unwrap(),
    )
    .unwrap();
    let p = c.prune_backups(&json!({"keep_last": 1})).await.unwrap();
    assert_eq!(p["backups"], json!([id]), "{p}");
    assert!(!lease.exists());

    // What operators watch: the last backup's time and the archive's lag.
    let metrics = http(node.addr().port(), "GET", "/metrics");
    let value = |name: &str| -> i64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics"))
    };
    let last = value("meridian_backup_last_success_timestamp_seconds");
    assert!(last * 1000 > now_ms() as i64 - 60_000, "{last}");
    assert!(value("meridian_backup_archive_lag_bytes") >= 0);
    assert_eq!(value("meridian_backup_failures_total"), 0);
    assert_eq!(c.verify_backup(&id2).await.unwrap()["ok"], true);
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts moto's S3 server on a free loopback port; `None` (with the
/// reason printed) when it is not installed.
fn start_moto(dir: &Path) -> Option<(std::process::Child, u16)> {
    // Named explicitly (as .ci/run does once it installed it): it must run.
    let required = std::env::var("MERIDIAN_MOTO_SERVER").ok();
    let bin = required.clone().unwrap_or_else(|| "moto_server".into());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let log = std::fs::File::create(dir.join("moto.log")).ok()?;
    let child = match std::process::Command::new(&bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(log.try_clone().ok()?)
        .stderr(log)
        .spawn()
    {
        Ok(c) => c,
        Err(e) if required.is_some() => panic!("MERIDIAN_MOTO_SERVER={bin} does not run: {e}"),
        Err(e) => {
            eprintln!(
                "SKIPPED: no S3-compatible server: {bin}: {e} (.ci/run installs moto[server] from PyPI)"
            );
            return None;
        }
    };
    Some((child, port))
}

fn http(port: u16, method: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The same backup, incremental backup, retention, verify and restore
/// through a real S3-compatible server.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backups_to_s3_compatible_storage() {
    const N: usize = 2000;
    let dir = scratch("s3");
    let Some((mut moto, port)) = start_moto(&dir) else {
        return;
    };
    let mut up = false;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        up,
        "moto did not start: {}",
        std::fs::read_to_string(dir.join("moto.log")).unwrap_or_default()
    );
    let made = http(port, "PUT", "/meridian-test");
    assert!(made.starts_with("HTTP/1.1 200"), "{made}");
    let endpoint = format!("http://127.0.0.1:{port}");
    let creds = dir.join("s3-credentials");
    std::fs::write(
        &creds,
        "access_key_id = testing\nsecret_access_key = testing\n",
    )
    .unwrap();
    let target = "s3://meridian-test/prod";
    let node = Node::start(
        &meridian_bin(),
        one_region(
            &dir,
            target,
            &[
                ("MERIDIAN_BACKUP__ENDPOINT", &endpoint),
                ("MERIDIAN_BACKUP__CREDENTIALS_FILE", creds.to_str().unwrap()),
                // No undo window: retention keeps only what its rules say.
                ("MERIDIAN_BACKUP__UNDO_WINDOW_HOURS", "0"),
            ],
        ),
    )
    .await
    .unwrap();
    let c = node.client();
    let auto = first_backup(&c).await;
    // Enough for several chunks (a chunk is cut past 64 KiB).
    let pad = "p".repeat(200);
    let ops: Vec<Value> = (0..N)
        .map(|i| json!({"keyspace": "default", "key": format!("k{i:04}"), "op": "put", "value": {"v": i, "pad": pad}}))
        .collect();
    for part in ops.chunks(500) {
        c.batch(part, &Options::default()).await.unwrap();
    }
    let first = backup_now(&c).await;
    let m1 = c.backup(&first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let between = now_ms();
    tokio::time::sleep(Duration::from_millis(5)).await;
    c.put("default", "k0007", &json!("changed")).await.unwrap();
    c.delete("default", "k0008").await.unwrap();
    let second = backup_now(&c).await;
    let m2 = c.backup(&second).await.unwrap();
    // Incremental: the second backup shares the unchanged chunks.
    let names = |m: &Value| -> std::collections::BTreeSet<String> {
        m["state"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_string())
            .collect()
    };
    let shared = names(&m1).intersection(&names(&m2)).count();
    assert!(
        shared + 2 >= names(&m2).len() && names(&m2).len() > 3,
        "the second backup should store only the chunks that changed: {m1} {m2}"
    );
    assert_eq!(c.verify_backup(&first).await.unwrap()["ok"], true);
    assert_eq!(c.verify_backup(&second).await.unwrap()["ok"], true);

    let restore = |to: Option<String>, out: &Path| {
        let mut args = vec![
            "restore".to_string(),
            "--from".into(),
            target.into(),
            "--endpoint".into(),
            endpoint.clone(),
            "--credentials-file".into(),
            creds.display().to_string(),
            "--region".into(),
            "us-east".into(),
            "--data-dir".into(),
            out.display().to_string(),
        ];
        if let Some(t) = to {
            args.push("--to-time".into());
            args.push(t);
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        meridian(&refs)
    };
    let (ok, out, err) = restore(Some(between.to_string()), &dir.join("r-between"));
    assert!(ok, "{out}{err}");
    let got = read_restored(&dir.join("r-between"));
    assert_eq!(got.len(), N);
    assert_eq!(got["default/k0007"]["v"], json!(7));
    let (ok, out, err) = restore(None, &dir.join("r-now"));
    assert!(ok, "{out}{err}");
    let got = read_restored(&dir.join("r-now"));
    assert_eq!(got.len(), N - 1);
    assert_eq!(got["default/k0007"], json!("changed"));
    assert!(!got.contains_key("default/k0008"));

    // Retention: keep the newest one; the first goes, the second still
    // verifies and restores.
    let pruned = c.prune_backups(&json!({"keep_last": 1})).await.unwrap();
    assert_eq!(pruned["backups"], json!([auto, first]), "{pruned}");
    assert_eq!(
        c.backups().await.unwrap()["backups"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(c.verify_backup(&second).await.unwrap()["ok"], true);
    let (ok, out, err) = restore(None, &dir.join("r-after-prune"));
    assert!(ok, "{out}{err}");
    assert_eq!(read_restored(&dir.join("r-after-prune")).len(), N - 1);
    drop(node);
    let _ = moto.kill();
    let _ = moto.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
