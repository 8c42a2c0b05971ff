//! Calls this region makes to its peers outside replication (quorum reads,
//! anti-entropy, read repair): signed requests, verified answers.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use meridian_core::replication::wire::{self, StatePage};
use meridian_core::{Key, KeyspaceName, budget};
use meridian_crdt::{Hlc, Object, RegionId, VersionVector, codec};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::auth::Secret;
use super::sender::{PeerError, call, peer_client};

/// A signed-request client for every peer.
#[derive(Clone)]
pub struct PeerClient {
    http: HyperClient<HttpConnector, Full<Bytes>>,
    secret: Secret,
    me: String,
    /// The peers: region and peer URL.
    pub peers: Arc<Vec<(RegionId, String)>>,
}

impl PeerClient {
    /// A client calling `peers` as region `me`.
    pub fn new(me: &RegionId, secret: Secret, peers: Vec<(RegionId, String)>) -> Self {
        Self {
            http: peer_client(),
            secret,
            me: me.to_string(),
            peers: Arc::new(peers),
        }
    }

    /// Sends `msg` to `path` at `url` and decodes the verified answer.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        url: &str,
        path: &str,
        label: &str,
        msg: &Req,
    ) -> Result<Resp, PeerError> {
        let body = wire::encode_msg(msg).map_err(|e| PeerError::Local(e.to_string()))?;
        let bytes = call(&self.http, &self.secret, &self.me, url, path, label, &body).await?;
        wire::decode_msg(&bytes).map_err(|e| PeerError::BadAnswer(e.to_string()))
    }

    /// Merges `objects` into the peer at `url` (read repair, anti-entropy).
    pub async fn push(
        &self,
        url: &str,
        objects: &[(KeyspaceName, Key, Object)],
        covers: &VersionVector,
    ) -> Result<(), PeerError> {
        let entries = objects
            .iter()
            .map(|(ks, k, o)| {
                codec::encode(o)
                    .map(|b| (ks.clone(), k.clone(), serde_bytes::ByteBuf::from(b)))
                    .map_err(|e| PeerError::Local(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Pages bounded by bytes, as a state transfer's are.
        let pages = budget::split_by_bytes(entries, budget::PAGE_TARGET, |(_, k, b)| {
            k.as_str().len() + b.len()
        });
        for entries in pages {
            let page = StatePage {
                transfer: 0,
                vv: covers.clone(),
                hlc: Hlc::ZERO,
                entries,
                done: false,
            };
            let body = wire::encode_state(&page).map_err(|e| PeerError::Local(e.to_string()))?;
            call(
                &self.http,
                &self.secret,
                &self.me,
                url,
                "/peer/v1/state",
                "state",
                &body,
            )
            .await?;
        }
        Ok(())
    }
}
