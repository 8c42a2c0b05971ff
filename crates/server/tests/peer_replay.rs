//! Signed peer requests against a real region, by hand: a request taken
//! once is refused when sent again (a replay) and when its time is outside
//! the window; a head that does not verify is refused before its body is
//! read; and a region whose peer URL leads to another region refuses that
//! region's answers as the wrong peer's.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use meridian_core::replication::wire::{self, Hello};
use meridian_harness::node::{Node, NodeSpec};
use meridian_server::peer::auth::{Form, REPLAY_WINDOW_MS, Secret, now_ms};
use serde_json::Value;

const SECRET: &str = "peer-replay-test-secret-0123456789";

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_meridian"))
}

async fn region(dir: &Path, name: &str, peers: &[String]) -> Node {
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let mut spec = NodeSpec::new(name, &dir.join(name));
    spec.peer_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    spec.args = vec!["--cluster-secret-file".into(), secret.display().to_string()];
    for p in peers {
        spec.args.extend(["--peer".to_string(), p.clone()]);
    }
    Node::start(bin(), spec).await.unwrap()
}

fn refused(metrics: &str, reason: &str) -> f64 {
    metrics
        .lines()
        .find(|l| {
            l.starts_with("meridian_security_refused_total")
                && l.contains("what=\"peer\"")
                && l.contains(&format!("reason=\"{reason}\""))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn metrics(node: &Node) -> String {
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let r = http
        .get(format!("{}/metrics", node.url()).parse().unwrap())
        .await
        .unwrap();
    String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

#[tokio::test]
async fn replayed_and_stale_requests_are_refused_and_counted() {
    let tmp = common::TempDir::new("peer-replay");
    let dir = tmp.path().to_path_buf();
    let node = region(&dir, "us-east", &[]).await;
    let url = format!("http://{}/peer/v1/hello", node.peer_addr().unwrap());
    let secret = Secret::new(SECRET.as_bytes()).unwrap();
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let hello = wire::encode_hello(&Hello {
        from: meridian_crdt::ReplicaId::new(
            meridian_crdt::RegionId::new("eu-west").unwrap(),
            uuid::Uuid::new_v4(),
        ),
        now_ms: now_ms(),
    })
    .unwrap();
    let send = |auth: String, body: Vec<u8>| {
        let req = http::Request::post(&url)
            .header("meridian-peer", "eu-west")
            .header("meridian-peer-auth", auth)
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let http = http.clone();
        async move {
            let resp = http.request(req).await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, body)
        }
    };

    // Taken once: answered, and the answer is us-east's, for this request.
    let (auth, head, body) = secret.sign_request(
        "/peer/v1/hello",
        "hello",
        "eu-west",
        "us-east",
        now_ms(),
        &hello,
    );
    let (status, answer) = send(auth.clone(), body.clone()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    assert!(
        secret
            .open_answer("us-east", &head.nonce, &answer)
            .is_some()
    );
    assert!(
        secret
            .open_answer("ap-south", &head.nonce, &answer)
            .is_none()
    );

    // The same bytes again: a replay.
    let (status, text) = send(auth, body).await;
    assert_eq!(status, 401);
    let v: Value = serde_json::from_slice(&text).unwrap();
    assert!(v["message"].as_str().unwrap().contains("replay"), "{v}");

    // Signed outside the window (either side).
    for ts in [
        now_ms() - REPLAY_WINDOW_MS - 5_000,
        now_ms() + REPLAY_WINDOW_MS + 5_000,
    ] {
        let (auth, _, body) =
            secret.sign_request("/peer/v1/hello", "hello", "eu-west", "us-east", ts, &hello);
        let (status, text) = send(auth, body).await;
        assert_eq!(status, 401, "{}", String::from_utf8_lossy(&text));
    }

    // A head signed for another path, and one with a forged length: both
    // refused before the body (here 1 MiB of junk) is read.
    let (auth, _, _) = secret.sign_request(
        "/peer/v1/ops",
        "ops",
        "eu-west",
        "us-east",
        now_ms(),
        &hello,
    );
    let (status, _) = send(auth, vec![0u8; 1 << 20]).await;
    assert_eq!(status, 401);
    let (auth, _, _) = secret.sign_request(
        "/peer/v1/hello",
        "hello",
        "eu-west",
        "us-east",
        now_ms(),
        &hello,
    );
    let forged_len = {
        let mut parts: Vec<String> = auth.split(' ').map(str::to_string).collect();
        parts[3] = (1u64 << 20).to_string();
        parts.join(" ")
    };
    let (status, _) = send(forged_len, vec![0u8; 1 << 20]).await;
    assert_eq!(status, 401);
    // A good head with a body longer than it states: not read past it.
    let (auth, _, mut body) = secret.sign_request(
        "/peer/v1/hello",
        "hello",
        "eu-west",
        "us-east",
        now_ms(),
        &hello,
    );
    body.extend_from_slice(&[0u8; 4096]);
    let (status, _) = send(auth, body).await;
    assert!(status == 413 || status == 400 || status == 401, "{status}");

    // A signed batch of ops, taken once (applied), then sent again: refused
    // as a replay, nothing applied twice.
    let ops_url = format!("http://{}/peer/v1/ops", node.peer_addr().unwrap());
    let (origin, op) = one_op_batch("replayed");
    let batch = wire::encode(&origin, 1, &[op]).unwrap();
    let (auth, _, body) = secret.sign_request(
        "/peer/v1/ops",
        "ops",
        "eu-west",
        "us-east",
        now_ms(),
        &batch,
    );
    let post = |auth: String, body: Vec<u8>| {
        let req = http::Request::post(&ops_url)
            .header("meridian-peer", "eu-west")
            .header("meridian-peer-auth", auth)
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let http = http.clone();
        async move { http.request(req).await.unwrap().status().as_u16() }
    };
    assert_eq!(post(auth.clone(), body.clone()).await, 200);
    assert_eq!(post(auth, body).await, 401);
    let ops = node.client().status().await.unwrap()["ops"].clone();
    assert_eq!(ops, serde_json::json!(1), "the batch applied once");

    let m = metrics(&node).await;
    assert_eq!(refused(&m, "replayed"), 2.0, "{m}");
    assert_eq!(refused(&m, "stale"), 2.0);
    assert!(refused(&m, "signature") >= 2.0);
    // Nothing of it changed the region: it still serves.
    assert!(node.client().status().await.is_ok());
}

#[tokio::test]
async fn answers_from_the_wrong_region_are_refused_and_counted() {
    let tmp = common::TempDir::new("peer-wrong");
    let dir = tmp.path().to_path_buf();
    // ap-south answers at the URL us-east has for eu-west.
    let ap = region(&dir, "ap-south", &[]).await;
    let us = region(
        &dir,
        "us-east",
        &[format!("eu-west=http://{}", ap.peer_addr().unwrap())],
    )
    .await;
    us.client()
        .put("default", "k", &serde_json::json!(1))
        .await
        .unwrap();
    let t = Instant::now();
    loop {
        let s = us.client().status().await.unwrap();
        let link = s["peers"]
            .as_array()
            .and_then(|p| p.iter().find(|l| l["region"] == "eu-west"))
            .cloned()
            .unwrap_or(Value::Null);
        if link["answers_refused_wrong_peer"].as_u64().unwrap_or(0) >= 1 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "us-east never refused ap-south's answers as eu-west's: {link}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nothing reached ap-south as if it were eu-west's peer... and
    // ap-south took nothing from us-east.
    assert!(ap.client().get("default", "k").await.unwrap().is_none());
    let m = metrics(&us).await;
    assert!(
        m.lines()
            .any(|l| l.starts_with("meridian_peer_wrong_peer_answers") && !l.ends_with(" 0")),
        "{m}"
    );
}

/// Posts a peer request from eu-west to us-east signed in `form`,
/// offering wire version `offer`; the status and the answer's payload (its
/// signature checked and removed).
async fn signed_post(
    node: &Node,
    path: &str,
    label: &str,
    payload: &[u8],
    offer: Option<u8>,
    form: Form,
) -> (u16, Vec<u8>) {
    let secret = Secret::new(SECRET.as_bytes()).unwrap();
    let (auth, head, body) =
        secret.sign_request_as(form, path, label, "eu-west", "us-east", now_ms(), payload);
    let mut req = http::Request::post(format!("http://{}{path}", node.peer_addr().unwrap()))
        .header("meridian-peer", "eu-west")
        .header("meridian-peer-auth", auth);
    if let Some(v) = offer {
        req = req.header(
            meridian_core::replication::compact::OFFER_HEADER,
            v.to_string(),
        );
    }
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let r = http
        .request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = r.status().as_u16();
    let bytes = r.into_body().collect().await.unwrap().to_bytes().to_vec();
    let payload = if status == 200 {
        secret
            .open_answer_as(form, "us-east", &head.nonce, &bytes)
            .expect("the answer is signed in the request's form")
            .to_vec()
    } else {
        bytes
    };
    (status, payload)
}

fn one_op_batch(key: &str) -> (meridian_crdt::ReplicaId, meridian_core::Op) {
    let origin = meridian_crdt::ReplicaId::new(
        meridian_crdt::RegionId::new("eu-west").unwrap(),
        uuid::Uuid::from_u128(9),
    );
    let op = meridian_core::Op {
        dot: meridian_crdt::Dot::new(origin.clone(), meridian_crdt::Seq(1)),
        hlc: meridian_crdt::Hlc::new(now_ms(), 0).unwrap(),
        deps: meridian_crdt::VersionVector::new(),
        mutations: vec![meridian_core::Mutation {
            keyspace: meridian_core::KeyspaceName::default_keyspace(),
            key: meridian_core::Key::new(key).unwrap(),
            op: meridian_crdt::ObjectOp::Lww(meridian_crdt::LwwOp::Set(
                meridian_crdt::Value::Json(meridian_crdt::Json::parse("1").unwrap()),
            )),
        }],
    };
    (origin, op)
}

#[tokio::test]
async fn the_wire_version_is_what_the_hello_offers_and_the_region_reads() {
    use meridian_core::replication::compact;
    let tmp = common::TempDir::new("peer-wire");
    let hello = |from: &meridian_crdt::ReplicaId| {
        wire::encode_hello(&Hello {
            from: from.clone(),
            now_ms: now_ms(),
        })
        .unwrap()
    };
    let (origin, op) = one_op_batch("compact");

    // This build: a hello offering version 2 is answered in it, any other
    // in version 1; a version-2 batch is taken and answered in version 2,
    // its answer signed as the request was.
    let node = region(tmp.path(), "us-east", &[]).await;
    let hello_ms = now_ms();
    let offer = wire::encode_hello(&Hello {
        from: origin.clone(),
        now_ms: hello_ms,
    })
    .unwrap();
    let (s, a) = signed_post(
        &node,
        "/peer/v1/hello",
        "hello",
        &offer,
        Some(2),
        Form::Full,
    )
    .await;
    assert_eq!((s, a[0]), (200, compact::VERSION));
    // It names its replica in full, and its clock relative to the hello's.
    let to = compact::AnswerTo {
        replicas: &[],
        sent_ms: hello_ms,
    };
    let answer = compact::decode_answer(&a, to, None).unwrap();
    let session = answer
        .replica
        .clone()
        .expect("a version-2 hello answer names its replica");
    assert_eq!(session.region.as_str(), "us-east");
    assert!(answer.now_ms.abs_diff(now_ms()) < 5_000, "{answer:?}");
    let (s, a) = signed_post(
        &node,
        "/peer/v1/hello",
        "hello",
        &hello(&origin),
        None,
        Form::Full,
    )
    .await;
    assert_eq!((s, a[0]), (200, 1));
    let batch_ms = now_ms();
    let batch = compact::encode(&origin, batch_ms, std::slice::from_ref(&op)).unwrap();
    // Signed in the short form, which goes with version 2.
    let (s, a) = signed_post(
        &node,
        "/peer/v1/ops",
        "ops",
        &batch.bytes,
        None,
        Form::Short,
    )
    .await;
    assert_eq!((s, a[0]), (200, compact::VERSION));
    let to = compact::AnswerTo {
        replicas: &batch.replicas,
        sent_ms: batch_ms,
    };
    // Checked against the hello's replica; another's does not pass.
    let ack = compact::decode_answer(&a, to, Some(&session)).unwrap();
    assert_eq!(ack.vv.get(&origin).0, 1, "the ack covers the op: {ack:?}");
    assert!(ack.now_ms.abs_diff(now_ms()) < 5_000, "{ack:?}");
    assert!(compact::decode_answer(&a, to, Some(&origin)).is_err());
    assert!(compact::decode_answer(&a, to, None).is_err());
    let status = node.client().status().await.unwrap();
    assert_eq!(status["ops"], 1);
    drop(node);

    // A region set to speak version 1 (as builds before it): it answers an
    // offer in version 1 and refuses a version-2 batch, applying nothing.
    let mut spec = NodeSpec::new("us-east", &tmp.path().join("v1"));
    spec.peer_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    spec.args = vec![
        "--cluster-secret-file".into(),
        tmp.path().join("secret").display().to_string(),
    ];
    spec.env
        .push(("MERIDIAN_REPLICATION__WIRE_VERSION".into(), "1".into()));
    let old = Node::start(bin(), spec).await.unwrap();
    let (s, a) = signed_post(
        &old,
        "/peer/v1/hello",
        "hello",
        &hello(&origin),
        Some(2),
        Form::Full,
    )
    .await;
    assert_eq!((s, a[0]), (200, 1));
    let (s, body) = signed_post(&old, "/peer/v1/ops", "ops", &batch.bytes, None, Form::Full).await;
    let text = String::from_utf8_lossy(&body);
    assert_eq!(s, 400, "{text}");
    assert!(text.contains("unknown format version 2"), "{text}");
    // Nor does it read the short signatures.
    let (s, body) = signed_post(&old, "/peer/v1/ops", "ops", &batch.bytes, None, Form::Short).await;
    let text = String::from_utf8_lossy(&body);
    assert_eq!(s, 401, "{text}");
    assert!(text.contains("malformed"), "{text}");
    assert_eq!(old.client().status().await.unwrap()["ops"], 0);
    // Version 1 still goes in.
    let v1 = wire::encode(&origin, now_ms(), &[op]).unwrap();
    let (s, a) = signed_post(&old, "/peer/v1/ops", "ops", &v1, None, Form::Full).await;
    assert_eq!((s, a[0]), (200, 1));
    assert_eq!(old.client().status().await.unwrap()["ops"], 1);
}
