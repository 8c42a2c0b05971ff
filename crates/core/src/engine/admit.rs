//! Admission of a local op against the size budget ([`crate::budget`]),
//! before it is staged.

use meridian_crdt::{Crdt, OpMeta, codec};

use super::Engine;
use super::request::WriteError;
use crate::budget::{self, growth_bound};
use crate::op::Op;
use crate::state::{Backend, StoreError};

impl<B: Backend> Engine<B> {
    /// Refuses a local op that is over the op budget or would leave an
    /// object over the object budget (see [`crate::budget`]); nothing is
    /// staged then. Remote ops are never refused for size: their origin
    /// checked them, and refusing them would wedge replication.
    pub(super) fn check_budget(&mut self, op: &Op) -> Result<(), WriteError> {
        let encode_err = |e: codec::EncodeError| StoreError::encode("op", e);
        let len = codec::encoded_len(op).map_err(encode_err)?;
        if len > budget::MAX_OP {
            let largest = op
                .mutations
                .iter()
                .max_by_key(|m| codec::encoded_len(&m.op).unwrap_or(usize::MAX));
            return Err(WriteError::OpTooLarge {
                keyspace: largest.map(|m| m.keyspace.to_string()).unwrap_or_default(),
                key: largest.map(|m| m.key.to_string()).unwrap_or_default(),
                len,
                max: budget::MAX_OP,
            });
        }
        let meta = OpMeta {
            dot: &op.dot,
            hlc: op.hlc,
            deps: &op.deps,
        };
        let mut measured = Vec::new();
        for m in &op.mutations {
            let policy = self
                .registry
                .get(m.keyspace.as_str())
                .map_or(m.op.policy(), |d| d.policy);
            let op_len = codec::encoded_len(&m.op).map_err(encode_err)?;
            let entry = self.load(&m.keyspace, &m.key, policy)?;
            let bound = entry.size.map(|s| s.saturating_add(growth_bound(op_len)));
            if bound.is_some_and(|b| b <= budget::MAX_OBJECT) {
                continue; // far from the limit: no need to measure
            }
            let mut trial = entry.obj.clone();
            // Conflicts found on the trial copy are recorded when the op
            // is staged for real.
            let _ = trial.apply(&m.op, &meta);
            let len = codec::encoded_len(&trial).map_err(encode_err)?;
            if len > budget::MAX_OBJECT {
                return Err(WriteError::ObjectTooLarge {
                    keyspace: m.keyspace.to_string(),
                    key: m.key.to_string(),
                    len,
                    max: budget::MAX_OBJECT,
                });
            }
            measured.push((m.keyspace.clone(), m.key.clone(), len));
        }
        // Only once the whole op fits: its staging takes these sizes.
        for (ks, key, len) in measured {
            if let Some(d) = self.current.dirty.get_mut(&(ks, key)) {
                d.measured = Some(len);
            }
        }
        Ok(())
    }
}
