//! Bootstrap sources: a base disk made with mmdebstrap, partitioned, given GRUB with the
//! image's own tools, and cached by its inputs.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

use super::{Kind, Obtained};
use crate::bootstrap;
use crate::pipeline::context::{BuildContext, Resource};
use crate::plan::BootstrapPlan;
use crate::process::{self, Opts};

/// How many fresh appliances GRUB's installation gets (see `install` below).
const GRUB_ATTEMPTS: u32 = 5;

impl Kind for BootstrapPlan {
    fn obtain(&self, ctx: &mut BuildContext) -> anyhow::Result<Obtained> {
        Ok(Obtained::Base {
            path: base_disk(ctx, self)?,
            declared_format: None,
        })
    }

    fn planned(&self, cache: &Path) -> Vec<String> {
        bootstrap::planned(cache, self)
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
    if ctx.pull_base(&crate::stagecache::bootstrap_key(b), &dest)? {
        return Ok(dest);
    }
    if unsafe { libc::geteuid() } != 0 {
        bail!("bootstrapping a base disk needs root (mmdebstrap --mode=root and mkfs.ext4 -d keep file ownership)");
    }
    bootstrap::can_run(b.arch).map_err(anyhow::Error::msg)?;
    let scratch = bootstrap::scratch_dir(&ctx.env.cache_dir, &key, std::process::id());
    ctx.record(Resource::Dir(scratch.clone()));
    std::fs::create_dir_all(&scratch)?;
    crate::owner::Owner::current().write_into(&scratch)?;
    let rootfs = scratch.join("rootfs");
    let customize = scratch.join("customize.sh");
    let uuid = bootstrap::fs_uuid(&key);
    let esp = bootstrap::esp_volume(b);
    std::fs::write(
        &customize,
        bootstrap::customize_script(&uuid, esp.as_deref(), b.arch.serial_console()),
    )?;

    tracing::info!(
        "bootstrapping {} {} for {} with mmdebstrap ({} packages; {})",
        b.distro,
        b.suite,
        b.arch,
        b.packages.len(),
        if b.arch == crate::vocab::Arch::host() {
            "about a minute"
        } else {
            "about 10 minutes: every maintainer script runs through qemu-user-static"
        }
    );
    let opts = Opts {
        env: vec![(
            "SOURCE_DATE_EPOCH".into(),
            bootstrap::SOURCE_DATE_EPOCH.into(),
        )],
        stream_prefix: Some("mmdebstrap| ".into()),
        ..Default::default()
    };
    process::run(
        &bootstrap::mmdebstrap_argv(b, &rootfs, &customize),
        &opts,
        &ctx.env.cancel,
    )
    .context("bootstrapping the root filesystem")?;
    // A disk whose programs the appliance cannot run gets its boot loader from the host.
    let esp_files = if bootstrap::grub_steps(b.layout).is_empty() {
        let epoch = bootstrap::SOURCE_DATE_EPOCH.parse().unwrap_or(0);
        crate::efiboot::prepare(&rootfs, &scratch.join("esp"), b.arch, &uuid, epoch)
            .context("preparing the EFI system partition's boot loader")?
    } else {
        Vec::new()
    };

    let raw = scratch.join("disk.raw");
    std::fs::File::create(&raw)?.set_len(b.size_bytes)?;
    process::run(
        &bootstrap::sfdisk_argv(&raw),
        &Opts {
            stdin: Some(bootstrap::sfdisk_script(b.layout, &key, b.size_bytes).into_bytes()),
            ..Default::default()
        },
        &ctx.env.cancel,
    )
    .context("partitioning the base disk")?;
    tracing::info!("creating the ext4 filesystem from the root directory");
    process::run(
        &bootstrap::mkfs_argv(&raw, &rootfs, &uuid, b.layout, b.size_bytes),
        &Opts {
            env: ["E2FSPROGS_FAKE_TIME", "SOURCE_DATE_EPOCH"]
                .map(|k| (k.into(), bootstrap::SOURCE_DATE_EPOCH.into()))
                .into(),
            ..Default::default()
        },
        &ctx.env.cancel,
    )
    .context("creating the root filesystem")?;
    std::fs::remove_dir_all(&rootfs).ok();
    if let Some(id) = &esp {
        process::run(
            &bootstrap::mkfs_esp_argv(&raw, id),
            &Opts::default(),
            &ctx.env.cancel,
        )
        .context("creating the EFI system partition")?;
    }
    if !esp_files.is_empty() {
        tracing::info!(
            "copying Debian's signed shim and GRUB to the EFI system partition (mtools)"
        );
        let offset = bootstrap::ESP_OFFSET;
        let mut cmds = vec![crate::efiboot::mmd_argv(&raw, offset)];
        cmds.extend(
            esp_files
                .iter()
                .map(|(staged, to)| crate::efiboot::mcopy_argv(&raw, offset, staged, to)),
        );
        for argv in cmds {
            process::run(&argv, &Opts::default(), &ctx.env.cancel)
                .context("filling the EFI system partition")?;
        }
    }

    if esp_files.is_empty() {
        install_grub(ctx, b, &raw)?;
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

/// GRUB installed by the image's own grub-install in one libguestfs launch (retried on one
/// known refusal).
fn install_grub(ctx: &mut BuildContext, b: &BootstrapPlan, raw: &Path) -> anyhow::Result<()> {
    tracing::info!("installing GRUB with the image's own GRUB tools (libguestfs)");
    let tcg = ctx.engine()?.is_tcg();
    // grub-bios-setup now and then refuses the disk ("embedding is not possible, but this is
    // required for cross-disk install") and succeeds in a fresh appliance on the same disk:
    // the steps are idempotent, so they are run again before giving up.
    let install = || -> Result<(), crate::guest::GuestError> {
        let g =
            crate::guest::Guest::open_device(raw, "raw", tcg, bootstrap::grub_mounts(b.layout))?;
        for step in bootstrap::grub_steps(b.layout) {
            match step {
                bootstrap::GrubStep::Write(path, content) => g.write(path, content.as_bytes())?,
                bootstrap::GrubStep::Run(argv) => {
                    g.command(&argv)?;
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
        // Only that refusal is worth another appliance; anything else fails the same way again.
        if attempt == GRUB_ATTEMPTS || !e.to_string().contains("embedding is not possible") {
            return Err(e.into());
        }
        attempt += 1;
        tracing::warn!(
            "installing GRUB failed ({e}); trying again in a new appliance ({attempt} of {GRUB_ATTEMPTS})"
        );
    }
    Ok(())
}
