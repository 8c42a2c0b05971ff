//! Reading what a target holds: a file checked against its size and
//! checksum, and the manifests (one, all complete ones, the damaged ones).

use bytes::Bytes;
use meridian_core::backup::manifest::{self, FileRef, Manifest, sha256_hex};

use super::BackupError;
use super::target::{self, TargetError};

/// Fetches a file and checks its size and checksum; the error names it.
pub async fn fetch_checked(t: &target::Target, f: &FileRef) -> Result<Bytes, BackupError> {
    if !manifest::valid_name(&f.name) {
        return Err(BackupError::Damaged {
            file: f.name.clone(),
            reason: "the name could escape the target's folder".into(),
        });
    }
    let b = match t.get(&f.name).await {
        Err(TargetError::NotFound(_)) => {
            return Err(BackupError::Damaged {
                file: f.name.clone(),
                reason: "missing from the target".into(),
            });
        }
        r => r?,
    };
    if b.len() as u64 != f.bytes {
        return Err(BackupError::Damaged {
            file: f.name.clone(),
            reason: format!("{} bytes, the manifest says {}", b.len(), f.bytes),
        });
    }
    let sha = sha256_hex(&b);
    if sha != f.sha256 {
        return Err(BackupError::Damaged {
            file: f.name.clone(),
            reason: format!("SHA-256 {sha}, the manifest says {}", f.sha256),
        });
    }
    Ok(b)
}

/// A backup's manifest, checked: format, names, and that it is the
/// backup it is stored as.
pub async fn read_manifest(
    t: &target::Target,
    folder: &str,
    id: &str,
) -> Result<Manifest, BackupError> {
    let name = format!("{folder}/backups/{id}.json");
    if !manifest::valid_name(&name) {
        return Err(BackupError::Unknown(id.to_string()));
    }
    let bytes = match t.get(&name).await {
        Err(TargetError::NotFound(_)) => return Err(BackupError::Unknown(id.to_string())),
        r => r?,
    };
    let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| BackupError::Damaged {
        file: name.clone(),
        reason: e.to_string(),
    })?;
    if m.format != manifest::FORMAT || m.id != id {
        return Err(BackupError::Damaged {
            file: name,
            reason: format!("format {} / id {} does not match", m.format, m.id),
        });
    }
    let prefix = format!("{folder}/");
    for f in m.state.iter().chain(m.segments.iter().map(|s| &s.file)) {
        if !manifest::valid_name(&f.name) || !f.name.starts_with(&prefix) {
            return Err(BackupError::Damaged {
                file: f.name.clone(),
                reason: format!("named by {name}: outside the region's folder {prefix}"),
            });
        }
    }
    Ok(m)
}

/// Every complete backup in `folder`, oldest first. A damaged manifest is
/// left out (with a warning) so the others stay usable; see
/// [`damaged_manifests`] for what deletes must not go past.
pub async fn list_manifests(
    t: &target::Target,
    folder: &str,
) -> Result<Vec<Manifest>, BackupError> {
    Ok(scan_manifests(t, folder).await?.0)
}

/// Manifests that do not read (their files may be needed: garbage
/// collection stops while there is one).
pub async fn damaged_manifests(
    t: &target::Target,
    folder: &str,
) -> Result<Vec<String>, BackupError> {
    Ok(scan_manifests(t, folder).await?.1)
}

pub(super) async fn scan_manifests(
    t: &target::Target,
    folder: &str,
) -> Result<(Vec<Manifest>, Vec<String>), BackupError> {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for (name, _) in t.list(&format!("{folder}/backups")).await? {
        let Some(id) = name
            .rsplit('/')
            .next()
            .and_then(|f| f.strip_suffix(".json"))
        else {
            continue;
        };
        match read_manifest(t, folder, id).await {
            Ok(m) => out.push(m),
            Err(e @ (BackupError::Damaged { .. } | BackupError::Unknown(_))) => {
                tracing::warn!(manifest = %name, error = %e, "backup manifest unreadable: left out");
                bad.push(name);
            }
            Err(e) => return Err(e),
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok((out, bad))
}
