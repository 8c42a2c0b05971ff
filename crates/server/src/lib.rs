//! The Meridian server: the HTTP API, the runtime glue around the engine,
//! configuration, metrics, and the `meridian` binary's commands.
//!
//! - [`api`]: the client HTTP API (routes, errors, bodies, rendering).
//! - [`region`]: one region's runtime: data directory, recovery, the writer
//!   thread (group commit).
//! - [`maintenance`]: anti-entropy and tombstone collection.
//! - [`peer`]: replication over the network: peer API, senders, tail.
//! - [`standby`]: standbys inside a region: following the leader,
//!   in-region write concerns, failover.
//! - [`serve`]: running a region (`meridian serve`).
//! - [`dev`]: `meridian dev`, three regions behind the link emulator.
//! - [`ctl`]: `meridian ctl`, operating running regions over their APIs.
//! - [`config`]: configuration file, environment, validation.
//! - [`metrics`]: Prometheus metrics.
//! - [`shutdown`]: signals and shutdown tokens.

pub mod api;
pub mod backup;
pub mod config;
pub mod ctl;
pub mod dev;
pub mod maintenance;
pub mod metrics;
pub mod peer;
pub mod region;
pub mod security;
pub mod serve;
pub mod shutdown;
pub mod standby;
