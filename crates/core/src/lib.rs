//! Meridian's replication engine: everything a region does with data, free of
//! HTTP and of any async runtime.
//!
//! - [`backup`]: backup manifests, snapshot chunks and point-in-time
//!   restore.
//! - [`budget`]: the encoded-size limits every accepted write fits.
//! - [`op`]: ops, the unit of logging, shipping and applying; keyspace names
//!   and keys.
//! - [`log`]: the op log (segmented, checksummed, group-committed) with
//!   crash recovery.
//! - [`state`]: the storage trait for materialized state, its fjall and
//!   in-memory backends and the suite they pass.
//! - [`engine`]: the engine itself (events in, effects out), keyspaces,
//!   requests, the conflict ledger, readers.
//! - [`merge`]: merge functions for `custom` keyspaces (built-ins, Rhai
//!   scripts, the [`merge::MergeFn`] trait for native ones).
//! - [`ownership`]: ownership maps (home regions for key ranges) and the
//!   fences that hand a range from one region to another.
//! - [`replication`]: the peer wire format and the per-peer shipping
//!   state machine.
//! - [`token`]: causal tokens.
//!
//! Time and storage come in from outside: the engine never reads a clock
//! (callers pass `now_ms`) and never touches a socket.

pub mod access;
pub mod backup;
pub mod budget;
pub mod engine;
pub mod log;
pub mod merge;
pub mod op;
pub mod ownership;
pub mod replication;
pub mod state;
pub mod token;

#[doc(hidden)]
pub mod testdir;

pub use engine::concern::{Concern, RegionConcern, WriteConcern};
pub use engine::keyspaces::{KeyspaceDef, Registry};
pub use engine::request::{Change, MutationRequest, WriteError, WriteRequest};
pub use engine::{
    Committed, Engine, EngineConfig, Published, Read, ReadError, Reader, Received, Source,
};
pub use log::{Log, LogError, LogOptions, Lsn};
pub use op::{Key, KeyspaceName, Mutation, Op};
pub use state::{Backend, FjallBackend, MemBackend, StoreError};
