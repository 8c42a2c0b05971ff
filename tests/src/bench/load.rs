//! The load generator behind `meridian bench load`: an operation mix against
//! one or more regions over HTTP, closed loop or at a fixed rate, with
//! latency percentiles per region, errors by kind, and optionally the
//! replication lag: a write acknowledged in one region, then read in the
//! next with the write's causal token, which the reader's region answers as
//! soon as it has applied the write.
//!
//! Why past ~400 lines: the load generator: its spec, the closed and the open
//! loop, and the report they fill.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use meridian_client::{Client, ClientError, Options};
use serde::Serialize;
use serde_json::{Value, json};

use super::hist::{Percentiles, Samples};

/// How keys are picked.
#[derive(Clone, Debug, PartialEq)]
pub enum Dist {
    /// Every key alike.
    Uniform,
    /// Zipf with exponent `s` (1.0 is the classic skew).
    Zipf(f64),
}

impl std::str::FromStr for Dist {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "uniform" => Ok(Dist::Uniform),
            "zipf" => Ok(Dist::Zipf(1.0)),
            other => other
                .strip_prefix("zipf:")
                .and_then(|x| x.parse().ok())
                .map(Dist::Zipf)
                .ok_or_else(|| {
                    format!("unknown distribution {other:?}: uniform, zipf or zipf:<s>")
                }),
        }
    }
}

/// Weights of each operation.
#[derive(Clone, Debug, PartialEq)]
pub struct Mix {
    /// `PUT` of a value.
    pub put: u32,
    /// `GET`.
    pub get: u32,
    /// Counter increment.
    pub incr: u32,
    /// Set add.
    pub add: u32,
}

impl std::str::FromStr for Mix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut m = Mix {
            put: 0,
            get: 0,
            incr: 0,
            add: 0,
        };
        for part in s.split(',') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not op=weight"))?;
            let v: u32 = v
                .trim()
                .parse()
                .map_err(|_| format!("weight {v:?} is not a number"))?;
            match k.trim() {
                "put" => m.put = v,
                "get" => m.get = v,
                "incr" => m.incr = v,
                "add" => m.add = v,
                other => return Err(format!("unknown op {other:?}: put, get, incr, add")),
            }
        }
        if m.put + m.get + m.incr + m.add == 0 {
            return Err("the mix is empty".into());
        }
        Ok(m)
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Regions' client URLs; load is spread over them.
    pub urls: Vec<String>,
    /// How long.
    pub duration: Duration,
    /// Closed loop: requests in flight per region. Open loop: the most in
    /// flight overall.
    pub concurrency: usize,
    /// Total operations per second (open loop); `None`: closed loop.
    pub rate: Option<f64>,
    /// Bytes of each value (a JSON string of this length, quotes included).
    pub value_size: usize,
    /// Distinct keys.
    pub keys: u64,
    /// Key distribution.
    pub dist: Dist,
    /// Operation mix.
    pub mix: Mix,
    /// Measure replication lag on 1 in `probe_every` puts (0: off).
    pub probe_every: u64,
    /// Where lag probes read (default: the region after the writer's).
    pub probe_to: Option<String>,
    /// Write concern header for writes.
    pub write_concern: Option<String>,
    /// Show a progress bar.
    pub progress: bool,
    /// Each region's client fails over to the other regions (in the order
    /// given, from the next one on) when its region cannot take a call;
    /// `false` pins each to its region.
    pub failover: bool,
}

/// One region's figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RegionReport {
    /// Its URL.
    pub url: String,
    /// Operations that succeeded.
    pub ok: u64,
    /// Successful operations per second.
    pub per_sec: f64,
    /// Latency of successful operations, ms.
    pub latency: Percentiles,
    /// Latency of successful writes only, ms.
    pub write_latency: Percentiles,
    /// Failures by kind (`404`, `503 behind_token`, `timeout`,
    /// `indeterminate`...).
    pub errors: BTreeMap<String, u64>,
    /// Calls another region answered because this one could not.
    pub failovers: u64,
}

/// The whole run's figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LoadReport {
    /// Seconds measured.
    pub seconds: f64,
    /// All regions' successful operations per second.
    pub per_sec: f64,
    /// Per region.
    pub regions: Vec<RegionReport>,
    /// Ack in one region to visible in the next, ms (when probed).
    pub lag: Option<Percentiles>,
    /// Probes that did not see the write within 10 s.
    pub lag_missed: u64,
}

#[derive(Default)]
struct Acc {
    ok: u64,
    all: Samples,
    writes: Samples,
    errors: BTreeMap<String, u64>,
}

struct Keys {
    n: u64,
    cdf: Option<Vec<f64>>,
}

impl Keys {
    fn new(n: u64, dist: &Dist) -> Self {
        let cdf = match dist {
            Dist::Uniform => None,
            Dist::Zipf(s) => {
                let n = n.min(10_000_000) as usize;
                let mut acc = 0.0;
                let mut cdf = Vec::with_capacity(n);
                for i in 1..=n {
                    acc += 1.0 / (i as f64).powf(*s);
                    cdf.push(acc);
                }
                let total = acc;
                cdf.iter_mut().for_each(|c| *c /= total);
                Some(cdf)
            }
        };
        Self { n: n.max(1), cdf }
    }

    fn pick(&self, r: u64) -> u64 {
        match &self.cdf {
            None => r % self.n,
            Some(cdf) => {
                let u = (r >> 11) as f64 / (1u64 << 53) as f64;
                cdf.partition_point(|c| *c < u) as u64
            }
        }
    }
}

struct Ctx {
    clients: Vec<Client>,
    /// One client per region, pinned to it (no failover): a lag probe must
    /// be answered by the region it asks.
    pinned: Vec<Client>,
    probe: Option<Client>,
    accs: Vec<Mutex<Acc>>,
    keys: Keys,
    spec: LoadSpec,
    value: Value,
    lag: Mutex<Samples>,
    lag_missed: AtomicU64,
    puts: AtomicU64,
    done: AtomicU64,
}

/// Creates the keyspaces the mix needs, in the first region, and waits until
/// every region knows them.
async fn prepare(clients: &[Client], mix: &Mix) -> Result<(), String> {
    let mut needed = Vec::new();
    if mix.incr > 0 {
        needed.push(("bench_hits", "counter"));
    }
    if mix.add > 0 {
        needed.push(("bench_tags", "set"));
    }
    for (name, policy) in &needed {
        clients[0]
            .define_keyspace(name, &json!({"policy": policy}))
            .await
            .map_err(|e| format!("creating keyspace {name}: {e}"))?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for c in clients {
        for (name, _) in &needed {
            loop {
                let ks = c.keyspaces().await.map_err(|e| e.to_string())?;
                let known = ks["keyspaces"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|k| k["name"] == json!(name)));
                if known {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("{} never learned keyspace {name}", c.base_url()));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    Ok(())
}

async fn one_op(ctx: Arc<Ctx>, region: usize, seed: u64, scheduled: Instant) {
    let mut x = fastrand::Rng::with_seed(seed);
    let spec = &ctx.spec;
    let total = spec.mix.put + spec.mix.get + spec.mix.incr + spec.mix.add;
    let roll = x.u32(..total);
    let key = format!("bench-{:08}", ctx.keys.pick(x.u64(..)));
    let c = &ctx.clients[region];
    let wopts = Options {
        write_concern: spec.write_concern.clone(),
        ..Options::default()
    };
    let (is_write, result): (bool, Result<Option<String>, ClientError>) = if roll < spec.mix.put {
        let r = c.put_with("default", &key, &ctx.value, &wopts).await;
        (true, r.map(|w| Some(w.token)))
    } else if roll < spec.mix.put + spec.mix.get {
        (false, c.get("default", &key).await.map(|_| None))
    } else if roll < spec.mix.put + spec.mix.get + spec.mix.incr {
        let r = c
            .op_with("bench_hits", &key, &json!({"op": "incr", "by": 1}), &wopts)
            .await;
        (true, r.map(|_| None))
    } else {
        let member = format!("m{}", x.u32(..1000));
        let r = c
            .op_with(
                "bench_tags",
                &key,
                &json!({"op": "add", "values": [member]}),
                &wopts,
            )
            .await;
        (true, r.map(|_| None))
    };
    let acked = Instant::now();
    let micros = acked.duration_since(scheduled).as_micros() as u64;
    ctx.done.fetch_add(1, Ordering::Relaxed);
    {
        let mut a = ctx.accs[region]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match &result {
            Ok(_) => {
                a.ok += 1;
                a.all.record(micros);
                if is_write {
                    a.writes.record(micros);
                }
            }
            Err(e) => *a.errors.entry(e.kind()).or_default() += 1,
        }
    }
    // Replication lag: read the write in the next region with its token.
    let can_probe = spec.probe_every > 0 && (ctx.probe.is_some() || ctx.clients.len() > 1);
    if let (Ok(Some(token)), true) = (result, can_probe) {
        let n = ctx.puts.fetch_add(1, Ordering::Relaxed);
        if n.is_multiple_of(spec.probe_every) {
            let next = ctx
                .probe
                .as_ref()
                .unwrap_or(&ctx.pinned[(region + 1) % ctx.pinned.len()]);
            let opts = Options {
                token: Some(token),
                wait_ms: Some(10_000),
                timeout_ms: Some(15_000),
                ..Options::default()
            };
            match next.get_with("default", &key, &opts).await {
                Ok(_) => ctx
                    .lag
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .record(acked.elapsed().as_micros() as u64),
                Err(_) => {
                    ctx.lag_missed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// A client builder with what the environment says about access: the
/// token in `MERIDIAN_ACCESS_TOKEN`, the CA in `MERIDIAN_CA_FILE` (for
/// `https://` regions).
fn builder() -> meridian_client::ClientBuilder {
    let mut b = Client::builder();
    if let Ok(t) = std::env::var("MERIDIAN_ACCESS_TOKEN")
        && !t.trim().is_empty()
    {
        b = b.access_token(t.trim());
    }
    if let Some(ca) = std::env::var_os("MERIDIAN_CA_FILE") {
        b = b.ca_file(ca);
    }
    b
}

fn one(url: &str) -> Result<Client, String> {
    builder().region(url).build().map_err(|e| e.to_string())
}

/// Runs the load and reports.
pub async fn run(spec: LoadSpec) -> Result<LoadReport, String> {
    if spec.urls.is_empty() {
        return Err("at least one --url".into());
    }
    let n = spec.urls.len();
    let clients: Vec<Client> = (0..n)
        .map(|i| {
            let others = if spec.failover { n } else { 1 };
            builder()
                .regions((0..others).map(|k| spec.urls[(i + k) % n].clone()))
                .build()
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    let pinned: Vec<Client> = spec.urls.iter().map(|u| one(u)).collect::<Result<_, _>>()?;
    prepare(&pinned, &spec.mix).await?;
    let probe = spec.probe_to.as_deref().map(one).transpose()?;
    let text = "x".repeat(spec.value_size.saturating_sub(2));
    let ctx = Arc::new(Ctx {
        accs: clients.iter().map(|_| Mutex::new(Acc::default())).collect(),
        pinned,
        clients,
        probe,
        keys: Keys::new(spec.keys, &spec.dist),
        value: json!(text),
        lag: Mutex::new(Samples::default()),
        lag_missed: AtomicU64::new(0),
        puts: AtomicU64::new(0),
        done: AtomicU64::new(0),
        spec: spec.clone(),
    });
    let bar = spec.progress.then(|| {
        let b = indicatif::ProgressBar::new(spec.duration.as_secs().max(1));
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} s  {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let start = Instant::now();
    let deadline = start + spec.duration;
    let regions = ctx.clients.len();
    let mut tasks = tokio::task::JoinSet::new();
    match spec.rate {
        None => {
            for r in 0..regions {
                for w in 0..spec.concurrency {
                    let ctx = ctx.clone();
                    tasks.spawn(async move {
                        let mut seeds =
                            fastrand::Rng::with_seed(((r as u64) << 40) ^ ((w as u64) << 20));
                        while Instant::now() < deadline {
                            one_op(ctx.clone(), r, seeds.u64(..), Instant::now()).await;
                        }
                    });
                }
            }
        }
        Some(rate) => {
            let ctx = ctx.clone();
            tasks.spawn(async move {
                let limit = Arc::new(tokio::sync::Semaphore::new(spec.concurrency.max(1)));
                let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
                let mut k: u64 = 0;
                let mut inner = tokio::task::JoinSet::new();
                loop {
                    // Latency counts from the scheduled time, so a stall is
                    // charged to every request it delayed.
                    let at = start + interval.mul_f64(k as f64);
                    if at >= deadline {
                        break;
                    }
                    tokio::time::sleep_until(at.into()).await;
                    let Ok(permit) = limit.clone().acquire_owned().await else {
                        break;
                    };
                    let ctx = ctx.clone();
                    let region = (k as usize) % regions;
                    inner.spawn(async move {
                        one_op(ctx, region, k, at).await;
                        drop(permit);
                    });
                    k += 1;
                    while inner.try_join_next().is_some() {}
                }
                while inner.join_next().await.is_some() {}
            });
        }
    }
    if let Some(b) = &bar {
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            b.set_position(start.elapsed().as_secs());
            let done = ctx.done.load(Ordering::Relaxed);
            b.set_message(format!(
                "{done} ops, {:.0}/s",
                done as f64 / start.elapsed().as_secs_f64()
            ));
        }
    }
    while tasks.join_next().await.is_some() {}
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let seconds = spec.duration.as_secs_f64();
    let mut report = LoadReport {
        seconds,
        ..LoadReport::default()
    };
    for (i, acc) in ctx.accs.iter().enumerate() {
        let a = acc.lock().unwrap_or_else(PoisonError::into_inner);
        report.per_sec += a.ok as f64 / seconds;
        report.regions.push(RegionReport {
            url: spec.urls[i].clone(),
            ok: a.ok,
            per_sec: a.ok as f64 / seconds,
            latency: a.all.percentiles(),
            write_latency: a.writes.percentiles(),
            errors: a.errors.clone(),
            failovers: ctx.clients[i].failovers(),
        });
    }
    let lag = ctx.lag.lock().unwrap_or_else(PoisonError::into_inner);
    if !lag.is_empty() {
        report.lag = Some(lag.percentiles());
    }
    report.lag_missed = ctx.lag_missed.load(Ordering::Relaxed);
    Ok(report)
}

impl LoadReport {
    /// The report as a table for people.
    pub fn table(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "| region | ok ops | ops/s | p50 ms | p90 ms | p99 ms | p99.9 ms | failed over | errors |\n",
        );
        out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---|\n");
        for r in &self.regions {
            let errors = if r.errors.is_empty() {
                "none".to_string()
            } else {
                r.errors
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            out.push_str(&format!(
                "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} |\n",
                r.url,
                r.ok,
                r.per_sec,
                r.latency.p50,
                r.latency.p90,
                r.latency.p99,
                r.latency.p999,
                r.failovers,
                errors
            ));
        }
        out.push_str(&format!(
            "\ntotal: {:.0} ops/s over {:.1} s\n",
            self.per_sec, self.seconds
        ));
        if let Some(l) = &self.lag {
            out.push_str(&format!(
                "replication lag (ack in one region to visible in the next), ms: p50 {:.1}, p90 {:.1}, p99 {:.1}, p99.9 {:.1}, max {:.1} ({} probes, {} not seen within 10 s)\n",
                l.p50, l.p90, l.p99, l.p999, l.max, l.count, self.lag_missed
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_mixes_and_distributions() {
        assert_eq!(
            "put=90,get=10".parse::<Mix>().unwrap(),
            Mix {
                put: 90,
                get: 10,
                incr: 0,
                add: 0
            }
        );
        assert!("put=x".parse::<Mix>().is_err());
        assert!("del=1".parse::<Mix>().is_err());
        assert!("put=0".parse::<Mix>().is_err());
        assert_eq!("zipf".parse::<Dist>().unwrap(), Dist::Zipf(1.0));
        assert_eq!("zipf:1.2".parse::<Dist>().unwrap(), Dist::Zipf(1.2));
        assert!("normal".parse::<Dist>().is_err());
    }

    #[test]
    fn zipf_favours_small_keys() {
        let k = Keys::new(1000, &Dist::Zipf(1.0));
        let mut x = fastrand::Rng::with_seed(12345);
        let mut low = 0;
        for _ in 0..10_000 {
            if k.pick(x.u64(..)) < 10 {
                low += 1;
            }
        }
        // The 10 hottest of 1000 keys get about 39% of a Zipf(1) draw.
        assert!((3_000..5_000).contains(&low), "{low}");
        let u = Keys::new(1000, &Dist::Uniform);
        assert!((0..1000).all(|i| u.pick(i) < 1000));
    }
}
