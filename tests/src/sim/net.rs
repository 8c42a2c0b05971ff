//! The simulated network: messages with delivery times.

use std::sync::Arc;

use meridian_core::{Key, KeyspaceName};
use meridian_crdt::{Hlc, VersionVector};

use super::Rng;

/// A state transfer: every object of the sender at one version vector.
#[derive(Debug)]
pub struct Transfer {
    /// Encoded objects.
    pub entries: Vec<(KeyspaceName, Key, Vec<u8>)>,
    /// What the objects reflect.
    pub vv: VersionVector,
    /// The sender's highest HLC then.
    pub hlc: Hlc,
}

/// A message between regions.
#[derive(Clone, Debug)]
pub enum Msg {
    /// An encoded op batch (the real wire format).
    Batch(Vec<u8>),
    /// An ack: the receiver's durable version vector and its clock.
    Ack(VersionVector, Hlc),
    /// A state transfer.
    State(Arc<Transfer>),
}

/// Messages in flight.
#[derive(Default)]
pub struct Net {
    queue: Vec<(u64, usize, usize, Msg)>,
}

impl Net {
    /// Queues `msg` from `from` to `to`, deliverable at `due`.
    pub fn send(&mut self, due: u64, from: usize, to: usize, msg: Msg) {
        self.queue.push((due, from, to, msg));
    }

    /// A random message that is due by `now` (so due messages overtake each other).
    pub fn take_due(&mut self, now: u64, rng: &mut Rng) -> Option<(usize, usize, Msg)> {
        let due: Vec<usize> = (0..self.queue.len())
            .filter(|i| self.queue[*i].0 <= now)
            .collect();
        if due.is_empty() {
            return None;
        }
        let i = due[rng.below(due.len() as u64) as usize];
        let (_, from, to, msg) = self.queue.swap_remove(i);
        Some((from, to, msg))
    }

    /// The earliest message, due or not.
    pub fn take_any(&mut self) -> Option<(usize, usize, Msg)> {
        let i = (0..self.queue.len()).min_by_key(|i| self.queue[*i].0)?;
        let (_, from, to, msg) = self.queue.remove(i);
        Some((from, to, msg))
    }
}
