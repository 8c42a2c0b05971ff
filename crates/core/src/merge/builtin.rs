//! The built-in merges, by name. Each is deterministic over versions in
//! canonical order; where values tie, the later version wins.
//!
//! Past ~400 lines only with its unit tests, which STYLE keeps beside the
//! code; the code itself is under 400.

use std::cmp::Ordering;
use std::sync::Arc;

use meridian_crdt::{Json, RegionId};
use serde_json::{Number, Value as J};

use super::{Function, Input, MergeError, MergeFn};

/// Every built-in's name.
pub const NAMES: [&str; 8] = [
    "max",
    "min",
    "sum",
    "union",
    "longest",
    "first-writer-wins",
    "region-priority",
    "json-deep-merge",
];

/// Whether `name` is a built-in.
pub fn is_builtin(name: &str) -> bool {
    NAMES.contains(&name)
}

/// The built-in `name`, ready to run; `region_order` configures
/// `region-priority` (and is part of its hash). `None`: no such built-in.
pub fn function(name: &str, region_order: &[RegionId]) -> Option<Function> {
    let f: Arc<dyn MergeFn> = match name {
        "max" => Arc::new(Extreme(Ordering::Greater)),
        "min" => Arc::new(Extreme(Ordering::Less)),
        "sum" => Arc::new(Sum),
        "union" => Arc::new(Union),
        "longest" => Arc::new(Longest),
        "first-writer-wins" => Arc::new(FirstWriterWins),
        "region-priority" => Arc::new(RegionPriority {
            order: region_order.to_vec(),
        }),
        "json-deep-merge" => Arc::new(JsonDeepMerge),
        _ => return None,
    };
    let hash = if name == "region-priority" {
        let order: Vec<&str> = region_order.iter().map(|r| r.as_str()).collect();
        format!("builtin:{name}:{}", order.join(","))
    } else {
        format!("builtin:{name}")
    };
    Some(Function {
        name: name.to_string(),
        hash,
        run: Ok(f),
    })
}

fn kind(v: &J) -> &'static str {
    match v {
        J::Null => "null",
        J::Bool(_) => "a boolean",
        J::Number(_) => "a number",
        J::String(_) => "a string",
        J::Array(_) => "an array",
        J::Object(_) => "an object",
    }
}

fn wrong(name: &str, takes: &str, i: &Input<'_>) -> MergeError {
    MergeError::new(format!(
        "{name} takes {takes}; {} holds {}",
        i.version,
        kind(i.value)
    ))
}

fn number<'a>(name: &str, i: &Input<'a>) -> Result<&'a Number, MergeError> {
    match i.value {
        J::Number(n) => Ok(n),
        _ => Err(wrong(name, "numbers", i)),
    }
}

fn cmp_numbers(a: &Number, b: &Number) -> Ordering {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return x.cmp(&y);
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return x.cmp(&y);
    }
    let (x, y) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
    x.total_cmp(&y)
}

/// `max` / `min`: the largest (smallest) number; ties go to the later version.
struct Extreme(Ordering);

impl MergeFn for Extreme {
    fn merge(&self, versions: &[Input<'_>]) -> Result<J, MergeError> {
        picked(self, versions)
    }

    fn pick(&self, versions: &[Input<'_>]) -> Option<Result<usize, MergeError>> {
        let name = if self.0 == Ordering::Greater {
            "max"
        } else {
            "min"
        };
        Some((|| {
            let mut best = 0;
            let mut best_n = number(name, &versions[0])?;
            for (i, v) in versions.iter().enumerate().skip(1) {
                let n = number(name, v)?;
                if cmp_numbers(n, best_n) != self.0.reverse() {
                    best = i;
                    best_n = n;
                }
            }
            Ok(best)
        })())
    }
}

/// The value of the version a picking merge picks.
fn picked(f: &dyn MergeFn, versions: &[Input<'_>]) -> Result<J, MergeError> {
    match f.pick(versions) {
        Some(Ok(i)) => Ok(versions[i].value.clone()),
        Some(Err(e)) => Err(e),
        None => Err(MergeError::new("this merge picks no version")),
    }
}

/// `sum`: integers add exactly (an overflow fails); any fraction makes the
/// sum a float.
struct Sum;

impl MergeFn for Sum {
    fn merge(&self, versions: &[Input<'_>]) -> Result<J, MergeError> {
        let mut exact: Option<i128> = Some(0);
        let mut float = 0.0f64;
        for i in versions {
            let n = number("sum", i)?;
            float += n.as_f64().unwrap_or(0.0);
            let whole = n.as_i64().map(i128::from).or(n.as_u64().map(i128::from));
            exact = match (exact, whole) {
                (Some(acc), Some(w)) => acc.checked_add(w),
                _ => None,
            };
        }
        let all_whole = versions
            .iter()
            .all(|i| matches!(i.value, J::Number(n) if n.is_i64() || n.is_u64()));
        if all_whole {
            let total = exact.ok_or_else(|| MergeError::new("sum overflows"))?;
            if let Ok(v) = i64::try_from(total) {
                return Ok(J::from(v));
            }
            if let Ok(v) = u64::try_from(total) {
                return Ok(J::from(v));
            }
            return Err(MergeError::new(format!(
                "sum {total} is outside the 64-bit integer range"
            )));
        }
        Number::from_f64(float)
            .map(J::Number)
            .ok_or_else(|| MergeError::new("sum is not a finite number"))
    }
}

/// `union`: arrays as sets; members in order of first appearance.
struct Union;

impl MergeFn for Union {
    fn merge(&self, versions: &[Input<'_>]) -> Result<J, MergeError> {
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for i in versions {
            let J::Array(items) = i.value else {
                return Err(wrong("union", "arrays", i));
            };
            for item in items {
                if seen.insert(Json::from_value(item)) {
                    out.push(item.clone());
                }
            }
        }
        Ok(J::Array(out))
    }
}

/// `longest`: the longest string (in characters) or array; ties go to the
/// later version. Strings and arrays do not mix.
struct Longest;

impl MergeFn for Longest {
    fn merge(&self, versions: &[Input<'_>]) -> Result<J, MergeError> {
        picked(self, versions)
    }

    fn pick(&self, versions: &[Input<'_>]) -> Option<Result<usize, MergeError>> {
        let len = |i: &Input<'_>| -> Result<(bool, usize), MergeError> {
            match i.value {
                J::String(s) => Ok((true, s.chars().count())),
                J::Array(a) => Ok((false, a.len())),
                _ => Err(wrong("longest", "strings or arrays", i)),
            }
        };
        Some((|| {
            let (is_str, mut best_len) = len(&versions[0])?;
            let mut best = 0;
            for (i, v) in versions.iter().enumerate().skip(1) {
                let (s, n) = len(v)?;
                if s != is_str {
                    return Err(MergeError::new(format!(
                        "longest takes strings or arrays, not both; {} holds {}",
                        v.version,
                        kind(v.value)
                    )));
                }
                if n >= best_len {
                    best_len = n;
                    best = i;
                }
            }
            Ok(best)
        })())
    }
}

/// `first-writer-wins`: the oldest version.
struct FirstWriterWins;

impl MergeFn for FirstWriterWins {
    fn merge(&self, versions: &[Input<'_>]) -> Result<J, MergeError> {
        picked(self, versions)
    }

    fn pick(&self, _versions: &[Input<'_>]) -> Option<Result<usize, MergeError>> {
        Some(Ok(0))
    }
}

/// `region-priority`: the newest version of the highest-priority region
/// present. Regions in `order` rank first, in that order; the others after
/// them, by name.
struct RegionPriority {
    order: Vec<RegionId>,
}

impl RegionPriority {
    fn rank<'a>(&self, r: &'a RegionId) -> (usize, &'a str) {
        let pos = self.order.iter().position(|o| o == r);
        (
            pos.unwrap_or(self.order.len()),
            if pos.is_some() { "" } else { r.as_str() },
        )
    }
}

impl MergeFn for RegionPriority {
    fn merge(&self, versions: &[Input<'_>]) -> Result<J, MergeError> {
        picked(self, versions)
    }

    fn pick(&self, versions: &[Input<'_>]) -> Option<Result<usize, MergeError>> {
        let mut best = 0;
        for (i, v) in versions.iter().enumerate().skip(1) {
            // `<=`: among a region's own versions the later one wins.
            if self.rank(v.region()) <= self.rank(versions[best].region()) {
                best = i;
            }
        }
        Some(Ok(best))
    }
}

/// `json-deep-merge`: objects merged key by key, recursively; anything else
/// (a leaf, or an object meeting a non-object) is replaced by the later
/// version's value.
struct JsonDeepMerge;

fn deep_merge(into: &mut J, from: &J) {
    match (into, from) {
        (J::Object(a), J::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(k) {
                    Some(slot) => deep_merge(slot, v),
                    None => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

impl MergeFn for JsonDeepMerge {
    fn merge(&self, versions: &[Input<'_>]) -> Result<J, MergeError> {
        let mut out = versions[0].value.clone();
        for i in &versions[1..] {
            deep_merge(&mut out, i.value);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_crdt::{Dot, Hlc, ReplicaId, Seq, Version};

    fn run(name: &str, order: &[&str], vals: &[(&str, &str)]) -> Result<J, MergeError> {
        let order: Vec<RegionId> = order.iter().map(|r| RegionId::new(*r).unwrap()).collect();
        let f = function(name, &order).unwrap();
        let versions: Vec<(Version, J)> = vals
            .iter()
            .enumerate()
            .map(|(i, (region, v))| {
                let dot = Dot::new(
                    ReplicaId::new(RegionId::new(*region).unwrap(), uuid::Uuid::from_u128(1)),
                    Seq(i as u64 + 1),
                );
                (
                    Version::new(Hlc::new(100 + i as u64, 0).unwrap(), dot),
                    serde_json::from_str(v).unwrap(),
                )
            })
            .collect();
        let inputs: Vec<Input<'_>> = versions
            .iter()
            .map(|(version, value)| Input { value, version })
            .collect();
        f.run.unwrap().merge(&inputs)
    }

    fn ok(name: &str, vals: &[(&str, &str)]) -> String {
        run(name, &[], vals).unwrap().to_string()
    }

    #[test]
    fn numbers() {
        let v = [("a", "3"), ("b", "-7"), ("c", "2.5")];
        assert_eq!(ok("max", &v), "3");
        assert_eq!(ok("min", &v), "-7");
        assert_eq!(ok("sum", &v), "-1.5");
        assert_eq!(
            ok("sum", &[("a", "9223372036854775807"), ("b", "1")]),
            "9223372036854775808"
        );
        assert_eq!(
            run("sum", &[], &[("a", "18446744073709551615"), ("b", "1")])
                .unwrap_err()
                .reason,
            "sum 18446744073709551616 is outside the 64-bit integer range"
        );
        assert_eq!(
            run("max", &[], &[("a", "1"), ("b", "[1]")])
                .unwrap_err()
                .reason,
            "max takes numbers; b:2@101.0 holds an array"
        );
    }

    #[test]
    fn arrays_and_strings() {
        assert_eq!(
            ok(
                "union",
                &[("a", "[1,2]"), ("b", "[2,{\"x\":1},1]"), ("c", "[3]")]
            ),
            "[1,2,{\"x\":1},3]"
        );
        assert_eq!(
            ok(
                "longest",
                &[("a", "\"abc\""), ("b", "\"xyz\""), ("c", "\"q\"")]
            ),
            "\"xyz\""
        );
        assert_eq!(ok("longest", &[("a", "[1,2]"), ("b", "[3]")]), "[1,2]");
        assert!(run("longest", &[], &[("a", "[1]"), ("b", "\"ab\"")]).is_err());
        assert_eq!(ok("first-writer-wins", &[("a", "1"), ("b", "2")]), "1");
    }

    #[test]
    fn region_priority_prefers_the_order_then_names() {
        let v = [
            ("us-east", "1"),
            ("eu-west", "2"),
            ("ap-south", "3"),
            ("eu-west", "4"),
        ];
        assert_eq!(
            run("region-priority", &["eu-west"], &v)
                .unwrap()
                .to_string(),
            "4"
        );
        assert_eq!(
            run("region-priority", &["us-east", "eu-west"], &v)
                .unwrap()
                .to_string(),
            "1"
        );
        assert_eq!(run("region-priority", &[], &v).unwrap().to_string(), "3");
    }

    #[test]
    fn deep_merge_takes_later_leaves() {
        let v = [
            (
                "a",
                r#"{"name":"x","addr":{"city":"A","zip":1},"tags":[1]}"#,
            ),
            ("b", r#"{"addr":{"city":"B"},"tags":[2],"new":true}"#),
        ];
        assert_eq!(
            ok("json-deep-merge", &v),
            r#"{"addr":{"city":"B","zip":1},"name":"x","new":true,"tags":[2]}"#
        );
    }
}
