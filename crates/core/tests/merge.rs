//! Custom keyspaces end to end through the engine: versions kept, merged
//! the same in every region whatever the delivery order, written back once
//! by the key's merger, and recorded in every region's ledger.
//!
//! Past ~400 lines because STYLE keeps one test binary per topic: these cases
//! share the fixtures at the top of this file.

mod common;

use common::Region;
use meridian_core::engine::ledger::{LedgerEntry, LedgerQuery};
use meridian_core::merge::{self, MergeDef};
use meridian_core::*;
use meridian_crdt::{Json, Object, Policy, RegionId, Value};
use proptest::prelude::*;

const CART: &str = r#"
    // A cart: each version is a change {item: quantity delta}; the merge
    // sums them per item and drops items that reach zero.
    fn merge(versions) {
        let cart = #{};
        for v in versions {
            for item in v.value.keys() {
                cart[item] = (cart[item] ?? 0) + v.value[item];
            }
        }
        cart.filter(|item, qty| qty != 0)
    }
"#;

const NAMES: [&str; 3] = ["ap-south", "eu-west", "us-east"];

fn regions() -> Vec<RegionId> {
    NAMES.iter().map(|n| RegionId::new(*n).unwrap()).collect()
}

fn custom(merge: &str, cap: u32) -> KeyspaceDef {
    let mut d = KeyspaceDef::new(KeyspaceName::new("carts").unwrap(), Policy::Custom);
    d.merge = Some(merge.into());
    d.sibling_cap = cap;
    d
}

fn cart_samples() -> Vec<Vec<serde_json::Value>> {
    vec![vec![
        serde_json::json!({"a": 1}),
        serde_json::json!({"a": -1, "b": 2}),
    ]]
}

/// Three regions with the cart script and a custom keyspace, defined in
/// the first and shipped to the others.
fn cluster(merge: &str, cap: u32) -> Vec<Region> {
    let mut rs: Vec<Region> = NAMES.iter().map(|n| Region::new(n)).collect();
    let (def, _) = MergeDef::check("cart", CART, "sum per item", Some(&cart_samples())).unwrap();
    rs[0].now += 1;
    let now = rs[0].now;
    assert!(rs[0].engine.define_merge(now, def).unwrap());
    rs[0].commit();
    rs[0].now += 1;
    let now = rs[0].now;
    assert!(rs[0].engine.define(now, custom(merge, cap)).unwrap());
    rs[0].commit();
    exchange(&mut rs);
    rs
}

fn put(r: &mut Region, key: &str, json: &str) -> Result<Committed, WriteError> {
    r.write(vec![(
        "carts",
        key,
        Change::Put {
            value: Value::Json(Json::parse(json).unwrap()),
            context: None,
        },
    )])
}

/// Every region receives every other's log (in log order).
fn exchange(rs: &mut [Region]) {
    for i in 0..rs.len() {
        for j in 0..rs.len() {
            if i != j {
                let ops = rs[i].log.clone();
                let now = rs[j].now;
                rs[j].engine.receive(now, ops).unwrap();
                rs[j].commit();
            }
        }
    }
}

/// The value a reader of `r` sees for a custom key, with its resolution.
fn read(r: &Region, key: &str) -> Option<(merge::Resolution, usize)> {
    let read = r
        .engine
        .reader()
        .get("carts", &Key::new(key).unwrap())
        .unwrap();
    let Some(Object::Mv(reg)) = read.live() else {
        return None;
    };
    let f = r
        .engine
        .reader()
        .published()
        .registry
        .merge_for(&read.def)
        .unwrap();
    merge::resolve(&f, &reg.siblings()).map(|res| (res, reg.len()))
}

fn ledger(r: &Region, key: &str) -> Vec<LedgerEntry> {
    r.engine
        .reader()
        .conflicts(&LedgerQuery {
            keyspace: Some(KeyspaceName::new("carts").unwrap()),
            key: Some(Key::new(key).unwrap()),
            since_ms: None,
            after_id: None,
            limit: 100,
        })
        .unwrap()
}

/// Lets every region write back what it owes, then ships it everywhere.
fn write_back(rs: &mut [Region]) -> usize {
    let mut n = 0;
    for r in rs.iter_mut() {
        r.engine.enable_merges(regions());
        r.now += 1;
        let now = r.now;
        n += r.engine.merge_due(now, 1000).unwrap();
        r.commit();
    }
    exchange(rs);
    n
}

#[test]
fn a_cart_converges_to_the_script_over_the_canonical_versions_and_collapses_once() {
    let mut rs = cluster("cart", 16);
    put(&mut rs[0], "alice", r#"{"apple": 2}"#).unwrap();
    put(&mut rs[1], "alice", r#"{"pear": 1}"#).unwrap();
    put(&mut rs[2], "alice", r#"{"apple": -1, "fig": 3}"#).unwrap();
    put(&mut rs[2], "alice", r#"{"fig": -3}"#).unwrap();
    exchange(&mut rs);
    let before: Vec<_> = rs.iter().map(|r| read(r, "alice").unwrap()).collect();
    for (res, n) in &before {
        assert_eq!(*n, 4, "every version kept");
        assert_eq!(res.value.as_str(), r#"{"apple":1,"pear":1}"#);
        assert_eq!(
            res.inputs, before[0].0.inputs,
            "one canonical order everywhere"
        );
        assert_eq!(res.failed, None);
    }
    // Exactly one region writes the merge back.
    assert_eq!(write_back(&mut rs), 1);
    let merger = merge::merger(
        &KeyspaceName::new("carts").unwrap(),
        &Key::new("alice").unwrap(),
        &regions(),
    )
    .unwrap()
    .clone();
    for r in &rs {
        let (res, n) = read(r, "alice").unwrap();
        assert_eq!((n, res.value.as_str()), (1, r#"{"apple":1,"pear":1}"#));
        // Every region records the same resolution: function, hash, inputs.
        let entries = ledger(r, "alice");
        assert_eq!(entries.len(), 1, "{entries:?}");
        let m = entries[0].merge.as_ref().unwrap();
        assert_eq!(entries[0].rule, "merge");
        assert_eq!(entries[0].winner.dot.replica.region, merger);
        assert_eq!(
            (m.function.as_str(), m.hash.as_str()),
            ("cart", merge::content_hash(CART).as_str())
        );
        assert_eq!(
            m.inputs.iter().map(|(v, _)| v.clone()).collect::<Vec<_>>(),
            before[0].0.inputs
        );
        assert!(
            m.inputs.iter().all(|(_, v)| v.is_some()),
            "input values recorded"
        );
    }
    // Nothing more is owed: a second round writes nothing.
    assert_eq!(write_back(&mut rs), 0);
    // A new change after the collapse merges with the written-back cart.
    put(&mut rs[1], "alice", r#"{"pear": 4}"#).unwrap();
    exchange(&mut rs);
    for r in &rs {
        assert_eq!(
            read(r, "alice").unwrap().0.value.as_str(),
            r#"{"apple":1,"pear":5}"#
        );
    }
}

#[test]
fn a_region_refuses_a_version_over_the_cap_instead_of_dropping_one() {
    let mut rs = cluster("cart", 3);
    let r = &mut rs[0];
    for i in 0..3 {
        put(r, "bob", &format!(r#"{{"item{i}": 1}}"#)).unwrap();
    }
    let err = put(r, "bob", r#"{"item3": 1}"#).unwrap_err();
    assert!(
        matches!(
            err,
            WriteError::MergePending {
                versions: 3,
                cap: 3,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "carts/bob holds 3 unmerged versions, the keyspace's cap of 3: retry once the merge is written back, or write with the read's context to replace them"
    );
    // Nothing was lost: all three versions are still merged in.
    assert_eq!(
        read(r, "bob").unwrap().0.value.as_str(),
        r#"{"item0":1,"item1":1,"item2":1}"#
    );
    // A write that replaces what it read is accepted.
    let ctx = match r.get("carts", "bob").unwrap() {
        Object::Mv(reg) => reg.context().clone(),
        _ => unreachable!(),
    };
    r.write(vec![(
        "carts",
        "bob",
        Change::Put {
            value: Value::Json(Json::parse(r#"{"item0": 5}"#).unwrap()),
            context: Some(ctx),
        },
    )])
    .unwrap();
    assert_eq!(read(r, "bob").unwrap(), (read(r, "bob").unwrap().0, 1));
    // Bytes cannot be merged: refused.
    let err = r
        .write(vec![(
            "carts",
            "bob",
            Change::Put {
                value: Value::Bytes(vec![1, 2]),
                context: None,
            },
        )])
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("custom keyspaces take JSON values"),
        "{err}"
    );
}

#[test]
fn a_failing_merge_shows_the_newest_version_and_keeps_every_version() {
    let mut rs = cluster("sum", 16);
    put(&mut rs[0], "n", "1").unwrap();
    put(&mut rs[1], "n", r#""two""#).unwrap();
    exchange(&mut rs);
    let (res, _) = read(&rs[0], "n").unwrap();
    let newest = res.inputs.last().unwrap().dot.replica.region.clone();
    let want = if newest.as_str() == "eu-west" {
        r#""two""#
    } else {
        "1"
    };
    assert_eq!(res.value.as_str(), want, "the newest version is shown");
    assert!(
        res.failed
            .as_deref()
            .unwrap()
            .starts_with("merge sum failed: sum takes numbers")
    );
    // Nothing is written back: a failed merge must not drop versions (a
    // fixed function, or a retry after a passing limit, merges them all).
    assert_eq!(write_back(&mut rs), 0);
    let merger = merge::merger(
        &KeyspaceName::new("carts").unwrap(),
        &Key::new("n").unwrap(),
        &regions(),
    )
    .unwrap()
    .clone();
    for r in &rs {
        assert_eq!(read(r, "n").unwrap().1, 2, "both versions kept");
        let entries = ledger(r, "n");
        if r.engine.replica().region == merger {
            assert_eq!(entries.len(), 1, "the merger records the failure");
            assert_eq!(entries[0].rule, "merge_failed");
            assert!(
                entries[0]
                    .merge
                    .as_ref()
                    .unwrap()
                    .failed
                    .as_deref()
                    .unwrap()
                    .contains("sum takes numbers")
            );
        } else {
            assert!(entries.is_empty());
        }
    }
}

#[test]
fn only_the_merger_takes_writes_that_replace_versions() {
    let mut rs = cluster("sum", 16);
    for r in rs.iter_mut() {
        r.engine.enable_merges(regions());
    }
    let ks = KeyspaceName::new("carts").unwrap();
    let key = Key::new("k").unwrap();
    let merger = merge::merger(&ks, &key, &regions()).unwrap().clone();
    let (m, other) = {
        let m = rs
            .iter()
            .position(|r| r.engine.replica().region == merger)
            .unwrap();
        (m, (m + 1) % 3)
    };
    // Versions can be added anywhere...
    put(&mut rs[other], "k", "1").unwrap();
    put(&mut rs[m], "k", "2").unwrap();
    // ...but a delete, or a write with a context, elsewhere could run
    // concurrently with the merger's write-back of the same versions.
    let err = rs[other]
        .write(vec![("carts", "k", Change::Delete { context: None })])
        .unwrap_err();
    assert!(
        matches!(&err, WriteError::NotMerger { merger: r, .. } if *r == merger),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains(&format!("taken only by the key's merger, region {merger}")),
        "{err}"
    );
    let ctx = rs[other].engine.vv().clone();
    let err = rs[other]
        .write(vec![(
            "carts",
            "k",
            Change::Put {
                value: Value::Json(Json::parse("5").unwrap()),
                context: Some(ctx),
            },
        )])
        .unwrap_err();
    assert!(
        matches!(
            err,
            WriteError::NotMerger {
                change: "put with a context",
                ..
            }
        ),
        "{err}"
    );
    // An empty context replaces nothing: a blind write, taken anywhere.
    rs[other]
        .write(vec![(
            "carts",
            "k",
            Change::Put {
                value: Value::Json(Json::parse("0").unwrap()),
                context: Some(meridian_crdt::VersionVector::new()),
            },
        )])
        .unwrap();
    // At the merger, a context write must have seen every version the key
    // holds: here one written back since the read.
    let stale = match rs[m].get("carts", "k").unwrap() {
        Object::Mv(reg) => reg.context().clone(),
        _ => unreachable!(),
    };
    put(&mut rs[m], "k", "4").unwrap();
    rs[m].engine.enable_merges(regions());
    let now = rs[m].now + 1;
    assert_eq!(rs[m].engine.merge_due(now, 10).unwrap(), 1);
    rs[m].commit();
    let err = rs[m]
        .write(vec![(
            "carts",
            "k",
            Change::Put {
                value: Value::Json(Json::parse("9").unwrap()),
                context: Some(stale.clone()),
            },
        )])
        .unwrap_err();
    assert!(
        matches!(err, WriteError::StaleContext { uncovered: 1, .. }),
        "{err}"
    );
    let err = rs[m]
        .write(vec![(
            "carts",
            "k",
            Change::Delete {
                context: Some(stale),
            },
        )])
        .unwrap_err();
    assert!(matches!(err, WriteError::StaleContext { .. }), "{err}");
    // A context claiming writes this region has not applied is refused too
    // (clamping it would quietly leave versions standing).
    let mut ahead = rs[m].engine.vv().clone();
    ahead.add(&meridian_crdt::Dot::new(
        common::replica("zz-nowhere"),
        meridian_crdt::Seq(1),
    ));
    let err = rs[m]
        .write(vec![(
            "carts",
            "k",
            Change::Delete {
                context: Some(ahead),
            },
        )])
        .unwrap_err();
    assert!(
        matches!(err, WriteError::StaleContext { uncovered: 0, .. }),
        "{err}"
    );
    rs[m]
        .write(vec![("carts", "k", Change::Delete { context: None })])
        .unwrap();
    // A context read before that delete is stale too, though no version it
    // missed is left: the delete is in the key's context.
    put(&mut rs[m], "k", "8").unwrap();
    let ctx8 = match rs[m].get("carts", "k").unwrap() {
        Object::Mv(reg) => reg.context().clone(),
        _ => unreachable!(),
    };
    rs[m]
        .write(vec![("carts", "k", Change::Delete { context: None })])
        .unwrap();
    let err = rs[m]
        .write(vec![(
            "carts",
            "k",
            Change::Put {
                value: Value::Json(Json::parse("8").unwrap()),
                context: Some(ctx8),
            },
        )])
        .unwrap_err();
    assert!(
        matches!(err, WriteError::StaleContext { uncovered: 0, .. }),
        "{err}"
    );
    exchange(&mut rs);
    // The delete at the merger removed what it had seen; the version it
    // had not seen yet (the other region's) survives, as in mv.
    for r in &rs {
        assert_eq!(
            read(r, "k")
                .map(|(res, _)| res.value.as_str().to_string())
                .as_deref(),
            Some("1")
        );
    }
}

#[test]
fn a_script_replaced_while_versions_wait_resolves_with_one_hash_everywhere() {
    let mut rs = cluster("cart", 16);
    let key = (0..100)
        .map(|i| format!("k{i}"))
        .find(|k| {
            merge::merger(
                &KeyspaceName::new("carts").unwrap(),
                &Key::new(k.clone()).unwrap(),
                &regions(),
            )
            .is_some_and(|m| m.as_str() == "ap-south")
        })
        .unwrap();
    put(&mut rs[1], &key, r#"{"a": 1}"#).unwrap();
    put(&mut rs[2], &key, r#"{"a": 2}"#).unwrap();
    exchange(&mut rs);
    // ap-south (the merger) replaces the script; the others have not heard.
    let v2 = CART.replace("qty != 0", "qty > 0");
    let (def, _) = MergeDef::check("cart", &v2, "", Some(&cart_samples())).unwrap();
    rs[0].now += 1;
    let now = rs[0].now;
    assert!(rs[0].engine.define_merge(now, def).unwrap());
    rs[0].commit();
    rs[0].engine.enable_merges(regions());
    rs[0].now += 1;
    let now = rs[0].now;
    assert_eq!(rs[0].engine.merge_due(now, 10).unwrap(), 1);
    rs[0].commit();
    exchange(&mut rs);
    for r in &rs {
        let e = &ledger(r, &key)[0];
        assert_eq!(e.merge.as_ref().unwrap().hash, merge::content_hash(&v2));
        assert_eq!(read(r, &key).unwrap().0.value.as_str(), r#"{"a":3}"#);
    }
}

#[test]
fn merges_owed_at_a_crash_are_written_back_after_restart() {
    let mut rs = cluster("max", 16);
    put(&mut rs[0], "m", "5").unwrap();
    put(&mut rs[1], "m", "7").unwrap();
    exchange(&mut rs);
    for r in rs.iter_mut() {
        r.restart();
    }
    assert_eq!(write_back(&mut rs), 1);
    for r in &rs {
        assert_eq!(read(r, "m").unwrap().0.value.as_str(), "7");
        assert_eq!(read(r, "m").unwrap().1, 1);
    }
}

#[test]
fn keyspace_definitions_name_known_merges() {
    let mut r = Region::new("us-east");
    r.now += 1;
    let err = r.engine.define(r.now, custom("nope", 16)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("no merge function named \"nope\""),
        "{err}"
    );
    let mut d = custom("max", 16);
    d.merge = None;
    assert_eq!(
        r.engine.define(r.now, d).unwrap_err().to_string(),
        "invalid keyspace definition: merge: a custom keyspace names its merge function"
    );
    let mut d = KeyspaceDef::new(KeyspaceName::new("x").unwrap(), Policy::Lww);
    d.merge = Some("max".into());
    assert!(r.engine.define(r.now, d).is_err());
    let mut d = custom("max", 16);
    d.region_order = vec![RegionId::new("eu-west").unwrap()];
    assert!(
        r.engine
            .define(r.now, d)
            .unwrap_err()
            .to_string()
            .contains("region_order")
    );
    // mv and custom are different policies: no switching between them.
    assert!(r.engine.define(r.now, custom("max", 16)).unwrap());
    r.commit();
    let mv = KeyspaceDef::new(KeyspaceName::new("carts").unwrap(), Policy::Mv);
    assert!(matches!(
        r.engine.define(r.now, mv),
        Err(WriteError::PolicyChange { .. })
    ));
    // The function a custom keyspace names can change.
    assert!(r.engine.define(r.now, custom("min", 16)).unwrap());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Every built-in: versions written in three regions, delivered in any
    /// order with duplicates, read the same everywhere, and after the
    /// write-back every region holds that same value as one version.
    #[test]
    fn every_builtin_converges_under_any_delivery(
        which in 0usize..8,
        writes in proptest::collection::vec((0usize..3, 0i64..50), 2..8),
        order in proptest::collection::vec((0usize..3, 0usize..3), 0..12),
    ) {
        let name = merge::builtin::NAMES[which];
        let mut rs = cluster(name, 16);
        for (i, (region, n)) in writes.iter().enumerate() {
            let json = match name {
                "union" => format!("[{n}, {}]", i),
                "longest" => format!("\"{}\"", "x".repeat(*n as usize % 7)),
                "json-deep-merge" => format!(r#"{{"f{}": {n}, "g": {{"h{region}": {i}}}}}"#, n % 3),
                _ => n.to_string(),
            };
            put(&mut rs[*region], "k", &json).unwrap();
        }
        // Partial, repeated, out-of-order deliveries first...
        for (from, to) in &order {
            if from != to {
                let ops = rs[*from].log.clone();
                let now = rs[*to].now;
                rs[*to].engine.receive(now, ops.into_iter().rev().collect()).unwrap();
                rs[*to].commit();
            }
        }
        // ...then everything.
        exchange(&mut rs);
        let seen: Vec<_> = rs.iter().map(|r| read(r, "k").unwrap().0).collect();
        prop_assert!(seen.iter().all(|s| s.value == seen[0].value && s.inputs == seen[0].inputs));
        prop_assert_eq!(seen[0].failed.clone(), None);
        write_back(&mut rs);
        for r in &rs {
            let (res, n) = read(r, "k").unwrap();
            prop_assert_eq!(n, 1);
            prop_assert_eq!(&res.value, &seen[0].value);
        }
    }
}

fn profiles(rs: &mut [Region]) {
    let schema: meridian_crdt::DocSchema = serde_json::from_value(serde_json::json!({
        "cart": {"merge": "cart"},
        "addr": {"doc": {"tags": {"merge": "union"}}}
    }))
    .unwrap();
    let mut d = KeyspaceDef::new(KeyspaceName::new("profiles").unwrap(), Policy::Doc);
    d.schema = schema;
    rs[0].now += 1;
    let now = rs[0].now;
    assert!(rs[0].engine.define(now, d).unwrap());
    rs[0].commit();
    exchange(rs);
}

fn patch(r: &mut Region, key: &str, p: serde_json::Value) {
    r.write(vec![(
        "profiles",
        key,
        Change::Patch(p.as_object().unwrap().clone()),
    )])
    .unwrap();
}

/// The document as a reader sees it, merge fields merged; and how many
/// versions its fields hold in all.
fn doc(r: &Region, key: &str) -> (serde_json::Value, usize) {
    let read = r
        .engine
        .reader()
        .get("profiles", &Key::new(key).unwrap())
        .unwrap();
    let Some(Object::Doc(d)) = read.live() else {
        panic!("no doc")
    };
    let registry = r.engine.reader().published().registry.clone();
    let mut versions = 0;
    let json = d.to_json_with(&mut |path, reg| {
        versions += reg.len();
        let Some(meridian_crdt::FieldRule::Merge(name)) = read.def.schema.rule_at(path) else {
            return None;
        };
        let f = registry.function_named(name, &[]);
        let held: Vec<(meridian_crdt::Version, Value)> = reg
            .siblings()
            .into_iter()
            .map(|(v, j)| (v, Value::Json(j.clone())))
            .collect();
        let refs: Vec<_> = held.iter().map(|(v, x)| (v.clone(), x)).collect();
        merge::resolve(&f, &refs).map(|res| res.value.to_value())
    });
    (serde_json::Value::Object(json), versions)
}

#[test]
fn doc_fields_named_by_a_merge_combine_concurrent_patches_and_collapse() {
    let mut rs = cluster("cart", 16);
    profiles(&mut rs);
    patch(
        &mut rs[0],
        "ann",
        serde_json::json!({"name": "Ann", "cart": {"apple": 1}, "addr": {"tags": ["a"]}}),
    );
    // A second patch in the same region replaces what that region saw.
    patch(&mut rs[0], "ann", serde_json::json!({"cart": {"apple": 2}}));
    patch(
        &mut rs[1],
        "ann",
        serde_json::json!({"cart": {"pear": 1}, "addr": {"tags": ["b"]}}),
    );
    patch(
        &mut rs[2],
        "ann",
        serde_json::json!({"addr": {"tags": ["a", "c"]}}),
    );
    exchange(&mut rs);
    let want = serde_json::json!({
        "name": "Ann",
        "cart": {"apple": 2, "pear": 1},
        "addr": {"tags": ["a", "b", "c"]},
    });
    for r in &rs {
        let (json, versions) = doc(r, "ann");
        let tags = json["addr"]["tags"].as_array().unwrap().clone();
        let mut sorted: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
        sorted.sort();
        assert_eq!(sorted, ["\"a\"", "\"b\"", "\"c\""]);
        assert_eq!(json["cart"], want["cart"]);
        assert_eq!(json["name"], want["name"]);
        assert_eq!(versions, 5, "cart 2 versions, tags 3");
        assert_eq!(json, doc(&rs[0], "ann").0, "every region alike");
    }
    // Doc merge fields are not written back (a patch replaces what its
    // region saw, so a write-back could be concurrent with one): the next
    // patch that has seen the versions collapses them.
    assert_eq!(write_back(&mut rs), 0);
    assert_eq!(doc(&rs[1], "ann").1, 5);
    let merged = doc(&rs[1], "ann").0;
    patch(
        &mut rs[1],
        "ann",
        serde_json::json!({"cart": merged["cart"].clone(), "addr": {"tags": merged["addr"]["tags"].clone()}}),
    );
    exchange(&mut rs);
    for r in &rs {
        let (json, versions) = doc(r, "ann");
        assert_eq!(versions, 2, "one version per merge field");
        assert_eq!(json, merged);
        assert!(ledger_of(r, "profiles", "ann").is_empty());
    }
    // A merge field's function can change; its rule cannot.
    let mut d = rs[0].engine.registry().get("profiles").unwrap().clone();
    d.schema = serde_json::from_value(serde_json::json!({
        "cart": {"merge": "json-deep-merge"},
        "addr": {"doc": {"tags": {"merge": "union"}}}
    }))
    .unwrap();
    let now = rs[0].now + 1;
    assert!(rs[0].engine.define(now, d.clone()).unwrap());
    d.schema = serde_json::from_value(serde_json::json!({"cart": "lww"})).unwrap();
    let err = rs[0].engine.define(now, d).unwrap_err();
    assert!(matches!(err, WriteError::SchemaChange { .. }), "{err}");
}

fn ledger_of(r: &Region, ks: &str, key: &str) -> Vec<LedgerEntry> {
    r.engine
        .reader()
        .conflicts(&LedgerQuery {
            keyspace: Some(KeyspaceName::new(ks).unwrap()),
            key: Some(Key::new(key).unwrap()),
            since_ms: None,
            after_id: None,
            limit: 100,
        })
        .unwrap()
}

/// The worked examples of docs/merge.md register and give what the page says.
#[test]
fn the_documented_examples_do_what_the_docs_say() {
    let run = |src: &str, samples: serde_json::Value, input: serde_json::Value| {
        let samples: Vec<Vec<serde_json::Value>> = serde_json::from_value(samples).unwrap();
        let (_, f) = MergeDef::check("example", src, "", Some(&samples)).unwrap();
        let regions = ["us-east", "eu-west", "ap-south"];
        let values: Vec<serde_json::Value> = serde_json::from_value(input).unwrap();
        let versions: Vec<meridian_crdt::Version> = (0..values.len())
            .map(|i| {
                meridian_crdt::Version::new(
                    meridian_crdt::Hlc::new(1_000 + i as u64, 0).unwrap(),
                    meridian_crdt::Dot::new(
                        meridian_crdt::ReplicaId::new(
                            RegionId::new(regions[i % 3]).unwrap(),
                            uuid::Uuid::from_u128(1),
                        ),
                        meridian_crdt::Seq(1),
                    ),
                )
            })
            .collect();
        let inputs: Vec<merge::Input<'_>> = values
            .iter()
            .zip(&versions)
            .map(|(value, version)| merge::Input { value, version })
            .collect();
        merge::MergeFn::merge(&f, &inputs).unwrap()
    };
    let cart = include_str!("../../../docs/merges/cart.rhai");
    assert_eq!(
        run(
            cart,
            serde_json::json!([[{"a": 1}, {"a": -1, "b": 2}]]),
            serde_json::json!([{"apple": 2}, {"pear": 1}, {"apple": -2, "fig": 1}])
        ),
        serde_json::json!({"pear": 1, "fig": 1})
    );
    let audit = include_str!("../../../docs/merges/max-with-audit.rhai");
    let out = run(
        audit,
        serde_json::json!([[{"score": 1, "by": "a"}, {"score": 2, "by": "b"}]]),
        serde_json::json!([{"score": 7, "by": "ann"}, {"score": 9, "by": "bo"}, {"score": 9, "by": "cy"}]),
    );
    assert_eq!(
        (out["score"].clone(), out["by"].clone()),
        (serde_json::json!(9), serde_json::json!("cy"))
    );
    assert_eq!(out["audit"].as_array().unwrap().len(), 3);
    assert_eq!(
        out["audit"][1],
        serde_json::json!({"region": "eu-west", "score": 9, "by": "bo", "wall_ms": 1001})
    );
    let first = include_str!("../../../docs/merges/region-first.rhai");
    assert_eq!(
        run(
            first,
            serde_json::json!([[1, 2]]),
            serde_json::json!(["us", "eu", "ap"])
        ),
        serde_json::json!("eu")
    );
    assert_eq!(
        run(
            first,
            serde_json::json!([[1, 2]]),
            serde_json::json!(["us", "eu", "ap", "us2"])
        ),
        serde_json::json!("eu"),
        "eu-west's newest (index 1; index 4 would be eu-west again)"
    );
}

/// A version installed by a repair before its op arrives is in the key's
/// context: a context covering it is not stale, and replaces it.
#[test]
fn a_context_covering_a_repaired_version_is_taken_and_replaces_it() {
    let mut rs = cluster("sum", 16);
    let key = key_merged_by("ap-south");
    for r in rs.iter_mut() {
        r.engine.enable_merges(regions());
    }
    put(&mut rs[1], &key, "7").unwrap();
    // ap-south gets eu-west's version by repair (state, not the op).
    let obj = rs[1].get("carts", &key).unwrap();
    let covers = rs[1].engine.vv().clone();
    rs[0].now += 1;
    let now = rs[0].now;
    rs[0]
        .engine
        .install(
            now,
            vec![(
                KeyspaceName::new("carts").unwrap(),
                Key::new(key.clone()).unwrap(),
                obj,
            )],
            &covers,
        )
        .unwrap();
    rs[0].commit();
    let ctx = match rs[0].get("carts", &key).unwrap() {
        Object::Mv(reg) => reg.context().clone(),
        _ => unreachable!(),
    };
    assert!(
        !rs[0].engine.vv().covers_all(&ctx),
        "the op itself has not arrived"
    );
    rs[0]
        .write(vec![(
            "carts",
            &key,
            Change::Put {
                value: Value::Json(Json::parse("1").unwrap()),
                context: Some(ctx),
            },
        )])
        .unwrap();
    exchange(&mut rs);
    for r in &rs {
        assert_eq!(read(r, &key).unwrap(), (read(r, &key).unwrap().0, 1));
        assert_eq!(read(r, &key).unwrap().0.value.as_str(), "1");
    }
}

/// Ships every op of `from` to `to`.
fn ship(rs: &mut [Region], from: usize, to: usize) {
    let ops = rs[from].log.clone();
    let now = rs[to].now;
    rs[to].engine.receive(now, ops).unwrap();
    rs[to].commit();
}

/// A key of `carts` whose merger is `region`.
fn key_merged_by(region: &str) -> String {
    let ks = KeyspaceName::new("carts").unwrap();
    (0..1000)
        .map(|i| format!("k{i}"))
        .find(|k| {
            merge::merger(&ks, &Key::new(k.clone()).unwrap(), &regions())
                .unwrap()
                .as_str()
                == region
        })
        .unwrap()
}

/// A write-back stands, in later merges, where the version it picked
/// stood: region-priority keeps the preferred region's value after another
/// region wrote the merge back, and first-writer-wins keeps the first
/// version against one written before the write-back that arrives after it.
#[test]
fn a_write_back_is_ordered_and_named_as_the_version_it_stands_for() {
    // region-priority, eu-west first: us-east writes the merge of
    // ap-south's and eu-west's versions back; a later ap-south version
    // (ap-south ranks before us-east by name) must not win over it.
    let mut rs = cluster("region-priority", 16);
    let mut d = custom("region-priority", 16);
    d.region_order = vec![RegionId::new("eu-west").unwrap()];
    rs[0].now += 1;
    let now = rs[0].now;
    assert!(rs[0].engine.define(now, d).unwrap());
    rs[0].commit();
    exchange(&mut rs);
    let key = key_merged_by("us-east");
    put(&mut rs[0], &key, "\"ap\"").unwrap();
    put(&mut rs[1], &key, "\"eu\"").unwrap();
    exchange(&mut rs);
    assert_eq!(write_back(&mut rs), 1);
    put(&mut rs[0], &key, "\"later\"").unwrap();
    exchange(&mut rs);
    for r in &rs {
        assert_eq!(
            read(r, &key).unwrap().0.value.as_str(),
            "\"eu\"",
            "{}",
            r.engine.replica()
        );
    }

    // first-writer-wins: a (t), b (t+10) merged and written back by
    // ap-south before it hears of mid (t+5) from us-east.
    let mut rs = cluster("first-writer-wins", 16);
    let key = key_merged_by("ap-south");
    let t = rs.iter().map(|r| r.now).max().unwrap() + 1_000;
    rs[0].now = t;
    put(&mut rs[0], &key, "\"a\"").unwrap();
    rs[2].now = t + 5;
    put(&mut rs[2], &key, "\"mid\"").unwrap();
    rs[1].now = t + 10;
    put(&mut rs[1], &key, "\"b\"").unwrap();
    ship(&mut rs, 1, 0);
    rs[0].engine.enable_merges(regions());
    rs[0].now = t + 20;
    let now = rs[0].now;
    assert_eq!(rs[0].engine.merge_due(now, 10).unwrap(), 1);
    rs[0].commit();
    exchange(&mut rs);
    for r in &rs {
        assert_eq!(
            read(r, &key).unwrap().0.value.as_str(),
            "\"a\"",
            "{}",
            r.engine.replica()
        );
    }
}

/// After a rollback a region may have shipped write-backs it no longer
/// has: it holds its own until it has applied what peers hold of its
/// earlier incarnations.
#[test]
fn write_backs_wait_for_what_peers_hold_of_this_regions_past() {
    let mut rs = cluster("sum", 16);
    let key = key_merged_by("ap-south");
    put(&mut rs[1], &key, "1").unwrap();
    put(&mut rs[2], &key, "2").unwrap();
    ship(&mut rs, 1, 0);
    ship(&mut rs, 2, 0);
    // ap-south's peers hold an op of an earlier ap-south incarnation that
    // ap-south lacks.
    let mut old = Region::new("ap-south");
    old.engine.reincarnate(meridian_crdt::ReplicaId::new(
        RegionId::new("ap-south").unwrap(),
        uuid::Uuid::from_u128(99),
    ));
    old.put("default", "x", "0");
    let hold = old.engine.vv().clone();
    rs[0].engine.enable_merges_after(regions(), hold);
    let now = rs[0].now + 1;
    assert!(!rs[0].engine.merges_due() && rs[0].engine.merges_held());
    assert_eq!(rs[0].engine.merge_due(now, 10).unwrap(), 0);
    // Once that op has arrived, the write-back goes ahead.
    let ops = old.log.clone();
    rs[0].engine.receive(now, ops).unwrap();
    assert!(rs[0].engine.merges_due());
    assert_eq!(rs[0].engine.merge_due(now, 10).unwrap(), 1);
}
