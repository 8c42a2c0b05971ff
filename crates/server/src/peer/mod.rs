//! Replication between regions over the network: the peer API a region
//! serves ([`receiver`]), the sender it runs per peer ([`sender`]), the
//! in-memory tail of committed ops they read ([`tail`]), authentication
//! ([`auth`]) and link status ([`status`]). The shipping logic itself is
//! `meridian_core::replication`.

pub mod auth;
pub mod client;
pub mod forward;
pub mod receiver;
pub mod sender;
pub mod status;
pub mod tail;
