//! Temporary directories for tests, removed on drop.

use std::path::Path;

/// A fresh directory under the system temp dir, removed when dropped: a
/// [`tempfile::TempDir`] (the crate the state store already links) named
/// `meridian-<tag>-<random>`, so a crashed run's leftovers never collide
/// with the next run.
pub struct TestDir(tempfile::TempDir);

impl TestDir {
    /// Creates `<tmp>/meridian-<tag>-<random>`.
    pub fn new(tag: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("meridian-{tag}-"))
            .tempdir()
            .expect("create test dir");
        Self(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}
