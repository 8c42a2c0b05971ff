//! `meridian ctl` against a real cluster: the binary, its tables, its JSON,
//! its errors.
//!
//! Past ~400 lines because STYLE keeps one test binary per topic: these cases
//! share the fixtures at the top of this file.

use std::process::Output;
use std::time::Duration;

use meridian_harness::cluster::Cluster;
use meridian_harness::node::meridian_bin;
use serde_json::Value;

fn ctl(c: &Cluster, args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(meridian_bin());
    // Each cluster's session file is its own.
    cmd.env("MERIDIAN_SESSION", c.dir().join("ctl-session.json"));
    cmd.arg("ctl");
    for r in &c.regions {
        cmd.arg("--url").arg(c.url(r).unwrap());
    }
    cmd.args(args).output().expect("meridian ctl runs")
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "ctl failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_writes_reads_and_reports_convergence() {
    let c = Cluster::builder().latency_ms(5).start().await.unwrap();
    let out = stdout(&ctl(
        &c,
        &["--region", "eu-west", "put", "default", "k", r#"{"a":1}"#],
    ));
    assert!(out.starts_with("ok, version eu-west:"), "{out}");
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    let got = stdout(&ctl(
        &c,
        &["--region", "ap-south", "get", "default", "k", "--json"],
    ));
    let body: Value = serde_json::from_str(&got).unwrap();
    assert_eq!(body["value"]["a"], 1, "{got}");

    let table = stdout(&ctl(&c, &["status"]));
    assert!(table.contains("converged: yes (3 regions"), "{table}");
    for r in &c.regions {
        assert!(table.contains(r.as_str()), "{table}");
    }

    // Cut ap-south off and write elsewhere: status must say so.
    c.partition_off("ap-south").unwrap();
    let o = ctl(&c, &["incr", "default", "n"]);
    assert!(!o.status.success(), "incr on an lww keyspace is refused");
    assert!(String::from_utf8_lossy(&o.stderr).contains("HTTP 422 unsupported_op"));
    stdout(&ctl(&c, &["put", "default", "x", "1"]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s: Value = serde_json::from_str(&stdout(&ctl(&c, &["status", "--json"]))).unwrap();
    assert_eq!(s["converged"], false, "{s}");
    assert!(
        s["why_not"].to_string().contains("version vectors differ"),
        "{s}"
    );
    c.heal();
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    let s: Value = serde_json::from_str(&stdout(&ctl(&c, &["status", "--json"]))).unwrap();
    assert_eq!(s["converged"], true, "{s}");

    // Bad input: a clear message and a failing exit status, nothing written.
    let o = ctl(&c, &["put", "default", "y", "not-json"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("is not JSON") && err.contains("--string"),
        "{err}"
    );
    let o = ctl(&c, &["get", "default", "y"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("not found"));
    let o = ctl(&c, &["--region", "mars", "get", "default", "k"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("no region named \"mars\""));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_registers_merges_and_creates_custom_keyspaces() {
    let c = Cluster::builder().start().await.unwrap();
    let dir = c.dir().join("scripts");
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("keep-max.rhai");
    std::fs::write(
        &script,
        "// the largest number among the versions\nfn merge(vs) {\n  let best = vs[0].value;\n  for v in vs { if v.value > best { best = v.value; } }\n  best\n}\n",
    )
    .unwrap();
    let samples = dir.join("samples.json");
    std::fs::write(&samples, "[[1, 5, 3]]").unwrap();
    let out = stdout(&ctl(
        &c,
        &[
            "merge",
            "put",
            "keep-max",
            script.to_str().unwrap(),
            "--description",
            "largest wins",
            "--samples",
            samples.to_str().unwrap(),
        ],
    ));
    assert!(
        out.starts_with("merge keep-max: registered (hash "),
        "{out}"
    );
    // A broken script: the error names line and column.
    let bad = dir.join("bad.rhai");
    std::fs::write(&bad, "fn merge(vs) {\n  vs[0].value +\n}\n").unwrap();
    let o = ctl(&c, &["merge", "put", "broken", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("HTTP 400 invalid_merge: invalid merge script: line 3"),
        "{err}"
    );
    let list = stdout(&ctl(&c, &["merge", "list"]));
    assert!(
        list.contains("keep-max") && list.contains("script") && list.contains("json-deep-merge"),
        "{list}"
    );
    assert!(!list.contains("broken"), "{list}");
    // Merge scripts replicate like data (ctl's session token covers key
    // writes only): let eu-west have it before reading it there.
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    let got = stdout(&ctl(
        &c,
        &["--region", "eu-west", "merge", "get", "keep-max"],
    ));
    assert!(
        got.contains("# largest wins") && got.contains("fn merge(vs)"),
        "{got}"
    );

    let out = stdout(&ctl(
        &c,
        &[
            "keyspace", "create", "scores", "--policy", "custom", "--merge", "keep-max",
        ],
    ));
    assert_eq!(out.trim(), "keyspace scores: created");
    let out = stdout(&ctl(
        &c,
        &[
            "keyspace", "update", "scores", "--policy", "custom", "--merge", "max",
        ],
    ));
    assert_eq!(out.trim(), "keyspace scores: updated");
    let shown: Value =
        serde_json::from_str(&stdout(&ctl(&c, &["keyspace", "show", "scores"]))).unwrap();
    assert_eq!(
        (shown["policy"].as_str(), shown["merge"].as_str()),
        (Some("custom"), Some("max"))
    );
    let o = ctl(
        &c,
        &[
            "keyspace", "create", "other", "--policy", "custom", "--merge", "missing",
        ],
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("HTTP 400 unknown_merge"));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_sets_shows_and_transfers_ownership() {
    let c = Cluster::builder().latency_ms(5).start().await.unwrap();
    stdout(&ctl(
        &c,
        &["keyspace", "create", "profiles", "--policy", "lww"],
    ));
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    let out = stdout(&ctl(
        &c,
        &[
            "--region",
            "us-east",
            "ownership",
            "set",
            "profiles",
            "--rule",
            "prefix:eu/=eu-west",
            "--rule",
            "prefix:us/=us-east",
        ],
    ));
    assert!(
        out.contains("epoch 1") && out.contains("steward ap-south") && out.contains("(changed)"),
        "{out}"
    );
    assert!(
        out.contains("prefix \"eu/\"") && out.contains("eu-west"),
        "{out}"
    );
    // Set again: read, compare-and-set on the epoch read, nothing changes.
    // (Once epoch 1 has reached the region ctl reads the map in: before
    // that it reads epoch 0 there and the steward rightly answers 409.)
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    let out = stdout(&ctl(
        &c,
        &[
            "ownership",
            "set",
            "profiles",
            "--rule",
            "prefix:eu/=eu-west",
            "--rule",
            "prefix:us/=us-east",
        ],
    ));
    assert!(
        out.contains("epoch 1") && out.contains("(unchanged)"),
        "{out}"
    );
    let out = stdout(&ctl(
        &c,
        &[
            "ownership",
            "transfer",
            "profiles",
            "prefix:eu/",
            "--to",
            "ap-south",
        ],
    ));
    assert!(out.contains("epoch 2"), "{out}");
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    let shown: Value = serde_json::from_str(&stdout(&ctl(
        &c,
        &[
            "--region",
            "eu-west",
            "ownership",
            "show",
            "profiles",
            "--json",
        ],
    )))
    .unwrap();
    assert_eq!(shown["epoch"], 2, "{shown}");
    assert_eq!(shown["rules"][0]["owner"], "ap-south");
    // Bad rules: a clear message, nothing changed.
    let o = ctl(
        &c,
        &["ownership", "set", "profiles", "--rule", "prefix:eu/=mars"],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("invalid_map") && err.contains("mars"), "{err}");
    let o = ctl(
        &c,
        &["ownership", "set", "profiles", "--rule", "eu/=eu-west"],
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("prefix:PREFIX or hash:LO-HI"));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_commands_fail_over_when_their_region_is_down() {
    let mut c = Cluster::builder().latency_ms(5).start().await.unwrap();
    let first = c.url(&c.regions[0]).unwrap();
    let second = c.url(&c.regions[1]).unwrap();
    c.kill(&c.regions[0].clone()).await.unwrap();
    let o = ctl(&c, &["put", "default", "k", "7"]);
    let out = stdout(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("answered by {second}")) && err.contains(&first),
        "{err}"
    );
    assert!(
        out.starts_with(&format!("ok, version {}:", c.regions[1])),
        "{out}"
    );
    let got = stdout(&ctl(&c, &["get", "default", "k"]));
    assert!(got.starts_with('7'), "{got}");
    // An increment refused by a dead region's connection goes on too: it
    // never reached it.
    let o = ctl(&c, &["keyspace", "create", "hits", "--policy", "counter"]);
    stdout(&o);
    let out = stdout(&ctl(&c, &["incr", "hits", "n", "2"]));
    assert!(out.contains(", value 2"), "{out}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_reads_follow_its_writes_in_any_region() {
    // 300 ms links: without the session's token a read in eu-west right
    // after the write in us-east would not find it.
    let c = Cluster::builder().latency_ms(300).start().await.unwrap();
    let out = stdout(&ctl(&c, &["put", "default", "greeting", r#""hello""#]));
    assert!(out.starts_with("ok, version us-east:"), "{out}");
    let o = ctl(&c, &["--region", "eu-west", "get", "default", "greeting"]);
    let got = stdout(&o);
    assert!(got.starts_with("\"hello\""), "{got}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !err.contains("answered by"),
        "eu-west waited and answered: {err}"
    );
    let session = stdout(&ctl(&c, &["session"]));
    assert!(session.contains("token: "), "{session}");
    let session = stdout(&ctl(&c, &["session", "--clear"]));
    assert!(session.contains("no token kept"), "{session}");
    // A region cut off from the write cannot serve a read that follows it:
    // it answers 503 behind_token, and ctl reads at the next region, which
    // has the write (never the older value ap-south holds).
    stdout(&ctl(&c, &["put", "default", "greeting", r#""again""#]));
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    c.partition_off("ap-south").unwrap();
    stdout(&ctl(&c, &["put", "default", "greeting", r#""third""#]));
    let o = ctl(
        &c,
        &[
            "--region",
            "ap-south",
            "--wait-ms",
            "200",
            "get",
            "default",
            "greeting",
        ],
    );
    let got = stdout(&o);
    assert!(got.starts_with("\"third\""), "{got}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("answered by"), "{err}");
    // A write in the cut-off region stays there: writes do not wait for
    // the session.
    let out = stdout(&ctl(
        &c,
        &["--region", "ap-south", "put", "default", "side", "1"],
    ));
    assert!(out.starts_with("ok, version ap-south:"), "{out}");
    c.heal();

    // A session of a cluster since recreated on the same ports (what
    // `meridian dev` does on every start): no region can serve it; the read
    // drops it, says so, and reads without it.
    let mut stale = meridian_crdt::VersionVector::new();
    let gone = meridian_crdt::ReplicaId::new(
        meridian_crdt::RegionId::new("us-east").unwrap(),
        uuid::Uuid::from_u128(42),
    );
    stale.raise(&gone, meridian_crdt::Seq(7));
    let mut urls: Vec<String> = c.regions.iter().map(|r| c.url(r).unwrap()).collect();
    urls.sort();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let file = serde_json::json!({"clusters": {urls.join(","): {
        "token": meridian_core::token::encode(&stale), "at": now}}});
    std::fs::write(c.dir().join("ctl-session.json"), file.to_string()).unwrap();
    let o = ctl(&c, &["--wait-ms", "100", "get", "default", "greeting"]);
    let got = stdout(&o);
    assert!(got.starts_with("\"third\""), "{got}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("the session is cleared"), "{err}");
    let session = stdout(&ctl(&c, &["session"]));
    assert!(session.contains("no token kept"), "{session}");
    c.stop().await;
}

/// The completion script bash loads completes subcommands as a shell does.
#[test]
fn bash_completion_completes_ctl_commands() {
    let script = std::process::Command::new(meridian_bin())
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(script.status.success());
    let Some(bash) = ["/bin/bash", "/usr/bin/bash"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        eprintln!("no bash here: the script was made but not loaded");
        return;
    };
    let dir = std::env::temp_dir().join(format!("meridian-completion-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("meridian.bash");
    std::fs::write(&path, &script.stdout).unwrap();
    let complete = |words: &str| -> String {
        let out = std::process::Command::new(bash)
            .arg("-c")
            .arg(format!(
                r#"source {}; COMP_LINE="{words}"; read -ra COMP_WORDS <<< "$COMP_LINE"; COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 )); COMP_POINT=${{#COMP_LINE}}; _meridian meridian "${{COMP_WORDS[-1]}}" "${{COMP_WORDS[-2]}}"; echo "${{COMPREPLY[@]}}""#,
                path.display()
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let ctl = complete("meridian ctl key");
    assert!(ctl.split_whitespace().any(|w| w == "keyspace"), "{ctl:?}");
    let top = complete("meridian comp");
    assert_eq!(top.trim(), "completions", "{top:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
