//! Install stage (installer sources only): an unattended install in a libvirt VM that boots the
//! installer's kernel and initrd directly, with the answer file injected into the initrd or on
//! a labelled seed disk; waits for the installer to power the VM off, then detaches the media.
//! The installed disk becomes the base disk for provision, like a cloud image.

use anyhow::{bail, Context as _};

use crate::installer::{self, CpioFile};
use crate::libvirt::console::EmulatorDied;
use crate::libvirt::domain::{Disk, DomainSpec, KernelBoot};
use crate::pipeline::cached::{self, Lookup};
use crate::pipeline::context::{BaseDisk, BuildContext, Resource};
use crate::pipeline::describe::{Describe, Described, PlanView};
use crate::pipeline::{Outcome, Stage};
use crate::plan::{InstallerPlan, Media, SourcePlan};
use crate::process::{self, Opts};
use crate::recipe::model::{AnswerKind, Delivery};

/// Reads `made.install_media`; sets `made.base` (the installed disk).
pub struct InstallStage;

impl Stage<BuildContext> for InstallStage {
    fn name(&self) -> &'static str {
        "install"
    }

    fn run(&mut self, ctx: &mut BuildContext) -> anyhow::Result<()> {
        let SourcePlan::Installer(inst) = ctx.env.plan.source.clone() else {
            return Ok(());
        };
        let inst: InstallerPlan = *inst;
        let media = ctx
            .made
            .install_media
            .clone()
            .context("no installer media")?;
        // The stage cache: the same media and answers install the same system.
        let files: Vec<&std::path::Path> = [&media.iso, &media.kernel, &media.initrd]
            .into_iter()
            .flatten()
            .map(|p| p.as_path())
            .collect();
        let key = crate::stagecache::install_key(&ctx.env.plan, &files, &ctx.env.cache_dir)
            .map_err(|e| {
                anyhow::anyhow!("identifying the installer media for the stage cache: {e}")
            })?;
        let slot =
            match ctx.cache_lookup::<cached::Files>(cached::INSTALL, key, None, &|_, _| true)? {
                Lookup::Hit(e, _) => {
                    let disk = e.file("disk.qcow2");
                    let info = crate::qemu_img::info(&disk, &ctx.env.cancel)?;
                    ctx.made.base = Some(BaseDisk {
                        path: disk,
                        format: "qcow2".into(),
                        virtual_size: info.virtual_size,
                    });
                    return Ok(());
                }
                Lookup::Miss(slot) => slot,
            };
        install(ctx, &inst, &media)?;
        if let Some(slot) = slot {
            let base = ctx.made.base.clone().context("no installed disk")?;
            let files = [(base.path.clone(), "disk.qcow2")];
            if let Some(entry) = ctx.cache_commit(slot, &files, &cached::Files {}) {
                ctx.forget(&Resource::File(base.path.clone()));
                ctx.made.base = Some(BaseDisk {
                    path: entry.file("disk.qcow2"),
                    ..base
                });
            }
        }
        Ok(())
    }

    fn cleanup(&mut self, ctx: &mut BuildContext, outcome: Outcome) -> anyhow::Result<()> {
        ctx.release(self.name(), outcome)
    }
}

/// Boot the installer on an empty disk with the answer file; the installed disk becomes the
/// base (`ctx.made.base`).
fn install(
    ctx: &mut BuildContext,
    inst: &InstallerPlan,
    media: &crate::pipeline::context::InstallMedia,
) -> anyhow::Result<()> {
    {
        check_mirror(inst)?;
        let engine = ctx.engine()?;
        let tcg = engine.is_tcg();
        let dir = ctx.env.work.join("install");
        crate::libvirt::vmuser::make_vm_subdir(&dir, ctx.env.vm_user)?;
        ctx.record(Resource::Dir(dir.clone()));

        let (kernel, initrd) = kernel_and_initrd(ctx, inst, media, &dir)?;
        // What the VM's own user opens must be where it can reach it.
        let vm = |p: &std::path::Path| -> anyhow::Result<std::path::PathBuf> {
            if ctx.env.vm_user.is_other() {
                crate::libvirt::vmuser::reachable(p, &dir, ctx.env.vm_user)
                    .with_context(|| format!("giving the installer VM access to {}", p.display()))
            } else {
                Ok(p.to_path_buf())
            }
        };
        let kernel = vm(&kernel)?;
        let iso_for_vm = media.iso.as_deref().map(vm).transpose()?;

        let (initrd, seed_path) = deliver_answers(ctx, inst, &dir, initrd)?;
        let initrd = vm(&initrd)?;

        // The target disk.
        let disk = ctx.env.work.join("install.qcow2");
        let size = ctx.env.plan.vm.disk_bytes.unwrap_or(8 << 30);
        ctx.record(Resource::File(disk.clone()));
        process::run(
            &crate::qemu_img::create_argv(&disk, size),
            &Opts::default(),
            &ctx.env.cancel,
        )
        .context("creating the install disk")?;

        let name = format!(
            "kiln-install-{}-{}",
            ctx.env.plan.name,
            &hex::encode(crate::libvirt::console::rand_bytes())[..8]
        );
        let console = dir.join("console.log");
        let mut d = DomainSpec::install_vm(
            &name,
            crate::seed::machine(&ctx.env.plan, engine),
            ctx.env.vm_user,
            KernelBoot {
                kernel,
                initrd: Some(initrd),
                cmdline: inst.cmdline.clone(),
            },
            &disk,
            &console,
        );
        d.label = Some(ctx.env.plan.slug());
        d.disks.extend(seed_path.as_deref().map(Disk::seed));
        d.disks.extend(iso_for_vm.as_deref().map(Disk::cdrom));
        let xml = crate::owner::with_owner(
            &d.xml(&ctx.env.plan.name, &ctx.env.plan.version)?,
            &crate::owner::Owner::current(),
        );
        std::fs::write(dir.join("domain.xml"), &xml)?;
        let uri = ctx.env.plan.vm.uri.clone();
        let lv = ctx.libvirt()?;
        lv.define(&name, &xml)?;
        ctx.record(Resource::Domain {
            uri: uri.clone(),
            name: name.clone(),
        });
        let t = std::time::Instant::now();
        run_installer(ctx, inst, &d, &disk, size)?;
        verify_installed(&disk, &console, tcg)?;
        tracing::info!(
            "the installer powered the VM off after {:.0} s",
            t.elapsed().as_secs_f64()
        );
        // Detach the media: the install domain goes; the disk stays as the base.
        let lv = ctx.libvirt.as_ref().expect("connected");
        lv.destroy_and_undefine(&name)?;
        ctx.forget(&Resource::Domain { uri, name });
        // The initrd and seed carry the password hash: gone as soon as they are not needed.
        for f in ["initrd.img", "answers.iso"] {
            std::fs::remove_file(dir.join(f)).ok();
        }
        std::fs::remove_dir_all(dir.join("seed")).ok();
        let info = crate::qemu_img::info(&disk, &ctx.env.cancel)?;
        ctx.made.base = Some(BaseDisk {
            path: disk,
            format: "qcow2".into(),
            virtual_size: info.virtual_size,
        });
        Ok(())
    }
}

/// Preseed: the mirror must serve the installer's udebs, checked before the long boot.
fn check_mirror(inst: &InstallerPlan) -> anyhow::Result<()> {
    if inst.mirror_check && inst.kind == AnswerKind::Preseed {
        if inst.answers.suite.is_empty() {
            tracing::warn!("no `suite`: the installer mirror is not checked");
        } else {
            let n = installer::check_udeb_mirror(&inst.answers.mirror, &inst.answers.suite, 8)
                .context("checking the installer mirror before booting")?;
            tracing::info!(
                "mirror {} serves the {n} udebs sampled",
                inst.answers.mirror
            );
        }
    }
    Ok(())
}

/// The installer's kernel and initrd: out of the ISO (no boot menu involved) or as given.
fn kernel_and_initrd(
    ctx: &BuildContext,
    inst: &InstallerPlan,
    media: &crate::pipeline::context::InstallMedia,
    dir: &std::path::Path,
) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf)> {
    Ok(match (&inst.media, &media.iso) {
        (
            Media::Iso {
                kernel_paths,
                initrd_paths,
                ..
            },
            Some(iso),
        ) => {
            let k = dir.join("vmlinuz");
            let r = dir.join("initrd.orig");
            let kp = installer::extract_first(iso, kernel_paths, &k, &ctx.env.cancel)
                .context("extracting the kernel from the ISO")?;
            let rp = installer::extract_first(iso, initrd_paths, &r, &ctx.env.cancel)
                .context("extracting the initrd from the ISO")?;
            tracing::info!("extracted /{kp} and /{rp} from {}", iso.display());
            (k, r)
        }
        _ => (
            media.kernel.clone().context("no kernel")?,
            media.initrd.clone().context("no initrd")?,
        ),
    })
}

/// The answer file, into the initrd or onto a seed disk: the initrd to boot and the seed.
fn deliver_answers(
    ctx: &BuildContext,
    inst: &InstallerPlan,
    dir: &std::path::Path,
    initrd: std::path::PathBuf,
) -> anyhow::Result<(std::path::PathBuf, Option<std::path::PathBuf>)> {
    let answers = crate::templates::render_answers(&ctx.env.plan)?.context("no answer file")?;
    let mut seed_path = None;
    let initrd = match inst.delivery {
        Delivery::Initrd => {
            let out = dir.join("initrd.img");
            installer::inject(
                &initrd,
                &out,
                &[CpioFile {
                    name: inst.answer_file_name(),
                    mode: 0o600,
                    data: answers.as_bytes(),
                }],
            )
            .with_context(|| format!("injecting the answer file into {}", out.display()))?;
            tracing::info!(
                "{} injected into the initrd ({})",
                inst.answer_file_name(),
                crate::progress::human_bytes(std::fs::metadata(&out)?.len())
            );
            out
        }
        Delivery::Seed => {
            let files_dir = dir.join("seed");
            std::fs::create_dir_all(&files_dir)?;
            let (label, files) = installer::seed_files(inst, &ctx.env.plan.slug(), &answers);
            let mut paths = Vec::new();
            for (name, text) in files {
                let p = files_dir.join(name);
                crate::hostfile::write_private(&p, text.as_bytes())?;
                paths.push(p);
            }
            let iso = dir.join("answers.iso");
            process::run(
                &installer::seed_iso_argv(&iso, label, &paths),
                &Opts::default(),
                &ctx.env.cancel,
            )
            .context("building the answer seed disk")?;
            seed_path = Some(iso);
            initrd
        }
    };

    Ok((initrd, seed_path))
}

/// Start the install domain and wait for the installer to power it off; qemu dying under it
/// gets the same install once more on a new disk.
fn run_installer(
    ctx: &BuildContext,
    inst: &InstallerPlan,
    d: &DomainSpec,
    disk: &std::path::Path,
    size: u64,
) -> anyhow::Result<()> {
    let name = &d.name;
    let console = d
        .console_log
        .clone()
        .context("the install VM has no console")?;
    let lv = ctx.libvirt.as_ref().expect("connected");
    let mut restarted = false;
    loop {
        lv.start(name)?;
        tracing::info!(
            "installing: domain {name} boots {} with `{}` ({}), timeout {} s",
            d.kernel
                .as_ref()
                .map(|k| k.kernel.display().to_string())
                .unwrap_or_default(),
            inst.cmdline,
            d.engine.as_str(),
            inst.timeout_secs
        );
        let waited = crate::libvirt::console::wait_for_poweroff(
            lv,
            name,
            &console,
            inst.timeout_secs,
            // Installers run cloud-init themselves (subiquity) and go on: no grace rule.
            None,
            &[],
            None,
            // An installer waits on its mirror and media: idle is not wedged there.
            None,
            &ctx.env.cancel,
        );
        std::fs::create_dir_all(&ctx.env.out)?;
        std::fs::copy(&console, ctx.env.out.join("install-console.log")).ok();
        match waited {
            // qemu died under the installer: the same install once more on a new disk.
            Err(e) if !restarted && e.is::<EmulatorDied>() => {
                restarted = true;
                let first = ctx.env.out.join("install-console-first-boot.log");
                std::fs::rename(ctx.env.out.join("install-console.log"), &first).ok();
                tracing::warn!(
                    "{}: installing once more on a new disk; the first console is in {}",
                    e.downcast_ref::<EmulatorDied>()
                        .map(EmulatorDied::headline)
                        .unwrap_or_default(),
                    first.display()
                );
                std::fs::remove_file(disk)?;
                process::run(
                    &crate::qemu_img::create_argv(disk, size),
                    &Opts::default(),
                    &ctx.env.cancel,
                )
                .context("creating the install disk again")?;
            }
            r => {
                r.context("installing")?;
                break;
            }
        }
    }
    Ok(())
}

/// A powered-off VM is not proof of an install: the disk must hold data, an operating system,
/// a kernel and a boot loader (an installer that failed or gave up half-way powers off too).
fn verify_installed(
    disk: &std::path::Path,
    console: &std::path::Path,
    tcg: bool,
) -> anyhow::Result<()> {
    // A powered-off VM is not proof of an install: an installer that failed and powered
    // off leaves an (almost) empty disk, which would only time out in provision.
    let written = crate::manifest::allocated(disk);
    if written < 32 << 20 {
        bail!(
            "the installer powered the VM off, but the disk holds only {}: the install failed; console tail:\n{}",
            crate::progress::human_bytes(written),
            crate::libvirt::console::file_tail(console, 30)
        );
    }
    // And the disk must hold an operating system with a kernel to boot (an installer that
    // gave up half-way can power off too).
    let found = crate::guest::Guest::open_readonly(disk, "qcow2", tcg)
        .map_err(anyhow::Error::from)
        .and_then(|g| {
            let kernels = g.glob("/boot/vmlinuz*")?;
            // GRUB (Debian, Ubuntu; grub2 on RHEL), BLS entries, or an EFI system partition.
            let mut loaders = Vec::new();
            for pat in [
                "/boot/grub/grub.cfg",
                "/boot/grub2/grub.cfg",
                "/boot/loader/entries/*.conf",
                "/boot/efi/EFI/*",
            ] {
                loaders.extend(g.glob(pat)?);
            }
            let distro = g.distro.clone();
            g.close()?;
            Ok((distro, kernels, loaders))
        });
    match found {
        Ok((distro, kernels, loaders)) if !kernels.is_empty() && !loaders.is_empty() => {
            tracing::info!(
                "installed: {distro}, kernel {}, boot loader {}",
                kernels.join(", "),
                loaders.join(", ")
            )
        }
        Ok((distro, kernels, _)) if !kernels.is_empty() => bail!(
            "the installer powered the VM off, but the installed {distro} has no boot loader configuration (grub.cfg, BLS entries or an EFI partition): the install failed; console tail:\n{}",
            crate::libvirt::console::file_tail(console, 30)
        ),
        Ok((distro, _, _)) => bail!(
            "the installer powered the VM off, but the installed {distro} has no kernel in /boot: the install failed; console tail:\n{}",
            crate::libvirt::console::file_tail(console, 30)
        ),
        Err(e) => bail!(
            "the installer powered the VM off, but no installed system is on the disk ({e:#}): the install failed; console tail:\n{}",
            crate::libvirt::console::file_tail(console, 30)
        ),
    }
    Ok(())
}

impl Describe for InstallStage {
    fn describe(&self, v: &PlanView) -> Option<Described> {
        let plan = v.plan;
        let SourcePlan::Installer(inst) = &plan.source else {
            return None;
        };
        let dir = v.work.join("install");
        let mut cmds = Vec::new();
        if inst.mirror_check && inst.kind == AnswerKind::Preseed {
            cmds.push(format!(
                "mirror check: GET {} and HEAD 8 of the udebs it names",
                installer::udeb_index_url(&inst.answers.mirror, &inst.answers.suite)
            ));
        }
        let (kernel, initrd) = match &inst.media {
            Media::Iso {
                kernel_paths,
                initrd_paths,
                ..
            } => {
                let iso = std::path::PathBuf::from("<iso>");
                for (paths, to) in [(kernel_paths, "vmlinuz"), (initrd_paths, "initrd.orig")] {
                    cmds.push(format!(
                        "{}  (first of: {})",
                        process::display(&installer::xorriso_extract_argv(
                            &iso,
                            &paths[0],
                            &dir.join(to)
                        )),
                        paths.join(", ")
                    ));
                }
                (dir.join("vmlinuz"), dir.join("initrd.orig"))
            }
            Media::Netboot { .. } => ("<kernel>".into(), "<initrd>".into()),
        };
        match inst.delivery {
            Delivery::Initrd => cmds.push(format!(
                "append /{} (rendered {} answers) to {} as a cpio archive -> {}",
                inst.answer_file_name(),
                inst.kind.as_str(),
                initrd.display(),
                dir.join("initrd.img").display()
            )),
            Delivery::Seed => {
                let (label, files) = installer::seed_files(inst, &plan.slug(), "");
                let paths: Vec<std::path::PathBuf> = files
                    .iter()
                    .map(|(n, _)| dir.join("seed").join(n))
                    .collect();
                cmds.push(format!(
                    "{} answers on a seed disk: {}",
                    inst.kind.as_str(),
                    process::display(&installer::seed_iso_argv(
                        &dir.join("answers.iso"),
                        label,
                        &paths
                    ))
                ))
            }
        }
        cmds.push(process::display(&crate::qemu_img::create_argv(
            &v.base().0,
            plan.vm.disk_bytes.unwrap_or(8 << 30),
        )));
        cmds.push(format!(
            "libvirt: boot {} + initrd with `{}`; wait up to {} s for the installer to power off; undefine (media detached)",
            kernel.display(),
            inst.cmdline,
            inst.timeout_secs
        ));
        Some(Described {
            inputs: serde_json::json!({
                "kind": inst.kind.as_str(), "delivery": inst.delivery,
                "cmdline": inst.cmdline, "timeout_secs": inst.timeout_secs,
                "mirror_check": inst.mirror_check,
            }),
            commands: cmds,
        })
    }
}
