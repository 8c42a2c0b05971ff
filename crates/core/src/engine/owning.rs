//! Ownership on the write path: which writes this region takes under each
//! keyspace's ownership map ([`crate::ownership`]), the map changes it
//! makes as steward, and the fences it owes.

use meridian_crdt::{Object, RegionId, Version};

use super::Engine;
use super::ledger::FallbackRecord;
use super::request::WriteError;
use crate::op::{Key, KeyspaceName};
use crate::ownership::{
    self, Admission, Epoch, Fallback, Fence, MapError, MapRequest, OwnershipMap, RuleRef,
};
use crate::state::Backend;

/// Most bytes of JSON one map takes (older layouts go first to fit).
pub const MAX_MAP_BYTES: usize = 256 << 10;

/// A write taken for a key owned elsewhere.
pub(super) struct FallbackNote {
    keyspace: KeyspaceName,
    key: Key,
    record: FallbackRecord,
}

impl<B: Backend> Engine<B> {
    /// The cluster's regions (this one only, until write-backs are enabled
    /// and with them the cluster's region list).
    pub fn cluster(&self) -> &[RegionId] {
        match &self.merge_regions {
            Some(r) => r,
            None => std::slice::from_ref(&self.me.region),
        }
    }

    /// How this region may treat a write to `key` of `keyspace` now.
    pub fn admission(&self, keyspace: &KeyspaceName, key: &Key) -> Admission {
        let Some(map) = self.registry.ownership(keyspace.as_str()) else {
            // Owned, but the map has not arrived here yet.
            if self.registry.is_owned(keyspace) {
                return Admission::Pending {
                    epoch: Epoch(0),
                    waiting: Vec::new(),
                };
            }
            return Admission::Open;
        };
        match ownership::admit(
            map,
            |x| self.registry.fence(keyspace, x),
            &self.me.region,
            self.cluster(),
            &self.vv,
            key.as_str(),
        ) {
            // A region whose disk was rolled back may have taken writes it
            // no longer has (and shipped them): as owner, it takes new ones
            // only once it has them back.
            Admission::Owner if self.merges_held() => Admission::Pending {
                epoch: map.epoch(),
                waiting: vec![self.me.region.clone()],
            },
            a => a,
        }
    }

    /// Refuses a write to a key owned elsewhere (or not yet here), unless
    /// `fallback` and the map accepts fallbacks: then it is taken, and the
    /// note says what to record.
    pub(super) fn admit_owned(
        &self,
        keyspace: &KeyspaceName,
        key: &Key,
        fallback: bool,
    ) -> Result<Option<FallbackNote>, WriteError> {
        match self.admission(keyspace, key) {
            Admission::Open | Admission::Owner => Ok(None),
            Admission::Elsewhere {
                owner,
                epoch,
                rule,
                mode,
            } => {
                let accepts = self
                    .registry
                    .ownership(keyspace.as_str())
                    .map_or(Fallback::Reject, |m| m.fallback);
                if fallback && accepts == Fallback::Accept {
                    return Ok(Some(FallbackNote {
                        keyspace: keyspace.clone(),
                        key: key.clone(),
                        record: FallbackRecord { owner, epoch, rule },
                    }));
                }
                Err(WriteError::NotOwner {
                    keyspace: keyspace.to_string(),
                    key: key.to_string(),
                    owner,
                    epoch,
                    rule,
                    mode,
                    fallback: accepts,
                })
            }
            Admission::Pending { epoch, waiting } => Err(WriteError::HandoffPending {
                keyspace: keyspace.to_string(),
                key: key.to_string(),
                epoch,
                waiting,
            }),
        }
    }

    /// Records the fallback writes of the op just staged.
    pub(super) fn record_fallbacks(&mut self, notes: Vec<FallbackNote>) {
        if notes.is_empty() {
            return;
        }
        let Some(staged) = self.current.ops.last() else {
            return;
        };
        let version = Version::new(staged.op.hlc, staged.op.dot.clone());
        let now = self.clock.last();
        for n in notes {
            let value = self
                .current
                .dirty
                .get(&(n.keyspace.clone(), n.key.clone()))
                .and_then(|d| match &d.obj {
                    Object::Lww(r) => r.value().cloned(),
                    _ => None,
                });
            *self
                .stats
                .ownership_fallbacks
                .entry(n.keyspace.clone())
                .or_default() += 1;
            let e = self.ledger.record_fallback(
                &n.keyspace,
                &n.key,
                version.clone(),
                value,
                n.record,
                now,
            );
            self.current.conflicts.push(e);
        }
    }

    /// Sets `keyspace`'s ownership map to `req`, as the cluster's steward.
    /// `Ok(None)` when the map is already that (nothing staged).
    pub fn set_ownership(
        &mut self,
        now_ms: u64,
        keyspace: &str,
        req: &MapRequest,
    ) -> Result<Option<OwnershipMap>, WriteError> {
        let def = self
            .registry
            .get(keyspace)
            .ok_or_else(|| WriteError::UnknownKeyspace(keyspace.to_string()))?
            .clone();
        let ks = def.name.clone();
        let regions = self.cluster().to_vec();
        let steward = ownership::steward(&regions).unwrap_or(&self.me.region);
        if *steward != self.me.region {
            return Err(WriteError::NotSteward {
                steward: steward.clone(),
            });
        }
        // A map change is a local op; a restarted steward must first hold
        // every map it wrote before (epochs only go up).
        if self.merge_regions.is_none() || self.merges_held() {
            return Err(WriteError::NotReady);
        }
        req.validate(&regions)?;
        let current = self
            .registry
            .ownership(keyspace)
            .cloned()
            .unwrap_or_default();
        // A region fenced an epoch this steward does not hold: it lost maps
        // it wrote (a wiped or rolled-back disk) and must get them back
        // before writing the next one, or epochs would repeat.
        if self
            .registry
            .fences(&ks)
            .any(|(_, f)| f.epoch > current.epoch())
        {
            return Err(WriteError::NotReady);
        }
        if def.policy == meridian_crdt::Policy::Custom {
            return Err(MapError::Custom(keyspace.to_string()).into());
        }
        if let Some(expected) = req.epoch
            && expected != current.epoch()
        {
            return Err(MapError::Stale {
                expected,
                current: current.epoch(),
            }
            .into());
        }
        // Layouts from the oldest fence on are what admission still reads.
        let keep_from = regions
            .iter()
            .map(|r| self.registry.fence(&ks, r).map_or(Epoch(0), |f| f.epoch))
            .min()
            .unwrap_or(Epoch(0));
        let Some(mut next) = current.next(req, keep_from) else {
            return Ok(None);
        };
        loop {
            let len = serde_json::to_vec(&next).map_or(usize::MAX, |v| v.len());
            if len <= MAX_MAP_BYTES {
                break;
            }
            if next.history.pop().is_none() {
                return Err(MapError::TooLarge {
                    len,
                    max: MAX_MAP_BYTES,
                }
                .into());
            }
        }
        // The mark, then the map (one group): a region with the mark and
        // no map yet takes no writes to the keyspace, and the map's deps
        // cover the mark, so nobody has the map without it.
        if !self.registry.is_owned(&ks) {
            self.put_system(now_ms, Key::new(ownership::owned_key(keyspace))?, &true)?;
        }
        let key = Key::new(ownership::map_key(keyspace))?;
        self.put_system(now_ms, key, &next)?;
        Ok(Some(next))
    }

    /// Moves rule `which` of `keyspace`'s map to region `to`
    /// ([`Engine::set_ownership`] with that one change), if the map is
    /// still at `epoch` (when given).
    pub fn transfer_ownership(
        &mut self,
        now_ms: u64,
        keyspace: &str,
        which: &RuleRef,
        to: &RegionId,
        epoch: Option<Epoch>,
    ) -> Result<Option<OwnershipMap>, WriteError> {
        let current = self
            .registry
            .ownership(keyspace)
            .filter(|m| m.epoch() > Epoch(0))
            .ok_or_else(|| MapError::NoMap(keyspace.to_string()))?;
        let mut req = current.transfer(which, to)?;
        if epoch.is_some() {
            req.epoch = epoch;
        }
        self.set_ownership(now_ms, keyspace, &req)
    }

    /// Whether this region owes a fence: it applied a map at an epoch its
    /// latest fence for the keyspace is below.
    pub fn fences_owed(&self) -> bool {
        self.merge_regions.is_some() && !self.merges_held() && !self.owed_fences().is_empty()
    }

    fn owed_fences(&self) -> Vec<(KeyspaceName, Epoch)> {
        self.registry
            .maps()
            .filter(|(ks, m)| {
                self.registry
                    .fence(ks, &self.me.region)
                    .is_none_or(|f| f.epoch < m.epoch())
            })
            .map(|(ks, m)| (ks.clone(), m.epoch()))
            .collect()
    }

    /// Stages the fences this region owes ([`Engine::fences_owed`]); how
    /// many. Every write this region took under an earlier map is in the
    /// fence's vector: the map was applied before, so writes since were
    /// judged by it.
    pub fn write_fences(&mut self, now_ms: u64) -> Result<usize, WriteError> {
        // A fence is a local op: only once the incarnation is settled, and
        // only once this region holds what it wrote before a rollback (a
        // fence must cover every write it took).
        if self.merge_regions.is_none() || self.merges_held() {
            return Ok(0);
        }
        let owed = self.owed_fences();
        for (ks, epoch) in &owed {
            let key = Key::new(ownership::fence_key(ks.as_str(), &self.me.region))?;
            let fence = Fence {
                epoch: *epoch,
                vv: self.vv.clone(),
            };
            self.put_system(now_ms, key, &fence)?;
        }
        Ok(owed.len())
    }
}
