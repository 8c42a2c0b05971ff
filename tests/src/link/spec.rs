//! What a directed link does to the bytes crossing it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::LinkError;

/// Upper bound on every millisecond field (one hour). It keeps instant
/// arithmetic far from overflow and catches unit slips such as microseconds
/// typed where milliseconds were meant.
pub const MAX_MS: u64 = 3_600_000;

/// The behaviour of one directed link `from -> to`.
///
/// Every field applies to the bytes of both directions of every connection
/// on the link (a connection opened by `from` carries `to`'s answers too), so
/// a round trip through a link pays its one-way delay twice.
///
/// JSON: every field is optional and defaults as documented; unknown fields
/// are rejected. A spec only takes effect after [`LinkSpec::validate`]
/// accepts it; the emulator validates every spec it is given.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinkSpec {
    /// One-way delay added to every chunk, in milliseconds. Default 0.
    pub latency_ms: u64,
    /// Each chunk's delay is `latency_ms` plus a uniform sample from
    /// `-jitter_ms..=jitter_ms` (floored at zero), like netem's jitter. Byte
    /// order is preserved whatever the samples. Default 0.
    pub jitter_ms: u64,
    /// Probability (0..=1) that a chunk is "lost": TCP would retransmit it,
    /// so it and everything behind it arrive `loss_delay_ms` later. Default 0.
    pub loss: f64,
    /// Extra delay of a lost chunk, in milliseconds. Default 200 (a typical
    /// minimum retransmission timeout).
    pub loss_delay_ms: u64,
    /// Probability (0..=1), drawn per chunk, that the connection is reset
    /// instead of forwarding the chunk. Default 0.
    pub close: f64,
    /// Delivery rate cap per direction, in bytes per second, shared by all
    /// connections of the link; 0 means unlimited. Default 0.
    pub bandwidth_bytes_per_sec: u64,
    /// While true, open connections are reset and new ones are accepted and
    /// reset at once, so clients fail fast instead of hanging. Default false.
    pub partitioned: bool,
}

impl Default for LinkSpec {
    fn default() -> Self {
        LinkSpec {
            latency_ms: 0,
            jitter_ms: 0,
            loss: 0.0,
            loss_delay_ms: 200,
            close: 0.0,
            bandwidth_bytes_per_sec: 0,
            partitioned: false,
        }
    }
}

impl LinkSpec {
    /// A clean link with this one-way latency and nothing else.
    pub fn latency(ms: u64) -> Self {
        LinkSpec {
            latency_ms: ms,
            ..LinkSpec::default()
        }
    }

    /// This spec with `jitter_ms` set.
    pub fn with_jitter(self, ms: u64) -> Self {
        LinkSpec {
            jitter_ms: ms,
            ..self
        }
    }

    /// This spec with `loss` set.
    pub fn with_loss(self, probability: f64) -> Self {
        LinkSpec {
            loss: probability,
            ..self
        }
    }

    /// This spec with `close` set.
    pub fn with_close(self, probability: f64) -> Self {
        LinkSpec {
            close: probability,
            ..self
        }
    }

    /// This spec with `bandwidth_bytes_per_sec` set.
    pub fn with_bandwidth(self, bytes_per_sec: u64) -> Self {
        LinkSpec {
            bandwidth_bytes_per_sec: bytes_per_sec,
            ..self
        }
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), LinkError> {
        check_ms("latency_ms", self.latency_ms)?;
        check_ms("jitter_ms", self.jitter_ms)?;
        check_ms("loss_delay_ms", self.loss_delay_ms)?;
        check_probability("loss", self.loss)?;
        check_probability("close", self.close)?;
        Ok(())
    }

    /// This spec with every field the patch sets replaced. Not validated.
    pub fn patched(&self, patch: &LinkSpecPatch) -> LinkSpec {
        LinkSpec {
            latency_ms: patch.latency_ms.unwrap_or(self.latency_ms),
            jitter_ms: patch.jitter_ms.unwrap_or(self.jitter_ms),
            loss: patch.loss.unwrap_or(self.loss),
            loss_delay_ms: patch.loss_delay_ms.unwrap_or(self.loss_delay_ms),
            close: patch.close.unwrap_or(self.close),
            bandwidth_bytes_per_sec: patch
                .bandwidth_bytes_per_sec
                .unwrap_or(self.bandwidth_bytes_per_sec),
            partitioned: patch.partitioned.unwrap_or(self.partitioned),
        }
    }
}

fn check_ms(field: &str, value: u64) -> Result<(), LinkError> {
    if value > MAX_MS {
        return Err(bad(
            field,
            format!("must be at most {MAX_MS} ms, got {value}"),
        ));
    }
    Ok(())
}

fn check_probability(field: &str, value: f64) -> Result<(), LinkError> {
    // `contains` is false for NaN, so NaN is rejected too.
    if !(0.0..=1.0).contains(&value) {
        return Err(bad(
            field,
            format!("must be a probability between 0 and 1, got {value}"),
        ));
    }
    Ok(())
}

fn bad(field: &str, reason: String) -> LinkError {
    LinkError::BadSpec {
        field: field.to_owned(),
        reason,
    }
}

/// A partial [`LinkSpec`]: fields left `None` keep their current value.
/// This is the body of `PUT /links/{from}/{to}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LinkSpecPatch {
    /// New `latency_ms`, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// New `jitter_ms`, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<u64>,
    /// New `loss`, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// New `loss_delay_ms`, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_delay_ms: Option<u64>,
    /// New `close`, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close: Option<f64>,
    /// New `bandwidth_bytes_per_sec`, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bandwidth_bytes_per_sec: Option<u64>,
    /// New `partitioned`, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partitioned: Option<bool>,
}

const FIELDS: &str = "latency_ms, jitter_ms, loss, loss_delay_ms, close, \
                      bandwidth_bytes_per_sec, partitioned";

impl LinkSpecPatch {
    /// Parses a JSON object of [`LinkSpec`] fields.
    ///
    /// Decoded field by field (rather than by derive) so that every error
    /// names the field at fault: an unknown name, a wrong type, a negative
    /// number. Ranges are checked later, by [`LinkSpec::validate`].
    pub fn from_json(body: &[u8]) -> Result<LinkSpecPatch, LinkError> {
        let value: Value = serde_json::from_slice(body).map_err(|err| LinkError::BadRequest {
            reason: format!("body is not valid JSON: {err}"),
        })?;
        let Value::Object(map) = value else {
            return Err(LinkError::BadRequest {
                reason: format!("expected a JSON object of link spec fields ({FIELDS})"),
            });
        };
        LinkSpecPatch::from_map(map)
    }

    fn from_map(map: Map<String, Value>) -> Result<LinkSpecPatch, LinkError> {
        let mut patch = LinkSpecPatch::default();
        for (field, value) in map {
            match field.as_str() {
                "latency_ms" => patch.latency_ms = Some(field_as(&field, value)?),
                "jitter_ms" => patch.jitter_ms = Some(field_as(&field, value)?),
                "loss" => patch.loss = Some(field_as(&field, value)?),
                "loss_delay_ms" => patch.loss_delay_ms = Some(field_as(&field, value)?),
                "close" => patch.close = Some(field_as(&field, value)?),
                "bandwidth_bytes_per_sec" => {
                    patch.bandwidth_bytes_per_sec = Some(field_as(&field, value)?)
                }
                "partitioned" => patch.partitioned = Some(field_as(&field, value)?),
                _ => {
                    return Err(bad(
                        &field,
                        format!("unknown field; expected one of {FIELDS}"),
                    ));
                }
            }
        }
        Ok(patch)
    }
}

fn field_as<T: serde::de::DeserializeOwned>(field: &str, value: Value) -> Result<T, LinkError> {
    let shown = value.to_string();
    serde_json::from_value(value).map_err(|err| bad(field, format!("{err} (got {shown})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(err: LinkError) -> String {
        match err {
            LinkError::BadSpec { field, .. } => field,
            other => panic!("expected BadSpec, got {other}"),
        }
    }

    #[test]
    fn json_defaults_fill_missing_fields() {
        let spec: LinkSpec = serde_json::from_str(r#"{"latency_ms": 40}"#).unwrap();
        assert_eq!(spec, LinkSpec::latency(40));
        assert_eq!(spec.loss_delay_ms, 200);
    }

    #[test]
    fn validate_names_the_bad_field() {
        assert_eq!(
            field_of(LinkSpec::default().with_loss(1.5).validate().unwrap_err()),
            "loss"
        );
        assert_eq!(
            field_of(LinkSpec::default().with_close(-0.1).validate().unwrap_err()),
            "close"
        );
        assert_eq!(
            field_of(
                LinkSpec::default()
                    .with_loss(f64::NAN)
                    .validate()
                    .unwrap_err()
            ),
            "loss"
        );
        assert_eq!(
            field_of(LinkSpec::latency(MAX_MS + 1).validate().unwrap_err()),
            "latency_ms"
        );
        assert!(
            LinkSpec::latency(MAX_MS)
                .with_loss(1.0)
                .with_close(0.0)
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn patch_keeps_unset_fields() {
        let base = LinkSpec::latency(40).with_jitter(5).with_bandwidth(1000);
        let patch = LinkSpecPatch::from_json(br#"{"jitter_ms": 9, "partitioned": true}"#).unwrap();
        let next = base.patched(&patch);
        assert_eq!(next.latency_ms, 40);
        assert_eq!(next.jitter_ms, 9);
        assert_eq!(next.bandwidth_bytes_per_sec, 1000);
        assert!(next.partitioned);
    }

    #[test]
    fn patch_errors_name_the_field() {
        let unknown = LinkSpecPatch::from_json(br#"{"latnecy_ms": 3}"#).unwrap_err();
        assert_eq!(field_of(unknown), "latnecy_ms");
        let negative = LinkSpecPatch::from_json(br#"{"latency_ms": -3}"#).unwrap_err();
        assert_eq!(field_of(negative), "latency_ms");
        let wrong_type = LinkSpecPatch::from_json(br#"{"partitioned": "yes"}"#).unwrap_err();
        assert!(
            wrong_type.to_string().contains("`partitioned`"),
            "{wrong_type}"
        );
        assert!(matches!(
            LinkSpecPatch::from_json(b"[1]").unwrap_err(),
            LinkError::BadRequest { .. }
        ));
        assert!(matches!(
            LinkSpecPatch::from_json(b"{oops").unwrap_err(),
            LinkError::BadRequest { .. }
        ));
    }
}
