//! Listener limits on a real region: idle and half-sent connections do not
//! keep a new client out and are cut at the header-read timeout; past the
//! connection limit, clients wait instead of being served; a request that
//! runs past the request timeout gets a 503.

mod common;

use std::time::{Duration, Instant};

use common::Api;
use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn refused(metrics: &str, what: &str, reason: &str) -> f64 {
    metrics
        .lines()
        .find(|l| {
            l.starts_with("meridian_security_refused_total")
                && l.contains(&format!("what=\"{what}\""))
                && l.contains(&format!("reason=\"{reason}\""))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Whether the server closed `s` (EOF or reset), waiting at most `within`.
async fn closed(s: &mut TcpStream, within: Duration) -> bool {
    let mut b = [0u8; 64];
    matches!(
        tokio::time::timeout(within, s.read(&mut b)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn a_thousand_stalled_connections_neither_block_a_client_nor_stay() {
    let api = Api::start_with("limits-stalled", |mut s| {
        s.env.push((
            "MERIDIAN_LIMITS__HEADER_READ_TIMEOUT_MS".into(),
            "1500".into(),
        ));
        s
    })
    .await;
    let addr = api.node.addr();
    let mut stalled = Vec::new();
    for i in 0..1000 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        if i % 2 == 1 {
            // Half a request head, never finished.
            s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await
                .unwrap();
        }
        stalled.push(s);
    }
    // A new client is served at once.
    // (`connection: close`: a connection left idle in the client's pool
    // is itself cut at the header-read timeout below, and reusing it just
    // as the server closes it fails the next request.)
    let t = Instant::now();
    let r = api
        .req(
            Method::GET,
            "/healthz",
            &[("connection", "close")],
            bytes::Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "a client waited {:?} behind 1000 stalled connections",
        t.elapsed()
    );
    // Each stalled connection is closed at the header-read timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (i, s) in stalled.iter_mut().enumerate() {
        assert!(
            closed(s, Duration::from_secs(5)).await,
            "stalled connection {i} still open past the header-read timeout"
        );
    }
    let m = String::from_utf8_lossy(&api.get("/metrics").await.body).to_string();
    assert!(
        refused(&m, "client_listener", "header_timeout") >= 1000.0,
        "{}",
        m.lines()
            .filter(|l| l.contains("security_refused"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // A connection that keeps making requests is not cut.
    let r = api.get("/v1/status").await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn past_the_connection_limit_clients_wait_in_the_backlog() {
    let api = Api::start_with("limits-conns", |mut s| {
        s.env.extend([
            ("MERIDIAN_LIMITS__MAX_CONNECTIONS".into(), "4".into()),
            (
                "MERIDIAN_LIMITS__HEADER_READ_TIMEOUT_MS".into(),
                "1000".into(),
            ),
        ]);
        s
    })
    .await;
    let addr = api.node.addr();
    // Four idle connections take every slot.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A fifth is accepted by the kernel but not served until one of the
    // four is cut (at the header-read timeout): then it is.
    let mut fifth = TcpStream::connect(addr).await.unwrap();
    fifth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_millis(500), fifth.read_to_end(&mut buf)).await;
    assert!(
        read.is_err() || buf.is_empty(),
        "served past the limit: {buf:?}"
    );
    tokio::time::timeout(Duration::from_secs(10), fifth.read_to_end(&mut buf))
        .await
        .expect("served once a slot freed")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );
    drop(idle);
    let m = String::from_utf8_lossy(&api.get("/metrics").await.body).to_string();
    assert!(refused(&m, "client_listener", "connections") >= 1.0);
    assert!(
        m.lines()
            .any(|l| l.starts_with("meridian_listener_connections")
                && l.contains("listener=\"client_listener\"")),
        "{m}"
    );
}

#[tokio::test]
async fn a_request_past_the_request_timeout_gets_a_503() {
    let api = Api::start_with("limits-request", |mut s| {
        s.env
            .push(("MERIDIAN_LIMITS__REQUEST_TIMEOUT_MS".into(), "300".into()));
        s
    })
    .await;
    // A read waiting for a causal token this region will never reach
    // waits as long as asked (2 s): past the 300 ms limit.
    let status = api.get("/v1/status").await.json();
    let inc = status["replica"]["incarnation"]
        .as_str()
        .unwrap()
        .to_string();
    let vv: meridian_crdt::VersionVector = [(
        meridian_crdt::ReplicaId::new(
            meridian_crdt::RegionId::new("us-east").unwrap(),
            inc.parse().unwrap(),
        ),
        meridian_crdt::Seq(99),
    )]
    .into_iter()
    .collect();
    let future = meridian_core::token::encode(&vv);
    let t = Instant::now();
    let r = api
        .req(
            Method::GET,
            "/v1/kv/default/k",
            &[("meridian-token", &future), ("meridian-wait-ms", "2000")],
            bytes::Bytes::new(),
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (503, "request_timeout"));
    assert!(
        t.elapsed() < Duration::from_millis(1900),
        "{:?}",
        t.elapsed()
    );
    // At and under the limit: served.
    assert_eq!(api.get("/v1/status").await.status, 200);
}
