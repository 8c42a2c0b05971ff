//! Restore from a snapshot and log segments: up to a time, filtered to a
//! key range, and refusing gaps and damage by file name.

use std::path::PathBuf;
use std::sync::Arc;

use meridian_core::backup::chunk::Chunker;
use meridian_core::backup::{Filter, Restore, RestoreError};
use meridian_core::testdir::TestDir;
use meridian_core::*;
use meridian_crdt::{Hlc, Json, Object, Value};

mod common;
use common::replica;

struct Written {
    /// Snapshot chunks after `at_snapshot` writes.
    chunks: Vec<Vec<u8>>,
    /// Sealed segments: (first LSN, path).
    segments: Vec<(u64, PathBuf)>,
    /// Wall time of each write.
    walls: Vec<u64>,
}

fn put(i: usize) -> WriteRequest {
    let key = if i.is_multiple_of(2) {
        format!("a/{}", i % 7)
    } else {
        format!("b/{}", i % 5)
    };
    WriteRequest {
        deadline_ms: None,
        not_before_ms: None,
        fallback: false,
        mutations: vec![MutationRequest {
            keyspace: "default".into(),
            key: Key::new(key).unwrap(),
            change: Change::Put {
                value: Value::Json(Json::parse(&i.to_string()).unwrap()),
                context: None,
            },
        }],
    }
}

/// 60 writes through an engine and a real log of small segments, with a
/// snapshot taken after the 20th.
fn write(dir: &std::path::Path) -> Written {
    let backend = Arc::new(MemBackend::new());
    let mut engine = Engine::open(replica("us-east"), EngineConfig::default(), backend).unwrap();
    let opts = LogOptions {
        segment_bytes: 600,
        ..LogOptions::default()
    };
    let (mut log, _) = Log::open(dir, opts, false, |_, _| {}).unwrap();
    let mut chunks = Vec::new();
    let mut walls = Vec::new();
    for i in 0..60 {
        let now = 1_000_000 + i as u64 * 10;
        engine.submit(now, put(i)).unwrap();
        engine.step(&mut log, now).unwrap();
        walls.push(now);
        if i == 19 {
            let snap = engine.reader().transfer_snapshot().unwrap();
            let mut c = Chunker::new(snap.inner(), snap.tables());
            while let Some(ch) = c.next_chunk().unwrap() {
                chunks.push(ch.bytes);
            }
        }
    }
    log.seal_active().unwrap();
    let segments = log
        .segments()
        .filter(|s| s.records > 0)
        .map(|s| (s.first_lsn.0, s.path.clone()))
        .collect();
    Written {
        chunks,
        segments,
        walls,
    }
}

fn values(r: &Reader<MemBackend>) -> Vec<(String, String)> {
    let page = r.list("default", "", None, 1000).unwrap();
    page.items
        .iter()
        .map(|(k, o)| match o {
            Object::Lww(reg) => match reg.value() {
                Some(Value::Json(j)) => (k.as_str().to_string(), j.as_str().to_string()),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        })
        .collect()
}

/// What the 60 writes leave when only the first `n` count.
fn expected(n: usize, prefix: &str) -> Vec<(String, String)> {
    let mut m = std::collections::BTreeMap::new();
    for i in 0..n {
        let key = if i.is_multiple_of(2) {
            format!("a/{}", i % 7)
        } else {
            format!("b/{}", i % 5)
        };
        if key.starts_with(prefix) {
            m.insert(key, i.to_string());
        }
    }
    m.into_iter().collect()
}

fn restore(
    w: &Written,
    filter: Filter,
    skip: Option<usize>,
) -> Result<Vec<(String, String)>, RestoreError> {
    let mut r = Restore::new(Arc::new(MemBackend::new()), None, filter);
    for (i, c) in w.chunks.iter().enumerate() {
        r.load_chunk(&format!("chunk-{i}"), c)?;
    }
    for (i, (first, path)) in w.segments.iter().enumerate() {
        if Some(i) == skip {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        r.replay(&name, *first, std::fs::read(path).unwrap())?;
    }
    let (_, reader) = r.finish()?;
    Ok(values(&reader))
}

#[test]
fn restores_to_any_time_after_the_snapshot() {
    let d = TestDir::new("backup-restore");
    let w = write(d.path());
    assert!(w.segments.len() > 4, "{} segments", w.segments.len());
    for n in [20, 21, 33, 47, 60] {
        let to = Hlc::new(w.walls[n - 1], u16::MAX).unwrap();
        let got = restore(
            &w,
            Filter {
                to: Some(to),
                keyspace: None,
            },
            None,
        )
        .unwrap();
        assert_eq!(got, expected(n, ""), "restore to write {n}");
    }
    // Everything, and only a prefix.
    assert_eq!(
        restore(&w, Filter::default(), None).unwrap(),
        expected(60, "")
    );
    let only_a = Filter {
        to: Some(Hlc::new(w.walls[40], u16::MAX).unwrap()),
        keyspace: Some((KeyspaceName::new("default").unwrap(), b"a/".to_vec())),
    };
    assert_eq!(restore(&w, only_a, None).unwrap(), expected(41, "a/"));
}

#[test]
fn a_missing_segment_or_a_damaged_one_is_named() {
    let d = TestDir::new("backup-damage");
    let w = write(d.path());
    // The snapshot is at write 20: a segment holding later writes missing
    // leaves a gap.
    let last = w.segments.len() - 2;
    match restore(&w, Filter::default(), Some(last)) {
        Err(RestoreError::Gap { file, .. }) => {
            let next = w.segments[last + 1]
                .1
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            assert_eq!(file, next);
        }
        other => panic!("{other:?}"),
    }
    let (_, path) = &w.segments[last];
    let mut bytes = std::fs::read(path).unwrap();
    let at = bytes.len() - 5;
    bytes[at] ^= 0xff;
    std::fs::write(path, &bytes).unwrap();
    match restore(&w, Filter::default(), None) {
        Err(RestoreError::Damaged { file, .. }) => {
            assert_eq!(file, path.file_name().unwrap().to_string_lossy());
        }
        other => panic!("{other:?}"),
    }
    let mut r = Restore::new(Arc::new(MemBackend::new()), None, Filter::default());
    let mut chunk = w.chunks[0].clone();
    chunk[10] ^= 1;
    match r.load_chunk("chunk-0", &chunk) {
        Err(RestoreError::Damaged { file, .. }) => assert_eq!(file, "chunk-0"),
        other => panic!("{other:?}"),
    }
}

fn lww_op(seq: u64, wall: u64) -> Op {
    Op {
        dot: meridian_crdt::Dot::new(replica("eu-west"), meridian_crdt::Seq(seq)),
        hlc: Hlc::new(wall, 0).unwrap(),
        deps: meridian_crdt::VersionVector::new(),
        mutations: vec![Mutation {
            keyspace: KeyspaceName::default_keyspace(),
            key: Key::new(format!("key-{seq}")).unwrap(),
            op: meridian_crdt::ObjectOp::Lww(meridian_crdt::LwwOp::Set(Value::Bytes(vec![1; 8]))),
        }],
    }
}

#[test]
fn ops_that_skip_seqs_refuse_a_restore_that_could_miss_them() {
    let d = TestDir::new("backup-skip");
    let (mut log, _) = Log::open(d.path(), LogOptions::default(), false, |_, _| {}).unwrap();
    // Seqs 3 and 4 of eu-west came by a state transfer: not in the log.
    for (seq, wall) in [(1, 100), (2, 200), (5, 500)] {
        log.append([&lww_op(seq, wall)]).unwrap();
        log.sync().unwrap();
    }
    log.seal_active().unwrap();
    let segs: Vec<(u64, PathBuf)> = log
        .segments()
        .filter(|s| s.records > 0)
        .map(|s| (s.first_lsn.0, s.path.clone()))
        .collect();
    let run = |to: Option<u64>| {
        let filter = Filter {
            to: to.map(|t| Hlc::new(t, u16::MAX).unwrap()),
            keyspace: None,
        };
        let mut r = Restore::new(Arc::new(MemBackend::new()), None, filter);
        for (first, path) in &segs {
            r.replay("seg", *first, std::fs::read(path).unwrap())?;
        }
        r.finish().map(|(done, _)| done)
    };
    // Up to a time before the last op ahead of the gap: nothing can be
    // missing (3 and 4 are stamped after 2).
    assert_eq!(run(Some(150)).unwrap().ops, 1);
    // After it: 3 and 4 may be stamped before the time.
    match run(Some(300)) {
        Err(RestoreError::Skipped { after, .. }) => assert_eq!(after, 2),
        Err(e) => panic!("{e}"),
        Ok(d) => panic!("restored {} ops", d.ops),
    }
    // Everything: 5 waits for 3 and 4, which never come.
    match run(None) {
        Err(RestoreError::Held { held }) => assert_eq!(held, 1),
        Err(e) => panic!("{e}"),
        Ok(d) => panic!("restored {} ops", d.ops),
    }
}

/// The chunk of one object stored under `key`, its JSON text `text` put in
/// place of the canonical text of the same length.
fn chunk_with_object_text(text: &str) -> Vec<u8> {
    let backend = Arc::new(MemBackend::new());
    let mut engine =
        Engine::open(replica("us-east"), EngineConfig::default(), backend.clone()).unwrap();
    let d = TestDir::new("backup-loose-json");
    let (mut log, _) = Log::open(d.path(), LogOptions::default(), false, |_, _| {}).unwrap();
    let canonical = r#"{"a":1,"b":2}"#;
    assert_eq!(text.len(), canonical.len());
    let mut req = put(0);
    req.mutations[0].key = Key::new("loose").unwrap();
    req.mutations[0].change = Change::Put {
        value: Value::Json(Json::parse(canonical).unwrap()),
        context: None,
    };
    engine.submit(1_000_000, req).unwrap();
    engine.step(&mut log, 1_000_000).unwrap();
    let table = "k.default";
    let stored = backend.get(table, b"loose").unwrap().unwrap();
    let at = stored
        .windows(canonical.len())
        .position(|w| w == canonical.as_bytes())
        .unwrap();
    let mut edited = stored.clone();
    edited[at..at + text.len()].copy_from_slice(text.as_bytes());
    let only = MemBackend::new();
    let mut b = state::Batch::new();
    b.put(table, b"loose".to_vec(), edited);
    only.write(b).unwrap();
    let snap = only.snapshot().unwrap();
    let mut c = Chunker::new(&snap, vec![table.to_string()]);
    c.next_chunk().unwrap().unwrap().bytes
}

#[test]
fn a_backup_object_whose_json_is_not_canonical_is_refused_at_restore() {
    // The store's reads take its objects as this region wrote them; what
    // comes from a backup target is checked before the store holds it.
    let mut r = Restore::new(Arc::new(MemBackend::new()), None, Filter::default());
    r.load_chunk("chunk-0", &chunk_with_object_text(r#"{"a":1,"b":2}"#))
        .unwrap();
    let mut r = Restore::new(Arc::new(MemBackend::new()), None, Filter::default());
    match r.load_chunk("chunk-1", &chunk_with_object_text(r#"{"b":2,"a":1}"#)) {
        Err(RestoreError::Damaged { file, reason }) => {
            assert_eq!(file, "chunk-1");
            assert!(reason.contains("k.default"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}
