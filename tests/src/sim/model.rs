//! What clients were told, and what every region must therefore hold.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use meridian_core::Op;
use meridian_crdt::{Dot, ObjectOp, OrSetOp};

use super::region::SimRegion;

/// The acknowledged (and possibly-applied) writes of a run.
#[derive(Default)]
pub struct Model {
    /// Unique puts acknowledged: key -> value.
    pub puts: BTreeMap<String, i64>,
    /// Puts whose outcome is unknown.
    pub maybe_puts: BTreeMap<String, i64>,
    /// Counter key -> (acknowledged sum, unknown-outcome sum).
    pub counters: BTreeMap<String, (i64, i64)>,
    /// Custom (`sum`) key -> (acknowledged versions' sum, unknown-outcome sum).
    pub summed: BTreeMap<String, (i64, i64)>,
    /// Every durable op, by dot (the reference for set semantics).
    pub ops: BTreeMap<Dot, Arc<Op>>,
    /// Writes acknowledged.
    pub acked: u64,
    /// Of those, versions of custom keys.
    pub custom_acked: u64,
    /// Writes of unknown outcome.
    pub indeterminate: u64,
    /// Durable writes to owned keys: (key, the map's epoch when it was
    /// taken, the region that took it).
    pub owned: Vec<(String, u64, usize)>,
}

impl Model {
    /// The members a set key must have: those with an add that no remove (or
    /// clear) of them had observed.
    fn expected_set(&self, key: &str) -> BTreeSet<String> {
        let mut adds: Vec<(&Dot, String)> = Vec::new();
        let mut removes: Vec<(&Op, Option<Vec<String>>)> = Vec::new();
        for (dot, op) in &self.ops {
            for m in &op.mutations {
                if m.keyspace.as_str() != "s" || m.key.as_str() != key {
                    continue;
                }
                match &m.op {
                    ObjectOp::Set(OrSetOp::Update { add, remove }) => {
                        for v in add {
                            adds.push((dot, v.as_str().to_string()));
                        }
                        if !remove.is_empty() {
                            removes.push((
                                op,
                                Some(remove.iter().map(|v| v.as_str().to_string()).collect()),
                            ));
                        }
                    }
                    ObjectOp::Set(OrSetOp::Clear) => removes.push((op, None)),
                    _ => {}
                }
            }
        }
        adds.into_iter()
            .filter(|(dot, v)| {
                !removes.iter().any(|(r, which)| {
                    r.deps.covers(dot) && which.as_ref().is_none_or(|w| w.contains(v))
                })
            })
            .map(|(_, v)| v)
            .collect()
    }

    /// What an LWW key must hold: the value of its highest-stamped write, or
    /// nothing if that write is a delete.
    fn expected_lww(&self, key: &str) -> Option<i64> {
        self.expected_lww_in("default", key)
    }

    fn expected_lww_in(&self, ks: &str, key: &str) -> Option<i64> {
        self.ops
            .values()
            .filter_map(|op| {
                op.mutations
                    .iter()
                    .find(|m| m.keyspace.as_str() == ks && m.key.as_str() == key)
                    .map(|m| (op.hlc, op.dot.replica.clone(), m.op.clone()))
            })
            .max_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)))
            .and_then(|(_, _, op)| match op {
                ObjectOp::Lww(meridian_crdt::LwwOp::Set(meridian_crdt::Value::Json(j))) => {
                    j.as_str().parse().ok()
                }
                _ => None,
            })
    }

    /// Checks the owned keys' history: in every epoch at most one region
    /// took writes to a key, and every two writes to a key are causally
    /// ordered (none was concurrent with another, so none needed a
    /// conflict rule).
    pub fn check_owned(&self) -> Result<usize, String> {
        let mut takers: BTreeMap<(&str, u64), BTreeSet<usize>> = BTreeMap::new();
        for (k, e, r) in &self.owned {
            takers.entry((k.as_str(), *e)).or_default().insert(*r);
        }
        if let Some(((k, e), rs)) = takers.iter().find(|(_, rs)| rs.len() > 1) {
            return Err(format!(
                "owned key {k}: regions {rs:?} all took writes at epoch {e}"
            ));
        }
        let mut per_key: BTreeMap<&str, Vec<&Arc<Op>>> = BTreeMap::new();
        for op in self.ops.values() {
            for m in &op.mutations {
                if m.keyspace.as_str() == "o" {
                    per_key.entry(m.key.as_str()).or_default().push(op);
                }
            }
        }
        for (k, ops) in &per_key {
            for (i, a) in ops.iter().enumerate() {
                for b in &ops[i + 1..] {
                    if !a.deps.covers(&b.dot) && !b.deps.covers(&a.dot) {
                        return Err(format!(
                            "owned key {k}: writes {} and {} are concurrent",
                            a.dot, b.dot
                        ));
                    }
                }
            }
        }
        Ok(self.owned.len())
    }

    /// Checks one region's final state against what clients were told.
    pub fn check(&self, r: &SimRegion) -> Result<(), String> {
        for (k, got) in r.lww_values_in("o")? {
            let want = self.expected_lww_in("o", &k);
            if Some(got) != want {
                return Err(format!(
                    "{}: owned key {k} = {got}, its last write says {want:?}",
                    r.name
                ));
            }
        }
        let mut puts = r.lww_values()?;
        for key in ["shared-0", "shared-1", "shared-2"] {
            let want = self.expected_lww(key);
            let got = puts.remove(key);
            if got != want {
                return Err(format!(
                    "{}: {key} = {got:?}, last-writer-wins says {want:?}",
                    r.name
                ));
            }
        }
        for (k, v) in &self.puts {
            if puts.get(k) != Some(v) {
                return Err(format!(
                    "{}: acknowledged put {k}={v} reads {:?}",
                    r.name,
                    puts.get(k)
                ));
            }
        }
        for (k, v) in &puts {
            if self.puts.get(k).or_else(|| self.maybe_puts.get(k)) != Some(v) {
                return Err(format!("{}: key {k}={v} was never written", r.name));
            }
        }
        for (k, (acked, maybe)) in &self.counters {
            let got = r.counter(k)?;
            if got < i128::from(*acked) || got > i128::from(acked + maybe) {
                return Err(format!(
                    "{}: counter {k} = {got}, acknowledged increments sum to {acked} (+{maybe} unknown)",
                    r.name
                ));
            }
        }
        for (k, (acked, maybe)) in &self.summed {
            let (got, versions) = r.merged(k)?;
            if got < *acked || got > acked + maybe {
                return Err(format!(
                    "{}: custom key {k} merges to {got}, acknowledged versions sum to {acked} (+{maybe} unknown)",
                    r.name
                ));
            }
            if versions > 1 {
                return Err(format!(
                    "{}: custom key {k} still holds {versions} versions after the heal",
                    r.name
                ));
            }
        }
        for key in ["s0", "s1", "s2"] {
            let want = self.expected_set(key);
            let got = r.set(key)?;
            if got != want {
                return Err(format!(
                    "{}: set {key} = {got:?}, add-wins semantics say {want:?}",
                    r.name
                ));
            }
        }
        Ok(())
    }
}
