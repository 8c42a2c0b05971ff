//! The standby messages of the peer API, sent by hand to a real region:
//! a good heartbeat registers a standby; a bad signature, another region,
//! another format version or a member claiming the leader's own replica id
//! is refused with its 4xx, nothing registered, and the region restarts.

mod common;

use meridian_crdt::{RegionId, ReplicaId};
use meridian_server::peer::auth::Secret;
use meridian_server::peer::call::PeerError;
use meridian_server::peer::client::PeerClient;
use meridian_server::standby::wire::{Follow, Member, MemberStatus, VERSION};

const SECRET: &str = "standby-peer-test-secret-0123456789";

fn client(region: &str, secret: &str) -> PeerClient {
    PeerClient::new(
        &RegionId::new(region).unwrap(),
        Secret::new(secret.as_bytes()).unwrap(),
        Vec::new(),
    )
}

fn follow(replica: ReplicaId, v: u8) -> Follow {
    Follow {
        v,
        member: Member {
            replica,
            peer_url: "http://127.0.0.1:1".into(),
            client_url: "http://127.0.0.1:2".into(),
        },
        epoch: 0,
    }
}

async fn send(c: &PeerClient, url: &str, msg: &Follow) -> Result<MemberStatus, PeerError> {
    c.call(url, "/peer/v1/standby/follow", "follow", msg).await
}

fn status_of(r: Result<MemberStatus, PeerError>) -> u16 {
    match r {
        Err(PeerError::Status { status, .. }) => status,
        Ok(_) => 200,
        Err(e) => panic!("not an answer: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_heartbeats_are_checked_before_anything_registers() {
    let tmp = common::TempDir::new("standby-peer");
    let dir = tmp.path().to_path_buf();
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let mut spec = meridian_harness::node::NodeSpec::new("us-east", &dir.join("data"));
    spec.peer_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    spec.args = vec!["--cluster-secret-file".into(), secret.display().to_string()];
    let mut node = meridian_harness::node::Node::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_meridian")),
        spec,
    )
    .await
    .unwrap();
    let peer = format!("http://{}", node.peer_addr().unwrap());
    let status = node.client().status().await.unwrap();
    let region = RegionId::new("us-east").unwrap();
    let own = ReplicaId::new(
        region.clone(),
        status["replica"]["incarnation"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap(),
    );
    let standby = ReplicaId::new(region, uuid::Uuid::from_u128(7));
    let followers =
        |s: &serde_json::Value| s["standby"]["followers"].as_array().map_or(0, Vec::len);

    // Refused, each with its status; none registers.
    let c = client("us-east", SECRET);
    assert_eq!(
        status_of(send(&c, &peer, &follow(standby.clone(), VERSION + 1)).await),
        400
    );
    assert_eq!(
        status_of(send(&c, &peer, &follow(own.clone(), VERSION)).await),
        409
    );
    // Another region (signed for us-east): the leader refuses it.
    let other = PeerClient::new(
        &RegionId::new("eu-west").unwrap(),
        Secret::new(SECRET.as_bytes()).unwrap(),
        vec![(RegionId::new("us-east").unwrap(), peer.clone())],
    );
    assert_eq!(
        status_of(send(&other, &peer, &follow(standby.clone(), VERSION)).await),
        403
    );
    // Another region that takes this URL for one of its own members: its
    // request, signed for eu-west, is refused here as meant for another.
    let lost = client("eu-west", SECRET);
    assert!(matches!(
        send(&lost, &peer, &follow(standby.clone(), VERSION)).await,
        Err(PeerError::WrongPeer(_))
    ));
    let wrong = client("us-east", "another-secret-0123456789abcdef");
    assert!(
        send(&wrong, &peer, &follow(standby.clone(), VERSION))
            .await
            .is_err(),
        "a wrong secret is refused"
    );
    assert_eq!(followers(&node.client().status().await.unwrap()), 0);

    // The good one: the leader answers as the leader and registers it.
    let st = send(&c, &peer, &follow(standby.clone(), VERSION))
        .await
        .unwrap();
    assert!(st.leading);
    assert_eq!(st.epoch, 1);
    assert_eq!(st.member.replica, own);
    let s = node.client().status().await.unwrap();
    assert_eq!(followers(&s), 1, "{}", s["standby"]);
    assert_eq!(
        s["standby"]["followers"][0]["peer_url"],
        "http://127.0.0.1:1"
    );
    // The same again is one standby, not two.
    send(&c, &peer, &follow(standby, VERSION)).await.unwrap();
    assert_eq!(followers(&node.client().status().await.unwrap()), 1);

    // The region restarts as the leader it was.
    node.restart().await.unwrap();
    let s = node.client().status().await.unwrap();
    assert_eq!(s["standby"]["role"], "leader");
    assert_eq!(s["standby"]["epoch"], 1);
}
