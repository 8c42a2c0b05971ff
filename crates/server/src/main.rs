//! The `meridian` binary.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use meridian_server::config::{Config, Overrides};

// glibc malloc spent a fifth of a write-heavy profile in its arena locks
// (buffers are allocated on tokio workers and freed on the writer thread).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Meridian: a multi-leader, geo-replicated key-value store.
#[derive(Parser)]
#[command(name = "meridian", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one region.
    Serve(ServeArgs),
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
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MERIDIAN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
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
    let result: Result<(), String> = rt.block_on(async {
        match cli.command {
            Command::Serve(a) => {
                let overrides = Overrides {
                    region: a.region,
                    listen: a.listen,
                    data_dir: a.data_dir,
                };
                let cfg = Config::load(a.config.as_deref(), &overrides)
                    .and_then(|c| c.validate())
                    .map_err(|e| e.to_string())?;
                meridian_server::serve::run(cfg, a.repair_log)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meridian: {e}");
            ExitCode::FAILURE
        }
    }
}
