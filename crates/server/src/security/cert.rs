//! `meridian cert`: a development CA and the certificates it signs.
//!
//! `ca.pem` and `ca-key.pem` (a self-signed ECDSA P-256 CA) sit in one
//! directory, each leaf `NAME` beside them as `NAME.pem` and `NAME-key.pem`,
//! for a listener ([`crate::security::tls::ServerTls`]) and, made for both, for mTLS
//! clients. Keys are mode 0600; every file is written through a temporary file
//! and a rename, so a reloading listener never reads half of one.
//!
//! rcgen parses a CA back from PEM only with its `x509-parser` feature, so the
//! issuer is rebuilt instead: the CA's parameters are deterministic (same name,
//! same constraints) and re-signed with `ca-key.pem` they give the same issuer
//! name and key. Each new leaf is then verified against the `ca.pem` on disk,
//! so a CA made elsewhere is a clear error here, not a failed handshake later.
//! For development and tests: no revocation, and the CA key in plain text.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use time::{Duration, OffsetDateTime};

use meridian_client::tls::{self, TlsError};

/// The CA's common name.
pub const CA_NAME: &str = "Meridian development CA";
/// How long the CA is valid, in days.
const CA_DAYS: i64 = 3650;
/// How long a leaf is valid, in days.
const LEAF_DAYS: i64 = 365;

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The name cannot be a certificate's file name.
    #[error(
        "bad certificate name {0:?}: use a-z 0-9 - _ . (not first), and not \"ca\" or \"ca-key\""
    )]
    BadName(String),
    /// A subject alternative name is neither an IP address nor a DNS name.
    #[error("bad subject alternative name {0:?}: {1}")]
    BadSan(String, #[source] rcgen::Error),
    /// The CA exists already: another would orphan every leaf this one signed.
    #[error("{0} exists already: remove ca.pem and ca-key.pem first to make a new CA")]
    CaExists(PathBuf),
    /// A file could not be read.
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, #[source] std::io::Error),
    /// A file could not be written.
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, #[source] std::io::Error),
    /// The CA key file holds no usable key.
    #[error("{0}: not a usable private key: {1}")]
    CaKey(PathBuf, #[source] rcgen::Error),
    /// rcgen could not make a key or a certificate.
    #[error("generating: {0}")]
    Generate(#[from] rcgen::Error),
    /// The new leaf does not verify against `ca.pem`.
    #[error(
        "the new certificate does not verify against {0} (a CA not made here, or not the key's): {1}"
    )]
    ForeignCa(PathBuf, String),
    /// The CA could not be loaded as a trust anchor.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// The CA's parameters, validity aside: the same on every call, so rebuilding
/// them gives the issuer name of the `ca.pem` they made.
fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, CA_NAME);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

/// Valid from an hour ago (clocks drift) for `days`.
fn valid_for(p: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::hours(1);
    p.not_after = now + Duration::days(days);
}

fn read(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(|source| CertError::Read(path.to_owned(), source))
}

/// Writes `contents` to `path` through `path.tmp` and a rename; mode 0600 when `secret`.
fn write(path: &Path, contents: &str, secret: bool) -> Result<(), CertError> {
    let failed = |source| CertError::Write(path.to_owned(), source);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp); // a leftover would keep its old mode
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = opts.open(&tmp).map_err(failed)?;
    file.write_all(contents.as_bytes()).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    drop(file);
    std::fs::rename(tmp, path).map_err(failed)
}

fn check_name(name: &str) -> Result<(), CertError> {
    let allowed = |c: char| matches!(c, 'a'..='z' | '0'..='9' | '-' | '_' | '.');
    if name.is_empty()
        || name.starts_with('.')
        || name == "ca"
        || name == "ca-key"
        || !name.chars().all(allowed)
    {
        return Err(CertError::BadName(name.to_owned()));
    }
    Ok(())
}

fn san(name: &str) -> Result<SanType, CertError> {
    match name.parse::<IpAddr>() {
        Ok(ip) => Ok(SanType::IpAddress(ip)),
        Err(_) => name
            .try_into()
            .map(SanType::DnsName)
            .map_err(|source| CertError::BadSan(name.to_owned(), source)),
    }
}

/// Makes a CA in `dir` (created if missing): `ca.pem` and `ca-key.pem`
/// (mode 0600), CN [`CA_NAME`], valid about ten years. Refuses to replace an
/// existing CA.
pub fn make_ca(dir: &Path) -> Result<(), CertError> {
    let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    for path in [&cert_path, &key_path] {
        if path.exists() {
            return Err(CertError::CaExists(path.clone()));
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| CertError::Write(dir.to_owned(), source))?;
    let key = KeyPair::generate()?;
    let mut params = ca_params();
    valid_for(&mut params, CA_DAYS);
    let cert = params.self_signed(&key)?;
    write(&key_path, &key.serialize_pem(), true)?;
    write(&cert_path, &cert.pem(), false)
}

/// Makes (or replaces) the leaf `name` in `dir`, signed by the CA there:
/// `NAME.pem` and `NAME-key.pem` (mode 0600), CN `name`, valid about a year.
/// Each of `sans` that parses as an IP address is an IP SAN, any other a DNS
/// SAN; with none, `name` itself is the one DNS SAN. Usable for server auth,
/// and for client auth too when `client_and_server`. `name` must be
/// `[a-z0-9-_.]+` (it becomes a file name).
pub fn make_leaf(
    dir: &Path,
    name: &str,
    sans: &[String],
    client_and_server: bool,
) -> Result<(), CertError> {
    check_name(name)?;
    let names = if sans.is_empty() {
        vec![name.to_owned()]
    } else {
        sans.to_vec()
    };
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.subject_alt_names = names.iter().map(|n| san(n)).collect::<Result<_, _>>()?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = if client_and_server {
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ]
    } else {
        vec![ExtendedKeyUsagePurpose::ServerAuth]
    };
    valid_for(&mut params, LEAF_DAYS);

    let (ca_path, ca_key_path) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    let ca_key = KeyPair::from_pem(&read(&ca_key_path)?)
        .map_err(|source| CertError::CaKey(ca_key_path.clone(), source))?;
    let issuer = ca_params().self_signed(&ca_key)?;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer, &ca_key)?;
    let cert_pem = cert.pem();
    check_chains(
        &ca_path,
        &cert_pem,
        names.first().map_or(name, String::as_str),
    )?;

    write(
        &dir.join(format!("{name}-key.pem")),
        &key.serialize_pem(),
        true,
    )?;
    write(&dir.join(format!("{name}.pem")), &cert_pem, false)
}

/// Verifies a new leaf against the CA file as a TLS client would, for `name`.
fn check_chains(ca_path: &Path, leaf_pem: &str, name: &str) -> Result<(), CertError> {
    let foreign = |detail: String| CertError::ForeignCa(ca_path.to_owned(), detail);
    let roots = Arc::new(tls::load_roots(ca_path)?);
    let verifier = WebPkiServerVerifier::builder_with_provider(roots, tls::provider())
        .build()
        .map_err(|e| foreign(e.to_string()))?;
    let leaf =
        CertificateDer::from_pem_slice(leaf_pem.as_bytes()).map_err(|e| foreign(e.to_string()))?;
    let server_name = ServerName::try_from(name.to_owned()).map_err(|e| foreign(e.to_string()))?;
    verifier
        .verify_server_cert(&leaf, &[], &server_name, &[], UnixTime::now())
        .map_err(|e| foreign(e.to_string()))?;
    Ok(())
}

/// A development bundle in `dir`: the CA unless `ca.pem` exists already,
/// then a leaf per `(name, sans)`, each for both client and server auth.
pub fn dev_bundle(dir: &Path, names: &[(&str, Vec<String>)]) -> Result<(), CertError> {
    if !dir.join("ca.pem").exists() {
        make_ca(dir)?;
    }
    for (name, sans) in names {
        make_leaf(dir, name, sans, true)?;
    }
    Ok(())
}

/// A scratch directory under the system temp dir, removed on drop.
#[cfg(test)]
pub(crate) struct ScratchDir(pub(crate) PathBuf);

#[cfg(test)]
impl ScratchDir {
    pub(crate) fn new() -> ScratchDir {
        let path = std::env::temp_dir().join(format!("meridian-cert-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).unwrap();
        ScratchDir(path)
    }
}

#[cfg(test)]
impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::tls::{ServerTls, TlsFiles};
    use meridian_client::tls::client_config;
    use rustls::pki_types::PrivateKeyDer;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::TlsConnector;

    fn leaf_files(dir: &Path, name: &str, mtls: bool) -> TlsFiles {
        TlsFiles {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
            client_ca: mtls.then(|| dir.join("ca.pem")),
        }
    }

    #[test]
    fn makes_a_ca_and_leaves_it_signs() {
        let dir = ScratchDir::new();
        make_ca(&dir.0).unwrap();
        assert!(matches!(make_ca(&dir.0), Err(CertError::CaExists(_))));
        let sans = ["localhost".to_owned(), "127.0.0.1".to_owned()];
        make_leaf(&dir.0, "node-1", &sans, true).unwrap();
        let f = leaf_files(&dir.0, "node-1", false);
        let certs: Vec<_> = CertificateDer::pem_file_iter(f.cert.as_path())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(certs.len(), 1);
        PrivateKeyDer::from_pem_file(f.key.as_path()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for key in [&f.key, &dir.0.join("ca-key.pem")] {
                let mode = std::fs::metadata(key).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600);
            }
        }
        for bad in [
            "", "Node", "a/b", "../x", ".hidden", "ca", "ca-key", "n\u{e9}",
        ] {
            let refused = make_leaf(&dir.0, bad, &[], true);
            assert!(matches!(refused, Err(CertError::BadName(_))), "{bad:?}");
        }
        // Another CA's leaves: refused, not written.
        let other = ScratchDir::new();
        make_ca(&other.0).unwrap();
        std::fs::copy(dir.0.join("ca.pem"), other.0.join("ca.pem")).unwrap();
        assert!(matches!(
            make_leaf(&other.0, "x", &[], true),
            Err(CertError::ForeignCa(..))
        ));
        assert!(!other.0.join("x.pem").exists());
        dev_bundle(&other.0, &[]).unwrap(); // ca.pem exists: no new CA
    }

    /// A handshake over an in-memory pipe, then a ping and a pong.
    async fn handshake(server: &ServerTls, client: rustls::ClientConfig) -> Result<(), String> {
        let (client_io, server_io) = tokio::io::duplex(64 << 10);
        let connector = TlsConnector::from(Arc::new(client));
        let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
        let (c, s) = tokio::join!(
            connector.connect(name, client_io),
            server.acceptor().accept(server_io)
        );
        let mut c = c.map_err(|e| format!("client: {e}"))?;
        let mut s = s.map_err(|e| format!("server: {e}"))?;
        let mut buf = [0u8; 4];
        let io = async {
            c.write_all(b"ping").await?;
            c.flush().await?;
            s.read_exact(&mut buf).await?;
            assert_eq!(&buf, b"ping");
            s.write_all(b"pong").await?;
            s.flush().await?;
            c.read_exact(&mut buf).await?;
            assert_eq!(&buf, b"pong");
            std::io::Result::Ok(())
        };
        io.await.map_err(|e| e.to_string())?;
        assert_eq!(c.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        Ok(())
    }

    #[tokio::test]
    async fn tls_and_mtls_handshakes() {
        let dir = ScratchDir::new();
        dev_bundle(&dir.0, &[("node", vec!["localhost".to_owned()])]).unwrap();
        let ca = dir.0.join("ca.pem");
        let h2 = |mut cfg: rustls::ClientConfig| {
            cfg.alpn_protocols = vec![b"h2".to_vec()];
            cfg
        };

        let server = ServerTls::new(leaf_files(&dir.0, "node", false)).unwrap();
        handshake(&server, h2(client_config(&ca, None).unwrap()))
            .await
            .unwrap();

        let server = ServerTls::new(leaf_files(&dir.0, "node", true)).unwrap();
        let anonymous = handshake(&server, h2(client_config(&ca, None).unwrap())).await;
        assert!(
            anonymous.is_err(),
            "a client without a certificate got through"
        );
        let f = leaf_files(&dir.0, "node", false);
        let identified = client_config(&ca, Some((f.cert.as_path(), f.key.as_path()))).unwrap();
        handshake(&server, h2(identified)).await.unwrap();
    }
}
