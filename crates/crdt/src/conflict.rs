//! What a last-writer-wins merge decided, for the conflict ledger.

use serde::{Deserialize, Serialize};

use crate::hlc::Version;

/// One concurrent write that lost to another under last-writer-wins.
///
/// "Concurrent" means neither write had seen the other: the loser's op was
/// not in the winner's causal past, nor the winner's in the loser's. A write
/// that overwrites a value it had seen is not a conflict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict<V> {
    /// Field path inside a document; empty for a whole value.
    pub path: Vec<String>,
    /// The version that won.
    pub winner: Version,
    /// Its value; `None` when the winner is a delete.
    pub winner_value: Option<V>,
    /// The version that lost.
    pub loser: Version,
    /// Its value; `None` when the loser is a delete.
    pub loser_value: Option<V>,
}

impl<V> Conflict<V> {
    /// Whether the two writes' wall times are within `bound_ms` of each other.
    /// Within the cluster's clock-offset bound, the order LWW picked may not be
    /// the order in which the writes happened in real time.
    pub fn is_ambiguous(&self, bound_ms: u64) -> bool {
        self.winner.hlc.wall_ms().abs_diff(self.loser.hlc.wall_ms()) < bound_ms
    }

    /// The same conflict with its values mapped.
    pub fn map<W>(self, mut f: impl FnMut(V) -> W) -> Conflict<W> {
        Conflict {
            path: self.path,
            winner: self.winner,
            winner_value: self.winner_value.map(&mut f),
            loser: self.loser,
            loser_value: self.loser_value.map(&mut f),
        }
    }

    /// The same conflict one level deeper inside a document.
    pub fn under(mut self, field: &str) -> Self {
        self.path.insert(0, field.to_string());
        self
    }
}
