//! The shapes of the API's answers, for the OpenAPI document.
//!
//! Handlers build most answers as JSON values (several merge fields from
//! the store, the ledger and the published state), so each shape is
//! described here once, by a type whose doc comments become the schema's
//! descriptions. Request bodies are described by the types the handlers
//! really parse (`KeyspaceBody`, `MergeBody`, `BatchBody`, ...). CI runs
//! schemathesis against a real region with the response-conformance
//! check on, so a shape here that drifts from what a handler answers
//! fails the build.
//!
//! Longer than our ~400 lines: it is a catalogue, one shape per answer,
//! read by looking one up; split by route, shapes that several routes
//! share would have no home.
//!
//! Why past ~400 lines: one schema per answer shape, checked together against
//! what handlers send.

use std::collections::BTreeMap;

use serde_json::Value;
use utoipa::ToSchema;

/// Every error: a stable code, a sentence, and fields that depend on the
/// code (`lacking` for `behind_token`, `owner` for `not_owner`, ...).
#[derive(ToSchema)]
pub struct Error {
    /// Machine-readable code (`bad_request`, `unknown_keyspace`, ...).
    pub error: String,
    /// What was wrong, for people.
    pub message: String,
}

/// A write that is durable in this region (and in as many regions as the
/// write concern asked).
#[derive(ToSchema)]
pub struct Written {
    /// `<origin region>:<seq>@<wall ms>.<logical>`.
    pub version: String,
    /// The region's causal token after the write: send it as
    /// `meridian-token` to read the write anywhere.
    pub token: String,
    /// Counter ops: the new value.
    pub value: Option<Value>,
    /// The region that took the write (the key's owner, when the write was
    /// forwarded).
    pub region: Option<String>,
}

/// One key of a batch, with a counter's new value.
#[derive(ToSchema)]
pub struct BatchResult {
    /// The keyspace.
    pub keyspace: String,
    /// The key.
    pub key: String,
    /// Counter ops: the new value.
    pub value: Option<Value>,
}

/// A batch, durable in this region as one unit.
#[derive(ToSchema)]
pub struct BatchWritten {
    /// The batch's version.
    pub version: String,
    /// The region's causal token after the batch.
    pub token: String,
    /// Per change, in request order.
    pub results: Vec<BatchResult>,
    /// The region that took the batch.
    pub region: Option<String>,
}

/// One of several values of a key.
#[derive(ToSchema)]
pub struct Sibling {
    /// The value: JSON, or `{"$bytes": base64}` for bytes.
    pub value: Value,
    /// Its version.
    pub version: String,
}

/// One version a custom key's value was merged from.
#[derive(ToSchema)]
pub struct VersionOf {
    /// The value.
    pub value: Value,
    /// Its version.
    pub version: Option<String>,
    /// The region that wrote it.
    pub region: Option<String>,
    /// Its hybrid logical clock stamp.
    pub hlc: Option<String>,
}

/// The merge function that produced a value from several versions.
#[derive(ToSchema)]
pub struct MergeInfo {
    /// The function.
    pub function: Option<String>,
    /// Its hash.
    pub hash: Option<String>,
    /// How many versions it merged.
    pub versions: Option<u64>,
    /// The function failed; the newest version is shown (last-writer-wins).
    pub failed: Option<String>,
}

/// With `?versions=true`: a custom key's versions in canonical order (an
/// array), or per dotted field path of a doc's merge fields (an object).
#[derive(ToSchema)]
#[serde(untagged)]
pub enum Versions {
    /// A custom key's versions.
    Key(Vec<VersionOf>),
    /// Per field path.
    Fields(BTreeMap<String, Vec<VersionOf>>),
}

/// A key and what it holds.
#[derive(ToSchema)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// The value: JSON, or `{"$bytes": base64}` for bytes.
    pub value: Option<Value>,
    /// Its version.
    pub version: Option<String>,
    /// `mv` keys holding concurrent values: all of them.
    pub siblings: Option<Vec<Sibling>>,
    /// `mv` keys: what to send as `meridian-context` with the next write.
    pub context: Option<String>,
    /// Custom keys merged from several versions: the function that ran.
    pub merge: Option<MergeInfo>,
    /// With `?versions=true`.
    pub versions: Option<Versions>,
    /// Docs with merge fields: per dotted field path holding several
    /// versions, the function that merged them.
    pub merges: Option<BTreeMap<String, MergeInfo>>,
}

/// A page of keys.
#[derive(ToSchema)]
pub struct Listing {
    /// The keys, in order.
    pub items: Vec<Entry>,
    /// The last key of this page when there may be more: send it as
    /// `after` for the next page.
    pub next: Option<String>,
}

/// A keyspace's definition as the region holds it.
#[derive(ToSchema)]
pub struct Keyspace {
    /// Its name.
    pub name: String,
    /// How concurrent writes merge.
    pub policy: super::PolicyName,
    /// Default write concern.
    pub write_concern: super::WriteConcernName,
    /// `mv`: most siblings a write leaves; custom: most unmerged versions.
    pub sibling_cap: u32,
    /// `doc`: field rules.
    pub schema: BTreeMap<String, Value>,
    /// Conflict-ledger entries kept.
    pub ledger_capacity: u32,
    /// `custom`: the merge function.
    pub merge: Option<String>,
    /// `custom` with `region-priority`: regions, highest priority first.
    pub region_order: Option<Vec<String>>,
    /// Default in-region write concern.
    pub standby_concern: Option<super::StandbyConcernName>,
    /// An unmet in-region concern succeeds as the leader alone.
    pub standby_downgrade: Option<bool>,
    /// The keyspace's state digest (regions that agree hold equal ones).
    pub digest: Option<String>,
    /// Conflict-ledger entries held.
    pub conflicts_stored: Option<u64>,
    /// Conflict-ledger entries dropped (over capacity).
    pub conflicts_dropped: Option<u64>,
}

/// Every keyspace.
#[derive(ToSchema)]
pub struct Keyspaces {
    /// The keyspaces, by name.
    pub keyspaces: Vec<Keyspace>,
}

/// The answer to a keyspace change.
#[derive(ToSchema)]
pub struct KeyspaceWritten {
    /// The keyspace after the change.
    pub keyspace: Keyspace,
    /// Whether it was created.
    pub created: bool,
    /// Whether anything changed.
    pub changed: bool,
}

/// One side of a resolved conflict.
#[derive(ToSchema)]
pub struct Side {
    /// Its version.
    pub version: Option<String>,
    /// The region that wrote it.
    pub origin: Option<String>,
    /// Its hybrid logical clock stamp.
    pub hlc: Option<String>,
    /// The value (absent when the ledger keeps no values).
    pub value: Option<Value>,
    /// Whether it was a delete.
    pub deleted: Option<bool>,
}

/// The merge behind a ledger entry that records a merge write-back.
#[derive(ToSchema)]
pub struct ConflictMerge {
    /// The function.
    pub function: Option<String>,
    /// Its hash.
    pub hash: Option<String>,
    /// Why it failed (rule `merge_failed`: the newest input was kept).
    pub failed: Option<String>,
    /// Whether the inputs' values were left out.
    pub values_omitted: Option<bool>,
}

/// What one merge decided.
#[derive(ToSchema)]
pub struct Conflict {
    /// The entry's id (increasing per keyspace).
    pub id: u64,
    /// The keyspace.
    pub keyspace: String,
    /// The key.
    pub key: String,
    /// Docs: the field's path.
    pub path: Option<Vec<String>>,
    /// The rule that decided.
    pub rule: String,
    /// The side that won.
    pub winner: Option<Side>,
    /// The sides that lost.
    pub losers: Vec<Side>,
    /// Whether the rule had to break a tie (equal clocks).
    pub ambiguous: bool,
    /// When it was resolved, ms since the epoch.
    pub resolved_at_ms: u64,
    /// Set for a merge write-back.
    pub merge: Option<ConflictMerge>,
}

/// Ledger entries.
#[derive(ToSchema)]
pub struct Conflicts {
    /// Newest last.
    pub conflicts: Vec<Conflict>,
}

/// A merge function.
#[derive(ToSchema)]
pub struct Merge {
    /// Its name.
    pub name: String,
    /// Whether it is built in.
    pub builtin: bool,
    /// Its hash (`builtin:<name>` for built-ins).
    pub hash: String,
    /// What it is for.
    pub description: Option<String>,
    /// A script's source.
    pub script: Option<String>,
}

/// Every merge function.
#[derive(ToSchema)]
pub struct Merges {
    /// Built-ins and registered scripts.
    pub merges: Vec<Merge>,
}

/// The answer to registering a script.
#[derive(ToSchema)]
pub struct MergeWritten {
    /// The function after the change.
    pub merge: Merge,
    /// Whether it was new.
    pub created: bool,
    /// Whether anything changed.
    pub changed: bool,
}

/// A keyspace's ownership map.
#[derive(ToSchema)]
pub struct Ownership {
    /// The keyspace.
    pub keyspace: String,
    /// The map's epoch (every change raises it).
    pub epoch: u64,
    /// The rules, in order.
    pub rules: Vec<super::Rule>,
    /// The owner of keys no rule matches.
    pub default: Option<String>,
    /// What non-owners do with writes.
    pub mode: Option<super::ModeName>,
    /// What non-owners do when the owner cannot be reached.
    pub fallback: Option<super::FallbackName>,
    /// The region that orders changes to the map.
    pub steward: Option<String>,
    /// Per region, the epoch of the last fence it sent.
    pub fences: Option<BTreeMap<String, u64>>,
    /// Whether the request changed anything.
    pub changed: Option<bool>,
    /// After a change: whether every region judges writes by this map.
    pub in_effect: Option<bool>,
    /// After a change: the regions that have not applied it yet.
    pub waiting_for: Option<Vec<String>>,
}

/// A complete backup.
#[derive(ToSchema)]
pub struct BackupSummary {
    /// Its id.
    pub id: String,
    /// The region it was taken in.
    pub region: String,
    /// `complete`.
    pub status: String,
    /// When it started, ms since the epoch.
    pub started_ms: Option<u64>,
    /// When it finished.
    pub finished_ms: Option<u64>,
    /// The snapshot's time: the earliest time this backup restores to.
    pub snapshot_ms: u64,
    /// The newest op archived with it (segments archived later reach
    /// further).
    pub covers_to_ms: Option<u64>,
    /// Files in it.
    pub files: u64,
    /// Bytes in it.
    pub bytes: u64,
    /// Stored keys per keyspace, tombstones included.
    pub keyspaces: Option<BTreeMap<String, u64>>,
}

/// A backup being taken, or one that failed lately.
#[derive(ToSchema)]
pub struct BackupJob {
    /// Its id.
    pub id: String,
    /// `running` or `failed`.
    pub status: String,
    /// Bytes copied so far.
    pub done_bytes: Option<u64>,
    /// Bytes to copy.
    pub total_bytes: Option<u64>,
    /// Why it failed.
    pub error: Option<String>,
}

/// Backups in the target, and jobs.
#[derive(ToSchema)]
pub struct Backups {
    /// The backup target.
    pub target: Option<String>,
    /// Backups whose manifest cannot be read.
    pub damaged: Option<Vec<Value>>,
    /// Complete backups, oldest first.
    pub backups: Vec<BackupSummary>,
    /// Backups being taken or failed lately.
    pub jobs: Vec<BackupJob>,
}

/// A backup that was started.
#[derive(ToSchema)]
pub struct BackupStarted {
    /// Its id.
    pub id: String,
    /// `running`, or `complete` with `?wait=true`.
    pub status: String,
}

/// One file of a backup.
#[derive(ToSchema)]
pub struct BackupFile {
    /// Its name in the target.
    pub name: String,
    /// Its size.
    pub bytes: u64,
    /// Its SHA-256, hex.
    pub sha256: String,
    /// Log segments: the first log position in it.
    pub first_lsn: Option<u64>,
    /// Log segments: the position after the last.
    pub end_lsn: Option<u64>,
    /// Log segments: the oldest clock stamp in it.
    pub hlc_min: Option<u64>,
    /// Log segments: the newest clock stamp in it.
    pub hlc_max: Option<u64>,
}

/// A backup's manifest (every file with its size and SHA-256), a running
/// job, or a failed one (`status` tells which).
#[derive(ToSchema)]
pub struct BackupManifest {
    /// `complete`, `running` or `failed`.
    pub status: String,
    /// Its id.
    pub id: String,
    /// Complete backups: the summary.
    pub summary: Option<BackupSummary>,
    /// The manifest's format version.
    pub format: Option<u64>,
    /// The region it was taken in.
    pub region: Option<String>,
    /// The replica that took it.
    pub replica: Option<String>,
    /// The op log's id.
    pub log_id: Option<String>,
    /// When it started.
    pub started_ms: Option<u64>,
    /// When it finished.
    pub finished_ms: Option<u64>,
    /// The version vector of the snapshot.
    pub vv: Option<Vec<Value>>,
    /// The log position of the snapshot.
    pub lsn: Option<u64>,
    /// The clock stamp of the snapshot.
    pub hlc: Option<u64>,
    /// The newest clock stamp archived with it.
    pub hlc_max: Option<u64>,
    /// Stored keys per keyspace.
    pub keyspaces: Option<BTreeMap<String, u64>>,
    /// The state files.
    pub state: Option<Vec<BackupFile>>,
    /// The log segments.
    pub segments: Option<Vec<BackupFile>>,
    /// Running jobs: bytes copied so far.
    pub done_bytes: Option<u64>,
    /// Running jobs: bytes to copy.
    pub total_bytes: Option<u64>,
    /// Failed jobs: why.
    pub error: Option<String>,
}

/// A verified backup.
#[derive(ToSchema)]
pub struct Verified {
    /// `true`.
    pub ok: bool,
    /// What was checked.
    pub verified: Value,
}

/// What a prune removed.
#[derive(ToSchema)]
pub struct Pruned {
    /// The backups removed.
    pub backups: Vec<String>,
    /// Files removed.
    pub files: u64,
}

/// One key a rewind changes.
#[derive(ToSchema)]
pub struct RewindChange {
    /// The key.
    pub key: String,
    /// `restore` or `delete`.
    pub action: String,
    /// What it holds now.
    pub now: Option<Value>,
    /// What it held then.
    pub then: Option<Value>,
}

/// What a rewind did (or would do, with `dry_run`).
#[derive(ToSchema)]
pub struct Rewound {
    /// The keyspace.
    pub keyspace: Option<String>,
    /// The keys' prefix.
    pub prefix: Option<String>,
    /// The time rewound to, ms since the epoch.
    pub to_ms: Option<u64>,
    /// Whether nothing was written.
    pub dry_run: Option<bool>,
    /// The backup the old state came from.
    pub from_backup: Option<String>,
    /// Keys looked at.
    pub keys: u64,
    /// Keys already as they were.
    pub unchanged: u64,
    /// Keys written back.
    pub restored: u64,
    /// Keys deleted (they did not exist then).
    pub deleted: u64,
    /// Keys whose siblings were collapsed to one value.
    pub collapsed: Option<u64>,
    /// The changes (the first ones, see `truncated`).
    pub changes: Vec<RewindChange>,
    /// Whether `changes` was cut short.
    pub truncated: Option<bool>,
}

/// A promotion under way.
#[derive(ToSchema)]
pub struct Promoted {
    /// `true`.
    pub promoted: bool,
    /// The new leader epoch.
    pub epoch: u64,
    /// This member's incarnation.
    pub replica: String,
}

/// An access token (its secret only in the answer that made it).
#[derive(ToSchema)]
pub struct AccessToken {
    /// Its id.
    pub id: String,
    /// What it is for.
    pub name: String,
    /// What it allows.
    pub grants: Vec<super::Grant>,
    /// When it was made, ms since the epoch.
    pub created_ms: u64,
    /// When it stops working.
    pub expires_ms: Option<u64>,
    /// When it was revoked.
    pub revoked_ms: Option<u64>,
    /// The secret: shown once, in the answer to `POST /v1/admin/tokens`.
    pub token: Option<String>,
}

/// Every token.
#[derive(ToSchema)]
pub struct AccessTokens {
    /// The tokens.
    pub tokens: Vec<AccessToken>,
}

/// A revoked token.
#[derive(ToSchema)]
pub struct Revoked {
    /// Its id.
    pub id: String,
    /// `true`.
    pub revoked: bool,
    /// Whether this request revoked it (false: it was already).
    pub changed: Option<bool>,
    /// Whether the region knew the token.
    pub known: Option<bool>,
}

/// The region's health.
#[derive(ToSchema)]
pub struct Health {
    /// `ok` or `failed`.
    pub status: String,
    /// The region.
    pub region: String,
    /// Why the region failed.
    pub error: Option<String>,
}

/// The region at a glance: version vector, keyspaces, log, peers with
/// lag, standbys (the console draws it).
#[derive(ToSchema)]
pub struct Status {
    /// The region.
    pub region: String,
    /// Its causal token.
    pub token: String,
    /// Ops applied.
    pub ops: u64,
    /// Keyspaces with digests.
    pub keyspaces: Vec<Value>,
    /// Peer links.
    pub peers: Vec<Value>,
}

/// A member's role in its region.
#[derive(ToSchema)]
pub struct Role {
    /// `leader` or `follower`.
    pub role: String,
    /// The leader epoch it knows.
    pub epoch: u64,
    /// The region.
    pub region: Option<String>,
}

/// A time to rewind to.
#[derive(ToSchema)]
#[serde(untagged)]
pub enum RewindTime {
    /// RFC 3339 (`2026-12-01T20:15:00Z`), or Unix ms as digits.
    Text(RewindText),
    /// Unix ms.
    Millis(u64),
}

/// A time as text: RFC 3339, or Unix ms as digits.
pub struct RewindText;

impl utoipa::PartialSchema for RewindText {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        super::pattern(
            r"^([0-9]{1,19}|[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2}))$",
            "RFC 3339 (`2026-12-01T20:15:00Z`), or Unix ms as digits.",
        )
    }
}

impl ToSchema for RewindText {}
