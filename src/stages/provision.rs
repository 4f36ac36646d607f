//! Provision stage: boot the base disk (through a qcow2 overlay) in libvirt with a NoCloud seed
//! that runs the recipe's steps, stream the serial console, and wait for the guest to power
//! itself off.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::libvirt::console::{
    rand_bytes, wait_for_poweroff, EmulatorDied, NotStarted, Wedged, CLOUD_INIT_GRACE,
};
use crate::libvirt::domain::KernelBoot;
use crate::pipeline::cached::{self, Lookup};
use crate::pipeline::context::{BuildContext, Resource};
use crate::pipeline::describe::{Describe, Described, PlanView};
use crate::pipeline::{Outcome, Stage};
use crate::process::{self, Opts};
use crate::seed::{self, TemplateContext};
use crate::templates::{self, Kind};

/// Reads `made.base`; sets `made.disk` (the build disk) and `made.domain` (the build VM,
/// recorded for cleanup).
pub struct ProvisionStage;

impl Stage<BuildContext> for ProvisionStage {
    fn name(&self) -> &'static str {
        "provision"
    }

    fn run(&mut self, ctx: &mut BuildContext) -> anyhow::Result<()> {
        let base = ctx.made.base.clone().context("no base disk")?;
        // The stage cache: the same base and the same seed make the same disk.
        let prev = ctx.cache.chain.clone();
        let key = match &prev {
            Some(prev) => Some(crate::stagecache::provision_key(
                &ctx.env.plan,
                &ctx.env.tunables,
                &prev.key,
            )?),
            None => None,
        };
        let usable = |ctx: &BuildContext, e: &crate::stagecache::Entry| !expired(ctx, e);
        let found =
            ctx.cache_lookup::<cached::Files>(cached::PROVISION, key, prev.as_ref(), &usable)?;
        let slot = match found {
            Lookup::Hit(e, _) => return top_overlay(ctx, &e.file("disk.qcow2")),
            Lookup::Miss(slot) => slot,
        };
        ctx.cache.chain = None;
        provision(ctx, &base)?;
        let Some(slot) = slot else {
            return Ok(());
        };
        // Made another way than the settings ask (the host could not resolve the packages, the
        // base cannot boot directly): its key would name a way it was not made, so it is not
        // stored, and what follows is not cached either.
        let intended = crate::stagecache::intended_path(&ctx.env.plan, &ctx.env.tunables);
        if ctx.made.provision_path != Some(intended) {
            tracing::warn!(
                "stage provision: the steps ran another way ({:?}) than the settings ask ({intended:?}): this result is not cached",
                ctx.made.provision_path
            );
            return Ok(());
        }
        // Commit: the overlay goes into the store (backed by the base itself, not the VM's
        // link to it), and the next stage writes into a fresh overlay on top of it.
        let disk = ctx.made.disk.clone().context("no build disk")?;
        process::run(
            &crate::qemu_img::rebase_unsafe_argv(&disk, &base.path, &base.format),
            &Opts::default(),
            &ctx.env.cancel,
        )
        .context("pointing the build disk at the cached base")?;
        let files = [(disk.clone(), "disk.qcow2")];
        if let Some(entry) = ctx.cache_commit(slot, &files, &cached::Files {}) {
            ctx.forget(&Resource::File(disk));
            top_overlay(ctx, &entry.file("disk.qcow2"))?;
        }
        Ok(())
    }

    fn cleanup(&mut self, ctx: &mut BuildContext, outcome: Outcome) -> anyhow::Result<()> {
        ctx.release(self.name(), outcome)
    }
}

/// Is a provisioned disk too old to reuse (`cache.max_age`, `--refresh`)? Its steps may have
/// installed packages from a mirror that has newer ones now. An expired entry is removed with
/// everything built on it (their keys would name the new disk's results).
fn expired(ctx: &BuildContext, e: &crate::stagecache::Entry) -> bool {
    let age = e.age_secs();
    let Some(why) = expiry(
        !ctx.env.plan.provision.is_empty(),
        ctx.env.refresh,
        ctx.env.plan.cache_max_age_secs,
        age,
    ) else {
        return false;
    };
    tracing::info!(
        "stage provision: cache entry {} is {} s old, {why}: provisioning again",
        e.meta.key.short(),
        age
    );
    if let Some(store) = &ctx.cache.store {
        if let Err(err) = store.remove(&e.meta.key) {
            tracing::warn!(
                "removing the expired cache entry {}: {err}",
                e.meta.key.short()
            );
        }
    }
    true
}

/// Why a provisioned disk `age` seconds old is not reused, if it is not: only a recipe with
/// steps provisions (no steps, nothing from a mirror to go stale); `--refresh` always;
/// `cache.max_age` once the entry is older than it. After this decision both take the same
/// path (the e2e stage-cache test's `--refresh` step).
fn expiry(has_steps: bool, refresh: bool, max_age: Option<u64>, age: u64) -> Option<String> {
    match (has_steps, refresh, max_age) {
        (false, _, _) => None,
        (true, true, _) => Some("--refresh".into()),
        (true, false, Some(max)) if age > max => {
            Some(format!("older than cache.max_age ({max} s)"))
        }
        _ => None,
    }
}

/// A new empty overlay over `below` (a cached disk) for the next stage to write into.
fn top_overlay(ctx: &mut BuildContext, below: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(&ctx.env.work)?;
    let disk = ctx.env.work.join("top.qcow2");
    let _ = std::fs::remove_file(&disk);
    ctx.record(Resource::File(disk.clone()));
    process::run(
        &crate::qemu_img::create_overlay_argv(below, "qcow2", &disk, None),
        &Opts::default(),
        &ctx.env.cancel,
    )
    .context("creating an overlay over the cached disk")?;
    ctx.made.disk = Some(disk);
    Ok(())
}

/// Boot the VM on an overlay of `base` and run the steps (no boot without steps).
fn provision(
    ctx: &mut BuildContext,
    base: &crate::pipeline::context::BaseDisk,
) -> anyhow::Result<()> {
    let engine = ctx.engine()?;
    std::fs::create_dir_all(&ctx.env.work)?;
    let overlay = build_overlay(ctx, base)?;
    // Nothing to run in the guest: booting it would only wait for cloud-init to power it
    // off again. The cloud-init stage still checks the image.
    if ctx.env.plan.provision.is_empty() {
        tracing::info!("no provisioning steps: the build VM is not booted");
        ctx.made.provision_path = Some(crate::vocab::ProvisionPath {
            packages: crate::vocab::PackagePath::None,
            boot: crate::vocab::BootPath::None,
        });
        return Ok(());
    }
    // A base that cannot run the steps is refused before its boot, not after vm.timeout.
    if ctx.env.plan.source.made_elsewhere() {
        check_cloud_init(
            &base.path,
            &base.format,
            engine.is_tcg(),
            &ctx.env.cache_dir,
        )?;
    }
    let (domain, console) = seed_and_domain(ctx, base, &overlay, engine)?;
    let watched = boot_until_poweroff(ctx, &domain, &console, &overlay)?;
    if let Some(line) = &watched.marked[0] {
        bail!(
            "a provisioning step failed ({}); console tail:\n{}",
            line.trim(),
            watched.tail
        );
    }
    if watched.marked[1].is_none() {
        tracing::warn!("the console shows no provisioning result; the guest's status file decides");
    }
    Ok(())
}

/// The build disk: an overlay of the base (which stays untouched), grown to `vm.disk`.
struct Overlay {
    disk: std::path::PathBuf,
    /// The base as the VM reaches it.
    backing: std::path::PathBuf,
    /// How it was made (again, for a restart on a fresh disk).
    argv: Vec<String>,
}

fn build_overlay(
    ctx: &mut BuildContext,
    base: &crate::pipeline::context::BaseDisk,
) -> anyhow::Result<Overlay> {
    // The overlay: the cached base stays untouched.
    let disk = ctx.env.work.join("disk.qcow2");
    let size = ctx
        .env
        .plan
        .vm
        .disk_bytes
        .filter(|s| *s > base.virtual_size);
    if let Some(s) = ctx.env.plan.vm.disk_bytes {
        if s < base.virtual_size {
            tracing::warn!(
                "vm.disk ({}) is smaller than the base disk ({}); keeping the base size",
                crate::progress::human_bytes(s),
                crate::progress::human_bytes(base.virtual_size)
            );
        }
    }
    // The VM's own user must read the base through the overlay: a hard link in its
    // directory (the cache may be under root's home, which it cannot enter).
    let backing = if ctx.env.vm_user.is_other() {
        let b = crate::libvirt::vmuser::reachable(&base.path, &ctx.env.work, ctx.env.vm_user)
            .with_context(|| format!("giving the build VM access to {}", base.path.display()))?;
        ctx.record(Resource::File(b.clone()));
        b
    } else {
        base.path.clone()
    };
    ctx.record(Resource::File(disk.clone()));
    let overlay_argv = crate::qemu_img::create_overlay_argv(&backing, &base.format, &disk, size);
    process::run(&overlay_argv, &Opts::default(), &ctx.env.cancel)
        .context("creating the build disk overlay")?;
    ctx.made.disk = Some(disk.clone());

    Ok(Overlay {
        disk,
        backing,
        argv: overlay_argv,
    })
}

/// The NoCloud seed (with the host-resolved packages and, for a direct boot, the boot script)
/// and the domain, defined and recorded: its name and its console.
fn seed_and_domain(
    ctx: &mut BuildContext,
    base: &crate::pipeline::context::BaseDisk,
    overlay: &Overlay,
    engine: crate::vocab::Engine,
) -> anyhow::Result<(String, std::path::PathBuf)> {
    let backing = &overlay.backing;
    // Seed and domain from the templates.
    let domain = format!(
        "kiln-{}-{}",
        ctx.env.plan.name,
        &hex::encode(rand_bytes())[..8]
    );
    let mut tctx = TemplateContext::new(&ctx.env.plan, &domain, engine, &ctx.env.work);
    tctx.domain.back_system_disk(backing, &base.format);
    // The host reader's view of the base (ext4 disks): what apt and the boot need from it.
    let view = match crate::inspect::open_host(
        &crate::imagefile::standalone(&base.path, &base.format, base.virtual_size),
        crate::inspect::Reach::Root,
    ) {
        Ok((v, _)) => Some(v),
        Err(e) => {
            tracing::info!("the host reader cannot read the base ({e}): packages are installed and the VM is booted the usual way");
            None
        }
    };
    let local = host_packages(ctx, view.as_ref())?;
    let (package_steps, _) = seed::leading_packages(&ctx.env.plan.provision);
    let packages = match (package_steps, local.is_some()) {
        (0, _) => crate::vocab::PackagePath::None,
        (_, true) => crate::vocab::PackagePath::Host,
        (_, false) => crate::vocab::PackagePath::Guest,
    };
    ctx.made.provision_path = Some(crate::vocab::ProvisionPath {
        packages,
        boot: crate::vocab::BootPath::Firmware,
    });
    let debs = local.as_ref().map(|(l, dir)| {
        tctx.seed.install_locally(&ctx.env.plan, l);
        dir.clone()
    });
    let mut seed_files = Vec::new();
    if let Some(boot) = direct_boot(ctx, view.as_ref())? {
        if let Some(p) = &mut ctx.made.provision_path {
            p.boot = crate::vocab::BootPath::Direct;
        }
        // The kernel command line runs these from the seed; user-data stays for a domain
        // template that boots through GRUB after all.
        let script =
            seed::provision_script(&ctx.env.plan.provision, local.as_ref().map(|(l, _)| l));
        for (name, text) in [
            ("provision.sh", script.as_str()),
            (
                crate::directboot::BOOT_SCRIPT_NAME,
                crate::directboot::BOOT_SCRIPT,
            ),
        ] {
            let p = ctx.env.work.join(name);
            ctx.record(Resource::File(p.clone()));
            crate::hostfile::write_private(&p, text.as_bytes())?;
            seed_files.push(p);
        }
        tctx.domain.kernel = Some(KernelBoot {
            kernel: boot.0,
            initrd: boot.1,
            cmdline: boot.2,
        });
    }
    drop(view);
    for kind in [Kind::UserData, Kind::MetaData, Kind::NetworkConfig] {
        let text = templates::render(&ctx.env.plan, kind, &tctx)?;
        if kind == Kind::NetworkConfig && templates::is_blank(&text) {
            continue;
        }
        let p = ctx.env.work.join(kind.file_name());
        // user-data carries the provisioning script and any password hash.
        crate::hostfile::write_private(&p, text.as_bytes())?;
        seed_files.push(p);
    }
    let seed_iso = tctx
        .domain
        .seed_path()
        .context("the build VM has no seed")?
        .to_path_buf();
    ctx.record(Resource::File(seed_iso.clone()));
    process::run(
        &seed::xorriso_argv(&seed_iso, &seed_files, debs.as_deref()),
        &Opts::default(),
        &ctx.env.cancel,
    )
    .context("building the NoCloud seed")?;
    // user-data carries the provisioning script (and any password hash): only the ISO
    // needs it now (and the .debs are in it too).
    for f in &seed_files {
        std::fs::remove_file(f).ok();
    }
    if debs.is_some() {
        std::fs::remove_dir_all(ctx.env.work.join("apt")).ok();
    }
    // Whatever the template, the domain says who made it (for `kiln gc`).
    let xml = crate::owner::with_owner(
        &templates::render(&ctx.env.plan, Kind::Domain, &tctx)?,
        &crate::owner::Owner::current(),
    );
    std::fs::write(ctx.env.work.join("domain.xml"), &xml)?;
    let console = tctx
        .domain
        .console_log
        .clone()
        .context("the build VM has no console")?;

    let uri = ctx.env.plan.vm.uri.clone();
    let lv = ctx.libvirt()?;
    lv.define(&domain, &xml)?;
    ctx.record(Resource::Domain {
        uri,
        name: domain.clone(),
    });
    ctx.made.domain = Some(domain.clone());
    Ok((domain, console))
}

/// Start the build VM and follow its console until it powers off; a first boot that ends
/// before the steps began gets one new boot on a fresh overlay.
fn boot_until_poweroff(
    ctx: &mut BuildContext,
    domain: &str,
    console: &std::path::Path,
    overlay: &Overlay,
) -> anyhow::Result<crate::libvirt::console::Watched> {
    let engine = ctx.engine()?;
    let (disk, overlay_argv) = (&overlay.disk, &overlay.argv);
    let lv = ctx.libvirt.as_ref().expect("connected");
    let boot_timeout = Duration::from_secs(ctx.env.plan.vm.boot_timeout_secs);
    let mut restarted = false;
    let watched = loop {
        lv.start(domain)?;
        tracing::info!(
            "started domain {domain} ({}, {} MiB, {} vCPU); console: {}",
            engine.as_str(),
            ctx.env.plan.vm.memory_mib,
            ctx.env.plan.vm.vcpus,
            console.display()
        );
        let result = wait_for_poweroff(
            lv,
            domain,
            console,
            ctx.env.plan.vm.timeout_secs,
            Some(CLOUD_INIT_GRACE),
            &[seed::FAILED_MARKER, seed::DONE_MARKER],
            Some((seed::STARTED_MARKER, Some(boot_timeout))),
            // Under TCG a wedged guest is told by its idle CPU long before vm.boot_timeout.
            (engine == crate::vocab::Engine::Tcg).then(crate::stall::booting_guest),
            &ctx.env.cancel,
        );
        // Keep the console in the output whatever happened.
        std::fs::create_dir_all(&ctx.env.out)?;
        std::fs::copy(console, ctx.env.out.join("console.log")).ok();
        match result {
            // A boot that hung before the steps changed nothing worth keeping: the same
            // guest again on a fresh overlay, once (the serial log starts over with it).
            Err(e) if !restarted && before_the_steps(&e) => {
                restarted = true;
                let first = ctx.env.out.join("console-first-boot.log");
                std::fs::rename(ctx.env.out.join("console.log"), &first).ok();
                let why = if e.is::<NotStarted>() {
                    format!(
                        "the guest did not start the steps within {} s (vm.boot_timeout)",
                        boot_timeout.as_secs()
                    )
                } else if let Some(w) = e.downcast_ref::<Wedged>() {
                    w.headline()
                } else {
                    e.downcast_ref::<EmulatorDied>()
                        .map(EmulatorDied::headline)
                        .unwrap_or_default()
                };
                tracing::warn!(
                    "{why}: restarting it once on a fresh disk; the first boot's console is in {}",
                    first.display()
                );
                lv.destroy(domain)?;
                std::fs::remove_file(disk)?;
                process::run(overlay_argv, &Opts::default(), &ctx.env.cancel)
                    .context("creating the build disk overlay again")?;
            }
            Err(e) if before_the_steps(&e) => {
                return Err(e.context("the build VM failed before its steps twice"));
            }
            r => break r?,
        }
    };
    Ok(watched)
}

/// A first boot that ended before the steps began, for a reason a new boot may not share: it
/// hung (no steps by vm.boot_timeout) or qemu died under it.
fn before_the_steps(e: &anyhow::Error) -> bool {
    e.is::<NotStarted>()
        || e.is::<Wedged>()
        || e.downcast_ref::<EmulatorDied>().is_some_and(|d| !d.started)
}

/// The leading package steps resolved and downloaded on the host against the base's own apt
/// state (`aptsandbox`), and the directory of .debs for the seed; None when the guest installs
/// them itself: no such steps, `KILN_HOST_PACKAGES=0`, a base the host reader cannot read or
/// without apt, or sources the host cannot update from. Packages apt cannot resolve fail here,
/// before the VM boots.
fn host_packages(
    ctx: &mut BuildContext,
    view: Option<&crate::inspect::HostView>,
) -> anyhow::Result<Option<(seed::LocalInstall, std::path::PathBuf)>> {
    use crate::aptsandbox::{self, AptError};
    let (steps, packages) = seed::leading_packages(&ctx.env.plan.provision);
    if steps == 0 {
        return Ok(None);
    }
    if !ctx.env.tunables.host_packages {
        tracing::info!("KILN_HOST_PACKAGES=0: the guest installs the packages itself");
        return Ok(None);
    }
    let started = std::time::Instant::now();
    let dir = ctx.env.work.join("apt");
    let _ = std::fs::remove_dir_all(&dir);
    ctx.record(Resource::Dir(dir.clone()));
    let Some(view) = view else {
        return Ok(None);
    };
    let guest = aptsandbox::read_guest(view, &dir);
    let resolved = guest.and_then(|g| aptsandbox::resolve(&g, &dir, &packages, &ctx.env.cancel));
    let r = match resolved {
        Ok(r) => r,
        Err(AptError::Update(crate::process::CommandError::Cancelled { command }))
        | Err(AptError::Resolve(crate::process::CommandError::Cancelled { command })) => {
            bail!("`{command}` was interrupted")
        }
        Err(e @ (AptError::Unsupported(_) | AptError::Update(_))) => {
            tracing::info!("packages are installed in the guest: {e}");
            let _ = std::fs::remove_dir_all(&dir);
            return Ok(None);
        }
        Err(e) => return Err(e).context("resolving the recipe's packages on the host"),
    };
    // Plain names on the seed: apt reads the package from the file, not from its name.
    let seed_debs = dir.join(seed::SEED_DEBS);
    std::fs::create_dir_all(&seed_debs)?;
    let mut bytes = 0;
    for (i, d) in r.debs.iter().enumerate() {
        bytes += std::fs::metadata(d).map(|m| m.len()).unwrap_or(0);
        std::fs::rename(d, seed_debs.join(format!("{:04}.deb", i + 1)))
            .with_context(|| format!("moving {}", d.display()))?;
    }
    tracing::info!(
        "packages resolved on the host against the base's apt state: {} .deb files ({}) for the seed, {} new dependencies, in {:.1} s",
        r.debs.len(),
        crate::progress::human_bytes(bytes),
        r.auto.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(Some((
        seed::LocalInstall {
            steps,
            auto: r.auto,
            manual: r.manual,
        },
        seed_debs,
    )))
}

/// The base's kernel and initrd copied next to the overlay and the command line that boots
/// them straight into the steps (`directboot`); None (a boot through the firmware, GRUB and
/// cloud-init) when the base does not allow it or with `KILN_DIRECT_BOOT=0`.
fn direct_boot(
    ctx: &mut BuildContext,
    view: Option<&crate::inspect::HostView>,
) -> anyhow::Result<Option<(std::path::PathBuf, Option<std::path::PathBuf>, String)>> {
    let Some(view) = view else {
        return Ok(None);
    };
    if !ctx.env.tunables.direct_boot {
        tracing::info!("KILN_DIRECT_BOOT=0: the build VM boots through GRUB and cloud-init");
        return Ok(None);
    }
    let serial = ctx.env.plan.vm.arch.serial_console();
    let found = crate::directboot::find(view).and_then(|f| {
        let c = crate::directboot::cmdline(&f.entry.args, serial)?;
        Ok((f.entry, f.kernel, f.initrd, c))
    });
    let (entry, kernel, initrd, cmdline) = match found {
        Ok(f) => f,
        Err(why) => {
            tracing::info!("the build VM boots through GRUB and cloud-init: {why}");
            return Ok(None);
        }
    };
    let k = ctx.env.work.join("vmlinuz");
    ctx.record(Resource::File(k.clone()));
    std::fs::write(&k, kernel).with_context(|| format!("writing {}", k.display()))?;
    let i = match initrd {
        Some(b) => {
            let p = ctx.env.work.join("initrd.img");
            ctx.record(Resource::File(p.clone()));
            std::fs::write(&p, b).with_context(|| format!("writing {}", p.display()))?;
            Some(p)
        }
        None => None,
    };
    tracing::info!(
        "direct kernel boot: {} from the base, cloud-init disabled for this boot, the steps started by systemd.run",
        entry.kernel
    );
    Ok(Some((k, i, cmdline)))
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

impl Describe for ProvisionStage {
    fn describe(&self, v: &PlanView) -> Option<Described> {
        let plan = v.plan;
        let (base, base_format) = v.base();
        let mut cmds = Vec::new();
        // As the stage does: the VM's own user reaches the base through a link in its directory.
        let link = crate::libvirt::vmuser::VmUser::for_uri(&plan.vm.uri)
            .is_other()
            .then(|| crate::libvirt::vmuser::linked_path(&base, &v.work))
            .flatten();
        if let Some(l) = &link {
            cmds.push(format!(
                "hard-link {} to {} (a copy on another filesystem) for the build VM's user",
                base.display(),
                l.display()
            ));
        }
        let backing = link.unwrap_or_else(|| base.clone());
        cmds.push(format!(
            "{}  (size: the larger of vm.disk and the base's)",
            process::display(&crate::qemu_img::create_overlay_argv(
                &backing,
                base_format.as_deref().unwrap_or("<probed>"),
                &v.disk(),
                plan.vm.disk_bytes,
            ))
        ));
        if !v.booted() {
            cmds.push("no provisioning steps: the build VM is not booted".into());
        } else {
            if plan.source.made_elsewhere() {
                cmds.push(format!(
                    "libguestfs (read-only) on {}: check for /usr/bin/cloud-init before booting (cached per image)",
                    base.display()
                ));
            }
            let tctx = TemplateContext::new(
                plan,
                "kiln-NAME-XXXXXXXX",
                crate::vocab::Engine::Tcg,
                &v.work,
            );
            let mut seed = vec![v.work.join("user-data"), v.work.join("meta-data")];
            if templates::render(plan, Kind::NetworkConfig, &tctx)
                .map(|t| !templates::is_blank(&t))
                .unwrap_or(false)
            {
                seed.push(v.work.join("network-config"));
            }
            let (steps, packages) = seed::leading_packages(&plan.provision);
            let mut debs = None;
            if steps > 0 {
                let sb = v.work.join("apt");
                cmds.push(format!(
                    "host apt in the sandbox {} (the base's dpkg status, sources, keys, pins; APT_CONFIG {}): {}; {}  (the .debs go on the seed; without an apt base readable on the host, or KILN_HOST_PACKAGES=0: apt-get update and install in the guest)",
                    sb.display(),
                    sb.join("apt.conf").display(),
                    process::display(&crate::aptsandbox::update_argv()),
                    process::display(&crate::aptsandbox::download_argv(&packages)),
                ));
                debs = Some(sb.join(seed::SEED_DEBS));
            }
            cmds.push(format!(
                "direct kernel boot when the base allows it (ext4, dpkg, systemd >= 240, a GRUB entry; not with KILN_DIRECT_BOOT=0): copy its kernel and initrd to {} and {}, then the seed carries provision.sh and boot.sh too; boot them with the GRUB entry's arguments + `{}`",
                v.work.join("vmlinuz").display(),
                v.work.join("initrd.img").display(),
                crate::directboot::cmdline(&[], plan.vm.arch.serial_console()).unwrap_or_default()
            ));
            seed.push(v.work.join("provision.sh"));
            seed.push(v.work.join(crate::directboot::BOOT_SCRIPT_NAME));
            cmds.push(process::display(&seed::xorriso_argv(
                tctx.domain.seed_path().unwrap_or(&v.work),
                &seed,
                debs.as_deref(),
            )));
            cmds.push(format!(
                "libvirt {}: define domain.xml, start, wait for power-off (timeout {} s; ends early on a kernel panic, or {} s after the steps ended, or after cloud-init finished without starting them; a guest that has not started the steps {} s after its start is restarted once on a fresh overlay)",
                plan.vm.uri,
                plan.vm.timeout_secs,
                CLOUD_INIT_GRACE.as_secs(),
                plan.vm.boot_timeout_secs
            ));
        }
        Some(Described {
            inputs: serde_json::json!({ "vm": plan.vm, "steps": plan.provision }),
            commands: cmds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::expiry;

    #[test]
    fn a_provisioned_disk_expires_on_refresh_or_past_max_age_only() {
        let day = 86_400;
        for (has_steps, refresh, max_age, age, want) in [
            (true, false, None, 10 * day, None),
            (true, false, Some(7 * day), 7 * day, None),
            (
                true,
                false,
                Some(7 * day),
                7 * day + 1,
                Some("older than cache.max_age (604800 s)"),
            ),
            (true, true, None, 0, Some("--refresh")),
            (true, true, Some(7 * day), 8 * day, Some("--refresh")),
            (false, true, Some(1), 8 * day, None),
        ] {
            assert_eq!(
                expiry(has_steps, refresh, max_age, age).as_deref(),
                want,
                "{has_steps} {refresh} {max_age:?} {age}"
            );
        }
    }
}
