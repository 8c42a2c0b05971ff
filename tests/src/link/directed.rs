//! One directed link: its live spec, counters, and the accept loop of its port.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::cancel::CancelToken;
use super::conn;
use super::pacer::Pacer;
use super::rng;
use super::stats::Counters;
use super::{LinkSpec, LinkStats};

/// The shared state of a directed link `from -> to`, read by its accept loop
/// and connection tasks, written by the emulator's control methods.
#[derive(Debug)]
pub(crate) struct DirectedLink {
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) listen: SocketAddr,
    upstream: Mutex<SocketAddr>,
    /// Read by every delivery, so changes reach live connections at once.
    spec: watch::Sender<LinkSpec>,
    /// Bumped by every change that leaves the link partitioned. Connections
    /// wait on this count, not on `spec.partitioned`: a `watch` coalesces
    /// changes, so a partition healed before a connection task looked would
    /// otherwise never cut it.
    partitions: watch::Sender<u64>,
    pub(crate) counters: Counters,
    /// Bandwidth pacers, forward (`from -> to`) then reverse.
    pub(crate) pacers: [Pacer; 2],
    seed: u64,
}

impl DirectedLink {
    pub(crate) fn new(
        from: String,
        to: String,
        listen: SocketAddr,
        upstream: SocketAddr,
        spec: LinkSpec,
        emulator_seed: u64,
    ) -> Self {
        // Seeded by names, not by creation order, so adding a link never
        // changes the draws of another.
        let seed = rng::derive(
            rng::derive(emulator_seed, rng::name_hash(&from)),
            rng::name_hash(&to),
        );
        DirectedLink {
            from,
            to,
            listen,
            upstream: Mutex::new(upstream),
            spec: watch::Sender::new(spec),
            partitions: watch::Sender::new(0),
            counters: Counters::default(),
            pacers: [Pacer::new(), Pacer::new()],
            seed,
        }
    }

    pub(crate) fn spec(&self) -> LinkSpec {
        *self.spec.borrow()
    }

    pub(crate) fn set_spec(&self, spec: LinkSpec) {
        self.spec.send_replace(spec);
        self.count_partition(&spec);
    }

    fn count_partition(&self, spec: &LinkSpec) {
        if spec.partitioned {
            self.partitions.send_modify(|count| *count += 1);
        }
    }

    /// Applies `change` to the current spec atomically (concurrent updates
    /// of different fields cannot undo each other) and keeps the result only
    /// if it validates.
    pub(crate) fn update_spec(
        &self,
        change: impl FnOnce(&LinkSpec) -> LinkSpec,
    ) -> Result<LinkSpec, super::LinkError> {
        let mut outcome = Ok(LinkSpec::default());
        self.spec.send_if_modified(|spec| {
            let next = change(spec);
            match next.validate() {
                Ok(()) => {
                    outcome = Ok(next);
                    let changed = *spec != next;
                    *spec = next;
                    changed
                }
                Err(err) => {
                    outcome = Err(err);
                    false
                }
            }
        });
        if let Ok(spec) = &outcome {
            self.count_partition(spec);
        }
        outcome
    }

    /// A receiver that fires on the next partition of this link, whenever
    /// it is polled. Take it before checking `spec().partitioned`, so no
    /// partition can fall between the check and the subscription.
    pub(crate) fn watch_partitions(&self) -> watch::Receiver<u64> {
        self.partitions.subscribe()
    }

    pub(crate) fn upstream(&self) -> SocketAddr {
        *self.upstream.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set_upstream(&self, addr: SocketAddr) {
        *self.upstream.lock().unwrap_or_else(PoisonError::into_inner) = addr;
    }

    pub(crate) fn stats(&self) -> LinkStats {
        self.counters.snapshot()
    }

    /// The seed of connection number `index`, direction `direction`.
    pub(crate) fn connection_seed(&self, index: u64, direction: u64) -> u64 {
        rng::derive(rng::derive(self.seed, index), direction)
    }
}

/// Accepts connections on the link's port until `cancel` fires, then waits
/// for every connection task to finish, so a finished accept loop means no
/// socket of this link is left open.
pub(crate) async fn accept_loop(
    link: Arc<DirectedLink>,
    listener: TcpListener,
    cancel: CancelToken,
) {
    let mut connections = JoinSet::new();
    let mut index = 0u64;
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            // Reap finished connections so the set does not grow forever.
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                if let Err(err) = joined {
                    warn!(from = %link.from, to = %link.to, cause = %err, "link connection task failed");
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    Counters::add(&link.counters.connections_accepted, 1);
                    let partitions = link.watch_partitions();
                    if link.spec().partitioned {
                        // Accept then reset, rather than not accepting: the
                        // client fails in one round trip instead of waiting
                        // out a connect timeout.
                        Counters::add(&link.counters.connections_refused, 1);
                        debug!(from = %link.from, to = %link.to, %peer, "refused: partitioned");
                        reset(&stream);
                        continue;
                    }
                    connections.spawn(conn::relay(link.clone(), stream, index, partitions, cancel.clone()));
                    index += 1;
                }
                Err(err) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    warn!(from = %link.from, to = %link.to, cause = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
        }
    }
    drop(listener);
    while let Some(joined) = connections.join_next().await {
        if let Err(err) = joined {
            warn!(from = %link.from, to = %link.to, cause = %err, "link connection task failed");
        }
    }
}

/// Makes the coming close send a RST rather than a FIN, so the peer sees an
/// error instead of a clean end of stream that could pass for a complete
/// message. Zero linger never blocks the thread on close.
pub(crate) fn reset(stream: &TcpStream) {
    if let Err(err) = stream.set_zero_linger() {
        debug!(cause = %err, "cannot set zero linger; closing with FIN");
    }
}
