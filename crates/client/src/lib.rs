//! A typed HTTP client for Meridian's client API.
//!
//! - [`Client`]: one method per endpoint, over one region or several in
//!   order of preference ([`Client::builder`]); every call can carry
//!   [`Options`] (causal token, wait, write concern, timeout).
//! - [`call`]: how a call moves across regions: a region that cannot be
//!   reached, refuses, or fails is set aside with a backoff
//!   ([`regions`], watched in the background until it answers) and the
//!   call goes to the next; `421` and `307` redirects are followed.
//! - [`safety`]: which writes are sent again after a failure that leaves
//!   their outcome unknown, and which fail as
//!   [`ClientError::Indeterminate`] instead.
//! - [`Session`]: a client that remembers the newest causal token it has
//!   seen and sends it with every request, so a user's reads follow their
//!   writes in any region (read-your-writes, monotonic reads), across
//!   failovers too.
//! - [`ClientError`]: the server's JSON error (status, code, message) or a
//!   transport failure; a timeout is its own variant, because the outcome
//!   of a write that timed out is unknown.

mod builder;
pub mod call;
mod client;
mod error;
mod health;
pub mod path;
pub mod regions;
pub mod safety;
mod session;
pub mod tls;

pub use builder::ClientBuilder;
pub use client::{Client, Entry, Options, Written};
pub use error::ClientError;
pub use regions::RegionHealth;
pub use session::Session;
