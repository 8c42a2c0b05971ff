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
/// (`3.0`, `1e3`) as the whole number it is, as JSON Schema does. Only for
/// bodies that carry no user values: a value's `1.0` stays a float.
pub fn parse_settings<T: DeserializeOwned>(fmt: Format, bytes: &[u8]) -> Result<T, ApiError> {
    if fmt != Format::Json {
        return parse(fmt, bytes);
    }
    let mut v: serde_json::Value = parse(fmt, bytes)?;
    if !v.is_object() {
        return Err(not_an_object());
    }
    whole_numbers(&mut v);
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

/// Rewrites every float with no fraction that fits an integer as that
/// integer.
fn whole_numbers(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.fract() == 0.0 {
                // `as` saturates: only a round trip proves the value fits.
                if f >= 0.0 && (f as u64) as f64 == f && f < 18_446_744_073_709_551_616.0 {
                    *v = Value::from(f as u64);
                } else if f < 0.0 && (f as i64) as f64 == f {
                    *v = Value::from(f as i64);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_numbers),
        Value::Object(fields) => fields.values_mut().for_each(whole_numbers),
        _ => {}
    }
}

/// Deserializes an integer that may be written with a zero fraction
/// (`2.0`), as JSON Schema's `integer` allows.
pub fn whole_i64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let n = <serde_json::Number as serde::Deserialize>::deserialize(d)?;
    if let Some(i) = n.as_i64() {
        return Ok(i);
    }
    match n.as_f64() {
        Some(f)
            if f.fract() == 0.0 && (f as i64) as f64 == f && f < 9_223_372_036_854_775_808.0 =>
        {
            Ok(f as i64)
        }
        _ => Err(serde::de::Error::custom(format!(
            "{n} is not a whole number in the 64-bit signed range"
        ))),
    }
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
