//! The writer: the one place that changes a region's data.
//!
//! Two threads share the engine behind one mutex:
//! - the *stager* takes every command waiting on the channel and stages
//!   them in the engine's current group (validation, stamping, applying to
//!   the group's private overlay);
//! - the *committer* loops: seal the current group, write its ops to the op
//!   log with one write, `fdatasync` (without the lock, so staging goes on),
//!   commit the group (state, ledger, checkpoint in one batch), and only then
//!   answer the group's clients.
//!
//! While one group's fsync runs the next one fills up (pipelined group
//! commit), and a busy committer never waits for a wake-up between groups.
//! Blocking disk work never runs on a tokio worker.
//!
//! Why past ~400 lines: the stager and the committer share the engine, its
//! lock and the pending answers; split, the lock's protocol would sit in two
//! files (its commands are in `command.rs`).

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use meridian_core::Backend as _;
use meridian_core::engine::Applied;
use meridian_core::{Engine, FjallBackend, Log, LogError, Received, WriteError};
use meridian_crdt::{Dot, Version, VersionVector};
use tokio::sync::{mpsc, oneshot, watch};

use super::clock::WallClock;
pub use super::command::{Command, DefineDone, OwnershipChange, WriteDone};
use super::feed::Feed;
use super::status::LogInfo;
use crate::metrics::{Metrics, WriteStages};

/// Most commands taken from the channel at once.
const MAX_TAKE: usize = 4096;

/// Longest the writer stages under the engine lock before it lets the
/// committer take what is staged. A backlog of large receives after a
/// partition (16 of 4,096 ops each, taken at once) held the lock for
/// seconds, so the group staged first could not be published until the
/// whole backlog was staged behind it (docs/benchmarks.md, heal).
const MAX_HOLD: Duration = Duration::from_millis(10);

/// Most merge write-backs staged after one round of commands.
const MERGES_PER_ROUND: usize = 16;

enum Pending {
    /// Its index in the group, where the answer goes, when it was staged.
    Write(
        usize,
        oneshot::Sender<Result<WriteDone, WriteError>>,
        Instant,
    ),
    Define(oneshot::Sender<Result<DefineDone, WriteError>>),
    Receive(
        Received,
        oneshot::Sender<Result<(Received, VersionVector), WriteError>>,
    ),
    Install(oneshot::Sender<Result<VersionVector, WriteError>>),
    Collect(usize, oneshot::Sender<Result<usize, WriteError>>),
}

/// What the writer owns, handed over at start.
pub struct Writer {
    /// The engine.
    pub engine: Engine<FjallBackend>,
    /// The op log.
    pub log: Log,
    /// Incoming commands.
    pub rx: mpsc::Receiver<Command>,
    /// Where the published version vector is announced (read-your-writes waits on it).
    pub vv_tx: watch::Sender<VersionVector>,
    /// Wall clock.
    pub clock: WallClock,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Log facts for status.
    pub log_info: Arc<LogInfo>,
    /// Committed ops go here, for replication.
    pub feed: Option<Arc<Feed>>,
    /// Set, once, to the fatal error that stopped the writer: health checks
    /// fail from then on and the process exits non-zero.
    pub fatal: watch::Sender<Option<Arc<str>>>,
}

/// Why the writer stopped.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    /// Durability can no longer be guaranteed (a failed fsync, a failed
    /// state write): the process must stop rather than answer.
    #[error("fatal: {0}")]
    Fatal(WriteError),
    /// One of the region's threads panicked (the panic message went to
    /// stderr).
    #[error("fatal: the {0} thread panicked")]
    Panicked(&'static str),
}

struct Inner {
    engine: Engine<FjallBackend>,
    log: Log,
    /// Answers owed for the current (unsealed) group.
    pending: Vec<Pending>,
    checkpoint: bool,
    closing: bool,
    failed: bool,
    /// Groups the committer has taken (sealed) so far: the writer waits for
    /// it to move when it hands over a long round ([`MAX_HOLD`]).
    sealed: u64,
}

struct Shared {
    inner: Mutex<Inner>,
    /// The committer waits on it for work.
    work: Condvar,
    /// The writer waits on it for the committer to seal a group.
    handed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Committer {
    shared: Arc<Shared>,
    vv_tx: watch::Sender<VersionVector>,
    clock: WallClock,
    metrics: Arc<Metrics>,
    log_info: Arc<LogInfo>,
    feed: Option<Arc<Feed>>,
    fatal: watch::Sender<Option<Arc<str>>>,
}

impl Writer {
    /// Runs the stager on this thread and the committer on another, until
    /// every sender is gone; then makes everything durable.
    pub fn run(self) -> Result<(), WriterError> {
        let Writer {
            engine,
            log,
            mut rx,
            vv_tx,
            clock,
            metrics,
            log_info,
            feed,
            fatal,
        } = self;
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                engine,
                log,
                pending: Vec::new(),
                checkpoint: false,
                closing: false,
                failed: false,
                sealed: 0,
            }),
            work: Condvar::new(),
            handed: Condvar::new(),
        });
        let stages = metrics.stages.clone();
        let c = Committer {
            shared: shared.clone(),
            vv_tx,
            clock,
            metrics,
            log_info,
            feed,
            fatal: fatal.clone(),
        };
        let committer = std::thread::Builder::new()
            .name("meridian-commit".into())
            .spawn(move || c.run())
            .map_err(|e| {
                WriterError::Fatal(WriteError::Log(LogError::Io {
                    path: "committer thread".into(),
                    source: e,
                }))
            })?;
        let mut batch = Vec::with_capacity(64);
        // Merges still owed after a round: take what is waiting without
        // blocking, and go on merging while the channel is empty.
        let mut owed = false;
        loop {
            if owed {
                match rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(mpsc::error::TryRecvError::Empty) => {}
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                }
            } else {
                match rx.blocking_recv() {
                    Some(c) => batch.push(c),
                    None => break,
                }
            }
            while batch.len() < MAX_TAKE {
                match rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            let now = clock.now_ms();
            let taken = Instant::now();
            let mut g = shared.lock();
            if g.failed || fatal.borrow().is_some() {
                // Failed, or the incarnation was retired: take nothing more.
                break;
            }
            let mut held = Instant::now();
            let mut cmds = batch.drain(..);
            while let Some(cmd) = cmds.next() {
                if let Err(e) = stage(&mut g, now, cmd, &fatal, (&stages, taken)) {
                    tracing::error!(error = %e, "writer: fatal error while staging");
                    g.failed = true;
                    break;
                }
                if held.elapsed() >= MAX_HOLD
                    && cmds.len() > 0
                    && (g.engine.has_staged() || !g.pending.is_empty())
                    && !g.engine.fences_owed()
                {
                    // Hand what is staged to the committer (it needs this
                    // lock to seal a group, and an unfair mutex would let
                    // this thread take it straight back), then go on. Not
                    // while a fence is owed: it goes into the group with
                    // what it fences, as below. The wait is bounded: the
                    // committer may be busy with a checkpoint's fsync.
                    let seen = g.sealed;
                    shared.work.notify_one();
                    let deadline = Instant::now() + MAX_HOLD;
                    while g.sealed == seen && !g.failed && fatal.borrow().is_none() {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        g = shared
                            .handed
                            .wait_timeout(g, left)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0;
                    }
                    if g.failed || fatal.borrow().is_some() {
                        // What is left is refused with the region.
                        break;
                    }
                    held = Instant::now();
                }
            }
            drop(cmds);
            // Merges this region owes for what it just staged go into the
            // group being staged (after a hand-over, a later one than the
            // ops'). A bounded number per round, so a slow script cannot
            // hold the writer for long; the next round (at once, if nothing
            // else waits) takes the rest.
            if !g.failed && g.engine.merges_due() {
                match g.engine.merge_due(now, MERGES_PER_ROUND) {
                    Ok(_) => {}
                    Err(e) => {
                        let e = fail(&fatal, e);
                        tracing::error!(error = %e, "writer: fatal error while merging");
                        g.failed = true;
                    }
                }
            }
            // A map applied at a new epoch (from anywhere): this region's
            // fence goes into the same group, judged by the new map since.
            if !g.failed
                && g.engine.fences_owed()
                && let Err(e) = g.engine.write_fences(now)
            {
                if e.is_fatal() {
                    let e = fail(&fatal, e);
                    tracing::error!(error = %e, "writer: fatal error while fencing");
                    g.failed = true;
                } else {
                    // Owed still: tried again next round.
                    tracing::warn!(error = %e, "writer: fence not written");
                }
            }
            owed = !g.failed && g.engine.merges_due();
            drop(g);
            shared.work.notify_one();
            if owed {
                // Let the committer take the group before the next round.
                std::thread::yield_now();
            }
        }
        // Refuse whatever is still queued (its senders see the region stop).
        drop(rx);
        shared.lock().closing = true;
        shared.work.notify_one();
        match committer.join() {
            Ok(r) => r.map_err(WriterError::Fatal),
            Err(_) => Err(WriterError::Panicked("committer")),
        }
    }
}

/// Records the writer's fatal error where health checks see it: before the
/// failed command's reply is dropped, so no client hears of the failure
/// before `/healthz` does.
fn fail(fatal: &watch::Sender<Option<Arc<str>>>, e: WriteError) -> WriteError {
    fatal.send_replace(Some(Arc::from(e.to_string())));
    e
}

/// `(stages, taken)`: where stage times go, and when the command was
/// taken from the channel.
fn stage(
    g: &mut Inner,
    now: u64,
    cmd: Command,
    fatal: &watch::Sender<Option<Arc<str>>>,
    (stages, taken): (&WriteStages, Instant),
) -> Result<(), WriteError> {
    match cmd {
        Command::Write { req, reply, sent } => {
            stages
                .queue
                .observe(taken.saturating_duration_since(sent).as_secs_f64());
            let idx = g.engine.staged_len();
            let t = Instant::now();
            let r = g.engine.submit(now, req);
            let staged = Instant::now();
            stages.stage.observe((staged - t).as_secs_f64());
            match r {
                Ok(()) => g.pending.push(Pending::Write(idx, reply, staged)),
                Err(e) if e.is_fatal() => return Err(fail(fatal, e)),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            }
        }
        Command::Define { def, reply } => {
            let r = g.engine.define(now, def);
            defined(g, r, reply, fatal)?;
        }
        Command::DefineMerge { def, reply } => {
            let r = g.engine.define_merge(now, def);
            defined(g, r, reply, fatal)?;
        }
        Command::DefineToken { def, reply } => {
            let r = g.engine.define_token(now, def);
            defined(g, r, reply, fatal)?;
        }
        Command::RevokeToken { id, reply } => {
            let r = g.engine.revoke_token(now, &id);
            defined(g, r, reply, fatal)?;
        }
        Command::Own {
            keyspace,
            change,
            reply,
        } => {
            let r = match &change {
                OwnershipChange::Set(req) => g.engine.set_ownership(now, &keyspace, req),
                OwnershipChange::Transfer { which, to, epoch } => g
                    .engine
                    .transfer_ownership(now, &keyspace, which, to, *epoch),
            };
            return defined(g, r.map(|m| m.is_some()), reply, fatal);
        }
        Command::EnableMerges { regions, hold } => g.engine.enable_merges_after(regions, hold),
        Command::Receive { ops, reply } => match g.engine.receive(now, ops) {
            // Answered after the group commits, even if nothing of it was
            // staged: an ack must not run ahead of durability.
            Ok(r) => g.pending.push(Pending::Receive(r, reply)),
            Err(e) if e.is_fatal() => return Err(fail(fatal, e)),
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        },
        Command::Install {
            entries,
            covers,
            adopt,
            reply,
        } => {
            let r = g
                .engine
                .install(now, entries, &covers)
                .and_then(|()| match adopt {
                    Some((vv, hlc)) => g.engine.adopt(now, &vv, hlc).map(|_| ()),
                    None => Ok(()),
                });
            match r {
                Ok(()) => g.pending.push(Pending::Install(reply)),
                Err(e) if e.is_fatal() => return Err(fail(fatal, e)),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            }
        }
        Command::Collect { cut, budget, reply } => match g.engine.collect(&cut, budget) {
            Ok(n) => g.pending.push(Pending::Collect(n, reply)),
            Err(e) if e.is_fatal() => return Err(fail(fatal, e)),
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        },
        Command::Checkpoint => {
            g.checkpoint = true;
            // The periodic tick: merges that failed get another try.
            g.engine.retry_failed_merges();
        }
        Command::Seal { reply } => match g.log.seal_active() {
            Ok(end) => {
                let _ = reply.send(Ok(end));
            }
            // The seal syncs the segment: a failed sync may have taken the
            // error a concurrent group's sync would have seen, so it is as
            // fatal as that one.
            Err(e) => return Err(fail(fatal, WriteError::Log(e))),
        },
        Command::Reincarnate { replica, reply } => {
            g.engine.reincarnate(replica);
            let _ = reply.send(());
        }
    }
    Ok(())
}

/// Answers a definition (of a keyspace or a merge): once durable when
/// something was staged, at once when it was already so or refused.
fn defined(
    g: &mut Inner,
    r: Result<bool, WriteError>,
    reply: oneshot::Sender<Result<DefineDone, WriteError>>,
    fatal: &watch::Sender<Option<Arc<str>>>,
) -> Result<(), WriteError> {
    match r {
        Ok(true) => g.pending.push(Pending::Define(reply)),
        Ok(false) => {
            let _ = reply.send(Ok(DefineDone::Unchanged));
        }
        Err(e) if e.is_fatal() => return Err(fail(fatal, e)),
        Err(e) => {
            let _ = reply.send(Err(e));
        }
    }
    Ok(())
}

impl Committer {
    fn run(self) -> Result<(), WriteError> {
        let mut owed = Vec::new();
        let r = self.run_loop(&mut owed);
        if let Err(e) = &r {
            tracing::error!(error = %e, "writer: fatal error; the region stops");
            self.fatal.send_replace(Some(Arc::from(e.to_string())));
            let mut g = self.shared.lock();
            g.failed = true;
            // A writer waiting for this thread to seal a group stops
            // waiting.
            self.shared.handed.notify_all();
            // Dropping the owed answers tells their clients the region
            // stopped (after health checks can see why).
            g.pending.clear();
            owed.clear();
        }
        r
    }

    /// `owed`: the answers of the group being committed, kept by the
    /// caller so a failure is recorded before they are dropped.
    fn run_loop(&self, owed: &mut Vec<Pending>) -> Result<(), WriteError> {
        loop {
            let mut g = self.shared.lock();
            while !g.engine.has_staged()
                && g.pending.is_empty()
                && !g.checkpoint
                && !g.closing
                && !g.failed
            {
                g = self
                    .shared
                    .work
                    .wait(g)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if g.failed || self.fatal.borrow().is_some() {
                // Failed, or the incarnation was retired: what is staged is
                // never logged, and its clients hear that the region stopped.
                g.pending.clear();
                self.shared.handed.notify_all();
                return Ok(());
            }
            if g.checkpoint {
                g.checkpoint = false;
                // The state fsync can take a while: run it without the
                // engine, so writes keep flowing, then trim the log.
                let (lsn, store) = g.engine.checkpoint_handle();
                drop(g);
                store.persist()?;
                g = self.shared.lock();
                let removed = g.log.enforce_retention(lsn, self.clock.now_ms())?;
                if removed > 0 {
                    tracing::info!(segments = removed, "op log: retention removed segments");
                }
                self.log_info.update(&g.log);
            }
            *owed = std::mem::take(&mut g.pending);
            g.sealed += 1;
            self.shared.handed.notify_one();
            let stages = &self.metrics.stages;
            let sealed = Instant::now();
            // The protocol's steps (meridian_core::engine::driver), with the
            // fsync between them run without the lock.
            let begun = {
                let inner = &mut *g;
                inner.engine.begin(&mut inner.log)?
            };
            stages.log_write.observe(sealed.elapsed().as_secs_f64());
            let Some(pending) = begun else {
                // Nothing to write: the owed answers (a receive of
                // duplicates) stand on what is already committed.
                let vv = g.engine.reader().published().vv.clone();
                let closing = g.closing;
                drop(g);
                answer(std::mem::take(owed), &[], &vv);
                if closing {
                    let mut g = self.shared.lock();
                    return self.checkpoint(&mut g);
                }
                continue;
            };
            let n = pending.len;
            if n > 0 {
                let handle = g.log.sync_handle()?;
                drop(g);
                let t = Instant::now();
                handle.sync_data().map_err(|source| {
                    WriteError::Log(LogError::Io {
                        path: "op log fdatasync".into(),
                        source,
                    })
                })?;
                let synced = t.elapsed().as_secs_f64();
                self.metrics.fsync_seconds.observe(synced);
                stages.fsync.observe(synced);
                self.metrics.group_ops.observe(n as f64);
                g = self.shared.lock();
            }

            let t = Instant::now();
            // Transferred state is not in the op log: finish makes it
            // durable in the state store before anyone hears of it.
            let finished = {
                let inner = &mut *g;
                inner
                    .engine
                    .finish(&mut inner.log, pending, self.clock.now_ms())?
            };
            if finished.retained > 0 {
                tracing::info!(
                    segments = finished.retained,
                    "op log: retention removed segments"
                );
            }
            let (committed, first) = (finished.committed, finished.first);
            self.log_info.update(&g.log);
            let index = self.feed.as_ref().map(|_| g.log.index());
            drop(g);
            stages.commit.observe(t.elapsed().as_secs_f64());
            // Observed without the lock (each observation takes the
            // histogram's own).
            for p in owed.iter() {
                if let Pending::Write(_, _, staged) = p {
                    stages
                        .group_wait
                        .observe(sealed.saturating_duration_since(*staged).as_secs_f64());
                }
            }
            if self.fatal.borrow().is_some() {
                // Retired while this group synced: its seqs may be ones peers
                // hold, so nobody may hear it succeeded, and it is not fed
                // to the senders.
                owed.clear();
                return Ok(());
            }
            let p = Instant::now();
            self.vv_tx.send_replace(committed.vv.clone());
            if let (Some(feed), Some(index)) = (&self.feed, index) {
                feed.push(first, committed.applied.iter().map(|a| a.op.clone()), index);
            }
            let a = Instant::now();
            stages.publish.observe((a - p).as_secs_f64());
            answer(std::mem::take(owed), &committed.applied, &committed.vv);
            stages.answer.observe(a.elapsed().as_secs_f64());
            self.metrics
                .commit_seconds
                .observe(t.elapsed().as_secs_f64());
        }
    }

    fn checkpoint(&self, g: &mut Inner) -> Result<(), WriteError> {
        let lsn = g.engine.checkpoint()?;
        let removed = g.log.enforce_retention(lsn, self.clock.now_ms())?;
        if removed > 0 {
            tracing::info!(segments = removed, "op log: retention removed segments");
        }
        self.log_info.update(&g.log);
        Ok(())
    }
}

/// The token of one write in a group: the group's vector, but of this
/// region's own ops only up to this one. Writes later in the group are not
/// the client's causal past, and a write concern covers this op only: a
/// token naming them could keep a region the session fails over to
/// waiting for ops that only this region holds.
fn token_vv(vv: &VersionVector, dot: &Dot) -> VersionVector {
    let mut t = VersionVector::new();
    for (origin, seq) in vv.iter() {
        let seq = if *origin == dot.replica {
            seq.min(dot.seq)
        } else {
            seq
        };
        t.raise(origin, seq);
    }
    t
}

fn answer(pending: Vec<Pending>, applied: &[Applied], vv: &VersionVector) {
    if pending.is_empty() {
        return;
    }
    for p in pending {
        match p {
            Pending::Write(idx, reply, _) => {
                if let Some(a) = applied.get(idx) {
                    let covers = token_vv(vv, &a.op.dot);
                    let _ = reply.send(Ok(WriteDone {
                        version: Version::new(a.op.hlc, a.op.dot.clone()),
                        token: Arc::from(meridian_core::token::encode(&covers)),
                        vv: Arc::new(covers),
                        counters: a.counters.clone(),
                        answered: Instant::now(),
                    }));
                }
            }
            Pending::Define(reply) => {
                let _ = reply.send(Ok(DefineDone::Written(vv.clone())));
            }
            Pending::Receive(r, reply) => {
                let _ = reply.send(Ok((r, vv.clone())));
            }
            Pending::Install(reply) => {
                let _ = reply.send(Ok(vv.clone()));
            }
            Pending::Collect(n, reply) => {
                let _ = reply.send(Ok(n));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use meridian_crdt::{Dot, RegionId, ReplicaId, Seq, VersionVector};

    fn replica(name: &str) -> ReplicaId {
        ReplicaId::new(RegionId::new(name).unwrap(), uuid::Uuid::nil())
    }

    #[test]
    fn a_write_token_covers_this_regions_ops_only_up_to_the_write() {
        let (me, peer) = (replica("us-east"), replica("eu-west"));
        let mut group = VersionVector::new();
        group.raise(&me, Seq(12));
        group.raise(&peer, Seq(40));
        let t = super::token_vv(&group, &Dot::new(me.clone(), Seq(10)));
        assert_eq!(t.get(&me), Seq(10));
        assert_eq!(t.get(&peer), Seq(40));
    }
}
