//! The continuous log archive: every sealed op log segment is uploaded to
//! the backup target (segment first, then its `.seg.json` record, which
//! marks it stored whole), and the log's retention pin is raised only past
//! what is stored, so no segment leaves the disk before it is archived.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use meridian_core::backup::manifest::{FileRef, SegmentRef, segment_name, sha256_hex};
use meridian_core::log::{record, segment};
use meridian_core::{Lsn, Op};
use meridian_crdt::{Hlc, codec};

use meridian_core::log::log_id;

use super::BackupError;
use super::target::Target;
use crate::region::WriterHandle;

/// Segment files in `dir`, oldest first.
fn local_segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            segment::parse_name(&name).map(|l| (l.0, e.path()))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Reads a sealed segment and describes it: checksum, positions, HLCs.
/// Checks that it holds exactly the records up to the next segment.
pub fn describe(name: &str, first: u64, end: u64, bytes: &[u8]) -> Result<SegmentRef, String> {
    let loaded = segment::from_bytes(bytes.to_vec(), Lsn(first))
        .map_err(str::to_string)?
        .ok_or("segment has no header")?;
    let (mut n, mut lo, mut hi) = (0u64, Hlc::default(), Hlc::default());
    let scanned = segment::scan(&loaded, |payload, _| {
        if let Ok(op) = codec::decode::<Op>(payload, record::MAX_RECORD) {
            lo = if n == 0 { op.hlc } else { lo.min(op.hlc) };
            hi = hi.max(op.hlc);
        }
        n += 1;
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    if !matches!(scanned, segment::ScanEnd::Clean) || first + n != end {
        return Err(format!(
            "sealed segment holds {n} records from {first}, the next one starts at {end} ({scanned:?})"
        ));
    }
    Ok(SegmentRef {
        file: FileRef {
            name: name.to_string(),
            bytes: bytes.len() as u64,
            sha256: sha256_hex(bytes),
        },
        first_lsn: first,
        end_lsn: end,
        hlc_min: lo,
        hlc_max: hi,
    })
}

/// One region's archive in its target.
pub struct Archive {
    /// The target.
    pub target: Target,
    /// The region's folder in the target (`<region>`).
    pub folder: String,
    /// The region's op log directory.
    pub log_dir: PathBuf,
    /// The log's archive id.
    pub log_id: String,
    pin: Arc<AtomicU64>,
    writer: WriterHandle,
    /// Archived segments of this log by first position: `None` until its
    /// record is fetched.
    known: tokio::sync::Mutex<Option<BTreeMap<u64, Option<SegmentRef>>>>,
}

impl Archive {
    /// The archive of the log in `log_dir`; `pin` is the log's retention pin.
    pub fn new(
        target: Target,
        folder: String,
        log_dir: PathBuf,
        pin: Arc<AtomicU64>,
        writer: WriterHandle,
    ) -> std::io::Result<Archive> {
        let log_id = log_id(&log_dir)?;
        Ok(Archive {
            target,
            folder,
            log_dir,
            log_id,
            pin,
            writer,
            known: tokio::sync::Mutex::new(None),
        })
    }

    /// A name in the region's folder.
    pub fn name(&self, rel: &str) -> String {
        format!("{}/{rel}", self.folder)
    }

    /// Uploads every sealed segment not yet archived (sealing the segment
    /// being written first when `seal`), then raises the retention pin.
    /// Returns the archived segments of this log, oldest first.
    pub async fn sync(&self, seal: bool) -> Result<Vec<SegmentRef>, BackupError> {
        let mut guard = self.known.lock().await;
        if guard.is_none() {
            let dir = self.name(&format!("wal/{}", self.log_id));
            let listed = self.target.list(&dir).await?;
            let mut known = BTreeMap::new();
            for (name, _) in listed {
                if let Some(rest) = name.strip_suffix(".seg.json")
                    && let Some(first) = rest.rsplit('/').next()
                    && let Ok(first) = first.parse::<u64>()
                {
                    known.insert(first, None);
                }
            }
            *guard = Some(known);
        }
        let known = guard.as_mut().expect("just filled");
        if seal {
            self.writer
                .seal()
                .await
                .map_err(|_| BackupError::Stopped)?
                .map_err(|e| BackupError::Local(e.to_string()))?;
        }
        let dir = self.log_dir.clone();
        let local = tokio::task::spawn_blocking(move || local_segments(&dir))
            .await
            .map_err(|e| BackupError::Local(e.to_string()))?
            .map_err(|e| BackupError::Local(format!("listing the op log: {e}")))?;
        // Every segment but the newest is sealed and never changes again.
        let mut pin = local.last().map(|(l, _)| *l).unwrap_or(0);
        for pair in local.windows(2) {
            let ((first, path), (end, _)) = (&pair[0], &pair[1]);
            if known.contains_key(first) {
                continue;
            }
            let path = path.clone();
            let bytes = match tokio::task::spawn_blocking(move || std::fs::read(path)).await {
                Ok(Ok(b)) => b,
                // Removed meanwhile: it was archived by an earlier run
                // (retention waits for the pin), or never will be.
                _ => {
                    pin = pin.min(*first);
                    break;
                }
            };
            let name = self.name(&segment_name(&self.log_id, *first));
            let r = describe(&name, *first, *end, &bytes).map_err(|reason| {
                BackupError::Local(format!("op log segment {first}: {reason}"))
            })?;
            self.target.put(&name, Bytes::from(bytes)).await?;
            let json = serde_json::to_vec_pretty(&r).unwrap_or_default();
            self.target
                .put(&format!("{name}.json"), Bytes::from(json))
                .await?;
            known.insert(*first, Some(r));
        }
        // The pin: the first local segment not archived (or the active one).
        for (first, _) in &local {
            if !known.contains_key(first) {
                pin = pin.min(*first);
                break;
            }
        }
        self.pin.fetch_max(pin, Ordering::AcqRel);
        let mut out = Vec::with_capacity(known.len());
        for (first, r) in known.iter_mut() {
            if r.is_none() {
                let name = self.name(&format!("{}.json", segment_name(&self.log_id, *first)));
                let bytes = self.target.get(&name).await?;
                let parsed: SegmentRef =
                    serde_json::from_slice(&bytes).map_err(|e| BackupError::Damaged {
                        file: name.clone(),
                        reason: e.to_string(),
                    })?;
                *r = Some(parsed);
            }
            if let Some(r) = r {
                out.push(r.clone());
            }
        }
        Ok(out)
    }

    /// Runs [`Archive::sync`] every `every` (sealing the segment being
    /// written each time, when it holds records) until `stop`.
    pub async fn run(
        self: Arc<Self>,
        every: std::time::Duration,
        mut stop: crate::shutdown::Shutdown,
    ) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait() => return,
            }
            if let Err(e) = self.sync(true).await {
                tracing::warn!(error = %e, "backup: archiving the op log failed; trying again later");
            }
        }
    }

    /// Forgets what is known so the next sync lists the target again
    /// (after files were deleted from it).
    pub async fn forget(&self) {
        *self.known.lock().await = None;
    }
}
