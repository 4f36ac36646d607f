//! What differs between two images (or two directory trees): files added, removed and changed
//! (type, mode, owner, size, link target, content hash) outside a documented ignore list,
//! services enabled or disabled, packages added, removed and changed. Files that belong to a
//! changed package are attributed to it (dpkg's file lists) so a new package does not drown
//! the one file a recipe wrote. Listing is one `find` and batched `lstat`s per image; contents
//! are hashed only where the metadata cannot decide (same size, different mtime) unless every
//! file is asked for.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;

use crate::inspect::{self, Services};
use crate::inventory::{self, Package, PackageDiff};

/// Paths left out of the file comparison, and why: each differs between any two builds or is
/// reported in another section. A path is ignored when it is one of these or lies below one
/// that ends in `/`; entries ending in `*` match any path that starts with the rest.
pub const IGNORED: &[(&str, &str)] = &[
    (
        "/dev/",
        "device nodes and mount points of the running system",
    ),
    ("/proc/", "mount point"),
    ("/sys/", "mount point"),
    ("/run/", "runtime state"),
    ("/tmp/", "temporary files"),
    ("/var/tmp/", "temporary files"),
    ("/var/log/", "logs of the build"),
    ("/var/cache/", "caches (apt, man-db, ldconfig)"),
    ("/var/lib/apt/lists/", "package lists"),
    (
        "/var/lib/dpkg/",
        "package database: see the packages section",
    ),
    (
        "/var/lib/systemd/",
        "systemd state (random seed, timers, enablement records)",
    ),
    ("/var/lib/cloud/", "cloud-init's instance state"),
    ("/var/lib/dhcp/", "DHCP leases"),
    ("/lost+found/", "fsck's directory"),
    ("/etc/ld.so.cache", "derived from the libraries installed"),
    ("/boot/grub/grubenv", "boot loader state"),
];

/// A machine's identity: a golden image must carry none of it (every instance makes its
/// own), so these are compared like any file but shown in a section of their own, where a
/// baked-in host key or machine-id cannot hide among the other files.
pub const IDENTITY: &[&str] = &[
    "/etc/machine-id",
    "/var/lib/dbus/machine-id",
    "/etc/ssh/ssh_host_*",
];

pub fn ignored(path: &str) -> bool {
    IGNORED.iter().any(|(p, _)| matches(p, path))
}

pub fn identity(path: &str) -> bool {
    IDENTITY.iter().any(|p| matches(p, path))
}

/// `pattern` as the lists above write them: a directory ending in `/`, a prefix ending in
/// `*`, else the exact path.
fn matches(pattern: &str, path: &str) -> bool {
    {
        let p = pattern;
        if let Some(prefix) = p.strip_suffix('*') {
            path.starts_with(prefix)
        } else if let Some(dir) = p.strip_suffix('/') {
            path == dir || path.starts_with(p)
        } else {
            path == p
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Dir,
    Link,
    Other,
}

/// One path of a tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub kind: Kind,
    /// Permission bits (with setuid, setgid, sticky).
    pub mode: u32,
    pub uid: i64,
    pub gid: i64,
    pub size: i64,
    /// Nanoseconds since the epoch (files written in the same second still differ).
    #[serde(skip)]
    pub mtime: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl Entry {
    pub fn from_mode(mode: u32, uid: i64, gid: i64, size: i64, mtime: i64) -> Entry {
        let kind = match mode & 0o170000 {
            0o100000 => Kind::File,
            0o040000 => Kind::Dir,
            0o120000 => Kind::Link,
            _ => Kind::Other,
        };
        Entry {
            kind,
            mode: mode & 0o7777,
            uid,
            gid,
            size,
            mtime,
            target: None,
            sha256: None,
        }
    }
}

/// Absolute path ("/etc/motd") → entry.
pub type Tree = BTreeMap<String, Entry>;

/// Read access to a root filesystem: a mounted guest or a host directory.
pub trait Root {
    /// Every path below / that is not ignored (unless `all`), with metadata and link targets.
    fn tree(&self, all: bool) -> Result<Tree, String>;
    fn read(&self, path: &str) -> Option<Vec<u8>>;
    /// Names in a directory (empty when it is missing).
    fn list(&self, dir: &str) -> Vec<String>;
    fn sha256(&self, path: &str) -> Result<String, String>;
}

impl Root for crate::guest::Guest {
    fn tree(&self, all: bool) -> Result<Tree, String> {
        let paths: Vec<String> = self
            .find("/")
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|p| format!("/{}", p.trim_start_matches('/')))
            .filter(|p| all || !ignored(p))
            .collect();
        let stats = self.lstat_many(&paths).map_err(|e| e.to_string())?;
        let mut tree: Tree = paths
            .into_iter()
            .zip(stats)
            .map(|(p, s)| {
                (
                    p,
                    Entry::from_mode(s.mode, s.uid, s.gid, s.size, s.mtime_ns),
                )
            })
            .collect();
        let links: Vec<String> = tree
            .iter()
            .filter(|(_, e)| e.kind == Kind::Link)
            .map(|(p, _)| p.clone())
            .collect();
        let targets = self.readlink_many(&links).map_err(|e| e.to_string())?;
        for (p, t) in links.iter().zip(targets) {
            if let Some(e) = tree.get_mut(p) {
                e.target = Some(t);
            }
        }
        Ok(tree)
    }
    fn read(&self, path: &str) -> Option<Vec<u8>> {
        crate::guest::Guest::read(self, path).ok()
    }
    fn list(&self, dir: &str) -> Vec<String> {
        if !self.is_dir(dir) {
            return Vec::new();
        }
        self.ls(dir).unwrap_or_default()
    }
    fn sha256(&self, path: &str) -> Result<String, String> {
        crate::guest::Guest::sha256(self, path).map_err(|e| e.to_string())
    }
}

/// The most entries and the deepest directory a walk of an image takes. ext4-view shows no
/// inode numbers to remember, so a directory met twice (hard-linked into itself, or into two
/// places: a crafted image) is caught by count instead: a walk meeting more entries than the
/// filesystems have inodes (twice, for hard-linked files) met some directory again.
const WALK_MAX_ENTRIES: u64 = 4_000_000;
const WALK_MAX_DEPTH: usize = 64;

impl Root for inspect::HostView {
    fn tree(&self, all: bool) -> Result<Tree, String> {
        let bound = self.walk_bound().min(WALK_MAX_ENTRIES);
        let mut tree = Tree::new();
        let mut dirs = vec!["/".to_string()];
        while let Some(dir) = dirs.pop() {
            if dir.matches('/').count() > WALK_MAX_DEPTH {
                return Err(format!(
                    "{}: deeper than {WALK_MAX_DEPTH} directories (a directory linked into itself?)",
                    crate::quote::terminal(&dir.chars().take(200).collect::<String>())
                ));
            }
            if tree.len() as u64 > bound {
                return Err(format!(
                    "more than {bound} entries, more than the filesystems hold inodes: a \
                     directory is linked into two places"
                ));
            }
            for (p, (mode, uid, gid, size, mtime)) in self.entries(&dir) {
                if !all && ignored(&p) {
                    continue;
                }
                let mut e = Entry::from_mode(mode, uid, gid, size, mtime);
                match e.kind {
                    Kind::Dir => dirs.push(p.clone()),
                    Kind::Link => e.target = inspect::View::readlink(self, &p),
                    _ => {}
                }
                tree.insert(p, e);
            }
        }
        Ok(tree)
    }
    fn read(&self, path: &str) -> Option<Vec<u8>> {
        inspect::View::read(self, path)
    }
    fn list(&self, dir: &str) -> Vec<String> {
        inspect::View::list(self, dir)
    }
    fn sha256(&self, path: &str) -> Result<String, String> {
        inspect::HostView::sha256(self, path)
    }
}

/// The most of one tree file read whole (the dpkg status, unit files: far less).
const TREE_READ_MAX: u64 = 64 << 20;

/// A directory tree on the host (an unpacked image, a chroot).
pub struct HostDir<'a>(pub &'a Path);

impl HostDir<'_> {
    fn host(&self, path: &str) -> std::path::PathBuf {
        self.0.join(path.trim_start_matches('/'))
    }
}

impl Root for HostDir<'_> {
    fn tree(&self, all: bool) -> Result<Tree, String> {
        use std::os::unix::fs::MetadataExt;
        let mut tree = Tree::new();
        let walk = walkdir::WalkDir::new(self.0)
            .follow_links(false)
            .same_file_system(true)
            .min_depth(1)
            .into_iter()
            .filter_entry(|e| {
                let rel = e.path().strip_prefix(self.0).unwrap_or(e.path());
                all || !ignored(&format!("/{}", rel.display()))
            });
        for item in walk {
            let item = item.map_err(|e| e.to_string())?;
            let rel = format!(
                "/{}",
                item.path()
                    .strip_prefix(self.0)
                    .unwrap_or(item.path())
                    .display()
            );
            let md = item
                .metadata()
                .map_err(|e| format!("{}: {e}", item.path().display()))?;
            let mut e = Entry::from_mode(
                md.mode(),
                md.uid() as i64,
                md.gid() as i64,
                md.size() as i64,
                md.mtime() * 1_000_000_000 + md.mtime_nsec(),
            );
            if e.kind == Kind::Link {
                e.target = std::fs::read_link(item.path())
                    .ok()
                    .map(|t| t.display().to_string());
            }
            tree.insert(rel, e);
        }
        Ok(tree)
    }
    // Below the tree's root no link is followed, in any component (`var/lib/dpkg ->
    // /var/lib/dpkg` would read the host's package database), and only regular files are read
    // (a FIFO or device would hang or never end).
    fn read(&self, path: &str) -> Option<Vec<u8>> {
        use std::io::Read;
        let f = crate::hostfile::open_beneath(self.0, path, false).ok()?;
        if !f.metadata().ok()?.is_file() {
            return None;
        }
        let mut out = Vec::new();
        f.take(TREE_READ_MAX + 1).read_to_end(&mut out).ok()?;
        (out.len() as u64 <= TREE_READ_MAX).then_some(out)
    }
    fn list(&self, dir: &str) -> Vec<String> {
        crate::hostfile::list_beneath(self.0, dir).unwrap_or_default()
    }
    fn sha256(&self, path: &str) -> Result<String, String> {
        use sha2::Digest;
        use std::io::Read;
        let shown = || self.host(path).display().to_string();
        let mut f = crate::hostfile::open_beneath(self.0, path, false)
            .map_err(|e| format!("{}: {e}", shown()))?;
        if !f.metadata().map_err(|e| e.to_string())?.is_file() {
            return Err(format!("{}: not a regular file", shown()));
        }
        let mut h = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(|e| format!("{}: {e}", shown()))?;
            if n == 0 {
                return Ok(hex::encode(h.finalize()));
            }
            h.update(&buf[..n]);
        }
    }
}

/// Everything one side of a diff needs.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub tree: Tree,
    pub packages: Vec<Package>,
    pub services: Services,
    /// Path → the package whose dpkg file list names it (filled for changed packages only:
    /// `package_files`).
    pub owners: BTreeMap<String, String>,
}

/// Read a root's tree, packages, services and package file lists.
pub fn snapshot(root: &dyn Root, all: bool) -> Result<Snapshot, String> {
    let t0 = std::time::Instant::now();
    let tree = root.tree(all)?;
    tracing::debug!("listed {} paths in {:.1?}", tree.len(), t0.elapsed());
    let text = |p: &str| {
        root.read(p)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    let packages = inventory::parse_dpkg_status(&text("/var/lib/dpkg/status").unwrap_or_default());
    // Services from the listing itself: no further calls.
    let sys = "/etc/systemd/system/";
    let mut wants = Vec::new();
    let mut links = Vec::new();
    for (p, e) in tree.range(sys.to_string()..) {
        let Some(rel) = p.strip_prefix(sys) else {
            break;
        };
        match rel.split_once('/') {
            Some((dir, _)) if dir.ends_with(".wants") || dir.ends_with(".requires") => {
                wants.push(p.clone())
            }
            None if e.kind == Kind::Link => {
                links.push((p.clone(), e.target.clone().unwrap_or_default()))
            }
            _ => {}
        }
    }
    let services = inspect::services(&wants, &links);
    tracing::debug!("read packages by {:.1?}", t0.elapsed());
    Ok(Snapshot {
        tree,
        packages,
        services,
        owners: BTreeMap::new(),
    })
}

/// Names of the packages added, removed or changed between two lists.
pub fn touched_packages(a: &[Package], b: &[Package]) -> Vec<String> {
    let d = inventory::diff_packages(a, b);
    let mut names: BTreeSet<String> = d
        .added
        .iter()
        .chain(&d.removed)
        .map(|p| p.name.clone())
        .collect();
    names.extend(d.changed.into_iter().map(|c| c.0));
    names.into_iter().collect()
}

/// Path → package for the files dpkg lists for `packages` (NAME.list or NAME:ARCH.list).
pub fn package_files(root: &dyn Root, packages: &[String]) -> BTreeMap<String, String> {
    let mut owners = BTreeMap::new();
    if packages.is_empty() {
        return owners;
    }
    let wanted: BTreeSet<&str> = packages.iter().map(String::as_str).collect();
    let info = "/var/lib/dpkg/info";
    for name in root.list(info) {
        let Some(pkg) = name.strip_suffix(".list") else {
            continue;
        };
        let pkg = pkg.split(':').next().unwrap_or(pkg);
        if !wanted.contains(pkg) {
            continue;
        }
        let text = root
            .read(&format!("{info}/{name}"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        for line in text.lines() {
            if line.starts_with('/') && line != "/." {
                owners.insert(line.to_string(), pkg.to_string());
            }
        }
    }
    owners
}

/// Paths whose content has to be hashed on both sides: regular files of the same size whose
/// metadata cannot tell (a different mtime, or every one when `all_contents`).
pub fn to_hash(a: &Tree, b: &Tree, all_contents: bool) -> Vec<String> {
    a.iter()
        .filter_map(|(p, ea)| {
            let eb = b.get(p)?;
            (ea.kind == Kind::File
                && eb.kind == Kind::File
                && ea.size == eb.size
                && ea.size > 0
                && (all_contents || ea.mtime != eb.mtime))
                .then(|| p.clone())
        })
        .collect()
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FileChange {
    pub path: String,
    /// What differs: "type", "mode 0644 -> 0600", "owner 0:0 -> 1000:1000", "size", "target",
    /// "content".
    pub what: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FileDiff {
    pub added: Vec<FileChange>,
    pub removed: Vec<FileChange>,
    pub changed: Vec<FileChange>,
}

impl FileDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ServiceDiff {
    pub enabled: Vec<String>,
    pub disabled: Vec<String>,
    pub masked: Vec<String>,
    pub unmasked: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Diff {
    pub packages: PackageDiff,
    pub files: FileDiff,
    /// The `IDENTITY` files (host keys, machine-id), out of `files`.
    pub identity: FileDiff,
    pub services: ServiceDiff,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.packages == PackageDiff::default()
            && self.files.is_empty()
            && self.identity.is_empty()
            && self.services == ServiceDiff::default()
    }
}

impl FileDiff {
    /// The changes to `IDENTITY` files, taken out of this one.
    fn take_identity(&mut self) -> FileDiff {
        let split = |v: &mut Vec<FileChange>| {
            let (id, rest): (Vec<FileChange>, Vec<FileChange>) =
                v.drain(..).partition(|c| identity(&c.path));
            *v = rest;
            id
        };
        FileDiff {
            added: split(&mut self.added),
            removed: split(&mut self.removed),
            changed: split(&mut self.changed),
        }
    }
}

fn what_changed(a: &Entry, b: &Entry) -> Vec<String> {
    let mut w = Vec::new();
    if a.kind != b.kind {
        w.push(format!("type {:?} -> {:?}", a.kind, b.kind).to_lowercase());
        return w;
    }
    if a.mode != b.mode {
        w.push(format!("mode {:04o} -> {:04o}", a.mode, b.mode));
    }
    if (a.uid, a.gid) != (b.uid, b.gid) {
        w.push(format!("owner {}:{} -> {}:{}", a.uid, a.gid, b.uid, b.gid));
    }
    match a.kind {
        Kind::File if a.size != b.size => w.push(format!("size {} -> {}", a.size, b.size)),
        Kind::File if a.sha256.is_some() && b.sha256.is_some() && a.sha256 != b.sha256 => {
            w.push("content".into())
        }
        Kind::Link if a.target != b.target => w.push(format!(
            "target {} -> {}",
            a.target.as_deref().unwrap_or("?"),
            b.target.as_deref().unwrap_or("?")
        )),
        _ => {}
    }
    w
}

/// Compare two snapshots whose candidate files (`to_hash`) carry their hashes.
pub fn diff(a: &Snapshot, b: &Snapshot) -> Diff {
    let packages = inventory::diff_packages(&a.packages, &b.packages);
    let touched: BTreeSet<&str> = packages
        .added
        .iter()
        .chain(&packages.removed)
        .map(|p| p.name.as_str())
        .chain(packages.changed.iter().map(|c| c.0.as_str()))
        .collect();
    // A file belongs to a changed package when either side's file list says so.
    let owner = |p: &str| {
        b.owners
            .get(p)
            .or_else(|| a.owners.get(p))
            .filter(|o| touched.contains(o.as_str()))
            .cloned()
    };
    let mut files = FileDiff::default();
    for (p, eb) in &b.tree {
        match a.tree.get(p) {
            None => files.added.push(FileChange {
                path: p.clone(),
                what: vec![format!("{:?}", eb.kind).to_lowercase()],
                package: owner(p),
            }),
            Some(ea) => {
                let what = what_changed(ea, eb);
                if !what.is_empty() {
                    files.changed.push(FileChange {
                        path: p.clone(),
                        what,
                        package: owner(p),
                    });
                }
            }
        }
    }
    for (p, ea) in &a.tree {
        if !b.tree.contains_key(p) {
            files.removed.push(FileChange {
                path: p.clone(),
                what: vec![format!("{:?}", ea.kind).to_lowercase()],
                package: owner(p),
            });
        }
    }
    let set = |v: &[String]| v.iter().cloned().collect::<BTreeSet<String>>();
    let (ea, eb) = (set(&a.services.enabled), set(&b.services.enabled));
    let (ma, mb) = (set(&a.services.masked), set(&b.services.masked));
    let services = ServiceDiff {
        enabled: eb.difference(&ea).cloned().collect(),
        disabled: ea.difference(&eb).cloned().collect(),
        masked: mb.difference(&ma).cloned().collect(),
        unmasked: ma.difference(&mb).cloned().collect(),
    };
    let identity = files.take_identity();
    Diff {
        packages,
        files,
        identity,
        services,
    }
}

/// Fill in the hashes of `paths` from `root`.
pub fn hash_into(root: &dyn Root, tree: &mut Tree, paths: &[String]) -> Result<(), String> {
    for p in paths {
        let h = root.sha256(p)?;
        if let Some(e) = tree.get_mut(p) {
            e.sha256 = Some(h);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(size: i64, mtime: i64) -> Entry {
        Entry::from_mode(0o100644, 0, 0, size, mtime)
    }

    #[test]
    fn ignore_list_matches_directories_prefixes_and_exact_paths() {
        for p in [
            "/var/log",
            "/var/log/apt/history.log",
            "/var/lib/dpkg/status",
        ] {
            assert!(ignored(p), "{p}");
        }
        // A machine's identity is never ignored: it has a section of its own.
        for p in ["/etc/ssh/ssh_host_ed25519_key.pub", "/etc/machine-id"] {
            assert!(!ignored(p) && identity(p), "{p}");
        }
        for p in [
            "/var/logs",
            "/etc/machine-id.bak",
            "/etc/ssh/sshd_config",
            "/var/lib",
        ] {
            assert!(!ignored(p), "{p}");
        }
    }

    #[test]
    fn host_keys_and_machine_id_are_shown_in_their_own_section() {
        let mut a = Snapshot::default();
        a.tree.insert("/etc/machine-id".into(), file(0, 1));
        a.tree.insert("/etc/motd".into(), file(5, 1));
        let mut b = a.clone();
        b.tree.insert("/etc/machine-id".into(), file(33, 2));
        b.tree
            .insert("/etc/ssh/ssh_host_ed25519_key".into(), file(411, 2));
        let d = diff(&a, &b);
        assert!(d.files.is_empty(), "{:?}", d.files);
        let paths = |v: &[FileChange]| v.iter().map(|c| c.path.clone()).collect::<Vec<_>>();
        assert_eq!(paths(&d.identity.added), ["/etc/ssh/ssh_host_ed25519_key"]);
        assert_eq!(paths(&d.identity.changed), ["/etc/machine-id"]);
        assert!(!d.is_empty());
    }

    #[test]
    fn only_same_size_files_with_other_mtimes_are_hashed() {
        let a: Tree = [
            ("/same".to_string(), file(5, 1)),
            ("/touched".to_string(), file(5, 1)),
            ("/grown".to_string(), file(5, 1)),
            ("/empty".to_string(), file(0, 1)),
        ]
        .into();
        let mut b = a.clone();
        b.insert("/touched".into(), file(5, 2));
        b.insert("/grown".into(), file(6, 2));
        b.insert("/empty".into(), file(0, 2));
        assert_eq!(to_hash(&a, &b, false), ["/touched"]);
        assert_eq!(to_hash(&a, &b, true), ["/same", "/touched"]);
    }

    #[test]
    fn diff_reports_files_services_packages_and_attributes_package_files() {
        let pkg = |n: &str, v: &str| Package {
            name: n.into(),
            version: v.into(),
            arch: "amd64".into(),
            source: None,
        };
        let mut a = Snapshot::default();
        a.tree.insert("/etc/motd".into(), file(5, 1));
        a.tree.insert("/etc/gone".into(), file(1, 1));
        a.tree.insert("/bin/sh".into(), {
            let mut e = Entry::from_mode(0o120777, 0, 0, 4, 1);
            e.target = Some("dash".into());
            e
        });
        a.packages = vec![pkg("tree", "1")];
        a.services.enabled = vec!["multi-user.target.wants/ssh.service".into()];
        let mut b = a.clone();
        let mut motd = file(5, 2);
        motd.sha256 = Some("bb".into());
        a.tree.get_mut("/etc/motd").unwrap().sha256 = Some("aa".into());
        b.tree.insert("/etc/motd".into(), motd);
        b.tree.remove("/etc/gone");
        b.tree.insert("/usr/bin/jq".into(), file(10, 1));
        b.tree
            .insert("/etc/new".into(), Entry::from_mode(0o100600, 0, 0, 3, 1));
        b.tree.get_mut("/bin/sh").unwrap().target = Some("bash".into());
        b.packages.push(pkg("jq", "1.6"));
        b.owners.insert("/usr/bin/jq".into(), "jq".into());
        // Owned by an unchanged package: not attributed.
        b.owners.insert("/etc/new".into(), "tree".into());
        b.services.enabled.clear();
        b.services.masked = vec!["apt-daily.timer".into()];
        let d = diff(&a, &b);
        assert_eq!(d.packages.added, [pkg("jq", "1.6")]);
        let added: Vec<(&str, Option<&str>)> = d
            .files
            .added
            .iter()
            .map(|c| (c.path.as_str(), c.package.as_deref()))
            .collect();
        assert_eq!(added, [("/etc/new", None), ("/usr/bin/jq", Some("jq"))]);
        assert_eq!(d.files.removed[0].path, "/etc/gone");
        let changed: Vec<(&str, &[String])> = d
            .files
            .changed
            .iter()
            .map(|c| (c.path.as_str(), c.what.as_slice()))
            .collect();
        assert_eq!(
            changed,
            [
                ("/bin/sh", &["target dash -> bash".to_string()][..]),
                ("/etc/motd", &["content".to_string()][..])
            ]
        );
        assert_eq!(d.services.disabled, ["multi-user.target.wants/ssh.service"]);
        assert_eq!(d.services.masked, ["apt-daily.timer"]);
        assert!(diff(&a, &a).is_empty());
    }

    #[test]
    fn host_directories_are_walked_without_following_links() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("etc/systemd/system/multi-user.target.wants")).unwrap();
        std::fs::write(r.join("etc/motd"), "hi\n").unwrap();
        std::os::unix::fs::symlink(
            "/lib/systemd/system/ssh.service",
            r.join("etc/systemd/system/multi-user.target.wants/ssh.service"),
        )
        .unwrap();
        std::os::unix::fs::symlink("/etc/passwd", r.join("etc/escape")).unwrap();
        std::fs::create_dir_all(r.join("var/log")).unwrap();
        std::fs::write(r.join("var/log/x"), "").unwrap();
        let root = HostDir(r);
        let s = snapshot(&root, false).unwrap();
        assert!(s.tree.contains_key("/etc/motd"));
        assert!(!s.tree.keys().any(|k| k.starts_with("/var/log")));
        assert_eq!(s.tree["/etc/escape"].target.as_deref(), Some("/etc/passwd"));
        assert_eq!(root.read("/etc/escape"), None);
        assert_eq!(s.services.enabled, ["multi-user.target.wants/ssh.service"]);
        assert_eq!(
            root.sha256("/etc/motd").unwrap(),
            "98ea6e4f216f2fb4b69fff9b3a44842c38686ca685f3f55dc48c5d3fb1107be4"
        );
    }
}
