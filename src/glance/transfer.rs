//! Moving image data: streaming uploads with a Content-Length (uWSGI answers neither
//! `Expect: 100-continue` nor likes huge chunks), SHA-512 computed while the bytes go out and
//! checked against what Glance stored; downloads verified and renamed into place.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use md5::Md5;
use serde_json::Value;
use sha2::{Digest, Sha512};

use super::{transport, Glance, GlanceError};
use crate::process::Cancel;
use crate::progress::Progress;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Transferred {
    pub size: u64,
    /// Empty for a download verified by MD5 (an image without a SHA-512).
    pub sha512: String,
    pub seconds: f64,
}

#[derive(Debug, Clone, Default)]
pub struct UploadOptions {
    /// `PUT …/stage` (for a glance-direct import) instead of `PUT …/file`.
    pub stage: bool,
    /// The store to upload into (multi-store Glance; default: its default store).
    pub store: Option<String>,
}

/// A reader that hashes what passes through it and reports progress; it fails with
/// `Interrupted` once the build is cancelled, which aborts the request.
struct Tee<R> {
    inner: R,
    state: Arc<Mutex<TeeState>>,
    progress: Arc<Progress>,
    cancel: Cancel,
}

struct TeeState {
    sha: Sha512,
    done: u64,
    /// Set when kiln gave up on the request (stalled): the next read ends the body.
    abandoned: bool,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.cancel.is_cancelled() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "interrupted",
            ));
        }
        if self.state.lock().expect("tee state").abandoned {
            return Err(std::io::Error::other("abandoned"));
        }
        let n = self.inner.read(buf)?;
        let mut st = self.state.lock().expect("tee state");
        st.sha.update(&buf[..n]);
        st.done += n as u64;
        self.progress.set(st.done);
        Ok(n)
    }
}

impl Glance {
    /// Stream `file` into image `id`. Returns what was sent (size and SHA-512); the caller
    /// compares that with the image record.
    pub fn upload(
        &self,
        id: &str,
        file: &Path,
        opts: UploadOptions,
        cancel: &Cancel,
    ) -> Result<Transferred, GlanceError> {
        let what = if opts.stage { "stage" } else { "file" };
        let path = format!("/v2/images/{id}/{what}");
        let f = std::fs::File::open(file)
            .map_err(|e| transport("PUT", &path, format!("opening {}: {e}", file.display())))?;
        let len = f
            .metadata()
            .map_err(|e| transport("PUT", &path, format!("{}: {e}", file.display())))?
            .len();
        let state = Arc::new(Mutex::new(TeeState {
            sha: Sha512::new(),
            done: 0,
            abandoned: false,
        }));
        let label = format!(
            "uploading {}",
            file.file_name().unwrap_or_default().to_string_lossy()
        );
        let progress = Arc::new(Progress::bytes(&label, Some(len)));
        let tee = Tee {
            inner: std::io::BufReader::with_capacity(1 << 20, f),
            state: state.clone(),
            progress: progress.clone(),
            cancel: cancel.clone(),
        };
        let t = Instant::now();
        let req = self
            .request(reqwest::Method::PUT, &path)
            .header("Content-Type", "application/octet-stream");
        let req = match &opts.store {
            Some(store) => req.header("X-Image-Meta-Store", store),
            None => req,
        };
        let req = req.body(reqwest::blocking::Body::sized(tee, len));
        let sent = || state.lock().map(|s| s.done).unwrap_or(0);
        let res = self.send_streaming(reqwest::Method::PUT, &path, req, &sent, cancel);
        if res.is_err() {
            state.lock().expect("tee state").abandoned = true;
        }
        progress.finish();
        if cancel.is_cancelled() {
            return Err(transport("PUT", &path, "interrupted".into()));
        }
        res?;
        let st = state.lock().expect("tee state");
        if st.done != len {
            return Err(transport(
                "PUT",
                &path,
                format!(
                    "{} changed during the upload ({} bytes sent, {len} expected)",
                    file.display(),
                    st.done
                ),
            ));
        }
        Ok(Transferred {
            size: len,
            sha512: hex::encode(st.sha.clone().finalize()),
            seconds: t.elapsed().as_secs_f64(),
        })
    }

    /// Download image data to `dest` atomically: a temporary file beside it, verified
    /// against the record's SHA-512 (or MD5 for images without one) and size, then renamed.
    pub fn download(
        &self,
        image: &Value,
        dest: &Path,
        cancel: &Cancel,
    ) -> Result<Transferred, GlanceError> {
        let id = image["id"].as_str().unwrap_or_default();
        let path = format!("/v2/images/{id}/file");
        let dir = match dest.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut part = tempfile::Builder::new()
            .prefix(&format!(
                ".{}.",
                dest.file_name().unwrap_or_default().to_string_lossy()
            ))
            .suffix(".part")
            .tempfile_in(&dir)
            .map_err(|e| {
                transport(
                    "GET",
                    &path,
                    format!("creating a file in {}: {e}", dir.display()),
                )
            })?;
        let t = Instant::now();
        let mut resp = self.send(reqwest::Method::GET, &path, |r| r)?;
        if resp.status().as_u16() == 204 {
            return Err(GlanceError::Http {
                method: "GET".into(),
                path,
                status: 204,
                message: "the image has no data".into(),
                hint: " (is it still queued?)".into(),
            });
        }
        let total = resp.content_length().or(image["size"].as_u64());
        let progress = Progress::bytes(
            &format!("downloading {}", image["name"].as_str().unwrap_or(id)),
            total,
        );
        // Only the digest `verify` will compare: SHA-512 when Glance has one, else MD5.
        let by_sha512 = image["os_hash_algo"] == "sha512" && image["os_hash_value"].is_string();
        let mut sha = by_sha512.then(Sha512::new);
        let mut md5 = (!by_sha512).then(Md5::new);
        let mut done = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        let write_err =
            |e: std::io::Error| transport("GET", &path, format!("writing {}: {e}", dest.display()));
        loop {
            if cancel.is_cancelled() {
                return Err(transport("GET", &path, "interrupted".into()));
            }
            let n = resp
                .read(&mut buf)
                .map_err(|e| transport("GET", &path, format!("reading the data: {e}")))?;
            if n == 0 {
                break;
            }
            if let Some(h) = sha.as_mut() {
                h.update(&buf[..n]);
            }
            if let Some(h) = md5.as_mut() {
                h.update(&buf[..n]);
            }
            part.write_all(&buf[..n]).map_err(write_err)?;
            done += n as u64;
            progress.set(done);
        }
        progress.finish();
        let sha512 = sha.map(|h| hex::encode(h.finalize())).unwrap_or_default();
        let md5 = md5.map(|h| hex::encode(h.finalize())).unwrap_or_default();
        verify(image, done, &sha512, &md5).map_err(|m| transport("GET", &path, m))?;
        part.as_file().sync_all().map_err(write_err)?;
        part.persist(dest).map_err(|e| {
            transport(
                "GET",
                &path,
                format!("renaming into {}: {}", dest.display(), e.error),
            )
        })?;
        Ok(Transferred {
            size: done,
            sha512,
            seconds: t.elapsed().as_secs_f64(),
        })
    }
}

/// Compare received bytes with the image record: size, then SHA-512 when Glance has it
/// (`os_hash_algo` sha512), else the MD5 `checksum`.
pub fn verify(image: &Value, size: u64, sha512: &str, md5: &str) -> Result<(), String> {
    if let Some(want) = image["size"].as_u64() {
        if want != size {
            return Err(format!("received {size} bytes, Glance says {want}"));
        }
    }
    match (
        image["os_hash_algo"].as_str(),
        image["os_hash_value"].as_str(),
    ) {
        (Some("sha512"), Some(want)) if want != sha512 => {
            Err(format!("SHA-512 mismatch: got {sha512}, Glance has {want}"))
        }
        (Some("sha512"), Some(_)) => Ok(()),
        _ => match image["checksum"].as_str() {
            Some(want) if want != md5 => Err(format!("MD5 mismatch: got {md5}, Glance has {want}")),
            Some(_) => Ok(()),
            None => Err("Glance has no checksum for this image to verify against".into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn verification_prefers_sha512_and_checks_size() {
        let img =
            json!({"size": 3, "os_hash_algo": "sha512", "os_hash_value": "aa", "checksum": "bb"});
        assert!(verify(&img, 3, "aa", "zz").is_ok());
        assert!(verify(&img, 3, "ab", "bb").unwrap_err().contains("SHA-512"));
        assert!(verify(&img, 4, "aa", "bb").unwrap_err().contains("4 bytes"));
        let legacy = json!({"size": 3, "checksum": "bb"});
        assert!(verify(&legacy, 3, "x", "bb").is_ok());
        assert!(verify(&legacy, 3, "x", "cc").unwrap_err().contains("MD5"));
        assert!(verify(&json!({}), 3, "x", "y").is_err());
    }
}
