//! What readers see and how the writer shows it to them: the published
//! state of the last commit ([`Published`]) behind one handle ([`Shared`]),
//! and the engine's step that publishes after each commit.

use super::{Engine, EngineStats, store};
use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use meridian_crdt::{Hlc, VersionVector};

use super::keyspaces::Registry;
use super::ledger::LedgerCounts;
use crate::op::KeyspaceName;
use crate::state::Backend;

/// What readers see: the state of the last commit.
#[derive(Clone, Debug)]
pub struct Published {
    /// The region's version vector: every op it covers is in the state.
    pub vv: VersionVector,
    /// Keyspace definitions.
    pub registry: Arc<Registry>,
    /// Digest per keyspace (see [`store::contribution`]).
    pub digests: BTreeMap<KeyspaceName, u128>,
    /// Conflict-ledger counts per keyspace.
    pub ledger: BTreeMap<KeyspaceName, LedgerCounts>,
    /// Highest HLC issued or seen.
    pub hlc: Hlc,
    /// Log position of the last op in the state.
    pub lsn: u64,
    /// Counters.
    pub stats: EngineStats,
    /// Per origin, the highest seq of an op this region holds in its causal
    /// buffer (received, not applied yet): with `vv`, every op it has seen.
    pub buffered_top: VersionVector,
}

/// The handle through which the writer publishes and readers look.
///
/// # Correctness
/// A group's state becomes visible in the store a moment before its
/// version vector is published. So there are two vectors: `published.vv`
/// (raised after the store write: everything it covers is visible; what a
/// token is waited against) and `upper` (raised before it: it covers
/// everything a reader can see; what a read's token is taken from). A token
/// thus covers what its read returned, and a region serves a token only
/// once it shows everything the token covers.
pub struct Shared {
    pub(super) published: RwLock<Arc<Published>>,
    pub(super) upper: RwLock<VersionVector>,
    /// Per keyspace, the digest tree as of the last commit.
    pub(super) trees: RwLock<BTreeMap<KeyspaceName, store::Tree>>,
}

impl Shared {
    /// The latest published view.
    pub fn get(&self) -> Arc<Published> {
        self.published
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(super) fn set(&self, p: Published) {
        self.raise_upper(&p.vv);
        *self
            .published
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(p);
    }

    /// Covers everything a reader can see in the store now: take a read's
    /// token from this, after reading the state.
    pub fn upper(&self) -> VersionVector {
        self.upper
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(super) fn raise_upper(&self, vv: &VersionVector) {
        self.upper
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .merge(vv);
    }

    /// A keyspace's digest tree (256 bucket digests) as of the last commit.
    pub fn tree(&self, ks: &KeyspaceName) -> Option<store::Tree> {
        self.trees
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(ks)
            .cloned()
    }
}

impl<B: Backend> Engine<B> {
    pub(super) fn publish(&mut self, as_of: Option<(VersionVector, Arc<Registry>)>) {
        self.stats.buffered = self.buffer.len();
        let (vv, registry) =
            as_of.unwrap_or_else(|| (self.vv.clone(), Arc::new(self.registry.clone())));
        self.shared.set(Published {
            vv,
            registry,
            digests: self.digests.clone(),
            ledger: self.ledger.counts().clone(),
            hlc: self.clock.last(),
            lsn: self.lsn,
            stats: self.stats.clone(),
            buffered_top: self.buffer.tops(),
        });
    }
}
