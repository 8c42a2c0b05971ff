//! The multi-region test harness (being built).
