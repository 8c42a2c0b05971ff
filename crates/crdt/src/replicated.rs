//! The trait every replicated type implements, and the laws it promises.

use crate::conflict::Conflict;
use crate::hlc::{Hlc, Version};
use crate::id::Dot;
use crate::vv::VersionVector;

/// Where an op came from: its identity, its timestamp and its causal past.
///
/// The engine stamps these when a region accepts a write; every region then
/// applies the op with the same `OpMeta`.
#[derive(Clone, Copy, Debug)]
pub struct OpMeta<'a> {
    /// The op's identity (origin replica, seq).
    pub dot: &'a Dot,
    /// The op's hybrid logical timestamp.
    pub hlc: Hlc,
    /// What the origin had applied when it created the op (its version
    /// vector, not counting the op itself).
    pub deps: &'a VersionVector,
}

impl OpMeta<'_> {
    /// The version this op writes.
    pub fn version(&self) -> Version {
        Version::new(self.hlc, self.dot.clone())
    }
}

/// A replicated data type: state that every region can change on its own and
/// that always converges.
///
/// Ops are built from the current state by `&self` methods on each type (the
/// origin decides everything that depends on what it has seen), shipped, and
/// applied everywhere with [`Crdt::apply`]. Whole states can also be joined
/// with [`Crdt::merge`] (state transfer, anti-entropy, quorum reads).
///
/// # Laws
/// For all states `a`, `b`, `c` (written `⊔` for `merge`):
/// - commutative: `a ⊔ b == b ⊔ a`
/// - associative: `(a ⊔ b) ⊔ c == a ⊔ (b ⊔ c)`
/// - idempotent: `a ⊔ a == a`
///
/// Op application:
/// - converges: replicas that apply the same set of ops, each in some order
///   that respects causality (an op after everything in its `deps`), end in
///   equal states with equal encoded bytes;
/// - is idempotent: applying an op a second time changes nothing;
/// - agrees with merge: applying an op to `a` and merging in `b` gives the same
///   state as merging first and applying after.
///
/// Causal delivery is the caller's duty; Meridian's engine buffers an op
/// until its `deps` are covered.
pub trait Crdt: Clone + Default + PartialEq {
    /// A change to the state.
    type Op;
    /// The value type carried by conflict reports.
    type Value;

    /// Applies an op. Returns the conflicts the type's rule resolved (only
    /// last-writer-wins types report any: each is a concurrent write that lost).
    fn apply(&mut self, op: &Self::Op, meta: &OpMeta<'_>) -> Vec<Conflict<Self::Value>>;

    /// Joins another replica's state into this one.
    fn merge(&mut self, other: &Self);

    /// Whether the state holds a live value (not absent, not deleted).
    fn is_live(&self) -> bool;
}
