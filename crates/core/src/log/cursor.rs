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
    file: Option<(File, Lsn, u64)>,
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
        // Walk from the segment's start to the wanted record.
        let mut offset = segment::HEADER_LEN as u64;
        let mut lsn = first;
        while lsn < self.next {
            match read_record(&file, offset).map_err(io(&path))? {
                Some((_, len)) => {
                    offset += len;
                    lsn.0 += 1;
                }
                None => return Ok(false),
            }
        }
        self.file = Some((file, first, offset));
        Ok(true)
    }

    /// Up to `max` ops from the cursor on, stopping before `until`.
    pub fn read(&mut self, until: Lsn, max: usize) -> Result<Vec<(Lsn, Op)>, LogError> {
        let mut out = Vec::new();
        while out.len() < max && self.next < until {
            if self.file.is_none() && !self.open_segment()? {
                break;
            }
            let Some((file, _, offset)) = self.file.as_mut() else {
                break;
            };
            match read_record(file, *offset).map_err(|source| LogError::Io {
                path: self.dir.clone(),
                source,
            })? {
                Some((payload, len)) => {
                    let op: Op = codec::decode(&payload, record::MAX_RECORD).map_err(|source| {
                        LogError::Decode {
                            segment: self.dir.clone(),
                            lsn: self.next,
                            source,
                        }
                    })?;
                    *offset += len;
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

/// Reads the record at `offset`: its payload and framed length, or `None`
/// when no whole, valid record is there (yet).
fn read_record(file: &File, offset: u64) -> std::io::Result<Option<(Vec<u8>, u64)>> {
    let mut header = [0u8; record::HEADER_LEN];
    match file.read_exact_at(&mut header, offset) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if crc32c::crc32c(&header[..4])
        != u32::from_le_bytes([header[4], header[5], header[6], header[7]])
        || len > record::MAX_RECORD
    {
        return Ok(None);
    }
    let mut buf = vec![0u8; record::HEADER_LEN + len];
    buf[..record::HEADER_LEN].copy_from_slice(&header);
    match file.read_exact_at(
        &mut buf[record::HEADER_LEN..],
        offset + record::HEADER_LEN as u64,
    ) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    match record::parse(&buf, 0) {
        record::Parsed::Record { payload, next } => Ok(Some((payload.to_vec(), next as u64))),
        _ => Ok(None),
    }
}
