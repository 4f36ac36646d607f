//! Files a source names (an image, installer media): downloaded once into the cache and
//! verified while streaming, or used in place and verified.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use sha2::{Digest, Sha256, Sha512};

use crate::pipeline::context::{BuildContext, Resource};
use crate::plan::Checksum;
use crate::progress::Progress;

/// A source file (image or installer medium): downloaded once into the cache and verified,
/// or used in place (verified when a checksum is given).
pub(super) fn fetch_file(
    ctx: &mut BuildContext,
    f: &crate::plan::FilePlan,
) -> anyhow::Result<PathBuf> {
    match (&f.url, &f.path, &f.checksum) {
        (Some(url), _, Some(sum)) => download_cached(ctx, url, sum),
        (Some(url), _, None) => match &f.checksum_url {
            Some(sums) => {
                let sum = checksum_from_file(sums, url)?;
                download_cached(ctx, url, &sum)
            }
            None => bail!("a URL source needs a checksum ({url})"),
        },
        (None, Some(p), sum) => {
            if let Some(sum) = sum {
                tracing::info!("verifying {}", p.display());
                verify_file(p, sum)?;
            }
            Ok(std::fs::canonicalize(p).with_context(|| format!("resolving {}", p.display()))?)
        }
        (None, None, _) => bail!("source has neither url nor path"),
    }
}

fn http() -> anyhow::Result<reqwest::blocking::Client> {
    Ok(reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .build()?)
}

/// Look the image's file name up in a SHA256SUMS / SHA512SUMS file.
fn checksum_from_file(sums_url: &str, image_url: &str) -> anyhow::Result<Checksum> {
    tracing::info!("fetching checksums from {sums_url}");
    let resp = http()?
        .get(sums_url)
        .send()
        .with_context(|| format!("fetching {sums_url}"))?;
    if !resp.status().is_success() {
        bail!("fetching {sums_url}: HTTP {}", resp.status());
    }
    let text = resp.text().with_context(|| format!("reading {sums_url}"))?;
    lookup_checksum(&text, image_url).with_context(|| format!("looking up the image in {sums_url}"))
}

/// Find `image_url`'s file name in `sha256sum`-style text ("HEX  name" or "HEX *name").
pub fn lookup_checksum(text: &str, image_url: &str) -> anyhow::Result<Checksum> {
    let name = image_url.rsplit('/').next().unwrap_or(image_url);
    for line in text.lines() {
        // BSD style (Rocky's CHECKSUM): "SHA256 (name) = hex".
        if let Some((algo, rest)) = line.split_once(" (") {
            if let Some((file, hex)) = rest.split_once(") = ") {
                if file == name {
                    let algorithm = algo.trim().to_ascii_lowercase();
                    if algorithm != "sha256" && algorithm != "sha512" {
                        bail!("unsupported checksum {algo} for {name}");
                    }
                    return checked(&algorithm, hex.trim(), name);
                }
                continue;
            }
        }
        let mut parts = line.split_whitespace();
        let (Some(hex), Some(file)) = (parts.next(), parts.next()) else {
            continue;
        };
        if file.trim_start_matches('*') == name {
            let algorithm = match hex.len() {
                64 => "sha256",
                128 => "sha512",
                _ => bail!("unrecognized checksum length for {name}"),
            };
            return checked(algorithm, hex, name);
        }
    }
    bail!("no checksum for {name}")
}

/// A checksum read from a sums file, held to the rules of one written in a recipe (it becomes
/// part of a cache path).
fn checked(algorithm: &str, hex: &str, name: &str) -> anyhow::Result<Checksum> {
    crate::recipe::parse_checksum(&format!("{algorithm}:{hex}"))
        .map_err(|m| anyhow::anyhow!("the checksum file's entry for {name}: {m}"))
}

/// Hash a file and compare with `sum`.
pub fn verify_file(path: &Path, sum: &Checksum) -> anyhow::Result<()> {
    let mut h = Hasher::new(&sum.algorithm);
    crate::hostfile::each_chunk(path, |b| h.update(b))
        .with_context(|| format!("reading {}", path.display()))?;
    let got = h.hex();
    if got != sum.hex {
        bail!(
            "checksum mismatch for {}: expected {}:{}, got {}:{got}",
            path.display(),
            sum.algorithm,
            sum.hex,
            sum.algorithm
        );
    }
    Ok(())
}

enum Hasher {
    S256(Sha256),
    S512(Sha512),
}

impl Hasher {
    fn new(algo: &str) -> Self {
        if algo == "sha512" {
            Hasher::S512(Sha512::new())
        } else {
            Hasher::S256(Sha256::new())
        }
    }
    fn update(&mut self, b: &[u8]) {
        match self {
            Hasher::S256(h) => h.update(b),
            Hasher::S512(h) => h.update(b),
        }
    }
    fn hex(self) -> String {
        match self {
            Hasher::S256(h) => hex::encode(h.finalize()),
            Hasher::S512(h) => hex::encode(h.finalize()),
        }
    }
}

/// Download `url` into the cache (keyed by checksum) unless it is there already; verify while
/// streaming; the partial file is recorded so an interrupt removes it.
fn download_cached(ctx: &mut BuildContext, url: &str, sum: &Checksum) -> anyhow::Result<PathBuf> {
    let dir = crate::fetch::downloads_dir(&ctx.env.cache_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dest = crate::fetch::cached_download(&ctx.env.cache_dir, sum);
    if dest.is_file() {
        // The cache is a plain directory: whatever changed the file since it was verified,
        // the build only uses it if it still has the checksum.
        match verify_file(&dest, sum) {
            Ok(()) => {
                tracing::info!("using cached image {} (verified again)", dest.display());
                return Ok(dest);
            }
            Err(e) => {
                tracing::warn!(
                    "the cached {} no longer verifies ({e:#}); downloading it again",
                    dest.display()
                );
                std::fs::remove_file(&dest)
                    .with_context(|| format!("removing {}", dest.display()))?;
            }
        }
    }
    if let Some(name) = dest.file_name() {
        let key = crate::stagecache::download_key(&name.to_string_lossy());
        // The recipe's checksum decides, not the remote's word.
        if ctx.pull_base(&key, &dest)? {
            match verify_file(&dest, sum) {
                Ok(()) => return Ok(dest),
                Err(e) => {
                    tracing::warn!(
                        "the image from the remote cache does not verify ({e:#}); downloading it"
                    );
                    let _ = std::fs::remove_file(&dest);
                }
            }
        }
    }
    let part = dir.join(format!(
        ".{}-{}.part-{}",
        sum.algorithm,
        sum.hex,
        std::process::id()
    ));
    ctx.record(Resource::File(part.clone()));
    let shown = crate::quote::redact_url_passwords(url);
    tracing::info!("downloading {shown}");
    let mut resp = http()?
        .get(url)
        .send()
        .with_context(|| format!("downloading {shown}"))?;
    if !resp.status().is_success() {
        bail!("downloading {shown}: HTTP {}", resp.status());
    }
    let total = resp.content_length();
    let mut out = File::create(&part).with_context(|| format!("creating {}", part.display()))?;
    let mut h = Hasher::new(&sum.algorithm);
    let progress = Progress::bytes("download", total);
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    let start = Instant::now();
    loop {
        if ctx.env.cancel.is_cancelled() {
            bail!("download interrupted");
        }
        let n = resp
            .read(&mut buf)
            .with_context(|| format!("reading {url}"))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        done += n as u64;
        progress.set(done);
    }
    progress.finish();
    out.sync_all()?;
    let got = h.hex();
    if got != sum.hex {
        bail!(
            "checksum mismatch for {url}: expected {}:{}, got {}:{got}",
            sum.algorithm,
            sum.hex,
            sum.algorithm
        );
    }
    std::fs::rename(&part, &dest)?;
    ctx.forget(&Resource::File(part));
    tracing::info!(
        "downloaded {} in {:.0} s",
        crate::progress::human_bytes(done),
        start.elapsed().as_secs_f64()
    );
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_lookup_in_sums_file() {
        let text = format!(
            "{}  other.img\n{} *bionic-server-cloudimg-amd64.img\n",
            "a".repeat(64),
            "B".repeat(64)
        );
        let c = lookup_checksum(&text, "https://h/r/bionic-server-cloudimg-amd64.img").unwrap();
        assert_eq!(c.algorithm, "sha256");
        assert_eq!(c.hex, "b".repeat(64));
        assert!(lookup_checksum(&text, "https://h/missing.img").is_err());
        // Rocky's CHECKSUM file is BSD style.
        let bsd = format!(
            "# Rocky-9.5-x86_64-boot.iso: 1 bytes\nSHA256 (Rocky-9.5-x86_64-boot.iso) = {}\n",
            "C".repeat(64)
        );
        let c = lookup_checksum(&bsd, "https://h/Rocky-9.5-x86_64-boot.iso").unwrap();
        assert_eq!((c.algorithm.as_str(), c.hex), ("sha256", "c".repeat(64)));
        // What becomes part of a cache path is held to a recipe checksum's rules.
        let evil = format!("SHA256 (x.iso) = ../../{}\n", "c".repeat(58));
        assert!(lookup_checksum(&evil, "https://h/x.iso").is_err());
        let evil = format!("{}  y.img\n", "z".repeat(64));
        assert!(lookup_checksum(&evil, "https://h/y.img").is_err());
    }

    #[test]
    fn verify_detects_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        std::fs::write(&p, b"abc").unwrap();
        let good = Checksum {
            algorithm: "sha256".into(),
            hex: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into(),
        };
        verify_file(&p, &good).unwrap();
        let bad = Checksum {
            hex: "0".repeat(64),
            ..good
        };
        let msg = verify_file(&p, &bad).unwrap_err().to_string();
        assert!(msg.contains("checksum mismatch"), "{msg}");
    }
}
