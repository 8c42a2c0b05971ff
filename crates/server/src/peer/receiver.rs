//! The peer API (its own listener): signed requests from other regions.
//!
//! - `POST /peer/v1/hello`: a session starts; answers this region's version vector.
//! - `POST /peer/v1/ops`: a batch of ops; answered once the applicable ones are durable.
//! - `POST /peer/v1/state`: a page of a state transfer.
//! - `POST /peer/v1/forward`: a client request for keys this region owns
//!   (see [`super::forward`]).
//!
//! Every body is `HMAC tag || payload` (see [`super::auth`]); anything that
//! does not verify gets 401 and is counted. Every answer is signed for the caller.
//!
//! Why past ~400 lines: the peer router: its guard (signature, replay window,
//! body limit) and every peer endpoint, each a short handler.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use meridian_core::replication::compact::{self, AnswerTo};
use meridian_core::replication::wire::{self, Ack};
use meridian_core::{FjallBackend, Reader};
use meridian_crdt::{Object, RegionId, codec};
use tracing::Instrument;

use super::auth::Secret;
use super::status::Peers;
use crate::error::HttpError;
use crate::region::WriterHandle;
use crate::region::clock::WallClock;

/// Largest peer request body (a batch: its limit and room for the tag).
pub const MAX_PEER_BODY: usize = meridian_core::budget::MAX_BATCH + (64 << 10);
/// Largest state-transfer page body (one object of the largest readable size).
pub const MAX_STATE_BODY: usize = meridian_core::budget::MAX_PAGE + (64 << 10);

/// What the peer API shares.
pub struct PeerApi {
    /// This region's name (answers are signed with it).
    pub region: RegionId,
    /// Nonces of the requests taken within the replay window.
    pub nonces: std::sync::Mutex<super::auth::Nonces>,
    /// Where refusals are counted.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// This region's incarnation (every ack names its replica id).
    pub incarnation: Arc<crate::region::incarnation::Incarnation>,
    /// The cluster secret.
    pub secret: Secret,
    /// Writes (received ops go through the same writer as client writes).
    pub writer: WriterHandle,
    /// Reads.
    pub reader: Reader<FjallBackend>,
    /// Link figures (auth failures are counted here).
    pub peers: Arc<Peers>,
    /// Wall clock.
    pub clock: WallClock,
    /// The client API, once it is built: forwarded requests run through it.
    pub client_api: Arc<std::sync::OnceLock<Router>>,
    /// Who may replicate to this member (the standby subsystem answers:
    /// it knows the roles).
    pub admission: Arc<dyn Admission>,
    /// The newest wire version this member answers in and reads
    /// (`replication.wire_version`).
    pub wire: u8,
}

/// Which callers this member takes replication from. A region's leader
/// takes every region's; a follower refuses other regions (they ship to its
/// leader) and takes its own region's ops only from its leader. The peer
/// API asks before it acts on a request; the roles are the standby
/// subsystem's to know (its `Roles` implements this).
pub trait Admission: Send + Sync {
    /// The refusal (`421 not_leader`, naming the leader) for a request from
    /// region `from`, or `None` to take it.
    fn refuse_region(&self, from: &str) -> Option<HttpError>;
    /// The refusal for replication from member `from` of this region that
    /// is not this member's leader (an old leader that has not heard of
    /// the new epoch: its acks must not count as this member holding its
    /// writes), or `None` to take it.
    fn refuse_member(&self, from: &meridian_crdt::ReplicaId) -> Option<HttpError>;
}

impl PeerApi {
    fn refuse_region(&self, from: &str) -> Option<Response> {
        self.admission
            .refuse_region(from)
            .map(IntoResponse::into_response)
    }

    fn refuse_member(&self, from: &meridian_crdt::ReplicaId) -> Option<Response> {
        self.admission
            .refuse_member(from)
            .map(IntoResponse::into_response)
    }
}

/// The peer router: the replication routes, and `more` (the standby
/// subsystem's), all behind the same signature guard and body limit.
pub fn router(api: Arc<PeerApi>, more: Router) -> Router {
    Router::new()
        .route("/peer/v1/hello", post(hello))
        .route("/peer/v1/ops", post(ops))
        .route(
            "/peer/v1/state",
            post(state).layer(DefaultBodyLimit::max(MAX_STATE_BODY)),
        )
        .route("/peer/v1/read", post(read))
        .route("/peer/v1/ae/digests", post(digests))
        .route("/peer/v1/ae/buckets", post(buckets))
        .route("/peer/v1/forward", post(forward))
        .with_state(api.clone())
        .merge(more)
        .layer(DefaultBodyLimit::max(MAX_PEER_BODY))
        .fallback(|| async { HttpError::not_found("no such peer endpoint") })
        .layer(axum::middleware::from_fn_with_state(api, guard))
}

/// Before any body is read: the head's signature, its time within the
/// replay window, its nonce not seen before; the body is then read up to
/// the length the head states, and no further.
async fn guard(
    State(api): State<Arc<PeerApi>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let refuse = |reason: &'static str, why: String| {
        api.metrics.refuse("peer", reason);
        unauthorized(&api, &why)
    };
    let h = req.headers();
    let Some(from) = h
        .get("meridian-peer")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| RegionId::new(v).ok())
    else {
        return refuse(
            "unauthenticated",
            "missing or invalid meridian-peer header".into(),
        );
    };
    let Some(auth) = h.get("meridian-peer-auth").and_then(|v| v.to_str().ok()) else {
        return refuse(
            "unauthenticated",
            "missing meridian-peer-auth header".into(),
        );
    };
    let head =
        match api
            .secret
            .check_head(req.uri().path(), from.as_str(), api.region.as_str(), auth)
        {
            // The short form is part of wire version 2: a member set to
            // speak version 1 refuses it, as builds before it do.
            Ok(head) if head.form == super::auth::Form::Short && api.wire < compact::VERSION => {
                return refuse("signature", super::auth::HeadError::Malformed.to_string());
            }
            Ok(head) => head,
            Err(e) => return refuse("signature", e.to_string()),
        };
    let (taken, since) = {
        let mut n = api
            .nonces
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (n.take(&head, super::auth::now_ms()), n.since_ms())
    };
    match taken {
        Ok(()) => {}
        Err(super::auth::Replay::BeforeStart) => {
            let mut r = refuse(
                "before_start",
                "the request was signed before this region started (its clock is behind ours, or this is a replay): sign it again".into(),
            );
            // Unsigned: the time to sign from, for a sender whose clock is
            // behind (its new signature and nonce keep it replay-safe).
            if let Ok(v) = axum::http::HeaderValue::from_str(&since.to_string()) {
                r.headers_mut().insert("meridian-peer-since", v);
            }
            return r;
        }
        Err(super::auth::Replay::Seen) => {
            return refuse(
                "replayed",
                "this request was taken already (its nonce was seen): refused as a replay".into(),
            );
        }
        Err(super::auth::Replay::Stale) => {
            return refuse(
                "stale",
                format!(
                    "the request's time is more than {} ms from this region's clock: refused (a replay, or clocks far apart)",
                    super::auth::REPLAY_WINDOW_MS
                ),
            );
        }
        Err(super::auth::Replay::Full) => {
            api.metrics.refuse("peer", "nonces_full");
            return HttpError::unavailable(
                "busy",
                "too many peer requests within the replay window; retry",
            )
            .into_response();
        }
    }
    // The body is the tag and the payload the head states: no more is read.
    let want = head.body_len();
    if want > MAX_PEER_BODY.max(MAX_STATE_BODY) as u64 {
        return HttpError::too_large(format!("a peer request of {want} bytes is over the limit"))
            .into_response();
    }
    let (parts, body) = req.into_parts();
    let limited = http_body_util::Limited::new(body, want as usize);
    // One span per peer request, beside the sender's `peer_session`.
    let span = tracing::debug_span!(target: "meridian::peer", "peer_request", from = %from, path = %parts.uri.path());
    next.run(axum::extract::Request::from_parts(
        parts,
        axum::body::Body::new(limited),
    ))
    .instrument(span)
    .await
}

fn unauthorized(api: &PeerApi, why: &str) -> Response {
    api.peers.auth_failures.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(reason = why, "peer request refused: not authenticated");
    let mut r = HttpError::unauthenticated("unauthenticated", why).into_response();
    // Unsigned, a hint only: a caller whose request was meant for another
    // region learns which one it reached.
    if let Ok(v) = axum::http::HeaderValue::from_str(api.region.as_str()) {
        r.headers_mut().insert("meridian-peer-from", v);
    }
    r
}

/// Checks the caller's name and signature; returns the caller and payload.
pub(crate) fn open<'a>(
    api: &PeerApi,
    h: &HeaderMap,
    label: &str,
    body: &'a Result<Bytes, BytesRejection>,
) -> Result<(Caller, &'a [u8]), Box<Response>> {
    let body = match body {
        Ok(b) => b,
        Err(r) => {
            return Err(Box::new(
                HttpError::rejection(r.status(), "bad_body", r.body_text()).into_response(),
            ));
        }
    };
    let from = h
        .get("meridian-peer")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| RegionId::new(v).ok())
        .ok_or_else(|| Box::new(unauthorized(api, "missing or invalid meridian-peer header")))?;
    // The head was checked (signature, window, nonce) by `guard` before
    // the body was read; here the body is checked against it.
    let head = h
        .get("meridian-peer-auth")
        .and_then(|v| v.to_str().ok())
        .ok_or(super::auth::HeadError::Malformed)
        .and_then(|v| {
            api.secret
                .check_head(path_of(label), from.as_str(), api.region.as_str(), v)
        })
        .map_err(|e| Box::new(unauthorized(api, &e.to_string())))?;
    let payload = api
        .secret
        .open_body(label, &head, body)
        .ok_or_else(|| Box::new(unauthorized(api, "body signature does not verify")))?;
    if let Some(link) = api.peers.links.iter().find(|l| l.name == from) {
        // Only a sender waiting now is woken (no permit is kept).
        link.heard.notify_waiters();
    }
    Ok((
        Caller {
            region: from.to_string(),
            nonce: head.nonce,
            form: head.form,
        },
        payload,
    ))
}

/// Who called, and which request: answers are signed for it.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The calling region.
    pub region: String,
    /// Its request's nonce.
    pub nonce: [u8; 16],
    /// The form its request was signed in, which the answer is signed in.
    pub form: super::auth::Form,
}

impl std::ops::Deref for Caller {
    type Target = str;
    fn deref(&self) -> &str {
        &self.region
    }
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.region)
    }
}

/// The path each label is served at.
fn path_of(label: &str) -> &'static str {
    match label {
        "hello" => "/peer/v1/hello",
        "ops" => "/peer/v1/ops",
        "state" => "/peer/v1/state",
        "read" => "/peer/v1/read",
        "digests" => "/peer/v1/ae/digests",
        "buckets" => "/peer/v1/ae/buckets",
        "forward" => "/peer/v1/forward",
        "follow" => "/peer/v1/standby/follow",
        "announce" => "/peer/v1/standby/announce",
        "standby-status" => "/peer/v1/standby/status",
        _ => "",
    }
}

fn answer(api: &PeerApi, to: &Caller, ack: &Ack) -> Response {
    match wire::encode_ack(ack) {
        Ok(bytes) => signed(api, to, &bytes),
        Err(e) => HttpError::internal(e.to_string()).into_response(),
    }
}

/// Answers in version 2, relative to the request answered.
fn answer_compact(api: &PeerApi, to: &Caller, ack: &Ack, of: AnswerTo<'_>) -> Response {
    match compact::encode_ack(ack, of) {
        Ok(bytes) => signed(api, to, &bytes),
        Err(e) => HttpError::internal(e.to_string()).into_response(),
    }
}

fn signed(api: &PeerApi, to: &Caller, bytes: &[u8]) -> Response {
    let mut r = (
        StatusCode::OK,
        api.secret
            .sign_answer_as(to.form, api.region.as_str(), &to.nonce, bytes),
    )
        .into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(api.region.as_str()) {
        r.headers_mut().insert("meridian-peer-from", v);
    }
    r
}

pub(crate) fn answer_msg<T: serde::Serialize>(api: &PeerApi, to: &Caller, msg: &T) -> Response {
    match wire::encode_msg(msg) {
        Ok(bytes) => signed(api, to, &bytes),
        Err(e) => HttpError::internal(e.to_string()).into_response(),
    }
}

fn stopping(e: impl std::fmt::Display) -> Response {
    HttpError::unavailable("stopping", e.to_string()).into_response()
}

async fn forward(
    State(api): State<Arc<PeerApi>>,
    h: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (from, payload) = match open(&api, &h, "forward", &body) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if let Some(r) = api.refuse_region(&from) {
        return r;
    }
    let msg: super::forward::Forwarded = match wire::decode_msg(payload) {
        Ok(m) => m,
        Err(e) => return HttpError::bad_request(e.to_string()).into_response(),
    };
    let answer = super::forward::serve(&api.client_api, &from, msg).await;
    answer_msg(&api, &from, &answer)
}

async fn hello(
    State(api): State<Arc<PeerApi>>,
    h: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (from, payload) = match open(&api, &h, "hello", &body) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if let Some(r) = api.refuse_region(&from) {
        return r;
    }
    let hello = match wire::decode_hello(payload) {
        Ok(h) => h,
        Err(e) => return HttpError::bad_request(e.to_string()).into_response(),
    };
    if let Some(r) = api.refuse_member(&hello.from) {
        return r;
    }
    let p = api.reader.published();
    let ack = Ack {
        vv: p.vv.clone(),
        now_ms: api.clock.now_ms(),
        held: 0,
        buffered: p.stats.buffered as u32,
        hlc: p.hlc,
        replica: Some(api.incarnation.replica()),
        seen: Some({
            let mut seen = p.vv.clone();
            seen.merge(&p.buffered_top);
            seen
        }),
    };
    // A caller that offers version 2 is answered in it, which tells it
    // that this member reads it; any other caller in version 1.
    let offered = h
        .get(compact::OFFER_HEADER)
        .and_then(|v| v.to_str().ok()?.parse::<u8>().ok())
        .unwrap_or(1);
    if offered.min(api.wire) >= compact::VERSION {
        let of = AnswerTo {
            replicas: &[],
            sent_ms: hello.now_ms,
        };
        answer_compact(&api, &from, &ack, of)
    } else {
        answer(&api, &from, &ack)
    }
}

async fn ops(
    State(api): State<Arc<PeerApi>>,
    h: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (from, payload) = match open(&api, &h, "ops", &body) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if let Some(r) = api.refuse_region(&from) {
        return r;
    }
    let batch = match wire::decode(payload) {
        Ok(b) => b,
        Err(e) => return HttpError::bad_request(format!("batch: {e}")).into_response(),
    };
    if batch.version() > api.wire {
        // What a build that reads only older versions answers.
        let why = codec::DecodeError::Version(batch.version());
        return HttpError::bad_request(format!("batch: {why}")).into_response();
    }
    if let Some(r) = api.refuse_member(&batch.from) {
        return r;
    }
    api.peers.batches_received.fetch_add(1, Ordering::Relaxed);
    let version = batch.version();
    let (replicas, sent_ms) = (batch.replicas, batch.sent_ms);
    match api.writer.receive(batch.ops).await {
        Ok(Ok((r, vv))) => {
            let ack = Ack {
                vv,
                now_ms: api.clock.now_ms(),
                held: r.held.len() as u32,
                buffered: r.buffered as u32,
                hlc: api.reader.published().hlc,
                replica: Some(api.incarnation.replica()),
                seen: None,
            };
            if version >= compact::VERSION {
                let of = AnswerTo {
                    replicas: &replicas,
                    sent_ms,
                };
                answer_compact(&api, &from, &ack, of)
            } else {
                answer(&api, &from, &ack)
            }
        }
        Ok(Err(e)) => HttpError::from(e).into_response(),
        Err(e) => stopping(e),
    }
}

async fn state(
    State(api): State<Arc<PeerApi>>,
    h: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (from, payload) = match open(&api, &h, "state", &body) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if let Some(r) = api.refuse_region(&from) {
        return r;
    }
    let page = match wire::decode_state(payload) {
        Ok(p) => p,
        Err(e) => return HttpError::bad_request(format!("state page: {e}")).into_response(),
    };
    let mut entries = Vec::with_capacity(page.entries.len());
    for (ks, key, bytes) in page.entries {
        match codec::decode::<Object>(&bytes, meridian_core::budget::MAX_OBJECT_READ) {
            Ok(obj) => entries.push((ks, key, obj)),
            Err(e) => {
                return HttpError::bad_request(format!("state object {ks}/{key}: {e}"))
                    .into_response();
            }
        }
    }
    let covers = page.vv.clone();
    let adopt = page.done.then_some((page.vv, page.hlc));
    match api.writer.install(entries, covers, adopt).await {
        Ok(Ok(vv)) => answer(
            &api,
            &from,
            &Ack {
                vv,
                now_ms: api.clock.now_ms(),
                held: 0,
                buffered: 0,
                hlc: api.reader.published().hlc,
                replica: Some(api.incarnation.replica()),
                seen: None,
            },
        ),
        Ok(Err(e)) => HttpError::from(e).into_response(),
        Err(e) => stopping(e),
    }
}

async fn read(
    State(api): State<Arc<PeerApi>>,
    h: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (from, payload) = match open(&api, &h, "read", &body) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if let Some(r) = api.refuse_region(&from) {
        return r;
    }
    let req: wire::ObjectRequest = match wire::decode_msg(payload) {
        Ok(r) => r,
        Err(e) => return HttpError::bad_request(e.to_string()).into_response(),
    };
    let reader = api.reader.clone();
    let got = tokio::task::spawn_blocking(move || {
        // A prefix of the keys asked for, bounded by bytes (at least one):
        // the caller asks again for the rest.
        let mut objects = Vec::with_capacity(req.keys.len());
        let mut bytes = 0;
        for k in &req.keys {
            let obj = reader.raw(&req.keyspace, k)?;
            let n = obj.as_ref().map_or(0, Vec::len) + k.as_str().len();
            if !objects.is_empty() && bytes + n > meridian_core::budget::PAGE_TARGET {
                break;
            }
            bytes += n;
            objects.push(obj.map(serde_bytes::ByteBuf::from));
        }
        // After the objects: the vector covers everything they reflect.
        let vv = reader.upper();
        Ok::<_, meridian_core::ReadError>(wire::ObjectReply { vv, objects })
    })
    .await;
    match got {
        Ok(Ok(reply)) => answer_msg(&api, &from, &reply),
        Ok(Err(e)) => HttpError::from(e).into_response(),
        Err(e) => HttpError::internal(e.to_string()).into_response(),
    }
}

async fn digests(
    State(api): State<Arc<PeerApi>>,
    h: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (from, payload) = match open(&api, &h, "digests", &body) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if let Some(r) = api.refuse_region(&from) {
        return r;
    }
    let req: wire::DigestRequest = match wire::decode_msg(payload) {
        Ok(r) => r,
        Err(e) => return HttpError::bad_request(e.to_string()).into_response(),
    };
    let p = api.reader.published();
    let keyspaces = p
        .digests
        .iter()
        .filter(|(k, _)| req.keyspaces.is_empty() || req.keyspaces.contains(k))
        .map(|(k, d)| (k.clone(), *d))
        .collect();
    let buckets = req
        .buckets_of
        .iter()
        .filter_map(|k| api.reader.tree(k).map(|t| (k.clone(), t)))
        .collect();
    answer_msg(
        &api,
        &from,
        &wire::DigestReply {
            vv: p.vv.clone(),
            keyspaces,
            buckets,
        },
    )
}

async fn buckets(
    State(api): State<Arc<PeerApi>>,
    h: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (from, payload) = match open(&api, &h, "buckets", &body) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if let Some(r) = api.refuse_region(&from) {
        return r;
    }
    let req: wire::BucketRequest = match wire::decode_msg(payload) {
        Ok(r) => r,
        Err(e) => return HttpError::bad_request(e.to_string()).into_response(),
    };
    let reader = api.reader.clone();
    let got =
        tokio::task::spawn_blocking(move || reader.bucket_entries(&req.keyspace, &req.buckets))
            .await;
    match got {
        Ok(Ok(entries)) => answer_msg(&api, &from, &wire::BucketReply { entries }),
        Ok(Err(e)) => HttpError::from(e).into_response(),
        Err(e) => HttpError::internal(e.to_string()).into_response(),
    }
}
