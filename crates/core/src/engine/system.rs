//! Definitions that live in the system keyspace (keyspaces, merges,
//! ownership maps, fences, tokens, revocations): written as LWW ops like
//! any other write, and read back into the registry whenever such an entry
//! is applied (here, from a peer, by a transfer or a repair).

use meridian_crdt::{Object, Policy, Value};

use super::Engine;
use super::keyspaces::KeyspaceDef;
use super::request::WriteError;
use crate::op::{Key, KeyspaceName, Mutation};
use crate::state::{Backend, StoreError};

impl<B: Backend> Engine<B> {
    /// Creates or updates a keyspace definition. `Ok(false)` when the
    /// definition is already exactly this (nothing staged).
    pub fn define(&mut self, now_ms: u64, def: KeyspaceDef) -> Result<bool, WriteError> {
        def.validate()?;
        if let Some(m) = def
            .merge_names()
            .into_iter()
            .find(|m| !self.registry.has_merge(m))
        {
            return Err(WriteError::UnknownMerge(m.to_string()));
        }
        if let Some(existing) = self.registry.get(def.name.as_str()) {
            if existing.policy != def.policy {
                return Err(WriteError::PolicyChange {
                    name: def.name.to_string(),
                    existing: existing.policy,
                    requested: def.policy,
                    current: Box::new(existing.clone()),
                });
            }
            if let Some((field, from, to)) = existing.schema.first_change(&def.schema) {
                return Err(WriteError::SchemaChange {
                    name: def.name.to_string(),
                    field,
                    from,
                    to,
                    current: Box::new(existing.clone()),
                });
            }
            if *existing == def {
                return Ok(false);
            }
        } else if self.registry.iter().count() >= self.cfg.max_keyspaces {
            return Err(WriteError::Limit {
                what: "keyspaces",
                max: self.cfg.max_keyspaces,
            });
        }
        let key = Key::new(def.name.as_str())?;
        self.put_system(now_ms, key, &def)?;
        Ok(true)
    }

    /// Creates or replaces an access token. `Ok(false)` when exactly this
    /// is defined already. A token id that was revoked is refused: a
    /// revocation is for good.
    pub fn define_token(
        &mut self,
        now_ms: u64,
        def: crate::access::TokenDef,
    ) -> Result<bool, WriteError> {
        let max_tokens = self.cfg.max_tokens;
        def.validate()
            .map_err(|e| WriteError::BadToken(e.to_string()))?;
        let tokens = self.registry.tokens();
        if tokens.is_revoked(&def.id) {
            return Err(WriteError::BadToken(format!(
                "token {} was revoked; a revoked id is never reused",
                def.id
            )));
        }
        match tokens.get(&def.id) {
            Some((held, _)) if **held == def => return Ok(false),
            Some(_) => {}
            None if tokens.live_count(now_ms) >= max_tokens => {
                return Err(WriteError::Limit {
                    what: "tokens",
                    max: max_tokens,
                });
            }
            None => {}
        }
        let key = Key::new(def.key())?;
        self.put_system(now_ms, key, &def)?;
        Ok(true)
    }

    /// Revokes a token, for good. `Ok(false)` when it was revoked already.
    /// An id this region has not seen defined is revoked too: a token made
    /// in another region may not have arrived yet, and must be refused
    /// once it does.
    pub fn revoke_token(&mut self, now_ms: u64, id: &str) -> Result<bool, WriteError> {
        if !crate::access::valid_id(id) {
            return Err(WriteError::BadToken(format!(
                "token id {id:?} is invalid: use 1 to 64 characters from a-z and 0-9"
            )));
        }
        if self.registry.tokens().is_revoked(id) {
            return Ok(false);
        }
        let key = Key::new(format!("{}{id}", crate::access::REVOKED_PREFIX))?;
        self.put_system(now_ms, key, &crate::access::Revocation { at_ms: now_ms })?;
        Ok(true)
    }

    /// Stages `value` as the last-writer-wins JSON of a system key.
    pub(super) fn put_system(
        &mut self,
        now_ms: u64,
        key: Key,
        value: &impl serde::Serialize,
    ) -> Result<(), WriteError> {
        let sys = KeyspaceName::system();
        let json =
            serde_json::to_value(value).map_err(|e| StoreError::encode("system entry", e))?;
        let value = Value::Json(meridian_crdt::Json::from_value(&json));
        let current = self.load(&sys, &key, Policy::Lww)?;
        let Object::Lww(reg) = &current.obj else {
            return Err(StoreError::Invariant("a system entry is not lww".into()).into());
        };
        let op = meridian_crdt::ObjectOp::Lww(reg.set_op(value));
        self.stage_local(
            now_ms,
            vec![Mutation {
                keyspace: sys,
                key,
                op,
            }],
        )
    }

    /// Installs a definition read from the system keyspace (an op, a
    /// transfer or a repair): keyspaces get a digest, and merges owed may
    /// now succeed.
    pub(super) fn take_definition(&mut self, entry: SystemEntry) {
        match entry {
            SystemEntry::Keyspace(def) => {
                self.digests.entry(def.name.clone()).or_insert(0);
                let custom = def.policy == Policy::Custom;
                self.registry.insert(def);
                if custom {
                    self.merges_changed();
                }
            }
            SystemEntry::Merge(def) => {
                self.registry.insert_merge(def);
                self.merges_changed();
            }
            SystemEntry::Map(ks, map) => self.registry.insert_map(ks, map),
            SystemEntry::Owned(ks) => self.registry.mark_owned(ks),
            SystemEntry::Fence(ks, region, fence) => self.registry.insert_fence(ks, region, fence),
            SystemEntry::Token(def) => self.registry.insert_token(def),
            SystemEntry::Revoked(id, at) => self.registry.revoke_token(id, at),
        }
    }
}

/// What a system-keyspace entry defines.
pub(super) enum SystemEntry {
    Keyspace(KeyspaceDef),
    Merge(crate::merge::MergeDef),
    Map(KeyspaceName, crate::ownership::OwnershipMap),
    Owned(KeyspaceName),
    Fence(
        KeyspaceName,
        meridian_crdt::RegionId,
        crate::ownership::Fence,
    ),
    Token(crate::access::TokenDef),
    Revoked(String, u64),
}

/// The definition a system-keyspace entry holds, if it holds one: a merge
/// script under `merge/NAME`, else a keyspace (named by the key).
pub(super) fn system_entry(key: &[u8], obj: &Object) -> Option<SystemEntry> {
    let Object::Lww(reg) = obj else { return None };
    let Some(Value::Json(j)) = reg.value() else {
        return None;
    };
    let text = std::str::from_utf8(key).ok()?;
    if let Some(ks) = text.strip_prefix(crate::ownership::OWNED_PREFIX) {
        return KeyspaceName::new(ks).ok().map(SystemEntry::Owned);
    }
    if let Some(ks) = text.strip_prefix(crate::ownership::MAP_PREFIX) {
        let ks = KeyspaceName::new(ks).ok()?;
        return serde_json::from_str(j.as_str())
            .ok()
            .map(|m| SystemEntry::Map(ks, m));
    }
    if let Some(rest) = text.strip_prefix(crate::ownership::FENCE_PREFIX) {
        let (ks, region) = rest.split_once('/')?;
        let ks = KeyspaceName::new(ks).ok()?;
        let region = meridian_crdt::RegionId::new(region).ok()?;
        return serde_json::from_str(j.as_str())
            .ok()
            .map(|f| SystemEntry::Fence(ks, region, f));
    }
    if let Some(id) = text.strip_prefix(crate::access::TOKEN_PREFIX) {
        return serde_json::from_str::<crate::access::TokenDef>(j.as_str())
            .ok()
            .filter(|d| d.id == id && d.validate().is_ok())
            .map(SystemEntry::Token);
    }
    if let Some(id) = text.strip_prefix(crate::access::REVOKED_PREFIX) {
        return serde_json::from_str::<crate::access::Revocation>(j.as_str())
            .ok()
            .map(|r| SystemEntry::Revoked(id.to_string(), r.at_ms));
    }
    if key.starts_with(crate::merge::def::KEY_PREFIX.as_bytes()) {
        serde_json::from_str(j.as_str())
            .ok()
            .map(SystemEntry::Merge)
    } else {
        serde_json::from_str(j.as_str())
            .ok()
            .map(SystemEntry::Keyspace)
    }
}
