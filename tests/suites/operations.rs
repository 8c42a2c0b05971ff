//! What operators load next to a cluster: the Grafana dashboard and the
//! Prometheus alert rules in `deploy/grafana/`, checked against real
//! regions. Every metric they name must be one the server exports; when a
//! Prometheus server is installed (`.ci/run` installs Debian's), it scrapes
//! a real two-region cluster with the rules loaded, every dashboard query
//! must be valid PromQL, the core panels must show data, and promtool's
//! rule tests (`alerts.test.yaml`) must pass.
//!
//! Past ~400 lines because STYLE keeps one test binary per topic: these cases
//! share the fixtures at the top of this file.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meridian_harness::cluster::Cluster;
use serde_json::{Value, json};

fn grafana_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana")
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(grafana_dir().join("meridian.json")).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("meridian.json: {e}"))
}

/// Every query of the dashboard: (panel title, PromQL).
fn queries(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                p["title"].as_str().unwrap().to_string(),
                t["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    out
}

/// The `meridian_*` names in `text`.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("meridian_") {
        let start = i + at;
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_lowercase() || b[end] == b'_') {
            end += 1;
        }
        // A word of its own, not the tail of another identifier.
        if start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_') {
            out.insert(text[start..end].to_string());
        }
        i = end;
    }
    out
}

/// The series names a scrape can hold, from its `# TYPE` lines.
fn exported(scrape: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for l in scrape.lines() {
        let Some(rest) = l.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, ty) = rest.split_once(' ').unwrap();
        match ty {
            "counter" => {
                out.insert(format!("{name}_total"));
            }
            "histogram" => {
                for s in ["_bucket", "_sum", "_count"] {
                    out.insert(format!("{name}{s}"));
                }
            }
            _ => {
                out.insert(name.to_string());
            }
        }
    }
    out
}

/// A GET over HTTP/1.1 on loopback: (status, body).
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split(' ').nth(1)?.parse().ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        unchunk(body)
    } else {
        body.to_string()
    };
    Some((status, body))
}

fn unchunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// `s` as a URL query value.
fn query_value(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap()
}

/// A program on `PATH` (or at `$var`), if installed.
fn program(var: &str, name: &str) -> Option<PathBuf> {
    if let Ok(p) = std::env::var(var) {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_dashboard_is_a_grafana_dashboard_over_templated_prometheus() {
    let d = dashboard();
    assert_eq!(d["uid"], "meridian-overview");
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36);
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vars, ["datasource", "region"]);
    let mut ids = BTreeSet::new();
    for p in d["panels"].as_array().unwrap() {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "panel id twice: {p}");
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap());
        assert!(x + w <= 24 && g["h"].as_u64().unwrap() > 0, "{p}");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["type"], "timeseries");
        assert_eq!(
            p["datasource"],
            json!({"type": "prometheus", "uid": "${datasource}"})
        );
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{}", p["title"]);
        let refs: BTreeSet<&str> = targets
            .iter()
            .map(|t| t["refId"].as_str().unwrap())
            .collect();
        assert_eq!(refs.len(), targets.len(), "refIds repeat in {}", p["title"]);
        for t in targets {
            let e = t["expr"].as_str().unwrap();
            assert!(
                e.contains("region=~\"$region\""),
                "{e}: not filtered by region"
            );
        }
    }
    let titles: Vec<&str> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    for want in [
        "Write latency",
        "Read latency",
        "fsync",
        "Group commit size",
        "Replication lag",
        "Conflicts",
        "Clock offset",
        "504s (write concern or token wait timed out)",
    ] {
        assert!(titles.contains(&want), "no panel {want:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboard_and_alerts_match_what_real_regions_export() {
    let cluster = Cluster::builder()
        .regions(["us-east", "eu-west"])
        .latency_ms(5)
        .start()
        .await
        .expect("cluster");
    let c = cluster.client("us-east");
    for i in 0..20 {
        c.put("default", &format!("k{i}"), &json!(i)).await.unwrap();
        c.get("default", &format!("k{i}")).await.unwrap();
    }
    cluster
        .wait_converged(Duration::from_secs(30))
        .await
        .unwrap();

    let dash = dashboard();
    let alerts = std::fs::read_to_string(grafana_dir().join("alerts.yaml")).unwrap();
    let mut named = names_in(&alerts);
    for (_, e) in queries(&dash) {
        named.extend(names_in(&e));
    }
    assert!(named.len() > 20, "{named:?}");
    for region in ["us-east", "eu-west"] {
        let port = port_of(&cluster.url(region).unwrap());
        let (status, scrape) = get(port, "/metrics").unwrap();
        assert_eq!(status, 200);
        let have = exported(&scrape);
        let missing: Vec<&String> = named.iter().filter(|n| !have.contains(*n)).collect();
        assert!(
            missing.is_empty(),
            "{region} does not export {missing:?} (it exports {have:?})"
        );
    }

    let (Some(prometheus), Some(promtool)) = (
        program("MERIDIAN_PROMETHEUS", "prometheus"),
        program("MERIDIAN_PROMTOOL", "promtool"),
    ) else {
        eprintln!(
            "prometheus/promtool not installed (apt-get install prometheus): the rules and queries are not run through a real Prometheus"
        );
        cluster.stop().await;
        return;
    };
    let dir = cluster.dir().join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["alerts.yaml", "alerts.test.yaml"] {
        std::fs::copy(grafana_dir().join(f), dir.join(f)).unwrap();
    }
    for args in [
        vec!["check", "rules", "alerts.yaml"],
        vec!["test", "rules", "alerts.test.yaml"],
    ] {
        let out = Command::new(&promtool)
            .args(&args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let targets: Vec<String> = ["us-east", "eu-west"]
        .iter()
        .map(|r| format!("\"127.0.0.1:{}\"", port_of(&cluster.url(r).unwrap())))
        .collect();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [alerts.yaml]\nscrape_configs:\n  - job_name: meridian\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let _prom = KillOnDrop(
        Command::new(&prometheus)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    // Both regions scraped as up, a few times over (rates need two samples).
    let up = "sum(up{job=\"meridian\"})";
    let deadline = Instant::now() + Duration::from_secs(60);
    let query = |e: &str| -> Value {
        let (status, body) = get(port, &format!("/api/v1/query?query={}", query_value(e)))
            .unwrap_or((0, String::new()));
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        // 0: not listening yet; 503: still opening its storage.
        assert!(
            matches!(status, 0 | 200 | 503),
            "query {e}: {status} {body}"
        );
        v
    };
    loop {
        let v = query(up);
        if v["data"]["result"][0]["value"][1] == "2" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped both regions: {v} (log: {})",
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Traffic across a few scrapes, so rates and quantiles have data.
    for round in 0..6 {
        for i in 0..10 {
            c.put("default", &format!("r{round}-{i}"), &json!(i))
                .await
                .unwrap();
            c.get("default", &format!("r{round}-{i}")).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let grafana = |e: &str| {
        e.replace("$__rate_interval", "10s")
            .replace("$region", ".*")
    };
    // Panels that must show data on a cluster taking writes.
    let with_data = [
        "Write latency",
        "Read latency",
        "Answers by status",
        "fsync",
        "Group commit size",
        "Write stages",
        "Op log and state on disk",
        "Replication lag",
        "Replication lag (ops)",
        "Clock offset",
        "Replication traffic",
        "Restarts",
    ];
    for (title, e) in queries(&dash) {
        let v = query(&grafana(&e));
        assert_eq!(v["status"], "success", "{title}: {e}: {v}");
        if with_data.contains(&title.as_str()) {
            // A quantile over an idle window is NaN: that is no data either.
            let n = v["data"]["result"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["value"][1] != "NaN")
                .count();
            assert!(n > 0, "{title}: {e} has no data: {v}");
        }
    }
    // Every rule loaded and evaluated without error; on a healthy cluster
    // none is even pending, but for the slow-fsync rule: the first fsyncs
    // of a fresh log on a loaded test machine can be slow (it waits 10
    // minutes before firing).
    let (_, body) = get(port, "/api/v1/rules").unwrap();
    let rules: Value = serde_json::from_str(&body).unwrap();
    let all: Vec<&Value> = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert_eq!(all.len(), 12, "{rules}");
    for r in &all {
        assert_eq!(r["health"], "ok", "{r}");
        if r["name"] != "MeridianFsyncSlow" {
            assert_eq!(r["state"], "inactive", "active on a healthy cluster: {r}");
        }
    }
    cluster.stop().await;
}

/// Chromium, if installed (`.ci/run` installs Debian's).
fn chromium() -> Option<PathBuf> {
    program("MERIDIAN_CHROMIUM", "chromium")
        .or_else(|| program("MERIDIAN_CHROMIUM", "chromium-browser"))
}

/// The page at `url` after its scripts ran, as Chromium renders it
/// (killed after a minute: a wedged browser fails the test, not CI).
fn browse(chromium: &Path, url: &str, screenshot: Option<&Path>) -> String {
    static RUN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let profile = std::env::temp_dir().join(format!(
        "meridian-chromium-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let mut cmd = Command::new(chromium);
    cmd.arg(format!("--user-data-dir={}", profile.display()));
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--window-size=1400,1000",
        // Virtual time runs the page's polls; it waits for their fetches.
        "--virtual-time-budget=10000",
    ]);
    match screenshot {
        Some(p) => cmd.arg(format!("--screenshot={}", p.display())),
        None => cmd.arg("--dump-dom"),
    };
    let dump = profile.with_extension("out");
    let errors = profile.with_extension("err");
    let child = cmd
        .arg(url)
        .stdout(std::fs::File::create(&dump).unwrap())
        .stderr(std::fs::File::create(&errors).unwrap())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "chromium did not finish within 60 s on {url}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let stderr = std::fs::read_to_string(&errors).unwrap_or_default();
    let _ = std::fs::remove_file(&errors);
    assert!(status.success(), "chromium: {stderr}");
    let out = std::fs::read_to_string(&dump).unwrap_or_default();
    let _ = std::fs::remove_file(&dump);
    let _ = std::fs::remove_dir_all(&profile);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_shows_links_keyspaces_and_the_ledger_in_a_real_browser() {
    let Some(chromium) = chromium() else {
        eprintln!(
            "chromium not installed (apt-get install chromium): the console is not checked in a browser"
        );
        return;
    };
    let cluster = Cluster::builder()
        .regions(["us-east", "eu-west"])
        .latency_ms(5)
        .start()
        .await
        .expect("cluster");
    // A conflict the ledger records: one key written on both sides of a cut.
    cluster.partition("us-east", "eu-west").unwrap();
    let (a, b) = (cluster.client("us-east"), cluster.client("eu-west"));
    a.put("default", "cart/<i>7</i>", &json!({"from": "us-east"}))
        .await
        .unwrap();
    b.put("default", "cart/<i>7</i>", &json!({"from": "eu-west"}))
        .await
        .unwrap();
    cluster.heal();
    cluster
        .wait_converged(Duration::from_secs(30))
        .await
        .unwrap();
    let url = cluster.url("us-east").unwrap();
    let dom = browse(
        &chromium,
        &format!(
            "{url}/ui?keyspace=default&key={}",
            query_value("cart/<i>7</i>")
        ),
        None,
    );
    for want in [
        "region us-east",
        "converged: every peer holds the same ops",
        "<td>eu-west</td>",
        "connected",
        "<polyline",
        "data-peer=\"eu-west\"",
        "<td>lww</td>",
        // The key is user data: it arrives as text, escaped, never markup.
        "default/cart/&lt;i&gt;7&lt;/i&gt;",
        "winner: {\"from\":",
        "rule: lww",
        "builtin:max",
    ] {
        assert!(dom.contains(want), "the console lacks {want:?}:\n{dom}");
    }
    assert!(
        !dom.contains("cart/<i>7</i>"),
        "a key was put into the page as markup"
    );
    let shot = cluster.dir().join("console.png");
    browse(
        &chromium,
        &format!("{url}/ui?keyspace=default"),
        Some(&shot),
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_of_a_region_with_tokens_shows_nothing_without_one() {
    let Some(chromium) = chromium() else {
        eprintln!("chromium not installed: skipped");
        return;
    };
    let cluster = Cluster::builder()
        .regions(["us-east"])
        .access_token("console-test-bootstrap-token-0123456789abcdef")
        .start()
        .await
        .expect("cluster");
    cluster
        .client("us-east")
        .put("default", "secret", &json!("do not show"))
        .await
        .unwrap();
    let url = cluster.url("us-east").unwrap();
    let (status, page) = get(port_of(&url), "/ui").unwrap();
    assert_eq!(status, 200, "the page itself is public");
    assert!(page.contains("Meridian console"));
    let dom = browse(&chromium, &format!("{url}/ui?keyspace=default"), None);
    assert!(dom.contains("this region needs an access token"), "{dom}");
    assert!(!dom.contains("do not show") && !dom.contains("region us-east ·"));
    cluster.stop().await;
}
