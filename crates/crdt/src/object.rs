//! The state of one key under any policy.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::conflict::Conflict;
use crate::counter::{CounterOp, PnCounter};
use crate::doc::{Doc, DocOp};
use crate::lww::{LwwOp, LwwRegister};
use crate::mv::{MvOp, MvRegister};
use crate::orset::{OrSet, OrSetOp};
use crate::replicated::{Crdt, OpMeta};
use crate::value::{Json, Value};

/// How concurrent writes to a key merge; one per keyspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Last writer wins ([`LwwRegister`]).
    Lww,
    /// Multi-value: concurrent writes kept as siblings ([`MvRegister`]).
    Mv,
    /// PN-counter ([`PnCounter`]).
    Counter,
    /// Add-wins set of JSON values ([`OrSet`]).
    Set,
    /// JSON document merged per field ([`Doc`]).
    Doc,
    /// Concurrent versions kept as [`MvRegister`] siblings and combined by
    /// a named merge function (applied outside this crate, which stays
    /// free of script engines); stored exactly as [`Policy::Mv`].
    Custom,
}

impl Policy {
    /// Every policy, in rank order.
    pub const ALL: [Policy; 6] = [
        Policy::Lww,
        Policy::Mv,
        Policy::Counter,
        Policy::Set,
        Policy::Doc,
        Policy::Custom,
    ];

    /// The policy's name as used in config and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Lww => "lww",
            Policy::Mv => "mv",
            Policy::Counter => "counter",
            Policy::Set => "set",
            Policy::Doc => "doc",
            Policy::Custom => "custom",
        }
    }

    /// The policy whose state this one keeps: itself, except `custom`,
    /// which keeps `mv` siblings. What a key's [`Object::policy`] is
    /// compared with.
    pub fn storage(self) -> Policy {
        match self {
            Policy::Custom => Policy::Mv,
            p => p,
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A policy name that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown policy {0:?}: expected one of lww, mv, counter, set, doc, custom")]
pub struct UnknownPolicy(pub String);

impl FromStr for Policy {
    type Err = UnknownPolicy;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Policy::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownPolicy(s.to_string()))
    }
}

/// The replicated state of one key.
///
/// Normally a key's state always has its keyspace's policy. Should two
/// regions ever disagree (a keyspace created concurrently with two policies),
/// states and ops of different policies still converge: the higher
/// [`Policy`] rank replaces the lower, in every region alike.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Object {
    /// See [`Policy::Lww`].
    #[serde(rename = "l")]
    Lww(LwwRegister<Value>),
    /// See [`Policy::Mv`].
    #[serde(rename = "m")]
    Mv(MvRegister<Value>),
    /// See [`Policy::Counter`].
    #[serde(rename = "c")]
    Counter(PnCounter),
    /// See [`Policy::Set`].
    #[serde(rename = "s")]
    Set(OrSet<Json>),
    /// See [`Policy::Doc`].
    #[serde(rename = "d")]
    Doc(Doc),
}

impl Default for Object {
    fn default() -> Self {
        Object::Lww(LwwRegister::default())
    }
}

/// A change to one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectOp {
    /// See [`Policy::Lww`].
    #[serde(rename = "l")]
    Lww(LwwOp<Value>),
    /// See [`Policy::Mv`].
    #[serde(rename = "m")]
    Mv(MvOp<Value>),
    /// See [`Policy::Counter`].
    #[serde(rename = "c")]
    Counter(CounterOp),
    /// See [`Policy::Set`].
    #[serde(rename = "s")]
    Set(OrSetOp<Json>),
    /// See [`Policy::Doc`].
    #[serde(rename = "d")]
    Doc(DocOp),
}

impl ObjectOp {
    /// The policy this op belongs to.
    pub fn policy(&self) -> Policy {
        match self {
            ObjectOp::Lww(_) => Policy::Lww,
            ObjectOp::Mv(_) => Policy::Mv,
            ObjectOp::Counter(_) => Policy::Counter,
            ObjectOp::Set(_) => Policy::Set,
            ObjectOp::Doc(_) => Policy::Doc,
        }
    }
}

impl Object {
    /// The empty state of a policy.
    pub fn empty(policy: Policy) -> Object {
        match policy {
            Policy::Lww => Object::Lww(LwwRegister::default()),
            Policy::Mv | Policy::Custom => Object::Mv(MvRegister::default()),
            Policy::Counter => Object::Counter(PnCounter::default()),
            Policy::Set => Object::Set(OrSet::default()),
            Policy::Doc => Object::Doc(Doc::default()),
        }
    }

    /// The newest timestamp the object holds (registers and doc fields;
    /// counters and sets order nothing by time): what a region receiving it
    /// by transfer or repair checks against its clock bound.
    pub fn max_hlc(&self) -> Option<crate::Hlc> {
        match self {
            Object::Lww(r) => r.max_hlc(),
            Object::Mv(r) => r.max_hlc(),
            Object::Doc(d) => d.max_hlc(),
            Object::Counter(_) | Object::Set(_) => None,
        }
    }

    /// The policy of this state (never [`Policy::Custom`], which is stored
    /// as `mv`).
    pub fn policy(&self) -> Policy {
        match self {
            Object::Lww(_) => Policy::Lww,
            Object::Mv(_) => Policy::Mv,
            Object::Counter(_) => Policy::Counter,
            Object::Set(_) => Policy::Set,
            Object::Doc(_) => Policy::Doc,
        }
    }
}

impl Crdt for Object {
    type Op = ObjectOp;
    type Value = Value;

    fn apply(&mut self, op: &ObjectOp, meta: &OpMeta<'_>) -> Vec<Conflict<Value>> {
        match op.policy().cmp(&self.policy()) {
            Ordering::Less => return Vec::new(),
            Ordering::Greater => *self = Object::empty(op.policy()),
            Ordering::Equal => {}
        }
        match (self, op) {
            (Object::Lww(r), ObjectOp::Lww(o)) => r.apply(o, meta),
            (Object::Mv(r), ObjectOp::Mv(o)) => r.apply(o, meta),
            (Object::Counter(c), ObjectOp::Counter(o)) => {
                c.apply(o, meta);
                Vec::new()
            }
            (Object::Set(s), ObjectOp::Set(o)) => {
                s.apply(o, meta);
                Vec::new()
            }
            (Object::Doc(d), ObjectOp::Doc(o)) => d
                .apply(o, meta)
                .into_iter()
                .map(|c| c.map(Value::Json))
                .collect(),
            _ => Vec::new(), // unreachable: policies matched above
        }
    }

    fn merge(&mut self, other: &Self) {
        match other.policy().cmp(&self.policy()) {
            Ordering::Less => {}
            Ordering::Greater => *self = other.clone(),
            Ordering::Equal => match (self, other) {
                (Object::Lww(a), Object::Lww(b)) => a.merge(b),
                (Object::Mv(a), Object::Mv(b)) => a.merge(b),
                (Object::Counter(a), Object::Counter(b)) => a.merge(b),
                (Object::Set(a), Object::Set(b)) => a.merge(b),
                (Object::Doc(a), Object::Doc(b)) => a.merge(b),
                _ => {}
            },
        }
    }

    fn is_live(&self) -> bool {
        match self {
            Object::Lww(r) => r.is_live(),
            Object::Mv(r) => r.is_live(),
            Object::Counter(c) => c.is_live(),
            Object::Set(s) => s.is_live(),
            Object::Doc(d) => d.is_live(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_print() {
        for p in Policy::ALL {
            assert_eq!(p.as_str().parse::<Policy>().unwrap(), p);
        }
        let err = "crdt".parse::<Policy>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown policy \"crdt\": expected one of lww, mv, counter, set, doc, custom"
        );
    }

    #[test]
    fn a_higher_policy_replaces_a_lower_one_in_merge() {
        let mut a = Object::empty(Policy::Lww);
        let b = Object::empty(Policy::Counter);
        a.merge(&b);
        assert_eq!(a.policy(), Policy::Counter);
        let mut c = Object::empty(Policy::Counter);
        c.merge(&Object::empty(Policy::Lww));
        assert_eq!(c.policy(), Policy::Counter);
    }
}
