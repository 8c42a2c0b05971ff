//! The client: one method per endpoint.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::error::ClientError;
use crate::path;

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
    /// Client-side timeout for the whole call, ms (default 10,000).
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
}

/// A key as read.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The whole response body: `value` and `version`, or `siblings` and
    /// `context` for `mv` keys.
    pub body: Value,
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

/// A client of one region's API. Cheap to clone (connections are pooled).
#[derive(Clone)]
pub struct Client {
    base: String,
    http: HyperClient<HttpConnector, Full<Bytes>>,
}

/// What a call got back.
struct Reply {
    status: StatusCode,
    token: Option<String>,
    body: Value,
}

impl Client {
    /// A client for the region at `base_url` (`http://host:port`).
    pub fn new(base_url: &str) -> Result<Client, ClientError> {
        let base = base_url.trim_end_matches('/').to_string();
        if !base.starts_with("http://") {
            return Err(ClientError::Invalid(format!(
                "base URL {base_url:?} must start with http://"
            )));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let http = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Client { base, http })
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
        opts: &Options,
    ) -> Result<Reply, ClientError> {
        let uri = format!("{}{}", self.base, path_and_query);
        let mut b = Request::builder().method(method).uri(&uri);
        let mut set = |name: &str, v: &Option<String>| {
            if let Some(v) = v {
                b = std::mem::take(&mut b).header(name, v.as_str());
            }
        };
        set("meridian-token", &opts.token);
        set("meridian-wait-ms", &opts.wait_ms.map(|v| v.to_string()));
        set("meridian-write-concern", &opts.write_concern);
        set(
            "meridian-timeout-ms",
            &opts.concern_timeout_ms.map(|v| v.to_string()),
        );
        set("meridian-context", &opts.context);
        set("meridian-read", &opts.read);
        let bytes = match body {
            Some(v) => {
                b = b.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(v).map_err(|e| ClientError::Invalid(e.to_string()))?)
            }
            None => Bytes::new(),
        };
        let req = b
            .body(Full::new(bytes))
            .map_err(|e| ClientError::Invalid(e.to_string()))?;
        let timeout = opts.timeout_ms.unwrap_or(10_000);
        let fut = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| ClientError::Transport(format!("{e:?}")))?;
            let status = resp.status();
            let token = resp
                .headers()
                .get("meridian-token")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| ClientError::Transport(e.to_string()))?
                .to_bytes();
            let body: Value = if body.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&body)
                    .map_err(|e| ClientError::Decode(format!("{status}: body is not JSON: {e}")))?
            };
            Ok::<_, ClientError>(Reply {
                status,
                token,
                body,
            })
        };
        match tokio::time::timeout(Duration::from_millis(timeout), fut).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout(timeout)),
        }
    }

    fn check(r: Reply) -> Result<Reply, ClientError> {
        if r.status.is_success() {
            return Ok(r);
        }
        let field = |k: &str| {
            r.body
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        Err(ClientError::Http {
            status: r.status.as_u16(),
            code: field("error"),
            message: field("message"),
            body: r.body,
        })
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
            body: r.body,
        })
    }

    fn key_path(ks: &str, key: &str) -> String {
        format!("/v1/kv/{}/{}", path::segment(ks), path::segment(key))
    }

    /// `PUT` a JSON value.
    pub async fn put(&self, ks: &str, key: &str, value: &Value) -> Result<Written, ClientError> {
        self.put_with(ks, key, value, &Options::default()).await
    }

    /// `PUT` a JSON value, with options.
    pub async fn put_with(
        &self,
        ks: &str,
        key: &str,
        value: &Value,
        opts: &Options,
    ) -> Result<Written, ClientError> {
        let r = self
            .call(Method::PUT, &Self::key_path(ks, key), Some(value), opts)
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
            .call(Method::GET, &Self::key_path(ks, key), None, opts)
            .await?;
        if r.status == StatusCode::NOT_FOUND && r.body.get("error") == Some(&json!("not_found")) {
            return Ok((None, r.token));
        }
        let r = Self::check(r)?;
        Ok((Some(Entry { body: r.body }), r.token))
    }

    /// `DELETE` a key.
    pub async fn delete(&self, ks: &str, key: &str) -> Result<Written, ClientError> {
        self.delete_with(ks, key, &Options::default()).await
    }

    /// `DELETE` a key, with options.
    pub async fn delete_with(
        &self,
        ks: &str,
        key: &str,
        opts: &Options,
    ) -> Result<Written, ClientError> {
        let r = self
            .call(Method::DELETE, &Self::key_path(ks, key), None, opts)
            .await?;
        Self::written(r)
    }

    /// `POST` an op (`{"op":"incr","by":1}`, ...).
    pub async fn op_with(
        &self,
        ks: &str,
        key: &str,
        op: &Value,
        opts: &Options,
    ) -> Result<Written, ClientError> {
        let r = self
            .call(Method::POST, &Self::key_path(ks, key), Some(op), opts)
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
    pub async fn batch(&self, ops: &[Value], opts: &Options) -> Result<Written, ClientError> {
        let r = self
            .call(Method::POST, "/v1/batch", Some(&json!({"ops": ops})), opts)
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
        let r = self
            .call(Method::GET, &q, None, &Options::default())
            .await?;
        Ok(Self::check(r)?.body)
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
        let r = self
            .call(
                Method::PUT,
                &format!("/v1/keyspaces/{}", path::segment(name)),
                Some(def),
                &Options::default(),
            )
            .await?;
        Ok(Self::check(r)?.body)
    }

    /// A keyspace's ownership map (`GET /v1/keyspaces/{name}/ownership`).
    pub async fn ownership(&self, keyspace: &str) -> Result<Value, ClientError> {
        let r = self
            .call(
                Method::GET,
                &format!("/v1/keyspaces/{}/ownership", path::segment(keyspace)),
                None,
                &Options::default(),
            )
            .await?;
        Ok(Self::check(r)?.body)
    }

    /// Sets a keyspace's ownership map (`{"rules": [...], "default": ...,
    /// "mode": ..., "fallback": ..., "epoch": N}`).
    pub async fn set_ownership(&self, keyspace: &str, map: &Value) -> Result<Value, ClientError> {
        let r = self
            .call(
                Method::PUT,
                &format!("/v1/keyspaces/{}/ownership", path::segment(keyspace)),
                Some(map),
                &Options::default(),
            )
            .await?;
        Ok(Self::check(r)?.body)
    }

    /// Moves one rule of a keyspace's map to another region (`{"rule":
    /// INDEX | "default" | {"prefix": ...}, "to": REGION}`), fenced.
    pub async fn transfer_ownership(
        &self,
        keyspace: &str,
        body: &Value,
    ) -> Result<Value, ClientError> {
        let r = self
            .call(
                Method::POST,
                &format!(
                    "/v1/keyspaces/{}/ownership/transfer",
                    path::segment(keyspace)
                ),
                Some(body),
                &Options::default(),
            )
            .await?;
        Ok(Self::check(r)?.body)
    }

    /// Registers or replaces a merge script (`{"script": "...", ...}`).
    pub async fn define_merge(&self, name: &str, body: &Value) -> Result<Value, ClientError> {
        let r = self
            .call(
                Method::PUT,
                &format!("/v1/merges/{}", path::segment(name)),
                Some(body),
                &Options::default(),
            )
            .await?;
        Ok(Self::check(r)?.body)
    }

    /// `GET /v1/merges/{name}`: a script with its source and hash.
    pub async fn merge(&self, name: &str) -> Result<Value, ClientError> {
        let r = self
            .call(
                Method::GET,
                &format!("/v1/merges/{}", path::segment(name)),
                None,
                &Options::default(),
            )
            .await?;
        Ok(Self::check(r)?.body)
    }

    /// `GET /v1/merges`: built-ins and registered scripts.
    pub async fn merges(&self) -> Result<Value, ClientError> {
        let r = self
            .call(Method::GET, "/v1/merges", None, &Options::default())
            .await?;
        Ok(Self::check(r)?.body)
    }

    /// `GET /v1/keyspaces/{name}`.
    pub async fn keyspace(&self, name: &str) -> Result<Value, ClientError> {
        let r = self
            .call(
                Method::GET,
                &format!("/v1/keyspaces/{}", path::segment(name)),
                None,
                &Options::default(),
            )
            .await?;
        Ok(Self::check(r)?.body)
    }

    /// `GET /v1/keyspaces`.
    pub async fn keyspaces(&self) -> Result<Value, ClientError> {
        let r = self
            .call(Method::GET, "/v1/keyspaces", None, &Options::default())
            .await?;
        Ok(Self::check(r)?.body)
    }

    /// `GET /v1/conflicts` with a raw query string (`keyspace=x&limit=10`).
    pub async fn conflicts(&self, query: &str) -> Result<Value, ClientError> {
        let r = self
            .call(
                Method::GET,
                &format!("/v1/conflicts?{query}"),
                None,
                &Options::default(),
            )
            .await?;
        Ok(Self::check(r)?.body)
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<Value, ClientError> {
        let r = self
            .call(
                Method::GET,
                "/v1/status",
                None,
                &Options {
                    timeout_ms: Some(3_000),
                    ..Options::default()
                },
            )
            .await?;
        Ok(Self::check(r)?.body)
    }

    /// Whether `/healthz` answers 200.
    pub async fn healthy(&self) -> bool {
        let opts = Options {
            timeout_ms: Some(1_000),
            ..Options::default()
        };
        matches!(self.call(Method::GET, "/healthz", None, &opts).await, Ok(r) if r.status.is_success())
    }
}
