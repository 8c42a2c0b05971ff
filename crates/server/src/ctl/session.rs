//! The causal token `meridian ctl` keeps between invocations, so `ctl put`
//! in one region and then `ctl --region eu-west get` reads the write: the
//! get carries the put's token and eu-west waits until it has applied it
//! (or answers `503 behind_token`). Writes do not carry it (a write goes
//! where it is sent, without waiting: a partition experiment stays one);
//! their answers' tokens are merged into it, so it covers every write the
//! shell made. Reads carry it and keep nothing.
//!
//! Kept in one file (`$MERIDIAN_SESSION`, else
//! `$XDG_STATE_HOME/meridian/ctl-session.json`, else
//! `~/.local/state/meridian/ctl-session.json`), one token per cluster (the
//! set of URLs ctl talks to), for [`TTL`]: a session is the minutes of a
//! shell sitting. A token no region can serve (a cluster recreated on the
//! same ports, as `meridian dev` is on every start) is dropped by the read
//! that finds so, which then reads without it and says so. `--no-session`
//! leaves it alone.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::anyhow;
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
    /// Cluster (its sorted URLs, comma-separated) to its token.
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

/// Whether a token kept at `at` is still to be used (a time in the future,
/// from a clock stepped back or an edited file, is as old as its distance).
fn fresh(at: u64) -> bool {
    now_s().abs_diff(at) <= TTL.as_secs()
}

/// The session file's path from the environment, if there is one.
pub fn default_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MERIDIAN_SESSION").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    // An empty or relative XDG_STATE_HOME is to be ignored (XDG base
    // directory spec).
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
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

    /// The cluster's token, if one was kept within [`TTL`] and is a token
    /// at all (a damaged file is no session).
    pub fn token(&self) -> Option<String> {
        let kept = self.read().clusters.get(&self.cluster).cloned()?;
        let valid = meridian_core::token::decode(&kept.token).is_ok();
        (fresh(kept.at) && valid).then_some(kept.token)
    }

    /// Merges a write's `token` into the cluster's (the pointwise newest of
    /// both, so it covers every write kept). A session that cannot be kept
    /// is not an error of the command: it says so on stderr.
    pub fn keep(&self, token: &str) {
        let Some(path) = &self.path else { return };
        let Ok(mut vv) = meridian_core::token::decode(token) else {
            return;
        };
        if let Some(old) = self
            .token()
            .and_then(|t| meridian_core::token::decode(&t).ok())
        {
            vv.merge(&old);
        }
        let mut file = self.read();
        file.clusters.retain(|_, k| fresh(k.at));
        file.clusters.insert(
            self.cluster.clone(),
            Kept {
                token: meridian_core::token::encode(&vv),
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
    pub fn clear(&self) -> anyhow::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut file = self.read();
        file.clusters.remove(&self.cluster);
        write_atomically(path, &file).map_err(|e| anyhow!("{}: {e}", path.display()))
    }
}

/// Writes `file` to a new temporary file beside `path` and renames it over
/// `path` (two ctl runs at once: the last rename wins, and each leaves a
/// whole file). The temporary file is removed when anything fails.
fn write_atomically(path: &PathBuf, file: &File) -> std::io::Result<()> {
    use std::io::Write as _;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let bytes = serde_json::to_vec_pretty(file).map_err(std::io::Error::other)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
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

    fn token(region: &str, seq: u64) -> String {
        let mut vv = meridian_crdt::VersionVector::new();
        let r = meridian_crdt::ReplicaId::new(
            meridian_crdt::RegionId::new(region).unwrap(),
            uuid::Uuid::nil(),
        );
        vv.raise(&r, meridian_crdt::Seq(seq));
        meridian_core::token::encode(&vv)
    }

    /// The session file pinned. It is read leniently (a file that does not
    /// parse is no session), so a change here silently ends every kept
    /// session: this test makes it a decision.
    #[test]
    fn golden_session_file() {
        let mut f = File::default();
        f.clusters.insert(
            "http://a:7070,http://b:7070".into(),
            Kept {
                token: "T".into(),
                at: 1_796_000_000,
            },
        );
        let text = String::from_utf8(serde_json::to_vec_pretty(&f).unwrap()).unwrap();
        assert_eq!(
            text,
            "{\n  \"clusters\": {\n    \"http://a:7070,http://b:7070\": {\n      \"token\": \"T\",\n      \"at\": 1796000000\n    }\n  }\n}"
        );
        let back: File = serde_json::from_str(&text).unwrap();
        assert_eq!(
            back.clusters["http://a:7070,http://b:7070"].at,
            1_796_000_000
        );
        let empty: File = serde_json::from_str("{}").unwrap();
        assert!(empty.clusters.is_empty());
    }

    #[test]
    fn a_token_is_kept_per_cluster_merged_and_forgotten_on_clear() {
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
        a.keep(&token("us-east", 1));
        other.keep(&token("ap-south", 9));
        assert_eq!(
            same.token(),
            Some(token("us-east", 1)),
            "the same cluster in any order"
        );
        assert_eq!(other.token(), Some(token("ap-south", 9)));
        a.keep(&token("us-east", 2));
        assert_eq!(a.token(), Some(token("us-east", 2)));
        // A write elsewhere that did not see the first: the kept token
        // covers both.
        a.keep(&token("eu-west", 5));
        let both = meridian_core::token::decode(&a.token().unwrap()).unwrap();
        assert_eq!(both.len(), 2, "{both:?}");
        a.clear().unwrap();
        assert_eq!(a.token(), None);
        assert_eq!(other.token(), Some(token("ap-south", 9)));
    }

    #[test]
    fn an_old_damaged_or_unreadable_session_is_no_session() {
        let path = dir().join("s.json");
        let s = Store::new(Some(path.clone()), &["http://a:1".into()]);
        let at = |at: u64, t: &str| File {
            clusters: [(
                "http://a:1".to_string(),
                Kept {
                    token: t.to_string(),
                    at,
                },
            )]
            .into(),
        };
        let good = token("us-east", 3);
        write_atomically(&path, &at(now_s() - TTL.as_secs() - 1, &good)).unwrap();
        assert_eq!(s.token(), None, "too old");
        write_atomically(&path, &at(now_s() + TTL.as_secs() + 60, &good)).unwrap();
        assert_eq!(s.token(), None, "from the future");
        write_atomically(&path, &at(now_s(), "not a token")).unwrap();
        assert_eq!(s.token(), None, "damaged");
        std::fs::write(&path, b"not json").unwrap();
        assert_eq!(s.token(), None);
        s.keep(&good);
        assert_eq!(s.token(), Some(good));
        assert_eq!(Store::new(None, &["http://a:1".into()]).token(), None);
        let files = std::fs::read_dir(path.parent().unwrap()).unwrap().count();
        assert_eq!(files, 1, "no temporary files left");
    }
}
