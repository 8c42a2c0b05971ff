//! The fields of a document: the rule each follows ([`FieldRule`], from the
//! keyspace's [`DocSchema`]), its state ([`Field`]) and its ops ([`FieldOp`]).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Doc, DocOp, Resolver};
use crate::conflict::Conflict;
use crate::counter::{CounterOp, PnCounter};
use crate::lww::{LwwOp, LwwRegister};
use crate::mv::{MvOp, MvRegister};
use crate::orset::{OrSet, OrSetOp};
use crate::replicated::{Crdt, OpMeta};
use crate::value::Json;

/// How one field of a document merges.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldRule {
    /// Last writer wins (the default for fields the schema does not name).
    Lww,
    /// A number that only grows: concurrent writes keep the largest.
    Max,
    /// A number that only shrinks: concurrent writes keep the smallest.
    Min,
    /// A PN-counter; a patch value is an increment.
    Counter,
    /// An add-wins set; a patch value is an array to add, or
    /// `{"add": [...], "remove": [...]}`.
    Set,
    /// A nested document with its own rules.
    Doc(DocSchema),
    /// Concurrent patches kept as versions and combined by the named merge
    /// function (run outside this crate; [`Field::to_json`] alone shows
    /// the newest version). A patch replaces the versions its region has
    /// seen.
    Merge(String),
}

impl FieldRule {
    /// The rule's name, as in schemas.
    pub fn name(&self) -> &'static str {
        match self {
            FieldRule::Lww => "lww",
            FieldRule::Max => "max",
            FieldRule::Min => "min",
            FieldRule::Counter => "counter",
            FieldRule::Set => "set",
            FieldRule::Doc(_) => "doc",
            FieldRule::Merge(_) => "merge",
        }
    }
}

impl DocSchema {
    /// The rule at a field path (nested documents by their field names).
    pub fn rule_at(&self, path: &[String]) -> Option<&FieldRule> {
        let (first, rest) = path.split_first()?;
        match (self.0.get(first), rest.is_empty()) {
            (Some(rule), true) => Some(rule),
            (Some(FieldRule::Doc(sub)), false) => sub.rule_at(rest),
            _ => None,
        }
    }

    /// Every merge function the schema names, with the field's path.
    pub fn merges(&self) -> Vec<(Vec<String>, &str)> {
        let mut out = Vec::new();
        for (name, rule) in &self.0 {
            match rule {
                FieldRule::Merge(m) => out.push((vec![name.clone()], m.as_str())),
                FieldRule::Doc(sub) => {
                    for (mut path, m) in sub.merges() {
                        path.insert(0, name.clone());
                        out.push((path, m));
                    }
                }
                _ => {}
            }
        }
        out
    }
}

/// Field rules of a document; fields not named merge as [`FieldRule::Lww`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DocSchema(pub BTreeMap<String, FieldRule>);

impl DocSchema {
    /// The rule for `field`.
    pub fn rule(&self, field: &str) -> &FieldRule {
        self.0.get(field).unwrap_or(&FieldRule::Lww)
    }

    /// The first field (dotted path) whose rule differs between `self` and
    /// `new`, with both rules' names: fields neither names are `lww` in both,
    /// so naming a field `lww` or dropping an `lww` rule changes nothing.
    pub fn first_change(&self, new: &DocSchema) -> Option<(String, &'static str, &'static str)> {
        self.change_at("", new)
    }

    fn change_at(
        &self,
        prefix: &str,
        new: &DocSchema,
    ) -> Option<(String, &'static str, &'static str)> {
        let names: std::collections::BTreeSet<&String> =
            self.0.keys().chain(new.0.keys()).collect();
        for name in names {
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            match (self.rule(name), new.rule(name)) {
                (FieldRule::Doc(a), FieldRule::Doc(b)) => {
                    if let Some(c) = a.change_at(&path, b) {
                        return Some(c);
                    }
                }
                // Another function over the same stored versions.
                (FieldRule::Merge(_), FieldRule::Merge(_)) => {}
                (a, b) if a != b => return Some((path, a.name(), b.name())),
                _ => {}
            }
        }
        None
    }
}

/// The state of one field. The variant order is the rank used when two
/// regions disagree on a field's rule (possible only if schemas differ): the
/// higher rank wins, so every region still ends with the same state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Field {
    /// See [`FieldRule::Lww`].
    #[serde(rename = "l")]
    Lww(LwwRegister<Json>),
    /// See [`FieldRule::Max`]: the largest of the concurrent values.
    #[serde(rename = "x")]
    Max(MvRegister<Json>),
    /// See [`FieldRule::Min`]: the smallest of the concurrent values.
    #[serde(rename = "n")]
    Min(MvRegister<Json>),
    /// See [`FieldRule::Counter`].
    #[serde(rename = "c")]
    Counter(PnCounter),
    /// See [`FieldRule::Set`].
    #[serde(rename = "s")]
    Set(OrSet<Json>),
    /// See [`FieldRule::Doc`].
    #[serde(rename = "d")]
    Doc(Doc),
    /// See [`FieldRule::Merge`]: the versions a merge function combines.
    #[serde(rename = "g")]
    Merge(MvRegister<Json>),
}

/// A change to one field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FieldOp {
    /// Change an lww field.
    #[serde(rename = "l")]
    Lww(LwwOp<Json>),
    /// Change a max field.
    #[serde(rename = "x")]
    Max(MvOp<Json>),
    /// Change a min field.
    #[serde(rename = "n")]
    Min(MvOp<Json>),
    /// Change a counter field.
    #[serde(rename = "c")]
    Counter(CounterOp),
    /// Change a set field.
    #[serde(rename = "s")]
    Set(OrSetOp<Json>),
    /// Change a nested document.
    #[serde(rename = "d")]
    Doc(DocOp),
    /// Change a merge field (a patch, or a merge write-back).
    #[serde(rename = "g")]
    Merge(MvOp<Json>),
}

impl FieldOp {
    pub(super) fn rank(&self) -> u8 {
        match self {
            FieldOp::Lww(_) => 0,
            FieldOp::Max(_) => 1,
            FieldOp::Min(_) => 2,
            FieldOp::Counter(_) => 3,
            FieldOp::Set(_) => 4,
            FieldOp::Doc(_) => 5,
            FieldOp::Merge(_) => 6,
        }
    }

    pub(super) fn empty_field(&self) -> Field {
        match self {
            FieldOp::Lww(_) => Field::Lww(LwwRegister::default()),
            FieldOp::Max(_) => Field::Max(MvRegister::default()),
            FieldOp::Min(_) => Field::Min(MvRegister::default()),
            FieldOp::Counter(_) => Field::Counter(PnCounter::default()),
            FieldOp::Set(_) => Field::Set(OrSet::default()),
            FieldOp::Doc(_) => Field::Doc(Doc::default()),
            FieldOp::Merge(_) => Field::Merge(MvRegister::default()),
        }
    }
}

impl Field {
    /// The newest timestamp the field holds (registers only).
    pub fn max_hlc(&self) -> Option<crate::Hlc> {
        match self {
            Field::Lww(r) => r.max_hlc(),
            Field::Max(r) | Field::Min(r) | Field::Merge(r) => r.max_hlc(),
            Field::Doc(d) => d.max_hlc(),
            Field::Counter(_) | Field::Set(_) => None,
        }
    }

    /// The name of the rule this state follows.
    pub(super) fn rule_name(&self) -> &'static str {
        match self {
            Field::Lww(_) => "lww",
            Field::Max(_) => "max",
            Field::Min(_) => "min",
            Field::Counter(_) => "counter",
            Field::Set(_) => "set",
            Field::Doc(_) => "doc",
            Field::Merge(_) => "merge",
        }
    }

    pub(super) fn rank(&self) -> u8 {
        match self {
            Field::Lww(_) => 0,
            Field::Max(_) => 1,
            Field::Min(_) => 2,
            Field::Counter(_) => 3,
            Field::Set(_) => 4,
            Field::Doc(_) => 5,
            Field::Merge(_) => 6,
        }
    }

    pub(super) fn apply(&mut self, op: &FieldOp, meta: &OpMeta<'_>) -> Vec<Conflict<Json>> {
        match op.rank().cmp(&self.rank()) {
            Ordering::Less => return Vec::new(),
            Ordering::Greater => *self = op.empty_field(),
            Ordering::Equal => {}
        }
        match (self, op) {
            (Field::Lww(r), FieldOp::Lww(o)) => r.apply(o, meta),
            (Field::Max(r), FieldOp::Max(o))
            | (Field::Min(r), FieldOp::Min(o))
            | (Field::Merge(r), FieldOp::Merge(o)) => r.apply(o, meta),
            (Field::Counter(c), FieldOp::Counter(o)) => {
                c.apply(o, meta);
                Vec::new()
            }
            (Field::Set(s), FieldOp::Set(o)) => {
                s.apply(o, meta);
                Vec::new()
            }
            (Field::Doc(d), FieldOp::Doc(o)) => d.apply(o, meta),
            _ => Vec::new(), // unreachable: ranks matched above
        }
    }

    pub(super) fn merge(&mut self, other: &Field) {
        match other.rank().cmp(&self.rank()) {
            Ordering::Less => {}
            Ordering::Greater => *self = other.clone(),
            Ordering::Equal => match (self, other) {
                (Field::Lww(a), Field::Lww(b)) => a.merge(b),
                (Field::Max(a), Field::Max(b))
                | (Field::Min(a), Field::Min(b))
                | (Field::Merge(a), Field::Merge(b)) => a.merge(b),
                (Field::Counter(a), Field::Counter(b)) => a.merge(b),
                (Field::Set(a), Field::Set(b)) => a.merge(b),
                (Field::Doc(a), Field::Doc(b)) => a.merge(b),
                _ => {}
            },
        }
    }

    pub(super) fn is_live(&self) -> bool {
        match self {
            Field::Lww(r) => r.is_live(),
            Field::Max(r) | Field::Min(r) | Field::Merge(r) => r.is_live(),
            Field::Counter(c) => c.is_live(),
            Field::Set(s) => s.is_live(),
            Field::Doc(d) => d.is_live(),
        }
    }

    pub(super) fn delete_op(&self) -> FieldOp {
        match self {
            Field::Lww(r) => FieldOp::Lww(r.delete_op()),
            Field::Max(r) => FieldOp::Max(r.delete_op(None)),
            Field::Min(r) => FieldOp::Min(r.delete_op(None)),
            Field::Merge(r) => FieldOp::Merge(r.delete_op(None)),
            Field::Counter(c) => FieldOp::Counter(c.delete_op()),
            Field::Set(s) => FieldOp::Set(s.clear_op()),
            Field::Doc(d) => FieldOp::Doc(d.delete_op()),
        }
    }

    /// The field as JSON; a merge field resolved by `resolve` (given its
    /// path from the document's root), or showing its newest version when
    /// `resolve` gives nothing.
    pub(super) fn to_json_with(
        &self,
        path: &mut Vec<String>,
        resolve: &mut Resolver<'_>,
    ) -> Option<serde_json::Value> {
        match self {
            Field::Merge(r) if r.is_live() => {
                resolve(path, r).or_else(|| r.siblings().last().map(|(_, v)| v.to_value()))
            }
            Field::Doc(d) if d.is_live() => {
                Some(serde_json::Value::Object(d.json_at(path, resolve)))
            }
            _ => self.to_json(),
        }
    }

    pub(super) fn to_json(&self) -> Option<serde_json::Value> {
        if !self.is_live() {
            return None;
        }
        Some(match self {
            Field::Lww(r) => r.value()?.to_value(),
            Field::Max(r) => extremum(r, Ordering::Greater)?.to_value(),
            Field::Min(r) => extremum(r, Ordering::Less)?.to_value(),
            Field::Counter(c) => counter_json(c.value()),
            Field::Set(s) => serde_json::Value::Array(s.iter().map(Json::to_value).collect()),
            Field::Doc(d) => serde_json::Value::Object(d.to_json()),
            Field::Merge(r) => r.siblings().last()?.1.to_value(),
        })
    }
}

pub(super) fn counter_json(v: i128) -> serde_json::Value {
    match i64::try_from(v) {
        Ok(n) => serde_json::Value::from(n),
        // Outside i64 only after concurrent changes overflowed together;
        // JSON readers cannot hold it exactly, so say it as a float.
        Err(_) => serde_json::Value::from(v as f64),
    }
}

/// The largest (`Greater`) or smallest (`Less`) sibling.
pub(super) fn extremum(r: &MvRegister<Json>, want: Ordering) -> Option<&Json> {
    r.siblings().into_iter().map(|(_, v)| v).reduce(|best, v| {
        if v.cmp_numbers(best) == Some(want) {
            v
        } else {
            best
        }
    })
}
