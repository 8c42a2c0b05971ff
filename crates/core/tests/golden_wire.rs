//! Golden vectors of what regions ship to each other and hand to clients:
//! the exact bytes of a batch, an ack, a hello, a state page and a causal
//! token. Each starts with the codec's format version byte
//! (`meridian_crdt::codec::FORMAT_VERSION`). A failure here means the
//! format changed: bump the version and keep a reader for the old bytes,
//! never just update the vector. Wire version 2 (`compact`) starts with
//! its own marker, 2. (The crdt encodings inside are pinned in
//! `crates/crdt/tests/golden.rs`.)

mod vectors;

use meridian_core::replication::compact;
use meridian_core::replication::wire::{self, Ack, Hello, StatePage};
use meridian_core::{Key, KeyspaceName, Mutation, Op};
use meridian_crdt::{Dot, Hlc, LwwOp, ObjectOp, ReplicaId, Seq, Value, VersionVector};
use vectors::{T0, pinned, rep};

fn op(origin: &ReplicaId, seq: u64, deps: &[(&ReplicaId, u64)], key: &str, value: &[u8]) -> Op {
    let mut vv: VersionVector = deps.iter().map(|(r, s)| ((*r).clone(), Seq(*s))).collect();
    vv.raise(origin, Seq(seq - 1));
    Op {
        dot: Dot::new(origin.clone(), Seq(seq)),
        hlc: Hlc::new(T0 + seq, 1).unwrap(),
        deps: vv,
        mutations: vec![Mutation {
            keyspace: KeyspaceName::default_keyspace(),
            key: Key::new(key).unwrap(),
            op: ObjectOp::Lww(LwwOp::Set(Value::Bytes(value.to_vec()))),
        }],
    }
}

fn vv(entries: &[(&ReplicaId, u64)]) -> VersionVector {
    entries
        .iter()
        .map(|(r, s)| ((*r).clone(), Seq(*s)))
        .collect()
}

#[test]
fn a_batch() {
    let (a, b) = (rep("us-east", 1), rep("eu-west", 2));
    let ops = vec![
        op(&a, 5, &[(&b, 3)], "k1", b"v1"),
        op(&b, 4, &[(&a, 5)], "k2", b"v2"),
    ];
    let bytes = wire::encode(&b, T0, &ops).unwrap();
    pinned(&bytes, BATCH);
    let back = wire::decode(&bytes).unwrap();
    assert_eq!((back.from, back.sent_ms, back.ops), (b, T0, ops));
}

/// Pins bytes of wire version 2, whose marker is its own.
fn pinned_v2(bytes: &[u8], expect: &str) {
    assert_eq!(bytes[0], compact::VERSION, "no version-2 marker");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, expect, "encoding changed");
}

#[test]
fn a_version_2_batch() {
    let (a, b) = (rep("us-east", 1), rep("eu-west", 2));
    let mut deleted = op(&a, 6, &[(&b, 4)], "k3", b"");
    deleted.mutations[0].op = ObjectOp::Lww(LwwOp::Delete);
    let ops = vec![
        op(&a, 5, &[(&b, 3)], "k1", b"v1"),
        op(&b, 4, &[(&a, 5)], "k2", b"v2"),
        deleted,
    ];
    let enc = compact::encode(&b, T0, &ops).unwrap();
    pinned_v2(&enc.bytes, BATCH_V2);
    assert_eq!(enc.replicas, vec![b.clone(), a.clone()]);
    let back = wire::decode(&enc.bytes).unwrap();
    assert_eq!((back.from, back.sent_ms, back.ops), (b, T0, ops));
}

#[test]
fn a_version_2_ack_and_hello_answer() {
    let (a, b, c) = (rep("us-east", 1), rep("eu-west", 2), rep("ap-south", 3));
    let mut ack = Ack {
        vv: vv(&[(&a, 5), (&b, 4), (&c, 1)]),
        now_ms: T0 + 40,
        held: 1,
        buffered: 2,
        hlc: Hlc::new(T0, 3).unwrap(),
        replica: Some(b.clone()),
        seen: None,
    };
    let table = [c.clone(), a.clone()];
    let to = compact::AnswerTo {
        replicas: &table,
        sent_ms: T0,
    };
    let bytes = compact::encode_ack(&ack, to).unwrap();
    pinned_v2(&bytes, ACK_V2);
    assert_eq!(compact::decode_answer(&bytes, to, Some(&b)).unwrap(), ack);
    ack.seen = Some(vv(&[(&a, 6), (&b, 4)]));
    let hello = compact::AnswerTo {
        replicas: &[],
        sent_ms: T0,
    };
    let bytes = compact::encode_ack(&ack, hello).unwrap();
    pinned_v2(&bytes, HELLO_ANSWER_V2);
    assert_eq!(compact::decode_answer(&bytes, hello, None).unwrap(), ack);
}

#[test]
fn an_ack() {
    let (a, b) = (rep("us-east", 1), rep("eu-west", 2));
    let ack = Ack {
        vv: vv(&[(&a, 5), (&b, 4)]),
        now_ms: T0,
        held: 1,
        buffered: 2,
        hlc: Hlc::new(T0, 3).unwrap(),
        replica: Some(b.clone()),
        seen: Some(vv(&[(&a, 6), (&b, 4)])),
    };
    let bytes = wire::encode_ack(&ack).unwrap();
    pinned(&bytes, ACK);
    assert_eq!(wire::decode_ack(&bytes).unwrap(), ack);
}

#[test]
fn an_ack_from_a_peer_older_than_its_last_three_fields_still_reads() {
    // `hlc`, `replica` and `seen` were added to the ack without a version
    // bump, read with defaults when absent: a four-field ack (what older
    // peers send) must keep decoding.
    let a = rep("us-east", 1);
    let old = meridian_crdt::codec::encode(&(vv(&[(&a, 5)]), T0, 0u32, 3u32)).unwrap();
    let ack = wire::decode_ack(&old).unwrap();
    assert_eq!(
        (ack.vv, ack.now_ms, ack.held, ack.buffered),
        (vv(&[(&a, 5)]), T0, 0, 3)
    );
    assert_eq!(
        (ack.hlc, ack.replica, ack.seen),
        (Hlc::default(), None, None)
    );
}

#[test]
fn a_hello() {
    let h = Hello {
        from: rep("ap-south", 3),
        now_ms: T0,
    };
    let bytes = wire::encode_hello(&h).unwrap();
    pinned(&bytes, HELLO);
    assert_eq!(wire::decode_hello(&bytes).unwrap(), h);
}

#[test]
fn a_state_page() {
    let a = rep("us-east", 1);
    let page = StatePage {
        transfer: 7,
        vv: vv(&[(&a, 5)]),
        hlc: Hlc::new(T0, 0).unwrap(),
        entries: vec![(
            KeyspaceName::default_keyspace(),
            Key::new("k1").unwrap(),
            serde_bytes::ByteBuf::from(vec![1, 2, 3]),
        )],
        done: true,
    };
    let bytes = wire::encode_state(&page).unwrap();
    pinned(&bytes, STATE_PAGE);
    assert_eq!(wire::decode_state(&bytes).unwrap(), page);
}

#[test]
fn a_causal_token() {
    let (a, b) = (rep("us-east", 1), rep("eu-west", 2));
    let v = vv(&[(&a, 5), (&b, 4)]);
    let t = meridian_core::token::encode(&v);
    assert_eq!(t, TOKEN, "token encoding changed");
    assert_eq!(meridian_core::token::decode(&t).unwrap(), v);
    // The empty token every fresh region hands out.
    assert_eq!(
        meridian_core::token::encode(&VersionVector::default()),
        "AZA"
    );
}

const BATCH: &str = "019592a765752d77657374c41000000000000000000000000000000002cf0000019ac0db038b9292a775732d65617374c4100000000000000000000000000000000192a765752d77657374c4100000000000000000000000000000000291a764656661756c7492950005cf019ac0db0390000191920103919300a26b3181a16c81a17381a162c4027631950104cf019ac0db038f000191920005919300a26b3281a16c81a17381a162c4027632";
const BATCH_V2: &str = "0294cf0000019ac0db038b9292a765752d77657374c4100000000000000000000000000000000292a775732d65617374c4100000000000000000000000000000000191a764656661756c7493960105050191920003919400a26b3102c4027631960004ff0191920105919400a26b3202c4027632960101020191920004919400a26b3303c0";
const ACK_V2: &str = "029992920001920105919292a765752d77657374c4100000000000000000000000000000000204280102cf019ac0db038b000300c0c0";
const HELLO_ANSWER_V2: &str = "029990939292a861702d736f757468c41000000000000000000000000000000003019292a765752d77657374c41000000000000000000000000000000002049292a775732d65617374c4100000000000000000000000000000000105280102cf019ac0db038b00030092a765752d77657374c41000000000000000000000000000000002929292a765752d77657374c41000000000000000000000000000000002049292a775732d65617374c4100000000000000000000000000000000106";
const ACK: &str = "0197929292a765752d77657374c41000000000000000000000000000000002049292a775732d65617374c4100000000000000000000000000000000105cf0000019ac0db038b0102cf019ac0db038b000392a765752d77657374c41000000000000000000000000000000002929292a765752d77657374c41000000000000000000000000000000002049292a775732d65617374c4100000000000000000000000000000000106";
const HELLO: &str =
    "019292a861702d736f757468c41000000000000000000000000000000003cf0000019ac0db038b";
const STATE_PAGE: &str = "019507919292a775732d65617374c4100000000000000000000000000000000105cf019ac0db038b00009193a764656661756c74a26b31c403010203c3";
const TOKEN: &str =
    "AZKSkqdldS13ZXN0xBAAAAAAAAAAAAAAAAAAAAACBJKSp3VzLWVhc3TEEAAAAAAAAAAAAAAAAAAAAAEF";
