//! One sender per peer: ships the ops the peer lacks, from any origin, in
//! log order, batched by size and by a short linger, several batches in
//! flight; falls back to reading the log from disk when the peer is behind
//! the in-memory tail, and to a state transfer when it is behind the log's
//! retention. Reconnects with jittered exponential backoff.
//!
//! Why past ~400 lines: one state machine (session, ship from the tail, from
//! disk, state transfer, reconnect) whose steps call each other and read top
//! to bottom (one request is in `call.rs`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use meridian_core::log::LogCursor;
use meridian_core::replication::compact::{self, AnswerTo};
use meridian_core::replication::wire::{self, Ack, Hello, StatePage};
use meridian_core::replication::{BatchLimits, PeerSync, needs_state_transfer};
use meridian_core::{FjallBackend, Op, Reader, budget};
use meridian_crdt::{ReplicaId, codec};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::auth::Form;
use super::auth::Secret;
use super::call::{How, PeerError, PeerHttp, call, call_with, peer_client};
use super::status::{LinkState, PeerStatus};
use crate::region::clock::WallClock;
use crate::region::feed::Feed;
use crate::region::incarnation::Incarnation;
use crate::shutdown::Shutdown;

/// Batches in flight per peer: enough to keep a long link busy (a batch
/// leaves every few ms; an 80 ms link has a 160 ms round trip).
const MAX_IN_FLIGHT: usize = 64;

/// Ops in the peer's causal buffer at which held-back relays go at once:
/// the peer is waiting on their past (its buffer holds 100,000 by default;
/// what overflows it is dropped and sent again only later).
const RELEASE_WHEN_BUFFERED: u32 = 1024;

/// Tuning of a sender.
#[derive(Clone, Copy, Debug)]
pub struct SenderOptions {
    /// Batch bounds.
    pub limits: BatchLimits,
    /// How long to wait for more ops before sending a small batch.
    pub linger: Duration,
    /// The newest wire version to offer (a session speaks it if the peer's
    /// hello answer does).
    pub wire: u8,
    /// How long another region's ops wait here before they are relayed to
    /// the peer: their origin likely ships them to it directly meanwhile,
    /// and what the peer then acknowledges is not sent again. Zero relays
    /// at once (a standby's leader, the only one that ships to it).
    pub relay_hold: Duration,
    /// Injected faults (tests only).
    pub faults: BatchFaults,
}

/// Faults a sender injects into its own batches, so that tests see
/// duplicated and reordered deliveries at the receiver. (The link emulator
/// works on TCP bytes; duplicating those would corrupt the HTTP/2 stream
/// rather than deliver a batch twice.)
#[derive(Clone, Copy, Debug, Default)]
pub struct BatchFaults {
    /// Probability that a batch is sent twice.
    pub duplicate: f64,
    /// Probability that a batch is held back 0-200 ms before it is sent.
    pub delay: f64,
}

impl BatchFaults {
    fn any(&self) -> bool {
        self.duplicate > 0.0 || self.delay > 0.0
    }
}

impl Default for SenderOptions {
    fn default() -> Self {
        Self {
            limits: BatchLimits::default(),
            linger: Duration::from_millis(5),
            wire: compact::VERSION,
            relay_hold: Duration::from_millis(100),
            faults: BatchFaults::default(),
        }
    }
}

/// A sender's read of the log on disk: the cursor, and what it read that
/// has not gone into a batch yet.
struct DiskRead {
    cursor: LogCursor,
    read: std::collections::VecDeque<(meridian_core::Lsn, Arc<Op>)>,
}

impl DiskRead {
    /// The position of the next op it holds or reads.
    fn next(&self) -> meridian_core::Lsn {
        self.read
            .front()
            .map_or(self.cursor.position(), |(l, _)| *l)
    }
}

/// Ships this region's ops to one peer.
pub struct Sender {
    me: ReplicaId,
    peer: Arc<PeerStatus>,
    http: PeerHttp,
    secret: Secret,
    feed: Arc<Feed>,
    reader: Reader<FjallBackend>,
    clock: WallClock,
    opts: SenderOptions,
    /// Checks each session's first answer for a rollback of this region.
    incarnation: Arc<Incarnation>,
}

/// Duplicates or delays one batch, as `faults` says.
async fn inject(
    faults: &BatchFaults,
    peer: &PeerStatus,
    http: &PeerHttp,
    secret: &Secret,
    me: &str,
    url: &str,
    body: &[u8],
) {
    if fastrand::f64() < faults.delay {
        let ms = fastrand::u64(0..200);
        peer.fault_delayed.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if fastrand::f64() < faults.duplicate {
        // The first copy's answer is ignored; the second is the real send.
        peer.fault_duplicated.fetch_add(1, Ordering::Relaxed);
        let _ = call(
            http,
            secret,
            me,
            peer.name.as_str(),
            url,
            "/peer/v1/ops",
            "ops",
            body,
        )
        .await;
    }
}

/// Decodes a peer's answer (of either version; version 2 against the
/// request it answers and the session's replica) to a request sent at wall
/// time `sent_ms` (and `started` on the monotonic clock), binds it to its
/// sender and records it on the link, with the clock offset it implies.
fn take_ack(
    me: &ReplicaId,
    peer: &PeerStatus,
    bytes: &[u8],
    to: AnswerTo<'_>,
    session: Option<&ReplicaId>,
    sent_ms: u64,
    started: Instant,
) -> Result<Ack, PeerError> {
    let ack =
        compact::decode_answer(bytes, to, session).map_err(|e| PeerError::BadAnswer(e.into()))?;
    check_sender(me, peer, &ack)?;
    let rtt = started.elapsed().as_millis() as u64;
    let offset = ack.now_ms as i64 - (sent_ms + rtt / 2) as i64;
    peer.acked(
        ack.replica.as_ref(),
        &ack.vv,
        ack.hlc,
        Some(offset),
        ack.held,
        ack.buffered,
    );
    Ok(ack)
}

/// Binds an ack to who sent it: an answer from this region itself (a URL
/// that leads back here) or from a region other than the link's must not
/// count as that peer's.
fn check_sender(me: &ReplicaId, peer: &PeerStatus, ack: &Ack) -> Result<(), PeerError> {
    let Some(r) = &ack.replica else {
        return Ok(()); // a peer older than the field
    };
    if r == me {
        return Err(PeerError::bad_answer(format!(
            "the URL of peer {} ({}) leads back to this region",
            peer.name,
            peer.url()
        )));
    }
    if r.region != peer.name {
        return Err(PeerError::bad_answer(format!(
            "peer {} ({}) answers as region {}: its acks cannot count for {}",
            peer.name,
            peer.url(),
            r.region,
            peer.name
        )));
    }
    Ok(())
}

/// The shortest delay between reconnects.
const MIN_RECONNECT: Duration = Duration::from_millis(50);

/// The delays between reconnects while a peer keeps failing: 50 ms
/// doubling to 100 ms, each plus random jitter of up to itself (so 50-100
/// ms at first, 100-200 ms at most), so regions do not reconnect in step.
/// A failed connect is cheap; what a long delay costs is the time to notice
/// a healed partition (docs/benchmarks.md, heal). A request from the peer
/// ends the wait early ([`PeerStatus::heard`]).
fn reconnect_delays() -> backon::ExponentialBackoff {
    use backon::BackoffBuilder as _;
    backon::ExponentialBuilder::new()
        .with_min_delay(MIN_RECONNECT)
        .with_max_delay(Duration::from_millis(100))
        .with_jitter()
        .without_max_times()
        .build()
}

impl Sender {
    /// A sender to `peer`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        me: ReplicaId,
        peer: Arc<PeerStatus>,
        secret: Secret,
        feed: Arc<Feed>,
        reader: Reader<FjallBackend>,
        clock: WallClock,
        opts: SenderOptions,
        incarnation: Arc<Incarnation>,
    ) -> Self {
        Self {
            incarnation,
            me,
            peer,
            http: peer_client(),
            secret,
            feed,
            reader,
            clock,
            opts,
        }
    }

    /// Runs until `shutdown`.
    pub async fn run(mut self, shutdown: Shutdown) {
        let mut delays = reconnect_delays();
        // Whether the last wait was cut short by a call from the peer: the
        // next one is not, so a peer that reaches us while we cannot reach
        // it does not undo the backoff.
        let mut woke_early = false;
        let mut attempt = 0u64;
        loop {
            let started = Instant::now();
            attempt += 1;
            // One span per session: what the session logs names its peer.
            let span = tracing::info_span!("peer_session", peer = %self.peer.name, url = %self.peer.url(), attempt);
            // Whether the link itself failed (then a request from the peer
            // proves it is back and ends the wait early).
            let mut link_down = false;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.session().instrument(span) => {
                    if let Err(e) = r {
                        link_down = matches!(e, PeerError::Unreachable(_) | PeerError::Transport(_));
                        tracing::warn!(peer = %self.peer.name, url = %self.peer.url(), error = %e, "replication session ended");
                        self.peer.error(&e.to_string());
                        if matches!(e, PeerError::WrongPeer(_)) {
                            self.peer.wrong_peer.fetch_add(1, Ordering::Relaxed);
                        }
                        // Not the leader there (a standby answers 421), or
                        // nobody: the region's leader may have moved.
                        if matches!(e, PeerError::Unreachable(_) | PeerError::Status { status: 421, .. } | PeerError::Transport(_))
                            && self.peer.rotate()
                        {
                            tracing::info!(peer = %self.peer.name, url = %self.peer.url(), "trying the region's next member");
                        }
                    }
                }
            }
            if started.elapsed() > Duration::from_secs(5) {
                delays = reconnect_delays();
            }
            let delay = delays.next().unwrap_or(Duration::from_secs(1));
            let heard = self.peer.heard.notified();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => woke_early = false,
                // The peer reached us: the link is back, try now (after
                // the shortest delay, and not twice in a row, so a peer
                // that keeps calling cannot turn a failing session into a
                // busy loop).
                _ = async {
                    heard.await;
                    tokio::time::sleep(MIN_RECONNECT.saturating_sub(started.elapsed())).await;
                }, if link_down && !woke_early => woke_early = true,
            }
            self.peer.set_state(LinkState::Connecting);
        }
    }

    /// One request, answered with an ack, and the answer's version. A
    /// hello passes its `offer` and its `now_ms` (what a version-2 answer
    /// is relative to).
    async fn call(
        &self,
        path: &str,
        label: &str,
        body: &[u8],
        hello: Option<(u8, u64)>,
    ) -> Result<(Ack, u8), PeerError> {
        let sent = self.clock.now_ms();
        let t = Instant::now();
        let how = How {
            offer: hello.map(|(offer, _)| offer),
            form: Form::Full,
        };
        let bytes = call_with(
            &self.http,
            &self.secret,
            self.me.region.as_str(),
            self.peer.name.as_str(),
            &self.peer.url(),
            path,
            label,
            body,
            how,
        )
        .await?;
        let to = AnswerTo {
            replicas: &[],
            sent_ms: hello.map_or(sent, |(_, now_ms)| now_ms),
        };
        let ack = take_ack(&self.me, &self.peer, &bytes, to, None, sent, t)?;
        Ok((ack, bytes.first().copied().unwrap_or(0)))
    }

    async fn session(&mut self) -> Result<(), PeerError> {
        let now_ms = self.clock.now_ms();
        let hello = wire::encode_hello(&Hello {
            from: self.me.clone(),
            now_ms,
        })
        .map_err(|e| PeerError::Local(e.into()))?;
        let offer = (self.opts.wire >= compact::VERSION).then_some(self.opts.wire);
        let (ack, answered_in) = self
            .call(
                "/peer/v1/hello",
                "hello",
                &hello,
                offer.map(|o| (o, now_ms)),
            )
            .await?;
        // The peer answers in version 2 only to an offer of it: then it
        // reads version-2 batches.
        let wire = if offer.is_some() && answered_in == compact::VERSION {
            compact::VERSION
        } else {
            codec::FORMAT_VERSION
        };
        self.peer.wire.store(wire, Ordering::Relaxed);
        let session_replica = ack.replica.clone();
        // The peer's view of this region's own ops: more than this region
        // has proves its log was rolled back (the region then retires).
        self.incarnation
            .check_peer(
                &self.peer.name,
                ack.seen.as_ref().unwrap_or(&ack.vv),
                &self.reader.published().vv,
            )
            .map_err(|e| PeerError::Local(e.into()))?;
        self.peer.set_state(LinkState::Connected);
        tracing::info!(peer = %self.peer.name, ops = ack.vv.total(), wire, "replication session started");
        let mut sync = PeerSync::new();
        sync.connected(&ack.vv, self.feed.index().start_for(&ack.vv));
        let mut disk: Option<DiskRead> = None;
        let mut in_flight: JoinSet<Result<Ack, PeerError>> = JoinSet::new();
        let mut ends = self.feed.subscribe();
        let mut last_send = Instant::now() - self.opts.linger;
        // Relays held back ([`SenderOptions::relay_hold`]): counted from
        // when an op was committed here, or from the session's start for
        // what was here before it (at a heal, the ops' origin reconnects to
        // the peer about when this session starts). When the hold is over,
        // and if no ack has said meanwhile what the peer holds, an empty
        // batch asks; then what it still lacks goes.
        let started = Instant::now();
        let mut release_at: Option<Instant> = None;
        let mut release_on_ack = false;
        // Relays committed before this are not held (moved on when a
        // buffering peer asks for them).
        let mut relay_from = started;
        let mut last_ack = started;
        loop {
            let ours = self.reader.published().vv.clone();
            let index = self.feed.index();
            if in_flight.is_empty() && needs_state_transfer(&ours, &index.floors(), sync.shipped())
            {
                self.transfer(&mut sync).await?;
                disk = None;
                continue;
            }
            if in_flight.len() < MAX_IN_FLIGHT {
                let pending = self.feed.end().0.saturating_sub(sync.cursor().0);
                if pending > 0 && (pending as usize) < self.opts.limits.max_ops {
                    // Less than a full batch: let it fill for up to one linger
                    // since the last send (a lone write after a quiet spell
                    // waits at most that long; a steady stream goes out in
                    // batches of a linger's worth).
                    let since = last_send.elapsed();
                    if since < self.opts.linger {
                        tokio::time::sleep(self.opts.linger - since).await;
                    }
                }
                let batch = self.fill(&mut sync, &mut disk, started, relay_from)?;
                if release_at.is_none() && sync.held().is_some() {
                    release_at = Some(Instant::now() + self.opts.relay_hold);
                }
                if !batch.is_empty() {
                    last_send = Instant::now();
                    self.send(&mut in_flight, &batch, wire, session_replica.clone())?;
                    continue;
                }
            }
            tokio::select! {
                done = in_flight.join_next(), if !in_flight.is_empty() => {
                    match done {
                        Some(Ok(Ok(ack))) => {
                            if ack.replica.is_some() && ack.replica != session_replica {
                                // Wiped and restarted mid-session: what this
                                // session counted as delivered is void.
                                return Err(PeerError::bad_answer(format!(
                                    "peer {} answers as a new incarnation", self.peer.name
                                )));
                            }
                            sync.on_ack(&ack.vv);
                            last_ack = Instant::now();
                            // The peer buffers ops whose past it lacks (this
                            // region's own, after relays held back): relay
                            // now rather than let its buffer fill.
                            let buffering = ack.buffered >= RELEASE_WHEN_BUFFERED;
                            if sync.held().is_some() && (release_on_ack || buffering) {
                                if buffering {
                                    // Everything committed until now goes.
                                    relay_from = Instant::now();
                                }
                                sync.release_held();
                                release_at = None;
                                release_on_ack = false;
                            }
                        }
                        Some(Ok(Err(e))) => return Err(e),
                        Some(Err(e)) => return Err(PeerError::Local(e.into())),
                        None => {}
                    }
                }
                _ = ends.changed() => {}
                _ = tokio::time::sleep_until(release_at.unwrap_or_else(Instant::now).into()), if release_at.is_some() => {
                    let held_since = release_at.take().map(|t| t - self.opts.relay_hold);
                    if sync.held().is_none() {
                        // Cleared meanwhile (a resend, a transfer): nothing to ask.
                    } else if held_since.is_some_and(|t| last_ack >= t) {
                        // An ack since the hold began says what the peer holds.
                        sync.release_held();
                    } else {
                        // Release on the next ack: of a batch in flight, or
                        // of an empty one sent to ask.
                        if in_flight.is_empty() {
                            self.send(&mut in_flight, &[], wire, session_replica.clone())?;
                            self.peer.probes.fetch_add(1, Ordering::Relaxed);
                        }
                        release_on_ack = true;
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(500)) => {
                    // Ops held back by the peer (clock skew) or dropped from
                    // its full causal buffer: resend what it has not acked.
                    if in_flight.is_empty() && sync.shipped() != sync.acked() {
                        sync.on_failure(self.feed.index().start_for(sync.acked()));
                        disk = None;
                    }
                }
            }
        }
    }

    /// Encodes `batch` in the session's wire version and sends it, its
    /// ack (checked against the session's replica) joining `in_flight`.
    /// An empty batch asks the peer what it holds.
    fn send(
        &self,
        in_flight: &mut JoinSet<Result<Ack, PeerError>>,
        batch: &[Arc<Op>],
        wire: u8,
        session: Option<ReplicaId>,
    ) -> Result<(), PeerError> {
        let batch_ms = self.clock.now_ms();
        let (body, table) = if wire == compact::VERSION {
            let e = compact::encode(&self.me, batch_ms, batch)
                .map_err(|e| PeerError::Local(e.into()))?;
            (e.bytes, e.replicas)
        } else {
            let bytes =
                wire::encode(&self.me, batch_ms, batch).map_err(|e| PeerError::Local(e.into()))?;
            (bytes, Vec::new())
        };
        self.peer
            .bytes
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        if !batch.is_empty() {
            self.peer.batches.fetch_add(1, Ordering::Relaxed);
            self.peer
                .ops
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        let http = self.http.clone();
        let secret = self.secret.clone();
        let me = self.me.region.to_string();
        let me_id = self.me.clone();
        let url = self.peer.url();
        let peer = self.peer.clone();
        let clock = self.clock;
        let faults = self.opts.faults;
        // A peer that reads version 2 reads the short signatures.
        let how = How {
            offer: None,
            form: if wire == compact::VERSION {
                Form::Short
            } else {
                Form::Full
            },
        };
        in_flight.spawn(
            async move {
                if faults.any() {
                    inject(&faults, &peer, &http, &secret, &me, &url, &body).await;
                }
                let sent = clock.now_ms();
                let t = Instant::now();
                let bytes = call_with(
                    &http,
                    &secret,
                    &me,
                    peer.name.as_str(),
                    &url,
                    "/peer/v1/ops",
                    "ops",
                    &body,
                    how,
                )
                .await?;
                let to = AnswerTo {
                    replicas: &table,
                    sent_ms: batch_ms,
                };
                take_ack(&me_id, &peer, &bytes, to, session.as_ref(), sent, t)
            }
            // The send names its session (peer, attempt) in its logs.
            .in_current_span(),
        );
        Ok(())
    }

    /// The next batch: from the in-memory tail, or from disk when the peer
    /// is behind it. Another region's ops are held back for the relay hold
    /// after they were committed here, or after the session `started`.
    fn fill(
        &self,
        sync: &mut PeerSync,
        disk: &mut Option<DiskRead>,
        started: Instant,
        relay_from: Instant,
    ) -> Result<Vec<Arc<Op>>, PeerError> {
        let limits = self.opts.limits;
        // Exact encoded sizes: the receiver's limit is on encoded bytes.
        let size = |op: &Op| codec::encoded_len(op).unwrap_or(budget::MAX_OP);
        let end = self.feed.end();
        let now = Instant::now();
        let me = &self.me.region;
        let hold = self.opts.relay_hold;
        let relayed_too_soon = |op: &Op, at: Instant| {
            op.dot.replica.region != *me && at >= relay_from && at.max(started) + hold > now
        };
        loop {
            if sync.cursor() >= end {
                return Ok(Vec::new());
            }
            if let Some(batch) = self
                .feed
                .next_batch_holding(sync, limits, size, relayed_too_soon)
            {
                *disk = None;
                return Ok(batch);
            }
            // Behind the tail: read the log from disk, going on where the
            // last read stopped (a cursor made anew walks its segment from
            // the start).
            let d = match disk {
                Some(d) if d.next() == sync.cursor() => d,
                _ => disk.insert(DiskRead {
                    cursor: LogCursor::new(&self.feed.log_dir, sync.cursor()),
                    read: std::collections::VecDeque::new(),
                }),
            };
            if d.read.is_empty() {
                // Bounded in bytes too: what is read waits here until it
                // goes into batches.
                let ops = d
                    .cursor
                    .read_bounded(end, limits.max_ops * 4, limits.max_bytes * 4)
                    .map_err(|e| PeerError::Local(e.into()))?;
                d.read
                    .extend(ops.into_iter().map(|(l, op)| (l, Arc::new(op))));
            }
            if d.read.is_empty() {
                // Nothing readable at the cursor (retention removed it, or a
                // record is being written): start over from the index. A
                // cursor below where the peer's acks say to start (moved
                // back to a held relay in a segment retention has removed
                // since) goes there, or it would wait here for good.
                *disk = None;
                let start = self.feed.index().start_for(sync.acked());
                if sync.cursor() < start {
                    sync.on_failure(start);
                }
                return Ok(Vec::new());
            }
            let before = sync.cursor();
            // Older than the tail: only the session's start can hold it.
            let batch = sync.fill_holding(d.read.iter().cloned(), limits, size, |_, op| {
                relayed_too_soon(op, started)
            });
            while d.read.front().is_some_and(|(l, _)| *l < sync.cursor()) {
                d.read.pop_front();
            }
            if !batch.is_empty() || sync.cursor() == before || sync.held().is_some() {
                // (Reading on past relays held back would read, and after
                // their release read again, all of a long backlog at once.)
                return Ok(batch);
            }
            // Everything read was already covered: read on.
        }
    }

    /// Sends a whole state snapshot, page by page, then resumes from the log.
    async fn transfer(&mut self, sync: &mut PeerSync) -> Result<(), PeerError> {
        self.peer.set_state(LinkState::Transferring);
        let reader = self.reader.clone();
        let snap = tokio::task::spawn_blocking(move || reader.transfer_snapshot())
            .await
            .map_err(|e| PeerError::Local(e.into()))?
            .map_err(|e| PeerError::Local(e.into()))?;
        let snap = Arc::new(snap);
        let id = self.clock.now_ms();
        tracing::info!(peer = %self.peer.name, ops = snap.vv.total(), "state transfer: starting");
        let mut pages = 0u64;
        for ks in snap.keyspaces.clone() {
            let mut after: Option<Vec<u8>> = None;
            loop {
                let s = snap.clone();
                let ks2 = ks.clone();
                let a = after.clone();
                let page = tokio::task::spawn_blocking(move || {
                    s.page(&ks2, a.as_deref(), 1000, budget::PAGE_TARGET)
                })
                .await
                .map_err(|e| PeerError::Local(e.into()))?
                .map_err(|e| PeerError::Local(e.into()))?;
                if page.is_empty() {
                    break;
                }
                after = page.last().map(|(k, _)| k.clone());
                let entries = page
                    .into_iter()
                    .filter_map(|(k, v)| {
                        let key = meridian_core::Key::new(String::from_utf8_lossy(&k).into_owned())
                            .ok()?;
                        Some((ks.clone(), key, serde_bytes::ByteBuf::from(v)))
                    })
                    .collect();
                let body = wire::encode_state(&StatePage {
                    transfer: id,
                    vv: snap.vv.clone(),
                    hlc: snap.hlc,
                    entries,
                    done: false,
                })
                .map_err(|e| PeerError::Local(e.into()))?;
                self.peer
                    .bytes
                    .fetch_add(body.len() as u64, Ordering::Relaxed);
                self.call("/peer/v1/state", "state", &body, None).await?;
                pages += 1;
            }
        }
        let body = wire::encode_state(&StatePage {
            transfer: id,
            vv: snap.vv.clone(),
            hlc: snap.hlc,
            entries: Vec::new(),
            done: true,
        })
        .map_err(|e| PeerError::Local(e.into()))?;
        let (ack, _) = self.call("/peer/v1/state", "state", &body, None).await?;
        self.peer.transfers.fetch_add(1, Ordering::Relaxed);
        tracing::info!(peer = %self.peer.name, pages, "state transfer: done");
        sync.connected(&ack.vv, self.feed.index().start_for(&ack.vv));
        self.peer.set_state(LinkState::Connected);
        Ok(())
    }
}
