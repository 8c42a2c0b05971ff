//! Benchmarks run from the `meridian` binary (`meridian bench ...`): a load
//! generator against running regions ([`load`]) and the replication
//! benchmark on a local cluster of real processes ([`geo`]).

pub mod geo;
pub mod hist;
pub mod load;

use std::path::PathBuf;
use std::time::Duration;

/// Parses `500ms`, `10s`, `5m`, `1h` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 500ms, 10s, 5m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// `meridian bench` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Load running regions: an operation mix, closed loop or at a rate.
    Load(LoadArgs),
    /// Replication over emulated WAN links on a local three-region cluster.
    Geo(GeoArgs),
}

/// `meridian bench load`.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// A region's client URL (repeat to spread the load over regions).
    #[arg(long = "url", required = true)]
    pub urls: Vec<String>,
    /// How long (e.g. 30s, 5m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Requests in flight per region (closed loop), or at most overall (with --rate).
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    /// Operations per second over all regions; without it, closed loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Operation mix, e.g. put=80,get=20 (ops: put, get, incr, add).
    #[arg(long, default_value = "put=1")]
    pub mix: load::Mix,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Key distribution: uniform, zipf, zipf:<s>.
    #[arg(long, default_value = "uniform")]
    pub dist: load::Dist,
    /// Measure replication lag on 1 in N puts (read in the next region with the write's token; 0: off).
    #[arg(long, default_value_t = 0)]
    pub lag_every: u64,
    /// Where lag probes read (default: the next --url after the writer's).
    #[arg(long)]
    pub lag_region: Option<String>,
    /// Write concern of the writes.
    #[arg(long)]
    pub write_concern: Option<String>,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `meridian bench geo`.
#[derive(Debug, clap::Args)]
pub struct GeoArgs {
    /// One-way WAN latency between regions, ms.
    #[arg(long, default_value_t = 80)]
    pub latency: u64,
    /// Writes per second.
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    /// Length of each measured phase.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,
    /// How long a region is cut off in the last phase (0s: skip it).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub partition: Duration,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Where the cluster's data goes (a real disk).
    #[arg(long, default_value = "bench/out/geo")]
    pub dir: PathBuf,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs a bench command; `bin` is the `meridian` binary (for clusters).
pub async fn run(cmd: BenchCommand, bin: PathBuf) -> Result<(), String> {
    match cmd {
        BenchCommand::Load(a) => {
            let report = load::run(load::LoadSpec {
                urls: a.urls,
                duration: a.duration,
                concurrency: a.concurrency,
                rate: a.rate,
                value_size: a.value_size,
                keys: a.keys,
                dist: a.dist,
                mix: a.mix,
                probe_every: a.lag_every,
                probe_to: a.lag_region,
                write_concern: a.write_concern,
                progress: !a.json,
            })
            .await?;
            if a.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
                );
            } else {
                print!("{}", report.table());
            }
        }
        BenchCommand::Geo(a) => {
            let report = geo::run(geo::GeoSpec {
                bin,
                dir: a.dir,
                latency_ms: a.latency,
                rate: a.rate,
                duration: a.duration,
                partition: a.partition,
                value_size: a.value_size,
            })
            .await?;
            if a.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
                );
            } else {
                print!("{}", report.table());
            }
        }
    }
    Ok(())
}
