//! A typed HTTP client for Meridian's client API.
//!
//! - [`Client`]: one region's API, one method per endpoint; every call can
//!   carry [`Options`] (causal token, wait, write concern, timeout).
//! - [`Session`]: a client that remembers the newest causal token it has
//!   seen and sends it with every request, so a user's reads follow their
//!   writes in any region (read-your-writes, monotonic reads).
//! - [`ClientError`]: the server's JSON error (status, code, message) or a
//!   transport failure; a timeout is its own variant, because the outcome
//!   of a write that timed out is unknown.

mod client;
mod error;
pub mod path;
mod session;

pub use client::{Client, Entry, Options, Written};
pub use error::ClientError;
pub use session::Session;
