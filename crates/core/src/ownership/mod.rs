//! Ownership maps: home regions for key ranges, so writes there never
//! conflict.
//!
//! - [`map`]: the map itself (rules by prefix or key hash, a default
//!   owner, what non-owners do), its checks and how it changes.
//! - [`fence`]: fences, and the admission of a write under a map: at most
//!   one region takes writes to a key in an epoch, and an owner takes its
//!   first only once it has every write earlier owners took.
//!
//! Maps and fences are replicated as last-writer-wins system entries
//! (`ownership/KEYSPACE` and `fence/KEYSPACE/REGION`), each written by
//! one region only: the map by the keyspace's steward ([`steward`]), a
//! fence by its region. So no two versions of either are ever concurrent,
//! and every region sees the same sequence of maps. With its first map
//! the steward writes `owned/KEYSPACE` (`true`, never removed): a region
//! that has the mark but not yet the map takes no writes to the keyspace.

pub mod fence;
pub mod map;

use std::fmt;

use meridian_crdt::RegionId;
use serde::{Deserialize, Serialize};

pub use fence::{Admission, Fence, admit};
pub use map::{Fallback, Layout, MapError, MapRequest, Match, Mode, OwnershipMap, Rule, RuleRef};

/// The version of an ownership map: every change raises it by one.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Epoch(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// System-keyspace key prefix of maps.
pub const MAP_PREFIX: &str = "ownership/";
/// System-keyspace key prefix of fences.
pub const FENCE_PREFIX: &str = "fence/";
/// System-keyspace key prefix of the owned marks.
pub const OWNED_PREFIX: &str = "owned/";

/// The system key of `keyspace`'s owned mark.
pub fn owned_key(keyspace: &str) -> String {
    format!("{OWNED_PREFIX}{keyspace}")
}

/// The system key of `keyspace`'s map.
pub fn map_key(keyspace: &str) -> String {
    format!("{MAP_PREFIX}{keyspace}")
}

/// The system key of `region`'s fence for `keyspace`.
pub fn fence_key(keyspace: &str, region: &RegionId) -> String {
    format!("{FENCE_PREFIX}{keyspace}/{region}")
}

/// The region that writes every map change: the first of the cluster's
/// regions by name. One writer makes the epochs a sequence every region
/// sees in the same order; while it is unreachable maps cannot change
/// (writes go on).
pub fn steward(regions: &[RegionId]) -> Option<&RegionId> {
    regions.iter().min()
}
