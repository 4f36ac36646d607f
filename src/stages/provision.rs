//! Provision stage: boot the base disk (through a qcow2 overlay) in libvirt with a NoCloud seed
//! that runs the recipe's steps, stream the serial console, and wait for the guest to power
//! itself off.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::libvirt::{KvmProbe, Libvirt, State};
use crate::pipeline::context::{BuildContext, Resource};
use crate::pipeline::{Outcome, Stage};
use crate::plan::SourcePlan;
use crate::process::{self, Opts};
use crate::seed::{self, TemplateContext};
use crate::templates::{self, Kind};
use crate::vocab::Accel;

pub struct ProvisionStage;

/// Connect to libvirt once per build.
pub fn libvirt(ctx: &mut BuildContext) -> anyhow::Result<&Libvirt> {
    if ctx.libvirt.is_none() {
        let lv = Libvirt::connect(&ctx.plan.vm.uri)?;
        ctx.tools.libvirt = lv.version();
        ctx.libvirt = Some(lv);
    }
    Ok(ctx.libvirt.as_ref().expect("just set"))
}

/// Decide (once) whether to use TCG: `accel: auto` probes whether a KVM guest really runs.
pub fn need_tcg(ctx: &mut BuildContext) -> anyhow::Result<bool> {
    if let Some(t) = ctx.tcg {
        return Ok(t);
    }
    let tcg = match ctx.plan.vm.accel {
        Accel::Tcg => true,
        Accel::Kvm => false,
        Accel::Auto => {
            let cached = cached_probe(&ctx.cache_dir);
            let probe = match cached {
                Some(p) => p,
                None => {
                    let cancel = ctx.cancel.clone();
                    let p = libvirt(ctx)?.probe_kvm(&cancel)?;
                    store_probe(&ctx.cache_dir, &p);
                    p
                }
            };
            match probe {
                KvmProbe::Usable => {
                    tracing::info!("accelerator: kvm (a probe guest ran)");
                    false
                }
                KvmProbe::Unusable(why) | KvmProbe::Unknown(why) => {
                    tracing::warn!(
                        "KVM is not usable here ({why}); falling back to TCG, which is much slower"
                    );
                    true
                }
            }
        }
    };
    ctx.tcg = Some(tcg);
    Ok(tcg)
}

/// The probe's verdict holds until the host reboots (keyed by the kernel's boot id), so only
/// the first build after boot pays for it.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

fn cached_probe(cache: &Path) -> Option<KvmProbe> {
    let text = std::fs::read_to_string(cache.join("kvm-probe")).ok()?;
    let mut lines = text.lines();
    if lines.next()? != boot_id()? {
        return None;
    }
    match lines.next()? {
        "usable" => Some(KvmProbe::Usable),
        "unusable" => Some(KvmProbe::Unusable(format!(
            "{} (probed earlier since boot)",
            lines.next().unwrap_or("probe failed")
        ))),
        _ => None,
    }
}

fn store_probe(cache: &Path, p: &KvmProbe) {
    let (Some(id), Ok(())) = (boot_id(), std::fs::create_dir_all(cache)) else {
        return;
    };
    let text = match p {
        KvmProbe::Usable => format!("{id}\nusable\n"),
        KvmProbe::Unusable(why) => format!("{id}\nunusable\n{why}\n"),
        KvmProbe::Unknown(_) => return,
    };
    let _ = std::fs::write(cache.join("kvm-probe"), text);
}

/// TCG or not for tools that run outside a build (`kiln sysprep`): the cached probe verdict if
/// there is one, else a probe through libvirt if it answers, else TCG (always works).
pub fn tcg_for_tools(
    accel: Accel,
    cache: &Path,
    uri: &str,
    cancel: &crate::process::Cancel,
) -> bool {
    match accel {
        Accel::Tcg => true,
        Accel::Kvm => false,
        Accel::Auto => {
            let probe = cached_probe(cache).or_else(|| {
                let lv = Libvirt::connect(uri).ok()?;
                let p = lv.probe_kvm(cancel).ok()?;
                store_probe(cache, &p);
                Some(p)
            });
            !matches!(probe, Some(KvmProbe::Usable))
        }
    }
}

impl Stage<BuildContext> for ProvisionStage {
    fn name(&self) -> &'static str {
        "provision"
    }

    fn run(&mut self, ctx: &mut BuildContext) -> anyhow::Result<()> {
        ctx.enter(self.name());
        let base = ctx.base.clone().context("no base disk")?;
        let tcg = need_tcg(ctx)?;
        std::fs::create_dir_all(&ctx.work)?;

        // The overlay: the cached base stays untouched.
        let disk = ctx.work.join("disk.qcow2");
        let size = ctx.plan.vm.disk_bytes.filter(|s| *s > base.virtual_size);
        if let Some(s) = ctx.plan.vm.disk_bytes {
            if s < base.virtual_size {
                tracing::warn!(
                    "vm.disk ({}) is smaller than the base disk ({}); keeping the base size",
                    crate::progress::human_bytes(s),
                    crate::progress::human_bytes(base.virtual_size)
                );
            }
        }
        ctx.record(Resource::File(disk.clone()));
        process::run(
            &crate::qemu_img::create_overlay_argv(&base.path, &base.format, &disk, size),
            &Opts::default(),
            &ctx.cancel,
        )
        .context("creating the build disk overlay")?;
        ctx.disk = Some(disk.clone());

        // Nothing to run in the guest: booting it would only wait for cloud-init to power it
        // off again. The cloud-init stage still checks the image.
        if ctx.plan.provision.is_empty() {
            tracing::info!("no provisioning steps: the build VM is not booted");
            return Ok(());
        }
        // A base that cannot run the steps is refused before its boot, not after vm.timeout.
        if matches!(ctx.plan.source, SourcePlan::Image { .. }) {
            check_cloud_init(&base.path, &base.format, tcg, &ctx.cache_dir)?;
        }

        // Seed and domain from the templates.
        let domain = format!("kiln-{}-{}", ctx.plan.name, &hex::encode(rand_bytes())[..8]);
        let tctx = TemplateContext::new(
            &ctx.plan,
            &domain,
            if tcg { "qemu" } else { "kvm" },
            &ctx.work,
        );
        let mut seed_files = Vec::new();
        for kind in [Kind::UserData, Kind::MetaData, Kind::NetworkConfig] {
            let text = templates::render(&ctx.plan, kind, &tctx)?;
            if kind == Kind::NetworkConfig && templates::is_blank(&text) {
                continue;
            }
            let p = ctx.work.join(kind.file_name());
            std::fs::write(&p, text)?;
            seed_files.push(p);
        }
        let seed_iso = tctx.domain.seed_path.clone();
        ctx.record(Resource::File(seed_iso.clone()));
        process::run(
            &seed::xorriso_argv(&seed_iso, &seed_files),
            &Opts::default(),
            &ctx.cancel,
        )
        .context("building the NoCloud seed")?;
        // user-data carries the provisioning script (and any password hash): only the ISO
        // needs it now.
        for f in &seed_files {
            std::fs::remove_file(f).ok();
        }
        let xml = templates::render(&ctx.plan, Kind::Domain, &tctx)?;
        std::fs::write(ctx.work.join("domain.xml"), &xml)?;
        let console = tctx.domain.console_log.clone();

        let uri = ctx.plan.vm.uri.clone();
        let lv = libvirt(ctx)?;
        lv.define(&domain, &xml)?;
        ctx.record(Resource::Domain {
            uri: uri.clone(),
            name: domain.clone(),
        });
        ctx.domain = Some(domain.clone());
        let lv = ctx.libvirt.as_ref().expect("connected");
        lv.start(&domain)?;
        tracing::info!(
            "started domain {domain} ({}, {} MiB, {} vCPU); console: {}",
            if tcg { "tcg" } else { "kvm" },
            ctx.plan.vm.memory_mib,
            ctx.plan.vm.vcpus,
            console.display()
        );

        let result = wait_for_poweroff(
            lv,
            &domain,
            &console,
            ctx.plan.vm.timeout_secs,
            Some(CLOUD_INIT_GRACE),
            &ctx.cancel,
        );
        // Keep the console in the output whatever happened.
        std::fs::create_dir_all(&ctx.out)?;
        std::fs::copy(&console, ctx.out.join("console.log")).ok();
        result?;
        let text = std::fs::read_to_string(&console).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(seed::FAILED_MARKER)) {
            bail!(
                "a provisioning step failed ({}); console tail:\n{}",
                line.trim(),
                process::last_lines(&text, 30)
            );
        }
        if !text.contains(seed::DONE_MARKER) {
            tracing::warn!(
                "the console shows no provisioning result; the guest's status file decides"
            );
        }
        Ok(())
    }

    fn cleanup(&mut self, ctx: &mut BuildContext, outcome: Outcome) -> anyhow::Result<()> {
        ctx.release(self.name(), outcome)
    }
}

/// Fail unless the image at `path` has cloud-init (one read-only libguestfs launch; the answer
/// is cached per file, keyed by its path, size and modification time).
fn check_cloud_init(path: &Path, format: &str, tcg: bool, cache: &Path) -> anyhow::Result<()> {
    use sha2::Digest as _;
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let key = hex::encode(sha2::Sha256::digest(format!(
        "{}\n{}\n{mtime}",
        path.display(),
        meta.len()
    )));
    let marker = cache.join("inspected").join(format!("{key}.cloud-init"));
    if marker.is_file() {
        return Ok(());
    }
    tracing::info!("checking the base image for cloud-init before booting it");
    let g = crate::guest::Guest::open_with(
        path,
        format,
        crate::guest::Launch {
            tcg,
            readonly: true,
            network: false,
        },
    )?;
    let found = g.exists("/usr/bin/cloud-init")?;
    drop(g);
    if !found {
        bail!(
            "the base image {} has no cloud-init (/usr/bin/cloud-init), which runs the \
             provisioning steps: use a cloud image, or a bootstrap source with the `cloud-init` \
             element",
            path.display()
        );
    }
    if let Some(dir) = marker.parent() {
        if std::fs::create_dir_all(dir).is_ok() {
            let _ = std::fs::write(&marker, "yes\n");
        }
    }
    Ok(())
}

pub(crate) fn rand_bytes() -> [u8; 8] {
    let mut b = [0u8; 8];
    if let Ok(mut f) = File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    b
}

/// How long a guest may keep running after cloud-init said it finished: the provisioning
/// script's power_state powers it off right then, so a guest still up long after has a
/// cloud-init that never ran the script (no NoCloud datasource, a broken seed).
pub const CLOUD_INIT_GRACE: Duration = Duration::from_secs(120);

/// Poll the domain until it is shut off, streaming new console lines with a prefix. Ends early
/// with the console tail when the guest cannot finish any more: its kernel panicked, or (with
/// `cloud_init_grace`) cloud-init finished that long ago and the guest is still running.
pub(crate) fn wait_for_poweroff(
    lv: &Libvirt,
    domain: &str,
    console: &Path,
    timeout_secs: u64,
    cloud_init_grace: Option<Duration>,
    cancel: &process::Cancel,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut tail = ConsoleTail::new(console);
    let mut last_note = Instant::now();
    loop {
        tail.pump();
        if tail.panicked {
            // Give the console a moment for the rest of the panic message.
            cancel.sleep(Duration::from_secs(2));
            bail!(
                "the guest's kernel panicked; console tail:\n{}",
                tail.last(30)
            );
        }
        if let (Some(grace), Some(at)) = (cloud_init_grace, tail.cloud_init_finished) {
            if at.elapsed() >= grace && lv.state(domain) == State::Running {
                bail!(
                    "cloud-init finished {} s ago but the guest did not power off: it never ran \
                     kiln's provisioning script (is the NoCloud datasource enabled in the base \
                     image?); console tail:\n{}",
                    at.elapsed().as_secs(),
                    tail.last(30)
                );
            }
        }
        match lv.state(domain) {
            State::Shutoff | State::Missing => {
                tail.pump();
                tracing::info!(
                    "guest powered off after {:.0} s",
                    start.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            State::Crashed => bail!(
                "the guest crashed; console tail:\n{}",
                tail.last(30)
            ),
            State::Paused => bail!(
                "the guest was paused by the hypervisor (an emulation or KVM error?); console tail:\n{}",
                tail.last(30)
            ),
            _ => {}
        }
        if start.elapsed().as_secs() >= timeout_secs {
            bail!(
                "the guest did not power off within {timeout_secs} s (vm.timeout); console tail:\n{}",
                tail.last(30)
            );
        }
        if last_note.elapsed() >= Duration::from_secs(30) {
            last_note = Instant::now();
            tracing::info!(
                "waiting for the guest to power off ({:.0} s of {timeout_secs} s)",
                start.elapsed().as_secs_f64()
            );
        }
        if cancel.sleep(Duration::from_millis(500)) {
            bail!("interrupted while waiting for the guest");
        }
    }
}

/// Follows a growing console log file.
struct ConsoleTail {
    path: std::path::PathBuf,
    pos: u64,
    partial: String,
    lines: Vec<String>,
    /// A kernel panic was printed.
    panicked: bool,
    /// When cloud-init's "finished" line was first seen.
    cloud_init_finished: Option<Instant>,
}

impl ConsoleTail {
    fn new(path: &Path) -> Self {
        ConsoleTail {
            path: path.to_path_buf(),
            pos: 0,
            partial: String::new(),
            lines: Vec::new(),
            panicked: false,
            cloud_init_finished: None,
        }
    }

    fn pump(&mut self) {
        let Ok(mut f) = File::open(&self.path) else {
            return;
        };
        if f.seek(SeekFrom::Start(self.pos)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_err() {
            return;
        }
        self.pos += buf.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&buf));
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            let line = strip_controls(line.trim_end());
            if !line.is_empty() {
                tracing::info!(target: "kiln::console", "console| {line}");
            }
            self.panicked |= line.contains("Kernel panic - not syncing");
            if self.cloud_init_finished.is_none() && is_cloud_init_finished(&line) {
                self.cloud_init_finished = Some(Instant::now());
            }
            self.lines.push(line);
        }
        if self.lines.len() > 500 {
            self.lines.drain(..self.lines.len() - 200);
        }
    }

    fn last(&mut self, n: usize) -> String {
        self.pump();
        let mut v = self.lines.clone();
        if !self.partial.is_empty() {
            v.push(strip_controls(&self.partial));
        }
        v[v.len().saturating_sub(n)..].join("\n")
    }
}

/// cloud-init's last line of a boot: "Cloud-init v. 22.4.2 finished at …".
fn is_cloud_init_finished(line: &str) -> bool {
    line.contains("Cloud-init v. ") && line.contains(" finished at ")
}

/// Drop terminal escape sequences and control characters from console output.
fn strip_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        if c.is_control() && c != '\t' {
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_escapes_are_stripped() {
        assert_eq!(
            strip_controls("\x1b[0;32m  OK  \x1b[0m] Started\r"),
            "  OK  ] Started"
        );
    }

    #[test]
    fn console_tail_notices_a_panic_and_cloud_init_finishing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        std::fs::write(
            &p,
            "[  OK  ] Started x\n[   84.1] cloud-init[512]: Cloud-init v. 22.4.2 finished at Tue, 01 Dec 2026 07:00:00 +0000. Datasource DataSourceNoCloud.  Up 84.00 seconds\n",
        )
        .unwrap();
        let mut t = ConsoleTail::new(&p);
        t.pump();
        assert!(t.cloud_init_finished.is_some());
        assert!(!t.panicked);
        std::fs::write(
            &p,
            "[ 1.0] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n",
        )
        .unwrap();
        let mut t = ConsoleTail::new(&p);
        t.pump();
        assert!(t.panicked && t.cloud_init_finished.is_none());
    }

    #[test]
    fn console_tail_follows_a_growing_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        std::fs::write(&p, "one\ntw").unwrap();
        let mut t = ConsoleTail::new(&p);
        t.pump();
        assert_eq!(t.lines, ["one"]);
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"o\nthree\n")
            .unwrap();
        assert_eq!(t.last(2), "two\nthree");
    }
}
