//! `meridian dev`: a three-region cluster on this machine, in one process,
//! with peer traffic through the link emulator at realistic latencies.

use std::net::SocketAddr;
use std::path::PathBuf;

use meridian_crdt::RegionId;
use meridian_harness::link::{LinkEmulator, LinkSpec};

use crate::config::{Config, ReplicationConfig, Valid};
use crate::peer::auth::Secret;
use crate::serve::{self, Running, ServeError};
use crate::shutdown;

/// The regions of the dev cluster.
pub const REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-south"];

/// One-way latency between two dev regions, ms: roughly what light in fibre
/// and real routes give (US east to Europe, to India; Europe to India).
pub fn default_latency(a: &str, b: &str) -> u64 {
    match (a.min(b), a.max(b)) {
        ("eu-west", "us-east") => 40,
        ("ap-south", "us-east") => 90,
        ("ap-south", "eu-west") => 80,
        _ => 50,
    }
}

/// Options of `meridian dev`.
#[derive(Clone, Debug)]
pub struct DevOptions {
    /// Keep data here (else a temporary directory, removed on exit).
    pub data_dir: Option<PathBuf>,
    /// One latency for every link, ms (0: none); `None`: the realistic defaults.
    pub latency: Option<u64>,
    /// Client API of the first region; the others follow (peer APIs at +100,
    /// links at +200, link control at +300).
    pub base_port: u16,
    /// No tokens (`--insecure-open`): anyone on this machine may do
    /// anything. Without it, an admin token is made and printed.
    pub open: bool,
    /// TLS on every listener and mutual TLS between the regions, with a
    /// development CA made in the data directory (`meridian cert`).
    pub tls: bool,
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Writes a file only its owner may read.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    let mut f = o.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Runs the dev cluster until Ctrl-C.
pub async fn run(opts: DevOptions) -> Result<(), ServeError> {
    let (root, temporary) = match &opts.data_dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("meridian-dev-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&root)?;
    let secret_path = root.join("cluster-secret");
    if !secret_path.exists() {
        std::fs::write(&secret_path, uuid::Uuid::new_v4().simple().to_string())?;
    }
    let secret = Secret::new(&std::fs::read(&secret_path)?)
        .map_err(|e| ServeError::Io(std::io::Error::other(e)))?;
    // The admin (bootstrap) token, kept with the data like the secret.
    let token_path = root.join("admin-token");
    let admin_token = if opts.open {
        None
    } else {
        if !token_path.exists() {
            let (token, _, _) = crate::security::auth::generate();
            write_private(&token_path, token.as_bytes())?;
        }
        Some(std::fs::read_to_string(&token_path)?.trim().to_string())
    };
    // TLS: one certificate for the three regions (they all live on
    // 127.0.0.1), signed by a CA kept with the data.
    let certs = root.join("certs");
    let tls = if opts.tls {
        // The leaf is good for a year: a kept data directory gets a new one
        // after 300 days (the CA stays).
        let stale = std::fs::metadata(certs.join("dev.pem"))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > std::time::Duration::from_secs(300 * 86_400));
        if stale {
            let _ = std::fs::remove_file(certs.join("dev.pem"));
            let _ = std::fs::remove_file(certs.join("dev-key.pem"));
        }
        if !certs.join("dev.pem").exists() {
            crate::security::cert::dev_bundle(
                &certs,
                &[("dev", vec!["localhost".into(), "127.0.0.1".into()])],
            )
            .map_err(|e| ServeError::Io(std::io::Error::other(e)))?;
        }
        crate::security::config::TlsConfig {
            cert_file: Some(certs.join("dev.pem")),
            key_file: Some(certs.join("dev-key.pem")),
            client_ca_file: None,
            peer_ca_file: Some(certs.join("ca.pem")),
            peer_mtls: true,
        }
    } else {
        Default::default()
    };
    let scheme = if opts.tls { "https" } else { "http" };
    let auth = match &admin_token {
        Some(t) => crate::security::config::Auth::Tokens {
            bootstrap: Some(crate::security::auth::hash(t)),
        },
        None => crate::security::config::Auth::Open,
    };

    // Links first: region i reaches region j through link (i, j).
    let emu = LinkEmulator::new(meridian_harness::link::seed_from_time());
    let mut link_port = opts.base_port + 200;
    let mut link_addr = std::collections::BTreeMap::new();
    for (i, from) in REGIONS.iter().enumerate() {
        for (j, to) in REGIONS.iter().enumerate() {
            if i == j {
                continue;
            }
            let ms = opts.latency.unwrap_or_else(|| default_latency(from, to));
            let listen = emu
                .add_link_on(
                    from,
                    to,
                    addr(link_port),
                    addr(opts.base_port + 100 + j as u16),
                    LinkSpec::latency(ms),
                )
                .await
                .map_err(|e| ServeError::Io(std::io::Error::other(e)))?;
            link_addr.insert((i, j), listen);
            link_port += 1;
        }
    }
    let control = emu
        .serve_control(addr(opts.base_port + 300))
        .await
        .map_err(|e| ServeError::Io(std::io::Error::other(e)))?;

    let mut running: Vec<Running> = Vec::new();
    let mut starting = Vec::new();
    for (i, name) in REGIONS.iter().enumerate() {
        let peers = REGIONS
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(j, p)| {
                (
                    RegionId::new(*p).unwrap_or_else(|e| unreachable!("{e}")),
                    format!("{scheme}://{}", link_addr[&(i, j)]),
                )
            })
            .collect();
        let base = Config {
            region: name.to_string(),
            data_dir: root.join(name),
            // Backups to a folder beside the regions (`meridian ctl backup
            // create`), the log archived every 10 s.
            backup: crate::config::BackupConfig {
                target: Some(format!("file://{}", root.join("backups").display())),
                archive_interval_ms: 10_000,
                ..Default::default()
            },
            ..Config::default()
        }
        .validate()
        .map_err(|e| ServeError::Io(std::io::Error::other(e)))?;
        let client_urls = REGIONS
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(j, p)| {
                (
                    RegionId::new(*p).unwrap_or_else(|e| unreachable!("{e}")),
                    format!("{scheme}://{}", addr(opts.base_port + j as u16)),
                )
            })
            .collect();
        let cfg = Valid {
            client_urls,
            listen: addr(opts.base_port + i as u16),
            peer_listen: Some(addr(opts.base_port + 100 + i as u16)),
            peers,
            secret: Some(secret.clone()),
            replication: ReplicationConfig::default(),
            auth: auth.clone(),
            tls: tls.clone(),
            ..base
        };
        // Started together: a restarted region asks its peers about its
        // incarnation before it serves, and they must be up to answer.
        starting.push(tokio::spawn(serve::start(cfg, false)));
    }
    for s in starting {
        running.push(
            s.await
                .map_err(|e| ServeError::Io(std::io::Error::other(e)))??,
        );
    }

    println!("meridian dev: three regions on this machine");
    for r in &running {
        let (a, b) = REGIONS
            .iter()
            .filter(|o| **o != r.region)
            .map(|o| {
                (
                    o,
                    opts.latency
                        .unwrap_or_else(|| default_latency(&r.region, o)),
                )
            })
            .fold((String::new(), String::new()), |(mut s, _), (o, ms)| {
                if !s.is_empty() {
                    s.push_str(", ");
                }
                s.push_str(&format!("{o} {ms} ms"));
                (s, String::new())
            });
        let _ = b;
        println!("  {:<9} {scheme}://{}   (links: {a})", r.region, r.addr);
    }
    println!(
        "  link control http://{control}   (e.g. curl -X POST http://{control}/partition -d '{{\"a\":\"us-east\",\"b\":\"eu-west\"}}')"
    );
    println!(
        "  data in {}{}",
        root.display(),
        if temporary { " (removed on exit)" } else { "" }
    );
    println!();
    let (a, b) = (running[0].addr, running[1].addr);
    let auth_arg = match &admin_token {
        Some(t) => {
            println!("admin token (also in {}):", token_path.display());
            println!("  export MERIDIAN_ACCESS_TOKEN={t}");
            println!();
            " -H \"Authorization: Bearer $MERIDIAN_ACCESS_TOKEN\""
        }
        None => {
            println!("running open (--insecure-open): no tokens, loopback only");
            println!();
            ""
        }
    };
    let curl = if opts.tls {
        println!("TLS on every listener, mutual TLS between the regions; the CA:");
        println!(
            "  export MERIDIAN_CA_FILE={}",
            certs.join("ca.pem").display()
        );
        let urls: Vec<String> = running
            .iter()
            .map(|r| format!("https://{}", r.addr))
            .collect();
        println!(
            "  export MERIDIAN_URLS={}   # for meridian ctl",
            urls.join(",")
        );
        println!();
        format!("curl --cacert $MERIDIAN_CA_FILE{auth_arg}")
    } else {
        format!("curl{auth_arg}")
    };
    println!("try:");
    println!(
        "  {curl} -X PUT {scheme}://{a}/v1/kv/default/hello -d '{{\"msg\": \"hi from us-east\"}}'"
    );
    println!("  {curl} {scheme}://{b}/v1/kv/default/hello          # eu-west, ~40 ms later");
    println!("  {curl} {scheme}://{a}/v1/status");
    println!("  meridian ctl status                   # ctl reads MERIDIAN_ACCESS_TOKEN");
    println!("  meridian ctl put default greeting '\"hello\"'");
    println!(
        "  meridian ctl --region eu-west get default greeting   # sees the put at once: ctl keeps your session's token"
    );
    println!("  meridian ctl keyspace show default");
    println!("  meridian ctl conflicts");
    println!();
    println!("Ctrl-C stops the cluster.");

    shutdown::signal().await;
    println!("stopping...");
    for r in running {
        r.stop().await?;
    }
    emu.shutdown().await;
    if temporary {
        let _ = std::fs::remove_dir_all(&root);
    }
    Ok(())
}
