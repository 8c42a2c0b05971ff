//! Workloads that write through the client and record every outcome.
//!
//! Every operation ends as *ok* (acknowledged), *failed* (refused: it did
//! not happen) or *indeterminate* (timed out or cut off: it may have
//! happened). The checkers ([`crate::check`]) demand every acknowledged write
//! and tolerate the indeterminate ones, never anything else.
//!
//! A writer is a client session: it carries the causal token of its last
//! answer into every request, so its operations are causally ordered in every
//! region (which is what lets the checkers say "this remove saw that add",
//! "this write followed that one").
//!
//! Why past ~400 lines: the workload's operations and how each outcome is
//! recorded, one type.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use meridian_client::{Client, ClientError, Options};
use serde_json::{Value, json};

/// Counter deltas: acknowledged, and those of unknown outcome.
#[derive(Clone, Debug, Default)]
pub struct Deltas {
    /// Sum of acknowledged deltas.
    pub acked: i64,
    /// Deltas whose outcome is unknown (each may or may not have happened).
    pub unknown: Vec<i64>,
}

/// One element of a set: when its add was acknowledged, and its fate.
#[derive(Clone, Debug, Default)]
pub struct Member {
    /// The add was acknowledged (at this time since the run started).
    pub added: Option<Duration>,
    /// The add's outcome is unknown.
    pub add_unknown: bool,
    /// A remove, made after the add was acknowledged, was acknowledged.
    pub removed: bool,
    /// A remove's outcome is unknown.
    pub remove_unknown: bool,
}

/// One session's sequence numbers written to a shared register:
/// acknowledged, and of unknown outcome.
pub type SessionWrites = (Vec<i64>, Vec<i64>);

/// A set read during the run.
#[derive(Clone, Debug)]
pub struct SetRead {
    /// When it was sent (since the run started).
    pub at: Duration,
    /// Which set.
    pub key: String,
    /// What it held.
    pub members: BTreeSet<String>,
}

/// What the workloads did, for the checkers.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// Acknowledged puts of unique keys (`default` keyspace): key -> value.
    pub puts: BTreeMap<String, Value>,
    /// Puts of unknown outcome.
    pub maybe_puts: BTreeMap<String, Value>,
    /// Counter key (`hits`) -> deltas.
    pub counters: BTreeMap<String, Deltas>,
    /// Set key (`tags`) -> member -> fate.
    pub sets: BTreeMap<String, BTreeMap<String, Member>>,
    /// Set reads made during the run.
    pub set_reads: Vec<SetRead>,
    /// Doc key (`docs`) -> (visits deltas, tag members acknowledged, of unknown outcome).
    pub docs: BTreeMap<String, (Deltas, BTreeSet<String>, BTreeSet<String>)>,
    /// Register key (`regs`) -> the writing session's acknowledged values, in order.
    pub registers: BTreeMap<String, Vec<i64>>,
    /// Register values of unknown outcome.
    pub maybe_registers: BTreeMap<String, Vec<i64>>,
    /// Shared register key (`regs`, written by every session) -> writing
    /// session -> its sequence numbers: acknowledged, and of unknown outcome.
    pub shared: BTreeMap<String, BTreeMap<String, SessionWrites>>,
    /// Reads carrying a token: answered, answered 503, and answered with an
    /// older value than the token's write (must be 0).
    pub token_reads: u64,
    /// Token reads answered 503 (the region was behind: allowed).
    pub token_unavailable: u64,
    /// Token reads that returned an older value: violations.
    pub token_stale: Vec<String>,
    /// Operations acknowledged.
    pub ok: u64,
    /// Operations refused.
    pub failed: u64,
    /// Operations of unknown outcome.
    pub indeterminate: u64,
    /// Failures by kind, for the report.
    pub errors: BTreeMap<String, u64>,
}

/// A history shared by concurrent writers.
pub type Shared = Arc<Mutex<History>>;

/// Creates the keyspaces the workloads use: `hits` (counter), `tags` (set),
/// `docs` (doc: `visits` counter, `tags` set, `last` lww), `regs` (lww).
pub async fn define_keyspaces(c: &Client) -> Result<(), ClientError> {
    c.define_keyspace("hits", &json!({"policy": "counter"}))
        .await?;
    c.define_keyspace("tags", &json!({"policy": "set"})).await?;
    c.define_keyspace(
        "docs",
        &json!({"policy": "doc", "schema": {"visits": "counter", "tags": "set", "last": "lww"}}),
    )
    .await?;
    c.define_keyspace("regs", &json!({"policy": "lww"})).await?;
    Ok(())
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged.
    Ok,
    /// Refused: did not happen.
    Failed,
    /// May or may not have happened.
    Indeterminate,
}

fn classify<T>(h: &mut History, r: &Result<T, ClientError>) -> Outcome {
    match r {
        Ok(_) => {
            h.ok += 1;
            Outcome::Ok
        }
        Err(e) => {
            *h.errors.entry(e.kind()).or_default() += 1;
            if e.is_indeterminate() {
                h.indeterminate += 1;
                Outcome::Indeterminate
            } else {
                h.failed += 1;
                Outcome::Failed
            }
        }
    }
}

/// What a writer does.
#[derive(Clone)]
pub struct WriterSpec {
    /// Makes its keys and members unique (e.g. region and writer number).
    pub tag: String,
    /// Its home region's client.
    pub home: Client,
    /// Every region's client (reads with the session's token go anywhere).
    pub all: Vec<Client>,
    /// Client-side timeout of each call, ms.
    pub timeout_ms: u64,
}

struct Session {
    token: Option<String>,
    timeout_ms: u64,
}

impl Session {
    fn opts(&self) -> Options {
        Options {
            token: self.token.clone(),
            wait_ms: Some(500),
            timeout_ms: Some(self.timeout_ms),
            ..Options::default()
        }
    }

    fn keep(&mut self, token: Option<&String>) {
        if let Some(t) = token {
            self.token = Some(t.clone());
        }
    }
}

/// Runs a mixed session until `stop`: puts of unique keys, counter
/// increments and decrements, set adds and (of its own acknowledged
/// members) removes, set reads, doc patches, register writes each read back
/// at once in a random region with the write's token.
pub async fn mixed_writer(w: WriterSpec, stop: Arc<AtomicBool>, history: Shared, started: Instant) {
    let mut s = Session {
        token: None,
        timeout_ms: w.timeout_ms,
    };
    let mut n: u64 = 0;
    let mut x: u64 = w.tag.bytes().fold(0x9e37_79b9, |a, b| {
        a.wrapping_mul(31).wrapping_add(u64::from(b))
    });
    let mut my_members: Vec<(String, String)> = Vec::new();
    let mut reg_n: i64 = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let c = &w.home;
        let failed = match x % 10 {
            0 | 1 => {
                let key = format!("{}-{n}", w.tag);
                let value = json!({"by": w.tag, "n": n});
                let r = c.put_with("default", &key, &value, &s.opts()).await;
                s.keep(r.as_ref().ok().map(|w| &w.token));
                let mut h = history.lock().unwrap_or_else(PoisonError::into_inner);
                match classify(&mut h, &r) {
                    Outcome::Ok => {
                        h.puts.insert(key, value);
                    }
                    Outcome::Indeterminate => {
                        h.maybe_puts.insert(key, value);
                    }
                    Outcome::Failed => {}
                }
                r.is_err()
            }
            2 => {
                let key = format!("n{}", (x >> 16) % 4);
                let by = (x % 7) as i64 - 3; // -3..=3: increments and decrements
                let by = if by == 0 { 1 } else { by };
                let r = c
                    .op_with("hits", &key, &json!({"op": "incr", "by": by}), &s.opts())
                    .await;
                s.keep(r.as_ref().ok().map(|w| &w.token));
                let mut h = history.lock().unwrap_or_else(PoisonError::into_inner);
                let d = classify(&mut h, &r);
                let e = h.counters.entry(key).or_default();
                match d {
                    Outcome::Ok => e.acked += by,
                    Outcome::Indeterminate => e.unknown.push(by),
                    Outcome::Failed => {}
                }
                r.is_err()
            }
            3 | 4 => {
                let key = format!("s{}", (x >> 16) % 4);
                let member = format!("{}-{n}", w.tag);
                let r = c
                    .op_with(
                        "tags",
                        &key,
                        &json!({"op": "add", "values": [member]}),
                        &s.opts(),
                    )
                    .await;
                s.keep(r.as_ref().ok().map(|w| &w.token));
                let mut h = history.lock().unwrap_or_else(PoisonError::into_inner);
                let d = classify(&mut h, &r);
                let m = h
                    .sets
                    .entry(key.clone())
                    .or_default()
                    .entry(member.clone())
                    .or_default();
                match d {
                    Outcome::Ok => {
                        m.added = Some(started.elapsed());
                        my_members.push((key, member));
                    }
                    Outcome::Indeterminate => m.add_unknown = true,
                    Outcome::Failed => {}
                }
                r.is_err()
            }
            5 if !my_members.is_empty() => {
                // Remove one of this session's own acknowledged members: the
                // remove has seen the add (same session), so it must win.
                let (key, member) = my_members.swap_remove((x as usize / 7) % my_members.len());
                let r = c
                    .op_with(
                        "tags",
                        &key,
                        &json!({"op": "remove", "values": [member]}),
                        &s.opts(),
                    )
                    .await;
                s.keep(r.as_ref().ok().map(|w| &w.token));
                let mut h = history.lock().unwrap_or_else(PoisonError::into_inner);
                let d = classify(&mut h, &r);
                let m = h.sets.entry(key).or_default().entry(member).or_default();
                match d {
                    Outcome::Ok => m.removed = true,
                    Outcome::Indeterminate => m.remove_unknown = true,
                    Outcome::Failed => {}
                }
                r.is_err()
            }
            6 => {
                let key = format!("s{}", (x >> 16) % 4);
                let reader = &w.all[(x as usize / 3) % w.all.len()];
                let at = started.elapsed();
                let r = reader.get_with("tags", &key, &s.opts()).await;
                let mut h = history.lock().unwrap_or_else(PoisonError::into_inner);
                match &r {
                    Ok((e, t)) => {
                        let members = e
                            .as_ref()
                            .and_then(|e| e.value().and_then(Value::as_array).cloned())
                            .unwrap_or_default()
                            .into_iter()
                            .filter_map(|m| m.as_str().map(str::to_string))
                            .collect();
                        h.set_reads.push(SetRead { at, key, members });
                        s.keep(t.as_ref());
                    }
                    Err(_) => {
                        classify(&mut h, &r);
                    }
                }
                r.is_err()
            }
            7 => {
                let key = format!("doc-{}", (x >> 16) % 4);
                let tag = format!("{}-{n}", w.tag);
                let patch =
                    json!({"op": "patch", "doc": {"visits": 1, "tags": [tag], "last": w.tag}});
                let r = c.op_with("docs", &key, &patch, &s.opts()).await;
                s.keep(r.as_ref().ok().map(|w| &w.token));
                let mut h = history.lock().unwrap_or_else(PoisonError::into_inner);
                let d = classify(&mut h, &r);
                let e = h.docs.entry(key).or_default();
                match d {
                    Outcome::Ok => {
                        e.0.acked += 1;
                        e.1.insert(tag);
                    }
                    Outcome::Indeterminate => {
                        e.0.unknown.push(1);
                        e.2.insert(tag);
                    }
                    Outcome::Failed => {}
                }
                r.is_err()
            }
            8 => {
                // A register every session writes: LWW picks one winner,
                // and a session's later write must beat its earlier ones.
                reg_n += 1;
                let key = format!("shared-{}", (x >> 16) % 3);
                let value = json!({"by": w.tag, "seq": reg_n});
                let r = c.put_with("regs", &key, &value, &s.opts()).await;
                s.keep(r.as_ref().ok().map(|w| &w.token));
                let mut h = history.lock().unwrap_or_else(PoisonError::into_inner);
                let d = classify(&mut h, &r);
                let e = h
                    .shared
                    .entry(key)
                    .or_default()
                    .entry(w.tag.clone())
                    .or_default();
                match d {
                    Outcome::Ok => e.0.push(reg_n),
                    Outcome::Indeterminate => e.1.push(reg_n),
                    Outcome::Failed => {}
                }
                r.is_err()
            }
            _ => {
                // A register only this session writes, read back at once in a
                // random region with the write's token.
                reg_n += 1;
                let key = format!("reg-{}", w.tag);
                let r = c.put_with("regs", &key, &json!(reg_n), &s.opts()).await;
                s.keep(r.as_ref().ok().map(|w| &w.token));
                let outcome = {
                    let mut h = history.lock().unwrap_or_else(PoisonError::into_inner);
                    let d = classify(&mut h, &r);
                    match d {
                        Outcome::Ok => h.registers.entry(key.clone()).or_default().push(reg_n),
                        Outcome::Indeterminate => h
                            .maybe_registers
                            .entry(key.clone())
                            .or_default()
                            .push(reg_n),
                        Outcome::Failed => {}
                    }
                    d
                };
                if outcome == Outcome::Ok {
                    let reader = &w.all[(x as usize / 5) % w.all.len()];
                    let rr = reader.get_with("regs", &key, &s.opts()).await;
                    let mut h = history.lock().unwrap_or_else(PoisonError::into_inner);
                    h.token_reads += 1;
                    match &rr {
                        Ok((Some(e), t)) => {
                            let got = e.value().and_then(Value::as_i64).unwrap_or(-1);
                            // An earlier write of unknown outcome may land
                            // late and win (the token does not cover it).
                            let late = h
                                .maybe_registers
                                .get(&key)
                                .is_some_and(|m| m.contains(&got));
                            if got < reg_n && !late {
                                h.token_stale.push(format!(
                                    "{key}: wrote {reg_n}, read {got} at {} with the write's token",
                                    reader.base_url()
                                ));
                            }
                            s.keep(t.as_ref());
                        }
                        Ok((None, _)) => h.token_stale.push(format!(
                            "{key}: wrote {reg_n}, read nothing at {} with its token",
                            reader.base_url()
                        )),
                        Err(e) if e.is_code("behind_token") => h.token_unavailable += 1,
                        Err(_) => {
                            classify(&mut h, &rr);
                        }
                    }
                }
                r.is_err()
            }
        };
        if failed {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Starts `per_region` mixed writers in every region of `clients`
/// (`(region, client)`); returns the stop flag, the history and the tasks.
pub fn start_writers(
    clients: &[(String, Client)],
    per_region: usize,
    timeout_ms: u64,
) -> (Arc<AtomicBool>, Shared, Vec<tokio::task::JoinHandle<()>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let history: Shared = Arc::new(Mutex::new(History::default()));
    let started = Instant::now();
    let all: Vec<Client> = clients.iter().map(|(_, c)| c.clone()).collect();
    let mut tasks = Vec::new();
    for (region, c) in clients {
        for i in 0..per_region {
            let spec = WriterSpec {
                tag: format!("{region}-w{i}"),
                home: c.clone(),
                all: all.clone(),
                timeout_ms,
            };
            tasks.push(tokio::spawn(mixed_writer(
                spec,
                stop.clone(),
                history.clone(),
                started,
            )));
        }
    }
    (stop, history, tasks)
}

/// Stops writers started by [`start_writers`] and returns their history.
pub async fn stop_writers(
    stop: Arc<AtomicBool>,
    history: Shared,
    tasks: Vec<tokio::task::JoinHandle<()>>,
) -> History {
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    history
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}
