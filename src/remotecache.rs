//! The stage cache shared between machines: entries pushed to and pulled from object storage
//! through its S3 API (OpenStack Swift's s3api, Ceph RGW, MinIO, AWS), with the `object_store`
//! crate on a tokio runtime (the files of an entry go concurrently). An entry is
//! `PREFIX/KEY/FILE` plus `PREFIX/KEY/meta.json` written last, which carries each file's
//! SHA-256: a pull verifies every byte before the entry is committed locally.
//!
//! Work in progress (issue 13): not yet wired into the build.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("remote cache {url}: {message}")]
    Config { url: String, message: String },
    #[error("remote cache {op} {path}: {message}")]
    Io {
        op: &'static str,
        path: String,
        message: String,
    },
    #[error("remote cache: {path} does not match its digest (expected {expected}, got {got})")]
    Digest {
        path: String,
        expected: String,
        got: String,
    },
}

pub struct Remote {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    rt: tokio::runtime::Runtime,
    pub url: String,
}

/// `s3://BUCKET[/PREFIX]`; the endpoint from `AWS_ENDPOINT_URL`, credentials from
/// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (never from a recipe).
pub fn parse_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| format!("`{url}` is not an s3://BUCKET[/PREFIX] URL"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty()
        || !bucket
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
    {
        return Err(format!("`{url}`: no valid bucket name"));
    }
    Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
}

impl Remote {
    pub fn open(url: &str) -> Result<Remote, RemoteError> {
        let cfg = |message: String| RemoteError::Config {
            url: url.to_string(),
            message,
        };
        let (bucket, prefix) = parse_url(url).map_err(cfg)?;
        let mut b = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(&bucket)
            .with_virtual_hosted_style_request(false);
        if let Ok(e) = std::env::var("AWS_ENDPOINT_URL") {
            b = b.with_allow_http(e.starts_with("http://")).with_endpoint(e);
        }
        if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            b = b.with_region("us-east-1");
        }
        let store = b.build().map_err(|e| cfg(e.to_string()))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| cfg(e.to_string()))?;
        Ok(Remote {
            store: Arc::new(store),
            prefix,
            rt,
            url: url.to_string(),
        })
    }

    fn path(&self, key: &str, file: &str) -> ObjPath {
        if self.prefix.is_empty() {
            ObjPath::from(format!("{key}/{file}"))
        } else {
            ObjPath::from(format!("{}/{key}/{file}", self.prefix))
        }
    }

    /// Upload `files` (local path, name) of entry `key` concurrently, then `meta` with their
    /// digests; meta.json last, so a half-pushed entry is never seen.
    pub fn push(
        &self,
        key: &str,
        files: &[(PathBuf, String)],
        mut meta: Value,
    ) -> Result<(), RemoteError> {
        let mut digests = serde_json::Map::new();
        for (p, name) in files {
            let d = crate::stagecache::file_digest(p).map_err(|e| RemoteError::Io {
                op: "hashing",
                path: p.display().to_string(),
                message: e.to_string(),
            })?;
            digests.insert(name.clone(), Value::String(d));
        }
        meta["digests"] = Value::Object(digests);
        self.rt.block_on(async {
            let uploads = files.iter().map(|(p, name)| {
                let store = self.store.clone();
                let dest = self.path(key, name);
                let p = p.clone();
                async move {
                    let data = tokio::fs::read(&p).await.map_err(|e| RemoteError::Io {
                        op: "reading",
                        path: p.display().to_string(),
                        message: e.to_string(),
                    })?;
                    store
                        .put(&dest, PutPayload::from(data))
                        .await
                        .map_err(|e| RemoteError::Io {
                            op: "uploading",
                            path: dest.to_string(),
                            message: e.to_string(),
                        })
                        .map(drop)
                }
            });
            for r in futures_join(uploads).await {
                r?;
            }
            let m = self.path(key, "meta.json");
            self.store
                .put(
                    &m,
                    PutPayload::from(serde_json::to_vec(&meta).expect("JSON")),
                )
                .await
                .map_err(|e| RemoteError::Io {
                    op: "uploading",
                    path: m.to_string(),
                    message: e.to_string(),
                })?;
            Ok(())
        })
    }

    /// The remote meta.json of `key`, if the entry is there.
    pub fn meta(&self, key: &str) -> Result<Option<Value>, RemoteError> {
        let m = self.path(key, "meta.json");
        self.rt.block_on(async {
            match self.store.get(&m).await {
                Ok(r) => {
                    let bytes = r.bytes().await.map_err(|e| RemoteError::Io {
                        op: "downloading",
                        path: m.to_string(),
                        message: e.to_string(),
                    })?;
                    Ok(serde_json::from_slice(&bytes).ok())
                }
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(RemoteError::Io {
                    op: "looking up",
                    path: m.to_string(),
                    message: e.to_string(),
                }),
            }
        })
    }

    /// Download the entry's files into `dir`, each verified against the meta's digest.
    pub fn pull_files(
        &self,
        key: &str,
        meta: &Value,
        dir: &Path,
    ) -> Result<Vec<PathBuf>, RemoteError> {
        let files: Vec<String> = meta["files"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|f| f.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        self.rt.block_on(async {
            let mut out = Vec::new();
            for name in &files {
                let src = self.path(key, name);
                let bytes = self
                    .store
                    .get(&src)
                    .await
                    .map_err(|e| RemoteError::Io {
                        op: "downloading",
                        path: src.to_string(),
                        message: e.to_string(),
                    })?
                    .bytes()
                    .await
                    .map_err(|e| RemoteError::Io {
                        op: "downloading",
                        path: src.to_string(),
                        message: e.to_string(),
                    })?;
                let dest = dir.join(name);
                tokio::fs::write(&dest, &bytes)
                    .await
                    .map_err(|e| RemoteError::Io {
                        op: "writing",
                        path: dest.display().to_string(),
                        message: e.to_string(),
                    })?;
                let got = crate::stagecache::file_digest(&dest).unwrap_or_default();
                let expected = meta["digests"][name]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if got != expected {
                    let _ = std::fs::remove_file(&dest);
                    return Err(RemoteError::Digest {
                        path: src.to_string(),
                        expected,
                        got,
                    });
                }
                out.push(dest);
            }
            Ok(out)
        })
    }
}

/// Await every future concurrently, results in order.
async fn futures_join<F, T>(futs: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("upload task"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_bucket_and_a_prefix() {
        assert_eq!(
            parse_url("s3://kiln-cache").unwrap(),
            ("kiln-cache".into(), "".into())
        );
        assert_eq!(
            parse_url("s3://kiln-cache/team/a/").unwrap(),
            ("kiln-cache".into(), "team/a".into())
        );
        assert!(parse_url("http://x").is_err());
        assert!(parse_url("s3://").is_err());
        assert!(parse_url("s3://a b").is_err());
    }
}
