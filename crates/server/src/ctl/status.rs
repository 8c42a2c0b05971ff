//! `meridian ctl status`: every region's view, side by side, and whether
//! they have converged (equal version vectors and equal digests).

use anyhow::anyhow;
use serde_json::{Value, json};

use super::client;
use super::output::{list, print_json, table, text};

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
            Ok(c) => c.status().await.map_err(anyhow::Error::from),
            Err(e) => Err(e),
        };
        regions.push(match s {
            Ok(s) => json!({"url": u, "status": s}),
            Err(e) => json!({"url": u, "error": e.to_string()}),
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

/// Prints the cluster as a set of tables, or as JSON.
pub async fn print(urls: &[String], as_json: bool) -> anyhow::Result<()> {
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
    let mut members = Vec::new();
    for r in regions {
        let Some(s) = r.get("status") else { continue };
        let sb = &s["standby"];
        if sb.is_null() {
            continue;
        }
        let name = text(&s["region"]);
        let role = text(&sb["role"]);
        let who = if role == "leader" {
            format!("{} standbys", list(sb, "followers").len())
        } else {
            format!("follows {}", text(&sb["leader"]["peer_url"]))
        };
        members.push(vec![
            name.clone(),
            text(&r["url"]),
            role,
            text(&sb["epoch"]),
            who,
            text(&sb["staleness_ms"]),
        ]);
        for f in list(sb, "followers") {
            members.push(vec![
                format!("{name} standby"),
                text(&f["client_url"]),
                if f["live"] == json!(true) {
                    "live".into()
                } else {
                    "gone".into()
                },
                String::new(),
                format!(
                    "lag {} ops, {} bytes, {} ms",
                    text(&f["lag_ops"]),
                    text(&f["lag_bytes"]),
                    text(&f["lag_ms"])
                ),
                String::new(),
            ]);
        }
    }
    if members
        .iter()
        .any(|m| m[2] != "leader" || m[4] != "0 standbys")
    {
        println!();
        print!(
            "{}",
            table(
                &[
                    "MEMBER",
                    "URL",
                    "ROLE",
                    "EPOCH",
                    "STANDBYS / LEADER",
                    "STALENESS MS"
                ],
                members
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

/// `meridian ctl promote URL`: asks the standby to lead, then waits until
/// its `/healthz/leader` says it does.
pub async fn promote(url: &str, wait_s: u64, as_json: bool) -> anyhow::Result<()> {
    let c = client(url)?;
    let answer = c.promote().await.map_err(|e| anyhow!("{url}: {e}"))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait_s);
    loop {
        if let Ok(s) = c.status().await
            && s["standby"]["role"] == json!("leader")
        {
            if as_json {
                return print_json(&json!({"promoted": answer, "status": s["standby"]}));
            }
            println!(
                "{url} leads region {} at epoch {}",
                text(&s["region"]),
                text(&s["standby"]["epoch"])
            );
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(anyhow!(
                "{url} accepted the promotion but does not serve as the leader after {wait_s} s"
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_vector_reads_as_region_seq_pairs() {
        let vv = json!([{"region": "us-east", "incarnation": "x", "seq": 3}, {"region": "eu-west", "incarnation": "y", "seq": 9}]);
        assert_eq!(vv_text(&vv), "us-east:3 eu-west:9");
    }
}
