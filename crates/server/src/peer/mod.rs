//! Replication between regions over the network: the peer API a region
//! serves ([`receiver`]), the sender it runs per peer ([`sender`]), one
//! signed request and its answer ([`call`]), authentication ([`auth`]) and
//! link status ([`status`]). Senders read
//! committed ops from the writer's feed (`crate::region::feed`); the
//! shipping logic itself is `meridian_core::replication`.

pub mod auth;
pub mod call;
pub mod client;
pub mod forward;
pub mod metrics;
pub mod receiver;
pub mod sender;
pub mod status;
