//! `kiln inspect IMAGE`: what an image holds (`inspect::read` in one read-only appliance
//! launch), as text or JSON, with the warnings a golden image should not earn.

use std::path::PathBuf;

use super::*;
use crate::inspect::{MachineId, Report};
use crate::progress::human_bytes as h;

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// An image file in any format qemu reads (qcow2, raw, vmdk, vdi, vhdx, …).
    pub image: PathBuf,
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
    /// Exit 1 when there are warnings (a baked-in machine-id or host keys, an fstab entry for
    /// a missing filesystem, an empty password, cloud-init state of an earlier instance).
    #[arg(long)]
    pub strict: bool,
    /// Accelerator for the libguestfs appliance.
    #[arg(long, value_enum, default_value_t = crate::vocab::Accel::Auto)]
    pub accel: crate::vocab::Accel,
    /// Always read through libguestfs's appliance, not kiln's host reader.
    #[arg(long)]
    pub libguestfs: bool,
    /// A backing file the image may have (repeat for a chain): kiln follows no backing file
    /// it was not named, as a crafted image can name any file on the host.
    #[arg(long, value_name = "FILE")]
    pub backing: Vec<PathBuf>,
}

pub(super) fn inspect_cmd(a: InspectArgs) -> i32 {
    if !a.image.is_file() {
        return usage_error(format!("image {} does not exist", a.image.display()));
    }
    let cancel = cancel_on_signals();
    let checked = match crate::imagefile::check(&a.image, None, &a.backing, &cancel) {
        Ok(i) => i,
        Err(e) => {
            return usage_error(format!(
                "cannot read {}: {e}",
                safe(&a.image.display().to_string())
            ))
        }
    };
    let (size, allocated) = crate::convert::file_sizes(&a.image).unwrap_or((0, 0));
    // The host reader first (raw or qcow2 with ext4: no appliance, a fraction of a second);
    // anything it does not handle goes to libguestfs.
    let host = if a.libguestfs || !["raw", "qcow2"].contains(&checked.format.as_str()) {
        Err(crate::inspect::HostError::Fallback("not tried".into()))
    } else {
        crate::inspect::read_host(&checked)
    };
    let (r, reader) = match host {
        Ok(r) => (r, "host (ext4-view)"),
        Err(crate::inspect::HostError::Corrupt(why)) => {
            return usage_error(format!(
                "cannot read {}: {}",
                safe(&a.image.display().to_string()),
                safe(&why)
            ))
        }
        Err(why) => {
            tracing::debug!("host reader: {why}; using libguestfs");
            let tcg = crate::libvirt::probe::tcg_for_tools(
                a.accel,
                &super::tunables().cache_dir,
                crate::plan::DEFAULT_URI,
                &cancel,
            );
            let mut g = match crate::guest::Guest::open_readonly(&a.image, &checked.format, tcg) {
                Ok(g) => g,
                Err(e) => {
                    errln!("error: {e}");
                    return exit::BUILD_FAILED;
                }
            };
            g.kill_on_cancel(&cancel);
            let r = crate::inspect::read(&g);
            let _ = g.close();
            if cancel.is_cancelled() {
                return exit::INTERRUPTED;
            }
            (r, "libguestfs")
        }
    };
    match a.format {
        PlanFormat::Json => {
            let mut v = serde_json::to_value(&r).expect("JSON");
            v["image"] = serde_json::json!({
                "path": a.image,
                "format": checked.format,
                "virtual_size": checked.virtual_size,
                "size": size,
                "allocated_size": allocated,
            });
            v["reader"] = serde_json::json!(reader);
            outln!("{}", serde_json::to_string_pretty(&v).expect("JSON"));
        }
        PlanFormat::Text => {
            outln!(
                "image:       {} ({}, {} virtual, {} allocated)",
                a.image.display(),
                checked.format,
                h(checked.virtual_size),
                h(allocated)
            );
            outln!("read by:     {reader}");
            print_text(&r);
        }
    }
    if a.strict && !r.warnings.is_empty() {
        exit::BUILD_FAILED
    } else {
        exit::OK
    }
}

/// The disk half of the report: OS, kernels, boot, partitions, filesystems, fstab.
fn print_disk(r: &Report) {
    let os =
        r.os.get("PRETTY_NAME")
            .or(r.os.get("NAME"))
            .map(|s| safe(s).into_owned())
            .unwrap_or_else(|| "unknown (no os-release)".into());
    outln!("os:          {os}");
    outln!(
        "arch:        {}",
        r.architecture.as_deref().unwrap_or("unknown")
    );
    outln!(
        "kernels:     {}",
        if r.kernels.is_empty() {
            "none".into()
        } else {
            safe(&r.kernels.join(", ")).into_owned()
        }
    );
    let mut boot = vec![safe(&r.boot.loader).into_owned()];
    if r.boot.bios {
        boot.push("BIOS".into());
    }
    if !r.boot.efi.is_empty() {
        boot.push(format!("UEFI ({})", safe(&r.boot.efi.join(", "))));
    }
    outln!("boot:        {}", boot.join(", "));
    if let Some(c) = &r.boot.cmdline {
        outln!("cmdline:     {}", safe(c));
    }
    outln!(
        "partitions:  {}",
        r.partition_table
            .as_deref()
            .unwrap_or("none (whole-disk filesystem)")
    );
    for p in &r.partitions {
        outln!(
            "  {:<11} start {:>9}  size {:>9}  type {}{}",
            p.device,
            h(p.start),
            h(p.size),
            safe(&p.kind),
            if p.bootable { "  active" } else { "" }
        );
    }
    outln!("filesystems:");
    for f in &r.filesystems {
        let usage = match (f.size, f.used) {
            (Some(s), Some(u)) => format!("  {} of {} used", h(u), h(s)),
            _ => String::new(),
        };
        outln!(
            "  {:<11} {:<5} uuid {}{}{}{usage}",
            f.device,
            f.fstype,
            if f.uuid.is_empty() {
                "-".into()
            } else {
                safe(&f.uuid)
            },
            if f.label.is_empty() {
                String::new()
            } else {
                format!(" label {}", safe(&f.label))
            },
            f.mountpoint
                .as_deref()
                .map(|m| format!(" on {}", safe(m)))
                .unwrap_or_default()
        );
    }
    outln!("fstab:");
    for e in &r.fstab {
        outln!(
            "  {} {} {} {}{}",
            safe(&e.spec),
            safe(&e.mountpoint),
            safe(&e.fstype),
            safe(&e.options),
            if e.found {
                ""
            } else {
                "  (no such filesystem)"
            }
        );
    }
}

fn print_text(r: &Report) {
    print_disk(r);
    outln!("packages:    {} ({})", r.packages.len(), r.package_manager);
    outln!(
        "services:    {} enabled, {} masked",
        r.services.enabled.len(),
        r.services.masked.len()
    );
    for u in &r.services.enabled {
        outln!("  {}", safe(u));
    }
    for u in &r.services.masked {
        outln!("  {} (masked)", safe(u));
    }
    match &r.cloud_init {
        None => outln!("cloud-init:  not installed"),
        Some(ci) => {
            outln!(
                "cloud-init:  datasources {}; default user {}{}{}",
                ci.datasources
                    .as_ref()
                    .map(|d| safe(&d.join(", ")).into_owned())
                    .unwrap_or_else(|| "cloud-init's default list".into()),
                ci.default_user
                    .as_deref()
                    .map(|u| safe(u).into_owned())
                    .unwrap_or_else(|| "none".into()),
                if ci.previous_instances.is_empty() {
                    "; clean (no earlier instance)"
                } else {
                    "; has data of earlier instances"
                },
                if ci.disabled { "; disabled" } else { "" }
            );
        }
    }
    match &r.sshd {
        None => outln!("sshd:        not installed"),
        Some(s) => outln!(
            "sshd:        password login {}, root login {}, host keys {}",
            safe(&s.password_authentication),
            safe(&s.permit_root_login),
            if s.host_keys.is_empty() {
                "none (made on first boot)".into()
            } else {
                safe(&s.host_keys.join(", ")).into_owned()
            }
        ),
    }
    outln!("accounts:    (login shell or password)");
    for a in &r.accounts {
        outln!(
            "  {:<12} uid {:<5} shell {:<18} password {}",
            safe(&a.name),
            a.uid,
            safe(&a.shell),
            a.password
        );
    }
    outln!(
        "machine-id:  {}",
        match &r.machine_id {
            MachineId::Empty => "empty (made on first boot)".to_string(),
            MachineId::Uninitialized => "uninitialized (made on first boot)".into(),
            MachineId::Absent => "absent".into(),
            MachineId::Set(id) => format!("set: {}", safe(id)),
            MachineId::Invalid(n) => format!("not a machine id ({n} bytes, not shown)"),
        }
    );
    if r.warnings.is_empty() {
        outln!("warnings:    none");
    } else {
        outln!("warnings:");
        for w in &r.warnings {
            outln!("  - {}", safe(w));
        }
    }
}
