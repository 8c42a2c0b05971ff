//! Segment files: a header, then framed records.
//!
//! ```text
//! | magic "MRDNLOG" + version | first_lsn: u64 LE | crc32c of the 16 bytes before: u32 LE | records... |
//! ```
//! Version 2 segments hold [`record::Format::V2`] records; version 1 ones
//! (written before) are read as they are and never appended to.
//! Files are named after their first LSN (`00000000000000000001.seg`), so a
//! directory listing gives their order.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use meridian_crdt::{ReplicaId, Seq};

use super::record::{self, Format, Parsed};
use super::{LogError, Lsn};

/// Magic bytes at the start of every new segment (the last byte is the format version).
pub const MAGIC: &[u8; 8] = b"MRDNLOG\x02";
/// Magic bytes of a version 1 segment.
pub const MAGIC_V1: &[u8; 8] = b"MRDNLOG\x01";
/// Bytes of segment header.
pub const HEADER_LEN: usize = 20;

/// What the log knows about one segment without reading it again.
#[derive(Clone, Debug)]
pub struct SegmentMeta {
    /// The file.
    pub path: PathBuf,
    /// LSN of its first record.
    pub first_lsn: Lsn,
    /// Number of records.
    pub records: u64,
    /// Bytes of header and records (the file of the segment being written
    /// is longer: zeros follow, see `log::PREALLOCATE`).
    pub bytes: u64,
    /// Highest HLC wall time of its ops (0 when empty).
    pub max_wall_ms: u64,
    /// Per origin, the lowest and highest seq of its ops in this segment.
    pub origins: BTreeMap<ReplicaId, (Seq, Seq)>,
    /// The format of its records.
    pub format: Format,
}

impl SegmentMeta {
    fn new(path: PathBuf, first_lsn: Lsn) -> Self {
        Self {
            path,
            first_lsn,
            records: 0,
            bytes: HEADER_LEN as u64,
            max_wall_ms: 0,
            origins: BTreeMap::new(),
            format: Format::V2,
        }
    }

    /// LSN one past the last record.
    pub fn end_lsn(&self) -> Lsn {
        Lsn(self.first_lsn.0 + self.records)
    }

    /// Notes one appended (or recovered) record.
    pub fn note(&mut self, origin: &ReplicaId, seq: Seq, wall_ms: u64, framed_len: u64) {
        self.records += 1;
        self.bytes += framed_len;
        self.max_wall_ms = self.max_wall_ms.max(wall_ms);
        self.origins
            .entry(origin.clone())
            .and_modify(|(lo, hi)| {
                *lo = (*lo).min(seq);
                *hi = (*hi).max(seq);
            })
            .or_insert((seq, seq));
    }
}

/// The file name of the segment starting at `lsn`.
pub fn file_name(lsn: Lsn) -> String {
    format!("{:020}.seg", lsn.0)
}

/// Parses a segment file name back into its first LSN.
pub fn parse_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_suffix(".seg")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok().map(Lsn))
        .flatten()
}

/// A segment header of the given format.
pub fn header(first_lsn: Lsn, format: Format) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(match format {
        Format::V1 => MAGIC_V1,
        Format::V2 => MAGIC,
    });
    h[8..16].copy_from_slice(&first_lsn.0.to_le_bytes());
    let crc = crc32c::crc32c(&h[..16]);
    h[16..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Creates a new segment durably: header written and synced, then the
/// directory synced so the file itself survives a crash.
pub fn create(dir: &Path, first_lsn: Lsn) -> Result<(File, SegmentMeta), LogError> {
    let path = dir.join(file_name(first_lsn));
    let io = |source| LogError::Io {
        path: path.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(io)?;
    // A segment whose creation failed is not left behind: the one before
    // it stays the newest, so nothing takes it for sealed.
    let made = file
        .write_all(&header(first_lsn, Format::V2))
        .and_then(|()| file.sync_all())
        .map_err(io)
        .and_then(|()| sync_dir(dir));
    if let Err(e) = made {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok((file, SegmentMeta::new(path, first_lsn)))
}

/// Fsyncs a directory, making file creations and deletions in it durable.
pub fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| LogError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

/// How a segment's scan ended.
#[derive(Debug)]
pub enum ScanEnd {
    /// Every byte was a valid record.
    Clean,
    /// The bytes from `offset` on are the remains of an unfinished write:
    /// nothing valid follows.
    TornTail {
        /// Where the valid records end.
        offset: u64,
    },
    /// A damaged record with valid data after it.
    Corrupt {
        /// Where the damage starts.
        offset: u64,
        /// What was wrong.
        reason: &'static str,
    },
}

/// A segment read from disk: its bytes and record format.
pub struct Loaded {
    /// The whole file.
    pub bytes: Vec<u8>,
    /// The format of its records.
    pub format: Format,
}

/// Reads a segment file and checks its header against the name's LSN.
/// `None` when the file is too short or zero-filled where the header belongs
/// (a segment whose creation was cut short; it holds no records).
pub fn load(path: &Path, first_lsn: Lsn) -> Result<Option<Loaded>, LogError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|source| LogError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    from_bytes(bytes, first_lsn).map_err(|reason| LogError::Corrupt {
        segment: path.to_path_buf(),
        offset: 0,
        reason,
    })
}

/// A segment's bytes (read from disk or an archive), checked against the
/// LSN its name gives. `None` when too short or zero-filled where the
/// header belongs.
pub fn from_bytes(bytes: Vec<u8>, first_lsn: Lsn) -> Result<Option<Loaded>, &'static str> {
    if bytes.len() < HEADER_LEN || bytes[..HEADER_LEN].iter().all(|b| *b == 0) {
        return Ok(None);
    }
    let format = [Format::V2, Format::V1]
        .into_iter()
        .find(|f| bytes[..HEADER_LEN] == header(first_lsn, *f))
        .ok_or("segment header does not match its file name")?;
    Ok(Some(Loaded { bytes, format }))
}

/// One past the last nonzero byte of `buf` (0 when all zero): the written
/// part of a segment whose tail was preallocated with zeros.
pub fn data_end(buf: &[u8]) -> usize {
    buf.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1)
}

/// Walks the records of a loaded segment, handing each payload to `f`.
///
/// The segment being written is preallocated with zeros past its last
/// record (so a group's `fdatasync` need not write the inode): zeros from a
/// record boundary to the end of the file are a clean end, not damage.
pub fn scan(
    loaded: &Loaded,
    mut f: impl FnMut(&[u8], u64) -> Result<(), LogError>,
) -> Result<ScanEnd, LogError> {
    let buf = &loaded.bytes;
    let format = loaded.format;
    let written = data_end(buf);
    let mut at = HEADER_LEN;
    loop {
        if at >= written {
            return Ok(ScanEnd::Clean);
        }
        match record::parse(buf, at, format) {
            Parsed::End => return Ok(ScanEnd::Clean),
            Parsed::Record { payload, next, .. } => {
                f(payload, (next - at) as u64)?;
                at = next;
            }
            Parsed::Truncated => return Ok(ScanEnd::TornTail { offset: at as u64 }),
            Parsed::Damaged(reason) => {
                return Ok(if acknowledged(buf, at, format) {
                    ScanEnd::Corrupt {
                        offset: at as u64,
                        reason,
                    }
                } else {
                    ScanEnd::TornTail { offset: at as u64 }
                });
            }
        }
    }
}

/// Whether damage at `at` lies in what was synced (so acknowledged) rather
/// than in the final group, which was never acknowledged if its sync did
/// not complete: pages of a group can reach the disk out of order, leaving
/// a hole with valid records after it.
///
/// v2: a valid record after the damage whose group began past it proves
/// the damage was synced. v1 records carry no group: any valid record after
/// the damage counts as proof (the conservative reading).
///
/// Only the written part is searched (a preallocated tail holds no record),
/// and offsets whose would-be header is all zeros are passed over at once.
fn acknowledged(buf: &[u8], at: usize, format: Format) -> bool {
    let written = data_end(buf);
    let hl = format.header_len();
    // An all-zero header never checks out (the CRC of zeros is not zero).
    let zeros = |q: usize| {
        buf.get(q..q + hl)
            .is_some_and(|h| h.iter().all(|b| *b == 0))
    };
    (at + 1..written).any(|q| {
        !zeros(q)
            && match record::parse(buf, q, format) {
                Parsed::Record { payload, group, .. } if !payload.is_empty() => match group {
                    Some(g) => g > at as u64,
                    None => true,
                },
                _ => false,
            }
    })
}

/// Cuts a segment file at `offset` and syncs it.
pub fn truncate(path: &Path, offset: u64) -> Result<(), LogError> {
    let io = |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = OpenOptions::new().write(true).open(path).map_err(io)?;
    f.set_len(offset).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Removes a segment file and syncs its directory.
pub fn remove(path: &Path) -> Result<(), LogError> {
    fs::remove_file(path).map_err(|source| LogError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(file_name(Lsn(42)), "00000000000000000042.seg");
        assert_eq!(parse_name("00000000000000000042.seg"), Some(Lsn(42)));
        assert_eq!(parse_name("42.seg"), None);
        assert_eq!(parse_name("0000000000000000004x.seg"), None);
    }
}
