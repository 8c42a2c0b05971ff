//! Path parameters and error answers that several routes share.

use utoipa::{IntoParams, IntoResponses};

use super::schemas::Error;

/// A keyspace in the path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct KeyspacePath {
    /// The keyspace's name.
    #[param(pattern = r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    pub keyspace: String,
}

/// A key in the path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct KeyPath {
    /// The keyspace's name.
    #[param(pattern = r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    pub keyspace: String,
    /// The key: 1 to 1024 bytes of UTF-8, percent-encoded; may contain '/'.
    #[param(min_length = 1)]
    pub key: String,
}

/// A keyspace's name in the path of its definition.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct NamePath {
    /// The keyspace's name.
    #[param(pattern = r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    pub name: String,
}

/// A merge function's name in the path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct MergeNamePath {
    /// The function's name: 1 to 64 of a-z, 0-9, '-' and '_', starting
    /// with a letter or digit.
    #[param(pattern = r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    pub name: String,
}

/// A backup's id in the path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct BackupIdPath {
    /// The backup's id: 1 to 64 of a-z, A-Z, 0-9, '-', '_', '.'.
    #[param(pattern = r"^[a-zA-Z0-9._-]{1,64}$")]
    pub id: String,
}

/// A token's id in the path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TokenIdPath {
    /// The token's id: 1 to 64 of a-z and 0-9.
    #[param(pattern = r"^[a-z0-9]{1,64}$")]
    pub id: String,
}

/// How a write of one key or a batch can fail.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum WriteErrors {
    /// Malformed request: bad path, header, token or body.
    #[response(status = 400)]
    BadRequest(Error),
    /// Unknown keyspace (`unknown_keyspace`).
    #[response(status = 404)]
    NotFound(Error),
    /// `not_merger`: a delete or a write with a context of a custom key
    /// sent to a region other than the key's merger (`merger` names it);
    /// `stale_context`: its context misses a version the key holds now;
    /// `type_clash`.
    #[response(status = 409)]
    Conflict(Error),
    /// Body or value over its limit (value 1 MiB, batch body 16 MiB,
    /// 1000 ops).
    #[response(status = 413)]
    TooLarge(Error),
    /// Unsupported content type.
    #[response(status = 415)]
    Unsupported(Error),
    /// The key is owned by another region and the keyspace's ownership
    /// map is in `reject` mode (`not_owner`: `owner`, `epoch`, `url`).
    #[response(status = 421)]
    Misdirected(Error),
    /// The keyspace's policy does not take this change (`unsupported_op`),
    /// a counter would overflow (`counter_overflow`) or a patch does not
    /// fit the schema (`invalid_patch`).
    #[response(status = 422)]
    Unprocessable(Error),
    /// The region has not applied the request's causal token in time
    /// (`behind_token`), the deadline passed (`deadline_passed`), the clock
    /// is behind (`clock`), a custom key holds its cap of unmerged versions
    /// (`merge_pending`), ownership is moving (`handoff_pending`), the
    /// owner cannot be reached (`owner_unreachable`), or the region is
    /// stopping.
    #[response(status = 503)]
    Unavailable(Error),
    /// Write concern not met in time: the write is durable in this region
    /// and will still replicate.
    #[response(status = 504)]
    Timeout(Error),
}

/// How a read can fail.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum ReadErrors {
    /// Malformed request: bad path, query, header or token.
    #[response(status = 400)]
    BadRequest(Error),
    /// Unknown keyspace (`unknown_keyspace`), or no such key
    /// (`not_found`).
    #[response(status = 404)]
    NotFound(Error),
    /// The region has not applied the request's causal token in time
    /// (`behind_token`, with `lacking` origins), a standby is staler than
    /// asked (`too_stale`), or a quorum could not be reached.
    #[response(status = 503)]
    Unavailable(Error),
}

/// How a backup request can fail.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum BackupErrors {
    /// Bad id, query or body.
    #[response(status = 400)]
    BadRequest(Error),
    /// No such backup (`unknown_backup`).
    #[response(status = 404)]
    NotFound(Error),
    /// No backup target (`no_backup_target`), a backup is running
    /// (`backup_running`), or a restore holds a lease on it
    /// (`backup_in_use`).
    #[response(status = 409)]
    Conflict(Error),
    /// A file is damaged, missing or named outside the region's folder
    /// (`backup_damaged`; `file` names it).
    #[response(status = 422)]
    Damaged(Error),
    /// The backup target failed (`backup_target`).
    #[response(status = 502)]
    Target(Error),
}
