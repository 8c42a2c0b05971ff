//! The peer wire format, version 1: batches of ops, compactly (version 2,
//! more compactly still, is [`super::compact`]; [`decode`] reads both).
//!
//! A batch names each replica and keyspace once (tables) and refers to them
//! by index; each op's dependencies are sent as a delta against the previous
//! op of the same origin in the batch (an origin's own entry is implied:
//! `seq - 1`). A region writing alone thus ships ops with empty dependency
//! deltas, and an op costs little more than its key and value.
//!
//! ```text
//! Batch = [version byte] MessagePack [from, sent_ms, [replica...], [keyspace...], [op...]]
//! op    = [origin idx, seq, hlc, [[replica idx, seq]... changed deps], [[keyspace idx, key, object op]...]]
//! ```
//!
//! Past ~400 lines only with its unit tests, which STYLE keeps beside the
//! code; the code itself is under 400.

use std::collections::BTreeMap;

use meridian_crdt::codec::{self, DecodeError};
use meridian_crdt::{Dot, Hlc, ObjectOp, ReplicaId, Seq, VersionVector};
use serde::{Deserialize, Serialize};

use crate::op::{Key, KeyspaceName, Mutation, Op};

/// Largest encoded batch accepted.
pub const MAX_BATCH_BYTES: usize = crate::budget::MAX_BATCH;
/// Most ops in one batch.
pub const MAX_BATCH_OPS: usize = 100_000;

/// Why a batch could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The bytes are not a batch.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The bytes decode but do not make sense.
    #[error("invalid batch: {0}")]
    Invalid(String),
    /// Encoding failed.
    #[error("encoding: {0}")]
    Encode(#[from] codec::EncodeError),
}

#[derive(Serialize, Deserialize)]
struct WireBatch {
    from: ReplicaId,
    sent_ms: u64,
    replicas: Vec<ReplicaId>,
    keyspaces: Vec<KeyspaceName>,
    ops: Vec<WireOp>,
}

#[derive(Serialize, Deserialize)]
struct WireOp {
    origin: u32,
    seq: u64,
    hlc: Hlc,
    deps: Vec<(u32, u64)>,
    muts: Vec<(u32, Key, ObjectOp)>,
}

/// A decoded batch.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// The sending replica (not necessarily the ops' origin: regions relay).
    pub from: ReplicaId,
    /// The sender's wall clock when it sent the batch.
    pub sent_ms: u64,
    /// The ops, in the sender's log order (a causal order).
    pub ops: Vec<Op>,
    /// A version-2 batch's replica table, which its ack refers to by
    /// index ([`super::compact`]); empty for version 1.
    pub replicas: Vec<ReplicaId>,
}

impl Batch {
    /// The wire version the batch came in, which its ack answers in.
    pub fn version(&self) -> u8 {
        if self.replicas.is_empty() {
            codec::FORMAT_VERSION
        } else {
            super::compact::VERSION
        }
    }
}

fn index<T: Ord + Clone>(table: &mut Vec<T>, lookup: &mut BTreeMap<T, u32>, v: &T) -> u32 {
    if let Some(i) = lookup.get(v) {
        return *i;
    }
    let i = table.len() as u32;
    table.push(v.clone());
    lookup.insert(v.clone(), i);
    i
}

/// Encodes a batch.
pub fn encode(
    from: &ReplicaId,
    sent_ms: u64,
    ops: &[impl AsRef<Op>],
) -> Result<Vec<u8>, WireError> {
    let mut replicas = Vec::new();
    let mut rlookup = BTreeMap::new();
    let mut keyspaces = Vec::new();
    let mut klookup = BTreeMap::new();
    let mut last_deps: BTreeMap<ReplicaId, VersionVector> = BTreeMap::new();
    let mut wops = Vec::with_capacity(ops.len());
    for op in ops {
        let op = op.as_ref();
        let origin = op.dot.replica.clone();
        let oi = index(&mut replicas, &mut rlookup, &origin);
        let prev = last_deps.get(&origin);
        let mut deps = Vec::new();
        for (r, s) in op.deps.iter() {
            if *r == origin {
                continue; // implied: seq - 1
            }
            if prev.is_some_and(|p| p.get(r) == s) {
                continue;
            }
            deps.push((index(&mut replicas, &mut rlookup, r), s.0));
        }
        let muts = op
            .mutations
            .iter()
            .map(|m| {
                (
                    index(&mut keyspaces, &mut klookup, &m.keyspace),
                    m.key.clone(),
                    m.op.clone(),
                )
            })
            .collect();
        wops.push(WireOp {
            origin: oi,
            seq: op.dot.seq.0,
            hlc: op.hlc,
            deps,
            muts,
        });
        last_deps.insert(origin, op.deps.clone());
    }
    Ok(codec::encode(&WireBatch {
        from: from.clone(),
        sent_ms,
        replicas,
        keyspaces,
        ops: wops,
    })?)
}

/// Decodes a batch of either version (by its leading byte), checking every
/// index and dependency.
pub fn decode(bytes: &[u8]) -> Result<Batch, WireError> {
    if bytes.first() == Some(&super::compact::VERSION) {
        return super::compact::decode(bytes);
    }
    let w: WireBatch = codec::decode(bytes, MAX_BATCH_BYTES)?;
    if w.ops.len() > MAX_BATCH_OPS {
        return Err(WireError::Invalid(format!(
            "{} ops, over the {MAX_BATCH_OPS} limit",
            w.ops.len()
        )));
    }
    let replica = |i: u32| {
        w.replicas
            .get(i as usize)
            .cloned()
            .ok_or_else(|| WireError::Invalid(format!("replica index {i} out of range")))
    };
    let keyspace = |i: u32| {
        w.keyspaces
            .get(i as usize)
            .cloned()
            .ok_or_else(|| WireError::Invalid(format!("keyspace index {i} out of range")))
    };
    let mut last_deps: BTreeMap<ReplicaId, VersionVector> = BTreeMap::new();
    let mut ops = Vec::with_capacity(w.ops.len());
    for wop in w.ops {
        let origin = replica(wop.origin)?;
        if wop.seq == 0 {
            return Err(WireError::Invalid("op with seq 0".into()));
        }
        let mut deps = last_deps.get(&origin).cloned().unwrap_or_default();
        for (ri, s) in wop.deps {
            let r = replica(ri)?;
            if r == origin {
                return Err(WireError::Invalid(
                    "an origin's own entry is implied".into(),
                ));
            }
            deps.raise(&r, Seq(s));
        }
        deps.raise(&origin, Seq(wop.seq - 1));
        let mutations = wop
            .muts
            .into_iter()
            .map(|(ki, key, op)| {
                Ok(Mutation {
                    keyspace: keyspace(ki)?,
                    key,
                    op,
                })
            })
            .collect::<Result<Vec<_>, WireError>>()?;
        if mutations.is_empty() {
            return Err(WireError::Invalid("op without mutations".into()));
        }
        last_deps.insert(origin.clone(), deps.clone());
        ops.push(Op {
            dot: Dot::new(origin, Seq(wop.seq)),
            hlc: wop.hlc,
            deps,
            mutations,
        });
    }
    Ok(Batch {
        from: w.from,
        sent_ms: w.sent_ms,
        ops,
        replicas: Vec::new(),
    })
}

/// What a receiver answers once it has made a batch's ops durable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    /// The receiver's version vector (durable).
    pub vv: VersionVector,
    /// The receiver's wall clock when it answered.
    pub now_ms: u64,
    /// Ops it refused because their HLC was too far ahead of its clock.
    pub held: u32,
    /// Ops waiting in its causal buffer.
    pub buffered: u32,
    /// The receiver's hybrid logical clock when it answered: every op it
    /// creates later is stamped above it (used for tombstone collection).
    #[serde(default)]
    pub hlc: Hlc,
    /// The answering replica: an ack counts for the region (and the
    /// incarnation) that sent it, whatever name or URL the caller used.
    /// `None` from peers older than this field.
    #[serde(default)]
    pub replica: Option<ReplicaId>,
    /// Every op the receiver has seen, applied or waiting in its causal
    /// buffer (hello only): what a restarted region checks its own seqs
    /// against. `None` from older peers.
    #[serde(default)]
    pub seen: Option<VersionVector>,
}

/// Encodes an ack.
pub fn encode_ack(ack: &Ack) -> Result<Vec<u8>, WireError> {
    Ok(codec::encode(ack)?)
}

/// Decodes an ack.
pub fn decode_ack(bytes: &[u8]) -> Result<Ack, WireError> {
    Ok(codec::decode(bytes, 1 << 20)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_crdt::{LwwOp, RegionId, Value};
    use uuid::Uuid;

    fn rep(n: &str, i: u128) -> ReplicaId {
        ReplicaId::new(RegionId::new(n).unwrap(), Uuid::from_u128(i))
    }

    fn op(origin: &ReplicaId, seq: u64, deps: &[(&ReplicaId, u64)], key: &str) -> Op {
        let mut vv: VersionVector = deps.iter().map(|(r, s)| ((*r).clone(), Seq(*s))).collect();
        vv.raise(origin, Seq(seq - 1));
        Op {
            dot: Dot::new(origin.clone(), Seq(seq)),
            hlc: Hlc::new(1_000 + seq, 0).unwrap(),
            deps: vv,
            mutations: vec![Mutation {
                keyspace: KeyspaceName::default_keyspace(),
                key: Key::new(key).unwrap(),
                op: ObjectOp::Lww(LwwOp::Set(Value::Bytes(vec![7; 100]))),
            }],
        }
    }

    #[test]
    fn batches_round_trip_with_delta_dependencies() {
        let (a, b, c) = (rep("us-east", 1), rep("eu-west", 2), rep("ap-south", 3));
        let ops = vec![
            op(&a, 5, &[(&b, 3)], "k1"),
            op(&a, 6, &[(&b, 3)], "k2"),
            op(&b, 4, &[(&a, 6), (&c, 1)], "k3"),
            op(&a, 7, &[(&b, 4), (&c, 1)], "k4"),
        ];
        let bytes = encode(&c, 42, &ops).unwrap();
        let back = decode(&bytes).unwrap();
        assert_eq!(back.from, c);
        assert_eq!(back.sent_ms, 42);
        assert_eq!(back.ops, ops);
    }

    #[test]
    fn an_op_costs_little_more_than_its_key_and_value() {
        let a = rep("us-east", 1);
        let ops: Vec<Op> = (1..=100)
            .map(|s| op(&a, s, &[], &format!("key-{s:010}")))
            .collect();
        let bytes = encode(&a, 0, &ops).unwrap();
        let per_op = bytes.len() as f64 / 100.0;
        // key 14 bytes + value 100 bytes = 114; the target is 1.5x.
        assert!(per_op < 114.0 * 1.25, "{per_op} bytes per op");
    }

    #[test]
    fn a_peer_batch_with_json_not_in_canonical_form_is_refused() {
        // Only the region's own log and store are decoded without checking
        // the JSON again; what a peer sends is always checked.
        let a = rep("us-east", 1);
        let text = codec::encode(r#"{"b": 1, "a": 2}"#).unwrap();
        let loose: meridian_crdt::Json = codec::decode_trusted(&text, 100).unwrap();
        let mut o = op(&a, 1, &[], "k");
        o.mutations[0].op = ObjectOp::Lww(LwwOp::Set(Value::Json(loose)));
        let bytes = encode(&a, 0, &[o]).unwrap();
        assert!(matches!(decode(&bytes), Err(WireError::Decode(_))));
    }

    #[test]
    fn malformed_batches_are_refused_without_panicking() {
        let a = rep("us-east", 1);
        let good = encode(&a, 0, &[op(&a, 1, &[], "k")]).unwrap();
        for cut in 0..good.len() {
            assert!(decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        for i in 1..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0xff;
            let _ = decode(&bad); // must not panic
        }
        assert!(decode(&[codec::FORMAT_VERSION, 0x95, 0xc0, 0, 0x90, 0x90, 0x90]).is_err());
    }
}

/// One page of a state transfer: objects of the sender's state snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatePage {
    /// Identifies the transfer (pages of one transfer share it).
    pub transfer: u64,
    /// What the snapshot reflects.
    pub vv: VersionVector,
    /// The sender's highest HLC at the snapshot.
    pub hlc: Hlc,
    /// Encoded objects: keyspace, key, object bytes.
    pub entries: Vec<(KeyspaceName, Key, serde_bytes::ByteBuf)>,
    /// The last page: the receiver may adopt `vv` once it holds every page.
    pub done: bool,
}

/// Encodes a state page.
pub fn encode_state(page: &StatePage) -> Result<Vec<u8>, WireError> {
    Ok(codec::encode(page)?)
}

/// Decodes a state page.
pub fn decode_state(bytes: &[u8]) -> Result<StatePage, WireError> {
    Ok(codec::decode(bytes, crate::budget::MAX_PAGE)?)
}

/// The first message of a session: who is calling, and when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// The caller.
    pub from: ReplicaId,
    /// The caller's wall clock.
    pub now_ms: u64,
}

/// Encodes a hello.
pub fn encode_hello(h: &Hello) -> Result<Vec<u8>, WireError> {
    Ok(codec::encode(h)?)
}

/// Decodes a hello.
pub fn decode_hello(bytes: &[u8]) -> Result<Hello, WireError> {
    Ok(codec::decode(bytes, 4096)?)
}

/// A peer asks for one key's object (quorum reads, anti-entropy).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObjectRequest {
    /// The keyspace.
    pub keyspace: KeyspaceName,
    /// The keys.
    pub keys: Vec<Key>,
}

/// The answer: each key's encoded object (`None`: never written), and the
/// version vector the state reflected when read (read after the objects).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObjectReply {
    /// The answering region's version vector.
    pub vv: VersionVector,
    /// Per requested key, its encoded object.
    pub objects: Vec<Option<serde_bytes::ByteBuf>>,
}

/// A peer asks for digests (anti-entropy).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DigestRequest {
    /// Only these keyspaces (empty: all).
    pub keyspaces: Vec<KeyspaceName>,
    /// Also the bucket digests of these keyspaces.
    pub buckets_of: Vec<KeyspaceName>,
}

/// Digests of a region's state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DigestReply {
    /// The version vector the digests reflect.
    pub vv: VersionVector,
    /// Per keyspace: its digest.
    pub keyspaces: Vec<(KeyspaceName, u128)>,
    /// Per keyspace asked for: its bucket digests.
    pub buckets: Vec<(KeyspaceName, Vec<u128>)>,
}

/// A peer asks for the (key, contribution) pairs of some buckets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BucketRequest {
    /// The keyspace.
    pub keyspace: KeyspaceName,
    /// The buckets.
    pub buckets: Vec<u16>,
}

/// The keys of those buckets with their digest contributions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BucketReply {
    /// `(key, contribution)`.
    pub entries: Vec<(Key, u128)>,
}

/// Encodes any peer message.
pub fn encode_msg<T: Serialize>(m: &T) -> Result<Vec<u8>, WireError> {
    Ok(codec::encode(m)?)
}

/// Decodes any peer message, bounded (by the page limit: an answer may
/// carry one object of up to [`crate::budget::MAX_OBJECT_READ`]).
pub fn decode_msg<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    Ok(codec::decode(bytes, crate::budget::MAX_PAGE)?)
}
