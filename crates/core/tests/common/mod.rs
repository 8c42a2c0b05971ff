//! A region driven by hand, shared by the engine's test files.

#![allow(dead_code)]

use std::sync::Arc;

use meridian_core::*;
use meridian_crdt::{Json, Object, Policy, RegionId, ReplicaId, Value};
use uuid::Uuid;

pub fn replica(name: &str) -> ReplicaId {
    ReplicaId::new(
        RegionId::new(name).unwrap(),
        Uuid::from_u128(name.len() as u128),
    )
}

/// One region driven by hand: the "log" is a Vec of durable ops.
pub struct Region {
    pub engine: Engine<MemBackend>,
    pub backend: MemBackend,
    pub log: Vec<Op>,
    pub now: u64,
}

impl Region {
    pub fn new(name: &str) -> Self {
        let backend = MemBackend::new();
        let engine = Engine::open(
            replica(name),
            EngineConfig::default(),
            Arc::new(backend.clone()),
        )
        .unwrap();
        Self {
            engine,
            backend,
            log: Vec::new(),
            now: 1_000_000,
        }
    }

    pub fn commit(&mut self) -> Committed {
        self.log.extend(self.engine.staged().cloned());
        self.engine
            .commit(Some(Lsn(self.log.len() as u64)))
            .unwrap()
    }

    pub fn write(&mut self, muts: Vec<(&str, &str, Change)>) -> Result<Committed, WriteError> {
        self.now += 1;
        let req = WriteRequest {
            deadline_ms: None,
            not_before_ms: None,
            fallback: false,
            mutations: muts
                .into_iter()
                .map(|(ks, k, change)| MutationRequest {
                    keyspace: ks.into(),
                    key: Key::new(k).unwrap(),
                    change,
                })
                .collect(),
        };
        self.engine.submit(self.now, req)?;
        Ok(self.commit())
    }

    pub fn put(&mut self, ks: &str, k: &str, json: &str) -> Committed {
        self.write(vec![(
            ks,
            k,
            Change::Put {
                value: Value::Json(Json::parse(json).unwrap()),
                context: None,
            },
        )])
        .unwrap()
    }

    pub fn get(&self, ks: &str, k: &str) -> Option<Object> {
        self.engine
            .reader()
            .get(ks, &Key::new(k).unwrap())
            .unwrap()
            .live()
            .cloned()
    }

    pub fn define(&mut self, name: &str, policy: Policy) {
        self.now += 1;
        let def = KeyspaceDef::new(KeyspaceName::new(name).unwrap(), policy);
        assert!(self.engine.define(self.now, def).unwrap());
        self.commit();
    }
}

impl Region {
    /// Restarts: a new engine on the same store, replaying the log as
    /// recovery does. Panics if the region cannot start.
    pub fn restart(&mut self) {
        let me = self.engine.replica().clone();
        self.engine = Engine::open(me, EngineConfig::default(), Arc::new(self.backend.clone()))
            .unwrap_or_else(|e| panic!("the region does not start again: {e}"));
        for op in self.log.clone() {
            self.engine
                .replay(op)
                .unwrap_or_else(|e| panic!("replay: {e}"));
        }
        self.engine
            .commit(None)
            .unwrap_or_else(|e| panic!("replay commit: {e}"));
    }
}
