//! Request bodies: JSON or MessagePack, bounded in size and nesting before
//! anything is built from them.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use super::error::ApiError;

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
pub fn format(headers: &HeaderMap) -> Result<Format, ApiError> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Ok(Format::Json);
    };
    let ct = ct
        .to_str()
        .map_err(|_| ApiError::bad_request("content-type is not ASCII"))?;
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
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "content-type {other} is not supported: use application/json, application/msgpack or application/octet-stream"
            ),
        )),
    }
}

/// Turns axum's body rejection (size limit, read error) into our error.
pub fn bytes(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(format!("request body is over the {limit}-byte limit"))
        } else {
            ApiError::bad_request(format!(
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
pub fn parse<T: DeserializeOwned>(fmt: Format, bytes: &[u8]) -> Result<T, ApiError> {
    match fmt {
        Format::Json => {
            if json_depth_exceeds(bytes, MAX_DEPTH) {
                return Err(ApiError::bad_request(format!(
                    "JSON nesting is deeper than {MAX_DEPTH} levels"
                )));
            }
            serde_json::from_slice(bytes)
                .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))
        }
        Format::Msgpack => {
            let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
            de.set_max_depth(MAX_DEPTH);
            T::deserialize(&mut de).map_err(|e| {
                ApiError::bad_request(format!(
                    "malformed MessagePack body (or nesting deeper than {MAX_DEPTH}): {e}"
                ))
            })
        }
        Format::Bytes => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "this endpoint takes application/json or application/msgpack",
        )),
    }
}

/// Parses a settings body (a keyspace, an ownership map, a token, ...)
/// like [`parse`], reading a JSON number written with a zero fraction
/// (`3.0`, `1e3`) as the whole number it is, as JSON Schema does, where
/// that number is exact (at most 2^53). Only for bodies that carry no
/// user values. The body must be an object, and a field named twice is
/// refused, as a direct parse would.
pub fn parse_settings<T: DeserializeOwned>(fmt: Format, bytes: &[u8]) -> Result<T, ApiError> {
    if fmt != Format::Json {
        return parse(fmt, bytes);
    }
    if json_depth_exceeds(bytes, MAX_DEPTH) {
        return Err(ApiError::bad_request(format!(
            "JSON nesting is deeper than {MAX_DEPTH} levels"
        )));
    }
    let Strict(v) = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))?;
    if !v.is_object() {
        return Err(not_an_object());
    }
    T::deserialize(v).map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))
}

fn not_an_object() -> ApiError {
    ApiError::bad_request("malformed JSON body: expected an object ({...})")
}

/// Parses a JSON object body as `T` (a struct, which serde would also
/// fill from an array), like [`parse`].
pub fn parse_object<T: DeserializeOwned>(fmt: Format, bytes: &[u8]) -> Result<T, ApiError> {
    if fmt == Format::Json && bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(not_an_object());
    }
    parse(fmt, bytes)
}

/// The largest magnitude below which every whole number is an f64 of its
/// own: past it, `9007199254740993.0` has already been read as
/// `...992`, and taking it would change the number silently.
const EXACT: f64 = 9_007_199_254_740_992.0;

/// A float with no fraction, exactly representable, as an integer.
fn whole(f: f64) -> Option<i64> {
    (f.fract() == 0.0 && f.abs() <= EXACT).then_some(f as i64)
}

/// A JSON value read with whole floats as integers and duplicate fields
/// refused.
struct Strict(serde_json::Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Strict, E> {
        Ok(Strict(v.into()))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Strict, E> {
        Ok(Strict(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Strict, E> {
        Ok(Strict(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Strict, E> {
        Ok(Strict(whole(v).map_or_else(|| v.into(), Into::into)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Strict, E> {
        Ok(Strict(v.into()))
    }
    fn visit_string<E>(self, v: String) -> Result<Strict, E> {
        Ok(Strict(v.into()))
    }
    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict(serde_json::Value::Null))
    }
    fn visit_none<E>(self) -> Result<Strict, E> {
        Ok(Strict(serde_json::Value::Null))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Strict(items.into()))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        let mut fields = serde_json::Map::new();
        while let Some((k, Strict(v))) = map.next_entry::<String, Strict>()? {
            if fields.contains_key(&k) {
                return Err(serde::de::Error::custom(format!("duplicate field `{k}`")));
            }
            fields.insert(k, v);
        }
        Ok(Strict(fields.into()))
    }
}

/// Deserializes an integer that may be written with a zero fraction
/// (`2.0`), as JSON Schema's `integer` allows, where that is exact.
pub fn whole_i64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let n = <serde_json::Number as serde::Deserialize>::deserialize(d)?;
    if let Some(i) = n.as_i64() {
        return Ok(i);
    }
    n.as_f64().and_then(whole).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "{n} is not a whole number (a fraction, or past 2^53 written as a float, or past the 64-bit range)"
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
        // Past 2^53 a float is no longer the number written: refused, not
        // rounded.
        let at = br#"{"a": 1, "b": 9007199254740992.0, "c": [], "d": 0}"#;
        assert_eq!(parse_settings::<S>(Format::Json, at).unwrap().b, 1 << 53);
        let over = br#"{"a": 1, "b": 9007199254740994.0, "c": [], "d": 0}"#;
        assert!(parse_settings::<S>(Format::Json, over).is_err());
        // A field named twice is refused, as a direct parse does.
        let twice = br#"{"a": 1, "a": 2, "b": 0, "c": [], "d": 0}"#;
        assert!(serde_json::from_slice::<S>(twice).is_err());
        let e = parse_settings::<S>(Format::Json, twice).err().unwrap();
        assert!(e.message.contains("duplicate field `a`"), "{}", e.message);
        // A struct is an object: serde alone would fill one from an array.
        assert!(parse_settings::<S>(Format::Json, b"[3, 0, [], 0]").is_err());
        assert!(parse_object::<S>(Format::Json, b" [3, 0, [], 0]").is_err());
        assert!(parse_object::<S>(Format::Json, br#" {"a": 3, "b": 0, "c": [], "d": 0}"#).is_ok());
        // Nesting is still bounded.
        let deep = "[".repeat(65) + "]".repeat(65).as_str();
        assert!(parse_settings::<serde_json::Value>(Format::Json, deep.as_bytes()).is_err());
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
        assert_eq!(by(r#"{"by": -9007199254740992.0}"#).unwrap(), -(1 << 53));
        assert!(by(r#"{"by": 9007199254740994.0}"#).is_err());
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
