//! Benchmarks run from the `meridian` binary (`meridian bench ...`): a load
//! generator against running regions ([`load`]), the replication
//! benchmark on a local cluster of real processes ([`geo`]), and a client
//! session carried across a region's death ([`failover`]), and backup and
//! restore throughput ([`backup`]).
//!
//! Why past ~400 lines: the `meridian bench` command tree and its shared
//! reporting.

pub mod backup;
pub mod failover;
pub mod geo;
pub mod hist;
pub mod load;
pub mod standby;

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
    /// Write latency under each write concern over emulated WAN links.
    Concerns(ConcernArgs),
    /// A nemesis suite (faults under load, then heal and check) for a while.
    Nemesis(NemesisArgs),
    /// A session preferring us-east while us-east is killed and restarted:
    /// the failover window, errors, read-your-writes, lost writes.
    Failover(FailoverArgs),
    /// Backup throughput and restore time for a log of a given size, on
    /// one region backing up to a directory.
    Backup(BackupArgs),
    /// A region with a standby: `local` vs `standby` write throughput and
    /// p99, and failover time (kill -9 of the leader to the first write
    /// the new leader takes).
    Standby(StandbyArgs),
}

/// `meridian bench standby`.
#[derive(Debug, clap::Args)]
pub struct StandbyArgs {
    /// Closed-loop writers per write concern.
    #[arg(long, default_value_t = 32)]
    pub writers: usize,
    /// How long each write concern is loaded.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Failovers to measure (the median is reported).
    #[arg(long, default_value_t = 7)]
    pub runs: usize,
    /// Where the members' data goes.
    #[arg(long, default_value = "bench/out/standby")]
    pub dir: PathBuf,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `meridian bench backup`.
#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// How much to write before the timed backup, MiB (the op log and the
    /// state each hold about this much).
    #[arg(long, default_value_t = 1024)]
    pub log_mb: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 65536)]
    pub value_bytes: usize,
    /// Where the region's data and the backup target go.
    #[arg(long, default_value = "bench/out/backup")]
    pub dir: PathBuf,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `meridian bench failover`.
#[derive(Debug, clap::Args)]
pub struct FailoverArgs {
    /// One-way latency of every link, ms.
    #[arg(long, default_value_t = 20)]
    pub latency: u64,
    /// Write concern of the session's writes.
    #[arg(long, default_value = "majority")]
    pub write_concern: String,
    /// Loop time before us-east is killed.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// How long us-east stays dead.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub down: Duration,
    /// Runs (a new cluster each); medians are reported.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// What happens to us-east: kill (kill -9, restart) or pause (SIGSTOP,
    /// SIGCONT: only the client's timeout notices).
    #[arg(long, default_value = "kill")]
    pub fault: failover::Fault,
    /// The client's per-region timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Where the regions' data goes.
    #[arg(long, default_value = "bench/out/failover")]
    pub dir: PathBuf,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `meridian bench nemesis`.
#[derive(Debug, clap::Args)]
pub struct NemesisArgs {
    /// partition-halves, ring-partition, kill-restart, pause, clock-skew,
    /// dup-reorder, combined, or all (each in turn).
    #[arg(long, default_value = "combined")]
    pub suite: String,
    /// How long faults and load last (per suite).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub duration: Duration,
    /// Mixed writers per region.
    #[arg(long, default_value_t = 3)]
    pub writers: usize,
    /// One-way latency of every link, ms.
    #[arg(long, default_value_t = 20)]
    pub latency: u64,
    /// Longest pause (SIGSTOP) of a region.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub pause: Duration,
    /// Convergence bound after heal.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub converge_within: Duration,
    /// Seed of the fault schedule.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where the regions' data goes.
    #[arg(long, default_value = "bench/out/nemesis")]
    pub dir: PathBuf,
}

/// `meridian bench concerns`.
#[derive(Debug, clap::Args)]
pub struct ConcernArgs {
    /// One-way WAN latency between regions, ms.
    #[arg(long, default_value_t = 80)]
    pub latency: u64,
    /// Writers (closed loop) into us-east.
    #[arg(long, default_value_t = 10)]
    pub concurrency: usize,
    /// How long each concern runs.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Where the cluster's data goes (a real disk).
    #[arg(long, default_value = "bench/out/concerns")]
    pub dir: PathBuf,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
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
    /// Pin each region's load to its region: no failover to the others.
    #[arg(long)]
    pub no_failover: bool,
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
                failover: !a.no_failover,
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
        BenchCommand::Concerns(a) => {
            let rows = geo::concerns(
                geo::GeoSpec {
                    bin,
                    dir: a.dir,
                    latency_ms: a.latency,
                    rate: 0.0,
                    duration: a.duration,
                    partition: Duration::ZERO,
                    value_size: 100,
                },
                a.concurrency,
            )
            .await?;
            if a.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?
                );
            } else {
                println!("| write concern | p50 ms | p90 ms | p99 ms | writes | 504s |");
                println!("|---|---:|---:|---:|---:|---:|");
                for r in rows {
                    println!(
                        "| {} | {:.1} | {:.1} | {:.1} | {} | {} |",
                        r.concern,
                        r.latency.p50,
                        r.latency.p90,
                        r.latency.p99,
                        r.latency.count,
                        r.timeouts
                    );
                }
            }
        }
        BenchCommand::Nemesis(a) => {
            let suites = if a.suite == "all" {
                crate::nemesis::Suite::ALL.to_vec()
            } else {
                vec![crate::nemesis::Suite::parse(&a.suite)?]
            };
            let mut failed = Vec::new();
            for suite in suites {
                let dir = a.dir.join(suite.name());
                let _ = std::fs::remove_dir_all(&dir);
                let out = crate::nemesis::run(&crate::nemesis::Options {
                    writers_per_region: a.writers,
                    latency_ms: a.latency,
                    pause: a.pause,
                    converge_within: a.converge_within,
                    seed: a.seed,
                    binary: Some(bin.clone()),
                    dir: Some(dir),
                    ..crate::nemesis::Options::new(suite, a.duration)
                })
                .await
                .map_err(|e| format!("{suite}: {e}"))?;
                print!("{out}");
                if !out.ok() {
                    failed.push(suite.name());
                }
            }
            if !failed.is_empty() {
                return Err(format!("nemesis checks failed: {}", failed.join(", ")));
            }
        }
        BenchCommand::Backup(a) => {
            let report = backup::run(&backup::BackupSpec {
                bin,
                dir: a.dir,
                log_mb: a.log_mb,
                value_bytes: a.value_bytes,
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
        BenchCommand::Standby(a) => {
            let report = standby::run(&standby::StandbySpec {
                bin,
                dir: a.dir,
                writers: a.writers,
                duration: a.duration,
                runs: a.runs,
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
        BenchCommand::Failover(a) => {
            let report = failover::run(&failover::FailoverSpec {
                bin,
                dir: a.dir,
                latency_ms: a.latency,
                write_concern: a.write_concern,
                warmup: a.warmup,
                down: a.down,
                runs: a.runs,
                fault: a.fault,
                timeout: a.timeout,
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
