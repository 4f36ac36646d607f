//! The stage cache shared between machines: entries pushed to and pulled from object storage
//! through its S3 API (OpenStack Swift's s3api, Ceph RGW, MinIO, AWS), with the `object_store`
//! crate on a tokio runtime. An entry is `PREFIX/KEY/FILE` plus `PREFIX/KEY/meta.json`, written
//! last, which carries each file's SHA-256 and mode: a pull verifies every byte (hashed as it
//! streams in) before the entry is committed locally, and a half-pushed entry is never seen.
//!
//! Pushes run in the background while the build goes on (`push`), several files at once and
//! large files in parallel multipart parts; `wait` collects them when the build ends. A remote
//! that fails costs sharing, never the build: the callers warn and go on.

mod claim;

pub use claim::{Claim, Claimed};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("remote cache {url}: {message}")]
    Config { url: String, message: String },
    #[error("remote cache: {op} {path}: {message}")]
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
    #[error("remote cache: entry {key} is not trusted: {why}")]
    Untrusted { key: String, why: String },
    #[error("remote cache: {op} entry {key}: interrupted")]
    Interrupted { op: &'static str, key: String },
}

/// The most a meta.json may be: it lists files and a stage's small result, never a disk.
const META_MAX: u64 = 16 << 20;

/// What a signature covers: the entry's key and the digest of its meta.json without the
/// signatures (which names every file's SHA-256, so every byte of the entry).
fn entry_message(key: &str, meta: &Value) -> Vec<u8> {
    let mut m = meta.clone();
    if let Some(o) = m.as_object_mut() {
        o.remove("signatures");
    }
    let digest = hex::encode(Sha256::digest(serde_json::to_vec(&m).expect("JSON")));
    format!("kiln-cache-entry-v1\n{key}\n{digest}").into_bytes()
}

/// Parts of a multipart upload (S3 wants at least 5 MiB but the last), and how many go at once.
const PART: usize = 16 << 20;
const PARTS_IN_FLIGHT: usize = 4;

/// What a push did, for the line at the end of the build.
#[derive(Debug, Default)]
pub struct PushReport {
    pub pushed: Vec<(String, u64)>,
    /// Already on the remote (another machine pushed it, or this one earlier).
    pub present: usize,
    pub failed: Vec<(String, RemoteError)>,
    pub secs: f64,
}

type Pending = tokio::task::JoinHandle<Result<Option<u64>, RemoteError>>;

pub struct Remote {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    rt: tokio::runtime::Runtime,
    pub url: String,
    pushes: Mutex<Vec<(String, Pending)>>,
    started: Mutex<Option<Instant>>,
    /// Signs what this machine pushes (`KILN_CACHE_SIGNING_KEY`).
    signer: Option<Arc<crate::signing::SecretKey>>,
    /// One of these must have signed what is pulled (`KILN_CACHE_TRUSTED_KEYS`); none given:
    /// entries are taken on their digests alone.
    trusted: Vec<crate::signing::PublicKey>,
}

/// `s3://BUCKET[/PREFIX]`. The endpoint comes from `AWS_ENDPOINT_URL` and the credentials from
/// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (never from a recipe or the command line).
pub fn parse_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| format!("`{url}` is not an s3://BUCKET[/PREFIX] URL"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    // S3's bucket rules (Swift's containers allow more, but a name S3 takes works everywhere).
    if bucket.len() < 3
        || bucket.len() > 63
        || !bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.".contains(c))
        || bucket.starts_with(['-', '.'])
        || bucket.ends_with(['-', '.'])
    {
        return Err(format!(
            "`{url}`: `{bucket}` is not a bucket name (3-63 of a-z, 0-9, `-`, `.`)"
        ));
    }
    let prefix = prefix.trim_matches('/');
    if let Some(bad) = prefix
        .split('/')
        .find(|s| !prefix.is_empty() && (s.is_empty() || *s == "." || *s == ".."))
    {
        return Err(format!(
            "`{url}`: the prefix has an empty, `.` or `..` part (`{bad}`)"
        ));
    }
    if let Some(c) = prefix
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-._/".contains(*c)))
    {
        return Err(format!(
            "`{url}`: {c:?} in the prefix (letters, digits, `-`, `.`, `_` and `/`)"
        ));
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

fn io(op: &'static str, path: impl std::fmt::Display, e: impl std::fmt::Display) -> RemoteError {
    RemoteError::Io {
        op,
        path: path.to_string(),
        message: e.to_string(),
    }
}

impl Remote {
    pub fn open(url: &str, env: &crate::tunables::S3Env) -> Result<Remote, RemoteError> {
        let cfg = |message: String| RemoteError::Config {
            url: url.to_string(),
            message,
        };
        let (bucket, prefix) = parse_url(url).map_err(cfg)?;
        if !env.access_key_set {
            return Err(cfg(
                "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (for Swift, an \
                 EC2 credential from Keystone: `openstack ec2 credentials create`) and \
                 AWS_ENDPOINT_URL for a store that is not AWS"
                    .into(),
            ));
        }
        let mut b = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(&bucket)
            .with_virtual_hosted_style_request(false);
        if let Some(e) = &env.endpoint_url {
            check_endpoint(e).map_err(cfg)?;
            b = b
                .with_allow_http(e.starts_with("http://"))
                .with_endpoint(e.clone());
        }
        let (signer, trusted) = trust(env).map_err(cfg)?;
        if !env.region_set {
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
            pushes: Mutex::new(Vec::new()),
            started: Mutex::new(None),
            signer,
            trusted,
        })
    }

    fn path(&self, key: &str, file: &str) -> ObjPath {
        object_path(&self.prefix, key, file)
    }

    /// The remote meta.json of `key`, if the entry is there (complete) and, where this machine
    /// names trusted keys, signed by one of them.
    pub fn meta(&self, key: &str) -> Result<Option<Value>, RemoteError> {
        let meta = self
            .rt
            .block_on(get_meta(self.store.clone(), self.path(key, "meta.json")))?;
        if let (Some(m), false) = (&meta, self.trusted.is_empty()) {
            let sigs: Vec<crate::signing::Signature> =
                serde_json::from_value(m["signatures"].clone()).unwrap_or_default();
            let signer = crate::signing::verify(&self.trusted, &entry_message(key, m), &sigs)
                .map_err(|why| RemoteError::Untrusted {
                    key: short(key).to_string(),
                    why,
                })?;
            tracing::debug!("remote cache: entry {} signed by {signer}", short(key));
        }
        Ok(meta)
    }

    /// Push entry `key` in the background unless the remote has it: `files` (local path, name)
    /// concurrently, then `meta` with their digests and modes. `wait` collects the result. A
    /// cancellation (Ctrl-C) stops the uploads and aborts their multipart uploads; meta.json is
    /// never written then, so a push cut short leaves no entry.
    pub fn push(
        &self,
        key: &str,
        files: Vec<(PathBuf, String)>,
        meta: Value,
        cancel: &crate::process::Cancel,
    ) {
        let cancel = cancel.clone();
        let store = self.store.clone();
        let signer = self.signer.clone();
        let prefix = self.prefix.clone();
        let k = key.to_string();
        self.started
            .lock()
            .unwrap()
            .get_or_insert_with(Instant::now);
        let task = self.rt.spawn(async move {
            let m = object_path(&prefix, &k, "meta.json");
            if get_meta(store.clone(), m.clone()).await?.is_some() {
                return Ok(None);
            }
            tracing::info!("remote cache: pushing entry {}", short(&k));
            let uploads: Vec<_> = files
                .into_iter()
                .map(|(p, name)| {
                    let store = store.clone();
                    let dest = object_path(&prefix, &k, &name);
                    let (cancel, k) = (cancel.clone(), k.clone());
                    tokio::spawn(async move {
                        upload_retried(store, &p, &dest, &k, &cancel)
                            .await
                            .map(|(d, n)| (name, p, d, n))
                    })
                })
                .collect();
            let mut meta = meta;
            let mut files = serde_json::Map::new();
            let mut bytes = 0;
            for u in uploads {
                let (name, p, digest, n) = u.await.map_err(|e| io("uploading", &k, e))??;
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&p)
                    .map(|m| m.permissions().mode() & 0o777)
                    .unwrap_or(0o644);
                files.insert(
                    name,
                    serde_json::json!({"sha256": digest, "size": n, "mode": mode}),
                );
                bytes += n;
            }
            meta["remote_files"] = Value::Object(files);
            if cancel.is_cancelled() {
                return Err(interrupted("pushing", &k));
            }
            if let Some(sk) = &signer {
                let sig = sk.sign(&entry_message(&k, &meta));
                meta["signatures"] = serde_json::json!([sig]);
            }
            store
                .put(
                    &m,
                    PutPayload::from(serde_json::to_vec(&meta).expect("JSON")),
                )
                .await
                .map_err(|e| io("uploading", &m, e))?;
            Ok(Some(bytes))
        });
        self.pushes.lock().unwrap().push((key.to_string(), task));
    }

    /// Wait for every push started so far.
    pub fn wait(&self) -> PushReport {
        let pending: Vec<_> = std::mem::take(&mut *self.pushes.lock().unwrap());
        let started = self.started.lock().unwrap().take();
        let mut r = PushReport::default();
        if pending.is_empty() {
            return r;
        }
        self.rt.block_on(async {
            for (key, t) in pending {
                match t.await {
                    Ok(Ok(Some(n))) => r.pushed.push((key, n)),
                    Ok(Ok(None)) => r.present += 1,
                    Ok(Err(e)) => r.failed.push((key, e)),
                    Err(e) => r.failed.push((key.clone(), io("pushing", key, e))),
                }
            }
        });
        r.secs = started.map(|s| s.elapsed().as_secs_f64()).unwrap_or(0.0);
        r
    }

    /// Download the files `meta` lists for `key` into `dir`, concurrently, each hashed as it
    /// streams in and refused (removed) unless it matches its digest; modes as pushed. A
    /// cancellation (Ctrl-C) stops every download at once (the caller removes `dir`).
    pub fn pull(
        &self,
        key: &str,
        meta: &Value,
        dir: &Path,
        cancel: &crate::process::Cancel,
    ) -> Result<Vec<PathBuf>, RemoteError> {
        let files: Vec<(String, String, u64, u32)> = meta["remote_files"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(name, f)| {
                        (
                            name.clone(),
                            f["sha256"].as_str().unwrap_or_default().to_string(),
                            f["size"].as_u64().unwrap_or(0),
                            f["mode"].as_u64().unwrap_or(0o644) as u32,
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        if files.iter().any(|(name, ..)| !safe_name(name)) {
            return Err(io(
                "reading",
                self.path(key, "meta.json"),
                "a file name that is not plain",
            ));
        }
        let total: u64 = files.iter().fold(0u64, |t, f| t.saturating_add(f.2));
        let progress = Arc::new(crate::progress::Progress::bytes(
            &format!("remote cache: pulling {}", short(key)),
            Some(total),
        ));
        let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let result = self.rt.block_on(async {
            let tasks: Vec<_> = files
                .into_iter()
                .map(|(name, sha, size, mode)| {
                    let store = self.store.clone();
                    let src = self.path(key, &name);
                    let dest = dir.join(&name);
                    let (progress, done) = (progress.clone(), done.clone());
                    tokio::spawn(async move {
                        let r = download(store, &src, &dest, (&sha, size), mode, &|n| {
                            let d = done.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
                            progress.set(d);
                        })
                        .await;
                        if r.is_err() {
                            let _ = tokio::fs::remove_file(&dest).await;
                        }
                        r.map(|()| dest)
                    })
                })
                .collect();
            let aborts: Vec<tokio::task::AbortHandle> =
                tasks.iter().map(|t| t.abort_handle()).collect();
            let collect = async {
                let mut out = Vec::new();
                let mut first_err = None;
                for t in tasks {
                    match t.await.map_err(|e| io("downloading", key, e)) {
                        Ok(Ok(p)) => out.push(p),
                        Ok(Err(e)) | Err(e) => {
                            first_err.get_or_insert(e);
                        }
                    }
                }
                (out, first_err)
            };
            let (out, first_err) = tokio::select! {
                r = collect => r,
                () = cancelled(cancel) => {
                    for a in &aborts {
                        a.abort();
                    }
                    return Err(interrupted("pulling", key));
                }
            };
            match first_err {
                Some(e) => {
                    for p in &out {
                        let _ = std::fs::remove_file(p);
                    }
                    Err(e)
                }
                None => Ok(out),
            }
        });
        progress.finish();
        result
    }
}

/// A key as the logs show it.
pub fn short(key: &str) -> &str {
    &key[..key.len().min(12)]
}

/// A file name of an entry: one plain component (a remote's meta cannot name `../x`).
fn safe_name(name: &str) -> bool {
    crate::stagecache::plain_name(name)
}

fn object_path(prefix: &str, key: &str, file: &str) -> ObjPath {
    if prefix.is_empty() {
        ObjPath::from(format!("{key}/{file}"))
    } else {
        ObjPath::from(format!("{prefix}/{key}/{file}"))
    }
}

async fn get_meta(store: Arc<dyn ObjectStore>, m: ObjPath) -> Result<Option<Value>, RemoteError> {
    match store.get(&m).await {
        Ok(r) => {
            if r.meta.size > META_MAX {
                return Err(io(
                    "downloading",
                    &m,
                    format!("{} bytes, more than a meta.json can be", r.meta.size),
                ));
            }
            let bytes = r.bytes().await.map_err(|e| io("downloading", &m, e))?;
            // An unreadable meta is no entry (it is replaced by the next push).
            Ok(serde_json::from_slice(&bytes).ok())
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(io("looking up", &m, e)),
    }
}

/// Plain http only to this machine (a test store, a local proxy): anything else would let
/// whoever is on the path swap the bytes of an entry and its digests alike.
fn check_endpoint(url: &str) -> Result<(), String> {
    let Some(rest) = url.strip_prefix("http://") else {
        return if url.starts_with("https://") {
            Ok(())
        } else {
            Err(format!("AWS_ENDPOINT_URL={url}: expected an https:// URL"))
        };
    };
    let authority = rest.split('/').next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(format!(
            "AWS_ENDPOINT_URL={url}: plain http only to this machine (127.0.0.1, ::1, localhost); use https"
        ))
    }
}

type Trust = (
    Option<Arc<crate::signing::SecretKey>>,
    Vec<crate::signing::PublicKey>,
);

/// The signing key (from its file, which only its owner may read) and the trusted keys.
fn trust(env: &crate::tunables::S3Env) -> Result<Trust, String> {
    let signer = match &env.signing_key_file {
        None => None,
        Some(p) => {
            use std::os::unix::fs::PermissionsExt;
            let shown = p.display();
            let meta =
                std::fs::metadata(p).map_err(|e| format!("KILN_CACHE_SIGNING_KEY={shown}: {e}"))?;
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(format!(
                    "KILN_CACHE_SIGNING_KEY={shown}: others can read it (chmod 600 it)"
                ));
            }
            let (_, bytes) = crate::hostfile::read(Path::new("."), &p.to_string_lossy(), false)
                .map_err(|e| format!("KILN_CACHE_SIGNING_KEY: {e}"))?;
            let text = String::from_utf8_lossy(&bytes);
            let key = crate::signing::SecretKey::parse(&text)
                .map_err(|e| format!("KILN_CACHE_SIGNING_KEY={shown}: {e}"))?;
            Some(Arc::new(key))
        }
    };
    let trusted = env
        .trusted_keys
        .as_deref()
        .unwrap_or("")
        .split_whitespace()
        .map(|k| {
            crate::signing::PublicKey::parse(k).map_err(|e| format!("KILN_CACHE_TRUSTED_KEYS: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((signer, trusted))
}

fn interrupted(op: &'static str, key: &str) -> RemoteError {
    RemoteError::Interrupted {
        op,
        key: short(key).to_string(),
    }
}

/// How often a file's upload is tried, and the pause before each retry.
const UPLOAD_TRIES: [std::time::Duration; 3] = [
    std::time::Duration::ZERO,
    std::time::Duration::from_secs(3),
    std::time::Duration::from_secs(10),
];

/// Resolves once `cancel` is cancelled (looked at every 100 ms): for `tokio::select!` beside work
/// that a Ctrl-C must stop.
async fn cancelled(cancel: &crate::process::Cancel) {
    while !cancel.is_cancelled() {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// [`upload`], tried again from the start (new requests, newly signed) when the store failed:
/// a busy Swift answered 500 to several parts at once, and the object store's own retry of
/// those parts was refused as SignatureDoesNotMatch (CI24), which it does not retry. A file
/// that cannot be read is not tried again; a Ctrl-C ends the pause between tries.
async fn upload_retried(
    store: Arc<dyn ObjectStore>,
    p: &Path,
    dest: &ObjPath,
    key: &str,
    cancel: &crate::process::Cancel,
) -> Result<(String, u64), RemoteError> {
    let mut last = None;
    for (attempt, pause) in UPLOAD_TRIES.iter().enumerate() {
        if let Some(e) = &last {
            tracing::warn!(
                "remote cache: {e}; uploading it again in {} s (attempt {} of {})",
                pause.as_secs(),
                attempt + 1,
                UPLOAD_TRIES.len()
            );
            tokio::select! {
                () = tokio::time::sleep(*pause) => {}
                () = cancelled(cancel) => return Err(interrupted("pushing", key)),
            }
        }
        match upload(store.clone(), p, dest, key, cancel).await {
            Err(
                e @ RemoteError::Io {
                    op: "uploading", ..
                },
            ) if !cancel.is_cancelled() => last = Some(e),
            done => return done,
        }
    }
    Err(last.expect("at least one try"))
}

/// Upload `p` to `dest`, hashing it on the way: one PUT when small, parts in parallel when not.
/// Cancelled, a multipart upload is aborted (the store drops its parts).
async fn upload(
    store: Arc<dyn ObjectStore>,
    p: &Path,
    dest: &ObjPath,
    key: &str,
    cancel: &crate::process::Cancel,
) -> Result<(String, u64), RemoteError> {
    let mut f = tokio::fs::File::open(p)
        .await
        .map_err(|e| io("reading", p.display(), e))?;
    let len = f
        .metadata()
        .await
        .map_err(|e| io("reading", p.display(), e))?
        .len();
    let mut hash = Sha256::new();
    if cancel.is_cancelled() {
        return Err(interrupted("pushing", key));
    }
    if len <= PART as u64 {
        let mut data = Vec::with_capacity(len as usize);
        f.read_to_end(&mut data)
            .await
            .map_err(|e| io("reading", p.display(), e))?;
        hash.update(&data);
        let n = data.len() as u64;
        store
            .put(dest, PutPayload::from(data))
            .await
            .map_err(|e| io("uploading", dest, e))?;
        return Ok((hex::encode(hash.finalize()), n));
    }
    let up = store
        .put_multipart(dest)
        .await
        .map_err(|e| io("uploading", dest, e))?;
    let mut w = WriteMultipart::new_with_chunk_size(up, PART);
    let mut buf = vec![0u8; 4 << 20];
    let mut n = 0u64;
    loop {
        if cancel.is_cancelled() {
            let _ = w.abort().await;
            return Err(interrupted("pushing", key));
        }
        let r = match f.read(&mut buf).await {
            Ok(0) => break,
            Ok(r) => r,
            Err(e) => {
                let _ = w.abort().await;
                return Err(io("reading", p.display(), e));
            }
        };
        hash.update(&buf[..r]);
        if let Err(e) = w.wait_for_capacity(PARTS_IN_FLIGHT).await {
            let _ = w.abort().await;
            return Err(io("uploading", dest, e));
        }
        w.write(&buf[..r]);
        n += r as u64;
    }
    w.finish().await.map_err(|e| io("uploading", dest, e))?;
    Ok((hex::encode(hash.finalize()), n))
}

/// Stream `src` into `dest` (mode `mode`), hashing as it comes; a wrong digest is an error,
/// and so is a byte past the declared `size` (the download stops there: a remote cannot fill
/// the disk with more than its meta.json announced).
async fn download(
    store: Arc<dyn ObjectStore>,
    src: &ObjPath,
    dest: &Path,
    (sha, size): (&str, u64),
    mode: u32,
    step: &(dyn Fn(u64) + Send + Sync),
) -> Result<(), RemoteError> {
    let mut stream = store
        .get(src)
        .await
        .map_err(|e| io("downloading", src, e))?
        .into_stream();
    let mut f = tokio::fs::File::create(dest)
        .await
        .map_err(|e| io("writing", dest.display(), e))?;
    let mut hash = Sha256::new();
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| io("downloading", src, e))?;
        n = n.saturating_add(chunk.len() as u64);
        if n > size {
            return Err(io(
                "downloading",
                src,
                format!("more than the {size} bytes its meta.json declares"),
            ));
        }
        hash.update(&chunk);
        f.write_all(&chunk)
            .await
            .map_err(|e| io("writing", dest.display(), e))?;
        step(chunk.len() as u64);
    }
    f.sync_all()
        .await
        .map_err(|e| io("writing", dest.display(), e))?;
    let got = hex::encode(hash.finalize());
    if got != sha {
        return Err(RemoteError::Digest {
            path: src.to_string(),
            expected: sha.to_string(),
            got,
        });
    }
    use std::os::unix::fs::PermissionsExt;
    tokio::fs::set_permissions(dest, std::fs::Permissions::from_mode(mode & 0o755))
        .await
        .map_err(|e| io("writing", dest.display(), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_this_machine() {
        for ok in [
            "https://swift.example:8080",
            "http://127.0.0.1:8080",
            "http://localhost:8080/",
            "http://[::1]:8080",
        ] {
            assert!(check_endpoint(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://swift.example:8080",
            "http://10.0.0.5",
            "http://127.0.0.1.evil.example",
            "ftp://x",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_signature_covers_every_file_digest_but_not_the_signatures() {
        let meta = serde_json::json!({
            "stage": "provision",
            "remote_files": {"disk.qcow2": {"sha256": "aa", "size": 1, "mode": 420}},
        });
        let base = entry_message("k", &meta);
        let mut changed = meta.clone();
        changed["remote_files"]["disk.qcow2"]["sha256"] = "bb".into();
        assert_ne!(entry_message("k", &changed), base);
        assert_ne!(entry_message("other", &meta), base);
        let mut signed = meta.clone();
        signed["signatures"] = serde_json::json!([{"key": "ci-1", "sig": "x"}]);
        assert_eq!(entry_message("k", &signed), base);
    }

    #[test]
    fn urls_name_a_bucket_and_a_prefix() {
        let ok = |u: &str| parse_url(u).unwrap();
        assert_eq!(ok("s3://kiln-cache"), ("kiln-cache".into(), "".into()));
        assert_eq!(
            ok("s3://kiln-cache/team/a/"),
            ("kiln-cache".into(), "team/a".into())
        );
        assert_eq!(ok("s3://a.b-c/x_y.z"), ("a.b-c".into(), "x_y.z".into()));
        for bad in [
            "http://x",
            "s3://",
            "s3://a b",
            "s3://ab",
            "s3://UPPER",
            "s3://-lead",
            "s3://bucket/../x",
            "s3://bucket/a//b",
            "s3://bucket/a b",
            "s3://bucket/a?x=1",
            "s3://bucket/%2e%2e",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn entry_files_are_plain_names() {
        assert!(safe_name("disk.qcow2"));
        for bad in ["", ".", "..", "../x", "a/b", "a\0"] {
            assert!(!safe_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn objects_sit_under_the_prefix() {
        assert_eq!(object_path("", "k", "meta.json").as_ref(), "k/meta.json");
        assert_eq!(object_path("team/a", "k", "disk").as_ref(), "team/a/k/disk");
    }
}
