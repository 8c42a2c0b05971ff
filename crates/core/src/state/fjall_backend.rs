//! The on-disk backend: fjall (an LSM-tree store), one fjall keyspace per table.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{PoisonError, RwLock};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable};

use super::{Backend, Batch, Entry, ReadSnapshot, StoreError};

/// State on disk in a fjall database.
///
/// Writes go to fjall's journal without an fsync (the op log is what makes a
/// write durable; the state is rebuilt from it after a crash); `persist`
/// fsyncs, which is what a checkpoint needs.
pub struct FjallBackend {
    db: Database,
    dir: std::path::PathBuf,
    tables: RwLock<HashMap<String, Keyspace>>,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// fjall accepts only these characters in keyspace names; our table names
/// (`k.<keyspace>`, `meta`, `ledger`) always fit, but check anyway.
fn valid_table(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.#$".contains(&b))
}

impl FjallBackend {
    /// Opens or creates the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = Database::builder(dir)
            .manual_journal_persist(true)
            .cache_size(64 << 20)
            .open()
            .map_err(err)?;
        Ok(Self {
            db,
            dir: dir.to_path_buf(),
            tables: RwLock::new(HashMap::new()),
        })
    }

    fn table(&self, name: &str, create: bool) -> Result<Option<Keyspace>, StoreError> {
        if let Some(ks) = self
            .tables
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
        {
            return Ok(Some(ks.clone()));
        }
        if !valid_table(name) {
            return Err(StoreError::Backend(format!("invalid table name {name:?}")));
        }
        if !create && !self.db.keyspace_exists(name) {
            return Ok(None);
        }
        let ks = self
            .db
            .keyspace(name, KeyspaceCreateOptions::default)
            .map_err(err)?;
        self.tables
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_string(), ks.clone());
        Ok(Some(ks))
    }
}

/// A fjall MVCC snapshot across every table.
pub struct FjallSnapshot {
    db: Database,
    snap: fjall::Snapshot,
}

impl FjallSnapshot {
    fn table(&self, name: &str) -> Result<Option<Keyspace>, StoreError> {
        if !valid_table(name) || !self.db.keyspace_exists(name) {
            return Ok(None);
        }
        self.db
            .keyspace(name, KeyspaceCreateOptions::default)
            .map(Some)
            .map_err(err)
    }
}

impl ReadSnapshot for FjallSnapshot {
    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(ks) = self.table(table)? else {
            return Ok(None);
        };
        Ok(self.snap.get(&ks, key).map_err(err)?.map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        table: &str,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let Some(ks) = self.table(table)? else {
            return Ok(Vec::new());
        };
        let from = if start > prefix { start } else { prefix };
        let mut out = Vec::new();
        for guard in self.snap.range(&ks, from.to_vec()..) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = guard.into_inner().map_err(err)?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }
}

impl Backend for FjallBackend {
    type Snap = FjallSnapshot;

    fn snapshot(&self) -> Result<FjallSnapshot, StoreError> {
        Ok(FjallSnapshot {
            db: self.db.clone(),
            snap: self.db.snapshot(),
        })
    }

    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(ks) = self.table(table, false)? else {
            return Ok(None);
        };
        Ok(ks.get(key).map_err(err)?.map(|v| v.to_vec()))
    }

    fn write(&self, batch: Batch) -> Result<(), StoreError> {
        let mut b = self.db.batch();
        for (table, key, value) in batch.writes {
            let Some(ks) = self.table(&table, true)? else {
                continue;
            };
            match value {
                Some(v) => b.insert(&ks, key, v),
                None => b.remove(&ks, key),
            }
        }
        b.commit().map_err(err)
    }

    fn scan(
        &self,
        table: &str,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let Some(ks) = self.table(table, false)? else {
            return Ok(Vec::new());
        };
        let from = if start > prefix { start } else { prefix };
        let mut out = Vec::new();
        for guard in ks.range(from.to_vec()..) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = guard.into_inner().map_err(err)?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn persist(&self) -> Result<(), StoreError> {
        self.db.persist(PersistMode::SyncAll).map_err(err)
    }

    /// The tables' files, plus the journal's blocks actually on disk:
    /// fjall sizes a new journal file to 64 MiB up front (sparse), and its
    /// own `disk_space` counts that whole length.
    fn disk_bytes(&self) -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        let tables: u64 = self
            .db
            .disk_space()
            .unwrap_or(0)
            .saturating_sub(self.db.journal_disk_space().unwrap_or(0));
        let journal: u64 = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "jnl"))
            .filter_map(|e| e.metadata().ok())
            .map(|m| (m.blocks() * 512).min(m.len()))
            .sum();
        tables + journal
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::suite;

    #[test]
    fn disk_bytes_counts_what_is_stored_not_the_journals_preallocation() {
        let dir = crate::testdir::TestDir::new("fjall-disk-bytes");
        let b = FjallBackend::open(dir.path()).unwrap();
        let mut batch = Batch::new();
        for i in 0..100u32 {
            batch.put("k.default", i.to_be_bytes().to_vec(), vec![7; 100]);
        }
        b.write(batch).unwrap();
        b.persist().unwrap();
        let bytes = b.disk_bytes();
        // 100 entries of about 104 bytes: well under the journal's 64 MiB
        // file length, and not nothing.
        assert!((10_000..4 << 20).contains(&bytes), "{bytes} bytes");
    }

    #[test]
    fn passes_the_storage_suite() {
        let dir = crate::testdir::TestDir::new("fjall-suite");
        let mut n = 0;
        let root = dir.path().to_path_buf();
        let reopen_dir = root.join("reopen");
        suite::run_all(
            &mut || {
                n += 1;
                FjallBackend::open(&root.join(format!("db{n}"))).unwrap()
            },
            Some(&mut |open: bool| {
                if open {
                    Some(FjallBackend::open(&reopen_dir).unwrap())
                } else {
                    None
                }
            }),
        );
    }
}
