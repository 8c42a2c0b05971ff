//! A registered merge script, as stored and replicated: a last-writer-wins
//! JSON value in the system keyspace under `merge/NAME`, like keyspace
//! definitions, so a script registered in one region exists in all of them
//! before any keyspace that names it.

use std::sync::Arc;

use meridian_crdt::{Dot, Hlc, RegionId, ReplicaId, Seq, Version};
use serde::{Deserialize, Serialize};

use super::script::ScriptMerge;
use super::{Function, Input, MergeError, MergeFn, builtin, content_hash};

/// Key prefix of merge definitions in the system keyspace.
pub const KEY_PREFIX: &str = "merge/";

/// Longest description, in bytes.
pub const MAX_DESCRIPTION: usize = 4096;

/// Most samples a registration may bring.
pub const MAX_SAMPLES: usize = 16;

/// Most scripts a cluster holds (each is compiled in every region).
pub const MAX_SCRIPTS: usize = 256;

/// A merge script under a name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeDef {
    /// Its name (what keyspaces give as `merge`).
    pub name: String,
    /// The Rhai source.
    pub script: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Hex SHA-256 of `script`.
    pub hash: String,
}

/// Why a script was not registered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MergeDefError {
    /// A name that is not lowercase letters, digits, `-` and `_` (1..=64).
    #[error("merge name {0:?} must be 1 to 64 lowercase letters, digits, '-' or '_'")]
    Name(String),
    /// The name of a built-in.
    #[error("{0:?} is a built-in merge; register the script under another name")]
    Builtin(String),
    /// A description over the limit.
    #[error("description of {0} bytes is over the {MAX_DESCRIPTION}-byte limit")]
    Description(usize),
    /// The script does not compile or has no `merge` function.
    #[error("{0}")]
    Script(MergeError),
    /// Too many samples, or a sample with fewer than two versions.
    #[error("samples: {0}")]
    Samples(String),
    /// The script failed on a sample.
    #[error("sample {index}: {error}")]
    SampleFailed {
        /// Which sample (from 0).
        index: usize,
        /// What went wrong.
        error: MergeError,
    },
    /// Two runs on the same sample gave different values.
    #[error(
        "sample {index}: two runs gave different results ({first} and {second}); a merge must be deterministic"
    )]
    Nondeterministic {
        /// Which sample.
        index: usize,
        /// The first result.
        first: String,
        /// The second.
        second: String,
    },
}

/// Whether `name` can name a merge.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// The inputs every registration is run on when it brings no samples of its
/// own: a merge sees whatever JSON clients wrote, so it should give a value
/// for any of it.
pub fn builtin_samples() -> Vec<Vec<serde_json::Value>> {
    use serde_json::json;
    vec![
        vec![json!({"a": 1}), json!({"a": 2, "b": -1})],
        vec![json!({}), json!({"x": {"y": [1, 2]}}), json!({"x": null})],
        vec![json!(1), json!(2.5)],
        vec![json!("a"), json!("bb")],
        vec![json!([1]), json!([2, 3])],
        vec![json!(null), json!(true), json!({"k": "v"})],
    ]
}

impl MergeDef {
    /// Checks and compiles a registration. `samples`: version values to run
    /// the script on (each at least two, oldest first); `None` runs
    /// [`builtin_samples`]. Each is run twice and must give one value both
    /// times.
    pub fn check(
        name: &str,
        script: &str,
        description: &str,
        samples: Option<&[Vec<serde_json::Value>]>,
    ) -> Result<(MergeDef, ScriptMerge), MergeDefError> {
        if !valid_name(name) {
            return Err(MergeDefError::Name(name.to_string()));
        }
        if builtin::is_builtin(name) {
            return Err(MergeDefError::Builtin(name.to_string()));
        }
        if description.len() > MAX_DESCRIPTION {
            return Err(MergeDefError::Description(description.len()));
        }
        let compiled = ScriptMerge::compile(script).map_err(MergeDefError::Script)?;
        let own;
        let samples = match samples {
            Some(s) => {
                if s.is_empty() || s.len() > MAX_SAMPLES {
                    return Err(MergeDefError::Samples(format!(
                        "give 1 to {MAX_SAMPLES} samples, not {}",
                        s.len()
                    )));
                }
                if let Some(i) = s.iter().position(|v| v.len() < 2 || v.len() > 16) {
                    return Err(MergeDefError::Samples(format!(
                        "sample {i} has {} versions; a merge sees 2 to 16",
                        s[i].len()
                    )));
                }
                s
            }
            None => {
                own = builtin_samples();
                &own[..]
            }
        };
        for (index, values) in samples.iter().enumerate() {
            let versions = sample_versions(values.len());
            let inputs: Vec<Input<'_>> = values
                .iter()
                .zip(&versions)
                .map(|(value, version)| Input { value, version })
                .collect();
            let first = compiled
                .merge(&inputs)
                .map_err(|error| MergeDefError::SampleFailed { index, error })?;
            let second = compiled
                .merge(&inputs)
                .map_err(|error| MergeDefError::SampleFailed { index, error })?;
            if first != second {
                return Err(MergeDefError::Nondeterministic {
                    index,
                    first: first.to_string(),
                    second: second.to_string(),
                });
            }
        }
        let def = MergeDef {
            name: name.to_string(),
            script: script.to_string(),
            description: description.to_string(),
            hash: content_hash(script),
        };
        Ok((def, compiled))
    }

    /// The key this definition is stored under in the system keyspace.
    pub fn key(&self) -> String {
        format!("{KEY_PREFIX}{}", self.name)
    }

    /// Compiles a stored definition (checked where it was registered).
    /// A script this build cannot compile still yields a [`Function`]: one
    /// whose resolutions fall back to last-writer-wins, saying why.
    pub fn function(&self) -> Function {
        Function {
            name: self.name.clone(),
            hash: self.hash.clone(),
            run: ScriptMerge::compile(&self.script).map(|s| Arc::new(s) as Arc<dyn MergeFn>),
        }
    }
}

fn sample_versions(n: usize) -> Vec<Version> {
    const REGIONS: [&str; 3] = ["ap-south", "eu-west", "us-east"];
    (0..n)
        .map(|i| {
            let region = RegionId::new(REGIONS[i % 3]).unwrap_or_else(|_| unreachable!());
            Version::new(
                Hlc::new(1_700_000_000_000 + i as u64, 0).unwrap_or_default(),
                Dot::new(
                    ReplicaId::new(region, uuid::Uuid::from_u128(i as u128 + 1)),
                    Seq(1),
                ),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_are_checked() {
        let ok = "fn merge(vs) { vs[vs.len() - 1].value }";
        let (def, _) = MergeDef::check("latest", ok, "", None).unwrap();
        assert_eq!(def.hash.len(), 64);
        assert_eq!(def.key(), "merge/latest");
        assert_eq!(
            MergeDef::check("sum", ok, "", None)
                .unwrap_err()
                .to_string(),
            "\"sum\" is a built-in merge; register the script under another name"
        );
        assert!(matches!(
            MergeDef::check("Bad Name", ok, "", None),
            Err(MergeDefError::Name(_))
        ));
        // A cart script fails on the built-in samples (numbers have no
        // keys), and passes on samples shaped like carts.
        let cart = "fn merge(vs) { let c = #{}; for v in vs { for k in v.value.keys() { c[k] = (c[k] ?? 0) + v.value[k]; } } c }";
        let e = MergeDef::check("cart", cart, "", None).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("sample 1: line 1, column 88: Function not found: + (i64, map)"),
            "{e}"
        );
        let samples = vec![vec![
            serde_json::json!({"a": 1}),
            serde_json::json!({"a": -1, "b": 2}),
        ]];
        assert!(MergeDef::check("cart", cart, "", Some(&samples)).is_ok());
        let e = MergeDef::check("cart", cart, "", Some(&[vec![serde_json::json!(1)]])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "samples: sample 0 has 1 versions; a merge sees 2 to 16"
        );
    }
}
