//! A cluster of real `meridian serve` processes, every peer connection
//! through the link emulator, and the faults tests inflict on it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use meridian_harness::cluster::Cluster;
//! let mut c = Cluster::builder().regions(["us-east", "eu-west", "ap-south"]).latency_ms(40).start().await?;
//! c.client("us-east").put("default", "k", &serde_json::json!(1)).await?;
//! c.partition("us-east", "eu-west")?;
//! c.heal();
//! c.wait_converged(std::time::Duration::from_secs(30)).await?;
//! c.stop().await;
//! # Ok(()) }
//! ```
//!
//! Why past ~400 lines: the `Cluster` builder and handle: every operation a
//! suite performs on a whole cluster (start, kill, pause, partition, wait for
//! convergence).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use meridian_client::Client;
use serde_json::Value;

use crate::link::{LinkEmulator, LinkError, LinkSpec};
use crate::node::{Node, NodeError, NodeSpec, meridian_bin};

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A process.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The link emulator.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// A region name not in the cluster.
    #[error("no region {0} in this cluster")]
    NoSuchRegion(String),
    /// Setting up directories, ports.
    #[error("setup: {0}")]
    Setup(String),
    /// The regions did not converge in time.
    #[error("not converged after {secs} s: {detail}")]
    NotConverged {
        /// How long we waited.
        secs: u64,
        /// What differed.
        detail: String,
    },
}

/// Builds a [`Cluster`].
pub struct ClusterBuilder {
    regions: Vec<String>,
    latency: BTreeMap<(String, String), u64>,
    default_latency: u64,
    dir: Option<PathBuf>,
    args: Vec<String>,
    skew: BTreeMap<String, i64>,
    seed: u64,
    env: Vec<(String, String)>,
    region_env: Vec<(String, String, String)>,
    bin: Option<PathBuf>,
    standbys: usize,
    access_token: Option<String>,
}

/// A running cluster.
pub struct Cluster {
    /// The regions, in the order given.
    pub regions: Vec<String>,
    /// Each region's members: its first leader (named like the region),
    /// then its standbys (`REGION-s1`, ...).
    pub members: BTreeMap<String, Vec<String>>,
    nodes: BTreeMap<String, Node>,
    peer_addr: BTreeMap<String, SocketAddr>,
    emu: LinkEmulator,
    dir: PathBuf,
    remove_dir: bool,
}

impl Cluster {
    /// A builder: three regions (`us-east`, `eu-west`, `ap-south`), no latency.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            regions: vec!["us-east".into(), "eu-west".into(), "ap-south".into()],
            latency: BTreeMap::new(),
            default_latency: 0,
            dir: None,
            args: Vec::new(),
            skew: BTreeMap::new(),
            seed: 1,
            env: Vec::new(),
            region_env: Vec::new(),
            bin: None,
            standbys: 0,
            access_token: None,
        }
    }
}

impl ClusterBuilder {
    /// The regions.
    pub fn regions<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.regions = names.into_iter().map(Into::into).collect();
        self
    }

    /// Standbys per region (default 0): each follows its region's leader,
    /// every member's peer traffic through its own links (same-region links
    /// have no latency), and [`Cluster::client`] goes to any member of the
    /// region.
    pub fn standbys(mut self, n: usize) -> Self {
        self.standbys = n;
        self
    }

    /// One-way latency of every link, ms.
    pub fn latency_ms(mut self, ms: u64) -> Self {
        self.default_latency = ms;
        self
    }

    /// One-way latency between `a` and `b` (both directions), ms.
    pub fn pair_latency_ms(mut self, a: &str, b: &str, ms: u64) -> Self {
        self.latency.insert((a.to_string(), b.to_string()), ms);
        self.latency.insert((b.to_string(), a.to_string()), ms);
        self
    }

    /// Where the regions' data and logs go (default: a fresh temporary
    /// directory, removed by [`Cluster::stop`]).
    pub fn dir(mut self, dir: &Path) -> Self {
        self.dir = Some(dir.to_path_buf());
        self
    }

    /// Extra `meridian serve` arguments for every region.
    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Starts `region` with its wall clock shifted by `ms`.
    pub fn clock_skew_ms(mut self, region: &str, ms: i64) -> Self {
        self.skew.insert(region.to_string(), ms);
        self
    }

    /// Every member asks for access tokens, with `bootstrap` as the admin
    /// token the cluster's clients send.
    pub fn access_token(mut self, bootstrap: &str) -> Self {
        self.access_token = Some(bootstrap.to_string());
        self
    }

    /// An environment variable for every region (e.g. a `MERIDIAN_` setting).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// An environment variable for every member of `region` only (e.g. a
    /// setting that makes one region speak like an older build).
    pub fn region_env(mut self, region: &str, key: &str, value: &str) -> Self {
        self.region_env
            .push((region.to_string(), key.to_string(), value.to_string()));
        self
    }

    /// The `meridian` binary to run (default: [`meridian_bin`]).
    pub fn binary(mut self, bin: &Path) -> Self {
        self.bin = Some(bin.to_path_buf());
        self
    }

    /// Seed of the link emulator's random draws.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Starts the link emulator and every region, and waits until each serves.
    pub async fn start(self) -> Result<Cluster, ClusterError> {
        let (dir, remove_dir) = match self.dir {
            Some(d) => (d, false),
            None => {
                static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let d = std::env::temp_dir().join(format!(
                    "meridian-cluster-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                ));
                let _ = std::fs::remove_dir_all(&d);
                (d, true)
            }
        };
        std::fs::create_dir_all(&dir).map_err(|e| ClusterError::Setup(e.to_string()))?;
        let secret = dir.join("cluster-secret");
        std::fs::write(&secret, "harness-cluster-secret-0123456789")
            .map_err(|e| ClusterError::Setup(e.to_string()))?;
        // Links are made first, pointing nowhere (connections to port 1 are
        // refused, and senders retry); each points at its region's peer API
        // once that region has started and said which port it bound.
        let nowhere = SocketAddr::from(([127, 0, 0, 1], 1));
        let mut peer_addr = BTreeMap::new();
        let emu = LinkEmulator::new(self.seed);
        let mut via = BTreeMap::new();
        let members: BTreeMap<String, Vec<String>> = self
            .regions
            .iter()
            .map(|r| {
                let mut ms = vec![r.clone()];
                ms.extend((1..=self.standbys).map(|i| format!("{r}-s{i}")));
                (r.clone(), ms)
            })
            .collect();
        let all: Vec<(String, String)> = members
            .iter()
            .flat_map(|(r, ms)| ms.iter().map(move |m| (r.clone(), m.clone())))
            .collect();
        for (fr, from) in &all {
            for (tr, to) in &all {
                if from == to {
                    continue;
                }
                let ms = if fr == tr {
                    0
                } else {
                    self.latency
                        .get(&(fr.clone(), tr.clone()))
                        .copied()
                        .unwrap_or(self.default_latency)
                };
                let listen = emu
                    .add_link(from, to, nowhere, LinkSpec::latency(ms))
                    .await?;
                via.insert((from.clone(), to.clone()), listen);
            }
        }
        let mut nodes = BTreeMap::new();
        // Leaders first: standbys follow them from the start.
        let order: Vec<&(String, String)> = all
            .iter()
            .filter(|(r, m)| r == m)
            .chain(all.iter().filter(|(r, m)| r != m))
            .collect();
        for (r, m) in order {
            let mut spec = NodeSpec::new(r, &dir.join(m).join("data"));
            if m == r {
                // As before standbys: the region's data and log where they were.
                spec = NodeSpec::new(r, &dir.join(r));
            }
            spec.peer_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
            spec.args = vec!["--cluster-secret-file".into(), secret.display().to_string()];
            for other in self.regions.iter().filter(|o| *o != r) {
                let urls: Vec<String> = members[other]
                    .iter()
                    .map(|om| format!("http://{}", via[&(m.clone(), om.clone())]))
                    .collect();
                spec.args.push("--peer".into());
                spec.args.push(format!("{other}={}", urls.join(",")));
            }
            if self.standbys > 0 {
                // How the region's other members reach this one: the link
                // from the first standby for the leader, from the leader
                // for a standby.
                let from = if m == r {
                    members[r][1].clone()
                } else {
                    r.clone()
                };
                spec.args.push("--advertise-peer-url".into());
                spec.args
                    .push(format!("http://{}", via[&(from, m.clone())]));
                if m != r {
                    spec.args.push("--follow".into());
                    spec.args
                        .push(format!("http://{}", via[&(m.clone(), r.clone())]));
                }
            }
            if let Some(ms) = self.skew.get(r) {
                spec.args.push(format!("--clock-skew-ms={ms}"));
            }
            spec.args.extend(self.args.iter().cloned());
            if let Some(t) = &self.access_token {
                spec = spec.with_tokens(t);
            }
            spec.env.extend(self.env.iter().cloned());
            spec.env.extend(
                self.region_env
                    .iter()
                    .filter(|(region, _, _)| region == r)
                    .map(|(_, k, v)| (k.clone(), v.clone())),
            );
            let bin = self.bin.clone().unwrap_or_else(meridian_bin);
            let node = Node::start(&bin, spec).await?;
            let bound = node.peer_addr().ok_or_else(|| {
                ClusterError::Setup(format!("{m} did not print its peer API address"))
            })?;
            for (_, other) in all.iter().filter(|(_, o)| o != m) {
                emu.set_upstream(other, m, bound)?;
            }
            peer_addr.insert(m.clone(), bound);
            nodes.insert(m.clone(), node);
        }
        Ok(Cluster {
            regions: self.regions,
            members,
            nodes,
            peer_addr,
            emu,
            dir,
            remove_dir,
        })
    }
}

impl Cluster {
    fn node(&self, region: &str) -> Result<&Node, ClusterError> {
        self.nodes
            .get(region)
            .ok_or_else(|| ClusterError::NoSuchRegion(region.to_string()))
    }

    fn node_mut(&mut self, region: &str) -> Result<&mut Node, ClusterError> {
        self.nodes
            .get_mut(region)
            .ok_or_else(|| ClusterError::NoSuchRegion(region.to_string()))
    }

    /// A client of `region`'s API.
    ///
    /// # Panics
    /// When `region` is not in the cluster (a test bug).
    pub fn client(&self, region: &str) -> Client {
        match self.members.get(region).filter(|ms| ms.len() > 1) {
            // Any member of the region: a standby forwards writes, and the
            // client moves on when a member does not answer.
            Some(ms) => {
                let mut b = Client::builder()
                    .regions(ms.iter().map(|m| {
                        self.node(m)
                            .map(Node::url)
                            .unwrap_or_else(|e| panic!("{e}"))
                    }))
                    .timeout(Duration::from_secs(10));
                if let Some(t) = ms
                    .first()
                    .and_then(|m| self.node(m).ok())
                    .and_then(|n| n.spec.access_token.clone())
                {
                    b = b.access_token(t);
                }
                b.build().unwrap_or_else(|e| panic!("{e}"))
            }
            None => self
                .node(region)
                .map(Node::client)
                .unwrap_or_else(|e| panic!("{e}")),
        }
    }

    /// A client of one member only (a region's leader is named like the
    /// region; its standbys `REGION-s1`, ...).
    ///
    /// # Panics
    /// When `member` is not in the cluster (a test bug).
    pub fn member_client(&self, member: &str) -> Client {
        self.node(member)
            .map(Node::client)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The member of `region` that leads it now (the highest epoch among
    /// those that say they lead), if any answers.
    pub async fn leader_of(&self, region: &str) -> Option<String> {
        let mut best: Option<(u64, String)> = None;
        for m in self.members.get(region)? {
            let Ok(node) = self.node(m) else { continue };
            let Ok(s) = node.client().status().await else {
                continue;
            };
            if s["standby"]["role"] == "leader" {
                let e = s["standby"]["epoch"].as_u64().unwrap_or(0);
                if best.as_ref().is_none_or(|(b, _)| e > *b) {
                    best = Some((e, m.clone()));
                }
            }
        }
        best.map(|(_, m)| m)
    }

    /// Waits up to `within` for a member of `region` other than `not` to
    /// lead it; its name.
    pub async fn wait_leader_other_than(
        &self,
        region: &str,
        not: &str,
        within: Duration,
    ) -> Result<String, ClusterError> {
        let start = Instant::now();
        while start.elapsed() < within {
            if let Some(m) = self.leader_of(region).await
                && m != not
            {
                return Ok(m);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(ClusterError::Setup(format!(
            "no member of {region} but {not} leads after {} s",
            within.as_secs()
        )))
    }

    /// Every pair of members between `a` and `b` (regions or members).
    fn member_pairs(&self, a: &str, b: &str) -> Vec<(String, String)> {
        let side = |x: &str| -> Vec<String> {
            match self.members.get(x) {
                Some(ms) => ms.clone(),
                None => vec![x.to_string()],
            }
        };
        let mut out = Vec::new();
        for x in side(a) {
            for y in side(b) {
                if x != y {
                    out.push((x.clone(), y));
                }
            }
        }
        out
    }

    /// `region`'s client URL.
    pub fn url(&self, region: &str) -> Result<String, ClusterError> {
        Ok(self.node(region)?.url())
    }

    /// `region`'s peer API, directly (not through a link).
    pub fn peer_url(&self, region: &str) -> Result<String, ClusterError> {
        self.peer_addr
            .get(region)
            .map(|a| format!("http://{a}"))
            .ok_or_else(|| ClusterError::NoSuchRegion(region.to_string()))
    }

    /// The link emulator (for finer control).
    pub fn links(&self) -> &LinkEmulator {
        &self.emu
    }

    /// The directory holding data, logs and the cluster secret.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Cuts both directions between `a` and `b`.
    /// With standbys, a region name stands for all its members and a
    /// member name (`eu-west-s1`) for that member alone.
    pub fn partition(&self, a: &str, b: &str) -> Result<(), ClusterError> {
        for (x, y) in self.member_pairs(a, b) {
            self.emu.partition(&x, &y)?;
        }
        Ok(())
    }

    /// Cuts `region` off from every other region (its members still reach
    /// one another).
    pub fn partition_off(&self, region: &str) -> Result<(), ClusterError> {
        if self.standbys() == 0 {
            self.emu.isolate(region)?;
            return Ok(());
        }
        for other in self.regions.iter().filter(|o| *o != region) {
            self.partition(region, other)?;
        }
        Ok(())
    }

    /// Heals the link between `a` and `b` only.
    pub fn heal_pair(&self, a: &str, b: &str) -> Result<(), ClusterError> {
        for (x, y) in self.member_pairs(a, b) {
            self.emu.heal(&x, &y)?;
        }
        Ok(())
    }

    /// Standbys per region.
    pub fn standbys(&self) -> usize {
        self.members.values().map(Vec::len).max().unwrap_or(1) - 1
    }

    /// Stops `region` cleanly (SIGTERM); [`Cluster::restart`] starts it again.
    pub async fn stop_region(&mut self, region: &str) -> Result<(), ClusterError> {
        let clean = self
            .node_mut(region)?
            .terminate(Duration::from_secs(10))
            .await?;
        if !clean {
            return Err(ClusterError::Setup(format!(
                "{region} did not exit cleanly on SIGTERM"
            )));
        }
        Ok(())
    }

    /// Waits (up to `within`) for `region`'s process to exit by itself;
    /// its exit status, or `None` while it runs.
    pub async fn wait_exit(
        &mut self,
        region: &str,
        within: Duration,
    ) -> Result<Option<std::process::ExitStatus>, ClusterError> {
        Ok(self.node_mut(region)?.wait_exit(within).await)
    }

    /// Heals every partition.
    pub fn heal(&self) {
        self.emu.heal_all();
    }

    /// Sets the one-way latency between `a` and `b`, ms.
    pub fn latency(&self, a: &str, b: &str, ms: u64) -> Result<(), ClusterError> {
        for (x, y) in self.member_pairs(a, b) {
            self.emu.set_latency_pair(&x, &y, ms)?;
        }
        Ok(())
    }

    /// SIGKILL.
    pub async fn kill(&mut self, region: &str) -> Result<(), ClusterError> {
        self.node_mut(region)?.kill9().await;
        Ok(())
    }

    /// Starts a killed (or running: it is killed first) region again.
    pub async fn restart(&mut self, region: &str) -> Result<(), ClusterError> {
        self.node_mut(region)?.restart().await?;
        Ok(())
    }

    /// Restarts `region` with its wall clock shifted by `ms` (0: correct).
    pub async fn set_clock_skew(&mut self, region: &str, ms: i64) -> Result<(), ClusterError> {
        let node = self.node_mut(region)?;
        node.spec.args.retain(|a| !a.starts_with("--clock-skew-ms"));
        node.spec.args.push(format!("--clock-skew-ms={ms}"));
        node.restart().await?;
        Ok(())
    }

    /// SIGSTOP.
    pub fn pause(&self, region: &str) -> Result<(), ClusterError> {
        self.node(region)?.pause()?;
        Ok(())
    }

    /// SIGCONT.
    pub fn resume(&self, region: &str) -> Result<(), ClusterError> {
        self.node(region)?.resume()?;
        Ok(())
    }

    /// Every member's `/v1/status` (with no standbys: every region's).
    pub async fn statuses(&self) -> BTreeMap<String, Result<Value, String>> {
        let mut out = BTreeMap::new();
        for ms in self.members.values() {
            for m in ms {
                let s = self
                    .member_client(m)
                    .status()
                    .await
                    .map_err(|e| e.to_string());
                out.insert(m.clone(), s);
            }
        }
        out
    }

    /// Waits until every member reports the same version vector and the same
    /// digest for every keyspace; returns how long it took.
    pub async fn wait_converged(&self, within: Duration) -> Result<Duration, ClusterError> {
        let start = Instant::now();
        let mut detail = String::new();
        while start.elapsed() < within {
            let st = self.statuses().await;
            let views: Vec<(String, Value, Value)> = st
                .iter()
                .filter_map(|(r, s)| {
                    let s = s.as_ref().ok()?;
                    Some((r.clone(), s["vv"].clone(), s["keyspaces"].clone()))
                })
                .collect();
            if views.len() == self.nodes.len()
                && views
                    .windows(2)
                    .all(|w| w[0].1 == w[1].1 && w[0].2 == w[1].2)
            {
                return Ok(start.elapsed());
            }
            detail = st
                .iter()
                .map(|(r, s)| match s {
                    Ok(v) => format!("{r}: {} ops", v["ops"]),
                    Err(e) => format!("{r}: {e}"),
                })
                .collect::<Vec<_>>()
                .join(", ");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(ClusterError::NotConverged {
            secs: within.as_secs(),
            detail,
        })
    }

    /// Stops every region (SIGTERM, then SIGKILL if it lingers) and the
    /// links; removes the directory if the cluster made it.
    pub async fn stop(mut self) {
        for node in self.nodes.values_mut() {
            let _ = node.terminate(Duration::from_secs(10)).await;
        }
        self.emu.shutdown().await;
    }
}

impl Drop for Cluster {
    /// A test that panics still cleans up: the processes die with their
    /// `Node`s (kill on drop), and the data directory goes here.
    fn drop(&mut self) {
        if self.remove_dir {
            self.nodes.clear();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
