//! An in-memory backend for simulations and tests, with crash semantics.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::{Backend, Batch, Entry, ReadSnapshot, StoreError};

type Tables = BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>;

#[derive(Default)]
struct Inner {
    live: Tables,
    durable: Tables,
}

/// A backend held in memory. Clones share the same data.
///
/// It keeps what has been persisted apart from what has only been written,
/// so a simulated crash ([`MemBackend::crash`]) loses exactly what a real
/// crash may lose: every batch since the last `persist`.
#[derive(Clone, Default)]
pub struct MemBackend {
    inner: Arc<Mutex<Inner>>,
}

impl MemBackend {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets everything not persisted, as a crash would.
    pub fn crash(&self) {
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        g.live = g.durable.clone();
    }

    /// Applies `f` to the live tables (tests use it to damage state).
    pub fn tamper(&self, f: impl FnOnce(&mut BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>)) {
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut g.live);
        g.durable = g.live.clone();
    }
}

/// A copy of a [`MemBackend`]'s tables at one moment.
pub struct MemSnapshot(Tables);

fn scan_tables(
    tables: &Tables,
    table: &str,
    prefix: &[u8],
    start: &[u8],
    limit: usize,
) -> Vec<Entry> {
    let Some(t) = tables.get(table) else {
        return Vec::new();
    };
    let from = if start > prefix { start } else { prefix };
    t.range(from.to_vec()..)
        .take_while(|(k, _)| k.starts_with(prefix))
        .take(limit)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

impl ReadSnapshot for MemSnapshot {
    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.get(table).and_then(|t| t.get(key)).cloned())
    }

    fn scan(
        &self,
        table: &str,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        Ok(scan_tables(&self.0, table, prefix, start, limit))
    }
}

impl Backend for MemBackend {
    type Snap = MemSnapshot;

    fn snapshot(&self) -> Result<MemSnapshot, StoreError> {
        let g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(MemSnapshot(g.live.clone()))
    }

    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(g.live.get(table).and_then(|t| t.get(key)).cloned())
    }

    fn write(&self, batch: Batch) -> Result<(), StoreError> {
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        for (table, key, value) in batch.writes {
            let t = g.live.entry(table).or_default();
            match value {
                Some(v) => {
                    t.insert(key, v);
                }
                None => {
                    t.remove(&key);
                }
            }
        }
        Ok(())
    }

    fn scan(
        &self,
        table: &str,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(scan_tables(&g.live, table, prefix, start, limit))
    }

    fn persist(&self) -> Result<(), StoreError> {
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        g.durable = g.live.clone();
        Ok(())
    }

    fn disk_bytes(&self) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::suite;

    #[test]
    fn passes_the_storage_suite() {
        suite::run_all(&mut || MemBackend::new(), None);
    }

    #[test]
    fn a_crash_keeps_only_what_was_persisted() {
        let m = MemBackend::new();
        let mut b = Batch::new();
        b.put("t", b"a".to_vec(), b"1".to_vec());
        m.write(b).unwrap();
        m.persist().unwrap();
        let mut b = Batch::new();
        b.put("t", b"b".to_vec(), b"2".to_vec());
        m.write(b).unwrap();
        m.crash();
        assert_eq!(m.get("t", b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(m.get("t", b"b").unwrap(), None);
    }
}
