//! Access tokens: who may read, write or administer what.
//!
//! A token is a bearer secret the client sends (`Authorization: Bearer
//! ...`). Regions store only its SHA-256 (a fast hash is right for a
//! random 256-bit secret: there is nothing to guess, and a slow password
//! hash on every request would cost more than the request).
//!
//! Definitions replicate as data, like keyspaces: each token is a
//! last-writer-wins entry `token/ID` in the system keyspace, so a token
//! made in one region works in every region once replicated. Revocation is
//! a second entry, `revoked/ID`, that is only ever written, never removed:
//! a revocation cannot be undone by a concurrent update of the token
//! (last-writer-wins on one entry could pick the update).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::op::Key;

/// System-keyspace prefix of token definitions.
pub const TOKEN_PREFIX: &str = "token/";
/// System-keyspace prefix of revocations.
pub const REVOKED_PREFIX: &str = "revoked/";
/// Most grants one token carries.
pub const MAX_GRANTS: usize = 64;
/// Longest token name, in bytes.
pub const MAX_NAME: usize = 128;
/// A grant's keyspace that stands for every keyspace.
pub const ANY_KEYSPACE: &str = "*";

/// What a grant allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Right {
    /// Reads: keys, listings, the conflict ledger, definitions, status.
    Read,
    /// Writes: put, delete, ops, batches.
    Write,
    /// Administration: keyspaces, ownership, merges, backups, tokens,
    /// promotion. Implies read and write on the same scope.
    Admin,
}

impl Right {
    /// Whether holding `self` allows `wanted`.
    pub fn allows(self, wanted: Right) -> bool {
        self == wanted || self == Right::Admin
    }

    /// The name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Right::Read => "read",
            Right::Write => "write",
            Right::Admin => "admin",
        }
    }
}

/// Rights on one keyspace (or `*`, every keyspace), optionally only on keys
/// starting with `prefix`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// A keyspace name, or `*`.
    pub keyspace: String,
    /// Keys this grant covers start with this (empty: every key).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    /// What it allows.
    pub rights: Vec<Right>,
}

impl Grant {
    /// Whether this grant covers `keyspace` (`None`: the cluster as a
    /// whole, which only a `*` grant covers).
    fn covers_keyspace(&self, keyspace: Option<&str>) -> bool {
        self.keyspace == ANY_KEYSPACE || keyspace == Some(self.keyspace.as_str())
    }

    fn allows(&self, wanted: Right) -> bool {
        self.rights.iter().any(|r| r.allows(wanted))
    }
}

/// A token as stored (never the secret itself).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenDef {
    /// Public identifier (also part of the secret, so a token names itself).
    pub id: String,
    /// Lower-case hex SHA-256 of the whole secret.
    pub hash: String,
    /// What it is for.
    #[serde(default)]
    pub name: String,
    /// What it allows.
    pub grants: Vec<Grant>,
    /// When it was made (wall ms at its origin).
    pub created_ms: u64,
    /// When it stops working (wall ms), if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
}

/// Why a token definition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// An id that is not 1 to 64 of `a-z 0-9`.
    #[error("token id {0:?} is invalid: use 1 to 64 characters from a-z and 0-9")]
    Id(String),
    /// The hash is not 64 lower-case hex digits.
    #[error("token hash must be 64 lower-case hex digits (SHA-256)")]
    Hash,
    /// No grants, or too many.
    #[error("a token needs 1 to {MAX_GRANTS} grants, not {0}")]
    Grants(usize),
    /// A grant names no rights.
    #[error("grant {0} names no rights")]
    NoRights(usize),
    /// A grant's keyspace is neither `*` nor a keyspace name.
    #[error("grant {index}: {why}")]
    Keyspace {
        /// Which grant.
        index: usize,
        /// Why.
        why: String,
    },
    /// A grant's prefix is longer than a key.
    #[error("grant {0}: the prefix is longer than the longest key ({max} bytes)", max = Key::MAX_LEN)]
    Prefix(usize),
    /// The name is too long.
    #[error("token name is {0} bytes, over the {MAX_NAME}-byte limit")]
    Name(usize),
}

/// Whether `id` is a valid token id.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

impl TokenDef {
    /// Checks everything a region relies on.
    pub fn validate(&self) -> Result<(), TokenError> {
        if !valid_id(&self.id) {
            return Err(TokenError::Id(self.id.clone()));
        }
        let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
        if self.hash.len() != 64 || !self.hash.bytes().all(hex) {
            return Err(TokenError::Hash);
        }
        if self.name.len() > MAX_NAME {
            return Err(TokenError::Name(self.name.len()));
        }
        if self.grants.is_empty() || self.grants.len() > MAX_GRANTS {
            return Err(TokenError::Grants(self.grants.len()));
        }
        for (i, g) in self.grants.iter().enumerate() {
            if g.rights.is_empty() {
                return Err(TokenError::NoRights(i));
            }
            if g.keyspace != ANY_KEYSPACE
                && let Err(e) = crate::op::KeyspaceName::new(g.keyspace.as_str())
            {
                return Err(TokenError::Keyspace {
                    index: i,
                    why: e.to_string(),
                });
            }
            if g.prefix.len() > Key::MAX_LEN {
                return Err(TokenError::Prefix(i));
            }
        }
        Ok(())
    }

    /// The system-keyspace key of this token.
    pub fn key(&self) -> String {
        format!("{TOKEN_PREFIX}{}", self.id)
    }

    /// Whether it allows `wanted` on `key` of `keyspace` (`None` keyspace:
    /// the cluster as a whole; `None` key: every key of the keyspace).
    pub fn allows(&self, wanted: Right, keyspace: Option<&str>, key: Option<&str>) -> bool {
        self.grants.iter().any(|g| {
            g.covers_keyspace(keyspace)
                && g.allows(wanted)
                && match key {
                    Some(k) => k.starts_with(g.prefix.as_str()),
                    None => g.prefix.is_empty(),
                }
        })
    }

    /// Whether it allows `wanted` on keys of `keyspace` starting with
    /// `prefix` (a listing).
    pub fn allows_prefix(&self, wanted: Right, keyspace: &str, prefix: &str) -> bool {
        self.grants.iter().any(|g| {
            g.covers_keyspace(Some(keyspace))
                && g.allows(wanted)
                && prefix.starts_with(g.prefix.as_str())
        })
    }

    /// Whether it allows `wanted` on anything at all (status, listings of
    /// definitions).
    pub fn allows_any(&self, wanted: Right) -> bool {
        self.grants.iter().any(|g| g.allows(wanted))
    }
}

/// The tokens a region knows, with revocations.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    by_id: BTreeMap<String, Arc<TokenDef>>,
    by_hash: BTreeMap<String, String>,
    revoked: BTreeMap<String, u64>,
}

impl Tokens {
    /// Installs (or replaces) a definition.
    pub fn insert(&mut self, def: TokenDef) {
        if let Some(old) = self.by_id.get(&def.id) {
            self.by_hash.remove(&old.hash);
        }
        self.by_hash.insert(def.hash.clone(), def.id.clone());
        self.by_id.insert(def.id.clone(), Arc::new(def));
    }

    /// Records a revocation (for good: there is no un-revoke).
    pub fn revoke(&mut self, id: String, at_ms: u64) {
        self.revoked.entry(id).or_insert(at_ms);
    }

    /// The live token whose secret hashes to `hash` at wall time `now_ms`.
    pub fn live(&self, hash: &str, now_ms: u64) -> Option<&Arc<TokenDef>> {
        let id = self.by_hash.get(hash)?;
        if self.revoked.contains_key(id) {
            return None;
        }
        self.by_id
            .get(id)
            .filter(|d| d.hash == hash && d.expires_ms.is_none_or(|e| now_ms < e))
    }

    /// A token by id, with when it was revoked.
    pub fn get(&self, id: &str) -> Option<(&Arc<TokenDef>, Option<u64>)> {
        self.by_id
            .get(id)
            .map(|d| (d, self.revoked.get(id).copied()))
    }

    /// Every token, by id, with when each was revoked.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<TokenDef>, Option<u64>)> {
        self.by_id
            .values()
            .map(|d| (d, self.revoked.get(&d.id).copied()))
    }

    /// How many tokens are neither revoked nor expired at `now_ms`.
    pub fn live_count(&self, now_ms: u64) -> usize {
        self.by_id
            .values()
            .filter(|d| {
                !self.revoked.contains_key(&d.id) && d.expires_ms.is_none_or(|e| now_ms < e)
            })
            .count()
    }

    /// Ids revoked (also ones whose definition has not arrived yet).
    pub fn revoked_ids(&self) -> &BTreeMap<String, u64> {
        &self.revoked
    }

    /// Whether `id` is revoked.
    pub fn is_revoked(&self, id: &str) -> bool {
        self.revoked.contains_key(id)
    }
}

/// The value of a `revoked/ID` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// When (wall ms at the revoking region).
    pub at_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(grants: Vec<Grant>) -> TokenDef {
        TokenDef {
            id: "abc123".into(),
            hash: "a".repeat(64),
            name: "app".into(),
            grants,
            created_ms: 1,
            expires_ms: None,
        }
    }

    fn grant(ks: &str, prefix: &str, rights: &[Right]) -> Grant {
        Grant {
            keyspace: ks.into(),
            prefix: prefix.into(),
            rights: rights.to_vec(),
        }
    }

    #[test]
    fn rights_scope_by_keyspace_and_prefix() {
        let t = def(vec![
            grant("orders", "eu/", &[Right::Write]),
            grant("users", "", &[Right::Read]),
        ]);
        assert!(t.allows(Right::Write, Some("orders"), Some("eu/1")));
        assert!(!t.allows(Right::Write, Some("orders"), Some("us/1")));
        assert!(!t.allows(Right::Read, Some("orders"), Some("eu/1")));
        assert!(t.allows(Right::Read, Some("users"), Some("x")));
        assert!(t.allows(Right::Read, Some("users"), None));
        assert!(!t.allows(Right::Write, Some("orders"), None));
        assert!(!t.allows(Right::Admin, None, None));
        assert!(t.allows_prefix(Right::Write, "orders", "eu/a"));
        assert!(!t.allows_prefix(Right::Write, "orders", "e"));
        let admin = def(vec![grant("*", "", &[Right::Admin])]);
        for r in [Right::Read, Right::Write, Right::Admin] {
            assert!(admin.allows(r, None, None));
            assert!(admin.allows(r, Some("any"), Some("k")));
        }
    }

    #[test]
    fn validation_at_and_over_each_limit() {
        let ok = def(vec![grant("*", "", &[Right::Read]); MAX_GRANTS]);
        assert_eq!(ok.validate(), Ok(()));
        let over = def(vec![grant("*", "", &[Right::Read]); MAX_GRANTS + 1]);
        assert_eq!(over.validate(), Err(TokenError::Grants(MAX_GRANTS + 1)));
        assert_eq!(def(vec![]).validate(), Err(TokenError::Grants(0)));
        assert_eq!(
            def(vec![grant("ks", "", &[])]).validate(),
            Err(TokenError::NoRights(0))
        );
        assert!(
            def(vec![grant("Bad", "", &[Right::Read])])
                .validate()
                .is_err()
        );
        let long = "p".repeat(Key::MAX_LEN + 1);
        assert_eq!(
            def(vec![grant("ks", &long, &[Right::Read])]).validate(),
            Err(TokenError::Prefix(0))
        );
        let mut named = def(vec![grant("ks", "", &[Right::Read])]);
        named.name = "n".repeat(MAX_NAME);
        assert_eq!(named.validate(), Ok(()));
        named.name.push('n');
        assert_eq!(named.validate(), Err(TokenError::Name(MAX_NAME + 1)));
        let mut bad_hash = def(vec![grant("ks", "", &[Right::Read])]);
        bad_hash.hash = "A".repeat(64);
        assert_eq!(bad_hash.validate(), Err(TokenError::Hash));
    }

    #[test]
    fn revocation_is_final_and_expiry_holds() {
        let mut ts = Tokens::default();
        let mut t = def(vec![grant("*", "", &[Right::Read])]);
        t.expires_ms = Some(100);
        ts.insert(t.clone());
        assert!(ts.live(&t.hash, 99).is_some());
        assert!(ts.live(&t.hash, 100).is_none());
        t.expires_ms = None;
        ts.revoke(t.id.clone(), 5);
        // An update arriving after the revocation does not bring it back.
        ts.insert(t.clone());
        assert!(ts.live(&t.hash, 1).is_none());
        assert_eq!(ts.live_count(1), 0);
        // A revocation that arrives before its token still holds.
        let mut early = Tokens::default();
        early.revoke("abc123".into(), 5);
        early.insert(t.clone());
        assert!(early.live(&t.hash, 1).is_none());
    }
}
