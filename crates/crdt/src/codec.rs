//! The versioned, bounded MessagePack encoding of everything stored or shipped.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The format version written as the first byte of every encoding.
pub const FORMAT_VERSION: u8 = 1;

/// Deepest nesting a decoder accepts (documents nest; nothing else does).
pub const MAX_DEPTH: usize = 96;

/// Why bytes could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Longer than the caller's bound; nothing was parsed.
    #[error("encoded value is {len} bytes, over the {max}-byte limit")]
    TooLarge {
        /// Input length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// Empty input.
    #[error("encoded value is empty")]
    Empty,
    /// A format version this build does not know.
    #[error("unknown format version {0} (this build reads version {FORMAT_VERSION})")]
    Version(u8),
    /// Malformed MessagePack, a value of the wrong shape, or nesting too deep.
    #[error("malformed encoding: {0}")]
    Malformed(#[from] rmp_serde::decode::Error),
    /// Bytes left over after the value.
    #[error("trailing bytes after the encoded value")]
    Trailing,
}

/// Why a value could not be encoded (only possible for types that serde
/// cannot describe with a known length; none of ours).
#[derive(Debug, thiserror::Error)]
#[error("encoding failed: {0}")]
pub struct EncodeError(#[from] rmp_serde::encode::Error);

/// Encodes `value`: one version byte, then compact MessagePack (structs as
/// arrays). Deterministic for our types: they hold no hash maps.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, EncodeError> {
    let mut out = vec![FORMAT_VERSION];
    encode_into(value, &mut out)?;
    Ok(out)
}

/// Appends the bare MessagePack of `value` (no version byte) to `out`.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    rmp_serde::encode::write(out, value)?;
    Ok(())
}

/// The length of [`encode`]'s output for `value`, counted without
/// allocating it: what budgets are checked against.
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> Result<usize, EncodeError> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(1);
    rmp_serde::encode::write(&mut c, value)?;
    Ok(c.0)
}

/// Decodes what [`encode`] wrote, refusing inputs over `max_len` bytes before
/// reading them, unknown versions, nesting deeper than [`MAX_DEPTH`] and
/// trailing bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], max_len: usize) -> Result<T, DecodeError> {
    if bytes.len() > max_len {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: max_len,
        });
    }
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::Version(version));
    }
    decode_bare(body)
}

/// Decodes what this region wrote itself and kept under a checksum (its op
/// log, its state store): as [`decode`], but JSON text is taken as it is
/// stored instead of being parsed again to prove it canonical. It was made
/// canonical when the write was accepted (or checked when it arrived from a
/// peer), and re-proving that on every read, replay and shipment cost more
/// than the rest of the decode for large values. Bytes from anywhere else
/// (peers, clients, backup archives) go through [`decode`].
pub fn decode_trusted<T: DeserializeOwned>(bytes: &[u8], max_len: usize) -> Result<T, DecodeError> {
    let _scope = TrustedScope::enter();
    decode(bytes, max_len)
}

thread_local! {
    static TRUSTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks this thread as decoding trusted bytes until dropped (also when the
/// decode panics), restoring what was there before.
struct TrustedScope(bool);

impl TrustedScope {
    fn enter() -> TrustedScope {
        TrustedScope(TRUSTED.with(|t| t.replace(true)))
    }
}

impl Drop for TrustedScope {
    fn drop(&mut self) {
        TRUSTED.with(|t| t.set(self.0));
    }
}

/// Whether the decode running on this thread is of trusted bytes
/// ([`decode_trusted`]).
pub(crate) fn trusted() -> bool {
    TRUSTED.with(|t| t.get())
}

/// Decodes bare MessagePack (no version byte) with the depth bound and
/// trailing-byte check. The caller bounds the length.
pub fn decode_bare<T: DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    let mut de = rmp_serde::Deserializer::from_read_ref(body);
    de.set_max_depth(MAX_DEPTH);
    let value = T::deserialize(&mut de)?;
    // Anything that still decodes as a value is trailing garbage; the one
    // acceptable outcome is running out of input.
    match serde::de::IgnoredAny::deserialize(&mut de) {
        Err(rmp_serde::decode::Error::InvalidMarkerRead(e))
            if e.kind() == std::io::ErrorKind::UnexpectedEof =>
        {
            Ok(value)
        }
        _ => Err(DecodeError::Trailing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_decodes_take_json_as_stored_and_no_other_decode_does() {
        use crate::Json;
        // Valid JSON, not canonical (space, unsorted keys).
        let text = r#"{"b": 1, "a": 2}"#;
        let bytes = encode(text).unwrap();
        assert!(matches!(
            decode::<Json>(&bytes, 100),
            Err(DecodeError::Malformed(_))
        ));
        assert_eq!(decode_trusted::<Json>(&bytes, 100).unwrap().as_str(), text);
        // The scope ends with the call, also when it failed.
        assert!(decode_trusted::<Json>(&bytes, 3).is_err());
        assert!(decode::<Json>(&bytes, 100).is_err());
        // Not JSON at all is still refused by the ordinary decode.
        assert!(decode::<Json>(&encode("{").unwrap(), 100).is_err());
        let canonical = encode(r#"{"a":2,"b":1}"#).unwrap();
        assert_eq!(
            decode::<Json>(&canonical, 100).unwrap(),
            Json::parse(text).unwrap()
        );
    }

    #[test]
    fn round_trip_and_refusals() {
        let bytes = encode(&(1u8, "x")).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(encoded_len(&(1u8, "x")).unwrap(), bytes.len());
        assert_eq!(
            decode::<(u8, String)>(&bytes, 100).unwrap(),
            (1, "x".into())
        );
        assert!(matches!(
            decode::<(u8, String)>(&bytes, 2),
            Err(DecodeError::TooLarge { .. })
        ));
        assert!(matches!(
            decode::<(u8, String)>(&[], 10),
            Err(DecodeError::Empty)
        ));
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert!(matches!(
            decode::<(u8, String)>(&v2, 100),
            Err(DecodeError::Version(2))
        ));
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(matches!(
            decode::<(u8, String)>(&extra, 100),
            Err(DecodeError::Trailing)
        ));
    }

    #[test]
    fn a_forged_length_does_not_allocate_or_panic() {
        // array32 claiming 4 billion elements, then nothing.
        let bytes = [FORMAT_VERSION, 0xdd, 0xff, 0xff, 0xff, 0xff];
        assert!(decode::<Vec<u64>>(&bytes, 100).is_err());
        // str32 claiming 4 GiB.
        let bytes = [FORMAT_VERSION, 0xdb, 0xff, 0xff, 0xff, 0xff, b'a'];
        assert!(decode::<String>(&bytes, 100).is_err());
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut bytes = vec![FORMAT_VERSION];
        bytes.extend(std::iter::repeat_n(0x91u8, 10_000)); // fixarray of 1, nested
        bytes.push(0xc0);
        assert!(decode::<serde_json::Value>(&bytes, 1 << 20).is_err());
    }
}
