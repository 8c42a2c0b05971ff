//! Every read's token covers everything the read returned, even while the
//! writer is between making a group visible and publishing its vector.

use std::sync::{Arc, Mutex};

use meridian_core::state::{Batch, Entry};
use meridian_core::*;
use meridian_crdt::{Crdt, Json, Object, RegionId, ReplicaId, Value};
use uuid::Uuid;

type Hook = Box<dyn FnMut() + Send>;

/// A backend that runs a hook right after each batch becomes visible.
struct Probe {
    inner: MemBackend,
    after_write: Mutex<Option<Hook>>,
}

impl Backend for Probe {
    type Snap = <MemBackend as Backend>::Snap;
    fn snapshot(&self) -> Result<Self::Snap, StoreError> {
        self.inner.snapshot()
    }
    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(table, key)
    }
    fn write(&self, batch: Batch) -> Result<(), StoreError> {
        self.inner.write(batch)?;
        if let Some(h) = self.after_write.lock().unwrap().as_mut() {
            h();
        }
        Ok(())
    }
    fn scan(&self, t: &str, p: &[u8], s: &[u8], l: usize) -> Result<Vec<Entry>, StoreError> {
        self.inner.scan(t, p, s, l)
    }
    fn persist(&self) -> Result<(), StoreError> {
        self.inner.persist()
    }
    fn disk_bytes(&self) -> u64 {
        0
    }
}

fn lww_dot(o: &Object) -> meridian_crdt::Dot {
    match o {
        Object::Lww(r) => r.version().unwrap().dot.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_read_between_the_store_write_and_the_publish_gets_a_covering_token() {
    // Before: the token was the published vector, read after the state but
    // possibly before the group's vector was published: it missed the write.
    let me = ReplicaId::new(RegionId::new("us-east").unwrap(), Uuid::from_u128(7));
    let probe = Arc::new(Probe {
        inner: MemBackend::new(),
        after_write: Mutex::new(None),
    });
    let mut engine = Engine::open(me, EngineConfig::default(), probe.clone()).unwrap();
    let reader = Reader::new(probe.clone(), engine.shared());
    let seen: Arc<Mutex<Vec<(bool, bool)>>> = Arc::default();
    let s = seen.clone();
    *probe.after_write.lock().unwrap() = Some(Box::new(move || {
        let r = reader.get("default", &Key::new("k").unwrap()).unwrap();
        if let Some(o) = r.live() {
            s.lock().unwrap().push((true, r.vv.covers(&lww_dot(o))));
        }
    }));
    for i in 0..3 {
        let req = WriteRequest {
            deadline_ms: None,
            not_before_ms: None,
            fallback: false,
            mutations: vec![MutationRequest {
                keyspace: "default".into(),
                key: Key::new("k").unwrap(),
                change: Change::Put {
                    value: Value::Json(Json::parse(&i.to_string()).unwrap()),
                    context: None,
                },
            }],
        };
        engine.submit(1_000 + i, req).unwrap();
        engine.commit(Some(Lsn(i + 1))).unwrap();
    }
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.len(),
        3,
        "the probe read every write as it became visible"
    );
    assert!(seen.iter().all(|(_, covered)| *covered), "{seen:?}");
}

#[test]
fn an_installed_object_is_covered_by_the_tokens_of_reads_that_return_it() {
    // Before: a repaired or transferred object appeared with a token that
    // did not cover the writes it reflected.
    let peer = ReplicaId::new(RegionId::new("eu-west").unwrap(), Uuid::from_u128(8));
    let me = ReplicaId::new(RegionId::new("us-east").unwrap(), Uuid::from_u128(7));
    let backend = Arc::new(MemBackend::new());
    let mut engine = Engine::open(me, EngineConfig::default(), backend).unwrap();
    let mut obj = Object::empty(meridian_crdt::Policy::Lww);
    let dot = meridian_crdt::Dot::new(peer.clone(), meridian_crdt::Seq(5));
    let hlc = meridian_crdt::Hlc::new(900, 0).unwrap();
    let deps = meridian_crdt::VersionVector::new();
    let op = meridian_crdt::ObjectOp::Lww(meridian_crdt::LwwOp::Set(Value::Bytes(vec![1])));
    obj.apply(
        &op,
        &meridian_crdt::OpMeta {
            dot: &dot,
            hlc,
            deps: &deps,
        },
    );
    let covers: meridian_crdt::VersionVector =
        [(peer, meridian_crdt::Seq(5))].into_iter().collect();
    let entries = vec![(
        KeyspaceName::default_keyspace(),
        Key::new("k").unwrap(),
        obj,
    )];
    engine.install(1_000, entries, &covers).unwrap();
    engine.commit(None).unwrap();
    let r = engine
        .reader()
        .get("default", &Key::new("k").unwrap())
        .unwrap();
    assert!(r.live().is_some());
    assert!(r.vv.covers(&dot), "token {:?} misses {dot:?}", r.vv);
}
