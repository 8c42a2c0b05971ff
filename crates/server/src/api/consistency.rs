//! The consistency a request asks for: its write concern (how many regions
//! must hold a write durably before success) and quorum reads (a majority
//! of regions read, merged, and the ones behind repaired).

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::http::HeaderMap;
use meridian_core::replication::wire::{ObjectReply, ObjectRequest};
use meridian_core::{Concern, Key, KeyspaceName, RegionConcern, WriteRequest};
use meridian_crdt::{Crdt, Object, VersionVector, codec};
use serde_json::json;

use super::{AppInner, headers, render};
use crate::error::HttpError;
use crate::region::writer::WriteDone;

/// How long a write waits for its write concern unless the request says.
pub const DEFAULT_CONCERN_TIMEOUT_MS: u64 = 5_000;
/// How long a quorum read waits for enough regions unless the request says.
pub const DEFAULT_QUORUM_TIMEOUT_MS: u64 = 2_000;

/// The write concern of a request: its header, else the strongest defaults
/// of the keyspaces it writes; and whether an unmet in-region concern may
/// succeed as the leader alone (only a keyspace default, and only when
/// every keyspace written allows it: a concern the client named is never
/// downgraded).
pub fn concern_for(
    app: &AppInner,
    h: &HeaderMap,
    req: &WriteRequest,
) -> Result<(Concern, bool), HttpError> {
    let p = app.reader.published();
    let defs: Vec<_> = req
        .mutations
        .iter()
        .filter_map(|m| p.registry.get(&m.keyspace))
        .collect();
    let downgrade = !defs.is_empty() && defs.iter().all(|d| d.standby_downgrade);
    if let Some(c) = headers::write_concern(h)? {
        return Ok((c, false));
    }
    Ok((
        Concern {
            regions: defs
                .iter()
                .map(|d| d.write_concern)
                .max()
                .unwrap_or_default(),
            region: defs
                .iter()
                .map(|d| d.standby_concern)
                .max()
                .unwrap_or_default(),
        },
        downgrade,
    ))
}

/// Whether the standbys holding a write meet `c`, out of `registered`.
fn region_met(c: RegionConcern, holders: usize, registered: usize) -> bool {
    match c {
        RegionConcern::Leader => true,
        RegionConcern::Standby => holders >= 1,
        RegionConcern::RegionAll => holders >= 1 && holders >= registered,
    }
}

/// Waits until `concern` is met for a write durable here, or answers 504:
/// the write stays durable here and will still replicate; it is never
/// rolled back. An unmet in-region part succeeds as the leader alone only
/// when `downgrade` (the keyspaces allow it), and is counted.
pub async fn wait_concern(
    app: &AppInner,
    done: &WriteDone,
    concern: Concern,
    downgrade: bool,
    timeout_ms: u64,
) -> Result<(), HttpError> {
    let required = concern.regions.required(app.peers.regions());
    if required <= 1 && concern.region.is_leader() {
        return Ok(());
    }
    let dot = &done.version.dot;
    let mut acks = app.peers.subscribe_acks();
    let holders = || -> Vec<String> {
        std::iter::once(app.replica.region.to_string())
            .chain(
                app.peers
                    .links
                    .iter()
                    .filter(|l| l.acked_vv().covers(dot))
                    .map(|l| l.name.to_string()),
            )
            .collect()
    };
    let standbys = || app.standby.followers.holding(dot);
    let met = || {
        let (s, n) = standbys();
        (
            holders().len() >= required,
            region_met(concern.region, s.len(), n),
        )
    };
    let wait = async {
        loop {
            if met() == (true, true) {
                return;
            }
            if acks.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    if tokio::time::timeout(Duration::from_millis(timeout_ms), wait)
        .await
        .is_ok()
    {
        return Ok(());
    }
    let (across, inside) = met();
    if across && !inside && downgrade {
        app.standby
            .counters
            .downgrades
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(concern = %concern, "in-region write concern not met in time: the keyspace allows succeeding as the leader alone (counted)");
        return Ok(());
    }
    if !inside {
        app.standby
            .counters
            .timeouts
            .fetch_add(1, Ordering::Relaxed);
    }
    let held = holders();
    let (s, registered) = standbys();
    let standby_note = if concern.region.is_leader() {
        String::new()
    } else {
        format!(
            "; {} of {registered} standbys of {} hold it",
            s.len(),
            app.replica.region
        )
    };
    Err(HttpError::timed_out("write_concern_timeout",
        format!(
            "write concern {concern} not met after {timeout_ms} ms: {} of the {required} regions needed held the write durably ({}){standby_note}. The write is durable in {} and will still replicate: it is not rolled back",
            held.len(),
            held.join(", "),
            app.replica.region
        ),
    )
    .with(json!({
        "version": render::version(&done.version),
        "token": &*done.token,
        "held_by": held,
        "required": required,
        "write_concern": concern.to_string(),
        "standbys_holding": s.iter().map(|r| r.incarnation.to_string()).collect::<Vec<_>>(),
        "standbys": registered,
    })))
}

/// A quorum read's outcome.
pub struct QuorumRead {
    /// The merged state (`None`: no region has the key).
    pub object: Option<Object>,
    /// Covers everything the merged state reflects.
    pub vv: VersionVector,
    /// Regions read.
    pub regions: Vec<String>,
}

/// Reads `key` in a majority of regions (this one and the fastest peers),
/// merges what they hold, and repairs, in the background, every region read
/// whose state was behind the merge.
pub async fn quorum_read(
    app: &AppInner,
    keyspace: &str,
    key: &Key,
    timeout_ms: u64,
) -> Result<QuorumRead, HttpError> {
    let local = app.reader.get(keyspace, key)?;
    let ks = local.def.name.clone();
    let needed = app.peers.regions() / 2 + 1;
    let mut views: Vec<(Option<String>, Option<Object>)> = vec![(None, local.object.clone())];
    let mut vv = local.vv.clone();
    let mut regions = vec![app.replica.region.to_string()];
    if needed > 1 {
        let Some(pc) = app.peer_client.clone() else {
            return Err(HttpError::unavailable(
                "quorum_unavailable",
                "this region has no peers configured: a quorum read needs them",
            ));
        };
        let mut calls = tokio::task::JoinSet::new();
        for (name, url) in pc.current() {
            let pc = pc.clone();
            let req = ObjectRequest {
                keyspace: ks.clone(),
                keys: vec![key.clone()],
            };
            calls.spawn(async move {
                let r: Result<ObjectReply, _> = pc.call(&url, "/peer/v1/read", "read", &req).await;
                (name, url, r)
            });
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
        while regions.len() < needed {
            let next = tokio::time::timeout_at(deadline, calls.join_next()).await;
            let Ok(Some(Ok((name, url, Ok(reply))))) = next else {
                if matches!(next, Ok(Some(_))) {
                    continue; // that peer failed; others may answer
                }
                break;
            };
            let obj = match reply.objects.first().cloned().flatten() {
                Some(bytes) => Some(
                    codec::decode::<Object>(&bytes, meridian_core::budget::MAX_OBJECT_READ)
                        .map_err(|e| {
                            HttpError::internal(format!(
                                "region {name} sent an undecodable object: {e}"
                            ))
                        })?,
                ),
                None => None,
            };
            vv.merge(&reply.vv);
            regions.push(name.to_string());
            views.push((Some(url), obj));
        }
        calls.abort_all();
        if regions.len() < needed {
            return Err(HttpError::unavailable(
                "quorum_unavailable",
                format!(
                    "a quorum read needs {needed} of {} regions; only {} answered within {timeout_ms} ms ({})",
                    app.peers.regions(),
                    regions.len(),
                    regions.join(", ")
                ),
            ));
        }
    }
    let merged = views
        .iter()
        .fold(None::<Object>, |acc, (_, o)| match (acc, o) {
            (None, o) => o.clone(),
            (Some(mut a), Some(b)) => {
                a.merge(b);
                Some(a)
            }
            (a, None) => a,
        });
    if let Some(m) = &merged {
        let behind: Vec<Option<String>> = views
            .iter()
            .filter(|(_, o)| o.as_ref() != Some(m))
            .map(|(url, _)| url.clone())
            .collect();
        if !behind.is_empty() {
            repair(app, ks, key.clone(), m.clone(), vv.clone(), behind);
        }
    }
    Ok(QuorumRead {
        object: merged,
        vv,
        regions,
    })
}

/// Pushes `merged` to the regions that were behind (`None`: this one).
/// `covers` bounds what `merged` reflects (the vectors of the regions read).
fn repair(
    app: &AppInner,
    ks: KeyspaceName,
    key: Key,
    merged: Object,
    covers: VersionVector,
    behind: Vec<Option<String>>,
) {
    // Bounded: past the limit a repair is skipped (anti-entropy mends the
    // key later), never queued without end.
    let Ok(permit) = app.repairs.clone().try_acquire_owned() else {
        app.metrics.refuse("read_repair", "busy");
        return;
    };
    let writer = app.writer.clone();
    let pc = app.peer_client.clone();
    let peers = app.peers.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let mut done = BTreeSet::new();
        for target in behind {
            let ok = match &target {
                None => matches!(
                    writer
                        .install(
                            vec![(ks.clone(), key.clone(), merged.clone())],
                            covers.clone(),
                            None,
                        )
                        .await,
                    Ok(Ok(_))
                ),
                Some(url) => match &pc {
                    Some(pc) => pc
                        .push(url, &[(ks.clone(), key.clone(), merged.clone())], &covers)
                        .await
                        .is_ok(),
                    None => false,
                },
            };
            if ok {
                peers.read_repairs.fetch_add(1, Ordering::Relaxed);
                done.insert(target.unwrap_or_else(|| "local".into()));
            }
        }
        tracing::debug!(keyspace = %ks, key = %key, repaired = ?done, "read repair");
    });
}
