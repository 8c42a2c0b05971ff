//! What clients ask the engine to do, and how it can refuse.

use meridian_crdt::{ClockError, CounterError, DocError, Json, Policy, Value, VersionVector};

use super::keyspaces::{DefError, KeyspaceDef};
use crate::log::LogError;
use crate::op::{Key, NameError};
use crate::state::StoreError;

pub use crate::budget::{MAX_MUTATIONS, MAX_VALUE};

/// One atomic write: one op, however many keys it touches.
#[derive(Clone, Debug)]
pub struct WriteRequest {
    /// The changes, at most one per key.
    pub mutations: Vec<MutationRequest>,
    /// Take writes to keys owned by another region (whose owner could not
    /// be reached, under a map whose fallback is `accept`), recording each
    /// in the conflict ledger as an ownership fallback.
    pub fallback: bool,
    /// Wall-clock time (Unix ms, this region's clock) after which the
    /// write must not be taken: a client that gave up on it by then may
    /// have sent it to another region, and a copy stamped later here would
    /// carry a newer timestamp than the writes that followed it there.
    pub deadline_ms: Option<u64>,
    /// A timestamp (Unix ms) the write must be stamped above: a client
    /// sending again a write whose first copy may have been taken elsewhere
    /// (stamped no later than that copy's deadline) makes this copy, and
    /// whatever follows it, newer than that one whatever this region's
    /// clock says. At most the clock offset bound ahead of this region's
    /// clock, else refused as a clock error.
    pub not_before_ms: Option<u64>,
}

/// A change to one key.
#[derive(Clone, Debug)]
pub struct MutationRequest {
    /// Keyspace name as the client gave it.
    pub keyspace: String,
    /// The key.
    pub key: Key,
    /// What to do.
    pub change: Change,
}

/// The changes a client can ask for. Which ones a keyspace takes depends on
/// its policy.
#[derive(Clone, Debug)]
pub enum Change {
    /// `lww`, `mv`: write a value (`mv`: replacing the siblings in `context`).
    /// `set`: replace the members with the array given. `doc`: replace the
    /// document with the object given.
    Put {
        /// The value.
        value: Value,
        /// `mv` only: the context from the read this write follows.
        context: Option<VersionVector>,
    },
    /// Any policy: delete (`mv`: the siblings in `context`, or all seen).
    Delete {
        /// `mv` only: the context from the read.
        context: Option<VersionVector>,
    },
    /// `counter`: add (negative: subtract).
    Incr(i64),
    /// `set`: add members.
    Add(Vec<Json>),
    /// `set`: remove members (as this region has seen them).
    Remove(Vec<Json>),
    /// `doc`: a JSON merge patch.
    Patch(serde_json::Map<String, serde_json::Value>),
}

impl Change {
    /// The change's name, for error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Change::Put { .. } => "put",
            Change::Delete { .. } => "delete",
            Change::Incr(_) => "incr",
            Change::Add(_) => "add",
            Change::Remove(_) => "remove",
            Change::Patch(_) => "patch",
        }
    }
}

/// Why a write was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// No such keyspace.
    #[error("keyspace {0:?} does not exist")]
    UnknownKeyspace(String),
    /// A bad name or key.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The keyspace's policy does not take this change.
    #[error("{change} is not supported by keyspace {keyspace:?} (policy {policy}): {hint}")]
    Unsupported {
        /// The keyspace.
        keyspace: String,
        /// Its policy.
        policy: Policy,
        /// The change asked for.
        change: &'static str,
        /// What would work.
        hint: &'static str,
    },
    /// A batch with nothing in it.
    #[error("a write needs at least one mutation")]
    Empty,
    /// A batch over the limit.
    #[error("{count} mutations in one write, over the limit of {max}")]
    TooMany {
        /// How many.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The same key twice in one batch.
    #[error("key {key:?} in keyspace {keyspace:?} appears more than once in the batch")]
    DuplicateKey {
        /// The keyspace.
        keyspace: String,
        /// The key.
        key: String,
    },
    /// A value over the size limit.
    #[error("value of {len} bytes is over the {max}-byte limit")]
    ValueTooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The op a write would make is over the op budget.
    #[error(
        "the write to {keyspace}/{key} makes an op of {len} encoded bytes, over the {max}-byte op limit"
    )]
    OpTooLarge {
        /// The keyspace of the write's largest mutation.
        keyspace: String,
        /// Its key.
        key: String,
        /// The op's encoded size.
        len: usize,
        /// The limit ([`crate::budget::MAX_OP`]).
        max: usize,
    },
    /// The object a write would leave is over the object budget.
    #[error(
        "the write would grow {keyspace}/{key} to {len} encoded bytes, over the {max}-byte object limit"
    )]
    ObjectTooLarge {
        /// The keyspace.
        keyspace: String,
        /// The key.
        key: String,
        /// The object's encoded size after the write.
        len: usize,
        /// The limit ([`crate::budget::MAX_OBJECT`]).
        max: usize,
    },
    /// The key holds state of another policy that the keyspace's ops
    /// cannot change (a concurrent definition of the keyspace).
    #[error(
        "{keyspace}/{key} holds {held} state from a concurrent definition of the keyspace; {policy} writes cannot change it"
    )]
    TypeClash {
        /// The keyspace.
        keyspace: String,
        /// The key.
        key: String,
        /// The policy of the state it holds.
        held: Policy,
        /// The keyspace's policy.
        policy: Policy,
    },
    /// A doc keyspace's schema would change the rule of a field: writes
    /// under the new rule could not change what the old one stored.
    #[error(
        "keyspace {name:?}: the rule of field {field:?} cannot change from {from} to {to} (documents may hold {from} state for it)"
    )]
    SchemaChange {
        /// The keyspace.
        name: String,
        /// The field.
        field: String,
        /// Its rule now.
        from: &'static str,
        /// The rule asked for.
        to: &'static str,
        /// The existing definition.
        current: Box<KeyspaceDef>,
    },
    /// A counter would leave the 64-bit range.
    #[error(transparent)]
    Counter(#[from] CounterError),
    /// A patch did not fit the document's rules.
    #[error(transparent)]
    Doc(#[from] DocError),
    /// A keyspace definition that does not make sense.
    #[error("invalid keyspace definition: {0}")]
    Definition(#[from] DefError),
    /// A definition that would change an existing keyspace's policy.
    #[error(
        "keyspace {name:?} exists with policy {existing}; its policy cannot change to {requested}"
    )]
    PolicyChange {
        /// The keyspace.
        name: String,
        /// The policy it has.
        existing: Policy,
        /// The policy asked for.
        requested: Policy,
        /// The existing definition.
        current: Box<KeyspaceDef>,
    },
    /// A custom key holds as many unmerged versions as its cap allows: the
    /// write waits for the key's merger to write their merge back.
    #[error(
        "{keyspace}/{key} holds {versions} unmerged versions, the keyspace's cap of {cap}: retry once the merge is written back, or write with the read's context to replace them"
    )]
    MergePending {
        /// The keyspace.
        keyspace: String,
        /// The key.
        key: String,
        /// Versions it holds.
        versions: usize,
        /// The cap (`sibling_cap`).
        cap: usize,
    },
    /// A delete, or a write carrying a read's context, of a custom key sent
    /// to a region that is not the key's merger: only the merger may
    /// replace versions, so nothing that replaces them can be concurrent
    /// with its write-backs (which stand for the same versions).
    #[error(
        "{keyspace}/{key}: a {change} of a custom key replaces versions and is taken only by the key's merger, region {merger}; send it there (a write without a context is taken anywhere)"
    )]
    NotMerger {
        /// The keyspace.
        keyspace: String,
        /// The key.
        key: String,
        /// `delete`, or `put with a context`.
        change: &'static str,
        /// The region that takes it.
        merger: meridian_crdt::RegionId,
    },
    /// A delete or write with a context of a custom key whose context does
    /// not cover every version the key holds now, or claims writes this
    /// region has not applied: it would leave a version (a write-back of
    /// the ones it meant to replace, or one it never saw) beside its own.
    #[error(
        "{keyspace}/{key}: the context does not cover the {uncovered} version(s) the key holds that it did not see (a merge was written back, or a version arrived, since the read), or covers writes this region has not applied: read the key here again and retry with the new context"
    )]
    StaleContext {
        /// The keyspace.
        keyspace: String,
        /// The key.
        key: String,
        /// Versions held that the context does not cover.
        uncovered: usize,
    },
    /// The key is owned by another region under the keyspace's ownership
    /// map.
    #[error(
        "{keyspace}/{key} is owned by region {owner} (ownership map epoch {epoch}): send the write there"
    )]
    NotOwner {
        /// The keyspace.
        keyspace: String,
        /// The key.
        key: String,
        /// The owner.
        owner: meridian_crdt::RegionId,
        /// The map's epoch.
        epoch: crate::ownership::Epoch,
        /// The rule that matched (`None`: the map's default).
        rule: Option<usize>,
        /// What the map says non-owners do.
        mode: crate::ownership::Mode,
        /// What the map says non-owners do when the owner is unreachable.
        fallback: crate::ownership::Fallback,
    },
    /// This region owns the key since a recent handoff, but has not yet
    /// applied every write the earlier owners took: retry shortly.
    #[error("{keyspace}/{key}: {}: retry shortly", pending_text(*epoch, waiting))]
    HandoffPending {
        /// The keyspace.
        keyspace: String,
        /// The key.
        key: String,
        /// The map's epoch.
        epoch: crate::ownership::Epoch,
        /// The regions whose fences it waits for.
        waiting: Vec<meridian_crdt::RegionId>,
    },
    /// A map change sent to a region that is not the keyspace's steward.
    #[error(
        "ownership maps are changed by region {steward} (the cluster's first region by name): send the change there"
    )]
    NotSteward {
        /// The steward.
        steward: meridian_crdt::RegionId,
    },
    /// A map change that does not make sense, or lost a compare-and-set.
    #[error("ownership map: {0}")]
    Map(#[from] crate::ownership::MapError),
    /// This region cannot make local system changes yet (its incarnation
    /// is still settling after a start).
    #[error("region is still starting (settling its incarnation): retry shortly")]
    NotReady,
    /// The request's deadline had passed before it could be taken: nothing
    /// was written.
    #[error(
        "the request's deadline ({deadline_ms} ms) had passed when this region got to it (its clock: {now_ms} ms): nothing was written; if every write meets this, the client's clock is behind the regions'"
    )]
    DeadlinePassed {
        /// The deadline the client set, Unix ms.
        deadline_ms: u64,
        /// This region's clock when it got to the write, Unix ms.
        now_ms: u64,
    },
    /// A token definition or revocation that cannot be taken.
    #[error("{0}")]
    BadToken(String),
    /// A configured limit on definitions (tokens, keyspaces, merges).
    #[error(
        "this cluster already holds the most {what} allowed ({max}); raise [limits] max_{what} or remove some"
    )]
    Limit {
        /// What is limited.
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// A custom keyspace names a merge this region does not know.
    #[error("no merge function named {0:?}: use a built-in ({builtins}) or register a script with PUT /v1/merges/{0}", builtins = crate::merge::builtin::NAMES.join(", "))]
    UnknownMerge(String),
    /// A merge script that was not registered.
    #[error("invalid merge script: {0}")]
    MergeDef(#[from] crate::merge::MergeDefError),
    /// The clock cannot produce a timestamp.
    #[error("clock: {0}")]
    Clock(#[from] ClockError),
    /// Storage failed: fatal for the region.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The log failed: fatal for the region.
    #[error(transparent)]
    Log(#[from] LogError),
}

fn pending_text(epoch: crate::ownership::Epoch, waiting: &[meridian_crdt::RegionId]) -> String {
    if waiting.is_empty() {
        return "the keyspace is owned, but its ownership map has not reached this region yet"
            .into();
    }
    format!(
        "ownership moved here at epoch {epoch}; waiting for the fence of {} before taking writes",
        waiting
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

impl WriteError {
    /// Whether the region can no longer guarantee durability and must stop.
    pub fn is_fatal(&self) -> bool {
        matches!(self, WriteError::Store(_) | WriteError::Log(_))
    }
}
