//! What can go wrong talking to a region.

/// A failed call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status and its JSON error body.
    #[error("{status} {code}: {message}")]
    Http {
        /// HTTP status.
        status: u16,
        /// The error code (`not_found`, `unsupported_op`, ...).
        code: String,
        /// The server's message.
        message: String,
        /// The whole error body.
        body: serde_json::Value,
    },
    /// No answer in time: a write may or may not have happened.
    #[error("timed out after {0} ms")]
    Timeout(u64),
    /// No connection could be made (refused, no route, connect timeout):
    /// the request never left, so nothing happened.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The connection failed after the request was sent (reset, closed):
    /// for a write, the outcome is unknown.
    #[error("transport: {0}")]
    Transport(String),
    /// A write that may or may not have been applied: the region it was
    /// sent to failed before answering (timeout, connection lost, a server
    /// error), and the write is not one the client retries elsewhere
    /// because applying it twice would count twice (`incr`, set `add` and
    /// `remove`, or a batch holding one). Read the key to find out.
    #[error("indeterminate: the write may or may not have been applied at {region} ({cause})")]
    Indeterminate {
        /// The region's URL.
        region: String,
        /// What went wrong there.
        cause: Box<ClientError>,
    },
    /// The answer was not what the API promises.
    #[error("unexpected response: {0}")]
    Decode(String),
    /// A bad argument (URL, key).
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl ClientError {
    /// The HTTP status, when the server answered (for an
    /// [`ClientError::Indeterminate`] write, the status of the failure).
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Http { status, .. } => Some(*status),
            ClientError::Indeterminate { cause, .. } => cause.status(),
            _ => None,
        }
    }

    /// Whether the server answered with this error code (looking through
    /// [`ClientError::Indeterminate`] to its cause).
    pub fn is_code(&self, want: &str) -> bool {
        match self {
            ClientError::Http { code, .. } => code == want,
            ClientError::Indeterminate { cause, .. } => cause.is_code(want),
            _ => false,
        }
    }

    /// The server's JSON error body, when it answered (looking through
    /// [`ClientError::Indeterminate`]).
    pub fn body(&self) -> Option<&serde_json::Value> {
        match self {
            ClientError::Http { body, .. } => Some(body),
            ClientError::Indeterminate { cause, .. } => cause.body(),
            _ => None,
        }
    }

    /// Whether a write that failed this way may still have happened
    /// (timeout, connection lost after sending, 504 write-concern timeout,
    /// a server error, [`ClientError::Indeterminate`]).
    pub fn is_indeterminate(&self) -> bool {
        match self {
            ClientError::Timeout(_)
            | ClientError::Transport(_)
            | ClientError::Indeterminate { .. } => true,
            ClientError::Http { status, body, .. } => {
                *status == 504 || *status >= 500 && !refused(*status, body)
            }
            _ => false,
        }
    }

    /// A short label for counting errors by kind (`503 behind_token`,
    /// `timeout`, `indeterminate`, ...).
    pub fn kind(&self) -> String {
        match self {
            ClientError::Http { status, code, .. } => format!("{status} {code}"),
            ClientError::Timeout(_) => "timeout".into(),
            ClientError::Unreachable(_) => "unreachable".into(),
            ClientError::Transport(_) => "transport".into(),
            ClientError::Indeterminate { .. } => "indeterminate".into(),
            ClientError::Decode(_) => "bad answer".into(),
            ClientError::Invalid(_) => "invalid".into(),
        }
    }
}

/// `503` codes that say the request was refused before anything was
/// written: waiting for a token, a handoff, a merge or a clock; a region
/// not ready; an owner that could not be reached (unless the forward was
/// sent). Any other 5xx may follow a write that was applied.
pub(crate) fn refused(status: u16, body: &serde_json::Value) -> bool {
    const REFUSALS: [&str; 11] = [
        // A standby: it could not reach its leader (nothing was sent), has
        // none yet, or is staler than the read allows.
        "leader_unreachable",
        "no_leader",
        "too_stale",
        "behind_token",
        "deadline_passed",
        "handoff_pending",
        "merge_pending",
        "not_ready",
        "clock",
        "starting",
        "quorum_unavailable",
    ];
    if status != 503 {
        return false;
    }
    let code = body.get("error").and_then(serde_json::Value::as_str);
    match code {
        Some("owner_unreachable") => body.get("indeterminate") == Some(&serde_json::json!(false)),
        Some(c) => REFUSALS.contains(&c),
        None => false,
    }
}
