//! What a backup target holds, named and checksummed.
//!
//! Under a target's prefix, per region:
//! - `<region>/backups/<id>.json`: a backup's [`Manifest`], written last,
//!   so a backup is listed only once every file it names is stored;
//! - `<region>/state/<sha256>.chunk`: snapshot chunks, named by their
//!   content (shared between backups: only new ones are uploaded);
//! - `<region>/wal/<log_id>/<first_lsn>.seg`: sealed op log segments, each
//!   followed by `<first_lsn>.seg.json` (its [`SegmentRef`]), which marks it
//!   as stored whole. `log_id` names one data directory's log: positions
//!   restart in another one (or after `--repair-log`).

use std::collections::BTreeMap;

use meridian_crdt::{Hlc, VersionVector};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The manifest format this build writes and reads.
pub const FORMAT: u32 = 1;

/// A stored file and its checksum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRef {
    /// Object name, relative to the region's folder in the target.
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256 of the content, hex.
    pub sha256: String,
}

/// A sealed log segment in the archive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentRef {
    /// The file.
    #[serde(flatten)]
    pub file: FileRef,
    /// Position of its first record.
    pub first_lsn: u64,
    /// One past its last record.
    pub end_lsn: u64,
    /// Lowest and highest HLC of its ops (0, 0 when empty).
    pub hlc_min: Hlc,
    /// See `hlc_min`.
    pub hlc_max: Hlc,
}

/// One backup: a snapshot of the state and the log it rolls forward with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// The backup's id (sorts by creation time).
    pub id: String,
    /// The region backed up.
    pub region: String,
    /// Its replica id when the backup was taken.
    pub replica: String,
    /// The data directory's log ([`SegmentRef`] names live under it).
    pub log_id: String,
    /// When the backup began and ended, Unix ms.
    pub started_ms: u64,
    /// See `started_ms`.
    pub finished_ms: u64,
    /// Every op the snapshot reflects.
    pub vv: VersionVector,
    /// The log position the snapshot reflects (records after it roll forward).
    pub lsn: u64,
    /// The highest HLC the snapshot had seen: restores to any time from
    /// here on can start from this backup.
    pub hlc: Hlc,
    /// The newest HLC in the segments archived with it: the backup alone
    /// restores up to here (later archived segments reach further).
    pub hlc_max: Hlc,
    /// Stored keys per keyspace (tombstones included).
    pub keyspaces: BTreeMap<String, u64>,
    /// Snapshot chunks.
    pub state: Vec<FileRef>,
    /// Segments holding the records after `lsn` when the backup was taken.
    pub segments: Vec<SegmentRef>,
}

impl Manifest {
    /// Total bytes of the files it names.
    pub fn bytes(&self) -> u64 {
        self.state.iter().map(|f| f.bytes).sum::<u64>()
            + self.segments.iter().map(|s| s.file.bytes).sum::<u64>()
    }
}

/// Hex SHA-256 of `bytes` (lower case). Also the access-token hash, on
/// every request: one allocation.
pub fn sha256_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let d = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in d {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// Whether `name` is a safe relative object name: `/`-separated parts of
/// `a-z A-Z 0-9 . _ -`, none empty, `.` or `..`, not absolute. A manifest
/// naming anything else is refused before a byte is fetched or written.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 512
        && name.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        })
}

/// The name of a snapshot chunk with this content hash.
pub fn chunk_name(sha256: &str) -> String {
    format!("state/{sha256}.chunk")
}

/// The name of an archived segment.
pub fn segment_name(log_id: &str, first_lsn: u64) -> String {
    format!("wal/{log_id}/{first_lsn:020}.seg")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_escape_are_refused() {
        for ok in [
            "state/ab.chunk",
            "wal/0a-1/00000000000000000001.seg",
            "backups/x.json",
        ] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "state/../../x",
            "a//b",
            "a/./b",
            "a\\b",
            "a b",
            "state/\u{e9}",
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert!(!valid_name(&"a".repeat(513)));
        assert!(valid_name(&"a".repeat(512)));
    }

    #[test]
    fn sha256_is_hex_of_the_digest() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
