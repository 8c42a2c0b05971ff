//! Golden vectors: the exact bytes of every encoding that is stored or
//! shipped. A failure here means the wire or disk format changed: bump
//! `codec::FORMAT_VERSION` and keep a reader for the old bytes, never just
//! update the vector.

use meridian_crdt::codec;
use meridian_crdt::*;
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

fn rep(name: &str, n: u128) -> ReplicaId {
    ReplicaId::new(RegionId::new(name).unwrap(), Uuid::from_u128(n))
}

fn meta_apply<T: Crdt>(
    state: &mut T,
    op: &T::Op,
    who: &ReplicaId,
    seq: u64,
    wall: u64,
    deps: &VersionVector,
) {
    let dot = Dot::new(who.clone(), Seq(seq));
    state.apply(
        op,
        &OpMeta {
            dot: &dot,
            hlc: Hlc::new(wall, 1).unwrap(),
            deps,
        },
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[track_caller]
fn golden<T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
    value: &T,
    expect: &str,
) {
    let bytes = codec::encode(value).unwrap();
    assert_eq!(hex(&bytes), expect, "encoding changed");
    let back: T = codec::decode(&bytes, 1 << 20).unwrap();
    assert_eq!(&back, value, "decode(encode(x)) != x");
}

fn a() -> ReplicaId {
    rep("us-east", 1)
}
fn b() -> ReplicaId {
    rep("eu-west", 2)
}
const T0: u64 = 1_764_172_170_123;

#[test]
fn identities_and_clocks() {
    golden(
        &a(),
        "0192a775732d65617374c41000000000000000000000000000000001",
    );
    golden(
        &Dot::new(b(), Seq(300)),
        "019292a765752d77657374c41000000000000000000000000000000002cd012c",
    );
    golden(&Hlc::new(T0, 7).unwrap(), "01cf019ac0db038b0007");
    let vv: VersionVector = [(a(), Seq(5)), (b(), Seq(70_000))].into_iter().collect();
    golden(
        &vv,
        "01929292a765752d77657374c41000000000000000000000000000000002ce000111709292a775732d65617374c4100000000000000000000000000000000105",
    );
}

#[test]
fn lww_register() {
    let mut r = LwwRegister::default();
    let op = r.set_op(Value::Json(Json::parse(r#"{"b":1,"a":"x"}"#).unwrap()));
    golden(&op, "0181a17381a16aaf7b2261223a2278222c2262223a317d");
    meta_apply(&mut r, &op, &a(), 1, T0, &VersionVector::new());
    golden(
        &r,
        "01919292cf019ac0db038b00019292a775732d65617374c410000000000000000000000000000000010181a16aaf7b2261223a2278222c2262223a317d",
    );
    golden(&LwwOp::<Value>::Delete, "01a164");
}

#[test]
fn mv_register() {
    let mut r = MvRegister::default();
    let p1 = r.put_op(None, Value::Bytes(vec![1, 2, 3]), 8).op;
    meta_apply(&mut r, &p1, &a(), 1, T0, &VersionVector::new());
    let p2 = r.put_op(None, Value::Bytes(vec![4]), 8).op;
    meta_apply(&mut r, &p2, &b(), 1, T0, &VersionVector::new());
    golden(&p2, "0181a170929081a162c40104");
    golden(
        &r,
        "0192829292a765752d77657374c410000000000000000000000000000000020192cf019ac0db038b000181a162c401049292a775732d65617374c410000000000000000000000000000000010192cf019ac0db038b000181a162c403010203929292a765752d77657374c41000000000000000000000000000000002019292a775732d65617374c4100000000000000000000000000000000101",
    );
}

#[test]
fn counter() {
    let mut c = PnCounter::default();
    let op = c.incr_op(&a(), 41).unwrap();
    golden(&op, "0181a174922900");
    meta_apply(&mut c, &op, &a(), 1, T0, &VersionVector::new());
    let op = c.incr_op(&b(), -1).unwrap();
    meta_apply(&mut c, &op, &b(), 1, T0, &VersionVector::new());
    golden(
        &c,
        "01928292a765752d77657374c4100000000000000000000000000000000292000192a775732d65617374c4100000000000000000000000000000000192290080",
    );
    golden(
        &c.delete_op(),
        "0181a1648292a765752d77657374c4100000000000000000000000000000000292000192a775732d65617374c41000000000000000000000000000000001922900",
    );
}

#[test]
fn or_set() {
    let mut s = OrSet::default();
    let op = s.add_op(vec![
        Json::parse("\"red\"").unwrap(),
        Json::parse("2").unwrap(),
    ]);
    golden(&op, "0181a1759292a52272656422a13290");
    meta_apply(&mut s, &op, &a(), 1, T0, &VersionVector::new());
    golden(
        &s,
        "019282a52272656422919292a775732d65617374c4100000000000000000000000000000000101a132919292a775732d65617374c4100000000000000000000000000000000101919292a775732d65617374c4100000000000000000000000000000000101",
    );
    golden(&OrSetOp::<Json>::Clear, "01a163");
}

#[test]
fn doc() {
    let schema: DocSchema =
        serde_json::from_value(json!({"likes": "counter", "tags": "set", "best": "max"})).unwrap();
    golden(
        &schema,
        "0183a462657374a36d6178a56c696b6573a7636f756e746572a474616773a3736574",
    );
    let mut d = Doc::default();
    let op = d
        .patch_op(
            &a(),
            json!({"name": "Ann", "likes": 2, "tags": ["x"], "best": 9})
                .as_object()
                .unwrap(),
            &schema,
        )
        .unwrap();
    golden(
        &op,
        "0184a46265737481a17881a1709290a139a56c696b657381a16381a174920200a46e616d6581a16c81a173a522416e6e22a47461677381a17381a1759291a322782290",
    );
    meta_apply(&mut d, &op, &a(), 1, T0, &VersionVector::new());
    golden(
        &d,
        "0184a46265737481a17892819292a775732d65617374c410000000000000000000000000000000010192cf019ac0db038b0001a139919292a775732d65617374c4100000000000000000000000000000000101a56c696b657381a163928192a775732d65617374c4100000000000000000000000000000000192020080a46e616d6581a16c919292cf019ac0db038b00019292a775732d65617374c4100000000000000000000000000000000101a522416e6e22a47461677381a1739281a3227822919292a775732d65617374c4100000000000000000000000000000000101919292a775732d65617374c4100000000000000000000000000000000101",
    );
}

#[test]
fn objects_and_policies() {
    let mut o = Object::empty(Policy::Counter);
    let op = ObjectOp::Counter(PnCounter::default().incr_op(&a(), 1).unwrap());
    golden(&op, "0181a16381a174920100");
    meta_apply(&mut o, &op, &a(), 1, T0, &VersionVector::new());
    golden(
        &o,
        "0181a163928192a775732d65617374c4100000000000000000000000000000000192010080",
    );
    golden(&Policy::Doc, "01a3646f63");
}

#[test]
fn merge_write_backs() {
    let mut r: MvRegister<Json> = MvRegister::default();
    let x = r.put_op(None, Json::parse("1").unwrap(), 16).op;
    meta_apply(&mut r, &x, &a(), 1, T0, &VersionVector::new());
    let inputs: Vec<Version> = r.siblings().into_iter().map(|(v, _)| v).collect();
    let op = r.merge_op(
        Json::parse("2").unwrap(),
        MergeStamp {
            function: "cart".into(),
            hash: "ab".into(),
            inputs,
            failed: None,
            at: None,
        },
    );
    golden(
        &op,
        "0181a16793919292a775732d65617374c4100000000000000000000000000000000101a13295a463617274a261629192cf019ac0db038b00019292a775732d65617374c4100000000000000000000000000000000101c0c0",
    );
    // A register holding a write-back that stands for its input.
    let at = r.siblings()[0].0.clone();
    let op = r.merge_op(
        Json::parse("2").unwrap(),
        MergeStamp {
            function: "cart".into(),
            hash: "ab".into(),
            inputs: vec![at.clone()],
            failed: None,
            at: Some(at),
        },
    );
    meta_apply(&mut r, &op, &b(), 1, T0 + 1, &VersionVector::new());
    golden(
        &r,
        "0192819292a765752d77657374c410000000000000000000000000000000020193cf019ac0db038c0001a13292cf019ac0db038b00019292a775732d65617374c4100000000000000000000000000000000101929292a765752d77657374c41000000000000000000000000000000002019292a775732d65617374c4100000000000000000000000000000000101",
    );
    golden(&Policy::Custom, "01a6637573746f6d");
}
