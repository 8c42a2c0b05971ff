//! An ownership map: which region owns which keys of a keyspace, at which
//! epoch.
//!
//! Why past ~400 lines: the map and the checks of its rules, one type.

use meridian_crdt::RegionId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Epoch;
use crate::op::Key;

/// Most rules one map holds.
pub const MAX_RULES: usize = 256;

/// Most earlier layouts a map keeps for fencing (see [`super::fence`]);
/// a region whose last fence is older than the oldest waits for a newer one.
pub const MAX_HISTORY: usize = 16;

/// The stable 64-bit hash of a key that hash rules match: the first eight
/// bytes of the SHA-256 of the key's UTF-8 bytes, big-endian. Any client
/// can compute it; it never changes between versions (a golden test pins
/// it).
pub fn key_hash(key: &str) -> u64 {
    let d = Sha256::digest(key.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

/// What keys a rule matches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Match {
    /// Keys starting with this.
    Prefix(String),
    /// Keys whose [`key_hash`] is in `[lo, hi]` (both included).
    Hash([u64; 2]),
}

/// A key with its hash, computed once when a hash rule first needs it.
pub struct KeyRef<'a> {
    key: &'a str,
    hash: std::cell::OnceCell<u64>,
}

impl<'a> KeyRef<'a> {
    /// `key`, its hash not computed yet.
    pub fn new(key: &'a str) -> Self {
        Self {
            key,
            hash: std::cell::OnceCell::new(),
        }
    }

    fn hash(&self) -> u64 {
        *self.hash.get_or_init(|| key_hash(self.key))
    }
}

impl Match {
    /// Whether `key` matches.
    pub fn matches(&self, key: &str) -> bool {
        self.matches_ref(&KeyRef::new(key))
    }

    /// Whether `key` matches (its hash computed at most once across calls).
    pub fn matches_ref(&self, key: &KeyRef<'_>) -> bool {
        match self {
            Match::Prefix(p) => key.key.starts_with(p.as_str()),
            Match::Hash([lo, hi]) => (*lo..=*hi).contains(&key.hash()),
        }
    }

    /// Whether some key matches both.
    pub fn overlaps(&self, other: &Match) -> bool {
        match (self, other) {
            (Match::Prefix(a), Match::Prefix(b)) => a.starts_with(b.as_str()) || b.starts_with(a),
            (Match::Hash([a, b]), Match::Hash([c, d])) => a <= d && c <= b,
            // Every hash range holds keys of every prefix.
            _ => true,
        }
    }
}

impl std::fmt::Display for Match {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Match::Prefix(p) => write!(f, "prefix {p:?}"),
            Match::Hash([lo, hi]) => write!(f, "hash [{lo}, {hi}]"),
        }
    }
}

/// One rule: the keys it matches belong to `owner`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RuleFields")]
pub struct Rule {
    /// The keys.
    #[serde(flatten)]
    pub matcher: Match,
    /// Their home region.
    pub owner: RegionId,
}

/// A rule as written: exactly one of `prefix` and `hash`, nothing else.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFields {
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    hash: Option<[u64; 2]>,
    owner: RegionId,
}

impl TryFrom<RuleFields> for Rule {
    type Error = String;
    fn try_from(f: RuleFields) -> Result<Self, String> {
        let matcher = match (f.prefix, f.hash) {
            (Some(p), None) => Match::Prefix(p),
            (None, Some(h)) => Match::Hash(h),
            (Some(_), Some(_)) => {
                return Err("a rule matches a prefix or a hash range, not both".into());
            }
            (None, None) => {
                return Err("a rule needs `prefix` or `hash`".into());
            }
        };
        Ok(Rule {
            matcher,
            owner: f.owner,
        })
    }
}

/// What a non-owner does with a write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Sends it to the owner and answers with the owner's answer.
    #[default]
    Forward,
    /// Answers `421` naming the owner.
    Reject,
}

/// What a non-owner does with a write when the owner cannot be reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    /// Refuses it (`503` naming the owner).
    #[default]
    Reject,
    /// Takes it locally under the keyspace's policy, recorded in the
    /// conflict ledger as an ownership fallback.
    Accept,
}

/// Who owns what, at one epoch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// The epoch this layout was current in.
    pub epoch: Epoch,
    /// The rules.
    pub rules: Vec<Rule>,
    /// The owner of keys no rule matches (`None`: no owner, any region
    /// takes them).
    pub default: Option<RegionId>,
    /// Non-owners took writes when the owner was unreachable (fallback
    /// `accept`): any region may have written any key in this epoch.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fallback_accept: bool,
}

impl Layout {
    /// The index of the rule `key` matches, if one does.
    pub fn rule_of(&self, key: &str) -> Option<usize> {
        self.rule_of_ref(&KeyRef::new(key))
    }

    /// [`Layout::rule_of`], sharing the key's hash across calls.
    pub fn rule_of_ref(&self, key: &KeyRef<'_>) -> Option<usize> {
        self.rules.iter().position(|r| r.matcher.matches_ref(key))
    }

    /// The owner of `key`; `None` when it has none.
    pub fn owner_of(&self, key: &str) -> Option<&RegionId> {
        self.owner_of_ref(&KeyRef::new(key))
    }

    /// [`Layout::owner_of`], sharing the key's hash across calls.
    pub fn owner_of_ref(&self, key: &KeyRef<'_>) -> Option<&RegionId> {
        match self.rule_of_ref(key) {
            Some(i) => Some(&self.rules[i].owner),
            None => self.default.as_ref(),
        }
    }
}

/// A keyspace's ownership map, as replicated. Only one region (the
/// steward, [`super::steward`]) writes it, each change at the next epoch,
/// so every region sees the same sequence of maps.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnershipMap {
    /// The current layout (its `epoch` is the map's).
    #[serde(flatten)]
    pub layout: Layout,
    /// What non-owners do with writes.
    #[serde(default)]
    pub mode: Mode,
    /// What non-owners do when the owner cannot be reached.
    #[serde(default)]
    pub fallback: Fallback,
    /// Earlier layouts still needed to fence handoffs, newest first.
    #[serde(default)]
    pub history: Vec<Layout>,
}

/// What an operator asks a map to be (`PUT .../ownership`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapRequest {
    /// The rules, in order.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// The owner of keys no rule matches.
    #[serde(default)]
    pub default: Option<RegionId>,
    /// What non-owners do with writes.
    #[serde(default)]
    pub mode: Mode,
    /// What non-owners do when the owner cannot be reached.
    #[serde(default)]
    pub fallback: Fallback,
    /// The epoch of the map this change follows: the change is made only
    /// if the map is still at it (compare-and-set). `None`: whatever the
    /// map is.
    #[serde(default)]
    pub epoch: Option<Epoch>,
}

/// Which rule a transfer moves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RuleRef {
    /// By position.
    Index(usize),
    /// The keys no rule matches (`"default"`).
    Default(DefaultWord),
    /// By what it matches (`{"prefix": "eu/"}`).
    Match(Match),
}

/// The word `default`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultWord {
    /// `"default"`.
    Default,
}

/// A map change that does not make sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// Two rules can match the same key.
    #[error("rule {a} ({ma}) overlaps rule {b} ({mb}): a key may match only one rule")]
    Overlap {
        /// The first rule.
        a: usize,
        /// What it matches.
        ma: Match,
        /// The second.
        b: usize,
        /// What it matches.
        mb: Match,
    },
    /// A rule that matches nothing, or everything.
    #[error("rule {index}: {reason}")]
    Empty {
        /// The rule.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// A region not in the cluster.
    #[error("{place} names region {region}, which is not in the cluster ({known})")]
    UnknownRegion {
        /// Where (`rule 2`, `default`, `to`).
        place: String,
        /// The name.
        region: String,
        /// The cluster's regions.
        known: String,
    },
    /// Too many rules.
    #[error("{0} rules, over the limit of {MAX_RULES}")]
    TooMany(usize),
    /// The map moved on since the change was read.
    #[error("the map is at epoch {current}, not {expected}: read it again and retry")]
    Stale {
        /// The epoch asked for.
        expected: Epoch,
        /// The epoch it is at.
        current: Epoch,
    },
    /// A transfer names no rule of the map.
    #[error("no rule {0} in the map")]
    NoSuchRule(String),
    /// Ownership maps do not apply to custom keyspaces (their merges are
    /// written back by a per-key merger that does not follow owners).
    #[error("keyspace {0:?} is custom: ownership maps do not apply to custom keyspaces")]
    Custom(String),
    /// A transfer in a keyspace without a map.
    #[error("keyspace {0:?} has no ownership map: set one with PUT first")]
    NoMap(String),
    /// The map is too large to replicate as one entry.
    #[error("the map takes {len} bytes of JSON, over the {max}-byte limit")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
}

impl MapRequest {
    /// Checks the rules against each other and the cluster's `regions`.
    pub fn validate(&self, regions: &[RegionId]) -> Result<(), MapError> {
        if self.rules.len() > MAX_RULES {
            return Err(MapError::TooMany(self.rules.len()));
        }
        let known = |place: String, r: &RegionId| {
            if regions.contains(r) {
                Ok(())
            } else {
                Err(MapError::UnknownRegion {
                    place,
                    region: r.to_string(),
                    known: regions
                        .iter()
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                })
            }
        };
        for (i, r) in self.rules.iter().enumerate() {
            match &r.matcher {
                Match::Prefix(p) if p.is_empty() => {
                    return Err(MapError::Empty {
                        index: i,
                        reason: "an empty prefix matches every key: name the owner in `default`"
                            .into(),
                    });
                }
                Match::Prefix(p) if p.len() > Key::MAX_LEN => {
                    return Err(MapError::Empty {
                        index: i,
                        reason: format!(
                            "a prefix of {} bytes matches no key (keys are at most {} bytes)",
                            p.len(),
                            Key::MAX_LEN
                        ),
                    });
                }
                Match::Hash([lo, hi]) if lo > hi => {
                    return Err(MapError::Empty {
                        index: i,
                        reason: format!("hash range [{lo}, {hi}] is empty (lo > hi)"),
                    });
                }
                _ => {}
            }
            known(format!("rule {i}"), &r.owner)?;
            for (j, earlier) in self.rules[..i].iter().enumerate() {
                if earlier.matcher.overlaps(&r.matcher) {
                    return Err(MapError::Overlap {
                        a: j,
                        ma: earlier.matcher.clone(),
                        b: i,
                        mb: r.matcher.clone(),
                    });
                }
            }
        }
        if let Some(d) = &self.default {
            known("default".into(), d)?;
        }
        Ok(())
    }
}

impl OwnershipMap {
    /// The map's epoch (0: no map was ever set).
    pub fn epoch(&self) -> Epoch {
        self.layout.epoch
    }

    /// The layout current at `epoch`, if this map still knows it. Epoch 0
    /// is the time before any map: no key had an owner.
    pub fn layout_at(&self, epoch: Epoch) -> Option<&Layout> {
        static NONE: Layout = Layout {
            epoch: Epoch(0),
            rules: Vec::new(),
            default: None,
            fallback_accept: false,
        };
        if epoch == self.layout.epoch {
            return Some(&self.layout);
        }
        if epoch == Epoch(0) {
            return Some(&NONE);
        }
        self.history.iter().find(|l| l.epoch == epoch)
    }

    /// The map after `req` (checked already), at the next epoch, keeping
    /// the layouts from `keep_from` on for fencing. `None` when it would
    /// change nothing.
    pub fn next(&self, req: &MapRequest, keep_from: Epoch) -> Option<OwnershipMap> {
        let same = self.layout.rules == req.rules
            && self.layout.default == req.default
            && self.mode == req.mode
            && self.fallback == req.fallback
            && self.epoch() > Epoch(0);
        if same {
            return None;
        }
        let mut history = Vec::with_capacity(self.history.len() + 1);
        if self.epoch() > Epoch(0) {
            history.push(self.layout.clone());
        }
        history.extend(self.history.iter().cloned());
        history.retain(|l| l.epoch >= keep_from);
        history.truncate(MAX_HISTORY);
        Some(OwnershipMap {
            layout: Layout {
                epoch: Epoch(self.epoch().0.saturating_add(1)),
                rules: req.rules.clone(),
                default: req.default.clone(),
                fallback_accept: req.fallback == Fallback::Accept,
            },
            mode: req.mode,
            fallback: req.fallback,
            history,
        })
    }

    /// The request that would give this map again.
    pub fn request(&self) -> MapRequest {
        MapRequest {
            rules: self.layout.rules.clone(),
            default: self.layout.default.clone(),
            mode: self.mode,
            fallback: self.fallback,
            epoch: Some(self.epoch()),
        }
    }

    /// This map's request with the rule `which` moved to `to`.
    pub fn transfer(&self, which: &RuleRef, to: &RegionId) -> Result<MapRequest, MapError> {
        let mut req = self.request();
        match which {
            RuleRef::Default(_) => req.default = Some(to.clone()),
            RuleRef::Index(i) => match req.rules.get_mut(*i) {
                Some(r) => r.owner = to.clone(),
                None => return Err(MapError::NoSuchRule(i.to_string())),
            },
            RuleRef::Match(m) => match req.rules.iter_mut().find(|r| &r.matcher == m) {
                Some(r) => r.owner = to.clone(),
                None => return Err(MapError::NoSuchRule(m.to_string())),
            },
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> RegionId {
        RegionId::new(s).unwrap()
    }

    #[test]
    fn the_key_hash_is_pinned() {
        // SHA-256 of "" and of "abc": these must never change, or every
        // hash rule would move keys between owners.
        assert_eq!(key_hash(""), 0xe3b0_c442_98fc_1c14);
        assert_eq!(key_hash("abc"), 0xba78_16bf_8f01_cfea);
    }

    #[test]
    fn rules_parse_check_and_match() {
        let regions = [r("eu-west"), r("us-east")];
        let req: MapRequest = serde_json::from_str(
            r#"{"rules":[{"prefix":"eu/","owner":"eu-west"},{"prefix":"us/","owner":"us-east"}],"default":null}"#,
        )
        .unwrap();
        req.validate(&regions).unwrap();
        let map = OwnershipMap::default().next(&req, Epoch(0)).unwrap();
        assert_eq!(map.epoch(), Epoch(1));
        assert_eq!(map.layout.owner_of("eu/1"), Some(&r("eu-west")));
        assert_eq!(map.layout.owner_of("us/1"), Some(&r("us-east")));
        assert_eq!(map.layout.owner_of("ap/1"), None);
        assert!(map.next(&map.request(), Epoch(0)).is_none(), "same map");

        let overlap: MapRequest = serde_json::from_str(
            r#"{"rules":[{"prefix":"eu/","owner":"eu-west"},{"prefix":"eu/de/","owner":"us-east"}]}"#,
        )
        .unwrap();
        assert_eq!(
            overlap.validate(&regions).unwrap_err().to_string(),
            "rule 0 (prefix \"eu/\") overlaps rule 1 (prefix \"eu/de/\"): a key may match only one rule"
        );
        let hashes: MapRequest = serde_json::from_str(
            r#"{"rules":[{"hash":[0,9223372036854775807],"owner":"eu-west"},{"hash":[9223372036854775808,18446744073709551615],"owner":"us-east"}]}"#,
        )
        .unwrap();
        hashes.validate(&regions).unwrap();
        let touching: MapRequest = serde_json::from_str(
            r#"{"rules":[{"hash":[0,10],"owner":"eu-west"},{"hash":[10,20],"owner":"us-east"}]}"#,
        )
        .unwrap();
        assert!(matches!(
            touching.validate(&regions),
            Err(MapError::Overlap { a: 0, b: 1, .. })
        ));
        let empty: MapRequest =
            serde_json::from_str(r#"{"rules":[{"hash":[11,10],"owner":"eu-west"}]}"#).unwrap();
        assert!(matches!(
            empty.validate(&regions),
            Err(MapError::Empty { index: 0, .. })
        ));
        let unknown: MapRequest =
            serde_json::from_str(r#"{"rules":[],"default":"ap-south"}"#).unwrap();
        assert_eq!(
            unknown.validate(&regions).unwrap_err().to_string(),
            "default names region ap-south, which is not in the cluster (eu-west, us-east)"
        );
        let mixed: MapRequest = serde_json::from_str(
            r#"{"rules":[{"prefix":"a","owner":"eu-west"},{"hash":[0,1],"owner":"us-east"}]}"#,
        )
        .unwrap();
        assert!(mixed.validate(&regions).is_err());
    }

    #[test]
    fn a_rule_names_one_matcher() {
        for bad in [
            r#"{"prefix":"a","hash":[0,1],"owner":"x"}"#,
            r#"{"prefx":"a","owner":"x"}"#,
            r#"{"owner":"x"}"#,
            r#"{"prefix":"a","owner":"x","colour":"red"}"#,
            r#"{"hash":[1],"owner":"x"}"#,
            r#"{"hash":[0,18446744073709551616],"owner":"x"}"#,
        ] {
            assert!(serde_json::from_str::<Rule>(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn history_keeps_what_fencing_needs() {
        let one = |owner: &str| MapRequest {
            rules: vec![Rule {
                matcher: Match::Prefix("a".into()),
                owner: r(owner),
            }],
            ..MapRequest::default()
        };
        let m1 = OwnershipMap::default().next(&one("x"), Epoch(0)).unwrap();
        let m2 = m1.next(&one("y"), Epoch(0)).unwrap();
        let m3 = m2.next(&one("z"), Epoch(2)).unwrap();
        assert_eq!(m3.epoch(), Epoch(3));
        assert_eq!(
            m3.history.iter().map(|l| l.epoch).collect::<Vec<_>>(),
            [Epoch(2)]
        );
        assert!(m3.layout_at(Epoch(1)).is_none());
        assert_eq!(m3.layout_at(Epoch(0)).unwrap().owner_of("a"), None);
        assert_eq!(m3.layout_at(Epoch(2)).unwrap().owner_of("a"), Some(&r("y")));
        let moved = m3
            .transfer(&RuleRef::Match(Match::Prefix("a".into())), &r("x"))
            .unwrap();
        assert_eq!(moved.rules[0].owner, r("x"));
        assert_eq!(moved.epoch, Some(Epoch(3)));
        let which: RuleRef = serde_json::from_str(r#""default""#).unwrap();
        assert_eq!(which, RuleRef::Default(DefaultWord::Default));
        let which: RuleRef = serde_json::from_str("1").unwrap();
        assert_eq!(which, RuleRef::Index(1));
        let which: RuleRef = serde_json::from_str(r#"{"prefix":"a"}"#).unwrap();
        assert_eq!(which, RuleRef::Match(Match::Prefix("a".into())));
    }
}
