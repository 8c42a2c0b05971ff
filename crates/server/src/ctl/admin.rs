//! `meridian ctl keyspace ...` and `meridian ctl merge ...`: defining
//! keyspaces and merge functions.

use std::path::PathBuf;

use anyhow::anyhow;
use meridian_client::Client;
use serde_json::{Value, json};

use super::explain;
use super::output::{list, print_json, table, text};

/// `meridian ctl keyspace` commands.
#[derive(Debug, clap::Subcommand)]
pub enum KeyspaceCommand {
    /// Create a keyspace (or update its settings: the policy never changes).
    Create(KeyspaceFlags),
    /// Update a keyspace's settings (the same request as create).
    Update(KeyspaceFlags),
    /// Show one keyspace's definition.
    Show {
        /// Keyspace.
        name: String,
    },
}

/// What `ctl keyspace create|update` sends.
#[derive(Debug, clap::Args)]
pub struct KeyspaceFlags {
    /// Keyspace name.
    pub name: String,
    /// lww, mv, counter, set, doc or custom.
    #[arg(long)]
    pub policy: String,
    /// custom: the merge function (a built-in or a registered script).
    #[arg(long)]
    pub merge: Option<String>,
    /// custom with region-priority: regions, highest priority first
    /// (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub region_order: Vec<String>,
    /// mv: most siblings; custom: most unmerged versions.
    #[arg(long)]
    pub sibling_cap: Option<u32>,
    /// Default write concern: local, one, majority, all.
    #[arg(long)]
    pub concern: Option<String>,
    /// doc: field rules as JSON (`'{"visits":"counter"}'`).
    #[arg(long)]
    pub schema: Option<String>,
}

/// `meridian ctl merge` commands.
#[derive(Debug, clap::Subcommand)]
pub enum MergeCommand {
    /// Register or replace a merge script (checked before it is stored).
    Put {
        /// Merge name.
        name: String,
        /// File holding the Rhai script (`-`: standard input).
        script: PathBuf,
        /// What it is for.
        #[arg(long, default_value = "")]
        description: String,
        /// JSON file: a list of samples, each a list of version values,
        /// to check the script on instead of the built-in samples.
        #[arg(long)]
        samples: Option<PathBuf>,
    },
    /// Show a merge function (a script with its source and hash).
    Get {
        /// Merge name.
        name: String,
    },
    /// List built-in and registered merge functions.
    List,
}

fn read(path: &PathBuf) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| anyhow!("stdin: {e}"))
    } else {
        std::fs::read_to_string(path).map_err(|e| anyhow!("{}: {e}", path.display()))
    }
}

/// Runs a `ctl keyspace` command against `c`.
pub async fn keyspace(c: &Client, cmd: &KeyspaceCommand, as_json: bool) -> anyhow::Result<()> {
    let f = match cmd {
        KeyspaceCommand::Show { name } => {
            let body = c.keyspace(name).await.map_err(explain)?;
            return print_json(&body);
        }
        KeyspaceCommand::Create(f) | KeyspaceCommand::Update(f) => f,
    };
    let mut def = json!({"policy": f.policy});
    if let Some(m) = &f.merge {
        def["merge"] = json!(m);
    }
    if !f.region_order.is_empty() {
        def["region_order"] = json!(f.region_order);
    }
    if let Some(cap) = f.sibling_cap {
        def["sibling_cap"] = json!(cap);
    }
    if let Some(w) = &f.concern {
        def["write_concern"] = json!(w);
    }
    if let Some(s) = &f.schema {
        def["schema"] = serde_json::from_str(s).map_err(|e| anyhow!("--schema: {e}"))?;
    }
    let body = c.define_keyspace(&f.name, &def).await.map_err(explain)?;
    if as_json {
        return print_json(&body);
    }
    let what = match (body["created"].as_bool(), body["changed"].as_bool()) {
        (Some(true), _) => "created",
        (_, Some(true)) => "updated",
        _ => "unchanged",
    };
    println!("keyspace {}: {what}", f.name);
    Ok(())
}

/// Runs a `ctl merge` command against `c`.
pub async fn merge(c: &Client, cmd: &MergeCommand, as_json: bool) -> anyhow::Result<()> {
    match cmd {
        MergeCommand::Put {
            name,
            script,
            description,
            samples,
        } => {
            let mut body = json!({"script": read(script)?, "description": description});
            if let Some(path) = samples {
                let s: Value = serde_json::from_str(&read(path)?)
                    .map_err(|e| anyhow!("{}: {e}", path.display()))?;
                body["samples"] = s;
            }
            let out = c.define_merge(name, &body).await.map_err(explain)?;
            if as_json {
                return print_json(&out);
            }
            let what = match (out["created"].as_bool(), out["changed"].as_bool()) {
                (Some(true), _) => "registered",
                (_, Some(true)) => "replaced",
                _ => "unchanged",
            };
            println!(
                "merge {name}: {what} (hash {})",
                text(&out["merge"]["hash"])
            );
            Ok(())
        }
        MergeCommand::Get { name } => {
            let body = c.merge(name).await.map_err(explain)?;
            if as_json {
                return print_json(&body);
            }
            println!("# {} ({})", text(&body["name"]), text(&body["hash"]));
            if let Some(d) = body["description"].as_str().filter(|d| !d.is_empty()) {
                println!("# {d}");
            }
            if let Some(s) = body["script"].as_str() {
                println!("{s}");
            }
            Ok(())
        }
        MergeCommand::List => {
            let body = c.merges().await.map_err(explain)?;
            if as_json {
                return print_json(&body);
            }
            let rows = list(&body, "merges")
                .iter()
                .map(|m| {
                    vec![
                        text(&m["name"]),
                        if m["builtin"] == json!(true) {
                            "built-in".into()
                        } else {
                            "script".into()
                        },
                        text(&m["hash"]),
                        text(&m["description"]),
                    ]
                })
                .collect();
            print!("{}", table(&["MERGE", "KIND", "HASH", "DESCRIPTION"], rows));
            Ok(())
        }
    }
}
