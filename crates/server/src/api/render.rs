//! How stored state looks in responses.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use meridian_core::{KeyspaceDef, Registry};
use meridian_crdt::{MvRegister, Object, Policy, Value, Version};
use serde_json::{Value as J, json};

/// A value as JSON: JSON as itself, bytes as `{"$bytes": "<base64>"}`.
pub fn value(v: &Value) -> J {
    match v {
        Value::Json(j) => j.to_value(),
        Value::Bytes(b) => json!({"$bytes": STANDARD.encode(b)}),
    }
}

/// A version as a string: `<origin region>:<seq>@<wall ms>.<logical>`.
pub fn version(v: &Version) -> String {
    v.to_string()
}

/// A counter value as JSON (exact within i64; as a float beyond).
pub fn counter(v: i128) -> J {
    match i64::try_from(v) {
        Ok(n) => J::from(n),
        Err(_) => J::from(v as f64),
    }
}

/// The body fields describing a live object (`value` and `version`, or
/// `siblings` and `context` for `mv`).
pub fn object(obj: &Object) -> serde_json::Map<String, J> {
    let mut m = serde_json::Map::new();
    match obj {
        Object::Lww(r) => {
            if let Some(v) = r.value() {
                m.insert("value".into(), value(v));
            }
            if let Some(v) = r.version() {
                m.insert("version".into(), J::String(version(v)));
            }
        }
        Object::Mv(r) => {
            let siblings: Vec<J> = r
                .siblings()
                .into_iter()
                .map(|(ver, v)| json!({"value": value(v), "version": version(&ver)}))
                .collect();
            m.insert("siblings".into(), J::Array(siblings));
            m.insert(
                "context".into(),
                J::String(meridian_core::token::encode(r.context())),
            );
        }
        Object::Counter(c) => {
            m.insert("value".into(), counter(c.value()));
        }
        Object::Set(s) => {
            m.insert(
                "value".into(),
                J::Array(s.iter().map(|j| j.to_value()).collect()),
            );
        }
        Object::Doc(d) => {
            m.insert("value".into(), J::Object(d.to_json()));
        }
    }
    m
}

/// The body fields of a live object of keyspace `def`. A custom key shows
/// its versions merged (`value`, and `merge` when a function ran), with the
/// `context` a write passes to replace what it read; `versions` adds the
/// inputs. Every other policy looks as [`object`] shows it.
pub fn object_in(
    def: &KeyspaceDef,
    registry: &Registry,
    obj: &Object,
    versions: bool,
) -> serde_json::Map<String, J> {
    match (def.policy, obj) {
        (Policy::Custom, Object::Mv(r)) => match registry.merge_for(def) {
            Some(f) => custom(r, &f, versions),
            None => object(obj),
        },
        (Policy::Doc, Object::Doc(d)) if registry.doc_merges(&def.name) => {
            doc_with_merges(def, registry, d, versions)
        }
        _ => object(obj),
    }
}

/// Whether showing keys of `def` may run merge functions (which can take
/// up to their wall-time limit: keep them off the async workers).
pub fn runs_merges(def: &KeyspaceDef, registry: &Registry) -> bool {
    def.policy == Policy::Custom || registry.doc_merges(&def.name)
}

/// [`object_in`] for a listing: once `budget` has run out, a key whose
/// versions would need merging shows its newest version instead, with
/// `merge.failed` saying so (a listing of many keys must not run
/// functions for minutes).
pub fn listed(
    def: &KeyspaceDef,
    registry: &Registry,
    obj: &Object,
    budget: std::time::Instant,
) -> serde_json::Map<String, J> {
    let needs_merge = match obj {
        Object::Mv(r) => def.policy == Policy::Custom && r.len() > 1,
        Object::Doc(d) => registry.doc_merges(&def.name) && !d.unmerged().is_empty(),
        _ => false,
    };
    if !needs_merge || std::time::Instant::now() < budget {
        return object_in(def, registry, obj, false);
    }
    let why =
        "not merged: the listing's merge-time budget ran out; GET the key for its merged value";
    let mut m = serde_json::Map::new();
    match obj {
        Object::Mv(r) => {
            let siblings = r.siblings();
            if let Some((_, v)) = siblings.last() {
                m.insert("value".into(), value(v));
            }
            m.insert(
                "merge".into(),
                json!({"versions": siblings.len(), "failed": why}),
            );
            m.insert(
                "context".into(),
                J::String(meridian_core::token::encode(r.context())),
            );
        }
        Object::Doc(d) => {
            m.insert("value".into(), J::Object(d.to_json()));
            m.insert("merges".into(), json!({"failed": why}));
        }
        _ => {}
    }
    m
}

/// A document whose merge fields show their versions merged; `merges`
/// (when any field held several) and, with `versions`, every merge
/// field's inputs, by dotted path.
fn doc_with_merges(
    def: &KeyspaceDef,
    registry: &Registry,
    d: &meridian_crdt::Doc,
    versions: bool,
) -> serde_json::Map<String, J> {
    let mut merges = serde_json::Map::new();
    let mut inputs = serde_json::Map::new();
    let doc = d.to_json_with(&mut |path, reg| {
        let Some(meridian_crdt::FieldRule::Merge(name)) = def.schema.rule_at(path) else {
            return None;
        };
        let f = registry.function_named(name, &[]);
        let held: Vec<(Version, Value)> = reg
            .siblings()
            .into_iter()
            .map(|(v, j)| (v, Value::Json(j.clone())))
            .collect();
        let refs: Vec<(Version, &Value)> = held.iter().map(|(v, x)| (v.clone(), x)).collect();
        let res = meridian_core::merge::resolve(&f, &refs)?;
        let dotted = path.join(".");
        if refs.len() > 1 {
            let mut info =
                json!({"function": res.function, "hash": res.hash, "versions": refs.len()});
            if let Some(why) = &res.failed {
                info["failed"] = J::String(why.clone());
            }
            merges.insert(dotted.clone(), info);
        }
        if versions {
            inputs.insert(
                dotted,
                J::Array(held.iter().map(|(v, x)| version_json(v, x)).collect()),
            );
        }
        Some(res.value.to_value())
    });
    let mut m = serde_json::Map::new();
    m.insert("value".into(), J::Object(doc));
    if !merges.is_empty() {
        m.insert("merges".into(), J::Object(merges));
    }
    if versions {
        m.insert("versions".into(), J::Object(inputs));
    }
    m
}

fn version_json(ver: &Version, v: &Value) -> J {
    json!({
        "value": value(v),
        "version": version(ver),
        "region": ver.dot.replica.region.as_str(),
        "hlc": ver.hlc.to_string(),
    })
}

fn custom(
    r: &MvRegister<Value>,
    f: &meridian_core::merge::Function,
    versions: bool,
) -> serde_json::Map<String, J> {
    let mut m = serde_json::Map::new();
    let siblings = r.siblings();
    if let Some(res) = meridian_core::merge::resolve(f, &siblings) {
        m.insert("value".into(), res.value.to_value());
        if siblings.len() > 1 {
            let mut info =
                json!({"function": res.function, "hash": res.hash, "versions": siblings.len()});
            if let Some(why) = &res.failed {
                info["failed"] = J::String(why.clone());
            }
            m.insert("merge".into(), info);
        }
    }
    if versions {
        let all: Vec<J> = siblings
            .iter()
            .map(|(ver, v)| version_json(ver, v))
            .collect();
        m.insert("versions".into(), J::Array(all));
    }
    m.insert(
        "context".into(),
        J::String(meridian_core::token::encode(r.context())),
    );
    m
}
