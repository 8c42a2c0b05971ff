//! Workloads that write through the client and record every outcome, and
//! the checkers that judge a cluster against what was acknowledged.
//!
//! Every operation ends as *ok* (acknowledged), *failed* (refused: it did
//! not happen) or *indeterminate* (timed out or cut off: it may have
//! happened). Checkers demand every acknowledged write and tolerate the
//! indeterminate ones, never anything else.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use meridian_client::{Client, ClientError};
use serde_json::{Value, json};

/// What a workload did, for the checkers.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// Acknowledged puts of unique keys (`default` keyspace): key -> value.
    pub puts: BTreeMap<String, Value>,
    /// Puts of unknown outcome.
    pub maybe_puts: BTreeMap<String, Value>,
    /// Counter key -> (sum of acknowledged deltas, sum of unknown ones).
    pub counters: BTreeMap<String, (i64, i64)>,
    /// Set key -> (acknowledged members, members of unknown outcome).
    pub sets: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)>,
    /// Operations acknowledged.
    pub ok: u64,
    /// Operations refused.
    pub failed: u64,
    /// Operations of unknown outcome.
    pub indeterminate: u64,
}

/// A history shared by concurrent writers.
pub type Shared = Arc<Mutex<History>>;

/// The keyspaces the mixed workload uses: `hits` (counter), `tags` (set).
pub async fn define_keyspaces(c: &Client) -> Result<(), ClientError> {
    c.define_keyspace("hits", &json!({"policy": "counter"}))
        .await?;
    c.define_keyspace("tags", &json!({"policy": "set"})).await?;
    Ok(())
}

fn outcome<T>(h: &mut History, r: &Result<T, ClientError>) -> Option<bool> {
    match r {
        Ok(_) => {
            h.ok += 1;
            Some(true)
        }
        Err(e) if e.is_indeterminate() => {
            h.indeterminate += 1;
            Some(false)
        }
        Err(_) => {
            h.failed += 1;
            None
        }
    }
}

/// Writes puts of unique keys, counter increments and set adds through `c`
/// until `stop`; `tag` makes its keys unique (e.g. region and writer number).
pub async fn mixed_writer(c: Client, tag: String, stop: Arc<AtomicBool>, history: Shared) {
    let mut n: u64 = 0;
    let mut x: u64 = tag
        .bytes()
        .fold(0x9e37, |a, b| a.wrapping_mul(31).wrapping_add(u64::from(b)));
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let failed = match x % 3 {
            0 => {
                let key = format!("{tag}-{n}");
                let value = json!({"by": tag, "n": n});
                let r = c.put("default", &key, &value).await;
                let mut h = history.lock().unwrap_or_else(PoisonError::into_inner);
                match outcome(&mut h, &r) {
                    Some(true) => {
                        h.puts.insert(key, value);
                    }
                    Some(false) => {
                        h.maybe_puts.insert(key, value);
                    }
                    None => {}
                }
                r.is_err()
            }
            1 => {
                let key = format!("n{}", x % 4);
                let by = 1 + (x % 5) as i64;
                let r = c.incr("hits", &key, by).await;
                let mut h = history.lock().unwrap_or_else(PoisonError::into_inner);
                match outcome(&mut h, &r) {
                    Some(true) => h.counters.entry(key).or_default().0 += by,
                    Some(false) => h.counters.entry(key).or_default().1 += by,
                    None => {}
                }
                r.is_err()
            }
            _ => {
                let key = format!("s{}", x % 4);
                let member = format!("{tag}-{n}");
                let r = c.add("tags", &key, &[json!(member)]).await;
                let mut h = history.lock().unwrap_or_else(PoisonError::into_inner);
                match outcome(&mut h, &r) {
                    Some(true) => {
                        h.sets.entry(key).or_default().0.insert(member);
                    }
                    Some(false) => {
                        h.sets.entry(key).or_default().1.insert(member);
                    }
                    None => {}
                }
                r.is_err()
            }
        };
        if failed {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// What a check found.
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    /// Acknowledged writes checked (per region).
    pub checked: u64,
    /// Acknowledged writes missing (must be 0).
    pub lost: u64,
    /// Values nobody wrote, counters out of bounds, members nobody added (must be 0).
    pub wrong: u64,
    /// The first problems, for people.
    pub problems: Vec<String>,
}

impl Verdict {
    fn problem(&mut self, lost: bool, p: String) {
        if lost {
            self.lost += 1;
        } else {
            self.wrong += 1;
        }
        if self.problems.len() < 20 {
            self.problems.push(p);
        }
    }

    /// Whether nothing was lost or wrong.
    pub fn ok(&self) -> bool {
        self.lost == 0 && self.wrong == 0
    }
}

/// Reads every key the history touched in one region and judges it.
pub async fn check_region(c: &Client, region: &str, h: &History) -> Result<Verdict, ClientError> {
    let mut v = Verdict::default();
    let stored: BTreeMap<String, Value> = c
        .dump("default")
        .await?
        .into_iter()
        .filter_map(|item| Some((item["key"].as_str()?.to_string(), item["value"].clone())))
        .collect();
    for (k, val) in &h.puts {
        v.checked += 1;
        if stored.get(k) != Some(val) {
            v.problem(
                true,
                format!("{region}: acknowledged put {k} reads {:?}", stored.get(k)),
            );
        }
    }
    for (k, val) in &stored {
        if h.puts
            .get(k)
            .or_else(|| h.maybe_puts.get(k))
            .is_some_and(|w| w != val)
        {
            v.problem(false, format!("{region}: {k} = {val}, which nobody wrote"));
        }
    }
    for (k, (acked, maybe)) in &h.counters {
        v.checked += 1;
        let got = c
            .get("hits", k)
            .await?
            .and_then(|e| e.value().and_then(Value::as_i64))
            .unwrap_or(0);
        if got < *acked {
            v.problem(
                true,
                format!("{region}: counter {k} = {got} < {acked} acknowledged"),
            );
        } else if got > acked + maybe {
            v.problem(
                false,
                format!("{region}: counter {k} = {got} > {acked} acknowledged + {maybe} unknown"),
            );
        }
    }
    for (k, (acked, maybe)) in &h.sets {
        let got: BTreeSet<String> = c
            .get("tags", k)
            .await?
            .and_then(|e| e.value().and_then(Value::as_array).cloned())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| m.as_str().map(str::to_string))
            .collect();
        for m in acked {
            v.checked += 1;
            if !got.contains(m) {
                v.problem(
                    true,
                    format!("{region}: set {k} lacks acknowledged member {m}"),
                );
            }
        }
        for m in &got {
            if !acked.contains(m) && !maybe.contains(m) {
                v.problem(
                    false,
                    format!("{region}: set {k} holds {m}, which nobody added"),
                );
            }
        }
    }
    Ok(v)
}
