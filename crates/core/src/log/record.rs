//! Record framing: how one entry sits in a segment file. Two formats,
//! chosen by the segment's header:
//!
//! ```text
//! v1 | len: u32 LE | len_crc: u32 LE | crc: u32 LE | payload: len bytes |
//! v2 | len: u32 LE | head_crc: u32 LE | group: u64 LE | crc: u32 LE | payload: len bytes |
//! ```
//! `len_crc` (v1) is the CRC32C of the four length bytes and `head_crc`
//! (v2) that of the length and group bytes, so a damaged length is caught
//! before it is used to read anything; `crc` is the CRC32C of the payload.
//!
//! `group` (v2) is the segment offset at which the record's group began. The
//! writer appends a group only once everything before it is synced, so a
//! record whose group began past some offset proves that offset was synced
//! (acknowledged): recovery tells a torn final group from corruption by it.

/// The record formats, by segment version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// No group offsets (segments written before v2).
    V1,
    /// With each record's group offset.
    V2,
}

impl Format {
    /// Bytes of framing before each payload.
    pub fn header_len(self) -> usize {
        match self {
            Format::V1 => 12,
            Format::V2 => 20,
        }
    }
}

/// Bytes of framing before each payload in the current format.
pub const HEADER_LEN: usize = 20;

/// Largest payload a record may carry. Checked before any allocation, on
/// write and on read.
pub const MAX_RECORD: usize = crate::budget::MAX_RECORD;

fn len_u32(payload: &[u8]) -> u32 {
    u32::try_from(payload.len()).unwrap_or(u32::MAX)
}

/// Appends one v1 record to `out` (kept for tests of old segments).
pub fn frame_v1(payload: &[u8], out: &mut Vec<u8>) {
    let len_bytes = len_u32(payload).to_le_bytes();
    out.extend_from_slice(&len_bytes);
    out.extend_from_slice(&crc32c::crc32c(&len_bytes).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Appends one v2 record of the group that began at segment offset `group`.
///
/// # Panics
/// Never for payloads up to [`MAX_RECORD`]; callers check the size first.
pub fn frame(payload: &[u8], group: u64, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&len_u32(payload).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
    seal_head(&mut out[start..]);
}

/// Rewrites the group offset of the v2 record at the start of `rec`.
pub fn set_group(rec: &mut [u8], group: u64) {
    rec[8..16].copy_from_slice(&group.to_le_bytes());
    seal_head(rec);
}

fn seal_head(rec: &mut [u8]) {
    let mut head = [0u8; 12];
    head[..4].copy_from_slice(&rec[..4]);
    head[4..].copy_from_slice(&rec[8..16]);
    let crc = crc32c::crc32c(&head);
    rec[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// What is found at one offset of a segment.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A whole, valid record; the next one starts at `next`.
    Record {
        /// The payload.
        payload: &'a [u8],
        /// Offset just past this record.
        next: usize,
        /// Where its group began (v2).
        group: Option<u64>,
    },
    /// No bytes left: a clean end.
    End,
    /// Too few bytes for what the record claims (a write cut short).
    Truncated,
    /// The bytes are there but do not check out.
    Damaged(&'static str),
}

/// Parses the record of format `f` at `at` in `buf`.
pub fn parse(buf: &[u8], at: usize, f: Format) -> Parsed<'_> {
    let rest = buf.get(at..).unwrap_or(&[]);
    if rest.is_empty() {
        return Parsed::End;
    }
    let hl = f.header_len();
    if rest.len() < hl {
        return Parsed::Truncated;
    }
    let word = |i: usize| u32::from_le_bytes([rest[i], rest[i + 1], rest[i + 2], rest[i + 3]]);
    let (len, crc, group) = match f {
        Format::V1 => {
            if crc32c::crc32c(&rest[..4]) != word(4) {
                return Parsed::Damaged("length checksum mismatch");
            }
            (word(0), word(8), None)
        }
        Format::V2 => {
            let mut head = [0u8; 12];
            head[..4].copy_from_slice(&rest[..4]);
            head[4..].copy_from_slice(&rest[8..16]);
            if crc32c::crc32c(&head) != word(4) {
                return Parsed::Damaged("header checksum mismatch");
            }
            let mut g = [0u8; 8];
            g.copy_from_slice(&rest[8..16]);
            (word(0), word(16), Some(u64::from_le_bytes(g)))
        }
    };
    let len = len as usize;
    if len > MAX_RECORD {
        return Parsed::Damaged("length over the record limit");
    }
    let Some(payload) = rest.get(hl..hl + len) else {
        return Parsed::Truncated;
    };
    if crc32c::crc32c(payload) != crc {
        return Parsed::Damaged("payload checksum mismatch");
    }
    Parsed::Record {
        payload,
        next: at + hl + len,
        group,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framed_records_parse_back() {
        for f in [Format::V1, Format::V2] {
            let mut buf = Vec::new();
            let put = |p: &[u8], buf: &mut Vec<u8>| match f {
                Format::V1 => frame_v1(p, buf),
                Format::V2 => frame(p, 20, buf),
            };
            put(b"hello", &mut buf);
            put(b"", &mut buf);
            let Parsed::Record {
                payload,
                next,
                group,
            } = parse(&buf, 0, f)
            else {
                panic!()
            };
            assert_eq!(payload, b"hello");
            assert_eq!(group, (f == Format::V2).then_some(20));
            let Parsed::Record { payload, next, .. } = parse(&buf, next, f) else {
                panic!()
            };
            assert_eq!(payload, b"");
            assert_eq!(parse(&buf, next, f), Parsed::End);
        }
    }

    #[test]
    fn an_all_zero_header_is_never_a_record() {
        // The log writes zeros ahead of its records; recovery relies on
        // zeros never checking out as a record.
        for f in [Format::V1, Format::V2] {
            let zeros = [0u8; 64];
            assert!(matches!(parse(&zeros, 0, f), Parsed::Damaged(_)), "{f:?}");
        }
    }

    #[test]
    fn a_rewritten_group_offset_still_checks_out() {
        let mut buf = Vec::new();
        frame(b"abc", 0, &mut buf);
        set_group(&mut buf, 4096);
        assert!(matches!(
            parse(&buf, 0, Format::V2),
            Parsed::Record {
                group: Some(4096),
                ..
            }
        ));
    }

    #[test]
    fn every_cut_is_truncated_and_every_flip_is_damaged() {
        for f in [Format::V1, Format::V2] {
            let mut buf = Vec::new();
            match f {
                Format::V1 => frame_v1(b"some payload bytes", &mut buf),
                Format::V2 => frame(b"some payload bytes", 20, &mut buf),
            }
            for cut in 1..buf.len() {
                assert_eq!(parse(&buf[..cut], 0, f), Parsed::Truncated, "cut at {cut}");
            }
            for byte in 0..buf.len() {
                for bit in 0..8 {
                    let mut b = buf.clone();
                    b[byte] ^= 1 << bit;
                    assert!(
                        matches!(parse(&b, 0, f), Parsed::Damaged(_) | Parsed::Truncated),
                        "{f:?}: flip {byte}:{bit} went unnoticed"
                    );
                }
            }
        }
    }
}
