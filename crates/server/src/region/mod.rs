//! One region's runtime: the claimed data directory, recovery at startup,
//! the writer thread, and the handles the API uses.
//!
//! Why past ~400 lines: `Region::open` is recovery step by step, and
//! `WriterHandle` is every call into the writer.

pub mod clock;
pub mod command;
pub mod feed;
pub mod identity;
pub mod incarnation;
pub mod metrics;
pub mod status;
pub mod writer;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use meridian_core::{
    Engine, EngineConfig, FjallBackend, KeyspaceDef, Log, Lsn, Op, Reader, WriteError, WriteRequest,
};
use meridian_crdt::{RegionId, ReplicaId, VersionVector};
use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics::Metrics;
use clock::WallClock;
use feed::Feed;
use identity::DataDir;
use incarnation::Incarnation;
use status::LogInfo;
use writer::{Command, DefineDone, WriteDone, Writer};

/// Why a region could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory.
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    /// The state store.
    #[error(transparent)]
    Store(#[from] meridian_core::StoreError),
    /// The op log (corruption is reported here, naming segment and offset).
    #[error(transparent)]
    Log(#[from] meridian_core::LogError),
    /// Replaying the log or creating configured keyspaces.
    #[error("startup: {0}")]
    Write(#[from] WriteError),
    /// The writer thread could not be started.
    #[error("starting the writer thread: {0}")]
    Thread(#[source] std::io::Error),
    /// The writer stopped while the region was still starting.
    #[error("the writer stopped during startup")]
    WriterStopped,
}

/// Why the writer could not take a command.
#[derive(Debug, thiserror::Error)]
#[error("the region is shutting down")]
pub struct Stopped;

/// Sends commands to the writer thread.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Command>,
    /// Where the answer's wake-up time is recorded.
    wake: prometheus_client::metrics::histogram::Histogram,
}

impl WriterHandle {
    /// Writes, answering once the write is durable.
    pub async fn write(&self, req: WriteRequest) -> Result<Result<WriteDone, WriteError>, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Write {
                req,
                reply,
                sent: Instant::now(),
            })
            .await
            .map_err(|_| Stopped)?;
        let done = rx.await.map_err(|_| Stopped)?;
        if let Ok(d) = &done {
            self.wake.observe(d.answered.elapsed().as_secs_f64());
        }
        Ok(done)
    }

    /// Creates or updates a keyspace.
    pub async fn define(
        &self,
        def: KeyspaceDef,
    ) -> Result<Result<DefineDone, WriteError>, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Define { def, reply })
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// Changes a keyspace's ownership map (this region must be its
    /// steward).
    pub async fn own(
        &self,
        keyspace: String,
        change: writer::OwnershipChange,
    ) -> Result<Result<DefineDone, WriteError>, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Own {
                keyspace,
                change,
                reply,
            })
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// Registers or replaces a merge script (checked already).
    pub async fn define_merge(
        &self,
        def: meridian_core::merge::MergeDef,
    ) -> Result<Result<DefineDone, WriteError>, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::DefineMerge { def, reply })
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// Creates or replaces an access token (checked by the engine).
    pub async fn define_token(
        &self,
        def: meridian_core::access::TokenDef,
    ) -> Result<Result<DefineDone, WriteError>, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::DefineToken { def, reply })
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// Revokes an access token.
    pub async fn revoke_token(
        &self,
        id: String,
    ) -> Result<Result<DefineDone, WriteError>, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::RevokeToken { id, reply })
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// Starts merge write-backs; `regions` is every region of the cluster;
    /// they wait until `hold` is applied.
    pub async fn enable_merges(
        &self,
        regions: Vec<meridian_crdt::RegionId>,
        hold: VersionVector,
    ) -> Result<(), Stopped> {
        self.tx
            .send(Command::EnableMerges { regions, hold })
            .await
            .map_err(|_| Stopped)
    }

    /// Hands over ops from a peer, answering once the applied ones are durable.
    pub async fn receive(
        &self,
        ops: Vec<Op>,
    ) -> Result<Result<(meridian_core::Received, VersionVector), WriteError>, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Receive { ops, reply })
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// Merges a page of a state transfer (and, on the last page, adopts the
    /// snapshot's version vector); answers once it is durable.
    pub async fn install(
        &self,
        entries: Vec<(
            meridian_core::KeyspaceName,
            meridian_core::Key,
            meridian_crdt::Object,
        )>,
        covers: VersionVector,
        adopt: Option<(VersionVector, meridian_crdt::Hlc)>,
    ) -> Result<Result<VersionVector, WriteError>, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Install {
                entries,
                covers,
                adopt,
                reply,
            })
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// Collects stable tombstones; answers how many went.
    pub async fn collect(
        &self,
        cut: meridian_core::engine::StableCut,
        budget: usize,
    ) -> Result<Result<usize, WriteError>, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Collect { cut, budget, reply })
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// Continues as `replica` (a new incarnation).
    async fn reincarnate(&self, replica: ReplicaId) -> Result<(), Stopped> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Reincarnate { replica, reply })
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// Seals the op log's segment being written; one past the last record.
    pub async fn seal(&self) -> Result<Result<Lsn, WriteError>, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Seal { reply })
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// Asks for a checkpoint (state fsync, log retention).
    pub async fn checkpoint(&self) -> Result<(), Stopped> {
        self.tx.send(Command::Checkpoint).await.map_err(|_| Stopped)
    }
}

/// A running region.
pub struct Region {
    /// This region's replica id.
    pub replica: ReplicaId,
    /// Reads.
    pub reader: Reader<FjallBackend>,
    /// Writes.
    pub writer: WriterHandle,
    /// The published version vector, for waiting on causal tokens.
    pub vv: watch::Receiver<VersionVector>,
    /// The wall clock.
    pub clock: WallClock,
    /// Op log figures.
    pub log_info: Arc<LogInfo>,
    /// Committed ops and the log index, for replication (when asked for).
    pub feed: Option<Arc<Feed>>,
    /// The writer's fatal error, once it has had one.
    pub fatal: watch::Receiver<Option<Arc<str>>>,
    /// Retires this incarnation if a peer proves its log was rolled back.
    pub incarnation: Arc<Incarnation>,
    /// The op log's retention pin, when archiving to a backup target.
    pub archive_pin: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// Started an existing incarnation with peers: ask them, before taking
    /// writes, whether they hold own ops this region lacks
    /// ([`Region::settle_incarnation`]).
    pub check_with_peers: bool,
    thread: Option<JoinHandle<Result<(), writer::WriterError>>>,
    _dir: DataDir,
}

/// What opening a region needs from the configuration (`Valid::region_settings`
/// makes it).
#[derive(Clone, Debug)]
pub struct Settings {
    /// The data directory.
    pub data_dir: std::path::PathBuf,
    /// This region's name.
    pub region: RegionId,
    /// Wall-clock shift, ms (tests).
    pub clock_skew_ms: i64,
    /// The engine's clock-offset bound and registry limits.
    pub engine: EngineConfig,
    /// Op log options.
    pub log: meridian_core::LogOptions,
    /// A backup archiver runs: no segment leaves the disk before it has
    /// stored it.
    pub archive: bool,
    /// Peers and the cluster secret are configured: a restarted
    /// incarnation can ask peers what they hold of it.
    pub peers: bool,
}

impl Region {
    /// Claims the data directory, recovers state and log, creates the
    /// configured keyspaces and starts the writer thread.
    /// `ship` asks for the committed-ops feed ([`Region::feed`]) that
    /// replication reads; leave it off when nothing will.
    pub fn open(
        cfg: &Settings,
        repair_log: bool,
        ship: bool,
        metrics: Arc<Metrics>,
    ) -> Result<Region, StartError> {
        let started = Instant::now();
        let mut dir = DataDir::claim(&cfg.data_dir, &cfg.region)?;
        let clock = WallClock::new(cfg.clock_skew_ms);
        let backend = Arc::new(FjallBackend::open(&cfg.data_dir.join("state"))?);
        let state_opened = Instant::now();
        let mut engine = Engine::open(dir.replica.clone(), cfg.engine.clone(), backend)?;
        let engine_opened = Instant::now();
        // With a backup target, no segment leaves the disk before the
        // archiver has stored it (it raises the pin).
        let archive_pin = cfg
            .archive
            .then(|| Arc::new(std::sync::atomic::AtomicU64::new(0)));
        if repair_log {
            // Positions after the damage will be issued again: archive them
            // under a new log id, apart from what was archived before
            // (forgotten first, so a crash during the repair keeps nothing
            // stale).
            meridian_core::log::forget_log_id(&cfg.data_dir.join("log")).map_err(|source| {
                StartError::Log(meridian_core::LogError::Io {
                    path: cfg.data_dir.join("log"),
                    source,
                })
            })?;
        }
        let mut log_opts = cfg.log.clone();
        log_opts.pin = archive_pin.clone();
        let mut replay_err = None;
        let mut replayed = 0u64;
        let (log, recovery) = Log::open(
            &cfg.data_dir.join("log"),
            log_opts,
            repair_log,
            |lsn, op| {
                if replay_err.is_some() {
                    return;
                }
                let before = engine.staged_len();
                if let Err(e) = engine.replay(op) {
                    replay_err = Some(e);
                    return;
                }
                replayed += (engine.staged_len() - before) as u64;
                if engine.staged_len() >= 10_000
                    && let Err(e) = engine.commit(Some(lsn))
                {
                    replay_err = Some(e);
                }
            },
        )?;
        if let Some(e) = replay_err {
            return Err(e.into());
        }
        let end = Lsn(log.end_lsn().0.saturating_sub(1));
        engine.commit(Some(end))?;
        engine.checkpoint()?;
        let log_scanned = Instant::now();
        // Own ops may be gone (the log was cut by --repair-log, or an old
        // identity came back with none of its ops): the next seqs could be
        // ones peers already hold. Continue as a new incarnation.
        let own = engine.vv().get(&dir.replica);
        let mut new_incarnation = dir.fresh;
        // Own ops logged but not applied (their causal past came by a state
        // transfer the crash took back) may have been shipped: their seqs
        // must never be issued again.
        let logged_ahead = log.last_seq(&dir.replica).is_some_and(|s| s > own);
        if recovery.repaired.is_some()
            || logged_ahead
            || (!dir.fresh && own == meridian_crdt::Seq::ZERO)
        {
            new_incarnation = true;
            let old = dir.replica.clone();
            dir.reincarnate()?;
            engine.reincarnate(dir.replica.clone());
            tracing::warn!(old = %old, new = %dir.replica, own_ops = own.0, repaired = recovery.repaired.is_some(), logged_ahead, "own ops may have been lost: continuing as a new incarnation");
        }
        tracing::info!(
            region = %cfg.region,
            replica = %dir.replica,
            fresh = dir.fresh,
            log_records = recovery.records,
            replayed,
            torn_tail = recovery.torn.is_some(),
            state_ms = (state_opened - started).as_millis() as u64,
            engine_ms = (engine_opened - state_opened).as_millis() as u64,
            log_ms = (log_scanned - engine_opened).as_millis() as u64,
            ms = started.elapsed().as_millis() as u64,
            "recovered"
        );
        // Configured keyspaces are created by `serve`, once the incarnation
        // is settled (their definitions are local ops).

        let log_info = Arc::new(LogInfo::default());
        log_info.update(&log);
        let (tx, rx) = mpsc::channel(16_384);
        let (vv_tx, vv_rx) = watch::channel(engine.vv().clone());
        let feed = ship.then(|| {
            Arc::new(Feed::new(
                200_000,
                meridian_core::budget::FEED_BYTES,
                cfg.data_dir.join("log"),
                log.index(),
            ))
        });
        let reader = engine.reader();
        let replica = dir.replica.clone();
        let (fatal_tx, fatal_rx) = watch::channel(None);
        let incarnation = Arc::new(Incarnation::new(
            cfg.data_dir.clone(),
            dir.replica.clone(),
            fatal_tx.clone(),
        ));
        // A new incarnation has issued no seq yet: nothing to check.
        let check_with_peers = !new_incarnation && cfg.peers;
        metrics.attach(Box::new(self::metrics::EngineCollector {
            log: log_info.clone(),
            reader: reader.clone(),
        }));
        let w = Writer {
            engine,
            log,
            rx,
            vv_tx,
            clock,
            metrics,
            log_info: log_info.clone(),
            feed: feed.clone(),
            fatal: fatal_tx,
        };
        let wake = w.metrics.stages.wake.clone();
        let thread = std::thread::Builder::new()
            .name("meridian-writer".into())
            .spawn(move || w.run())
            .map_err(StartError::Thread)?;
        Ok(Region {
            replica,
            reader,
            writer: WriterHandle { tx, wake },
            vv: vv_rx,
            clock,
            log_info,
            feed,
            fatal: fatal_rx,
            incarnation,
            archive_pin,
            check_with_peers,
            thread: Some(thread),
            _dir: dir,
        })
    }

    /// Decides, before any local write, whether this incarnation's next
    /// seqs are safe: `views` are the peers' version vectors (`None` for a
    /// peer that did not answer in time). Only when every peer answered and
    /// none holds an own op this region lacks does it go on as it is;
    /// otherwise it continues as a new incarnation, so no seq a peer may hold
    /// is ever issued again. Returns whether it re-incarnated.
    pub async fn settle_incarnation(
        &mut self,
        views: &[(RegionId, Option<VersionVector>)],
    ) -> Result<bool, StartError> {
        let ours = self.reader.published().vv.get(&self.replica);
        let ahead = views.iter().find_map(|(peer, v)| {
            v.as_ref()
                .map(|v| v.get(&self.replica))
                .filter(|s| *s > ours)
                .map(|s| (peer.clone(), s))
        });
        let silent: Vec<&RegionId> = views
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(p, _)| p)
            .collect();
        if ahead.is_none() && silent.is_empty() {
            return Ok(false);
        }
        let old = self.replica.clone();
        self._dir.reincarnate()?;
        let new = self._dir.replica.clone();
        self.writer
            .reincarnate(new.clone())
            .await
            .map_err(|_| StartError::WriterStopped)?;
        self.incarnation.set_replica(new.clone());
        self.replica = new.clone();
        match ahead {
            Some((peer, seq)) => {
                tracing::warn!(old = %old, new = %new, %peer, peer_seq = seq.0, own_seq = ours.0, "a peer holds own ops this region lacks (its disk was rolled back): continuing as a new incarnation")
            }
            None => {
                tracing::warn!(old = %old, new = %new, silent = ?silent, "not every peer answered at start, so a rollback cannot be ruled out: continuing as a new incarnation")
            }
        }
        Ok(true)
    }

    /// Starts a task that asks for a checkpoint every `every`, until the
    /// writer stops.
    pub fn spawn_checkpoints(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let w = self.writer.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                if w.checkpoint().await.is_err() {
                    break;
                }
            }
        })
    }

    /// Stops the writer (once every [`WriterHandle`] is dropped it drains,
    /// checkpoints and exits) and waits for it.
    pub fn join(mut self) -> Result<(), writer::WriterError> {
        drop(self.writer);
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or(Err(writer::WriterError::Panicked("writer"))),
            None => Ok(()),
        }
    }
}
