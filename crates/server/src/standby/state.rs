//! `standby.json` in the data directory: this member's role, the region's
//! epoch it knows, whom it follows and the other members it has heard of.
//! It outlives the process, so a restart keeps the outcome of a failover
//! (a promoted standby restarts as the leader, a demoted leader as a
//! standby) whatever the configuration file says.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::wire::Member;

const FILE: &str = "standby.json";

/// A member's role in its region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Takes writes; ships to the standbys.
    Leader,
    /// Streams the leader's log; serves reads; forwards writes.
    Follower,
}

impl Role {
    /// Its name in status and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
        }
    }
}

/// What `standby.json` holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Persisted {
    /// Format version (1).
    pub format: u32,
    /// This member's role.
    pub role: Role,
    /// The highest region epoch this member knows. A leader's epoch is the
    /// one it was promoted at (1 for a region's first leader).
    pub epoch: u64,
    /// A follower's leader (its peer URL).
    #[serde(default)]
    pub leader: Option<String>,
    /// Other members heard of (a new leader tells them of its epoch).
    #[serde(default)]
    pub members: Vec<Member>,
    /// Peer URLs of leaders this member took over from: told of its epoch
    /// until they step down.
    #[serde(default)]
    pub old_leaders: Vec<String>,
}

/// Why the file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct StateError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    pub reason: String,
}

/// Reads the file, `None` when the directory has none yet.
pub fn load(dir: &Path) -> Result<Option<Persisted>, StateError> {
    let path = dir.join(FILE);
    let err = |reason: String| StateError {
        path: path.clone(),
        reason,
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            let p: Persisted = serde_json::from_slice(&bytes).map_err(|e| err(e.to_string()))?;
            if p.format != 1 {
                return Err(err(format!(
                    "format {} is not one this build reads",
                    p.format
                )));
            }
            Ok(Some(p))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(err(e.to_string())),
    }
}

/// Writes the file atomically (aside, fsync, rename, fsync the directory):
/// a crash leaves the old one or the new one.
pub fn store(dir: &Path, p: &Persisted) -> Result<(), StateError> {
    let path = dir.join(FILE);
    let tmp = dir.join("standby.json.tmp");
    let err = |reason: std::io::Error| StateError {
        path: path.clone(),
        reason: reason.to_string(),
    };
    let text = serde_json::to_vec_pretty(p).map_err(|e| StateError {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let mut f = File::create(&tmp).map_err(err)?;
    f.write_all(&text).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_a_missing_file() {
        let dir = meridian_core::testdir::TestDir::new("standby-state");
        assert_eq!(load(dir.path()).unwrap(), None);
        let p = Persisted {
            format: 1,
            role: Role::Follower,
            epoch: 3,
            leader: Some("http://10.0.0.1:7171".into()),
            members: Vec::new(),
            old_leaders: Vec::new(),
        };
        store(dir.path(), &p).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(p));
    }

    /// `standby.json` pinned: a change to these bytes is a format change
    /// (bump `format`, and keep reading the old one). The second file is
    /// what a build before `members` and `old_leaders` wrote: it still
    /// reads.
    #[test]
    fn golden_standby_json() {
        let p = Persisted {
            format: 1,
            role: Role::Leader,
            epoch: 4,
            leader: None,
            members: Vec::new(),
            old_leaders: vec!["http://m1:7171".into()],
        };
        let text = String::from_utf8(serde_json::to_vec_pretty(&p).unwrap()).unwrap();
        assert_eq!(
            text,
            "{\n  \"format\": 1,\n  \"role\": \"leader\",\n  \"epoch\": 4,\n  \"leader\": null,\n  \"members\": [],\n  \"old_leaders\": [\n    \"http://m1:7171\"\n  ]\n}"
        );
        let dir = meridian_core::testdir::TestDir::new("standby-golden");
        std::fs::write(
            dir.path().join(FILE),
            br#"{"format": 1, "role": "follower", "epoch": 2, "leader": "http://m1:7171"}"#,
        )
        .unwrap();
        let old = load(dir.path()).unwrap().unwrap();
        assert_eq!((old.role, old.epoch), (Role::Follower, 2));
        assert_eq!(old.leader.as_deref(), Some("http://m1:7171"));
        assert!(old.members.is_empty() && old.old_leaders.is_empty());
        std::fs::write(
            dir.path().join(FILE),
            br#"{"format": 2, "role": "leader", "epoch": 1}"#,
        )
        .unwrap();
        let e = load(dir.path()).unwrap_err();
        assert!(e.reason.contains("format 2"), "{e}");
    }

    #[test]
    fn a_damaged_file_is_an_error_not_a_fresh_start() {
        let dir = meridian_core::testdir::TestDir::new("standby-state");
        std::fs::write(dir.path().join(FILE), b"{\"format\": 1, \"role\": ").unwrap();
        let e = load(dir.path()).unwrap_err();
        assert!(e.path.ends_with(FILE), "{e}");
    }
}
