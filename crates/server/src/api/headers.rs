//! Meridian's request and response headers.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use meridian_core::Concern;
use meridian_crdt::VersionVector;

use crate::error::HttpError;

/// The headers a read takes (for the OpenAPI document; the handlers read
/// them with the functions below).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct ReadHeaders {
    /// A causal token (from an earlier answer): answer only once this
    /// region has applied everything it covers.
    #[param(nullable = false, rename = "meridian-token")]
    pub token: Option<String>,
    /// How long to wait for the token, ms (default 2000, at most 60000).
    #[param(nullable = false, rename = "meridian-wait-ms", maximum = 60000)]
    pub wait_ms: Option<u64>,
    /// On a standby: the stalest the read may be, ms; a standby further
    /// behind its leader answers 503 `too_stale`. The leader is never stale.
    #[param(
        nullable = false,
        rename = "meridian-max-staleness-ms",
        maximum = 18446744073709551615_u64
    )]
    pub max_staleness_ms: Option<u64>,
}

/// How a key is read.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum ReadModeName {
    /// This region's state (default).
    Local,
    /// A majority of regions, merged, with read repair.
    Quorum,
    /// The key's owner under the keyspace's ownership map.
    Owner,
}

/// The headers a key read takes beyond [`ReadHeaders`].
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct KeyReadHeaders {
    /// How the read is served: `local` (default), `quorum` or `owner`.
    #[param(nullable = false, rename = "meridian-read", inline)]
    pub read: Option<ReadModeName>,
}

/// The headers a write takes.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct WriteHeaders {
    /// A causal token: take the write only once this region has applied
    /// everything it covers.
    #[param(nullable = false, rename = "meridian-token")]
    pub token: Option<String>,
    /// How long to wait for the token, ms (default 2000, at most 60000).
    #[param(nullable = false, rename = "meridian-wait-ms", maximum = 60000)]
    pub wait_ms: Option<u64>,
    /// Members that must hold the write durably before success (default:
    /// the keyspace's): regions (`local`, `one`, `majority`, `all`),
    /// this region's members (`leader`, `standby`, `region-all`), or one
    /// of each joined by `+` (`majority+standby`).
    #[param(
        nullable = false,
        rename = "meridian-write-concern",
        pattern = r"^ *((local|one|majority|all)( *\+ *(leader|standby|region-all))?|(leader|standby|region-all)( *\+ *(local|one|majority|all))?) *$"
    )]
    pub write_concern: Option<String>,
    /// How long to wait for the write concern, ms (at most 60000).
    #[param(nullable = false, rename = "meridian-timeout-ms", maximum = 60000)]
    pub timeout_ms: Option<u64>,
    /// Wall-clock time (Unix ms) after which the region must not take the
    /// write: 503 `deadline_passed` then, nothing written.
    #[param(
        nullable = false,
        rename = "meridian-deadline-ms",
        maximum = 18446744073709551615_u64
    )]
    pub deadline_ms: Option<u64>,
    /// A time (Unix ms) the write is stamped above; at most the clock
    /// offset bound ahead of the region's clock, else 503 `clock`.
    #[param(
        nullable = false,
        rename = "meridian-not-before-ms",
        maximum = 18446744073709551615_u64
    )]
    pub not_before_ms: Option<u64>,
}

/// The header a write of one `mv` key takes beyond [`WriteHeaders`].
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct ContextHeader {
    /// `mv` keyspaces: the `context` of the read this write follows; the
    /// write replaces exactly the siblings it saw.
    #[param(nullable = false, rename = "meridian-context", min_length = 1)]
    pub context: Option<String>,
}

/// Causal token: in every response; in a request, what the region must have
/// applied before it answers.
pub const TOKEN: &str = "meridian-token";
/// How long a request carrying a token may wait, in ms (default 2000).
pub const WAIT_MS: &str = "meridian-wait-ms";
/// `mv` keyspaces: the context from a read, so a write replaces what it saw.
pub const CONTEXT: &str = "meridian-context";
/// Write concern of a request: `local`, `one`, `majority`, `all`.
pub const WRITE_CONCERN: &str = "meridian-write-concern";
/// How long a write may wait for its write concern, in ms.
pub const TIMEOUT_MS: &str = "meridian-timeout-ms";
/// Wall-clock time (Unix ms) after which a write must not be taken.
pub const DEADLINE_MS: &str = "meridian-deadline-ms";
/// A time (Unix ms) a write must be stamped above.
pub const NOT_BEFORE_MS: &str = "meridian-not-before-ms";
/// The version of a value answered as raw bytes.
pub const VERSION: &str = "meridian-version";
/// How a read is served: `local` (default) or `quorum`.
pub const READ: &str = "meridian-read";

/// How a read is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// This region's state.
    Local,
    /// A majority of regions, merged, with read repair.
    Quorum,
    /// The key's owner under the keyspace's ownership map (here, when it
    /// has none or this region owns it).
    Owner,
}

/// The read mode a request asks for.
pub fn read_mode(h: &HeaderMap) -> Result<ReadMode, HttpError> {
    match text(h, READ)?.map(str::trim) {
        None | Some("local") => Ok(ReadMode::Local),
        Some("quorum") => Ok(ReadMode::Quorum),
        Some("owner") => Ok(ReadMode::Owner),
        Some(other) => Err(HttpError::bad_request(format!(
            "header {READ}: {other:?} is not a read mode: expected local, quorum or owner"
        ))),
    }
}

/// Default wait for a causal token.
pub const DEFAULT_WAIT_MS: u64 = 2_000;
/// Longest wait a client may ask for.
pub const MAX_WAIT_MS: u64 = 60_000;

fn text<'a>(h: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, HttpError> {
    h.get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| HttpError::bad_request(format!("header {name} is not ASCII")))
        })
        .transpose()
}

fn vv_header(h: &HeaderMap, name: &str) -> Result<Option<VersionVector>, HttpError> {
    text(h, name)?
        .map(|t| {
            meridian_core::token::decode(t)
                .map_err(|e| HttpError::bad_request(format!("header {name}: {e}")))
        })
        .transpose()
}

/// The causal token a request carries. An empty one is none: a client
/// that holds no token yet may send its empty string, and a token can
/// only make a request wait, never change what it does. (An empty
/// context is refused: none would mean "everything here", and a delete
/// would remove siblings its client never saw.)
pub fn token(h: &HeaderMap) -> Result<Option<VersionVector>, HttpError> {
    if text(h, TOKEN)?.is_some_and(|t| t.trim().is_empty()) {
        return Ok(None);
    }
    vv_header(h, TOKEN)
}

/// The `mv` context a request carries.
pub fn context(h: &HeaderMap) -> Result<Option<VersionVector>, HttpError> {
    vv_header(h, CONTEXT)
}

fn millis(h: &HeaderMap, name: &str, default: u64) -> Result<u64, HttpError> {
    match text(h, name)? {
        None => Ok(default),
        Some(t) => t
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|v| *v <= MAX_WAIT_MS)
            .ok_or_else(|| {
                HttpError::bad_request(format!(
                    "header {name}: {t:?} is not a whole number of milliseconds in 0..={MAX_WAIT_MS}"
                ))
            }),
    }
}

/// How long to wait for a causal token.
pub fn wait_ms(h: &HeaderMap) -> Result<u64, HttpError> {
    millis(h, WAIT_MS, DEFAULT_WAIT_MS)
}

/// A time in Unix milliseconds (`meridian-deadline-ms`,
/// `meridian-not-before-ms`).
pub fn unix_ms(h: &HeaderMap, name: &str) -> Result<Option<u64>, HttpError> {
    text(h, name)?
        .map(|t| {
            t.trim().parse::<u64>().map_err(|_| {
                HttpError::bad_request(format!(
                    "header {name}: {t:?} is not a time in Unix milliseconds"
                ))
            })
        })
        .transpose()
}

/// How long a write may wait for its write concern.
pub fn timeout_ms(h: &HeaderMap, default: u64) -> Result<u64, HttpError> {
    millis(h, TIMEOUT_MS, default)
}

/// The write concern a request asks for, if any (`majority`, `standby`,
/// `one+region-all`, ...).
pub fn write_concern(h: &HeaderMap) -> Result<Option<Concern>, HttpError> {
    text(h, WRITE_CONCERN)?
        .map(|t| {
            t.trim()
                .parse::<Concern>()
                .map_err(|e| HttpError::bad_request(format!("header {WRITE_CONCERN}: {e}")))
        })
        .transpose()
}

/// Header: the stalest a standby's read may be, ms (503 beyond it).
pub const MAX_STALENESS_MS: &str = "meridian-max-staleness-ms";

/// The staleness bound a read asks for, if any.
pub fn max_staleness_ms(h: &HeaderMap) -> Result<Option<u64>, HttpError> {
    text(h, MAX_STALENESS_MS)?
        .map(|t| {
            t.trim().parse::<u64>().map_err(|_| {
                HttpError::bad_request(format!(
                    "header {MAX_STALENESS_MS}: {t:?} is not a whole number of milliseconds"
                ))
            })
        })
        .transpose()
}

/// A response header holding a token.
pub fn token_header(vv: &VersionVector) -> (HeaderName, HeaderValue) {
    let t = meridian_core::token::encode(vv);
    (
        HeaderName::from_static(TOKEN),
        // base64url is always a valid header value.
        HeaderValue::from_str(&t).unwrap_or_else(|_| HeaderValue::from_static("")),
    )
}
