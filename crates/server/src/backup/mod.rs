//! Backups of a running region: consistent snapshots plus the continuously
//! archived op log in a [`target::Target`], listing, retention,
//! verification, point-in-time restore into a new data directory, and
//! `rewind` (a key range back to its value at a time, as new writes).
//!
//! A backup (see [`meridian_core::backup::manifest`] for the layout):
//! 1. takes a snapshot of the state store (a consistent view with the
//!    checkpoint it reflects) while writes go on;
//! 2. seals the op log's segment being written and archives every sealed
//!    segment not yet in the target;
//! 3. uploads the snapshot's chunks the target does not hold yet;
//! 4. writes the manifest last. A backup cut short (a kill, a failure)
//!    has no manifest and is never listed; its orphan files go at the next
//!    prune.
//!
//! Why past ~400 lines: `Backups` is one type: taking, listing, verifying,
//! deleting and scheduling share its archive and its lock (stored files are
//! read by `stored.rs`).

pub mod archive;
pub mod restore;
pub mod retention;
pub mod rewind;
pub mod settings;
mod stored;
pub mod target;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use meridian_core::backup::chunk::Chunker;
use meridian_core::backup::manifest::{
    self, FileRef, Manifest, SegmentRef, chunk_name, sha256_hex,
};
use meridian_core::{FjallBackend, Reader};
use serde::Serialize;

use crate::region::clock::WallClock;
use archive::Archive;
pub use retention::{Lease, Pruned};
pub use settings::BackupSettings;
use stored::scan_manifests;
pub use stored::{damaged_manifests, fetch_checked, list_manifests, read_manifest};
use target::TargetError;

/// Why a backup operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The target.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// A stored file that does not match what names it.
    #[error("backup file {file} is damaged: {reason}")]
    Damaged {
        /// The file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// Reading this region's own state or log.
    #[error("backup: {0}")]
    Local(String),
    /// No such backup.
    #[error("no backup {0}")]
    Unknown(String),
    /// Another backup operation runs (the id of a backup being taken, or
    /// what runs).
    #[error("{0} is running; wait for it")]
    Running(String),
    /// A restore holds a lease on the backup.
    #[error("backup {0} is being restored from; try again when the restore ends")]
    Leased(String),
    /// Nothing to restore from.
    #[error("{0}")]
    NoBase(String),
    /// A rewind this keyspace cannot take, or a write of it refused.
    #[error("{0}")]
    Refused(String),
    /// The region is stopping.
    #[error("the region is shutting down")]
    Stopped,
}

impl From<meridian_core::backup::RestoreError> for BackupError {
    fn from(e: meridian_core::backup::RestoreError) -> Self {
        use meridian_core::backup::RestoreError as R;
        match e {
            R::Damaged { file, reason } => BackupError::Damaged { file, reason },
            e @ (R::Held { .. } | R::Skipped { .. }) => BackupError::NoBase(e.to_string()),
            R::Gap {
                file,
                found,
                expected,
            } => BackupError::Damaged {
                file,
                reason: format!(
                    "the archived log has a gap: it starts at {found}, {expected} was expected"
                ),
            },
            other => BackupError::Local(other.to_string()),
        }
    }
}

/// A backup as listed: its manifest without the file lists.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Id.
    pub id: String,
    /// Region.
    pub region: String,
    /// `complete` (listed backups always are).
    pub status: &'static str,
    /// Start and end, Unix ms.
    pub started_ms: u64,
    /// See `started_ms`.
    pub finished_ms: u64,
    /// The snapshot's time (HLC wall ms): the earliest time it restores to.
    pub snapshot_ms: u64,
    /// The newest op archived with it, wall ms.
    pub covers_to_ms: u64,
    /// Files and bytes it names.
    pub files: usize,
    /// See `files`.
    pub bytes: u64,
    /// Keys per keyspace.
    pub keyspaces: BTreeMap<String, u64>,
}

impl Summary {
    /// The summary of a manifest.
    pub fn of(m: &Manifest) -> Summary {
        Summary {
            id: m.id.clone(),
            region: m.region.clone(),
            status: "complete",
            started_ms: m.started_ms,
            finished_ms: m.finished_ms,
            snapshot_ms: m.hlc.wall_ms(),
            covers_to_ms: m.hlc_max.wall_ms().max(m.hlc.wall_ms()),
            files: m.state.len() + m.segments.len(),
            bytes: m.bytes(),
            keyspaces: m.keyspaces.clone(),
        }
    }
}

/// A backup being taken.
#[derive(Clone, Debug, Serialize)]
pub struct Progress {
    /// Id.
    pub id: String,
    /// `running` or `failed`.
    pub status: &'static str,
    /// Bytes uploaded or found already stored.
    pub done_bytes: u64,
    /// Estimated bytes in all.
    pub total_bytes: u64,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a verification checked.
#[derive(Clone, Debug, Serialize)]
pub struct Verified {
    /// The backup.
    pub id: String,
    /// Files read whose size and SHA-256 matched.
    pub files: usize,
    /// Bytes read.
    pub bytes: u64,
    /// Snapshot entries loaded.
    pub entries: u64,
    /// Log records replayed.
    pub records: u64,
}

/// One region's backups.
pub struct Backups {
    /// The archive (and through it the target).
    pub archive: Arc<Archive>,
    reader: Reader<FjallBackend>,
    settings: BackupSettings,
    region: String,
    replica: Arc<crate::region::incarnation::Incarnation>,
    clock: WallClock,
    undo_ms: u64,
    /// One backup or prune at a time.
    lock: Arc<tokio::sync::Mutex<()>>,
    jobs: Mutex<BTreeMap<String, Progress>>,
    /// Tasks running backup work (backups, verifies, rewinds), aborted when
    /// the region stops: they hold the writer, which waits for them.
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

/// Wall-clock ms of now.
fn now(clock: &WallClock) -> u64 {
    clock.now_ms()
}

impl Backups {
    /// The backups of a region.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        archive: Arc<Archive>,
        reader: Reader<FjallBackend>,
        settings: BackupSettings,
        region: String,
        replica: Arc<crate::region::incarnation::Incarnation>,
        clock: WallClock,
        undo_ms: u64,
    ) -> Self {
        Self {
            archive,
            reader,
            settings,
            region,
            replica,
            clock,
            undo_ms,
            lock: Arc::new(tokio::sync::Mutex::new(())),
            jobs: Mutex::new(BTreeMap::new()),
            tasks: Mutex::new(Vec::new()),
        }
    }

    /// Runs `f` as a task the region's stop aborts (a backup cut short
    /// that way is never listed), so a request that goes away does not
    /// cancel it half way.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = T> + Send + 'static,
    ) -> tokio::task::JoinHandle<T> {
        let h = tokio::spawn(f);
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        tasks.retain(|t| !t.is_finished());
        tasks.push(h.abort_handle());
        h
    }

    /// Aborts every backup task (the region is stopping).
    pub fn abort_all(&self) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            t.abort();
        }
    }

    /// Removes scratch stores a verify left behind (it was stopped).
    pub fn sweep_scratch(&self) {
        let Some(data) = self.archive.log_dir.parent() else {
            return;
        };
        if let Ok(rd) = std::fs::read_dir(data) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with("verify-") {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }

    /// The target's URL (for status and errors).
    pub fn target_url(&self) -> &str {
        &self.archive.target.url
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Progress>> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a backup in the background; its id.
    pub fn start(self: &Arc<Self>) -> Result<String, BackupError> {
        let Ok(guard) = self.lock.clone().try_lock_owned() else {
            let running = self
                .jobs()
                .values()
                .find(|p| p.status == "running")
                .map(|p| format!("backup {}", p.id))
                .unwrap_or_else(|| "a prune, verify or rewind".into());
            return Err(BackupError::Running(running));
        };
        let id = format!(
            "{:013}-{}",
            now(&self.clock),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        self.jobs().insert(
            id.clone(),
            Progress {
                id: id.clone(),
                status: "running",
                done_bytes: 0,
                total_bytes: 0,
                error: None,
            },
        );
        let me = self.clone();
        let job = id.clone();
        self.spawn(async move {
            let r = me.create(&job).await;
            drop(guard);
            // Retention after every backup, however it was asked for.
            let rules = me.settings.keep_last > 0 || me.settings.keep_ms > 0;
            if r.is_ok()
                && rules
                && let Err(e) = me.prune_configured().await
            {
                tracing::error!(error = %e, "backup retention failed");
            }
            let mut jobs = me.jobs();
            match r {
                Ok(_) => {
                    jobs.remove(&job);
                    me.archive
                        .metrics()
                        .backup_last_success
                        .set(i64::try_from(now(&me.clock) / 1000).unwrap_or(0));
                }
                Err(e) => {
                    me.archive.metrics().backup_failures.inc();
                    tracing::error!(backup = %job, error = %e, "backup failed");
                    if let Some(p) = jobs.get_mut(&job) {
                        p.status = "failed";
                        p.error = Some(e.to_string());
                    }
                }
            }
            // Keep the last few failures to show; never grow without bound.
            while jobs.len() > 16 {
                let Some(k) = jobs.keys().next().cloned() else {
                    break;
                };
                jobs.remove(&k);
            }
        });
        Ok(id)
    }

    fn progress(&self, id: &str, done: u64, total: u64) {
        if let Some(p) = self.jobs().get_mut(id) {
            p.done_bytes = done;
            p.total_bytes = p.total_bytes.max(total);
        }
    }

    async fn create(&self, id: &str) -> Result<Manifest, BackupError> {
        let started_ms = now(&self.clock);
        // 1. The snapshot: a consistent view with its checkpoint.
        let reader = self.reader.clone();
        let snap = tokio::task::spawn_blocking(move || reader.transfer_snapshot())
            .await
            .map_err(|e| BackupError::Local(e.to_string()))?
            .map_err(|e| BackupError::Local(e.to_string()))?;
        let (vv, lsn, hlc) = (snap.vv.clone(), snap.lsn, snap.hlc);
        let estimate = self.reader.disk_bytes();
        self.progress(id, 0, estimate);
        // 2. The log up to now, archived.
        let synced = self.archive.sync(true).await?;
        let segments: Vec<SegmentRef> = synced
            .segments
            .clone()
            .into_iter()
            // Those holding a record after the snapshot's position.
            .filter(|s| s.end_lsn > lsn + 1)
            .collect();
        // The roll-forward must be whole: from the record after the
        // snapshot, each segment starting where the one before ended.
        let mut at = lsn + 1;
        for s in &segments {
            if s.first_lsn > at {
                return Err(BackupError::Local(format!(
                    "the archived log has a gap: {} starts at {}, {at} was expected",
                    s.file.name, s.first_lsn
                )));
            }
            at = at.max(s.end_lsn);
        }
        let mut done: u64 = segments.iter().map(|s| s.file.bytes).sum();
        self.progress(id, done, estimate + done);
        // 3. Chunks not stored yet.
        // A chunk is there when a file of its name and size is (its name is
        // its checksum; verify reads it whole).
        let have: BTreeMap<String, u64> = self
            .archive
            .target
            .list(&self.archive.name("state"))
            .await?
            .into_iter()
            .collect();
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        let tables = snap.tables();
        let chunker = tokio::task::spawn_blocking(move || {
            let mut c = Chunker::new(snap.inner(), tables);
            loop {
                match c.next_chunk() {
                    Ok(Some(ch)) => {
                        if tx.blocking_send(Ok(ch)).is_err() {
                            return BTreeMap::new();
                        }
                    }
                    Ok(None) => return c.counts,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return BTreeMap::new();
                    }
                }
            }
        });
        let mut state = Vec::new();
        while let Some(ch) = rx.recv().await {
            let ch = ch.map_err(|e| BackupError::Local(e.to_string()))?;
            let sha = sha256_hex(&ch.bytes);
            let name = self.archive.name(&chunk_name(&sha));
            let bytes = ch.bytes.len() as u64;
            if have.get(&name) != Some(&bytes) {
                self.archive
                    .target
                    .put(&name, Bytes::from(ch.bytes))
                    .await?;
            }
            done += bytes;
            self.progress(id, done, estimate + done);
            state.push(FileRef {
                name,
                bytes,
                sha256: sha,
            });
        }
        let counts = chunker
            .await
            .map_err(|e| BackupError::Local(e.to_string()))?;
        let keyspaces = counts
            .into_iter()
            .filter_map(|(t, n)| t.strip_prefix("k.").map(|k| (k.to_string(), n)))
            .collect();
        let hlc_max = segments.iter().map(|s| s.hlc_max).max().unwrap_or(hlc);
        let m = Manifest {
            format: manifest::FORMAT,
            id: id.to_string(),
            region: self.region.clone(),
            replica: self.replica.replica().to_string(),
            log_id: synced.log_id.clone(),
            started_ms,
            finished_ms: now(&self.clock),
            vv,
            lsn,
            hlc,
            hlc_max,
            keyspaces,
            state,
            segments,
        };
        // 4. The manifest, last: only now is the backup listed.
        let json = serde_json::to_vec_pretty(&m).map_err(|e| BackupError::Local(e.to_string()))?;
        self.archive
            .target
            .put(
                &self.archive.name(&format!("backups/{id}.json")),
                Bytes::from(json),
            )
            .await?;
        tracing::info!(backup = %id, files = m.state.len() + m.segments.len(), bytes = m.bytes(), "backup complete");
        Ok(m)
    }

    /// Takes a backup and waits for it.
    pub async fn create_now(self: &Arc<Self>) -> Result<Manifest, BackupError> {
        let id = self.start()?;
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            let failed = self.jobs().get(&id).cloned();
            match failed {
                Some(p) if p.status == "running" => continue,
                Some(p) => {
                    return Err(BackupError::Local(p.error.unwrap_or_default()));
                }
                None => return self.manifest(&id).await,
            }
        }
    }

    /// A running or failed backup's progress.
    pub fn job(&self, id: &str) -> Option<Progress> {
        self.jobs().get(id).cloned()
    }

    /// Backups being taken or failed lately.
    pub fn jobs_list(&self) -> Vec<Progress> {
        self.jobs().values().cloned().collect()
    }

    /// A complete backup's manifest.
    pub async fn manifest(&self, id: &str) -> Result<Manifest, BackupError> {
        read_manifest(&self.archive.target, &self.archive.folder, id).await
    }

    /// Every complete backup, oldest first.
    pub async fn list(&self) -> Result<Vec<Manifest>, BackupError> {
        list_manifests(&self.archive.target, &self.archive.folder).await
    }

    /// Manifests that do not read.
    pub async fn damaged(&self) -> Result<Vec<String>, BackupError> {
        damaged_manifests(&self.archive.target, &self.archive.folder).await
    }

    /// Checks every file a restore from this backup would read (its
    /// snapshot, and the archived log after it to the newest segment):
    /// size and SHA-256, then that the snapshot loads and the log replays,
    /// in memory.
    pub async fn verify(&self, id: &str) -> Result<Verified, BackupError> {
        // No prune or delete while the files are read.
        let _g = self.lock.lock().await;
        let m = self.manifest(id).await?;
        let t = self.archive.target.clone();
        // Replayed into a scratch store on disk beside the region's data,
        // not into memory: a backup can be larger than RAM.
        let scratch = self
            .archive
            .log_dir
            .with_file_name(format!("verify-{}", uuid::Uuid::new_v4().simple()));
        let result = async {
            let backend = Arc::new(
                FjallBackend::open(&scratch).map_err(|e| BackupError::Local(e.to_string()))?,
            );
            let mut r = meridian_core::backup::Restore::new(
                backend,
                None,
                meridian_core::backup::Filter::default(),
            );
            let segs = restore::roll_forward(&t, &self.archive.folder, &m, &mut r).await?;
            let (done, _) = tokio::task::block_in_place(|| r.finish())?;
            Ok::<_, BackupError>((segs, done))
        }
        .await;
        let _ = std::fs::remove_dir_all(&scratch);
        let (segs, done) = result?;
        Ok(Verified {
            id: id.to_string(),
            files: m.state.len() + segs.len(),
            bytes: m.state.iter().map(|f| f.bytes).sum::<u64>()
                + segs.iter().map(|s| s.file.bytes).sum::<u64>(),
            entries: done.entries,
            records: done.records,
        })
    }

    /// Takes a first backup of this log when it has none (a new data
    /// directory, a repaired log or a new incarnation starts a new log:
    /// restores and rewinds to its times need a backup of it), then one
    /// every `every_ms` (applying retention after each) until `stop`.
    pub async fn schedule(self: Arc<Self>, stop: crate::shutdown::Shutdown) {
        self.sweep_scratch();
        // Tried again every 30 s until the target answers.
        loop {
            let log = self.archive.log_id();
            let done = match self.list().await {
                Ok(all) if all.iter().any(|m| m.log_id == log) => true,
                Ok(_) => match self.create_now().await {
                    Ok(m) => {
                        tracing::info!(backup = %m.id, log = %log, "first backup of this log taken");
                        true
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "first backup of this log failed; trying again in 30 s");
                        false
                    }
                },
                Err(e) => {
                    tracing::error!(error = %e, "backup target: listing backups failed; trying again in 30 s");
                    false
                }
            };
            if done {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(30)) => {}
                _ = stop.cancelled() => return,
            }
        }
        let every = self.settings.every_ms;
        if every == 0 {
            return;
        }
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(every));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            match self.create_now().await {
                Ok(m) => tracing::info!(backup = %m.id, "scheduled backup taken"),
                Err(e) => tracing::error!(error = %e, "scheduled backup failed"),
            }
        }
    }
}
