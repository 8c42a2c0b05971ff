//! Ownership maps through the engine: who takes writes, the fenced
//! handoff, fallbacks, and map changes by the steward only.

mod common;

use common::Region;
use meridian_core::ownership::{Admission, Epoch, MapError, MapRequest, RuleRef};
use meridian_core::*;
use meridian_crdt::{Json, Policy, RegionId, Value};

fn r(s: &str) -> RegionId {
    RegionId::new(s).unwrap()
}

fn cluster() -> Vec<Region> {
    let mut regions: Vec<Region> = ["a", "b", "c"].into_iter().map(Region::new).collect();
    for g in &mut regions {
        g.engine.enable_merges(vec![r("a"), r("b"), r("c")]);
    }
    regions[0].define("users", Policy::Lww);
    everywhere(&mut regions);
    regions
}

/// A cluster with `map` set at the steward and every region's fence
/// everywhere.
fn fenced_cluster(map: &str) -> Vec<Region> {
    let mut g = cluster();
    set(&mut g[0], map).unwrap().unwrap();
    everywhere(&mut g);
    for x in g.iter_mut() {
        fence(x);
    }
    everywhere(&mut g);
    g
}

/// Ships every op `from` logged to `to`.
fn ship(regions: &mut [Region], from: usize, to: usize) {
    let ops = regions[from].log.clone();
    let g = &mut regions[to];
    g.now += 1;
    g.engine.receive(g.now, ops).unwrap();
    g.commit();
}

fn everywhere(regions: &mut [Region]) {
    for _ in 0..2 {
        for from in 0..regions.len() {
            for to in 0..regions.len() {
                if from != to {
                    ship(regions, from, to);
                }
            }
        }
    }
}

fn fence(g: &mut Region) -> usize {
    g.now += 1;
    let n = g.engine.write_fences(g.now).unwrap();
    g.commit();
    n
}

fn put(g: &mut Region, key: &str, v: &str, fallback: bool) -> Result<Committed, WriteError> {
    g.now += 1;
    g.engine.submit(
        g.now,
        WriteRequest {
            deadline_ms: None,
            not_before_ms: None,
            fallback,
            mutations: vec![MutationRequest {
                keyspace: "users".into(),
                key: Key::new(key).unwrap(),
                change: Change::Put {
                    value: Value::Json(Json::parse(v).unwrap()),
                    context: None,
                },
            }],
        },
    )?;
    Ok(g.commit())
}

fn set(g: &mut Region, json: &str) -> Result<Option<ownership::OwnershipMap>, WriteError> {
    g.now += 1;
    let req: MapRequest = serde_json::from_str(json).unwrap();
    let out = g.engine.set_ownership(g.now, "users", &req);
    g.commit();
    out
}

#[test]
fn a_handoff_is_fenced_and_only_the_owner_takes_writes() {
    let mut g = cluster();
    // Only the steward (the first region by name) changes maps.
    let err = set(&mut g[1], r#"{"rules":[{"prefix":"eu/","owner":"b"}]}"#).unwrap_err();
    assert!(matches!(err, WriteError::NotSteward { ref steward } if *steward == r("a")));
    let map = set(&mut g[0], r#"{"rules":[{"prefix":"eu/","owner":"b"}]}"#)
        .unwrap()
        .unwrap();
    assert_eq!(map.epoch(), Epoch(1));
    // The same map again changes nothing.
    assert!(
        set(&mut g[0], r#"{"rules":[{"prefix":"eu/","owner":"b"}]}"#)
            .unwrap()
            .is_none()
    );
    assert_eq!(fence(&mut g[0]), 1);
    assert_eq!(fence(&mut g[0]), 0, "one fence per epoch");
    ship(&mut g, 0, 1);
    ship(&mut g, 0, 2);
    // b owns eu/ now, but c could still have written eu/ keys before it
    // applied the map: b waits for c's fence.
    let err = put(&mut g[1], "eu/1", "1", false).unwrap_err();
    assert!(
        matches!(err, WriteError::HandoffPending { ref waiting, epoch: Epoch(1), .. } if waiting == &[r("c")]),
        "{err}"
    );
    // Elsewhere: a typed redirect naming the owner.
    let err = put(&mut g[2], "eu/1", "1", false).unwrap_err();
    assert!(
        matches!(err, WriteError::NotOwner { ref owner, epoch: Epoch(1), rule: Some(0), .. } if *owner == r("b"))
    );
    // Keys no rule matches are open everywhere.
    put(&mut g[2], "us/1", "1", false).unwrap();
    assert_eq!(fence(&mut g[2]), 1);
    ship(&mut g, 2, 1);
    put(&mut g[1], "eu/1", "\"b1\"", false).unwrap();

    // Fallback is refused under `fallback: reject`, even when asked.
    assert!(matches!(
        put(&mut g[2], "eu/1", "\"c1\"", true),
        Err(WriteError::NotOwner { .. })
    ));

    // Handoff b -> c at epoch 2.
    everywhere(&mut g);
    g[0].now += 1;
    let now = g[0].now;
    let moved = g[0]
        .engine
        .transfer_ownership(now, "users", &RuleRef::Index(0), &r("c"), None)
        .unwrap()
        .unwrap();
    g[0].commit();
    assert_eq!(moved.epoch(), Epoch(2));
    ship(&mut g, 0, 1);
    ship(&mut g, 0, 2);
    // b stops at once; c waits for b's fence (not a's: a never owned eu/).
    assert!(
        matches!(put(&mut g[1], "eu/1", "\"b2\"", false), Err(WriteError::NotOwner { ref owner, .. }) if *owner == r("c"))
    );
    let err = put(&mut g[2], "eu/1", "\"c2\"", false).unwrap_err();
    assert!(
        matches!(err, WriteError::HandoffPending { ref waiting, .. } if waiting == &[r("b")]),
        "{err}"
    );
    // c restarts before b's fence arrives: still waiting, still fenced.
    g[2].restart();
    g[2].engine.enable_merges(vec![r("a"), r("b"), r("c")]);
    assert!(matches!(
        g[2].engine.admission(
            &KeyspaceName::new("users").unwrap(),
            &Key::new("eu/1").unwrap()
        ),
        Admission::Pending { .. }
    ));
    assert_eq!(fence(&mut g[1]), 1);
    ship(&mut g, 1, 2);
    put(&mut g[2], "eu/1", "\"c2\"", false).unwrap();

    // Stale compare-and-set.
    let err = set(
        &mut g[0],
        r#"{"rules":[{"prefix":"eu/","owner":"a"}],"epoch":1}"#,
    )
    .unwrap_err();
    assert!(matches!(
        err,
        WriteError::Map(MapError::Stale {
            expected: Epoch(1),
            current: Epoch(2)
        })
    ));

    // Every region converges on the same value, and nothing conflicted.
    for g in &mut g {
        fence(g);
    }
    everywhere(&mut g);
    for x in &g {
        let got = x.get("users", "eu/1").unwrap();
        assert_eq!(
            format!("{got:?}"),
            format!("{:?}", g[2].get("users", "eu/1").unwrap())
        );
        let p = x.engine.reader().published();
        assert!(
            p.stats.conflicts.is_empty(),
            "owned writes never conflict: {:?}",
            p.stats.conflicts
        );
    }
}

#[test]
fn a_fallback_write_is_taken_and_recorded_only_when_the_map_allows_it() {
    let mut g = cluster();
    set(
        &mut g[0],
        r#"{"rules":[{"prefix":"eu/","owner":"b"}],"fallback":"accept"}"#,
    )
    .unwrap()
    .unwrap();
    everywhere(&mut g);
    assert!(matches!(
        put(&mut g[2], "eu/9", "1", false),
        Err(WriteError::NotOwner {
            fallback: ownership::Fallback::Accept,
            ..
        })
    ));
    put(&mut g[2], "eu/9", "\"taken by c\"", true).unwrap();
    let p = g[2].engine.reader().published();
    assert_eq!(
        p.stats
            .ownership_fallbacks
            .get(&KeyspaceName::new("users").unwrap()),
        Some(&1)
    );
    let users = KeyspaceName::new("users").unwrap();
    let entries = engine::ledger::query(
        &g[2].backend,
        std::iter::once(&users),
        &engine::ledger::LedgerQuery {
            limit: 100,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].rule, "ownership_fallback");
    let fb = entries[0].fallback.as_ref().unwrap();
    assert_eq!(
        (fb.owner.as_str(), fb.epoch, fb.rule),
        ("b", Epoch(1), Some(0))
    );
}

#[test]
fn a_rolled_back_owner_takes_no_writes_until_it_has_its_own_back() {
    let mut g = fenced_cluster(r#"{"rules":[{"prefix":"eu/","owner":"b"}]}"#);
    put(&mut g[1], "eu/1", "1", false).unwrap();
    // b restarts believing peers hold more of its own ops than it has (a
    // rolled-back disk): it waits for them before taking owned writes.
    let mut hold = g[1].engine.vv().clone();
    let me = g[1].engine.replica().clone();
    hold.raise(&me, meridian_crdt::Seq(hold.get(&me).0 + 5));
    g[1].engine
        .enable_merges_after(vec![r("a"), r("b"), r("c")], hold);
    let err = put(&mut g[1], "eu/2", "2", false).unwrap_err();
    assert!(
        matches!(err, WriteError::HandoffPending { ref waiting, .. } if waiting == &[r("b")]),
        "{err}"
    );
    // Keys without an owner are taken as before.
    put(&mut g[1], "open/1", "1", false).unwrap();
}

#[test]
fn after_a_fallback_epoch_a_new_owner_waits_for_every_region() {
    let mut g = fenced_cluster(r#"{"rules":[{"prefix":"eu/","owner":"b"}],"fallback":"accept"}"#);
    // c took a fallback write at epoch 1; the range moves to a at epoch 2.
    put(&mut g[2], "eu/9", "\"c\"", true).unwrap();
    g[0].now += 1;
    let now = g[0].now;
    g[0].engine
        .transfer_ownership(now, "users", &RuleRef::Index(0), &r("a"), None)
        .unwrap()
        .unwrap();
    g[0].commit();
    ship(&mut g, 0, 1);
    fence(&mut g[1]);
    ship(&mut g, 1, 0);
    fence(&mut g[0]);
    // b (the old owner) has fenced, but c may have written by fallback at
    // epoch 1: a waits for c too.
    let err = put(&mut g[0], "eu/9", "\"a\"", false).unwrap_err();
    assert!(
        matches!(err, WriteError::HandoffPending { ref waiting, .. } if waiting == &[r("c")]),
        "{err}"
    );
    ship(&mut g, 0, 2);
    ship(&mut g, 1, 2);
    fence(&mut g[2]);
    ship(&mut g, 2, 0);
    put(&mut g[0], "eu/9", "\"a\"", false).unwrap();
    everywhere(&mut g);
    let users = KeyspaceName::new("users").unwrap();
    for x in &g {
        assert!(
            !x.engine
                .reader()
                .published()
                .stats
                .conflicts
                .contains_key(&users),
            "a's write follows c's fallback write"
        );
    }
}

#[test]
fn a_region_that_knows_an_owned_keyspace_but_not_its_map_takes_no_writes_to_it() {
    let mut g = cluster();
    let before = g[0].log.len();
    set(&mut g[0], r#"{"rules":[{"prefix":"eu/","owner":"b"}]}"#)
        .unwrap()
        .unwrap();
    // The steward marked the keyspace owned, then wrote the map: two ops.
    assert_eq!(g[0].log.len(), before + 2);
    // c gets the first (a batch cut short, a region catching up) only.
    let first = g[0].log[..before + 1].to_vec();
    g[2].now += 1;
    let now = g[2].now;
    g[2].engine.receive(now, first).unwrap();
    g[2].commit();
    let err = put(&mut g[2], "anything", "1", false).unwrap_err();
    assert!(
        matches!(err, WriteError::HandoffPending { ref waiting, .. } if waiting.is_empty()),
        "{err}"
    );
    assert!(
        err.to_string().contains("has not reached this region yet"),
        "{err}"
    );
    // A definition made anywhere later keeps the keyspace owned.
    g[2].now += 1;
    let mut def = KeyspaceDef::new(KeyspaceName::new("users").unwrap(), Policy::Lww);
    def.ledger_capacity = 5;
    let now = g[2].now;
    assert!(g[2].engine.define(now, def).unwrap());
    g[2].commit();
    assert!(
        g[2].engine
            .registry()
            .is_owned(&KeyspaceName::new("users").unwrap())
    );
    let err = put(&mut g[2], "anything", "1", false).unwrap_err();
    assert!(matches!(err, WriteError::HandoffPending { .. }), "{err}");
    // With the map, keys no rule matches are open again.
    ship(&mut g, 0, 2);
    put(&mut g[2], "anything", "1", false).unwrap();
    assert!(matches!(
        put(&mut g[2], "eu/1", "1", false),
        Err(WriteError::NotOwner { .. })
    ));
}

#[test]
fn with_fallback_accept_a_map_change_does_not_block_an_owner_that_kept_its_range() {
    let mut g = fenced_cluster(r#"{"rules":[{"prefix":"eu/","owner":"b"}],"fallback":"accept"}"#);
    put(&mut g[1], "eu/1", "1", false).unwrap();
    // c is away; an unrelated rule is added. b still owns eu/: its writes
    // go on (fallbacks elsewhere were concurrent with its own anyway).
    set(
        &mut g[0],
        r#"{"rules":[{"prefix":"eu/","owner":"b"},{"prefix":"us/","owner":"a"}],"fallback":"accept"}"#,
    )
    .unwrap()
    .unwrap();
    ship(&mut g, 0, 1);
    fence(&mut g[1]);
    put(&mut g[1], "eu/2", "2", false).unwrap();
}

#[test]
fn custom_keyspaces_take_no_ownership_map() {
    let mut g = cluster();
    g[0].now += 1;
    let mut def = KeyspaceDef::new(KeyspaceName::new("carts").unwrap(), Policy::Custom);
    def.merge = Some("sum".into());
    let now = g[0].now;
    g[0].engine.define(now, def).unwrap();
    g[0].commit();
    g[0].now += 1;
    let now = g[0].now;
    let req: MapRequest = serde_json::from_str(r#"{"rules":[],"default":"b"}"#).unwrap();
    let err = g[0].engine.set_ownership(now, "carts", &req).unwrap_err();
    assert!(matches!(err, WriteError::Map(MapError::Custom(_))), "{err}");
    assert!(!g[0].engine.has_staged());
}
