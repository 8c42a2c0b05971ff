//! What the golden-vector files share: fixed identities and times, and the
//! comparison that fails when an encoding's bytes change.

#![allow(dead_code)]

use meridian_crdt::codec::FORMAT_VERSION;
use meridian_crdt::{RegionId, ReplicaId};
use uuid::Uuid;

/// A fixed wall time (ms) the vectors are stamped from.
pub const T0: u64 = 1_764_172_170_123;

/// A replica with a fixed incarnation.
pub fn rep(name: &str, n: u128) -> ReplicaId {
    ReplicaId::new(RegionId::new(name).unwrap(), Uuid::from_u128(n))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes a hex string spells.
pub fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// `bytes` carry the codec's version marker and are exactly `expect`.
#[track_caller]
pub fn pinned(bytes: &[u8], expect: &str) {
    assert_eq!(bytes[0], FORMAT_VERSION, "no version marker");
    assert_eq!(hex(bytes), expect, "encoding changed");
}
