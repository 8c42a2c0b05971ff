//! Background work between regions that is not shipping ops:
//!
//! - **anti-entropy**: with each peer in turn, when both hold the same
//!   version vector, compare per-keyspace digests, then the 256 bucket
//!   digests of keyspaces that differ, then the keys of buckets that differ,
//!   and repair what differs by merging objects both ways. A region whose
//!   files were damaged while it was down finds out at startup (digests are
//!   recomputed from the state) and is repaired here;
//! - **tombstone collection**: deletes are tombstones; one goes only once it
//!   is causally stable (every region has applied it, and no older op can
//!   still arrive), so a deleted key never comes back.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use meridian_core::engine::StableCut;
use meridian_core::replication::wire::{
    BucketReply, BucketRequest, DigestReply, DigestRequest, ObjectReply, ObjectRequest,
};
use meridian_core::replication::{PeerKnowledge, stable_cut};
use meridian_core::{FjallBackend, Key, KeyspaceName, Reader};
use meridian_crdt::{Crdt, Object, codec};

use crate::peer::call::PeerError;
use crate::peer::client::PeerClient;
use crate::peer::status::{PeerStatus, Peers};
use crate::region::WriterHandle;
use crate::shutdown::Shutdown;

/// What the background loops need.
#[derive(Clone)]
pub struct Maintenance {
    /// This region's replica id.
    pub replica: meridian_crdt::ReplicaId,
    /// Reads.
    pub reader: Reader<FjallBackend>,
    /// Writes (repairs, collection).
    pub writer: WriterHandle,
    /// Peer links (acks tell what each peer holds).
    pub peers: Arc<Peers>,
    /// Signed calls to peers.
    pub client: PeerClient,
    /// This region's standbys: a tombstone waits for them too (one that
    /// later needs a state transfer would otherwise keep the deleted value).
    pub standbys: Option<Arc<crate::standby::Standby>>,
}

/// What one anti-entropy comparison found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Comparison {
    /// Keyspaces whose digests differed.
    pub keyspaces: usize,
    /// Buckets whose digests differed.
    pub buckets: usize,
    /// Keys repaired here.
    pub repaired_here: usize,
    /// Keys repaired at the peer.
    pub repaired_there: usize,
}

fn local(e: impl Into<crate::peer::call::Cause>) -> PeerError {
    PeerError::Local(e.into())
}

impl Maintenance {
    /// Compares with one peer and repairs; `None` when the two were not at
    /// the same version vector (ops in flight: nothing to conclude).
    pub async fn compare(&self, link: &PeerStatus) -> Result<Option<Comparison>, PeerError> {
        let url = &link.url();
        let ours = self.reader.published();
        let theirs: DigestReply = self
            .client
            .call(
                url,
                "/peer/v1/ae/digests",
                "digests",
                &DigestRequest {
                    keyspaces: vec![],
                    buckets_of: vec![],
                },
            )
            .await?;
        if theirs.vv != ours.vv {
            return Ok(None);
        }
        let their_digests: BTreeMap<KeyspaceName, u128> = theirs.keyspaces.into_iter().collect();
        let names: BTreeSet<KeyspaceName> = ours
            .digests
            .keys()
            .chain(their_digests.keys())
            .cloned()
            .collect();
        let differing: Vec<KeyspaceName> = names
            .into_iter()
            .filter(|k| {
                ours.digests.get(k).copied().unwrap_or(0)
                    != their_digests.get(k).copied().unwrap_or(0)
            })
            .collect();
        let mut c = Comparison {
            keyspaces: differing.len(),
            ..Comparison::default()
        };
        for ks in differing {
            let t: DigestReply = self
                .client
                .call(
                    url,
                    "/peer/v1/ae/digests",
                    "digests",
                    &DigestRequest {
                        keyspaces: vec![ks.clone()],
                        buckets_of: vec![ks.clone()],
                    },
                )
                .await?;
            let their_tree = t
                .buckets
                .into_iter()
                .next()
                .map(|(_, t)| t)
                .unwrap_or_default();
            let our_tree = self.reader.tree(&ks).unwrap_or_default();
            let buckets: Vec<u16> = (0..meridian_core::engine::store::BUCKETS)
                .filter(|b| {
                    our_tree.get(*b).copied().unwrap_or(0)
                        != their_tree.get(*b).copied().unwrap_or(0)
                })
                .map(|b| b as u16)
                .collect();
            if buckets.is_empty() {
                continue;
            }
            c.buckets += buckets.len();
            let theirs: BucketReply = self
                .client
                .call(
                    url,
                    "/peer/v1/ae/buckets",
                    "buckets",
                    &BucketRequest {
                        keyspace: ks.clone(),
                        buckets: buckets.clone(),
                    },
                )
                .await?;
            let reader = self.reader.clone();
            let ks2 = ks.clone();
            let ours_entries =
                tokio::task::spawn_blocking(move || reader.bucket_entries(&ks2, &buckets))
                    .await
                    .map_err(local)?
                    .map_err(local)?;
            let theirs_map: BTreeMap<Key, u128> = theirs.entries.into_iter().collect();
            let ours_map: BTreeMap<Key, u128> = ours_entries.into_iter().collect();
            let keys: Vec<Key> = theirs_map
                .keys()
                .chain(ours_map.keys())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .filter(|k| theirs_map.get(*k) != ours_map.get(*k))
                .cloned()
                .collect();
            // The peer answers a prefix bounded by bytes: ask again for the rest.
            let mut rest = &keys[..];
            while !rest.is_empty() {
                let chunk = &rest[..rest.len().min(256)];
                let (answered, here, there) = self.reconcile(url, &ks, chunk).await?;
                if answered == 0 {
                    return Err(PeerError::BadAnswer(
                        "anti-entropy read answered no object".into(),
                    ));
                }
                rest = &rest[answered..];
                c.repaired_here += here;
                c.repaired_there += there;
            }
        }
        Ok(Some(c))
    }

    /// Merges a prefix of `keys` both ways with the peer at `url`: as many
    /// as the peer answered (the first number returned), then how many
    /// were repaired here and there.
    async fn reconcile(
        &self,
        url: &str,
        ks: &KeyspaceName,
        keys: &[Key],
    ) -> Result<(usize, usize, usize), PeerError> {
        let theirs: ObjectReply = self
            .client
            .call(
                url,
                "/peer/v1/read",
                "read",
                &ObjectRequest {
                    keyspace: ks.clone(),
                    keys: keys.to_vec(),
                },
            )
            .await?;
        let mut fix_here = Vec::new();
        let mut fix_there = Vec::new();
        let theirs_vv = theirs.vv.clone();
        // The peer bounded its answer by its bytes; bound ours the same way
        // (a key it lacks costs it nothing and may cost this side a lot).
        let mut answered = 0;
        let mut our_bytes = 0;
        for (key, their_bytes) in keys.iter().zip(theirs.objects) {
            if answered > 0 && our_bytes > meridian_core::budget::PAGE_TARGET {
                break;
            }
            answered += 1;
            let their_obj = their_bytes
                .map(|b| codec::decode::<Object>(&b, meridian_core::budget::MAX_OBJECT_READ))
                .transpose()
                .map_err(|e| PeerError::BadAnswer(e.into()))?;
            let our_raw = self.reader.raw(ks, key).map_err(local)?;
            our_bytes += our_raw.as_ref().map_or(0, Vec::len);
            let our_obj = our_raw.and_then(|b| {
                codec::decode::<Object>(&b, meridian_core::budget::MAX_OBJECT_READ).ok()
            });
            let merged = match (&our_obj, &their_obj) {
                (Some(a), Some(b)) => {
                    let mut m = a.clone();
                    m.merge(b);
                    m
                }
                (Some(a), None) => a.clone(),
                (None, Some(b)) => b.clone(),
                (None, None) => continue,
            };
            if our_obj.as_ref() != Some(&merged) {
                fix_here.push((ks.clone(), key.clone(), merged.clone()));
            }
            if their_obj.as_ref() != Some(&merged) {
                fix_there.push((ks.clone(), key.clone(), merged));
            }
        }
        let (here, there) = (fix_here.len(), fix_there.len());
        if !fix_here.is_empty() {
            match self.writer.install(fix_here, theirs_vv.clone(), None).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(local(e)),
                Err(e) => return Err(local(e)),
            }
        }
        if !fix_there.is_empty() {
            let covers = self.reader.upper();
            self.client.push(url, &fix_there, &covers).await?;
        }
        Ok((answered, here, there))
    }

    /// Compares with every peer in turn, every `every`, until `shutdown`.
    pub async fn anti_entropy(self, every: Duration, shutdown: Shutdown) {
        let mut next = 0usize;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            if self.peers.links.is_empty() {
                continue;
            }
            let link = self.peers.links[next % self.peers.links.len()].clone();
            next += 1;
            match self.compare(&link).await {
                Ok(Some(c)) => {
                    link.ae_rounds.fetch_add(1, Ordering::Relaxed);
                    let fixed = (c.repaired_here + c.repaired_there) as u64;
                    if fixed > 0 {
                        link.repairs.fetch_add(fixed, Ordering::Relaxed);
                        tracing::warn!(
                            peer = %link.name,
                            keyspaces = c.keyspaces,
                            buckets = c.buckets,
                            repaired_here = c.repaired_here,
                            repaired_there = c.repaired_there,
                            "anti-entropy repaired differences"
                        );
                    }
                }
                Ok(None) => {
                    tracing::debug!(peer = %link.name, "anti-entropy: not at the same version vector; skipped")
                }
                Err(e) => {
                    tracing::debug!(peer = %link.name, error = %e, "anti-entropy: comparison failed")
                }
            }
        }
    }

    /// The cut tombstone collection may rely on, if every peer's state is
    /// known well enough.
    pub fn stable_cut(&self) -> Option<StableCut> {
        let ours = self.reader.published();
        let peers: Vec<PeerKnowledge> = self
            .peers
            .links
            .iter()
            .chain(
                self.standbys
                    .iter()
                    .flat_map(|s| s.followers.links())
                    .collect::<Vec<_>>()
                    .iter(),
            )
            .map(|l| PeerKnowledge {
                region: l.name.clone(),
                replica: l.replica(),
                acked: l.acked_vv(),
                last_ack: l.last_ack(),
            })
            .collect();
        stable_cut(&self.replica, &ours.vv, ours.hlc, &peers)
    }

    /// Collects stable tombstones every `every`, until `shutdown`.
    pub async fn collect_tombstones(self, every: Duration, shutdown: Shutdown) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let Some(cut) = self.stable_cut() else {
                continue;
            };
            match self.writer.collect(cut, 20_000).await {
                Ok(Ok(n)) if n > 0 => tracing::info!(collected = n, "tombstones collected"),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "tombstone collection failed"),
                Err(_) => return,
            }
        }
    }
}
