//! One call, carried across regions: tried at the most preferred region
//! that is up, sent on to the next one when a region cannot take it, and
//! after a redirect (`421` with the owner's URL, `307`/`308` with a
//! `Location`) sent where the region says.
//!
//! What moves a call on, and what stops it (see [`crate::safety`] for
//! which writes are sent twice):
//!
//! | outcome at a region | the region | the call |
//! |---|---|---|
//! | no connection | set aside | next region |
//! | `503` refusal (`behind_token`, `handoff_pending`, ...) | kept | next region |
//! | timeout, connection lost, other `5xx` | set aside | reads and safe writes: next region; others: [`ClientError::Indeterminate`] |
//! | `421`/`307`/`308` with a URL | kept | the URL (at most [`MAX_REDIRECTS`]) |
//! | any other answer (`2xx`, `4xx`, `504`) | kept | done |

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use crate::client::{Client, Options};
use crate::error::{ClientError, refused};
use crate::regions::Endpoint;
use crate::safety::{self, Safety};

/// Redirects followed by one call before it gives up.
pub const MAX_REDIRECTS: usize = 3;

/// What a region answered.
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) token: Option<String>,
    pub(crate) location: Option<String>,
    pub(crate) body: Value,
    /// The base URL of the region that answered.
    pub(crate) served_by: String,
}

/// Where one attempt goes.
struct Target<'a> {
    endpoint: Option<&'a Endpoint>,
    base: String,
    path: String,
    redirected: bool,
}

enum Verdict {
    /// An answer to hand back, success or error.
    Answer,
    /// Refused before anything was written: try elsewhere.
    Refused,
    /// The region failed: the outcome is unknown.
    Failed,
}

fn verdict(r: &Reply) -> Verdict {
    let s = r.status.as_u16();
    if s < 500 || s == 504 {
        Verdict::Answer
    } else if refused(s, &r.body) {
        Verdict::Refused
    } else {
        Verdict::Failed
    }
}

/// Splits `http://host:port/path?q` into base and path.
fn split_url(url: &str) -> Option<(String, String)> {
    let uri: Uri = url.parse().ok()?;
    if uri.scheme_str() != Some("http") {
        return None;
    }
    let base = format!("http://{}", uri.authority()?);
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    Some((base, path))
}

/// Where a redirect points: a `421` with the owner's `url` (the same
/// request goes to that region), or a `307`/`308` `Location` (the request
/// goes exactly there).
fn redirect(r: &Reply, path: &str) -> Option<(String, String)> {
    match r.status.as_u16() {
        421 => {
            let url = r.body.get("url").and_then(Value::as_str)?;
            let (base, _) = split_url(url)?;
            Some((base, path.to_string()))
        }
        307 | 308 => {
            let loc = r.location.as_deref()?;
            if loc.starts_with('/') {
                return Some((r.served_by.clone(), loc.to_string()));
            }
            split_url(loc)
        }
        _ => None,
    }
}

impl Client {
    /// Sends one request, moving across regions as the table above says.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        opts: &Options,
        safety: Safety,
    ) -> Result<Reply, ClientError> {
        let mut safety = safety;
        let bytes = match body {
            Some(v) => {
                Bytes::from(serde_json::to_vec(v).map_err(|e| ClientError::Invalid(e.to_string()))?)
            }
            None => Bytes::new(),
        };
        let regions = &self.inner.regions;
        let preferred = regions.first().base.clone();
        let mut queue: VecDeque<Target<'_>> = regions
            .plan()
            .into_iter()
            .map(|e| Target {
                endpoint: Some(e),
                base: e.base.clone(),
                path: path.to_string(),
                redirected: false,
            })
            .collect();
        let mut redirects = 0;
        let mut last: Option<ClientError> = None;
        let mut unknown: Option<ClientError> = None;
        while let Some(t) = queue.pop_front() {
            let failure = match self.attempt(&method, &t.base, &t.path, &bytes, opts).await {
                Ok(r) => {
                    if let Some((base, path)) = redirect(&r, &t.path) {
                        if let Some(e) = t.endpoint {
                            e.succeeded();
                        }
                        redirects += 1;
                        if redirects > MAX_REDIRECTS {
                            return Err(http_error(r));
                        }
                        queue.push_front(Target {
                            endpoint: regions.find(&base),
                            base,
                            path,
                            redirected: true,
                        });
                        continue;
                    }
                    match verdict(&r) {
                        Verdict::Answer => {
                            if let Some(e) = t.endpoint {
                                e.succeeded();
                            }
                            if !t.redirected && t.base != preferred {
                                self.inner.failovers.fetch_add(1, Ordering::Relaxed);
                            }
                            return Ok(r);
                        }
                        Verdict::Refused => {
                            last = Some(http_error(r));
                            continue;
                        }
                        Verdict::Failed => http_error(r),
                    }
                }
                Err(e @ ClientError::Unreachable(_)) => {
                    if let Some(ep) = t.endpoint {
                        ep.failed(&regions.backoff);
                    }
                    last = Some(e);
                    continue;
                }
                Err(e @ (ClientError::Timeout(_) | ClientError::Transport(_))) => e,
                Err(e) => return Err(e),
            };
            // The region failed with the outcome unknown.
            if let Some(ep) = t.endpoint {
                ep.failed(&regions.backoff);
            }
            let indeterminate = ClientError::Indeterminate {
                region: t.base.clone(),
                cause: Box::new(failure.clone()),
            };
            if let Safety::Ask(changes) = &safety {
                safety = if queue.is_empty() || !self.all_idempotent(changes, opts).await {
                    Safety::Once
                } else {
                    Safety::Retry
                };
            }
            match safety {
                Safety::Read => last = Some(failure),
                Safety::Retry => {
                    unknown.get_or_insert(indeterminate);
                }
                Safety::Once | Safety::Ask(_) => return Err(indeterminate),
            }
        }
        Err(unknown
            .or(last)
            .unwrap_or_else(|| ClientError::Invalid("no region to send the request to".into())))
    }

    /// Whether every change may be sent twice, by its keyspace's policy as
    /// a region that is up describes it; `false` when none can say.
    async fn all_idempotent(&self, changes: &[safety::Change], opts: &Options) -> bool {
        for c in changes {
            let opts = Options {
                timeout_ms: opts.timeout_ms,
                ..Options::default()
            };
            let def = Box::pin(self.call(
                Method::GET,
                &format!("/v1/keyspaces/{}", crate::path::segment(&c.keyspace)),
                None,
                &opts,
                Safety::Read,
            ))
            .await;
            match def {
                Ok(r) if r.status.is_success() && safety::idempotent(&r.body, &c.kind) => {}
                _ => return false,
            }
        }
        true
    }

    /// One request to one region.
    pub(crate) async fn attempt(
        &self,
        method: &Method,
        base: &str,
        path: &str,
        body: &Bytes,
        opts: &Options,
    ) -> Result<Reply, ClientError> {
        let uri = format!("{base}{path}");
        let mut b = Request::builder().method(method.clone()).uri(&uri);
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
        if !body.is_empty() {
            b = b.header(header::CONTENT_TYPE, "application/json");
        }
        let req = b
            .body(Full::new(body.clone()))
            .map_err(|e| ClientError::Invalid(e.to_string()))?;
        let timeout = opts.timeout_ms.unwrap_or(self.inner.timeout_ms);
        let fut = async {
            let resp = self.inner.http.request(req).await.map_err(|e| {
                if e.is_connect() {
                    ClientError::Unreachable(format!("{base}: {e:?}"))
                } else {
                    ClientError::Transport(format!("{base}: {e:?}"))
                }
            })?;
            let status = resp.status();
            let header = |name| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let token = header("meridian-token");
            let location = header(header::LOCATION.as_str());
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| ClientError::Transport(format!("{base}: {e}")))?
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
                location,
                body,
                served_by: base.to_string(),
            })
        };
        match tokio::time::timeout(Duration::from_millis(timeout), fut).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout(timeout)),
        }
    }
}

/// The error an answer carries.
pub(crate) fn http_error(r: Reply) -> ClientError {
    let field = |k: &str| {
        r.body
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    ClientError::Http {
        status: r.status.as_u16(),
        code: field("error"),
        message: field("message"),
        body: r.body,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_split_into_a_region_and_a_path() {
        assert_eq!(
            super::split_url("http://10.0.0.2:7071/v1/kv/ks/a%2Fb?x=1"),
            Some(("http://10.0.0.2:7071".into(), "/v1/kv/ks/a%2Fb?x=1".into()))
        );
        assert_eq!(super::split_url("https://x/v1"), None);
        assert_eq!(super::split_url("not a url"), None);
    }
}
