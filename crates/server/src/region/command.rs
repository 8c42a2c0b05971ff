//! What the writer is asked ([`Command`], the region's event list: client
//! writes, received batches, state-transfer pages, definitions, ownership
//! changes) and what it answers. `WriterHandle` in the parent module sends
//! them; `writer.rs` stages and commits them.

use std::sync::Arc;
use std::time::Instant;

use meridian_core::{Key, KeyspaceDef, KeyspaceName, Op, Received, WriteError, WriteRequest};
use meridian_crdt::{Hlc, Object, Version, VersionVector};
use tokio::sync::oneshot;

/// A successful write, durable in this region.
#[derive(Clone, Debug)]
pub struct WriteDone {
    /// The version the write created.
    pub version: Version,
    /// What the write's causal token covers: the region's version vector
    /// after its group commit, but of this region's own ops only up to
    /// this write ([`token_vv`]).
    pub vv: Arc<VersionVector>,
    /// `vv` as a token.
    pub token: Arc<str>,
    /// Per mutation: the counter value after it, for counter keys.
    pub counters: Vec<Option<i128>>,
    /// When the writer answered (for the `wake` stage metric).
    pub answered: Instant,
}

/// The outcome of a keyspace definition.
#[derive(Clone, Debug)]
pub enum DefineDone {
    /// Already exactly so: nothing written.
    Unchanged,
    /// Written (created or updated); the version vector after it.
    Written(VersionVector),
}

/// A change to an ownership map.
#[derive(Clone, Debug)]
pub enum OwnershipChange {
    /// The whole map.
    Set(meridian_core::ownership::MapRequest),
    /// One rule to another region.
    Transfer {
        /// The rule.
        which: meridian_core::ownership::RuleRef,
        /// Its new owner.
        to: meridian_crdt::RegionId,
        /// Only if the map is still at this epoch.
        epoch: Option<meridian_core::ownership::Epoch>,
    },
}

/// Work for the writer.
pub enum Command {
    /// A client write.
    Write {
        /// The request.
        req: WriteRequest,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<WriteDone, WriteError>>,
        /// When it was sent (for the `queue` stage metric).
        sent: Instant,
    },
    /// Create or update a keyspace.
    Define {
        /// The definition.
        def: KeyspaceDef,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<DefineDone, WriteError>>,
    },
    /// Register or replace a merge script (checked by the caller).
    DefineMerge {
        /// The script.
        def: meridian_core::merge::MergeDef,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<DefineDone, WriteError>>,
    },
    /// Create or replace an access token.
    DefineToken {
        /// The token (its hash, never its secret).
        def: meridian_core::access::TokenDef,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<DefineDone, WriteError>>,
    },
    /// Revoke an access token, for good.
    RevokeToken {
        /// Its id.
        id: String,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<DefineDone, WriteError>>,
    },
    /// Change a keyspace's ownership map (this region is its steward).
    Own {
        /// The keyspace.
        keyspace: String,
        /// The change.
        change: OwnershipChange,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<DefineDone, WriteError>>,
    },
    /// Start writing back merges of custom keys: every region of the
    /// cluster (sent once the incarnation is settled).
    EnableMerges {
        /// The regions.
        regions: Vec<meridian_crdt::RegionId>,
        /// Hold write-backs until this is applied (what peers hold of this
        /// region's own replicas).
        hold: VersionVector,
    },
    /// Ops from a peer.
    Receive {
        /// The ops.
        ops: Vec<Op>,
        /// Where the answer goes (after they are durable).
        reply: oneshot::Sender<Result<(Received, VersionVector), WriteError>>,
    },
    /// Part of a state transfer: objects to merge, and at the end the
    /// version vector they reflect.
    Install {
        /// Objects to merge.
        entries: Vec<(KeyspaceName, Key, Object)>,
        /// The sender's version vector: bounds what the objects reflect.
        covers: VersionVector,
        /// The last page: adopt this version vector and HLC.
        adopt: Option<(VersionVector, Hlc)>,
        /// Where the answer goes (after the state is durable).
        reply: oneshot::Sender<Result<VersionVector, WriteError>>,
    },
    /// Collect stable tombstones (see `Engine::collect`).
    Collect {
        /// What every region has applied, and the timestamp watermark.
        cut: meridian_core::engine::StableCut,
        /// Most stored objects to look at.
        budget: usize,
        /// How many were collected (after they are gone).
        reply: oneshot::Sender<Result<usize, WriteError>>,
    },
    /// Time to make the state store durable and trim the log.
    Checkpoint,
    /// Seal the op log's segment being written (for the backup archiver),
    /// answering one past the last record logged.
    Seal {
        /// Where the answer goes.
        reply: oneshot::Sender<Result<meridian_core::Lsn, WriteError>>,
    },
    /// Continue as a new incarnation (before any local write is taken).
    Reincarnate {
        /// The new replica id.
        replica: meridian_crdt::ReplicaId,
        /// Answered once local ops are stamped with it.
        reply: oneshot::Sender<()>,
    },
}
