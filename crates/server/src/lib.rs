//! The Meridian server: the HTTP API, the runtime glue around the engine,
//! configuration, metrics, and the `meridian` binary's commands.
//!
//! - [`api`]: the client HTTP API (routes, errors, bodies, rendering).
//! - [`region`]: one region's runtime: data directory, recovery, the writer
//!   thread (group commit).
//! - [`serve`]: `meridian serve`.
//! - [`config`]: configuration file, environment, validation.
//! - [`metrics`]: Prometheus metrics.
//! - [`shutdown`]: signals and shutdown tokens.

pub mod api;
pub mod config;
pub mod metrics;
pub mod region;
pub mod serve;
pub mod shutdown;
