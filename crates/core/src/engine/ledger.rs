//! The conflict ledger: what every last-writer-wins resolution decided.
//!
//! Stored per keyspace in the `ledger` table under `<keyspace> NUL <id>`,
//! bounded by the keyspace's `ledger_capacity`: the oldest entries go first,
//! and a counter says how many went.
//!
//! Past ~400 lines only with its unit tests, which STYLE keeps beside the
//! code; the code itself is under 400.

use std::collections::BTreeMap;

use meridian_crdt::codec;
use meridian_crdt::{Conflict, Hlc, Value, Version};
use serde::{Deserialize, Serialize};

use crate::op::{Key, KeyspaceName};
use crate::state::{Backend, Batch, StoreError};

/// The ledger table.
pub const TABLE: &str = "ledger";

/// One resolved conflict: a concurrent write that lost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Position in this keyspace's ledger (this region's numbering).
    pub id: u64,
    /// The keyspace.
    pub keyspace: KeyspaceName,
    /// The key.
    pub key: Key,
    /// Field path inside a document (empty for the whole value).
    pub path: Vec<String>,
    /// The rule that decided (`lww`).
    pub rule: String,
    /// The winning version.
    pub winner: Version,
    /// The winning value (`None`: a delete won).
    pub winner_value: Option<Value>,
    /// The losing version.
    pub loser: Version,
    /// The losing value (`None`: a delete lost).
    pub loser_value: Option<Value>,
    /// The two wall times were closer than the clock-offset bound: real-time
    /// order between them is not known.
    pub ambiguous: bool,
    /// When this region resolved it.
    pub recorded_at: Hlc,
    /// Set for a merge function's write-back: what ran, on what (then
    /// `winner` is the write-back and `loser` the newest input).
    #[serde(default)]
    pub merge: Option<MergeRecord>,
    /// Set for a write taken although another region owns the key (its
    /// owner could not be reached): then `winner` and `loser` are both the
    /// write itself.
    #[serde(default)]
    pub fallback: Option<FallbackRecord>,
}

/// A write taken by a region that does not own the key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FallbackRecord {
    /// The key's owner, which could not be reached.
    pub owner: meridian_crdt::RegionId,
    /// The map's epoch.
    pub epoch: crate::ownership::Epoch,
    /// The rule that matched (`None`: the map's default).
    pub rule: Option<usize>,
}

/// What one merge write-back decided.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MergeRecord {
    /// The merge function's name.
    pub function: String,
    /// Its content hash.
    pub hash: String,
    /// The versions merged, in the order the function saw them, with their
    /// values as this region held them (`None`: not kept, see
    /// `values_omitted`, or no longer held here).
    pub inputs: Vec<(Version, Option<Value>)>,
    /// The input values together were over [`MAX_RECORDED_INPUTS`] bytes:
    /// only their versions are recorded.
    pub values_omitted: bool,
    /// The function failed and the newest input was kept: why.
    pub failed: Option<String>,
}

/// Most bytes of input values one merge entry records.
pub const MAX_RECORDED_INPUTS: usize = 1 << 20;

/// Bookkeeping of one keyspace's ledger.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerCounts {
    /// Oldest id still stored.
    pub first: u64,
    /// Next id to assign.
    pub next: u64,
    /// Entries dropped to stay within capacity.
    pub dropped: u64,
    /// Encoded bytes of the entries from `counted_from` on.
    #[serde(default)]
    pub bytes: u64,
    /// The first id whose bytes are counted (`None`: a ledger written
    /// before bytes were counted, until its next flush; its older entries
    /// then count against the entry bound only).
    #[serde(default)]
    pub counted_from: Option<u64>,
}

impl LedgerCounts {
    /// Entries stored.
    pub fn len(&self) -> u64 {
        self.next - self.first
    }

    /// Whether none are stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn entry_key(ks: &KeyspaceName, id: u64) -> Vec<u8> {
    let mut k = ks.as_str().as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn meta_key(ks: &KeyspaceName) -> Vec<u8> {
    format!("ledger.{ks}").into_bytes()
}

/// The writer's side of the ledger: ids and counts in memory; entries are
/// kept with the group that resolved them and written when it commits.
#[derive(Default)]
pub struct Ledger {
    /// Counts as committed.
    counts: BTreeMap<KeyspaceName, LedgerCounts>,
    /// Next id to hand out per keyspace (ahead of `counts` while groups wait).
    assigned: BTreeMap<KeyspaceName, u64>,
    /// Resolutions recorded since start, per keyspace (for metrics).
    pub recorded: BTreeMap<KeyspaceName, u64>,
}

impl Ledger {
    /// Loads the counts of the keyspaces given.
    pub fn load<'a>(
        backend: &impl Backend,
        keyspaces: impl Iterator<Item = &'a KeyspaceName>,
    ) -> Result<Self, StoreError> {
        let mut counts = BTreeMap::new();
        for ks in keyspaces {
            if let Some(bytes) = backend.get(crate::engine::store::META, &meta_key(ks))? {
                let c: LedgerCounts =
                    codec::decode(&bytes, 1024).map_err(|e| StoreError::Decode {
                        what: format!("ledger counts of {ks}"),
                        reason: e.to_string(),
                    })?;
                counts.insert(ks.clone(), c);
            }
        }
        Ok(Self {
            counts,
            assigned: BTreeMap::new(),
            recorded: BTreeMap::new(),
        })
    }

    /// The id of a new entry of `keyspace`.
    fn next_id(&mut self, keyspace: &KeyspaceName) -> u64 {
        let committed = self.counts.get(keyspace).map_or(0, |c| c.next);
        let next = self.assigned.entry(keyspace.clone()).or_insert(committed);
        let id = *next;
        *next += 1;
        *self.recorded.entry(keyspace.clone()).or_default() += 1;
        id
    }

    /// Makes the entry for a conflict resolved while applying an op.
    pub fn record(
        &mut self,
        keyspace: &KeyspaceName,
        key: &Key,
        conflict: Conflict<Value>,
        ambiguity_bound_ms: u64,
        now: Hlc,
    ) -> LedgerEntry {
        let ambiguous = conflict.is_ambiguous(ambiguity_bound_ms);
        let id = self.next_id(keyspace);
        LedgerEntry {
            id,
            keyspace: keyspace.clone(),
            key: key.clone(),
            path: conflict.path,
            rule: "lww".into(),
            winner: conflict.winner,
            winner_value: conflict.winner_value,
            loser: conflict.loser,
            loser_value: conflict.loser_value,
            ambiguous,
            recorded_at: now,
            merge: None,
            fallback: None,
        }
    }

    /// Makes the entry for a merge write-back applied here.
    pub fn record_merge(
        &mut self,
        keyspace: &KeyspaceName,
        key: &Key,
        path: Vec<String>,
        winner: (Version, Value),
        record: MergeRecord,
        now: Hlc,
    ) -> LedgerEntry {
        let id = self.next_id(keyspace);
        let (loser, loser_value) = record
            .inputs
            .last()
            .cloned()
            .unwrap_or_else(|| (winner.0.clone(), None));
        LedgerEntry {
            id,
            keyspace: keyspace.clone(),
            key: key.clone(),
            path,
            rule: if record.failed.is_some() {
                "merge_failed".into()
            } else {
                "merge".into()
            },
            winner: winner.0,
            winner_value: Some(winner.1),
            loser,
            loser_value,
            ambiguous: false,
            recorded_at: now,
            merge: Some(record),
            fallback: None,
        }
    }

    /// Makes the entry for a write taken for a key owned elsewhere.
    pub fn record_fallback(
        &mut self,
        keyspace: &KeyspaceName,
        key: &Key,
        version: Version,
        value: Option<Value>,
        record: FallbackRecord,
        now: Hlc,
    ) -> LedgerEntry {
        let id = self.next_id(keyspace);
        LedgerEntry {
            id,
            keyspace: keyspace.clone(),
            key: key.clone(),
            path: Vec::new(),
            rule: "ownership_fallback".into(),
            winner: version.clone(),
            winner_value: value,
            loser: version,
            loser_value: None,
            ambiguous: false,
            recorded_at: now,
            merge: None,
            fallback: Some(record),
        }
    }

    /// Adds `entries`, the trimming to capacity and the counts to `batch`.
    /// `capacity` gives each keyspace's bound in entries; `max_bytes` its
    /// bound in encoded bytes (entries dropped for it are read from
    /// `backend` to learn their size, or from this batch).
    pub fn flush(
        &mut self,
        entries: Vec<LedgerEntry>,
        batch: &mut Batch,
        backend: &impl Backend,
        capacity: impl Fn(&KeyspaceName) -> u64,
        max_bytes: u64,
    ) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut touched = std::collections::BTreeSet::new();
        let mut fresh: BTreeMap<(KeyspaceName, u64), u64> = BTreeMap::new();
        for e in entries {
            let bytes = codec::encode(&e).map_err(|err| StoreError::encode("ledger entry", err))?;
            let c = self.counts.entry(e.keyspace.clone()).or_default();
            // Bytes already counted without a mark were counted from the
            // start; none counted: from here.
            let from = if c.bytes > 0 { c.first } else { c.next };
            c.counted_from.get_or_insert(from);
            c.next = c.next.max(e.id + 1);
            c.bytes = c.bytes.saturating_add(bytes.len() as u64);
            fresh.insert((e.keyspace.clone(), e.id), bytes.len() as u64);
            batch.put(TABLE, entry_key(&e.keyspace, e.id), bytes);
            touched.insert(e.keyspace);
        }
        for ks in touched {
            let c = self.counts.entry(ks.clone()).or_default();
            let cap = capacity(&ks);
            while c.len() > cap || (c.bytes > max_bytes && c.len() > 1) {
                let key = entry_key(&ks, c.first);
                let counted = c.counted_from.is_some_and(|f| c.first >= f);
                let size = match fresh.get(&(ks.clone(), c.first)) {
                    Some(n) => *n,
                    None if counted => backend.get(TABLE, &key)?.map_or(0, |v| v.len() as u64),
                    None => 0,
                };
                batch.delete(TABLE, key);
                c.bytes = c.bytes.saturating_sub(size);
                c.first += 1;
                c.dropped += 1;
            }
            let bytes = codec::encode(c).map_err(|err| StoreError::encode("ledger counts", err))?;
            batch.put(crate::engine::store::META, meta_key(&ks), bytes);
        }
        Ok(())
    }

    /// The committed counts per keyspace.
    pub fn counts(&self) -> &BTreeMap<KeyspaceName, LedgerCounts> {
        &self.counts
    }
}

/// What to look for in the ledger.
#[derive(Clone, Debug, Default)]
pub struct LedgerQuery {
    /// Only this keyspace.
    pub keyspace: Option<KeyspaceName>,
    /// Only this key.
    pub key: Option<Key>,
    /// Only entries recorded at or after this wall time (ms since the epoch).
    pub since_ms: Option<u64>,
    /// Only entries with an id above this (paging within one keyspace).
    pub after_id: Option<u64>,
    /// At most this many.
    pub limit: usize,
}

/// Reads ledger entries of `keyspaces` matching `q`, oldest first per keyspace.
pub fn query<'a>(
    backend: &impl Backend,
    keyspaces: impl Iterator<Item = &'a KeyspaceName>,
    q: &LedgerQuery,
) -> Result<Vec<LedgerEntry>, StoreError> {
    let mut out = Vec::new();
    for ks in keyspaces {
        if q.keyspace.as_ref().is_some_and(|want| want != ks) {
            continue;
        }
        let mut prefix = ks.as_str().as_bytes().to_vec();
        prefix.push(0);
        // Nothing comes after the last id there can be.
        let Some(first) = q.after_id.map_or(Some(0), |a| a.checked_add(1)) else {
            break;
        };
        let mut start = entry_key(ks, first);
        'pages: loop {
            let page = backend.scan(TABLE, &prefix, &start, 512)?;
            if page.is_empty() {
                break;
            }
            for (k, v) in &page {
                let e: LedgerEntry = codec::decode(v, 4 << 20).map_err(|e| StoreError::Decode {
                    what: format!("ledger entry of {ks}"),
                    reason: e.to_string(),
                })?;
                let key_ok = q.key.as_ref().is_none_or(|want| *want == e.key);
                let time_ok = q.since_ms.is_none_or(|s| e.recorded_at.wall_ms() >= s);
                if key_ok && time_ok {
                    out.push(e);
                    if out.len() >= q.limit {
                        break 'pages;
                    }
                }
                start = k.clone();
                start.push(0);
            }
        }
        if out.len() >= q.limit {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemBackend;
    use meridian_crdt::{Dot, RegionId, ReplicaId, Seq};

    fn entry(ks: &KeyspaceName, id: u64, value_len: usize) -> LedgerEntry {
        let r = ReplicaId::new(RegionId::new("us-east").unwrap(), uuid::Uuid::nil());
        let v = Version::new(Hlc::ZERO, Dot::new(r, Seq(id + 1)));
        LedgerEntry {
            id,
            keyspace: ks.clone(),
            key: Key::new(format!("k{id}")).unwrap(),
            path: Vec::new(),
            rule: "lww".into(),
            winner: v.clone(),
            winner_value: Some(Value::Bytes(vec![1; value_len])),
            loser: v,
            loser_value: None,
            ambiguous: false,
            recorded_at: Hlc::ZERO,
            merge: None,
            fallback: None,
        }
    }

    #[test]
    fn the_byte_bound_drops_the_oldest_entries_first() {
        let backend = MemBackend::new();
        let ks = KeyspaceName::default_keyspace();
        let mut ledger = Ledger::default();
        let one = codec::encode(&entry(&ks, 0, 1000)).unwrap().len() as u64;
        // Room for exactly three entries.
        let max = 3 * one;
        for id in 0..10 {
            let mut batch = Batch::new();
            ledger
                .flush(
                    vec![entry(&ks, id, 1000)],
                    &mut batch,
                    &backend,
                    |_| 1_000,
                    max,
                )
                .unwrap();
            backend.write(batch).unwrap();
            let c = ledger.counts()[&ks];
            assert!(c.bytes <= max, "{c:?}");
            assert_eq!(c.len(), (id + 1).min(3), "{c:?}");
        }
        let c = ledger.counts()[&ks];
        assert_eq!((c.first, c.next, c.dropped, c.bytes), (7, 10, 7, max));
        // What is stored is exactly the newest three.
        for id in 0..10 {
            let held = backend.get(TABLE, &entry_key(&ks, id)).unwrap().is_some();
            assert_eq!(held, id >= 7, "entry {id}");
        }
        // One entry over the bound on its own is still kept (the newest
        // always is); the rest make room.
        let mut batch = Batch::new();
        ledger
            .flush(
                vec![entry(&ks, 10, 5000)],
                &mut batch,
                &backend,
                |_| 1_000,
                max,
            )
            .unwrap();
        backend.write(batch).unwrap();
        assert_eq!(ledger.counts()[&ks].len(), 1);
    }

    #[test]
    fn paging_after_the_last_possible_id_finds_nothing() {
        let backend = MemBackend::new();
        let ks = KeyspaceName::default_keyspace();
        let mut ledger = Ledger::default();
        let mut batch = Batch::new();
        let entries = (0..3).map(|id| entry(&ks, id, 10)).collect();
        ledger
            .flush(entries, &mut batch, &backend, |_| 1_000, u64::MAX)
            .unwrap();
        backend.write(batch).unwrap();
        let q = |after_id| LedgerQuery {
            keyspace: None,
            key: None,
            since_ms: None,
            after_id,
            limit: 100,
        };
        let ids = |after| -> Vec<u64> {
            query(&backend, [&ks].into_iter(), &q(after))
                .unwrap()
                .iter()
                .map(|e| e.id)
                .collect()
        };
        assert_eq!(ids(None), vec![0, 1, 2]);
        assert_eq!(ids(Some(0)), vec![1, 2]);
        assert_eq!(ids(Some(u64::MAX)), Vec::<u64>::new());
    }
}
