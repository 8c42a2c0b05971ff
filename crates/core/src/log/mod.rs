//! The op log: Meridian's own write-ahead log, which is also the replication
//! queue (senders read ops from it) and, later, the point-in-time archive.
//!
//! # Layout
//! Segmented append-only files in one directory (see [`segment`]), each
//! record length-prefixed and CRC32C-checked (see [`record`]). Records are
//! numbered by [`Lsn`], contiguous from 1 across segments.
//!
//! # Durability
//! [`Log::append`] writes a whole group of ops with one write; [`Log::sync`]
//! makes everything appended so far durable with one `fdatasync`. The region's
//! writer thread appends every op that arrived while the previous sync ran and
//! then syncs once: group commit. Nobody is told "done" before the sync.
//! Creating a segment syncs the file and its directory.
//!
//! # Recovery
//! [`Log::open`] reads every segment. A torn tail (an unfinished write at the
//! end of the last segment: nothing valid after it) is cut off. A damaged
//! record anywhere else stops the open with [`LogError::Corrupt`] naming the
//! segment and offset; only `repair = true` (`meridian serve --repair-log`)
//! cuts the log there, dropping everything after.
//!
//! Why past ~400 lines: the `Log` type: append, sync, the recovery scan,
//! segment rotation and retention share its open segment and its index (the
//! index and the cursor have files of their own).

mod cursor;
mod index;
pub mod record;
pub mod runs;
pub mod segment;

pub use cursor::LogCursor;
pub use index::{LogIndex, SegmentOrigins, shipping_start};
pub use runs::Runs;

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use meridian_crdt::codec;
use meridian_crdt::{ReplicaId, Seq};

use crate::op::Op;
use segment::{ScanEnd, SegmentMeta};

/// Log sequence number: the position of a record in this region's log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

/// Errors of the op log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An I/O call failed.
    #[error("op log I/O on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Damage before the tail: the region must not start on it.
    #[error(
        "op log corrupt in {segment} at offset {offset}: {reason}; refusing to start (meridian serve --repair-log truncates the log there, dropping everything after)"
    )]
    Corrupt {
        /// The segment file.
        segment: PathBuf,
        /// Byte offset of the damage.
        offset: u64,
        /// What was wrong.
        reason: &'static str,
    },
    /// A record passed its checksum but is not an op this build can read.
    #[error("op log record {lsn:?} in {segment} does not decode: {source}")]
    Decode {
        /// The segment file.
        segment: PathBuf,
        /// The record.
        lsn: Lsn,
        /// Why.
        source: codec::DecodeError,
    },
    /// An op too large to log.
    #[error("op of {len} bytes is over the {max}-byte record limit")]
    TooLarge {
        /// Encoded size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Segments do not follow each other.
    #[error(
        "op log segments are not contiguous: {segment} starts at {found:?}, expected {expected:?}"
    )]
    Gap {
        /// The segment that does not fit.
        segment: PathBuf,
        /// Its first LSN.
        found: Lsn,
        /// The LSN expected.
        expected: Lsn,
    },
}

/// The file in the log directory naming its archive folder.
const LOG_ID_FILE: &str = "log-id";

/// The id of the log in `log_dir`, made when there is none. A new log
/// (a new data directory, a restore, a repaired log) gets a new id, so
/// positions that restart never mix with archived ones.
pub fn log_id(log_dir: &Path) -> std::io::Result<String> {
    let p = log_dir.join(LOG_ID_FILE);
    match std::fs::read_to_string(&p) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(log_dir)?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let tmp = log_dir.join("log-id.tmp");
    std::fs::write(&tmp, &id)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &p)?;
    std::fs::File::open(log_dir)?.sync_all()?;
    Ok(id)
}

/// Forgets the log's id (before `--repair-log` rewrites positions, which
/// may then be issued again): the next archive run starts a new folder.
pub fn forget_log_id(log_dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(log_dir.join(LOG_ID_FILE)) {
        Ok(()) => File::open(log_dir)?.sync_all(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Tuning of the op log.
#[derive(Clone, Debug)]
pub struct LogOptions {
    /// Roll to a new segment past this many bytes.
    pub segment_bytes: u64,
    /// Keep at most this many bytes of sealed segments (0 = no limit).
    pub retention_bytes: u64,
    /// Drop sealed segments whose newest op is older than this (0 = no limit).
    pub retention_ms: u64,
    /// When set, keep every segment ending above this LSN: the backup
    /// archiver raises it as segments reach the backup target, so nothing
    /// leaves the disk before it is archived.
    pub pin: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
            retention_bytes: 4 << 30,
            retention_ms: 7 * 24 * 3600 * 1000,
            pin: None,
        }
    }
}

/// What recovery found and did.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Records read.
    pub records: u64,
    /// Bytes of torn tail cut off, with the segment and offset.
    pub torn: Option<(PathBuf, u64, u64)>,
    /// Damage truncated by `repair`, with what was dropped.
    pub repaired: Option<(PathBuf, u64)>,
}

/// The op log of one region. Owned by the region's writer thread.
pub struct Log {
    dir: PathBuf,
    opts: LogOptions,
    sealed: Vec<SegmentMeta>,
    /// The sealed segments' part of [`Log::index`], shared until it changes.
    sealed_index: std::sync::Arc<Vec<SegmentOrigins>>,
    active: SegmentMeta,
    file: File,
    /// Length of the active segment's file: past its last record it is
    /// zeros, written ahead ([`PREALLOCATE`]).
    allocated: u64,
    buf: Vec<u8>,
    scratch: Vec<u8>,
    runs: Runs,
}

/// How far ahead of its last record the active segment is filled with
/// zeros. A group written into bytes that already exist on disk changes
/// no file size, so its `fdatasync` writes the data alone, not the inode
/// too (measured: 0.12 against 0.19 ms per sync on ext4, docs/benchmarks.md);
/// once per this many bytes a group's sync also writes the zeros ahead.
pub const PREALLOCATE: u64 = 1 << 20;

impl Log {
    /// Opens (or creates) the log in `dir`, recovering it as described in
    /// the module docs, and hands every record to `replay` in order.
    pub fn open(
        dir: &Path,
        opts: LogOptions,
        repair: bool,
        mut replay: impl FnMut(Lsn, Op),
    ) -> Result<(Log, Recovery), LogError> {
        std::fs::create_dir_all(dir).map_err(|source| LogError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut names: Vec<(Lsn, PathBuf)> = std::fs::read_dir(dir)
            .map_err(|source| LogError::Io {
                path: dir.to_path_buf(),
                source,
            })?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                segment::parse_name(&name).map(|lsn| (lsn, e.path()))
            })
            .collect();
        names.sort();

        let mut recovery = Recovery::default();
        let mut runs = Runs::default();
        let mut metas: Vec<SegmentMeta> = Vec::new();
        let mut expected = names.first().map(|(l, _)| *l).unwrap_or(Lsn(1));
        let mut stop_after: Option<usize> = None;
        let mut cut_short = false;
        for (i, (first, path)) in names.iter().enumerate() {
            let is_last = i + 1 == names.len();
            if *first != expected {
                return Err(LogError::Gap {
                    segment: path.clone(),
                    found: *first,
                    expected,
                });
            }
            let Some(loaded) = segment::load(path, *first)? else {
                // A segment whose creation was cut short holds nothing. Only
                // the newest can be like that.
                if !is_last {
                    return Err(LogError::Corrupt {
                        segment: path.clone(),
                        offset: 0,
                        reason: "segment header missing",
                    });
                }
                segment::remove(path)?;
                cut_short = true;
                break;
            };
            let mut meta = SegmentMeta {
                path: path.clone(),
                first_lsn: *first,
                records: 0,
                bytes: segment::HEADER_LEN as u64,
                max_wall_ms: 0,
                origins: BTreeMap::new(),
                format: loaded.format,
            };
            let end = segment::scan(&loaded, |payload, framed| {
                let lsn = Lsn(meta.first_lsn.0 + meta.records);
                let op: Op =
                    codec::decode_trusted(payload, record::MAX_RECORD).map_err(|source| {
                        LogError::Decode {
                            segment: path.clone(),
                            lsn,
                            source,
                        }
                    })?;
                meta.note(&op.dot.replica, op.dot.seq, op.hlc.wall_ms(), framed);
                runs.note(&op.dot.replica, op.dot.seq);
                replay(lsn, op);
                Ok(())
            })?;
            recovery.records += meta.records;
            match end {
                ScanEnd::Clean if !is_last && meta.bytes < loaded.bytes.len() as u64 => {
                    // Sealed with the zeros written ahead still on it (the
                    // process died as it rolled): cut them off, so archives
                    // hold records only.
                    segment::truncate(path, meta.bytes)?;
                }
                ScanEnd::Clean => {}
                ScanEnd::TornTail { offset } if is_last => {
                    // Past the written part are the zeros written ahead.
                    let dropped = (segment::data_end(&loaded.bytes) as u64).saturating_sub(offset);
                    tracing::warn!(segment = %path.display(), offset, dropped, "op log: cutting torn tail");
                    segment::truncate(path, offset)?;
                    recovery.torn = Some((path.clone(), offset, dropped));
                }
                ScanEnd::TornTail { offset } | ScanEnd::Corrupt { offset, .. } if repair => {
                    tracing::error!(segment = %path.display(), offset, "op log: --repair-log truncating damaged log");
                    segment::truncate(path, offset)?;
                    recovery.repaired = Some((path.clone(), offset));
                    stop_after = Some(i);
                }
                ScanEnd::TornTail { offset } => {
                    return Err(LogError::Corrupt {
                        segment: path.clone(),
                        offset,
                        reason: "record cut short before the last segment",
                    });
                }
                ScanEnd::Corrupt { offset, reason } => {
                    return Err(LogError::Corrupt {
                        segment: path.clone(),
                        offset,
                        reason,
                    });
                }
            }
            expected = meta.end_lsn();
            metas.push(meta);
            if stop_after.is_some() {
                break;
            }
        }
        if let Some(i) = stop_after {
            for (_, path) in &names[i + 1..] {
                tracing::error!(segment = %path.display(), "op log: --repair-log removing segment after the damage");
                segment::remove(path)?;
            }
        }

        // A version 1 segment is never appended to: new records go to a
        // version 2 segment after it (or in its place, when it is empty).
        // Nor is a segment whose successor's creation was cut short: it was
        // sealed (and may be archived as such), so the successor is made
        // again.
        if let Some(last) = metas.last()
            && (last.format == record::Format::V1 || (cut_short && last.records > 0))
        {
            if last.records == 0 {
                segment::remove(&last.path)?;
                metas.pop();
            }
            let (file, meta) = segment::create(dir, expected)?;
            metas.push(meta);
            drop(file);
        }
        let (active, file) = match metas.pop() {
            Some(meta) => {
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&meta.path)
                    .map_err(|source| LogError::Io {
                        path: meta.path.clone(),
                        source,
                    })?;
                (meta, file)
            }
            None => {
                let (file, meta) = segment::create(dir, expected)?;
                (meta, file)
            }
        };
        let allocated = file
            .metadata()
            .map_err(|source| LogError::Io {
                path: active.path.clone(),
                source,
            })?
            .len();
        let sealed_index = std::sync::Arc::new(
            metas
                .iter()
                .map(|s| (s.first_lsn, s.origins.clone()))
                .collect(),
        );
        Ok((
            Log {
                dir: dir.to_path_buf(),
                opts,
                sealed_index,
                sealed: metas,
                active,
                file,
                allocated,
                buf: Vec::new(),
                scratch: Vec::new(),
                runs,
            },
            recovery,
        ))
    }

    /// Appends a group of ops with one write (not yet durable: call
    /// [`Log::sync`]). Returns the LSN of the first.
    ///
    /// Append a group only once everything appended before is synced (the
    /// writer does): the records name the offset their group began at, and
    /// recovery takes that offset as synced. Groups appended without a sync
    /// between them only make recovery stricter (a torn tail of them reads
    /// as corruption).
    pub fn append<'a>(&mut self, ops: impl IntoIterator<Item = &'a Op>) -> Result<Lsn, LogError> {
        self.buf.clear();
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut notes = Vec::new();
        let mut starts = Vec::new();
        for op in ops {
            scratch.clear();
            scratch.push(codec::FORMAT_VERSION);
            codec::encode_into(op, &mut scratch).map_err(|e| LogError::Io {
                path: self.active.path.clone(),
                source: std::io::Error::other(e),
            })?;
            if scratch.len() > record::MAX_RECORD {
                return Err(LogError::TooLarge {
                    len: scratch.len(),
                    max: record::MAX_RECORD,
                });
            }
            let start = self.buf.len();
            starts.push(start);
            // The group offset is set below, once the segment is known.
            record::frame(&scratch, 0, &mut self.buf);
            notes.push((
                op.dot.replica.clone(),
                op.dot.seq,
                op.hlc.wall_ms(),
                (self.buf.len() - start) as u64,
            ));
        }
        self.scratch = scratch;
        if notes.is_empty() {
            return Ok(self.active.end_lsn());
        }
        if self.active.records > 0
            && self.active.bytes + self.buf.len() as u64 > self.opts.segment_bytes
        {
            self.roll()?;
        }
        // Every record names where its group begins: everything before that
        // offset was synced before this group was appended (see record.rs).
        let group = self.active.bytes;
        for s in &starts {
            record::set_group(&mut self.buf[*s..], group);
        }
        let first = self.active.end_lsn();
        let end = self.active.bytes + self.buf.len() as u64;
        if end > self.allocated {
            self.preallocate(end)?;
        }
        self.file
            .write_all_at(&self.buf, self.active.bytes)
            .map_err(|source| LogError::Io {
                path: self.active.path.clone(),
                source,
            })?;
        for (origin, seq, wall, framed) in notes {
            self.runs.note(&origin, seq);
            self.active.note(&origin, seq, wall, framed);
        }
        Ok(first)
    }

    /// Makes everything appended so far durable (one `fdatasync`).
    pub fn sync(&mut self) -> Result<(), LogError> {
        self.file.sync_data().map_err(|source| LogError::Io {
            path: self.active.path.clone(),
            source,
        })
    }

    /// A handle on the segment being written, to `fdatasync` it from another
    /// thread while this one goes on (pipelined group commit). A sync through
    /// it makes durable everything appended before the sync began.
    pub fn sync_handle(&self) -> Result<File, LogError> {
        self.file.try_clone().map_err(|source| LogError::Io {
            path: self.active.path.clone(),
            source,
        })
    }

    /// Seals the segment being written, if it holds any record, so that
    /// everything logged so far is in sealed (immutable) segments: the
    /// backup archiver uploads only those. Returns one past the last record.
    pub fn seal_active(&mut self) -> Result<Lsn, LogError> {
        if self.active.records > 0 {
            self.roll()?;
        }
        Ok(self.end_lsn())
    }

    /// Records in the segment being written.
    pub fn active_records(&self) -> u64 {
        self.active.records
    }

    /// Fills the active segment with zeros from its allocated end to
    /// [`PREALLOCATE`] past `end` (not past the segment size, unless `end`
    /// is). Made durable by the next sync, with the group that needed it.
    fn preallocate(&mut self, end: u64) -> Result<(), LogError> {
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        let target = (end + PREALLOCATE).min(end.max(self.opts.segment_bytes));
        let mut at = self.allocated;
        while at < target {
            let n = (target - at).min(ZEROS.len() as u64);
            self.file
                .write_all_at(&ZEROS[..n as usize], at)
                .map_err(|source| LogError::Io {
                    path: self.active.path.clone(),
                    source,
                })?;
            at += n;
        }
        self.allocated = target;
        Ok(())
    }

    fn roll(&mut self) -> Result<(), LogError> {
        // The zeros written ahead go: a sealed segment holds its records
        // only (the sync below makes the cut durable with them).
        if self.allocated > self.active.bytes {
            self.file
                .set_len(self.active.bytes)
                .map_err(|source| LogError::Io {
                    path: self.active.path.clone(),
                    source,
                })?;
        }
        self.sync()?;
        let (file, meta) = segment::create(&self.dir, self.active.end_lsn())?;
        let old = std::mem::replace(&mut self.active, meta);
        self.file = file;
        self.allocated = segment::HEADER_LEN as u64;
        self.sealed.push(old);
        self.reindex();
        Ok(())
    }

    fn reindex(&mut self) {
        self.sealed_index = std::sync::Arc::new(
            self.sealed
                .iter()
                .map(|s| (s.first_lsn, s.origins.clone()))
                .collect(),
        );
    }

    /// LSN one past the last appended record.
    pub fn end_lsn(&self) -> Lsn {
        self.active.end_lsn()
    }

    /// LSN of the oldest retained record.
    pub fn start_lsn(&self) -> Lsn {
        self.sealed
            .first()
            .map(|s| s.first_lsn)
            .unwrap_or(self.active.first_lsn)
    }

    /// All segments, oldest first (the last is the one being written).
    pub fn segments(&self) -> impl Iterator<Item = &SegmentMeta> {
        self.sealed.iter().chain(std::iter::once(&self.active))
    }

    /// The highest seq of `origin` in the log.
    pub fn last_seq(&self, origin: &ReplicaId) -> Option<Seq> {
        self.runs.last(origin)
    }

    /// Total bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.segments().map(|s| s.bytes).sum()
    }

    /// Per origin, the lowest seq from which every op up to the highest
    /// one is in the log: retention removed what is below the oldest
    /// segment, and ops that came by state transfer were never logged.
    pub fn floors(&self) -> BTreeMap<ReplicaId, Seq> {
        let mut out: BTreeMap<ReplicaId, Seq> = BTreeMap::new();
        for s in self.segments() {
            for (r, (lo, _)) in &s.origins {
                out.entry(r.clone())
                    .and_modify(|f| *f = (*f).min(*lo))
                    .or_insert(*lo);
            }
        }
        self.runs.floors(&out)
    }

    /// What replication needs to know about the log's contents: where each
    /// segment starts and which origins' seqs it holds. Cheap: the sealed
    /// segments' part is shared until it changes.
    pub fn index(&self) -> LogIndex {
        LogIndex {
            sealed: self.sealed_index.clone(),
            active_first: self.active.first_lsn,
            active_origins: self.active.origins.clone(),
            end: self.end_lsn(),
            runs: self.runs.clone(),
        }
    }

    /// Drops sealed segments past the retention limits, but only those
    /// wholly below `checkpoint` (the state store has made them durable).
    /// Returns how many were removed.
    pub fn enforce_retention(&mut self, checkpoint: Lsn, now_ms: u64) -> Result<usize, LogError> {
        let mut removed = 0;
        while let Some(oldest) = self.sealed.first() {
            if oldest.end_lsn() > checkpoint {
                break;
            }
            if let Some(pin) = &self.opts.pin
                && oldest.end_lsn().0 > pin.load(std::sync::atomic::Ordering::Acquire)
            {
                break;
            }

            let total = self.bytes();
            let over_size = self.opts.retention_bytes > 0 && total > self.opts.retention_bytes;
            let too_old = self.opts.retention_ms > 0
                && oldest.max_wall_ms.saturating_add(self.opts.retention_ms) < now_ms;
            if !(over_size || too_old) {
                break;
            }
            segment::remove(&oldest.path)?;
            self.sealed.remove(0);
            removed += 1;
        }
        if removed > 0 {
            self.reindex();
        }
        Ok(removed)
    }

    /// Reads the ops with LSN in `[from, end_lsn)` in order, from disk.
    pub fn read_from(&self, from: Lsn, mut f: impl FnMut(Lsn, Op) -> bool) -> Result<(), LogError> {
        for meta in self.segments() {
            if meta.end_lsn() <= from {
                continue;
            }
            let Some(loaded) = segment::load(&meta.path, meta.first_lsn)? else {
                continue;
            };
            let mut lsn = meta.first_lsn;
            let mut stop = false;
            segment::scan(&loaded, |payload, _| {
                if !stop && lsn >= from && lsn < meta.end_lsn() {
                    let op: Op =
                        codec::decode_trusted(payload, record::MAX_RECORD).map_err(|source| {
                            LogError::Decode {
                                segment: meta.path.clone(),
                                lsn,
                                source,
                            }
                        })?;
                    stop = !f(lsn, op);
                }
                lsn.0 += 1;
                Ok(())
            })?;
            if stop {
                break;
            }
        }
        Ok(())
    }
}
