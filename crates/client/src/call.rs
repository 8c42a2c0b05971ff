//! One call, carried across regions: tried at the most preferred region
//! that is up, sent on to the next one when a region cannot take it, and
//! after a redirect (`421` with the owner's URL, or a `307`/`308` to the
//! same path at another region) sent where the region says.
//!
//! What moves a call on, and what stops it (see [`crate::safety`] for
//! which writes are sent twice):
//!
//! | outcome at a region | the region | the call |
//! |---|---|---|
//! | no connection | set aside (probed in the background until it answers) | next region |
//! | `503` refusal (`behind_token`, `handoff_pending`, `deadline_passed`, ...) | kept (after `behind_token`: tried after the others for a second) | next region |
//! | timeout, connection lost, other `5xx` (a proxy's `504` too) | set aside | reads: next region; writes safe to repeat: next region once the first copy can no longer be taken there; others: [`ClientError::Indeterminate`] |
//! | `421`/`307`/`308` with a URL | kept | the URL (at most [`MAX_REDIRECTS`]) |
//! | any other answer (`2xx`, `4xx`, Meridian's `504 write_concern_timeout`) | kept | done (an error answer after an unknown outcome elsewhere is `Indeterminate`) |
//!
//! Why past ~400 lines: one idea, a call carried across regions (the
//! order, failover, redirects), every branch of it documented.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

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

/// The header that carries a write's deadline (Unix ms).
pub const DEADLINE_HEADER: &str = "meridian-deadline-ms";

/// The header that carries the time a write sent again must be stamped
/// above (Unix ms).
pub const NOT_BEFORE_HEADER: &str = "meridian-not-before-ms";

fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A write's deadline for an attempt that may take `timeout_ms`: a quarter
/// of it (at most 250 ms) early, so a region whose clock runs somewhat
/// behind this one's still stops before the client gives up.
fn deadline_ms(timeout_ms: u64) -> u64 {
    let margin = (timeout_ms / 4).min(250);
    unix_now_ms().saturating_add(timeout_ms - margin)
}

/// The write headers of one attempt.
#[derive(Clone, Copy, Default)]
pub(crate) struct Stamp {
    /// `meridian-deadline-ms`.
    pub(crate) deadline_ms: Option<u64>,
    /// `meridian-not-before-ms`.
    pub(crate) not_before_ms: Option<u64>,
}

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
    // A 504 of Meridian's own is a write durable where it was taken whose
    // concern was not met in time; any other (a proxy's) is a failure.
    let concern_timeout = s == 504 && r.body["error"] == "write_concern_timeout";
    if s < 500 || concern_timeout {
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
        // Only to the same path elsewhere (a standby naming its leader):
        // what the call may do was decided for this path.
        307 | 308 => {
            let (base, to) = split_url(r.location.as_deref()?)?;
            (to == path).then_some((base, to))
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
        let mut stamp = Stamp::default();
        while let Some(t) = queue.pop_front() {
            let timeout = opts.timeout_ms.unwrap_or(self.inner.timeout_ms);
            // A timeout too long to add to the clock is no deadline to wait
            // for: a far-off instant stands in (a year).
            let now = Instant::now();
            let deadline = now
                .checked_add(Duration::from_millis(timeout))
                .unwrap_or(now + Duration::from_secs(365 * 24 * 3600));
            if method != Method::GET {
                stamp.deadline_ms = Some(deadline_ms(timeout));
            }
            let failure = match self
                .attempt(&method, &t.base, &t.path, &bytes, opts, stamp)
                .await
            {
                Ok(r) => {
                    if let Some((base, path)) = redirect(&r, &t.path) {
                        if let Some(e) = t.endpoint {
                            e.succeeded();
                        }
                        redirects += 1;
                        if redirects > MAX_REDIRECTS {
                            return Err(unknown.unwrap_or_else(|| http_error(r)));
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
                            // A refusal here says nothing of an attempt
                            // whose outcome is unknown.
                            if let (false, Some(u)) = (r.status.is_success(), unknown) {
                                return Err(u);
                            }
                            return Ok(r);
                        }
                        Verdict::Refused => {
                            if let Some(e) =
                                t.endpoint.filter(|_| r.body["error"] == "behind_token")
                            {
                                e.lagging();
                            }
                            last = Some(http_error(r));
                            continue;
                        }
                        Verdict::Failed => http_error(r),
                    }
                }
                Err(e @ ClientError::Unreachable(_)) => {
                    if let Some(ep) = t.endpoint {
                        ep.failed(&regions.backoff);
                        self.watch(ep);
                    }
                    last = Some(e);
                    continue;
                }
                Err(e @ (ClientError::Timeout(_) | ClientError::Transport(_))) => e,
                Err(e) => return Err(unknown.unwrap_or(e)),
            };
            // The region failed with the outcome unknown.
            if let Some(ep) = t.endpoint {
                ep.failed(&regions.backoff);
                self.watch(ep);
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
                    if !queue.is_empty() {
                        let floor = self.settle(&t.base, &failure, deadline, stamp).await;
                        stamp.not_before_ms = stamp.not_before_ms.max(Some(floor));
                    }
                    unknown.get_or_insert(indeterminate);
                }
                Safety::Once | Safety::Ask(_) => return Err(indeterminate),
            }
        }
        Err(unknown
            .or(last)
            .unwrap_or_else(|| ClientError::Invalid("no region to send the request to".into())))
    }

    /// Before a write whose outcome at `base` is unknown goes to another
    /// region: makes sure the copy sent to `base` cannot undo what follows.
    /// Otherwise a region that was only slow (paused, overloaded, a
    /// connection lost in between) could take it late, with a newer
    /// timestamp than the writes that followed it elsewhere.
    ///
    /// Every write carries its deadline (`meridian-deadline-ms`, a little
    /// before the attempt's timeout) and a region does not stamp a write
    /// later than it; the copy sent on carries the first copy's deadline as
    /// a floor (`meridian-not-before-ms`) it is stamped above. So once the
    /// deadline has passed the first copy is older than the second whatever
    /// the regions' clocks say. That is the case after a timeout; otherwise
    /// the client waits for it, except where the first region's process is
    /// gone (a new connection is refused): then the first copy, if taken,
    /// was stamped before the failure was seen, and the floor is now by
    /// this client's clock: ordered up to the clock offset between the
    /// first region and this client. Returns the floor.
    async fn settle(
        &self,
        base: &str,
        failure: &ClientError,
        deadline: Instant,
        stamp: Stamp,
    ) -> u64 {
        let passed = stamp.deadline_ms.unwrap_or(0);
        if let ClientError::Timeout(_) = failure {
            return passed;
        }
        if let ClientError::Transport(_) = failure {
            let probe = Options {
                timeout_ms: Some(500),
                ..Options::default()
            };
            let gone = self
                .attempt(
                    &Method::GET,
                    base,
                    "/healthz",
                    &Bytes::new(),
                    &probe,
                    Stamp::default(),
                )
                .await;
            if matches!(gone, Err(ClientError::Unreachable(_))) {
                return unix_now_ms();
            }
        }
        tokio::time::sleep_until(deadline.into()).await;
        passed
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
        stamp: Stamp,
    ) -> Result<Reply, ClientError> {
        let uri = format!("{base}{path}");
        let mut b = Request::builder().method(method.clone()).uri(&uri);
        let mut set = |name: &str, v: &Option<String>| {
            if let Some(v) = v {
                b = std::mem::take(&mut b).header(name, v.as_str());
            }
        };
        set("authorization", &self.inner.bearer);
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
        let timeout = opts.timeout_ms.unwrap_or(self.inner.timeout_ms);
        if let Some(d) = stamp.deadline_ms {
            b = b.header(DEADLINE_HEADER, d.to_string());
        }
        if let Some(f) = stamp.not_before_ms {
            b = b.header(NOT_BEFORE_HEADER, f.to_string());
        }
        let req = b
            .body(Full::new(body.clone()))
            .map_err(|e| ClientError::Invalid(e.to_string()))?;
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
                match serde_json::from_slice(&body) {
                    Ok(v) => v,
                    // A proxy's error page: judged by its status alone.
                    Err(_) if status.is_server_error() => Value::Null,
                    Err(e) => {
                        return Err(ClientError::Decode(format!(
                            "{status}: body is not JSON: {e}"
                        )));
                    }
                }
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
