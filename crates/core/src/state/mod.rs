//! Where materialized state lives: a small byte-level storage trait with two
//! backends, fjall on disk for regions and memory for simulations, and the
//! test suite both must pass.
//!
//! The engine stores one table per keyspace (`k.<name>`: key -> encoded
//! [`meridian_crdt::Object`]), a `meta` table (the checkpoint: version
//! vector, LSN and clock reflected by the state) and a `ledger` table (the
//! conflict ledger). Everything the engine writes for one group commit goes
//! in one atomic [`Batch`], meta included, so the stored version vector always
//! describes exactly the stored state.

pub mod fjall_backend;
pub mod memory;
pub mod suite;

pub use fjall_backend::FjallBackend;
pub use memory::MemBackend;

/// Errors of a storage backend.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (its own message: an I/O error, a bad table
    /// name).
    #[error("state store: {0}")]
    Backend(String),
    /// A record could not be encoded for storing. Nothing was written.
    #[error("state store: {what} does not encode: {source}")]
    Encode {
        /// Which record.
        what: &'static str,
        /// The encoder's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The engine found its own bookkeeping broken (a group committed out
    /// of order, an entry it had just made missing). Fatal: the process
    /// must stop, and restarts from the log.
    #[error("engine invariant broken: {0}")]
    Invariant(String),
    /// Stored bytes that do not decode.
    #[error("state store: {what} does not decode: {reason}")]
    Decode {
        /// Which record.
        what: String,
        /// Why.
        reason: String,
    },
}

impl StoreError {
    /// A record that did not encode.
    pub fn encode(
        what: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Encode {
            what,
            source: Box::new(source),
        }
    }
}

/// A stored key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// An atomic group of writes.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    /// `(table, key, value)`; `None` removes the key. Later entries for the
    /// same key win.
    pub writes: Vec<(String, Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` in `table`.
    pub fn put(&mut self, table: &str, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.writes
            .push((table.to_string(), key.into(), Some(value.into())));
    }

    /// Removes `key` from `table`.
    pub fn delete(&mut self, table: &str, key: impl Into<Vec<u8>>) {
        self.writes.push((table.to_string(), key.into(), None));
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}

/// A consistent read-only view of a [`Backend`]: every read through it sees
/// the store as it was when the snapshot was taken, across tables.
pub trait ReadSnapshot: Send + 'static {
    /// The value of `key` in `table`.
    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// As [`Backend::scan`], at the snapshot.
    fn scan(
        &self,
        table: &str,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError>;
}

/// A byte-level ordered key-value store with atomic batches.
///
/// # Correctness
/// - `write` is atomic: after a crash, either all of a batch is there or none.
/// - Batches become visible to `get`/`scan` when `write` returns, in order.
/// - After `persist` returns, every batch written before it survives a crash
///   (process kill or power loss). Batches written after the last `persist`
///   may or may not survive, but if one survives, so do all batches written
///   before it (the store recovers a prefix).
/// - `scan` returns keys in ascending byte order.
/// - Tables are created on first write; reading a table that does not exist
///   finds nothing.
pub trait Backend: Send + Sync + 'static {
    /// A consistent read-only view of the store at one moment.
    type Snap: ReadSnapshot;

    /// Takes a snapshot: later writes are not visible through it.
    fn snapshot(&self) -> Result<Self::Snap, StoreError>;

    /// The value of `key` in `table`.
    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Applies a batch atomically.
    fn write(&self, batch: Batch) -> Result<(), StoreError>;

    /// Up to `limit` entries of `table` with keys starting with `prefix` and
    /// `>= start`, ascending.
    fn scan(
        &self,
        table: &str,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError>;

    /// Makes every batch written so far durable.
    fn persist(&self) -> Result<(), StoreError>;

    /// Bytes the store occupies on disk (0 in memory).
    fn disk_bytes(&self) -> u64;
}
