//! How the engine lays its state out in a [`Backend`]: object tables, the
//! checkpoint, per-keyspace digests.

use meridian_crdt::codec;
use meridian_crdt::{Hlc, Object, VersionVector};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::op::KeyspaceName;
use crate::state::{Backend, StoreError};

/// The table of engine metadata.
pub const META: &str = "meta";
/// Largest encoded object accepted when reading state back.
pub const MAX_OBJECT: usize = crate::budget::MAX_OBJECT_READ;

const CHECKPOINT: &[u8] = b"checkpoint";

/// The table holding a keyspace's objects.
pub fn table(ks: &KeyspaceName) -> String {
    format!("k.{ks}")
}

/// Whether a table name is a keyspace's object table ([`table`]).
pub fn is_object_table(name: &str) -> bool {
    name.starts_with("k.")
}

/// What the stored state reflects. Written in the same batch as the state
/// it describes, so the two always agree.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Every op covered by this vector is in the state.
    pub vv: VersionVector,
    /// The log position of the last op written (0: none).
    pub lsn: u64,
    /// The highest HLC this region had issued or seen.
    pub hlc: Hlc,
}

/// Loads the checkpoint (the default when the store is new).
pub fn load_checkpoint(b: &impl Backend) -> Result<Checkpoint, StoreError> {
    match b.get(META, CHECKPOINT)? {
        None => Ok(Checkpoint::default()),
        Some(bytes) => codec::decode(&bytes, 1 << 20).map_err(|e| StoreError::Decode {
            what: "checkpoint".into(),
            reason: e.to_string(),
        }),
    }
}

/// The checkpoint's key and encoding, for a batch.
pub fn checkpoint_entry(c: &Checkpoint) -> Result<(&'static [u8], Vec<u8>), StoreError> {
    let bytes = codec::encode(c).map_err(|e| StoreError::encode("checkpoint", e))?;
    Ok((CHECKPOINT, bytes))
}

/// Decodes a stored object.
pub fn decode_object(ks: &KeyspaceName, key: &[u8], bytes: &[u8]) -> Result<Object, StoreError> {
    codec::decode_trusted(bytes, MAX_OBJECT).map_err(|e| StoreError::Decode {
        what: format!("object {ks}/{}", String::from_utf8_lossy(key)),
        reason: e.to_string(),
    })
}

/// Contribution of one object to its keyspace's digest: 0 for a dead one
/// (a tombstone), so digests cover live data and collecting a tombstone
/// changes nothing there.
pub fn object_contribution(key: &[u8], obj: &meridian_crdt::Object, encoded: &[u8]) -> u128 {
    use meridian_crdt::Crdt;
    if obj.is_live() {
        contribution(key, encoded)
    } else {
        0
    }
}

/// Contribution of one stored (live) object to its keyspace's digest.
///
/// A keyspace's digest is the wrapping sum of these over its keys: it does
/// not depend on the order keys were written in, and is updated in O(1) per
/// write (subtract the old contribution, add the new). Two regions with the
/// same objects (same encoded bytes) have the same digest.
pub fn contribution(key: &[u8], encoded: &[u8]) -> u128 {
    let mut h = Sha256::new();
    h.update((key.len() as u64).to_le_bytes());
    h.update(key);
    h.update(encoded);
    let out = h.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&out[..16]);
    u128::from_le_bytes(first)
}

/// Buckets of a keyspace's digest tree.
pub const BUCKETS: usize = 256;

/// The bucket of a key in its keyspace's digest tree: spread by a hash of
/// the key alone, so every region puts a key in the same bucket.
pub fn bucket_of(key: &[u8]) -> usize {
    Sha256::digest(key)[0] as usize
}

/// A keyspace's digest tree: per bucket, the wrapping sum of the
/// contributions of its keys. The keyspace digest is the sum of the buckets.
/// Two regions whose trees differ in a bucket differ in a key of that bucket;
/// anti-entropy compares the 256 buckets first and only then the keys of the
/// buckets that differ.
pub type Tree = Vec<u128>;

/// Computes a keyspace's tree by reading every object (at startup: damage
/// done to the files while the region was down shows up as a difference).
pub fn compute_tree(b: &impl Backend, ks: &KeyspaceName) -> Result<Tree, StoreError> {
    let mut tree = vec![0u128; BUCKETS];
    let table = table(ks);
    let mut start = Vec::new();
    loop {
        let page = b.scan(&table, b"", &start, 1024)?;
        if page.is_empty() {
            break;
        }
        for (k, v) in &page {
            let obj = decode_object(ks, k, v)?;
            let t = &mut tree[bucket_of(k)];
            *t = t.wrapping_add(object_contribution(k, &obj, v));
        }
        if let Some((k, _)) = page.last() {
            start = k.clone();
            start.push(0);
        }
    }
    Ok(tree)
}

/// The digest of a tree.
pub fn tree_digest(tree: &Tree) -> u128 {
    tree.iter().fold(0u128, |a, b| a.wrapping_add(*b))
}
