//! Reads, concurrent with the writer: straight from the state store, which
//! only ever holds committed (durable) writes.

use std::sync::Arc;

use meridian_crdt::{Crdt, Hlc, Object, VersionVector};

use super::keyspaces::KeyspaceDef;
use super::ledger::{self, LedgerEntry, LedgerQuery};
use super::{Published, Shared, store};
use crate::op::{Key, KeyspaceName};
use crate::state::{Backend, ReadSnapshot, StoreError};

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// No such keyspace.
    #[error("keyspace {0:?} does not exist")]
    UnknownKeyspace(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One key as read.
#[derive(Clone, Debug)]
pub struct Read {
    /// Its keyspace.
    pub def: KeyspaceDef,
    /// Its state; `None` when the key was never written. A deleted key has a
    /// state that is not live ([`Crdt::is_live`]).
    pub object: Option<Object>,
    /// The region's version vector, read after the state: it covers
    /// everything the state reflects (the causal token to hand out).
    pub vv: VersionVector,
}

impl Read {
    /// The state if it holds a live value.
    pub fn live(&self) -> Option<&Object> {
        self.object.as_ref().filter(|o| o.is_live())
    }
}

/// A page of a keyspace listing.
#[derive(Clone, Debug)]
pub struct Listing {
    /// Live keys in order, with their state.
    pub items: Vec<(Key, Object)>,
    /// Pass as `after` to get the next page; `None` at the end.
    pub next: Option<Key>,
    /// Covers everything listed.
    pub vv: VersionVector,
}

/// A read handle. Cheap to clone; safe to use from many threads.
pub struct Reader<B> {
    backend: Arc<B>,
    shared: Arc<Shared>,
    /// The store's size and when it was measured (see
    /// [`Reader::disk_bytes_recent`]).
    disk: Arc<std::sync::Mutex<Option<(std::time::Instant, u64)>>>,
}

impl<B> Clone for Reader<B> {
    fn clone(&self) -> Self {
        Self {
            backend: self.backend.clone(),
            shared: self.shared.clone(),
            disk: self.disk.clone(),
        }
    }
}

impl<B: Backend> Reader<B> {
    /// A reader over `backend` seeing what `shared` publishes.
    pub fn new(backend: Arc<B>, shared: Arc<Shared>) -> Self {
        Self {
            backend,
            shared,
            disk: Arc::default(),
        }
    }

    /// Covers everything this reader can see in the store now (see
    /// [`Shared`]): a token for a read taken before this call.
    pub fn upper(&self) -> VersionVector {
        self.shared.upper()
    }

    /// The latest published view (version vector, registry, digests).
    pub fn published(&self) -> Arc<Published> {
        self.shared.get()
    }

    fn def(&self, keyspace: &str) -> Result<KeyspaceDef, ReadError> {
        self.shared
            .get()
            .registry
            .get(keyspace)
            .cloned()
            .ok_or_else(|| ReadError::UnknownKeyspace(keyspace.to_string()))
    }

    /// Reads one key.
    pub fn get(&self, keyspace: &str, key: &Key) -> Result<Read, ReadError> {
        let def = self.def(keyspace)?;
        let bytes = self
            .backend
            .get(&store::table(&def.name), key.as_str().as_bytes())?;
        let object = bytes
            .map(|b| store::decode_object(&def.name, key.as_str().as_bytes(), &b))
            .transpose()?;
        // After the state, and the upper vector: it covers all the state
        // reflects, even a group whose vector is not published yet.
        let vv = self.shared.upper();
        Ok(Read { def, object, vv })
    }

    /// Lists live keys starting with `prefix`, after `after`, at most `limit`.
    pub fn list(
        &self,
        keyspace: &str,
        prefix: &str,
        after: Option<&Key>,
        limit: usize,
    ) -> Result<Listing, ReadError> {
        let def = self.def(keyspace)?;
        let table = store::table(&def.name);
        let mut start = match after {
            Some(k) => {
                let mut s = k.as_str().as_bytes().to_vec();
                s.push(0);
                s
            }
            None => Vec::new(),
        };
        let mut items = Vec::new();
        let mut next = None;
        // Deleted keys are skipped; bound the work a page can cost.
        let mut budget = limit.saturating_mul(20).max(1000);
        'scan: loop {
            let page =
                self.backend
                    .scan(&table, prefix.as_bytes(), &start, 256.min(budget.max(1)))?;
            if page.is_empty() {
                break;
            }
            for (k, v) in page {
                budget = budget.saturating_sub(1);
                let obj = store::decode_object(&def.name, &k, &v)?;
                let key = Key::new(String::from_utf8_lossy(&k).into_owned()).map_err(|e| {
                    StoreError::Decode {
                        what: format!("key in {}", def.name),
                        reason: e.to_string(),
                    }
                })?;
                start = k;
                start.push(0);
                if obj.is_live() {
                    if items.len() == limit {
                        // One more live key exists: there is a next page.
                        next = items.last().map(|(k, _): &(Key, Object)| k.clone());
                        break 'scan;
                    }
                    items.push((key, obj));
                } else if budget == 0 {
                    next = Some(key);
                    break 'scan;
                }
            }
        }
        let vv = self.shared.upper();
        Ok(Listing { items, next, vv })
    }

    /// Conflict-ledger entries matching `q`.
    pub fn conflicts(&self, q: &LedgerQuery) -> Result<Vec<LedgerEntry>, ReadError> {
        let published = self.shared.get();
        if let Some(ks) = &q.keyspace
            && published.registry.get(ks.as_str()).is_none()
        {
            return Err(ReadError::UnknownKeyspace(ks.to_string()));
        }
        let names: Vec<KeyspaceName> = published.registry.iter().map(|d| d.name.clone()).collect();
        Ok(ledger::query(&*self.backend, names.iter(), q)?)
    }

    /// A consistent snapshot of the whole state with the version vector it
    /// reflects, for a state transfer to a peer.
    pub fn transfer_snapshot(&self) -> Result<StateSnapshot<B::Snap>, ReadError> {
        let snap = self.backend.snapshot()?;
        let ckpt = match snap.get(store::META, b"checkpoint")? {
            Some(bytes) => meridian_crdt::codec::decode::<store::Checkpoint>(&bytes, 1 << 20)
                .map_err(|e| StoreError::Decode {
                    what: "checkpoint".into(),
                    reason: e.to_string(),
                })?,
            None => store::Checkpoint::default(),
        };
        let sys = KeyspaceName::system();
        let mut keyspaces = vec![sys.clone(), KeyspaceName::default_keyspace()];
        let mut start = Vec::new();
        loop {
            let page = snap.scan(&store::table(&sys), b"", &start, 256)?;
            if page.is_empty() {
                break;
            }
            for (k, _) in &page {
                if let Ok(name) = KeyspaceName::new(String::from_utf8_lossy(k).into_owned())
                    && !keyspaces.contains(&name)
                {
                    keyspaces.push(name);
                }
                start = k.clone();
                start.push(0);
            }
        }
        Ok(StateSnapshot {
            snap,
            vv: ckpt.vv,
            hlc: ckpt.hlc,
            lsn: ckpt.lsn,
            keyspaces,
        })
    }

    /// A keyspace's digest tree (256 bucket digests).
    pub fn tree(&self, ks: &KeyspaceName) -> Option<store::Tree> {
        self.shared.tree(ks)
    }

    /// The keys of `buckets` in `ks` with their digest contributions (a full
    /// scan of the keyspace: anti-entropy calls it only for buckets that
    /// differ).
    pub fn bucket_entries(
        &self,
        ks: &KeyspaceName,
        buckets: &[u16],
    ) -> Result<Vec<(Key, u128)>, ReadError> {
        let want: std::collections::BTreeSet<usize> = buckets.iter().map(|b| *b as usize).collect();
        let table = store::table(ks);
        let mut out = Vec::new();
        let mut start = Vec::new();
        loop {
            let page = self.backend.scan(&table, b"", &start, 1024)?;
            if page.is_empty() {
                break;
            }
            for (k, v) in &page {
                if want.contains(&store::bucket_of(k)) {
                    let obj = store::decode_object(ks, k, v)?;
                    let c = store::object_contribution(k, &obj, v);
                    if let Ok(key) = Key::new(String::from_utf8_lossy(k).into_owned()) {
                        out.push((key, c));
                    }
                }
            }
            if let Some((k, _)) = page.last() {
                start = k.clone();
                start.push(0);
            }
        }
        Ok(out)
    }

    /// The raw encoded object of a key (for peers).
    pub fn raw(&self, ks: &KeyspaceName, key: &Key) -> Result<Option<Vec<u8>>, ReadError> {
        Ok(self
            .backend
            .get(&store::table(ks), key.as_str().as_bytes())?)
    }

    /// Bytes the state store occupies on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.backend.disk_bytes()
    }

    /// [`Reader::disk_bytes`] as measured at most `max_age` ago: for
    /// status pages and scrapes, which may come every second from many
    /// callers, while measuring lists the store's files.
    pub fn disk_bytes_recent(&self, max_age: std::time::Duration) -> u64 {
        let now = std::time::Instant::now();
        // Another caller is measuring: measure apart rather than wait for
        // its lock on an async worker.
        let mut held = match self.disk.try_lock() {
            Ok(held) => held,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return self.backend.disk_bytes(),
        };
        match *held {
            Some((at, bytes)) if now.duration_since(at) <= max_age => bytes,
            _ => {
                let bytes = self.backend.disk_bytes();
                *held = Some((now, bytes));
                bytes
            }
        }
    }
}

/// The whole state at one moment, for a state transfer.
pub struct StateSnapshot<S> {
    snap: S,
    /// Every op this covers is reflected in the snapshot, and no other.
    pub vv: VersionVector,
    /// The highest HLC the state had seen.
    pub hlc: Hlc,
    /// The log position the state reflects.
    pub lsn: u64,
    /// The keyspaces to send (the system keyspace first).
    pub keyspaces: Vec<KeyspaceName>,
}

impl<S: ReadSnapshot> StateSnapshot<S> {
    /// Every stored table (for a backup): engine metadata, the conflict
    /// ledger, and each keyspace's objects.
    pub fn tables(&self) -> Vec<String> {
        let mut t = vec![store::META.to_string(), super::ledger::TABLE.to_string()];
        t.extend(self.keyspaces.iter().map(store::table));
        t
    }

    /// The snapshot itself, for reading whole tables.
    pub fn inner(&self) -> &S {
        &self.snap
    }

    /// Encoded objects of `ks` with keys after `after`: at most `limit` of
    /// them and, keys and objects together, at most `max_bytes` (a larger
    /// object comes alone).
    pub fn page(
        &self,
        ks: &KeyspaceName,
        after: Option<&[u8]>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<crate::state::Entry>, StoreError> {
        let mut start = match after {
            Some(a) => {
                let mut s = a.to_vec();
                s.push(0);
                s
            }
            None => Vec::new(),
        };
        let table = store::table(ks);
        let mut out = Vec::new();
        let mut bytes = 0;
        while out.len() < limit {
            // Small scans, so a page of large objects never reads many ahead.
            let chunk = self
                .snap
                .scan(&table, b"", &start, (limit - out.len()).min(16))?;
            if chunk.is_empty() {
                break;
            }
            for (k, v) in chunk {
                let n = k.len() + v.len();
                if !out.is_empty() && bytes + n > max_bytes {
                    return Ok(out);
                }
                bytes += n;
                start.clone_from(&k);
                start.push(0);
                out.push((k, v));
            }
        }
        Ok(out)
    }
}
