//! The state every region ends with, read through the client API.

use std::collections::BTreeMap;

use meridian_client::{Client, ClientError};
use serde_json::Value;

use crate::cluster::Cluster;

/// Every region's final state: region -> keyspace -> key -> listed body.
#[derive(Clone, Debug, Default)]
pub struct Finals {
    /// The dumps.
    pub regions: BTreeMap<String, BTreeMap<String, BTreeMap<String, Value>>>,
}

impl Finals {
    /// Reads every keyspace of every region of `c`.
    pub async fn read(c: &Cluster) -> Result<Finals, ClientError> {
        let mut f = Finals::default();
        for r in &c.regions {
            f.regions.insert(r.clone(), dump_all(&c.client(r)).await?);
        }
        Ok(f)
    }

    /// `key`'s value in `ks` as `region` holds it.
    pub fn value(&self, region: &str, ks: &str, key: &str) -> Option<&Value> {
        self.regions.get(region)?.get(ks)?.get(key)?.get("value")
    }
}

async fn dump_all(c: &Client) -> Result<BTreeMap<String, BTreeMap<String, Value>>, ClientError> {
    let mut out = BTreeMap::new();
    let spaces = c.keyspaces().await?;
    let names: Vec<String> = spaces
        .get("keyspaces")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|k| k.get("name").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for ks in names {
        let items = c.dump(&ks).await?;
        let keyed = items
            .into_iter()
            .filter_map(|i| Some((i.get("key")?.as_str()?.to_string(), i)))
            .collect();
        out.insert(ks, keyed);
    }
    Ok(out)
}
