//! Rebuilding state from a backup: snapshot chunks, then the archived log
//! rolled forward up to a time.
//!
//! # Correctness
//! The snapshot reflects exactly the ops its checkpoint's vector covers, all
//! stamped at or before the checkpoint's HLC. Every op the region applied
//! after it is in a log record past the checkpoint's LSN (state transfers
//! excepted: they are not logged). Keeping the records whose op is stamped
//! at or before `T`, in log order, keeps a causally closed set (an op's
//! causal past is stamped before it), so each is ready when replayed, and
//! the result is the state made of every archived op stamped at or before
//! `T` — whatever order the region first applied them in, since merges
//! commute.

use std::path::Path;
use std::sync::Arc;

use meridian_crdt::codec;
use meridian_crdt::{Hlc, RegionId, ReplicaId, VersionVector};

use super::chunk;
use crate::engine::store::{self, Checkpoint};
use crate::log::{Log, LogError, LogOptions, Lsn, record, segment};
use crate::op::{KeyspaceName, Op};
use crate::state::{Backend, Batch, StoreError};
use crate::{Engine, EngineConfig, WriteError};

/// Why a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// A file does not decode or fails its checks.
    #[error("{file}: {reason}")]
    Damaged {
        /// The file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// The state store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The new op log.
    #[error(transparent)]
    Log(#[from] LogError),
    /// Replaying an op.
    #[error("replaying the archived log: {0}")]
    Replay(#[from] WriteError),
    /// Kept ops whose causal past is in no archived record (it came by a
    /// state transfer, which the log does not hold).
    #[error(
        "{held} archived ops wait for a causal past the archive does not hold (the region took a state transfer after this backup's snapshot): restore from a backup taken after it"
    )]
    Held {
        /// How many.
        held: usize,
    },
    /// An origin's ops skip seqs in the log: those came by a state
    /// transfer (never logged), and may be stamped at or before the time.
    #[error(
        "the archived log skips ops of {origin} after seq {after} (the region took a state transfer after this backup's snapshot, and those ops may be stamped before the time asked): restore from a backup taken after the transfer"
    )]
    Skipped {
        /// The origin.
        origin: String,
        /// The last seq before the gap.
        after: u64,
    },
    /// Segments do not follow each other.
    #[error("archived log has a gap: {file} starts at {found}, expected {expected}")]
    Gap {
        /// The segment.
        file: String,
        /// Its first position.
        found: u64,
        /// The position expected.
        expected: u64,
    },
}

/// What to restore.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Keep only ops stamped at or before this (`None`: everything).
    pub to: Option<Hlc>,
    /// Only this keyspace (and the system keyspace, which defines it), and
    /// in it only keys starting with `prefix`. `None`: everything.
    pub keyspace: Option<(KeyspaceName, Vec<u8>)>,
}

impl Filter {
    fn keeps_table(&self, table: &str, key: &[u8]) -> bool {
        let Some((ks, prefix)) = &self.keyspace else {
            return true;
        };
        table == store::META && key == b"checkpoint"
            || table == store::table(&KeyspaceName::system())
            || table == store::table(ks) && key.starts_with(prefix)
    }
}

/// What a restore built.
#[derive(Clone, Debug, Default)]
pub struct Restored {
    /// Snapshot entries loaded.
    pub entries: u64,
    /// Log records read past the snapshot.
    pub records: u64,
    /// Of those, ops kept (stamped at or before the time).
    pub ops: u64,
    /// Ops left out because they are stamped later.
    pub later: u64,
    /// What the restored state reflects.
    pub vv: VersionVector,
    /// The newest HLC kept.
    pub hlc: Hlc,
}

/// A restore in progress: load every chunk, then [`Restore::replay`] the
/// segments in order, then [`Restore::finish`].
pub struct Restore<B: Backend> {
    backend: Arc<B>,
    filter: Filter,
    base: Option<Checkpoint>,
    engine: Option<Engine<B>>,
    log: Option<Log>,
    log_dir: Option<std::path::PathBuf>,
    next: u64,
    /// Segments replayed so far.
    replayed: usize,
    /// Per origin, the last seq met and its stamp (`None`: from the
    /// snapshot, stamp unknown).
    last: std::collections::BTreeMap<ReplicaId, (u64, Option<Hlc>)>,
    /// The first gap met whose ops could be stamped at or before the time.
    skipped: Option<(ReplicaId, u64)>,
    done: Restored,
}

impl<B: Backend> Restore<B> {
    /// Restores into `backend` (new and empty); when `log_dir` is given,
    /// the kept ops are written to a new op log there, so the region that
    /// starts on it can ship them and recover from it.
    pub fn new(backend: Arc<B>, log_dir: Option<&Path>, filter: Filter) -> Self {
        Self {
            backend,
            filter,
            base: None,
            engine: None,
            log: None,
            log_dir: log_dir.map(Path::to_path_buf),
            next: 0,
            replayed: 0,
            last: std::collections::BTreeMap::new(),
            skipped: None,
            done: Restored::default(),
        }
    }

    /// Loads one snapshot chunk (`file` names it in errors).
    pub fn load_chunk(&mut self, file: &str, bytes: &[u8]) -> Result<(), RestoreError> {
        let entries = chunk::decode(bytes).map_err(|e| RestoreError::Damaged {
            file: file.to_string(),
            reason: e.to_string(),
        })?;
        let mut batch = Batch::new();
        for e in entries {
            if !self.filter.keeps_table(&e.table, &e.key) {
                continue;
            }
            if e.table == store::META && e.key == b"checkpoint" {
                let c: Checkpoint =
                    codec::decode(&e.value, 1 << 20).map_err(|err| RestoreError::Damaged {
                        file: file.to_string(),
                        reason: format!("checkpoint does not decode: {err}"),
                    })?;
                // The new log starts at 1: the state reflects none of it.
                let (k, v) = store::checkpoint_entry(&Checkpoint {
                    lsn: 0,
                    ..c.clone()
                })?;
                batch.put(store::META, k, v);
                self.base = Some(c);
            } else {
                if store::is_object_table(&e.table) {
                    // From the backup target, not from this region: checked
                    // (canonical JSON included) before the store holds it,
                    // since the store's reads take its objects as written.
                    codec::decode::<meridian_crdt::Object>(&e.value, store::MAX_OBJECT).map_err(
                        |err| RestoreError::Damaged {
                            file: file.to_string(),
                            reason: format!("an object of {} does not decode: {err}", e.table),
                        },
                    )?;
                }
                batch.put(&e.table, e.key, e.value);
            }
            self.done.entries += 1;
        }
        self.backend.write(batch)?;
        Ok(())
    }

    /// The snapshot's checkpoint, once its chunk is loaded.
    pub fn base(&self) -> Option<&Checkpoint> {
        self.base.as_ref()
    }

    fn start(&mut self) -> Result<(), RestoreError> {
        if self.engine.is_some() {
            return Ok(());
        }
        let base = self.base.clone().unwrap_or_default();
        self.next = base.lsn + 1;
        self.last = base
            .vv
            .iter()
            .map(|(r, s)| (r.clone(), (s.0, None)))
            .collect();
        // Nobody writes through this engine: the id only fills a slot.
        let region = RegionId::new("restore").map_err(|e| RestoreError::Damaged {
            file: "-".into(),
            reason: e.to_string(),
        })?;
        let me = ReplicaId::new(region, uuid::Uuid::nil());
        self.engine = Some(Engine::open(
            me,
            EngineConfig::default(),
            self.backend.clone(),
        )?);
        if let Some(dir) = &self.log_dir {
            let opts = LogOptions {
                retention_bytes: 0,
                retention_ms: 0,
                ..LogOptions::default()
            };
            let (log, _) = Log::open(dir, opts, false, |_, _| {})?;
            self.log = Some(log);
        }
        Ok(())
    }

    /// Rolls forward through one archived segment (in order, no gaps;
    /// records at or below the snapshot's position are skipped).
    pub fn replay(
        &mut self,
        file: &str,
        first_lsn: u64,
        bytes: Vec<u8>,
    ) -> Result<(), RestoreError> {
        self.start()?;
        let damaged = |reason: String| RestoreError::Damaged {
            file: file.to_string(),
            reason,
        };
        let loaded = segment::from_bytes(bytes, Lsn(first_lsn))
            .map_err(|r| damaged(r.to_string()))?
            .ok_or_else(|| damaged("empty segment".into()))?;
        // The first segment holds the record after the snapshot; each later
        // one starts exactly where the one before ended (an overlap is a
        // log that issued positions twice).
        let wrong = if self.replayed == 0 {
            first_lsn > self.next
        } else {
            first_lsn != self.next
        };
        if wrong {
            return Err(RestoreError::Gap {
                file: file.to_string(),
                found: first_lsn,
                expected: self.next,
            });
        }
        let next_at_entry = self.next;
        let mut lsn = first_lsn;
        let mut kept: Vec<Op> = Vec::new();
        let mut failure: Option<RestoreError> = None;
        let end = segment::scan(&loaded, |payload, _| {
            let this = lsn;
            lsn += 1;
            if this < self.next || failure.is_some() {
                return Ok(());
            }
            let op: Op = match codec::decode(payload, record::MAX_RECORD) {
                Ok(op) => op,
                Err(e) => {
                    failure = Some(damaged(format!("record {this} does not decode: {e}")));
                    return Ok(());
                }
            };
            self.done.records += 1;
            // Seqs of one origin are logged in order, one by one; a jump
            // means ops applied without a record (a state transfer). They
            // are stamped after the last one met, so they matter only if
            // that is at or before the time (unknown when it is the
            // snapshot's).
            let seq = op.dot.seq.0;
            let (prev, at) = self
                .last
                .get(&op.dot.replica)
                .cloned()
                .unwrap_or((0, Some(Hlc::default())));
            if seq > prev + 1
                && self.skipped.is_none()
                && at.is_none_or(|h| self.filter.to.is_none_or(|t| h <= t))
            {
                self.skipped = Some((op.dot.replica.clone(), prev));
            }
            if seq > prev {
                self.last
                    .insert(op.dot.replica.clone(), (seq, Some(op.hlc)));
            }
            if self.filter.to.is_some_and(|t| op.hlc > t) {
                self.done.later += 1;
                return Ok(());
            }
            kept.push(op);
            Ok(())
        })
        .map_err(|e| damaged(e.to_string()))?;
        if let Some(f) = failure {
            return Err(f);
        }
        if !matches!(end, segment::ScanEnd::Clean) {
            return Err(damaged(format!("{end:?}")));
        }
        // Segments wholly at or below the snapshot do not count: the chain
        // starts with the one holding the record after it.
        if lsn > next_at_entry {
            self.replayed += 1;
        }
        self.next = self.next.max(lsn);
        self.apply(kept)
    }

    fn apply(&mut self, ops: Vec<Op>) -> Result<(), RestoreError> {
        let (Some(engine), ks) = (self.engine.as_mut(), &self.filter.keyspace) else {
            return Ok(());
        };
        for chunk in ops.chunks(4096) {
            let mut logged = Vec::with_capacity(chunk.len());
            for op in chunk {
                let mut op = op.clone();
                if let Some((name, prefix)) = ks {
                    let sys = KeyspaceName::system();
                    op.mutations.retain(|m| {
                        m.keyspace == sys
                            || (m.keyspace == *name
                                && m.key.as_str().as_bytes().starts_with(prefix))
                    });
                }
                self.done.ops += 1;
                self.done.hlc = self.done.hlc.max(op.hlc);
                engine.replay(op.clone())?;
                logged.push(op);
            }
            let last = match self.log.as_mut() {
                Some(log) => {
                    let first = log.append(logged.iter())?;
                    log.sync()?;
                    Some(Lsn(first.0 + logged.len() as u64 - 1))
                }
                None => None,
            };
            engine.commit(last)?;
        }
        Ok(())
    }

    /// Commits, makes the store durable and reports what was restored,
    /// with a reader of the restored state.
    pub fn finish(mut self) -> Result<(Restored, crate::Reader<B>), RestoreError> {
        self.start()?;
        let engine = self.engine.as_mut().ok_or_else(|| {
            RestoreError::Store(StoreError::Invariant("the restore has no engine".into()))
        })?;
        let last = self.log.as_ref().map(|l| Lsn(l.end_lsn().0 - 1));
        engine.commit(last)?;
        // Every kept op must have been applied: one still waiting means its
        // past is missing, and the state would silently stop short.
        let held = engine.reader().published().stats.buffered;
        if held > 0 {
            return Err(RestoreError::Held { held });
        }
        if let Some((origin, after)) = &self.skipped {
            return Err(RestoreError::Skipped {
                origin: origin.to_string(),
                after: *after,
            });
        }
        engine.checkpoint()?;
        self.done.vv = engine.vv().clone();
        if let Some(base) = &self.base {
            self.done.hlc = self.done.hlc.max(base.hlc);
        }
        Ok((self.done, engine.reader()))
    }
}
