//! What arrives by state transfer or repair rather than as ops: the same
//! bounds hold as for ops.

use meridian_core::*;
use meridian_crdt::ClockError;

mod common;
use common::Region;

#[test]
fn a_snapshot_from_a_fast_clock_cannot_drag_this_clock_or_freeze_a_key() {
    // Before: install and adopt took any HLC, so one fast-clocked region
    // could push every later local timestamp a minute ahead.
    let mut fast = Region::new("ap-south");
    fast.now += 60_000;
    fast.put("default", "k", "1");
    let obj = fast.get("default", "k").expect("written");
    let hlc = fast.engine.clock().last();
    let vv = fast.engine.vv().clone();

    let mut slow = Region::new("us-east");
    let before = slow.engine.clock().last();
    let entry = |o: &meridian_crdt::Object| {
        vec![(
            KeyspaceName::default_keyspace(),
            Key::new("k").unwrap(),
            o.clone(),
        )]
    };
    let e = slow.engine.install(slow.now, entry(&obj), &vv).unwrap_err();
    assert!(
        matches!(e, WriteError::Clock(ClockError::AheadOfLocal { .. })),
        "{e}"
    );
    assert_eq!(slow.engine.staged_len(), 0);
    let e = slow.engine.adopt(slow.now, &vv, hlc).unwrap_err();
    assert!(
        matches!(e, WriteError::Clock(ClockError::AheadOfLocal { .. })),
        "{e}"
    );
    slow.commit();
    assert_eq!(slow.engine.clock().last(), before, "the clock did not move");
    assert!(slow.get("default", "k").is_none(), "nothing was installed");

    // Once local time has caught up, the same snapshot is taken.
    slow.now = fast.now;
    slow.engine.install(slow.now, entry(&obj), &vv).unwrap();
    slow.engine.adopt(slow.now, &vv, hlc).unwrap();
    slow.commit();
    assert_eq!(slow.get("default", "k"), Some(obj));
}

fn put(json: &str) -> Change {
    Change::Put {
        value: meridian_crdt::Value::Json(meridian_crdt::Json::parse(json).unwrap()),
        context: None,
    }
}

#[test]
fn a_crash_between_the_log_sync_and_the_state_checkpoint_of_a_transfer_claims_nothing_missing() {
    // Before: the op adopted after the transfer was replayed from the log
    // on its own, raising the version vector to seq 4 while the state held
    // none of seqs 1..3, which were then never asked for again.
    let mut a = Region::new("us-east");
    for k in ["k1", "k2", "k3"] {
        a.write(vec![("default", k, put("1"))]).unwrap();
    }
    let snapshot: Vec<_> = ["k1", "k2", "k3"]
        .iter()
        .map(|k| {
            (
                KeyspaceName::default_keyspace(),
                Key::new(*k).unwrap(),
                a.get("default", k).unwrap(),
            )
        })
        .collect();
    let snap_vv = a.engine.vv().clone();
    let snap_hlc = a.engine.clock().last();
    a.write(vec![("default", "k4", put("4"))]).unwrap();
    let op4 = a.log.last().unwrap().clone();

    let mut b = Region::new("eu-west");
    b.now = a.now;
    // Op 4 arrives first and waits; the transfer then makes it ready.
    let r = b.engine.receive(b.now, vec![op4.clone()]).unwrap();
    assert_eq!(r.buffered, 1);
    b.engine.install(b.now, snapshot, &snap_vv).unwrap();
    assert_eq!(b.engine.adopt(b.now, &snap_vv, snap_hlc).unwrap(), 1);
    // The group's op (4) is logged and synced; the crash comes before the
    // state store is persisted (the checkpoint the commit asked for).
    let c = b.commit();
    assert!(c.needs_checkpoint);
    b.backend.crash();
    b.restart();
    let vv = b.engine.vv().clone();
    let me = a.engine.replica().clone();
    for (seq, key) in [(1, "k1"), (2, "k2"), (3, "k3"), (4, "k4")] {
        let claimed = vv.get(&me).0 >= seq;
        let held = b.get("default", key).is_some();
        assert!(
            !claimed || held,
            "vv claims seq {seq} but the state lacks {key}"
        );
    }
    // The sender sends what the region does not claim; it converges.
    b.engine.receive(b.now, a.log.clone()).unwrap();
    b.commit();
    for key in ["k1", "k2", "k3", "k4"] {
        assert!(b.get("default", key).is_some(), "{key}");
    }
    assert_eq!(b.engine.vv().get(&me), a.engine.vv().get(&me));
}

#[test]
fn a_collected_key_never_comes_back_through_a_transfer_or_a_repair() {
    // Before: a state page or repair carrying the value the tombstone had
    // beaten (a snapshot taken before the delete) put it back after the
    // tombstone was collected; anti-entropy then spread it everywhere.
    let mut r = Region::new("us-east");
    r.put("default", "k", "1");
    let old_value = r.get("default", "k").unwrap();
    r.write(vec![("default", "k", Change::Delete { context: None })])
        .unwrap();
    let tombstone = r
        .engine
        .reader()
        .get("default", &Key::new("k").unwrap())
        .unwrap()
        .object
        .unwrap();
    let cut = engine::StableCut {
        stable: r.engine.vv().clone(),
        watermark: meridian_crdt::Hlc::new(r.now + 10_000, 0).unwrap(),
    };
    assert_eq!(r.engine.collect(&cut, 100).unwrap(), 1);
    r.commit();
    let raw = |r: &Region| {
        r.engine
            .reader()
            .get("default", &Key::new("k").unwrap())
            .unwrap()
            .object
    };
    assert!(raw(&r).is_none(), "collected");
    // Read from a state before the delete (a snapshot or a reply that
    // predates it): it may not come back.
    let before_delete: meridian_crdt::VersionVector =
        [(r.engine.replica().clone(), meridian_crdt::Seq(1))]
            .into_iter()
            .collect();
    let entry = |o: &meridian_crdt::Object| {
        vec![(
            KeyspaceName::default_keyspace(),
            Key::new("k").unwrap(),
            o.clone(),
        )]
    };
    for stale in [&old_value, &tombstone] {
        r.engine
            .install(r.now, entry(stale), &before_delete)
            .unwrap();
        r.commit();
        assert!(raw(&r).is_none(), "a collected key came back");
    }
    // Read from a state that applied the delete: what it sends is current
    // (a key lost on disk here is repaired this way).
    let current = r.engine.vv().clone();
    r.engine
        .install(r.now, entry(&tombstone), &current)
        .unwrap();
    r.commit();
    assert!(r.get("default", "k").is_none(), "a tombstone is no value");
    // A write the region never saw is installed as usual.
    let mut other = Region::new("ap-south");
    other.now = r.now;
    other.put("default", "k", "2");
    let fresh = other.get("default", "k").unwrap();
    let entries = vec![(
        KeyspaceName::default_keyspace(),
        Key::new("k").unwrap(),
        fresh.clone(),
    )];
    r.engine.install(r.now, entries, other.engine.vv()).unwrap();
    r.commit();
    assert_eq!(r.get("default", "k"), Some(fresh));
}

#[test]
fn a_write_after_an_install_from_a_slightly_fast_clock_orders_after_it() {
    // Before: install checked the bound but never moved the clock, so the
    // next local write was stamped below the installed value, lost to it
    // under LWW everywhere, and was answered 200.
    let mut fast = Region::new("ap-south");
    fast.now += 300; // ahead, within the 500 ms bound
    fast.put("default", "k", "\"theirs\"");
    let obj = fast.get("default", "k").unwrap();
    let mut r = Region::new("us-east");
    let entries = vec![(
        KeyspaceName::default_keyspace(),
        Key::new("k").unwrap(),
        obj,
    )];
    let vv = fast.engine.vv().clone();
    r.engine.install(r.now, entries, &vv).unwrap();
    r.commit();
    r.put("default", "k", "\"ours\"");
    match r.get("default", "k") {
        Some(meridian_crdt::Object::Lww(reg)) => assert_eq!(
            reg.value(),
            Some(&meridian_crdt::Value::Json(
                meridian_crdt::Json::parse("\"ours\"").unwrap()
            ))
        ),
        other => panic!("{other:?}"),
    }
}
