//! The KVM probe's verdict, cached until the host reboots, and the TCG decision for tools that
//! run outside a build.

use std::path::Path;

use super::{KvmProbe, Libvirt};
use crate::vocab::Accel;

/// The probe's verdict holds until the host reboots (keyed by the kernel's boot id), so only
/// the first build after boot pays for it.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

pub fn cached(cache: &Path) -> Option<KvmProbe> {
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

pub fn store(cache: &Path, p: &KvmProbe) {
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
            let probe = cached(cache).or_else(|| {
                let lv = Libvirt::connect(uri).ok()?;
                let p = lv.probe_kvm(cancel).ok()?;
                store(cache, &p);
                Some(p)
            });
            !matches!(probe, Some(KvmProbe::Usable))
        }
    }
}
