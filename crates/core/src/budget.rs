//! The encoded-size budget: the limits every accepted write fits, so that
//! anything a region accepted can be read back, logged, shipped in a batch,
//! sent in a state-transfer page and restarted from.
//!
//! The limits are checked when a client write is submitted, before anything
//! is stamped or logged: a write whose op, or whose resulting object, would
//! pass its limit is refused (HTTP 413) and leaves nothing behind.
//!
//! # Correctness
//! The limits nest, and the constant assertions below keep them nesting:
//!
//! - a value fits an op, and `MAX_SIBLING_CAP` values fit an object, so a
//!   blind `mv` write is never refused for its object's size;
//! - an op fits a log record and, alone, a peer batch: however large a
//!   legal op is, it can be shipped (it travels alone when it is larger
//!   than the batch target);
//! - objects merged from concurrent writes of several regions can grow
//!   past [`MAX_OBJECT`] (each region checked only what it had seen): the
//!   read limit [`MAX_OBJECT_READ`] leaves room for [`MAX_WRITERS`] regions
//!   each filling an object to its budget concurrently, and a state-transfer
//!   page always has room for one such object.

/// Most mutations in one atomic write (`POST /v1/batch`).
pub const MAX_MUTATIONS: usize = 1000;

/// Largest value, in bytes (`lww`/`mv` value, a `set` put, a `doc` put).
pub const MAX_VALUE: usize = 1 << 20;

/// Largest `sibling_cap` a keyspace may set.
pub const MAX_SIBLING_CAP: u32 = 16;

/// What one sibling costs beyond its value: its version (dot, HLC) and the
/// encoding's framing, generously.
pub const SIBLING_OVERHEAD: usize = 4 << 10;

/// Largest encoded op a client write may make (the log record's payload).
pub const MAX_OP: usize = 16 << 20;

/// Largest encoded object a client write may leave behind.
pub const MAX_OBJECT: usize = 24 << 20;

/// Regions whose concurrent growth of one object the read limit allows for.
pub const MAX_WRITERS: usize = 10;

/// Largest encoded object read back from the state store or a transfer
/// page. Larger than [`MAX_OBJECT`]: see the module docs.
pub const MAX_OBJECT_READ: usize = MAX_WRITERS * MAX_OBJECT + (16 << 20);

/// Largest log record accepted (written or read).
pub const MAX_RECORD: usize = 64 << 20;

/// What a peer batch aims for; a single larger op travels alone.
pub const BATCH_TARGET: usize = 1 << 20;

/// Largest encoded peer batch a receiver decodes.
pub const MAX_BATCH: usize = 32 << 20;

/// What a state-transfer page aims for; a single larger object travels alone.
pub const PAGE_TARGET: usize = 1 << 20;

/// Largest encoded state-transfer page a receiver decodes.
pub const MAX_PAGE: usize = MAX_OBJECT_READ + (1 << 20);

/// Room a batch needs beyond its ops (tables of replicas and keyspaces, the
/// sender, framing).
pub const BATCH_OVERHEAD: usize = 1 << 20;

/// Bytes of committed ops the replication feed keeps in memory.
pub const FEED_BYTES: usize = 256 << 20;

const _: () = assert!(MAX_VALUE + SIBLING_OVERHEAD <= MAX_OP);
const _: () = assert!(MAX_SIBLING_CAP as usize * (MAX_VALUE + SIBLING_OVERHEAD) <= MAX_OBJECT);
const _: () = assert!(MAX_OP <= MAX_RECORD);
const _: () = assert!(MAX_OP + BATCH_OVERHEAD <= MAX_BATCH);
const _: () = assert!(BATCH_TARGET + MAX_OP + BATCH_OVERHEAD <= MAX_BATCH);
const _: () = assert!(MAX_OBJECT_READ + (64 << 10) <= MAX_PAGE);

/// How much one op of `op_len` encoded bytes can grow an object's encoding,
/// whatever its policy: a value or member costs at most its own bytes plus
/// a version or dot (a replica id, a seq, an HLC: under 128 bytes) per
/// byte of op, plus framing. The engine measures an object exactly only
/// when this bound could take it past [`MAX_OBJECT`].
pub fn growth_bound(op_len: usize) -> usize {
    op_len.saturating_mul(128).saturating_add(4096)
}

/// Splits `items` into runs, in order, whose sizes add up to at most
/// `target`; an item larger than `target` makes a run of its own. Every
/// page, batch and repair a region sends is cut this way.
pub fn split_by_bytes<T>(
    items: impl IntoIterator<Item = T>,
    target: usize,
    size: impl Fn(&T) -> usize,
) -> Vec<Vec<T>> {
    let mut runs: Vec<Vec<T>> = Vec::new();
    let mut bytes = 0;
    for item in items {
        let n = size(&item);
        match runs.last_mut() {
            Some(run) if !run.is_empty() && bytes + n <= target => {
                bytes += n;
                run.push(item);
            }
            _ => {
                bytes = n;
                runs.push(vec![item]);
            }
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_stay_within_the_target_and_a_large_item_goes_alone() {
        let runs = split_by_bytes([40, 50, 20, 300, 10, 90, 1], 100, |n| *n);
        assert_eq!(
            runs,
            vec![vec![40, 50], vec![20], vec![300], vec![10, 90], vec![1]]
        );
        assert!(split_by_bytes(Vec::<usize>::new(), 100, |n| *n).is_empty());
        // At the target exactly: one run.
        assert_eq!(split_by_bytes([60, 40], 100, |n| *n), vec![vec![60, 40]]);
    }
}
