//! `kiln test IMAGE`: the build's boot test on any image (a vendor cloud image, a Packer
//! output): booted through a throwaway overlay like a new cloud instance, then checked.

use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::boottest::{self, Check};

#[derive(clap::Args, Debug)]
pub struct TestArgs {
    /// The image to boot (never modified: it boots through a throwaway overlay).
    pub image: PathBuf,
    /// Image format (default: probed).
    #[arg(long)]
    pub format: Option<String>,
    /// A backing file the image may have (repeat for a chain): kiln follows no backing file
    /// it was not named, as a crafted image can name any file on the host.
    #[arg(long, value_name = "FILE")]
    pub backing: Vec<PathBuf>,
    /// A shell command that must succeed, as the test user (sudo works): `CMD`, or
    /// `CMD=>TEXT` when its output must contain TEXT. Repeatable.
    #[arg(long = "check-run", value_name = "CMD[=>TEXT]")]
    pub runs: Vec<String>,
    /// A file that must contain TEXT: `PATH=TEXT`. Repeatable.
    #[arg(long = "check-file", value_name = "PATH=TEXT")]
    pub files: Vec<String>,
    /// A systemd unit that must be active (`UNIT`) or not (`UNIT=inactive`). Repeatable.
    #[arg(long = "check-service", value_name = "UNIT[=inactive]")]
    pub services: Vec<String>,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = crate::plan::DEFAULT_MEMORY_MIB)]
    pub memory: u64,
    #[arg(long, default_value_t = crate::plan::DEFAULT_VCPUS)]
    pub vcpus: u32,
    /// The virtual CPU (as the recipe's `vm.cpu`): auto is the host's under KVM, max under
    /// TCG; a level proves the image runs on CPUs that old.
    #[arg(long, value_enum, default_value_t = crate::vocab::Cpu::Auto)]
    pub cpu: crate::vocab::Cpu,
    /// The guest architecture (default: what the image's system is built for, read from its
    /// disk; else the host's). Another than the host's runs under TCG.
    #[arg(long, value_enum)]
    pub arch: Option<crate::vocab::Arch>,
    /// The firmware to boot with (default: the `firmware` of the manifest.json beside the
    /// image, else uefi when its partition table has an EFI system partition and no BIOS boot
    /// partition, else bios).
    #[arg(long, value_enum)]
    pub firmware: Option<crate::recipe::model::FirmwareSetting>,
    /// UEFI Secure Boot with Microsoft's keys (implies --firmware uefi); the test checks that
    /// the guest sees it enforcing.
    #[arg(long)]
    pub secure_boot: bool,
    /// A TPM 2.0 (swtpm) in the test VM; the test checks that the guest has /dev/tpm0.
    #[arg(long)]
    pub tpm: bool,
    /// libvirt connection.
    #[arg(long, default_value = crate::plan::DEFAULT_URI)]
    pub connect: String,
    /// Seconds for the boot, cloud-init and each check.
    #[arg(long, default_value_t = crate::plan::DEFAULT_VM_TIMEOUT_SECS)]
    pub timeout: u64,
    /// Seconds from the VM's start until sshd answers; a VM silent that long is booted once
    /// more on a fresh overlay (its first console kept beside --console as FILE.first-boot).
    #[arg(long, default_value_t = crate::plan::DEFAULT_BOOT_TIMEOUT_SECS)]
    pub boot_timeout: u64,
    #[arg(long, value_enum, default_value_t = crate::recipe::model::Accel::Auto)]
    pub accel: crate::recipe::model::Accel,
    /// Write the results as JUnit XML here.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Keep the test VM's serial console here.
    #[arg(long, value_name = "FILE")]
    pub console: Option<PathBuf>,
}

/// The architecture `kiln test` boots `image` as: `--arch` (which the system on the disk must
/// be), else the disk's, else the host's.
fn arch_of(
    flag: Option<crate::vocab::Arch>,
    image: &std::path::Path,
    checked: &crate::diskread::Image,
) -> Result<crate::vocab::Arch, String> {
    let shown = || safe(&image.display().to_string()).into_owned();
    match (flag, crate::inspect::image_arch(checked)) {
        (Some(want), Some(found)) if want.as_str() != found => {
            Err(format!("{} holds an {found} system, not {want}", shown()))
        }
        (Some(want), _) => Ok(want),
        (None, Some(found)) => crate::vocab::Arch::from_name(found).ok_or_else(|| {
            format!(
                "{} holds an {found} system; kiln test boots x86_64 and aarch64 VMs",
                shown()
            )
        }),
        (None, None) => Ok(crate::vocab::Arch::host()),
    }
}

/// The image and every backing file it was checked with, nearest first, as the VM's user
/// reaches them: the VM reads the chain as checked (the overlay alone would be a disk of
/// zeros under it).
fn vm_chain(
    checked: &crate::diskread::Image,
    work: &std::path::Path,
    user: crate::libvirt::vmuser::VmUser,
) -> std::io::Result<Vec<crate::libvirt::domain::Backing>> {
    let mut files = Vec::new();
    let mut at = Some(checked);
    while let Some(img) = at {
        files.push((img.path.clone(), img.format.clone()));
        at = img.backing.as_deref();
    }
    crate::libvirt::domain::reachable_backings(files, work, user)
}

/// The firmware `kiln test` boots `image` with: the flags, else what the build that made it
/// recorded, else what its partition table allows.
fn firmware(
    a: &TestArgs,
    image: &std::path::Path,
    checked: &crate::diskread::Image,
) -> crate::vocab::Firmware {
    use crate::recipe::model::FirmwareSetting;
    if a.secure_boot || a.firmware.is_some() {
        return crate::vocab::Firmware::from_settings(
            a.firmware == Some(FirmwareSetting::Uefi),
            a.secure_boot,
        );
    }
    if let Some(f) = image.parent().and_then(|dir| recorded_firmware(dir, image)) {
        tracing::info!("booting with {f} firmware, as manifest.json says the image was built");
        return f;
    }
    let f = crate::diskread::firmware_for(checked);
    tracing::info!("booting with {f} firmware (from the image's partition table)");
    f
}

/// The firmware manifest.json in `dir` records, when it lists `image` among its outputs.
fn recorded_firmware(
    dir: &std::path::Path,
    image: &std::path::Path,
) -> Option<crate::vocab::Firmware> {
    let m = crate::manifest::read(dir).ok()?;
    let file = image.file_name()?.to_str()?;
    if !m.outputs.iter().any(|o| o.path == file) {
        return None;
    }
    serde_json::from_value(serde_json::Value::String(m.firmware)).ok()
}

/// `--check-*` values as checks (errors name the flag).
pub(super) fn checks(a: &TestArgs) -> Result<Vec<Check>, String> {
    let mut v = Vec::new();
    for r in &a.runs {
        let (run, expect) = match r.split_once("=>") {
            Some((c, e)) => (c.trim().to_string(), Some(e.trim().to_string())),
            None => (r.clone(), None),
        };
        if run.is_empty() {
            return Err(format!("--check-run {r:?}: no command"));
        }
        v.push(Check::Run { run, expect });
    }
    for f in &a.files {
        let Some((file, contains)) = f.split_once('=') else {
            return Err(format!("--check-file {f:?}: expected PATH=TEXT"));
        };
        if !file.starts_with('/') {
            return Err(format!("--check-file {f:?}: the path must be absolute"));
        }
        v.push(Check::File {
            file: file.into(),
            contains: contains.into(),
        });
    }
    for s in &a.services {
        let (service, active) = match s.split_once('=') {
            None => (s.clone(), true),
            Some((u, "inactive")) => (u.to_string(), false),
            Some((u, "active")) => (u.to_string(), true),
            Some(_) => {
                return Err(format!(
                    "--check-service {s:?}: expected UNIT or UNIT=inactive"
                ))
            }
        };
        if service.is_empty() || service.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(format!("--check-service {s:?}: not a unit name"));
        }
        v.push(Check::Service { service, active });
    }
    Ok(v)
}

pub(super) fn test_cmd(a: TestArgs) -> i32 {
    let checks = match checks(&a) {
        Ok(c) => c,
        Err(e) => return usage_error(e),
    };
    let cancel = match try_cancel_on_signals() {
        Ok(c) => c,
        Err(e) => {
            errln!("error: cannot install signal handler: {e}");
            return exit::BUILD_FAILED;
        }
    };
    let image = match std::fs::canonicalize(&a.image) {
        Ok(p) => p,
        Err(e) => return usage_error(format!("{}: {e}", a.image.display())),
    };
    let (checked, info) =
        match crate::imagefile::check_info(&image, a.format.as_deref(), &a.backing, &cancel) {
            Ok(found) => found,
            Err(e) => {
                return usage_error(format!(
                    "cannot read {}: {e}",
                    safe(&image.display().to_string())
                ))
            }
        };
    let arch = match arch_of(a.arch, &image, &checked) {
        Ok(arch) => arch,
        Err(m) => return usage_error(m),
    };
    let firmware = firmware(&a, &image, &checked);
    if !arch.supports(firmware) {
        return usage_error(format!(
            "{arch} has no {firmware} firmware: use --firmware uefi"
        ));
    }
    let tcg = crate::libvirt::probe::tcg_for_tools(
        a.accel,
        &super::tunables().cache_dir,
        &a.connect,
        &cancel,
    );
    let lv = match crate::libvirt::Libvirt::connect(&a.connect) {
        Ok(l) => l,
        Err(e) => {
            errln!("error: {e}");
            return exit::BUILD_FAILED;
        }
    };
    let user = crate::libvirt::vmuser::VmUser::for_uri(&a.connect);
    let work = if user.is_other() {
        super::tunables()
            .vm_dir
            .clone()
            .join(format!("test-{}", std::process::id()))
    } else {
        std::env::temp_dir().join(format!("kiln-test-{}", std::process::id()))
    };
    let made = if user.is_other() {
        crate::libvirt::vmuser::make_vm_dir(&work, user)
    } else {
        std::fs::create_dir_all(&work)
    };
    if let Err(e) = made.and_then(|()| crate::owner::Owner::current().write_into(&work)) {
        errln!("error: creating {}: {e}", work.display());
        return exit::BUILD_FAILED;
    }
    let result = (|| -> anyhow::Result<boottest::Report> {
        let chain = vm_chain(&checked, &work, user)?;
        let machine = crate::libvirt::domain::Machine {
            arch,
            engine: crate::vocab::Engine::from_tcg(tcg).for_guest(arch),
            cpu: a.cpu,
            firmware,
            tpm: a.tpm,
            memory_mib: a.memory,
            vcpus: a.vcpus,
        };
        let mut o = boottest::Options::new(
            chain,
            &info,
            work.clone(),
            machine,
            user,
            Duration::from_secs(a.timeout),
            checks,
            "kiln-test".into(),
        );
        o.boot_timeout = Duration::from_secs(a.boot_timeout);
        Ok(boottest::run(&o, &lv, &cancel, &mut |_| {})?)
    })();
    if let Some(dst) = &a.console {
        let _ = std::fs::copy(work.join("test-console.log"), dst);
        let mut first = dst.clone().into_os_string();
        first.push(".first-boot");
        let _ = std::fs::copy(work.join(boottest::FIRST_CONSOLE), first);
    }
    let _ = std::fs::remove_dir_all(&work);
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            errln!("error: {e:#}");
            return if cancel.is_cancelled() {
                exit::INTERRUPTED
            } else {
                exit::BUILD_FAILED
            };
        }
    };
    print_report(&report);
    if let Some(j) = &a.junit {
        let suite = image
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Err(e) = std::fs::write(j, boottest::junit_xml(&suite, &report)) {
            errln!("error: writing {}: {e}", j.display());
            return exit::BUILD_FAILED;
        }
    }
    if report.failed().is_empty() {
        exit::OK
    } else {
        exit::BUILD_FAILED
    }
}

pub(crate) fn print_report(r: &boottest::Report) {
    outln!("boot test ({}, hostname {}):", r.instance_id, r.hostname);
    for c in &r.checks {
        let mark = match (c.ok, c.warning) {
            (true, false) => "ok  ",
            (true, true) => "warn",
            (false, _) => "FAIL",
        };
        if c.detail.is_empty() || (c.ok && !c.warning) {
            outln!("  {mark}  {}", c.name);
        } else {
            outln!("  {mark}  {}: {}", c.name, c.detail);
        }
    }
    let phases: Vec<String> = r
        .phases
        .iter()
        .map(|(p, s)| format!("{p} {s:.1} s"))
        .collect();
    outln!("  ({})", phases.join(", "));
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct T {
        #[command(flatten)]
        a: TestArgs,
    }

    #[test]
    fn check_flags_become_checks() {
        let t = T::parse_from([
            "t",
            "img",
            "--check-run",
            "tree --version=>tree v2",
            "--check-run",
            "true",
            "--check-file",
            "/etc/motd=kiln",
            "--check-service",
            "ssh",
            "--check-service",
            "apache2=inactive",
        ]);
        assert_eq!(
            checks(&t.a).unwrap(),
            vec![
                Check::Run {
                    run: "tree --version".into(),
                    expect: Some("tree v2".into())
                },
                Check::Run {
                    run: "true".into(),
                    expect: None
                },
                Check::File {
                    file: "/etc/motd".into(),
                    contains: "kiln".into()
                },
                Check::Service {
                    service: "ssh".into(),
                    active: true
                },
                Check::Service {
                    service: "apache2".into(),
                    active: false
                },
            ]
        );
        for bad in [
            ["--check-file", "motd=kiln"],
            ["--check-file", "/etc/motd"],
            ["--check-service", "ssh=maybe"],
            ["--check-run", "=>x"],
        ] {
            let t = T::parse_from(["t", "img", bad[0], bad[1]]);
            assert!(checks(&t.a).is_err(), "{bad:?}");
        }
    }
}
