//! The messages members of one region exchange over the peer API (signed
//! like every peer message; MessagePack). Each carries a format version.

use meridian_crdt::{ReplicaId, VersionVector};
use serde::{Deserialize, Serialize};

/// The format version of every message here.
pub const VERSION: u8 = 1;

/// A member of a region, as others reach it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its replica id (a new one when it is promoted from a fresh standby).
    pub replica: ReplicaId,
    /// Its peer API.
    pub peer_url: String,
    /// Its client API.
    pub client_url: String,
}

/// `POST /peer/v1/standby/follow`: a standby's heartbeat to its leader.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Follow {
    /// [`VERSION`].
    pub v: u8,
    /// Who is following.
    pub member: Member,
    /// The epoch it knows.
    pub epoch: u64,
}

/// The answer to [`Follow`], and to [`Announce`] and a status query: what the
/// answering member is.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberStatus {
    /// [`VERSION`].
    pub v: u8,
    /// Who answers.
    pub member: Member,
    /// Whether it leads the region now.
    pub leading: bool,
    /// The epoch it knows (a leader's own).
    pub epoch: u64,
    /// What it has applied.
    pub vv: VersionVector,
    /// A standby's leader (its peer URL), when it knows one.
    pub leader: Option<String>,
    /// A standby: how long ago its leader last answered (None: not in
    /// this run).
    #[serde(default)]
    pub heard_leader_ms_ago: Option<u64>,
    /// A standby: its leader's replica id, once heard.
    #[serde(default)]
    pub leader_replica: Option<ReplicaId>,
    /// A standby that would take over on its own (failover on, and it has
    /// reached its leader in this run): only such a one is deferred to.
    #[serde(default)]
    pub may_take_over: bool,
    /// A leader's other members.
    pub members: Vec<Member>,
}

/// `POST /peer/v1/standby/announce`: a leader tells a member of its epoch.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Announce {
    /// [`VERSION`].
    pub v: u8,
    /// The leader.
    pub leader: Member,
    /// Its epoch.
    pub epoch: u64,
}

/// `POST /peer/v1/standby/status`: what a member is (asked before a
/// standby takes over).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusQuery {
    /// [`VERSION`].
    pub v: u8,
}

/// Whether a leader at `(epoch, replica)` outranks one at `(other_epoch,
/// other)`: the higher epoch, then the lower replica id (two standbys that
/// took over at once agree on one).
pub fn outranks(epoch: u64, replica: &ReplicaId, other_epoch: u64, other: &ReplicaId) -> bool {
    epoch > other_epoch || (epoch == other_epoch && replica < other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_crdt::RegionId;

    fn r(n: u128) -> ReplicaId {
        ReplicaId::new(RegionId::new("eu").unwrap(), uuid::Uuid::from_u128(n))
    }

    #[test]
    fn the_higher_epoch_wins_then_the_lower_replica() {
        assert!(outranks(2, &r(9), 1, &r(1)));
        assert!(!outranks(1, &r(1), 2, &r(9)));
        assert!(outranks(2, &r(1), 2, &r(9)));
        assert!(!outranks(2, &r(9), 2, &r(1)));
        assert!(!outranks(2, &r(1), 2, &r(1)), "not over itself");
    }

    /// A change here is a wire format change: raise [`VERSION`].
    const GOLDEN_FOLLOW: &str = "0193019392a26575c41000000000000000000000000000000001aa687474703a2f2f613a31aa687474703a2f2f613a3207";

    #[test]
    fn golden_follow_bytes() {
        // Pins the encoding: a change here is a wire format change.
        let f = Follow {
            v: VERSION,
            member: Member {
                replica: r(1),
                peer_url: "http://a:1".into(),
                client_url: "http://a:2".into(),
            },
            epoch: 7,
        };
        let bytes = meridian_core::replication::wire::encode_msg(&f).unwrap();
        let back: Follow = meridian_core::replication::wire::decode_msg(&bytes).unwrap();
        assert_eq!(back.member, f.member);
        assert_eq!(back.epoch, 7);
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        println!("{hex}");
        assert_eq!(hex, GOLDEN_FOLLOW);
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn member(n: u128) -> Member {
        Member {
            replica: r(n),
            peer_url: format!("http://m{n}:7170"),
            client_url: format!("http://m{n}:7070"),
        }
    }

    /// The other three messages pinned like [`Follow`]: a change here is a
    /// wire format change. `MemberStatus` is a positional array whose
    /// defaulted fields sit before `members`, so unlike the ledger's
    /// appended fields they give no compatibility with the shorter layout
    /// earlier builds sent: members of one region must run one version (a
    /// rolling upgrade of standbys needs a VERSION bump and a reader of the
    /// old layout first).
    #[test]
    fn golden_status_announce_and_query_bytes() {
        use meridian_core::replication::wire::{decode_msg, encode_msg};
        let status = MemberStatus {
            v: VERSION,
            member: member(2),
            leading: false,
            epoch: 3,
            vv: [(r(1), meridian_crdt::Seq(40))].into_iter().collect(),
            leader: Some("http://m1:7170".into()),
            heard_leader_ms_ago: Some(250),
            leader_replica: Some(r(1)),
            may_take_over: true,
            members: vec![member(1)],
        };
        let bytes = encode_msg(&status).unwrap();
        assert_eq!(
            hex(&bytes),
            "019a019392a26575c41000000000000000000000000000000002ae687474703a2f2f6d323a37313730ae687474703a2f2f6d323a37303730c203919292a26575c4100000000000000000000000000000000128ae687474703a2f2f6d313a37313730ccfa92a26575c41000000000000000000000000000000001c3919392a26575c41000000000000000000000000000000001ae687474703a2f2f6d313a37313730ae687474703a2f2f6d313a37303730"
        );
        let back: MemberStatus = decode_msg(&bytes).unwrap();
        assert_eq!(
            (back.member, back.vv, back.leader_replica),
            (
                status.member.clone(),
                status.vv.clone(),
                status.leader_replica.clone()
            )
        );
        assert!(back.may_take_over);
        let announce = Announce {
            v: VERSION,
            leader: member(1),
            epoch: 4,
        };
        let bytes = encode_msg(&announce).unwrap();
        assert_eq!(
            hex(&bytes),
            "0193019392a26575c41000000000000000000000000000000001ae687474703a2f2f6d313a37313730ae687474703a2f2f6d313a3730373004"
        );
        let back: Announce = decode_msg(&bytes).unwrap();
        assert_eq!((back.leader, back.epoch), (announce.leader, 4));
        let bytes = encode_msg(&StatusQuery { v: VERSION }).unwrap();
        assert_eq!(hex(&bytes), "019101");
    }
}
