//! One signed request to a peer region and its verified answer, over the
//! peer HTTP/2 client; and [`PeerError`], what can go wrong with it.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::auth::{Form, Secret};

/// Longest wait for one peer request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Largest answer a peer call reads (a page, signed).
const MAX_ANSWER: usize = meridian_core::budget::MAX_PAGE + (64 << 10);

/// What failed underneath a [`PeerError`]: the transport's, the decoder's
/// or this region's own error, kept as the error's source.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// A cause and every source under it, `: `-joined (a hyper error's own
/// message says only "client error (Connect)"; its source says why).
pub fn chain(e: &Cause) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = s.source();
    }
    out
}

/// Why a session with a peer ended.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// Could not connect: the request was never sent.
    #[error("unreachable: {}", chain(.0))]
    Unreachable(#[source] Cause),
    /// Could not talk (after the request may have been sent).
    #[error("transport: {}", chain(.0))]
    Transport(#[source] Cause),
    /// The peer answered with an error status.
    #[error("peer answered {status}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Its body.
        body: String,
    },
    /// The peer's answer did not verify or decode.
    #[error("bad answer: {}", chain(.0))]
    BadAnswer(#[source] Cause),
    /// The answer is not from the region called, or not to this request.
    #[error("wrong peer: {0}")]
    WrongPeer(String),
    /// The peer started after this request was signed (its clock runs
    /// ahead): sign again from the time it gives.
    #[error("the peer started at {0} ms, after this request was signed")]
    BeforeStart(u64),
    /// Reading or writing this region's own log or state failed.
    #[error("local: {}", chain(.0))]
    Local(#[source] Cause),
}

impl PeerError {
    /// An answer that did not verify or decode, for the reason given.
    pub fn bad_answer(why: String) -> Self {
        Self::BadAnswer(why.into())
    }
}

/// The HTTP client of peer calls: `https://` or `http://` peers.
pub type PeerHttp = HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A peer-API client over HTTP/2 (prior knowledge in the clear, ALPN over
/// TLS): one connection per peer, many requests in flight on it.
pub fn peer_client() -> PeerHttp {
    let connector = crate::security::tls::outbound_connector(true);
    HyperClient::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .http2_only(true)
        .http2_initial_stream_window_size(Some(crate::security::listener::PEER_STREAM_WINDOW))
        .http2_initial_connection_window_size(Some(
            crate::security::listener::PEER_CONNECTION_WINDOW,
        ))
        .http2_keep_alive_interval(Some(Duration::from_secs(10)))
        .http2_keep_alive_timeout(Duration::from_secs(20))
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector)
}

/// Sends a signed request to region `to` and verifies its signed answer
/// (from `to`, to this very request).
#[allow(clippy::too_many_arguments)]
pub async fn call(
    http: &PeerHttp,
    secret: &Secret,
    me: &str,
    to: &str,
    url: &str,
    path: &str,
    label: &str,
    body: &[u8],
) -> Result<Vec<u8>, PeerError> {
    call_with(http, secret, me, to, url, path, label, body, How::default()).await
}

/// What a call does beyond its request.
#[derive(Clone, Copy, Debug)]
pub struct How {
    /// A wire version to offer in the request's
    /// [`OFFER_HEADER`](meridian_core::replication::compact::OFFER_HEADER)
    /// (a hello does: the answer's version says whether the peer reads it).
    pub offer: Option<u8>,
    /// The form to sign in (the short one only to a peer that reads it).
    pub form: Form,
}

impl Default for How {
    fn default() -> Self {
        Self {
            offer: None,
            form: Form::Full,
        }
    }
}

/// As [`call`], as `how` says.
#[allow(clippy::too_many_arguments)]
pub async fn call_with(
    http: &PeerHttp,
    secret: &Secret,
    me: &str,
    to: &str,
    url: &str,
    path: &str,
    label: &str,
    body: &[u8],
    how: How,
) -> Result<Vec<u8>, PeerError> {
    let once = |ts_ms| call_once(http, secret, me, to, url, path, label, body, how, ts_ms);
    match once(super::auth::now_ms()).await {
        // Signed before the peer started (its clock runs ahead of ours):
        // once more, stamped from its start.
        Err(PeerError::BeforeStart(since)) => once(since.max(super::auth::now_ms())).await,
        other => other,
    }
}

#[allow(clippy::too_many_arguments)]
async fn call_once(
    http: &PeerHttp,
    secret: &Secret,
    me: &str,
    to: &str,
    url: &str,
    path: &str,
    label: &str,
    body: &[u8],
    how: How,
    ts_ms: u64,
) -> Result<Vec<u8>, PeerError> {
    let (auth, head, signed) = secret.sign_request_as(how.form, path, label, me, to, ts_ms, body);
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(format!("{url}{path}"))
        .header("meridian-peer", me)
        .header("meridian-peer-auth", auth)
        .header("content-type", "application/vnd.meridian.peer");
    if let Some(v) = how.offer {
        req = req.header(
            meridian_core::replication::compact::OFFER_HEADER,
            v.to_string(),
        );
    }
    let req = req
        .body(Full::new(Bytes::from(signed)))
        .map_err(|e| PeerError::Transport(e.into()))?;
    let fut = async {
        let resp = http.request(req).await.map_err(|e| {
            if e.is_connect() {
                PeerError::Unreachable(e.into())
            } else {
                PeerError::Transport(e.into())
            }
        })?;
        let status = resp.status();
        let responder = resp
            .headers()
            .get("meridian-peer-from")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let since = resp
            .headers()
            .get("meridian-peer-since")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        // Bounded: no answer of the peer API is larger than a page.
        let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(PeerError::Transport)?
            .to_bytes();
        if !status.is_success() {
            // A refusal from another region than the one called (a peer URL
            // that leads elsewhere: the request, signed for `to`, does not
            // verify there). Its name is unsigned: a diagnosis, the request
            // failed either way.
            if status == StatusCode::UNAUTHORIZED
                && let Some(since) = since
                && since > ts_ms
                && since - ts_ms <= super::auth::REPLAY_WINDOW_MS
            {
                return Err(PeerError::BeforeStart(since));
            }
            if status == StatusCode::UNAUTHORIZED
                && let Some(other) = responder.as_deref().filter(|r| *r != to)
            {
                return Err(PeerError::WrongPeer(if other == me {
                    format!("the URL of peer {to} ({url}) leads back to this region")
                } else {
                    format!(
                        "peer {to} ({url}) answers as region {other}: its answers cannot count for {to}"
                    )
                }));
            }
            return Err(PeerError::Status {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
            });
        }
        Ok((responder, body))
    };
    let (responder, body) = tokio::time::timeout(REQUEST_TIMEOUT, fut)
        .await
        .map_err(|_| {
            PeerError::Transport(format!("no answer within {REQUEST_TIMEOUT:?}").into())
        })??;
    // The answer says who signed it; a signature that verifies for another
    // region than the one called is that region's answer, not `to`'s.
    if let Some(other) = responder.as_deref().filter(|r| *r != to)
        && secret
            .open_answer_as(how.form, other, &head.nonce, &body)
            .is_some()
    {
        return Err(PeerError::WrongPeer(if other == me {
            format!("the URL of peer {to} ({url}) leads back to this region")
        } else {
            format!(
                "peer {to} ({url}) answers as region {other}: its answers cannot count for {to}"
            )
        }));
    }
    // Answers are signed by their region for this request: an answer from
    // another region, or to another request, does not verify.
    secret
        .open_answer_as(how.form, to, &head.nonce, &body)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| {
            PeerError::WrongPeer(format!(
                "the answer from {url} is not {to}'s answer to this request (its signature does not verify)"
            ))
        })
}
