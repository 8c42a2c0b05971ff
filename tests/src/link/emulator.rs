//! The public face of the emulator: adding links, changing them, stopping.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::{error, info};

use super::cancel::CancelToken;
use super::control;
use super::directed::{self, DirectedLink};
use super::table::{LinkTable, check_region};
use super::{LinkError, LinkInfo, LinkSpec, LinkSpecPatch, LinkStats};

/// A set of emulated WAN links between regions.
///
/// Each directed link `from -> to` owns a loopback port; every connection
/// accepted there is forwarded to `to`'s upstream address, with the link's
/// [`LinkSpec`] applied to the bytes of both directions.
///
/// # Correctness
/// - Byte order and content within a connection are always preserved; only
///   timing changes, plus resets when a partition or a `close` draw says so.
/// - Spec changes apply to live connections from their next chunk on; a
///   partition resets every open connection of the affected links at once.
/// - Every task the emulator starts is owned by it: after
///   [`LinkEmulator::shutdown`] returns, no listener or connection is left.
///   Dropping the emulator without calling it cancels and aborts the tasks.
#[derive(Debug)]
pub struct LinkEmulator {
    seed: u64,
    table: Arc<LinkTable>,
    cancel: CancelToken,
    tasks: Mutex<JoinSet<()>>,
}

impl LinkEmulator {
    /// An emulator with no links. `seed` drives every jitter, loss and reset
    /// draw (see [`seed_from_time`](super::seed_from_time) for an unseeded
    /// run); each link and connection gets its own stream derived from it.
    pub fn new(seed: u64) -> Self {
        LinkEmulator {
            seed,
            table: Arc::new(LinkTable::default()),
            cancel: CancelToken::new(),
            tasks: Mutex::new(JoinSet::new()),
        }
    }

    /// The seed this emulator was created with: log it to replay a run.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Adds the directed link `from -> to` on a fresh port of 127.0.0.1 and
    /// returns that port's address. Region `from` must be configured to
    /// reach `to` there.
    pub async fn add_link(
        &self,
        from: &str,
        to: &str,
        upstream: SocketAddr,
        spec: LinkSpec,
    ) -> Result<SocketAddr, LinkError> {
        let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        self.add_link_on(from, to, listen, upstream, spec).await
    }

    /// Like [`LinkEmulator::add_link`], listening on `listen` (port 0 picks
    /// a free port). Fails on a bad region name or spec, a link that already
    /// exists, a port that cannot be bound, or a shut-down emulator.
    pub async fn add_link_on(
        &self,
        from: &str,
        to: &str,
        listen: SocketAddr,
        upstream: SocketAddr,
        spec: LinkSpec,
    ) -> Result<SocketAddr, LinkError> {
        check_region(from)?;
        check_region(to)?;
        if from == to {
            return Err(LinkError::BadRegion {
                name: to.to_owned(),
                reason: "a link needs two different regions".to_owned(),
            });
        }
        spec.validate()?;
        // Checked before binding too, so a duplicate does not take a port.
        if self.table.contains(from, to) {
            return Err(LinkError::DuplicateLink {
                from: from.to_owned(),
                to: to.to_owned(),
            });
        }
        if self.cancel.is_cancelled() {
            return Err(LinkError::ShutDown);
        }
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| LinkError::Bind {
                addr: listen,
                source,
            })?;
        let bound = listener.local_addr().map_err(|source| LinkError::Bind {
            addr: listen,
            source,
        })?;
        let link = Arc::new(DirectedLink::new(
            from.to_owned(),
            to.to_owned(),
            bound,
            upstream,
            spec,
            self.seed,
        ));
        self.table.insert(link.clone())?;
        self.spawn(directed::accept_loop(link, listener, self.cancel.clone()))?;
        info!(%from, %to, listen = %bound, %upstream, "link up");
        Ok(bound)
    }

    /// Starts the HTTP control API (see the [module docs](super)) on `addr`
    /// and returns the bound address. It stops with [`LinkEmulator::shutdown`].
    pub async fn serve_control(&self, addr: SocketAddr) -> Result<SocketAddr, LinkError> {
        if self.cancel.is_cancelled() {
            return Err(LinkError::ShutDown);
        }
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| LinkError::Bind { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| LinkError::Bind { addr, source })?;
        let router = control::router(self.table.clone());
        let cancel = self.cancel.clone();
        self.spawn(async move {
            let stopped = async move { cancel.cancelled().await };
            if let Err(err) = axum::serve(listener, router)
                .with_graceful_shutdown(stopped)
                .await
            {
                error!(addr = %bound, cause = %err, "link control API stopped");
            }
        })?;
        info!(addr = %bound, "link control API up");
        Ok(bound)
    }

    /// Registers a task under the emulator's ownership, unless it is already
    /// shutting down (then the task is dropped unstarted).
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) -> Result<(), LinkError> {
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        // Checked under the lock that `shutdown` takes the set under, so no
        // task can slip in after the set was drained.
        if self.cancel.is_cancelled() {
            return Err(LinkError::ShutDown);
        }
        tasks.spawn(task);
        Ok(())
    }

    /// Replaces the whole spec of `from -> to`; live connections follow it
    /// from their next chunk (a `partitioned: true` spec cuts them at once).
    pub fn set_spec(&self, from: &str, to: &str, spec: LinkSpec) -> Result<(), LinkError> {
        self.table.set_spec(from, to, spec)
    }

    /// Changes only the fields the patch sets, atomically, and returns the
    /// resulting spec. Nothing changes if the result does not validate.
    pub fn update_spec(
        &self,
        from: &str,
        to: &str,
        patch: &LinkSpecPatch,
    ) -> Result<LinkSpec, LinkError> {
        self.table.patch(from, to, patch)
    }

    /// Sets the one-way latency of both `a -> b` and `b -> a` (whichever
    /// exist); returns how many links changed. Errors if neither exists.
    pub fn set_latency_pair(&self, a: &str, b: &str, ms: u64) -> Result<usize, LinkError> {
        self.table.set_latency_pair(a, b, ms)
    }

    /// Points `from -> to` at a new upstream (a region restarted on another
    /// port). New connections use it; open ones keep their upstream.
    pub fn set_upstream(
        &self,
        from: &str,
        to: &str,
        upstream: SocketAddr,
    ) -> Result<(), LinkError> {
        self.table.set_upstream(from, to, upstream)
    }

    /// Partitions `a` from `b`: both directed links between them (whichever
    /// exist) reset their open connections and refuse new ones until healed.
    /// Returns how many links it applied to; errors if neither exists.
    pub fn partition(&self, a: &str, b: &str) -> Result<usize, LinkError> {
        self.table.partition(a, b)
    }

    /// Partitions every link from or to `region`. Returns how many links it
    /// applied to; errors if the region has none.
    pub fn isolate(&self, region: &str) -> Result<usize, LinkError> {
        self.table.isolate(region)
    }

    /// Heals both directed links between `a` and `b`: new connections go
    /// through again. Returns how many links it applied to.
    pub fn heal(&self, a: &str, b: &str) -> Result<usize, LinkError> {
        self.table.heal(a, b)
    }

    /// Heals every link; returns how many links there are.
    pub fn heal_all(&self) -> usize {
        self.table.heal_all()
    }

    /// The current spec of `from -> to`, if the link exists.
    pub fn spec(&self, from: &str, to: &str) -> Option<LinkSpec> {
        self.table.get(from, to).ok().map(|link| link.spec())
    }

    /// The counters of `from -> to`, if the link exists.
    pub fn stats(&self, from: &str, to: &str) -> Option<LinkStats> {
        self.table.get(from, to).ok().map(|link| link.stats())
    }

    /// Addresses, spec and counters of `from -> to`, if the link exists.
    pub fn link(&self, from: &str, to: &str) -> Option<LinkInfo> {
        self.table.info(from, to).ok()
    }

    /// Every link, ordered by `(from, to)`.
    pub fn links(&self) -> Vec<LinkInfo> {
        self.table.all()
    }

    /// Stops every listener (links and control API) and resets every open
    /// connection, and returns once all of them are closed. Idempotent;
    /// afterwards the emulator refuses new links.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let mut tasks = {
            let mut guard = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
            std::mem::take(&mut *guard)
        };
        while let Some(joined) = tasks.join_next().await {
            if let Err(err) = joined {
                error!(cause = %err, "link emulator task failed");
            }
        }
    }
}

impl Drop for LinkEmulator {
    fn drop(&mut self) {
        // The JoinSet aborts what is left when it drops; cancelling first
        // lets tasks that are mid-poll on another thread wind down too.
        self.cancel.cancel();
    }
}
