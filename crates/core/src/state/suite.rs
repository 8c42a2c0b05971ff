//! The storage test suite every [`Backend`] must pass.
//!
//! Call [`run_all`] from the backend's tests with a constructor of fresh,
//! empty stores and, for backends that persist to disk, a way to reopen one.

use super::{Backend, Batch, ReadSnapshot};

/// Runs every check. `fresh` makes an empty store; `reopen`, when given, is
/// called with `true` to open the same on-disk store again (dropping the
/// previous handle first is the caller's affair: the suite drops its handle
/// before asking) and lets the suite check persistence across reopen.
pub fn run_all<B: Backend>(
    fresh: &mut dyn FnMut() -> B,
    reopen: Option<&mut dyn FnMut(bool) -> Option<B>>,
) {
    get_and_overwrite(&fresh());
    batches_are_applied_in_order(&fresh());
    missing_tables_are_empty(&fresh());
    scan_orders_filters_and_limits(&fresh());
    delete_removes(&fresh());
    snapshots_do_not_see_later_writes(&fresh());
    if let Some(reopen) = reopen {
        persisted_batches_survive_reopen(reopen);
    }
}

fn put(store: &impl Backend, table: &str, k: &[u8], v: &[u8]) {
    let mut b = Batch::new();
    b.put(table, k.to_vec(), v.to_vec());
    store.write(b).expect("write");
}

fn get_and_overwrite(s: &impl Backend) {
    put(s, "t", b"k", b"1");
    assert_eq!(s.get("t", b"k").unwrap(), Some(b"1".to_vec()));
    put(s, "t", b"k", b"2");
    assert_eq!(s.get("t", b"k").unwrap(), Some(b"2".to_vec()));
    assert_eq!(s.get("t", b"other").unwrap(), None);
    assert_eq!(s.get("u", b"k").unwrap(), None, "tables are separate");
}

fn batches_are_applied_in_order(s: &impl Backend) {
    let mut b = Batch::new();
    b.put("t", b"a".to_vec(), b"first".to_vec());
    b.put("u", b"a".to_vec(), b"other table".to_vec());
    b.put("t", b"a".to_vec(), b"second".to_vec());
    s.write(b).unwrap();
    assert_eq!(s.get("t", b"a").unwrap(), Some(b"second".to_vec()));
    assert_eq!(s.get("u", b"a").unwrap(), Some(b"other table".to_vec()));
}

fn missing_tables_are_empty(s: &impl Backend) {
    assert_eq!(s.get("nowhere", b"k").unwrap(), None);
    assert!(s.scan("nowhere", b"", b"", 10).unwrap().is_empty());
}

fn scan_orders_filters_and_limits(s: &impl Backend) {
    for k in ["b/2", "a/1", "b/1", "b/3", "c", "b\u{ff}"] {
        put(s, "t", k.as_bytes(), k.as_bytes());
    }
    let keys = |v: Vec<(Vec<u8>, Vec<u8>)>| -> Vec<String> {
        v.into_iter()
            .map(|(k, _)| String::from_utf8(k).unwrap())
            .collect()
    };
    assert_eq!(
        keys(s.scan("t", b"", b"", 100).unwrap()),
        ["a/1", "b/1", "b/2", "b/3", "b\u{ff}", "c"]
    );
    assert_eq!(
        keys(s.scan("t", b"b/", b"", 100).unwrap()),
        ["b/1", "b/2", "b/3"]
    );
    assert_eq!(
        keys(s.scan("t", b"b/", b"b/2", 100).unwrap()),
        ["b/2", "b/3"]
    );
    assert_eq!(keys(s.scan("t", b"b/", b"", 2).unwrap()), ["b/1", "b/2"]);
    assert_eq!(
        keys(s.scan("t", b"", b"b/3\0", 100).unwrap()),
        ["b\u{ff}", "c"]
    );
}

fn delete_removes(s: &impl Backend) {
    put(s, "t", b"x", b"1");
    let mut b = Batch::new();
    b.delete("t", b"x".to_vec());
    s.write(b).unwrap();
    assert_eq!(s.get("t", b"x").unwrap(), None);
    assert!(s.scan("t", b"x", b"", 10).unwrap().is_empty());
}

fn snapshots_do_not_see_later_writes(s: &impl Backend) {
    put(s, "t", b"a", b"1");
    put(s, "u", b"a", b"1");
    let snap = s.snapshot().unwrap();
    let mut b = Batch::new();
    b.put("t", b"a".to_vec(), b"2".to_vec());
    b.put("u", b"b".to_vec(), b"2".to_vec());
    b.put("new", b"x".to_vec(), b"2".to_vec());
    s.write(b).unwrap();
    assert_eq!(snap.get("t", b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(snap.scan("u", b"", b"", 10).unwrap().len(), 1);
    assert_eq!(snap.get("new", b"x").unwrap(), None);
    assert_eq!(s.get("t", b"a").unwrap(), Some(b"2".to_vec()));
}

fn persisted_batches_survive_reopen<B: Backend>(reopen: &mut dyn FnMut(bool) -> Option<B>) {
    {
        let s = reopen(true).expect("open");
        for i in 0..100u32 {
            let mut b = Batch::new();
            b.put("t", i.to_be_bytes().to_vec(), vec![7; 100]);
            b.put("meta", b"last".to_vec(), i.to_be_bytes().to_vec());
            s.write(b).unwrap();
        }
        s.persist().unwrap();
    }
    let s = reopen(true).expect("reopen");
    assert_eq!(
        s.get("meta", b"last").unwrap(),
        Some(99u32.to_be_bytes().to_vec())
    );
    assert_eq!(s.scan("t", b"", b"", 1000).unwrap().len(), 100);
}
