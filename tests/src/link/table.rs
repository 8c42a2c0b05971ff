//! The registry of directed links and every operation that changes them.
//! Shared by the [`LinkEmulator`](super::LinkEmulator) facade and the
//! control API, so both behave identically.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use super::directed::DirectedLink;
use super::spec::MAX_MS;
use super::{LinkError, LinkSpec, LinkSpecPatch, LinkStats};

/// Everything known about one directed link at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkInfo {
    /// The region that connects through this link.
    pub from: String,
    /// The region whose peer listener the link forwards to.
    pub to: String,
    /// The link's own port: region `from` reaches `to` here.
    pub listen: SocketAddr,
    /// Where accepted connections are forwarded.
    pub upstream: SocketAddr,
    /// The link's current behaviour.
    pub spec: LinkSpec,
    /// The link's counters.
    pub stats: LinkStats,
}

impl LinkInfo {
    fn of(link: &DirectedLink) -> LinkInfo {
        LinkInfo {
            from: link.from.clone(),
            to: link.to.clone(),
            listen: link.listen,
            upstream: link.upstream(),
            spec: link.spec(),
            stats: link.stats(),
        }
    }
}

/// Region names go into URLs and `FROM:TO=...` arguments, so they are kept
/// to a safe alphabet.
pub(crate) fn check_region(name: &str) -> Result<(), LinkError> {
    let reason = if name.is_empty() {
        "must not be empty"
    } else if name.len() > 64 {
        "must be at most 64 bytes"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        "may only hold ASCII letters, digits, '-', '_' and '.'"
    } else {
        return Ok(());
    };
    Err(LinkError::BadRegion {
        name: name.to_owned(),
        reason: reason.to_owned(),
    })
}

/// Directed links keyed by `(from, to)`; a `BTreeMap` so listings come out
/// in a stable order.
#[derive(Debug, Default)]
pub(crate) struct LinkTable {
    links: Mutex<BTreeMap<(String, String), Arc<DirectedLink>>>,
}

impl LinkTable {
    /// Every lookup clones `Arc`s out, so the map lock is never held while a
    /// link is changed, and never across an await.
    fn select(&self, mut keep: impl FnMut(&DirectedLink) -> bool) -> Vec<Arc<DirectedLink>> {
        let links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        links.values().filter(|link| keep(link)).cloned().collect()
    }

    pub(crate) fn get(&self, from: &str, to: &str) -> Result<Arc<DirectedLink>, LinkError> {
        let links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        links
            .get(&(from.to_owned(), to.to_owned()))
            .cloned()
            .ok_or_else(|| LinkError::UnknownLink {
                from: from.to_owned(),
                to: to.to_owned(),
            })
    }

    pub(crate) fn contains(&self, from: &str, to: &str) -> bool {
        self.get(from, to).is_ok()
    }

    pub(crate) fn insert(&self, link: Arc<DirectedLink>) -> Result<(), LinkError> {
        let mut links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (link.from.clone(), link.to.clone());
        if links.contains_key(&key) {
            return Err(LinkError::DuplicateLink {
                from: key.0,
                to: key.1,
            });
        }
        links.insert(key, link);
        Ok(())
    }

    pub(crate) fn info(&self, from: &str, to: &str) -> Result<LinkInfo, LinkError> {
        let link = self.get(from, to)?;
        Ok(LinkInfo::of(&link))
    }

    pub(crate) fn all(&self) -> Vec<LinkInfo> {
        self.select(|_| true)
            .iter()
            .map(|link| LinkInfo::of(link))
            .collect()
    }

    pub(crate) fn set_spec(&self, from: &str, to: &str, spec: LinkSpec) -> Result<(), LinkError> {
        spec.validate()?;
        self.get(from, to)?.set_spec(spec);
        Ok(())
    }

    pub(crate) fn patch(
        &self,
        from: &str,
        to: &str,
        patch: &LinkSpecPatch,
    ) -> Result<LinkSpec, LinkError> {
        self.get(from, to)?.update_spec(|spec| spec.patched(patch))
    }

    pub(crate) fn set_upstream(
        &self,
        from: &str,
        to: &str,
        upstream: SocketAddr,
    ) -> Result<(), LinkError> {
        self.get(from, to)?.set_upstream(upstream);
        Ok(())
    }

    /// Both directed links between `a` and `b` that exist; an error if none.
    fn pair(&self, a: &str, b: &str) -> Result<Vec<Arc<DirectedLink>>, LinkError> {
        let links = self
            .select(|link| (link.from == a && link.to == b) || (link.from == b && link.to == a));
        if links.is_empty() {
            return Err(LinkError::UnknownPair {
                a: a.to_owned(),
                b: b.to_owned(),
            });
        }
        Ok(links)
    }

    fn update_all(links: &[Arc<DirectedLink>], change: impl Fn(&mut LinkSpec)) -> usize {
        for link in links {
            // Callers only change fields that cannot fail validation.
            let _ = link.update_spec(|spec| {
                let mut next = *spec;
                change(&mut next);
                next
            });
        }
        links.len()
    }

    pub(crate) fn set_latency_pair(&self, a: &str, b: &str, ms: u64) -> Result<usize, LinkError> {
        if ms > MAX_MS {
            return Err(LinkError::BadSpec {
                field: "latency_ms".to_owned(),
                reason: format!("must be at most {MAX_MS} ms, got {ms}"),
            });
        }
        let links = self.pair(a, b)?;
        Ok(Self::update_all(&links, |spec| spec.latency_ms = ms))
    }

    pub(crate) fn partition(&self, a: &str, b: &str) -> Result<usize, LinkError> {
        let links = self.pair(a, b)?;
        Ok(Self::update_all(&links, |spec| spec.partitioned = true))
    }

    pub(crate) fn isolate(&self, region: &str) -> Result<usize, LinkError> {
        let links = self.select(|link| link.from == region || link.to == region);
        if links.is_empty() {
            return Err(LinkError::UnknownRegion {
                region: region.to_owned(),
            });
        }
        Ok(Self::update_all(&links, |spec| spec.partitioned = true))
    }

    pub(crate) fn heal(&self, a: &str, b: &str) -> Result<usize, LinkError> {
        let links = self.pair(a, b)?;
        Ok(Self::update_all(&links, |spec| spec.partitioned = false))
    }

    pub(crate) fn heal_all(&self) -> usize {
        let links = self.select(|_| true);
        Self::update_all(&links, |spec| spec.partitioned = false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_names_are_checked() {
        assert!(check_region("us-east").is_ok());
        assert!(check_region("ap_south.2").is_ok());
        for bad in ["", "us east", "a:b", "a/b", "é"] {
            let err = check_region(bad).unwrap_err();
            assert!(matches!(err, LinkError::BadRegion { .. }), "{bad}: {err}");
        }
    }
}
