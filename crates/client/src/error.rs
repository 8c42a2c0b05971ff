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
    /// Connecting or talking failed (refused, reset, ...): for a write, the
    /// outcome is unknown unless the request never left.
    #[error("transport: {0}")]
    Transport(String),
    /// The answer was not what the API promises.
    #[error("unexpected response: {0}")]
    Decode(String),
    /// A bad argument (URL, key).
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl ClientError {
    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the server answered with this error code.
    pub fn is_code(&self, want: &str) -> bool {
        matches!(self, ClientError::Http { code, .. } if code == want)
    }

    /// Whether a write that failed this way may still have happened
    /// (timeout, connection lost after sending, 504 write-concern timeout).
    pub fn is_indeterminate(&self) -> bool {
        match self {
            ClientError::Timeout(_) | ClientError::Transport(_) => true,
            ClientError::Http { status, .. } => *status == 504 || *status >= 500 && *status != 503,
            _ => false,
        }
    }
}
