//! TLS on real listeners: certificates from `meridian cert`, the Rust
//! client and curl over https, plain HTTP refused, a renewed certificate
//! served without a restart, and two regions replicating over mutual TLS
//! where a peer without a certificate gets nowhere.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TempDir;
use meridian_harness::node::{Node, NodeSpec};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_meridian"))
}

fn dir(tag: &str) -> TempDir {
    TempDir::new(&format!("tls-{tag}"))
}

/// `meridian cert --dir DIR NAME=SANS...`.
fn cert(dir: &Path, names: &[&str]) {
    let out = std::process::Command::new(bin())
        .arg("cert")
        .arg("--dir")
        .arg(dir)
        .args(names)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "meridian cert: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pem(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}-key.pem")),
    )
}

/// The leaf certificate a TLS handshake with `addr` presents.
async fn served_cert(addr: SocketAddr, ca: &Path) -> Vec<u8> {
    let cfg = meridian_client::tls::client_config(ca, None).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn clients_speak_tls_plain_http_is_refused_and_certificates_reload() {
    let d = dir("listener");
    let certs = d.path().join("certs");
    cert(&certs, &["localhost=localhost,127.0.0.1"]);
    let ca = certs.join("ca.pem");
    let (crt, key) = pem(&certs, "localhost");
    let spec = NodeSpec::new("us-east", &d.path().join("data")).with_tls(&ca, &crt, &key);
    let node = Node::start(bin(), spec).await.unwrap();
    assert!(node.url().starts_with("https://"));

    // The Rust client, trusting the CA.
    let c = node.client();
    c.put("default", "k", &json!("over tls")).await.unwrap();
    assert_eq!(
        c.get("default", "k")
            .await
            .unwrap()
            .unwrap()
            .value()
            .cloned(),
        Some(json!("over tls"))
    );
    // A client trusting nothing refuses the server.
    let other = d.path().join("other");
    cert(&other, &["localhost"]);
    let stranger = meridian_client::Client::builder()
        .region(node.url())
        .ca_file(other.join("ca.pem"))
        .build()
        .unwrap();
    assert!(stranger.get("default", "k").await.is_err());

    // curl with --cacert.
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--fail", "--cacert"])
        .arg(&ca)
        .arg(format!(
            "https://localhost:{}/v1/kv/default/k",
            node.addr().port()
        ))
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["value"], json!("over tls"));
    // curl refuses a TLS 1.1 handshake: the server offers nothing below 1.2.
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--tlsv1.1", "--tls-max", "1.1", "--cacert"])
        .arg(&ca)
        .arg(format!("https://localhost:{}/healthz", node.addr().port()))
        .output()
        .await
        .unwrap();
    assert!(!out.status.success(), "TLS 1.1 was accepted");

    // Plain HTTP to the TLS listener: no HTTP answer, the connection closes.
    let mut tcp = tokio::net::TcpStream::connect(node.addr()).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    assert!(
        !String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"),
        "plain HTTP was served: {:?}",
        String::from_utf8_lossy(&buf)
    );
    let plain = meridian_client::Client::new(&format!("http://{}", node.addr())).unwrap();
    assert!(plain.get("default", "k").await.is_err());

    // A renewed certificate is served without a restart.
    let before = served_cert(node.addr(), &ca).await;
    cert(&certs, &["localhost=localhost,127.0.0.1,::1"]);
    let t = Instant::now();
    loop {
        if served_cert(node.addr(), &ca).await != before {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the renewed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And requests still work on it.
    assert_eq!(
        c.get("default", "k")
            .await
            .unwrap()
            .unwrap()
            .value()
            .cloned(),
        Some(json!("over tls"))
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn regions_replicate_over_mutual_tls_and_refuse_peers_without_a_certificate() {
    let d = dir("mtls");
    let certs = d.path().join("certs");
    cert(
        &certs,
        &["us-east=localhost,127.0.0.1", "eu-west=localhost,127.0.0.1"],
    );
    let ca = certs.join("ca.pem");
    let secret = d.path().join("secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef").unwrap();
    let regions = ["us-east", "eu-west"];
    let peer_ports = [free_port(), free_port()];
    let mut nodes = Vec::new();
    for (i, r) in regions.iter().enumerate() {
        let (crt, key) = pem(&certs, r);
        let mut spec = NodeSpec::new(r, &d.path().join(r)).with_tls(&ca, &crt, &key);
        spec.peer_listen = Some(SocketAddr::from(([127, 0, 0, 1], peer_ports[i])));
        let other = 1 - i;
        spec.args.extend([
            "--cluster-secret-file".to_string(),
            secret.display().to_string(),
            "--peer".to_string(),
            format!("{}=https://127.0.0.1:{}", regions[other], peer_ports[other]),
        ]);
        spec.env.extend([
            (
                "MERIDIAN_TLS__PEER_CA_FILE".to_string(),
                ca.display().to_string(),
            ),
            ("MERIDIAN_TLS__PEER_MTLS".to_string(), "true".to_string()),
        ]);
        nodes.push(tokio::spawn(Node::start(bin(), spec)));
    }
    let mut started = Vec::new();
    for n in nodes {
        started.push(n.await.unwrap().unwrap());
    }
    let (us, eu) = (&started[0], &started[1]);
    us.client()
        .put("default", "k", &json!("from us"))
        .await
        .unwrap();
    let t = Instant::now();
    loop {
        if let Ok(Some(e)) = eu.client().get("default", "k").await
            && e.value() == Some(&json!("from us"))
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "never replicated over mTLS"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A caller without a client certificate: the handshake is refused
    // before any request is read.
    let cfg = meridian_client::tls::client_config(&ca, None).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", peer_ports[0]))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let refused = match connector.connect(name, tcp).await {
        Err(_) => true,
        // TLS 1.3: the server's refusal arrives with the first read.
        Ok(mut s) => {
            let _ = s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
            let mut b = [0u8; 16];
            !matches!(s.read(&mut b).await, Ok(n) if n > 0)
        }
    };
    assert!(refused, "a peer without a client certificate was let in");
}

/// An outside scanner, sslyze (from PyPI; `.ci/run` installs it and sets
/// `MERIDIAN_SSLYZE`): nothing below TLS 1.2 is accepted, and no weak
/// cipher suite at all.
#[tokio::test]
async fn an_external_scanner_finds_no_old_protocol_and_no_weak_cipher() {
    let Some(sslyze) = std::env::var_os("MERIDIAN_SSLYZE") else {
        println!("skipped: MERIDIAN_SSLYZE is not set (sslyze could not be installed from PyPI)");
        return;
    };
    let d = dir("sslyze");
    let certs = d.path().join("certs");
    cert(&certs, &["localhost=localhost,127.0.0.1"]);
    let ca = certs.join("ca.pem");
    let (crt, key) = pem(&certs, "localhost");
    let spec = NodeSpec::new("us-east", &d.path().join("data")).with_tls(&ca, &crt, &key);
    let node = Node::start(bin(), spec).await.unwrap();
    let out = d.path().join("sslyze.json");
    let run = tokio::process::Command::new(&sslyze)
        .args([
            "--sslv2",
            "--sslv3",
            "--tlsv1",
            "--tlsv1_1",
            "--tlsv1_2",
            "--tlsv1_3",
        ])
        .arg(format!("--json_out={}", out.display()))
        .arg(format!("127.0.0.1:{}", node.addr().port()))
        .output()
        .await
        .unwrap();
    assert!(
        run.status.success(),
        "sslyze failed: {}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let scan = &report["server_scan_results"][0]["scan_result"];
    assert!(scan.is_object(), "no scan result: {report}");
    let accepted = |proto: &str| -> Vec<String> {
        let r = &scan[format!("{proto}_cipher_suites")];
        assert_eq!(r["status"], "COMPLETED", "{proto}: {r}");
        r["result"]["accepted_cipher_suites"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["cipher_suite"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    for old in ["ssl_2_0", "ssl_3_0", "tls_1_0", "tls_1_1"] {
        assert_eq!(accepted(old), Vec::<String>::new(), "{old} accepted");
    }
    let modern: Vec<String> = [accepted("tls_1_2"), accepted("tls_1_3")].concat();
    assert!(!modern.is_empty(), "neither TLS 1.2 nor 1.3 accepted");
    for suite in &modern {
        for weak in [
            "RC4", "DES", "NULL", "EXPORT", "anon", "MD5", "CBC", "_SHA\0",
        ] {
            assert!(!format!("{suite}\0").contains(weak), "weak suite {suite}");
        }
    }
    println!("sslyze: accepted {modern:?}");
}
