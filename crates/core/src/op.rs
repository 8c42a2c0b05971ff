//! Ops: the unit of logging, shipping and applying.

use std::fmt;

use meridian_crdt::{Dot, Hlc, ObjectOp, VersionVector};
use serde::{Deserialize, Deserializer, Serialize};

/// One atomic change made in one region: every mutation in it is applied
/// together, in every region, or not at all.
///
/// `(dot.replica, dot.seq)` identifies it everywhere; `hlc` orders it;
/// `deps` is what its origin had applied when it was made (the origin's
/// version vector), so a region applies it only after all of that.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// Identity: origin replica and its seq.
    pub dot: Dot,
    /// Hybrid logical timestamp.
    pub hlc: Hlc,
    /// The origin's version vector before this op.
    pub deps: VersionVector,
    /// The changes, at most one per key.
    pub mutations: Vec<Mutation>,
}

/// A change to one key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mutation {
    /// The keyspace.
    pub keyspace: KeyspaceName,
    /// The key.
    pub key: Key,
    /// The change, of the keyspace's policy.
    pub op: ObjectOp,
}

/// Why a name or key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// A keyspace name broke the rule.
    #[error(
        "keyspace name {0:?} is invalid: use 1 to 64 characters from a-z, 0-9, '_' and '-', starting with a letter or digit"
    )]
    Keyspace(String),
    /// A key was empty.
    #[error("key is empty")]
    EmptyKey,
    /// A key was too long.
    #[error("key is {len} bytes, over the {max}-byte limit")]
    KeyTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// A keyspace name: 1 to 64 of `a-z 0-9 _ -`, not starting with `_` (names
/// starting with `_` are Meridian's own, like `_keyspaces`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct KeyspaceName(String);

impl KeyspaceName {
    /// The keyspace every region has from the start (policy `lww`).
    pub const DEFAULT: &'static str = "default";
    /// Where keyspace definitions themselves are replicated.
    pub const SYSTEM: &'static str = "_keyspaces";

    /// A user keyspace name, checked.
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        let ok = !name.is_empty()
            && name.len() <= 64
            && name.as_bytes()[0] != b'_'
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(name))
        } else {
            Err(NameError::Keyspace(name))
        }
    }

    /// The `default` keyspace.
    pub fn default_keyspace() -> Self {
        Self(Self::DEFAULT.into())
    }

    /// The system keyspace holding keyspace definitions.
    pub fn system() -> Self {
        Self(Self::SYSTEM.into())
    }

    /// Whether this is Meridian's own keyspace.
    pub fn is_system(&self) -> bool {
        self.0.starts_with('_')
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for KeyspaceName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == Self::SYSTEM {
            return Ok(Self(s));
        }
        Self::new(s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for KeyspaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A key: 1 to [`Key::MAX_LEN`] bytes of UTF-8.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Key(String);

impl Key {
    /// Longest key accepted, in bytes.
    pub const MAX_LEN: usize = 1024;

    /// A key, checked.
    pub fn new(key: impl Into<String>) -> Result<Self, NameError> {
        let key = key.into();
        if key.is_empty() {
            return Err(NameError::EmptyKey);
        }
        if key.len() > Self::MAX_LEN {
            return Err(NameError::KeyTooLong {
                len: key.len(),
                max: Self::MAX_LEN,
            });
        }
        Ok(Self(key))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<Op> for Op {
    fn as_ref(&self) -> &Op {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyspace_names() {
        assert!(KeyspaceName::new("orders-2026_eu").is_ok());
        for bad in ["", "_keyspaces", "Orders", "a b", &"x".repeat(65)] {
            assert!(KeyspaceName::new(bad).is_err(), "{bad}");
        }
        assert!(KeyspaceName::system().is_system());
    }

    #[test]
    fn keys() {
        assert!(Key::new("user/42 ü").is_ok());
        assert_eq!(Key::new(""), Err(NameError::EmptyKey));
        assert_eq!(
            Key::new("k".repeat(1025)),
            Err(NameError::KeyTooLong {
                len: 1025,
                max: 1024
            })
        );
    }
}
