//! Changes that bypass the op stream: a peer's state snapshot merged in
//! (state transfer: [`Engine::install`], [`Engine::adopt`]) and tombstones
//! dropped once every region has seen them ([`Engine::collect`]).

use meridian_crdt::{Crdt, Hlc, Object, Policy, VersionVector};

use super::request::WriteError;
use super::{Engine, StableCut, store, system_entry};
use crate::op::{Key, KeyspaceName};
use crate::state::Backend;

impl<B: Backend> Engine<B> {
    /// Merges objects transferred from a peer's state snapshot into the
    /// current group (state transfer). Merging is a join, so a page applied
    /// twice, or over newer local state, changes nothing wrong.
    ///
    /// Objects stamped further ahead of local time than the clock bound
    /// refuse the whole page (nothing is staged), as remote ops are held
    /// back: a fast clock elsewhere can freeze no key here. The sender
    /// tries again later.
    ///
    /// `covers` bounds the ops the objects reflect (the sender's version
    /// vector): reads' tokens cover it once the objects are visible, so a
    /// token always covers what its read returned.
    pub fn install(
        &mut self,
        now_ms: u64,
        entries: Vec<(KeyspaceName, Key, Object)>,
        covers: &VersionVector,
    ) -> Result<(), WriteError> {
        let mut newest = None;
        for (_, _, obj) in &entries {
            if let Some(hlc) = obj.max_hlc() {
                self.clock.check(hlc, now_ms)?;
                newest = newest.max(Some(hlc));
            }
        }
        // Later local writes must order after what is installed, or they
        // would lose to it under LWW while answered 200.
        if let Some(hlc) = newest {
            self.clock.observe(hlc, now_ms)?;
        }
        for (ks, key, obj) in entries {
            if self.collected_before(&ks, &key, &obj, covers)? {
                continue;
            }
            let obj_policy = obj.policy();
            let entry = self.load(&ks, &key, obj_policy)?;
            entry.removed = false;
            entry.obj.merge(&obj);
            entry.size = None; // a merge can grow it by anything: measure next time
            let update = if ks.is_system() {
                system_entry(key.as_str().as_bytes(), &entry.obj)
            } else {
                None
            };
            match update {
                Some(entry) => self.take_definition(entry),
                None => {
                    // Versions that came by transfer or repair are owed a
                    // merge like versions that came as ops.
                    let custom = self
                        .registry
                        .get(ks.as_str())
                        .is_some_and(|d| d.policy == meridian_crdt::Policy::Custom);
                    if custom && super::merging::unmerged(&self.load(&ks, &key, obj_policy)?.obj) {
                        self.note_merge(&ks, &key);
                    }
                }
            }
        }
        self.current.installed = true;
        self.current.covers.merge(covers);
        Ok(())
    }

    /// Whether `obj` (arriving by transfer or repair, read from a state
    /// covering `covers`) may be one a collected tombstone beat: an `lww`
    /// value whose op this region applied, for a key it no longer holds,
    /// read from a state older than the cut of a collection. Merging it back
    /// would bring a collected key back to life.
    ///
    /// A key lost some other way (damage on disk) is still repaired: a
    /// state covering the collections' cuts has applied every collected
    /// delete, so what it sends is no stale value.
    fn collected_before(
        &mut self,
        ks: &KeyspaceName,
        key: &Key,
        obj: &Object,
        covers: &VersionVector,
    ) -> Result<bool, WriteError> {
        let Object::Lww(reg) = obj else {
            return Ok(false);
        };
        if covers.covers_all(&self.collected_cut) {
            return Ok(false);
        }
        let Some(ver) = reg.version() else {
            return Ok(false);
        };
        if !self.vv.covers(&ver.dot) {
            return Ok(false);
        }
        // Looked up without staging anything (loading would write the key).
        let slot = (ks.clone(), key.clone());
        let staged = self
            .current
            .dirty
            .get(&slot)
            .or_else(|| self.sealed.iter().rev().find_map(|g| g.dirty.get(&slot)));
        let held = match staged {
            Some(d) => !d.removed && !matches!(&d.obj, Object::Lww(r) if r.version().is_none()),
            None => self
                .backend
                .get(&store::table(ks), key.as_str().as_bytes())?
                .is_some(),
        };
        Ok(!held)
    }

    /// Ends a state transfer: the state now reflects every op in `vv`.
    /// Buffered ops that were waiting on them become ready.
    pub fn adopt(
        &mut self,
        now_ms: u64,
        vv: &VersionVector,
        hlc: Hlc,
    ) -> Result<usize, WriteError> {
        // The snapshot's clock is the sender's: one too far ahead would drag
        // every later local timestamp with it.
        self.clock.check(hlc, now_ms)?;
        self.vv.merge(vv);
        self.clock.restore(hlc);
        self.current.installed = true;
        let mut staged = 0;
        while let Some(next) = self.buffer.pop_ready(&self.vv) {
            if self.clock.check(next.hlc, now_ms).is_err() {
                self.stats.held_for_clock += 1;
                continue;
            }
            self.stage_remote(now_ms, next)?;
            staged += 1;
        }
        Ok(staged)
    }

    /// Stages the removal of last-writer-wins tombstones that are causally
    /// stable under `cut`, reading at most `budget` stored objects from where
    /// the previous call stopped. Returns how many it removed.
    ///
    /// # Correctness
    /// A tombstone goes only when every region has applied its delete
    /// (`cut.stable` covers it), so no region can bring the old value back by
    /// a state transfer; and when its timestamp is below `cut.watermark`, so
    /// every op that could still arrive here is stamped above it and would
    /// win against it anyway: a concurrent older write can never resurrect the
    /// key. Tombstones of other policies are kept.
    pub fn collect(&mut self, cut: &StableCut, budget: usize) -> Result<usize, WriteError> {
        let mut names: Vec<KeyspaceName> = self
            .registry
            .iter()
            .filter(|d| d.policy == Policy::Lww)
            .map(|d| d.name.clone())
            .collect();
        names.sort();
        let mut scanned = 0;
        let mut removed = 0;
        while scanned < budget {
            let Some(ks) = names
                .iter()
                .find(|n| self.gc_cursor.as_ref().is_none_or(|(c, _)| *n >= c))
                .cloned()
            else {
                self.gc_cursor = None;
                break;
            };
            let start = match &self.gc_cursor {
                Some((c, k)) if *c == ks => {
                    let mut s = k.clone();
                    s.push(0);
                    s
                }
                _ => Vec::new(),
            };
            let page = self.backend.scan(
                &store::table(&ks),
                b"",
                &start,
                (budget - scanned).min(1024),
            )?;
            if page.is_empty() {
                // Next keyspace.
                let next = names.iter().find(|n| **n > ks).cloned();
                self.gc_cursor = next.map(|n| (n, Vec::new()));
                if self.gc_cursor.is_none() {
                    break;
                }
                continue;
            }
            for (k, v) in &page {
                scanned += 1;
                let obj = store::decode_object(&ks, k, v)?;
                let Object::Lww(reg) = &obj else { continue };
                let stable = reg.is_tombstone()
                    && reg
                        .version()
                        .is_some_and(|ver| cut.stable.covers(&ver.dot) && ver.hlc < cut.watermark);
                if !stable {
                    continue;
                }
                let Ok(key) = Key::new(String::from_utf8_lossy(k).into_owned()) else {
                    continue;
                };
                let slot = (ks.clone(), key.clone());
                let busy = self.current.dirty.contains_key(&slot)
                    || self.sealed.iter().any(|g| g.dirty.contains_key(&slot));
                if busy {
                    continue;
                }
                let entry = self.load(&ks, &key, Policy::Lww)?;
                entry.removed = true;
                self.current.installed = true;
                removed += 1;
            }
            if let Some((k, _)) = page.last() {
                self.gc_cursor = Some((ks, k.clone()));
            }
        }
        self.stats.tombstones_collected += removed as u64;
        if removed > 0 {
            self.collected_cut.merge(&cut.stable);
        }
        Ok(removed)
    }
}
