//! Retention in a backup target: which backups a prune keeps, the files no
//! kept backup needs, and the leases restores hold so that a prune never
//! deletes what they read.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use serde::Serialize;

use super::target::{self, TargetError};
use super::{BackupError, Backups, now, scan_manifests};

/// What a prune removed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Pruned {
    /// Backups removed.
    pub backups: Vec<String>,
    /// Files removed (chunks, segments, orphans of cut-short backups).
    pub files: usize,
}

impl Backups {
    /// Removes a backup, then what no backup needs any more.
    pub async fn delete(&self, id: &str) -> Result<Pruned, BackupError> {
        let _g = self.lock.lock().await;
        match self.manifest(id).await {
            // A damaged manifest can be deleted too (by its id).
            Ok(_) | Err(BackupError::Damaged { .. }) => {}
            Err(e) => return Err(e),
        }
        if Lease::held(&self.archive.target, &self.archive.folder)
            .await?
            .contains(id)
        {
            return Err(BackupError::Leased(id.to_string()));
        }
        self.archive
            .target
            .delete(&self.archive.name(&format!("backups/{id}.json")))
            .await?;
        let mut p = self.collect_garbage().await?;
        p.backups.push(id.to_string());
        Ok(p)
    }

    /// Applies retention: keeps the newest `keep_last` (0: any number)
    /// and those younger than `keep_ms` (0: any age); with both, a backup
    /// either rule keeps stays. Always kept whatever the rules: the newest
    /// backup, and the newest one older than the undo window (so any time
    /// inside it can still be restored and rewound to).
    pub async fn prune(&self, keep_last: u32, keep_ms: u64) -> Result<Pruned, BackupError> {
        let _g = self.lock.lock().await;
        let all = self.list().await?;
        let now = now(&self.clock);
        let n = all.len();
        let window_start = now.saturating_sub(self.undo_ms);
        let base_for_window = all
            .iter()
            .rposition(|m| m.hlc.wall_ms() <= window_start)
            .unwrap_or(0);
        let leased = Lease::held(&self.archive.target, &self.archive.folder).await?;
        let mut removed = Vec::new();
        for (i, m) in all.iter().enumerate() {
            let by_count = keep_last > 0 && i + (keep_last as usize) >= n;
            let by_age = keep_ms > 0 && m.finished_ms.saturating_add(keep_ms) >= now;
            let rules = keep_last > 0 || keep_ms > 0;
            let keep = !rules
                || by_count
                || by_age
                || i + 1 == n
                || i == base_for_window
                || leased.contains(&m.id);
            if !keep {
                self.archive
                    .target
                    .delete(&self.archive.name(&format!("backups/{}.json", m.id)))
                    .await?;
                removed.push(m.id.clone());
            }
        }
        // Also sweeps what backups cut short left behind.
        let mut p = self.collect_garbage().await?;
        p.backups = removed;
        Ok(p)
    }

    /// Applies the configured retention (a no-op when none is set).
    pub async fn prune_configured(&self) -> Result<Pruned, BackupError> {
        self.prune(self.settings.keep_last, self.settings.keep_ms)
            .await
    }

    /// Deletes chunks no backup names and segments below every backup's
    /// snapshot (of this log: older logs go with their last backup).
    /// Called with the lock held, so no backup is half-written meanwhile.
    async fn collect_garbage(&self) -> Result<Pruned, BackupError> {
        let t = &self.archive.target;
        let (kept, bad) = scan_manifests(t, &self.archive.folder).await?;
        if let Some(name) = bad.first() {
            // Its files may be needed: delete nothing until it is dealt with.
            return Err(BackupError::Damaged {
                file: name.clone(),
                reason: "manifest does not read; no files are deleted while it is there (fix or delete it)".into(),
            });
        }
        let mut needed: BTreeSet<String> = BTreeSet::new();
        let mut floor: BTreeMap<String, u64> = BTreeMap::new();
        for m in &kept {
            needed.extend(m.state.iter().map(|f| f.name.clone()));
            let f = floor.entry(m.log_id.clone()).or_insert(u64::MAX);
            *f = (*f).min(m.lsn + 1);
        }
        // The log being written keeps all its archive until a backup of it
        // is taken.
        let current = self.archive.log_id();
        floor.entry(current.clone()).or_insert(0);
        let mut files = 0;
        for (name, _) in t.list(&self.archive.name("state")).await? {
            if !needed.contains(&name) {
                t.delete(&name).await?;
                files += 1;
            }
        }
        let wal = t.list(&self.archive.name("wal")).await?;
        // Segment records name their end; a segment goes when it ends at or
        // below its log's floor (or its log has no backup left).
        let mut by_first: BTreeMap<(String, u64), Vec<String>> = BTreeMap::new();
        for (name, _) in &wal {
            let parts: Vec<&str> = name.rsplitn(3, '/').collect();
            if parts.len() < 3 {
                continue;
            }
            let (file, log) = (parts[0], parts[1]);
            let Some(first) = file
                .strip_suffix(".seg.json")
                .or_else(|| file.strip_suffix(".seg"))
                .and_then(|d| d.parse::<u64>().ok())
            else {
                continue;
            };
            by_first
                .entry((log.to_string(), first))
                .or_default()
                .push(name.clone());
        }
        let firsts: Vec<(String, u64)> = by_first.keys().cloned().collect();
        for (i, (log, first)) in firsts.iter().enumerate() {
            let next_first = firsts.get(i + 1).filter(|(l, _)| l == log).map(|(_, f)| *f);
            let remove = match floor.get(log) {
                None => true,
                Some(fl) => next_first.is_some_and(|end| end <= *fl),
            };
            if remove {
                for name in &by_first[&(log.clone(), *first)] {
                    t.delete(name).await?;
                    files += 1;
                }
            }
        }
        if let Some(fl) = floor.get(&current) {
            self.archive.trimmed(&current, *fl).await;
        }
        Ok(Pruned {
            backups: Vec::new(),
            files,
        })
    }
}

/// How long a lease holds without being released (a restore that died).
const LEASE_MS: u64 = 6 * 3_600_000;

/// A restore's claim on a backup: retention keeps a backup named by a
/// live lease (`<region>/leases/<uuid>.json`), whichever process prunes.
pub struct Lease {
    name: Option<String>,
}

/// A lease object's body. `format` marks the layout; leases written
/// before it existed carry none and read as 1.
#[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct LeaseFile {
    #[serde(default = "lease_format")]
    format: u32,
    backup: String,
    expires_ms: u64,
}

/// The lease layout this build writes and reads.
const LEASE_FORMAT: u32 = 1;

fn lease_format() -> u32 {
    LEASE_FORMAT
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Lease {
    /// Claims backup `id` of `folder`. A target that refuses the write
    /// (read-only credentials for disaster recovery, an object lock) gets
    /// no lease: the restore goes on, warned, unprotected from prunes.
    pub async fn take(t: &target::Target, folder: &str, id: &str) -> Result<Lease, BackupError> {
        let name = format!("{folder}/leases/{}.json", uuid::Uuid::new_v4().simple());
        let body = serde_json::to_vec(&LeaseFile {
            format: LEASE_FORMAT,
            backup: id.to_string(),
            expires_ms: unix_ms() + LEASE_MS,
        })
        .map_err(|e| BackupError::Local(e.to_string()))?;
        match t.put(&name, Bytes::from(body)).await {
            Ok(()) => Ok(Lease { name: Some(name) }),
            Err(e) => {
                tracing::warn!(error = %e, "no restore lease could be written: a prune running meanwhile could delete what this restore reads");
                Ok(Lease { name: None })
            }
        }
    }

    /// Gives the claim up (an error only leaves it to expire).
    pub async fn release(self, t: &target::Target) {
        let Some(name) = self.name else {
            return;
        };
        if let Err(e) = t.delete(&name).await {
            tracing::warn!(lease = %name, error = %e, "backup lease not released; it expires");
        }
    }

    /// Backups named by live leases in `folder` (expired leases go).
    async fn held(t: &target::Target, folder: &str) -> Result<BTreeSet<String>, BackupError> {
        let mut out = BTreeSet::new();
        for (name, _) in t.list(&format!("{folder}/leases")).await? {
            // Fails closed: a lease that cannot be read stops the prune.
            let bytes = match t.get(&name).await {
                Err(TargetError::NotFound(_)) => continue,
                r => r?,
            };
            match serde_json::from_slice::<LeaseFile>(&bytes) {
                // Expired, whatever its layout: a restore that died leaves
                // no lease that holds forever.
                Ok(l) if l.expires_ms <= unix_ms() => t.delete(&name).await?,
                // A live lease in a layout from a newer build: not
                // understood, so it holds (fails closed, as an unreadable
                // lease does) until it expires.
                Ok(l) if l.format != LEASE_FORMAT => {
                    return Err(BackupError::Damaged {
                        file: name,
                        reason: format!("lease format {} is not one this build reads", l.format),
                    });
                }
                Ok(l) => {
                    out.insert(l.backup);
                }
                Err(e) => {
                    return Err(BackupError::Damaged {
                        file: name,
                        reason: format!("lease does not parse: {e}"),
                    });
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lease object pinned: a change to these bytes is a format change.
    /// A lease from before `format` existed still reads (as format 1).
    #[test]
    fn golden_lease_file() {
        let l = LeaseFile {
            format: LEASE_FORMAT,
            backup: "20261204T180000Z-1a2b".into(),
            expires_ms: 1_796_000_000_000,
        };
        let text = String::from_utf8(serde_json::to_vec(&l).unwrap()).unwrap();
        assert_eq!(
            text,
            r#"{"format":1,"backup":"20261204T180000Z-1a2b","expires_ms":1796000000000}"#
        );
        assert_eq!(serde_json::from_str::<LeaseFile>(&text).unwrap(), l);
        let old: LeaseFile = serde_json::from_str(r#"{"backup":"b1","expires_ms":5}"#).unwrap();
        assert_eq!((old.format, old.backup.as_str()), (1, "b1"));
    }

    /// What each lease does to a prune: a live one holds its backup, an
    /// expired one goes, a live one in a newer build's layout stops the
    /// prune (it might hold anything) until it expires.
    #[tokio::test]
    async fn leases_hold_expire_and_fail_closed() {
        let d = meridian_core::testdir::TestDir::new("leases");
        let t = target::TargetSpec::parse(d.path().to_str().unwrap(), None, None, None)
            .unwrap()
            .open()
            .unwrap();
        let put = |name: &str, body: String| {
            let (t, name) = (&t, name.to_string());
            async move { t.put(&name, Bytes::from(body)).await.unwrap() }
        };
        let live = unix_ms() + 60_000;
        put(
            "r/leases/a.json",
            format!(r#"{{"format":1,"backup":"b1","expires_ms":{live}}}"#),
        )
        .await;
        put(
            "r/leases/b.json",
            format!(r#"{{"backup":"b2","expires_ms":{live}}}"#),
        )
        .await;
        put(
            "r/leases/c.json",
            r#"{"format":1,"backup":"b3","expires_ms":1}"#.into(),
        )
        .await;
        let held = Lease::held(&t, "r").await.unwrap();
        assert_eq!(held.into_iter().collect::<Vec<_>>(), ["b1", "b2"]);
        assert!(
            t.list("r/leases")
                .await
                .unwrap()
                .iter()
                .all(|(n, _)| !n.ends_with("c.json")),
            "the expired lease is deleted"
        );
        // A newer layout: an expired one goes like any other, a live one
        // stops the prune until it expires.
        put(
            "r/leases/e.json",
            r#"{"format":2,"backup":"b5","expires_ms":1}"#.into(),
        )
        .await;
        let held = Lease::held(&t, "r").await.unwrap();
        assert_eq!(held.into_iter().collect::<Vec<_>>(), ["b1", "b2"]);
        put(
            "r/leases/d.json",
            format!(r#"{{"format":2,"backup":"b4","expires_ms":{live}}}"#),
        )
        .await;
        match Lease::held(&t, "r").await {
            Err(BackupError::Damaged { file, reason }) => {
                assert!(file.ends_with("d.json"), "{file}");
                assert!(reason.contains("format 2"), "{reason}");
            }
            other => panic!("a newer lease layout must stop the prune: {other:?}"),
        }
    }
}
