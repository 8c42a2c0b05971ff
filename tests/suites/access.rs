//! Access tokens across regions: a token made in one region works in the
//! others once replicated, and a revocation made in one region is refused
//! in every region within a second.

use std::time::{Duration, Instant};

use meridian_client::{Client, ClientError};
use meridian_harness::cluster::Cluster;
use serde_json::json;

const BOOTSTRAP: &str = "suite-bootstrap-admin-token-0123456789abcdef";

fn with_token(c: &Cluster, region: &str, token: &str) -> Client {
    Client::builder()
        .region(c.url(region).unwrap())
        .access_token(token)
        .build()
        .unwrap()
}

fn refused(r: &Result<Option<meridian_client::Entry>, ClientError>) -> bool {
    matches!(r, Err(ClientError::Http { status: 401, .. }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_replicate_and_revocations_hold_everywhere_within_a_second() {
    let c = Cluster::builder()
        .access_token(BOOTSTRAP)
        .start()
        .await
        .unwrap();
    // Made in eu-west.
    let made = c
        .client("eu-west")
        .create_token(&json!({
            "name": "app",
            "grants": [{"keyspace": "default", "rights": ["read", "write"]}],
        }))
        .await
        .unwrap();
    let token = made["token"].as_str().unwrap().to_string();
    let id = made["id"].as_str().unwrap().to_string();
    // Usable in every region once replicated: a write in ap-south with it.
    let t = Instant::now();
    for r in &c.regions {
        loop {
            match with_token(&c, r, &token).get("default", "probe").await {
                Ok(_) => break,
                Err(e) => assert!(
                    t.elapsed() < Duration::from_secs(10),
                    "{r} never took the token made in eu-west: {e}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    with_token(&c, "ap-south", &token)
        .put(
            "default",
            "k",
            &json!("from ap-south with an eu-west token"),
        )
        .await
        .unwrap();
    // A client without it is refused everywhere.
    for r in &c.regions {
        let anon = Client::new(&c.url(r).unwrap()).unwrap();
        assert!(refused(&anon.get("default", "k").await), "{r}");
    }

    // Revoked in us-east: refused in every region within a second.
    c.client("us-east").revoke_token(&id).await.unwrap();
    let revoked = Instant::now();
    let mut within = Vec::new();
    for r in &c.regions {
        let client = with_token(&c, r, &token);
        loop {
            if refused(&client.get("default", "k").await) {
                within.push((r.clone(), revoked.elapsed()));
                break;
            }
            assert!(
                revoked.elapsed() < Duration::from_secs(1),
                "{r} still takes the token {:?} after its revocation in us-east",
                revoked.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    println!("revocation refused: {within:?}");
    // Its record stays readable, for audit, through the client (the region
    // answers it 410 Gone).
    for r in &c.regions {
        let info = c.client(r).access_token_info(&id).await.unwrap();
        assert!(info["revoked_ms"].is_u64(), "{r}: {info}");
        assert_eq!(info["id"], json!(id));
    }
    // And it stays refused (a restart reads it back from the state).
    let mut c = c;
    c.restart("eu-west").await.unwrap();
    assert!(refused(
        &with_token(&c, "eu-west", &token).get("default", "k").await
    ));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_checks_the_right_before_it_forwards_a_write() {
    let c = Cluster::builder()
        .regions(["us-east"])
        .standbys(1)
        .access_token(BOOTSTRAP)
        .start()
        .await
        .unwrap();
    let leader = c.member_client("us-east");
    let made = leader
        .create_token(&json!({"grants": [{"keyspace": "default", "rights": ["read"]}]}))
        .await
        .unwrap();
    let reader = made["token"].as_str().unwrap().to_string();
    let standby_url = c.url("us-east-s1").unwrap();
    let at_standby = |t: &str| {
        Client::builder()
            .region(standby_url.clone())
            .access_token(t)
            .build()
            .unwrap()
    };
    // Once the standby has the token: a read there works...
    let t = Instant::now();
    while at_standby(&reader).get("default", "k").await.is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the standby never took the token"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...a write with it is refused there (403), not forwarded.
    match at_standby(&reader).put("default", "k", &json!(1)).await {
        Err(ClientError::Http { status: 403, .. }) => {}
        other => panic!("a read-only token's write at the standby: {other:?}"),
    }
    // Without a token at all: 401.
    let anon = Client::new(&standby_url).unwrap();
    assert!(matches!(
        anon.put("default", "k", &json!(2)).await,
        Err(ClientError::Http { status: 401, .. })
    ));
    // The admin's write is forwarded and lands at the leader.
    at_standby(BOOTSTRAP)
        .put("default", "k", &json!(3))
        .await
        .unwrap();
    assert_eq!(
        leader.get("default", "k").await.unwrap().unwrap().value(),
        Some(&json!(3))
    );
    c.stop().await;
}
