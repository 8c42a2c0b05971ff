//! The engine's cycle (submit or receive, stage, commit) asserted through
//! what it returns and what readers see, on the in-memory backend.
//!
//! Past ~400 lines because STYLE keeps one test binary per topic: these cases
//! share the fixtures at the top of this file.

use std::sync::Arc;

use meridian_core::engine::ledger::LedgerQuery;
use meridian_core::*;
use meridian_crdt::{Crdt, Json, Object, Policy, Seq, Value};

mod common;
use common::{Region, replica};

fn lww_value(o: &Object) -> String {
    match o {
        Object::Lww(r) => match r.value() {
            Some(Value::Json(j)) => j.as_str().to_string(),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_write_is_invisible_until_committed_then_readable_with_a_covering_token() {
    let mut r = Region::new("us-east");
    let req = WriteRequest {
        deadline_ms: None,
        not_before_ms: None,
        fallback: false,
        mutations: vec![MutationRequest {
            keyspace: "default".into(),
            key: Key::new("k").unwrap(),
            change: Change::Put {
                value: Value::Json(Json::parse("1").unwrap()),
                context: None,
            },
        }],
    };
    r.engine.submit(5, req).unwrap();
    assert_eq!(r.engine.staged_len(), 1);
    assert!(
        r.get("default", "k").is_none(),
        "staged writes must not be visible"
    );
    let c = r.commit();
    assert_eq!(c.applied.len(), 1);
    assert_eq!(c.applied[0].op.dot.seq, Seq(1));
    assert_eq!(lww_value(&r.get("default", "k").unwrap()), "1");
    let read = r
        .engine
        .reader()
        .get("default", &Key::new("k").unwrap())
        .unwrap();
    assert!(read.vv.covers(&c.applied[0].op.dot));
}

#[test]
fn a_batch_is_one_op_and_a_bad_mutation_stages_nothing() {
    let mut r = Region::new("us-east");
    r.define("hits", Policy::Counter);
    let c = r
        .write(vec![
            (
                "default",
                "a",
                Change::Put {
                    value: Value::Json(Json::parse("\"x\"").unwrap()),
                    context: None,
                },
            ),
            ("hits", "a", Change::Incr(3)),
        ])
        .unwrap();
    assert_eq!(c.applied.len(), 1);
    assert_eq!(c.applied[0].op.mutations.len(), 2);
    assert_eq!(c.applied[0].counters, vec![None, Some(3)]);
    let before = r.engine.vv().clone();
    let err = r
        .write(vec![
            (
                "default",
                "b",
                Change::Put {
                    value: Value::Json(Json::parse("1").unwrap()),
                    context: None,
                },
            ),
            ("hits", "b", Change::Add(vec![])),
        ])
        .unwrap_err();
    assert!(matches!(err, WriteError::Unsupported { .. }), "{err}");
    assert_eq!(r.engine.staged_len(), 0);
    assert_eq!(r.engine.vv(), &before);
    assert!(r.get("default", "b").is_none());
}

#[test]
fn refusals_say_what_was_wrong() {
    let mut r = Region::new("us-east");
    r.define("c", Policy::Counter);
    let put = || Change::Put {
        value: Value::Json(Json::parse("1").unwrap()),
        context: None,
    };
    let e = r.write(vec![("nope", "k", put())]).unwrap_err();
    assert_eq!(e.to_string(), "keyspace \"nope\" does not exist");
    let e = r.write(vec![("c", "k", put())]).unwrap_err();
    assert!(e.to_string().contains("counter keys change with"), "{e}");
    let e = r
        .write(vec![("default", "k", put()), ("default", "k", put())])
        .unwrap_err();
    assert!(matches!(e, WriteError::DuplicateKey { .. }));
    let e = r.write(vec![]).unwrap_err();
    assert!(matches!(e, WriteError::Empty));
    r.write(vec![("c", "k", Change::Incr(i64::MAX))]).unwrap();
    let e = r.write(vec![("c", "k", Change::Incr(1))]).unwrap_err();
    assert!(e.to_string().contains("counter overflow"), "{e}");
    let big = Value::Bytes(vec![0; (1 << 20) + 1]);
    let e = r
        .write(vec![(
            "default",
            "big",
            Change::Put {
                value: big,
                context: None,
            },
        )])
        .unwrap_err();
    assert!(matches!(e, WriteError::ValueTooLarge { .. }));
}

#[test]
fn keyspace_definitions_are_idempotent_and_keep_their_policy() {
    let mut r = Region::new("us-east");
    r.define("carts", Policy::Set);
    let same = KeyspaceDef::new(KeyspaceName::new("carts").unwrap(), Policy::Set);
    assert!(
        !r.engine.define(1, same.clone()).unwrap(),
        "unchanged definition writes nothing"
    );
    let other = KeyspaceDef::new(KeyspaceName::new("carts").unwrap(), Policy::Counter);
    let e = r.engine.define(1, other).unwrap_err();
    assert!(matches!(
        e,
        WriteError::PolicyChange {
            existing: Policy::Set,
            requested: Policy::Counter,
            ..
        }
    ));
    let mut tuned = same;
    tuned.write_concern = WriteConcern::Majority;
    assert!(r.engine.define(1, tuned).unwrap());
    r.commit();
    let p = r.engine.reader().published();
    assert_eq!(
        p.registry.get("carts").unwrap().write_concern,
        WriteConcern::Majority
    );
}

#[test]
fn each_policy_through_the_engine() {
    let mut r = Region::new("us-east");
    r.define("s", Policy::Set);
    r.define("d", Policy::Doc);
    r.define("m", Policy::Mv);
    r.write(vec![(
        "s",
        "k",
        Change::Add(vec![Json::parse("1").unwrap(), Json::parse("2").unwrap()]),
    )])
    .unwrap();
    r.write(vec![(
        "s",
        "k",
        Change::Remove(vec![Json::parse("1").unwrap()]),
    )])
    .unwrap();
    let Some(Object::Set(s)) = r.get("s", "k") else {
        panic!()
    };
    assert_eq!(
        s.iter().map(|j| j.as_str().to_string()).collect::<Vec<_>>(),
        ["2"]
    );

    let patch = |v: serde_json::Value| Change::Patch(v.as_object().unwrap().clone());
    r.write(vec![("d", "k", patch(serde_json::json!({"a": 1, "b": 2})))])
        .unwrap();
    r.write(vec![(
        "d",
        "k",
        patch(serde_json::json!({"b": null, "c": 3})),
    )])
    .unwrap();
    let Some(Object::Doc(d)) = r.get("d", "k") else {
        panic!()
    };
    assert_eq!(
        serde_json::Value::Object(d.to_json()),
        serde_json::json!({"a": 1, "c": 3})
    );

    r.write(vec![(
        "m",
        "k",
        Change::Put {
            value: Value::Bytes(vec![1]),
            context: None,
        },
    )])
    .unwrap();
    r.write(vec![(
        "m",
        "k",
        Change::Put {
            value: Value::Bytes(vec![2]),
            context: None,
        },
    )])
    .unwrap();
    let Some(Object::Mv(m)) = r.get("m", "k") else {
        panic!()
    };
    assert_eq!(m.len(), 2, "blind writes add siblings");
    let ctx = m.context().clone();
    r.write(vec![(
        "m",
        "k",
        Change::Put {
            value: Value::Bytes(vec![3]),
            context: Some(ctx),
        },
    )])
    .unwrap();
    let Some(Object::Mv(m)) = r.get("m", "k") else {
        panic!()
    };
    assert_eq!(
        m.len(),
        1,
        "a write with the read's context resolves the siblings"
    );

    r.write(vec![("default", "x", Change::Delete { context: None })])
        .unwrap();
    assert!(r.get("default", "x").is_none());
}

#[test]
fn remote_ops_apply_causally_idempotently_and_not_from_the_future() {
    let mut a = Region::new("us-east");
    let mut b = Region::new("eu-west");
    a.put("default", "k", "1");
    a.put("default", "k", "2");
    a.put("default", "j", "3");
    let ops = a.log.clone();
    // Out of order: the later ops wait for the first.
    let r = b
        .engine
        .receive(b.now, vec![ops[2].clone(), ops[1].clone()])
        .unwrap();
    assert_eq!((r.staged, r.buffered), (0, 2));
    let r = b.engine.receive(b.now, vec![ops[0].clone()]).unwrap();
    assert_eq!(r.staged, 3);
    b.commit();
    assert_eq!(lww_value(&b.get("default", "k").unwrap()), "2");
    // Replays change nothing.
    let r = b.engine.receive(b.now, ops.clone()).unwrap();
    assert_eq!(r.duplicates, 3);
    assert_eq!(b.engine.staged_len(), 0);
    assert_eq!(
        a.engine.reader().published().digests,
        b.engine.reader().published().digests
    );

    // An op stamped 10 s ahead of b's clock is held back, not applied.
    a.now += 10_000;
    a.put("default", "far", "4");
    let far = a.log.last().unwrap().clone();
    let r = b.engine.receive(b.now, vec![far.clone()]).unwrap();
    assert_eq!(r.held.len(), 1);
    assert!(r.held[0].1 >= 9_000);
    assert!(b.get("default", "far").is_none());
    assert!(
        b.engine.clock().last().wall_ms() < far.hlc.wall_ms(),
        "the clock did not jump"
    );
    // Once b's time catches up it goes in.
    b.now += 10_000;
    assert_eq!(b.engine.receive(b.now, vec![far]).unwrap().staged, 1);
}

#[test]
fn concurrent_writes_are_recorded_in_the_ledger_with_their_origins() {
    let mut a = Region::new("us-east");
    let mut b = Region::new("eu-west");
    a.put("default", "k", "\"from-a\"");
    b.now += 5;
    b.put("default", "k", "\"from-b\"");
    let (ao, bo) = (a.log.clone(), b.log.clone());
    a.engine.receive(a.now + 10, bo).unwrap();
    a.commit();
    b.engine.receive(b.now + 10, ao).unwrap();
    b.commit();
    assert_eq!(a.get("default", "k"), b.get("default", "k"));
    assert_eq!(lww_value(&a.get("default", "k").unwrap()), "\"from-b\"");
    for r in [&a, &b] {
        let entries = r
            .engine
            .reader()
            .conflicts(&LedgerQuery {
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(entries.len(), 1);
        let e = &entries[0];
        assert_eq!(e.loser.dot.replica.region.as_str(), "us-east");
        assert_eq!(e.winner.dot.replica.region.as_str(), "eu-west");
        assert!(e.ambiguous, "5 ms apart is within the 500 ms bound");
        assert_eq!(
            e.loser_value,
            Some(Value::Json(Json::parse("\"from-a\"").unwrap()))
        );
    }
}

#[test]
fn the_ledger_is_bounded_and_counts_what_it_dropped() {
    let mut a = Region::new("us-east");
    let mut def = KeyspaceDef::new(KeyspaceName::new("small").unwrap(), Policy::Lww);
    def.ledger_capacity = 3;
    a.engine.define(a.now, def).unwrap();
    a.commit();
    let mut b = Region::new("eu-west");
    b.engine.receive(b.now, a.log.clone()).unwrap();
    b.commit();
    for i in 0..5 {
        a.put("small", "k", &i.to_string());
        b.put("small", "k", &(i + 100).to_string());
        let (from_a, from_b) = (a.log.last().unwrap().clone(), b.log.last().unwrap().clone());
        a.engine.receive(a.now, vec![from_b]).unwrap();
        a.commit();
        b.engine.receive(b.now, vec![from_a]).unwrap();
        b.commit();
    }
    let p = a.engine.reader().published();
    let counts = p.ledger[&KeyspaceName::new("small").unwrap()];
    assert_eq!(counts.len(), 3);
    assert_eq!(counts.dropped, 2);
    let entries = a
        .engine
        .reader()
        .conflicts(&LedgerQuery {
            limit: 100,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        entries.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
}

#[test]
fn recovery_replays_the_log_over_the_last_persisted_state() {
    let mut r = Region::new("us-east");
    r.define("n", Policy::Counter);
    for i in 0..10 {
        r.write(vec![("n", "c", Change::Incr(1))]).unwrap();
        r.put("default", &format!("k{i}"), &i.to_string());
    }
    r.engine.checkpoint().unwrap();
    for _ in 0..5 {
        r.write(vec![("n", "c", Change::Incr(1))]).unwrap();
    }
    let before = r.engine.reader().published();
    // Crash: state since the checkpoint is gone, the log is not.
    r.backend.crash();
    let mut engine = Engine::open(
        replica("us-east"),
        EngineConfig::default(),
        Arc::new(r.backend.clone()),
    )
    .unwrap();
    assert!(engine.reader().published().vv.total() < before.vv.total());
    for op in r.log.clone() {
        engine.replay(op).unwrap();
    }
    engine.commit(Some(Lsn(r.log.len() as u64))).unwrap();
    let after = engine.reader().published();
    assert_eq!(after.vv, before.vv);
    assert_eq!(after.digests, before.digests);
    let Some(Object::Counter(c)) = engine
        .reader()
        .get("n", &Key::new("c").unwrap())
        .unwrap()
        .object
    else {
        panic!()
    };
    assert_eq!(c.value(), 15);
    assert_eq!(
        engine.next_seq(),
        before.vv.get(&replica("us-east")).next().unwrap()
    );
    assert!(
        engine
            .reader()
            .get("n", &Key::new("c").unwrap())
            .unwrap()
            .live()
            .is_some_and(|o| o.is_live())
    );
}

#[test]
fn pipelined_groups_stage_on_each_other_but_commit_in_order() {
    let mut r = Region::new("us-east");
    r.define("n", Policy::Counter);
    let put = |v: &str| Change::Put {
        value: Value::Json(Json::parse(v).unwrap()),
        context: None,
    };
    let req = |ks: &str, k: &str, c: Change| WriteRequest {
        deadline_ms: None,
        not_before_ms: None,
        fallback: false,
        mutations: vec![MutationRequest {
            keyspace: ks.into(),
            key: Key::new(k).unwrap(),
            change: c,
        }],
    };
    r.engine.submit(10, req("default", "k", put("1"))).unwrap();
    r.engine.submit(11, req("n", "c", Change::Incr(2))).unwrap();
    let g1 = r.engine.seal().unwrap();
    // The second group builds on the first, which is not durable yet.
    r.engine.submit(12, req("default", "k", put("2"))).unwrap();
    r.engine.submit(13, req("n", "c", Change::Incr(3))).unwrap();
    let g2 = r.engine.seal().unwrap();
    assert_eq!(r.engine.group_len(g1), 2);
    assert!(
        r.get("default", "k").is_none(),
        "nothing visible before commit"
    );
    assert!(
        r.engine.commit_group(g2, None).is_err(),
        "groups commit in order"
    );
    let c1 = r.engine.commit_group(g1, Some(Lsn(3))).unwrap();
    assert_eq!(lww_value(&r.get("default", "k").unwrap()), "1");
    assert_eq!(r.engine.reader().published().vv, c1.vv);
    let Some(Object::Counter(c)) = r.get("n", "c") else {
        panic!()
    };
    assert_eq!(c.value(), 2, "only the first group is visible");
    let c2 = r.engine.commit_group(g2, Some(Lsn(5))).unwrap();
    assert_eq!(c2.applied[1].counters, vec![Some(5)]);
    assert_eq!(lww_value(&r.get("default", "k").unwrap()), "2");

    // The same writes without a pipeline end in the same digests.
    let mut plain = Region::new("us-east");
    plain.define("n", Policy::Counter);
    for (ks, k, c) in [
        ("default", "k", put("1")),
        ("n", "c", Change::Incr(2)),
        ("default", "k", put("2")),
        ("n", "c", Change::Incr(3)),
    ] {
        plain.now = 9;
        plain.write(vec![(ks, k, c)]).unwrap();
    }
    let a = r.engine.reader().published();
    let b = plain.engine.reader().published();
    assert_eq!(a.vv, b.vv);
    let ks = KeyspaceName::new("n").unwrap();
    assert_eq!(a.digests[&ks], b.digests[&ks]);
}

#[test]
fn only_causally_stable_lww_tombstones_are_collected() {
    use meridian_core::engine::StableCut;
    let mut r = Region::new("us-east");
    r.put("default", "gone", "1");
    r.put("default", "live", "2");
    r.write(vec![("default", "gone", Change::Delete { context: None })])
        .unwrap();
    let delete = r.log.last().unwrap().clone();
    let digest_before = r.engine.reader().published().digests.clone();
    let raw = |r: &Region| {
        r.engine
            .reader()
            .get("default", &Key::new("gone").unwrap())
            .unwrap()
            .object
    };
    // Not stable: a region has not applied the delete.
    let mut behind = r.engine.vv().clone();
    behind = behind.meet(&[(replica("us-east"), Seq(2))].into_iter().collect());
    let cut = StableCut {
        stable: behind,
        watermark: meridian_crdt::Hlc::new(u64::MAX >> 17, 0).unwrap(),
    };
    assert_eq!(r.engine.collect(&cut, 100).unwrap(), 0);
    // Stable, but an op stamped below the delete could still arrive.
    let cut = StableCut {
        stable: r.engine.vv().clone(),
        watermark: delete.hlc,
    };
    assert_eq!(r.engine.collect(&cut, 100).unwrap(), 0);
    // Stable and below the watermark: collected; the live key stays.
    let later = meridian_crdt::Hlc::new(delete.hlc.wall_ms() + 1, 0).unwrap();
    let cut = StableCut {
        stable: r.engine.vv().clone(),
        watermark: later,
    };
    assert_eq!(r.engine.collect(&cut, 100).unwrap(), 1);
    r.commit();
    assert!(raw(&r).is_none(), "the tombstone is gone from the store");
    assert!(r.get("default", "live").is_some());
    assert_eq!(
        r.engine.reader().published().digests,
        digest_before,
        "tombstones weigh nothing in digests"
    );
    assert_eq!(r.engine.reader().published().stats.tombstones_collected, 1);
}

#[test]
fn ops_waiting_in_the_causal_buffer_are_published_as_seen() {
    // A restarted region checks its own seqs against what its peers have
    // seen; an op a peer holds but cannot apply yet counts too.
    let mut a = Region::new("us-east");
    a.put("default", "k1", "1");
    a.put("default", "k2", "2");
    let mut b = Region::new("eu-west");
    b.now = a.now;
    let second = a.log[1].clone();
    let r = b.engine.receive(b.now, vec![second.clone()]).unwrap();
    assert_eq!(r.buffered, 1);
    b.commit();
    let p = b.engine.reader().published();
    assert!(!p.vv.covers(&second.dot), "not applied");
    assert_eq!(p.buffered_top.get(&second.dot.replica), second.dot.seq);
}

#[test]
fn a_write_past_its_deadline_stages_nothing_and_one_just_in_time_is_taken() {
    let mut r = Region::new("us-east");
    let req = |deadline_ms| WriteRequest {
        deadline_ms: Some(deadline_ms),
        not_before_ms: None,
        fallback: false,
        mutations: vec![MutationRequest {
            keyspace: "default".into(),
            key: Key::new("k").unwrap(),
            change: Change::Put {
                value: Value::Json(Json::parse("1").unwrap()),
                context: None,
            },
        }],
    };
    let err = r.engine.submit(1_001, req(1_000)).unwrap_err();
    assert!(
        matches!(
            err,
            WriteError::DeadlinePassed {
                deadline_ms: 1_000,
                now_ms: 1_001
            }
        ),
        "{err:?}"
    );
    assert_eq!(r.engine.staged_len(), 0);
    r.engine.submit(1_000, req(1_000)).unwrap();
    assert_eq!(r.engine.staged_len(), 1);
}

#[test]
fn a_floor_stamps_the_write_above_it_and_deadlines_bound_the_stamp_not_the_wall_clock() {
    let mut r = Region::new("us-east");
    let req = |deadline_ms: Option<u64>, not_before_ms: Option<u64>| WriteRequest {
        deadline_ms,
        not_before_ms,
        fallback: false,
        mutations: vec![MutationRequest {
            keyspace: "default".into(),
            key: Key::new("k").unwrap(),
            change: Change::Put {
                value: Value::Json(Json::parse("1").unwrap()),
                context: None,
            },
        }],
    };
    // A floor 400 ms ahead of this region's clock (within the 500 ms
    // offset bound): the write is stamped above every timestamp of that
    // millisecond.
    r.engine.submit(10_000, req(None, Some(10_400))).unwrap();
    let stamped = r.engine.staged().last().unwrap().hlc;
    assert!(stamped.wall_ms() > 10_400, "{stamped:?}");
    // The clock is now ahead of the wall clock: a deadline the wall clock
    // has not reached but the stamp would pass is refused.
    let err = r
        .engine
        .submit(10_001, req(Some(10_100), None))
        .unwrap_err();
    assert!(
        matches!(err, WriteError::DeadlinePassed { deadline_ms: 10_100, now_ms } if now_ms >= 10_400),
        "{err:?}"
    );
    // A floor further ahead than a peer's timestamp may be is a clock error.
    let err = r
        .engine
        .submit(10_002, req(None, Some(20_000)))
        .unwrap_err();
    assert!(matches!(err, WriteError::Clock(_)), "{err:?}");
    assert_eq!(r.engine.staged_len(), 1);
}
