//! The host reader: raw and qcow2 images with ext2/3/4 (and a FAT EFI system partition) read
//! in-process (`diskread` for the container and partitions, ext4-view and `fat` for the
//! filesystems), nothing mounted or booted.

use super::*;

/// A filesystem the host reader reads.
enum Fs {
    Ext4(ext4_view::Ext4),
    /// An EFI system partition.
    Fat(Box<super::fat::Fat>),
}

impl Fs {
    fn exists(&self, p: &str) -> bool {
        match self {
            Fs::Ext4(fs) => fs.exists(p).unwrap_or(false),
            Fs::Fat(fat) => fat.exists(p),
        }
    }
}

/// The host reader's view: ext2/3/4 and FAT filesystems mounted by mountpoint (longest first).
pub struct HostView {
    mounts: Vec<(String, Fs)>,
    /// The disk's virtual size: no file holds more data than that (a larger size is a sparse
    /// claim, which is not hashed).
    disk_size: u64,
    /// The inodes the mounted filesystems can hold: a walk that meets more entries than twice
    /// that met a directory twice (a directory hard-linked into itself or into two places).
    inodes: u64,
}

impl HostView {
    fn at<'a>(&'a self, path: &'a str) -> Option<(&'a Fs, String)> {
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
    pub fn lstat(&self, path: &str) -> Option<Stat> {
        match self.at(path)? {
            (Fs::Ext4(fs), p) => Some(stat(&fs.symlink_metadata(p.as_str()).ok()?)),
            (Fs::Fat(fat), p) => fat.lstat(&p),
        }
    }

    /// A directory's entries (names, without `.` and `..`; names that are not UTF-8 skipped).
    fn dir_entries(&self, dir: &str) -> Vec<(String, ext4_view::DirEntry)> {
        let Some((Fs::Ext4(fs), p)) = self.at(dir) else {
            return Vec::new();
        };
        let Ok(rd) = fs.read_dir(p.as_str()) else {
            return Vec::new();
        };
        rd.filter_map(|e| e.ok())
            .filter_map(|e| Some((e.file_name().as_str().ok()?.to_string(), e)))
            .filter(|(n, _)| n != "." && n != "..")
            .collect()
    }

    /// A directory's entries as full paths with their `lstat`, each read from the inode its
    /// entry names (resolving every path from the root again made a walk cost its depth per
    /// entry).
    pub fn entries(&self, dir: &str) -> Vec<(String, Stat)> {
        let full = |name: &str| {
            if dir == "/" {
                format!("/{name}")
            } else {
                format!("{dir}/{name}")
            }
        };
        if let Some((Fs::Fat(fat), p)) = self.at(dir) {
            return fat
                .entries(&p)
                .into_iter()
                .map(|(n, st)| (full(&n), st))
                .collect();
        }
        let mut out = Vec::new();
        for (name, e) in self.dir_entries(dir) {
            let path = full(&name);
            // A mountpoint shows the mounted filesystem's root, not the directory below it.
            let st = if self.mounts.iter().any(|(mp, _)| *mp == path) {
                self.lstat(&path)
            } else {
                e.metadata().ok().map(|m| stat(&m))
            };
            if let Some(st) = st {
                out.push((path, st));
            }
        }
        out
    }

    /// The most entries a walk of this image can meet without meeting a directory twice:
    /// every entry is an inode, or one more name of a hard-linked file.
    pub fn walk_bound(&self) -> u64 {
        self.inodes.saturating_mul(2).saturating_add(10_000)
    }

    /// SHA-256 of a regular file, read in 1 MiB pieces; a file claiming more bytes than the
    /// whole disk (a sparse TiB in an 8 MiB image) is refused instead of hashed for hours.
    pub fn sha256(&self, path: &str) -> Result<String, String> {
        use sha2::Digest;
        let (fs, p) = self.at(path).ok_or_else(|| format!("{path}: not found"))?;
        let fs = match fs {
            Fs::Ext4(fs) => fs,
            Fs::Fat(fat) => {
                let bytes = fat
                    .read(&p, self.disk_size)
                    .ok_or_else(|| format!("{path}: not a readable file"))?;
                return Ok(hex::encode(sha2::Sha256::digest(&bytes)));
            }
        };
        let len = fs
            .metadata(p.as_str())
            .map_err(|e| format!("{path}: {e}"))?
            .len();
        if len > self.disk_size {
            return Err(format!(
                "{path}: claims {len} bytes, more than the whole disk ({}): not hashed",
                self.disk_size
            ));
        }
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

fn partition_info(p: &crate::diskread::Part) -> PartitionInfo {
    PartitionInfo {
        device: format!("/dev/sda{}", p.number),
        number: p.number,
        start: p.start,
        size: p.size,
        kind: p.kind.clone(),
        bootable: p.bootable,
    }
}

fn stat(m: &ext4_view::Metadata) -> Stat {
    let t = m.modified();
    (
        m.mode() as u32 & 0o7777 | kind_bits(m),
        m.uid() as i64,
        m.gid() as i64,
        m.len() as i64,
        t.seconds() * 1_000_000_000 + t.nanoseconds() as i64,
    )
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
        match self.at(path)? {
            (Fs::Ext4(fs), p) => read_capped(fs, &p, path),
            (Fs::Fat(fat), p) => fat.read(&p, READ_MAX as u64),
        }
    }
    fn list(&self, dir: &str) -> Vec<String> {
        if let Some((Fs::Fat(fat), p)) = self.at(dir) {
            return fat.entries(&p).into_iter().map(|(n, _)| n).collect();
        }
        self.dir_entries(dir).into_iter().map(|(n, _)| n).collect()
    }
    fn readlink(&self, path: &str) -> Option<String> {
        let (Fs::Ext4(fs), p) = self.at(path)? else {
            return None;
        };
        fs.read_link(p.as_str())
            .ok()
            .map(|t| t.display().to_string())
    }
    fn is_symlink(&self, path: &str) -> bool {
        match self.at(path) {
            Some((Fs::Ext4(fs), p)) => fs
                .symlink_metadata(p.as_str())
                .is_ok_and(|m| m.is_symlink()),
            _ => false,
        }
    }
    fn exists(&self, path: &str) -> bool {
        self.at(path).is_some_and(|(fs, p)| fs.exists(&p))
    }
}

/// A guest file read whole, in pieces: its size is the image's claim (a crafted inode says
/// 64 GiB, and ext4-view's own `read` allocates what it claims), so past READ_MAX it is not read.
fn read_capped(fs: &ext4_view::Ext4, path: &str, shown: &str) -> Option<Vec<u8>> {
    let mut f = fs.open(path).ok()?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read_bytes(&mut buf).ok()?;
        if n == 0 {
            return Some(out);
        }
        if out.len() + n > READ_MAX {
            tracing::warn!(
                "{}: larger than {} MiB: not read",
                crate::quote::terminal(shown),
                READ_MAX >> 20
            );
            return None;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// The most of one guest file read whole (os-release, passwd, fstab, the dpkg status: far less).
const READ_MAX: usize = 64 << 20;

/// Why the host reader did not read an image.
#[derive(Debug)]
pub enum HostError {
    /// Not for the host reader (another format or filesystem, LVM, an rpm database, no single
    /// root): libguestfs reads it.
    Fallback(String),
    /// Corrupt where kiln parses it itself (the qcow2 container): not handed to another reader
    /// either (qemu would spin on the same tables).
    Corrupt(String),
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostError::Fallback(s) | HostError::Corrupt(s) => f.write_str(s),
        }
    }
}

fn fallback(why: &str) -> HostError {
    HostError::Fallback(why.to_string())
}

impl From<String> for HostError {
    fn from(s: String) -> Self {
        HostError::Fallback(s)
    }
}

impl From<crate::diskread::DiskError> for HostError {
    fn from(e: crate::diskread::DiskError) -> Self {
        match e {
            crate::diskread::DiskError::Corrupt(_) => HostError::Corrupt(e.to_string()),
            _ => HostError::Fallback(e.to_string()),
        }
    }
}

/// Inspect without an appliance: a raw or qcow2 image whose filesystems are all ext2/3/4 (or
/// swap, empty BIOS boot partitions, FAT EFI system partitions read by fatfs), read in-process
/// by ext4-view (pure Rust, read-only:
/// the image's bytes are parsed by memory-safe code, nothing is mounted or run). A `Fallback`
/// error means "use libguestfs", not that the image is bad.
pub fn read_host(image: &crate::diskread::Image) -> Result<Report, HostError> {
    let (view, facts) = open_host(image, Reach::Everything)?;
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

/// What each slice holds (ext2/3/4, swap, an empty BIOS boot partition), and the ext4 ones to
/// load with the inodes they can hold; anything else is for libguestfs.
#[allow(clippy::type_complexity)]
fn scan_filesystems(
    slices: &[(
        String,
        crate::diskread::Slice,
        Option<&crate::diskread::Part>,
    )],
) -> Result<Scanned, HostError> {
    use crate::diskread;
    let mut filesystems = Vec::new();
    let mut ext4s = Vec::new();
    let mut fats = Vec::new();
    for (dev, slice, part) in slices {
        let mut sb = vec![0u8; 2048];
        slice.read_at(0, &mut sb)?;
        if let Some((uuid, label, size, used)) = diskread::ext4_superblock(&sb[1024..]) {
            diskread::ext4_geometry_fits(&sb[1024..], slice.len)
                .map_err(|e| format!("{dev}: {e}"))?;
            filesystems.push(Filesystem {
                device: dev.clone(),
                fstype: "ext4".into(),
                uuid,
                label,
                mountpoint: None,
                size: Some(size),
                used: Some(used),
            });
            let inodes = diskread::ext4_inode_capacity(&sb[1024..], slice.len);
            ext4s.push((dev.clone(), slice.clone(), inodes));
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
        } else if let Some(uuid) = diskread::fat_volume_id(&sb[..512]) {
            fats.push((dev.clone(), slice.clone()));
            filesystems.push(Filesystem {
                device: dev.clone(),
                fstype: "vfat".into(),
                uuid,
                label: String::new(),
                mountpoint: None,
                size: None,
                used: None,
            });
        } else {
            return Err(format!("{dev}: not an ext2/3/4 filesystem").into());
        }
    }
    Ok((filesystems, ext4s, fats))
}

/// What `scan_filesystems` found: every filesystem, the ext4 ones to load with the inodes
/// they can hold, the FAT ones.
type Scanned = (
    Vec<Filesystem>,
    Vec<(String, crate::diskread::Slice, u64)>,
    Vec<(String, crate::diskread::Slice)>,
);

/// The host reader's view of an image and its disk facts (see `read_host` for what it
/// refuses).
/// How much of the guest a caller needs through the host reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Every filesystem fstab mounts (`kiln inspect`, `kiln diff`): a FAT one (an EFI system
    /// partition) sends the caller to libguestfs, so no report misses its files.
    Everything,
    /// The root filesystem and the ext4 ones fstab mounts (provisioning reads dpkg's status,
    /// apt's sources and the kernel): a FAT filesystem is left out.
    Root,
}

pub fn open_host(
    image: &crate::diskread::Image,
    reach: Reach,
) -> Result<(HostView, DiskFacts), HostError> {
    use crate::diskread::{self, Slice};
    let disk = diskread::open(image)?;
    let mut head = vec![0u8; 34 * 512];
    disk.read_at(0, &mut head)?;
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
    let (mut filesystems, ext4s, fats) = scan_filesystems(&slices)?;
    let mut loaded: Vec<(String, Fs)> = Vec::new();
    let mut inodes = Vec::new();
    for (dev, slice, n) in ext4s {
        let fs = ext4_view::Ext4::load(Box::new(slice)).map_err(|e| format!("{dev}: {e}"))?;
        loaded.push((dev, Fs::Ext4(fs)));
        inodes.push(n);
    }
    let roots: Vec<usize> = loaded
        .iter()
        .enumerate()
        .filter(|(_, (_, fs))| {
            matches!(fs, Fs::Ext4(_))
                && (fs.exists("/etc/os-release") || fs.exists("/usr/lib/os-release"))
                && fs.exists("/etc/fstab")
        })
        .map(|(i, _)| i)
        .collect();
    let [root] = roots[..] else {
        return Err(format!("{} operating system roots", roots.len()).into());
    };
    let Fs::Ext4(root_fs) = &loaded[root].1 else {
        unreachable!("roots are ext4")
    };
    let text = |p: &str| read_capped(root_fs, p, p).and_then(|b| String::from_utf8(b).ok());
    let osr = text("/etc/os-release")
        .or_else(|| text("/usr/lib/os-release"))
        .unwrap_or_default();
    let Some((_, package_management)) = crate::guest::distro_from_os_release(&osr) else {
        return Err(fallback("a distribution kiln does not map"));
    };
    if package_management != "apt" {
        return Err(fallback("an rpm database (read through libguestfs)"));
    }
    let fstab_text = text("/etc/fstab").unwrap_or_default();
    // FAT filesystems are loaded when fstab mounts them (an EFI system partition).
    for (dev, slice) in fats {
        if reach == Reach::Everything {
            let fat = super::fat::Fat::open(slice).map_err(|e| fallback(&format!("{dev}: {e}")))?;
            if let Some(f) = filesystems.iter_mut().find(|f| f.device == dev) {
                (f.label, f.size, f.used) = fat.label_and_sizes();
            }
            loaded.push((dev, Fs::Fat(Box::new(fat))));
            inodes.push(0);
        }
    }
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
        let fat = found.is_some_and(|i| filesystems[i].fstype == "vfat");
        match found.and_then(|i| loaded.iter().position(|(d, _)| *d == filesystems[i].device)) {
            Some(i) => mounts.push((mp, i)),
            // Not loaded: only with `Reach::Root` (a FAT fatfs cannot open fell back above).
            None if fat => continue,
            // A filesystem the host reader cannot open, or one that is missing: libguestfs
            // decides (it reports the missing one the same way).
            None => return Err(format!("fstab's {mp}: not an ext4 filesystem of this disk").into()),
        }
    }
    for (mp, i) in &mounts {
        if let Some(f) = filesystems.iter_mut().find(|f| f.device == loaded[*i].0) {
            f.mountpoint = Some(mp.clone());
        }
    }
    mounts.sort_by_key(|(mp, _)| std::cmp::Reverse(mp.len()));
    let mut by_index: Vec<Option<Fs>> = loaded.into_iter().map(|(_, fs)| Some(fs)).collect();
    let mut view = HostView {
        mounts: Vec::new(),
        disk_size: disk.size(),
        inodes: 0,
    };
    for (mp, i) in mounts {
        // A filesystem mounted twice is read through its first mountpoint only.
        if let Some(fs) = by_index[i].take() {
            view.mounts.push((mp, fs));
            view.inodes = view.inodes.saturating_add(inodes[i]);
        }
    }
    let facts = DiskFacts {
        partition_table: table,
        partitions: parts.iter().map(partition_info).collect(),
        filesystems,
        mbr_grub: head[..512].windows(4).any(|w| w == b"GRUB"),
        package_management,
    };
    Ok((view, facts))
}
