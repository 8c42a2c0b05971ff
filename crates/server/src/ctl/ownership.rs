//! `meridian ctl ownership show|set|transfer`: a keyspace's ownership map.

use std::path::PathBuf;

use anyhow::anyhow;
use meridian_client::Client;
use serde_json::{Value, json};

use super::explain;
use super::output::{print_json, table, text};

/// `meridian ctl ownership` commands.
#[derive(Debug, clap::Subcommand)]
pub enum OwnershipCommand {
    /// Show a keyspace's map, its epoch, the steward and each region's fence.
    Show {
        /// Keyspace.
        keyspace: String,
    },
    /// Set the whole map (a compare-and-set on the epoch it read).
    Set {
        /// Keyspace.
        keyspace: String,
        /// A rule, in order: `prefix:eu/=eu-west` or `hash:0-9223372036854775807=us-east`
        /// (repeat for each).
        #[arg(long = "rule")]
        rules: Vec<String>,
        /// Owner of keys no rule matches (none: any region takes them).
        #[arg(long)]
        default: Option<String>,
        /// What non-owners do with writes: forward (default) or reject.
        #[arg(long, default_value = "forward")]
        mode: String,
        /// When the owner is unreachable: reject (default) or accept.
        #[arg(long, default_value = "reject")]
        fallback: String,
        /// Take the whole map as JSON from this file instead (`-`: stdin).
        #[arg(long, conflicts_with_all = ["rules", "default"])]
        file: Option<PathBuf>,
    },
    /// Move one rule to another region (fenced handoff).
    Transfer {
        /// Keyspace.
        keyspace: String,
        /// The rule: its index, `default`, `prefix:eu/` or `hash:LO-HI`.
        rule: String,
        /// Its new owner.
        #[arg(long)]
        to: String,
    },
}

/// `prefix:eu/` or `hash:LO-HI` as the JSON matcher.
fn matcher(s: &str) -> anyhow::Result<Value> {
    if let Some(p) = s.strip_prefix("prefix:") {
        return Ok(json!({"prefix": p}));
    }
    if let Some(h) = s.strip_prefix("hash:") {
        let (lo, hi) = h
            .split_once('-')
            .ok_or_else(|| anyhow!("{s:?}: a hash range is hash:LO-HI"))?;
        let n = |v: &str| {
            v.trim()
                .parse::<u64>()
                .map_err(|e| anyhow!("{s:?}: {v:?} is not a 64-bit unsigned number ({e})"))
        };
        return Ok(json!({"hash": [n(lo)?, n(hi)?]}));
    }
    Err(anyhow!("{s:?}: a rule matches prefix:PREFIX or hash:LO-HI"))
}

fn rule(s: &str) -> anyhow::Result<Value> {
    let (m, owner) = s
        .rsplit_once('=')
        .ok_or_else(|| anyhow!("{s:?}: a rule is MATCH=REGION (e.g. prefix:eu/=eu-west)"))?;
    let mut r = matcher(m)?;
    r["owner"] = json!(owner);
    Ok(r)
}

/// Runs a `ctl ownership` command against `c`.
pub async fn run(c: &Client, cmd: &OwnershipCommand, as_json: bool) -> anyhow::Result<()> {
    let body = match cmd {
        OwnershipCommand::Show { keyspace } => c.ownership(keyspace).await.map_err(explain)?,
        OwnershipCommand::Set {
            keyspace,
            rules,
            default,
            mode,
            fallback,
            file,
        } => {
            let current = c.ownership(keyspace).await.map_err(explain)?;
            let mut map = match file {
                Some(f) => {
                    let text = if f.as_os_str() == "-" {
                        std::io::read_to_string(std::io::stdin())
                            .map_err(|e| anyhow!("stdin: {e}"))?
                    } else {
                        std::fs::read_to_string(f).map_err(|e| anyhow!("{}: {e}", f.display()))?
                    };
                    serde_json::from_str(&text).map_err(|e| anyhow!("{}: {e}", f.display()))?
                }
                None => json!({
                    "rules": rules.iter().map(|r| rule(r)).collect::<Result<Vec<_>, _>>()?,
                    "default": default,
                    "mode": mode,
                    "fallback": fallback,
                }),
            };
            if map.get("epoch").is_none() {
                map["epoch"] = current["epoch"].clone();
            }
            c.set_ownership(keyspace, &map).await.map_err(explain)?
        }
        OwnershipCommand::Transfer { keyspace, rule, to } => {
            let which = match rule.as_str() {
                "default" => json!("default"),
                r => match r.parse::<usize>() {
                    Ok(i) => json!(i),
                    Err(_) => matcher(r)?,
                },
            };
            c.transfer_ownership(keyspace, &json!({"rule": which, "to": to}))
                .await
                .map_err(explain)?
        }
    };
    if as_json {
        return print_json(&body);
    }
    println!(
        "keyspace {}: epoch {}, mode {}, fallback {}, steward {}{}",
        text(&body["keyspace"]),
        text(&body["epoch"]),
        text(&body["mode"]),
        text(&body["fallback"]),
        text(&body["steward"]),
        match body["changed"].as_bool() {
            Some(true) => " (changed)",
            Some(false) => " (unchanged)",
            None => "",
        }
    );
    if body["in_effect"] == json!(false) {
        let waiting: Vec<String> = body["waiting_for"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        println!(
            "not yet in effect in {}: they take writes under the map they hold until it reaches them",
            waiting.join(", ")
        );
    }
    let mut rows: Vec<Vec<String>> = body["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| {
            let m = match (&r["prefix"], &r["hash"]) {
                (Value::String(p), _) => format!("prefix {p:?}"),
                (_, Value::Array(h)) if h.len() == 2 => {
                    format!("hash [{}, {}]", text(&h[0]), text(&h[1]))
                }
                _ => r.to_string(),
            };
            vec![i.to_string(), m, text(&r["owner"])]
        })
        .collect();
    rows.push(vec![
        "default".into(),
        "other keys".into(),
        match &body["default"] {
            Value::Null => "(none: any region)".into(),
            v => text(v),
        },
    ]);
    print!("{}", table(&["RULE", "MATCHES", "OWNER"], rows));
    let fences: Vec<String> = body["fences"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(r, e)| format!("{r}@{}", text(e)))
        .collect();
    println!("fences: {}", fences.join(", "));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_from_flags() {
        assert_eq!(
            rule("prefix:eu/=eu-west").unwrap(),
            json!({"prefix": "eu/", "owner": "eu-west"})
        );
        assert_eq!(
            rule("prefix:a=b=eu-west").unwrap(),
            json!({"prefix": "a=b", "owner": "eu-west"})
        );
        assert_eq!(
            rule("hash:0-18446744073709551615=us-east").unwrap(),
            json!({"hash": [0u64, u64::MAX], "owner": "us-east"})
        );
        assert!(rule("hash:0-18446744073709551616=us-east").is_err());
        assert!(rule("eu/=eu-west").is_err());
        assert!(rule("prefix:eu/").is_err());
    }
}
