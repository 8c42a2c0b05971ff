//! Calls this region makes to its peers outside replication (quorum reads,
//! anti-entropy, read repair): signed requests, verified answers.

use std::sync::Arc;

use meridian_core::replication::wire::{self, StatePage};
use meridian_core::{Key, KeyspaceName, budget};
use meridian_crdt::{Hlc, Object, RegionId, VersionVector, codec};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::auth::Secret;
use super::call::{PeerError, call, peer_client};

/// A signed-request client for every peer.
#[derive(Clone)]
pub struct PeerClient {
    http: super::call::PeerHttp,
    secret: Secret,
    me: String,
    /// The peers: region and peer URL.
    pub peers: Arc<Vec<(RegionId, String)>>,
    /// The replication links, when known: their URL follows a peer
    /// region's failover to a standby.
    links: Option<Arc<super::status::Peers>>,
}

impl PeerClient {
    /// A client calling `peers` as region `me`.
    pub fn new(me: &RegionId, secret: Secret, peers: Vec<(RegionId, String)>) -> Self {
        Self {
            http: peer_client(),
            secret,
            me: me.to_string(),
            peers: Arc::new(peers),
            links: None,
        }
    }

    /// The same client, resolving each peer's URL through `links` (the URL
    /// its sender last reached it at).
    pub fn following(mut self, links: Arc<super::status::Peers>) -> Self {
        self.links = Some(links);
        self
    }

    /// Every peer with the URL to call it at now.
    pub fn current(&self) -> Vec<(RegionId, String)> {
        self.peers
            .iter()
            .map(|(r, u)| {
                let now = self
                    .links
                    .as_ref()
                    .and_then(|l| l.links.iter().find(|x| x.name == *r))
                    .map_or_else(|| u.clone(), |x| x.url());
                (r.clone(), now)
            })
            .collect()
    }

    /// The region that answers at `url`: a peer region at its configured
    /// or current URL, else a member of this region (a standby, a leader).
    fn region_at(&self, url: &str) -> String {
        if let Some(l) = self
            .links
            .as_ref()
            .and_then(|l| l.links.iter().find(|x| x.answers_at(url)))
        {
            return l.name.to_string();
        }
        self.peers
            .iter()
            .find(|(_, u)| u == url)
            .map_or_else(|| self.me.clone(), |(r, _)| r.to_string())
    }

    /// Sends `msg` to `path` at `url` and decodes the verified answer.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        url: &str,
        path: &str,
        label: &str,
        msg: &Req,
    ) -> Result<Resp, PeerError> {
        let body = wire::encode_msg(msg).map_err(|e| PeerError::Local(e.into()))?;
        let to = self.region_at(url);
        let bytes = call(
            &self.http,
            &self.secret,
            &self.me,
            &to,
            url,
            path,
            label,
            &body,
        )
        .await?;
        wire::decode_msg(&bytes).map_err(|e| PeerError::BadAnswer(e.into()))
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
                    .map_err(|e| PeerError::Local(e.into()))
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
            let body = wire::encode_state(&page).map_err(|e| PeerError::Local(e.into()))?;
            call(
                &self.http,
                &self.secret,
                &self.me,
                &self.region_at(url),
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
