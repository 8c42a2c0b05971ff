//! Identities: regions, replicas, sequence numbers and dots.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// Why a name could not be used as an identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// A region name broke the naming rule.
    #[error(
        "region name {name:?} is invalid: use 1 to {max} characters from a-z, 0-9 and '-', starting with a letter",
        max = RegionId::MAX_LEN
    )]
    BadRegion {
        /// The name as given.
        name: String,
    },
}

/// The name of a region (`us-east`, `eu-west`).
///
/// # Invariants
/// 1 to [`RegionId::MAX_LEN`] bytes of `a-z`, `0-9` and `-`, starting with a
/// letter. Construction and decoding both enforce it, so a region name is
/// always safe to put in a URL, a metric label or a file name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct RegionId(String);

impl RegionId {
    /// Longest region name accepted.
    pub const MAX_LEN: usize = 32;

    /// Checks `name` against the naming rule.
    pub fn new(name: impl Into<String>) -> Result<Self, IdError> {
        let name = name.into();
        let ok = !name.is_empty()
            && name.len() <= Self::MAX_LEN
            && name.as_bytes()[0].is_ascii_lowercase()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(name))
        } else {
            Err(IdError::BadRegion { name })
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for RegionId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RegionId::new(s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for RegionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One life of a region's data: a region whose disk is wiped comes back as a
/// new incarnation, so its sequence numbers never collide with the old ones.
///
/// Ordered by region, then incarnation; this order breaks HLC ties, so it is
/// the same in every region.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplicaId {
    /// The region this replica serves.
    pub region: RegionId,
    /// Chosen at random when the region's data directory is created.
    pub incarnation: Uuid,
}

impl ReplicaId {
    /// A replica id from its parts.
    pub fn new(region: RegionId, incarnation: Uuid) -> Self {
        Self {
            region,
            incarnation,
        }
    }

    /// The first eight hex digits of the incarnation, enough for people.
    pub fn short_incarnation(&self) -> String {
        let mut s = self.incarnation.simple().to_string();
        s.truncate(8);
        s
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.region, self.short_incarnation())
    }
}

// Encoded as a two-element array `[region, incarnation]`; the incarnation is 16
// raw bytes in MessagePack and a hyphenated string in JSON.
impl Serialize for ReplicaId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (&self.region, &self.incarnation).serialize(s)
    }
}

impl<'de> Deserialize<'de> for ReplicaId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (region, incarnation) = <(RegionId, Uuid)>::deserialize(d)?;
        Ok(Self {
            region,
            incarnation,
        })
    }
}

/// A per-origin operation counter, contiguous from 1. Zero means "nothing".
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    /// The seq before any op.
    pub const ZERO: Seq = Seq(0);

    /// The next seq; `None` at `u64::MAX` (never reached in practice, but never wrapped).
    pub fn next(self) -> Option<Seq> {
        self.0.checked_add(1).map(Seq)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// `(replica, seq)`: the identity of one op, the same in every region.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dot {
    /// The replica that created the op.
    pub replica: ReplicaId,
    /// Its position in that replica's sequence.
    pub seq: Seq,
}

impl Dot {
    /// A dot from its parts.
    pub fn new(replica: ReplicaId, seq: Seq) -> Self {
        Self { replica, seq }
    }
}

impl fmt::Display for Dot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.replica, self.seq)
    }
}

impl Serialize for Dot {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (&self.replica, self.seq).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Dot {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (replica, seq) = <(ReplicaId, Seq)>::deserialize(d)?;
        Ok(Self { replica, seq })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_names_follow_the_rule() {
        assert!(RegionId::new("us-east").is_ok());
        assert!(RegionId::new("ap-south-1").is_ok());
        for bad in ["", "US", "1east", "eu_west", "a/b", &"x".repeat(33)] {
            let err = RegionId::new(bad).unwrap_err();
            assert!(err.to_string().contains("invalid"), "{bad}: {err}");
        }
    }

    #[test]
    fn decoding_rejects_a_bad_region_name() {
        let bytes = rmp_serde::to_vec(&"Not A Region").unwrap();
        assert!(rmp_serde::from_slice::<RegionId>(&bytes).is_err());
    }

    #[test]
    fn replica_ids_order_by_region_then_incarnation() {
        let a = ReplicaId::new(RegionId::new("a").unwrap(), Uuid::from_u128(9));
        let b = ReplicaId::new(RegionId::new("b").unwrap(), Uuid::from_u128(1));
        let a2 = ReplicaId::new(RegionId::new("a").unwrap(), Uuid::from_u128(10));
        assert!(a < b && a < a2 && a2 < b);
        assert_eq!(a.to_string(), "a/00000000");
    }

    #[test]
    fn seq_never_wraps() {
        assert_eq!(Seq(u64::MAX).next(), None);
        assert_eq!(Seq(1).next(), Some(Seq(2)));
    }
}
