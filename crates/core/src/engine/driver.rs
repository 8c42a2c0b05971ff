//! The commit protocol, written once: the order of steps that makes a
//! group of staged ops durable and visible. Every driver of an engine runs
//! it: the server's writer threads (pipelined, with the fsync outside the
//! engine's lock), recovery at start, and the deterministic simulator,
//! which crashes regions between any two steps.
//!
//! 1. [`Engine::begin`]: seal the current group and append its ops to the
//!    log (one write);
//! 2. the driver syncs the log ([`OpLog::sync_ops`], or an fsync of a handle it
//!    took, without the engine);
//! 3. [`Engine::finish`]: commit the group to the state store (state, ledger,
//!    checkpoint record in one batch), publish its version vector, and, when
//!    the group holds transferred state (which the log does not), persist
//!    the state store and apply log retention before anyone hears of it.
//!
//! [`Engine::step`] runs all three for drivers without a pipeline.

use super::{Committed, Engine, GroupId};
use crate::log::{Log, LogError, Lsn};
use crate::op::Op;
use crate::state::Backend;

use super::request::WriteError;

/// The durable op log a driver appends groups to.
///
/// # Correctness
/// - `append` writes the ops in order and returns the position of the
///   first; they are durable only after the next `sync`.
/// - `retain` drops only records below `checkpoint` (already durable in
///   the state store).
pub trait OpLog {
    /// Appends `ops` with one write; the position of the first.
    fn append_ops<'a>(&mut self, ops: impl Iterator<Item = &'a Op>) -> Result<Lsn, LogError>;
    /// Makes everything appended durable.
    fn sync_ops(&mut self) -> Result<(), LogError>;
    /// Applies retention below `checkpoint`; how many segments went.
    fn retain(&mut self, checkpoint: Lsn, now_ms: u64) -> Result<usize, LogError>;
}

impl OpLog for Log {
    fn append_ops<'a>(&mut self, ops: impl Iterator<Item = &'a Op>) -> Result<Lsn, LogError> {
        self.append(ops)
    }
    fn sync_ops(&mut self) -> Result<(), LogError> {
        self.sync()
    }
    fn retain(&mut self, checkpoint: Lsn, now_ms: u64) -> Result<usize, LogError> {
        self.enforce_retention(checkpoint, now_ms)
    }
}

/// A sealed group whose ops are appended, waiting for the log's sync.
#[derive(Debug)]
#[must_use = "a begun group must be finished once the log is synced"]
pub struct Pending {
    id: GroupId,
    /// Position of its first op (meaningless when it has none).
    pub first: Lsn,
    /// Ops in the group.
    pub len: u64,
}

impl Pending {
    /// Position of its last op, if it has any.
    pub fn last(&self) -> Option<Lsn> {
        (self.len > 0).then(|| Lsn(self.first.0 + self.len - 1))
    }
}

/// What [`Engine::finish`] did besides committing.
#[derive(Debug)]
pub struct Finished {
    /// The commit.
    pub committed: Committed,
    /// Position of the group's first op.
    pub first: Lsn,
    /// Log segments retention removed (after a checkpoint).
    pub retained: usize,
}

impl<B: Backend> Engine<B> {
    /// Step 1: seals the current group and appends its ops to `log`.
    /// `None` when nothing is staged.
    pub fn begin(&mut self, log: &mut impl OpLog) -> Result<Option<Pending>, WriteError> {
        let Some(id) = self.seal() else {
            return Ok(None);
        };
        let len = self.group_len(id) as u64;
        let first = if len > 0 {
            log.append_ops(self.group_ops(id))?
        } else {
            Lsn(0)
        };
        Ok(Some(Pending { id, first, len }))
    }

    /// Step 3, once `log` holds the pending group durably: commits it and,
    /// when it holds transferred state, makes the state store durable and
    /// applies retention before returning (nobody may hear of it sooner).
    pub fn finish(
        &mut self,
        log: &mut impl OpLog,
        p: Pending,
        now_ms: u64,
    ) -> Result<Finished, WriteError> {
        let first = p.first;
        let committed = self.commit_pending(p)?;
        let retained = if committed.needs_checkpoint {
            self.make_durable(log, now_ms)?
        } else {
            0
        };
        Ok(Finished {
            committed,
            first,
            retained,
        })
    }

    /// The first half of [`Engine::finish`]: the group committed to the
    /// state store and visible, not yet persisted there. A driver that
    /// calls it alone (the simulator, to crash in between) must call
    /// [`Engine::make_durable`] next when the result `needs_checkpoint`.
    pub fn commit_pending(&mut self, p: Pending) -> Result<Committed, WriteError> {
        let last = p.last();
        self.commit_group(p.id, last)
    }

    /// The second half of [`Engine::finish`]: persists the state store (a
    /// checkpoint) and applies log retention below it; how many segments
    /// went.
    pub fn make_durable(&mut self, log: &mut impl OpLog, now_ms: u64) -> Result<usize, WriteError> {
        let lsn = self.checkpoint()?;
        Ok(log.retain(lsn, now_ms)?)
    }

    /// All three steps, for drivers without a pipeline. `None` when
    /// nothing was staged.
    pub fn step(
        &mut self,
        log: &mut impl OpLog,
        now_ms: u64,
    ) -> Result<Option<Finished>, WriteError> {
        let Some(p) = self.begin(log)? else {
            return Ok(None);
        };
        log.sync_ops()?;
        self.finish(log, p, now_ms).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use meridian_crdt::{Json, RegionId, ReplicaId, Value};

    use super::*;
    use crate::engine::EngineConfig;
    use crate::op::Key;
    use crate::state::MemBackend;
    use crate::{Change, MutationRequest, WriteRequest};

    /// A log that records what the protocol asked of it.
    #[derive(Default)]
    struct Calls(Vec<String>, u64);

    impl OpLog for Calls {
        fn append_ops<'a>(&mut self, ops: impl Iterator<Item = &'a Op>) -> Result<Lsn, LogError> {
            let n = ops.count() as u64;
            self.0.push(format!("append {n}"));
            self.1 += n;
            Ok(Lsn(self.1 - n + 1))
        }
        fn sync_ops(&mut self) -> Result<(), LogError> {
            self.0.push("sync".into());
            Ok(())
        }
        fn retain(&mut self, checkpoint: Lsn, _now_ms: u64) -> Result<usize, LogError> {
            self.0.push(format!("retain below {}", checkpoint.0));
            Ok(0)
        }
    }

    #[test]
    fn the_steps_run_in_order_and_transferred_state_is_made_durable_before_it_is_answered() {
        let me = ReplicaId::new(RegionId::new("us-east").unwrap(), uuid::Uuid::from_u128(1));
        let mut e = Engine::open(me, EngineConfig::default(), Arc::new(MemBackend::new())).unwrap();
        let mut log = Calls::default();
        assert!(e.step(&mut log, 1).unwrap().is_none(), "nothing staged");
        let put = WriteRequest {
            deadline_ms: None,
            not_before_ms: None,
            fallback: false,
            mutations: vec![MutationRequest {
                keyspace: "default".into(),
                key: Key::new("k").unwrap(),
                change: Change::Put {
                    value: Value::Json(Json::parse("1").unwrap()),
                    context: None,
                },
            }],
        };
        e.submit(1_000, put).unwrap();
        let done = e.step(&mut log, 1).unwrap().unwrap();
        assert_eq!((done.first, done.committed.applied.len()), (Lsn(1), 1));
        assert_eq!(
            log.0,
            ["append 1", "sync"],
            "an op-only group needs no checkpoint"
        );
        // A group holding transferred state (no ops): no append, no sync of
        // nothing, and the state store made durable before it returns.
        let vv = e.vv().clone();
        e.install(1_000, Vec::new(), &vv).unwrap();
        let p = e.begin(&mut log).unwrap().unwrap();
        assert_eq!(p.len, 0);
        let done = e.finish(&mut log, p, 1).unwrap();
        assert!(done.committed.needs_checkpoint);
        assert_eq!(log.0, ["append 1", "sync", "retain below 1"]);
    }
}
