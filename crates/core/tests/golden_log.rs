//! Golden vectors of the op log's framing on disk: a segment header in
//! each format (its magic is the version marker) and a record in each.
//! A failure here means a log written by an older build may no longer
//! read: add a format (and keep reading the old one), never just update
//! the vector.

mod vectors;

use meridian_core::Lsn;
use meridian_core::log::record::{self, Format};
use meridian_core::log::segment;
use vectors::hex;

#[test]
fn segment_headers() {
    let v2 = segment::header(Lsn(42), Format::V2);
    assert_eq!(&v2[..8], segment::MAGIC);
    assert_eq!(hex(&v2), SEGMENT_V2);
    let v1 = segment::header(Lsn(42), Format::V1);
    assert_eq!(&v1[..8], segment::MAGIC_V1);
    assert_eq!(hex(&v1), SEGMENT_V1);
}

#[test]
fn records() {
    let mut v2 = Vec::new();
    record::frame(b"hello", 20, &mut v2);
    assert_eq!(v2.len(), Format::V2.header_len() + 5);
    assert_eq!(hex(&v2), RECORD_V2);
    let mut v1 = Vec::new();
    record::frame_v1(b"hello", &mut v1);
    assert_eq!(v1.len(), Format::V1.header_len() + 5);
    assert_eq!(hex(&v1), RECORD_V1);
}

const SEGMENT_V2: &str = "4d52444e4c4f47022a00000000000000a9834fc2";
const SEGMENT_V1: &str = "4d52444e4c4f47012a00000000000000808fe0db";
const RECORD_V2: &str = "0500000074babd7a14000000000000004cbb719a68656c6c6f";
const RECORD_V1: &str = "050000008cd000ee4cbb719a68656c6c6f";
