//! Request bodies: JSON or MessagePack, bounded in size and nesting before
//! anything is built from them.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::HttpError;

/// Deepest JSON nesting accepted in a body.
pub const MAX_DEPTH: usize = 64;

/// How a body is encoded, from its content type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `application/json`, or no content type.
    Json,
    /// `application/msgpack` (or `application/x-msgpack`).
    Msgpack,
    /// `application/octet-stream`: opaque bytes.
    Bytes,
}

/// The body's format from its `content-type`.
pub fn format(headers: &HeaderMap) -> Result<Format, HttpError> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Ok(Format::Json);
    };
    let ct = ct
        .to_str()
        .map_err(|_| HttpError::bad_request("content-type is not ASCII"))?;
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        // curl -d sends form-urlencoded by default: read it as the JSON it
        // almost always is, rather than refusing the first request anyone tries.
        "" | "application/json" | "text/json" | "application/x-www-form-urlencoded" => {
            Ok(Format::Json)
        }
        "application/msgpack" | "application/x-msgpack" | "application/vnd.msgpack" => {
            Ok(Format::Msgpack)
        }
        "application/octet-stream" => Ok(Format::Bytes),
        other => Err(HttpError::unsupported_media(
            "unsupported_media_type",
            format!(
                "content-type {other} is not supported: use application/json, application/msgpack or application/octet-stream"
            ),
        )),
    }
}

/// Turns axum's body rejection (size limit, read error) into our error.
pub fn bytes(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, HttpError> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            HttpError::too_large(format!("request body is over the {limit}-byte limit"))
        } else {
            HttpError::bad_request(format!(
                "could not read the request body: {}",
                r.body_text()
            ))
        }
    })
}

/// Depth of the deepest array/object nesting in JSON text, stopping as
/// soon as it passes `limit` (strings are skipped, escapes respected).
pub fn json_depth_exceeds(text: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in text {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Parses a body as `T` from JSON or MessagePack, refusing nesting deeper
/// than [`MAX_DEPTH`] first.
pub fn parse<T: DeserializeOwned>(fmt: Format, bytes: &[u8]) -> Result<T, HttpError> {
    match fmt {
        Format::Json => {
            if json_depth_exceeds(bytes, MAX_DEPTH) {
                return Err(HttpError::bad_request(format!(
                    "JSON nesting is deeper than {MAX_DEPTH} levels"
                )));
            }
            serde_json::from_slice(bytes)
                .map_err(|e| HttpError::bad_request(format!("malformed JSON body: {e}")))
        }
        Format::Msgpack => {
            let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
            de.set_max_depth(MAX_DEPTH);
            T::deserialize(&mut de).map_err(|e| {
                HttpError::bad_request(format!(
                    "malformed MessagePack body (or nesting deeper than {MAX_DEPTH}): {e}"
                ))
            })
        }
        Format::Bytes => Err(HttpError::unsupported_media(
            "unsupported_media_type",
            "this endpoint takes application/json or application/msgpack",
        )),
    }
}

/// Parses a settings body (a keyspace, an ownership map, a token, ...)
/// like [`parse`], reading a JSON number written with a fraction or an
/// exponent that is exactly a whole number (`3.0`, `1e3`, `2.50e1`) as
/// that whole number, as JSON Schema's `integer` does. Exactly: the
/// number's text is checked, digit by digit, never a float parsed from
/// it (`9007199254740993.0` stays itself, and is refused where it does
/// not fit). Only for bodies that carry no user values. The body must
/// be an object (a map in MessagePack): serde would fill a struct from
/// an array.
pub fn parse_settings<T: DeserializeOwned>(fmt: Format, bytes: &[u8]) -> Result<T, HttpError> {
    if !is_object(fmt, bytes) {
        return Err(not_an_object());
    }
    match fmt {
        Format::Json => parse(fmt, &whole_numbers(bytes)),
        _ => parse(fmt, bytes),
    }
}

fn not_an_object() -> HttpError {
    HttpError::bad_request("malformed body: expected an object ({...})")
}

/// Whether a body's top level is an object (a JSON `{`, a MessagePack
/// map); the parse that follows says whether it is a well-formed one.
fn is_object(fmt: Format, bytes: &[u8]) -> bool {
    match fmt {
        Format::Json => bytes.trim_ascii_start().first() == Some(&b'{'),
        Format::Msgpack => matches!(bytes.first(), Some(0x80..=0x8f | 0xde | 0xdf)),
        Format::Bytes => true,
    }
}

/// Parses an object body as `T` (a struct, which serde would also fill
/// from an array), like [`parse`].
pub fn parse_object<T: DeserializeOwned>(fmt: Format, bytes: &[u8]) -> Result<T, HttpError> {
    if !is_object(fmt, bytes) {
        return Err(not_an_object());
    }
    parse(fmt, bytes)
}

/// JSON text with every number that has a fraction or an exponent but is
/// exactly whole written as the integer it is; strings and every other
/// byte untouched.
fn whole_numbers(text: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let mut out: Option<Vec<u8>> = None;
    let (mut i, mut copied) = (0, 0);
    while i < text.len() {
        match text[i] {
            b'"' => {
                // Skip the string, escapes included.
                i += 1;
                while i < text.len() && text[i] != b'"' {
                    i += if text[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < text.len()
                    && matches!(text[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                if let Some(whole) = exact_whole(&text[start..i]) {
                    let o = out.get_or_insert_with(|| Vec::with_capacity(text.len()));
                    o.extend_from_slice(&text[copied..start]);
                    o.extend_from_slice(whole.as_bytes());
                    copied = i;
                }
            }
            _ => i += 1,
        }
    }
    match out {
        None => std::borrow::Cow::Borrowed(text),
        Some(mut o) => {
            o.extend_from_slice(&text[copied.min(text.len())..]);
            std::borrow::Cow::Owned(o)
        }
    }
}

/// The integer a JSON number token with a fraction or an exponent is
/// exactly (`"-2.50e1"` is `-25`), or `None`: not such a token, not
/// whole, malformed (left for the parser to refuse), or with more than
/// 40 digits (past every integer a setting holds).
fn exact_whole(token: &[u8]) -> Option<String> {
    let t = std::str::from_utf8(token).ok()?;
    if !t.contains(['.', 'e', 'E']) {
        return None;
    }
    let (neg, t) = t.strip_prefix('-').map_or((false, t), |rest| (true, rest));
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(at) => (&t[..at], t[at + 1..].parse::<i32>().ok()?),
        None => (t, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits_ok = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = int.len() > 1 && int.starts_with('0');
    if int.is_empty()
        || leading_zero
        || !digits_ok(int)
        || !digits_ok(frac)
        || (mantissa.contains('.') && frac.is_empty())
    {
        return None;
    }
    if exp.abs() > 40 {
        return None;
    }
    // value = digits * 10^scale
    let digits = format!("{int}{frac}");
    let scale = exp - frac.len() as i32;
    let whole = if scale >= 0 {
        format!("{digits}{}", "0".repeat(scale as usize))
    } else {
        let cut = digits.len().checked_sub((-scale) as usize)?;
        if !digits[cut..].bytes().all(|b| b == b'0') {
            return None;
        }
        digits[..cut].to_string()
    };
    let whole = whole.trim_start_matches('0');
    if whole.len() > 40 {
        return None;
    }
    Some(match (whole.is_empty(), neg) {
        (true, _) => "0".to_string(),
        (false, true) => format!("-{whole}"),
        (false, false) => whole.to_string(),
    })
}

/// Below this, every float's neighbours are at most 0.5 apart, so a float
/// with no fraction was written as a whole number or within a quarter of
/// one; from 2^52 on, `x.5` already parses as a whole number.
const EXACT: f64 = 4_503_599_627_370_496.0;

/// Deserializes an integer that may be written with a zero fraction
/// (`2.0`), as JSON Schema's `integer` allows, below 2^52 (a float past
/// that may have been rounded to a whole number by the parser; written
/// as an integer, any i64 is taken).
pub fn whole_i64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let n = <serde_json::Number as serde::Deserialize>::deserialize(d)?;
    if let Some(i) = n.as_i64() {
        return Ok(i);
    }
    n.as_f64()
        .filter(|f| f.fract() == 0.0 && f.abs() < EXACT)
        .map(|f| f as i64)
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{n} is not a whole number (a fraction, a float of 2^52 or more, or past the 64-bit range)"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_read_whole_floats_as_integers() {
        #[derive(serde::Deserialize)]
        struct S {
            a: u32,
            b: i64,
            c: Vec<u64>,
            d: f64,
        }
        let s: S = parse_settings(
            Format::Json,
            br#"{"a": 3.0, "b": -2.0, "c": [1e3, 0.0], "d": 1.5}"#,
        )
        .unwrap();
        assert_eq!((s.a, s.b, s.c, s.d), (3, -2, vec![1000, 0], 1.5));
        // A fraction, or a number past the range, is still refused.
        assert!(
            parse_settings::<S>(Format::Json, br#"{"a": 3.5, "b": 0, "c": [], "d": 0}"#).is_err()
        );
        assert!(
            parse_settings::<S>(Format::Json, br#"{"a": 1, "b": 0, "c": [1e20], "d": 0}"#).is_err()
        );
        // The text is read, not a float parsed from it: past 2^53 the
        // number is still exactly the one written, never rounded.
        let big = br#"{"a": 1, "b": 9007199254740993.0, "c": [18446744073709551615.0], "d": 0}"#;
        let s = parse_settings::<S>(Format::Json, big).unwrap();
        assert_eq!((s.b, s.c), ((1 << 53) + 1, vec![u64::MAX]));
        let over = br#"{"a": 1, "b": 0, "c": [18446744073709551616.0], "d": 0}"#;
        assert!(parse_settings::<S>(Format::Json, over).is_err());
        // Not whole: refused, however close.
        let near = br#"{"a": 1, "b": 9007199254740992.5, "c": [], "d": 0}"#;
        assert!(parse_settings::<S>(Format::Json, near).is_err());
        let near = br#"{"a": 1.0000000000000001, "b": 0, "c": [], "d": 0}"#;
        assert!(parse_settings::<S>(Format::Json, near).is_err());
        // A field named twice is refused, as a direct parse does.
        let twice = br#"{"a": 1, "a": 2, "b": 0, "c": [], "d": 0}"#;
        assert!(serde_json::from_slice::<S>(twice).is_err());
        let e = parse_settings::<S>(Format::Json, twice).err().unwrap();
        assert!(
            e.message().contains("duplicate field `a`"),
            "{}",
            e.message()
        );
        // A struct is an object: serde alone would fill one from an array.
        assert!(parse_settings::<S>(Format::Json, b"[3, 0, [], 0]").is_err());
        assert!(parse_settings::<S>(Format::Msgpack, &[0x90]).is_err());
        assert!(parse_object::<S>(Format::Msgpack, &[0x94, 3, 0, 0x90, 0]).is_err());
        assert!(parse_object::<S>(Format::Json, b" [3, 0, [], 0]").is_err());
        assert!(parse_object::<S>(Format::Json, br#" {"a": 3, "b": 0, "c": [], "d": 0}"#).is_ok());
        // Nesting is still bounded.
        let deep = "[".repeat(65) + "]".repeat(65).as_str();
        assert!(parse_settings::<serde_json::Value>(Format::Json, deep.as_bytes()).is_err());
    }

    #[test]
    fn whole_numbers_are_rewritten_exactly_and_nothing_else() {
        let w = |t: &str| String::from_utf8(whole_numbers(t.as_bytes()).into_owned()).unwrap();
        assert_eq!(
            w(r#"{"a": 3.0, "b": -2.50e1, "c": [1e3, 0.0, -0.0, 1E+2]}"#),
            r#"{"a": 3, "b": -25, "c": [1000, 0, 0, 100]}"#
        );
        // Fractions, plain integers, strings and malformed numbers stay.
        let same =
            r#"{"a": 1.5, "b": 7, "c": "3.0", "d": "a\"1.0", "e": 01.0, "f": 1.e3, "g": 1e}"#;
        assert_eq!(w(same), same);
        assert_eq!(exact_whole(b"12.3400e2"), Some("1234".into()));
        assert_eq!(exact_whole(b"1e41"), None);
        assert_eq!(exact_whole(b"0.000"), Some("0".into()));
    }

    #[test]
    fn whole_i64_takes_a_zero_fraction_only() {
        #[derive(serde::Deserialize)]
        struct By {
            #[serde(deserialize_with = "whole_i64")]
            by: i64,
        }
        let by = |t: &str| serde_json::from_str::<By>(t).map(|b| b.by);
        assert_eq!(by(r#"{"by": 2.0}"#).unwrap(), 2);
        assert_eq!(by(r#"{"by": -7}"#).unwrap(), -7);
        assert_eq!(by(r#"{"by": 9223372036854775807}"#).unwrap(), i64::MAX);
        assert!(by(r#"{"by": 2.5}"#).is_err());
        assert_eq!(
            by(r#"{"by": -4503599627370495.0}"#).unwrap(),
            -4503599627370495
        );
        // From 2^52 a float may already be a rounded fraction.
        assert!(by(r#"{"by": 4503599627370497.5}"#).is_err());
        assert!(by(r#"{"by": 9007199254740993e0}"#).is_err());
        assert!(by(r#"{"by": 9223372036854775808}"#).is_err());
        assert!(by(r#"{"by": 1e19}"#).is_err());
    }

    #[test]
    fn depth_counting_skips_strings() {
        assert!(!json_depth_exceeds(br#"{"a":[1,{"b":"[[[[[["}]}"#, 3));
        assert!(json_depth_exceeds(br#"{"a":[1,{"b":"x"}]}"#, 2));
        let deep = "[".repeat(65) + "]".repeat(65).as_str();
        assert!(json_depth_exceeds(deep.as_bytes(), 64));
        let ok = "[".repeat(64) + "]".repeat(64).as_str();
        assert!(!json_depth_exceeds(ok.as_bytes(), 64));
        assert!(!json_depth_exceeds(br#""\"[[[""#, 1));
    }
}
