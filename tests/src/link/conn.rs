//! One proxied connection: a delay line per direction between the client
//! (region `from`) and the upstream (region `to`'s peer listener).

use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};
use tracing::debug;

use super::cancel::CancelToken;
use super::directed::{DirectedLink, reset};
use super::schedule::{Schedule, Verdict};
use super::stats::Counters;

/// Largest chunk read at once: the unit of delay, loss and reset draws.
const CHUNK_BYTES: usize = 16 * 1024;
/// Chunks in flight per direction. With 16 KiB chunks this bounds a
/// connection's buffered bytes to 4 MiB a direction while letting a 100 ms
/// link carry ~40 MB/s: a slow reader pushes back on the sender through it.
const QUEUE_CHUNKS: usize = 256;

#[derive(Debug, Clone, Copy)]
enum Direction {
    /// `from -> to`: client to upstream.
    Forward,
    /// `to -> from`: upstream back to client.
    Reverse,
}

impl Direction {
    fn index(self) -> u64 {
        match self {
            Direction::Forward => 0,
            Direction::Reverse => 1,
        }
    }
}

/// An item on a delay line.
enum Segment {
    Data { at: Instant, bytes: Bytes },
    End { at: Instant },
}

/// Why a direction stopped early.
enum Stop {
    /// The emulator decided to reset the connection.
    Cut,
    /// A socket failed (usually the other side reset).
    Io(io::Error),
}

/// How a whole connection ended.
enum Outcome {
    Finished,
    Cut,
    Failed(io::Error),
    Shutdown,
}

/// Relays one accepted connection until both directions end, the link is
/// partitioned, a `close` draw hits, a socket fails, or `cancel` fires.
/// Every ending but a clean close of both directions resets both sockets.
///
/// `partitions` must have been taken when the connection was accepted (see
/// [`DirectedLink::watch_partitions`]).
pub(crate) async fn relay(
    link: Arc<DirectedLink>,
    mut client: TcpStream,
    index: u64,
    mut partitions: watch::Receiver<u64>,
    cancel: CancelToken,
) {
    let _open = link.counters.open_guard();
    let upstream_addr = link.upstream();

    // The connect races partition and shutdown too: a hanging connect must
    // not outlive either.
    let connected = tokio::select! {
        connected = TcpStream::connect(upstream_addr) => connected,
        Ok(()) = partitions.changed() => {
            Counters::add(&link.counters.connections_cut, 1);
            reset(&client);
            return;
        }
        () = cancel.cancelled() => {
            reset(&client);
            return;
        }
    };
    let mut upstream = match connected {
        Ok(upstream) => upstream,
        Err(err) => {
            Counters::add(&link.counters.upstream_failures, 1);
            debug!(from = %link.from, to = %link.to, upstream = %upstream_addr, cause = %err, "upstream unreachable");
            reset(&client);
            return;
        }
    };
    // Nagle would add its own delay on top of the emulated one.
    for stream in [&client, &upstream] {
        if let Err(err) = stream.set_nodelay(true) {
            debug!(cause = %err, "cannot set TCP_NODELAY");
        }
    }

    let outcome = {
        let (client_read, client_write) = client.split();
        let (upstream_read, upstream_write) = upstream.split();
        let forward = pump(
            &link,
            Direction::Forward,
            client_read,
            upstream_write,
            index,
        );
        let reverse = pump(
            &link,
            Direction::Reverse,
            upstream_read,
            client_write,
            index,
        );
        tokio::select! {
            ended = async { tokio::try_join!(forward, reverse) } => match ended {
                Ok(_) => Outcome::Finished,
                Err(Stop::Cut) => Outcome::Cut,
                Err(Stop::Io(err)) => Outcome::Failed(err),
            },
            Ok(()) = partitions.changed() => Outcome::Cut,
            () = cancel.cancelled() => Outcome::Shutdown,
        }
    };

    match outcome {
        Outcome::Finished => return,
        Outcome::Cut => {
            Counters::add(&link.counters.connections_cut, 1);
            debug!(from = %link.from, to = %link.to, "connection cut");
        }
        Outcome::Failed(err) => {
            debug!(from = %link.from, to = %link.to, cause = %err, "connection failed");
        }
        Outcome::Shutdown => {}
    }
    reset(&client);
    reset(&upstream);
}

/// Moves one direction's bytes through its delay line until end of stream.
async fn pump(
    link: &DirectedLink,
    direction: Direction,
    mut src: ReadHalf<'_>,
    mut dst: WriteHalf<'_>,
    index: u64,
) -> Result<(), Stop> {
    let (tx, rx) = mpsc::channel(QUEUE_CHUNKS);
    let schedule = Schedule::new(link.connection_seed(index, direction.index()));
    let bytes = match direction {
        Direction::Forward => &link.counters.bytes_forward,
        Direction::Reverse => &link.counters.bytes_reverse,
    };
    let pacer = direction.index() as usize;
    tokio::try_join!(
        read_side(link, &mut src, tx, schedule),
        write_side(link, pacer, bytes, &mut dst, rx),
    )?;
    Ok(())
}

/// Reads chunks as they arrive and stamps each with its delivery time.
async fn read_side(
    link: &DirectedLink,
    src: &mut ReadHalf<'_>,
    tx: mpsc::Sender<Segment>,
    mut schedule: Schedule,
) -> Result<(), Stop> {
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        let n = src.read(&mut buf).await.map_err(Stop::Io)?;
        let arrival = Instant::now();
        // Read per chunk so a spec change applies to live connections.
        let spec = link.spec();
        let segment = if n == 0 {
            Segment::End {
                at: schedule.end(arrival, &spec),
            }
        } else {
            match schedule.chunk(arrival, &spec) {
                Verdict::Reset => return Err(Stop::Cut),
                Verdict::Deliver { at, lost } => {
                    if lost {
                        Counters::add(&link.counters.chunks_lost, 1);
                    }
                    Segment::Data {
                        at,
                        bytes: Bytes::copy_from_slice(&buf[..n]),
                    }
                }
            }
        };
        let end = matches!(segment, Segment::End { .. });
        // A closed queue means the writer stopped; its result says why.
        if tx.send(segment).await.is_err() || end {
            return Ok(());
        }
    }
}

/// Delivers each chunk at its time, paced by the link's bandwidth cap.
async fn write_side(
    link: &DirectedLink,
    pacer: usize,
    delivered: &AtomicU64,
    dst: &mut WriteHalf<'_>,
    mut rx: mpsc::Receiver<Segment>,
) -> Result<(), Stop> {
    while let Some(segment) = rx.recv().await {
        match segment {
            Segment::Data { at, bytes } => {
                sleep_until(at).await;
                let rate = link.spec().bandwidth_bytes_per_sec;
                if let Some(through) = link.pacers[pacer].reserve(bytes.len(), rate) {
                    sleep_until(through).await;
                }
                // Bytes still in the delay line when the link is cut are
                // lost with it: the relay learns of the cut a moment later
                // (it watches for it), and a chunk read before the cut must
                // not reach the far side after it.
                if link.spec().partitioned {
                    return Err(Stop::Cut);
                }
                dst.write_all(&bytes).await.map_err(Stop::Io)?;
                Counters::add(delivered, bytes.len() as u64);
            }
            Segment::End { at } => {
                sleep_until(at).await;
                // Nor does an end of stream cross a cut link.
                if link.spec().partitioned {
                    return Err(Stop::Cut);
                }
                // Half-close: the other direction keeps flowing.
                dst.shutdown().await.map_err(Stop::Io)?;
                return Ok(());
            }
        }
    }
    Ok(())
}
