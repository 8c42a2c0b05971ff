//! Keyspace definitions and the registry of them.
//!
//! Definitions are themselves replicated: each is a last-writer-wins value
//! in the system keyspace `_keyspaces`, so a keyspace created in one region
//! exists in all of them, and always before any write to it arrives (the
//! write's origin had seen the definition).
//!
//! Past ~400 lines only with its unit tests, which STYLE keeps beside the
//! code; the code itself is under 400.

use std::collections::BTreeMap;

use meridian_crdt::{DocSchema, Policy, RegionId};
use serde::{Deserialize, Serialize};

use std::sync::Arc;

use super::concern::{RegionConcern, WriteConcern};
use crate::merge::{Function, MergeDef, MergeError, builtin};
use crate::op::KeyspaceName;
use crate::ownership::{Fence, OwnershipMap};

fn default_sibling_cap() -> u32 {
    16
}

fn default_ledger_capacity() -> u32 {
    10_000
}

/// A keyspace: a named collection of keys with one conflict policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyspaceDef {
    /// Its name.
    pub name: KeyspaceName,
    /// How concurrent writes merge. Never changes once created.
    pub policy: Policy,
    /// Write concern for requests that do not name one.
    #[serde(default)]
    pub write_concern: WriteConcern,
    /// `mv` only: most siblings a write leaves behind.
    #[serde(default = "default_sibling_cap")]
    pub sibling_cap: u32,
    /// `doc` only: field rules (unnamed fields are `lww`).
    #[serde(default)]
    pub schema: DocSchema,
    /// Conflict-ledger entries kept for this keyspace; the oldest go first.
    #[serde(default = "default_ledger_capacity")]
    pub ledger_capacity: u32,
    /// `custom` only: the merge function (a built-in's name or a
    /// registered script's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<String>,
    /// `custom` with `region-priority` only: regions, highest priority
    /// first (regions not named rank after them, by name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub region_order: Vec<RegionId>,
    /// In-region write concern for requests that do not name one
    /// (`standby`, `region-all`).
    #[serde(default, skip_serializing_if = "RegionConcern::is_leader")]
    pub standby_concern: RegionConcern,
    /// When the keyspace's default in-region concern is not met in time,
    /// succeed as the leader alone (counted) instead of answering 504. A
    /// concern a request names itself is never downgraded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub standby_downgrade: bool,
}

/// A definition that does not make sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefError {
    /// A field out of range.
    #[error("{field}: {reason}")]
    Field {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl KeyspaceDef {
    /// A definition with defaults for everything but name and policy.
    pub fn new(name: KeyspaceName, policy: Policy) -> Self {
        Self {
            name,
            policy,
            write_concern: WriteConcern::Local,
            sibling_cap: default_sibling_cap(),
            schema: DocSchema::default(),
            ledger_capacity: default_ledger_capacity(),
            merge: None,
            region_order: Vec::new(),
            standby_concern: RegionConcern::Leader,
            standby_downgrade: false,
        }
    }

    /// Every merge function the definition names (keyspace and fields).
    pub fn merge_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.merge.iter().map(String::as_str).collect();
        names.extend(self.schema.merges().into_iter().map(|(_, m)| m));
        names
    }

    /// Checks the fields against each other and their ranges.
    pub fn validate(&self) -> Result<(), DefError> {
        let cap = crate::budget::MAX_SIBLING_CAP;
        if !(1..=cap).contains(&self.sibling_cap) {
            return Err(DefError::Field {
                field: "sibling_cap",
                reason: format!(
                    "{} is outside 1..={cap} ({cap} siblings of the largest value fill the object budget)",
                    self.sibling_cap
                ),
            });
        }
        if self.ledger_capacity > 1_000_000 {
            return Err(DefError::Field {
                field: "ledger_capacity",
                reason: format!("{} is over 1000000", self.ledger_capacity),
            });
        }
        if self.policy != Policy::Doc && !self.schema.0.is_empty() {
            return Err(DefError::Field {
                field: "schema",
                reason: format!("applies to doc keyspaces; this one is {}", self.policy),
            });
        }
        match (&self.merge, self.policy) {
            (None, Policy::Custom) => {
                return Err(DefError::Field {
                    field: "merge",
                    reason: "a custom keyspace names its merge function".into(),
                });
            }
            (Some(_), p) if p != Policy::Custom => {
                return Err(DefError::Field {
                    field: "merge",
                    reason: format!("applies to custom keyspaces; this one is {p}"),
                });
            }
            (Some(m), _) if !crate::merge::def::valid_name(m) => {
                return Err(DefError::Field {
                    field: "merge",
                    reason: format!(
                        "{m:?} is not a merge name (1 to 64 lowercase letters, digits, '-' or '_')"
                    ),
                });
            }
            _ => {}
        }
        for (path, m) in self.schema.merges() {
            if !crate::merge::def::valid_name(m) {
                return Err(DefError::Field {
                    field: "schema",
                    reason: format!(
                        "field {}: {m:?} is not a merge name (1 to 64 lowercase letters, digits, '-' or '_')",
                        path.join(".")
                    ),
                });
            }
        }
        if !self.region_order.is_empty() && self.merge.as_deref() != Some("region-priority") {
            return Err(DefError::Field {
                field: "region_order",
                reason: "applies to custom keyspaces merged by region-priority".into(),
            });
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(dup) = self.region_order.iter().find(|r| !seen.insert(*r)) {
            return Err(DefError::Field {
                field: "region_order",
                reason: format!("names {dup} twice"),
            });
        }
        if self.region_order.len() > crate::budget::MAX_WRITERS {
            return Err(DefError::Field {
                field: "region_order",
                reason: format!(
                    "names {} regions, over the cluster limit of {}",
                    self.region_order.len(),
                    crate::budget::MAX_WRITERS
                ),
            });
        }
        Ok(())
    }
}

/// Every keyspace and merge script this region knows, `default` always
/// among the keyspaces.
#[derive(Clone, Debug)]
pub struct Registry {
    defs: BTreeMap<KeyspaceName, KeyspaceDef>,
    merges: BTreeMap<String, (Arc<MergeDef>, Function)>,
    /// Doc keyspaces whose schema has merge fields.
    doc_merges: std::collections::BTreeSet<KeyspaceName>,
    /// Ownership maps, by keyspace (shared: the registry is cloned for
    /// every published view).
    maps: BTreeMap<KeyspaceName, Arc<OwnershipMap>>,
    /// Each region's latest fence, by keyspace.
    fences: BTreeMap<KeyspaceName, BTreeMap<RegionId, Fence>>,
    /// Keyspaces marked owned (a map exists or existed).
    owned: std::collections::BTreeSet<KeyspaceName>,
    /// Access tokens (shared: changed copy-on-write).
    tokens: Arc<crate::access::Tokens>,
}

impl Default for Registry {
    fn default() -> Self {
        let mut defs = BTreeMap::new();
        let d = KeyspaceName::default_keyspace();
        defs.insert(d.clone(), KeyspaceDef::new(d, Policy::Lww));
        Self {
            defs,
            merges: BTreeMap::new(),
            doc_merges: Default::default(),
            maps: BTreeMap::new(),
            fences: BTreeMap::new(),
            owned: Default::default(),
            tokens: Default::default(),
        }
    }
}

impl Registry {
    /// The definition of `name`.
    pub fn get(&self, name: &str) -> Option<&KeyspaceDef> {
        self.defs
            .iter()
            .find(|(k, _)| k.as_str() == name)
            .map(|(_, v)| v)
    }

    /// Every definition, by name.
    pub fn iter(&self) -> impl Iterator<Item = &KeyspaceDef> {
        self.defs.values()
    }

    /// Installs (or replaces) a definition.
    pub fn insert(&mut self, def: KeyspaceDef) {
        if def.policy == Policy::Doc && !def.schema.merges().is_empty() {
            self.doc_merges.insert(def.name.clone());
        } else {
            self.doc_merges.remove(&def.name);
        }
        self.defs.insert(def.name.clone(), def);
    }

    /// The ownership map of `keyspace`, if it has one.
    pub fn ownership(&self, keyspace: &str) -> Option<&OwnershipMap> {
        self.maps
            .iter()
            .find(|(k, _)| k.as_str() == keyspace)
            .map(|(_, m)| &**m)
    }

    /// Every ownership map, by keyspace.
    pub fn maps(&self) -> impl Iterator<Item = (&KeyspaceName, &OwnershipMap)> {
        self.maps.iter().map(|(k, m)| (k, &**m))
    }

    /// Installs a map (one of an older epoch than the one held changes
    /// nothing: epochs only go up).
    pub fn insert_map(&mut self, keyspace: KeyspaceName, map: OwnershipMap) {
        let held = self.maps.get(&keyspace).map(|m| m.epoch());
        if held.is_none_or(|e| e <= map.epoch()) {
            self.maps.insert(keyspace, Arc::new(map));
        }
    }

    /// Whether `keyspace` is marked owned: a map was set for it (the mark
    /// is written before the first map and never removed).
    pub fn is_owned(&self, keyspace: &KeyspaceName) -> bool {
        self.owned.contains(keyspace)
    }

    /// Marks `keyspace` owned.
    pub fn mark_owned(&mut self, keyspace: KeyspaceName) {
        self.owned.insert(keyspace);
    }

    /// The access tokens.
    pub fn tokens(&self) -> &crate::access::Tokens {
        &self.tokens
    }

    /// Installs (or replaces) a token definition.
    pub fn insert_token(&mut self, def: crate::access::TokenDef) {
        Arc::make_mut(&mut self.tokens).insert(def);
    }

    /// Records a token's revocation.
    pub fn revoke_token(&mut self, id: String, at_ms: u64) {
        Arc::make_mut(&mut self.tokens).revoke(id, at_ms);
    }

    /// The latest fence of `region` for `keyspace`.
    pub fn fence(&self, keyspace: &KeyspaceName, region: &RegionId) -> Option<&Fence> {
        self.fences.get(keyspace).and_then(|f| f.get(region))
    }

    /// Every region's latest fence for `keyspace`.
    pub fn fences(&self, keyspace: &KeyspaceName) -> impl Iterator<Item = (&RegionId, &Fence)> {
        self.fences.get(keyspace).into_iter().flatten()
    }

    /// Installs a fence (an older epoch than the one held changes nothing).
    pub fn insert_fence(&mut self, keyspace: KeyspaceName, region: RegionId, fence: Fence) {
        let f = self.fences.entry(keyspace).or_default();
        if f.get(&region).is_none_or(|held| held.epoch <= fence.epoch) {
            f.insert(region, fence);
        }
    }

    /// Whether `name` is a doc keyspace with merge fields.
    pub fn doc_merges(&self, name: &KeyspaceName) -> bool {
        self.doc_merges.contains(name)
    }

    /// Installs (or replaces) a merge script, compiling it.
    pub fn insert_merge(&mut self, def: MergeDef) {
        let f = def.function();
        self.merges.insert(def.name.clone(), (Arc::new(def), f));
    }

    /// The registered script `name`.
    pub fn merge_def(&self, name: &str) -> Option<&Arc<MergeDef>> {
        self.merges.get(name).map(|(d, _)| d)
    }

    /// Every registered script, by name.
    pub fn merge_defs(&self) -> impl Iterator<Item = &Arc<MergeDef>> {
        self.merges.values().map(|(d, _)| d)
    }

    /// Whether `name` names a merge here (a built-in or a script).
    pub fn has_merge(&self, name: &str) -> bool {
        builtin::is_builtin(name) || self.merges.contains_key(name)
    }

    /// The merge function of a custom keyspace; `None` for other policies.
    pub fn merge_for(&self, def: &KeyspaceDef) -> Option<Function> {
        let name = def.merge.as_deref()?;
        Some(self.function_named(name, &def.region_order))
    }

    /// The merge function `name` (a built-in, configured by `region_order`,
    /// or a script). A name this region does not know (yet) gives a
    /// function that cannot run, so resolutions fall back to
    /// last-writer-wins and say why.
    pub fn function_named(&self, name: &str, region_order: &[RegionId]) -> Function {
        if let Some(f) = builtin::function(name, region_order) {
            return f;
        }
        match self.merges.get(name) {
            Some((_, f)) => f.clone(),
            None => Function {
                name: name.to_string(),
                hash: String::new(),
                run: Err(MergeError::new(format!(
                    "no merge named {name:?} in this region"
                ))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_validate() {
        let mut d = KeyspaceDef::new(KeyspaceName::new("x").unwrap(), Policy::Lww);
        assert!(d.validate().is_ok());
        d.sibling_cap = 0;
        assert_eq!(
            d.validate().unwrap_err().to_string(),
            "sibling_cap: 0 is outside 1..=16 (16 siblings of the largest value fill the object budget)"
        );
        let d: Result<KeyspaceDef, _> =
            serde_json::from_str(r#"{"name":"x","policy":"lww","colour":"red"}"#);
        assert!(
            d.unwrap_err()
                .to_string()
                .contains("unknown field `colour`")
        );
        let r = Registry::default();
        assert_eq!(r.get("default").unwrap().policy, Policy::Lww);
    }
}

#[cfg(test)]
mod concern_tests {
    use super::*;

    #[test]
    fn the_default_in_region_concern_keeps_definitions_byte_identical() {
        let d = KeyspaceDef::new(KeyspaceName::default_keyspace(), Policy::Lww);
        let json = serde_json::to_string(&d).unwrap();
        assert!(!json.contains("standby"), "{json}");
        let mut s = d.clone();
        s.standby_concern = RegionConcern::Standby;
        s.standby_downgrade = true;
        let back: KeyspaceDef = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
