//! A bootable base disk from distribution packages, needing nothing but the package mirror:
//! mmdebstrap into a directory, a partitioned raw disk filled by `mkfs.ext4 -d` (no loop
//! devices, no mounts), GRUB installed by the image's own grub-install in one libguestfs
//! launch, converted to qcow2 and cached by the hash of its inputs.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::plan::BootstrapPlan;
use crate::process::argv;
use crate::vocab::DiskLayout;

pub use crate::plan::RECIPE_REVISION;

pub use crate::plan::BASE_PACKAGES;

/// The filesystem UUID is derived from the cache key so that fstab and grub.cfg are stable
/// (and the base disk reproducible).
pub fn fs_uuid(key: &str) -> String {
    let h = hex::encode(Sha256::digest(key.as_bytes()));
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

pub fn mmdebstrap_argv(b: &BootstrapPlan, rootfs: &Path, customize: &Path) -> Vec<String> {
    let mut v = argv([
        "mmdebstrap",
        "--mode=root",
        "--variant=minbase",
        "--format=directory",
        "--aptopt=Acquire::Retries \"3\"",
    ]);
    if b.arch != crate::vocab::Arch::host() {
        // Another architecture's maintainer scripts run through qemu-user-static (binfmt_misc);
        // that takes many minutes, and --verbose shows each package being set up.
        v.push(format!("--architectures={}", b.arch.debian()));
        v.push("--verbose".into());
    }
    v.push(format!("--include={}", b.packages.join(",")));
    // Before the kernel is installed: the initramfs must carry fsck.ext4.
    v.push(
        "--essential-hook=mkdir -p \"$1/etc/initramfs-tools/conf.d\" && echo FSTYPE=ext4 > \"$1/etc/initramfs-tools/conf.d/kiln-fstype\"".into(),
    );
    v.push(format!("--essential-hook={INITRAMFS_DEFERRED}"));
    v.push(format!(
        "--customize-hook=sh {} \"$1\"",
        customize.display()
    ));
    v.push(b.suite.clone());
    v.push(rootfs.display().to_string());
    let q = crate::quote::sources_list;
    v.push(format!("deb {} {} main", q(&b.mirror), q(&b.suite)));
    v.push(format!("deb {} {}-updates main", q(&b.mirror), q(&b.suite)));
    if let Some(sec) = &b.security_mirror {
        v.push(format!("deb {} {}-security main", q(sec), q(&b.suite)));
    }
    v
}

/// update-initramfs is diverted to a no-op while the packages are installed: the kernel's
/// postinst and initramfs-tools' trigger at the end would each make the initramfs (measured for
/// arm64 under qemu-user: 175 s each, of a 714 s mmdebstrap); the customize hook makes it once,
/// with every package in.
const INITRAMFS_DEFERRED: &str = "chroot \"$1\" dpkg-divert --quiet --local --rename --divert /usr/sbin/update-initramfs.kiln --add /usr/sbin/update-initramfs && printf '#!/bin/sh\\nexit 0\\n' > \"$1/usr/sbin/update-initramfs\" && chmod 0755 \"$1/usr/sbin/update-initramfs\"";

/// The customize hook's lines that undo [`INITRAMFS_DEFERRED`] and make the initramfs of every
/// installed kernel.
const INITRAMFS_NOW: &str = r#"rm -f "$root/usr/sbin/update-initramfs"
chroot "$root" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs
if [ -x "$root/usr/sbin/update-initramfs" ] && ls "$root"/boot/vmlinu[xz]-* >/dev/null 2>&1; then
  chroot "$root" update-initramfs -c -k all
fi
"#;

/// binfmt_misc's entry that runs `arch`'s programs through qemu-user-static.
pub fn binfmt_entry(arch: crate::vocab::Arch) -> String {
    format!("/proc/sys/fs/binfmt_misc/qemu-{}", arch.as_str())
}

/// Can this host run `arch`'s programs (its own, or through an enabled binfmt_misc entry)?
/// mmdebstrap runs every maintainer script of the tree it makes.
pub fn can_run(arch: crate::vocab::Arch) -> Result<(), String> {
    if arch == crate::vocab::Arch::host() {
        return Ok(());
    }
    let entry = binfmt_entry(arch);
    match std::fs::read_to_string(&entry) {
        Ok(t) if t.lines().next() == Some("enabled") => Ok(()),
        _ => Err(format!(
            "bootstrapping {arch} on this {} host runs {} programs through qemu-user-static, and {entry} is missing or disabled: install qemu-user-static, then register it (scripts/start-services.sh does: mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; cat /usr/lib/binfmt.d/qemu-{arch}.conf > /proc/sys/fs/binfmt_misc/register; with systemd: systemctl restart systemd-binfmt)",
            crate::vocab::Arch::host(),
            arch.debian(),
        )),
    }
}

/// The EFI system partition's FAT volume ID (`XXXXXXXX`, mkfs.vfat's `-i`), from the key.
pub fn esp_volume_id(key: &str) -> String {
    hex::encode(Sha256::digest(format!("esp:{key}").as_bytes()))[..8].to_uppercase()
}

/// fstab's line for the EFI system partition (`UUID=XXXX-XXXX`, as blkid shows a FAT volume
/// ID): mounted where grub-install and GRUB's package triggers expect it.
fn esp_fstab_line(volume_id: &str) -> String {
    format!(
        "UUID={}-{} /boot/efi vfat umask=0077 0 0\\n",
        &volume_id[..4],
        &volume_id[4..]
    )
}

/// Runs inside mmdebstrap's customize hook with the root directory as $1; `esp`: the EFI
/// system partition's volume ID on a disk with one; `serial`: the guest's first serial port.
pub fn customize_script(uuid: &str, esp: Option<&str>, serial: &str) -> String {
    let esp_lines = match esp {
        None => String::new(),
        Some(id) => format!(
            r#"printf '{}' >> "$root/etc/fstab"
mkdir -p "$root/boot/efi"
# grub-cloud-amd64 reinstalls both boot loaders when GRUB's packages are upgraded in the image
# (Debian's cloud images set the same flag).
if [ -d "$root/etc/grub.d" ]; then touch "$root/etc/grub.d/enable_cloud"; fi
"#,
            esp_fstab_line(id)
        ),
    };
    format!(
        r#"set -eu
root="$1"
# mmdebstrap copies the host's hostname and resolv.conf (their modes too): cloud-init and
# dhclient set them; nothing of the host stays.
echo localhost > "$root/etc/hostname"
: > "$root/etc/resolv.conf"
chmod 0644 "$root/etc/hostname" "$root/etc/resolv.conf"
printf 'UUID={uuid} / ext4 errors=remount-ro 0 1\n' > "$root/etc/fstab"
{esp_lines}printf 'auto lo\niface lo inet loopback\n\nsource /etc/network/interfaces.d/*\n' > "$root/etc/network/interfaces"
echo 'LANG=C.UTF-8' > "$root/etc/default/locale"
# Serial console for the build VM's log; no menu wait (like the vendors' cloud images).
sed -i \
  -e 's/^GRUB_TIMEOUT=.*/GRUB_TIMEOUT=0/' \
  -e 's/^GRUB_CMDLINE_LINUX_DEFAULT=.*/GRUB_CMDLINE_LINUX_DEFAULT="console=tty0 console={serial},115200n8"/' \
  "$root/etc/default/grub"
echo 'GRUB_TERMINAL="console serial"' >> "$root/etc/default/grub"
# sysprep removes the ssh host keys; regenerate missing ones before sshd's config test.
if [ -x "$root/usr/sbin/sshd" ]; then
  mkdir -p "$root/etc/systemd/system/ssh.service.d"
  printf '[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n' \
    > "$root/etc/systemd/system/ssh.service.d/kiln-hostkeys.conf"
  # openssh-server's postinst made host keys: random, so no two bootstraps would give the same
  # bytes, and every image made from this base would share them until sysprep. The unit above
  # makes them on the first boot.
  rm -f "$root"/etc/ssh/ssh_host_*
fi
{INITRAMFS_NOW}rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
"#
    )
}

/// Where the hybrid layout's root partition starts: after the BIOS boot partition (1 MiB at
/// 1 MiB) and the EFI system partition (126 MiB at 2 MiB), like Debian's cloud images.
const HYBRID_ROOT_START: u64 = 128 << 20;
const BIOS_BOOT: (u64, u64) = (1 << 20, 1 << 20);
const ESP: (u64, u64) = (2 << 20, 126 << 20);
/// GPT's backup header and table at the end of the disk.
const GPT_BACKUP_BYTES: u64 = 33 * 512;

/// The root partition's offset and size in bytes on a disk of `size` (the root filesystem
/// fills it). Root is partition 1 in both layouts and the last on the disk, so growroot can
/// grow it; on GPT it ends on a MiB boundary before the backup table (sfdisk's alignment).
pub fn root_extent(layout: DiskLayout, size: u64) -> (u64, u64) {
    match layout {
        DiskLayout::Bios => (1 << 20, (size - (1 << 20)) / 1024 * 1024),
        DiskLayout::Hybrid | DiskLayout::Uefi => (
            HYBRID_ROOT_START,
            (size - GPT_BACKUP_BYTES - HYBRID_ROOT_START) >> 20 << 20,
        ),
    }
}

/// A GUID for the partition table from the bootstrap's key (sfdisk would pick random ones).
fn guid(key: &str, what: &str) -> String {
    fs_uuid(&format!("{what}:{key}")).to_uppercase()
}

/// sfdisk's input for `layout`; identifiers derived from `key`.
pub fn sfdisk_script(layout: DiskLayout, key: &str, size: u64) -> String {
    const SECTOR: u64 = 512;
    let (_, root_bytes) = root_extent(layout, size);
    match layout {
        DiskLayout::Bios => "label: dos\nstart=2048, type=83, bootable\n".into(),
        DiskLayout::Hybrid | DiskLayout::Uefi => {
            let part = |(start, size): (u64, u64), ty: &str, what: &str| {
                format!(
                    "start={}, size={}, type={ty}, uuid={}, name={what}\n",
                    start / SECTOR,
                    size / SECTOR,
                    guid(key, what)
                )
            };
            let mut t = format!(
                "label: gpt\nlabel-id: {}\nfirst-lba: 2048\n",
                guid(key, "disk")
            );
            t += &part(
                (HYBRID_ROOT_START, root_bytes),
                "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
                "root",
            );
            // The uefi layout is the hybrid one without the BIOS boot partition (its ESP is 2).
            if layout == DiskLayout::Hybrid {
                t += &part(BIOS_BOOT, "21686148-6449-6E6F-744E-656564454649", "bios");
            }
            t + &part(ESP, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "esp")
        }
    }
}

/// The packages that make a disk of `layout` bootable: Debian's `grub-cloud-amd64` (what its
/// cloud images use) brings GRUB for BIOS and EFI with the signed shim and GRUB for Secure Boot;
/// on arm64 the signed shim and GRUB themselves (copied to the ESP, see `efiboot`) and GRUB's
/// tools for the image's own `update-grub`.
pub fn boot_packages(layout: DiskLayout, arch: crate::vocab::Arch) -> &'static [&'static str] {
    match (layout, arch) {
        (DiskLayout::Bios, _) => &["grub-pc"],
        (DiskLayout::Uefi, crate::vocab::Arch::Aarch64) => {
            &["grub-efi-arm64", "grub-efi-arm64-signed", "shim-signed"]
        }
        (DiskLayout::Hybrid | DiskLayout::Uefi, _) => &["grub-cloud-amd64"],
    }
}

/// The EFI system partition's offset on the disk (both GPT layouts).
pub const ESP_OFFSET: u64 = ESP.0;

/// mkfs.vfat writes the EFI system partition in place in the raw disk (no loop device).
pub fn mkfs_esp_argv(disk: &Path, volume_id: &str) -> Vec<String> {
    argv([
        "mkfs.vfat".to_string(),
        // FAT32 needs 65,525 clusters at least: one sector each on 126 MiB (the default 4 KiB
        // clusters give 32,188, which OVMF reads as FAT16 and finds no file on).
        "-F".into(),
        "32".into(),
        "-s".into(),
        "1".into(),
        "-n".into(),
        "EFI".into(),
        "-i".into(),
        volume_id.into(),
        "--offset".into(),
        (ESP.0 / 512).to_string(),
        disk.display().to_string(),
        (ESP.1 / 1024).to_string(),
    ])
}

/// The time every bootstrap step is told it is (mmdebstrap's and mke2fs's SOURCE_DATE_EPOCH,
/// mke2fs's E2FSPROGS_FAKE_TIME): the same inputs should give the same bytes. mke2fs 1.47.1 and
/// later clamp every inode's times to SOURCE_DATE_EPOCH with `-d` (1.47.0 copies each file's
/// ctime, the moment mmdebstrap wrote it).
pub const SOURCE_DATE_EPOCH: &str = "1700000000";

/// mkfs.ext4 with the partition's offset, a UUID and a directory-hash seed derived from the
/// bootstrap's key (not random), and the root tree's content; run with E2FSPROGS_FAKE_TIME.
pub fn mkfs_argv(
    disk: &Path,
    rootfs: &Path,
    uuid: &str,
    layout: DiskLayout,
    size_bytes: u64,
) -> Vec<String> {
    let (offset, fs_bytes) = root_extent(layout, size_bytes);
    let fs_kib = fs_bytes / 1024;
    let hash_seed = fs_uuid(&format!("hash-seed:{uuid}"));
    argv([
        "mkfs.ext4".to_string(),
        "-q".into(),
        "-F".into(),
        "-L".into(),
        "root".into(),
        "-U".into(),
        uuid.into(),
        "-d".into(),
        rootfs.display().to_string(),
        "-E".into(),
        format!("offset={offset},hash_seed={hash_seed}"),
        disk.display().to_string(),
        format!("{fs_kib}k"),
    ])
}

pub enum GrubStep {
    Write(&'static str, &'static str),
    Run(Vec<&'static str>),
    Remove(&'static str),
}

/// What the libguestfs appliance mounts while GRUB is installed: root, and the EFI system
/// partition where grub-install looks for it.
pub fn grub_mounts(layout: DiskLayout) -> &'static [(&'static str, &'static str)] {
    match layout {
        DiskLayout::Bios => &[("/dev/sda1", "/")],
        DiskLayout::Hybrid => &[("/dev/sda1", "/"), ("/dev/sda3", "/boot/efi")],
        DiskLayout::Uefi => &[("/dev/sda1", "/"), ("/dev/sda2", "/boot/efi")],
    }
}

/// Installing GRUB from inside the libguestfs appliance. `grub-install` alone guesses the disk
/// holding /boot/grub from the appliance's mounts and sometimes picks the appliance's own disk
/// ("embedding is not possible, but this is required for cross-disk install"), so the BIOS
/// core image gets an explicit prefix and the boot sector is written with an explicit device
/// map. The image has one disk with root on its first partition: (hd0,msdos1) or (hd0,gpt1).
/// On a hybrid disk GRUB for EFI goes to the ESP as grub-cloud-amd64 installs it: Debian's
/// signed shim and GRUB (Secure Boot), also at the removable path (`EFI/BOOT/BOOTX64.EFI`,
/// which firmware with an empty variable store boots), no boot entry written.
/// A `uefi` disk (another architecture's) gets its boot loader from `efiboot` on the host:
/// no step runs in the appliance.
pub fn grub_steps(layout: DiskLayout) -> Vec<GrubStep> {
    use GrubStep::*;
    let (prefix, part): (&'static str, &'static str) = match layout {
        DiskLayout::Bios => ("(hd0,msdos1)/boot/grub", "part_msdos"),
        DiskLayout::Hybrid => ("(hd0,gpt1)/boot/grub", "part_gpt"),
        DiskLayout::Uefi => return Vec::new(),
    };
    let mut steps = vec![
        // Copies the modules into /boot/grub/i386-pc; its core.img is replaced below.
        Run(vec![
            "grub-install",
            "--target=i386-pc",
            "--no-bootsector",
            "/dev/sda",
        ]),
        Run(vec![
            "grub-mkimage",
            "-O",
            "i386-pc",
            "-o",
            "/boot/grub/i386-pc/core.img",
            "-p",
            prefix,
            "biosdisk",
            part,
            "ext2",
        ]),
        Write("/tmp/kiln-device.map", "(hd0) /dev/sda\n"),
        // grub-pc-bin's copy: the hybrid layout has no grub-pc (it conflicts with grub-efi).
        Run(vec![
            "/usr/lib/grub/i386-pc/grub-bios-setup",
            "-d",
            "/boot/grub/i386-pc",
            "-m",
            "/tmp/kiln-device.map",
            "/dev/sda",
        ]),
        Remove("/tmp/kiln-device.map"),
    ];
    if layout == DiskLayout::Hybrid {
        steps.push(Run(vec![
            "grub-install",
            "--target=x86_64-efi",
            "--efi-directory=/boot/efi",
            "--no-nvram",
            "--uefi-secure-boot",
            "--force-extra-removable",
        ]));
    }
    // grub.cfg finds the root filesystem by UUID.
    steps.push(Run(vec!["update-grub"]));
    steps
}

/// Where the base disk for `b` is cached.
pub fn cached_disk(cache: &Path, b: &BootstrapPlan) -> PathBuf {
    cache
        .join("bootstrap")
        .join(format!("{}-{}-{}.qcow2", b.distro, b.suite, b.cache_key()))
}

/// The scratch directory of one bootstrap run (removed when it ends).
pub fn scratch_dir(cache: &Path, key: &str, pid: u32) -> PathBuf {
    cache.join("bootstrap").join(format!(".build-{key}-{pid}"))
}

/// `sfdisk` partitions `raw` with [`sfdisk_script`] on its stdin.
pub fn sfdisk_argv(raw: &Path) -> Vec<String> {
    argv([
        "sfdisk".to_string(),
        "--quiet".into(),
        raw.display().to_string(),
    ])
}

impl std::fmt::Display for GrubStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GrubStep::Run(a) => write!(f, "{}", a.join(" ")),
            GrubStep::Write(p, _) => write!(f, "write {p}"),
            GrubStep::Remove(p) => write!(f, "rm {p}"),
        }
    }
}

/// What [`base_disk`] runs for `b` with the cache at `cache`, for `kiln plan`: the cached disk
/// when it is there, else every command, from the same builders.
pub fn planned(cache: &Path, b: &BootstrapPlan) -> Vec<String> {
    let dest = cached_disk(cache, b);
    if dest.is_file() {
        return vec![format!(
            "cache hit: {} (nothing to bootstrap)",
            dest.display()
        )];
    }
    let key = b.cache_key();
    let scratch = scratch_dir(cache, &key, std::process::id());
    let raw = scratch.join("disk.raw");
    let rootfs = scratch.join("rootfs");
    let mut v = vec![
        format!("cache miss: {} is built", dest.display()),
        crate::process::display(&mmdebstrap_argv(b, &rootfs, &scratch.join("customize.sh"))),
        format!(
            "{} <<< '{}'",
            crate::process::display(&sfdisk_argv(&raw)),
            sfdisk_script(b.layout, &key, b.size_bytes).replace('\n', "\\n")
        ),
        crate::process::display(&mkfs_argv(
            &raw,
            &rootfs,
            &fs_uuid(&key),
            b.layout,
            b.size_bytes,
        )),
    ];
    if let Some(id) = esp_volume(b) {
        v.push(crate::process::display(&mkfs_esp_argv(&raw, &id)));
    }
    let grub = grub_steps(b.layout);
    if grub.is_empty() {
        let staged = scratch.join("esp");
        v.push(format!(
            "write {}/boot/grub/grub.cfg (root by UUID, the newest kernel); stage Debian's signed shim and GRUB from the tree in {}",
            rootfs.display(),
            staged.display()
        ));
        v.push(crate::process::display(&crate::efiboot::mmd_argv(
            &raw, ESP_OFFSET,
        )));
        for (i, f) in crate::efiboot::esp_files(b.arch).iter().enumerate() {
            v.push(format!(
                "{}  (/{})",
                crate::process::display(&crate::efiboot::mcopy_argv(
                    &raw,
                    ESP_OFFSET,
                    &staged.join(i.to_string()),
                    &f.to
                )),
                f.from
            ));
        }
    } else {
        v.push(format!(
            "libguestfs on {}: {}",
            raw.display(),
            grub.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    v.extend([
        crate::process::display(&crate::qemu_img::raw_to_qcow2_argv(
            &raw,
            &scratch.join("base.qcow2"),
        )),
        format!("rename into the cache: {}", dest.display()),
    ]);
    v
}

/// The EFI system partition's volume ID when `b`'s layout has one.
pub fn esp_volume(b: &BootstrapPlan) -> Option<String> {
    (b.layout != DiskLayout::Bios).then(|| esp_volume_id(&b.cache_key()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> BootstrapPlan {
        BootstrapPlan {
            distro: "debian".into(),
            suite: "bookworm".into(),
            mirror: "http://deb.debian.org/debian".into(),
            security_mirror: Some("http://deb.debian.org/debian-security".into()),
            packages: vec!["grub-pc".into(), "cloud-init".into()],
            size_bytes: 2 << 30,
            layout: DiskLayout::Bios,
            arch: crate::vocab::Arch::X86_64,
        }
    }

    #[test]
    fn mmdebstrap_argv_has_sources_hooks_and_packages() {
        let v = mmdebstrap_argv(&plan(), Path::new("/s/rootfs"), Path::new("/s/c.sh"));
        assert_eq!(v[0], "mmdebstrap");
        assert!(v.contains(&"--include=grub-pc,cloud-init".to_string()));
        assert!(v
            .iter()
            .any(|a| a.starts_with("--essential-hook=") && a.contains("FSTYPE=ext4")));
        assert!(v.contains(&"--customize-hook=sh /s/c.sh \"$1\"".to_string()));
        // The initramfs is made once, by the customize hook, not by each package that asks.
        assert!(v.iter().any(|a| a.starts_with("--essential-hook=")
            && a.contains("dpkg-divert --quiet --local --rename --divert /usr/sbin/update-initramfs.kiln --add")));
        let c = customize_script("U", None, "ttyS0");
        let undo = c
            .find("dpkg-divert --quiet --local --rename --remove")
            .unwrap();
        assert!(c.find("update-initramfs -c -k all").unwrap() > undo);
        let tail: Vec<&str> = v[v.len() - 5..].iter().map(String::as_str).collect();
        assert_eq!(
            tail,
            [
                "bookworm",
                "/s/rootfs",
                "deb http://deb.debian.org/debian bookworm main",
                "deb http://deb.debian.org/debian bookworm-updates main",
                "deb http://deb.debian.org/debian-security bookworm-security main"
            ]
        );
    }

    #[test]
    fn mkfs_argv_offsets_the_partition() {
        let v = mkfs_argv(
            Path::new("/d.raw"),
            Path::new("/r"),
            "U",
            DiskLayout::Bios,
            2 << 30,
        );
        assert_eq!(
            v.join(" "),
            format!(
                "mkfs.ext4 -q -F -L root -U U -d /r -E offset=1048576,hash_seed={} /d.raw 2096128k",
                fs_uuid("hash-seed:U")
            )
        );
    }

    /// Both layouts embed GRUB for BIOS with their own partition module and prefix; only the
    /// hybrid one installs GRUB for EFI (signed, at the removable path, no boot entry), and
    /// mounts the ESP where grub-install looks for it.
    #[test]
    fn grub_steps_follow_the_layout() {
        let text = |l| {
            grub_steps(l)
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        };
        let mbr = text(DiskLayout::Bios);
        assert!(
            mbr.contains("-p (hd0,msdos1)/boot/grub biosdisk part_msdos ext2"),
            "{mbr}"
        );
        assert!(!mbr.contains("x86_64-efi"), "{mbr}");
        let hybrid = text(DiskLayout::Hybrid);
        assert!(
            hybrid.contains("-p (hd0,gpt1)/boot/grub biosdisk part_gpt ext2"),
            "{hybrid}"
        );
        assert!(hybrid.contains("grub-install --target=x86_64-efi --efi-directory=/boot/efi --no-nvram --uefi-secure-boot --force-extra-removable; update-grub"), "{hybrid}");
        assert_eq!(
            grub_mounts(DiskLayout::Hybrid)[1],
            ("/dev/sda3", "/boot/efi")
        );
        assert!(customize_script("U", Some("ABCD1234"), "ttyS0").contains(
            "printf 'UUID=ABCD-1234 /boot/efi vfat umask=0077 0 0\\n' >> \"$root/etc/fstab\""
        ));
        assert!(!customize_script("U", None, "ttyS0").contains("/boot/efi"));
        assert!(customize_script("U", None, "ttyAMA0")
            .contains("GRUB_CMDLINE_LINUX_DEFAULT=\"console=tty0 console=ttyAMA0,115200n8\""));
    }

    #[test]
    fn cache_key_follows_inputs() {
        let a = plan();
        let mut b = plan();
        assert_eq!(a.cache_key(), b.cache_key());
        b.packages.push("tree".into());
        assert_ne!(a.cache_key(), b.cache_key());
    }

    #[test]
    fn uuid_is_stable_and_well_formed() {
        let u = fs_uuid("abc");
        assert_eq!(u, fs_uuid("abc"));
        assert_eq!(u.len(), 36);
        assert_eq!(u.matches('-').count(), 4);
        assert_eq!(&u[14..15], "4");
    }
}
