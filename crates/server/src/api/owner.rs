//! Ownership on the client API's write and read paths: a write to keys
//! another region owns is forwarded there (mode `forward`) or answered
//! `421` (mode `reject`); when the owner cannot be reached, the map's
//! `fallback` refuses it (`503`) or takes it here, recorded in the
//! conflict ledger. The engine decides who owns what
//! ([`meridian_core::ownership`]); this module carries the request.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, Uri};
use axum::response::Response;
use meridian_core::ownership::{self, Admission, Fallback, Mode};
use meridian_core::{Registry, WriteError, WriteRequest};
use meridian_crdt::RegionId;
use serde_json::json;

use super::AppInner;
use crate::error::HttpError;
use crate::peer::forward::{self, ForwardError, ForwardedBy};
use crate::region::writer::WriteDone;

/// A client request as received, kept so it can be sent on unchanged.
pub struct Raw {
    /// Its method.
    pub method: Method,
    /// Its path and query.
    pub uri: Uri,
    /// Its body.
    pub body: Bytes,
    /// Set when a peer forwarded it here: it is answered here.
    pub forwarded: Option<ForwardedBy>,
}

/// Where a write was taken.
pub enum Written {
    /// Here.
    Here(WriteDone),
    /// Here, although another region owns a key (it could not be reached).
    Fallback(WriteDone, RegionId),
    /// By the owner: its answer.
    Owner(Response),
}

/// Refuses a batch whose keys belong to more than one region (it could
/// not be taken atomically by any one of them): 400 naming each key's
/// owner. Keys without an owner go with the rest.
pub fn check_span(registry: &Registry, req: &WriteRequest) -> Result<(), HttpError> {
    if req.mutations.len() < 2 {
        return Ok(());
    }
    let mut owners: Vec<(String, String, String)> = Vec::new();
    for m in &req.mutations {
        let Some(map) = registry.ownership(&m.keyspace) else {
            continue;
        };
        if let Some(o) = map.layout.owner_of(m.key.as_str()) {
            owners.push((m.keyspace.clone(), m.key.to_string(), o.to_string()));
        }
    }
    let first = owners.first().map(|(_, _, o)| o.clone());
    if owners.iter().all(|(_, _, o)| Some(o) == first.as_ref()) {
        return Ok(());
    }
    let keys: Vec<serde_json::Value> = owners
        .iter()
        .map(|(ks, k, o)| json!({"keyspace": ks, "key": k, "owner": o}))
        .collect();
    Err(HttpError::bad_request(
        "the batch writes keys owned by different regions: no one region can take it atomically; split it by owner",
    )
    .with(json!({"error": "spans_owners", "keys": keys})))
}

/// Carries a write the engine refused with `NotOwner` (`refusal`) to its
/// owner, or refuses it by the map's mode, or takes it here by the map's
/// fallback. `retry` is the write as asked.
pub async fn route(
    app: &AppInner,
    h: &HeaderMap,
    raw: &Raw,
    retry: Option<WriteRequest>,
    refusal: WriteError,
) -> Result<Written, HttpError> {
    let WriteError::NotOwner {
        ref keyspace,
        ref owner,
        rule,
        mode,
        fallback,
        ..
    } = refusal
    else {
        return Err(refusal.into());
    };
    let (keyspace, owner) = (keyspace.clone(), owner.clone());
    let count = |outcome: &'static str| app.metrics.ownership(&keyspace, rule, outcome);
    // Forwarded here by a peer: answer, never forward again.
    if raw.forwarded.is_some() || mode == Mode::Reject {
        count("rejected");
        return Err(not_owner(app, refusal));
    }
    let sent = forward::send(
        app.peer_client.as_ref(),
        &owner,
        &raw.method,
        &raw.uri,
        h,
        &raw.body,
    )
    .await;
    match (sent, retry) {
        (Ok(resp), _) => {
            count("forwarded");
            Ok(Written::Owner(resp))
        }
        (Err(ForwardError::Unreachable { reason, .. }), Some(mut req))
            if fallback == Fallback::Accept =>
        {
            tracing::warn!(%owner, %keyspace, cause = %reason, "owner unreachable: taking the write here (fallback accept)");
            count("fallback");
            req.fallback = true;
            let done = super::kv::take(app, h, req).await?;
            Ok(Written::Fallback(done, owner))
        }
        (Err(e), _) => {
            count("unreachable");
            let indeterminate = matches!(e, ForwardError::Indeterminate { .. });
            Err(HttpError::unavailable("owner_unreachable",
                if indeterminate {
                    format!("{e}; the write was sent and may or may not have been applied there")
                } else {
                    format!("{e}; the write was not applied")
                },
            )
            .with(json!({"owner": owner.as_str(), "keyspace": keyspace, "indeterminate": indeterminate})))
        }
    }
}

/// The `421` for a key owned elsewhere, with the owner's client URL when
/// this region knows it.
pub fn not_owner(app: &AppInner, refusal: WriteError) -> HttpError {
    let url = match &refusal {
        WriteError::NotOwner {
            keyspace,
            key,
            owner,
            ..
        } => app.client_urls.get(owner).map(|base| {
            let seg = meridian_client::path::segment;
            format!("{base}/v1/kv/{}/{}", seg(keyspace), seg(key))
        }),
        _ => None,
    };
    let mut e = HttpError::from(refusal);
    if let (Some(url), Some(serde_json::Value::Object(m))) = (url, e.extra_mut()) {
        m.insert("url".into(), json!(url));
    }
    e
}

/// Where a read with `meridian-read: owner` goes: `Ok(Some(owner))` to
/// another region, `Ok(None)` here (this region owns the key, or it has no
/// owner); `503 handoff_pending` while this region, the new owner, has not
/// yet applied what the earlier owner took.
pub fn read_owner(
    app: &AppInner,
    keyspace: &str,
    key: &str,
) -> Result<Option<RegionId>, HttpError> {
    let p = app.reader.published();
    let reg = &p.registry;
    let Some(map) = reg.ownership(keyspace) else {
        return Ok(None);
    };
    let Some(def) = reg.get(keyspace) else {
        return Ok(None);
    };
    let mut regions: Vec<RegionId> = app.peers.links.iter().map(|l| l.name.clone()).collect();
    regions.push(app.replica.region.clone());
    let me = &app.replica.region;
    match ownership::admit(map, |x| reg.fence(&def.name, x), me, &regions, &p.vv, key) {
        Admission::Open | Admission::Owner => Ok(None),
        Admission::Elsewhere { owner, .. } => Ok(Some(owner)),
        Admission::Pending { epoch, waiting } => Err(WriteError::HandoffPending {
            keyspace: keyspace.to_string(),
            key: key.to_string(),
            epoch,
            waiting,
        }
        .into()),
    }
}

/// Reads at the owner: its answer, or 503 when it cannot be reached.
pub async fn read_at_owner(
    app: &AppInner,
    owner: &RegionId,
    h: &HeaderMap,
    raw: &Raw,
) -> Result<Response, HttpError> {
    forward::send(
        app.peer_client.as_ref(),
        owner,
        &raw.method,
        &raw.uri,
        h,
        &raw.body,
    )
    .await
    .map_err(|e| {
        HttpError::unavailable(
            "owner_unreachable",
            format!("{e}; read without meridian-read: owner to read this region's copy"),
        )
        .with(json!({"owner": owner.as_str()}))
    })
}

/// Whether `keyspace` has an ownership map (so a refused write may need
/// to be sent on, and is worth keeping).
pub fn has_map(registry: &Registry, req: &WriteRequest) -> bool {
    req.mutations
        .iter()
        .any(|m| registry.ownership(&m.keyspace).is_some())
}

/// Marks a write taken by the fallback.
pub fn mark_fallback(resp: &mut Response, owner: &RegionId) {
    if let Ok(v) = HeaderValue::from_str(owner.as_str()) {
        resp.headers_mut().insert("meridian-fallback-owner", v);
    }
}
