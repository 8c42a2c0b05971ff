//! What a region's backups run by: checked from `[backup]` in the
//! configuration.

/// Checked backup settings.
#[derive(Clone, Debug)]
pub struct BackupSettings {
    /// Where backups go.
    pub target: super::target::TargetSpec,
    /// Archive interval, ms.
    pub archive_interval_ms: u64,
    /// Scheduled backups, ms (0: off).
    pub every_ms: u64,
    /// Retention by count (0: off).
    pub keep_last: u32,
    /// Retention by age, ms (0: off).
    pub keep_ms: u64,
    /// The undo window, ms.
    pub undo_ms: u64,
}
