//! Causal tokens: a version vector in a URL-safe string.
//!
//! A region hands one out with every read and write; a request carrying one
//! is served only once the region's own version vector covers it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use meridian_crdt::VersionVector;
use meridian_crdt::codec;

/// Longest token accepted, in characters.
pub const MAX_TOKEN: usize = 8192;

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Too long to be one of ours.
    #[error("causal token is {0} characters, over the {MAX_TOKEN}-character limit")]
    TooLong(usize),
    /// Not base64url.
    #[error("causal token is not base64url: {0}")]
    Base64(#[from] base64::DecodeError),
    /// Not a version vector.
    #[error("causal token does not decode: {0}")]
    Decode(#[from] codec::DecodeError),
}

/// Encodes a version vector as a token.
pub fn encode(vv: &VersionVector) -> String {
    // Encoding a version vector cannot fail (no unsized sequences).
    let bytes = codec::encode(vv).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes a token back into the version vector it carries.
pub fn decode(token: &str) -> Result<VersionVector, TokenError> {
    if token.len() > MAX_TOKEN {
        return Err(TokenError::TooLong(token.len()));
    }
    let bytes = URL_SAFE_NO_PAD.decode(token.trim())?;
    Ok(codec::decode(&bytes, MAX_TOKEN)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_crdt::{RegionId, ReplicaId, Seq};

    #[test]
    fn round_trip_and_refusals() {
        let vv: VersionVector = [(
            ReplicaId::new(RegionId::new("us-east").unwrap(), uuid_like()),
            Seq(42),
        )]
        .into_iter()
        .collect();
        let t = encode(&vv);
        assert!(
            t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(decode(&t).unwrap(), vv);
        assert!(matches!(decode("!!"), Err(TokenError::Base64(_))));
        assert!(matches!(decode("AAAA"), Err(TokenError::Decode(_))));
        assert!(matches!(
            decode(&"A".repeat(9000)),
            Err(TokenError::TooLong(9000))
        ));
        assert_eq!(
            decode(&encode(&VersionVector::new())).unwrap(),
            VersionVector::new()
        );
    }

    fn uuid_like() -> uuid::Uuid {
        uuid::Uuid::from_u128(77)
    }
}
