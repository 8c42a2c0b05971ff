//! One region as a real process: start, stop, SIGKILL, SIGSTOP, restart.
//!
//! Why past ~400 lines: one region process and every way a test drives it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use meridian_client::Client;
use tokio::process::{Child, Command};

/// Why a node could not be managed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Spawning or signalling failed.
    #[error("node {region}: {what}: {source}")]
    Io {
        /// The region.
        region: String,
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The process did not come up.
    #[error("node {region} did not start within {secs} s; its log ({log}) ends with:\n{tail}")]
    NotReady {
        /// The region.
        region: String,
        /// How long we waited.
        secs: u64,
        /// The log file.
        log: String,
        /// Its last lines.
        tail: String,
    },
    /// The process exited while starting.
    #[error("node {region} exited while starting ({status}); its log ends with:\n{tail}")]
    Exited {
        /// The region.
        region: String,
        /// Exit status.
        status: String,
        /// Its last lines.
        tail: String,
    },
}

/// The `meridian` binary the harness runs: `$MERIDIAN_BIN`, else the one
/// cargo built next to the running test (`target/<profile>/meridian`).
pub fn meridian_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MERIDIAN_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test> -> target/<profile>/meridian
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("meridian")
}

/// How to run a node.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// Region name.
    pub region: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Client API address; port 0 picks one on first start (kept on restart).
    pub listen: SocketAddr,
    /// Peer API address, if the node replicates; port 0 picks one on first
    /// start (kept on restart). Picking it in the server, not by probing for
    /// a free port beforehand, leaves no window for another process to take it.
    pub peer_listen: Option<SocketAddr>,
    /// Extra `meridian serve` arguments.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// The token [`Node::client`] sends, when the node asks for tokens.
    pub access_token: Option<String>,
    /// When the node serves TLS: the CA its certificate chains to (what
    /// [`Node::client`] trusts).
    pub ca_file: Option<PathBuf>,
}

impl NodeSpec {
    /// A node of `region` with its data under `data_dir`, on a free port.
    pub fn new(region: &str, data_dir: &Path) -> Self {
        Self {
            region: region.to_string(),
            data_dir: data_dir.to_path_buf(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            peer_listen: None,
            args: Vec::new(),
            // Harness nodes listen on loopback and run without tokens; a
            // test of access control sets `MERIDIAN_AUTH__MODE=tokens`.
            env: vec![("MERIDIAN_AUTH__MODE".into(), "open".into())],
            access_token: None,
            ca_file: None,
        }
    }

    /// Serves TLS with `cert` and `key` (PEM files) signed by `ca`, which
    /// [`Node::client`] then trusts.
    pub fn with_tls(mut self, ca: &Path, cert: &Path, key: &Path) -> Self {
        for (k, v) in [
            ("MERIDIAN_TLS__CERT_FILE", cert),
            ("MERIDIAN_TLS__KEY_FILE", key),
        ] {
            self.env.push((k.into(), v.display().to_string()));
        }
        self.ca_file = Some(ca.to_path_buf());
        self
    }

    /// Asks for access tokens, with `bootstrap` as the admin token (and
    /// the one [`Node::client`] sends).
    pub fn with_tokens(mut self, bootstrap: &str) -> Self {
        self.env.retain(|(k, _)| !k.starts_with("MERIDIAN_AUTH__"));
        self.env
            .push(("MERIDIAN_AUTH__MODE".into(), "tokens".into()));
        self.env
            .push(("MERIDIAN_AUTH__BOOTSTRAP_TOKEN".into(), bootstrap.into()));
        self.access_token = Some(bootstrap.to_string());
        self
    }
}

/// A running (or stopped) `meridian serve` process.
pub struct Node {
    /// How it runs.
    pub spec: NodeSpec,
    bin: PathBuf,
    child: Option<Child>,
    addr: SocketAddr,
    peer_addr: Option<SocketAddr>,
    log: PathBuf,
    starts: u32,
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Node {
    /// Starts `bin serve` with `spec` and waits until it answers `/healthz`.
    pub async fn start(bin: &Path, spec: NodeSpec) -> Result<Node, NodeError> {
        let log = spec.data_dir.with_file_name(format!("{}.log", spec.region));
        let mut node = Node {
            addr: spec.listen,
            peer_addr: spec.peer_listen,
            spec,
            bin: bin.to_path_buf(),
            child: None,
            log,
            starts: 0,
        };
        node.launch().await?;
        Ok(node)
    }

    async fn launch(&mut self) -> Result<(), NodeError> {
        let io = |what| {
            let region = self.spec.region.clone();
            move |source| NodeError::Io {
                region,
                what,
                source,
            }
        };
        if let Some(parent) = self.log.parent() {
            std::fs::create_dir_all(parent).map_err(io("create log dir"))?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(io("open log"))?;
        let mark = std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve")
            .arg("--region")
            .arg(&self.spec.region)
            .arg("--data-dir")
            .arg(&self.spec.data_dir)
            .arg("--listen")
            .arg(self.addr.to_string())
            .args(
                self.peer_addr
                    .iter()
                    .flat_map(|a| ["--peer-listen".to_string(), a.to_string()]),
            )
            .args(&self.spec.args)
            .env("MERIDIAN_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io("clone log"))?)
            .stderr(log)
            .kill_on_drop(true);
        for (k, v) in &self.spec.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().map_err(io("spawn"))?;
        self.starts += 1;
        // Wait for the line `meridian serve` prints once it listens.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(NodeError::Exited {
                    region: self.spec.region.clone(),
                    status: status.to_string(),
                    tail: tail(&self.log, 30),
                });
            }
            let text = std::fs::read(&self.log).unwrap_or_default();
            let fresh =
                String::from_utf8_lossy(&text[(mark as usize).min(text.len())..]).into_owned();
            let printed = |marker: &str| {
                fresh
                    .lines()
                    .rev()
                    .find_map(|l| l.split(marker).nth(1))
                    .and_then(|a| a.trim().parse::<SocketAddr>().ok())
            };
            let scheme = if self.spec.ca_file.is_some() {
                "https"
            } else {
                "http"
            };
            if let Some(addr) = printed(&format!("listening on {scheme}://")) {
                self.addr = addr;
                if self.peer_addr.is_some() {
                    self.peer_addr = printed(&format!("peer API on {scheme}://"));
                }
                break;
            }
            if Instant::now() > deadline {
                let _ = child.start_kill();
                return Err(NodeError::NotReady {
                    region: self.spec.region.clone(),
                    secs: 60,
                    log: self.log.display().to_string(),
                    tail: tail(&self.log, 30),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.child = Some(child);
        Ok(())
    }

    /// The client API address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The peer API address (when the spec asked for one).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer_addr
    }

    /// `http://addr`, or `https://addr` when the node serves TLS.
    pub fn url(&self) -> String {
        match self.spec.ca_file {
            Some(_) => format!("https://{}", self.addr),
            None => format!("http://{}", self.addr),
        }
    }

    /// A client of this node.
    pub fn client(&self) -> Client {
        let mut b = Client::builder().region(self.url());
        if let Some(ca) = &self.spec.ca_file {
            b = b.ca_file(ca.clone());
        }
        if let Some(t) = &self.spec.access_token {
            b = b.access_token(t.clone());
        }
        // The URL is always well-formed.
        b.build().unwrap_or_else(|e| panic!("{e}"))
    }

    /// The process's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// How many times the process was started.
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// Whether the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    fn signal(&self, sig: &str) -> Result<(), NodeError> {
        let Some(pid) = self.pid() else { return Ok(()) };
        let status = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .map_err(|source| NodeError::Io {
                region: self.spec.region.clone(),
                what: "kill",
                source,
            })?;
        if !status.success() {
            return Err(NodeError::Io {
                region: self.spec.region.clone(),
                what: "kill",
                source: std::io::Error::other(format!("kill -{sig} {pid} failed")),
            });
        }
        Ok(())
    }

    /// SIGKILL, and wait for the process to be gone.
    pub async fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }

    /// SIGTERM, and wait (up to `within`) for a clean exit; returns whether
    /// it exited with status 0.
    pub async fn terminate(&mut self, within: Duration) -> Result<bool, NodeError> {
        self.signal("TERM")?;
        let Some(mut c) = self.child.take() else {
            return Ok(false);
        };
        match tokio::time::timeout(within, c.wait()).await {
            Ok(Ok(status)) => Ok(status.success()),
            _ => {
                let _ = c.start_kill();
                let _ = c.wait().await;
                Ok(false)
            }
        }
    }

    /// SIGSTOP: the process freezes (sockets stay open, nothing answers).
    /// Returns once every thread of it has stopped: `kill` returns when
    /// the signal is sent, and a thread running on another core (or on a
    /// vCPU the host has descheduled) can go on for a moment after, which
    /// let a request sent "after the pause" be taken before it (seen once
    /// under load, in the failover suite).
    pub fn pause(&self) -> Result<(), NodeError> {
        self.signal("STOP")?;
        let Some(pid) = self.pid() else { return Ok(()) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !all_threads_stopped(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Ok(())
    }

    /// SIGCONT after [`Node::pause`].
    pub fn resume(&self) -> Result<(), NodeError> {
        self.signal("CONT")
    }

    /// Starts the process again on the same port and data directory.
    pub async fn restart(&mut self) -> Result<(), NodeError> {
        self.kill9().await;
        // The port was picked by the first start: keep it, so peers and
        // links pointing at it stay right. Retry while the old socket lingers.
        let mut last = None;
        for _ in 0..50 {
            match self.launch().await {
                Ok(()) => return Ok(()),
                Err(e @ NodeError::Exited { .. })
                    if e.to_string().contains("Address already in use") =>
                {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| NodeError::Io {
            region: self.spec.region.clone(),
            what: "restart",
            source: std::io::Error::other("gave up"),
        }))
    }

    /// Waits (up to `within`) for the process to exit by itself; its exit
    /// status, or `None` if it is still running.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let c = self.child.as_mut()?;
        match tokio::time::timeout(within, c.wait()).await {
            Ok(Ok(status)) => {
                self.child = None;
                Some(status)
            }
            _ => None,
        }
    }

    /// Waits until `/healthz` answers.
    pub async fn wait_healthy(&self, within: Duration) -> bool {
        let c = self.client();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if c.healthy().await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }
}

/// Whether every thread of `pid` is in the stopped state (`T`), from
/// `/proc/PID/task/*/stat`. A thread in an uninterruptible wait (an
/// fsync) stops when it returns, so this waits for that too. Without
/// `/proc` (not Linux), true: the signal is all there is.
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    tasks.filter_map(Result::ok).all(|t| {
        std::fs::read_to_string(t.path().join("stat"))
            .ok()
            // The state follows the command name, which is in parentheses
            // and may itself hold spaces or parentheses.
            .and_then(|st| {
                st.rsplit_once(") ")
                    .map(|(_, rest)| rest.starts_with(['T', 't']))
            })
            .unwrap_or(true)
    })
}
