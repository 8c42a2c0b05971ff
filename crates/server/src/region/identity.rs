//! Who owns a data directory: the region and its incarnation, written once,
//! and a lock so two processes never share it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use meridian_crdt::{RegionId, ReplicaId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Problems with the data directory.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// An I/O call failed.
    #[error("data directory {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Another process holds the directory.
    #[error("data directory {0} is in use by another meridian process")]
    Locked(PathBuf),
    /// The directory belongs to another region.
    #[error("data directory {path} belongs to region {found}, not {wanted}: use another directory")]
    WrongRegion {
        /// The directory.
        path: PathBuf,
        /// Its region.
        found: String,
        /// The region asked for.
        wanted: String,
    },
    /// A restore into the directory did not finish.
    #[error(
        "data directory {0} holds an unfinished restore ({RESTORE_MARKER} is there): remove the directory and restore again"
    )]
    Unfinished(PathBuf),
    /// The identity file is damaged.
    #[error("identity file {path} is unreadable: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The file `meridian restore` keeps in a data directory while it builds
/// it; a region never starts on a directory holding it.
pub const RESTORE_MARKER: &str = "RESTORE-UNFINISHED";

#[derive(Serialize, Deserialize)]
struct IdentityFile {
    format: u32,
    region: RegionId,
    incarnation: Uuid,
}

/// A claimed data directory: its replica id, and the lock held while it lives.
pub struct DataDir {
    /// The directory.
    pub path: PathBuf,
    /// This region's replica id (a new incarnation when the directory was new).
    pub replica: ReplicaId,
    /// Whether the directory was created now.
    pub fresh: bool,
    _lock: File,
}

impl DataDir {
    /// Claims `path` for `region`: creates it (and a new incarnation) if
    /// needed, refuses a directory of another region or one in use.
    pub fn claim(path: &Path, region: &RegionId) -> Result<DataDir, IdentityError> {
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| IdentityError::Io { path: p, source }
        };
        std::fs::create_dir_all(path).map_err(io(path))?;
        if path.join(RESTORE_MARKER).exists() {
            return Err(IdentityError::Unfinished(path.to_path_buf()));
        }
        let lock_path = path.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        if lock.try_lock().is_err() {
            return Err(IdentityError::Locked(path.to_path_buf()));
        }
        let id_path = path.join("identity.json");
        let (id, fresh) = if id_path.exists() {
            let text = std::fs::read_to_string(&id_path).map_err(io(&id_path))?;
            let id: IdentityFile =
                serde_json::from_str(&text).map_err(|e| IdentityError::Damaged {
                    path: id_path.clone(),
                    reason: e.to_string(),
                })?;
            if id.region != *region {
                return Err(IdentityError::WrongRegion {
                    path: path.to_path_buf(),
                    found: id.region.to_string(),
                    wanted: region.to_string(),
                });
            }
            (id, false)
        } else {
            let id = IdentityFile {
                format: 1,
                region: region.clone(),
                incarnation: Uuid::new_v4(),
            };
            write_identity(path, &id)?;
            (id, true)
        };
        Ok(DataDir {
            path: path.to_path_buf(),
            replica: ReplicaId::new(id.region, id.incarnation),
            fresh,
            _lock: lock,
        })
    }
}

impl DataDir {
    /// Gives the directory a new incarnation, durably, and takes it: used
    /// when this incarnation's own ops may have been lost (its log was
    /// rolled back or repaired), so the seqs it would issue next could
    /// collide with ones its peers already hold.
    pub fn reincarnate(&mut self) -> Result<(), IdentityError> {
        reincarnate_at(&self.path, &mut self.replica)
    }
}

/// Writes a new incarnation of `replica`'s region into the identity file of
/// `path` (atomically) and updates `replica`.
pub fn reincarnate_at(path: &Path, replica: &mut ReplicaId) -> Result<(), IdentityError> {
    let id = IdentityFile {
        format: 1,
        region: replica.region.clone(),
        incarnation: Uuid::new_v4(),
    };
    write_identity(path, &id)?;
    *replica = ReplicaId::new(id.region, id.incarnation);
    Ok(())
}

/// Write aside, sync, rename, sync the directory: the identity is either
/// wholly there or not at all.
fn write_identity(path: &Path, id: &IdentityFile) -> Result<(), IdentityError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| IdentityError::Io { path: p, source }
    };
    let tmp = path.join("identity.json.tmp");
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    let text = serde_json::to_string_pretty(id).unwrap_or_default();
    f.write_all(text.as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    let id_path = path.join("identity.json");
    std::fs::rename(&tmp, &id_path).map_err(io(&id_path))?;
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_keep_the_incarnation_and_refuse_strangers() {
        let d = meridian_core::testdir::TestDir::new("identity");
        let east = RegionId::new("us-east").unwrap();
        let first = DataDir::claim(d.path(), &east).unwrap();
        assert!(first.fresh);
        let again = DataDir::claim(d.path(), &east);
        assert!(
            matches!(again, Err(IdentityError::Locked(_))),
            "a second process must be refused"
        );
        let inc = first.replica.incarnation;
        drop(first);
        let second = DataDir::claim(d.path(), &east).unwrap();
        assert!(!second.fresh);
        assert_eq!(second.replica.incarnation, inc);
        drop(second);
        let mut third = DataDir::claim(d.path(), &east).unwrap();
        third.reincarnate().unwrap();
        assert_ne!(third.replica.incarnation, inc);
        let new_inc = third.replica.incarnation;
        drop(third);
        let fourth = DataDir::claim(d.path(), &east).unwrap();
        assert_eq!(
            fourth.replica.incarnation, new_inc,
            "the new incarnation is durable"
        );
        drop(fourth);
        let west = RegionId::new("eu-west").unwrap();
        let e = DataDir::claim(d.path(), &west).err().unwrap().to_string();
        assert!(e.contains("belongs to region us-east"), "{e}");
        // An unfinished restore is never started on.
        std::fs::write(d.path().join(RESTORE_MARKER), b"").unwrap();
        let e = DataDir::claim(d.path(), &east).err().unwrap();
        assert!(matches!(e, IdentityError::Unfinished(_)), "{e}");
    }
}
