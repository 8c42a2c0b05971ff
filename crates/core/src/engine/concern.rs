//! Write concerns: how many regions, and how many members of this region,
//! must hold a write durably before its client hears success.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How many regions must hold a write durably before the client hears success.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum WriteConcern {
    /// This region (replication is asynchronous).
    #[default]
    Local,
    /// This region and at least one other (semi-synchronous).
    One,
    /// A majority of all regions.
    Majority,
    /// Every region (synchronous).
    All,
}

impl WriteConcern {
    /// Every write concern, weakest first.
    pub const ALL: [WriteConcern; 4] = [
        WriteConcern::Local,
        WriteConcern::One,
        WriteConcern::Majority,
        WriteConcern::All,
    ];

    /// The name used in headers and config.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteConcern::Local => "local",
            WriteConcern::One => "one",
            WriteConcern::Majority => "majority",
            WriteConcern::All => "all",
        }
    }

    /// How many regions in all (this one included) must hold the write, in a
    /// cluster of `regions`.
    pub fn required(self, regions: usize) -> usize {
        let n = regions.max(1);
        match self {
            WriteConcern::Local => 1,
            WriteConcern::One => 2.min(n).max(1),
            WriteConcern::Majority => n / 2 + 1,
            WriteConcern::All => n,
        }
    }
}

impl fmt::Display for WriteConcern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A write concern name that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown write concern {0:?}: expected one of local, one, majority, all, and/or (joined by +) one of standby, region-all"
)]
pub struct UnknownWriteConcern(pub String);

impl FromStr for WriteConcern {
    type Err = UnknownWriteConcern;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WriteConcern::ALL
            .into_iter()
            .find(|w| w.as_str() == s)
            .ok_or_else(|| UnknownWriteConcern(s.to_string()))
    }
}

/// How many members of the writing region (its leader and standbys) must
/// hold a write durably before the client hears success; combined with the
/// cross-region [`WriteConcern`].
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum RegionConcern {
    /// The leader alone.
    #[default]
    Leader,
    /// The leader and at least one standby (semi-synchronous, at LAN cost).
    Standby,
    /// The leader and every live standby.
    RegionAll,
}

impl RegionConcern {
    /// The name used in headers and config.
    pub fn as_str(self) -> &'static str {
        match self {
            RegionConcern::Leader => "leader",
            RegionConcern::Standby => "standby",
            RegionConcern::RegionAll => "region-all",
        }
    }

    /// Whether this is the default (nothing to wait for in the region).
    pub fn is_leader(&self) -> bool {
        *self == RegionConcern::Leader
    }
}

impl fmt::Display for RegionConcern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RegionConcern {
    type Err = UnknownWriteConcern;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            RegionConcern::Leader,
            RegionConcern::Standby,
            RegionConcern::RegionAll,
        ]
        .into_iter()
        .find(|w| w.as_str() == s)
        .ok_or_else(|| UnknownWriteConcern(s.to_string()))
    }
}

/// A whole write concern: across regions and inside the writing one.
/// Written `majority`, `standby`, or both joined by `+` (`one+region-all`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Concern {
    /// Across regions.
    pub regions: WriteConcern,
    /// Inside the writing region.
    pub region: RegionConcern,
}

impl fmt::Display for Concern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.regions, self.region) {
            (r, RegionConcern::Leader) => write!(f, "{r}"),
            (WriteConcern::Local, i) => write!(f, "{i}"),
            (r, i) => write!(f, "{r}+{i}"),
        }
    }
}

impl FromStr for Concern {
    type Err = UnknownWriteConcern;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || UnknownWriteConcern(s.to_string());
        let mut c = Concern::default();
        let (mut across, mut inside) = (false, false);
        for part in s.split('+') {
            let part = part.trim();
            if let Ok(w) = part.parse::<WriteConcern>() {
                if across {
                    return Err(bad());
                }
                across = true;
                c.regions = w;
            } else if let Ok(r) = part.parse::<RegionConcern>() {
                if inside {
                    return Err(bad());
                }
                inside = true;
                c.region = r;
            } else {
                return Err(bad());
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_concern_counts() {
        assert_eq!(WriteConcern::Local.required(3), 1);
        assert_eq!(WriteConcern::One.required(3), 2);
        assert_eq!(WriteConcern::Majority.required(3), 2);
        assert_eq!(WriteConcern::Majority.required(5), 3);
        assert_eq!(WriteConcern::All.required(3), 3);
        assert_eq!(WriteConcern::One.required(1), 1);
        assert_eq!(
            "majority".parse::<WriteConcern>().unwrap(),
            WriteConcern::Majority
        );
        assert!("quorum".parse::<WriteConcern>().is_err());
    }

    #[test]
    fn concerns_parse_alone_and_joined() {
        let c: Concern = "majority+standby".parse().unwrap();
        assert_eq!(
            (c.regions, c.region),
            (WriteConcern::Majority, RegionConcern::Standby)
        );
        let c: Concern = "region-all".parse().unwrap();
        assert_eq!(
            (c.regions, c.region),
            (WriteConcern::Local, RegionConcern::RegionAll)
        );
        let c: Concern = "all".parse().unwrap();
        assert_eq!(
            (c.regions, c.region),
            (WriteConcern::All, RegionConcern::Leader)
        );
        assert_eq!(c.to_string(), "all");
        assert_eq!(
            "one+region-all".parse::<Concern>().unwrap().to_string(),
            "one+region-all"
        );
        for bad in [
            "",
            "standby+standby",
            "one+all",
            "quorum",
            "one+",
            "standby+leaderx",
        ] {
            assert!(bad.parse::<Concern>().is_err(), "{bad:?}");
        }
    }
}
