//! `meridian ctl`: an operator's view of running regions over their client
//! APIs: cluster status (links, lag, version vectors, digests: converged or
//! not), single-key reads and writes, keyspaces and the conflict ledger.
//! Readable tables by default, `--json` for scripts.

use std::fmt::Write as _;

use meridian_client::{Client, ClientError, Options};
use serde_json::{Value, json};

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
pub async fn run(a: CtlArgs) -> Result<(), String> {
    let urls = urls(&a.urls);
    match &a.cmd {
        CtlCommand::Status => status(&urls, a.json).await,
        CtlCommand::Keyspaces => {
            let c = pick(&urls, a.region.as_deref()).await?;
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
            let c = pick(&urls, a.region.as_deref()).await?;
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
            let opts = Options {
                token: token.clone(),
                read: quorum.then(|| "quorum".to_string()),
                ..Options::default()
            };
            let (entry, _) = c.get_with(keyspace, key, &opts).await.map_err(explain)?;
            let Some(entry) = entry else {
                return Err(format!("{keyspace}/{key}: not found"));
            };
            if a.json {
                return print_json(&entry.body);
            }
            println!(
                "{}",
                serde_json::to_string_pretty(entry.value().unwrap_or(&Value::Null))
                    .map_err(|e| e.to_string())?
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
            let c = pick(&urls, a.region.as_deref()).await?;
            let w = c
                .put_with(keyspace, key, &v, &write_opts(write))
                .await
                .map_err(explain)?;
            written(&w.body, a.json)
        }
        CtlCommand::Del {
            keyspace,
            key,
            write,
        } => {
            let c = pick(&urls, a.region.as_deref()).await?;
            let w = c
                .delete_with(keyspace, key, &write_opts(write))
                .await
                .map_err(explain)?;
            written(&w.body, a.json)
        }
        CtlCommand::Incr {
            keyspace,
            key,
            by,
            write,
        } => {
            let c = pick(&urls, a.region.as_deref()).await?;
            let w = c
                .op_with(
                    keyspace,
                    key,
                    &json!({"op": "incr", "by": by}),
                    &write_opts(write),
                )
                .await
                .map_err(explain)?;
            written(&w.body, a.json)
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
            let op = if matches!(a.cmd, CtlCommand::Add { .. }) {
                "add"
            } else {
                "remove"
            };
            let values = values
                .iter()
                .map(|v| parse_value(v, write.string))
                .collect::<Result<Vec<_>, _>>()?;
            let c = pick(&urls, a.region.as_deref()).await?;
            let w = c
                .op_with(
                    keyspace,
                    key,
                    &json!({"op": op, "values": values}),
                    &write_opts(write),
                )
                .await
                .map_err(explain)?;
            written(&w.body, a.json)
        }
    }
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

fn client(url: &str) -> Result<Client, String> {
    Client::new(url).map_err(|e| format!("{url}: {e}"))
}

/// The client of the region named `region`, else of the first URL.
async fn pick(urls: &[String], region: Option<&str>) -> Result<Client, String> {
    let Some(want) = region else {
        return client(&urls[0]);
    };
    let mut seen = Vec::new();
    for u in urls {
        let c = client(u)?;
        match c.status().await {
            Ok(s) if s["region"] == json!(want) => return Ok(c),
            Ok(s) => seen.push(format!("{u} is {}", text(&s["region"]))),
            Err(e) => seen.push(format!("{u}: {e}")),
        }
    }
    Err(format!("no region named {want:?} ({})", seen.join("; ")))
}

fn write_opts(w: &WriteFlags) -> Options {
    Options {
        write_concern: w.concern.clone(),
        ..Options::default()
    }
}

fn parse_value(s: &str, string: bool) -> Result<Value, String> {
    if string {
        return Ok(Value::String(s.to_string()));
    }
    serde_json::from_str(s)
        .map_err(|e| format!("{s:?} is not JSON ({e}); quote text as '\"{s}\"' or pass --string"))
}

fn explain(e: ClientError) -> String {
    match e {
        ClientError::Http {
            status,
            code,
            message,
            ..
        } => format!("HTTP {status} {code}: {message}"),
        other => other.to_string(),
    }
}

fn print_json(v: &Value) -> Result<(), String> {
    println!(
        "{}",
        serde_json::to_string_pretty(v).map_err(|e| e.to_string())?
    );
    Ok(())
}

fn written(body: &Value, as_json: bool) -> Result<(), String> {
    if as_json {
        return print_json(body);
    }
    let mut line = format!("ok, version {}", text(&body["version"]));
    if let Some(v) = body.get("value") {
        let _ = write!(line, ", value {v}");
    }
    println!("{line}");
    println!("# token {}", text(&body["token"]));
    Ok(())
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn list<'a>(v: &'a Value, field: &str) -> &'a [Value] {
    v.get(field)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Left-aligned columns separated by two spaces.
fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut width: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            let _ = write!(l, "{c:<w$}  ", w = width[i]);
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(headers.to_vec());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

/// A version vector as `region:seq` pairs.
fn vv_text(vv: &Value) -> String {
    vv.as_array()
        .into_iter()
        .flatten()
        .map(|e| format!("{}:{}", text(&e["region"]), text(&e["seq"])))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The cluster as every region sees it, and whether it has converged.
pub async fn gather(urls: &[String]) -> Value {
    let mut regions = Vec::new();
    for u in urls {
        let s = match client(u) {
            Ok(c) => c.status().await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        regions.push(match s {
            Ok(s) => json!({"url": u, "status": s}),
            Err(e) => json!({"url": u, "error": e}),
        });
    }
    let up: Vec<&Value> = regions.iter().filter_map(|r| r.get("status")).collect();
    let same = |field: &str| up.windows(2).all(|w| w[0][field] == w[1][field]);
    let mut why = Vec::new();
    if up.len() < regions.len() {
        why.push(format!(
            "{} of {} regions unreachable",
            regions.len() - up.len(),
            regions.len()
        ));
    }
    if !same("vv") {
        why.push("version vectors differ".to_string());
    }
    if !same("keyspaces") {
        why.push("keyspace digests differ".to_string());
    }
    json!({
        "regions": regions,
        "converged": why.is_empty(),
        "why_not": why,
    })
}

async fn status(urls: &[String], as_json: bool) -> Result<(), String> {
    let all = gather(urls).await;
    if as_json {
        return print_json(&all);
    }
    let regions = list(&all, "regions");
    let mut rows = Vec::new();
    let mut links = Vec::new();
    let mut vvs = Vec::new();
    for r in regions {
        let url = text(&r["url"]);
        let Some(s) = r.get("status") else {
            rows.push(vec![
                "?".into(),
                url,
                "unreachable".into(),
                text(&r["error"]),
                String::new(),
                String::new(),
            ]);
            continue;
        };
        let name = text(&s["region"]);
        rows.push(vec![
            name.clone(),
            url,
            "up".into(),
            text(&s["ops"]),
            text(&s["held_for_clock"]),
            format!("{} s", text(&s["uptime_s"])),
        ]);
        vvs.push(vec![name.clone(), vv_text(&s["vv"])]);
        for p in list(s, "peers") {
            links.push(vec![
                format!("{name} -> {}", text(&p["region"])),
                text(&p["link"]),
                text(&p["lag_ops"]),
                text(&p["lag_ms"]),
                text(&p["clock_offset_ms"]),
                text(&p["errors"]),
                text(&p["last_error"]),
            ]);
        }
    }
    print!(
        "{}",
        table(&["REGION", "URL", "STATE", "OPS", "HELD", "UPTIME"], rows)
    );
    if !links.is_empty() {
        println!();
        print!(
            "{}",
            table(
                &[
                    "LINK",
                    "STATE",
                    "LAG OPS",
                    "LAG MS",
                    "CLOCK OFFSET MS",
                    "ERRORS",
                    "LAST ERROR"
                ],
                links
            )
        );
    }
    println!();
    print!("{}", table(&["REGION", "VERSION VECTOR"], vvs));
    // Digests: one row per keyspace, one column per region.
    let up: Vec<&Value> = regions.iter().filter_map(|r| r.get("status")).collect();
    let mut names: Vec<String> = Vec::new();
    for s in &up {
        for k in list(s, "keyspaces") {
            let n = text(&k["name"]);
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    let mut headers = vec!["KEYSPACE".to_string()];
    headers.extend(up.iter().map(|s| text(&s["region"])));
    let digest_rows = names
        .iter()
        .map(|n| {
            let mut row = vec![n.clone()];
            for s in &up {
                let d = list(s, "keyspaces")
                    .iter()
                    .find(|k| text(&k["name"]) == *n)
                    .map(|k| text(&k["digest"]))
                    .unwrap_or_else(|| "-".into());
                row.push(d.chars().take(12).collect());
            }
            row
        })
        .collect();
    println!();
    let h: Vec<&str> = headers.iter().map(String::as_str).collect();
    print!("{}", table(&h, digest_rows));
    println!();
    if all["converged"] == json!(true) {
        println!(
            "converged: yes ({} regions, equal version vectors and digests)",
            regions.len()
        );
    } else {
        let why: Vec<String> = list(&all, "why_not").iter().map(text).collect();
        println!("converged: no ({})", why.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_aligns_its_columns() {
        let t = table(
            &["A", "BB"],
            vec![
                vec!["xxx".into(), "y".into()],
                vec!["z".into(), "wwww".into()],
            ],
        );
        assert_eq!(t, "A    BB\nxxx  y\nz    wwww\n");
    }

    #[test]
    fn values_are_json_unless_text_is_asked_for() {
        assert_eq!(parse_value("42", false), Ok(json!(42)));
        assert_eq!(parse_value("red", true), Ok(json!("red")));
        let e = parse_value("red", false).unwrap_err();
        assert!(e.contains("--string"), "{e}");
    }

    #[test]
    fn a_version_vector_reads_as_region_seq_pairs() {
        let vv = json!([{"region": "us-east", "incarnation": "x", "seq": 3}, {"region": "eu-west", "incarnation": "y", "seq": 9}]);
        assert_eq!(vv_text(&vv), "us-east:3 eu-west:9");
    }
}
