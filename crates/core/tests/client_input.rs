//! What a client supplies (a context, a schema, a concurrent definition)
//! can never make an acknowledged write vanish or be a no-op: it is clamped
//! or refused.

use meridian_core::*;
use meridian_crdt::{DocSchema, FieldRule, Json, Object, Policy, Seq, Value, VersionVector};

mod common;
use common::Region;

fn mv_values(r: &Region, ks: &str, key: &str) -> Vec<String> {
    match r
        .engine
        .reader()
        .get(ks, &Key::new(key).unwrap())
        .unwrap()
        .live()
    {
        Some(Object::Mv(m)) => m
            .siblings()
            .into_iter()
            .map(|(_, v)| match v {
                Value::Json(j) => j.as_str().to_string(),
                other => format!("{other:?}"),
            })
            .collect(),
        other => panic!("not an mv object: {other:?}"),
    }
}

fn put(json: &str, context: Option<VersionVector>) -> Change {
    Change::Put {
        value: Value::Json(Json::parse(json).unwrap()),
        context,
    }
}

#[test]
fn a_forged_context_cannot_hide_later_writes() {
    // Before the clamp: the forged context covered seqs that did not exist
    // yet, and every later write to the key answered 200 and stayed invisible.
    let mut r = Region::new("us-east");
    r.define("m", Policy::Mv);
    r.write(vec![("m", "k", put("\"first\"", None))]).unwrap();
    let me = r.engine.replica().clone();
    let forged: VersionVector = [(me, Seq(1 << 62))].into_iter().collect();
    r.write(vec![("m", "k", put("\"forged\"", Some(forged.clone())))])
        .unwrap();
    r.write(vec![("m", "k", put("\"later\"", None))]).unwrap();
    let seen = mv_values(&r, "m", "k");
    assert!(seen.contains(&"\"later\"".to_string()), "{seen:?}");
    assert!(seen.contains(&"\"forged\"".to_string()), "{seen:?}");
    // A forged delete context removes only what the region had seen.
    r.write(vec![(
        "m",
        "k",
        Change::Delete {
            context: Some(forged),
        },
    )])
    .unwrap();
    r.write(vec![("m", "k", put("\"after-delete\"", None))])
        .unwrap();
    assert_eq!(
        mv_values(&r, "m", "k"),
        vec!["\"after-delete\"".to_string()]
    );
}

fn doc_def(schema: &[(&str, FieldRule)]) -> KeyspaceDef {
    let mut def = KeyspaceDef::new(KeyspaceName::new("posts").unwrap(), Policy::Doc);
    def.schema = DocSchema(
        schema
            .iter()
            .map(|(f, r)| (f.to_string(), r.clone()))
            .collect(),
    );
    def
}

fn likes(r: &Region) -> serde_json::Value {
    match r
        .engine
        .reader()
        .get("posts", &Key::new("p").unwrap())
        .unwrap()
        .live()
    {
        Some(Object::Doc(d)) => d.to_json()["likes"].clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_schema_change_that_would_make_writes_no_ops_is_refused() {
    // Before: counter -> lww was accepted, and later patches of `likes`
    // answered 200 and changed nothing.
    let mut r = Region::new("us-east");
    assert!(
        r.engine
            .define(1, doc_def(&[("likes", FieldRule::Counter)]))
            .unwrap()
    );
    r.commit();
    let patch = |n: i64| {
        let mut m = serde_json::Map::new();
        m.insert("likes".into(), serde_json::json!(n));
        Change::Patch(m)
    };
    r.write(vec![("posts", "p", patch(2))]).unwrap();
    let e = r
        .engine
        .define(2, doc_def(&[("likes", FieldRule::Lww)]))
        .unwrap_err();
    assert!(
        matches!(&e, WriteError::SchemaChange { field, from: "counter", to: "lww", .. } if field == "likes"),
        "{e}"
    );
    // Naming another field lww (its rule already) is no change: accepted.
    assert!(
        r.engine
            .define(
                3,
                doc_def(&[("likes", FieldRule::Counter), ("title", FieldRule::Lww)])
            )
            .unwrap()
    );
    r.commit();
    // A new field with a non-default rule is a change too (it was lww).
    let e = r
        .engine
        .define(
            4,
            doc_def(&[("likes", FieldRule::Counter), ("tags", FieldRule::Set)]),
        )
        .unwrap_err();
    assert!(matches!(e, WriteError::SchemaChange { .. }), "{e}");
    r.write(vec![("posts", "p", patch(3))]).unwrap();
    assert_eq!(likes(&r), serde_json::json!(5));
}

/// Ships every op `from` logged that `to` lacks.
fn ship(from: &Region, to: &mut Region) {
    to.now = to.now.max(from.now) + 1;
    to.engine.receive(to.now, from.log.clone()).unwrap();
    to.commit();
}

#[test]
fn writes_to_keys_held_by_a_concurrent_definition_are_refused_not_ignored() {
    // Before: the key held set state (which outranks counter), and the
    // increments answered 200 and changed nothing.
    let mut a = Region::new("us-east");
    let mut b = Region::new("ap-south");
    a.define("things", Policy::Set);
    a.write(vec![(
        "things",
        "x",
        Change::Add(vec![Json::parse("1").unwrap()]),
    )])
    .unwrap();
    b.now = a.now + 10_000; // b's definition is the later one: it wins
    b.define("things", Policy::Counter);
    ship(&a, &mut b);
    ship(&b, &mut a);
    for r in [&mut a, &mut b] {
        assert_eq!(
            r.engine.registry().get("things").unwrap().policy,
            Policy::Counter
        );
        let e = r.write(vec![("things", "x", Change::Incr(1))]).unwrap_err();
        assert!(
            matches!(
                e,
                WriteError::TypeClash {
                    held: Policy::Set,
                    policy: Policy::Counter,
                    ..
                }
            ),
            "{e}"
        );
        // Other keys take the winning policy.
        r.write(vec![("things", "y", Change::Incr(1))]).unwrap();
    }
}
