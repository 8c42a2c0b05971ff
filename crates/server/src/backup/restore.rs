//! Point-in-time restore: `meridian restore --from TARGET --to-time T
//! --data-dir DIR` builds a region's data directory holding every archived
//! op stamped at or before `T`, from the newest backup whose snapshot is at
//! or before `T` and the archived log after it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use meridian_core::backup::manifest::{Manifest, SegmentRef};
use meridian_core::backup::{Filter, Restore};
use meridian_core::{Backend, FjallBackend};
use meridian_crdt::Hlc;
use serde::Serialize;

use super::target::Target;
use super::{BackupError, fetch_checked, list_manifests};

/// What a restore built.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The backup it started from.
    pub backup: String,
    /// The time restored to (Unix ms; `None`: everything archived).
    pub to_ms: Option<u64>,
    /// Snapshot entries loaded.
    pub entries: u64,
    /// Archived log records read past the snapshot.
    pub records: u64,
    /// Ops kept (stamped at or before the time).
    pub ops: u64,
    /// Ops left out (stamped later).
    pub later: u64,
    /// Archived segments read.
    pub segments: usize,
    /// The newest op the archive read holds, wall ms: a restore reaches no
    /// further than this, whatever the time asked.
    pub archive_ends_ms: u64,
}

/// The newest complete backup whose snapshot is at or before `to`.
pub fn pick(all: &[Manifest], to: Option<Hlc>, id: Option<&str>) -> Result<Manifest, BackupError> {
    if let Some(id) = id {
        let m = all
            .iter()
            .find(|m| m.id == id)
            .ok_or_else(|| BackupError::Unknown(id.to_string()))?;
        if to.is_some_and(|t| m.hlc > t) {
            return Err(BackupError::NoBase(format!(
                "backup {id} was taken after the time asked for (its snapshot is at {} ms)",
                m.hlc.wall_ms()
            )));
        }
        return Ok(m.clone());
    }
    all.iter()
        .rev()
        .find(|m| to.is_none_or(|t| m.hlc <= t))
        .cloned()
        .ok_or_else(|| match all.first() {
            None => BackupError::NoBase("the target holds no backup of this region".into()),
            Some(m) => BackupError::NoBase(format!(
                "no backup at or before that time: the oldest snapshot is at {} ms (backup {})",
                m.hlc.wall_ms(),
                m.id
            )),
        })
}

/// Every archived segment after `m`'s snapshot, in order: the manifest's
/// own, then those archived since (their records checked against the
/// manifest's where both name a segment).
pub async fn segments_after(
    t: &Target,
    folder: &str,
    m: &Manifest,
) -> Result<Vec<SegmentRef>, BackupError> {
    let dir = format!("{folder}/wal/{}", m.log_id);
    let mut out: Vec<SegmentRef> = m.segments.clone();
    for (name, _) in t.list(&dir).await? {
        if !name.ends_with(".seg.json") {
            continue;
        }
        let bytes = t.get(&name).await?;
        let r: SegmentRef = serde_json::from_slice(&bytes).map_err(|e| BackupError::Damaged {
            file: name.clone(),
            reason: e.to_string(),
        })?;
        // The record names its segment: beside it, nowhere else.
        if name.strip_suffix(".json") != Some(r.file.name.as_str()) {
            return Err(BackupError::Damaged {
                file: name,
                reason: format!("names {:?}, not the segment beside it", r.file.name),
            });
        }
        if let Some(mine) = m.segments.iter().find(|s| s.first_lsn == r.first_lsn) {
            if *mine != r {
                return Err(BackupError::Damaged {
                    file: name,
                    reason: "does not match the backup's manifest".into(),
                });
            }
            continue;
        }
        if r.end_lsn > m.lsn + 1 {
            out.push(r);
        }
    }
    out.sort_by_key(|s| s.first_lsn);
    out.dedup_by_key(|s| s.first_lsn);
    Ok(out)
}

/// Loads a backup and rolls it forward into `restore`; the segments read.
pub async fn roll_forward<B: Backend>(
    t: &Target,
    folder: &str,
    m: &Manifest,
    restore: &mut Restore<B>,
) -> Result<Vec<SegmentRef>, BackupError> {
    // Decoding and replaying is CPU work: off the runtime's async threads
    // (callers run on a multi-threaded runtime).
    for f in &m.state {
        let b = fetch_checked(t, f).await?;
        tokio::task::block_in_place(|| restore.load_chunk(&f.name, &b))?;
    }
    let segs = segments_after(t, folder, m).await?;
    for s in &segs {
        let b = fetch_checked(t, &s.file).await?;
        tokio::task::block_in_place(|| restore.replay(&s.file.name, s.first_lsn, b.to_vec()))?;
    }
    Ok(segs)
}

/// Whether `dir` is missing or empty.
fn is_empty_dir(dir: &Path) -> std::io::Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut d) => Ok(d.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e),
    }
}

/// Restores `region` from `t` into the new data directory `data_dir`.
pub async fn restore(
    t: &Target,
    region: &str,
    to: Option<Hlc>,
    backup: Option<&str>,
    data_dir: &Path,
) -> Result<Report, BackupError> {
    let local = |e: std::io::Error| BackupError::Local(format!("{}: {e}", data_dir.display()));
    if !is_empty_dir(data_dir).map_err(local)? {
        return Err(BackupError::Local(format!(
            "{} is not empty: restore builds a new data directory",
            data_dir.display()
        )));
    }
    let folder = region.to_string();
    let m = match backup {
        // Straight to the one asked for: other manifests do not matter.
        Some(id) => {
            let m = super::read_manifest(t, &folder, id).await?;
            pick(std::slice::from_ref(&m), to, Some(id))?
        }
        None => pick(&list_manifests(t, &folder).await?, to, None)?,
    };
    // A lease keeps retention in a running region from deleting what this
    // restore reads; the manifest read again under it is still there.
    let lease = super::Lease::take(t, &folder, &m.id).await?;
    let r = async {
        super::read_manifest(t, &folder, &m.id).await?;
        // Built in place (a data directory may be a mount point) under a
        // marker that `serve` refuses to start on, removed only once the
        // restore is whole: a restore that fails or is killed never leaves
        // a directory that looks restored.
        std::fs::create_dir_all(data_dir).map_err(local)?;
        let marker = data_dir.join(crate::region::identity::RESTORE_MARKER);
        std::fs::write(&marker, b"a restore into this directory has not finished\n")
            .and_then(|()| std::fs::File::open(&marker)?.sync_all())
            .and_then(|()| std::fs::File::open(data_dir)?.sync_all())
            .map_err(local)?;
        let built = match build(t, &folder, &m, to, data_dir).await {
            Ok(b) => b,
            Err(e) => {
                // The directory was empty: leave it so (the marker last).
                for part in ["state", "log"] {
                    let _ = std::fs::remove_dir_all(data_dir.join(part));
                }
                let _ = std::fs::remove_file(data_dir.join("RESTORED.json"));
                let _ = std::fs::remove_file(&marker);
                return Err(e);
            }
        };
        std::fs::remove_file(&marker)
            .and_then(|()| std::fs::File::open(data_dir)?.sync_all())
            .map_err(local)?;
        Ok(built)
    }
    .await;
    lease.release(t).await;
    r
}

/// Refuses a restore to a time the archive of `m`'s log does not reach
/// when another log of the region (a new data directory, a repaired log)
/// holds ops up to that time: those would be silently missing.
async fn check_other_logs(
    t: &Target,
    folder: &str,
    m: &Manifest,
    to: Hlc,
    ends: Hlc,
) -> Result<(), BackupError> {
    if to <= ends {
        return Ok(());
    }
    for (name, _) in t.list(&format!("{folder}/wal")).await? {
        if !name.ends_with(".seg.json") || name.contains(&format!("/{}/", m.log_id)) {
            continue;
        }
        let bytes = t.get(&name).await?;
        let Ok(r) = serde_json::from_slice::<SegmentRef>(&bytes) else {
            continue;
        };
        if r.hlc_max > ends && r.hlc_min <= to {
            return Err(BackupError::NoBase(format!(
                "backup {} covers its log only up to {} ms; ops up to the time asked are in another log of this region ({name}): restore from a backup of that log",
                m.id,
                ends.wall_ms()
            )));
        }
    }
    Ok(())
}

async fn build(
    t: &Target,
    folder: &str,
    m: &Manifest,
    to: Option<Hlc>,
    data_dir: &Path,
) -> Result<Report, BackupError> {
    let local = |e: std::io::Error| BackupError::Local(format!("{}: {e}", data_dir.display()));
    let region = folder;
    let backend = Arc::new(
        FjallBackend::open(&data_dir.join("state"))
            .map_err(|e| BackupError::Local(e.to_string()))?,
    );
    let log_dir: PathBuf = data_dir.join("log");
    let mut r = Restore::new(backend, Some(&log_dir), Filter { to, keyspace: None });
    let segs = roll_forward(t, folder, m, &mut r).await?;
    let ends = segs
        .iter()
        .map(|s| s.hlc_max)
        .max()
        .unwrap_or(m.hlc)
        .max(m.hlc);
    if let Some(to) = to {
        check_other_logs(t, folder, m, to, ends).await?;
    }
    let segments = segs.len();
    let (done, _) = r.finish()?;
    let report = Report {
        backup: m.id.clone(),
        to_ms: to.map(|h| h.wall_ms()),
        entries: done.entries,
        records: done.records,
        ops: done.ops,
        later: done.later,
        segments,
        archive_ends_ms: ends.wall_ms(),
    };
    // For the operator: where this directory came from. No identity is
    // written: the region starting here is a new incarnation.
    let note = serde_json::to_vec_pretty(&serde_json::json!({
        "restored_from": t.url,
        "region": region,
        "report": &report,
    }))
    .unwrap_or_default();
    std::fs::write(data_dir.join("RESTORED.json"), note).map_err(local)?;
    Ok(report)
}
