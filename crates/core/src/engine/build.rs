//! Turning a client's change into an op of the keyspace's policy, against
//! the key's current state in this region (the origin decides everything that
//! depends on what it has seen).

use meridian_crdt::{
    Doc, Json, LwwRegister, MvRegister, Object, ObjectOp, OrSet, OrSetOp, PnCounter, Policy,
    ReplicaId, Value,
};

use super::keyspaces::KeyspaceDef;
use super::request::{Change, WriteError};
use crate::op::Key;

/// A built op, with what the sibling cap replaced (for metrics).
pub struct Built {
    /// The op.
    pub op: ObjectOp,
    /// `mv` siblings replaced only because of the cap.
    pub pruned: usize,
}

fn unsupported(def: &KeyspaceDef, change: &Change, hint: &'static str) -> WriteError {
    WriteError::Unsupported {
        keyspace: def.name.to_string(),
        policy: def.policy,
        change: change.name(),
        hint,
    }
}

/// Builds the op for `change` on a key whose state is `current`.
pub fn build(
    def: &KeyspaceDef,
    key: &Key,
    current: &Object,
    me: &ReplicaId,
    change: &Change,
) -> Result<Built, WriteError> {
    let plain = |op| Ok(Built { op, pruned: 0 });
    match def.policy {
        Policy::Lww => {
            let empty = LwwRegister::default();
            let reg = match current {
                Object::Lww(r) => r,
                _ => &empty,
            };
            match change {
                Change::Put {
                    value,
                    context: None,
                } => plain(ObjectOp::Lww(reg.set_op(value.clone()))),
                Change::Delete { context: None } => plain(ObjectOp::Lww(reg.delete_op())),
                Change::Put { .. } | Change::Delete { .. } => Err(unsupported(
                    def,
                    change,
                    "a causal context applies to mv keyspaces only; drop it",
                )),
                _ => Err(unsupported(def, change, "lww keys take put and delete")),
            }
        }
        Policy::Mv => {
            let empty = MvRegister::default();
            let reg = match current {
                Object::Mv(r) => r,
                _ => &empty,
            };
            match change {
                Change::Put { value, context } => {
                    let put = reg.put_op(context.as_ref(), value.clone(), def.sibling_cap as usize);
                    Ok(Built {
                        op: ObjectOp::Mv(put.op),
                        pruned: put.pruned,
                    })
                }
                Change::Delete { context } => plain(ObjectOp::Mv(reg.delete_op(context.as_ref()))),
                _ => Err(unsupported(def, change, "mv keys take put and delete")),
            }
        }
        Policy::Custom => {
            let empty = MvRegister::default();
            let reg = match current {
                Object::Mv(r) => r,
                _ => &empty,
            };
            match change {
                Change::Put {
                    value: value @ Value::Json(_),
                    context,
                } => {
                    // Versions are merged, never dropped: a write that would
                    // leave more than the cap waits for the merger's
                    // write-back instead of pruning the oldest.
                    let after = reg.survivors(context.as_ref()) + 1;
                    if after > def.sibling_cap as usize {
                        return Err(WriteError::MergePending {
                            keyspace: def.name.to_string(),
                            key: key.to_string(),
                            versions: after - 1,
                            cap: def.sibling_cap as usize,
                        });
                    }
                    let put = reg.put_op(context.as_ref(), value.clone(), usize::MAX);
                    plain(ObjectOp::Mv(put.op))
                }
                Change::Put { .. } => Err(unsupported(
                    def,
                    change,
                    "custom keyspaces take JSON values (merge functions work on JSON)",
                )),
                Change::Delete { context } => plain(ObjectOp::Mv(reg.delete_op(context.as_ref()))),
                _ => Err(unsupported(def, change, "custom keys take put and delete")),
            }
        }
        Policy::Counter => {
            let empty = PnCounter::default();
            let c = match current {
                Object::Counter(c) => c,
                _ => &empty,
            };
            match change {
                Change::Incr(by) => plain(ObjectOp::Counter(c.incr_op(me, *by)?)),
                Change::Delete { context: None } => plain(ObjectOp::Counter(c.delete_op())),
                _ => Err(unsupported(
                    def,
                    change,
                    "counter keys change with {\"op\":\"incr\",\"by\":N} and delete",
                )),
            }
        }
        Policy::Set => {
            let empty = OrSet::default();
            let s = match current {
                Object::Set(s) => s,
                _ => &empty,
            };
            match change {
                Change::Add(values) => plain(ObjectOp::Set(s.add_op(values.clone()))),
                Change::Remove(values) => plain(ObjectOp::Set(s.remove_op(values.clone()))),
                Change::Delete { context: None } => plain(ObjectOp::Set(s.clear_op())),
                Change::Put {
                    value: Value::Json(j),
                    context: None,
                } => {
                    // Replace: remove every member seen, add the new ones.
                    let serde_json::Value::Array(items) = j.to_value() else {
                        return Err(unsupported(
                            def,
                            change,
                            "a set is replaced by a JSON array",
                        ));
                    };
                    plain(ObjectOp::Set(OrSetOp::Update {
                        add: items.iter().map(Json::from_value).collect(),
                        remove: s.iter().cloned().collect(),
                    }))
                }
                _ => Err(unsupported(
                    def,
                    change,
                    "set keys take {\"op\":\"add\"}, {\"op\":\"remove\"}, a JSON array put, and delete",
                )),
            }
        }
        Policy::Doc => {
            let empty = Doc::default();
            let d = match current {
                Object::Doc(d) => d,
                _ => &empty,
            };
            match change {
                Change::Patch(patch) => plain(ObjectOp::Doc(d.patch_op(me, patch, &def.schema)?)),
                Change::Delete { context: None } => plain(ObjectOp::Doc(d.delete_op())),
                Change::Put {
                    value: Value::Json(j),
                    context: None,
                } => {
                    // Replace: the new fields, and null for every field not in it.
                    let serde_json::Value::Object(mut patch) = j.to_value() else {
                        return Err(unsupported(
                            def,
                            change,
                            "a doc is replaced by a JSON object",
                        ));
                    };
                    for field in d.to_json().keys() {
                        patch
                            .entry(field.clone())
                            .or_insert(serde_json::Value::Null);
                    }
                    plain(ObjectOp::Doc(d.patch_op(me, &patch, &def.schema)?))
                }
                _ => Err(unsupported(
                    def,
                    change,
                    "doc keys take {\"op\":\"patch\"}, a JSON object put, and delete",
                )),
            }
        }
    }
}
