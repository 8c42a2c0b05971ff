//! No acknowledged write is lost: 64 clients write puts, counter increments
//! and set adds against a real `meridian serve`, which is killed with SIGKILL
//! at random moments and restarted; after every restart every acknowledged
//! write must be there.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_client::{Client, ClientError};
use meridian_harness::node::{Node, NodeSpec, meridian_bin};
use serde_json::{Value, json};

const CLIENTS: usize = 64;
const ROUNDS: usize = 20;
const COUNTERS: usize = 8;

#[derive(Default)]
struct Ledger {
    /// Acknowledged puts: key -> value.
    puts: BTreeMap<String, Value>,
    /// Puts whose outcome is unknown.
    maybe_puts: BTreeMap<String, Value>,
    /// Per counter: sum of acknowledged increments, sum of unknown ones.
    counters: BTreeMap<String, (i64, i64)>,
    /// Per set: acknowledged members, and members whose add is unknown.
    sets: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)>,
    acks: u64,
}

async fn client_loop(
    c: Client,
    id: usize,
    round: usize,
    stop: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
) {
    let mut rng = fastrand::Rng::with_seed(0x9e37_79b9 ^ ((id as u64) << 20) ^ round as u64);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let outcome: Result<(), ClientError>;
        match rng.u64(..) % 3 {
            0 => {
                let key = format!("r{round}-c{id}-{n}");
                let value = json!({"client": id, "n": n, "pad": "x".repeat(40)});
                let r = c.put("default", &key, &value).await;
                let mut l = ledger.lock().unwrap();
                match &r {
                    Ok(_) => {
                        l.puts.insert(key, value);
                        l.acks += 1;
                    }
                    Err(e) if e.is_indeterminate() => {
                        l.maybe_puts.insert(key, value);
                    }
                    Err(_) => {}
                }
                outcome = r.map(|_| ());
            }
            1 => {
                let key = format!("n{}", rng.u64(..) as usize % COUNTERS);
                let by = 1 + (rng.u64(..) % 5) as i64;
                let r = c.incr("hits", &key, by).await;
                let mut l = ledger.lock().unwrap();
                let e = l.counters.entry(key).or_default();
                match &r {
                    Ok(_) => {
                        e.0 += by;
                        l.acks += 1;
                    }
                    Err(err) if err.is_indeterminate() => e.1 += by,
                    Err(_) => {}
                }
                outcome = r.map(|_| ());
            }
            _ => {
                let key = format!("s{}", id % 8);
                let member = format!("r{round}-c{id}-{n}");
                let r = c.add("tags", &key, &[json!(member)]).await;
                let mut l = ledger.lock().unwrap();
                let e = l.sets.entry(key).or_default();
                match &r {
                    Ok(_) => {
                        e.0.insert(member);
                        l.acks += 1;
                    }
                    Err(err) if err.is_indeterminate() => {
                        e.1.insert(member);
                    }
                    Err(_) => {}
                }
                outcome = r.map(|_| ());
            }
        }
        if outcome.is_err() {
            // The server is down: back off a little.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn verify(c: &Client, ledger: &Ledger) -> u64 {
    let mut checked = 0;
    let dump = c.dump("default").await.expect("dump");
    let stored: BTreeMap<String, Value> = dump
        .into_iter()
        .map(|item| {
            let k = item["key"].as_str().unwrap().to_string();
            (k, item["value"].clone())
        })
        .collect();
    for (k, v) in &ledger.puts {
        assert_eq!(
            stored.get(k),
            Some(v),
            "acknowledged put {k} lost or changed"
        );
        checked += 1;
    }
    for (k, v) in &stored {
        let known = ledger.puts.get(k).or_else(|| ledger.maybe_puts.get(k));
        assert_eq!(known, Some(v), "key {k} holds a value nobody wrote");
    }
    for (k, (acked, maybe)) in &ledger.counters {
        let got = c
            .get("hits", k)
            .await
            .expect("get counter")
            .and_then(|e| e.value().and_then(Value::as_i64))
            .unwrap_or(0);
        assert!(
            *acked <= got && got <= acked + maybe,
            "counter {k} = {got}: acknowledged increments sum to {acked} (plus {maybe} of unknown outcome)"
        );
        checked += 1;
    }
    for (k, (acked, maybe)) in &ledger.sets {
        let got: BTreeSet<String> = c
            .get("tags", k)
            .await
            .expect("get set")
            .and_then(|e| e.value().cloned())
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        for m in acked {
            assert!(got.contains(m), "acknowledged add {m} missing from set {k}");
        }
        for m in &got {
            assert!(
                acked.contains(m) || maybe.contains(m),
                "set {k} holds {m} that nobody added"
            );
        }
        checked += acked.len() as u64;
    }
    checked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let dir = meridian_core_testdir();
    let spec = NodeSpec::new("us-east", &dir.join("us-east"));
    let mut node = Node::start(&meridian_bin(), spec).await.expect("start");
    let c = node.client();
    c.define_keyspace("hits", &json!({"policy": "counter"}))
        .await
        .unwrap();
    c.define_keyspace("tags", &json!({"policy": "set"}))
        .await
        .unwrap();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let mut total_checked = 0;
    for round in 0..ROUNDS {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|id| {
                tokio::spawn(client_loop(
                    c.clone(),
                    id,
                    round,
                    stop.clone(),
                    ledger.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(150 + rng.u64(..) % 400)).await;
        node.kill9().await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
        node.restart().await.expect("restart");
        let snapshot = {
            let l = ledger.lock().unwrap();
            Ledger {
                puts: l.puts.clone(),
                maybe_puts: l.maybe_puts.clone(),
                counters: l.counters.clone(),
                sets: l.sets.clone(),
                acks: l.acks,
            }
        };
        total_checked = verify(&c, &snapshot).await;
        println!(
            "round {round}: {} acknowledged writes so far, {total_checked} checked after restart",
            snapshot.acks
        );
    }
    let acks = ledger.lock().unwrap().acks;
    println!(
        "SIGKILL crash test: {ROUNDS} kills, {acks} acknowledged writes, {total_checked} checks after the last restart, 0 lost"
    );
    assert!(
        acks > 1_000,
        "the test must actually write under load ({acks} acks)"
    );
    assert!(
        node.terminate(Duration::from_secs(10)).await.unwrap(),
        "clean exit on SIGTERM"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn meridian_core_testdir() -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("meridian-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}
