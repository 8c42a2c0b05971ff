//! Merge write-backs of `custom` keys (see [`crate::merge`]): which keys
//! this region owes a merge, the write-back op, and the ledger entry every
//! region records when it applies one.
//!
//! Why past ~400 lines: one idea, custom merges: what is owed, the write-back
//! op and its ledger entry.

use meridian_crdt::{
    Json, MergeStamp, MvOp, Object, ObjectOp, Policy, RegionId, Value, Version, VersionVector,
};

use super::keyspaces::KeyspaceDef;
use super::ledger::{MAX_RECORDED_INPUTS, MergeRecord};
use super::request::Change;
use super::{Engine, WriteError};
use crate::merge::{self, MergeDef};
use crate::op::{Key, KeyspaceName, Mutation};
use crate::state::Backend;

/// Most keys remembered as owing a merge; beyond it the stored state is
/// swept for them again.
const MAX_DUE: usize = 100_000;

/// Stored keys one sweep step reads.
const SWEEP_PAGE: usize = 64;

/// Whether a merge failure may pass on its own (a wall-time limit a busy
/// machine hit, a thread that could not start), so a periodic retry is
/// worth it; a function that fails on these versions fails again.
fn transient(why: &str) -> bool {
    why.contains("wall-time limit") || why.contains("cannot start a script thread")
}

/// One merge write-back inside an op, as a region applying it records it.
pub(super) struct Applied {
    /// Field path in a document (empty: the whole key).
    path: Vec<String>,
    value: Json,
    by: MergeStamp,
    /// The inputs, with the values this region held for them.
    inputs: Vec<(Version, Option<Value>)>,
}

/// The merge write-back in `op`, about to be applied to `obj`.
pub(super) fn merges_in(obj: &Object, op: &ObjectOp) -> Vec<Applied> {
    match (op, obj) {
        (ObjectOp::Mv(MvOp::Merge { value, by, .. }), _) => {
            let siblings: Vec<(Version, &Value)> = match obj {
                Object::Mv(r) => r.siblings(),
                _ => Vec::new(),
            };
            let inputs = by
                .inputs
                .iter()
                .map(|v| {
                    let x = siblings
                        .iter()
                        .find(|(h, _)| h == v)
                        .map(|(_, x)| (*x).clone());
                    (v.clone(), x)
                })
                .collect();
            let value = match value {
                Value::Json(j) => j.clone(),
                Value::Bytes(_) => Json::from_value(&serde_json::Value::Null),
            };
            vec![Applied {
                path: Vec::new(),
                value,
                by: by.clone(),
                inputs,
            }]
        }
        _ => Vec::new(),
    }
}

/// Whether `obj` (of a custom keyspace) holds versions a write-back would
/// collapse.
pub(super) fn unmerged(obj: &Object) -> bool {
    matches!(obj, Object::Mv(r) if r.len() > 1)
}

/// The compare-and-set of a context write to a custom key (at its merger):
/// it replaces the key's value, so its context must cover the key's whole
/// context (every op that touched the key, deletes and write-backs too)
/// and claim nothing beyond what the region (`vv`) or the key reflects (a
/// version installed by repair before its op arrives). Checked, the
/// context is used whole: clamped to the vector alone it would miss a
/// repaired version and leave it standing.
pub(super) fn compare_and_set<'a>(
    def: &KeyspaceDef,
    key: &Key,
    obj: &Object,
    vv: &VersionVector,
    asked: &'a Change,
) -> Result<&'a Change, WriteError> {
    let (Change::Put {
        context: Some(c), ..
    }
    | Change::Delete { context: Some(c) }) = asked
    else {
        return Ok(asked);
    };
    let (uncovered, held) = match obj {
        Object::Mv(r) => (r.survivors(Some(c)), r.context().clone()),
        _ => (0, VersionVector::new()),
    };
    let mut known = vv.clone();
    known.merge(&held);
    if !c.covers_all(&held) || c.meet(&known) != *c {
        return Err(WriteError::StaleContext {
            keyspace: def.name.to_string(),
            key: key.to_string(),
            uncovered,
        });
    }
    Ok(asked)
}

impl<B: Backend> Engine<B> {
    /// Admits a write to a custom key before its state is read: a delete,
    /// or a write with a (non-empty) context, replaces versions, so only
    /// the key's merger takes it; nothing that replaces versions can then
    /// be concurrent with the merger's write-back of them. `Some(vector)`
    /// when the write must pass [`compare_and_set`] against the key.
    pub(super) fn admit_custom(
        &self,
        def: &KeyspaceDef,
        key: &Key,
        asked: &Change,
    ) -> Result<Option<VersionVector>, WriteError> {
        if def.policy != Policy::Custom {
            return Ok(None);
        }
        let (what, context) = match asked {
            Change::Delete { context } => ("delete", context.as_ref()),
            Change::Put {
                context: Some(c), ..
            } if !c.is_empty() => ("put with a context", Some(c)),
            _ => return Ok(None),
        };
        if let Some(regions) = &self.merge_regions
            && let Some(m) = merge::merger(&def.name, key, regions)
            && *m != self.me.region
        {
            return Err(WriteError::NotMerger {
                keyspace: def.name.to_string(),
                key: key.to_string(),
                change: what,
                merger: m.clone(),
            });
        }
        Ok(context.filter(|c| !c.is_empty()).map(|_| self.vv.clone()))
    }

    /// Starts writing back merges: `regions` is every region of the
    /// cluster (this one included), which decides each key's merger
    /// ([`merge::merger`]). Call once the incarnation is settled: a
    /// write-back is a local op.
    pub fn enable_merges(&mut self, regions: Vec<RegionId>) {
        self.enable_merges_after(regions, VersionVector::new());
    }

    /// [`Engine::enable_merges`], holding write-backs until this region has
    /// applied `hold`: what its peers hold of this region's own replicas,
    /// old incarnations included. A region whose disk was rolled back may
    /// have shipped write-backs it no longer has; writing those versions
    /// back again, before the first write-back returns, would count them
    /// twice in a sum.
    pub fn enable_merges_after(&mut self, mut regions: Vec<RegionId>, hold: VersionVector) {
        self.merge_hold = hold;
        if !regions.contains(&self.me.region) {
            regions.push(self.me.region.clone());
        }
        regions.sort();
        regions.dedup();
        self.merge_regions = Some(regions);
        // Keys left with several versions before a restart are in the
        // store, not in memory: find them.
        self.resweep();
    }

    /// Starts (or restarts) a sweep of the stored custom keys for merges
    /// owed: after a restart, a state transfer, or when too many were due
    /// to remember.
    pub(super) fn resweep(&mut self) {
        self.merge_sweep = Some((KeyspaceName::system(), Vec::new()));
    }

    /// One step of the sweep: reads up to [`SWEEP_PAGE`] stored keys of
    /// custom keyspaces and notes those holding several versions.
    fn sweep_step(&mut self) -> Result<(), WriteError> {
        let Some((mut ks, start)) = self.merge_sweep.take() else {
            return Ok(());
        };
        let customs: Vec<KeyspaceName> = self
            .registry
            .iter()
            .filter(|d| d.policy == Policy::Custom)
            .map(|d| d.name.clone())
            .collect();
        // The system keyspace marks a fresh sweep: begin at the first custom one.
        if ks.is_system() || !customs.contains(&ks) {
            match customs.iter().find(|c| ks.is_system() || **c > ks) {
                Some(first) => ks = first.clone(),
                None => return Ok(()),
            }
        }
        let start = if customs.contains(&ks) {
            start
        } else {
            Vec::new()
        };
        let page = self
            .backend
            .scan(&super::store::table(&ks), b"", &start, SWEEP_PAGE)?;
        let mut next = None;
        for (k, v) in &page {
            let obj = super::store::decode_object(&ks, k, v)?;
            if unmerged(&obj)
                && let Ok(key) = Key::new(String::from_utf8_lossy(k).into_owned())
            {
                self.note_merge(&ks, &key);
            }
            let mut after = k.clone();
            after.push(0);
            next = Some(after);
        }
        self.merge_sweep = match (page.len() == SWEEP_PAGE, next) {
            (true, Some(after)) => Some((ks, after)),
            // This keyspace is done: on to the next custom one, if any.
            _ => customs
                .iter()
                .find(|c| **c > ks)
                .map(|c| (c.clone(), Vec::new())),
        };
        if self.merge_sweep.is_none() && std::mem::take(&mut self.sweep_again) {
            self.resweep();
        }
        Ok(())
    }

    /// Remembers that `keyspace/key` may owe a merge.
    pub(super) fn note_merge(&mut self, keyspace: &KeyspaceName, key: &Key) {
        if self.due_merges.len() >= MAX_DUE {
            // Forgotten here: a sweep (again, after one that is running,
            // which may have passed this key) finds it.
            self.sweep_again = true;
            return;
        }
        if let Some(regions) = &self.merge_regions
            && merge::merger(keyspace, key, regions) != Some(&self.me.region)
        {
            return;
        }
        self.due_merges.insert((keyspace.clone(), key.clone()));
    }

    /// Tries again the merges that failed (a limit a busy machine hit, a
    /// script since fixed): call now and then (the server does at each
    /// checkpoint tick).
    pub fn retry_failed_merges(&mut self) {
        self.retry(false);
    }

    /// Queues failed merges again: only those that failed on a limit a busy
    /// machine can hit (`all`: every one, the function changed). They stay
    /// in `failed_merges` until tried, so a failure again is not ledgered
    /// twice.
    fn retry(&mut self, all: bool) {
        for (slot, passing) in self.failed_merges.iter_mut() {
            if (all || *passing) && self.due_merges.len() < MAX_DUE {
                self.due_merges.insert(slot.clone());
                if all {
                    *passing = true;
                }
            }
        }
    }

    /// A merge script or a custom keyspace definition changed: keys that
    /// could not be merged before may be now.
    pub(super) fn merges_changed(&mut self) {
        if self.merge_regions.is_some() {
            // A new function is a new merge: its failures are news.
            self.retry(true);
            self.failed_merges.clear();
            if self.merge_sweep.is_some() {
                self.sweep_again = true;
            } else {
                self.resweep();
            }
        }
    }

    /// Whether write-backs may be due (or stored keys are still to be
    /// swept for them).
    pub fn merges_due(&self) -> bool {
        self.merge_regions.is_some()
            && !self.merges_held()
            && (!self.due_merges.is_empty() || self.merge_sweep.is_some() || self.sweep_again)
    }

    /// Whether write-backs wait for ops peers hold of this region's own
    /// replicas (see [`Engine::enable_merges_after`]).
    pub fn merges_held(&self) -> bool {
        !self.vv.covers_all(&self.merge_hold)
    }

    /// Stages the write-backs this region owes, at most `max`: for each
    /// custom key it is the merger of and that holds several versions, an
    /// op replacing them with their merge. How many were staged.
    pub fn merge_due(&mut self, now_ms: u64, max: usize) -> Result<usize, WriteError> {
        let Some(regions) = self.merge_regions.clone() else {
            return Ok(0);
        };
        if self.merges_held() {
            return Ok(0);
        }
        if self.due_merges.is_empty() {
            if self.merge_sweep.is_none() && std::mem::take(&mut self.sweep_again) {
                self.resweep();
            }
            self.sweep_step()?;
        }
        let mut staged = 0;
        // Every function run counts, failed or not: a round stays bounded.
        let mut runs = 0;
        while runs < max {
            let Some((ks, key)) = self.due_merges.pop_first() else {
                break;
            };
            if merge::merger(&ks, &key, &regions) != Some(&self.me.region) {
                continue;
            }
            let Some(def) = self.registry.get(ks.as_str()).cloned() else {
                continue;
            };
            // A copy: resolving reads the registry while the state is held.
            let obj = self.load(&ks, &key, def.policy)?.obj.clone();
            let op = match &obj {
                Object::Mv(reg) if reg.len() > 1 => {
                    let Some(function) = self.registry.merge_for(&def) else {
                        continue;
                    };
                    let siblings = reg.siblings();
                    runs += 1;
                    let Some(res) = merge::resolve(&function, &siblings) else {
                        continue;
                    };
                    if let Some(why) = &res.failed {
                        // Never written back: the versions stay (readers see
                        // the newest), so a fixed script, or the next try
                        // after a transient limit, still merges all of them.
                        // A retry that fails again is not ledgered again.
                        let slot = (ks.clone(), key.clone());
                        if self.failed_merges.remove(&slot).is_none() {
                            self.record_failed(&ks, &key, &siblings, why.clone(), &res);
                        }
                        if self.failed_merges.len() < MAX_DUE {
                            self.failed_merges.insert(slot, transient(why));
                        } else {
                            self.sweep_again = true;
                        }
                        continue;
                    }
                    ObjectOp::Mv(reg.merge_op(Value::Json(res.value.clone()), res.stamp()))
                }
                _ => {
                    // Nothing to merge (any more): not a failure to retry.
                    self.failed_merges.remove(&(ks, key));
                    continue;
                }
            };
            let mutation = Mutation {
                keyspace: ks.clone(),
                key: key.clone(),
                op,
            };
            match self.stage_local(now_ms, vec![mutation]) {
                Ok(()) => {
                    staged += 1;
                    self.stats.merges_written += 1;
                    self.failed_merges.remove(&(ks, key));
                }
                Err(e) if e.is_fatal() => return Err(e),
                Err(e) => {
                    tracing::warn!(keyspace = %ks, key = %key.as_str(), error = %e, "merge write-back refused");
                }
            }
        }
        Ok(staged)
    }

    /// Registers (or replaces) a merge script checked by
    /// [`MergeDef::check`]. `Ok(false)` when exactly this is registered
    /// already (nothing staged).
    pub fn define_merge(&mut self, now_ms: u64, def: MergeDef) -> Result<bool, WriteError> {
        if self
            .registry
            .merge_def(&def.name)
            .is_some_and(|d| **d == def)
        {
            return Ok(false);
        }
        if self.registry.merge_def(&def.name).is_none()
            && self.registry.merge_defs().count() >= self.cfg.max_merges
        {
            return Err(WriteError::Limit {
                what: "merges",
                max: self.cfg.max_merges,
            });
        }
        let key = Key::new(def.key())?;
        self.put_system(now_ms, key, &def)?;
        Ok(true)
    }

    /// A merge the merger tried and could not write back: recorded in this
    /// region's ledger only (nothing replicates).
    fn record_failed(
        &mut self,
        keyspace: &KeyspaceName,
        key: &Key,
        siblings: &[(Version, &Value)],
        why: String,
        res: &merge::Resolution,
    ) {
        let Some((newest, _)) = siblings.last() else {
            return;
        };
        self.stats.merges_failed += 1;
        let inputs = siblings
            .iter()
            .map(|(v, x)| (v.clone(), Some((*x).clone())))
            .collect();
        let applied = Applied {
            path: Vec::new(),
            value: res.value.clone(),
            by: MergeStamp {
                function: res.function.clone(),
                hash: res.hash.clone(),
                inputs: res.inputs.clone(),
                failed: Some(why),
                at: Some(res.at.clone()),
            },
            inputs,
        };
        let now = self.clock.last();
        self.record_merge(keyspace, key, newest.clone(), applied, now);
    }

    pub(super) fn record_merge(
        &mut self,
        keyspace: &KeyspaceName,
        key: &Key,
        version: Version,
        mut applied: Applied,
        now: meridian_crdt::Hlc,
    ) {
        if self.registry.get(keyspace.as_str()).map(|d| d.policy) != Some(Policy::Custom) {
            return;
        }
        let bytes: usize = applied
            .inputs
            .iter()
            .map(|(_, v)| v.as_ref().map_or(0, Value::len))
            .sum();
        let values_omitted = bytes > MAX_RECORDED_INPUTS;
        if values_omitted {
            for (_, v) in &mut applied.inputs {
                *v = None;
            }
        }
        let record = MergeRecord {
            function: applied.by.function,
            hash: applied.by.hash,
            inputs: applied.inputs,
            values_omitted,
            failed: applied.by.failed,
        };
        *self.stats.conflicts.entry(keyspace.clone()).or_default() += 1;
        let e = self.ledger.record_merge(
            keyspace,
            key,
            applied.path,
            (version, Value::Json(applied.value)),
            record,
            now,
        );
        self.current.conflicts.push(e);
    }
}
