//! The one error type of the link emulator.

use std::io;
use std::net::SocketAddr;

/// Everything that can go wrong while configuring or running links.
///
/// Variants up to [`LinkError::BadRequest`] are the caller's mistake (an
/// unknown link, a bad value); the control API answers them with a 4xx. The
/// rest come from the operating system or from using a stopped emulator.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// No directed link `from -> to` exists.
    #[error("no link {from} -> {to}")]
    UnknownLink {
        /// Source region of the missing link.
        from: String,
        /// Destination region of the missing link.
        to: String,
    },
    /// Neither `a -> b` nor `b -> a` exists.
    #[error("no link between {a} and {b} in either direction")]
    UnknownPair {
        /// One region of the pair.
        a: String,
        /// The other region of the pair.
        b: String,
    },
    /// No link starts or ends at this region.
    #[error("no link from or to region {region}")]
    UnknownRegion {
        /// The region that has no links.
        region: String,
    },
    /// `from -> to` was added twice.
    #[error("link {from} -> {to} already exists")]
    DuplicateLink {
        /// Source region of the link.
        from: String,
        /// Destination region of the link.
        to: String,
    },
    /// A region name that cannot be used (empty, odd characters, a self-link).
    #[error("bad region name {name:?}: {reason}")]
    BadRegion {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A [`LinkSpec`](super::LinkSpec) field is out of range, of the wrong
    /// type, or unknown.
    #[error("bad link spec: field `{field}`: {reason}")]
    BadSpec {
        /// The offending field, as spelled in JSON.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A `--link` argument that does not read `FROM:TO=LISTEN->UPSTREAM`.
    #[error("bad link argument {value:?}: {reason} (expected FROM:TO=LISTEN->UPSTREAM)")]
    BadLinkArg {
        /// The argument as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A control API request body that is not what the endpoint expects.
    #[error("bad request: {reason}")]
    BadRequest {
        /// What is wrong with the request.
        reason: String,
    },
    /// A listener (link or control API) could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address that was asked for.
        addr: SocketAddr,
        /// The operating system's answer.
        source: io::Error,
    },
    /// The emulator was shut down; it accepts no new links or listeners.
    #[error("the link emulator has been shut down")]
    ShutDown,
}
