//! `[standby]`: whether this process follows its region's leader, how it is
//! reached, and when a follower takes over.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

fn default_failover_ms() -> u64 {
    2_000
}
fn default_heartbeat_ms() -> u64 {
    200
}

/// What a follower does with a write sent to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FollowerWrites {
    /// Pass it to the leader and relay the answer (the default).
    #[default]
    Forward,
    /// Answer `421` naming the leader's client URL.
    Reject,
}

/// Standby settings, as written in the file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StandbyConfig {
    /// The region leader's peer API (`http://host:port`): set, this process
    /// starts as a follower of it. Only a fresh data directory reads it: after
    /// a failover, the directory's `standby.json` says who leads.
    #[serde(default)]
    pub follow: Option<String>,
    /// How the leader and the other members reach this process's peer API
    /// (default: `http://` + `peer_listen`).
    #[serde(default)]
    pub advertise_peer_url: Option<String>,
    /// How clients reach this process's client API, named in redirects
    /// (default: `http://` + `listen`).
    #[serde(default)]
    pub advertise_client_url: Option<String>,
    /// A follower that has not heard from its leader for this long, ms,
    /// promotes itself if no other member is more caught up (0: only
    /// `meridian ctl promote`).
    #[serde(default = "default_failover_ms")]
    pub failover_timeout_ms: u64,
    /// How often a follower tells its leader it is there, ms.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// `forward` (default) or `reject` (`421` with the leader's URL).
    #[serde(default)]
    pub writes: FollowerWrites,
}

impl Default for StandbyConfig {
    fn default() -> Self {
        Self {
            follow: None,
            advertise_peer_url: None,
            advertise_client_url: None,
            failover_timeout_ms: default_failover_ms(),
            heartbeat_ms: default_heartbeat_ms(),
            writes: FollowerWrites::Forward,
        }
    }
}

/// Checked standby settings.
#[derive(Clone, Debug)]
pub struct StandbySettings {
    /// The leader's peer URL a fresh follower starts from.
    pub follow: Option<String>,
    /// This process's peer URL as others use it (unset: from the address
    /// the peer listener bound).
    pub peer_url: Option<String>,
    /// This process's client URL as clients use it (unset: from the
    /// address the client listener bound).
    pub client_url: Option<String>,
    /// Automatic failover after this long without the leader, ms (0: off).
    pub failover_timeout_ms: u64,
    /// Heartbeat interval, ms.
    pub heartbeat_ms: u64,
    /// What a follower does with writes.
    pub writes: FollowerWrites,
}

impl StandbySettings {
    /// Whether a fresh data directory starts as a follower: `follow` is
    /// set and is not this member's own advertised peer URL (every member
    /// of a region may share one file naming the first leader; that one
    /// leads).
    pub fn starts_as_follower(&self) -> bool {
        self.follow
            .as_ref()
            .is_some_and(|f| self.peer_url.as_ref() != Some(f))
    }
}

/// A `http://host:port` (or `https://`) URL, without a trailing slash,
/// or why not.
pub fn base_url(s: &str) -> Result<String, String> {
    let url = s.trim().trim_end_matches('/').to_string();
    let ok = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'));
    if ok {
        Ok(url)
    } else {
        Err(format!(
            "{s:?} must look like http://host:port or https://host:port"
        ))
    }
}

impl StandbyConfig {
    /// Checks the settings; errors name the field (under `standby.`).
    pub fn validate(
        &self,
        listen: SocketAddr,
        peer_listen: Option<SocketAddr>,
        has_secret: bool,
    ) -> Result<StandbySettings, (String, String)> {
        let f = |name: &str, m: String| (format!("standby.{name}"), m);
        let follow = self
            .follow
            .as_deref()
            .map(base_url)
            .transpose()
            .map_err(|m| f("follow", m))?;
        if follow.is_some() && (peer_listen.is_none() || !has_secret) {
            return Err(f(
                "follow",
                "a follower needs a peer listener (--peer-listen) and the cluster secret: its leader ships to it there".into(),
            ));
        }
        let _ = listen;
        let peer_url = self
            .advertise_peer_url
            .as_deref()
            .map(base_url)
            .transpose()
            .map_err(|m| f("advertise_peer_url", m))?;
        let client_url = self
            .advertise_client_url
            .as_deref()
            .map(base_url)
            .transpose()
            .map_err(|m| f("advertise_client_url", m))?;
        if !(20..=10_000).contains(&self.heartbeat_ms) {
            return Err(f("heartbeat_ms", "must be in 20..=10000".into()));
        }
        if self.failover_timeout_ms != 0 && self.failover_timeout_ms < 3 * self.heartbeat_ms {
            return Err(f(
                "failover_timeout_ms",
                format!(
                    "{} is under three heartbeats ({} ms): a follower would take over from a leader that is only slow (0 turns automatic failover off)",
                    self.failover_timeout_ms,
                    3 * self.heartbeat_ms
                ),
            ));
        }
        Ok(StandbySettings {
            follow,
            peer_url,
            client_url,
            failover_timeout_ms: self.failover_timeout_ms,
            heartbeat_ms: self.heartbeat_ms,
            writes: self.writes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    #[test]
    fn a_follower_needs_a_peer_listener_and_the_secret() {
        let c = StandbyConfig {
            follow: Some("http://10.0.0.1:7171".into()),
            ..Default::default()
        };
        let e = c.validate(addr(1), None, true).unwrap_err();
        assert_eq!(e.0, "standby.follow");
        let e = c.validate(addr(1), Some(addr(2)), false).unwrap_err();
        assert_eq!(e.0, "standby.follow");
        let s = c.validate(addr(1), Some(addr(2)), true).unwrap();
        assert_eq!(s.follow.as_deref(), Some("http://10.0.0.1:7171"));
        assert_eq!(s.peer_url, None, "taken from the bound address at start");
        let c = StandbyConfig {
            advertise_peer_url: Some("http://10.0.0.2:7171/".into()),
            advertise_client_url: Some("10.0.0.2:7070".into()),
            ..c
        };
        let e = c.validate(addr(1), Some(addr(2)), true).unwrap_err();
        assert_eq!(e.0, "standby.advertise_client_url");
    }

    #[test]
    fn the_member_named_by_follow_starts_as_the_leader() {
        let c = StandbyConfig {
            follow: Some("http://m0:7170".into()),
            advertise_peer_url: Some("http://m0:7170".into()),
            ..Default::default()
        };
        assert!(
            !c.validate(addr(1), Some(addr(2)), true)
                .unwrap()
                .starts_as_follower()
        );
        let c = StandbyConfig {
            advertise_peer_url: Some("http://m1:7170".into()),
            ..c
        };
        assert!(
            c.validate(addr(1), Some(addr(2)), true)
                .unwrap()
                .starts_as_follower()
        );
        assert!(
            !StandbyConfig::default()
                .validate(addr(1), Some(addr(2)), true)
                .unwrap()
                .starts_as_follower()
        );
    }

    #[test]
    fn failover_timeout_at_and_under_three_heartbeats() {
        let mut c = StandbyConfig {
            heartbeat_ms: 100,
            failover_timeout_ms: 300,
            ..Default::default()
        };
        assert!(c.validate(addr(1), None, false).is_ok());
        c.failover_timeout_ms = 299;
        let e = c.validate(addr(1), None, false).unwrap_err();
        assert_eq!(e.0, "standby.failover_timeout_ms");
        c.failover_timeout_ms = 0;
        assert!(c.validate(addr(1), None, false).is_ok(), "0 turns it off");
        c.heartbeat_ms = 19;
        assert_eq!(
            c.validate(addr(1), None, false).unwrap_err().0,
            "standby.heartbeat_ms"
        );
    }

    #[test]
    fn urls_must_be_bare_http_bases() {
        assert_eq!(base_url("http://a:1/").unwrap(), "http://a:1");
        assert_eq!(base_url("https://a:1").unwrap(), "https://a:1");
        assert!(base_url("ftp://a:1").is_err());
        assert!(base_url("https://").is_err());
        assert!(base_url("http://a:1/x").is_err());
        assert!(base_url("http://").is_err());
    }
}
