//! Meridian's replicated data types: pure data and merge rules.
//!
//! Everything here is deterministic and free of I/O: no clocks are read (time
//! comes in as arguments), no async, no hash maps in anything encoded. The
//! replication engine in `meridian-core` stamps ops and delivers them
//! causally; the types here decide what the state becomes.
//!
//! - [`id`]: identities: [`RegionId`], [`ReplicaId`], [`Seq`], [`Dot`].
//! - [`hlc`]: the hybrid logical clock ([`Hlc`], [`Clock`]) and the total
//!   order of ops ([`Stamp`], [`Version`]).
//! - [`vv`]: [`VersionVector`], what a replica or a key has seen.
//! - [`replicated`]: the [`Crdt`] trait and its laws; [`OpMeta`].
//! - The types: [`LwwRegister`], [`MvRegister`], [`PnCounter`], [`OrSet`],
//!   [`Doc`]; [`Object`] is one key's state under any [`Policy`].
//! - [`conflict`]: what a last-writer-wins merge decided.
//! - [`value`]: user values ([`Value`], canonical [`Json`]).
//! - [`codec`]: the versioned, bounded MessagePack encoding.

pub mod codec;
pub mod conflict;
pub mod counter;
pub mod doc;
pub mod hlc;
pub mod id;
pub mod lww;
pub mod mv;
pub mod object;
pub mod orset;
pub mod replicated;
pub mod value;
pub mod vv;

pub use conflict::Conflict;
pub use counter::{CounterError, CounterOp, PnCounter, PnEntry};
pub use doc::{Doc, DocError, DocOp, DocSchema, Field, FieldOp, FieldRule, Resolver};
pub use hlc::{Clock, ClockError, Hlc, Stamp, Version};
pub use id::{Dot, IdError, RegionId, ReplicaId, Seq};
pub use lww::{LwwOp, LwwRegister};
pub use mv::{MergeStamp, MvOp, MvPut, MvRegister};
pub use object::{Object, ObjectOp, Policy, UnknownPolicy};
pub use orset::{OrSet, OrSetOp};
pub use replicated::{Crdt, OpMeta};
pub use value::{Json, Value};
pub use vv::{CausalOrder, VersionVector};
