//! `kiln inspect`: what an image holds, read in one read-only libguestfs launch without running
//! anything of the guest's (os-release, kernels, boot loader, partitions, filesystems and fstab,
//! packages, enabled services, cloud-init, sshd, accounts, machine-id), plus the warnings a
//! golden image should not earn. Parsers are pure and table-tested; `read` does the I/O.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::guest::{Guest, PartitionInfo};
use crate::inventory::{self, Package};

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub os: BTreeMap<String, String>,
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
    report(g, facts, inventory::read(g))
}

/// The report from a view of the guest's files and the disk's facts.
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

/// The host reader's view: ext2/3/4 filesystems mounted by mountpoint (longest first).
pub struct HostView {
    mounts: Vec<(String, ext4_view::Ext4)>,
}

impl HostView {
    fn at<'a>(&'a self, path: &'a str) -> Option<(&'a ext4_view::Ext4, String)> {
        self.mounts.iter().find_map(|(mp, fs)| {
            let rest = if mp == "/" {
                Some(path)
            } else {
                path.strip_prefix(mp.as_str())
                    .filter(|r| r.is_empty() || r.starts_with('/'))
            }?;
            Some((
                fs,
                if rest.is_empty() {
                    "/".into()
                } else {
                    rest.into()
                },
            ))
        })
    }
}

impl HostView {
    /// (mode, uid, gid, size, mtime in ns) without following a final symlink.
    pub fn lstat(&self, path: &str) -> Option<(u32, i64, i64, i64, i64)> {
        let (fs, p) = self.at(path)?;
        let m = fs.symlink_metadata(p.as_str()).ok()?;
        let t = m.modified();
        Some((
            m.mode() as u32 & 0o7777 | kind_bits(&m),
            m.uid() as i64,
            m.gid() as i64,
            m.len() as i64,
            t.seconds() * 1_000_000_000 + t.nanoseconds() as i64,
        ))
    }

    /// SHA-256 of a regular file, read in 1 MiB pieces.
    pub fn sha256(&self, path: &str) -> Result<String, String> {
        use sha2::Digest;
        let (fs, p) = self.at(path).ok_or_else(|| format!("{path}: not found"))?;
        let mut f = fs.open(p.as_str()).map_err(|e| format!("{path}: {e}"))?;
        let mut h = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read_bytes(&mut buf).map_err(|e| format!("{path}: {e}"))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(hex::encode(h.finalize()))
    }
}

/// ext4-view's mode has the permission bits; the type bits come from the file type.
fn kind_bits(m: &ext4_view::Metadata) -> u32 {
    let t = m.file_type();
    if t.is_dir() {
        0o040000
    } else if t.is_symlink() {
        0o120000
    } else if t.is_regular_file() {
        0o100000
    } else {
        0o010000
    }
}

impl View for HostView {
    fn read(&self, path: &str) -> Option<Vec<u8>> {
        let (fs, p) = self.at(path)?;
        fs.read(p.as_str()).ok()
    }
    fn list(&self, dir: &str) -> Vec<String> {
        let Some((fs, p)) = self.at(dir) else {
            return Vec::new();
        };
        let Ok(rd) = fs.read_dir(p.as_str()) else {
            return Vec::new();
        };
        rd.filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().as_str().ok().map(String::from))
            .filter(|n| n != "." && n != "..")
            .collect()
    }
    fn readlink(&self, path: &str) -> Option<String> {
        let (fs, p) = self.at(path)?;
        fs.read_link(p.as_str())
            .ok()
            .map(|t| t.display().to_string())
    }
    fn is_symlink(&self, path: &str) -> bool {
        self.at(path)
            .and_then(|(fs, p)| fs.symlink_metadata(p.as_str()).ok())
            .is_some_and(|m| m.is_symlink())
    }
    fn exists(&self, path: &str) -> bool {
        self.at(path)
            .is_some_and(|(fs, p)| fs.exists(p.as_str()).unwrap_or(false))
    }
}

/// Inspect without an appliance: a raw or qcow2 image whose filesystems are all ext2/3/4 (or
/// swap, or empty BIOS boot partitions), read in-process by ext4-view (pure Rust, read-only:
/// the image's bytes are parsed by memory-safe code, nothing is mounted or run). An error
/// means "use libguestfs" (another format or filesystem, LVM, an rpm database, no single
/// root), not that the image is bad.
pub fn read_host(image: &std::path::Path) -> Result<Report, String> {
    let (view, facts) = open_host(image)?;
    let kernels = glob(&view, "/boot/vmlinuz-*")
        .into_iter()
        .filter_map(|k| k.strip_prefix("/boot/vmlinuz-").map(String::from))
        .collect();
    let read_text = |p: &str| {
        view.read(p)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    let inv = inventory::from_files(&read_text, kernels);
    Ok(report(&view, facts, inv))
}

/// The host reader's view of an image and its disk facts (see `read_host` for what it
/// refuses).
pub fn open_host(image: &std::path::Path) -> Result<(HostView, DiskFacts), String> {
    use crate::diskread::{self, Slice};
    let disk = diskread::open(image).map_err(|e| e.to_string())?;
    let mut head = vec![0u8; 34 * 512];
    disk.read_at(0, &mut head).map_err(|e| e.to_string())?;
    let (table, parts) = match diskread::partitions(&head) {
        Some((t, p)) => (Some(t), p),
        None => (None, Vec::new()),
    };
    let slices: Vec<(String, Slice, Option<&diskread::Part>)> = if parts.is_empty() {
        vec![(
            "/dev/sda".to_string(),
            Slice {
                disk: disk.clone(),
                start: 0,
                len: disk.size(),
            },
            None,
        )]
    } else {
        parts
            .iter()
            .map(|p| {
                (
                    format!("/dev/sda{}", p.number),
                    Slice {
                        disk: disk.clone(),
                        start: p.start,
                        len: p.size.min(disk.size().saturating_sub(p.start)),
                    },
                    Some(p),
                )
            })
            .collect()
    };
    let mut filesystems = Vec::new();
    let mut ext4s: Vec<(String, Slice)> = Vec::new();
    for (dev, slice, part) in &slices {
        let mut sb = vec![0u8; 2048];
        slice.read_at(0, &mut sb).map_err(|e| e.to_string())?;
        if let Some((uuid, label, size, used)) = diskread::ext4_superblock(&sb[1024..]) {
            filesystems.push(Filesystem {
                device: dev.clone(),
                fstype: "ext4".into(),
                uuid,
                label,
                mountpoint: None,
                size: Some(size),
                used: Some(used),
            });
            ext4s.push((dev.clone(), slice.clone()));
        } else if sb[..4096.min(sb.len())]
            .windows(10)
            .any(|w| w == b"SWAPSPACE2")
        {
            filesystems.push(Filesystem {
                device: dev.clone(),
                fstype: "swap".into(),
                uuid: String::new(),
                label: String::new(),
                mountpoint: None,
                size: None,
                used: None,
            });
        } else if part.is_some_and(|p| p.kind == BIOS_BOOT_GUID) {
        } else {
            return Err(format!("{dev}: not an ext2/3/4 filesystem"));
        }
    }
    let mut loaded: Vec<(String, ext4_view::Ext4)> = Vec::new();
    for (dev, slice) in ext4s {
        let fs = ext4_view::Ext4::load(Box::new(slice)).map_err(|e| format!("{dev}: {e}"))?;
        loaded.push((dev, fs));
    }
    let roots: Vec<usize> = loaded
        .iter()
        .enumerate()
        .filter(|(_, (_, fs))| {
            fs.exists("/etc/os-release").unwrap_or(false)
                || fs.exists("/usr/lib/os-release").unwrap_or(false)
        })
        .filter(|(_, (_, fs))| fs.exists("/etc/fstab").unwrap_or(false))
        .map(|(i, _)| i)
        .collect();
    let [root] = roots[..] else {
        return Err(format!("{} operating system roots", roots.len()));
    };
    let text = |fs: &ext4_view::Ext4, p: &str| fs.read_to_string(p).ok();
    let osr = text(&loaded[root].1, "/etc/os-release")
        .or_else(|| text(&loaded[root].1, "/usr/lib/os-release"))
        .unwrap_or_default();
    let Some((_, package_management)) = crate::guest::distro_from_os_release(&osr) else {
        return Err("a distribution kiln does not map".into());
    };
    if package_management != "apt" {
        return Err("an rpm database (read through libguestfs)".into());
    }
    let fstab_text = text(&loaded[root].1, "/etc/fstab").unwrap_or_default();
    let mut mounts = vec![("/".to_string(), root)];
    for (spec, mp, ty, _) in crate::guest::fstab_entries(&fstab_text) {
        if mp == "/" || ty == "swap" || ["proc", "sysfs", "tmpfs", "devpts"].contains(&ty.as_str())
        {
            continue;
        }
        let found = filesystems.iter().position(|f| match spec.split_once('=') {
            Some(("UUID", u)) => f.uuid.eq_ignore_ascii_case(u),
            Some(("LABEL", l)) => f.label == l,
            _ => false,
        });
        match found.and_then(|i| loaded.iter().position(|(d, _)| *d == filesystems[i].device)) {
            Some(i) => mounts.push((mp, i)),
            // A filesystem the host reader cannot open, or one that is missing: libguestfs
            // decides (it reports the missing one the same way).
            None => return Err(format!("fstab's {mp}: not an ext4 filesystem of this disk")),
        }
    }
    for (mp, i) in &mounts {
        if let Some(f) = filesystems.iter_mut().find(|f| f.device == loaded[*i].0) {
            f.mountpoint = Some(mp.clone());
        }
    }
    mounts.sort_by_key(|(mp, _)| std::cmp::Reverse(mp.len()));
    let mut by_index: Vec<Option<ext4_view::Ext4>> =
        loaded.into_iter().map(|(_, fs)| Some(fs)).collect();
    let mut view = HostView { mounts: Vec::new() };
    for (mp, i) in mounts {
        // A filesystem mounted twice is read through its first mountpoint only.
        if let Some(fs) = by_index[i].take() {
            view.mounts.push((mp, fs));
        }
    }
    let facts = DiskFacts {
        partition_table: table,
        partitions: parts
            .iter()
            .map(|p| PartitionInfo {
                device: format!("/dev/sda{}", p.number),
                number: p.number,
                start: p.start,
                size: p.size,
                kind: p.kind.clone(),
                bootable: p.bootable,
            })
            .collect(),
        filesystems,
        mbr_grub: head[..512].windows(4).any(|w| w == b"GRUB"),
        package_management,
    };
    Ok((view, facts))
}

/// The GPT type of a BIOS boot partition (GRUB's core image on GPT disks).
pub const BIOS_BOOT_GUID: &str = "21686148-6449-6E6F-744E-656564454649";

/// fstab entries, each marked with whether its source is a filesystem of this disk.
pub fn fstab(text: &str, fs: &[Filesystem]) -> Vec<FstabEntry> {
    crate::guest::fstab_entries(text)
        .into_iter()
        .map(|(spec, mountpoint, fstype, options)| {
            let found = match spec.split_once('=') {
                Some(("UUID", u)) => fs.iter().any(|f| f.uuid.eq_ignore_ascii_case(u)),
                Some(("LABEL", l)) => fs.iter().any(|f| f.label == l),
                // PARTUUID, PARTLABEL, devices and pseudo filesystems (proc, tmpfs, swap
                // files): not checked here.
                _ => true,
            };
            FstabEntry {
                spec,
                mountpoint,
                fstype,
                options,
                found,
            }
        })
        .collect()
}

/// Boot facts from grub.cfg, the other loaders' files and the EFI binaries.
pub fn boot(
    grub_cfg: Option<&str>,
    extlinux: bool,
    systemd_boot: bool,
    bios: bool,
    efi: Vec<String>,
) -> Boot {
    let loader = if grub_cfg.is_some() {
        "grub2"
    } else if systemd_boot {
        "systemd-boot"
    } else if extlinux {
        "extlinux"
    } else {
        "none found"
    };
    let cmdline = grub_cfg.and_then(|cfg| {
        cfg.lines().map(str::trim).find_map(|l| {
            let rest = l
                .strip_prefix("linux")
                .or_else(|| l.strip_prefix("linuxefi"))?;
            let rest = rest.strip_prefix(char::is_whitespace)?;
            // Drop the kernel path: what remains is the command line.
            rest.trim()
                .split_once(char::is_whitespace)
                .map(|(_, args)| args.trim().to_string())
        })
    });
    Boot {
        loader: loader.into(),
        cmdline,
        bios,
        efi,
    }
}

/// Enabled units from the links in /etc/systemd/system's `.wants`/`.requires` directories,
/// masked ones from its links to /dev/null: (link path, target).
pub fn services(wants: &[String], links: &[(String, String)]) -> Services {
    let enabled = inventory::enabled_units(
        wants
            .iter()
            .filter_map(|p| p.strip_prefix("/etc/systemd/system/")),
    );
    let masked: BTreeSet<String> = links
        .iter()
        .filter(|(_, t)| t == "/dev/null")
        .filter_map(|(p, _)| p.rsplit('/').next().map(String::from))
        .collect();
    Services {
        enabled,
        masked: masked.into_iter().collect(),
    }
}

/// cloud-init's datasource list and default user from cloud.cfg and then cloud.cfg.d/*.cfg in
/// order (later files override top-level keys, as cloud-init merges them by default).
pub fn cloud_init_config(files: &[String]) -> CloudInit {
    use saphyr::{LoadableYamlNode, Yaml};
    let mut ci = CloudInit::default();
    for text in files {
        let Ok(docs) = Yaml::load_from_str(text) else {
            continue;
        };
        let Some(doc) = docs.first() else { continue };
        if let Some(Yaml::Sequence(list)) = doc.as_mapping_get("datasource_list") {
            ci.datasources = Some(
                list.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect(),
            );
        }
        if let Some(name) = doc
            .as_mapping_get("system_info")
            .and_then(|s| s.as_mapping_get("default_user"))
            .and_then(|u| u.as_mapping_get("name"))
            .and_then(|n| n.as_str())
        {
            ci.default_user = Some(name.to_string());
        }
    }
    ci
}

/// sshd's effective global settings: the first value of a keyword wins, `Include` is read in
/// place (`include` returns the contents of the files a pattern names, sorted), and nothing
/// after the first `Match` is global. Unset keywords get OpenSSH's defaults.
pub fn sshd(main: &str, include: &dyn Fn(&str) -> Vec<String>) -> Sshd {
    fn walk(
        text: &str,
        include: &dyn Fn(&str) -> Vec<String>,
        seen: &mut BTreeMap<String, String>,
        depth: usize,
    ) -> bool {
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = match line.split_once(|c: char| c.is_whitespace() || c == '=') {
                Some((k, v)) => (
                    k.to_ascii_lowercase(),
                    v.trim().trim_start_matches('=').trim(),
                ),
                None => continue,
            };
            match key.as_str() {
                "match" => return false,
                "include" if depth < 8 => {
                    for pattern in value.split_whitespace() {
                        for file in include(pattern) {
                            if !walk(&file, include, seen, depth + 1) {
                                return false;
                            }
                        }
                    }
                }
                _ => {
                    let v = value.split_whitespace().next().unwrap_or("").to_string();
                    seen.entry(key).or_insert(v);
                }
            }
        }
        true
    }
    let mut seen = BTreeMap::new();
    walk(main, include, &mut seen, 0);
    let get = |k: &str, default: &str| {
        seen.get(k)
            .cloned()
            .unwrap_or_else(|| default.to_string())
            .to_ascii_lowercase()
    };
    Sshd {
        password_authentication: get("passwordauthentication", "yes"),
        permit_root_login: get("permitrootlogin", "prohibit-password"),
        permit_empty_passwords: get("permitemptypasswords", "no"),
        host_keys: Vec::new(),
    }
}

/// Shells that do not log in.
fn no_login(shell: &str) -> bool {
    shell.is_empty()
        || ["nologin", "false", "sync", "halt", "shutdown"]
            .iter()
            .any(|s| shell.rsplit('/').next() == Some(s))
}

/// Accounts that can log in (a login shell) or have a password; the state of the password, never
/// the hash.
pub fn accounts(passwd: &str, shadow: &str) -> Vec<Account> {
    let hashes: BTreeMap<&str, &str> = shadow
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            Some((f.next()?, f.next()?))
        })
        .collect();
    passwd
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            let hash = match f[1] {
                "x" => hashes.get(f[0]).copied().unwrap_or("*"),
                other => other,
            };
            let password = if hash.is_empty() {
                "empty"
            } else if hash.starts_with('!') {
                "locked"
            } else if hash.starts_with('*') {
                "none"
            } else {
                "set"
            };
            let shell = f[6].to_string();
            (!no_login(&shell) || password == "set" || password == "empty").then(|| Account {
                name: f[0].to_string(),
                uid: f[2].parse().unwrap_or(0),
                shell,
                password: password.into(),
            })
        })
        .collect()
}

pub fn machine_id(content: Option<&str>) -> MachineId {
    match content.map(str::trim) {
        None => MachineId::Absent,
        Some("") => MachineId::Empty,
        Some("uninitialized") => MachineId::Uninitialized,
        Some(id) => MachineId::Set(id.to_string()),
    }
}

/// What a golden image should not have.
pub fn warnings(r: &Report) -> Vec<String> {
    let mut w = Vec::new();
    for e in &r.fstab {
        if !e.found && !e.options.split(',').any(|o| o == "nofail") {
            w.push(format!(
                "fstab mounts {} on {} but no filesystem of this disk has it (the boot stops in emergency mode)",
                e.spec, e.mountpoint
            ));
        }
    }
    if let MachineId::Set(id) = &r.machine_id {
        w.push(format!(
            "/etc/machine-id is set ({id}): every instance would share it (sysprep's machine-id operation empties it)"
        ));
    }
    if let Some(s) = &r.sshd {
        if !s.host_keys.is_empty() {
            w.push(format!(
                "ssh host keys are baked in ({}): every instance would share them",
                s.host_keys.join(", ")
            ));
        }
        if s.permit_empty_passwords == "yes" {
            w.push("sshd permits empty passwords".into());
        }
    }
    for a in &r.accounts {
        if a.password == "empty" {
            w.push(format!(
                "account {} has an empty password: anyone can log in as it",
                a.name
            ));
        }
    }
    if let Some(ci) = &r.cloud_init {
        if !ci.previous_instances.is_empty() {
            w.push(format!(
                "cloud-init has data of earlier instances ({}): run sysprep (cloud-init-state)",
                ci.previous_instances.join(", ")
            ));
        }
        if ci.disabled {
            w.push("cloud-init is disabled (/etc/cloud/cloud-init.disabled)".into());
        }
    }
    if r.kernels.is_empty() {
        w.push("no kernel in /boot".into());
    }
    if r.boot.loader == "none found" {
        w.push("no boot loader configuration found".into());
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sshd_first_value_wins_includes_read_in_place_match_ends_globals() {
        let main = "Include /etc/ssh/sshd_config.d/*.conf\nPasswordAuthentication yes\n\
                    #PermitRootLogin yes\nMatch User bob\n  PermitRootLogin yes\n";
        let inc = |p: &str| {
            assert_eq!(p, "/etc/ssh/sshd_config.d/*.conf");
            vec!["passwordauthentication no\n".to_string()]
        };
        let s = sshd(main, &inc);
        assert_eq!(s.password_authentication, "no");
        assert_eq!(s.permit_root_login, "prohibit-password");
        assert_eq!(s.permit_empty_passwords, "no");
        let s = sshd("PermitRootLogin=yes\nPermitRootLogin no\n", &|_| Vec::new());
        assert_eq!(s.permit_root_login, "yes");
        assert_eq!(s.password_authentication, "yes");
        // An include loop stops at a depth limit instead of recursing forever.
        let s = sshd("Include x\n", &|_| vec!["Include x\n".to_string()]);
        assert_eq!(s.password_authentication, "yes");
    }

    #[test]
    fn accounts_show_password_states_never_hashes() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
                      alice:x:1000:1000::/home/alice:/bin/bash\n\
                      svc:x:998:998::/:/usr/sbin/nologin\n\
                      open:x:1001:1001::/home/open:/bin/sh\n\
                      legacy:$6$abc$def:1002:1002::/:/bin/false\n";
        let shadow = "root:!:19000::::::\ndaemon:*:19000::::::\nalice:$6$salt$hash:19000::::::\n\
                      svc:$y$j9T$x:19000::::::\nopen::19000::::::\n";
        let a = accounts(passwd, shadow);
        let got: Vec<(&str, &str)> = a
            .iter()
            .map(|a| (a.name.as_str(), a.password.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("root", "locked"),
                ("alice", "set"),
                ("svc", "set"),
                ("open", "empty"),
                ("legacy", "set")
            ]
        );
        let json = serde_json::to_string(&a).unwrap();
        assert!(!json.contains("$6$") && !json.contains("$y$"), "{json}");
    }

    #[test]
    fn cloud_init_later_files_override() {
        let files = vec![
            "datasource_list: [NoCloud, None]\nsystem_info:\n  default_user:\n    name: debian\n"
                .to_string(),
            "not: [valid".to_string(),
            "datasource_list: [ ConfigDrive, OpenStack ]\n".to_string(),
        ];
        let ci = cloud_init_config(&files);
        assert_eq!(
            ci.datasources,
            Some(vec!["ConfigDrive".to_string(), "OpenStack".to_string()])
        );
        assert_eq!(ci.default_user.as_deref(), Some("debian"));
        assert_eq!(cloud_init_config(&[String::new()]), CloudInit::default());
    }

    #[test]
    fn services_from_links() {
        let s = services(
            &[
                "/etc/systemd/system/multi-user.target.wants/ssh.service".into(),
                "/etc/systemd/system/sockets.target.wants/x.socket".into(),
                "/etc/systemd/system/stray".into(),
            ],
            &[
                (
                    "/etc/systemd/system/apt-daily.timer".into(),
                    "/dev/null".into(),
                ),
                (
                    "/etc/systemd/system/sshd.service".into(),
                    "/lib/systemd/system/ssh.service".into(),
                ),
            ],
        );
        assert_eq!(
            s.enabled,
            [
                "multi-user.target.wants/ssh.service",
                "sockets.target.wants/x.socket"
            ]
        );
        assert_eq!(s.masked, ["apt-daily.timer"]);
    }

    #[test]
    fn boot_and_fstab_and_machine_id() {
        let cfg = "menuentry 'Debian' {\n\tlinux\t/boot/vmlinuz-6.1.0-9-amd64 root=UUID=abc ro quiet\n}\n";
        let b = boot(Some(cfg), false, false, true, vec![]);
        assert_eq!(b.loader, "grub2");
        assert_eq!(b.cmdline.as_deref(), Some("root=UUID=abc ro quiet"));
        assert_eq!(boot(None, true, false, false, vec![]).loader, "extlinux");
        assert_eq!(boot(None, false, false, false, vec![]).loader, "none found");

        let fs = vec![Filesystem {
            device: "/dev/sda1".into(),
            fstype: "ext4".into(),
            uuid: "ABC-1".into(),
            label: "root".into(),
            mountpoint: Some("/".into()),
            size: None,
            used: None,
        }];
        let t = fstab(
            "UUID=abc-1 / ext4 defaults 0 1\nUUID=dead / ext4 nofail\nLABEL=gone /srv ext4\nproc /proc proc\n",
            &fs,
        );
        let found: Vec<bool> = t.iter().map(|e| e.found).collect();
        assert_eq!(found, [true, false, false, true]);

        assert_eq!(machine_id(Some("\n")), MachineId::Empty);
        assert_eq!(machine_id(None), MachineId::Absent);
        assert_eq!(
            machine_id(Some("uninitialized\n")),
            MachineId::Uninitialized
        );
        assert_eq!(machine_id(Some("0123\n")), MachineId::Set("0123".into()));
    }
}
