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
pub const MAX_OBJECT: usize = 256 << 20;

const CHECKPOINT: &[u8] = b"checkpoint";

/// The table holding a keyspace's objects.
pub fn table(ks: &KeyspaceName) -> String {
    format!("k.{ks}")
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
    let bytes = codec::encode(c).map_err(|e| StoreError::Backend(e.to_string()))?;
    Ok((CHECKPOINT, bytes))
}

/// Decodes a stored object.
pub fn decode_object(ks: &KeyspaceName, key: &[u8], bytes: &[u8]) -> Result<Object, StoreError> {
    codec::decode(bytes, MAX_OBJECT).map_err(|e| StoreError::Decode {
        what: format!("object {ks}/{}", String::from_utf8_lossy(key)),
        reason: e.to_string(),
    })
}

/// Contribution of one stored object to its keyspace's digest.
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

/// The meta key of a keyspace's digest.
pub fn digest_key(ks: &KeyspaceName) -> Vec<u8> {
    format!("digest.{ks}").into_bytes()
}

/// Loads a keyspace's digest (0 when it has no keys).
pub fn load_digest(b: &impl Backend, ks: &KeyspaceName) -> Result<u128, StoreError> {
    Ok(match b.get(META, &digest_key(ks))? {
        Some(bytes) if bytes.len() == 16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&bytes);
            u128::from_le_bytes(a)
        }
        _ => 0,
    })
}
