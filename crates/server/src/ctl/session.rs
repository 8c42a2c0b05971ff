//! The causal token `meridian ctl` keeps between invocations, so `ctl put`
//! in one region and then `ctl --region eu-west get` reads the write: the
//! get carries the put's token and eu-west waits until it has applied it
//! (or answers `503 behind_token`). Writes keep their answer's token (each
//! carries the one before, so the newest covers them all); reads carry it
//! and keep nothing.
//!
//! Kept in one file (`$MERIDIAN_SESSION`, else
//! `$XDG_STATE_HOME/meridian/ctl-session.json`, else
//! `~/.local/state/meridian/ctl-session.json`), one token per cluster (the
//! set of URLs ctl talks to), for [`TTL`]: a session is the minutes of a
//! shell sitting, and a token of a cluster since recreated on the same
//! ports would otherwise hold every read up. `--no-session` leaves it
//! alone.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// How long a kept token is used.
pub const TTL: Duration = Duration::from_secs(15 * 60);

/// Where tokens are kept, and for which cluster.
pub struct Store {
    path: Option<PathBuf>,
    cluster: String,
}

#[derive(Default, Serialize, Deserialize)]
struct File {
    /// Cluster (its sorted URLs, comma-separated) to its newest token.
    #[serde(default)]
    clusters: BTreeMap<String, Kept>,
}

#[derive(Clone, Serialize, Deserialize)]
struct Kept {
    token: String,
    /// When it was kept, Unix seconds.
    at: u64,
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The session file's path from the environment, if there is one.
pub fn default_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MERIDIAN_SESSION") {
        return Some(PathBuf::from(p));
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(state.join("meridian").join("ctl-session.json"))
}

impl Store {
    /// The store for the cluster at `urls` (`None`: no session kept).
    pub fn new(path: Option<PathBuf>, urls: &[String]) -> Store {
        let mut sorted: Vec<&str> = urls.iter().map(|u| u.trim_end_matches('/')).collect();
        sorted.sort_unstable();
        Store {
            path,
            cluster: sorted.join(","),
        }
    }

    /// Where it is kept, if anywhere.
    pub fn path(&self) -> Option<&PathBuf> {
        self.path.as_ref()
    }

    fn read(&self) -> File {
        self.path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// The cluster's token, if one was kept within [`TTL`].
    pub fn token(&self) -> Option<String> {
        let kept = self.read().clusters.get(&self.cluster).cloned()?;
        (now_s().saturating_sub(kept.at) <= TTL.as_secs()).then_some(kept.token)
    }

    /// Keeps `token` as the cluster's newest. A session that cannot be
    /// kept is not an error of the command: it says so on stderr.
    pub fn keep(&self, token: &str) {
        let Some(path) = &self.path else { return };
        let mut file = self.read();
        file.clusters
            .retain(|_, k| now_s().saturating_sub(k.at) <= TTL.as_secs());
        file.clusters.insert(
            self.cluster.clone(),
            Kept {
                token: token.to_string(),
                at: now_s(),
            },
        );
        if let Err(e) = write_atomically(path, &file) {
            eprintln!(
                "note: could not keep the session token in {}: {e}",
                path.display()
            );
        }
    }

    /// Forgets the cluster's token.
    pub fn clear(&self) -> Result<(), String> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut file = self.read();
        file.clusters.remove(&self.cluster);
        write_atomically(path, &file).map_err(|e| format!("{}: {e}", path.display()))
    }
}

fn write_atomically(path: &PathBuf, file: &File) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(file).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "meridian-ctl-session-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_token_is_kept_per_cluster_and_forgotten_on_clear() {
        let path = dir().join("s.json");
        let a = Store::new(
            Some(path.clone()),
            &["http://b:1".into(), "http://a:1/".into()],
        );
        let same = Store::new(
            Some(path.clone()),
            &["http://a:1".into(), "http://b:1".into()],
        );
        let other = Store::new(Some(path.clone()), &["http://c:1".into()]);
        assert_eq!(a.token(), None);
        a.keep("t1");
        other.keep("t9");
        assert_eq!(
            same.token().as_deref(),
            Some("t1"),
            "the same cluster in any order"
        );
        assert_eq!(other.token().as_deref(), Some("t9"));
        a.keep("t2");
        assert_eq!(a.token().as_deref(), Some("t2"));
        a.clear().unwrap();
        assert_eq!(a.token(), None);
        assert_eq!(other.token().as_deref(), Some("t9"));
    }

    #[test]
    fn an_old_or_unreadable_session_is_no_session() {
        let path = dir().join("s.json");
        let s = Store::new(Some(path.clone()), &["http://a:1".into()]);
        let old = File {
            clusters: [(
                "http://a:1".to_string(),
                Kept {
                    token: "stale".into(),
                    at: now_s() - TTL.as_secs() - 1,
                },
            )]
            .into(),
        };
        write_atomically(&path, &old).unwrap();
        assert_eq!(s.token(), None);
        std::fs::write(&path, b"not json").unwrap();
        assert_eq!(s.token(), None);
        s.keep("fresh");
        assert_eq!(s.token().as_deref(), Some("fresh"));
        assert_eq!(Store::new(None, &["http://a:1".into()]).token(), None);
    }
}
