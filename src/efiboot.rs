//! The boot loader of a bootstrapped disk whose programs the host cannot run in libguestfs's
//! appliance (arm64 on x86_64), put in place from the host: Debian's signed shim and GRUB
//! copied from the bootstrapped tree to the EFI system partition as
//! `grub-install --uefi-secure-boot --force-extra-removable` lays them out (also at the
//! removable path, which firmware with an empty variable store boots), GRUB's first-stage
//! config that finds root by its UUID, and a `/boot/grub/grub.cfg` written here: grub-mkconfig
//! needs grub-probe, and grub-probe the disk, which the chroot is not on (osbuild's grub2 stage
//! writes its grub.cfg the same way). The image's own `update-grub` (on a kernel upgrade)
//! replaces it with Debian's. The FAT filesystem is filled by mtools at its offset in the raw
//! disk: no loop device, no mount.

use std::path::{Path, PathBuf};

use crate::process::argv;
use crate::vocab::Arch;

#[derive(Debug, thiserror::Error)]
pub enum EfiBootError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("no kernel in the bootstrapped tree's /boot (vmlinuz-VERSION)")]
    NoKernel,
    #[error("{0:?}: not a kernel version kiln writes into grub.cfg")]
    BadVersion(String),
}

/// One file of the ESP: its source below the bootstrapped root, its path on the ESP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspFile {
    pub from: String,
    pub to: String,
}

/// What goes on the ESP for `arch`, as grub-install lays it out for Debian's signed chain.
pub fn esp_files(arch: Arch) -> Vec<EspFile> {
    let s = arch.efi_suffix();
    let up = s.to_uppercase();
    let grub = format!(
        "usr/lib/grub/{}-efi-signed/grub{s}.efi.signed",
        grub_cpu(arch)
    );
    let shim = format!("usr/lib/shim/shim{s}.efi.signed");
    let mm = format!("usr/lib/shim/mm{s}.efi.signed");
    [
        (&shim, format!("EFI/debian/shim{s}.efi")),
        (&grub, format!("EFI/debian/grub{s}.efi")),
        (&mm, format!("EFI/debian/mm{s}.efi")),
        (
            &format!("usr/lib/shim/fb{s}.efi.signed"),
            format!("EFI/debian/fb{s}.efi"),
        ),
        (
            &format!("usr/lib/shim/BOOT{up}.CSV"),
            format!("EFI/debian/BOOT{up}.CSV"),
        ),
        (&shim, format!("EFI/BOOT/BOOT{up}.EFI")),
        (&grub, format!("EFI/BOOT/grub{s}.efi")),
        (&mm, format!("EFI/BOOT/mm{s}.efi")),
    ]
    .into_iter()
    .map(|(from, to)| EspFile {
        from: from.clone(),
        to,
    })
    .collect()
}

/// GRUB's name for the CPU (`/usr/lib/grub/CPU-efi`).
fn grub_cpu(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "x86_64",
        Arch::Aarch64 => "arm64",
    }
}

/// The ESP's `EFI/debian/grub.cfg`: what grub-install writes for the signed GRUB, whose
/// built-in prefix is `/EFI/debian`.
pub fn first_stage_cfg(root_uuid: &str) -> String {
    format!(
        "search.fs_uuid {root_uuid} root hd0,gpt1 \nset prefix=($root)'/boot/grub'\nconfigfile $prefix/grub.cfg\n"
    )
}

/// `/boot/grub/grub.cfg`: one entry, the newest kernel, root by UUID, the serial console.
pub fn grub_cfg(root_uuid: &str, version: &str, serial: &str) -> Result<String, EfiBootError> {
    if version.is_empty()
        || !version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".+-_~".contains(c))
    {
        return Err(EfiBootError::BadVersion(version.into()));
    }
    Ok(format!(
        "# Written by kiln's bootstrap (grub-mkconfig cannot probe a disk from another\n\
         # architecture's chroot); the image's own update-grub replaces it.\n\
         set default=0\nset timeout=0\n\
         insmod part_gpt\ninsmod ext2\n\
         search --no-floppy --fs-uuid --set=root {root_uuid}\n\
         menuentry 'Debian GNU/Linux' {{\n\
         \tlinux\t/boot/vmlinuz-{version} root=UUID={root_uuid} ro console=tty0 console={serial},115200n8\n\
         \tinitrd\t/boot/initrd.img-{version}\n}}\n"
    ))
}

/// The newest kernel version among `/boot`'s names (`vmlinuz-VERSION`), by dpkg's ordering of
/// the numeric parts.
pub fn newest_kernel(names: &[String]) -> Option<String> {
    names
        .iter()
        .filter_map(|n| n.strip_prefix("vmlinuz-"))
        .max_by_key(|v| {
            v.split(|c: char| !c.is_ascii_digit())
                .filter_map(|p| p.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .map(String::from)
}

/// mtools' image argument: the FAT filesystem at `offset` bytes in `disk`.
fn image(disk: &Path, offset: u64) -> String {
    format!("{}@@{offset}", disk.display())
}

/// `mmd`: the ESP's directories.
pub fn mmd_argv(disk: &Path, offset: u64) -> Vec<String> {
    let mut v = argv(["mmd", "-i"]);
    v.push(image(disk, offset));
    v.extend(argv(["::/EFI", "::/EFI/BOOT", "::/EFI/debian"]));
    v
}

/// `mcopy`: one staged file to its place on the ESP, with its modification time (`-m`).
pub fn mcopy_argv(disk: &Path, offset: u64, staged: &Path, to: &str) -> Vec<String> {
    let mut v = argv(["mcopy", "-m", "-i"]);
    v.push(image(disk, offset));
    v.push(staged.display().to_string());
    v.push(format!("::/{to}"));
    v
}

/// Writes grub.cfg into the bootstrapped `rootfs` and stages the ESP's files in `staging`
/// (read without following a link: the tree is made of downloaded packages), each dated
/// `epoch` (the bootstrap's SOURCE_DATE_EPOCH). Returns each staged file with its ESP path.
pub fn prepare(
    rootfs: &Path,
    staging: &Path,
    arch: Arch,
    root_uuid: &str,
    epoch: u64,
) -> Result<Vec<(PathBuf, String)>, EfiBootError> {
    let io = |path: &str| {
        let path = path.to_string();
        move |source| EfiBootError::Io { path, source }
    };
    let names = crate::hostfile::list_beneath(rootfs, "boot").map_err(io("/boot"))?;
    let version = newest_kernel(&names).ok_or(EfiBootError::NoKernel)?;
    let cfg = grub_cfg(root_uuid, &version, arch.serial_console())?;
    let grub_dir = rootfs.join("boot/grub");
    crate::hostfile::open_beneath(rootfs, "boot", true).map_err(io("/boot"))?;
    // A link planted at /boot/grub would take grub.cfg out of the tree.
    crate::hostfile::real_dir(&grub_dir).map_err(io("/boot/grub"))?;
    crate::hostfile::replace_file(&grub_dir.join("grub.cfg"), cfg.as_bytes(), 0o644)
        .map_err(io("/boot/grub/grub.cfg"))?;
    std::fs::create_dir_all(staging).map_err(io(&staging.display().to_string()))?;
    let mut out = Vec::new();
    for (i, f) in esp_files(arch).into_iter().enumerate() {
        let mut src = crate::hostfile::open_beneath(rootfs, &f.from, false).map_err(io(&f.from))?;
        let staged = staging.join(format!("{i}"));
        let mut dst = std::fs::File::create(&staged).map_err(io(&f.from))?;
        std::io::copy(&mut src, &mut dst).map_err(io(&f.from))?;
        out.push((staged, f.to));
    }
    let first = staging.join("grub.cfg");
    std::fs::write(&first, first_stage_cfg(root_uuid)).map_err(io("EFI/debian/grub.cfg"))?;
    out.push((first, "EFI/debian/grub.cfg".into()));
    // The same time on every file (mcopy -m keeps it): the same inputs give the same ESP.
    let epoch = std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch);
    for (p, _) in &out {
        let f = std::fs::File::options()
            .write(true)
            .open(p)
            .map_err(io(&p.display().to_string()))?;
        f.set_modified(epoch)
            .map_err(io(&p.display().to_string()))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_esp_holds_the_signed_chain_at_debians_and_the_removable_path() {
        let f = esp_files(Arch::Aarch64);
        let to: Vec<&str> = f.iter().map(|f| f.to.as_str()).collect();
        for p in [
            "EFI/BOOT/BOOTAA64.EFI",
            "EFI/BOOT/grubaa64.efi",
            "EFI/BOOT/mmaa64.efi",
            "EFI/debian/shimaa64.efi",
            "EFI/debian/grubaa64.efi",
            "EFI/debian/BOOTAA64.CSV",
        ] {
            assert!(to.contains(&p), "{p}: {to:?}");
        }
        let boot = f.iter().find(|f| f.to == "EFI/BOOT/BOOTAA64.EFI").unwrap();
        assert_eq!(boot.from, "usr/lib/shim/shimaa64.efi.signed");
        let grub = f.iter().find(|f| f.to == "EFI/BOOT/grubaa64.efi").unwrap();
        assert_eq!(
            grub.from,
            "usr/lib/grub/arm64-efi-signed/grubaa64.efi.signed"
        );
        let x = esp_files(Arch::X86_64);
        assert!(
            x.iter()
                .any(|f| f.to == "EFI/BOOT/BOOTX64.EFI"
                    && f.from == "usr/lib/shim/shimx64.efi.signed")
        );
    }

    #[test]
    fn grub_cfg_boots_the_newest_kernel_by_uuid_on_the_serial_console() {
        let names: Vec<String> = [
            "vmlinuz-6.1.0-9-cloud-arm64",
            "vmlinuz-6.1.0-57-cloud-arm64",
            "config-6.1.0-57-cloud-arm64",
        ]
        .map(String::from)
        .into();
        let v = newest_kernel(&names).unwrap();
        assert_eq!(v, "6.1.0-57-cloud-arm64");
        let cfg = grub_cfg("0e1f-aa", &v, "ttyAMA0").unwrap();
        // What the build VM's direct boot reads back from it.
        let e = crate::directboot::grub_entry(&cfg).unwrap();
        assert_eq!(e.kernel, "/boot/vmlinuz-6.1.0-57-cloud-arm64");
        assert_eq!(
            e.initrd.as_deref(),
            Some("/boot/initrd.img-6.1.0-57-cloud-arm64")
        );
        assert!(e.args.contains(&"root=UUID=0e1f-aa".to_string()));
        assert!(e.args.contains(&"console=ttyAMA0,115200n8".to_string()));
        assert!(cfg.contains("search --no-floppy --fs-uuid --set=root 0e1f-aa\n"));
        assert_eq!(newest_kernel(&["initrd.img-1".into()]), None);
        for bad in ["", "6.1 x", "6.1;reboot", "6.1\nmenuentry"] {
            assert!(grub_cfg("u", bad, "ttyAMA0").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn first_stage_is_what_grub_install_writes() {
        assert_eq!(
            first_stage_cfg("b9b9122d-fce0-4732-8921-9c86d3a16c4b"),
            "search.fs_uuid b9b9122d-fce0-4732-8921-9c86d3a16c4b root hd0,gpt1 \nset prefix=($root)'/boot/grub'\nconfigfile $prefix/grub.cfg\n"
        );
    }

    #[test]
    fn mtools_write_at_the_esps_offset() {
        let d = Path::new("/s/disk.raw");
        assert_eq!(
            mmd_argv(d, 2 << 20),
            [
                "mmd",
                "-i",
                "/s/disk.raw@@2097152",
                "::/EFI",
                "::/EFI/BOOT",
                "::/EFI/debian"
            ]
        );
        assert_eq!(
            mcopy_argv(d, 2 << 20, Path::new("/s/esp/0"), "EFI/BOOT/BOOTAA64.EFI"),
            [
                "mcopy",
                "-m",
                "-i",
                "/s/disk.raw@@2097152",
                "/s/esp/0",
                "::/EFI/BOOT/BOOTAA64.EFI"
            ]
        );
    }

    #[test]
    fn prepare_refuses_a_link_in_the_tree() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("boot")).unwrap();
        std::fs::write(root.join("boot/vmlinuz-6.1.0-1-arm64"), b"k").unwrap();
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        // A package planting a link to the host's files.
        std::os::unix::fs::symlink("/etc", root.join("usr/lib/shim")).unwrap();
        let e = prepare(&root, &d.path().join("esp"), Arch::Aarch64, "u", 0).unwrap_err();
        assert!(e.to_string().contains("usr/lib/shim"), "{e}");
        assert!(std::fs::read_to_string(root.join("boot/grub/grub.cfg"))
            .unwrap()
            .contains("/boot/vmlinuz-6.1.0-1-arm64 root=UUID=u"));
    }

    #[test]
    fn prepare_writes_no_grub_cfg_through_a_link() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let outside = d.path().join("outside");
        std::fs::create_dir_all(root.join("boot")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(root.join("boot/vmlinuz-6.1.0-1-arm64"), b"k").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("boot/grub")).unwrap();
        let e = prepare(&root, &d.path().join("esp"), Arch::Aarch64, "u", 0).unwrap_err();
        assert!(e.to_string().contains("/boot/grub"), "{e}");
        assert!(
            !outside.join("grub.cfg").exists(),
            "written through the link"
        );
    }
}
