//! The example of docs/harness.md, compiled and run in CI so that it stays
//! true: an application's own workload (shopping carts as sets) under
//! geo-lag and a partition, then the harness's own workload and checkers.

use std::time::Duration;

use meridian_client::Session;
use meridian_harness::check;
use meridian_harness::cluster::Cluster;
use meridian_harness::workload;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carts_survive_a_partition_and_follow_their_owner() {
    // Three real `meridian serve` processes, peer traffic through the link
    // emulator: 80 ms one way, 40 ms between us-east and eu-west.
    let c = Cluster::builder()
        .regions(["us-east", "eu-west", "ap-south"])
        .latency_ms(80)
        .pair_latency_ms("us-east", "eu-west", 40)
        .start()
        .await
        .unwrap();
    c.client("us-east")
        .define_keyspace("carts", &json!({"policy": "set"}))
        .await
        .unwrap();
    c.wait_converged(Duration::from_secs(10)).await.unwrap();

    // Cut us-east from eu-west; both keep taking writes.
    c.partition("us-east", "eu-west").unwrap();
    let alice = Session::new(c.client("us-east"));
    alice
        .op("carts", "alice", &json!({"op": "add", "values": ["book"]}))
        .await
        .unwrap();
    let phone = Session::new(c.client("eu-west"));
    phone
        .op("carts", "alice", &json!({"op": "add", "values": ["pen"]}))
        .await
        .unwrap();

    // Alice moves to ap-south: her session's token makes her read her own
    // write there, whatever the lag (ap-south waits until it has it).
    let travelling = alice.with_client(c.client("ap-south"));
    let cart = travelling.get("carts", "alice").await.unwrap().unwrap();
    assert!(
        cart.value()
            .unwrap()
            .as_array()
            .unwrap()
            .contains(&json!("book"))
    );

    // Heal: every region ends with both items.
    c.heal();
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    for r in &c.regions {
        let cart = c.client(r).get("carts", "alice").await.unwrap().unwrap();
        assert_eq!(cart.value(), Some(&json!(["book", "pen"])), "{r}");
    }

    // The harness's own mixed workload, recorded, with a region killed and
    // restarted under it; then every checker over the final state.
    let mut c = c;
    workload::define_keyspaces(&c.client("us-east"))
        .await
        .unwrap();
    c.wait_converged(Duration::from_secs(10)).await.unwrap();
    let clients: Vec<_> = c.regions.iter().map(|r| (r.clone(), c.client(r))).collect();
    let (stop, history, tasks) = workload::start_writers(&clients, 2, 3_000);
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.kill("eu-west").await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.restart("eu-west").await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let h = workload::stop_writers(stop, history, tasks).await;
    let verdict = check::check_all(&c, &h, Duration::from_secs(60)).await;
    println!("{}\n{verdict}", check::summary(&h));
    assert!(verdict.ok(), "{verdict}");
    assert!(h.ok > 100, "{}", check::summary(&h));
    c.stop().await;
}
