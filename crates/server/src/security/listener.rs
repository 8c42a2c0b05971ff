//! The accept loop both listeners run: a bounded number of connections,
//! TLS when configured, and every connection cut off when it stalls.
//!
//! - At most `max_connections` are open; further ones wait in the kernel's
//!   backlog (counted once as `connections` each time the limit is hit).
//! - A TLS handshake must finish within the header-read timeout.
//! - A connection must start a request within the header-read timeout of
//!   opening (a client that connects and sends nothing, or half a request
//!   head, is closed then); between requests it may stay open for the idle
//!   timeout. Within a request, HTTP/1 heads are also bounded by hyper's own
//!   header-read timer.
//! - On stop, connections finish what they are doing (graceful shutdown);
//!   if the task running the loop is aborted, every connection goes with
//!   it (they live in its `JoinSet`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tower::ServiceExt as _;

use super::config::Limits;
use super::tls::ServerTls;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// How one listener serves.
#[derive(Clone)]
pub struct Options {
    /// `client_listener` or `peer_listener` (metric labels, logs).
    pub what: &'static str,
    /// Connection and time limits.
    pub limits: Limits,
    /// TLS, when configured.
    pub tls: Option<Arc<ServerTls>>,
    /// Where refusals are counted.
    pub metrics: Arc<Metrics>,
}

/// What a connection's watchdog reads.
struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// Ms since `started` of the last request's start or end.
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Whether the connection has stalled: nothing in flight, and no
    /// request started within `header_read` of opening, or none for `idle`
    /// since the last one.
    fn stalled(&self, limits: &Limits) -> Option<&'static str> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let quiet = Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)));
        if self.requests.load(Ordering::Relaxed) == 0 {
            (quiet >= limits.header_read).then_some("header_timeout")
        } else {
            (quiet >= limits.idle).then_some("idle_timeout")
        }
    }
}

/// Admin jobs that may take longer than any request should (a backup's
/// verification, a rewind): the request timeout does not cut them.
fn runs_long(path: &str) -> bool {
    path.starts_with("/v1/admin/backups") || path == "/v1/admin/rewind"
}

fn timed_out(limit: Duration) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    crate::error::HttpError::unavailable("request_timeout",
        format!(
            "no answer within the {} ms request timeout ([limits] request_timeout_ms); a write may still have been applied",
            limit.as_millis()
        ),
    )
    .into_response()
}

/// One request in flight on a connection, until dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// [`Options::what`] of the peer listener.
pub const PEER_LISTENER: &str = "peer_listener";
/// HTTP/2 receive window per peer stream (one batch or page).
pub const PEER_STREAM_WINDOW: u32 = 8 << 20;
/// HTTP/2 receive window per peer connection (every batch in flight).
pub const PEER_CONNECTION_WINDOW: u32 = 32 << 20;

/// Serves `app` on `listener` until `stop` fires.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    opts: Options,
    stop: Shutdown,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(opts.limits.max_connections));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.limits.header_read)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(10)))
        .keep_alive_timeout(Duration::from_secs(20));
    if opts.what == PEER_LISTENER {
        // Peers send batches of up to 1 MiB, many in flight, over links
        // with long round trips: hyper's 1 MiB connection window would cap
        // a peer at 1 MiB per round trip (6.5 MB/s at 160 ms, which is
        // what a healed partition's backlog crawled at). These match the
        // peer client's windows (peer::call::peer_client).
        builder
            .http2()
            .initial_stream_window_size(PEER_STREAM_WINDOW)
            .initial_connection_window_size(PEER_CONNECTION_WINDOW);
    }
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
    let mut conns = JoinSet::new();
    let open = opts
        .metrics
        .listener_connections
        .get_or_create(&crate::metrics::ListenerLabels {
            listener: opts.what,
        })
        .clone();
    loop {
        // A permit first: past the limit, connections wait in the backlog.
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                opts.metrics.refuse(opts.what, "connections");
                tokio::select! {
                    p = permits.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    _ = stop.cancelled() => break,
                    Some(_) = conns.join_next(), if !conns.is_empty() => continue,
                }
            }
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: wait, go on.
                    tracing::warn!(listener = opts.what, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let opts = opts.clone();
        let builder = builder.clone();
        let closing = closing.clone();
        let open = open.clone();
        conns.spawn(async move {
            open.inc();
            connection(tcp, peer, app, &opts, builder, closing).await;
            open.dec();
            drop(permit);
        });
    }
    // Stop: every connection finishes its requests and closes.
    let _ = closing_tx.send(true);
    while conns.join_next().await.is_some() {}
    Ok(())
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    app: Router,
    opts: &Options,
    builder: auto::Builder<TokioExecutor>,
    closing: tokio::sync::watch::Receiver<bool>,
) {
    let limits = opts.limits;
    match &opts.tls {
        None => serve_io(TokioIo::new(tcp), app, opts, builder, closing).await,
        Some(tls) => {
            let handshake = tls.acceptor().accept(tcp);
            match tokio::time::timeout(limits.header_read, handshake).await {
                Ok(Ok(stream)) => serve_io(TokioIo::new(stream), app, opts, builder, closing).await,
                Ok(Err(e)) => {
                    opts.metrics.refuse(opts.what, "tls_handshake");
                    tracing::debug!(listener = opts.what, %peer, error = %e, "TLS handshake failed");
                }
                Err(_) => {
                    opts.metrics.refuse(opts.what, "header_timeout");
                    tracing::debug!(listener = opts.what, %peer, "TLS handshake timed out");
                }
            }
        }
    }
}

async fn serve_io<I>(
    io: TokioIo<I>,
    app: Router,
    opts: &Options,
    builder: auto::Builder<TokioExecutor>,
    mut closing: tokio::sync::watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity {
        started: Instant::now(),
        in_flight: AtomicUsize::new(0),
        requests: AtomicU64::new(0),
        last_ms: AtomicU64::new(0),
    });
    let seen = activity.clone();
    let limit = opts.limits.request;
    let metrics = opts.metrics.clone();
    let what = opts.what;
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let app = app.clone();
        let seen = seen.clone();
        let metrics = metrics.clone();
        seen.in_flight.fetch_add(1, Ordering::Relaxed);
        seen.requests.fetch_add(1, Ordering::Relaxed);
        seen.touch();
        // Counted out however the request ends: answered, or dropped (an
        // HTTP/2 stream reset drops its future).
        let done = InFlight(seen.clone());
        async move {
            let long = runs_long(req.uri().path());
            let run = app.oneshot(req.map(axum::body::Body::new));
            let r = if long {
                run.await
            } else {
                match tokio::time::timeout(limit, run).await {
                    Ok(r) => r,
                    Err(_) => {
                        metrics.refuse(what, "request_timeout");
                        Ok(timed_out(limit))
                    }
                }
            };
            drop(done);
            r
        }
    });
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    let tick = (opts.limits.header_read.min(opts.limits.idle) / 4).max(Duration::from_millis(25));
    let mut watchdog = tokio::time::interval(tick);
    watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut graceful = false;
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                // hyper's own header-read timer closed it: counted as ours.
                if let Err(e) = done
                    && e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_timeout)
                {
                    opts.metrics.refuse(opts.what, "header_timeout");
                }
                return;
            }
            _ = closing.wait_for(|c| *c), if !graceful => {
                graceful = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = watchdog.tick() => {
                if let Some(why) = activity.stalled(&opts.limits) {
                    opts.metrics.refuse(opts.what, why);
                    return;
                }
            }
        }
    }
}
