//! Merge functions: how a `custom` keyspace combines the versions of a key.
//!
//! A `custom` key keeps its versions as `mv` siblings, which converge on
//! their own. What a reader sees is a merge function applied to those
//! versions in canonical order (HLC, then replica id), so every region
//! holding the same versions shows the same value whatever the function's
//! algebra. One region per key (its *merger*, [`merger`]) writes the result
//! back as an op that replaces the versions it merged, so they collapse
//! everywhere; the written value is data, so replicated state never depends
//! on the script engine.
//!
//! - [`MergeFn`]: the trait every merge implements (applications embedding
//!   the engine can add native ones).
//! - [`builtin`]: the built-in merges, by name.
//! - [`script`]: user merges written in Rhai, with every limit set.
//! - [`def`]: a registered script as stored and replicated.
//! - [`resolve`]: one key's versions through a function, with the
//!   last-writer-wins fallback when the function fails.

pub mod builtin;
pub mod def;
pub mod script;

use std::fmt;
use std::sync::Arc;

use meridian_crdt::{Json, MergeStamp, RegionId, Value, Version};
use sha2::{Digest, Sha256};

use crate::budget::MAX_VALUE;
use crate::op::{Key, KeyspaceName};

pub use def::{MergeDef, MergeDefError};

/// One version handed to a merge function.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    /// The value written.
    pub value: &'a serde_json::Value,
    /// Which write, and when.
    pub version: &'a Version,
}

impl Input<'_> {
    /// The region that wrote it.
    pub fn region(&self) -> &RegionId {
        &self.version.dot.replica.region
    }
}

/// A merge function.
///
/// # Correctness
/// `merge` must be a pure function of its input: the same versions in the
/// same order give the same value, in every region, every time. It gets
/// at least two versions, in canonical order (oldest HLC first, ties by
/// replica id); it need not be commutative or associative, because the
/// order and grouping are fixed for it.
pub trait MergeFn: Send + Sync {
    /// The merged value of `versions`.
    fn merge(&self, versions: &[Input<'_>]) -> Result<serde_json::Value, MergeError>;

    /// For a merge that picks one of the versions (rather than combining
    /// them): which one. A written-back merge then stands exactly where
    /// that version stood, even when another version holds an equal value.
    /// `None` (the default): the merge combines, or does not say.
    fn pick(&self, _versions: &[Input<'_>]) -> Option<Result<usize, MergeError>> {
        None
    }
}

/// Why a merge function gave no value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct MergeError {
    /// What went wrong.
    pub reason: String,
    /// Script line, when known.
    pub line: Option<usize>,
    /// Script column, when known.
    pub column: Option<usize>,
}

impl MergeError {
    /// An error without a position.
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            line: None,
            column: None,
        }
    }
}

impl fmt::Display for MergeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "line {l}, column {c}: {}", self.reason),
            (Some(l), None) => write!(f, "line {l}: {}", self.reason),
            _ => f.write_str(&self.reason),
        }
    }
}

/// A merge function ready to run, with what names it.
#[derive(Clone)]
pub struct Function {
    /// The name a keyspace gave.
    pub name: String,
    /// Content hash (hex SHA-256 of a script; `builtin:NAME` for a built-in).
    pub hash: String,
    /// The function, or why it cannot run here (a script this build
    /// cannot compile): a resolution then falls back to last-writer-wins.
    pub run: Result<Arc<dyn MergeFn>, MergeError>,
}

impl fmt::Debug for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Function")
            .field("name", &self.name)
            .field("hash", &self.hash)
            .field("runs", &self.run.is_ok())
            .finish()
    }
}

/// What a merge of one key's versions gave.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolution {
    /// The value readers see.
    pub value: Json,
    /// The versions merged, in canonical order.
    pub inputs: Vec<Version>,
    /// The function's name and hash.
    pub function: String,
    /// See [`Function::hash`].
    pub hash: String,
    /// The function failed (or could not run) and the newest version was
    /// kept instead (last-writer-wins): why.
    pub failed: Option<String>,
    /// The input the merged value stands for in later merges: the newest
    /// holding exactly that value, else the newest (see
    /// [`MergeStamp::at`]).
    pub at: Version,
}

impl Resolution {
    /// The stamp a write-back of this resolution carries.
    pub fn stamp(&self) -> MergeStamp {
        MergeStamp {
            function: self.function.clone(),
            hash: self.hash.clone(),
            inputs: self.inputs.clone(),
            failed: self.failed.clone(),
            at: Some(self.at.clone()),
        }
    }
}

/// Runs `function` over `versions` (canonical order, as
/// `MvRegister::siblings` gives them). `None` without versions. A single
/// version is its own merge (the function is not called). When the
/// function fails, a version holds bytes, or the result is over the value
/// limit, the newest version wins and [`Resolution::failed`] says why.
pub fn resolve(function: &Function, versions: &[(Version, &Value)]) -> Option<Resolution> {
    let (newest_version, newest) = versions.last()?;
    let inputs: Vec<Version> = versions.iter().map(|(v, _)| v.clone()).collect();
    let done = |value: Json, failed: Option<String>| {
        let at = versions
            .iter()
            .rev()
            .find(|(_, v)| matches!(v, Value::Json(j) if *j == value))
            .map_or_else(|| newest_version.clone(), |(v, _)| v.clone());
        Resolution {
            value,
            inputs: inputs.clone(),
            function: function.name.clone(),
            hash: function.hash.clone(),
            failed,
            at,
        }
    };
    let lww = |why: String| {
        let value = match newest {
            Value::Json(j) => j.clone(),
            Value::Bytes(_) => Json::from_value(&serde_json::Value::Null),
        };
        Some(done(value, Some(why)))
    };
    let mut parsed = Vec::with_capacity(versions.len());
    for (v, value) in versions {
        match value {
            Value::Json(j) => parsed.push(j.to_value()),
            Value::Bytes(_) => {
                return lww(format!(
                    "version {v} holds bytes; merge functions take JSON values"
                ));
            }
        }
    }
    if versions.len() == 1 {
        let Value::Json(j) = newest else {
            return lww(format!("version {newest_version} holds bytes"));
        };
        return Some(done(j.clone(), None));
    }
    let run = match &function.run {
        Ok(f) => f,
        Err(e) => return lww(format!("merge {} cannot run: {e}", function.name)),
    };
    let args: Vec<Input<'_>> = parsed
        .iter()
        .zip(versions)
        .map(|(value, (version, _))| Input { value, version })
        .collect();
    if let Some(picked) = run.pick(&args) {
        return match picked {
            Ok(i) if i < versions.len() => {
                let (v, value) = &versions[i];
                let Value::Json(j) = value else {
                    return lww(format!("version {v} holds bytes"));
                };
                let mut r = done(j.clone(), None);
                r.at = v.clone();
                Some(r)
            }
            Ok(i) => lww(format!(
                "merge {} picked version {i} of {}",
                function.name,
                versions.len()
            )),
            Err(e) => lww(format!("merge {} failed: {e}", function.name)),
        };
    }
    match run.merge(&args) {
        Ok(out) => {
            let json = Json::from_value(&out);
            if json.as_str().len() > MAX_VALUE {
                lww(format!(
                    "merged value of {} bytes is over the {MAX_VALUE}-byte value limit",
                    json.as_str().len()
                ))
            } else {
                Some(done(json, None))
            }
        }
        Err(e) => lww(format!("merge {} failed: {e}", function.name)),
    }
}

/// The region that writes back the merge of `keyspace/key`: the highest
/// rendezvous hash of (region, keyspace, key) among `regions` (every region
/// of the cluster). `None` when `regions` is empty.
///
/// # Correctness
/// Exactly one region writes a key's merges back, so two write-backs can
/// never be concurrent: for a merge that is not idempotent (a sum), two
/// concurrent write-backs of overlapping versions would both survive as
/// versions and count their inputs twice. The choice depends only on the
/// key and the cluster's region list, never on which versions a region has
/// seen (regions seeing different versions would otherwise each pick
/// themselves). Adding a region moves only the keys it now wins.
pub fn merger<'a>(
    keyspace: &KeyspaceName,
    key: &Key,
    regions: &'a [RegionId],
) -> Option<&'a RegionId> {
    regions.iter().max_by_key(|r| {
        let mut h = Sha256::new();
        h.update(r.as_str().as_bytes());
        h.update([0]);
        h.update(keyspace.as_str().as_bytes());
        h.update([0]);
        h.update(key.as_str().as_bytes());
        let d = h.finalize();
        let mut top = [0u8; 8];
        top.copy_from_slice(&d[..8]);
        (u64::from_be_bytes(top), r.as_str().to_string())
    })
}

/// Hex SHA-256 of `text`: a script's content hash.
pub fn content_hash(text: &str) -> String {
    let d = Sha256::digest(text.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_crdt::{Dot, Hlc, ReplicaId, Seq};

    fn version(region: &str, wall: u64) -> Version {
        Version::new(
            Hlc::new(wall, 0).unwrap(),
            Dot::new(
                ReplicaId::new(RegionId::new(region).unwrap(), uuid::Uuid::from_u128(1)),
                Seq(1),
            ),
        )
    }

    fn json(s: &str) -> Value {
        Value::Json(Json::parse(s).unwrap())
    }

    #[test]
    fn a_failing_function_falls_back_to_the_newest_version() {
        let f = builtin::function("sum", &[]).unwrap();
        let (a, b) = (json("1"), json("\"x\""));
        let versions = [(version("us-east", 1), &a), (version("eu-west", 2), &b)];
        let r = resolve(&f, &versions).unwrap();
        assert_eq!(r.value.as_str(), "\"x\"");
        assert_eq!(
            r.failed.as_deref(),
            Some("merge sum failed: sum takes numbers; eu-west:1@2.0 holds a string")
        );
        let (c, d) = (json("1"), json("2.5"));
        let versions = [(version("us-east", 1), &c), (version("eu-west", 2), &d)];
        let r = resolve(&f, &versions).unwrap();
        assert_eq!((r.value.as_str(), r.failed), ("3.5", None));
    }

    #[test]
    fn a_picking_merge_stands_where_the_version_it_picked_stood() {
        // Equal values: first-writer-wins picked the first, not the newest
        // holding the same value.
        let f = builtin::function("first-writer-wins", &[]).unwrap();
        let (a, b) = (json("\"v\""), json("\"v\""));
        let versions = [(version("us-east", 1), &a), (version("eu-west", 2), &b)];
        let r = resolve(&f, &versions).unwrap();
        assert_eq!(r.at, versions[0].0);
        let f = builtin::function("max", &[]).unwrap();
        let (c, d) = (json("9"), json("9"));
        let versions = [(version("us-east", 1), &c), (version("eu-west", 2), &d)];
        assert_eq!(
            resolve(&f, &versions).unwrap().at,
            versions[1].0,
            "ties go to the later"
        );
        // A combining merge stands at its newest input.
        let f = builtin::function("sum", &[]).unwrap();
        assert_eq!(resolve(&f, &versions).unwrap().at, versions[1].0);
    }

    #[test]
    fn one_version_is_its_own_merge_and_bytes_fall_back() {
        let f = builtin::function("sum", &[]).unwrap();
        let a = json("{\"a\":1}");
        let r = resolve(&f, &[(version("us-east", 1), &a)]).unwrap();
        assert_eq!((r.value.as_str(), r.failed), ("{\"a\":1}", None));
        let b = Value::Bytes(vec![1]);
        let r = resolve(
            &f,
            &[(version("us-east", 1), &a), (version("eu-west", 2), &b)],
        )
        .unwrap();
        assert!(r.failed.unwrap().contains("holds bytes"));
        assert!(resolve(&f, &[]).is_none());
    }

    #[test]
    fn the_merger_depends_on_the_key_only_and_spreads() {
        let regions: Vec<RegionId> = ["ap-south", "eu-west", "us-east"]
            .iter()
            .map(|r| RegionId::new(*r).unwrap())
            .collect();
        let ks = KeyspaceName::new("carts").unwrap();
        let mut counts = std::collections::BTreeMap::new();
        for i in 0..300 {
            let key = Key::new(format!("cart-{i}")).unwrap();
            let m = merger(&ks, &key, &regions).unwrap().clone();
            let mut reversed = regions.clone();
            reversed.reverse();
            assert_eq!(
                merger(&ks, &key, &reversed),
                Some(&m),
                "order of the list is irrelevant"
            );
            *counts.entry(m).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 3);
        assert!(counts.values().all(|n| *n > 60), "{counts:?}");
        // Adding a region moves only keys to it.
        let mut four = regions.clone();
        four.push(RegionId::new("sa-east").unwrap());
        for i in 0..300 {
            let key = Key::new(format!("cart-{i}")).unwrap();
            let before = merger(&ks, &key, &regions).unwrap();
            let after = merger(&ks, &key, &four).unwrap();
            assert!(after == before || after.as_str() == "sa-east");
        }
        assert_eq!(merger(&ks, &Key::new("k").unwrap(), &[]), None);
    }
}
