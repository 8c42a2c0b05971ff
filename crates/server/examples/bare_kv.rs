//! `bare_kv`: the "bare axum handler" peer in the peer comparison benchmark
//! (`bench/peers.sh`).
//!
//! It is the ceiling Meridian is measured against: the same HTTP surface as
//! Meridian's single-key API (`PUT`/`GET /v1/kv/{ks}/{*key}`) on the same stack
//! (axum 0.8 on a multi-thread tokio runtime), but no validation, no op log, no
//! fsync, no replication: the body is stored into a `Mutex<HashMap>` in memory
//! and the request answered `200 {"version":"N"}`. Whatever separates Meridian
//! from this server is the cost of Meridian's own work.
//!
//! The map is created with room for `CAPACITY` entries (second argument,
//! default 4,000,000: more than a default `peers.sh` run writes). Growing it
//! instead rehashes everything under the one lock: measured here, stalls of
//! 100-270 ms once the map holds about a million keys, which wrk's
//! coordinated-omission correction turns into a p99 of 50-200 ms and which
//! cost about a fifth of the throughput. Meridian's store has no such stall,
//! so the ceiling should not either.
//!
//! Not durable and not for anything but benchmarks.
//!
//! ```text
//! cargo run --release -p meridian-server --example bare_kv -- 127.0.0.1:8099 [CAPACITY]
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use bytes::Bytes;

/// Entries the map has room for from the start, unless given on the command line.
const DEFAULT_CAPACITY: usize = 4_000_000;

/// Everything the handlers share.
struct Store {
    /// `"{keyspace}/{key}"` -> value bytes.
    map: Mutex<HashMap<String, Bytes>>,
    /// Counts writes, handed back as the version.
    writes: AtomicU64,
}

type Shared = Arc<Store>;

async fn put_kv(
    State(store): State<Shared>,
    Path((ks, key)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let full = format!("{ks}/{key}");
    // Copy the value out: `body` is a slice of hyper's read buffer, and keeping
    // it would pin that whole buffer (measured: ~4 KiB of RSS per stored
    // 100-byte value, 4 GB after a few runs, and p99 in the hundreds of ms).
    // Any real store copies the value too.
    let value = Bytes::copy_from_slice(&body);
    // The guard is dropped at the end of the statement, before any await.
    store
        .map
        .lock()
        .expect("store mutex poisoned")
        .insert(full, value);
    let version = store.writes.fetch_add(1, Ordering::Relaxed) + 1;
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{{\"version\":\"{version}\"}}"),
    )
        .into_response()
}

async fn get_kv(State(store): State<Shared>, Path((ks, key)): Path<(String, String)>) -> Response {
    let full = format!("{ks}/{key}");
    let value = store
        .map
        .lock()
        .expect("store mutex poisoned")
        .get(&full)
        .cloned();
    match value {
        Some(v) => (StatusCode::OK, v).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "application/json")],
            "{\"error\":\"not found\"}",
        )
            .into_response(),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:8099".to_owned())
        .parse()?;
    let capacity: usize = match args.next() {
        Some(n) => n.parse()?,
        None => DEFAULT_CAPACITY,
    };
    let store = Arc::new(Store {
        map: Mutex::new(HashMap::with_capacity(capacity)),
        writes: AtomicU64::new(0),
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let app = Router::new()
            .route("/v1/kv/{ks}/{*key}", put(put_kv).get(get_kv))
            .route("/healthz", axum::routing::get(|| async { "ok" }))
            .with_state(store);
        let listener = tokio::net::TcpListener::bind(addr).await?;
        eprintln!("bare_kv listening on {}", listener.local_addr()?);
        axum::serve(listener, app).await?;
        Ok(())
    })
}
