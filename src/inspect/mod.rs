//! `kiln inspect`: what an image holds, read in one read-only libguestfs launch without running
//! anything of the guest's (os-release, kernels, boot loader, partitions, filesystems and fstab,
//! packages, enabled services, cloud-init, sshd, accounts, machine-id), plus the warnings a
//! golden image should not earn. Parsers are pure and table-tested; `read` does the I/O.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::guest::{Guest, PartitionInfo};
use crate::inventory::{self, Package};

mod fat;
mod host;
mod parse;

pub use host::*;
pub use parse::*;

/// (mode, uid, gid, size, mtime in ns), as `lstat` gives them.
pub type Stat = (u32, i64, i64, i64, i64);

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub os: BTreeMap<String, String>,
    /// The guest's architecture, from its shell's ELF header (`x86_64`, `aarch64`, …).
    pub architecture: Option<String>,
    pub kernels: Vec<String>,
    pub boot: Boot,
    pub partition_table: Option<String>,
    pub partitions: Vec<PartitionInfo>,
    pub filesystems: Vec<Filesystem>,
    pub fstab: Vec<FstabEntry>,
    pub package_manager: String,
    pub packages: Vec<Package>,
    pub services: Services,
    pub cloud_init: Option<CloudInit>,
    pub sshd: Option<Sshd>,
    pub accounts: Vec<Account>,
    pub machine_id: MachineId,
    /// What a golden image should not have, each with its reason.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Boot {
    /// "grub2", "systemd-boot", "extlinux" or "none found".
    pub loader: String,
    /// The default entry's kernel command line (grub.cfg's first `linux` line).
    pub cmdline: Option<String>,
    /// BIOS boot is possible: GRUB in the MBR gap or a BIOS boot partition.
    pub bios: bool,
    /// UEFI binaries on the EFI system partition.
    pub efi: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Filesystem {
    pub device: String,
    #[serde(rename = "type")]
    pub fstype: String,
    pub uuid: String,
    pub label: String,
    pub mountpoint: Option<String>,
    pub size: Option<u64>,
    pub used: Option<u64>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FstabEntry {
    pub spec: String,
    pub mountpoint: String,
    #[serde(rename = "type")]
    pub fstype: String,
    pub options: String,
    /// The spec names a filesystem of this disk (UUID=, LABEL=, a device); false for one that
    /// the image cannot boot with unless `nofail` is set.
    pub found: bool,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Services {
    /// Units enabled in /etc/systemd/system (`TARGET.wants/UNIT` and `.requires`).
    pub enabled: Vec<String>,
    /// Units masked (linked to /dev/null) in /etc/systemd/system.
    pub masked: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct CloudInit {
    /// `datasource_list` as the last configuration file sets it (None: cloud-init's own list).
    pub datasources: Option<Vec<String>>,
    pub default_user: Option<String>,
    /// Instance data of a previous boot (/var/lib/cloud/instances/*): a clone would skip its
    /// first-boot configuration.
    pub previous_instances: Vec<String>,
    /// cloud-init disabled by /etc/cloud/cloud-init.disabled.
    pub disabled: bool,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Sshd {
    pub password_authentication: String,
    pub permit_root_login: String,
    pub permit_empty_passwords: String,
    /// Host keys in /etc/ssh (a golden image should have none: every clone would share them).
    pub host_keys: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub shell: String,
    /// "set", "locked", "none" (no hash: key login only) or "empty" (no password needed).
    pub password: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "state", content = "id")]
pub enum MachineId {
    /// Empty file: systemd makes one on first boot (what a golden image wants).
    Empty,
    Uninitialized,
    Absent,
    /// Every clone would share it.
    Set(String),
    /// Not a machine id (32 hex digits): its length only, the content is not shown (a
    /// crafted image could make any bytes appear here).
    Invalid(usize),
}

/// Read access to a guest's mounted filesystems: libguestfs, or the host reader.
pub trait View {
    fn read(&self, path: &str) -> Option<Vec<u8>>;
    /// Names in a directory (empty when it is missing or not a directory).
    fn list(&self, dir: &str) -> Vec<String>;
    fn readlink(&self, path: &str) -> Option<String>;
    fn is_symlink(&self, path: &str) -> bool;
    fn exists(&self, path: &str) -> bool;
}

impl View for Guest {
    fn read(&self, path: &str) -> Option<Vec<u8>> {
        Guest::read(self, path).ok()
    }
    fn list(&self, dir: &str) -> Vec<String> {
        if self.is_dir(dir) {
            self.ls(dir).unwrap_or_default()
        } else {
            Vec::new()
        }
    }
    fn readlink(&self, path: &str) -> Option<String> {
        // Asked first: readlink on anything else makes libguestfs print an error.
        Guest::is_symlink(self, path)
            .then(|| Guest::readlink(self, path))
            .flatten()
    }
    fn is_symlink(&self, path: &str) -> bool {
        Guest::is_symlink(self, path)
    }
    fn exists(&self, path: &str) -> bool {
        Guest::exists(self, path).unwrap_or(false)
    }
}

/// Shell-style match of one path segment: `*`, `?` and `[abc]`.
pub fn wild_match(pattern: &str, name: &str) -> bool {
    fn m(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|i| m(&p[1..], &n[i..])),
            Some('?') => !n.is_empty() && m(&p[1..], &n[1..]),
            Some('[') => match p.iter().position(|c| *c == ']') {
                Some(end) if !n.is_empty() => {
                    p[1..end].contains(&n[0]) && m(&p[end + 1..], &n[1..])
                }
                _ => false,
            },
            Some(c) => n.first() == Some(c) && m(&p[1..], &n[1..]),
        }
    }
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    m(&p, &n)
}

/// Absolute paths matching a glob, sorted (wildcards in any segment; dot-files only when the
/// segment starts with a dot, as in sh).
pub fn glob(v: &dyn View, pattern: &str) -> Vec<String> {
    let mut found = vec![String::new()];
    for seg in pattern.trim_start_matches('/').split('/') {
        let mut next = Vec::new();
        for base in &found {
            if seg.contains(['*', '?', '[']) {
                let dir = if base.is_empty() { "/" } else { base.as_str() };
                for name in v.list(dir) {
                    if (seg.starts_with('.') || !name.starts_with('.')) && wild_match(seg, &name) {
                        next.push(format!("{base}/{name}"));
                    }
                }
            } else {
                let p = format!("{base}/{seg}");
                if v.exists(&p) || v.is_symlink(&p) {
                    next.push(p);
                }
            }
        }
        found = next;
    }
    found.sort();
    found
}

/// What the disk is, beside its files.
pub struct DiskFacts {
    pub partition_table: Option<String>,
    pub partitions: Vec<PartitionInfo>,
    pub filesystems: Vec<Filesystem>,
    /// GRUB's boot code in the MBR.
    pub mbr_grub: bool,
    pub package_management: String,
}

/// Read everything from a guest opened read-only. Missing files give empty sections, never an error:
/// an image is inspected as it is.
pub fn read(g: &Guest) -> Report {
    let fs_list = g.filesystems_at_open().unwrap_or_default();
    let mounted: BTreeMap<&str, &str> = g
        .mounts()
        .iter()
        .map(|(mp, dev)| (dev.as_str(), mp.as_str()))
        .collect();
    let filesystems: Vec<Filesystem> = fs_list
        .iter()
        .filter(|(_, t)| t != "unknown")
        .map(|(dev, t)| {
            let mp = mounted.get(dev.as_str()).map(|m| m.to_string());
            let sizes = if t.starts_with("ext") {
                g.ext_sizes(dev)
            } else {
                mp.as_deref().and_then(|m| g.statvfs(m))
            };
            let (size, used) = match sizes {
                Some((s, u)) => (Some(s), Some(u)),
                None => (None, None),
            };
            Filesystem {
                device: dev.clone(),
                fstype: t.clone(),
                uuid: g.fs_uuid(dev),
                label: g.fs_label(dev),
                mountpoint: mp,
                size,
                used,
            }
        })
        .collect();
    let (partition_table, partitions) = g.partitions();
    let facts = DiskFacts {
        partition_table,
        partitions,
        filesystems,
        mbr_grub: g.mbr_has_grub(),
        package_management: g.package_management.clone(),
    };
    // A package database that gives nothing is reported, not shown as an empty list.
    let inv = inventory::read(g).unwrap_or_else(|e| {
        tracing::warn!("{e}");
        inventory::Inventory::default()
    });
    report(g, facts, inv)
}

/// The report from a view of the guest's files and the disk's facts.
/// The guest's architecture: its shell's (or env's) ELF header.
pub fn guest_arch(v: &dyn View) -> Option<&'static str> {
    ["/usr/bin/sh", "/bin/sh", "/usr/bin/env"]
        .iter()
        .find_map(|p| v.read(p).and_then(|b| elf_arch(&b)))
}

/// The architecture of the system in `img`, read by the host reader (root only); None when the
/// host reader cannot read it (another format, LVM, XFS, …): nothing is claimed then.
pub fn image_arch(img: &crate::diskread::Image) -> Option<&'static str> {
    let (view, _) = open_host(img, Reach::Root).ok()?;
    guest_arch(&view)
}

pub fn report(v: &dyn View, facts: DiskFacts, inv: inventory::Inventory) -> Report {
    let text = |p: &str| v.read(p).map(|b| String::from_utf8_lossy(&b).into_owned());
    let DiskFacts {
        partition_table,
        partitions,
        filesystems,
        mbr_grub,
        package_management,
    } = facts;
    let fstab = fstab(&text("/etc/fstab").unwrap_or_default(), &filesystems);

    let grub_cfg = ["/boot/grub/grub.cfg", "/boot/grub2/grub.cfg"]
        .iter()
        .find_map(|p| text(p));
    let efi = glob(v, "/boot/efi/EFI/*/*.[Ee][Ff][Ii]");
    let boot = boot(
        grub_cfg.as_deref(),
        v.exists("/boot/extlinux/extlinux.conf"),
        !glob(v, "/boot/efi/loader/entries/*").is_empty(),
        mbr_grub || partitions.iter().any(|p| p.kind == BIOS_BOOT_GUID),
        efi,
    );

    let sys = "/etc/systemd/system";
    let mut wants = Vec::new();
    let mut links = Vec::new();
    for name in v.list(sys) {
        let p = format!("{sys}/{name}");
        if name.ends_with(".wants") || name.ends_with(".requires") {
            wants.extend(v.list(&p).into_iter().map(|n| format!("{p}/{n}")));
        } else if let Some(t) = v.readlink(&p) {
            links.push((p, t));
        }
    }
    let services = services(&wants, &links);

    let cloud_init = v.exists("/etc/cloud/cloud.cfg").then(|| {
        let mut files = vec![text("/etc/cloud/cloud.cfg").unwrap_or_default()];
        files.extend(
            glob(v, "/etc/cloud/cloud.cfg.d/*.cfg")
                .iter()
                .filter_map(|p| text(p)),
        );
        let mut ci = cloud_init_config(&files);
        ci.previous_instances = v
            .list("/var/lib/cloud/instances")
            .into_iter()
            .filter(|n| !n.starts_with('.'))
            .collect();
        ci.disabled = v.exists("/etc/cloud/cloud-init.disabled");
        ci
    });

    let sshd = text("/etc/ssh/sshd_config").map(|main| {
        let include = |pattern: &str| -> Vec<String> {
            let abs = if pattern.starts_with('/') {
                pattern.to_string()
            } else {
                format!("/etc/ssh/{pattern}")
            };
            glob(v, &abs).iter().filter_map(|p| text(p)).collect()
        };
        let mut s = sshd(&main, &include);
        s.host_keys = glob(v, "/etc/ssh/ssh_host_*_key")
            .into_iter()
            .map(|p| p.trim_start_matches("/etc/ssh/").to_string())
            .collect();
        s
    });

    let accounts = accounts(
        &text("/etc/passwd").unwrap_or_default(),
        &text("/etc/shadow").unwrap_or_default(),
    );
    let machine_id = machine_id(text("/etc/machine-id").as_deref());
    let package_manager = match (inv.packages.is_empty(), inv.package_format) {
        (true, _) => package_management,
        (false, inventory::PackageFormat::Deb) => "dpkg".into(),
        (false, inventory::PackageFormat::Rpm) => "rpm".into(),
    };
    let mut r = Report {
        os: inv.os,
        architecture: guest_arch(v).map(str::to_string),
        kernels: inv.kernels,
        boot,
        partition_table,
        partitions,
        filesystems,
        fstab,
        package_manager,
        packages: inv.packages,
        services,
        cloud_init,
        sshd,
        accounts,
        machine_id,
        warnings: Vec::new(),
    };
    r.warnings = warnings(&r);
    r
}

#[cfg(test)]
mod tests;
