//! Failover between regions, against scripted HTTP servers on loopback:
//! what moves a call to the next region, what stops it, which writes are
//! sent twice, and how redirects are followed. (Real clusters, with a
//! region killed under a session, are in the harness: `tests/suites/failover.rs`.)
//!
//! Past ~400 lines because STYLE keeps one test binary per topic: these cases
//! share the fixtures at the top of this file.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_client::{Client, ClientError, Options, Session};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request as a scripted server saw it.
#[derive(Clone, Debug)]
struct Hit {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Hit {
    /// A header holding Unix milliseconds (the deadline, the floor).
    fn ms(&self, name: &str) -> Option<u64> {
        self.header(name).map(|v| v.parse().unwrap())
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What a scripted server does with a request.
enum Act {
    /// Answers with a status, a JSON body and extra headers.
    Answer(u16, Value, Vec<(&'static str, String)>),
    /// Closes the connection without answering (a region killed mid-request).
    Drop,
    /// Never answers.
    Hang,
}

fn ok(body: Value) -> Act {
    Act::Answer(200, body, vec![])
}

fn written() -> Act {
    ok(json!({"version": "v1", "token": "tok-after", "value": 1}))
}

type Script = Arc<dyn Fn(&Hit) -> Act + Send + Sync>;

struct Fake {
    url: String,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Fake {
    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    fn count(&self, method: &str) -> usize {
        self.hits().iter().filter(|h| h.method == method).count()
    }
}

async fn fake(script: impl Fn(&Hit) -> Act + Send + Sync + 'static) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(Mutex::new(Vec::new()));
    let script: Script = Arc::new(script);
    let seen = hits.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(serve(conn, script.clone(), seen.clone()));
        }
    });
    Fake { url, hits }
}

async fn serve(mut conn: TcpStream, script: Script, hits: Arc<Mutex<Vec<Hit>>>) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or("").split(' ');
        let method = first.next().unwrap_or("").to_string();
        let path = first.next().unwrap_or("").to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string();
        buf.drain(..head_end + len);
        let hit = Hit {
            method,
            path,
            headers,
            body,
        };
        hits.lock().unwrap().push(hit.clone());
        match script(&hit) {
            Act::Answer(status, body, extra) => {
                let body = body.to_string();
                let mut resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
                    body.len()
                );
                for (k, v) in extra {
                    resp.push_str(&format!("{k}: {v}\r\n"));
                }
                resp.push_str("\r\n");
                resp.push_str(&body);
                if conn.write_all(resp.as_bytes()).await.is_err() {
                    return;
                }
            }
            Act::Drop => return,
            Act::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
        }
    }
}

/// A URL nothing listens on: connecting is refused.
async fn dead() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    url
}

fn client(urls: &[&str]) -> Client {
    Client::builder()
        .regions(urls.iter().copied())
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap()
}

#[tokio::test]
async fn calls_move_to_the_next_region_when_one_cannot_be_reached() {
    let a = dead().await;
    let b = fake(|_| ok(json!({"value": 7, "version": "v"}))).await;
    let c = client(&[&a, &b.url]);
    let entry = c.get("default", "k").await.unwrap().unwrap();
    assert_eq!(entry.value(), Some(&json!(7)));
    assert_eq!(entry.served_by, b.url);
    assert_eq!(c.failovers(), 1);
    let health = c.regions();
    assert_eq!(health[0].url, a);
    assert!(!health[0].up, "the unreachable region is set aside");
    assert!(health[1].up);
}

#[tokio::test]
async fn an_incr_that_never_connected_is_sent_to_the_next_region() {
    let a = dead().await;
    let b = fake(|_| written()).await;
    let c = client(&[&a, &b.url]);
    assert_eq!(c.incr("hits", "k", 1).await.unwrap(), 1);
    assert_eq!(b.count("POST"), 1);
}

#[tokio::test]
async fn an_incr_whose_region_dies_mid_request_is_indeterminate_and_not_sent_again() {
    let a = fake(|_| Act::Drop).await;
    let b = fake(|_| written()).await;
    let c = client(&[&a.url, &b.url]);
    let err = c.incr("hits", "k", 1).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Indeterminate { region, .. } if *region == a.url),
        "{err:?}"
    );
    assert!(err.is_indeterminate());
    assert_eq!(a.count("POST"), 1);
    assert!(
        b.hits().is_empty(),
        "a second region must not count it again"
    );
    // Set adds and batches holding an incr are not sent twice either (a
    // fresh client each time: `a` is set aside in this one now).
    let err = client(&[&a.url, &b.url])
        .add("tags", "k", &[json!("x")])
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Indeterminate { .. }), "{err:?}");
    let batch = [
        json!({"keyspace": "default", "key": "a", "op": "put", "value": 1}),
        json!({"keyspace": "hits", "key": "b", "op": "incr", "by": 2}),
    ];
    let err = client(&[&a.url, &b.url])
        .batch(&batch, &Options::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Indeterminate { .. }), "{err:?}");
    assert!(b.hits().is_empty());
}

#[tokio::test]
async fn an_incr_that_times_out_is_indeterminate() {
    let a = fake(|_| Act::Hang).await;
    let b = fake(|_| written()).await;
    let c = Client::builder()
        .regions([&a.url, &b.url])
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = c.incr("hits", "k", 1).await.unwrap_err();
    match err {
        ClientError::Indeterminate { cause, .. } => {
            assert!(matches!(*cause, ClientError::Timeout(300)), "{cause:?}")
        }
        other => panic!("{other:?}"),
    }
    assert!(b.hits().is_empty());
}

/// A region that answers keyspace definitions with `policy` and every
/// write with success.
fn region_with_policy(def: Value) -> impl Fn(&Hit) -> Act {
    move |h: &Hit| {
        if h.method == "GET" && h.path.starts_with("/v1/keyspaces/") {
            ok(def.clone())
        } else {
            written()
        }
    }
}

#[tokio::test]
async fn a_put_whose_outcome_is_unknown_is_sent_again_when_its_keyspace_keeps_one_value() {
    let a =
        fake(|_| Act::Answer(500, json!({"error": "internal", "message": "boom"}), vec![])).await;
    let b = fake(region_with_policy(
        json!({"name": "default", "policy": "lww"}),
    ))
    .await;
    let c = client(&[&a.url, &b.url]);
    let w = c.put("default", "k", &json!("v")).await.unwrap();
    assert_eq!(w.served_by, b.url);
    assert_eq!(b.count("PUT"), 1);
    // Deletes always are (a fresh client: `a` is set aside in this one).
    let w = client(&[&a.url, &b.url])
        .delete("default", "k")
        .await
        .unwrap();
    assert_eq!(w.served_by, b.url);
    assert_eq!(a.count("DELETE"), 1);
}

#[tokio::test]
async fn a_put_to_a_custom_keyspace_is_not_sent_twice() {
    let a = fake(|_| Act::Drop).await;
    let b = fake(region_with_policy(
        json!({"name": "carts", "policy": "custom", "merge": "sum"}),
    ))
    .await;
    let c = client(&[&a.url, &b.url]);
    let err = c.put("carts", "k", &json!(1)).await.unwrap_err();
    assert!(matches!(err, ClientError::Indeterminate { .. }), "{err:?}");
    assert_eq!(b.count("PUT"), 0, "only the keyspace was looked up");
    assert_eq!(b.count("GET"), 1);
}

#[tokio::test]
async fn a_patch_is_sent_again_only_when_every_field_it_touches_keeps_one_value() {
    let def = json!({"name": "profiles", "policy": "doc", "schema": {"views": "counter"}});
    let a = fake(|_| Act::Drop).await;
    let b = fake(region_with_policy(def)).await;
    let c = client(&[&a.url, &b.url]);
    let w = c
        .patch("profiles", "k", &json!({"name": "Ada"}))
        .await
        .unwrap();
    assert_eq!(w.served_by, b.url);
    // A fresh client, so the patch is tried at `a` first again.
    let c2 = client(&[&a.url, &b.url]);
    let err = c2
        .patch("profiles", "k", &json!({"views": 1}))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Indeterminate { .. }), "{err:?}");
    assert_eq!(b.count("POST"), 1, "the counter patch was not sent again");
}

#[tokio::test]
async fn refusals_move_on_without_setting_the_region_aside() {
    let refusal = json!({"error": "handoff_pending", "message": "waiting for a fence"});
    let a = fake(move |_| Act::Answer(503, refusal.clone(), vec![])).await;
    let b = fake(|h| match h.method.as_str() {
        "GET" => ok(json!({"value": 1, "version": "v"})),
        _ => written(),
    })
    .await;
    let c = client(&[&a.url, &b.url]);
    for _ in 0..2 {
        let e = c.get("default", "k").await.unwrap().unwrap();
        assert_eq!(e.served_by, b.url);
    }
    assert_eq!(a.count("GET"), 2, "a refusing region stays first");
    assert!(c.regions()[0].up);
    // A refused incr was not applied: it may go on.
    assert_eq!(c.incr("hits", "k", 1).await.unwrap(), 1);
}

#[tokio::test]
async fn when_every_region_refuses_the_caller_hears_the_refusal() {
    let refusal = json!({"error": "behind_token", "message": "behind on us-east"});
    let r1 = refusal.clone();
    let a = fake(move |_| Act::Answer(503, r1.clone(), vec![])).await;
    let b = fake(move |_| Act::Answer(503, refusal.clone(), vec![])).await;
    let c = client(&[&a.url, &b.url]);
    let err = c.get("default", "k").await.unwrap_err();
    assert!(err.is_code("behind_token"), "{err:?}");
    assert!(!err.is_indeterminate());
    // A put that was lost in flight at `a` and refused at `b` may still
    // have been applied at `a`: indeterminate, not a refusal.
    let lost = fake(|_| Act::Drop).await;
    let c = client(&[&lost.url, &b.url]);
    let err = c.delete("default", "k").await.unwrap_err();
    assert!(matches!(err, ClientError::Indeterminate { .. }), "{err:?}");
}

#[tokio::test]
async fn a_421_is_followed_to_the_owner_with_the_same_request() {
    let b = fake(|_| written()).await;
    let owner = format!("{}/v1/kv/eu/k", b.url);
    let a = fake(move |_| {
        Act::Answer(
            421,
            json!({"error": "not_owner", "owner": "eu-west", "url": owner}),
            vec![],
        )
    })
    .await;
    let c = client(&[&a.url]);
    let opts = Options {
        write_concern: Some("one".into()),
        ..Options::default()
    };
    let w = c
        .op_with("eu", "k", &json!({"op": "incr", "by": 2}), &opts)
        .await
        .unwrap();
    assert_eq!(w.served_by, b.url);
    let hit = &b.hits()[0];
    assert_eq!(
        (hit.method.as_str(), hit.path.as_str()),
        ("POST", "/v1/kv/eu/k")
    );
    assert_eq!(hit.header("meridian-write-concern"), Some("one"));
    assert_eq!(
        serde_json::from_str::<Value>(&hit.body).unwrap(),
        json!({"op": "incr", "by": 2})
    );
    assert_eq!(c.failovers(), 0, "a redirect is not a failover");
}

#[tokio::test]
async fn redirects_are_followed_a_bounded_number_of_times() {
    let b = fake(|_| written()).await;
    let leader = format!("{}/v1/kv/x/k", b.url);
    let a = fake(move |_| Act::Answer(307, Value::Null, vec![("location", leader.clone())])).await;
    let c = client(&[&a.url]);
    let w = c.put("x", "k", &json!({"n": 1})).await.unwrap();
    assert_eq!(w.served_by, b.url);
    let hit = &b.hits()[0];
    assert_eq!(
        (hit.method.as_str(), hit.path.as_str()),
        ("PUT", "/v1/kv/x/k")
    );
    assert_eq!(hit.body, r#"{"n":1}"#);

    // A 307 to another path is not followed: what the call may do was
    // decided for this one.
    let moved = format!("{}/v1/kv/other/k", b.url);
    let elsewhere =
        fake(move |_| Act::Answer(307, Value::Null, vec![("location", moved.clone())])).await;
    let err = client(&[&elsewhere.url])
        .incr("x", "k", 1)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(307), "{err:?}");
    assert_eq!(b.count("POST"), 0);

    // A region that redirects to itself is given up on.
    let looping = fake(|h| {
        let url = format!("http://{}/v1/kv/x/k", h.header("host").unwrap_or(""));
        Act::Answer(421, json!({"error": "not_owner", "url": url}), vec![])
    })
    .await;
    let c = client(&[&looping.url]);
    let err = c.put("x", "k", &json!(1)).await.unwrap_err();
    assert_eq!(err.status(), Some(421), "{err:?}");
    assert_eq!(
        looping.count("PUT"),
        1 + meridian_client::call::MAX_REDIRECTS
    );
}

#[tokio::test]
async fn the_client_returns_to_its_preferred_region_once_the_backoff_has_passed() {
    let failing = Arc::new(AtomicBool::new(true));
    let f = failing.clone();
    let a = fake(move |_| {
        if f.load(Ordering::SeqCst) {
            Act::Answer(500, json!({"error": "internal", "message": "x"}), vec![])
        } else {
            ok(json!({"value": "a", "version": "v"}))
        }
    })
    .await;
    let b = fake(|_| ok(json!({"value": "b", "version": "v"}))).await;
    let c = Client::builder()
        .regions([&a.url, &b.url])
        .backoff(Duration::from_millis(150), Duration::from_millis(150))
        .build()
        .unwrap();
    let served = |e: Option<meridian_client::Entry>| e.unwrap().served_by;
    assert_eq!(served(c.get("default", "k").await.unwrap()), b.url);
    // Set aside: the next call goes straight to `b`.
    assert_eq!(served(c.get("default", "k").await.unwrap()), b.url);
    assert_eq!(a.count("GET"), 1);
    failing.store(false, Ordering::SeqCst);
    // The watcher probes `a` once its delay has passed (jitter can double
    // the 150 ms), with no call needed to notice.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while !c.regions()[0].up {
        assert!(std::time::Instant::now() < until, "{:?}", c.regions());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(a.hits().iter().any(|h| h.path == "/healthz"));
    assert_eq!(served(c.get("default", "k").await.unwrap()), a.url);
    assert_eq!(c.failovers(), 2);
}

#[tokio::test]
async fn a_session_carries_its_token_to_the_next_region() {
    let a = dead().await;
    let b = fake(|h| {
        if h.method == "GET" {
            Act::Answer(
                200,
                json!({"value": 1, "version": "v"}),
                vec![("meridian-token", "tok-b".into())],
            )
        } else {
            written()
        }
    })
    .await;
    let s = Session::new(client(&[&a, &b.url])).with_wait_ms(900);
    s.set_token(Some("tok-before".into()));
    s.get("default", "k").await.unwrap();
    let hit = &b.hits()[0];
    assert_eq!(hit.header("meridian-token"), Some("tok-before"));
    assert_eq!(hit.header("meridian-wait-ms"), Some("900"));
    assert_eq!(s.token().as_deref(), Some("tok-b"));
    s.put("default", "k", &json!(2)).await.unwrap();
    assert_eq!(b.hits()[1].header("meridian-token"), Some("tok-b"));
    assert_eq!(s.token().as_deref(), Some("tok-after"));
}

#[tokio::test]
async fn ranking_orders_regions_by_round_trip_and_puts_the_unreachable_last() {
    let a = dead().await;
    let slow = fake(|_| Act::Hang).await;
    let b = fake(|_| ok(json!({}))).await;
    let c = client(&[&a, &slow.url, &b.url]);
    let order = c.rank().await;
    assert_eq!(order[0].url, b.url);
    assert!(order[0].rtt.is_some());
    assert!(order[1..].iter().all(|r| r.rtt.is_none()));
    assert_eq!(c.base_url(), b.url);
}

#[test]
fn builder_refuses_what_cannot_work() {
    let err = |b: meridian_client::ClientBuilder| match b.build() {
        Err(ClientError::Invalid(m)) => m,
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("built"),
    };
    assert!(err(Client::builder()).contains("needs a region"));
    assert!(err(Client::builder().region("https://x:1")).contains("ca_file"));
    assert!(err(Client::builder().region("ftp://x:1")).contains("http://"));
    assert!(err(Client::builder().region("http://")).contains("http://"));
    assert!(err(Client::builder().regions(["http://a:1", "http://a:1/"])).contains("twice"));
    assert!(
        err(Client::builder()
            .region("http://a:1")
            .rank_every(Duration::from_secs(1)))
        .contains("runtime")
    );
}

#[tokio::test]
async fn a_region_behind_the_token_is_tried_after_the_others_for_a_while() {
    let refusal = json!({"error": "behind_token", "message": "behind"});
    let a = fake(move |_| Act::Answer(503, refusal.clone(), vec![])).await;
    let b = fake(|_| ok(json!({"value": 1, "version": "v"}))).await;
    let c = client(&[&a.url, &b.url]);
    for _ in 0..3 {
        let e = c.get("default", "k").await.unwrap().unwrap();
        assert_eq!(e.served_by, b.url);
    }
    assert_eq!(a.count("GET"), 1, "not asked again while it catches up");
    assert!(c.regions()[0].up);
    tokio::time::sleep(meridian_client::regions::LAGGING_HOLD + Duration::from_millis(100)).await;
    c.get("default", "k").await.unwrap();
    assert_eq!(a.count("GET"), 2, "asked again once the hold passed");
}

#[tokio::test]
async fn writes_carry_their_deadline_and_reads_do_not() {
    let a = fake(|h| match h.method.as_str() {
        "GET" => ok(json!({"value": 1, "version": "v"})),
        _ => written(),
    })
    .await;
    let c = Client::builder()
        .region(&a.url)
        .timeout(Duration::from_secs(4))
        .build()
        .unwrap();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    let before = now();
    c.put("default", "k", &json!(1)).await.unwrap();
    c.get("default", "k").await.unwrap();
    let hits = a.hits();
    let deadline: u64 = hits[0]
        .header(meridian_client::call::DEADLINE_HEADER)
        .expect("a write carries its deadline")
        .parse()
        .unwrap();
    // 4 s, less a margin of 250 ms for clocks behind this one.
    assert!(
        (before + 3_700..=now() + 3_750).contains(&deadline),
        "{deadline} vs {before}"
    );
    assert_eq!(hits[1].header(meridian_client::call::DEADLINE_HEADER), None);
}

#[tokio::test]
async fn a_put_lost_in_flight_at_a_live_region_waits_out_its_deadline_before_going_on() {
    // `a` drops every connection but is alive (its port accepts): the first
    // copy could still be taken there until its deadline.
    let a = fake(|_| Act::Drop).await;
    let b = fake(region_with_policy(
        json!({"name": "default", "policy": "lww"}),
    ))
    .await;
    let c = Client::builder()
        .regions([&a.url, &b.url])
        .timeout(Duration::from_millis(800))
        .build()
        .unwrap();
    let t = std::time::Instant::now();
    let w = c.put("default", "k", &json!(1)).await.unwrap();
    assert_eq!(w.served_by, b.url);
    assert!(
        t.elapsed() >= Duration::from_millis(800),
        "sent on after {:?}, before the first copy's deadline",
        t.elapsed()
    );
    // The copy sent on is stamped above the first copy's deadline.
    let first = a.hits()[0]
        .ms(meridian_client::call::DEADLINE_HEADER)
        .unwrap();
    let put = b.hits().into_iter().find(|h| h.method == "PUT").unwrap();
    let floor = put
        .ms(meridian_client::call::NOT_BEFORE_HEADER)
        .expect("a floor on the copy sent on");
    assert_eq!(floor, first);
    assert_eq!(
        a.hits()[0].header(meridian_client::call::NOT_BEFORE_HEADER),
        None
    );
}

#[tokio::test]
async fn a_put_that_timed_out_goes_on_at_once_with_the_first_deadline_as_its_floor() {
    let a = fake(|_| Act::Hang).await;
    let b = fake(region_with_policy(
        json!({"name": "default", "policy": "lww"}),
    ))
    .await;
    let c = Client::builder()
        .regions([&a.url, &b.url])
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let t = std::time::Instant::now();
    let w = c.put("default", "k", &json!(1)).await.unwrap();
    assert_eq!(w.served_by, b.url);
    // The 1 s timeout, then at once (a second wait would make it 2 s).
    assert!(
        t.elapsed() < Duration::from_millis(1_800),
        "{:?}",
        t.elapsed()
    );
    let first = a.hits()[0]
        .ms(meridian_client::call::DEADLINE_HEADER)
        .unwrap();
    let put = b.hits().into_iter().find(|h| h.method == "PUT").unwrap();
    assert_eq!(
        put.ms(meridian_client::call::NOT_BEFORE_HEADER),
        Some(first)
    );
}

#[tokio::test]
async fn an_owner_unreachable_answer_is_a_refusal_only_when_the_write_was_not_sent() {
    let sent = json!({"error": "owner_unreachable", "message": "x", "indeterminate": true});
    let a = fake(move |_| Act::Answer(503, sent.clone(), vec![])).await;
    let b = fake(|_| written()).await;
    let err = client(&[&a.url, &b.url])
        .incr("hits", "k", 1)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Indeterminate { .. }), "{err:?}");
    assert!(err.is_code("owner_unreachable"));
    assert!(b.hits().is_empty());
    let not_sent = json!({"error": "owner_unreachable", "message": "x", "indeterminate": false});
    let a2 = fake(move |_| Act::Answer(503, not_sent.clone(), vec![])).await;
    assert_eq!(
        client(&[&a2.url, &b.url])
            .incr("hits", "k", 1)
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn an_incr_redirected_to_an_owner_that_drops_it_is_not_sent_anywhere_else() {
    let owner = fake(|_| Act::Drop).await;
    let other = fake(|_| written()).await;
    let url = format!("{}/v1/kv/hits/k", owner.url);
    let a = fake(move |_| {
        Act::Answer(
            421,
            json!({"error": "not_owner", "url": url.clone()}),
            vec![],
        )
    })
    .await;
    let err = client(&[&a.url, &other.url])
        .incr("hits", "k", 1)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Indeterminate { region, .. } if *region == owner.url),
        "{err:?}"
    );
    assert!(other.hits().is_empty());
}

#[tokio::test]
async fn a_write_concern_timeout_is_an_answer_and_a_proxys_504_is_a_failure() {
    let concern = json!({"error": "write_concern_timeout", "message": "1 of 3", "version": "v", "token": "t"});
    let a = fake(move |_| Act::Answer(504, concern.clone(), vec![])).await;
    let b = fake(|_| written()).await;
    let err = client(&[&a.url, &b.url])
        .incr("hits", "k", 1)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(504));
    assert!(err.is_code("write_concern_timeout"));
    assert!(b.hits().is_empty(), "durable at a: not sent again");

    // An HTML 504 from a proxy in front of a region: the read goes on.
    let proxy = fake(|_| Act::Answer(504, Value::Null, vec![])).await;
    let e = client(&[&proxy.url, &b.url])
        .get("default", "k")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.served_by, b.url);
}

#[tokio::test]
async fn an_error_answer_after_an_unknown_outcome_is_indeterminate() {
    let a = fake(|_| Act::Answer(500, json!({"error": "internal", "message": "x"}), vec![])).await;
    let b = fake(|h| {
        if h.method == "GET" {
            ok(json!({"name": "default", "policy": "lww"}))
        } else {
            Act::Answer(
                409,
                json!({"error": "stale_context", "message": "x"}),
                vec![],
            )
        }
    })
    .await;
    let err = client(&[&a.url, &b.url])
        .put("default", "k", &json!(1))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Indeterminate { region, .. } if *region == a.url),
        "the put may have been applied at a: {err:?}"
    );
}

#[tokio::test]
async fn a_timeout_too_long_to_count_is_no_timeout() {
    let a = fake(|h| match h.method.as_str() {
        "GET" => ok(json!({"value": 1, "version": "v"})),
        _ => written(),
    })
    .await;
    let c = Client::builder()
        .region(&a.url)
        .timeout(Duration::MAX)
        .build()
        .unwrap();
    c.put("default", "k", &json!(1)).await.unwrap();
    assert!(c.get("default", "k").await.unwrap().is_some());
    let deadline = a.hits()[0]
        .header(meridian_client::call::DEADLINE_HEADER)
        .unwrap()
        .to_string();
    assert_eq!(deadline, u64::MAX.to_string());
}
