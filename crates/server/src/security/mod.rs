//! Who gets in: bearer tokens with rights on the client API, TLS on both
//! listeners, and limits on what any caller may hold open.
//!
//! - [`config`]: `[auth]`, `[tls]` and `[limits]`.
//! - [`auth`]: the two router layers that find the caller and check its
//!   right for the route.
//! - [`listener`]: the accept loop of both listeners (connection limit,
//!   TLS, header-read and idle timeouts).
//! - [`tls`]: listener certificates, reloaded when their files change.
//! - [`cert`]: `meridian cert`, a development CA and certificates.

pub mod auth;
pub mod cert;
pub mod config;
pub mod listener;
pub mod tls;
