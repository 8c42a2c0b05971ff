//! `meridian ctl token ...`: access tokens (create, list, show, revoke),
//! and `generate` for a bootstrap token file.

use anyhow::anyhow;
use meridian_client::Client;
use serde_json::{Value, json};

use super::explain;
use super::output::{print_json, table, text};

/// `meridian ctl token` commands.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token; its secret is printed this once.
    Create {
        /// What it is for.
        #[arg(long, default_value = "")]
        name: String,
        /// `KEYSPACE[:PREFIX]=RIGHTS`, rights joined by `+` (`read`,
        /// `write`, `admin`); `*` is every keyspace. Repeat for more:
        /// `--grant 'orders:eu/=read+write' --grant 'users=read'`.
        #[arg(long = "grant", required = true)]
        grants: Vec<String>,
        /// Stops working after this long (`90d`, `12h`); default never.
        #[arg(long)]
        expires_in: Option<humantime::Duration>,
    },
    /// Every token the region knows (never their secrets).
    List,
    /// One token.
    Show {
        /// Its id.
        id: String,
    },
    /// Revoke a token, for good, in every region.
    Revoke {
        /// Its id.
        id: String,
    },
    /// Print a new random token without asking a region: for the bootstrap
    /// token file (`[auth] bootstrap_token_file`).
    Generate,
}

/// Parses `KEYSPACE[:PREFIX]=RIGHTS`.
pub fn parse_grant(s: &str) -> anyhow::Result<Value> {
    let (scope, rights) = s
        .split_once('=')
        .ok_or_else(|| anyhow!("grant {s:?}: expected KEYSPACE[:PREFIX]=RIGHTS"))?;
    let (keyspace, prefix) = scope.split_once(':').unwrap_or((scope, ""));
    let rights: Vec<&str> = rights.split('+').map(str::trim).collect();
    if let Some(bad) = rights
        .iter()
        .find(|r| !matches!(**r, "read" | "write" | "admin"))
    {
        return Err(anyhow!(
            "grant {s:?}: unknown right {bad:?} (read, write or admin, joined by +)"
        ));
    }
    Ok(json!({"keyspace": keyspace, "prefix": prefix, "rights": rights}))
}

fn grants_text(g: &Value) -> String {
    g.as_array()
        .map(|all| {
            all.iter()
                .map(|g| {
                    let rights: Vec<String> = g["rights"]
                        .as_array()
                        .map(|r| r.iter().map(text).collect())
                        .unwrap_or_default();
                    let prefix = g["prefix"].as_str().unwrap_or("");
                    let scope = if prefix.is_empty() {
                        text(&g["keyspace"])
                    } else {
                        format!("{}:{prefix}", text(&g["keyspace"]))
                    };
                    format!("{scope}={}", rights.join("+"))
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// Runs a token command.
pub async fn run(c: Option<&Client>, cmd: TokenCommand, as_json: bool) -> anyhow::Result<()> {
    if let TokenCommand::Generate = cmd {
        let (token, _, _) = crate::security::auth::generate();
        println!("{token}");
        return Ok(());
    }
    let c = c.ok_or_else(|| anyhow!("no region to ask"))?;
    let out = match cmd {
        TokenCommand::Generate => return Ok(()),
        TokenCommand::Create {
            name,
            grants,
            expires_in,
        } => {
            let grants = grants
                .iter()
                .map(|g| parse_grant(g))
                .collect::<Result<Vec<_>, _>>()?;
            let mut body = json!({"name": name, "grants": grants});
            if let Some(d) = expires_in {
                body["expires_in_s"] = json!(d.as_secs().max(1));
            }
            let out = c.create_token(&body).await.map_err(explain)?;
            if !as_json {
                println!(
                    "token {} created: {}",
                    text(&out["id"]),
                    grants_text(&out["grants"])
                );
                println!("{}", text(&out["token"]));
                println!("# the secret above is shown this once; regions keep only its hash");
                return Ok(());
            }
            out
        }
        TokenCommand::List => {
            let out = c.tokens().await.map_err(explain)?;
            if !as_json {
                let rows: Vec<Vec<String>> = out["tokens"]
                    .as_array()
                    .map(|all| {
                        all.iter()
                            .map(|t| {
                                vec![
                                    text(&t["id"]),
                                    text(&t["name"]),
                                    grants_text(&t["grants"]),
                                    if t["revoked_ms"].is_null() {
                                        "live".into()
                                    } else {
                                        "revoked".into()
                                    },
                                ]
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                print!("{}", table(&["id", "name", "grants", "state"], rows));
                return Ok(());
            }
            out
        }
        TokenCommand::Show { id } => c.access_token_info(&id).await.map_err(explain)?,
        TokenCommand::Revoke { id } => {
            let out = c.revoke_token(&id).await.map_err(explain)?;
            if !as_json {
                println!("token {id} revoked");
                return Ok(());
            }
            out
        }
    };
    print_json(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_parse() {
        assert_eq!(
            parse_grant("orders:eu/=read+write").unwrap(),
            json!({"keyspace": "orders", "prefix": "eu/", "rights": ["read", "write"]})
        );
        assert_eq!(
            parse_grant("*=admin").unwrap(),
            json!({"keyspace": "*", "prefix": "", "rights": ["admin"]})
        );
        assert!(parse_grant("orders").is_err());
        assert!(parse_grant("orders=delete").is_err());
    }
}
