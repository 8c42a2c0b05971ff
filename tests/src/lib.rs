//! The multi-region test harness: everything needed to run whole Meridian
//! clusters on one machine and judge what they did.
//!
//! Everything but [`link`] is behind the `full` feature (on by default):
//! the server's release build takes only the link emulator.
//!
//! Modules:
//! - [`bench`]: `meridian bench`: load generation with latency and
//!   replication-lag percentiles, and the WAN replication benchmark.
//! - [`cluster`]: a cluster of real `meridian serve` processes behind the
//!   link emulator, with a fault API (partition, heal, latency, kill,
//!   restart, pause, clock skew) and a convergence check.
//! - [`link`]: the WAN link emulator, a userspace TCP proxy per directed
//!   region pair that adds latency, jitter, loss, bandwidth caps and
//!   partitions, controlled from Rust, over HTTP or from the command line.
//! - [`node`]: one region as a real `meridian serve` process: start, SIGKILL,
//!   SIGTERM, SIGSTOP/SIGCONT, restart on the same port and data.
//! - [`workload`]: mixed client sessions that record every outcome (ok,
//!   failed, indeterminate).
//! - [`check`]: checkers over a history and the final state (set-full,
//!   counters, convergence, read-your-writes, LWW), each with a report.
//! - [`nemesis`]: named fault schedules under load, healed and checked.
//! - [`sim`]: deterministic, seeded simulation of whole clusters in one
//!   thread (real engines over a simulated, faulty network).

#[cfg(feature = "full")]
pub mod bench;
#[cfg(feature = "full")]
pub mod check;
#[cfg(feature = "full")]
pub mod cluster;
pub mod link;
#[cfg(feature = "full")]
pub mod nemesis;
#[cfg(feature = "full")]
pub mod node;
#[cfg(feature = "full")]
pub mod sim;
#[cfg(feature = "full")]
pub mod workload;
