//! Which calls may be sent again to another region after a failure that
//! leaves their outcome unknown.
//!
//! A request that never reached a region (no connection), or that a region
//! refused before writing anything (a `503` such as `behind_token`), can go
//! to the next region whatever it is. After a timeout, a lost connection or
//! a server error the write may have been applied where it was sent; it is
//! sent again elsewhere only when applying it twice has the effect of
//! applying it once: a `put` to an `lww` key (or to a `doc` whose fields all
//! keep one value), a `delete` (but in `mv` and `custom` keyspaces), a
//! `patch` of fields that keep one value (`lww`, `max`, `min`). An `incr`,
//! a set `add` or `remove`, a patch of a counter or set field, a `put` to
//! an `mv` key (two copies are two siblings, and a later write made from a
//! read that saw only one leaves the other behind), a write to a `custom`
//! keyspace (its merge function may add versions up), and a batch holding
//! any of them are not: the call fails with
//! [`crate::ClientError::Indeterminate`].

use serde_json::Value;

/// What a call may do when its outcome at a region is unknown.
#[derive(Clone, Debug)]
pub(crate) enum Safety {
    /// A read: try the next region.
    Read,
    /// Applying it twice is applying it once: try the next region.
    Retry,
    /// Applying it twice would count twice: stop, indeterminate.
    Once,
    /// Depends on the keyspaces' policies, looked up when needed.
    Ask(Vec<Change>),
}

/// A write whose safety depends on its keyspace.
#[derive(Clone, Debug)]
pub(crate) struct Change {
    pub(crate) keyspace: String,
    pub(crate) kind: Kind,
}

#[derive(Clone, Debug)]
pub(crate) enum Kind {
    Put,
    Delete,
    Patch(Value),
}

impl Safety {
    /// The safety of one op body (`{"op": "incr", ...}`) on `keyspace`.
    pub(crate) fn of_op(keyspace: &str, op: &Value) -> Safety {
        let change = |kind| {
            Safety::Ask(vec![Change {
                keyspace: keyspace.to_string(),
                kind,
            }])
        };
        match op.get("op").and_then(Value::as_str) {
            Some("delete") => change(Kind::Delete),
            Some("put") => change(Kind::Put),
            Some("patch") => change(Kind::Patch(op.get("doc").cloned().unwrap_or(Value::Null))),
            _ => Safety::Once,
        }
    }

    /// The safety of a batch: the least safe of its changes.
    pub(crate) fn of_batch(ops: &[Value]) -> Safety {
        let mut changes = Vec::new();
        for op in ops {
            let ks = op.get("keyspace").and_then(Value::as_str).unwrap_or("");
            match Safety::of_op(ks, op) {
                Safety::Retry | Safety::Read => {}
                Safety::Ask(mut c) => changes.append(&mut c),
                Safety::Once => return Safety::Once,
            }
        }
        if changes.is_empty() {
            Safety::Retry
        } else {
            Safety::Ask(changes)
        }
    }
}

/// Whether `change` applied twice to keyspace `def` (as `GET
/// /v1/keyspaces/{name}` describes it) is the same as applied once.
pub(crate) fn idempotent(def: &Value, change: &Kind) -> bool {
    let schema = def.get("schema");
    match (def.get("policy").and_then(Value::as_str), change) {
        (Some("mv" | "custom"), Kind::Delete) => false,
        (Some(_), Kind::Delete) => true,
        (Some("lww"), Kind::Put) => true,
        (Some("doc"), Kind::Put) => schema_keeps_one(schema),
        (Some("doc"), Kind::Patch(doc)) => patch_keeps_one(schema, doc),
        _ => false,
    }
}

/// A field rule under which writing a value twice keeps one value.
fn rule_keeps_one(rule: &Value) -> bool {
    match rule {
        Value::String(r) => matches!(r.as_str(), "lww" | "max" | "min"),
        Value::Object(o) => o
            .get("doc")
            .is_some_and(|nested| schema_keeps_one(Some(nested))),
        _ => false,
    }
}

fn schema_keeps_one(schema: Option<&Value>) -> bool {
    match schema {
        None | Some(Value::Null) => true,
        Some(Value::Object(fields)) => fields.values().all(rule_keeps_one),
        Some(_) => false,
    }
}

fn patch_keeps_one(schema: Option<&Value>, doc: &Value) -> bool {
    let Some(fields) = doc.as_object() else {
        return false;
    };
    fields.iter().all(|(name, value)| {
        match schema.and_then(|s| s.get(name)) {
            None | Some(Value::Null) => true, // unnamed fields are lww
            Some(Value::Object(o)) if o.contains_key("doc") && value.is_object() => {
                patch_keeps_one(o.get("doc"), value)
            }
            Some(rule) => rule_keeps_one(rule),
        }
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn patch(doc: Value) -> Kind {
        Kind::Patch(doc)
    }

    #[test]
    fn puts_are_retried_only_where_a_second_copy_changes_nothing() {
        assert!(idempotent(&json!({"policy": "lww"}), &Kind::Put));
        assert!(!idempotent(&json!({"policy": "mv"}), &Kind::Put));
        assert!(idempotent(&json!({"policy": "counter"}), &Kind::Delete));
        assert!(!idempotent(&json!({"policy": "mv"}), &Kind::Delete));
        assert!(!idempotent(
            &json!({"policy": "custom", "merge": "sum"}),
            &Kind::Delete
        ));
        assert!(!idempotent(
            &json!({"policy": "custom", "merge": "sum"}),
            &Kind::Put
        ));
        assert!(!idempotent(&json!({"policy": "counter"}), &Kind::Put));
        let doc = json!({"policy": "doc", "schema": {"name": "lww", "top": "max"}});
        assert!(idempotent(&doc, &Kind::Put));
        let counted = json!({"policy": "doc", "schema": {"name": "lww", "n": "counter"}});
        assert!(!idempotent(&counted, &Kind::Put));
    }

    #[test]
    fn patches_are_retried_when_every_field_they_touch_keeps_one_value() {
        let def = json!({"policy": "doc", "schema": {
            "views": "counter", "tags": "set", "best": "max", "notes": {"merge": "concat"},
            "address": {"doc": {"city": "lww", "visits": "counter"}}
        }});
        assert!(idempotent(&def, &patch(json!({"title": "x", "best": 3}))));
        assert!(!idempotent(&def, &patch(json!({"title": "x", "views": 1}))));
        assert!(!idempotent(&def, &patch(json!({"tags": ["a"]}))));
        assert!(!idempotent(&def, &patch(json!({"notes": "n"}))));
        assert!(idempotent(
            &def,
            &patch(json!({"address": {"city": "Oslo"}}))
        ));
        assert!(!idempotent(&def, &patch(json!({"address": {"visits": 1}}))));
        // Replacing the nested document whole touches its counter too.
        assert!(!idempotent(&def, &patch(json!({"address": null}))));
        assert!(!idempotent(&def, &patch(json!("not an object"))));
    }

    #[test]
    fn ops_and_batches_are_as_safe_as_their_least_safe_change() {
        assert!(matches!(
            Safety::of_op("c", &json!({"op": "incr", "by": 1})),
            Safety::Once
        ));
        assert!(matches!(
            Safety::of_op("s", &json!({"op": "add", "values": [1]})),
            Safety::Once
        ));
        assert!(matches!(
            Safety::of_op("s", &json!({"op": "delete"})),
            Safety::Ask(_)
        ));
        let batch = [
            json!({"keyspace": "a", "key": "k", "op": "put", "value": 1}),
            json!({"keyspace": "b", "key": "k", "op": "delete"}),
        ];
        assert!(matches!(Safety::of_batch(&batch), Safety::Ask(c) if c.len() == 2));
        let with_incr = [
            json!({"keyspace": "a", "key": "k", "op": "put", "value": 1}),
            json!({"keyspace": "c", "key": "k", "op": "incr"}),
        ];
        assert!(matches!(Safety::of_batch(&with_incr), Safety::Once));
    }
}
