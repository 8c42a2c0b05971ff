//! Replication between regions, free of I/O: the wire format of op batches
//! and acks ([`wire`]) and the per-peer shipping state machine ([`peer`]).
//! The server's peer tasks and the simulator both drive these.

pub mod compact;
pub mod peer;
pub mod stability;
pub mod wire;

pub use crate::log::shipping_start;
pub use peer::{BatchLimits, PeerSync, needs_state_transfer};
pub use stability::{PeerKnowledge, stable_cut};
pub use wire::{Ack, Batch};
