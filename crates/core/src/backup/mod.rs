//! Backups: what a backup target holds ([`manifest`]), state snapshots cut
//! into content-addressed chunks ([`chunk`]), and rebuilding a region's
//! state from them up to a point in time ([`restore`]). Moving files to and
//! from object storage is the server's part; everything here is
//! synchronous and free of I/O beyond the restored store and log.

pub mod chunk;
pub mod manifest;
pub mod restore;

pub use manifest::{FileRef, Manifest, SegmentRef};
pub use restore::{Filter, Restore, RestoreError, Restored};
