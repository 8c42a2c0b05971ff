//! The multi-region test harness: everything needed to run whole Meridian
//! clusters on one machine and judge what they did.
//!
//! Modules:
//! - [`link`]: the WAN link emulator, a userspace TCP proxy per directed
//!   region pair that adds latency, jitter, loss, bandwidth caps and
//!   partitions, controlled from Rust, over HTTP or from the command line.
//! - [`node`]: one region as a real `meridian serve` process: start, SIGKILL,
//!   SIGTERM, SIGSTOP/SIGCONT, restart on the same port and data.

pub mod link;
pub mod node;
