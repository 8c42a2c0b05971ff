//! The Meridian server: the HTTP API, the runtime glue around the engine,
//! configuration, metrics, and the `meridian` binary's commands.
//!
//! The modules in the order they import, bottom first (each uses only the
//! ones above it in this list; `tests/layers.rs` holds them to it):
//!
//! - [`error`]: every failure the server answers over HTTP (client and peer
//!   APIs) and its status: the one place where failures become HTTP.
//! - [`metrics`]: Prometheus metrics.
//! - [`shutdown`]: signals and shutdown tokens.
//! - [`region`]: one region's runtime: data directory, recovery, the writer
//!   thread (group commit), the feed of committed ops.
//! - [`security`]: tokens and rights, TLS, the listeners.
//! - [`peer`]: replication over the network: peer API, senders, forwarding.
//! - [`standby`]: standbys inside a region: following the leader,
//!   in-region write concerns, failover.
//! - [`backup`]: the archiver, backups, retention, restore and rewind.
//! - [`maintenance`]: anti-entropy and tombstone collection.
//! - [`api`]: the client HTTP API (routes, authentication layers, the
//!   standby gate, bodies, rendering). A PUT starts in `api::kv`.
//! - [`config`]: configuration file, environment, validation into each
//!   subsystem's settings.
//! - [`serve`]: running a region (`meridian serve`).
//! - [`dev`]: `meridian dev`, three regions behind the link emulator.
//! - [`ctl`]: `meridian ctl`, operating running regions over their APIs.

pub mod api;
pub mod backup;
pub mod config;
pub mod ctl;
pub mod dev;
pub mod error;
pub mod maintenance;
pub mod metrics;
pub mod peer;
pub mod region;
pub mod security;
pub mod serve;
pub mod shutdown;
pub mod standby;
