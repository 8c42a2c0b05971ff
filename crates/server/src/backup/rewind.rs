//! `rewind`: a key range back to its value at a time, without downtime.
//! The values at `T` come from history (the newest backup at or before `T`
//! and the archived log after it, filtered to the range); each key whose
//! value now differs is written back as a new op (keys created after `T`
//! are deleted), which replicates like any write. A dry run only lists.

use std::collections::BTreeMap;
use std::sync::Arc;

use meridian_core::backup::{Filter, Restore};
use meridian_core::{Change, Key, KeyspaceName, MemBackend, MutationRequest, Reader, WriteRequest};
use meridian_crdt::{Crdt, Hlc, Json, Object, Value};
use serde::Serialize;

use super::restore::{pick, roll_forward};
use super::{BackupError, Backups};
use crate::region::WriterHandle;

/// Most keys one rewind looks at (both sides together).
pub const MAX_KEYS: usize = 100_000;
/// Most changes listed in an answer.
const MAX_LISTED: usize = 1_000;

/// One key's change.
#[derive(Clone, Debug, Serialize)]
pub struct KeyChange {
    /// The key.
    pub key: String,
    /// `restore` (written back to its value at the time) or `delete`
    /// (created after it).
    pub action: &'static str,
    /// Its value now (`null`: absent or deleted).
    pub now: serde_json::Value,
    /// Its value at the time.
    pub then: serde_json::Value,
}

/// What a rewind did (or, dry, would do).
#[derive(Clone, Debug, Serialize)]
pub struct Rewound {
    /// The keyspace.
    pub keyspace: String,
    /// The key prefix.
    pub prefix: String,
    /// The time, Unix ms.
    pub to_ms: u64,
    /// Only listed, nothing written.
    pub dry_run: bool,
    /// The backup history started from.
    pub from_backup: String,
    /// Keys looked at.
    pub keys: usize,
    /// Keys already at their value at the time.
    pub unchanged: usize,
    /// Keys written back.
    pub restored: usize,
    /// Keys deleted.
    pub deleted: usize,
    /// `mv`/`custom` keys that held several versions at the time: the
    /// newest is written back.
    pub collapsed: usize,
    /// The changes (the first 1000).
    pub changes: Vec<KeyChange>,
    /// Whether `changes` was cut short.
    pub truncated: bool,
}

/// Most value bytes in one rewind write (well under the op limit).
const BATCH_BYTES: usize = 4 << 20;

/// About how many bytes writing `o` back puts in an op.
fn value_len(o: Option<&Object>) -> usize {
    let v = |v: &Value| match v {
        Value::Json(j) => j.as_str().len(),
        Value::Bytes(b) => b.len(),
    };
    match o {
        Some(Object::Lww(r)) => r.value().map(v).unwrap_or(0),
        Some(Object::Mv(r)) => r.siblings().last().map(|(_, x)| v(x)).unwrap_or(0),
        Some(Object::Set(s)) => s.iter().map(|j| j.as_str().len() + 1).sum(),
        Some(Object::Doc(d)) => serde_json::to_vec(&d.to_json())
            .map(|b| b.len())
            .unwrap_or(0),
        Some(Object::Counter(_)) | None => 16,
    }
}

/// Refuses keyspaces whose values a rewind cannot write back as they
/// were: custom keys (versions belong to the key's merger), keyspaces with
/// an ownership map (each key's writes go to its owner), and docs with
/// field rules other than `lww` (a doc write is a patch under its rules: a
/// counter field would be incremented, not set).
fn rewindable(
    live: &Reader<meridian_core::FjallBackend>,
    keyspace: &KeyspaceName,
) -> Result<(), BackupError> {
    use meridian_crdt::{FieldRule, Policy};
    let published = live.published();
    let Some(def) = published.registry.get(keyspace.as_str()) else {
        return Err(BackupError::Refused(format!("no keyspace {keyspace}")));
    };
    if def.policy == Policy::Custom {
        return Err(BackupError::Refused(format!(
            "{keyspace} is a custom keyspace: rewinding it is not supported (its versions are merged by each key's merger)"
        )));
    }
    if published.registry.ownership(keyspace.as_str()).is_some() {
        return Err(BackupError::Refused(format!(
            "{keyspace} has an ownership map: rewinding it is not supported (each key's writes go to its owner)"
        )));
    }
    if let Some((field, _)) = def.schema.0.iter().find(|(_, r)| **r != FieldRule::Lww) {
        return Err(BackupError::Refused(format!(
            "{keyspace}: doc field {field:?} has a rule other than lww: rewinding such docs is not supported (a write is a patch under the field's rule)"
        )));
    }
    Ok(())
}

/// What a client sees of a state (`null` when absent or deleted).
pub fn visible(o: Option<&Object>) -> serde_json::Value {
    use serde_json::Value as J;
    let Some(o) = o.filter(|o| o.is_live()) else {
        return J::Null;
    };
    let value = |v: &Value| match v {
        Value::Json(j) => j.to_value(),
        // Shown (and compared) by length and checksum, not inline.
        Value::Bytes(b) => serde_json::json!({
            "bytes": b.len(),
            "sha256": meridian_core::backup::manifest::sha256_hex(b),
        }),
    };
    match o {
        Object::Lww(r) => r.value().map(value).unwrap_or(J::Null),
        Object::Mv(r) => J::Array(r.siblings().iter().map(|(_, v)| value(v)).collect()),
        Object::Counter(c) => {
            let n = c.value();
            i64::try_from(n)
                .map(J::from)
                .unwrap_or_else(|_| J::String(n.to_string()))
        }
        Object::Set(s) => {
            let mut m: Vec<J> = s.iter().map(Json::to_value).collect();
            m.sort_by_key(|v| v.to_string());
            J::Array(m)
        }
        Object::Doc(d) => J::Object(d.to_json()),
    }
}

/// The change that takes a key from `now` back to `then`.
fn change(then: Option<&Object>, now: Option<&Object>) -> Result<(Change, bool), String> {
    let now_ctx = match now {
        Some(Object::Mv(r)) => Some(r.context().clone()),
        _ => None,
    };
    let Some(then) = then.filter(|o| o.is_live()) else {
        return Ok((Change::Delete { context: now_ctx }, false));
    };
    let json = |v: serde_json::Value| Value::Json(Json::from_value(&v));
    Ok(match then {
        Object::Lww(r) => match r.value() {
            Some(v) => (
                Change::Put {
                    value: v.clone(),
                    context: None,
                },
                false,
            ),
            None => (Change::Delete { context: None }, false),
        },
        Object::Mv(r) => {
            let siblings = r.siblings();
            let Some((_, newest)) = siblings.last() else {
                return Ok((Change::Delete { context: now_ctx }, false));
            };
            (
                Change::Put {
                    value: (*newest).clone(),
                    context: now_ctx.or_else(|| Some(Default::default())),
                },
                siblings.len() > 1,
            )
        }
        Object::Counter(c) => {
            let current = match now {
                Some(Object::Counter(n)) if n.is_live() => n.value(),
                _ => 0,
            };
            let by = i64::try_from(c.value() - current)
                .map_err(|_| "the counter moved too far to rewind in one step".to_string())?;
            (Change::Incr(by), false)
        }
        Object::Set(s) => (
            Change::Put {
                value: json(serde_json::Value::Array(
                    s.iter().map(Json::to_value).collect(),
                )),
                context: None,
            },
            false,
        ),
        Object::Doc(d) => (
            Change::Put {
                value: json(serde_json::Value::Object(d.to_json())),
                context: None,
            },
            false,
        ),
    })
}

fn all_live<B: meridian_core::Backend>(
    r: &Reader<B>,
    keyspace: &str,
    prefix: &str,
) -> Result<BTreeMap<String, Object>, BackupError> {
    let mut out = BTreeMap::new();
    let mut after: Option<Key> = None;
    loop {
        let page = match r.list(keyspace, prefix, after.as_ref(), 1000) {
            Ok(p) => p,
            // Not defined at the time: nothing lived in it.
            Err(meridian_core::ReadError::UnknownKeyspace(_)) => return Ok(out),
            Err(e) => return Err(BackupError::Local(e.to_string())),
        };
        if out.len() + page.items.len() > MAX_KEYS {
            return Err(BackupError::Refused(format!(
                "more than {MAX_KEYS} keys under the prefix: rewind a narrower prefix"
            )));
        }
        for (k, o) in page.items {
            out.insert(k.as_str().to_string(), o);
        }
        match page.next {
            Some(n) => after = Some(n),
            None => return Ok(out),
        }
    }
}

impl Backups {
    /// Rewinds `prefix` of `keyspace` to its value at `to` (see the module
    /// docs); `dry_run` lists without writing.
    pub async fn rewind(
        self: &Arc<Self>,
        writer: &WriterHandle,
        live: &Reader<meridian_core::FjallBackend>,
        keyspace: &KeyspaceName,
        prefix: &str,
        to: Hlc,
        dry_run: bool,
    ) -> Result<Rewound, BackupError> {
        rewindable(live, keyspace)?;
        // History up to now is archived first, so the range's ops from
        // before `to` that arrived late are in it.
        // No prune, delete or other rewind while history is read; one that
        // would have to wait is refused, so it never runs after its client
        // gave up.
        let Ok(_g) = self.lock.try_lock() else {
            return Err(BackupError::Running(
                "a backup, prune, verify or rewind".into(),
            ));
        };
        let synced = self.archive.sync(true).await?;
        let t = self.archive.target.clone();
        let folder = self.archive.folder.clone();
        let all = super::list_manifests(&t, &folder).await?;
        let m = pick(&all, Some(to), None)?;
        if m.log_id != synced.log_id {
            return Err(BackupError::NoBase(format!(
                "this region's log changed after backup {} (a new data directory, a repaired log or a new incarnation): history between them is not in one archive; rewind to a time after this log's first backup",
                m.id
            )));
        }
        let mut r = Restore::new(
            Arc::new(MemBackend::default()),
            None,
            Filter {
                to: Some(to),
                keyspace: Some((keyspace.clone(), prefix.as_bytes().to_vec())),
            },
        );
        roll_forward(&t, &folder, &m, &mut r).await?;
        let (_, past_reader) = r.finish()?;
        let then = all_live(&past_reader, keyspace.as_str(), prefix)?;
        let now = all_live(live, keyspace.as_str(), prefix)?;
        let mut keys: Vec<&String> = then.keys().chain(now.keys()).collect();
        keys.sort();
        keys.dedup();
        let mut out = Rewound {
            keyspace: keyspace.to_string(),
            prefix: prefix.to_string(),
            to_ms: to.wall_ms(),
            dry_run,
            from_backup: m.id.clone(),
            keys: keys.len(),
            unchanged: 0,
            restored: 0,
            deleted: 0,
            collapsed: 0,
            changes: Vec::new(),
            truncated: false,
        };
        let mut batch: Vec<MutationRequest> = Vec::new();
        let mut batch_bytes = 0usize;
        for k in keys {
            let (a, b) = (then.get(k), now.get(k));
            let (va, vb) = (visible(a), visible(b));
            let size = k.len() + value_len(a);
            if va == vb {
                out.unchanged += 1;
                continue;
            }
            let (c, collapsed) =
                change(a, b).map_err(|reason| BackupError::Refused(format!("{k}: {reason}")))?;
            out.collapsed += collapsed as usize;
            let deleting = matches!(c, Change::Delete { .. });
            if deleting {
                out.deleted += 1;
            } else {
                out.restored += 1;
            }
            if out.changes.len() < MAX_LISTED {
                out.changes.push(KeyChange {
                    key: k.clone(),
                    action: if deleting { "delete" } else { "restore" },
                    now: vb,
                    then: va,
                });
            } else {
                out.truncated = true;
            }
            let key = Key::new(k.clone()).map_err(|e| BackupError::Local(e.to_string()))?;
            if !dry_run
                && !batch.is_empty()
                && (batch.len() >= 100 || batch_bytes + size > BATCH_BYTES)
            {
                write(writer, std::mem::take(&mut batch)).await?;
                batch_bytes = 0;
            }
            batch_bytes += size;
            batch.push(MutationRequest {
                keyspace: keyspace.to_string(),
                key,
                change: c,
            });
        }
        if !dry_run && !batch.is_empty() {
            write(writer, batch).await?;
        }
        Ok(out)
    }
}

async fn write(writer: &WriterHandle, mutations: Vec<MutationRequest>) -> Result<(), BackupError> {
    let req = WriteRequest {
        mutations,
        fallback: false,
        deadline_ms: None,
        not_before_ms: None,
    };
    match writer.write(req).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(BackupError::Refused(format!(
            "writing the rewound values: {e} (keys written before this batch stay written; running the rewind again finishes it)"
        ))),
        Err(_) => Err(BackupError::Stopped),
    }
}
