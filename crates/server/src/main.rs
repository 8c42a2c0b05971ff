//! The `meridian` binary.
//!
//! Why past ~400 lines: the command-line tree of the `meridian` binary and
//! the dispatch to each command.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::anyhow;
use clap::{Parser, Subcommand};
use meridian_server::config::{Config, Overrides, PeerEntry};

// glibc malloc spent a fifth of a write-heavy profile in its arena locks
// (buffers are allocated on tokio workers and freed on the writer thread).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Meridian: a multi-leader, geo-replicated key-value store.
#[derive(Parser)]
#[command(name = "meridian", version, about)]
struct Cli {
    /// Log lines as `text` (coloured only on a terminal) or `json` (one
    /// object per line: timestamp, level, target, fields, spans).
    #[arg(long, global = true, env = "MERIDIAN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Logs to stderr, filtered by `MERIDIAN_LOG` (an `EnvFilter` directive).
fn init_logs(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("MERIDIAN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,fjall=warn,lsm_tree=warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        // Colour only for a person at a terminal (and not when NO_COLOR is set).
        LogFormat::Text => logs
            .with_ansi(
                std::io::stderr().is_terminal()
                    && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
            )
            .init(),
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run one region.
    Serve(ServeArgs),
    /// Run a three-region cluster on this machine (us-east, eu-west,
    /// ap-south) with WAN latencies between them.
    Dev(DevArgs),
    /// Build a region's data directory from a backup target, holding every
    /// archived op up to a time (point-in-time restore).
    Restore(RestoreArgs),
    /// Run the WAN link emulator on its own.
    Link(meridian_harness::link::LinkArgs),
    /// Exit 0 if a region answers GET /healthz (for container health checks).
    Health(HealthArgs),
    /// Operate running regions: status, get/put/del/incr/add/remove,
    /// keyspaces, conflicts.
    Ctl(meridian_server::ctl::CtlArgs),
    /// Make a development CA (`ca.pem`, `ca-key.pem`) and certificates
    /// signed by it, for TLS on the listeners and mutual TLS between peers.
    /// For development and tests: production certificates come from your
    /// own CA.
    Cert(CertArgs),
    /// Print a shell completion script: `meridian completions bash >
    /// /etc/bash_completion.d/meridian` (or zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Benchmarks: load running regions, or replication on a local cluster.
    #[cfg(feature = "bench")]
    Bench {
        #[command(subcommand)]
        cmd: meridian_harness::bench::BenchCommand,
    },
}

#[derive(clap::Args)]
struct CertArgs {
    /// Where the CA and certificates go (the CA is made there if missing).
    #[arg(long, default_value = "certs")]
    dir: PathBuf,
    /// Certificates to issue: `NAME[=SAN,SAN...]`, SANs being DNS names or
    /// IP addresses (default SAN: the name). Each is written as `NAME.pem`
    /// and `NAME-key.pem`, good for serving and as a client certificate.
    /// Default: `localhost=localhost,127.0.0.1,::1`.
    names: Vec<String>,
}

#[derive(clap::Args)]
struct HealthArgs {
    /// The region's client API.
    #[arg(
        long,
        env = "MERIDIAN_HEALTH_URL",
        default_value = "http://127.0.0.1:7070"
    )]
    url: String,
    /// The CA that signed the region's certificate (for an `https://` URL).
    #[arg(long, env = "MERIDIAN_CA_FILE")]
    ca_file: Option<PathBuf>,
}

#[derive(clap::Args)]
struct DevArgs {
    /// Keep the regions' data here (default: a temporary directory, removed on exit).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// One-way latency of every link in ms (0: none). Default: 40 ms
    /// us-east/eu-west, 90 ms us-east/ap-south, 80 ms eu-west/ap-south.
    #[arg(long)]
    latency: Option<u64>,
    /// Client port of us-east; eu-west and ap-south follow. Peer APIs at +100,
    /// links at +200, the link control API at +300.
    #[arg(long, default_value_t = 7070)]
    base_port: u16,
    /// Run without access tokens: anyone on this machine may read, write
    /// and administer (the regions listen on loopback only). Without it,
    /// an admin token is made and printed.
    #[arg(long)]
    insecure_open: bool,
    /// TLS on every listener and mutual TLS between the regions, with a
    /// development CA made in the data directory (`certs/ca.pem`).
    #[arg(long)]
    tls: bool,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// This region's name (e.g. us-east).
    #[arg(long)]
    region: Option<String>,
    /// Client API address (e.g. 127.0.0.1:7070; port 0 picks one).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Data directory (op log and state).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Truncate the op log at a damaged record instead of refusing to start.
    /// Everything after the damage is dropped: use only after reading the error.
    #[arg(long)]
    repair_log: bool,
    /// Peer API address (replication from other regions).
    #[arg(long)]
    peer_listen: Option<std::net::SocketAddr>,
    /// A peer region: NAME=URL of its peer API, then its standbys' peer URLs
    /// after commas (repeat for each peer).
    #[arg(long = "peer", value_parser = parse_peer)]
    peers: Vec<PeerEntry>,
    /// File holding the cluster secret (or set MERIDIAN_CLUSTER_SECRET).
    #[arg(long)]
    cluster_secret_file: Option<PathBuf>,
    /// Tests only: shift this region's wall clock by this many ms.
    #[arg(long, allow_hyphen_values = true)]
    clock_skew_ms: Option<i64>,
    /// Start as a standby of the region leader whose peer API is at URL.
    #[arg(long)]
    follow: Option<String>,
    /// How the leader and other members reach this peer API (default http://PEER_LISTEN).
    #[arg(long)]
    advertise_peer_url: Option<String>,
    /// How clients reach this client API (default http://LISTEN).
    #[arg(long)]
    advertise_client_url: Option<String>,
    /// A standby takes over after this long without its leader, ms (0: never on its own).
    #[arg(long)]
    failover_timeout_ms: Option<u64>,
}

#[derive(clap::Args)]
struct RestoreArgs {
    /// The backup target: file:///dir or s3://bucket/prefix.
    #[arg(long = "from")]
    from: String,
    /// The region to restore (its folder in the target).
    #[arg(long)]
    region: String,
    /// Keep every op stamped at or before this time: RFC 3339
    /// (2026-12-01T20:15:00Z) or Unix ms. Default: everything archived.
    #[arg(long)]
    to_time: Option<String>,
    /// Start from this backup (default: the newest at or before the time).
    #[arg(long)]
    backup: Option<String>,
    /// The new data directory (must not exist, or be empty).
    #[arg(long)]
    data_dir: PathBuf,
    /// S3: an S3-compatible server's endpoint (http://host:port).
    #[arg(long)]
    endpoint: Option<String>,
    /// S3: the bucket's region.
    #[arg(long)]
    s3_region: Option<String>,
    /// S3: credentials file (else AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).
    #[arg(long)]
    credentials_file: Option<PathBuf>,
    /// Then serve the restored region alone (no peers) on --listen, for
    /// forensics, until stopped.
    #[arg(long)]
    standalone: bool,
    /// With --standalone: the client API address.
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: std::net::SocketAddr,
}

async fn restore(a: RestoreArgs) -> anyhow::Result<()> {
    use meridian_server::api::backups::{end_of_ms, parse_time_str};
    use meridian_server::backup::target::TargetSpec;
    let to = match &a.to_time {
        None => None,
        Some(t) => Some(
            parse_time_str(t)
                .and_then(end_of_ms)
                .map_err(|e| anyhow!("--to-time: {e}"))?,
        ),
    };
    let spec = TargetSpec::parse(&a.from, a.endpoint, a.s3_region, a.credentials_file)
        .map_err(anyhow::Error::from)?;
    let target = spec.open().map_err(anyhow::Error::from)?;
    let report = meridian_server::backup::restore::restore(
        &target,
        &a.region,
        to,
        a.backup.as_deref(),
        &a.data_dir,
    )
    .await
    .map_err(anyhow::Error::from)?;
    println!(
        "meridian: restored region {} into {} from backup {}: {} snapshot entries, {} ops replayed, {} later ops left out",
        a.region,
        a.data_dir.display(),
        report.backup,
        report.entries,
        report.ops,
        report.later
    );
    let ends = std::time::UNIX_EPOCH + std::time::Duration::from_millis(report.archive_ends_ms);
    println!(
        "meridian: the archive read reaches {}",
        humantime::format_rfc3339_millis(ends)
    );
    if report.to_ms.is_some_and(|t| t > report.archive_ends_ms) {
        println!(
            "meridian: note: the time asked is later than that; ops after it were not archived yet"
        );
    }
    if !a.standalone {
        println!(
            "meridian: start it with `meridian serve --region {} --data-dir {}` (a new incarnation; with peers it rejoins and catches up)",
            a.region,
            a.data_dir.display()
        );
        return Ok(());
    }
    let overrides = Overrides {
        region: Some(a.region),
        listen: Some(a.listen),
        data_dir: Some(a.data_dir),
        ..Overrides::default()
    };
    let mut cfg = Config::load(None, &overrides).map_err(anyhow::Error::from)?;
    // Alone means alone, whatever the environment says: no peers, and no
    // archiving into the region's backup folder.
    cfg.peers.clear();
    cfg.peer_listen = None;
    cfg.backup = Default::default();
    let cfg = cfg.validate().map_err(anyhow::Error::from)?;
    meridian_server::serve::run(cfg, false)
        .await
        .map_err(anyhow::Error::from)
}

fn parse_peer(s: &str) -> anyhow::Result<PeerEntry> {
    let (name, urls) = s.split_once('=').ok_or_else(|| {
        anyhow!("{s:?} is not NAME=URL[,STANDBY_URL...] (e.g. eu-west=http://10.0.0.2:7171)")
    })?;
    let mut urls = urls.split(',').map(|u| u.trim().to_string());
    Ok(PeerEntry {
        name: name.trim().to_string(),
        url: urls.next().unwrap_or_default(),
        client_url: None,
        standby_urls: urls.collect(),
    })
}

/// The completion script for `shell` on stdout (a closed pipe is not an
/// error: `meridian completions bash | head` stops quietly).
fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    use clap::CommandFactory;
    use std::io::Write;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "meridian", &mut script);
    match std::io::stdout().write_all(&script) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow!("cannot write the completion script: {e}"))
        }
        _ => Ok(()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meridian: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<()> = rt.block_on(async {
        match cli.command {
            Command::Serve(a) => {
                let overrides = Overrides {
                    region: a.region,
                    listen: a.listen,
                    data_dir: a.data_dir,
                    peer_listen: a.peer_listen,
                    peers: (!a.peers.is_empty()).then_some(a.peers),
                    cluster_secret_file: a.cluster_secret_file,
                    clock_skew_ms: a.clock_skew_ms,
                    standby: meridian_server::config::StandbyOverrides {
                        follow: a.follow,
                        advertise_peer_url: a.advertise_peer_url,
                        advertise_client_url: a.advertise_client_url,
                        failover_timeout_ms: a.failover_timeout_ms,
                    },
                };
                let cfg = Config::load(a.config.as_deref(), &overrides)
                    .and_then(|c| c.validate())
                    .map_err(anyhow::Error::from)?;
                meridian_server::serve::run(cfg, a.repair_log)
                    .await
                    .map_err(anyhow::Error::from)
            }
            Command::Dev(a) => meridian_server::dev::run(meridian_server::dev::DevOptions {
                data_dir: a.data_dir,
                latency: a.latency,
                base_port: a.base_port,
                open: a.insecure_open,
                tls: a.tls,
            })
            .await
            .map_err(anyhow::Error::from),
            Command::Cert(a) => {
                let given = if a.names.is_empty() {
                    vec!["localhost=localhost,127.0.0.1,::1".to_string()]
                } else {
                    a.names
                };
                let mut names = Vec::new();
                for n in &given {
                    let (name, sans) = n.split_once('=').unwrap_or((n.as_str(), ""));
                    let sans: Vec<String> = sans
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect();
                    names.push((name, sans));
                }
                meridian_server::security::cert::dev_bundle(&a.dir, &names)
                    .map_err(anyhow::Error::from)?;
                println!("CA: {}", a.dir.join("ca.pem").display());
                for (name, _) in &names {
                    println!(
                        "{name}: {} {}",
                        a.dir.join(format!("{name}.pem")).display(),
                        a.dir.join(format!("{name}-key.pem")).display()
                    );
                }
                Ok(())
            }
            Command::Health(a) => {
                let mut b = meridian_client::Client::builder().region(&a.url);
                if let Some(ca) = a.ca_file {
                    b = b.ca_file(ca);
                }
                let c = b.build().map_err(anyhow::Error::from)?;
                if c.healthy().await {
                    println!("ok");
                    Ok(())
                } else {
                    Err(anyhow!("{} does not answer /healthz", a.url))
                }
            }
            Command::Ctl(a) => meridian_server::ctl::run(a).await,
            Command::Restore(a) => restore(a).await,
            Command::Completions { shell } => completions(shell),
            #[cfg(feature = "bench")]
            Command::Bench { cmd } => {
                let bin = std::env::current_exe().map_err(anyhow::Error::from)?;
                meridian_harness::bench::run(cmd, bin)
                    .await
                    .map_err(|e| anyhow!(e))
            }
            Command::Link(a) => meridian_harness::link::run(a, meridian_server::shutdown::signal())
                .await
                .map_err(anyhow::Error::from),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}`: the message and each cause after it.
            eprintln!("meridian: {e:#}");
            ExitCode::FAILURE
        }
    }
}
