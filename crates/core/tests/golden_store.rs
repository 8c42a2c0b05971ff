//! Golden vectors of what the engine keeps in its state store besides the
//! objects: the checkpoint (what the stored state reflects), a conflict
//! ledger entry in each of its three shapes (an LWW loser, a merge
//! write-back, a write taken outside its owner) and a keyspace's ledger
//! counts, and the backup manifest (JSON, with a `format` field). Each
//! binary one starts with the codec's format version byte. A failure here
//! means a region could no longer read the store an older build wrote:
//! bump the version and keep a reader for the old bytes, never just update
//! the vector. (Objects are pinned in `crates/crdt/tests/golden.rs`, the op
//! log in `golden_log.rs`, the peer wire in `golden_wire.rs`.)

mod vectors;

use meridian_core::engine::ledger::{FallbackRecord, LedgerCounts, LedgerEntry, MergeRecord};
use meridian_core::engine::store::{Checkpoint, checkpoint_entry};
use meridian_core::ownership::Epoch;
use meridian_core::{Key, KeyspaceName};
use meridian_crdt::codec::{self, FORMAT_VERSION};
use meridian_crdt::{Dot, Hlc, Json, RegionId, ReplicaId, Seq, Value, Version, VersionVector};
use vectors::{T0, pinned, rep, unhex};

fn version(r: &ReplicaId, seq: u64, logical: u16) -> Version {
    Version::new(
        Hlc::new(T0 + seq, logical).unwrap(),
        Dot::new(r.clone(), Seq(seq)),
    )
}

fn json(text: &str) -> Value {
    Value::Json(Json::parse(text).unwrap())
}

#[test]
fn a_checkpoint() {
    let (a, b) = (rep("us-east", 1), rep("eu-west", 2));
    let vv: VersionVector = [(a, Seq(42)), (b, Seq(7))].into_iter().collect();
    let c = Checkpoint {
        vv,
        lsn: 49,
        hlc: Hlc::new(T0, 3).unwrap(),
    };
    let (key, bytes) = checkpoint_entry(&c).unwrap();
    assert_eq!(key, b"checkpoint");
    pinned(
        &bytes,
        "0193929292a765752d77657374c41000000000000000000000000000000002079292a775732d65617374c410000000000000000000000000000000012a31cf019ac0db038b0003",
    );
    let back: Checkpoint = codec::decode(&bytes, 1 << 20).unwrap();
    assert_eq!(back, c);
}

fn lww_entry() -> LedgerEntry {
    let (a, b) = (rep("us-east", 1), rep("eu-west", 2));
    LedgerEntry {
        id: 5,
        keyspace: KeyspaceName::default_keyspace(),
        key: Key::new("user:1").unwrap(),
        path: vec!["name".into()],
        rule: "lww".into(),
        winner: version(&a, 3, 0),
        winner_value: Some(json(r#"{"n":"ada"}"#)),
        loser: version(&b, 2, 1),
        loser_value: None,
        ambiguous: true,
        recorded_at: Hlc::new(T0 + 10, 0).unwrap(),
        merge: None,
        fallback: None,
    }
}

#[test]
fn a_ledger_entry_for_an_lww_loser() {
    let e = lww_entry();
    let bytes = codec::encode(&e).unwrap();
    pinned(
        &bytes,
        "019d05a764656661756c74a6757365723a3191a46e616d65a36c777792cf019ac0db038e00009292a775732d65617374c410000000000000000000000000000000010381a16aab7b226e223a22616461227d92cf019ac0db038d00019292a765752d77657374c4100000000000000000000000000000000202c0c3cf019ac0db03950000c0c0",
    );
    assert_eq!(codec::decode::<LedgerEntry>(&bytes, 1 << 20).unwrap(), e);
    // Written before merges and fallbacks were recorded: 11 fields.
    let old = unhex(
        "019b05a764656661756c74a6757365723a3191a46e616d65a36c777792cf019ac0db038e00009292a775732d65617374c410000000000000000000000000000000010381a16aab7b226e223a22616461227d92cf019ac0db038d00019292a765752d77657374c4100000000000000000000000000000000202c0c3cf019ac0db03950000",
    );
    assert_eq!(codec::decode::<LedgerEntry>(&old, 1 << 20).unwrap(), e);
}

#[test]
fn a_ledger_entry_for_a_merge_write_back() {
    let (a, b) = (rep("us-east", 1), rep("eu-west", 2));
    let e = LedgerEntry {
        rule: "merge".into(),
        path: vec![],
        merge: Some(MergeRecord {
            function: "max".into(),
            hash: "9f86d081".into(),
            inputs: vec![
                (version(&a, 3, 0), Some(json("1"))),
                (version(&b, 2, 1), None),
            ],
            values_omitted: false,
            failed: Some("over budget".into()),
        }),
        ..lww_entry()
    };
    let bytes = codec::encode(&e).unwrap();
    pinned(
        &bytes,
        "019d05a764656661756c74a6757365723a3190a56d6572676592cf019ac0db038e00009292a775732d65617374c410000000000000000000000000000000010381a16aab7b226e223a22616461227d92cf019ac0db038d00019292a765752d77657374c4100000000000000000000000000000000202c0c3cf019ac0db0395000095a36d6178a83966383664303831929292cf019ac0db038e00009292a775732d65617374c410000000000000000000000000000000010381a16aa1319292cf019ac0db038d00019292a765752d77657374c4100000000000000000000000000000000202c0c2ab6f76657220627564676574c0",
    );
    assert_eq!(codec::decode::<LedgerEntry>(&bytes, 1 << 20).unwrap(), e);
}

#[test]
fn a_ledger_entry_for_a_write_taken_outside_its_owner() {
    let e = LedgerEntry {
        rule: "fallback".into(),
        fallback: Some(FallbackRecord {
            owner: RegionId::new("ap-south").unwrap(),
            epoch: Epoch(4),
            rule: Some(1),
        }),
        ..lww_entry()
    };
    let bytes = codec::encode(&e).unwrap();
    pinned(
        &bytes,
        "019d05a764656661756c74a6757365723a3191a46e616d65a866616c6c6261636b92cf019ac0db038e00009292a775732d65617374c410000000000000000000000000000000010381a16aab7b226e223a22616461227d92cf019ac0db038d00019292a765752d77657374c4100000000000000000000000000000000202c0c3cf019ac0db03950000c093a861702d736f7574680401",
    );
    assert_eq!(codec::decode::<LedgerEntry>(&bytes, 1 << 20).unwrap(), e);
}

#[test]
fn ledger_counts_and_the_older_counts_without_bytes() {
    let c = LedgerCounts {
        first: 3,
        next: 10,
        dropped: 3,
        bytes: 812,
        counted_from: Some(3),
    };
    let bytes = codec::encode(&c).unwrap();
    pinned(&bytes, "0195030a03cd032c03");
    assert_eq!(codec::decode::<LedgerCounts>(&bytes, 1024).unwrap(), c);
    // Written before byte counting knew where it started: 4 fields, bytes
    // counted but no `counted_from`.
    let four =
        codec::decode::<LedgerCounts>(&[FORMAT_VERSION, 0x94, 3, 10, 3, 0xcd, 0x03, 0x2c], 1024)
            .unwrap();
    assert_eq!(
        four,
        LedgerCounts {
            counted_from: None,
            ..c
        }
    );
    // Written before bytes were counted: 3 fields.
    let old = codec::decode::<LedgerCounts>(&[FORMAT_VERSION, 0x93, 3, 10, 3], 1024).unwrap();
    assert_eq!(
        old,
        LedgerCounts {
            bytes: 0,
            counted_from: None,
            ..c
        }
    );
}

/// The backup manifest is JSON in the backup target; old backups must stay
/// restorable, so its field names, order and value encodings are pinned
/// (the writer pretty-prints the same object; it carries `format`).
#[test]
fn a_backup_manifest() {
    use meridian_core::backup::manifest::{FORMAT, FileRef, Manifest, SegmentRef};
    let a = rep("us-east", 1);
    let file = |name: &str, bytes| FileRef {
        name: name.into(),
        bytes,
        sha256: "ab".repeat(32),
    };
    let m = Manifest {
        format: FORMAT,
        id: "20261203T120000Z-0001".into(),
        region: "us-east".into(),
        replica: a.to_string(),
        log_id: "log-1".into(),
        started_ms: T0,
        finished_ms: T0 + 900,
        vv: [(a, Seq(12))].into_iter().collect(),
        lsn: 12,
        hlc: Hlc::new(T0, 0).unwrap(),
        hlc_max: Hlc::new(T0 + 800, 2).unwrap(),
        keyspaces: [("default".to_string(), 9)].into_iter().collect(),
        state: vec![file("state/x.chunk", 4096)],
        segments: vec![SegmentRef {
            file: file("wal/log-1/00000000000000000013.seg", 812),
            first_lsn: 13,
            end_lsn: 15,
            hlc_min: Hlc::new(T0 + 700, 0).unwrap(),
            hlc_max: Hlc::new(T0 + 800, 2).unwrap(),
        }],
    };
    let text = serde_json::to_string(&m).unwrap();
    assert_eq!(
        text,
        concat!(
            r#"{"format":1,"id":"20261203T120000Z-0001","region":"us-east","#,
            r#""replica":"us-east/00000000","log_id":"log-1","started_ms":1764172170123,"#,
            r#""finished_ms":1764172171023,"vv":[[["us-east","#,
            r#""00000000-0000-0000-0000-000000000001"],12]],"lsn":12,"hlc":115616787341180928,"#,
            r#""hlc_max":115616787393609730,"keyspaces":{"default":9},"#,
            r#""state":[{"name":"state/x.chunk","bytes":4096,"#,
            r#""sha256":"abababababababababababababababababababababababababababababababab"}],"#,
            r#""segments":[{"name":"wal/log-1/00000000000000000013.seg","bytes":812,"#,
            r#""sha256":"abababababababababababababababababababababababababababababababab","#,
            r#""first_lsn":13,"end_lsn":15,"hlc_min":115616787387056128,"#,
            r#""hlc_max":115616787393609730}]}"#,
        )
    );
    assert_eq!(serde_json::from_str::<Manifest>(&text).unwrap(), m);
}
