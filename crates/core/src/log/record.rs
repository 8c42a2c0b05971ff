//! Record framing: how one entry sits in a segment file.
//!
//! ```text
//! | len: u32 LE | len_crc: u32 LE | crc: u32 LE | payload: len bytes |
//! ```
//! `len_crc` is the CRC32C of the four length bytes, so a damaged length is
//! caught before it is used to read anything; `crc` is the CRC32C of the
//! payload.

/// Bytes of framing before each payload.
pub const HEADER_LEN: usize = 12;

/// Largest payload a record may carry. Checked before any allocation, on
/// write and on read.
pub const MAX_RECORD: usize = crate::budget::MAX_RECORD;

/// Appends one framed record to `out`.
///
/// # Panics
/// Never for payloads up to [`MAX_RECORD`]; callers check the size first.
pub fn frame(payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let len_bytes = len.to_le_bytes();
    out.extend_from_slice(&len_bytes);
    out.extend_from_slice(&crc32c::crc32c(&len_bytes).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
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
    },
    /// No bytes left: a clean end.
    End,
    /// Too few bytes for what the record claims (a write cut short).
    Truncated,
    /// The bytes are there but do not check out.
    Damaged(&'static str),
}

/// Parses the record at `at` in `buf`.
pub fn parse(buf: &[u8], at: usize) -> Parsed<'_> {
    let rest = buf.get(at..).unwrap_or(&[]);
    if rest.is_empty() {
        return Parsed::End;
    }
    if rest.len() < HEADER_LEN {
        return Parsed::Truncated;
    }
    let word = |i: usize| u32::from_le_bytes([rest[i], rest[i + 1], rest[i + 2], rest[i + 3]]);
    let (len, len_crc, crc) = (word(0), word(4), word(8));
    if crc32c::crc32c(&rest[..4]) != len_crc {
        return Parsed::Damaged("length checksum mismatch");
    }
    let len = len as usize;
    if len > MAX_RECORD {
        return Parsed::Damaged("length over the record limit");
    }
    let Some(payload) = rest.get(HEADER_LEN..HEADER_LEN + len) else {
        return Parsed::Truncated;
    };
    if crc32c::crc32c(payload) != crc {
        return Parsed::Damaged("payload checksum mismatch");
    }
    Parsed::Record {
        payload,
        next: at + HEADER_LEN + len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framed_records_parse_back() {
        let mut buf = Vec::new();
        frame(b"hello", &mut buf);
        frame(b"", &mut buf);
        let Parsed::Record { payload, next } = parse(&buf, 0) else {
            panic!()
        };
        assert_eq!(payload, b"hello");
        let Parsed::Record { payload, next } = parse(&buf, next) else {
            panic!()
        };
        assert_eq!(payload, b"");
        assert_eq!(parse(&buf, next), Parsed::End);
    }

    #[test]
    fn every_cut_is_truncated_and_every_flip_is_damaged() {
        let mut buf = Vec::new();
        frame(b"some payload bytes", &mut buf);
        for cut in 1..buf.len() {
            assert_eq!(parse(&buf[..cut], 0), Parsed::Truncated, "cut at {cut}");
        }
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[byte] ^= 1 << bit;
                assert!(
                    matches!(parse(&b, 0), Parsed::Damaged(_) | Parsed::Truncated),
                    "flip {byte}:{bit} went unnoticed"
                );
            }
        }
    }
}
