//! State snapshot files: a region's stored tables cut into chunks whose
//! boundaries depend on the keys, not on their positions, so a chunk
//! changes only when a key inside it changes and an incremental backup
//! uploads only the chunks it has not stored before.
//!
//! # Format
//! `MRDNSNP\x01`, then records: `u32` payload length, `u32` CRC32C of the
//! payload (both little-endian), payload. A payload is `u16` table-name
//! length, the table name, `u32` key length, the key, and the value (the
//! rest). A chunk holds entries of one table only.

use std::collections::BTreeMap;

use crate::state::{ReadSnapshot, StoreError};

/// The first bytes of every chunk.
pub const MAGIC: &[u8; 8] = b"MRDNSNP\x01";
/// A chunk is cut once it holds this much and its last key is a boundary.
const MIN_BYTES: usize = 64 << 10;
/// A chunk is cut at this size whatever its keys.
const MAX_BYTES: usize = 8 << 20;
/// One key in this many is a boundary (after [`MIN_BYTES`]).
const BOUNDARY_ONE_IN: u32 = 256;

/// One stored entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The table (`meta`, `ledger`, `k.<keyspace>`).
    pub table: String,
    /// The key.
    pub key: Vec<u8>,
    /// The stored bytes.
    pub value: Vec<u8>,
}

/// An encoded chunk with what it holds.
#[derive(Clone, Debug)]
pub struct Chunk {
    /// The file's bytes.
    pub bytes: Vec<u8>,
    /// Its table.
    pub table: String,
    /// Entries in it.
    pub entries: u64,
}

/// Why a chunk does not decode.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChunkError {
    /// Not a chunk file.
    #[error("not a snapshot chunk (bad magic)")]
    Magic,
    /// A record is cut short or its checksum fails.
    #[error("snapshot chunk damaged at offset {0}")]
    Damaged(usize),
}

fn push_entry(out: &mut Vec<u8>, table: &str, key: &[u8], value: &[u8]) {
    let len = 2 + table.len() + 4 + key.len() + value.len();
    let start = out.len();
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(table.len() as u16).to_le_bytes());
    out.extend_from_slice(table.as_bytes());
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    let crc = crc32c::crc32c(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes a chunk into its entries, checking every record.
pub fn decode(bytes: &[u8]) -> Result<Vec<Entry>, ChunkError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(ChunkError::Magic);
    }
    let mut out = Vec::new();
    let mut at = MAGIC.len();
    let u32_at = |b: &[u8], i: usize| -> Option<u32> {
        b.get(i..i + 4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    };
    while at < bytes.len() {
        let damaged = ChunkError::Damaged(at);
        let len = u32_at(bytes, at).ok_or(damaged.clone())? as usize;
        let crc = u32_at(bytes, at + 4).ok_or(damaged.clone())?;
        let payload = bytes
            .get(at + 8..(at + 8).saturating_add(len))
            .ok_or(damaged.clone())?;
        if crc32c::crc32c(payload) != crc || payload.len() < 6 {
            return Err(damaged);
        }
        let tlen = u16::from_le_bytes([payload[0], payload[1]]) as usize;
        let table = payload.get(2..2 + tlen).ok_or(damaged.clone())?;
        let table = std::str::from_utf8(table).map_err(|_| damaged.clone())?;
        let klen = u32_at(payload, 2 + tlen).ok_or(damaged.clone())? as usize;
        let kstart = 2 + tlen + 4;
        let key = payload
            .get(kstart..kstart.saturating_add(klen))
            .ok_or(damaged.clone())?;
        out.push(Entry {
            table: table.to_string(),
            key: key.to_vec(),
            value: payload[kstart + klen..].to_vec(),
        });
        at += 8 + len;
    }
    Ok(out)
}

fn is_boundary(key: &[u8]) -> bool {
    crc32c::crc32c(key).is_multiple_of(BOUNDARY_ONE_IN)
}

/// Cuts the tables of a snapshot into chunks, in table then key order.
pub struct Chunker<'a, S> {
    snap: &'a S,
    tables: Vec<String>,
    at: usize,
    start: Vec<u8>,
    /// Entries per table so far.
    pub counts: BTreeMap<String, u64>,
}

impl<'a, S: ReadSnapshot> Chunker<'a, S> {
    /// Chunks of `tables` of `snap`.
    pub fn new(snap: &'a S, tables: Vec<String>) -> Self {
        Self {
            snap,
            tables,
            at: 0,
            start: Vec::new(),
            counts: BTreeMap::new(),
        }
    }

    /// The next chunk, or `None` when every table is done.
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>, StoreError> {
        while let Some(table) = self.tables.get(self.at).cloned() {
            let mut bytes = MAGIC.to_vec();
            let mut entries = 0u64;
            loop {
                let page = self.snap.scan(&table, b"", &self.start, 64)?;
                if page.is_empty() {
                    // The table is done: on to the next one.
                    self.at += 1;
                    self.start.clear();
                    break;
                }
                let mut cut = false;
                for (k, v) in page {
                    push_entry(&mut bytes, &table, &k, &v);
                    entries += 1;
                    self.start.clone_from(&k);
                    self.start.push(0);
                    if bytes.len() >= MAX_BYTES || (bytes.len() >= MIN_BYTES && is_boundary(&k)) {
                        cut = true;
                        break;
                    }
                }
                if cut {
                    break;
                }
            }
            if entries > 0 {
                *self.counts.entry(table.clone()).or_default() += entries;
                return Ok(Some(Chunk {
                    bytes,
                    table,
                    entries,
                }));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Backend, Batch, MemBackend};

    fn store(n: usize, value: usize) -> MemBackend {
        let b = MemBackend::default();
        let mut batch = Batch::new();
        for i in 0..n {
            batch.put("k.a", format!("key{i:06}"), vec![i as u8; value]);
        }
        batch.put("meta", "checkpoint", b"x".to_vec());
        b.write(batch).unwrap();
        b
    }

    fn chunks(b: &MemBackend) -> Vec<Chunk> {
        let snap = b.snapshot().unwrap();
        let mut c = Chunker::new(&snap, vec!["meta".into(), "k.a".into(), "k.none".into()]);
        let mut out = Vec::new();
        while let Some(ch) = c.next_chunk().unwrap() {
            out.push(ch);
        }
        out
    }

    #[test]
    fn chunks_round_trip_and_cut_by_key() {
        let b = store(20_000, 100);
        let all = chunks(&b);
        assert!(all.len() > 4, "{} chunks", all.len());
        assert_eq!(all[0].table, "meta");
        let mut n = 0;
        for ch in &all {
            let e = decode(&ch.bytes).unwrap();
            assert_eq!(e.len() as u64, ch.entries);
            assert!(e.iter().all(|x| x.table == ch.table));
            n += e.len();
        }
        assert_eq!(n, 20_001);
        // One key changed: only the chunk holding it changes.
        let mut batch = Batch::new();
        batch.put("k.a", "key010000", vec![9; 100]);
        b.write(batch).unwrap();
        let again = chunks(&b);
        assert_eq!(again.len(), all.len());
        let differ = all
            .iter()
            .zip(&again)
            .filter(|(x, y)| x.bytes != y.bytes)
            .count();
        assert_eq!(differ, 1);
    }

    #[test]
    fn damage_is_found() {
        let b = store(10, 10);
        let ch = &chunks(&b)[1];
        assert!(decode(&ch.bytes).is_ok());
        let mut bad = ch.bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(decode(&bad), Err(ChunkError::Damaged(_))));
        assert!(matches!(
            decode(&ch.bytes[..ch.bytes.len() - 3]),
            Err(ChunkError::Damaged(_))
        ));
        assert_eq!(decode(b"nonsense"), Err(ChunkError::Magic));
    }
}
