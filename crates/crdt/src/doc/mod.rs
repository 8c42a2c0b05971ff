//! JSON documents that merge field by field: [`Doc`] here, the fields and
//! their rules ([`Field`], [`FieldRule`]) in `doc/field.rs`.
//!
//! Past ~400 lines only with its unit tests, which STYLE keeps beside the
//! code; the code itself is under 400.

mod field;

pub use field::{DocSchema, Field, FieldOp, FieldRule};

use field::extremum;

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::conflict::Conflict;
use crate::counter::{CounterError, PnCounter};
use crate::id::ReplicaId;
use crate::lww::LwwOp;
use crate::mv::{MvOp, MvRegister};
use crate::orset::OrSetOp;
use crate::replicated::{Crdt, OpMeta};
use crate::value::Json;

/// How a reader turns a merge field's versions into its value: given the
/// field's path and its versions, the merged value (`None`: show the
/// newest version).
pub type Resolver<'a> = dyn FnMut(&[String], &MvRegister<Json>) -> Option<serde_json::Value> + 'a;

/// Why a patch could not be turned into an op.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocError {
    /// A patch value did not fit the field's rule.
    #[error("field {path}: {rule} fields take {expected}")]
    FieldType {
        /// Dotted path of the field.
        path: String,
        /// The field's rule.
        rule: &'static str,
        /// What the rule accepts.
        expected: &'static str,
    },
    /// The field holds state of another rule that outranks the schema's.
    #[error(
        "field {path} holds {held} state (from a schema another region had), which writes under the rule {rule} cannot change"
    )]
    RuleClash {
        /// Dotted path of the field.
        path: String,
        /// The schema's rule for it.
        rule: &'static str,
        /// The rule of the state it holds.
        held: &'static str,
    },
    /// A counter field would overflow.
    #[error("field {path}: {source}")]
    Counter {
        /// Dotted path of the field.
        path: String,
        /// The counter's complaint.
        source: CounterError,
    },
}

/// A JSON object whose fields each merge by their own rule, so two regions
/// that change different fields of one record both keep their change.
///
/// Ops carry each field's rule (they are built against the schema at the
/// origin), so applying never needs the schema.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Doc {
    fields: BTreeMap<String, Field>,
}

/// A change to a [`Doc`]: one op per changed field.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DocOp(pub BTreeMap<String, FieldOp>);

impl Doc {
    /// The newest timestamp any field holds.
    pub fn max_hlc(&self) -> Option<crate::Hlc> {
        self.fields.values().filter_map(Field::max_hlc).max()
    }

    /// The op for a JSON merge patch (RFC 7396 style): each field in `patch`
    /// changes by its rule in `schema`, and `null` deletes the field.
    /// `replica` is the origin (counters need it).
    pub fn patch_op(
        &self,
        replica: &ReplicaId,
        patch: &serde_json::Map<String, serde_json::Value>,
        schema: &DocSchema,
    ) -> Result<DocOp, DocError> {
        self.patch_at("", replica, patch, schema)
    }

    fn patch_at(
        &self,
        prefix: &str,
        replica: &ReplicaId,
        patch: &serde_json::Map<String, serde_json::Value>,
        schema: &DocSchema,
    ) -> Result<DocOp, DocError> {
        use serde_json::Value as V;
        let mut ops = BTreeMap::new();
        for (name, v) in patch {
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            let rule = schema.rule(name);
            let current = self.fields.get(name);
            let wrong = |expected| DocError::FieldType {
                path: path.clone(),
                rule: rule.name(),
                expected,
            };
            if v.is_null() {
                let op = match current {
                    Some(f) => f.delete_op(),
                    None => continue, // deleting a field that was never set
                };
                ops.insert(name.clone(), op);
                continue;
            }
            let op = match rule {
                FieldRule::Lww => FieldOp::Lww(LwwOp::Set(Json::from_value(v))),
                FieldRule::Max | FieldRule::Min => {
                    if !v.is_number() {
                        return Err(wrong("a number"));
                    }
                    let want = if *rule == FieldRule::Max {
                        Ordering::Greater
                    } else {
                        Ordering::Less
                    };
                    let reg = match current {
                        Some(Field::Max(r)) if want == Ordering::Greater => Some(r),
                        Some(Field::Min(r)) if want == Ordering::Less => Some(r),
                        _ => None,
                    };
                    let mut value = Json::from_value(v);
                    let mut ctx = Default::default();
                    if let Some(r) = reg {
                        if let Some(cur) = extremum(r, want)
                            && cur.cmp_numbers(&value) == Some(want)
                        {
                            value = cur.clone();
                        }
                        ctx = r.context().clone();
                    }
                    let op = MvOp::Put { ctx, value };
                    if want == Ordering::Greater {
                        FieldOp::Max(op)
                    } else {
                        FieldOp::Min(op)
                    }
                }
                FieldRule::Counter => {
                    let by = v.as_i64().ok_or_else(|| wrong("an integer increment"))?;
                    let counter = match current {
                        Some(Field::Counter(c)) => c.clone(),
                        _ => PnCounter::default(),
                    };
                    let op = counter
                        .incr_op(replica, by)
                        .map_err(|source| DocError::Counter {
                            path: path.clone(),
                            source,
                        })?;
                    FieldOp::Counter(op)
                }
                FieldRule::Set => {
                    let expected = "an array to add or {\"add\": [...], \"remove\": [...]}";
                    let (add, remove) = match v {
                        V::Array(items) => (items.clone(), Vec::new()),
                        V::Object(m) if m.keys().all(|k| k == "add" || k == "remove") => {
                            let list = |k: &str| match m.get(k) {
                                None => Ok(Vec::new()),
                                Some(V::Array(a)) => Ok(a.clone()),
                                Some(_) => Err(wrong(expected)),
                            };
                            (list("add")?, list("remove")?)
                        }
                        _ => return Err(wrong(expected)),
                    };
                    FieldOp::Set(OrSetOp::Update {
                        add: add.iter().map(Json::from_value).collect(),
                        remove: remove.iter().map(Json::from_value).collect(),
                    })
                }
                FieldRule::Merge(_) => {
                    let ctx = match current {
                        Some(Field::Merge(r)) => r.context().clone(),
                        _ => Default::default(),
                    };
                    FieldOp::Merge(MvOp::Put {
                        ctx,
                        value: Json::from_value(v),
                    })
                }
                FieldRule::Doc(sub) => {
                    let V::Object(m) = v else {
                        return Err(wrong("an object"));
                    };
                    let nested = match current {
                        Some(Field::Doc(d)) => d.clone(),
                        _ => Doc::default(),
                    };
                    FieldOp::Doc(nested.patch_at(&path, replica, m, sub)?)
                }
            };
            // A field held in a state of a higher rank (written under a
            // rule this schema no longer has, or by a region whose schema
            // differed) ignores ops of a lower one: refuse rather than
            // accept a write that would change nothing.
            if let Some(f) = current
                && f.rank() > op.rank()
            {
                return Err(DocError::RuleClash {
                    path,
                    rule: rule.name(),
                    held: f.rule_name(),
                });
            }
            ops.insert(name.clone(), op);
        }
        Ok(DocOp(ops))
    }

    /// The op that deletes every field this replica sees (fields added
    /// concurrently elsewhere survive).
    pub fn delete_op(&self) -> DocOp {
        DocOp(
            self.fields
                .iter()
                .map(|(k, f)| (k.clone(), f.delete_op()))
                .collect(),
        )
    }

    /// The document as JSON: live fields only. A merge field shows its
    /// newest version (see [`Doc::to_json_with`]).
    pub fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
        self.fields
            .iter()
            .filter_map(|(k, f)| f.to_json().map(|v| (k.clone(), v)))
            .collect()
    }

    /// The document as JSON, each merge field as `resolve` merges its
    /// versions (given the field's path); the newest version where
    /// `resolve` gives nothing.
    pub fn to_json_with(
        &self,
        resolve: &mut Resolver<'_>,
    ) -> serde_json::Map<String, serde_json::Value> {
        self.json_at(&mut Vec::new(), resolve)
    }

    fn json_at(
        &self,
        path: &mut Vec<String>,
        resolve: &mut Resolver<'_>,
    ) -> serde_json::Map<String, serde_json::Value> {
        let mut out = serde_json::Map::new();
        for (k, f) in &self.fields {
            path.push(k.clone());
            if let Some(v) = f.to_json_with(path, resolve) {
                out.insert(k.clone(), v);
            }
            path.pop();
        }
        out
    }

    /// Every merge field (at any depth) holding more than one version, with
    /// its path: what a merge write-back collapses.
    pub fn unmerged(&self) -> Vec<(Vec<String>, &MvRegister<Json>)> {
        let mut out = Vec::new();
        for (k, f) in &self.fields {
            match f {
                Field::Merge(r) if r.len() > 1 => out.push((vec![k.clone()], r)),
                Field::Doc(d) => {
                    for (mut path, r) in d.unmerged() {
                        path.insert(0, k.clone());
                        out.push((path, r));
                    }
                }
                _ => {}
            }
        }
        out
    }
}

impl Crdt for Doc {
    type Op = DocOp;
    type Value = Json;

    fn apply(&mut self, op: &DocOp, meta: &OpMeta<'_>) -> Vec<Conflict<Json>> {
        let mut conflicts = Vec::new();
        for (name, fop) in &op.0 {
            let field = self
                .fields
                .entry(name.clone())
                .or_insert_with(|| fop.empty_field());
            conflicts.extend(field.apply(fop, meta).into_iter().map(|c| c.under(name)));
        }
        conflicts
    }

    fn merge(&mut self, other: &Self) {
        for (name, f) in &other.fields {
            match self.fields.get_mut(name) {
                Some(mine) => mine.merge(f),
                None => {
                    self.fields.insert(name.clone(), f.clone());
                }
            }
        }
    }

    fn is_live(&self) -> bool {
        self.fields.values().any(Field::is_live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Hlc;
    use crate::id::{Dot, RegionId, Seq};
    use crate::vv::VersionVector;
    use serde_json::json;
    use uuid::Uuid;

    fn rep(n: &str) -> ReplicaId {
        ReplicaId::new(RegionId::new(n).unwrap(), Uuid::from_u128(2))
    }

    fn schema() -> DocSchema {
        serde_json::from_value(json!({
            "likes": "counter", "tags": "set", "best": "max", "low": "min",
            "addr": {"doc": {"visits": "counter"}}
        }))
        .unwrap()
    }

    fn patch(
        d: &mut Doc,
        who: &str,
        seq: u64,
        wall: u64,
        deps: &VersionVector,
        p: serde_json::Value,
    ) {
        let op = d
            .patch_op(&rep(who), p.as_object().unwrap(), &schema())
            .unwrap();
        let dot = Dot::new(rep(who), Seq(seq));
        d.apply(
            &op,
            &OpMeta {
                dot: &dot,
                hlc: Hlc::new(wall, 0).unwrap(),
                deps,
            },
        );
    }

    #[test]
    fn concurrent_patches_to_different_fields_both_survive() {
        let none = VersionVector::new();
        let mut a = Doc::default();
        let mut b = Doc::default();
        let pa = a
            .patch_op(
                &rep("a"),
                json!({"name": "Ann"}).as_object().unwrap(),
                &schema(),
            )
            .unwrap();
        let pb = b
            .patch_op(
                &rep("b"),
                json!({"city": "Oslo", "likes": 2}).as_object().unwrap(),
                &schema(),
            )
            .unwrap();
        let (da, db) = (Dot::new(rep("a"), Seq(1)), Dot::new(rep("b"), Seq(1)));
        let ma = OpMeta {
            dot: &da,
            hlc: Hlc::new(10, 0).unwrap(),
            deps: &none,
        };
        let mb = OpMeta {
            dot: &db,
            hlc: Hlc::new(11, 0).unwrap(),
            deps: &none,
        };
        a.apply(&pa, &ma);
        a.apply(&pb, &mb);
        b.apply(&pb, &mb);
        b.apply(&pa, &ma);
        assert_eq!(a, b);
        assert_eq!(
            serde_json::Value::Object(a.to_json()),
            json!({"name": "Ann", "city": "Oslo", "likes": 2})
        );
    }

    #[test]
    fn each_rule_merges_its_way() {
        let none = VersionVector::new();
        let mut d = Doc::default();
        patch(
            &mut d,
            "a",
            1,
            10,
            &none,
            json!({"likes": 3, "tags": ["x"], "best": 5, "low": 5, "addr": {"visits": 1, "zip": "1"}}),
        );
        patch(
            &mut d,
            "b",
            1,
            11,
            &none,
            json!({"likes": -1, "tags": {"add": ["y"]}, "best": 2, "low": 2, "addr": {"visits": 4}}),
        );
        assert_eq!(
            serde_json::Value::Object(d.to_json()),
            json!({"likes": 2, "tags": ["x", "y"], "best": 5, "low": 2, "addr": {"visits": 5, "zip": "1"}})
        );
    }

    #[test]
    fn concurrent_lww_fields_report_a_conflict_with_its_path() {
        let none = VersionVector::new();
        let mut d = Doc::default();
        patch(&mut d, "a", 1, 10, &none, json!({"addr": {"zip": "1"}}));
        let op = d
            .patch_op(
                &rep("b"),
                json!({"addr": {"zip": "2"}}).as_object().unwrap(),
                &schema(),
            )
            .unwrap();
        let dot = Dot::new(rep("b"), Seq(1));
        let c = d.apply(
            &op,
            &OpMeta {
                dot: &dot,
                hlc: Hlc::new(11, 0).unwrap(),
                deps: &none,
            },
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].path, vec!["addr".to_string(), "zip".to_string()]);
        assert_eq!(c[0].loser_value.as_ref().map(Json::as_str), Some("\"1\""));
    }

    #[test]
    fn null_deletes_and_bad_types_are_refused() {
        let none = VersionVector::new();
        let mut d = Doc::default();
        patch(&mut d, "a", 1, 10, &none, json!({"name": "x", "likes": 1}));
        let saw: VersionVector = [(rep("a"), Seq(1))].into_iter().collect();
        patch(
            &mut d,
            "a",
            2,
            11,
            &saw,
            json!({"name": null, "likes": null}),
        );
        assert!(!d.is_live());
        let err = d
            .patch_op(
                &rep("a"),
                json!({"likes": "many"}).as_object().unwrap(),
                &schema(),
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "field likes: counter fields take an integer increment"
        );
        let err = d
            .patch_op(
                &rep("a"),
                json!({"addr": {"visits": 1.5}}).as_object().unwrap(),
                &schema(),
            )
            .unwrap_err();
        assert!(err.to_string().starts_with("field addr.visits:"), "{err}");
    }

    #[test]
    fn schemas_read_as_json() {
        let s = schema();
        assert_eq!(s.rule("likes"), &FieldRule::Counter);
        assert_eq!(s.rule("unknown"), &FieldRule::Lww);
        assert!(matches!(s.rule("addr"), FieldRule::Doc(_)));
    }
}
