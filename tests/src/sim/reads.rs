//! What a simulated region holds, read back for the checks.

use std::collections::{BTreeMap, BTreeSet};

use meridian_core::Key;
use meridian_crdt::{Crdt, Object, Value};

use super::region::SimRegion;

impl SimRegion {
    /// Every live lww value of `default`.
    pub fn lww_values(&self) -> Result<BTreeMap<String, i64>, String> {
        self.lww_values_in("default")
    }

    /// Every live value of LWW keyspace `ks`, as integers.
    pub fn lww_values_in(&self, ks: &str) -> Result<BTreeMap<String, i64>, String> {
        let listing = self
            .engine_ref()
            .reader()
            .list(ks, "", None, 1000)
            .map_err(|e| e.to_string())?;
        let mut out = BTreeMap::new();
        for (k, obj) in listing.items {
            if let Object::Lww(r) = obj
                && let Some(Value::Json(j)) = r.value()
            {
                out.insert(k.as_str().to_string(), j.as_str().parse().unwrap_or(-1));
            }
        }
        Ok(out)
    }

    /// A counter's value (0 when absent).
    pub fn counter(&self, key: &str) -> Result<i128, String> {
        let read = self
            .engine_ref()
            .reader()
            .get("n", &Key::new(key).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        Ok(match read.object {
            Some(Object::Counter(c)) => c.value(),
            _ => 0,
        })
    }

    /// A set's members.
    pub fn set(&self, key: &str) -> Result<BTreeSet<String>, String> {
        let read = self
            .engine_ref()
            .reader()
            .get("s", &Key::new(key).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        Ok(match read.object {
            Some(Object::Set(s)) if s.is_live() => {
                s.iter().map(|j| j.as_str().to_string()).collect()
            }
            _ => BTreeSet::new(),
        })
    }

    /// A custom key's merged value and how many versions it holds (0, 0
    /// when absent).
    pub fn merged(&self, key: &str) -> Result<(i64, usize), String> {
        let reader = self.engine_ref().reader();
        let read = reader
            .get("m", &Key::new(key).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        let Some(Object::Mv(reg)) = read.live() else {
            return Ok((0, 0));
        };
        let f = reader
            .published()
            .registry
            .merge_for(&read.def)
            .ok_or("m is not a custom keyspace")?;
        let res = meridian_core::merge::resolve(&f, &reg.siblings()).ok_or("no versions")?;
        if let Some(why) = res.failed {
            return Err(format!("{}: merge of {key} failed: {why}", self.name));
        }
        Ok((res.value.as_str().parse().unwrap_or(-1), reg.len()))
    }
}
