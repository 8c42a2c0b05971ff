//! Peer authentication: every peer request and answer carries an
//! HMAC-SHA256 over what it says, keyed with the cluster secret.
//!
//! A signed message is `tag (32 bytes) || body`, the tag computed over a
//! domain label, the request's method and path, the sending region and the
//! body, so a tag cannot be moved to another endpoint or sender. Tags are
//! compared in constant time.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Length of a tag.
pub const TAG_LEN: usize = 32;
/// Shortest cluster secret accepted, in bytes.
pub const MIN_SECRET: usize = 16;

/// The cluster secret.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Why a secret was refused.
#[derive(Debug, thiserror::Error)]
#[error("the cluster secret is {0} bytes; it must be at least {MIN_SECRET}")]
pub struct ShortSecret(pub usize);

impl Secret {
    /// A secret from its bytes (surrounding whitespace, e.g. a trailing
    /// newline in a file, is not part of it).
    pub fn new(bytes: &[u8]) -> Result<Secret, ShortSecret> {
        let text = bytes.trim_ascii();
        if text.len() < MIN_SECRET {
            return Err(ShortSecret(text.len()));
        }
        Ok(Secret(text.to_vec()))
    }

    fn mac(&self, label: &str, from: &str, body: &[u8]) -> HmacSha256 {
        // HMAC takes keys of any length.
        let mut m = HmacSha256::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!());
        m.update(b"meridian-peer-v1\0");
        m.update(label.as_bytes());
        m.update(b"\0");
        m.update(from.as_bytes());
        m.update(b"\0");
        m.update(body);
        m
    }

    /// `tag || body`.
    pub fn sign(&self, label: &str, from: &str, body: &[u8]) -> Vec<u8> {
        let tag = self.mac(label, from, body).finalize().into_bytes();
        let mut out = Vec::with_capacity(TAG_LEN + body.len());
        out.extend_from_slice(&tag);
        out.extend_from_slice(body);
        out
    }

    /// Checks `tag || body` and returns the body.
    pub fn open<'a>(&self, label: &str, from: &str, signed: &'a [u8]) -> Option<&'a [u8]> {
        if signed.len() < TAG_LEN {
            return None;
        }
        let (tag, body) = signed.split_at(TAG_LEN);
        self.mac(label, from, body).verify_slice(tag).ok()?;
        Some(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_bind_secret_label_sender_and_body() {
        let s = Secret::new(b"0123456789abcdef\n").unwrap();
        let signed = s.sign("POST /peer/v1/ops", "us-east", b"batch");
        assert_eq!(
            s.open("POST /peer/v1/ops", "us-east", &signed),
            Some(&b"batch"[..])
        );
        assert_eq!(s.open("POST /peer/v1/state", "us-east", &signed), None);
        assert_eq!(s.open("POST /peer/v1/ops", "eu-west", &signed), None);
        let mut bad = signed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(s.open("POST /peer/v1/ops", "us-east", &bad), None);
        let other = Secret::new(b"fedcba9876543210").unwrap();
        assert_eq!(other.open("POST /peer/v1/ops", "us-east", &signed), None);
        assert_eq!(s.open("POST /peer/v1/ops", "us-east", b"short"), None);
        assert!(Secret::new(b"short").is_err());
    }
}
