//! The continuous log archive: every sealed op log segment is uploaded to
//! the backup target (segment first, then its `.seg.json` record, which
//! marks it stored whole), and the log's retention pin is raised only past
//! what is stored, so no segment leaves the disk before it is archived.
//!
//! Why past ~400 lines: one loop: upload sealed segments, then raise the
//! retention pin.

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
        if let Ok(op) = codec::decode_trusted::<Op>(payload, record::MAX_RECORD) {
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

/// What the archive knows of one log: its archived segments by first
/// position (`None` until the record is fetched), and which of them were
/// checked against the local file.
#[derive(Default)]
struct Known {
    log_id: String,
    segments: BTreeMap<u64, Option<SegmentRef>>,
    checked: std::collections::BTreeSet<u64>,
    listed: bool,
    /// Segments ending at or below this were archived and then removed by
    /// retention in the target (below every backup): not uploaded again.
    floor: u64,
}

/// One region's archive in its target.
pub struct Archive {
    /// The target.
    pub target: Target,
    /// The region's folder in the target (`<region>`).
    pub folder: String,
    /// The region's op log directory.
    pub log_dir: PathBuf,
    pin: Arc<AtomicU64>,
    writer: WriterHandle,
    known: tokio::sync::Mutex<Known>,
    /// The current log id, readable without waiting for a sync.
    current: std::sync::Mutex<String>,
    metrics: Arc<crate::metrics::Metrics>,
}

/// What one archive run found.
pub struct Synced {
    /// Every archived segment of the current log, oldest first.
    pub segments: Vec<SegmentRef>,
    /// The log id they are under.
    pub log_id: String,
}

/// A local segment's bytes, read off the async threads; `None` when it is
/// gone (any other error is one).
async fn read_local(path: &Path) -> Result<Option<Vec<u8>>, BackupError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || match std::fs::read(&path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(BackupError::Local(format!("{}: {e}", path.display()))),
    })
    .await
    .map_err(|e| BackupError::Local(e.to_string()))?
}

impl Archive {
    /// The archive of the log in `log_dir`; `pin` is the log's retention pin.
    pub fn new(
        target: Target,
        folder: String,
        log_dir: PathBuf,
        pin: Arc<AtomicU64>,
        writer: WriterHandle,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> std::io::Result<Archive> {
        let id = log_id(&log_dir)?;
        Ok(Archive {
            target,
            folder,
            log_dir,
            pin,
            writer,
            known: tokio::sync::Mutex::new(Known {
                log_id: id.clone(),
                ..Known::default()
            }),
            current: std::sync::Mutex::new(id),
            metrics,
        })
    }

    /// The region's metrics.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// The current log's archive id.
    pub fn log_id(&self) -> String {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// A name in the region's folder.
    pub fn name(&self, rel: &str) -> String {
        format!("{}/{rel}", self.folder)
    }

    async fn record(&self, log: &str, first: u64) -> Result<SegmentRef, BackupError> {
        let name = self.name(&format!("{}.json", segment_name(log, first)));
        let bytes = self.target.get(&name).await?;
        serde_json::from_slice(&bytes).map_err(|e| BackupError::Damaged {
            file: name,
            reason: e.to_string(),
        })
    }

    /// Uploads every sealed segment not yet archived (sealing the segment
    /// being written first when `seal`), then raises the retention pin.
    ///
    /// A local segment whose position is archived with another end, size
    /// or checksum means the log was rolled back (a restored disk or VM
    /// snapshot) and is issuing positions again: the log gets a new id and
    /// is archived afresh under it, never mixed with the old one.
    ///
    /// With `seal`, every record logged before the call is archived when it
    /// returns `Ok`.
    pub async fn sync(&self, seal: bool) -> Result<Synced, BackupError> {
        let mut k = self.known.lock().await;
        let sealed_end = if seal {
            Some(
                self.writer
                    .seal()
                    .await
                    .map_err(|_| BackupError::Stopped)?
                    .map_err(|e| BackupError::Local(e.to_string()))?,
            )
        } else {
            None
        };
        'fresh: loop {
            if !k.listed {
                let dir = self.name(&format!("wal/{}", k.log_id));
                let mut segments = BTreeMap::new();
                for (name, _) in self.target.list(&dir).await? {
                    if let Some(rest) = name.strip_suffix(".seg.json")
                        && let Some(first) = rest.rsplit('/').next()
                        && let Ok(first) = first.parse::<u64>()
                    {
                        segments.insert(first, None);
                    }
                }
                k.segments = segments;
                k.checked.clear();
                k.listed = true;
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
                let log = k.log_id.clone();
                if *end <= k.floor {
                    continue;
                }
                // A new segment overlapping an archived one: positions
                // issued again.
                let overlaps = if k.segments.contains_key(first) {
                    false
                } else {
                    let next_starts_inside = k
                        .segments
                        .range(first + 1..)
                        .next()
                        .is_some_and(|(n, _)| n < end);
                    let prev = k.segments.range(..*first).next_back().map(|(p, _)| *p);
                    let prev_ends_inside = match prev {
                        Some(p) => {
                            let r = match k.segments.get(&p).cloned().flatten() {
                                Some(r) => r,
                                None => self.record(&log, p).await?,
                            };
                            let inside = r.end_lsn > *first;
                            k.segments.insert(p, Some(r));
                            inside
                        }
                        None => false,
                    };
                    next_starts_inside || prev_ends_inside
                };
                if overlaps {
                    self.fork(&mut k, *first, "overlaps archived ones")?;
                    continue 'fresh;
                }
                if k.segments.contains_key(first) {
                    if k.checked.contains(first) {
                        continue;
                    }
                    let archived = match k.segments.get(first).cloned().flatten() {
                        Some(r) => r,
                        None => self.record(&log, *first).await?,
                    };
                    k.segments.insert(*first, Some(archived.clone()));
                    let Some(bytes) = read_local(path).await? else {
                        pin = pin.min(*first);
                        break;
                    };
                    let same = archived.end_lsn == *end
                        && archived.file.bytes == bytes.len() as u64
                        && archived.file.sha256 == sha256_hex(&bytes);
                    if !same {
                        self.fork(&mut k, *first, "differs from its archived copy")?;
                        continue 'fresh;
                    }
                    k.checked.insert(*first);
                    continue;
                }
                let Some(bytes) = read_local(path).await? else {
                    // Removed meanwhile: retention waits for the pin, so
                    // only a segment no archive run ever saw (before the
                    // target was configured) can be gone.
                    pin = pin.min(*first);
                    break;
                };
                let name = self.name(&segment_name(&log, *first));
                let r = describe(&name, *first, *end, &bytes).map_err(|reason| {
                    BackupError::Local(format!("op log segment {first}: {reason}"))
                })?;
                self.target.put(&name, Bytes::from(bytes)).await?;
                let json = serde_json::to_vec_pretty(&r).unwrap_or_default();
                self.target
                    .put(&format!("{name}.json"), Bytes::from(json))
                    .await?;
                k.segments.insert(*first, Some(r));
                k.checked.insert(*first);
            }
            // The pin: the first local segment not archived (or the active one).
            for (i, (first, _)) in local.iter().enumerate() {
                let end = local.get(i + 1).map(|(n, _)| *n).unwrap_or(u64::MAX);
                if end > k.floor && !k.segments.contains_key(first) {
                    pin = pin.min(*first);
                    break;
                }
            }
            self.pin.fetch_max(pin, Ordering::AcqRel);
            let lag: u64 = local
                .iter()
                .filter(|(first, _)| *first >= pin)
                .filter_map(|(_, p)| std::fs::metadata(p).ok())
                .map(|m| m.len())
                .sum();
            self.metrics
                .archive_lag_bytes
                .set(i64::try_from(lag).unwrap_or(i64::MAX));
            let log = k.log_id.clone();
            let mut out = Vec::with_capacity(k.segments.len());
            let firsts: Vec<u64> = k.segments.keys().copied().collect();
            for first in firsts {
                let r = match k.segments.get(&first).cloned().flatten() {
                    Some(r) => r,
                    None => {
                        let r = self.record(&log, first).await?;
                        k.segments.insert(first, Some(r.clone()));
                        r
                    }
                };
                out.push(r);
            }
            if let Some(end) = sealed_end {
                let archived_end = out.last().map(|r| r.end_lsn).unwrap_or(0);
                let logged = end.0 > local.first().map(|(f, _)| *f).unwrap_or(1);
                if logged && archived_end < end.0 {
                    return Err(BackupError::Local(format!(
                        "the op log is archived only up to position {archived_end}, records up to {} were sealed",
                        end.0
                    )));
                }
            }
            return Ok(Synced {
                segments: out,
                log_id: log,
            });
        }
    }

    /// The local log reissued archived positions (`first` shows it): it
    /// goes on under a new id, archived afresh, apart from the old one.
    fn fork(&self, k: &mut Known, first: u64, how: &str) -> Result<(), BackupError> {
        let new = uuid::Uuid::new_v4().simple().to_string();
        tracing::error!(old = %k.log_id, new = %new, segment = first, "op log: a local segment {how} (the disk was rolled back?): archiving the log afresh under a new id");
        self.rotate(&new)?;
        *k = Known {
            log_id: new.clone(),
            ..Known::default()
        };
        *self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = new;
        Ok(())
    }

    /// Writes a new log id into the log directory (durably).
    fn rotate(&self, new: &str) -> Result<(), BackupError> {
        let err = |e: std::io::Error| BackupError::Local(format!("op log id: {e}"));
        let tmp = self.log_dir.join("log-id.tmp");
        std::fs::write(&tmp, new).map_err(err)?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(err)?;
        std::fs::rename(&tmp, self.log_dir.join("log-id")).map_err(err)?;
        std::fs::File::open(&self.log_dir)
            .and_then(|d| d.sync_all())
            .map_err(err)
    }

    /// Runs [`Archive::sync`] every `every` (sealing the segment being
    /// written each time, when it holds records) until `stop`.
    pub async fn run(self: Arc<Self>, every: std::time::Duration, stop: crate::shutdown::Shutdown) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            if let Err(e) = self.sync(true).await {
                self.metrics.archive_failures.inc();
                tracing::error!(error = %e, "backup: archiving the op log failed; trying again later");
            }
        }
    }

    /// Retention in the target removed `log`'s segments ending at or
    /// below `floor`: they are not uploaded again.
    pub async fn trimmed(&self, log: &str, floor: u64) {
        let mut k = self.known.lock().await;
        if k.log_id == log && floor > k.floor {
            k.floor = floor;
            k.listed = false;
        }
    }
}
