//! Reading the log while the writer appends: replication senders that fell
//! behind the in-memory tail read ops from disk through a [`LogCursor`].

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use meridian_crdt::codec;

use super::{LogError, Lsn, record, segment};
use crate::op::Op;

/// Reads a log directory forward from a position, while the writer appends:
/// used by replication senders that fell behind the in-memory tail.
///
/// # Correctness
/// Stops at the first record it cannot read whole (the writer may be in the
/// middle of appending it) and at `until`, so it never returns an op that
/// is not yet durable when the caller passes the committed end as `until`.
pub struct LogCursor {
    dir: PathBuf,
    next: Lsn,
    file: Option<(File, Lsn, u64, record::Format)>,
}

impl LogCursor {
    /// A cursor at `from` in the log directory `dir`.
    pub fn new(dir: &Path, from: Lsn) -> Self {
        Self {
            dir: dir.to_path_buf(),
            next: from,
            file: None,
        }
    }

    /// The next position it will read.
    pub fn position(&self) -> Lsn {
        self.next
    }

    fn open_segment(&mut self) -> Result<bool, LogError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LogError::Io { path, source }
        };
        let mut names: Vec<(Lsn, PathBuf)> = std::fs::read_dir(&self.dir)
            .map_err(io(&self.dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                segment::parse_name(&e.file_name().to_string_lossy()).map(|l| (l, e.path()))
            })
            .collect();
        names.sort();
        let Some((first, path)) = names.iter().rev().find(|(l, _)| *l <= self.next).cloned() else {
            return Ok(false);
        };
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io(&path)(e)),
        };
        let mut magic = [0u8; 8];
        match file.read_exact_at(&mut magic, 0) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(e) => return Err(io(&path)(e)),
        }
        let format = if &magic == segment::MAGIC_V1 {
            record::Format::V1
        } else {
            record::Format::V2
        };
        // Walk from the segment's start to the wanted record, by record
        // headers alone (what lies before the cursor was logged whole).
        let mut offset = segment::HEADER_LEN as u64;
        let mut lsn = first;
        while lsn < self.next {
            match skip_record(&file, offset, format).map_err(io(&path))? {
                Some(len) => {
                    offset += len;
                    lsn.0 += 1;
                }
                None => return Ok(false),
            }
        }
        self.file = Some((file, first, offset, format));
        Ok(true)
    }

    /// Up to `max` ops from the cursor on, stopping before `until`.
    pub fn read(&mut self, until: Lsn, max: usize) -> Result<Vec<(Lsn, Op)>, LogError> {
        self.read_bounded(until, max, usize::MAX)
    }

    /// As [`LogCursor::read`], stopping too once the payloads read reach
    /// `max_bytes` (always at least one op).
    pub fn read_bounded(
        &mut self,
        until: Lsn,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<(Lsn, Op)>, LogError> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while out.len() < max && bytes < max_bytes && self.next < until {
            if self.file.is_none() && !self.open_segment()? {
                break;
            }
            let Some((file, _, offset, format)) = self.file.as_mut() else {
                break;
            };
            match read_record(file, *offset, *format).map_err(|source| LogError::Io {
                path: self.dir.clone(),
                source,
            })? {
                Some((payload, len)) => {
                    let op: Op =
                        codec::decode_trusted(&payload, record::MAX_RECORD).map_err(|source| {
                            LogError::Decode {
                                segment: self.dir.clone(),
                                lsn: self.next,
                                source,
                            }
                        })?;
                    *offset += len;
                    bytes = bytes.saturating_add(payload.len());
                    out.push((self.next, op));
                    self.next.0 += 1;
                }
                None => {
                    // End of this segment: the next one starts at `next`,
                    // unless the writer has not rolled yet.
                    self.file = None;
                    let rolled =
                        std::fs::metadata(self.dir.join(segment::file_name(self.next))).is_ok();
                    if !rolled {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }
}

/// The header of the record at `offset` and its payload length, checked
/// (the header's checksum covers the length) before anything is allocated
/// for the payload; `None` when no valid header is there (yet).
fn read_header(
    file: &File,
    offset: u64,
    format: record::Format,
) -> std::io::Result<Option<(Vec<u8>, usize)>> {
    let mut header = vec![0u8; format.header_len()];
    match file.read_exact_at(&mut header, offset) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    if !matches!(
        record::parse(&header, 0, format),
        record::Parsed::Truncated | record::Parsed::Record { .. }
    ) {
        return Ok(None);
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    Ok((len <= record::MAX_RECORD).then_some((header, len)))
}

/// The framed length of the record at `offset`, from its header alone.
fn skip_record(file: &File, offset: u64, format: record::Format) -> std::io::Result<Option<u64>> {
    Ok(read_header(file, offset, format)?.map(|(h, len)| (h.len() + len) as u64))
}

/// Reads the record at `offset`: its payload and framed length, or `None`
/// when no whole, valid record is there (yet).
fn read_record(
    file: &File,
    offset: u64,
    format: record::Format,
) -> std::io::Result<Option<(Vec<u8>, u64)>> {
    let Some((header, len)) = read_header(file, offset, format)? else {
        return Ok(None);
    };
    let hl = header.len();
    let mut buf = vec![0u8; hl + len];
    buf[..hl].copy_from_slice(&header);
    match file.read_exact_at(&mut buf[hl..], offset + hl as u64) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    match record::parse(&buf, 0, format) {
        record::Parsed::Record { payload, next, .. } => Ok(Some((payload.to_vec(), next as u64))),
        _ => Ok(None),
    }
}
