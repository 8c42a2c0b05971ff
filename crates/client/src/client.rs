//! The client: one method per endpoint.
//!
//! Why past ~400 lines: one small method per endpoint: the client's whole
//! contract, read as a list.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use crate::builder::ClientBuilder;
use crate::call::{Reply, http_error};
use crate::error::ClientError;
use crate::path;
use crate::regions::{RegionHealth, Regions};
use crate::safety::Safety;

/// Per-request options. The default is a plain request with a 10 s timeout.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Causal token the region must have applied before it answers.
    pub token: Option<String>,
    /// How long the region may wait for the token, ms.
    pub wait_ms: Option<u64>,
    /// Write concern: `local`, `one`, `majority`, `all`.
    pub write_concern: Option<String>,
    /// How long a write may wait for its write concern, ms.
    pub concern_timeout_ms: Option<u64>,
    /// `mv` context from a read.
    pub context: Option<String>,
    /// How long each region tried may take to answer, ms (default: the
    /// client's, 10,000 unless built otherwise).
    pub timeout_ms: Option<u64>,
    /// `meridian-read: quorum` and friends.
    pub read: Option<String>,
}

/// A write the region made durable.
#[derive(Clone, Debug)]
pub struct Written {
    /// The version it created.
    pub version: String,
    /// The region's causal token after it.
    pub token: String,
    /// The whole response body (counter ops carry the new `value`).
    pub body: Value,
    /// The base URL of the region that answered (a region that forwarded
    /// the write to the key's owner answers for it).
    pub served_by: String,
}

/// A key as read.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The whole response body: `value` and `version`, or `siblings` and
    /// `context` for `mv` keys.
    pub body: Value,
    /// The base URL of the region that answered.
    pub served_by: String,
}

impl Entry {
    /// The `value` field (absent for `mv`).
    pub fn value(&self) -> Option<&Value> {
        self.body.get("value")
    }

    /// The `version` field, when the policy has one.
    pub fn version(&self) -> Option<&str> {
        self.body.get("version").and_then(Value::as_str)
    }
}

/// A client of a Meridian cluster's client API: one region, or several in
/// order of preference, with failover between them (see [`crate::call`]
/// for when a call moves on and [`crate::safety`] for which writes are
/// sent again). Cheap to clone: clones share connections and what the
/// client has learned about each region's health.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) regions: Regions,
    pub(crate) http: HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// Default per-region timeout, ms.
    pub(crate) timeout_ms: u64,
    /// Calls answered by a region other than the most preferred one.
    pub(crate) failovers: AtomicU64,
    /// The task of [`ClientBuilder::rank_every`], ended with the client.
    pub(crate) ranker: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Watchers of set-aside regions ([`Client::watch`]; aborted with the
    /// client).
    pub(crate) probes: Mutex<tokio::task::JoinSet<()>>,
    /// `Bearer TOKEN`, sent with every call when set.
    pub(crate) bearer: Option<String>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self
            .ranker
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

impl Client {
    /// A client for the one region at `base_url` (`http://host:port`).
    pub fn new(base_url: &str) -> Result<Client, ClientError> {
        Client::builder().region(base_url).build()
    }

    /// A builder: several regions, timeouts, backoff, ranking.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The base URL of the most preferred region.
    pub fn base_url(&self) -> &str {
        &self.inner.regions.first().base
    }

    /// Each configured region with its health, in order of preference.
    pub fn regions(&self) -> Vec<RegionHealth> {
        self.inner.regions.health()
    }

    /// How many calls a region other than the most preferred one answered.
    pub fn failovers(&self) -> u64 {
        self.inner.failovers.load(Ordering::Relaxed)
    }

    fn check(r: Reply) -> Result<Reply, ClientError> {
        if r.status.is_success() {
            Ok(r)
        } else {
            Err(http_error(r))
        }
    }

    fn written(r: Reply) -> Result<Written, ClientError> {
        let r = Self::check(r)?;
        let get = |k: &str| {
            r.body
                .get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| ClientError::Decode(format!("write answer without {k}")))
        };
        Ok(Written {
            version: get("version")?,
            token: get("token")?,
            served_by: r.served_by.clone(),
            body: r.body,
        })
    }

    /// A read that any region may answer.
    async fn read(&self, path: &str, opts: &Options) -> Result<Value, ClientError> {
        let r = self
            .call(Method::GET, path, None, opts, Safety::Read)
            .await?;
        Ok(Self::check(r)?.body)
    }

    /// An admin change (definitions, maps, merges). Not sent again after
    /// an unknown outcome: regions take these without a deadline, so a
    /// late first copy could land after a newer change.
    async fn change(&self, method: Method, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.change_with(method, path, body, &Options::default())
            .await
    }

    async fn change_with(
        &self,
        method: Method,
        path: &str,
        body: &Value,
        opts: &Options,
    ) -> Result<Value, ClientError> {
        let r = self
            .call(method, path, Some(body), opts, Safety::Once)
            .await?;
        Ok(Self::check(r)?.body)
    }

    /// Options for admin calls that read a whole backup (verify, rewind):
    /// ten minutes per region.
    fn long() -> Options {
        Options {
            timeout_ms: Some(600_000),
            ..Options::default()
        }
    }

    /// `GET /v1/admin/backups`: the region's complete backups and running jobs.
    pub async fn backups(&self) -> Result<Value, ClientError> {
        self.read("/v1/admin/backups", &Options::default()).await
    }

    /// `GET /v1/admin/backups/{id}`: a manifest, or a running backup's progress.
    pub async fn backup(&self, id: &str) -> Result<Value, ClientError> {
        let path = format!("/v1/admin/backups/{}", path::segment(id));
        self.read(&path, &Options::default()).await
    }

    /// `POST /v1/admin/backups`: starts a backup; `{"id", "state"}`.
    pub async fn start_backup(&self) -> Result<Value, ClientError> {
        self.change(Method::POST, "/v1/admin/backups", &Value::Null)
            .await
    }

    /// `POST /v1/admin/backups/{id}/verify`.
    pub async fn verify_backup(&self, id: &str) -> Result<Value, ClientError> {
        let path = format!("/v1/admin/backups/{}/verify", path::segment(id));
        self.change_with(Method::POST, &path, &Value::Null, &Self::long())
            .await
    }

    /// `DELETE /v1/admin/backups/{id}`.
    pub async fn delete_backup(&self, id: &str) -> Result<Value, ClientError> {
        let path = format!("/v1/admin/backups/{}", path::segment(id));
        self.change_with(Method::DELETE, &path, &Value::Null, &Self::long())
            .await
    }

    /// `POST /v1/admin/backups/prune` (`{"keep_last": N, "keep_hours": H}`,
    /// or `null` for the configured rules).
    pub async fn prune_backups(&self, body: &Value) -> Result<Value, ClientError> {
        self.change_with(Method::POST, "/v1/admin/backups/prune", body, &Self::long())
            .await
    }

    /// `POST /v1/admin/rewind` (`{"keyspace", "prefix", "to_time", "dry_run"}`).
    pub async fn rewind(&self, body: &Value) -> Result<Value, ClientError> {
        self.change_with(Method::POST, "/v1/admin/rewind", body, &Self::long())
            .await
    }

    /// `POST /v1/admin/promote`, sent to a standby: it leads its region
    /// from now on (`{"promoted", "epoch", "replica"}`).
    pub async fn promote(&self) -> Result<Value, ClientError> {
        self.change(Method::POST, "/v1/admin/promote", &Value::Null)
            .await
    }

    /// `GET /v1/admin/tokens`: every access token the region knows (never
    /// their secrets).
    pub async fn tokens(&self) -> Result<Value, ClientError> {
        self.read("/v1/admin/tokens", &Options::default()).await
    }

    /// `GET /v1/admin/tokens/{id}`: the token's record, a revoked one's
    /// too (the region answers it with 410 and `revoked_ms`).
    pub async fn access_token_info(&self, id: &str) -> Result<Value, ClientError> {
        let path = format!("/v1/admin/tokens/{}", path::segment(id));
        let r = self
            .call(Method::GET, &path, None, &Options::default(), Safety::Read)
            .await?;
        if r.status == StatusCode::GONE && r.body["revoked_ms"].is_u64() {
            return Ok(r.body);
        }
        Ok(Self::check(r)?.body)
    }

    /// `POST /v1/admin/tokens` (`{"name", "grants": [{"keyspace",
    /// "prefix", "rights"}], "expires_in_s"}`): the answer's `token` is the
    /// secret, shown this once.
    pub async fn create_token(&self, body: &Value) -> Result<Value, ClientError> {
        self.change(Method::POST, "/v1/admin/tokens", body).await
    }

    /// `DELETE /v1/admin/tokens/{id}`: revoked for good, in every region
    /// once replicated.
    pub async fn revoke_token(&self, id: &str) -> Result<Value, ClientError> {
        let path = format!("/v1/admin/tokens/{}", path::segment(id));
        self.change(Method::DELETE, &path, &Value::Null).await
    }

    fn key_path(ks: &str, key: &str) -> String {
        format!("/v1/kv/{}/{}", path::segment(ks), path::segment(key))
    }

    /// `PUT` a JSON value.
    pub async fn put(&self, ks: &str, key: &str, value: &Value) -> Result<Written, ClientError> {
        self.put_with(ks, key, value, &Options::default()).await
    }

    /// `PUT` a JSON value, with options. Sent to the next region after an
    /// unknown outcome when the keyspace keeps one value per write
    /// ([`crate::safety`]).
    pub async fn put_with(
        &self,
        ks: &str,
        key: &str,
        value: &Value,
        opts: &Options,
    ) -> Result<Written, ClientError> {
        let safety = Safety::of_op(ks, &json!({"op": "put"}));
        let r = self
            .call(
                Method::PUT,
                &Self::key_path(ks, key),
                Some(value),
                opts,
                safety,
            )
            .await?;
        Self::written(r)
    }

    /// `GET` a key: `None` when absent or deleted.
    pub async fn get(&self, ks: &str, key: &str) -> Result<Option<Entry>, ClientError> {
        Ok(self.get_with(ks, key, &Options::default()).await?.0)
    }

    /// `GET` a key with options; also returns the region's token.
    pub async fn get_with(
        &self,
        ks: &str,
        key: &str,
        opts: &Options,
    ) -> Result<(Option<Entry>, Option<String>), ClientError> {
        let r = self
            .call(
                Method::GET,
                &Self::key_path(ks, key),
                None,
                opts,
                Safety::Read,
            )
            .await?;
        if r.status == StatusCode::NOT_FOUND && r.body.get("error") == Some(&json!("not_found")) {
            return Ok((None, r.token));
        }
        let r = Self::check(r)?;
        Ok((
            Some(Entry {
                body: r.body,
                served_by: r.served_by,
            }),
            r.token,
        ))
    }

    /// `DELETE` a key.
    pub async fn delete(&self, ks: &str, key: &str) -> Result<Written, ClientError> {
        self.delete_with(ks, key, &Options::default()).await
    }

    /// `DELETE` a key, with options (sent again elsewhere after an unknown
    /// outcome, but in `mv` and `custom` keyspaces: a second delete deletes
    /// nothing more).
    pub async fn delete_with(
        &self,
        ks: &str,
        key: &str,
        opts: &Options,
    ) -> Result<Written, ClientError> {
        let r = self
            .call(
                Method::DELETE,
                &Self::key_path(ks, key),
                None,
                opts,
                Safety::of_op(ks, &json!({"op": "delete"})),
            )
            .await?;
        Self::written(r)
    }

    /// `POST` an op (`{"op":"incr","by":1}`, ...). An `incr`, `add` or
    /// `remove` whose outcome is unknown fails with
    /// [`ClientError::Indeterminate`] rather than being sent twice.
    pub async fn op_with(
        &self,
        ks: &str,
        key: &str,
        op: &Value,
        opts: &Options,
    ) -> Result<Written, ClientError> {
        let r = self
            .call(
                Method::POST,
                &Self::key_path(ks, key),
                Some(op),
                opts,
                Safety::of_op(ks, op),
            )
            .await?;
        Self::written(r)
    }

    /// Adds `by` to a counter; returns the new value as this region sees it.
    pub async fn incr(&self, ks: &str, key: &str, by: i64) -> Result<i64, ClientError> {
        let w = self
            .op_with(
                ks,
                key,
                &json!({"op": "incr", "by": by}),
                &Options::default(),
            )
            .await?;
        w.body
            .get("value")
            .and_then(Value::as_i64)
            .ok_or_else(|| ClientError::Decode("incr answer without value".into()))
    }

    /// Adds members to a set.
    pub async fn add(&self, ks: &str, key: &str, values: &[Value]) -> Result<Written, ClientError> {
        self.op_with(
            ks,
            key,
            &json!({"op": "add", "values": values}),
            &Options::default(),
        )
        .await
    }

    /// Removes members from a set.
    pub async fn remove(
        &self,
        ks: &str,
        key: &str,
        values: &[Value],
    ) -> Result<Written, ClientError> {
        self.op_with(
            ks,
            key,
            &json!({"op": "remove", "values": values}),
            &Options::default(),
        )
        .await
    }

    /// Patches a document.
    pub async fn patch(&self, ks: &str, key: &str, doc: &Value) -> Result<Written, ClientError> {
        self.op_with(
            ks,
            key,
            &json!({"op": "patch", "doc": doc}),
            &Options::default(),
        )
        .await
    }

    /// `POST /v1/batch`: `ops` is a list of `{"keyspace", "key", "op", ...}`.
    /// As safe to send twice as its least safe change.
    pub async fn batch(&self, ops: &[Value], opts: &Options) -> Result<Written, ClientError> {
        let r = self
            .call(
                Method::POST,
                "/v1/batch",
                Some(&json!({"ops": ops})),
                opts,
                Safety::of_batch(ops),
            )
            .await?;
        Self::written(r)
    }

    /// Lists live keys: `(page body, next)`.
    pub async fn list(
        &self,
        ks: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Value, ClientError> {
        let mut q = format!(
            "/v1/kv/{}?limit={limit}&prefix={}",
            path::segment(ks),
            path::query(prefix)
        );
        if let Some(a) = after {
            q.push_str(&format!("&after={}", path::query(a)));
        }
        self.read(&q, &Options::default()).await
    }

    /// Every live key of a keyspace with its body, following pages.
    pub async fn dump(&self, ks: &str) -> Result<Vec<Value>, ClientError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.list(ks, "", after.as_deref(), 1000).await?;
            if let Some(items) = page.get("items").and_then(Value::as_array) {
                out.extend(items.iter().cloned());
            }
            match page.get("next").and_then(Value::as_str) {
                Some(n) => after = Some(n.to_string()),
                None => return Ok(out),
            }
        }
    }

    /// Creates or updates a keyspace (`{"policy": "counter", ...}`).
    pub async fn define_keyspace(&self, name: &str, def: &Value) -> Result<Value, ClientError> {
        let path = format!("/v1/keyspaces/{}", path::segment(name));
        self.change(Method::PUT, &path, def).await
    }

    /// A keyspace's ownership map (`GET /v1/keyspaces/{name}/ownership`).
    pub async fn ownership(&self, keyspace: &str) -> Result<Value, ClientError> {
        let path = format!("/v1/keyspaces/{}/ownership", path::segment(keyspace));
        self.read(&path, &Options::default()).await
    }

    /// Sets a keyspace's ownership map (`{"rules": [...], "default": ...,
    /// "mode": ..., "fallback": ..., "epoch": N}`). The answer comes once
    /// every region judges writes by the new map (`"in_effect": true`), or
    /// after the region's default wait with `"in_effect": false` and
    /// `"waiting_for"` naming the regions that have not applied it yet.
    pub async fn set_ownership(&self, keyspace: &str, map: &Value) -> Result<Value, ClientError> {
        self.set_ownership_with(keyspace, map, &Options::default())
            .await
    }

    /// [`Client::set_ownership`], waiting at most
    /// [`Options::concern_timeout_ms`] for the map to be in effect.
    pub async fn set_ownership_with(
        &self,
        keyspace: &str,
        map: &Value,
        opts: &Options,
    ) -> Result<Value, ClientError> {
        let path = format!("/v1/keyspaces/{}/ownership", path::segment(keyspace));
        self.change_with(Method::PUT, &path, map, opts).await
    }

    /// Moves one rule of a keyspace's map to another region (`{"rule":
    /// INDEX | "default" | {"prefix": ...}, "to": REGION}`), fenced.
    pub async fn transfer_ownership(
        &self,
        keyspace: &str,
        body: &Value,
    ) -> Result<Value, ClientError> {
        self.transfer_ownership_with(keyspace, body, &Options::default())
            .await
    }

    /// [`Client::transfer_ownership`], waiting at most
    /// [`Options::concern_timeout_ms`] for the map to be in effect.
    pub async fn transfer_ownership_with(
        &self,
        keyspace: &str,
        body: &Value,
        opts: &Options,
    ) -> Result<Value, ClientError> {
        let path = format!(
            "/v1/keyspaces/{}/ownership/transfer",
            path::segment(keyspace)
        );
        self.change_with(Method::POST, &path, body, opts).await
    }

    /// Registers or replaces a merge script (`{"script": "...", ...}`).
    pub async fn define_merge(&self, name: &str, body: &Value) -> Result<Value, ClientError> {
        let path = format!("/v1/merges/{}", path::segment(name));
        self.change(Method::PUT, &path, body).await
    }

    /// `GET /v1/merges/{name}`: a script with its source and hash.
    pub async fn merge(&self, name: &str) -> Result<Value, ClientError> {
        let path = format!("/v1/merges/{}", path::segment(name));
        self.read(&path, &Options::default()).await
    }

    /// `GET /v1/merges`: built-ins and registered scripts.
    pub async fn merges(&self) -> Result<Value, ClientError> {
        self.read("/v1/merges", &Options::default()).await
    }

    /// `GET /v1/keyspaces/{name}`.
    pub async fn keyspace(&self, name: &str) -> Result<Value, ClientError> {
        let path = format!("/v1/keyspaces/{}", path::segment(name));
        self.read(&path, &Options::default()).await
    }

    /// `GET /v1/keyspaces`.
    pub async fn keyspaces(&self) -> Result<Value, ClientError> {
        self.read("/v1/keyspaces", &Options::default()).await
    }

    /// `GET /v1/conflicts` with a raw query string (`keyspace=x&limit=10`).
    pub async fn conflicts(&self, query: &str) -> Result<Value, ClientError> {
        self.read(&format!("/v1/conflicts?{query}"), &Options::default())
            .await
    }

    /// `GET /v1/status` of the most preferred region that answers (its
    /// `region` field says which).
    pub async fn status(&self) -> Result<Value, ClientError> {
        let opts = Options {
            timeout_ms: Some(3_000),
            ..Options::default()
        };
        self.read("/v1/status", &opts).await
    }

    /// Whether the most preferred region's `/healthz` answers 200 (no
    /// failover: this asks about that one region).
    pub async fn healthy(&self) -> bool {
        self.healthz(self.base_url()).await
    }
}
