//! fjall 3 vs redb, measured the way Meridian uses its state store.
//!
//! Three measurements, each run `RUNS` times interleaved (fjall, redb, fjall,
//! redb, ...), medians reported:
//!
//! 1. `sync`: `SYNC_BATCHES` batches of 100 puts, each made durable before the
//!    next one starts (fjall: `WriteBatch::commit` then
//!    `Database::persist(PersistMode::SyncData)`; redb: one write transaction
//!    per batch, default `Durability::Immediate`).
//! 2. `load`: Meridian's pattern. `LOAD_KEYS` puts in batches of 20 committed
//!    without a sync (fjall opened with `manual_journal_persist(true)`; redb
//!    `Durability::None`), with a sync every `PERSIST_EVERY` batches
//!    (fjall `persist(SyncAll)`; redb: that batch commits with
//!    `Durability::Immediate`) and one at the end, inside the timing.
//! 3. `get`: the store from (2) is closed and reopened, then `GETS` point reads
//!    of existing keys in random order, once with the 64 MiB cache Meridian
//!    gives fjall and once with a 1 GiB cache (redb's default). fjall is read
//!    as a restart leaves it (the memtable rebuilt from the journal, tables in
//!    L0); `FJALL_SETTLE=1` flushes that memtable and waits for compactions
//!    first, untimed. redb opens a read transaction per get, as a backend
//!    behind Meridian's per-call `Backend::get` would; one extra pass uses a
//!    single read transaction for all gets (redb's best case).
//!
//! Keys are 24 bytes (a hashed 8-byte prefix, so inserts land in random order,
//! then the 8-byte counter, then 8 more hashed bytes), all distinct; values
//! are 150 pseudo-random (incompressible) bytes. Data lives under
//! `DATA_DIR` (default `bench/out/storage-data`, on the repository's disk),
//! which is created fresh and removed at the end.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use redb::ReadableDatabase;

const SMALL_CACHE: u64 = 64 << 20; // what crates/core gives fjall
const BIG_CACHE: u64 = 1 << 30; // redb's default
const TABLE: &str = "k.default";
const REDB_TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new(TABLE);

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Key number `i` of a run seeded with `seed`: distinct for distinct `i`.
fn key(seed: u64, i: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&splitmix(seed ^ i).to_be_bytes());
    k[8..16].copy_from_slice(&i.to_be_bytes());
    k[16..].copy_from_slice(&splitmix(i.wrapping_add(seed).wrapping_mul(31)).to_be_bytes());
    k
}

/// A pool of pseudo-random 150-byte values (so neither store gains from compression).
fn values() -> Vec<[u8; 150]> {
    (0..1024u64)
        .map(|v| {
            let mut out = [0u8; 150];
            for (j, chunk) in out.chunks_mut(8).enumerate() {
                let r = splitmix(v * 1000 + j as u64).to_le_bytes();
                chunk.copy_from_slice(&r[..chunk.len()]);
            }
            out
        })
        .collect()
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn dir_bytes(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = fs::read_dir(p) {
        for e in rd.flatten() {
            let m = match e.metadata() {
                Ok(m) => m,
                Err(_) => continue,
            };
            if m.is_dir() {
                total += dir_bytes(&e.path());
            } else {
                total += m.len();
            }
        }
    }
    total
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Engine {
    Fjall,
    Redb,
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Engine::Fjall => "fjall",
            Engine::Redb => "redb",
        }
    }
}

// ---------------------------------------------------------------- fjall ---

fn fjall_open(dir: &Path, cache: u64) -> (fjall::Database, fjall::Keyspace) {
    let db = fjall::Database::builder(dir)
        .manual_journal_persist(true)
        .cache_size(cache)
        .open()
        .expect("open fjall");
    let ks = db
        .keyspace(TABLE, fjall::KeyspaceCreateOptions::default)
        .expect("fjall keyspace");
    (db, ks)
}

fn redb_open(path: &Path, cache: u64) -> redb::Database {
    let db = redb::Database::builder()
        .set_cache_size(cache as usize)
        .create(path)
        .expect("open redb");
    // Create the table up front so that the first timed batch is no different.
    let tx = db.begin_write().unwrap();
    tx.open_table(REDB_TABLE).unwrap();
    tx.commit().unwrap();
    db
}

// ----------------------------------------------------------- measurement ---

struct SyncResult {
    ops_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// (1) Every batch of `per` puts durable before the next.
fn run_sync(
    engine: Engine,
    dir: &Path,
    batches: usize,
    per: usize,
    seed: u64,
    vals: &[[u8; 150]],
) -> SyncResult {
    let warmup = 20;
    let mut lat = Vec::with_capacity(batches);
    let mut i: u64 = 0;
    let elapsed = match engine {
        Engine::Fjall => {
            let (db, ks) = fjall_open(dir, SMALL_CACHE);
            let mut t_start = Instant::now();
            for b in 0..warmup + batches {
                if b == warmup {
                    t_start = Instant::now();
                }
                let t0 = Instant::now();
                let mut wb = db.batch();
                for _ in 0..per {
                    wb.insert(&ks, &key(seed, i)[..], &vals[(i % 1024) as usize][..]);
                    i += 1;
                }
                wb.commit().unwrap();
                db.persist(fjall::PersistMode::SyncData).unwrap();
                if b >= warmup {
                    lat.push(t0.elapsed());
                }
            }
            t_start.elapsed()
        }
        Engine::Redb => {
            let db = redb_open(&dir.join("state.redb"), SMALL_CACHE);
            let mut t_start = Instant::now();
            for b in 0..warmup + batches {
                if b == warmup {
                    t_start = Instant::now();
                }
                let t0 = Instant::now();
                let tx = db.begin_write().unwrap(); // Durability::Immediate by default
                {
                    let mut t = tx.open_table(REDB_TABLE).unwrap();
                    for _ in 0..per {
                        t.insert(&key(seed, i)[..], &vals[(i % 1024) as usize][..])
                            .unwrap();
                        i += 1;
                    }
                }
                tx.commit().unwrap();
                if b >= warmup {
                    lat.push(t0.elapsed());
                }
            }
            t_start.elapsed()
        }
    };
    lat.sort();
    SyncResult {
        ops_s: (batches * per) as f64 / elapsed.as_secs_f64(),
        p50_ms: pct(&lat, 0.5).as_secs_f64() * 1e3,
        p99_ms: pct(&lat, 0.99).as_secs_f64() * 1e3,
    }
}

struct LoadResult {
    ops_s: f64,
    batch_p99_us: f64,
    sync_median_ms: f64,
    syncs: usize,
    disk_mb: f64,
    /// (open time ms, gets/s) for the small then the big cache.
    gets: Vec<(f64, f64)>,
}

/// (2) Meridian's pattern, then (3) reads of the loaded store after reopening.
#[allow(clippy::too_many_arguments)]
fn run_load_get(
    engine: Engine,
    dir: &Path,
    keys: usize,
    per: usize,
    persist_every: usize,
    gets: usize,
    seed: u64,
    vals: &[[u8; 150]],
) -> LoadResult {
    let batches = keys.div_ceil(per);
    let mut batch_lat = Vec::with_capacity(batches);
    let mut sync_lat = Vec::new();
    let mut i: u64 = 0;
    let redb_path = dir.join("state.redb");
    let elapsed = match engine {
        Engine::Fjall => {
            let (db, ks) = fjall_open(dir, SMALL_CACHE);
            let t_start = Instant::now();
            for b in 0..batches {
                let t0 = Instant::now();
                let mut wb = db.batch();
                for _ in 0..per {
                    if i as usize == keys {
                        break;
                    }
                    wb.insert(&ks, &key(seed, i)[..], &vals[(i % 1024) as usize][..]);
                    i += 1;
                }
                wb.commit().unwrap();
                batch_lat.push(t0.elapsed());
                if (b + 1) % persist_every == 0 || b + 1 == batches {
                    let t1 = Instant::now();
                    db.persist(fjall::PersistMode::SyncAll).unwrap();
                    sync_lat.push(t1.elapsed());
                }
            }
            t_start.elapsed()
        }
        Engine::Redb => {
            let db = redb_open(&redb_path, SMALL_CACHE);
            let t_start = Instant::now();
            for b in 0..batches {
                let sync = (b + 1) % persist_every == 0 || b + 1 == batches;
                let t0 = Instant::now();
                let mut tx = db.begin_write().unwrap();
                if !sync {
                    tx.set_durability(redb::Durability::None).unwrap();
                }
                {
                    let mut t = tx.open_table(REDB_TABLE).unwrap();
                    for _ in 0..per {
                        if i as usize == keys {
                            break;
                        }
                        t.insert(&key(seed, i)[..], &vals[(i % 1024) as usize][..])
                            .unwrap();
                        i += 1;
                    }
                }
                tx.commit().unwrap();
                if sync {
                    sync_lat.push(t0.elapsed());
                } else {
                    batch_lat.push(t0.elapsed());
                }
            }
            t_start.elapsed()
        }
    };
    batch_lat.sort();
    let mut sync_ms: Vec<f64> = sync_lat.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    let syncs = sync_ms.len();
    let disk_mb = dir_bytes(dir) as f64 / 1e6;

    // (3) reopen and read, with each cache size.
    let mut get_results = Vec::new();
    for cache in [SMALL_CACHE, BIG_CACHE] {
        let mut found = 0usize;
        let mut bytes = 0usize;
        let (open_ms, secs) = match engine {
            Engine::Fjall => {
                let t_open = Instant::now();
                let (db, ks) = fjall_open(dir, cache);
                let open_ms = t_open.elapsed().as_secs_f64() * 1e3;
                eprintln!(
                    "  fjall after reopen: {} tables ({} in L0), {} journal bytes",
                    ks.table_count(),
                    ks.l0_table_count(),
                    db.journal_disk_space().unwrap_or(0)
                );
                if std::env::var_os("FJALL_SETTLE").is_some() {
                    // Flush the memtable rebuilt from the journal and let
                    // compactions finish before reading (not timed).
                    ks.rotate_memtable_and_wait().unwrap();
                    while db.active_compactions() > 0 || db.outstanding_flushes() > 0 {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    eprintln!(
                        "  fjall settled: {} tables ({} in L0)",
                        ks.table_count(),
                        ks.l0_table_count()
                    );
                }
                let t0 = Instant::now();
                for j in 0..gets as u64 {
                    let idx = splitmix(j ^ 0xABCD ^ cache) % keys as u64;
                    if let Some(v) = ks.get(key(seed, idx)).unwrap() {
                        found += 1;
                        bytes += v.len();
                    }
                }
                (open_ms, t0.elapsed().as_secs_f64())
            }
            Engine::Redb => {
                let t_open = Instant::now();
                let db = redb::Database::builder()
                    .set_cache_size(cache as usize)
                    .create(&redb_path)
                    .unwrap();
                let open_ms = t_open.elapsed().as_secs_f64() * 1e3;
                let t0 = Instant::now();
                // One read transaction per get, as a redb backend behind
                // Meridian's `Backend::get` would do.
                for j in 0..gets as u64 {
                    let idx = splitmix(j ^ 0xABCD ^ cache) % keys as u64;
                    let rtx = db.begin_read().unwrap();
                    let t = rtx.open_table(REDB_TABLE).unwrap();
                    if let Some(v) = t.get(&key(seed, idx)[..]).unwrap() {
                        found += 1;
                        bytes += v.value().len();
                    }
                }
                (open_ms, t0.elapsed().as_secs_f64())
            }
        };
        assert_eq!(found, gets, "{} lost keys", engine.name());
        assert_eq!(bytes, gets * 150);
        get_results.push((open_ms, gets as f64 / secs));
    }

    LoadResult {
        ops_s: keys as f64 / elapsed.as_secs_f64(),
        batch_p99_us: pct(&batch_lat, 0.99).as_secs_f64() * 1e6,
        sync_median_ms: median(&mut sync_ms),
        syncs,
        disk_mb,
        gets: get_results,
    }
}

/// Extra read pass for redb with a single read transaction for all gets
/// (redb's best case; not how a per-call `Backend::get` would use it).
fn redb_gets_one_tx(dir: &Path, keys: usize, gets: usize, seed: u64) -> f64 {
    let db = redb::Database::builder()
        .set_cache_size(SMALL_CACHE as usize)
        .create(dir.join("state.redb"))
        .unwrap();
    let rtx = db.begin_read().unwrap();
    let t = rtx.open_table(REDB_TABLE).unwrap();
    let t0 = Instant::now();
    let mut found = 0;
    for j in 0..gets as u64 {
        let idx = splitmix(j ^ 0x1234) % keys as u64;
        if t.get(&key(seed, idx)[..]).unwrap().is_some() {
            found += 1;
        }
    }
    assert_eq!(found, gets);
    gets as f64 / t0.elapsed().as_secs_f64()
}

fn fresh(dir: &Path) {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).unwrap();
}

fn main() {
    let runs = env_usize("RUNS", 3);
    let sync_batches = env_usize("SYNC_BATCHES", 5000);
    let sync_per = env_usize("SYNC_BATCH_SIZE", 100);
    let load_keys = env_usize("LOAD_KEYS", 1_000_000);
    let load_per = env_usize("LOAD_BATCH_SIZE", 20);
    let persist_every = env_usize("PERSIST_EVERY", 10_000);
    let gets = env_usize("GETS", 1_000_000);
    let root: PathBuf = std::env::var_os("DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../out/storage-data"));
    let vals = values();
    let engines = [Engine::Fjall, Engine::Redb];

    fresh(&root);
    let root = root.canonicalize().unwrap();
    let loadavg = || {
        fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    eprintln!("loadavg at start: {}", loadavg());
    eprintln!("data dir: {}", root.display());
    eprintln!(
        "RUNS={runs} SYNC_BATCHES={sync_batches} SYNC_BATCH_SIZE={sync_per} LOAD_KEYS={load_keys} \
         LOAD_BATCH_SIZE={load_per} PERSIST_EVERY={persist_every} GETS={gets}"
    );

    // Cleanup also on panic.
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            if std::env::var_os("KEEP_DATA").is_none() {
                let _ = fs::remove_dir_all(&self.0);
            }
        }
    }
    let _cleanup = Cleanup(root.clone());

    // (1) synced batches
    let mut sync: [Vec<SyncResult>; 2] = [Vec::new(), Vec::new()];
    for r in 0..runs {
        for (e, &engine) in engines.iter().enumerate() {
            let dir = root.join(format!("sync-{}-{r}", engine.name()));
            fresh(&dir);
            let res = run_sync(engine, &dir, sync_batches, sync_per, 1000 + r as u64, &vals);
            eprintln!(
                "sync  run {} {:5}: {:>9.0} puts/s  p50 {:.2} ms  p99 {:.2} ms",
                r + 1,
                engine.name(),
                res.ops_s,
                res.p50_ms,
                res.p99_ms
            );
            sync[e].push(res);
            let _ = fs::remove_dir_all(&dir);
        }
    }

    // (2) + (3)
    let mut load: [Vec<LoadResult>; 2] = [Vec::new(), Vec::new()];
    let mut one_tx = Vec::new();
    for r in 0..runs {
        for (e, &engine) in engines.iter().enumerate() {
            let dir = root.join(format!("load-{}-{r}", engine.name()));
            fresh(&dir);
            let seed = 2000 + r as u64;
            let res = run_load_get(
                engine,
                &dir,
                load_keys,
                load_per,
                persist_every,
                gets,
                seed,
                &vals,
            );
            eprintln!(
                "load  run {} {:5}: {:>9.0} puts/s  batch p99 {:.0} us  sync median {:.1} ms ({} syncs)  {:.0} MB on disk",
                r + 1,
                engine.name(),
                res.ops_s,
                res.batch_p99_us,
                res.sync_median_ms,
                res.syncs,
                res.disk_mb
            );
            eprintln!(
                "get   run {} {:5}: {:>9.0} gets/s (64 MiB cache, open {:.0} ms)  {:>9.0} gets/s (1 GiB cache)",
                r + 1,
                engine.name(),
                res.gets[0].1,
                res.gets[0].0,
                res.gets[1].1
            );
            if engine == Engine::Redb {
                let g = redb_gets_one_tx(&dir, load_keys, gets, seed);
                eprintln!(
                    "get   run {} redb : {:>9.0} gets/s (one read txn for all gets, 64 MiB cache)",
                    r + 1,
                    g
                );
                one_tx.push(g);
            }
            load[e].push(res);
            let _ = fs::remove_dir_all(&dir);
        }
    }

    // Medians.
    let med = |f: &dyn Fn(usize) -> Vec<f64>, e: usize| median(&mut f(e));
    let s_ops = |e: usize| sync[e].iter().map(|x| x.ops_s).collect::<Vec<_>>();
    let s_p50 = |e: usize| sync[e].iter().map(|x| x.p50_ms).collect::<Vec<_>>();
    let s_p99 = |e: usize| sync[e].iter().map(|x| x.p99_ms).collect::<Vec<_>>();
    let l_ops = |e: usize| load[e].iter().map(|x| x.ops_s).collect::<Vec<_>>();
    let l_p99 = |e: usize| load[e].iter().map(|x| x.batch_p99_us).collect::<Vec<_>>();
    let l_sync = |e: usize| load[e].iter().map(|x| x.sync_median_ms).collect::<Vec<_>>();
    let l_disk = |e: usize| load[e].iter().map(|x| x.disk_mb).collect::<Vec<_>>();
    let g_small = |e: usize| load[e].iter().map(|x| x.gets[0].1).collect::<Vec<_>>();
    let g_big = |e: usize| load[e].iter().map(|x| x.gets[1].1).collect::<Vec<_>>();
    let g_open = |e: usize| load[e].iter().map(|x| x.gets[0].0).collect::<Vec<_>>();

    let all = |v: Vec<f64>, prec: usize| {
        v.iter()
            .map(|x| format!("{x:.prec$}"))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    let ratio = |f: &dyn Fn(usize) -> Vec<f64>| med(f, 0) / med(f, 1);

    let mut out = String::new();
    out.push_str("| measurement | fjall (median) | redb (median) | fjall / redb | fjall runs | redb runs |\n");
    out.push_str("|---|---:|---:|---:|---|---|\n");
    let mut row = |name: &str, f: &dyn Fn(usize) -> Vec<f64>, prec: usize| {
        let (a, b) = (med(f, 0), med(f, 1));
        // A ratio to a near-zero time (redb's clean reopen) says nothing.
        let r = if b * 10f64.powi(prec as i32) < 1.0 {
            "-".to_string()
        } else {
            format!("{:.2}x", ratio(f))
        };
        out.push_str(&format!(
            "| {name} | {a:.prec$} | {b:.prec$} | {r} | {} | {} |\n",
            all(f(0), prec),
            all(f(1), prec)
        ));
    };
    row(
        &format!("1. synced batches of {sync_per}: puts/s"),
        &s_ops,
        0,
    );
    row("1. synced batch latency p50 (ms)", &s_p50, 2);
    row("1. synced batch latency p99 (ms)", &s_p99, 2);
    row(
        &format!("2. unsynced batches of {load_per}, sync every {persist_every}: puts/s"),
        &l_ops,
        0,
    );
    row("2. unsynced batch latency p99 (µs)", &l_p99, 0);
    row("2. periodic sync latency median (ms)", &l_sync, 1);
    row(&format!("2. disk after {load_keys} keys (MB)"), &l_disk, 0);
    row("3. reopen time (ms)", &g_open, 1);
    row("3. random gets/s, 64 MiB cache", &g_small, 0);
    row("3. random gets/s, 1 GiB cache", &g_big, 0);
    let mut ot = one_tx.clone();
    out.push_str(&format!(
        "| 3. redb gets/s, one read txn for all gets, 64 MiB cache | | {:.0} | | | {} |\n",
        median(&mut ot),
        all(one_tx, 0)
    ));
    eprintln!("loadavg at end: {}", loadavg());
    println!("{out}");
    let md = root.parent().unwrap().join("storage.md");
    let _ = fs::write(&md, &out);
    eprintln!("table written to {}", md.display());
}
