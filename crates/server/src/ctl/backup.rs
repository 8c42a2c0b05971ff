//! `meridian ctl backup ...` and `meridian ctl rewind`: one region's
//! backups (taken, listed, verified, pruned) and rewinding a key range.
//! Backups belong to a region: these commands go to the region `--region`
//! names (default: the first URL), never to another one instead.

use std::time::Duration;

use anyhow::anyhow;
use meridian_client::Client;
use serde_json::{Value, json};

use super::explain;
use super::output::{list, print_json, table, text};

/// `meridian ctl backup` commands.
#[derive(Debug, clap::Subcommand)]
pub enum BackupCommand {
    /// Take a backup (a snapshot plus the log to roll it forward), with a
    /// progress bar; the region keeps serving writes meanwhile.
    Create {
        /// Start it and print its id without waiting.
        #[arg(long)]
        no_wait: bool,
    },
    /// Complete backups, oldest first, and any running or failed lately.
    List,
    /// One backup's manifest (files, checksums, version vector).
    Show {
        /// Backup id.
        id: String,
    },
    /// Check every file's SHA-256, then that the snapshot loads and the log
    /// replays.
    Verify {
        /// Backup id.
        id: String,
    },
    /// Delete a backup (and files no other backup needs).
    Delete {
        /// Backup id.
        id: String,
    },
    /// Apply retention: keep the newest N and/or those younger than H
    /// hours (default: the region's configured rules).
    Prune {
        /// Keep the newest N.
        #[arg(long)]
        keep_last: Option<u32>,
        /// Keep those younger than this many hours.
        #[arg(long)]
        keep_hours: Option<u64>,
    },
}

/// `meridian ctl rewind` arguments.
#[derive(Debug, clap::Args)]
pub struct RewindArgs {
    /// Keyspace.
    pub keyspace: String,
    /// Only keys starting with this.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// The time to go back to: RFC 3339 (`2026-12-01T20:15:00Z`) or Unix ms.
    #[arg(long)]
    pub to_time: String,
    /// List what would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

fn ms(v: &Value) -> String {
    match v.as_u64() {
        Some(ms) => {
            humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms))
                .to_string()
        }
        None => "-".into(),
    }
}

fn summary_rows(backups: &[Value]) -> Vec<Vec<String>> {
    backups
        .iter()
        .map(|b| {
            vec![
                text(&b["id"]),
                ms(&b["snapshot_ms"]),
                ms(&b["covers_to_ms"]),
                text(&b["files"]),
                text(&b["bytes"]),
            ]
        })
        .collect()
}

async fn wait_for(c: &Client, id: &str, quiet: bool) -> anyhow::Result<Value> {
    let bar = (!quiet).then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} backup {msg} [{bar:30}] {bytes}/{total_bytes} ({elapsed})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b.set_message(id.to_string());
        b
    });
    loop {
        let v = c.backup(id).await.map_err(explain)?;
        match v["status"].as_str() {
            Some("running") => {
                if let Some(b) = &bar {
                    b.set_length(v["total_bytes"].as_u64().unwrap_or(0));
                    b.set_position(v["done_bytes"].as_u64().unwrap_or(0));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Some("failed") => {
                if let Some(b) = &bar {
                    b.abandon();
                }
                return Err(anyhow!("backup {id} failed: {}", text(&v["error"])));
            }
            _ => {
                if let Some(b) = &bar {
                    b.finish_and_clear();
                }
                return Ok(v);
            }
        }
    }
}

/// Runs a `ctl backup` command against region `c`.
pub async fn run(c: &Client, cmd: &BackupCommand, as_json: bool) -> anyhow::Result<()> {
    match cmd {
        BackupCommand::Create { no_wait } => {
            let started = c.start_backup().await.map_err(explain)?;
            let id = text(&started["id"]);
            if *no_wait {
                return if as_json {
                    print_json(&started)
                } else {
                    println!("backup {id} started");
                    Ok(())
                };
            }
            let done = wait_for(c, &id, as_json).await?;
            if as_json {
                return print_json(&done["summary"]);
            }
            let s = &done["summary"];
            println!(
                "backup {id} complete: {} files, {} bytes; restores to any time from {}",
                text(&s["files"]),
                text(&s["bytes"]),
                ms(&s["snapshot_ms"])
            );
            Ok(())
        }
        BackupCommand::List => {
            let v = c.backups().await.map_err(explain)?;
            if as_json {
                return print_json(&v);
            }
            println!("target: {}", text(&v["target"]));
            print!(
                "{}",
                table(
                    &["ID", "SNAPSHOT", "COVERS TO", "FILES", "BYTES"],
                    summary_rows(list(&v, "backups"))
                )
            );
            for j in list(&v, "jobs") {
                println!(
                    "{} {}: {}",
                    text(&j["status"]),
                    text(&j["id"]),
                    text(&j["error"])
                );
            }
            Ok(())
        }
        BackupCommand::Show { id } => print_json(&c.backup(id).await.map_err(explain)?),
        BackupCommand::Verify { id } => {
            let v = c.verify_backup(id).await.map_err(explain)?;
            if as_json {
                return print_json(&v);
            }
            let r = &v["verified"];
            println!(
                "backup {id} verified: {} files ({} bytes) match their checksums; {} snapshot entries loaded, {} log records replayed",
                text(&r["files"]),
                text(&r["bytes"]),
                text(&r["entries"]),
                text(&r["records"])
            );
            Ok(())
        }
        BackupCommand::Delete { id } => {
            let v = c.delete_backup(id).await.map_err(explain)?;
            if as_json {
                return print_json(&v);
            }
            println!("backup {id} deleted ({} files removed)", text(&v["files"]));
            Ok(())
        }
        BackupCommand::Prune {
            keep_last,
            keep_hours,
        } => {
            let body = if keep_last.is_none() && keep_hours.is_none() {
                Value::Null
            } else {
                json!({"keep_last": keep_last, "keep_hours": keep_hours})
            };
            let v = c.prune_backups(&body).await.map_err(explain)?;
            if as_json {
                return print_json(&v);
            }
            let gone = list(&v, "backups");
            println!(
                "{} backups removed ({} files)",
                gone.len(),
                text(&v["files"])
            );
            for g in gone {
                println!("  {}", text(g));
            }
            Ok(())
        }
    }
}

/// Runs `ctl rewind` against region `c`.
pub async fn rewind(c: &Client, a: &RewindArgs, as_json: bool) -> anyhow::Result<()> {
    let to: Value = match a.to_time.parse::<u64>() {
        Ok(n) => json!(n),
        Err(_) => json!(a.to_time),
    };
    let body = json!({
        "keyspace": a.keyspace,
        "prefix": a.prefix,
        "to_time": to,
        "dry_run": a.dry_run,
    });
    let v = c.rewind(&body).await.map_err(explain)?;
    if as_json {
        return print_json(&v);
    }
    let rows = list(&v, "changes")
        .iter()
        .map(|ch| {
            vec![
                text(&ch["key"]),
                text(&ch["action"]),
                ch["now"].to_string(),
                ch["then"].to_string(),
            ]
        })
        .collect();
    print!("{}", table(&["KEY", "ACTION", "NOW", "AT THE TIME"], rows));
    println!(
        "{} {} keys: {} restored, {} deleted, {} unchanged (from backup {})",
        if a.dry_run { "would rewind" } else { "rewound" },
        text(&v["keys"]),
        text(&v["restored"]),
        text(&v["deleted"]),
        text(&v["unchanged"]),
        text(&v["from_backup"])
    );
    if v["truncated"].as_bool() == Some(true) {
        println!("(only the first 1000 changes are listed)");
    }
    Ok(())
}
