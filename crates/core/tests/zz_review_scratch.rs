mod common;
use std::sync::Arc;
use common::Region;
use meridian_core::ownership::MapRequest;
use meridian_core::*;
use meridian_crdt::{Json, Policy, RegionId, ReplicaId, Value};

fn r(s: &str) -> RegionId { RegionId::new(s).unwrap() }
fn all() -> Vec<RegionId> { vec![r("a"), r("b"), r("c")] }
fn ship(g: &mut [Region], from: usize, to: usize) {
    let ops = g[from].log.clone();
    let x = &mut g[to];
    x.now += 1;
    x.engine.receive(x.now, ops).unwrap();
    x.commit();
}
fn everywhere(g: &mut [Region]) {
    for _ in 0..2 { for f in 0..g.len() { for t in 0..g.len() { if f != t { ship(g, f, t); } } } }
}
fn fence(x: &mut Region) { x.now += 1; let n = x.now; x.engine.write_fences(n).unwrap(); x.commit(); }
fn set(x: &mut Region, ks: &str, j: &str) {
    x.now += 1; let n = x.now;
    let req: MapRequest = serde_json::from_str(j).unwrap();
    x.engine.set_ownership(n, ks, &req).unwrap().unwrap();
    x.commit();
}
fn put(x: &mut Region, ks: &str, k: &str, v: &str) -> Result<Committed, WriteError> {
    x.write(vec![(ks, k, Change::Put { value: Value::Json(Json::parse(v).unwrap()), context: None })])
}
fn merge(x: &mut Region) -> usize { x.now += 1; let n = x.now; let s = x.engine.merge_due(n, 64).unwrap(); x.commit(); s }

#[test]
fn t1_wiped_region_config_define_drops_owned_and_takes_owned_keys() {
    let mut g: Vec<Region> = ["a", "b", "c"].into_iter().map(Region::new).collect();
    for x in &mut g { x.engine.enable_merges(all()); }
    g[0].define("users", Policy::Lww);
    everywhere(&mut g);
    set(&mut g[0], "users", r#"{"rules":[{"prefix":"eu/","owner":"b"}]}"#);
    everywhere(&mut g);
    for x in g.iter_mut() { fence(x); }
    everywhere(&mut g);
    put(&mut g[1], "users", "eu/1", "\"b\"").unwrap();
    // c wiped: new incarnation, empty disk; defines its configured keyspaces at start.
    let backend = MemBackend::new();
    let eng = Engine::open(ReplicaId::new(r("c"), uuid::Uuid::from_u128(777)), EngineConfig::default(), Arc::new(backend.clone())).unwrap();
    let mut c2 = Region { engine: eng, backend, log: Vec::new(), now: g[0].now + 10_000 };
    c2.engine.enable_merges(all());
    c2.define("users", Policy::Lww);
    let took = put(&mut c2, "users", "eu/1", "\"c-wiped\"");
    println!("T1 wiped c write to owned eu/1: {:?}", took.as_ref().map(|_| "TAKEN").map_err(|e| e.to_string()));
    g[2] = c2;
    everywhere(&mut g);
    for x in &g {
        let p = x.engine.reader().published();
        println!("T1 {} owned={} conflicts={:?}", x.engine.replica().region, x.engine.registry().get("users").unwrap().owned, p.stats.conflicts);
    }
}

#[test]
fn t2_owner_to_ownerless_double_writeback() {
    let mut g: Vec<Region> = ["a", "b", "c"].into_iter().map(Region::new).collect();
    for x in &mut g { x.engine.enable_merges(all()); }
    let mut d = KeyspaceDef::new(KeyspaceName::new("carts").unwrap(), Policy::Custom);
    d.merge = Some("sum".into());
    g[0].now += 1; let n = g[0].now; g[0].engine.define(n, d).unwrap(); g[0].commit();
    everywhere(&mut g);
    let ks = KeyspaceName::new("carts").unwrap();
    let key = (0..1000).map(|i| format!("k{i}")).find(|k| merge::merger(&ks, &Key::new(k.clone()).unwrap(), &all()) == Some(&r("c"))).unwrap();
    put(&mut g[0], "carts", &key, "1").unwrap();
    put(&mut g[2], "carts", &key, "2").unwrap();
    set(&mut g[0], "carts", r#"{"rules":[],"default":"b"}"#);
    everywhere(&mut g);
    for x in g.iter_mut() { fence(x); }
    everywhere(&mut g);
    println!("T2 b write-backs: {}", merge(&mut g[1]));
    // steward removes the owner; only c hears of it before b's write-back reaches it
    set(&mut g[0], "carts", r#"{"rules":[],"default":null}"#);
    ship(&mut g, 0, 2);
    println!("T2 c write-backs: {}", merge(&mut g[2]));
    everywhere(&mut g);
    for i in 0..3 { merge(&mut g[i]); }
    everywhere(&mut g);
    for x in &g { println!("T2 {} {:?}", x.engine.replica().region, x.get("carts", &key)); }
}

#[test]
fn t3_fallback_accept_any_map_change_blocks_unchanged_owner() {
    let mut g: Vec<Region> = ["a", "b", "c"].into_iter().map(Region::new).collect();
    for x in &mut g { x.engine.enable_merges(all()); }
    g[0].define("users", Policy::Lww);
    everywhere(&mut g);
    set(&mut g[0], "users", r#"{"rules":[{"prefix":"eu/","owner":"b"}],"fallback":"accept"}"#);
    everywhere(&mut g);
    for x in g.iter_mut() { fence(x); }
    everywhere(&mut g);
    put(&mut g[1], "users", "eu/1", "1").unwrap();
    // c is down; operator adds an unrelated rule
    set(&mut g[0], "users", r#"{"rules":[{"prefix":"eu/","owner":"b"},{"prefix":"us/","owner":"a"}],"fallback":"accept"}"#);
    ship(&mut g, 0, 1); fence(&mut g[1]); ship(&mut g, 1, 0); fence(&mut g[0]); ship(&mut g, 0, 1);
    println!("T3 b (unchanged owner) write eu/2: {:?}", put(&mut g[1], "users", "eu/2", "2").map(|_| ()).map_err(|e| e.to_string()));
}
