//! User values: canonical JSON text, or raw bytes.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// A JSON value in canonical text form: no insignificant whitespace, object
/// keys sorted by their UTF-8 bytes, strings escaped as serde_json escapes
/// them, numbers as parsed.
///
/// # Invariants
/// Two `Json` values that are equal as JSON documents (same keys, same
/// values, any key order) have identical text, so they compare, hash and
/// encode identically in every region. Ordering is by that text.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Json(String);

impl Json {
    /// Parses JSON text and canonicalises it.
    pub fn parse(text: &str) -> Result<Json, serde_json::Error> {
        let v: serde_json::Value = serde_json::from_str(text)?;
        Ok(Json::from_value(&v))
    }

    /// The canonical form of a parsed value.
    pub fn from_value(v: &serde_json::Value) -> Json {
        let mut out = String::new();
        write_canonical(v, &mut out);
        Json(out)
    }

    /// The canonical text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The value as a `serde_json::Value`.
    pub fn to_value(&self) -> serde_json::Value {
        // The text was produced by `write_canonical` (or checked on decode),
        // so it always parses; `Null` is unreachable but keeps this total.
        serde_json::from_str(&self.0).unwrap_or(serde_json::Value::Null)
    }

    /// The number this value holds, if it is one.
    pub fn as_number(&self) -> Option<serde_json::Number> {
        match self.to_value() {
            serde_json::Value::Number(n) => Some(n),
            _ => None,
        }
    }

    /// Orders two JSON numbers by value; `None` if either is not a number.
    /// Integers compare exactly; anything with a fraction compares as `f64`.
    pub fn cmp_numbers(&self, other: &Json) -> Option<Ordering> {
        let (a, b) = (self.as_number()?, other.as_number()?);
        if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
            return Some(x.cmp(&y));
        }
        if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
            return Some(x.cmp(&y));
        }
        if a.as_u64().is_some() && b.as_i64().is_some() {
            return Some(Ordering::Greater); // u64 beyond i64 vs a negative i64
        }
        if a.as_i64().is_some() && b.as_u64().is_some() {
            return Some(Ordering::Less);
        }
        a.as_f64()?.partial_cmp(&b.as_f64()?)
    }
}

impl fmt::Debug for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Json({})", self.0)
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if crate::codec::trusted() {
            // Canonicalised when accepted; see `codec::decode_trusted`.
            return Ok(Json(s));
        }
        let parsed = Json::parse(&s).map_err(serde::de::Error::custom)?;
        if parsed.0 != s {
            return Err(serde::de::Error::custom(
                "JSON text is not in canonical form",
            ));
        }
        Ok(parsed)
    }
}

fn write_canonical(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value as V;
    match v {
        V::Null | V::Bool(_) | V::Number(_) | V::String(_) => {
            // Scalars: serde_json's own rendering is already canonical.
            out.push_str(&v.to_string());
        }
        V::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        V::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&V::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
    }
}

/// A value stored under a key: JSON, or opaque bytes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Value {
    /// A JSON document.
    #[serde(rename = "j")]
    Json(Json),
    /// Opaque bytes (`application/octet-stream`).
    #[serde(rename = "b")]
    Bytes(#[serde(with = "serde_bytes")] Vec<u8>),
}

impl Value {
    /// Size of the payload in bytes (JSON text or raw bytes).
    pub fn len(&self) -> usize {
        match self {
            Value::Json(j) => j.as_str().len(),
            Value::Bytes(b) => b.len(),
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<Json> for Value {
    fn from(j: Json) -> Self {
        Value::Json(j)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_sorts_keys_and_drops_whitespace() {
        let a = Json::parse(r#"{ "b": [1, 2, {"z":1,"a":2}], "a": "x\u00e9" }"#).unwrap();
        let b = Json::parse(r#"{"a":"xé","b":[1,2,{"a":2,"z":1}]}"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_str(), r#"{"a":"xé","b":[1,2,{"a":2,"z":1}]}"#);
    }

    #[test]
    fn decoding_refuses_non_canonical_text() {
        let bytes = rmp_serde::to_vec(&"{ \"a\": 1 }").unwrap();
        assert!(rmp_serde::from_slice::<Json>(&bytes).is_err());
        let bytes = rmp_serde::to_vec(&"{\"a\":1}").unwrap();
        assert_eq!(
            rmp_serde::from_slice::<Json>(&bytes).unwrap().as_str(),
            "{\"a\":1}"
        );
    }

    #[test]
    fn numbers_compare_by_value() {
        let n = |s: &str| Json::parse(s).unwrap();
        assert_eq!(n("2").cmp_numbers(&n("10")), Some(Ordering::Less));
        assert_eq!(
            n("-1").cmp_numbers(&n("18446744073709551615")),
            Some(Ordering::Less)
        );
        assert_eq!(n("2.5").cmp_numbers(&n("2")), Some(Ordering::Greater));
        assert_eq!(n("\"a\"").cmp_numbers(&n("2")), None);
    }
}
