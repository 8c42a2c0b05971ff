use meridian_crdt::Policy;

use super::*;

/// Loads `toml` as the config file. Inside a figment jail, so it runs
/// apart from the tests that set MERIDIAN_* variables (it once read a
/// region another test had set).
#[allow(clippy::result_large_err)]
fn with_file(toml: &str) -> Result<Config, ConfigError> {
    let mut out = None;
    figment::Jail::expect_with(|jail| {
        let p = jail.directory().join("m.toml");
        std::fs::write(&p, toml).unwrap();
        out = Some(Config::load(Some(&p), &Overrides::default()));
        Ok(())
    });
    out.expect("the jail ran")
}

#[test]
fn backup_settings_are_checked() {
    let base = "region = \"eu-west\"\ndata_dir = \"/tmp/x\"\n";
    let v = with_file(base).unwrap().validate().unwrap();
    assert!(v.backup.is_none(), "no target: no backups");
    assert!(v.log.pin.is_none());
    let v = with_file(&format!(
        "{base}[backup]\ntarget = \"s3://bkt/eu\"\nendpoint = \"http://127.0.0.1:9000\"\nkeep_last = 7\nkeep_hours = 48\nundo_window_hours = 2\n"
    ))
    .unwrap()
    .validate()
    .unwrap();
    let b = v.backup.unwrap();
    assert_eq!(b.target.url, "s3://bkt/eu");
    assert_eq!((b.keep_last, b.keep_ms), (7, 48 * 3_600_000));
    assert_eq!(b.archive_interval_ms, 60_000);
    assert_eq!(b.undo_ms, 2 * 3_600_000);
    let v = with_file(&format!("{base}[backup]\ntarget = \"/b\"\n"))
        .unwrap()
        .validate()
        .unwrap();
    assert_eq!(
        v.backup.unwrap().undo_ms,
        24 * 3_600_000,
        "a day by default"
    );
    for (bad, field_) in [
        ("target = \"relative\"", "backup.target"),
        (
            "target = \"/abs\"\nendpoint = \"http://x\"",
            "backup.target",
        ),
        (
            "target = \"/abs\"\narchive_interval_ms = 99",
            "backup.archive_interval_ms",
        ),
    ] {
        let e = with_file(&format!("{base}[backup]\n{bad}\n"))
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("`{field_}`")), "{bad}: {e}");
    }
    let e = with_file(&format!("{base}[backup]\ntarget = \"/a\"\nbucket = 1\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("bucket"), "{e}");
}

#[test]
fn https_members_and_peers_need_the_peer_ca() {
    let base = "region = \"eu-west\"\ndata_dir = \"/tmp/x\"\ncluster_secret = \"0123456789abcdef0123\"\npeer_listen = \"127.0.0.1:7170\"\n";
    let err = |extra: &str| {
        with_file(&format!("{base}{extra}"))
            .unwrap()
            .validate()
            .err()
            .map(|e| e.to_string())
    };
    let peer = "[[peers]]\nname = \"us-east\"\nurl = \"https://u:7170\"\n";
    assert!(err(peer).unwrap().contains("peers[0].url"));
    let standby = "[[peers]]\nname = \"us-east\"\nurl = \"http://u:7170\"\nstandby_urls = [\"https://u2:7170\"]\n";
    assert!(err(standby).unwrap().contains("peers[0].standby_urls[0]"));
    let follow = "[standby]\nfollow = \"https://leader:7170\"\n";
    assert!(err(follow).unwrap().contains("standby.follow"));
    let serving = "[tls]\ncert_file = \"/c\"\nkey_file = \"/k\"\n";
    assert!(err(serving).unwrap().contains("tls.peer_ca_file"));
    // With the CA: all accepted.
    assert_eq!(
        err(&format!(
            "{peer}[tls]\ncert_file = \"/c\"\nkey_file = \"/k\"\npeer_ca_file = \"/ca\"\n"
        )),
        None
    );
}

#[test]
fn file_values_and_validation_errors_name_the_field() {
    let c = with_file("region = \"eu-west\"\ndata_dir = \"/tmp/x\"\n[[keyspaces]]\nname = \"hits\"\npolicy = \"counter\"\n").unwrap();
    let v = c.validate().unwrap();
    assert_eq!(v.region.as_str(), "eu-west");
    assert_eq!(v.keyspaces[0].policy, Policy::Counter);

    let c = with_file("region = \"eu-west\"\ndata_dir = \"/tmp/x\"\n[[keyspaces]]\nname = \"hits\"\npolicy = \"crdt\"\n").unwrap();
    let e = c.validate().unwrap_err().to_string();
    assert_eq!(
        e,
        "configuration field `keyspaces[0].policy`: unknown policy \"crdt\": expected one of lww, mv, counter, set, doc, custom"
    );

    let c = with_file("region = \"eu-west\"\ndata_dir = \"/tmp/x\"\n[[keyspaces]]\nname = \"prices\"\npolicy = \"custom\"\nmerge = \"region-priority\"\nregion_order = [\"eu-west\", \"us-east\"]\n").unwrap();
    let v = c.validate().unwrap();
    assert_eq!(v.keyspaces[0].policy, Policy::Custom);
    assert_eq!(v.keyspaces[0].merge.as_deref(), Some("region-priority"));
    assert_eq!(v.keyspaces[0].region_order.len(), 2);
    let c = with_file("region = \"eu-west\"\ndata_dir = \"/tmp/x\"\n[[keyspaces]]\nname = \"prices\"\npolicy = \"custom\"\n").unwrap();
    assert_eq!(
        c.validate().unwrap_err().to_string(),
        "configuration field `keyspaces[0].merge`: a custom keyspace names its merge function"
    );

    let c = with_file("region = \"EU\"\ndata_dir = \"/tmp/x\"\n").unwrap();
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .starts_with("configuration field `region`")
    );

    let e = with_file("region = \"eu\"\nlisten = 5\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("listen"), "{e}");
    let e = with_file("regoin = \"eu\"\n").unwrap_err().to_string();
    assert!(e.contains("regoin"), "{e}");

    let peers: String = (0..10)
        .map(|i| {
            format!(
                "[[peers]]\nname = \"p{i}\"\nurl = \"http://127.0.0.1:{}\"\n",
                9000 + i
            )
        })
        .collect();
    let c = with_file(&format!("region = \"eu\"\ndata_dir = \"/tmp/x\"\n{peers}")).unwrap();
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("`peers`: 11 regions in all, over the 10"), "{e}");

    let c =
        with_file("region = \"eu\"\ndata_dir = \"/tmp/x\"\n[replication]\nfault_duplicate = 1.5\n")
            .unwrap();
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.contains("`replication.fault_duplicate`: must be a probability"),
        "{e}"
    );
}

#[test]
#[allow(clippy::result_large_err)] // figment's Jail API returns its own error
fn the_environment_overrides_the_file_and_other_variables_are_left_alone() {
    figment::Jail::expect_with(|jail| {
        jail.create_file("m.toml", "region = \"eu-west\"\ndata_dir = \"/tmp/x\"\n")?;
        jail.set_env("MERIDIAN_OP_LOG__SEGMENT_MB", "3");
        jail.set_env("MERIDIAN_REGION", "ap-south");
        jail.set_env("MERIDIAN_BIN", "/not/a/config/key");
        let c = Config::load(Some(std::path::Path::new("m.toml")), &Overrides::default())
            .map_err(|e| e.to_string())?;
        assert_eq!(c.op_log.segment_mb, 3);
        assert_eq!(c.region, "ap-south");
        Ok(())
    });
}

#[test]
fn overrides_beat_the_file() {
    let dir = meridian_core::testdir::TestDir::new("config-o");
    let p = dir.path().join("m.toml");
    std::fs::write(&p, "region = \"eu-west\"\ndata_dir = \"/tmp/x\"\n").unwrap();
    let o = Overrides {
        region: Some("ap-south".into()),
        ..Overrides::default()
    };
    let c = Config::load(Some(&p), &o).unwrap();
    assert_eq!(c.region, "ap-south");
    let e = Config::default().validate().unwrap_err().to_string();
    assert!(e.contains("`region`: required"), "{e}");
}
