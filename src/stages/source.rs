//! Source stage: a base disk from a (cached, verified) image or from a package bootstrap.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use sha2::{Digest, Sha256, Sha512};

use crate::bootstrap;
use crate::pipeline::context::{BaseDisk, BuildContext, InstallMedia, Resource};
use crate::pipeline::describe::{Describe, Described, PlanView};
use crate::pipeline::{Outcome, Stage};
use crate::plan::BootstrapPlan;
use crate::plan::{Checksum, SourcePlan};
use crate::process::{self, Opts};
use crate::progress::Progress;

/// How many fresh appliances GRUB's installation gets (see `install` below).
const GRUB_ATTEMPTS: u32 = 5;

/// Reads the plan only; sets `made.base`, or `made.install_media` for installer sources.
pub struct SourceStage;

impl Stage<BuildContext> for SourceStage {
    fn name(&self) -> &'static str {
        "source"
    }

    fn run(&mut self, ctx: &mut BuildContext) -> anyhow::Result<()> {
        let path = match ctx.env.plan.source.clone() {
            SourcePlan::Installer(inst) => {
                // The media only; the install stage makes the base disk from it.
                let media = match &inst.media {
                    crate::plan::Media::Iso { iso, .. } => InstallMedia {
                        iso: Some(fetch_file(ctx, iso).context("fetching the installer ISO")?),
                        kernel: None,
                        initrd: None,
                    },
                    crate::plan::Media::Netboot { kernel, initrd } => InstallMedia {
                        iso: None,
                        kernel: Some(fetch_file(ctx, kernel).context("fetching the kernel")?),
                        initrd: Some(fetch_file(ctx, initrd).context("fetching the initrd")?),
                    },
                };
                ctx.made.install_media = Some(media);
                return Ok(());
            }
            SourcePlan::Bootstrap(b) => base_disk(ctx, &b)?,
            SourcePlan::Image {
                url,
                path,
                checksum,
                checksum_url,
                ..
            } => fetch_file(
                ctx,
                &crate::plan::FilePlan {
                    url,
                    path,
                    checksum,
                    checksum_url,
                },
            )?,
        };
        let path = std::fs::canonicalize(&path)
            .with_context(|| format!("resolving {}", path.display()))?;
        let info = crate::qemu_img::info(&path, &ctx.env.cancel)
            .with_context(|| format!("inspecting base disk {}", path.display()))?;
        // A backing file (or a json: filename) can name any file on the host, which would end
        // up inside the published image: sources must stand alone.
        if let Some(b) = &info.backing_filename {
            bail!(
                "the base disk {} has a backing file ({b}); kiln does not follow a source's backing files (they can point anywhere on the host): flatten it first (qemu-img convert)",
                path.display()
            );
        }
        if let SourcePlan::Image {
            format: Some(f), ..
        } = &ctx.env.plan.source
        {
            if f != &info.format {
                bail!(
                    "the recipe says the image is {f}, but qemu-img says {} ({})",
                    info.format,
                    path.display()
                );
            }
        }
        tracing::info!(
            "base disk {} ({}, {} virtual)",
            path.display(),
            info.format,
            crate::progress::human_bytes(info.virtual_size)
        );
        // The chain of cache keys starts with the base disk's identity.
        ctx.cache.chain = crate::stagecache::base_key(&ctx.env.plan, &path, &ctx.env.cache_dir)
            .with_context(|| format!("identifying {} for the stage cache", path.display()))?;
        if let Some(k) = ctx.cache.chain.clone() {
            ctx.note_cache("source", &k, false);
            // What another machine would have to bootstrap or download goes to the remote.
            let made_here = match &ctx.env.plan.source {
                SourcePlan::Bootstrap(_) => true,
                SourcePlan::Image { url, .. } => url.is_some(),
                SourcePlan::Installer(_) => false,
            };
            if made_here {
                ctx.share_base(&k, &path);
            }
        }
        ctx.made.base = Some(BaseDisk {
            path,
            format: info.format,
            virtual_size: info.virtual_size,
        });
        Ok(())
    }

    fn cleanup(&mut self, ctx: &mut BuildContext, outcome: Outcome) -> anyhow::Result<()> {
        // Only partial downloads / bootstrap scratch are recorded; the cache stays.
        let keep = ctx.env.keep_on_error;
        ctx.env.keep_on_error = false;
        let r = ctx.release(self.name(), outcome);
        ctx.env.keep_on_error = keep;
        r
    }
}

/// The cached base disk for `b`, building it when missing.
fn base_disk(ctx: &mut BuildContext, b: &BootstrapPlan) -> anyhow::Result<PathBuf> {
    let key = b.cache_key();
    let dir = ctx.env.cache_dir.join("bootstrap");
    let dest = bootstrap::cached_disk(&ctx.env.cache_dir, b);
    if dest.is_file() {
        tracing::info!("using cached base disk {}", dest.display());
        return Ok(dest);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    if ctx.pull_base(&crate::stagecache::bootstrap_key(b), &dest) {
        return Ok(dest);
    }
    if unsafe { libc::geteuid() } != 0 {
        bail!("bootstrapping a base disk needs root (mmdebstrap --mode=root and mkfs.ext4 -d keep file ownership)");
    }
    let scratch = bootstrap::scratch_dir(&ctx.env.cache_dir, &key, std::process::id());
    ctx.record(Resource::Dir(scratch.clone()));
    std::fs::create_dir_all(&scratch)?;
    crate::owner::Owner::current().write_into(&scratch)?;
    let rootfs = scratch.join("rootfs");
    let customize = scratch.join("customize.sh");
    let uuid = bootstrap::fs_uuid(&key);
    std::fs::write(&customize, bootstrap::customize_script(&uuid))?;

    tracing::info!(
        "bootstrapping {} {} with mmdebstrap ({} packages; about 2 minutes)",
        b.distro,
        b.suite,
        b.packages.len()
    );
    let opts = Opts {
        env: vec![("SOURCE_DATE_EPOCH".into(), "1700000000".into())],
        stream_prefix: Some("mmdebstrap| ".into()),
        ..Default::default()
    };
    process::run(
        &bootstrap::mmdebstrap_argv(b, &rootfs, &customize),
        &opts,
        &ctx.env.cancel,
    )
    .context("bootstrapping the root filesystem")?;

    let raw = scratch.join("disk.raw");
    std::fs::File::create(&raw)?.set_len(b.size_bytes)?;
    process::run(
        &bootstrap::sfdisk_argv(&raw),
        &Opts {
            stdin: Some(bootstrap::sfdisk_script().as_bytes().to_vec()),
            ..Default::default()
        },
        &ctx.env.cancel,
    )
    .context("partitioning the base disk")?;
    tracing::info!("creating the ext4 filesystem from the root directory");
    process::run(
        &bootstrap::mkfs_argv(&raw, &rootfs, &uuid, b.size_bytes),
        &Opts::default(),
        &ctx.env.cancel,
    )
    .context("creating the root filesystem")?;
    std::fs::remove_dir_all(&rootfs).ok();

    tracing::info!("installing GRUB with the image's own GRUB tools (libguestfs)");
    let tcg = ctx.engine()?.is_tcg();
    // grub-bios-setup now and then refuses the disk ("embedding is not possible, but this is
    // required for cross-disk install") and succeeds in a fresh appliance on the same disk:
    // the steps are idempotent, so they are run again before giving up.
    let install = || -> Result<(), crate::guest::GuestError> {
        let g = crate::guest::Guest::open_device(&raw, "raw", tcg, "/dev/sda1")?;
        for step in bootstrap::grub_steps() {
            match step {
                bootstrap::GrubStep::Write(path, content) => g.write(path, content.as_bytes())?,
                bootstrap::GrubStep::Run(argv) => {
                    g.command(argv)?;
                }
                bootstrap::GrubStep::Remove(path) => g.rm_rf(path)?,
            }
        }
        g.close()
    };
    // Seen here on about half of the attempts on some days (each a fresh appliance, ~10 s):
    // up to five before giving up.
    let mut attempt = 1;
    while let Err(e) = install() {
        if ctx.env.cancel.is_cancelled() {
            bail!("interrupted");
        }
        if attempt == GRUB_ATTEMPTS {
            return Err(e.into());
        }
        attempt += 1;
        tracing::warn!(
            "installing GRUB failed ({e}); trying again in a new appliance ({attempt} of {GRUB_ATTEMPTS})"
        );
    }
    if ctx.env.cancel.is_cancelled() {
        bail!("interrupted");
    }

    let tmp = scratch.join("base.qcow2");
    process::run(
        &crate::qemu_img::raw_to_qcow2_argv(&raw, &tmp),
        &Opts::default(),
        &ctx.env.cancel,
    )
    .context("converting the base disk to qcow2")?;
    std::fs::rename(&tmp, &dest)
        .with_context(|| format!("moving the base disk to {}", dest.display()))?;
    std::fs::remove_dir_all(&scratch).ok();
    ctx.forget(&Resource::Dir(scratch));
    tracing::info!("cached base disk {}", dest.display());
    Ok(dest)
}

/// A source file (image or installer medium): downloaded once into the cache and verified,
/// or used in place (verified when a checksum is given).
fn fetch_file(ctx: &mut BuildContext, f: &crate::plan::FilePlan) -> anyhow::Result<PathBuf> {
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
        if ctx.pull_base(&key, &dest) {
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

impl Describe for SourceStage {
    fn describe(&self, v: &PlanView) -> Option<Described> {
        let plan = v.plan;
        let commands = match &plan.source {
            SourcePlan::Installer(inst) => match &inst.media {
                crate::plan::Media::Iso { iso, .. } => {
                    vec![crate::fetch::planned_fetch("ISO", &v.cache, iso)]
                }
                crate::plan::Media::Netboot { kernel, initrd } => vec![
                    crate::fetch::planned_fetch("kernel", &v.cache, kernel),
                    crate::fetch::planned_fetch("initrd", &v.cache, initrd),
                ],
            },
            SourcePlan::Bootstrap(b) => bootstrap::planned(&v.cache, b),
            SourcePlan::Image {
                url,
                path,
                checksum,
                checksum_url,
                ..
            } => vec![crate::fetch::planned_fetch(
                "image",
                &v.cache,
                &crate::plan::FilePlan {
                    url: url.clone(),
                    path: path.clone(),
                    checksum: checksum.clone(),
                    checksum_url: checksum_url.clone(),
                },
            )],
        };
        Some(Described {
            inputs: serde_json::to_value(&plan.source).unwrap_or_default(),
            commands,
        })
    }
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
