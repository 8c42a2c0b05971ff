//! The peer links' figures for a scrape: lag per peer in ops and seconds,
//! traffic, state transfers, session errors, clock offsets, anti-entropy
//! and refused answers.

use std::sync::Arc;

use meridian_core::{FjallBackend, Reader};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use super::status::{PeerStatus, Peers};
use crate::metrics::{counter, per_peer, per_peer_seconds};
use crate::region::feed::Feed;

/// Encodes the peer links' figures at each scrape.
pub struct PeerCollector {
    /// The links.
    pub peers: Arc<Peers>,
    /// The writer's feed, for the age of the oldest unacknowledged op.
    pub feed: Option<Arc<Feed>>,
    /// What the writer publishes: this region's version vector.
    pub reader: Reader<FjallBackend>,
}

impl std::fmt::Debug for PeerCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerCollector")
    }
}

impl Collector for PeerCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let (peers, feed) = (&self.peers, &self.feed);
        let ours = self.reader.published().vv.clone();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let each = |f: &dyn Fn(&PeerStatus) -> i64| -> Vec<(String, i64)> {
            peers
                .links
                .iter()
                .map(|l| (l.name.to_string(), f(l)))
                .collect()
        };
        per_peer(
            &mut enc,
            "repl_lag_ops",
            "Ops this region has that the peer has not acknowledged",
            false,
            &each(&|l| l.lag_ops(&ours) as i64),
        )?;
        per_peer_seconds(
            &mut enc,
            "repl_lag_seconds",
            "Age of the oldest op the peer has not acknowledged",
            &each(&|l| l.lag_ms(&ours, feed.as_deref(), now) as i64),
        )?;
        per_peer(
            &mut enc,
            "repl_sent_bytes",
            "Payload bytes sent to the peer",
            true,
            &each(&|l| l.bytes.load(Relaxed) as i64),
        )?;
        per_peer(
            &mut enc,
            "repl_sent_batches",
            "Batches sent to the peer",
            true,
            &each(&|l| l.batches.load(Relaxed) as i64),
        )?;
        per_peer(
            &mut enc,
            "repl_sent_ops",
            "Ops sent to the peer (resends included)",
            true,
            &each(&|l| l.ops.load(Relaxed) as i64),
        )?;
        per_peer(
            &mut enc,
            "repl_state_transfers",
            "State transfers completed to the peer",
            true,
            &each(&|l| l.transfers.load(Relaxed) as i64),
        )?;
        per_peer(
            &mut enc,
            "repl_session_errors",
            "Replication sessions that ended in an error",
            true,
            &each(&|l| l.errors.load(Relaxed) as i64),
        )?;
        per_peer_seconds(
            &mut enc,
            "repl_clock_offset_seconds",
            "Estimated clock offset of the peer (peer minus this region)",
            &each(&|l| l.clock_offset_ms().unwrap_or(0)),
        )?;
        per_peer(
            &mut enc,
            "repl_antientropy_rounds",
            "Anti-entropy comparisons completed with the peer",
            true,
            &each(&|l| l.ae_rounds.load(Relaxed) as i64),
        )?;
        per_peer(
            &mut enc,
            "peer_wrong_peer_answers",
            "Answers refused: signed by another region than the one called, or for another request",
            true,
            &each(&|l| l.wrong_peer.load(Relaxed) as i64),
        )?;
        per_peer(
            &mut enc,
            "repl_antientropy_repaired_keys",
            "Keys repaired by anti-entropy with the peer (here or there)",
            true,
            &each(&|l| l.repairs.load(Relaxed) as i64),
        )?;
        counter(
            &mut enc,
            "api_read_repaired_keys",
            "Keys repaired by quorum reads",
            peers.read_repairs.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "peer_auth_failures",
            "Peer requests refused: missing or bad signature",
            peers.auth_failures.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "repl_received_batches",
            "Op batches received from peers",
            peers.batches_received.load(Relaxed),
        )?;
        Ok(())
    }
}
