//! Running a region: the client API, the peer API and one sender per peer,
//! from configuration to a graceful stop. `meridian serve` runs one;
//! `meridian dev` runs three in one process.
//!
//! Why past ~400 lines: `start` is a region's startup order, step by step
//! (open, settle the incarnation, peer API, standby role, senders, client
//! API, background tasks), kept in one function so the order is visible.

use meridian_core::WriteError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::api::{self, AppInner};
use crate::config::Valid;
use crate::metrics::Metrics;
use crate::peer::receiver::{self, PeerApi};
use crate::peer::sender::{BatchFaults, Sender, SenderOptions};
use crate::peer::status::Peers;
use crate::region::{Region, StartError};
use crate::shutdown::{self, Shutdown, Trigger};
use crate::standby::state::Role;
use crate::standby::wire::Member;
use crate::standby::{Standby, members::SenderKit};

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The region could not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
    /// The writer failed while serving (a failed fsync, a full disk).
    #[error("fatal: {0}")]
    Fatal(String),
    /// The backup target could not be opened.
    #[error("backup: {0}")]
    Backup(String),
    /// A certificate, key or CA file could not be used.
    #[error("tls: {0}")]
    Tls(#[from] meridian_client::tls::TlsError),
    /// The writer stopped with a fatal error.
    #[error(transparent)]
    Writer(#[from] crate::region::writer::WriterError),
    /// `standby.json` could not be read or written.
    #[error("standby state: {0}")]
    Standby(#[from] crate::standby::state::StateError),
}

/// A region that is serving.
pub struct Running {
    /// Its name.
    pub region: String,
    /// The client API address.
    pub addr: SocketAddr,
    /// The peer API address, when it has one.
    pub peer_addr: Option<SocketAddr>,
    trigger: Trigger,
    tasks: Vec<JoinHandle<()>>,
    servers: Vec<JoinHandle<std::io::Result<()>>>,
    state: Arc<AppInner>,
    inner: Region,
    /// This member's role in its region.
    pub standby: Arc<Standby>,
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, ServeError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

fn serve_on(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    opts: crate::security::listener::Options,
    stop: Shutdown,
) -> JoinHandle<std::io::Result<()>> {
    tokio::spawn(crate::security::listener::serve(listener, app, opts, stop))
}

/// The listeners' TLS (client, peer) from `[tls]`, and what outbound peer
/// calls trust and present.
struct Tls {
    client: Option<Arc<crate::security::tls::ServerTls>>,
    peer: Option<Arc<crate::security::tls::ServerTls>>,
}

fn load_tls(cfg: &Valid) -> Result<Tls, ServeError> {
    use crate::security::tls::{ServerTls, TlsFiles, set_outbound};
    let t = &cfg.tls;
    let listeners = match (&t.cert_file, &t.key_file) {
        (Some(cert), Some(key)) => {
            let client = ServerTls::new(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: t.client_ca_file.clone(),
            })?;
            let peer = ServerTls::new(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: if t.peer_mtls {
                    t.peer_ca_file.clone()
                } else {
                    None
                },
            })?;
            Some((Arc::new(client), Arc::new(peer)))
        }
        _ => None,
    };
    // Outbound calls (to peers; from a standby to its leader's client API)
    // trust the peer CA only and, where the other side asks for a client
    // certificate (peer mTLS, a client CA), present this region's pair,
    // following its reloads.
    let outbound = match &t.peer_ca_file {
        Some(ca) => {
            let roots = meridian_client::tls::load_roots(ca)?;
            let builder =
                rustls::ClientConfig::builder_with_provider(meridian_client::tls::provider())
                    .with_protocol_versions(meridian_client::tls::VERSIONS)
                    .map_err(meridian_client::tls::TlsError::Config)?
                    .with_root_certificates(roots);
            let present = t.peer_mtls || t.client_ca_file.is_some();
            Some(match &listeners {
                Some((_, peer)) if present => {
                    crate::security::tls::set_identity(Some(peer.client_identity()));
                    builder
                        .with_client_cert_resolver(Arc::new(crate::security::tls::CurrentIdentity))
                }
                _ => {
                    crate::security::tls::set_identity(None);
                    builder.with_no_client_auth()
                }
            })
        }
        None => None,
    };
    set_outbound(outbound);
    Ok(match listeners {
        Some((client, peer)) => Tls {
            client: Some(client),
            peer: Some(peer),
        },
        None => Tls {
            client: None,
            peer: None,
        },
    })
}

/// Starts a region: recovery, listeners, senders. Returns once it serves.
pub async fn start(cfg: Valid, repair_log: bool) -> Result<Running, ServeError> {
    let metrics = Metrics::new(&cfg.region);
    let replicating = cfg.secret.is_some();
    let role = crate::standby::state::load(&cfg.data_dir)?.map_or(
        if cfg.standby.starts_as_follower() {
            Role::Follower
        } else {
            Role::Leader
        },
        |p| p.role,
    );
    let mut open_cfg = cfg.region_settings();
    if role == Role::Follower {
        // The leader backs up; a follower's log must not wait for an
        // archiver that does not run here.
        open_cfg.archive = false;
    }
    let m = metrics.clone();
    let mut region =
        tokio::task::spawn_blocking(move || Region::open(&open_cfg, repair_log, replicating, m))
            .await
            .map_err(|e| ServeError::Io(std::io::Error::other(e)))??;
    // Written once the directory is claimed (the first start of a
    // directory records the role it starts in).
    let persisted = crate::standby::starting_role(&cfg.data_dir, &cfg.standby)?;
    let (trigger, stop) = shutdown::channel();
    // A follower ships to nobody but its leader.
    let peers = Arc::new(if persisted.role == Role::Follower {
        Peers::new(&[], &cfg.standby_urls)
    } else {
        Peers::new(&cfg.peers, &cfg.standby_urls)
    });
    metrics.attach(Box::new(crate::peer::metrics::PeerCollector {
        peers: peers.clone(),
        feed: region.feed.clone(),
        reader: region.reader.clone(),
    }));
    let mut servers = Vec::new();
    let mut tasks = Vec::new();
    let tls = load_tls(&cfg)?;
    for t in tls.client.iter().chain(tls.peer.iter()) {
        let stop = stop.clone();
        tasks.push(
            t.spawn_reloader(crate::security::tls::RELOAD_EVERY, async move {
                stop.cancelled().await
            }),
        );
    }
    let listener_metrics = metrics.clone();
    let limits = cfg.limits;
    let listener_opts =
        move |what: &'static str, tls: &Option<Arc<crate::security::tls::ServerTls>>| {
            crate::security::listener::Options {
                what,
                limits,
                tls: tls.clone(),
                metrics: listener_metrics.clone(),
            }
        };
    let mut peer_addr = None;
    // Requests peers forward run through the client API, once built.
    let client_api = Arc::new(std::sync::OnceLock::new());
    // This member's role for the peer API: the standby state, once this
    // member's replica id is settled.
    let roles = Arc::new(crate::standby::peer::Roles::new(
        cfg.region.clone(),
        persisted.role,
    ));
    // The peer API answers first, while this region asks its peers about
    // its incarnation: regions restarted together must hear each other.
    if let (Some(secret), Some(pl)) = (cfg.secret.clone(), cfg.peer_listen)
        && region.feed.is_some()
    {
        let l = bind(pl).await?;
        peer_addr = Some(l.local_addr()?);
        let api = Arc::new(PeerApi {
            region: cfg.region.clone(),
            nonces: std::sync::Mutex::new(crate::peer::auth::Nonces::since(
                crate::peer::auth::now_ms(),
            )),
            metrics: metrics.clone(),
            incarnation: region.incarnation.clone(),
            secret,
            writer: region.writer.clone(),
            reader: region.reader.clone(),
            peers: peers.clone(),
            clock: region.clock,
            client_api: client_api.clone(),
            admission: roles.clone(),
            wire: cfg.replication.wire_version,
        });
        servers.push(serve_on(
            l,
            receiver::router(
                api.clone(),
                crate::standby::peer::routes(api, roles.clone()),
            ),
            listener_opts(crate::security::listener::PEER_LISTENER, &tls.peer),
            stop.clone(),
        ));
    }
    // What peers hold of this region's own replicas (old incarnations
    // too): write-backs wait for it (a rolled-back disk may have shipped
    // some it no longer has).
    let mut hold = meridian_crdt::VersionVector::new();
    let leading = persisted.role == Role::Leader;
    if leading
        && region.check_with_peers
        && let Some(secret) = cfg.secret.clone()
    {
        let views = peer_views(&cfg, &region, secret).await;
        region.settle_incarnation(&views).await?;
        for view in views.iter().filter_map(|(_, v)| v.as_ref()) {
            let own: meridian_crdt::VersionVector = view
                .iter()
                .filter(|(r, _)| r.region == cfg.region)
                .map(|(r, s)| (r.clone(), s))
                .collect();
            hold.merge(&own);
        }
    }
    // Merge write-backs are local ops too: only once the incarnation is
    // settled. Every region's list must be the cluster's (it picks each
    // key's merger).
    let mut regions: Vec<meridian_crdt::RegionId> =
        cfg.peers.iter().map(|(r, _)| r.clone()).collect();
    regions.push(cfg.region.clone());
    // A follower issues no op of its own: no write-backs, no definitions.
    if leading {
        region
            .writer
            .enable_merges(regions, hold)
            .await
            .map_err(|stopped| ServeError::Fatal(stopped.to_string()))?;
    }
    // Configured keyspaces, once the incarnation is settled (a definition
    // is a local op: its seq must be safe to issue).
    for def in cfg.keyspaces.iter().filter(|_| leading) {
        match region.writer.define(def.clone()).await {
            Ok(Ok(_)) => {}
            // A script registered elsewhere that has not reached this
            // (new, or wiped) region yet: start anyway; the definition
            // arrives with the rest once the region has caught up, if it was
            // made elsewhere, and the operator is told.
            Ok(Err(WriteError::UnknownMerge(m))) => {
                tracing::warn!(keyspace = %def.name, merge = %m, "configured keyspace not defined: its merge script is not in this region (yet); define it once the script has replicated");
            }
            Ok(Err(e)) => return Err(StartError::Write(e).into()),
            Err(stopped) => return Err(ServeError::Fatal(stopped.to_string())),
        }
    }
    let listener = bind(cfg.listen).await?;
    let addr = listener.local_addr()?;
    let scheme = if cfg.tls.enabled() { "https" } else { "http" };
    let me = Member {
        replica: region.replica.clone(),
        peer_url: cfg
            .standby
            .peer_url
            .clone()
            .or_else(|| peer_addr.map(|a| format!("{scheme}://{a}")))
            .unwrap_or_default(),
        client_url: cfg
            .standby
            .client_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{addr}")),
    };
    if persisted.role == Role::Follower
        && me
            .peer_url
            .split_once("://")
            .and_then(|(_, a)| a.parse::<std::net::SocketAddr>().ok())
            .is_some_and(|a| a.ip().is_unspecified())
    {
        // Not refused: a demoted leader must still start (and ship its
        // writes to the new leader); it just cannot be shipped to.
        tracing::error!(peer_url = %me.peer_url, "this standby listens for peers on an address its leader cannot dial: set --advertise-peer-url (standby.advertise_peer_url); until then it ships its own writes to its leader but receives nothing");
    }
    let standby = Standby::new(
        cfg.standby.clone(),
        me,
        &persisted,
        cfg.data_dir.clone(),
        region.vv.clone(),
    );
    let _ = roles.standby.set(standby.clone());
    metrics.attach(Box::new(crate::standby::metrics::StandbyCollector {
        standby: standby.clone(),
        feed: region.feed.clone(),
    }));
    let opts = SenderOptions {
        limits: meridian_core::replication::BatchLimits {
            max_ops: cfg.replication.max_batch_ops,
            ..Default::default()
        },
        linger: Duration::from_millis(cfg.replication.linger_ms),
        wire: cfg.replication.wire_version,
        relay_hold: Duration::from_millis(cfg.replication.relay_hold_ms),
        faults: BatchFaults {
            duplicate: cfg.replication.fault_duplicate,
            delay: cfg.replication.fault_delay,
        },
    };
    if let (Some(secret), Some(feed)) = (cfg.secret.clone(), region.feed.clone()) {
        let client = crate::peer::client::PeerClient::new(&cfg.region, secret.clone(), Vec::new());
        if leading {
            standby.followers.arm(SenderKit {
                me: region.replica.clone(),
                secret: secret.clone(),
                feed: feed.clone(),
                reader: region.reader.clone(),
                clock: region.clock,
                // A standby is a LAN hop away and `standby` writes wait
                // for it: ship each commit at once (the standby's writer
                // groups what arrives together into one fsync).
                opts: SenderOptions {
                    linger: Duration::ZERO,
                    relay_hold: Duration::ZERO,
                    ..opts
                },
                incarnation: region.incarnation.clone(),
                acks: peers.acks_sender(),
                stop: stop.clone(),
            });
            tasks.push(tokio::spawn(crate::standby::follow::run_announcer(
                standby.clone(),
                client,
                stop.clone(),
            )));
        } else {
            // The follower's own sender to its leader, started while this
            // member holds ops the leader lacks (a demoted leader's writes).
            let upstream = crate::peer::status::PeerStatus::new(
                cfg.region.clone(),
                standby.leader().peer_url,
                peers.acks_sender(),
            );
            let spawn_upstream = {
                let (me, link, secret, feed) = (
                    region.replica.clone(),
                    upstream.clone(),
                    secret.clone(),
                    feed.clone(),
                );
                let (reader, clock, inc, stop) = (
                    region.reader.clone(),
                    region.clock,
                    region.incarnation.clone(),
                    stop.clone(),
                );
                move || {
                    let s = Sender::new(
                        me.clone(),
                        link.clone(),
                        secret.clone(),
                        feed.clone(),
                        reader.clone(),
                        clock,
                        // Its leader has the region's peers' ops already.
                        SenderOptions {
                            relay_hold: Duration::ZERO,
                            ..opts
                        },
                        inc.clone(),
                    );
                    tokio::spawn(s.run(stop.clone()))
                }
            };
            tasks.push(tokio::spawn(crate::standby::follow::run_follower(
                standby.clone(),
                client,
                region.reader.clone(),
                region.clock,
                upstream,
                spawn_upstream,
                region.vv.clone(),
                stop.clone(),
            )));
        }
    }

    if let (Some(secret), Some(feed)) = (cfg.secret.clone(), region.feed.clone())
        && leading
    {
        let m = crate::maintenance::Maintenance {
            replica: region.replica.clone(),
            reader: region.reader.clone(),
            writer: region.writer.clone(),
            peers: peers.clone(),
            client: crate::peer::client::PeerClient::new(
                &cfg.region,
                secret.clone(),
                cfg.peers.clone(),
            )
            .following(peers.clone()),
            standbys: Some(standby.clone()),
        };
        if cfg.anti_entropy_interval_ms > 0 && !peers.links.is_empty() {
            let every = Duration::from_millis(cfg.anti_entropy_interval_ms);
            tasks.push(tokio::spawn(m.clone().anti_entropy(every, stop.clone())));
        }
        if cfg.tombstone_gc_interval_ms > 0 {
            let every = Duration::from_millis(cfg.tombstone_gc_interval_ms);
            tasks.push(tokio::spawn(m.collect_tombstones(every, stop.clone())));
        }
        for link in &peers.links {
            let s = Sender::new(
                region.replica.clone(),
                link.clone(),
                secret.clone(),
                feed.clone(),
                region.reader.clone(),
                region.clock,
                opts,
                region.incarnation.clone(),
            );
            tasks.push(tokio::spawn(s.run(stop.clone())));
        }
    }

    let backups = match (&cfg.backup, &region.archive_pin) {
        _ if !leading => None,
        (Some(bs), Some(pin)) => {
            let target = bs
                .target
                .open()
                .map_err(|e| ServeError::Backup(e.to_string()))?;
            let archive = Arc::new(
                crate::backup::archive::Archive::new(
                    target,
                    cfg.region.to_string(),
                    cfg.data_dir.join("log"),
                    pin.clone(),
                    region.writer.clone(),
                    metrics.clone(),
                )
                .map_err(|e| ServeError::Backup(format!("op log id: {e}")))?,
            );
            let every = Duration::from_millis(bs.archive_interval_ms);
            tasks.push(tokio::spawn(archive.clone().run(every, stop.clone())));
            let b = Arc::new(crate::backup::Backups::new(
                archive,
                region.reader.clone(),
                bs.clone(),
                cfg.region.to_string(),
                region.incarnation.clone(),
                region.clock,
                bs.undo_ms,
            ));
            tasks.push(tokio::spawn(b.clone().schedule(stop.clone())));
            Some(b)
        }
        _ => None,
    };
    let state = Arc::new(AppInner {
        replica: region.replica.clone(),
        reader: region.reader.clone(),
        writer: region.writer.clone(),
        vv: region.vv.clone(),
        metrics,
        log_info: region.log_info.clone(),
        started: Instant::now(),
        peers: peers.clone(),
        feed: region.feed.clone(),
        clock: region.clock,
        peer_client: cfg.secret.clone().map(|s| {
            crate::peer::client::PeerClient::new(&cfg.region, s, cfg.peers.clone())
                .following(peers.clone())
        }),
        fatal: region.fatal.clone(),
        client_urls: cfg.client_urls.clone(),
        backups,
        standby: standby.clone(),
        auth: cfg.auth.clone(),
        repairs: Arc::new(tokio::sync::Semaphore::new(cfg.limits.max_read_repairs)),
    });
    tasks.push(region.spawn_checkpoints(Duration::from_millis(cfg.checkpoint_interval_ms)));
    let router = api::router(state.clone());
    let _ = client_api.set(router.clone());
    servers.push(serve_on(
        listener,
        router,
        listener_opts("client_listener", &tls.client),
        stop,
    ));
    tracing::info!(region = %cfg.region, replica = %region.replica, role = persisted.role.as_str(), epoch = persisted.epoch, %addr, peer_api = ?peer_addr, "serving");
    Ok(Running {
        region: cfg.region.to_string(),
        addr,
        peer_addr,
        trigger,
        tasks,
        servers,
        state,
        inner: region,
        standby,
    })
}

/// Every peer's version vector, asked for in parallel (a hello); `None`
/// for a peer that did not answer within [`PEER_CHECK_WAIT`].
///
/// [`PEER_CHECK_WAIT`]: crate::region::incarnation::PEER_CHECK_WAIT
async fn peer_views(
    cfg: &Valid,
    region: &Region,
    secret: crate::peer::auth::Secret,
) -> Vec<(
    meridian_crdt::RegionId,
    Option<meridian_crdt::VersionVector>,
)> {
    use meridian_core::replication::wire::{Ack, Hello};
    let client = crate::peer::client::PeerClient::new(&cfg.region, secret, cfg.peers.clone());
    let hello = Hello {
        from: region.replica.clone(),
        now_ms: region.clock.now_ms(),
    };
    let mut calls = tokio::task::JoinSet::new();
    for (peer, url) in cfg.peers.clone() {
        let (client, hello) = (client.clone(), hello.clone());
        calls.spawn(async move {
            let r: Result<Ack, _> = client.call(&url, "/peer/v1/hello", "hello", &hello).await;
            // Only the peer itself answering counts.
            // Buffered ops count: a peer may hold own ops it cannot apply yet.
            let vv = r
                .ok()
                .filter(|a| a.replica.as_ref().is_none_or(|r| r.region == peer))
                .map(|a| a.seen.unwrap_or(a.vv));
            (peer, vv)
        });
    }
    let mut views: Vec<_> = cfg.peers.iter().map(|(p, _)| (p.clone(), None)).collect();
    let deadline = tokio::time::Instant::now() + crate::region::incarnation::PEER_CHECK_WAIT;
    while let Ok(Some(Ok((peer, vv)))) = tokio::time::timeout_at(deadline, calls.join_next()).await
    {
        if let Some(slot) = views.iter_mut().find(|(p, _)| *p == peer) {
            slot.1 = vv;
        }
    }
    calls.abort_all();
    views
}

impl Running {
    /// Stops accepting, finishes in-flight requests, stops the senders,
    /// makes everything durable.
    pub async fn stop(self) -> Result<(), ServeError> {
        self.stop_within(None).await
    }

    /// [`Running::stop`], giving in-flight requests at most `drain` (then
    /// their connections are closed: a role change must not wait for a
    /// write forwarded to a leader that hangs).
    pub async fn stop_within(self, drain: Option<Duration>) -> Result<(), ServeError> {
        self.trigger.fire();
        for s in self.servers {
            match drain {
                None => {
                    let _ = s.await;
                }
                Some(d) => {
                    let abort = s.abort_handle();
                    if tokio::time::timeout(d, s).await.is_err() {
                        abort.abort();
                    }
                }
            }
        }
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
        if let Some(b) = &self.state.backups {
            // A backup, verify or rewind holds the writer: stop them.
            b.abort_all();
        }
        drop(self.state);
        let region = self.inner;
        tokio::task::spawn_blocking(move || region.join())
            .await
            .map_err(|e| ServeError::Io(std::io::Error::other(e)))??;
        Ok(())
    }
}

/// Runs one region until SIGTERM or SIGINT. A role change (a promotion,
/// a demotion) stops the region and starts it again in its new role, on
/// the same addresses.
pub async fn run(cfg: Valid, repair_log: bool) -> Result<(), ServeError> {
    let mut cfg = cfg;
    let mut repair_log = repair_log;
    loop {
        let r = start(cfg.clone(), repair_log).await?;
        repair_log = false;
        // The same ports on a restart (port 0 picked them the first time).
        cfg.listen = r.addr;
        if r.peer_addr.is_some() {
            cfg.peer_listen = r.peer_addr;
        }
        // The lines harnesses and scripts wait for.
        let scheme = if cfg.tls.enabled() { "https" } else { "http" };
        if let Some(p) = r.peer_addr {
            println!("meridian: region {} peer API on {scheme}://{p}", r.region);
        }
        println!(
            "meridian: region {} ({}) listening on {scheme}://{}",
            r.region,
            r.standby.role.as_str(),
            r.addr
        );
        let mut fatal = r.inner.fatal.clone();
        let mut changes = r.standby.changes();
        tokio::select! {
            _ = shutdown::signal() => {}
            e = fatal.wait_for(Option::is_some) => {
                let e = e.ok().and_then(|v| v.clone()).unwrap_or_default();
                tracing::error!(error = %e, "the writer failed: stopping");
                // Answer health checks with the failure for a moment, so an
                // orchestrator polling sees why, then stop and exit non-zero.
                tokio::time::sleep(Duration::from_millis(500)).await;
                let _ = r.stop().await;
                return Err(ServeError::Fatal(e.to_string()));
            }
            c = changes.wait_for(Option::is_some) => {
                let change = c.ok().and_then(|v| v.clone());
                tracing::warn!(?change, "role change: restarting the region in its new role");
                r.stop_within(Some(Duration::from_secs(1))).await?;
                continue;
            }
        }
        tracing::info!("stopping: draining writes");
        r.stop().await?;
        tracing::info!("stopped cleanly");
        return Ok(());
    }
}
