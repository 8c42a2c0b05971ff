//! Where backups go: one [`Target`] over the `object_store` crate's
//! `ObjectStore` trait, which puts a local directory and S3-compatible
//! object storage (and GCS, Azure) behind one API. Names inside a target are
//! checked ([`meridian_core::backup::manifest::valid_name`]) before use.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use meridian_core::backup::manifest::valid_name;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, PutPayload};

/// Why a target could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The target's URL or options are wrong.
    #[error("backup target: {0}")]
    Config(String),
    /// An object name that could escape its folder.
    #[error("backup target: refusing unsafe object name {0:?}")]
    BadName(String),
    /// An object that is not there.
    #[error("backup target: {0} not found")]
    NotFound(String),
    /// The store failed.
    #[error("backup target: {name}: {source}")]
    Store {
        /// The object.
        name: String,
        /// Why.
        source: object_store::Error,
    },
}

/// A checked backup target: where it is and how to reach it (credentials
/// are read when it is opened, never kept here).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetSpec {
    /// As configured (`file:///dir`, `s3://bucket/prefix`).
    pub url: String,
    kind: Kind,
    endpoint: Option<String>,
    s3_region: Option<String>,
    credentials_file: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Dir(PathBuf),
    S3 { bucket: String, prefix: String },
}

impl TargetSpec {
    /// Parses `file:///absolute/dir` (or a plain absolute path) or
    /// `s3://bucket[/prefix]`.
    pub fn parse(
        url: &str,
        endpoint: Option<String>,
        s3_region: Option<String>,
        credentials_file: Option<PathBuf>,
    ) -> Result<TargetSpec, TargetError> {
        let bad = |m: &str| TargetError::Config(format!("{url:?}: {m}"));
        let kind = if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let ok_bucket = (3..=63).contains(&bucket.len())
                && bucket
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b));
            if !ok_bucket {
                return Err(bad(
                    "the bucket must be 3-63 of a-z, 0-9, '-', '.' (s3://bucket/prefix)",
                ));
            }
            let prefix = prefix.trim_end_matches('/').to_string();
            if !prefix.is_empty() && !valid_name(&prefix) {
                return Err(bad(
                    "the prefix must be '/'-separated parts of a-z A-Z 0-9 . _ -",
                ));
            }
            Kind::S3 {
                bucket: bucket.to_string(),
                prefix,
            }
        } else {
            let path = url.strip_prefix("file://").unwrap_or(url);
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                return Err(bad(
                    "expected file:///absolute/dir, a plain absolute path, or s3://bucket/prefix",
                ));
            }
            Kind::Dir(path)
        };
        if endpoint.is_some() && matches!(kind, Kind::Dir(_)) {
            return Err(bad("an endpoint applies to s3:// targets only"));
        }
        if let Some(e) = &endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(TargetError::Config(format!(
                "endpoint {e:?} must start with http:// or https://"
            )));
        }
        Ok(TargetSpec {
            url: url.to_string(),
            kind,
            endpoint,
            s3_region,
            credentials_file,
        })
    }

    /// Connects (reads credentials for S3).
    pub fn open(&self) -> Result<Target, TargetError> {
        let cfg = |e: object_store::Error| TargetError::Config(e.to_string());
        let (store, root, dir): (Arc<dyn ObjectStore>, String, Option<PathBuf>) = match &self.kind {
            Kind::Dir(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    TargetError::Config(format!("cannot create {}: {e}", dir.display()))
                })?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(cfg)?;
                (Arc::new(fs), String::new(), Some(dir.clone()))
            }
            Kind::S3 { bucket, prefix } => {
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_region(self.s3_region.as_deref().unwrap_or("us-east-1"));
                if let Some(e) = &self.endpoint {
                    b = b
                        .with_endpoint(e)
                        .with_allow_http(e.starts_with("http://"))
                        .with_virtual_hosted_style_request(false);
                }
                if let Some(f) = &self.credentials_file {
                    let (id, secret) = read_credentials(f)?;
                    b = b.with_access_key_id(id).with_secret_access_key(secret);
                }
                (Arc::new(b.build().map_err(cfg)?), prefix.clone(), None)
            }
        };
        Ok(Target {
            store,
            root,
            dir,
            url: self.url.clone(),
        })
    }
}

/// `access_key_id = ...` and `secret_access_key = ...` lines (`#` starts a
/// comment; quotes around values are dropped).
fn read_credentials(f: &std::path::Path) -> Result<(String, String), TargetError> {
    let text = std::fs::read_to_string(f)
        .map_err(|e| TargetError::Config(format!("credentials file {}: {e}", f.display())))?;
    let mut id = None;
    let mut secret = None;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"').to_string();
        match k.trim() {
            "access_key_id" | "aws_access_key_id" => id = Some(v),
            "secret_access_key" | "aws_secret_access_key" => secret = Some(v),
            _ => {}
        }
    }
    match (id, secret) {
        (Some(i), Some(s)) => Ok((i, s)),
        _ => Err(TargetError::Config(format!(
            "credentials file {} needs access_key_id and secret_access_key",
            f.display()
        ))),
    }
}

/// An open backup target. Names are relative to the target's root.
#[derive(Clone)]
pub struct Target {
    store: Arc<dyn ObjectStore>,
    root: String,
    /// A directory target's root: puts there are fsynced (the local store
    /// renames into place but does not sync), so a manifest written after
    /// its files never survives a power loss they do not.
    dir: Option<PathBuf>,
    /// As configured.
    pub url: String,
}

impl Target {
    fn path(&self, name: &str) -> Result<ObjPath, TargetError> {
        if !valid_name(name) {
            return Err(TargetError::BadName(name.to_string()));
        }
        let full = if self.root.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.root)
        };
        ObjPath::parse(&full).map_err(|_| TargetError::BadName(name.to_string()))
    }

    fn err(name: &str) -> impl FnOnce(object_store::Error) -> TargetError + '_ {
        move |source| match source {
            object_store::Error::NotFound { .. } => TargetError::NotFound(name.to_string()),
            source => TargetError::Store {
                name: name.to_string(),
                source,
            },
        }
    }

    /// Stores `bytes` as `name` (whole or not at all: the local store
    /// writes aside and renames; S3 puts are atomic).
    pub async fn put(&self, name: &str, bytes: Bytes) -> Result<(), TargetError> {
        let p = self.path(name)?;
        self.store
            .put(&p, PutPayload::from(bytes))
            .await
            .map_err(Self::err(name))?;
        if let Some(dir) = &self.dir {
            let (root, file) = (dir.clone(), dir.join(name));
            // The file, then every folder up to the root (a put may have
            // created them).
            let sync = move || -> std::io::Result<()> {
                std::fs::File::open(&file)?.sync_all()?;
                for parent in file.ancestors().skip(1) {
                    std::fs::File::open(parent)?.sync_all()?;
                    if parent == root {
                        break;
                    }
                }
                Ok(())
            };
            tokio::task::spawn_blocking(sync)
                .await
                .map_err(|e| TargetError::Config(e.to_string()))?
                .map_err(|e| TargetError::Store {
                    name: name.to_string(),
                    source: object_store::Error::Generic {
                        store: "LocalFileSystem",
                        source: Box::new(e),
                    },
                })?;
        }
        Ok(())
    }

    /// The content of `name`.
    pub async fn get(&self, name: &str) -> Result<Bytes, TargetError> {
        let p = self.path(name)?;
        let r = self.store.get(&p).await.map_err(Self::err(name))?;
        r.bytes().await.map_err(Self::err(name))
    }

    /// Removes `name` (gone already is fine).
    pub async fn delete(&self, name: &str) -> Result<(), TargetError> {
        let p = self.path(name)?;
        match self.store.delete(&p).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(TargetError::Store {
                name: name.to_string(),
                source,
            }),
        }
    }

    /// Every object under `dir` (a name prefix ending at a `/`), with its
    /// size, names relative to the root.
    pub async fn list(&self, dir: &str) -> Result<Vec<(String, u64)>, TargetError> {
        let p = self.path(dir)?;
        let mut s = self.store.list(Some(&p));
        let mut out = Vec::new();
        let skip = if self.root.is_empty() {
            0
        } else {
            self.root.len() + 1
        };
        while let Some(meta) = s.next().await {
            let meta = meta.map_err(Self::err(dir))?;
            let name = meta.location.as_ref();
            let Some(rel) = name.get(skip..) else {
                continue;
            };
            // Staging files of an interrupted local put are not objects.
            if valid_name(rel) {
                out.push((rel.to_string(), meta.size));
            }
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_refuse_what_they_should() {
        let s = TargetSpec::parse("s3://meridian-backups/prod/east", None, None, None).unwrap();
        assert!(matches!(s.kind, Kind::S3 { ref prefix, .. } if prefix == "prod/east"));
        assert!(TargetSpec::parse("file:///var/backups", None, None, None).is_ok());
        assert!(TargetSpec::parse("/var/backups", None, None, None).is_ok());
        for bad in [
            "relative/dir",
            "s3://",
            "s3://UPPER",
            "s3://b/../x",
            "file://rel",
        ] {
            assert!(TargetSpec::parse(bad, None, None, None).is_err(), "{bad}");
        }
        assert!(TargetSpec::parse("/d", Some("http://x".into()), None, None).is_err());
        assert!(TargetSpec::parse("s3://bkt", Some("ftp://x".into()), None, None).is_err());
    }

    #[test]
    fn credentials_file_lines() {
        let d = meridian_core::testdir::TestDir::new("creds");
        let f = d.path().join("c");
        std::fs::write(&f, "# test\naccess_key_id = \"AK\"\nsecret_access_key=SK\n").unwrap();
        assert_eq!(read_credentials(&f).unwrap(), ("AK".into(), "SK".into()));
        std::fs::write(&f, "access_key_id = AK\n").unwrap();
        assert!(read_credentials(&f).is_err());
    }
}
