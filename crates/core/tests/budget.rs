//! The encoded-size budget (`meridian_core::budget`): writes that would make
//! an op or leave an object past its limit are refused before anything is
//! staged, and whatever was accepted reads back and restarts.

use meridian_core::budget::{MAX_OBJECT, MAX_OP, MAX_SIBLING_CAP, MAX_VALUE};
use meridian_core::*;
use meridian_crdt::{Json, Object, Policy, Value, codec};

mod common;
use common::Region;

fn mib_string(tag: usize) -> Json {
    // A JSON string just under the value limit, distinct per tag.
    let body = format!("{tag:08}{}", "x".repeat(MAX_VALUE - 64));
    Json::from_value(&serde_json::Value::String(body))
}

fn stored_len(r: &Region, ks: &str, key: &str) -> usize {
    let obj = r
        .engine
        .reader()
        .get(ks, &Key::new(key).unwrap())
        .unwrap()
        .live()
        .cloned()
        .expect("live object");
    codec::encoded_len(&obj).unwrap()
}

#[test]
fn blind_mv_puts_of_the_largest_value_stay_within_the_object_budget() {
    let mut r = Region::new("us-east");
    let mut def = KeyspaceDef::new(KeyspaceName::new("big").unwrap(), Policy::Mv);
    def.sibling_cap = MAX_SIBLING_CAP + 1;
    let e = r.engine.define(1, def.clone()).unwrap_err();
    assert!(e.to_string().contains("sibling_cap"), "{e}");
    def.sibling_cap = MAX_SIBLING_CAP;
    assert!(r.engine.define(1, def).unwrap());
    r.commit();
    for i in 0..(MAX_SIBLING_CAP as usize * 2 + 3) {
        let value = Value::Bytes(vec![i as u8; MAX_VALUE]);
        r.write(vec![(
            "big",
            "k",
            Change::Put {
                value,
                context: None,
            },
        )])
        .unwrap_or_else(|e| panic!("blind put {i}: {e}"));
    }
    assert!(stored_len(&r, "big", "k") <= MAX_OBJECT);
    r.restart();
    assert!(matches!(
        r.engine.reader().get("big", &Key::new("k").unwrap()).unwrap().live(),
        Some(Object::Mv(m)) if m.len() == MAX_SIBLING_CAP as usize
    ));
}

#[test]
fn a_set_grows_to_its_budget_then_refuses_and_a_replace_too_big_is_refused() {
    let mut r = Region::new("us-east");
    r.define("s", Policy::Set);
    let mut accepted = 0;
    let refusal = loop {
        match r.write(vec![("s", "k", Change::Add(vec![mib_string(accepted)]))]) {
            Ok(_) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 100, "the set never hit its budget");
    };
    let WriteError::ObjectTooLarge {
        keyspace, key, max, ..
    } = &refusal
    else {
        panic!("expected object_too_large, got {refusal}");
    };
    assert_eq!(
        (keyspace.as_str(), key.as_str(), *max),
        ("s", "k", MAX_OBJECT)
    );
    assert!(accepted >= MAX_OBJECT / MAX_VALUE - 1, "{accepted}");
    // Nothing of the refused write was staged.
    assert_eq!(r.engine.staged_len(), 0);
    let len = stored_len(&r, "s", "k");
    assert!(len <= MAX_OBJECT, "{len}");
    // Replacing it lists every member in the op: over the op budget.
    let e = r
        .write(vec![(
            "s",
            "k",
            Change::Put {
                value: Value::Json(Json::parse("[]").unwrap()),
                context: None,
            },
        )])
        .unwrap_err();
    assert!(
        matches!(e, WriteError::OpTooLarge { len, max, .. } if len > MAX_OP && max == MAX_OP),
        "{e}"
    );
    // A small add still fits nowhere; a remove and a delete do.
    r.write(vec![("s", "k", Change::Remove(vec![mib_string(0)]))])
        .unwrap();
    assert!(stored_len(&r, "s", "k") < len);
    r.restart();
    assert!(stored_len(&r, "s", "k") < len);
    r.write(vec![("s", "k", Change::Delete { context: None })])
        .unwrap();
}

#[test]
fn a_doc_grows_to_its_budget_then_refuses() {
    let mut r = Region::new("us-east");
    r.define("d", Policy::Doc);
    let mut accepted = 0;
    let refusal = loop {
        let mut patch = serde_json::Map::new();
        patch.insert(format!("f{accepted}"), mib_string(accepted).to_value());
        match r.write(vec![("d", "k", Change::Patch(patch))]) {
            Ok(_) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 100, "the doc never hit its budget");
    };
    assert!(
        matches!(&refusal, WriteError::ObjectTooLarge { key, .. } if key == "k"),
        "{refusal}"
    );
    assert!(stored_len(&r, "d", "k") <= MAX_OBJECT);
    r.restart();
    assert!(stored_len(&r, "d", "k") <= MAX_OBJECT);
}

#[test]
fn a_batch_over_the_op_budget_is_refused_whole() {
    let mut r = Region::new("us-east");
    let n = MAX_OP / MAX_VALUE + 1;
    let keys: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
    let muts = keys
        .iter()
        .map(|k| {
            (
                "default",
                k.as_str(),
                Change::Put {
                    value: Value::Bytes(vec![7; MAX_VALUE]),
                    context: None,
                },
            )
        })
        .collect();
    let e = r.write(muts).unwrap_err();
    assert!(matches!(e, WriteError::OpTooLarge { .. }), "{e}");
    assert_eq!(r.engine.staged_len(), 0);
    assert!(
        r.engine
            .reader()
            .get("default", &Key::new("k0").unwrap())
            .unwrap()
            .live()
            .is_none()
    );
}

#[test]
fn the_growth_bound_holds_for_the_cheapest_ops_of_every_policy() {
    // The engine skips measuring an object while its size plus this bound
    // stays under the budget: the bound must hold for the worst ratio of
    // growth to op size (tiny members and values, each carrying a dot).
    use meridian_core::budget::growth_bound;
    let mut r = Region::new(&"r".repeat(meridian_crdt::RegionId::MAX_LEN));
    for (ks, policy) in [
        ("m", Policy::Mv),
        ("s", Policy::Set),
        ("d", Policy::Doc),
        ("c", Policy::Counter),
    ] {
        r.define(ks, policy);
    }
    let tiny = |i: usize| Json::parse(&(i % 10).to_string()).unwrap();
    let changes: Vec<(&str, Change)> = vec![
        (
            "m",
            Change::Put {
                value: Value::Json(tiny(1)),
                context: None,
            },
        ),
        (
            "s",
            Change::Add(
                (0..500)
                    .map(|i| Json::parse(&i.to_string()).unwrap())
                    .collect(),
            ),
        ),
        (
            "d",
            Change::Patch(serde_json::from_str(r#"{"a": 1, "b": 2, "c": [1]}"#).unwrap()),
        ),
        ("c", Change::Incr(1)),
        (
            "default",
            Change::Put {
                value: Value::Json(tiny(2)),
                context: None,
            },
        ),
    ];
    for round in 0..20 {
        for (ks, change) in &changes {
            let key = Key::new("k").unwrap();
            let before = r
                .engine
                .reader()
                .get(ks, &key)
                .unwrap()
                .object
                .map_or(0, |o| codec::encoded_len(&o).unwrap());
            let c = r.write(vec![(ks, "k", change.clone())]).unwrap();
            let op = &c.applied[0].op;
            let op_len = codec::encoded_len(&op.mutations[0].op).unwrap();
            let after =
                codec::encoded_len(&r.engine.reader().get(ks, &key).unwrap().object.unwrap())
                    .unwrap();
            assert!(
                after <= before + growth_bound(op_len),
                "{ks} round {round}: {before} -> {after} bytes from an op of {op_len}"
            );
        }
    }
}
