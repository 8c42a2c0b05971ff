//! The link emulator, end to end over real loopback sockets.
//!
//! Timing checks are lower bounds only ("took at least"), so a loaded
//! machine can make them slower but never make them fail.
//!
//! Past ~400 lines because STYLE keeps one test binary per topic: these cases
//! share the fixtures at the top of this file.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use meridian_harness::link::{self, LinkArgs, LinkEmulator, LinkError, LinkSpec};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SEED: u64 = 0x5eed;
/// Generous guard against hangs; never a performance assertion.
const PATIENCE: Duration = Duration::from_secs(10);

/// A server that echoes every byte back on each connection.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    addr
}

/// An emulator with one link, us-east -> eu-west, in front of an echo server.
async fn echo_link(spec: LinkSpec) -> (LinkEmulator, SocketAddr) {
    let emu = LinkEmulator::new(SEED);
    let port = emu
        .add_link("us-east", "eu-west", echo_server().await, spec)
        .await
        .unwrap();
    (emu, port)
}

/// A server that reads `expect` bytes, then answers one byte.
async fn sink_server(expect: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; expect];
                if stream.read_exact(&mut buf).await.is_ok() {
                    let _ = stream.write_all(b"k").await;
                }
            });
        }
    });
    addr
}

async fn round_trip(stream: &mut TcpStream, message: &[u8]) -> Vec<u8> {
    stream.write_all(message).await.unwrap();
    let mut back = vec![0u8; message.len()];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut back))
        .await
        .expect("round trip hung")
        .unwrap();
    back
}

/// True once the peer has closed or reset the connection.
async fn is_closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
        .await
        .expect("connection stayed open");
    matches!(read, Ok(0) | Err(_))
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[tokio::test]
async fn round_trip_through_a_100ms_link_takes_at_least_200ms() {
    let (emu, port) = echo_link(LinkSpec::latency(100)).await;
    let mut stream = TcpStream::connect(port).await.unwrap();
    let started = Instant::now();
    assert_eq!(round_trip(&mut stream, b"ping").await, b"ping");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(200),
        "round trip took {took:?}"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn zero_latency_link_forwards_bytes_intact_and_counts_them() {
    let (emu, port) = echo_link(LinkSpec::default()).await;
    let mut stream = TcpStream::connect(port).await.unwrap();
    let data = pattern(1 << 20);
    let (mut read, mut write) = stream.split();
    let send = async {
        write.write_all(&data).await.unwrap();
        write.shutdown().await.unwrap();
    };
    let mut back = Vec::new();
    let receive = tokio::time::timeout(PATIENCE, read.read_to_end(&mut back));
    let ((), received) = tokio::join!(send, receive);
    received.expect("echo hung").unwrap();
    assert!(back == data, "echoed bytes differ");
    let stats = emu.stats("us-east", "eu-west").unwrap();
    assert_eq!(stats.bytes_forward, 1 << 20);
    assert_eq!(stats.bytes_reverse, 1 << 20);
    assert_eq!(stats.connections_accepted, 1);
    assert_eq!(stats.connections_cut, 0);
    emu.shutdown().await;
}

#[tokio::test]
async fn jitter_never_reorders_a_stream() {
    let (emu, port) = echo_link(LinkSpec::latency(5).with_jitter(60).with_loss(0.05)).await;
    let mut stream = TcpStream::connect(port).await.unwrap();
    let (mut read, mut write) = stream.split();
    const CHUNKS: u32 = 150;
    let send = async {
        for n in 0..CHUNKS {
            write.write_all(&n.to_be_bytes()).await.unwrap();
            // Separate writes so the link sees many chunks, each with its
            // own jitter draw.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        write.shutdown().await.unwrap();
    };
    let mut back = Vec::new();
    let receive = tokio::time::timeout(PATIENCE, read.read_to_end(&mut back));
    let ((), received) = tokio::join!(send, receive);
    received.expect("echo hung").unwrap();
    let numbers: Vec<u32> = back
        .chunks(4)
        .map(|b| u32::from_be_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(numbers, (0..CHUNKS).collect::<Vec<_>>());
    emu.shutdown().await;
}

#[tokio::test]
async fn partition_cuts_open_connections_refuses_new_ones_until_healed() {
    let emu = LinkEmulator::new(SEED);
    let upstream = echo_server().await;
    let port = emu
        .add_link("us-east", "eu-west", upstream, LinkSpec::default())
        .await
        .unwrap();
    emu.add_link("eu-west", "us-east", upstream, LinkSpec::default())
        .await
        .unwrap();
    let mut open = TcpStream::connect(port).await.unwrap();
    assert_eq!(round_trip(&mut open, b"before").await, b"before");

    assert_eq!(emu.partition("us-east", "eu-west").unwrap(), 2);
    assert!(
        is_closed(&mut open).await,
        "open connection survived the partition"
    );
    assert!(emu.spec("eu-west", "us-east").unwrap().partitioned);

    let mut refused = TcpStream::connect(port).await.unwrap();
    let _ = refused.write_all(b"hello?").await;
    assert!(
        is_closed(&mut refused).await,
        "new connection got through a partition"
    );

    let stats = emu.stats("us-east", "eu-west").unwrap();
    assert_eq!(stats.connections_cut, 1);
    assert_eq!(stats.connections_refused, 1);
    assert_eq!(stats.connections_accepted, 2);

    assert_eq!(emu.heal("eu-west", "us-east").unwrap(), 2);
    let mut healed = TcpStream::connect(port).await.unwrap();
    assert_eq!(round_trip(&mut healed, b"after").await, b"after");
    emu.shutdown().await;
}

#[tokio::test]
async fn isolate_cuts_every_link_of_a_region_and_heal_all_restores_them() {
    let emu = LinkEmulator::new(SEED);
    let upstream = echo_server().await;
    for (from, to) in [
        ("us-east", "ap-south"),
        ("ap-south", "eu-west"),
        ("us-east", "eu-west"),
    ] {
        emu.add_link(from, to, upstream, LinkSpec::default())
            .await
            .unwrap();
    }
    assert_eq!(emu.isolate("ap-south").unwrap(), 2);
    assert!(emu.spec("us-east", "ap-south").unwrap().partitioned);
    assert!(emu.spec("ap-south", "eu-west").unwrap().partitioned);
    assert!(!emu.spec("us-east", "eu-west").unwrap().partitioned);
    assert!(matches!(
        emu.isolate("mars").unwrap_err(),
        LinkError::UnknownRegion { .. }
    ));
    assert!(matches!(
        emu.partition("mars", "us-east").unwrap_err(),
        LinkError::UnknownPair { .. }
    ));
    assert_eq!(emu.heal_all(), 3);
    assert!(emu.links().iter().all(|link| !link.spec.partitioned));
    emu.shutdown().await;
}

#[tokio::test]
async fn bandwidth_cap_paces_delivery() {
    const SIZE: usize = 200_000;
    let emu = LinkEmulator::new(SEED);
    let spec = LinkSpec::default().with_bandwidth(100_000);
    let port = emu
        .add_link("us-east", "eu-west", sink_server(SIZE).await, spec)
        .await
        .unwrap();
    let mut stream = TcpStream::connect(port).await.unwrap();
    let started = Instant::now();
    stream.write_all(&pattern(SIZE)).await.unwrap();
    let mut ack = [0u8; 1];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut ack))
        .await
        .expect("sink never answered")
        .unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "200 KB at 100 KB/s took {took:?}"
    );
    assert_eq!(
        emu.stats("us-east", "eu-west").unwrap().bytes_forward,
        SIZE as u64
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn latency_changes_apply_to_live_connections() {
    let emu = LinkEmulator::new(SEED);
    let upstream = echo_server().await;
    let port = emu
        .add_link("us-east", "eu-west", upstream, LinkSpec::default())
        .await
        .unwrap();
    emu.add_link("eu-west", "us-east", upstream, LinkSpec::default())
        .await
        .unwrap();
    let mut stream = TcpStream::connect(port).await.unwrap();
    assert_eq!(round_trip(&mut stream, b"fast").await, b"fast");

    assert_eq!(emu.set_latency_pair("us-east", "eu-west", 150).unwrap(), 2);
    assert_eq!(emu.spec("eu-west", "us-east").unwrap().latency_ms, 150);
    let started = Instant::now();
    assert_eq!(round_trip(&mut stream, b"slow").await, b"slow");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "round trip took {took:?}"
    );

    // A whole-spec change applies too: every chunk now pays the loss delay.
    let lossy = LinkSpec::default().with_loss(1.0);
    emu.set_spec("us-east", "eu-west", lossy).unwrap();
    let started = Instant::now();
    assert_eq!(round_trip(&mut stream, b"lost").await, b"lost");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400),
        "lossy round trip took {took:?}"
    );
    assert_eq!(emu.stats("us-east", "eu-west").unwrap().chunks_lost, 2);
    emu.shutdown().await;
}

#[tokio::test]
async fn close_probability_one_resets_on_the_first_chunk() {
    let (emu, port) = echo_link(LinkSpec::default().with_close(1.0)).await;
    let mut stream = TcpStream::connect(port).await.unwrap();
    stream.write_all(b"doomed").await.unwrap();
    assert!(is_closed(&mut stream).await);
    let stats = emu.stats("us-east", "eu-west").unwrap();
    assert_eq!(stats.connections_cut, 1);
    assert_eq!(stats.bytes_forward, 0);
    emu.shutdown().await;
}

#[tokio::test]
async fn bad_specs_and_duplicates_are_rejected_with_the_field_named() {
    let emu = LinkEmulator::new(SEED);
    let upstream = echo_server().await;
    let err = emu
        .add_link(
            "us-east",
            "eu-west",
            upstream,
            LinkSpec::default().with_loss(2.0),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("`loss`"), "{err}");
    emu.add_link("us-east", "eu-west", upstream, LinkSpec::default())
        .await
        .unwrap();
    let err = emu
        .add_link("us-east", "eu-west", upstream, LinkSpec::default())
        .await
        .unwrap_err();
    assert!(matches!(err, LinkError::DuplicateLink { .. }), "{err}");
    let err = emu
        .set_spec("us-east", "eu-west", LinkSpec::default().with_close(-1.0))
        .unwrap_err();
    assert!(err.to_string().contains("`close`"), "{err}");
    let err = emu
        .set_spec("us-east", "nowhere", LinkSpec::default())
        .unwrap_err();
    assert!(matches!(err, LinkError::UnknownLink { .. }), "{err}");
    emu.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_connections_and_listeners() {
    let (emu, port) = echo_link(LinkSpec::default()).await;
    let mut open = TcpStream::connect(port).await.unwrap();
    assert_eq!(round_trip(&mut open, b"hi").await, b"hi");
    emu.shutdown().await;
    assert!(is_closed(&mut open).await);
    assert!(
        TcpStream::connect(port).await.is_err(),
        "listener outlived shutdown"
    );
    let err = emu
        .add_link("eu-west", "us-east", port, LinkSpec::default())
        .await
        .unwrap_err();
    assert!(matches!(err, LinkError::ShutDown), "{err}");
}

/// A minimal HTTP/1.1 client: one request per connection.
async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: link\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut response))
        .await
        .expect("control API hung")
        .unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn error_of(body: &Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no JSON error in {body}"))
}

#[tokio::test]
async fn control_api_reads_and_changes_links() {
    let emu = LinkEmulator::new(SEED);
    let upstream = echo_server().await;
    emu.add_link("us-east", "eu-west", upstream, LinkSpec::latency(10))
        .await
        .unwrap();
    emu.add_link("eu-west", "us-east", upstream, LinkSpec::latency(10))
        .await
        .unwrap();
    let api = emu
        .serve_control("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();

    let (status, body) = http(api, "GET", "/links", "").await;
    assert_eq!(status, 200);
    assert_eq!(body["links"].as_array().unwrap().len(), 2);

    let (status, body) = http(
        api,
        "PUT",
        "/links/us-east/eu-west",
        r#"{"latency_ms": 30, "jitter_ms": 5}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["spec"]["latency_ms"], 30);
    let (status, body) = http(api, "GET", "/links/us-east/eu-west", "").await;
    assert_eq!(status, 200);
    assert_eq!(body["spec"]["latency_ms"], 30);
    assert_eq!(body["spec"]["jitter_ms"], 5);
    assert_eq!(
        body["spec"]["loss_delay_ms"], 200,
        "unset fields keep their value"
    );
    assert_eq!(
        emu.spec("us-east", "eu-west").unwrap(),
        LinkSpec::latency(30).with_jitter(5)
    );

    let (status, body) = http(api, "PUT", "/links/us-east/eu-west", r#"{"loss": 1.5}"#).await;
    assert_eq!(status, 400);
    assert!(error_of(&body).contains("loss"), "{body}");
    let (status, body) = http(api, "PUT", "/links/us-east/eu-west", r#"{"latnecy_ms": 1}"#).await;
    assert_eq!(status, 400);
    assert!(error_of(&body).contains("latnecy_ms"), "{body}");
    let (status, body) = http(api, "PUT", "/links/us-east/eu-west", "{not json").await;
    assert_eq!(status, 400);
    assert!(error_of(&body).contains("JSON"), "{body}");
    assert_eq!(
        emu.spec("us-east", "eu-west").unwrap().latency_ms,
        30,
        "bad PUTs changed nothing"
    );

    let (status, body) = http(api, "GET", "/links/us-east/mars", "").await;
    assert_eq!(status, 404);
    assert!(error_of(&body).contains("mars"), "{body}");
    let (status, _) = http(api, "PUT", "/links/mars/us-east", r#"{"latency_ms": 1}"#).await;
    assert_eq!(status, 404);

    let (status, body) = http(
        api,
        "POST",
        "/partition",
        r#"{"a": "eu-west", "b": "us-east"}"#,
    )
    .await;
    assert_eq!((status, body["links_changed"].as_u64()), (200, Some(2)));
    assert!(emu.spec("us-east", "eu-west").unwrap().partitioned);
    let (status, body) = http(api, "POST", "/heal", "{}").await;
    assert_eq!((status, body["links_changed"].as_u64()), (200, Some(2)));
    assert!(!emu.spec("us-east", "eu-west").unwrap().partitioned);
    let (status, _) = http(api, "POST", "/partition", r#"{"isolate": "us-east"}"#).await;
    assert_eq!(status, 200);
    assert!(emu.spec("eu-west", "us-east").unwrap().partitioned);
    let (status, _) = http(api, "POST", "/heal", r#"{"a": "us-east", "b": "eu-west"}"#).await;
    assert_eq!(status, 200);
    assert!(!emu.spec("eu-west", "us-east").unwrap().partitioned);

    let (status, body) = http(api, "POST", "/partition", r#"{"isolate": "mars"}"#).await;
    assert_eq!(status, 404);
    assert!(error_of(&body).contains("mars"), "{body}");
    let (status, body) = http(api, "POST", "/partition", r#"{"a": "us-east"}"#).await;
    assert_eq!(status, 400);
    error_of(&body);
    let (status, body) = http(api, "POST", "/partition", r#"{"a": 1, "b": "us-east"}"#).await;
    assert_eq!(status, 400);
    assert!(error_of(&body).contains("`a`"), "{body}");

    emu.shutdown().await;
    assert!(
        TcpStream::connect(api).await.is_err(),
        "control API outlived shutdown"
    );
}

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: LinkArgs,
}

#[tokio::test]
async fn runner_starts_links_from_arguments() {
    let upstream = echo_server().await;
    let link = format!("us-east:eu-west=127.0.0.1:0->{upstream}");
    let cli = Cli::try_parse_from([
        "link",
        "--link",
        &link,
        "--latency",
        "50",
        "--seed",
        "7",
        "--control",
        "127.0.0.1:0",
    ])
    .unwrap();
    let started = link::start(&cli.args).await.unwrap();
    assert_eq!(started.emulator.seed(), 7);
    let info = started.emulator.link("us-east", "eu-west").unwrap();
    assert_eq!(info.spec.latency_ms, 50);
    let mut stream = TcpStream::connect(info.listen).await.unwrap();
    assert_eq!(round_trip(&mut stream, b"cli").await, b"cli");
    let (status, body) = http(started.control.unwrap(), "GET", "/links", "").await;
    assert_eq!(status, 200);
    assert_eq!(body["links"][0]["from"], json!("us-east"));
    started.emulator.shutdown().await;

    // `run` returns once its shutdown future resolves.
    let run = link::run(cli.args.clone(), async {});
    tokio::time::timeout(PATIENCE, run)
        .await
        .expect("run hung")
        .unwrap();

    let bad = Cli::try_parse_from(["link", "--link", &link, "--loss", "3"]).unwrap();
    let err = link::start(&bad.args).await.unwrap_err();
    assert!(err.to_string().contains("`loss`"), "{err}");
}

#[tokio::test]
async fn a_partition_healed_at_once_still_cuts_open_connections() {
    let (emu, port) = echo_link(LinkSpec::default()).await;
    let mut open = TcpStream::connect(port).await.unwrap();
    assert_eq!(round_trip(&mut open, b"before").await, b"before");
    // No await between the two: connection tasks only see the end state.
    emu.partition("us-east", "eu-west").unwrap();
    emu.heal("us-east", "eu-west").unwrap();
    assert!(
        is_closed(&mut open).await,
        "connection survived a brief partition"
    );
    assert_eq!(emu.stats("us-east", "eu-west").unwrap().connections_cut, 1);
    let mut fresh = TcpStream::connect(port).await.unwrap();
    assert_eq!(round_trip(&mut fresh, b"after").await, b"after");
    emu.shutdown().await;
}
