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

#[cfg(test)]
mod tests {
    use super::*;

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
