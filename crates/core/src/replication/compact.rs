//! Wire version 2: the compact batch and its compact ack.
//!
//! Version 1 ([`super::wire`]) spends about 33 bytes per op over its key and
//! value, and an ack names every replica of its version vector in full.
//! Version 2 sends what the receiver can work out as deltas:
//!
//! - an op's seq as the difference to the previous op of its origin in the
//!   batch (1 byte for a run of one origin's ops), its HLC as the wall
//!   clock's difference to the previous op's (1 byte at a few ms apart)
//!   and the logical counter;
//! - the three nested enum tags of the common mutations (a last-writer-wins
//!   set of JSON or bytes, a delete) as one kind byte; any other mutation
//!   carries its object op as version 1 does (kind 0);
//! - the sender as index 0 of the batch's replica table;
//! - in the ack, the replicas the batch named by their index in its table,
//!   the answer's wall clock as its difference to the batch's `sent_ms`,
//!   and the answering incarnation as a 64-bit fingerprint (the hello's
//!   answer names it in full; the sender then checks every later answer
//!   against it).
//!
//! ```text
//! Batch    = [2] MessagePack [sent_ms, [replica...], [keyspace...], [op...]]
//! op       = [origin idx, seq delta, wall delta, logical, [[replica idx, seq]...], [mutation...]]
//! mutation = [keyspace idx, key, kind, body]   kind 0 object op, 1 lww set JSON, 2 lww set bytes, 3 lww delete (body nil)
//! Ack      = [2] MessagePack [[[replica idx, seq]...], [[replica, seq]...], now delta, held, buffered, hlc, fingerprint, replica?, seen?]
//! ```
//!
//! Why past ~400 lines: one format, its batch and its ack, each with its
//! encoder, its checking decoder and its unit tests (STYLE keeps those
//! beside the code); split, the two halves would share every table and
//! delta rule.
//!
//! Deltas wrap (two's complement in 64 bits), so every u64 round-trips,
//! including an op logged twice (a delta of 0) and clocks behind `sent_ms`.
//! A session speaks version 2 only when the peer's hello answer is a
//! version-2 ack, which it sends only to a caller that offered it
//! ([`OFFER_HEADER`]): a build that knows only version 1 neither offers it
//! nor answers with it, so mixed clusters keep speaking version 1 to it.

use std::collections::BTreeMap;

use meridian_crdt::codec::{self, DecodeError};
use meridian_crdt::{Dot, Hlc, Json, LwwOp, ObjectOp, ReplicaId, Seq, Value, VersionVector};
use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::wire::{Ack, Batch, MAX_BATCH_BYTES, MAX_BATCH_OPS, WireError};
use crate::op::{Key, KeyspaceName, Mutation, Op};

/// The leading byte of a version-2 batch or ack.
pub const VERSION: u8 = 2;

/// Most replicas one batch may name (every incarnation of every region and
/// standby that ever wrote).
const MAX_REPLICAS: usize = 65_536;

/// Most dependency entries a batch's ops may decode into, summed over its
/// ops: each op carries its origin's whole vector, so a few bytes on the
/// wire can stand for a large vector per op (4,096 ops over 1,000 replicas
/// are 4 million).
const MAX_DEP_ENTRIES: usize = 16 << 20;

/// Largest ack accepted (as version 1's).
const MAX_ACK_BYTES: usize = 1 << 20;

/// The request header in which a caller offers the newest wire version it
/// reads (its value: the version, in decimal).
pub const OFFER_HEADER: &str = "meridian-wire";

#[derive(Serialize, Deserialize)]
struct WireBatch {
    sent_ms: u64,
    replicas: Vec<ReplicaId>,
    keyspaces: Vec<KeyspaceName>,
    ops: Vec<WireOp>,
}

#[derive(Serialize, Deserialize)]
struct WireOp {
    origin: u32,
    dseq: i64,
    dwall: i64,
    logical: u16,
    deps: Vec<(u32, u64)>,
    muts: Vec<WireMutation>,
}

/// One mutation: its keyspace's index, its key, and its object op, with
/// the common ones reduced to a kind byte and their payload.
struct WireMutation {
    keyspace: u32,
    key: Key,
    op: ObjectOp,
}

const KIND_OTHER: u8 = 0;
const KIND_SET_JSON: u8 = 1;
const KIND_SET_BYTES: u8 = 2;
const KIND_DELETE: u8 = 3;

impl Serialize for WireMutation {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(4)?;
        t.serialize_element(&self.keyspace)?;
        t.serialize_element(&self.key)?;
        match &self.op {
            ObjectOp::Lww(LwwOp::Set(Value::Json(j))) => {
                t.serialize_element(&KIND_SET_JSON)?;
                t.serialize_element(j)?;
            }
            ObjectOp::Lww(LwwOp::Set(Value::Bytes(b))) => {
                t.serialize_element(&KIND_SET_BYTES)?;
                t.serialize_element(serde_bytes::Bytes::new(b))?;
            }
            ObjectOp::Lww(LwwOp::Delete) => {
                t.serialize_element(&KIND_DELETE)?;
                t.serialize_element(&())?;
            }
            other => {
                t.serialize_element(&KIND_OTHER)?;
                t.serialize_element(other)?;
            }
        }
        t.end()
    }
}

impl<'de> Deserialize<'de> for WireMutation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = WireMutation;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a mutation [keyspace, key, kind, body]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<WireMutation, A::Error> {
                fn next<'de, T: Deserialize<'de>, A: SeqAccess<'de>>(
                    seq: &mut A,
                    i: usize,
                ) -> Result<T, A::Error> {
                    seq.next_element()?
                        .ok_or_else(|| de::Error::invalid_length(i, &"4 elements"))
                }
                let keyspace = next(&mut seq, 0)?;
                let key = next(&mut seq, 1)?;
                let kind: u8 = next(&mut seq, 2)?;
                let op = match kind {
                    KIND_OTHER => next(&mut seq, 3)?,
                    KIND_SET_JSON => {
                        ObjectOp::Lww(LwwOp::Set(Value::Json(next::<Json, _>(&mut seq, 3)?)))
                    }
                    KIND_SET_BYTES => ObjectOp::Lww(LwwOp::Set(Value::Bytes(
                        next::<serde_bytes::ByteBuf, _>(&mut seq, 3)?.into_vec(),
                    ))),
                    KIND_DELETE => {
                        next::<(), _>(&mut seq, 3)?;
                        ObjectOp::Lww(LwwOp::Delete)
                    }
                    k => {
                        return Err(de::Error::custom(format!("unknown mutation kind {k}")));
                    }
                };
                Ok(WireMutation { keyspace, key, op })
            }
        }
        d.deserialize_tuple(4, V)
    }
}

/// A table of replicas or keyspaces, each named once, referred to by index.
struct Table<T> {
    items: Vec<T>,
    lookup: BTreeMap<T, u32>,
}

impl<T: Ord + Clone> Table<T> {
    fn new() -> Self {
        Self {
            items: Vec::new(),
            lookup: BTreeMap::new(),
        }
    }

    fn index(&mut self, v: &T) -> u32 {
        if let Some(i) = self.lookup.get(v) {
            return *i;
        }
        let i = self.items.len() as u32;
        self.items.push(v.clone());
        self.lookup.insert(v.clone(), i);
        i
    }
}

/// A version-2 batch and the replica table it was written with (what its
/// ack refers to by index).
pub struct Encoded {
    /// The batch's bytes.
    pub bytes: Vec<u8>,
    /// Its replica table; the sender is at 0.
    pub replicas: Vec<ReplicaId>,
}

/// Encodes a batch in version 2.
pub fn encode(
    from: &ReplicaId,
    sent_ms: u64,
    ops: &[impl AsRef<Op>],
) -> Result<Encoded, WireError> {
    let mut replicas = Table::new();
    replicas.index(from);
    let mut keyspaces = Table::new();
    // Per origin index: its previous op's seq and dependencies.
    let mut last: BTreeMap<u32, (u64, &VersionVector)> = BTreeMap::new();
    let mut prev_wall = sent_ms;
    let mut wops = Vec::with_capacity(ops.len());
    for op in ops {
        let op = op.as_ref();
        let origin = &op.dot.replica;
        let oi = replicas.index(origin);
        let (prev_seq, prev_deps) = match last.get(&oi) {
            Some((s, d)) => (*s, Some(*d)),
            None => (0, None),
        };
        let mut deps = Vec::new();
        for (r, s) in op.deps.iter() {
            if r == origin {
                continue; // implied: seq - 1
            }
            if prev_deps.is_some_and(|p| p.get(r) == s) {
                continue;
            }
            deps.push((replicas.index(r), s.0));
        }
        let muts = op
            .mutations
            .iter()
            .map(|m| WireMutation {
                keyspace: keyspaces.index(&m.keyspace),
                key: m.key.clone(),
                op: m.op.clone(),
            })
            .collect();
        let wall = op.hlc.wall_ms();
        wops.push(WireOp {
            origin: oi,
            dseq: op.dot.seq.0.wrapping_sub(prev_seq) as i64,
            dwall: wall.wrapping_sub(prev_wall) as i64,
            logical: op.hlc.logical(),
            deps,
            muts,
        });
        prev_wall = wall;
        last.insert(oi, (op.dot.seq.0, &op.deps));
    }
    let mut bytes = vec![VERSION];
    codec::encode_into(
        &WireBatch {
            sent_ms,
            replicas: replicas.items.clone(),
            keyspaces: keyspaces.items,
            ops: wops,
        },
        &mut bytes,
    )?;
    Ok(Encoded {
        bytes,
        replicas: replicas.items,
    })
}

fn invalid(why: impl Into<String>) -> WireError {
    WireError::Invalid(why.into())
}

/// Decodes a version-2 batch (its leading byte already checked), checking
/// every index and dependency as version 1 does.
pub(super) fn decode(bytes: &[u8]) -> Result<Batch, WireError> {
    if bytes.len() > MAX_BATCH_BYTES {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: MAX_BATCH_BYTES,
        }
        .into());
    }
    let w: WireBatch = codec::decode_bare(bytes.get(1..).ok_or(DecodeError::Empty)?)?;
    if w.ops.len() > MAX_BATCH_OPS {
        return Err(invalid(format!(
            "{} ops, over the {MAX_BATCH_OPS} limit",
            w.ops.len()
        )));
    }
    if w.replicas.len() > MAX_REPLICAS {
        return Err(invalid(format!(
            "{} replicas named, over the {MAX_REPLICAS} limit",
            w.replicas.len()
        )));
    }
    let from = w
        .replicas
        .first()
        .cloned()
        .ok_or_else(|| invalid("a batch without its sender"))?;
    let replica = |i: u32| {
        w.replicas
            .get(i as usize)
            .ok_or_else(|| invalid(format!("replica index {i} out of range")))
    };
    let keyspace = |i: u32| {
        w.keyspaces
            .get(i as usize)
            .cloned()
            .ok_or_else(|| invalid(format!("keyspace index {i} out of range")))
    };
    let mut last: BTreeMap<u32, (u64, VersionVector)> = BTreeMap::new();
    let mut prev_wall = w.sent_ms;
    let mut dep_entries = 0usize;
    let mut ops = Vec::with_capacity(w.ops.len());
    for wop in w.ops {
        let origin = replica(wop.origin)?;
        let (prev_seq, mut deps) = last.remove(&wop.origin).unwrap_or_default();
        let seq = prev_seq.wrapping_add(wop.dseq as u64);
        if seq == 0 {
            return Err(invalid("op with seq 0"));
        }
        for (ri, s) in wop.deps {
            let r = replica(ri)?;
            if r == origin {
                return Err(invalid("an origin's own entry is implied"));
            }
            deps.raise(r, Seq(s));
        }
        deps.raise(origin, Seq(seq - 1));
        dep_entries += deps.len();
        if dep_entries > MAX_DEP_ENTRIES {
            return Err(invalid(format!(
                "the ops' dependencies decode into over {MAX_DEP_ENTRIES} entries"
            )));
        }
        let wall = prev_wall.wrapping_add(wop.dwall as u64);
        let hlc = Hlc::new(wall, wop.logical).map_err(|e| invalid(format!("op clock: {e}")))?;
        prev_wall = wall;
        if wop.muts.is_empty() {
            return Err(invalid("op without mutations"));
        }
        let mutations = wop
            .muts
            .into_iter()
            .map(|m| {
                Ok(Mutation {
                    keyspace: keyspace(m.keyspace)?,
                    key: m.key,
                    op: m.op,
                })
            })
            .collect::<Result<Vec<_>, WireError>>()?;
        last.insert(wop.origin, (seq, deps.clone()));
        ops.push(Op {
            dot: Dot::new(origin.clone(), Seq(seq)),
            hlc,
            deps,
            mutations,
        });
    }
    Ok(Batch {
        from,
        sent_ms: w.sent_ms,
        ops,
        replicas: w.replicas,
    })
}

#[derive(Serialize, Deserialize)]
struct WireAck {
    known: Vec<(u32, u64)>,
    other: Vec<(ReplicaId, u64)>,
    dnow: i64,
    held: u32,
    buffered: u32,
    hlc: Hlc,
    fingerprint: u64,
    replica: Option<ReplicaId>,
    seen: Option<VersionVector>,
}

/// A 64-bit fingerprint of an incarnation: what a version-2 ack names its
/// sender by once the hello's answer has named it in full.
pub fn fingerprint(r: &ReplicaId) -> u64 {
    let b = r.incarnation.as_bytes();
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// What an answer is to: the request's replica table (empty for a hello)
/// and the wall time it was sent at (a batch's `sent_ms`, a hello's
/// `now_ms`).
#[derive(Clone, Copy, Debug)]
pub struct AnswerTo<'a> {
    /// The batch's replica table.
    pub replicas: &'a [ReplicaId],
    /// The request's wall time.
    pub sent_ms: u64,
}

/// Encodes `ack` in version 2 as the answer to a request. The answering
/// replica is named in full only where the caller learns it (a hello: no
/// replica table); `ack.replica` must be set.
pub fn encode_ack(ack: &Ack, to: AnswerTo<'_>) -> Result<Vec<u8>, WireError> {
    let me = ack
        .replica
        .as_ref()
        .ok_or_else(|| invalid("a version-2 ack names its sender"))?;
    let mut known = Vec::new();
    let mut other = Vec::new();
    for (r, s) in ack.vv.iter() {
        match to.replicas.iter().position(|t| t == r) {
            Some(i) => known.push((i as u32, s.0)),
            None => other.push((r.clone(), s.0)),
        }
    }
    let mut bytes = vec![VERSION];
    codec::encode_into(
        &WireAck {
            known,
            other,
            dnow: ack.now_ms.wrapping_sub(to.sent_ms) as i64,
            held: ack.held,
            buffered: ack.buffered,
            hlc: ack.hlc,
            fingerprint: fingerprint(me),
            replica: to.replicas.is_empty().then(|| me.clone()),
            seen: ack.seen.clone(),
        },
        &mut bytes,
    )?;
    Ok(bytes)
}

/// Decodes an answer in either version: version 1 as it is, version 2
/// against the request it answers. `session` is the replica the session's
/// hello answered as: a version-2 answer from another incarnation is
/// refused.
pub fn decode_answer(
    bytes: &[u8],
    to: AnswerTo<'_>,
    session: Option<&ReplicaId>,
) -> Result<Ack, WireError> {
    if bytes.first() != Some(&VERSION) {
        return super::wire::decode_ack(bytes);
    }
    if bytes.len() > MAX_ACK_BYTES {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: MAX_ACK_BYTES,
        }
        .into());
    }
    let w: WireAck = codec::decode_bare(&bytes[1..])?;
    let mut vv = VersionVector::new();
    for (i, s) in w.known {
        let r = to
            .replicas
            .get(i as usize)
            .ok_or_else(|| invalid(format!("ack replica index {i} out of range")))?;
        vv.raise(r, Seq(s));
    }
    for (r, s) in w.other {
        vv.raise(&r, Seq(s));
    }
    let replica = match (w.replica, session) {
        (Some(r), _) if fingerprint(&r) != w.fingerprint => {
            return Err(invalid("the ack's fingerprint is not its replica's"));
        }
        (Some(r), Some(s)) if r != *s => {
            return Err(invalid("the answer is from another incarnation"));
        }
        (Some(r), _) => Some(r),
        (None, Some(s)) if fingerprint(s) == w.fingerprint => Some(s.clone()),
        (None, Some(_)) => {
            return Err(invalid("the answer is from another incarnation"));
        }
        // Nothing to check it against: a version-2 answer names its sender.
        (None, None) => return Err(invalid("the answer names no replica")),
    };
    Ok(Ack {
        vv,
        now_ms: to.sent_ms.wrapping_add(w.dnow as u64),
        held: w.held,
        buffered: w.buffered,
        hlc: w.hlc,
        replica,
        seen: w.seen,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_crdt::{CounterOp, PnEntry, RegionId};
    use uuid::Uuid;

    fn rep(n: &str, i: u128) -> ReplicaId {
        ReplicaId::new(RegionId::new(n).unwrap(), Uuid::from_u128(i << 64 | i))
    }

    fn op(origin: &ReplicaId, seq: u64, wall: u64, deps: &[(&ReplicaId, u64)], m: ObjectOp) -> Op {
        let mut vv: VersionVector = deps.iter().map(|(r, s)| ((*r).clone(), Seq(*s))).collect();
        vv.raise(origin, Seq(seq - 1));
        Op {
            dot: Dot::new(origin.clone(), Seq(seq)),
            hlc: Hlc::new(wall, (seq % 3) as u16).unwrap(),
            deps: vv,
            mutations: vec![Mutation {
                keyspace: KeyspaceName::default_keyspace(),
                key: Key::new(format!("key-{seq}")).unwrap(),
                op: m,
            }],
        }
    }

    fn set(v: &[u8]) -> ObjectOp {
        ObjectOp::Lww(LwwOp::Set(Value::Bytes(v.to_vec())))
    }

    #[test]
    fn batches_round_trip_with_every_kind_of_mutation_and_odd_deltas() {
        let (a, b, c) = (rep("us-east", 1), rep("eu-west", 2), rep("ap-south", 3));
        let json = ObjectOp::Lww(LwwOp::Set(Value::Json(
            Json::parse(r#"{"a":[1,2]}"#).unwrap(),
        )));
        let mut two_keyspaces = op(&b, 4, 900, &[(&a, 6), (&c, 1)], set(b"x"));
        two_keyspaces.mutations.push(Mutation {
            keyspace: KeyspaceName::new("counters").unwrap(),
            key: Key::new("n").unwrap(),
            op: ObjectOp::Counter(CounterOp::Totals(PnEntry { inc: 3, dec: 5 })),
        });
        let ops = vec![
            op(&a, 5, 1_000, &[(&b, 3)], set(b"v")),
            op(&a, 6, 1_002, &[(&b, 3)], json),
            two_keyspaces,
            // Logged twice (a seq delta of 0), and a clock far behind the
            // previous op and the batch's send time.
            op(&a, 6, 1_002, &[(&b, 3)], ObjectOp::Lww(LwwOp::Delete)),
            op(&a, 7, 3, &[(&b, 4), (&c, 1)], ObjectOp::Lww(LwwOp::Delete)),
            op(&c, u64::MAX, Hlc::MAX_WALL_MS, &[], set(b"")),
        ];
        let enc = encode(&c, 1_500, &ops).unwrap();
        assert_eq!(enc.bytes[0], VERSION);
        assert_eq!(enc.replicas, vec![c.clone(), a.clone(), b.clone()]);
        let back = super::super::wire::decode(&enc.bytes).unwrap();
        assert_eq!(back.from, c);
        assert_eq!(back.sent_ms, 1_500);
        assert_eq!(back.ops, ops);
        assert_eq!(back.replicas, enc.replicas);
        assert_eq!(back.version(), VERSION);
    }

    #[test]
    fn an_op_costs_its_key_and_value_and_about_a_dozen_bytes() {
        let a = rep("us-east", 1);
        let value = Value::Json(Json::parse(&format!("\"{}\"", "x".repeat(98))).unwrap());
        // Seqs and clocks of a region that has run a while.
        let (seq0, wall0) = (1_000_000, 1_764_000_000_000);
        let ops: Vec<Op> = (1..=100)
            .map(|s| {
                let set = ObjectOp::Lww(LwwOp::Set(value.clone()));
                let mut o = op(&a, seq0 + s, wall0 + s / 3, &[], set);
                o.mutations[0].key = Key::new(format!("bench-{s:08}")).unwrap();
                o
            })
            .collect();
        let v1 = super::super::wire::encode(&a, wall0, &ops).unwrap().len() as f64 / 100.0;
        let v2 = encode(&a, wall0, &ops).unwrap().bytes.len() as f64 / 100.0;
        // Key (14) and value (100) are 114 bytes of each op.
        assert!(v2 <= 114.0 + 14.0, "version 2: {v2} bytes per op");
        assert!(
            v1 - v2 >= 15.0,
            "version 1 {v1}, version 2 {v2} bytes per op"
        );
    }

    #[test]
    fn malformed_batches_are_refused_without_panicking() {
        let (a, b) = (rep("us-east", 1), rep("eu-west", 2));
        let ops = [
            op(&a, 1, 10, &[], set(b"v")),
            op(&b, 1, 11, &[(&a, 1)], set(b"w")),
        ];
        let good = encode(&a, 10, &ops).unwrap().bytes;
        for cut in 1..good.len() {
            assert!(
                super::super::wire::decode(&good[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        for i in 1..good.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[i] ^= flip;
                let _ = super::super::wire::decode(&bad); // must not panic
            }
        }
        let refused = |w: WireBatch| {
            let mut bytes = vec![VERSION];
            codec::encode_into(&w, &mut bytes).unwrap();
            match super::super::wire::decode(&bytes) {
                Err(WireError::Invalid(why)) => why,
                other => panic!("not refused as invalid: {other:?}"),
            }
        };
        let wop = |origin, dseq, deps: Vec<(u32, u64)>, ks| WireOp {
            origin,
            dseq,
            dwall: 0,
            logical: 0,
            deps,
            muts: vec![WireMutation {
                keyspace: ks,
                key: Key::new("k").unwrap(),
                op: set(b"v"),
            }],
        };
        let batch = |replicas: Vec<ReplicaId>, ops| WireBatch {
            sent_ms: 1,
            replicas,
            keyspaces: vec![KeyspaceName::default_keyspace()],
            ops,
        };
        assert!(refused(batch(vec![], vec![])).contains("sender"));
        assert!(
            refused(batch(vec![a.clone()], vec![wop(1, 1, vec![], 0)])).contains("replica index 1")
        );
        assert!(
            refused(batch(vec![a.clone()], vec![wop(0, 1, vec![], 1)]))
                .contains("keyspace index 1")
        );
        assert!(refused(batch(vec![a.clone()], vec![wop(0, 0, vec![], 0)])).contains("seq 0"));
        assert!(
            refused(batch(vec![a.clone()], vec![wop(0, 1, vec![(0, 3)], 0)])).contains("implied")
        );
        let mut empty = wop(0, 1, vec![], 0);
        empty.muts.clear();
        assert!(refused(batch(vec![a.clone()], vec![empty])).contains("without mutations"));
        let mut late = wop(0, 1, vec![], 0);
        late.dwall = (Hlc::MAX_WALL_MS + 1) as i64;
        assert!(refused(batch(vec![a.clone()], vec![late])).contains("clock"));
        // An unknown mutation kind, and JSON that is not canonical.
        let mut bytes = vec![VERSION];
        codec::encode_into(
            &(
                1u64,
                [&a],
                [KeyspaceName::default_keyspace()],
                [(0u32, 1i64, 0i64, 0u16, [(); 0], [(0u32, "k", 9u8, ())])],
            ),
            &mut bytes,
        )
        .unwrap();
        assert!(matches!(
            super::super::wire::decode(&bytes),
            Err(WireError::Decode(_))
        ));
        let mut bytes = vec![VERSION];
        codec::encode_into(
            &(
                1u64,
                [&a],
                [KeyspaceName::default_keyspace()],
                [(
                    0u32,
                    1i64,
                    0i64,
                    0u16,
                    [(); 0],
                    [(0u32, "k", KIND_SET_JSON, r#"{"b": 1}"#)],
                )],
            ),
            &mut bytes,
        )
        .unwrap();
        assert!(matches!(
            super::super::wire::decode(&bytes),
            Err(WireError::Decode(_))
        ));
    }

    fn ack(vv: VersionVector, replica: &ReplicaId, seen: Option<VersionVector>) -> Ack {
        Ack {
            vv,
            now_ms: 990,
            held: 1,
            buffered: 2,
            hlc: Hlc::new(995, 4).unwrap(),
            replica: Some(replica.clone()),
            seen,
        }
    }

    #[test]
    fn acks_round_trip_naming_the_batch_s_replicas_by_index() {
        let (a, b, c) = (rep("us-east", 1), rep("eu-west", 2), rep("ap-south", 3));
        let vv: VersionVector = [
            (a.clone(), Seq(9)),
            (b.clone(), Seq(4)),
            (c.clone(), Seq(2)),
        ]
        .into_iter()
        .collect();
        // An answer to a batch whose table holds a and c: b goes in full.
        let table = [a.clone(), c.clone()];
        let to = AnswerTo {
            replicas: &table,
            sent_ms: 1_000,
        };
        let sent = ack(vv.clone(), &b, None);
        let bytes = encode_ack(&sent, to).unwrap();
        assert_eq!(decode_answer(&bytes, to, Some(&b)).unwrap(), sent);
        // Smaller than version 1's, which names every replica.
        assert!(bytes.len() + 40 < super::super::wire::encode_ack(&sent).unwrap().len());
        // From another incarnation of b, or a table it does not fit: refused.
        let b2 = rep("eu-west", 7);
        assert!(decode_answer(&bytes, to, Some(&b2)).is_err());
        assert!(
            decode_answer(
                &bytes,
                AnswerTo {
                    replicas: &table[..1],
                    sent_ms: 1_000
                },
                Some(&b)
            )
            .is_err()
        );
        // A hello's answer names its replica, and its seen vector.
        let hello = ack(vv.clone(), &b, Some(vv.clone()));
        let to = AnswerTo {
            replicas: &[],
            sent_ms: 5,
        };
        let bytes = encode_ack(&hello, to).unwrap();
        assert_eq!(decode_answer(&bytes, to, None).unwrap(), hello);
        // Named in full, it must still be the session's.
        assert!(decode_answer(&bytes, to, Some(&b2)).is_err());
        // An in-session answer with no session to check it against.
        let table = [a.clone()];
        let of = AnswerTo {
            replicas: &table,
            sent_ms: 5,
        };
        let unnamed = encode_ack(&sent, of).unwrap();
        assert!(decode_answer(&unnamed, of, None).is_err());
        // Version 1 answers still read.
        let v1 = super::super::wire::encode_ack(&hello).unwrap();
        assert_eq!(decode_answer(&v1, to, Some(&a)).unwrap(), hello);
        for cut in 1..bytes.len() {
            assert!(
                decode_answer(&bytes[..cut], to, None).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn an_ack_whose_fingerprint_is_not_its_replica_s_is_refused() {
        let b = rep("eu-west", 2);
        let mut w = WireAck {
            known: vec![],
            other: vec![],
            dnow: 0,
            held: 0,
            buffered: 0,
            hlc: Hlc::ZERO,
            fingerprint: fingerprint(&b) ^ 1,
            replica: Some(b.clone()),
            seen: None,
        };
        let to = AnswerTo {
            replicas: &[],
            sent_ms: 0,
        };
        let enc = |w: &WireAck| {
            let mut bytes = vec![VERSION];
            codec::encode_into(w, &mut bytes).unwrap();
            bytes
        };
        assert!(decode_answer(&enc(&w), to, None).is_err());
        w.fingerprint ^= 1;
        assert!(decode_answer(&enc(&w), to, None).is_ok());
    }
}
