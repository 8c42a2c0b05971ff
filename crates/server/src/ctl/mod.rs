//! `meridian ctl`: an operator's view of running regions over their client
//! APIs: cluster status (links, lag, version vectors, digests: converged or
//! not), single-key reads and writes, keyspaces and the conflict ledger.
//! Readable tables by default, `--json` for scripts.
//!
//! - [`status`]: the whole cluster at once, converged or not.
//! - [`session`]: the causal token kept between commands, so a read
//!   follows the writes made before it, in any region.
//! - [`output`]: tables and JSON on stdout.
//!
//! Why past ~400 lines: the `ctl` command tree and the dispatch of the
//! commands that have no module of their own (status, get, put, keyspaces,
//! conflicts); each one's arguments sit beside what it does.

pub mod admin;
pub mod backup;
pub mod output;
pub mod ownership;
pub mod session;
pub mod status;
pub mod token;

use anyhow::anyhow;
use meridian_client::{Client, ClientError, Options};
use serde_json::{Value, json};

use output::{list, print_json, table, text, written};

/// Regions used when neither `--url` nor `MERIDIAN_URLS` says otherwise:
/// the ones `meridian dev` starts.
const DEV_URLS: [&str; 3] = [
    "http://127.0.0.1:7070",
    "http://127.0.0.1:7071",
    "http://127.0.0.1:7072",
];

/// `meridian ctl` arguments.
#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    /// A region's client API (repeat for each region). Default: the
    /// comma-separated `MERIDIAN_URLS`, else the `meridian dev` regions.
    #[arg(long = "url", global = true)]
    pub urls: Vec<String>,
    /// Which region a key command goes to (by name; default: the first URL).
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Neither send nor keep the session's causal token (see `ctl
    /// session`).
    #[arg(long, global = true)]
    pub no_session: bool,
    /// How long a region may wait to catch up with the session's token
    /// before a read moves on (default: the region's, 2 s).
    #[arg(long, global = true)]
    pub wait_ms: Option<u64>,
    /// The command.
    #[command(subcommand)]
    pub cmd: CtlCommand,
}

/// `meridian ctl` commands.
#[derive(Debug, clap::Subcommand)]
pub enum CtlCommand {
    /// Every region: links, lag, version vectors, digests, and whether they
    /// have converged.
    Status,
    /// The causal token ctl keeps between commands (so a read in one
    /// region follows a write made in another): where it is, and whether
    /// one is kept.
    Session {
        /// Forget it.
        #[arg(long)]
        clear: bool,
    },
    /// Read a key.
    Get {
        /// Keyspace.
        keyspace: String,
        /// Key.
        key: String,
        /// Read from a majority of regions (`meridian-read: quorum`).
        #[arg(long)]
        quorum: bool,
        /// A causal token: wait until the region has applied what it covers.
        #[arg(long)]
        token: Option<String>,
    },
    /// Write a JSON value (or text, with --string).
    Put {
        /// Keyspace.
        keyspace: String,
        /// Key.
        key: String,
        /// The value, as JSON (`'{"a":1}'`, `42`, `'"text"'`).
        value: String,
        /// Write concern and value format.
        #[command(flatten)]
        write: WriteFlags,
    },
    /// Delete a key.
    Del {
        /// Keyspace.
        keyspace: String,
        /// Key.
        key: String,
        /// Write concern and value format.
        #[command(flatten)]
        write: WriteFlags,
    },
    /// Add to a counter (negative subtracts).
    Incr {
        /// Keyspace.
        keyspace: String,
        /// Key.
        key: String,
        /// How much (default 1).
        #[arg(default_value_t = 1, allow_hyphen_values = true)]
        by: i64,
        /// Write concern and value format.
        #[command(flatten)]
        write: WriteFlags,
    },
    /// Add members to a set.
    Add {
        /// Keyspace.
        keyspace: String,
        /// Key.
        key: String,
        /// Members, as JSON (or text, with --string).
        #[arg(required = true)]
        values: Vec<String>,
        /// Write concern and value format.
        #[command(flatten)]
        write: WriteFlags,
    },
    /// Remove members from a set.
    Remove {
        /// Keyspace.
        keyspace: String,
        /// Key.
        key: String,
        /// Members, as JSON (or text, with --string).
        #[arg(required = true)]
        values: Vec<String>,
        /// Write concern and value format.
        #[command(flatten)]
        write: WriteFlags,
    },
    /// Keyspaces with their policies and digests.
    Keyspaces,
    /// Create, update or show one keyspace.
    Keyspace {
        /// What to do.
        #[command(subcommand)]
        cmd: admin::KeyspaceCommand,
    },
    /// A keyspace's ownership map: show, set, transfer a rule.
    Ownership {
        /// What to do.
        #[command(subcommand)]
        cmd: ownership::OwnershipCommand,
    },
    /// Access tokens: create, list, show, revoke (admin), or generate a
    /// bootstrap token.
    Token {
        /// What to do.
        #[command(subcommand)]
        cmd: token::TokenCommand,
    },
    /// Merge functions for custom keyspaces: register, show, list.
    Merge {
        /// What to do.
        #[command(subcommand)]
        cmd: admin::MergeCommand,
    },
    /// One region's backups (`--region` picks it): create, list, show,
    /// verify, delete, prune.
    Backup {
        /// What to do.
        #[command(subcommand)]
        cmd: backup::BackupCommand,
    },
    /// Rewind a key range to its value at a time, as new writes that
    /// replicate everywhere (`--dry-run` lists what would change).
    Rewind(backup::RewindArgs),
    /// Makes the standby whose client API is at URL its region's leader
    /// (at the next epoch); waits until it serves as the leader.
    Promote {
        /// The standby's client URL.
        url: String,
        /// How long to wait for it to lead, seconds.
        #[arg(long, default_value_t = 30)]
        wait_s: u64,
    },
    /// The conflict ledger: what each merge decided.
    Conflicts {
        /// Only this keyspace.
        keyspace: Option<String>,
        /// Only this key (with a keyspace).
        key: Option<String>,
        /// At most this many (newest last).
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

/// Flags of the write commands.
#[derive(Debug, clap::Args)]
pub struct WriteFlags {
    /// Write concern: local (default), one, majority, all.
    #[arg(long)]
    pub concern: Option<String>,
    /// Take values as text, not JSON.
    #[arg(long, short = 's')]
    pub string: bool,
}

/// Runs a ctl command and prints its answer.
pub async fn run(a: CtlArgs) -> anyhow::Result<()> {
    let urls = urls(&a.urls);
    let store = session::Store::new((!a.no_session).then(session::default_path).flatten(), &urls);
    match &a.cmd {
        CtlCommand::Status => status::print(&urls, a.json).await,
        CtlCommand::Session { clear } => {
            let Some(path) = store.path() else {
                println!("no session kept (--no-session, or no MERIDIAN_SESSION or HOME)");
                return Ok(());
            };
            if *clear {
                store.clear()?;
            }
            let token = store.token();
            if a.json {
                return print_json(&json!({"path": path, "token": token}));
            }
            println!("session file: {}", path.display());
            match token {
                Some(t) => println!("token: {t}"),
                None => println!("no token kept for these regions"),
            }
            Ok(())
        }
        CtlCommand::Keyspace { cmd } => {
            let c = pick(&urls, a.region.as_deref()).await?;
            admin::keyspace(&c, cmd, a.json).await
        }
        CtlCommand::Ownership { cmd } => {
            let c = pick(&urls, a.region.as_deref()).await?;
            ownership::run(&c, cmd, a.json).await
        }
        CtlCommand::Token { cmd } => {
            if let token::TokenCommand::Generate = cmd {
                return token::run(None, cmd.clone(), a.json).await;
            }
            let c = pick(&urls, a.region.as_deref()).await?;
            token::run(Some(&c), cmd.clone(), a.json).await
        }
        CtlCommand::Merge { cmd } => {
            let c = pick(&urls, a.region.as_deref()).await?;
            admin::merge(&c, cmd, a.json).await
        }
        CtlCommand::Backup { cmd } => {
            let c = pinned(&urls, a.region.as_deref()).await?;
            backup::run(&c, cmd, a.json).await
        }
        CtlCommand::Promote { url, wait_s } => status::promote(url, *wait_s, a.json).await,
        CtlCommand::Rewind(r) => {
            let c = pinned(&urls, a.region.as_deref()).await?;
            backup::rewind(&c, r, a.json).await
        }
        CtlCommand::Keyspaces => {
            let c = pinned(&urls, a.region.as_deref()).await?;
            let body = c.keyspaces().await.map_err(explain)?;
            if a.json {
                return print_json(&body);
            }
            let rows = list(&body, "keyspaces")
                .iter()
                .map(|k| {
                    vec![
                        text(&k["name"]),
                        text(&k["policy"]),
                        k.get("schema").map(Value::to_string).unwrap_or_default(),
                        text(&k["digest"]),
                        text(&k["conflicts_stored"]),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &["KEYSPACE", "POLICY", "SCHEMA", "DIGEST", "CONFLICTS"],
                    rows
                )
            );
            Ok(())
        }
        CtlCommand::Conflicts {
            keyspace,
            key,
            limit,
        } => {
            let c = pinned(&urls, a.region.as_deref()).await?;
            let mut q = format!("limit={limit}");
            if let Some(ks) = keyspace {
                q.push_str(&format!("&keyspace={}", meridian_client::path::query(ks)));
            }
            if let Some(k) = key {
                q.push_str(&format!("&key={}", meridian_client::path::query(k)));
            }
            let body = c.conflicts(&q).await.map_err(explain)?;
            if a.json {
                return print_json(&body);
            }
            let side = |s: &Value| {
                if s["deleted"] == json!(true) {
                    format!("{} (deleted)", text(&s["origin"]))
                } else {
                    format!("{} {}", text(&s["origin"]), s["value"])
                }
            };
            let rows = list(&body, "conflicts")
                .iter()
                .map(|e| {
                    let path = match &e["path"] {
                        Value::Array(p) => p.iter().map(text).collect::<Vec<_>>().join("."),
                        other => text(other),
                    };
                    vec![
                        text(&e["id"]),
                        format!(
                            "{}/{}{}",
                            text(&e["keyspace"]),
                            text(&e["key"]),
                            if path.is_empty() {
                                String::new()
                            } else {
                                format!(".{path}")
                            }
                        ),
                        text(&e["rule"]),
                        side(&e["winner"]),
                        list(e, "losers")
                            .iter()
                            .map(side)
                            .collect::<Vec<_>>()
                            .join(", "),
                        if e["ambiguous"] == json!(true) {
                            "yes".into()
                        } else {
                            String::new()
                        },
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &["ID", "KEY", "RULE", "WINNER", "LOSERS", "AMBIGUOUS"],
                    rows
                )
            );
            Ok(())
        }
        CtlCommand::Get {
            keyspace,
            key,
            quorum,
            token,
        } => {
            let c = pick(&urls, a.region.as_deref()).await?;
            let kept = store.token().filter(|_| token.is_none());
            let opts = Options {
                token: token.clone().or(kept.clone()),
                wait_ms: a.wait_ms,
                read: quorum.then(|| "quorum".to_string()),
                ..Options::default()
            };
            // Reads carry the session's token but do not replace it: what
            // the session guarantees is that reads follow its writes.
            let entry = match c.get_with(keyspace, key, &opts).await {
                Ok((entry, _)) => entry,
                // No region could serve the session's token: a cluster
                // recreated on the same ports (as `meridian dev` is) holds
                // none of its writes. Drop it and read without it.
                Err(e) if kept.is_some() && e.is_code("behind_token") => {
                    eprintln!(
                        "note: no region has caught up with this shell's earlier writes ({}); the session is cleared and this read made without it",
                        explain(e)
                    );
                    store.clear()?;
                    let opts = Options {
                        token: None,
                        ..opts
                    };
                    c.get_with(keyspace, key, &opts).await.map_err(explain)?.0
                }
                Err(e) => return Err(explain(e)),
            };
            let Some(entry) = entry else {
                return Err(anyhow!("{keyspace}/{key}: not found"));
            };
            note_failover(&c, &entry.served_by);
            if a.json {
                return print_json(&entry.body);
            }
            println!(
                "{}",
                serde_json::to_string_pretty(entry.value().unwrap_or(&Value::Null))
                    .map_err(anyhow::Error::from)?
            );
            if let Some(v) = entry.version() {
                println!("# version {v}");
            }
            Ok(())
        }
        CtlCommand::Put {
            keyspace,
            key,
            value,
            write,
        } => {
            let v = parse_value(value, write.string)?;
            send(&a, &urls, &store, (keyspace, key), write, Write::Put(v)).await
        }
        CtlCommand::Del {
            keyspace,
            key,
            write,
        } => send(&a, &urls, &store, (keyspace, key), write, Write::Delete).await,
        CtlCommand::Incr {
            keyspace,
            key,
            by,
            write,
        } => {
            let op = json!({"op": "incr", "by": by});
            send(&a, &urls, &store, (keyspace, key), write, Write::Op(op)).await
        }
        CtlCommand::Add {
            keyspace,
            key,
            values,
            write,
        }
        | CtlCommand::Remove {
            keyspace,
            key,
            values,
            write,
        } => {
            let name = if matches!(a.cmd, CtlCommand::Add { .. }) {
                "add"
            } else {
                "remove"
            };
            let values = values
                .iter()
                .map(|v| parse_value(v, write.string))
                .collect::<Result<Vec<_>, _>>()?;
            let op = json!({"op": name, "values": values});
            send(&a, &urls, &store, (keyspace, key), write, Write::Op(op)).await
        }
    }
}

/// What a write command sends.
enum Write {
    Put(Value),
    Delete,
    Op(Value),
}

/// Sends one write to the chosen region and prints the answer.
async fn send(
    a: &CtlArgs,
    urls: &[String],
    store: &session::Store,
    (keyspace, key): (&str, &str),
    flags: &WriteFlags,
    w: Write,
) -> anyhow::Result<()> {
    let c = pick(urls, a.region.as_deref()).await?;
    // Writes go where they are sent without waiting for the session (a
    // write in a cut-off region stays there); their tokens join it.
    let opts = Options {
        write_concern: flags.concern.clone(),
        ..Options::default()
    };
    let answer = match &w {
        Write::Put(v) => c.put_with(keyspace, key, v, &opts).await,
        Write::Delete => c.delete_with(keyspace, key, &opts).await,
        Write::Op(op) => c.op_with(keyspace, key, op, &opts).await,
    };
    let answer = match answer {
        Ok(w) => w,
        Err(e) => {
            // Durable where it was taken, its concern not met in time: a
            // write the session has made.
            if e.is_code("write_concern_timeout")
                && let Some(t) = e.body().and_then(|b| b["token"].as_str())
            {
                store.keep(t);
            }
            return Err(explain(e));
        }
    };
    store.keep(&answer.token);
    note_failover(&c, &answer.served_by);
    written(&answer.body, a.json)
}

/// Says on stderr when a region other than the chosen one answered (it
/// could not take the request, or sent it to the key's owner).
fn note_failover(c: &Client, served_by: &str) {
    if served_by != c.base_url() {
        eprintln!(
            "note: answered by {served_by}, not {} (it was down, behind, or not the key's owner)",
            c.base_url()
        );
    }
}

/// The client of the chosen region alone: for views that are that
/// region's own (its conflict ledger, its keyspace digests), which another
/// region must not answer for.
async fn pinned(urls: &[String], region: Option<&str>) -> anyhow::Result<Client> {
    let c = pick(urls, region).await?;
    client(c.base_url())
}

fn urls(given: &[String]) -> Vec<String> {
    if !given.is_empty() {
        return given.to_vec();
    }
    if let Ok(env) = std::env::var("MERIDIAN_URLS") {
        let v: Vec<String> = env
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if !v.is_empty() {
            return v;
        }
    }
    DEV_URLS.iter().map(|s| s.to_string()).collect()
}

pub(crate) fn client(url: &str) -> anyhow::Result<Client> {
    builder()?
        .region(url)
        .build()
        .map_err(|e| anyhow!("{url}: {e}"))
}

/// A client builder with the caller's access token (`MERIDIAN_ACCESS_TOKEN`,
/// else the file `MERIDIAN_ACCESS_TOKEN_FILE` names) and TLS settings
/// (`MERIDIAN_CA_FILE`, `MERIDIAN_CLIENT_CERT` and `MERIDIAN_CLIENT_KEY`).
pub(crate) fn builder() -> anyhow::Result<meridian_client::ClientBuilder> {
    let mut b = Client::builder();
    let token = match (
        std::env::var("MERIDIAN_ACCESS_TOKEN"),
        std::env::var_os("MERIDIAN_ACCESS_TOKEN_FILE"),
    ) {
        (Ok(t), _) if !t.trim().is_empty() => Some(t),
        (_, Some(f)) => Some(std::fs::read_to_string(&f).map_err(|e| {
            anyhow!(
                "MERIDIAN_ACCESS_TOKEN_FILE={}: {e}",
                std::path::Path::new(&f).display()
            )
        })?),
        _ => None,
    };
    if let Some(t) = token {
        b = b.access_token(t.trim());
    }
    // TLS: the CA regions' certificates chain to, and a client certificate
    // for regions that ask for one.
    if let Some(ca) = std::env::var_os("MERIDIAN_CA_FILE") {
        b = b.ca_file(ca);
    }
    if let (Some(cert), Some(key)) = (
        std::env::var_os("MERIDIAN_CLIENT_CERT"),
        std::env::var_os("MERIDIAN_CLIENT_KEY"),
    ) {
        b = b.identity(cert, key);
    }
    Ok(b)
}

/// A client over every region, the one named `region` first (else the
/// first URL), the others in the order given: a command fails over to the
/// next region when the first cannot take it.
async fn pick(urls: &[String], region: Option<&str>) -> anyhow::Result<Client> {
    let first = match region {
        None => 0,
        Some(want) => {
            let mut seen = Vec::new();
            let mut found = None;
            for (i, u) in urls.iter().enumerate() {
                match client(u)?.status().await {
                    Ok(s) if s["region"] == json!(want) => {
                        found = Some(i);
                        break;
                    }
                    Ok(s) => seen.push(format!("{u} is {}", text(&s["region"]))),
                    Err(e) => seen.push(format!("{u}: {e}")),
                }
            }
            found.ok_or_else(|| anyhow!("no region named {want:?} ({})", seen.join("; ")))?
        }
    };
    let order = std::iter::once(&urls[first]).chain(
        urls.iter()
            .enumerate()
            .filter(|(i, _)| *i != first)
            .map(|(_, u)| u),
    );
    builder()?
        .regions(order.cloned())
        .build()
        .map_err(anyhow::Error::from)
}

fn parse_value(s: &str, string: bool) -> anyhow::Result<Value> {
    if string {
        return Ok(Value::String(s.to_string()));
    }
    serde_json::from_str(s)
        .map_err(|e| anyhow!("{s:?} is not JSON ({e}); quote text as '\"{s}\"' or pass --string"))
}

/// A client error as `ctl` prints it: an HTTP refusal by its status, code
/// and message; anything else (transport, decoding) with its causes.
pub(crate) fn explain(e: ClientError) -> anyhow::Error {
    match e {
        ClientError::Http {
            status,
            code,
            message,
            ..
        } => anyhow!("HTTP {status} {code}: {message}"),
        other => anyhow::Error::from(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_json_unless_text_is_asked_for() {
        assert_eq!(parse_value("42", false).unwrap(), json!(42));
        assert_eq!(parse_value("red", true).unwrap(), json!("red"));
        let e = parse_value("red", false).unwrap_err().to_string();
        assert!(e.contains("--string"), "{e}");
    }
}
