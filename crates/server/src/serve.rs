//! `meridian serve`: one region, from configuration to graceful exit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::api::{self, AppInner};
use crate::config::Valid;
use crate::metrics::Metrics;
use crate::region::{Region, StartError};
use crate::shutdown;

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The region could not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
    /// The writer stopped with a fatal error.
    #[error(transparent)]
    Writer(#[from] crate::region::writer::WriterError),
}

/// Runs a region until SIGTERM or SIGINT: stops accepting, finishes
/// in-flight requests, makes everything durable, returns.
pub async fn run(cfg: Valid, repair_log: bool) -> Result<(), ServeError> {
    let metrics = Metrics::new(&cfg.region);
    let open_cfg = cfg.clone();
    let m = metrics.clone();
    let region = tokio::task::spawn_blocking(move || Region::open(&open_cfg, repair_log, false, m))
        .await
        .map_err(|e| ServeError::Io(std::io::Error::other(e)))??;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let addr = listener.local_addr()?;
    let state = Arc::new(AppInner {
        replica: region.replica.clone(),
        reader: region.reader.clone(),
        writer: region.writer.clone(),
        vv: region.vv.clone(),
        metrics,
        log_info: region.log_info.clone(),
        started: Instant::now(),
    });
    let checkpoints = region.spawn_checkpoints(Duration::from_millis(cfg.checkpoint_interval_ms));
    tracing::info!(region = %cfg.region, replica = %region.replica, %addr, "serving");
    // The line harnesses and scripts wait for.
    println!("meridian: region {} listening on http://{addr}", cfg.region);
    let app = api::router(state.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown::signal())
        .await?;
    tracing::info!("stopping: draining writes");
    checkpoints.abort();
    drop(state);
    tokio::task::spawn_blocking(move || region.join())
        .await
        .map_err(|e| ServeError::Io(std::io::Error::other(e)))??;
    tracing::info!("stopped cleanly");
    Ok(())
}
