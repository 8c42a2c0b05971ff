//! Client requests forwarded to the region that owns their keys: the
//! messages, the caller's side ([`send`]) and the owner's
//! (`POST /peer/v1/forward`, [`serve`]), which runs the request through its
//! own client API. Forwarding rides the peer link: signed like every peer
//! message, and through whatever the link costs (one round trip).

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use axum::response::Response;
use meridian_crdt::RegionId;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use tower::ServiceExt;

use super::call::PeerError;
use super::client::PeerClient;
use crate::error::HttpError;

/// Most bytes of an answer the owner sends back (a read of the largest
/// object, rendered as JSON, fits).
pub const MAX_ANSWER: usize = meridian_core::budget::MAX_PAGE;

/// A client request, as the region that received it saw it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Forwarded {
    /// `PUT`, `POST`, `DELETE`, `GET`.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// The client's headers (hop-by-hop ones dropped).
    pub headers: Vec<(String, ByteBuf)>,
    /// The body.
    pub body: ByteBuf,
}

/// The owner's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Headers (hop-by-hop ones dropped).
    pub headers: Vec<(String, ByteBuf)>,
    /// The body.
    pub body: ByteBuf,
}

/// Set on a request that a peer forwarded here (a request extension,
/// which clients cannot set): it is answered here, never forwarded again.
#[derive(Clone, Debug)]
pub struct ForwardedBy(pub RegionId);

/// Why a forward did not get the owner's answer.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The owner could not be reached: the request was not sent.
    #[error("region {owner} is unreachable: {reason}")]
    Unreachable {
        /// The owner.
        owner: RegionId,
        /// Why.
        reason: String,
    },
    /// The owner (or this region's configuration) refused the request
    /// before running it: not applied, and not a reason to fall back
    /// (a peer that does not verify our signature is not unreachable).
    #[error("region {owner} cannot be asked: {reason}")]
    Refused {
        /// The owner.
        owner: RegionId,
        /// Why.
        reason: String,
    },
    /// The request was sent, but no answer came back: it may or may not
    /// have been applied.
    #[error("region {owner} did not answer: {reason}")]
    Indeterminate {
        /// The owner.
        owner: RegionId,
        /// Why.
        reason: String,
    },
}

const HOP_BY_HOP: [&str; 9] = [
    "host",
    "content-length",
    "connection",
    "transfer-encoding",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
];

/// Credentials stay with the region that checked them: the owner takes a
/// forwarded request on the forwarding region's word, and a client's
/// token must not travel the WAN (or sit in the owner's memory) for it.
const CREDENTIALS: [&str; 3] = ["authorization", "cookie", "proxy-authorization"];

fn carried(h: &HeaderMap) -> Vec<(String, ByteBuf)> {
    h.iter()
        .filter(|(k, _)| !HOP_BY_HOP.contains(&k.as_str()) && !CREDENTIALS.contains(&k.as_str()))
        .map(|(k, v)| (k.as_str().to_string(), ByteBuf::from(v.as_bytes().to_vec())))
        .collect()
}

fn restore(headers: &[(String, ByteBuf)], into: &mut HeaderMap) {
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_bytes(v),
        ) && !HOP_BY_HOP.contains(&k.as_str())
        {
            into.append(k, v);
        }
    }
}

/// Longest waits a forwarded request may ask of the owner (for a token,
/// for its write concern): together they stay under the peer call's
/// timeout, so the owner answers before the forwarder gives up on it (a
/// forward that times out is indeterminate: it may have been applied).
const FORWARDED_WAITS_MS: [(&str, u64); 2] =
    [("meridian-wait-ms", 4_000), ("meridian-timeout-ms", 8_000)];

fn capped(mut headers: Vec<(String, ByteBuf)>) -> Vec<(String, ByteBuf)> {
    for (name, v) in headers.iter_mut() {
        if let Some((_, max)) = FORWARDED_WAITS_MS.iter().find(|(n, _)| n == name)
            && let Some(ms) = std::str::from_utf8(v)
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
            && ms > *max
        {
            *v = ByteBuf::from(max.to_string().into_bytes());
        }
    }
    headers
}

/// Sends a client request to `owner` and answers with the owner's answer
/// (marked with `meridian-served-by`).
pub async fn send(
    client: Option<&PeerClient>,
    owner: &RegionId,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ForwardError> {
    let unreachable = |reason: String| ForwardError::Unreachable {
        owner: owner.clone(),
        reason,
    };
    let refused = |reason: String| ForwardError::Refused {
        owner: owner.clone(),
        reason,
    };
    let client = client.ok_or_else(|| refused("this region has no peers".into()))?;
    let url = client
        .current()
        .into_iter()
        .find(|(r, _)| r == owner)
        .map(|(_, u)| u)
        .ok_or_else(|| refused("not a peer of this region".into()))?;
    let msg = Forwarded {
        method: method.as_str().to_string(),
        uri: uri
            .path_and_query()
            .map_or_else(|| uri.path().to_string(), |p| p.as_str().to_string()),
        headers: capped(carried(headers)),
        body: ByteBuf::from(body.to_vec()),
    };
    let answer: Answer = client
        .call(&url, "/peer/v1/forward", "forward", &msg)
        .await
        .map_err(|e| match e {
            // Only a connection that could not be made proves the request
            // was never sent.
            PeerError::Unreachable(cause) => unreachable(super::call::chain(&cause)),
            // Refused by the peer API before it ran (the signature did not
            // verify, the region is stopping, the body is too large).
            PeerError::Status { status, body } if (400..500).contains(&status) || status == 503 => {
                refused(format!("answered {status}: {body}"))
            }
            other => ForwardError::Indeterminate {
                owner: owner.clone(),
                reason: other.to_string(),
            },
        })?;
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut resp = Response::new(Body::from(answer.body.into_vec()));
    *resp.status_mut() = status;
    restore(&answer.headers, resp.headers_mut());
    if let Ok(v) = HeaderValue::from_str(owner.as_str()) {
        resp.headers_mut().insert(SERVED_BY, v);
    }
    Ok(resp)
}

/// Names the region that answered a forwarded request.
pub const SERVED_BY: &str = "meridian-served-by";

/// The owner's side: runs `msg` through the client API `app` as a request
/// forwarded by `from`.
pub async fn serve(app: &Arc<OnceLock<Router>>, from: &str, msg: Forwarded) -> Answer {
    let failed = |e: HttpError| {
        let status = e.status().as_u16();
        let body = serde_json::json!({"error": e.code(), "message": e.message()}).to_string();
        Answer {
            status,
            headers: vec![(
                "content-type".into(),
                ByteBuf::from(b"application/json".to_vec()),
            )],
            body: ByteBuf::from(body.into_bytes()),
        }
    };
    let Some(router) = app.get().cloned() else {
        return failed(HttpError::unavailable(
            "starting",
            "the region is starting: its client API does not answer yet",
        ));
    };
    let (Ok(method), Ok(uri), Ok(from)) = (
        Method::from_bytes(msg.method.as_bytes()),
        msg.uri.parse::<Uri>(),
        RegionId::new(from),
    ) else {
        return failed(HttpError::bad_request("malformed forwarded request"));
    };
    let mut req = Request::new(Body::from(msg.body.into_vec()));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    restore(&msg.headers, req.headers_mut());
    req.extensions_mut().insert(ForwardedBy(from));
    let resp = match router.oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let (parts, body) = resp.into_parts();
    match axum::body::to_bytes(body, MAX_ANSWER).await {
        Ok(bytes) => Answer {
            status: parts.status.as_u16(),
            headers: carried(&parts.headers),
            body: ByteBuf::from(bytes.to_vec()),
        },
        Err(e) => failed(HttpError::internal(format!("answer: {e}"))),
    }
}
