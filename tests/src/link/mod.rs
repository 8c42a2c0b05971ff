//! The WAN link emulator: a userspace TCP proxy per directed region pair.
//!
//! A directed link `from -> to` listens on its own loopback port and
//! forwards every connection accepted there to `to`'s peer listener. Region
//! `from` is configured to reach `to` through that port, so everything it
//! sends to `to`, and every answer, crosses the link. Each link follows a
//! [`LinkSpec`]: one-way latency and jitter, loss (as retransmission delay),
//! random resets, a bandwidth cap, and partitions.
//!
//! ```no_run
//! # async fn demo(eu_west_peer: std::net::SocketAddr) -> Result<(), meridian_harness::link::LinkError> {
//! use meridian_harness::link::{LinkEmulator, LinkSpec};
//!
//! let emu = LinkEmulator::new(42);
//! let port = emu.add_link("us-east", "eu-west", eu_west_peer, LinkSpec::latency(40)).await?;
//! // ... start us-east with `eu-west` reachable at `port` ...
//! emu.partition("us-east", "eu-west")?;
//! emu.heal_all();
//! emu.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # How a link treats bytes
//! Bytes are read in chunks as they arrive. Each chunk is delivered at
//! `max(previous chunk's delivery, arrival + latency ± jitter [+ loss delay])`
//! and then paced by the bandwidth cap, in both directions of the connection.
//! Byte order and content are never changed. Draws come from a PRNG seeded
//! per link (by name) and per connection, so a seed replays a run's draws.
//!
//! # Partitions
//! A partitioned link resets (RST) every open connection at once and
//! accepts-then-resets new ones, so clients see errors quickly rather than
//! hanging; healing lets new connections through. Existing connections are
//! not restored: clients reconnect, as they would after a real outage.
//!
//! # Control API
//! [`LinkEmulator::serve_control`] serves JSON over HTTP:
//! - `GET /links`: `{"links": [LinkInfo, ...]}`.
//! - `GET /links/{from}/{to}`: one [`LinkInfo`].
//! - `PUT /links/{from}/{to}`: body a partial [`LinkSpec`] (missing fields
//!   keep their value); answers the updated [`LinkInfo`].
//! - `POST /partition`: `{"a": .., "b": ..}` or `{"isolate": region}`.
//! - `POST /heal`: `{}` (or no body) heals every link; `{"a": .., "b": ..}`
//!   heals one pair.
//!
//! `partition` and `heal` answer `{"links_changed": n}`. Errors answer
//! `{"error": "..."}`: 400 for a bad body or value (naming the field), 404
//! for an unknown link, pair or region.
//!
//! # Command line
//! [`LinkArgs`] and [`run`] make the standalone runner (`meridian link`).

mod cancel;
mod cli;
mod conn;
mod control;
mod directed;
mod emulator;
mod error;
mod pacer;
mod rng;
mod schedule;
mod spec;
mod stats;
mod table;

pub use cli::{LinkArg, LinkArgs, Started, run, start};
pub use emulator::LinkEmulator;
pub use error::LinkError;
pub use rng::seed_from_time;
pub use spec::{LinkSpec, LinkSpecPatch, MAX_MS};
pub use stats::LinkStats;
pub use table::LinkInfo;
