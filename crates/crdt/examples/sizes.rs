//! Prints the encoded size of one 100-byte value in each replicated type:
//! the op that writes it and the state after it. Feeds `docs/crdt.md`.
//!
//! `cargo run -p meridian-crdt --example sizes`

use meridian_crdt::codec;
use meridian_crdt::*;
use serde_json::json;
use uuid::Uuid;

fn main() {
    let me = ReplicaId::new(RegionId::new("us-east").unwrap(), Uuid::new_v4());
    let dot = Dot::new(me.clone(), Seq(123_456));
    let deps = VersionVector::new();
    let meta = OpMeta {
        dot: &dot,
        hlc: Hlc::new(1_764_172_170_123, 0).unwrap(),
        deps: &deps,
    };
    // A JSON string whose text is exactly 100 bytes.
    let text = format!("\"{}\"", "x".repeat(98));
    let json = Json::parse(&text).unwrap();
    assert_eq!(json.as_str().len(), 100);

    let mut rows = Vec::new();
    let mut row = |name: &str, op: Vec<u8>, state: Vec<u8>| {
        rows.push((name.to_string(), op.len(), state.len()))
    };

    let mut lww = LwwRegister::default();
    let op = lww.set_op(Value::Json(json.clone()));
    lww.apply(&op, &meta);
    row(
        "lww",
        codec::encode(&op).unwrap(),
        codec::encode(&lww).unwrap(),
    );

    let mut mv = MvRegister::default();
    let op = mv.put_op(None, Value::Json(json.clone()), 16).op;
    mv.apply(&op, &meta);
    row(
        "mv",
        codec::encode(&op).unwrap(),
        codec::encode(&mv).unwrap(),
    );

    let mut set = OrSet::default();
    let op = set.add_op(vec![json.clone()]);
    set.apply(&op, &meta);
    row(
        "set (one 100-byte member)",
        codec::encode(&op).unwrap(),
        codec::encode(&set).unwrap(),
    );

    let mut doc = Doc::default();
    let op = doc
        .patch_op(
            &me,
            json!({ "f": "x".repeat(98) }).as_object().unwrap(),
            &DocSchema::default(),
        )
        .unwrap();
    doc.apply(&op, &meta);
    row(
        "doc (one lww field)",
        codec::encode(&op).unwrap(),
        codec::encode(&doc).unwrap(),
    );

    let mut counter = PnCounter::default();
    let op = counter.incr_op(&me, 100).unwrap();
    counter.apply(&op, &meta);
    row(
        "counter (no value; +100)",
        codec::encode(&op).unwrap(),
        codec::encode(&counter).unwrap(),
    );

    println!("| type | op bytes | state bytes |");
    println!("|---|---|---|");
    for (name, op, state) in rows {
        println!("| {name} | {op} | {state} |");
    }
}
