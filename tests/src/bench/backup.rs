//! `meridian bench backup`: one real region backing up to a directory.
//!
//! 1. A backup of the empty region (the base the restore below starts from).
//! 2. A load of `log_mb` of distinct keys (`value_bytes` each, in batches),
//!    so the op log and the state both hold about that much.
//! 3. A second backup, timed: the whole state is new to the target, so it
//!    uploads the snapshot (about `log_mb`) and archives every segment
//!    sealed since the first backup (about `log_mb` again; the archiver's
//!    own interval is set to an hour, so nothing was archived before).
//!    Throughput = bytes the target grew by / seconds.
//! 4. `meridian restore` from the first backup (timed): the whole log is
//!    fetched, checked and replayed into a new data directory.
//! 5. The same from the second backup: the snapshot is loaded, nearly
//!    nothing is replayed.
//!
//! The disk's sequential write rate (1 GiB written with one fsync at the
//! end) is measured in the same run, beside the figures.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use crate::node::{Node, NodeSpec};

/// What to run.
#[derive(Clone, Debug)]
pub struct BackupSpec {
    /// The `meridian` binary.
    pub bin: PathBuf,
    /// Where data and the backup target go (a real disk).
    pub dir: PathBuf,
    /// How much to write, MiB.
    pub log_mb: u64,
    /// Bytes per value.
    pub value_bytes: usize,
}

/// What it measured.
#[derive(Clone, Debug, Serialize)]
pub struct BackupReport {
    /// MiB written through the API.
    pub written_mb: f64,
    /// The op log on disk after the load, MiB.
    pub log_mb: f64,
    /// Seconds the load took.
    pub load_s: f64,
    /// Bytes the target grew by during the timed backup (snapshot chunks
    /// and archived segments), MiB.
    pub backup_mb: f64,
    /// Of those, what its manifest names (the snapshot and the segments
    /// after it), MiB.
    pub manifest_mb: f64,
    /// Seconds it took.
    pub backup_s: f64,
    /// MiB/s.
    pub backup_mb_s: f64,
    /// Seconds to restore from the empty backup (replaying the whole log).
    pub restore_log_s: f64,
    /// MiB/s of log replayed.
    pub restore_log_mb_s: f64,
    /// Seconds to restore from the full backup (the snapshot).
    pub restore_snapshot_s: f64,
    /// The disk's sequential write rate, MiB/s.
    pub disk_mb_s: f64,
}

impl BackupReport {
    /// A readable table.
    pub fn table(&self) -> String {
        format!(
            "written          {:>9.0} MiB in {:.1} s (op log on disk {:.0} MiB)\n\
             backup           {:>9.0} MiB in {:.2} s = {:.0} MiB/s (its manifest names {:.0} MiB)\n\
             restore (log)    {:>9.2} s = {:.0} MiB/s of log replayed\n\
             restore (snap)   {:>9.2} s\n\
             disk seq. write  {:>9.0} MiB/s (1 GiB, one fsync)\n",
            self.written_mb,
            self.load_s,
            self.log_mb,
            self.backup_mb,
            self.backup_s,
            self.backup_mb_s,
            self.manifest_mb,
            self.restore_log_s,
            self.restore_log_mb_s,
            self.restore_snapshot_s,
            self.disk_mb_s,
        )
    }
}

fn disk_rate(dir: &std::path::Path) -> Result<f64, String> {
    let p = dir.join("disk-probe");
    let block = vec![7u8; 1 << 20];
    let t = Instant::now();
    let mut f = std::fs::File::create(&p).map_err(|e| e.to_string())?;
    for _ in 0..1024 {
        f.write_all(&block).map_err(|e| e.to_string())?;
    }
    f.sync_all().map_err(|e| e.to_string())?;
    let s = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&p);
    Ok(1024.0 / s)
}

async fn backup(c: &meridian_client::Client) -> Result<(String, Value), String> {
    let started = c.start_backup().await.map_err(|e| e.to_string())?;
    let id = started["id"].as_str().unwrap_or_default().to_string();
    loop {
        let v = c.backup(&id).await.map_err(|e| e.to_string())?;
        match v["status"].as_str() {
            Some("running") => tokio::time::sleep(Duration::from_millis(50)).await,
            Some("complete") => return Ok((id, v)),
            _ => return Err(format!("backup {id}: {v}")),
        }
    }
}

fn restore(
    spec: &BackupSpec,
    target: &str,
    id: &str,
    out: &std::path::Path,
) -> Result<f64, String> {
    let t = Instant::now();
    let o = std::process::Command::new(&spec.bin)
        .args([
            "restore", "--from", target, "--region", "us-east", "--backup", id,
        ])
        .arg("--data-dir")
        .arg(out)
        .output()
        .map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(format!(
            "restore from {id}: {}",
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    Ok(t.elapsed().as_secs_f64())
}

fn dir_bytes(p: &std::path::Path) -> u64 {
    let mut n = 0u64;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => n += dir_bytes(&e.path()),
                Ok(m) => n += m.len(),
                Err(_) => {}
            }
        }
    }
    n
}

fn dir_mb(p: &std::path::Path) -> f64 {
    dir_bytes(p) as f64 / (1u64 << 20) as f64
}

/// Runs the benchmark.
pub async fn run(spec: &BackupSpec) -> Result<BackupReport, String> {
    let _ = std::fs::remove_dir_all(&spec.dir);
    std::fs::create_dir_all(&spec.dir).map_err(|e| e.to_string())?;
    // Targets are absolute.
    let spec = &BackupSpec {
        dir: std::fs::canonicalize(&spec.dir).map_err(|e| e.to_string())?,
        ..spec.clone()
    };
    let target = format!("file://{}", spec.dir.join("target").display());
    let mut ns = NodeSpec::new("us-east", &spec.dir.join("data"));
    ns.env.extend([
        ("MERIDIAN_BACKUP__TARGET".into(), target.clone()),
        // Only the backups archive: the figure is theirs.
        (
            "MERIDIAN_BACKUP__ARCHIVE_INTERVAL_MS".into(),
            "3600000".into(),
        ),
    ]);
    let node = Node::start(&spec.bin, ns)
        .await
        .map_err(|e| e.to_string())?;
    let c = node.client();
    let (empty, _) = backup(&c).await?;

    let value = "v".repeat(spec.value_bytes);
    let per_batch = ((1 << 20) / spec.value_bytes.max(1)).clamp(1, 1000);
    let total = ((spec.log_mb << 20) as usize / spec.value_bytes.max(1)).max(1);
    let t = Instant::now();
    let mut n = 0;
    while n < total {
        let ops: Vec<Value> = (n..(n + per_batch).min(total))
            .map(|i| json!({"keyspace": "default", "key": format!("k{i:09}"), "op": "put", "value": value}))
            .collect();
        n += ops.len();
        c.batch(&ops, &meridian_client::Options::default())
            .await
            .map_err(|e| e.to_string())?;
    }
    let load_s = t.elapsed().as_secs_f64();
    let log_mb = dir_mb(&spec.dir.join("data/log"));

    let before = dir_mb(&spec.dir.join("target"));
    let t = Instant::now();
    let (full, m) = backup(&c).await?;
    let backup_s = t.elapsed().as_secs_f64();
    let backup_mb = dir_mb(&spec.dir.join("target")) - before;
    let manifest_mb = m["summary"]["bytes"].as_u64().unwrap_or(0) as f64 / (1u64 << 20) as f64;
    drop(node);

    let restore_log_s = restore(spec, &target, &empty, &spec.dir.join("r-log"))?;
    let restore_snapshot_s = restore(spec, &target, &full, &spec.dir.join("r-snap"))?;
    let disk_mb_s = disk_rate(&spec.dir)?;
    let report = BackupReport {
        written_mb: (total * spec.value_bytes) as f64 / (1u64 << 20) as f64,
        log_mb,
        load_s,
        backup_mb,
        manifest_mb,
        backup_s,
        backup_mb_s: backup_mb / backup_s,
        restore_log_s,
        restore_log_mb_s: log_mb / restore_log_s,
        restore_snapshot_s,
        disk_mb_s,
    };
    let _ = std::fs::remove_dir_all(&spec.dir);
    Ok(report)
}
