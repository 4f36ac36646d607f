//! libguestfs (`guestfs` crate): one appliance launch serves the cloud-init and sysprep stages.
//! The crate's handle is not `Send` and its error has no `Display`; this module owns the handle
//! and turns errors into ones that name the disk and the operation.

use std::path::{Path, PathBuf};

use guestfs::{AddDriveOptArgs, GlobExpandOptArgs, Handle, IsFileOptArgs};

mod parse;
mod watchdog;

pub use parse::*;

#[derive(Debug, thiserror::Error)]
#[error("libguestfs on {disk}: {op}: {message}")]
pub struct GuestError {
    pub disk: PathBuf,
    pub op: String,
    pub message: String,
}

pub struct Guest {
    /// First: dropped (stopped) before the handle closes the appliance and its pid is reaped.
    watch: Option<watchdog::CancelWatch>,
    g: Handle,
    disk: PathBuf,
    /// Distribution as inspected (e.g. "debian").
    pub distro: String,
    /// Package manager as inspected (e.g. "apt", "dnf").
    pub package_management: String,
    /// Filesystems mounted by `open`, parents first: (mountpoint, device).
    mounts: Vec<(String, String)>,
    /// (device, type) as `open`'s quick inspection listed them (None when it did not list).
    listed: Option<Vec<(String, String)>>,
}

/// How to launch the appliance.
#[derive(Debug, Clone, Copy, Default)]
pub struct Launch {
    /// Software emulation (where KVM is unusable).
    pub tcg: bool,
    /// Nothing can be written to the disk.
    pub readonly: bool,
    /// User-mode network for the appliance (package installs in customize).
    pub network: bool,
}

fn msg(e: guestfs::Error) -> String {
    match e {
        guestfs::Error::API(api) => {
            // APIError's fields are private; its Debug carries operation, message and errno.
            let dbg = format!("{api:?}");
            match (dbg.find("message: \""), dbg.rfind("\", errno")) {
                (Some(a), Some(b)) if b > a + 10 => dbg[a + 10..b].replace("\\n", " "),
                _ => dbg,
            }
        }
        other => format!("{other:?}"),
    }
}

/// libguestfs version, e.g. "1.48.6".
pub fn version() -> String {
    Handle::create()
        .ok()
        .and_then(|g| g.version().ok())
        .map(|v| format!("{}.{}.{}", v.major, v.minor, v.release))
        .unwrap_or_else(|| "unknown".into())
}

/// Error converter for calls on a handle of `disk`.
fn ge(disk: &Path, op: &str) -> impl FnOnce(guestfs::Error) -> GuestError {
    let disk = disk.to_path_buf();
    let op = op.to_string();
    move |err| GuestError {
        disk,
        op,
        message: msg(err),
    }
}

/// Try twice: under load the TCG appliance occasionally dies while booting, or wedges (the
/// launch watchdog kills it).
fn retry(f: impl Fn() -> Result<Guest, GuestError>) -> Result<Guest, GuestError> {
    match f() {
        Ok(g) => Ok(g),
        Err(e) => {
            tracing::warn!("libguestfs launch failed, retrying once: {e}");
            f()
        }
    }
}

impl Guest {
    fn e(&self, op: impl Into<String>) -> impl FnOnce(guestfs::Error) -> GuestError {
        ge(&self.disk, &op.into())
    }

    /// Launch the appliance on `disk` (read-write), inspect it and mount its filesystems.
    /// `tcg` forces software emulation (needed where KVM is unusable). Launch is retried once:
    /// under load the TCG appliance occasionally dies during boot.
    pub fn open(disk: &Path, format: &str, tcg: bool) -> Result<Guest, GuestError> {
        Self::open_with(
            disk,
            format,
            Launch {
                tcg,
                ..Default::default()
            },
        )
    }

    /// Like `open`, but nothing can be written to the disk (dry runs, inspection).
    pub fn open_readonly(disk: &Path, format: &str, tcg: bool) -> Result<Guest, GuestError> {
        Self::open_with(
            disk,
            format,
            Launch {
                tcg,
                readonly: true,
                ..Default::default()
            },
        )
    }

    /// Launch with explicit options, inspect and mount.
    pub fn open_with(disk: &Path, format: &str, opts: Launch) -> Result<Guest, GuestError> {
        retry(|| Self::try_open(disk, format, opts))
    }

    /// Launch on `disk` and mount `mounts` (device, mount point; parents first) without
    /// inspection (for a disk that is not bootable yet, e.g. while installing its bootloader).
    pub fn open_device(
        disk: &Path,
        format: &str,
        tcg: bool,
        mounts: &[(&str, &str)],
    ) -> Result<Guest, GuestError> {
        retry(|| {
            let g = Self::launch(
                disk,
                format,
                Launch {
                    tcg,
                    ..Default::default()
                },
            )?;
            for (device, at) in mounts {
                g.mount(device, at)
                    .map_err(ge(disk, &format!("mounting {device} on {at}")))?;
            }
            Ok(Guest {
                watch: None,
                g,
                disk: disk.to_path_buf(),
                distro: "unknown".into(),
                package_management: "unknown".into(),
                mounts: mounts
                    .iter()
                    .map(|(d, at)| (at.to_string(), d.to_string()))
                    .collect(),
                listed: None,
            })
        })
    }

    fn launch(disk: &Path, format: &str, opts: Launch) -> Result<Handle, GuestError> {
        let ge = |op: &str| ge(disk, op);
        let Launch {
            tcg,
            readonly,
            network,
        } = opts;
        let g = Handle::create().map_err(ge("creating handle"))?;
        if network {
            g.set_network(true).map_err(ge("set_network"))?;
        }
        if tcg {
            g.set_backend("direct").map_err(ge("set_backend"))?;
            g.set_backend_settings(&["force_tcg"])
                .map_err(ge("set_backend_settings"))?;
        }
        // Own process group: a terminal Ctrl-C reaches kiln, which then closes the appliance.
        g.set_pgroup(true).map_err(ge("set_pgroup"))?;
        g.set_smp(2).map_err(ge("set_smp"))?;
        g.add_drive(
            &disk.display().to_string(),
            AddDriveOptArgs {
                format: Some(format),
                readonly: Some(readonly),
                discard: Some("besteffort"),
                ..Default::default()
            },
        )
        .map_err(ge("add_drive"))?;
        // The token finds this launch's qemu for the watchdog (launches run in parallel).
        let token = watchdog::token();
        g.set_append(Some(&token)).map_err(ge("set_append"))?;
        let dog = watchdog::Watchdog::start(token);
        let launched = g.launch();
        match (launched, dog.finish()) {
            (Ok(()), _) => Ok(g),
            (Err(_), Some(stall)) => Err(GuestError {
                disk: disk.to_path_buf(),
                op: "launch".into(),
                message: stall.to_string(),
            }),
            (Err(e), None) => Err(ge("launch")(e)),
        }
    }

    fn try_open(disk: &Path, format: &str, opts: Launch) -> Result<Guest, GuestError> {
        let ge = |op: &str| ge(disk, op);
        let g = Self::launch(disk, format, opts)?;
        // libguestfs's inspect_os costs ~5 s under TCG (it loads augeas); reading os-release
        // and fstab directly takes a fraction of that. Anything unusual falls back to it.
        if let Some(found) = quick_inspect(&g) {
            for (mp, dev) in &found.mounts {
                g.mount(dev, mp)
                    .map_err(ge(&format!("mounting {dev} on {mp}")))?;
            }
            tracing::debug!(
                "inspected {} ({}): {:?}",
                found.distro,
                found.package_management,
                found.mounts
            );
            return Ok(Guest {
                watch: None,
                g,
                disk: disk.to_path_buf(),
                distro: found.distro,
                package_management: found.package_management,
                mounts: found.mounts,
                listed: Some(found.filesystems),
            });
        }
        let roots = g.inspect_os().map_err(ge("inspect_os"))?;
        let root = match roots.as_slice() {
            [r] => r.clone(),
            [] => {
                return Err(GuestError {
                    disk: disk.to_path_buf(),
                    op: "inspect_os".into(),
                    message: "no operating system found in the image".into(),
                })
            }
            _ => {
                return Err(GuestError {
                    disk: disk.to_path_buf(),
                    op: "inspect_os".into(),
                    message: "more than one operating system in the image".into(),
                })
            }
        };
        let distro = g
            .inspect_get_distro(&root)
            .unwrap_or_else(|_| "unknown".into());
        let package_management = g
            .inspect_get_package_management(&root)
            .unwrap_or_else(|_| "unknown".into());
        let mut mps: Vec<(String, String)> = g
            .inspect_get_mountpoints(&root)
            .map_err(ge("inspect_get_mountpoints"))?
            .into_iter()
            .collect();
        // Mount parents before children.
        mps.sort_by_key(|(mp, _)| mp.len());
        for (mp, dev) in &mps {
            g.mount(dev, mp)
                .map_err(ge(&format!("mounting {dev} on {mp}")))?;
        }
        Ok(Guest {
            watch: None,
            g,
            disk: disk.to_path_buf(),
            distro,
            package_management,
            mounts: mps,
            listed: None,
        })
    }

    pub fn exists(&self, path: &str) -> Result<bool, GuestError> {
        self.g
            .exists(path)
            .map_err(self.e(format!("exists {path}")))
    }

    pub fn is_file(&self, path: &str) -> Result<bool, GuestError> {
        self.g
            .is_file(path, IsFileOptArgs::default())
            .map_err(self.e(format!("is_file {path}")))
    }

    pub fn is_symlink(&self, path: &str) -> bool {
        self.g.is_symlink(path).unwrap_or(false)
    }

    pub fn read(&self, path: &str) -> Result<Vec<u8>, GuestError> {
        self.g
            .read_file(path)
            .map_err(self.e(format!("reading {path}")))
    }

    pub fn write(&self, path: &str, content: &[u8]) -> Result<(), GuestError> {
        if let Some(parent) = Path::new(path).parent() {
            let p = parent.display().to_string();
            self.g
                .mkdir_p(&p)
                .map_err(self.e(format!("mkdir -p {p}")))?;
        }
        self.g
            .write(path, content)
            .map_err(self.e(format!("writing {path}")))
    }

    /// Paths matching a shell glob (no trailing slash on directories).
    pub fn glob(&self, pattern: &str) -> Result<Vec<String>, GuestError> {
        self.g
            .glob_expand(
                pattern,
                GlobExpandOptArgs {
                    directoryslash: Some(false),
                },
            )
            .map_err(self.e(format!("glob {pattern}")))
    }

    /// Every entry of a directory, dot-files included (no `.` or `..`).
    pub fn ls(&self, dir: &str) -> Result<Vec<String>, GuestError> {
        self.g.ls(dir).map_err(self.e(format!("ls {dir}")))
    }

    pub fn rm_rf(&self, path: &str) -> Result<(), GuestError> {
        self.g.rm_rf(path).map_err(self.e(format!("rm -rf {path}")))
    }

    /// All paths under `dir` (relative to it), or nothing when it does not exist.
    pub fn find(&self, dir: &str) -> Result<Vec<String>, GuestError> {
        if !self.g.is_dir(dir, Default::default()).unwrap_or(false) {
            return Ok(Vec::new());
        }
        self.g.find(dir).map_err(self.e(format!("find {dir}")))
    }

    /// Run a command inside the guest's root (libguestfs bind-mounts /dev, /proc and /sys).
    pub fn command(&self, argv: &[&str]) -> Result<String, GuestError> {
        self.g
            .command(argv)
            .map_err(self.e(format!("running {}", argv.join(" "))))
    }

    /// Discard unused blocks so the disk (and every output) shrinks.
    pub fn fstrim(&self) {
        if let Err(e) = self.g.fstrim("/", Default::default()) {
            tracing::debug!("fstrim: {}", msg(e));
        }
    }

    pub fn disk(&self) -> &Path {
        &self.disk
    }

    pub fn is_dir(&self, path: &str) -> bool {
        self.g.is_dir(path, Default::default()).unwrap_or(false)
    }

    pub fn mkdir_p(&self, path: &str) -> Result<(), GuestError> {
        self.g
            .mkdir_p(path)
            .map_err(self.e(format!("mkdir -p {path}")))
    }

    pub fn chmod(&self, mode: u32, path: &str) -> Result<(), GuestError> {
        self.g
            .chmod(mode as i32, path)
            .map_err(self.e(format!("chmod {mode:o} {path}")))
    }

    pub fn chown(&self, uid: i64, gid: i64, path: &str) -> Result<(), GuestError> {
        self.g
            .chown(uid as i32, gid as i32, path)
            .map_err(self.e(format!("chown {uid}:{gid} {path}")))
    }

    pub fn ln_sf(&self, target: &str, link: &str) -> Result<(), GuestError> {
        self.g
            .ln_sf(target, link)
            .map_err(self.e(format!("ln -sf {target} {link}")))
    }

    pub fn touch(&self, path: &str) -> Result<(), GuestError> {
        self.g.touch(path).map_err(self.e(format!("touch {path}")))
    }

    pub fn append(&self, path: &str, content: &[u8]) -> Result<(), GuestError> {
        self.g
            .write_append(path, content)
            .map_err(self.e(format!("appending to {path}")))
    }

    /// Copy a host file to `dest` in the guest.
    pub fn upload(&self, local: &Path, dest: &str) -> Result<(), GuestError> {
        self.g
            .upload(&local.display().to_string(), dest)
            .map_err(self.e(format!("uploading {} to {dest}", local.display())))
    }

    /// Copy a host file or directory (recursively) into the guest directory `dir`.
    pub fn copy_in(&self, local: &Path, dir: &str) -> Result<(), GuestError> {
        self.g
            .copy_in(&local.display().to_string(), dir)
            .map_err(self.e(format!("copying {} into {dir}", local.display())))
    }

    /// (mode, uid, gid, size) without following a final symlink.
    pub fn lstat(&self, path: &str) -> Result<(u32, i64, i64, i64), GuestError> {
        let st = self
            .g
            .lstatns(path)
            .map_err(self.e(format!("lstat {path}")))?;
        Ok((st.st_mode as u32, st.st_uid, st.st_gid, st.st_size))
    }

    /// lstat of many absolute paths in few round trips: one `lstatnslist` per directory (it
    /// takes plain names), up to `LSTAT_BATCH` names a call. Results in the order of `paths`.
    pub fn lstat_many(&self, paths: &[String]) -> Result<Vec<Stat>, GuestError> {
        self.per_directory(paths, |dir, names| {
            Ok(self
                .g
                .lstatnslist(dir, names)
                .map_err(self.e(format!("lstat of {} names in {dir}", names.len())))?
                .into_iter()
                .map(|s| Stat {
                    mode: s.st_mode as u32,
                    uid: s.st_uid,
                    gid: s.st_gid,
                    size: s.st_size,
                    mtime_ns: s.st_mtime_sec * 1_000_000_000 + s.st_mtime_nsec,
                })
                .collect())
        })
    }

    /// Targets of many symlinks (absolute paths), batched like `lstat_many`.
    pub fn readlink_many(&self, paths: &[String]) -> Result<Vec<String>, GuestError> {
        self.per_directory(paths, |dir, names| {
            self.g
                .readlinklist(dir, names)
                .map_err(self.e(format!("readlink of {} names in {dir}", names.len())))
        })
    }

    fn per_directory<T>(
        &self,
        paths: &[String],
        call: impl Fn(&str, &[&str]) -> Result<Vec<T>, GuestError>,
    ) -> Result<Vec<T>, GuestError> {
        let mut groups: std::collections::BTreeMap<&str, Vec<(usize, &str)>> = Default::default();
        for (i, p) in paths.iter().enumerate() {
            let (dir, name) = match p.rsplit_once('/') {
                Some(("", n)) => ("/", n),
                Some((d, n)) => (d, n),
                None => ("/", p.as_str()),
            };
            groups.entry(dir).or_default().push((i, name));
        }
        let mut out: Vec<Option<T>> = (0..paths.len()).map(|_| None).collect();
        for (dir, entries) in groups {
            for chunk in entries.chunks(LSTAT_BATCH) {
                let names: Vec<&str> = chunk.iter().map(|(_, n)| *n).collect();
                let got = call(dir, &names)?;
                if got.len() != chunk.len() {
                    return Err(GuestError {
                        disk: self.disk.clone(),
                        op: format!("listing {dir}"),
                        message: format!("{} answers for {} names", got.len(), chunk.len()),
                    });
                }
                for ((i, _), v) in chunk.iter().zip(got) {
                    out[*i] = Some(v);
                }
            }
        }
        Ok(out
            .into_iter()
            .map(|v| v.expect("every path answered"))
            .collect())
    }

    /// SHA-256 of a regular file, computed in the appliance.
    pub fn sha256(&self, path: &str) -> Result<String, GuestError> {
        self.g
            .checksum("sha256", path)
            .map_err(self.e(format!("sha256 {path}")))
    }

    pub fn fs_label(&self, device: &str) -> String {
        self.g.vfs_label(device).unwrap_or_default()
    }

    pub fn readlink(&self, path: &str) -> Option<String> {
        self.g.readlink(path).ok()
    }

    /// GRUB's boot code is in the first disk's MBR.
    pub fn mbr_has_grub(&self) -> bool {
        let Some(dev) = self
            .g
            .list_devices()
            .ok()
            .and_then(|d| d.into_iter().next())
        else {
            return false;
        };
        self.g
            .pread_device(&dev, 512, 0)
            .map(|b| b.windows(4).any(|w| w == b"GRUB"))
            .unwrap_or(false)
    }

    /// The rpm database's packages, through libguestfs's inspection (the appliance's librpm
    /// reads the guest's database with the guest's rpm configuration). Filesystems are
    /// unmounted for `inspect_os` and mounted again.
    pub fn rpm_packages(&self) -> Result<Vec<RpmPackage>, GuestError> {
        self.umount_all()?;
        let roots = self.g.inspect_os().map_err(self.e("inspect_os"));
        self.remount()?;
        let root = roots?.into_iter().next().ok_or_else(|| GuestError {
            disk: self.disk.clone(),
            op: "inspect_os".into(),
            message: "no operating system found".into(),
        })?;
        Ok(self
            .g
            .inspect_list_applications2(&root)
            .map_err(self.e("listing rpm packages"))?
            .into_iter()
            .map(|a| RpmPackage {
                name: a.app2_name,
                epoch: a.app2_epoch,
                version: a.app2_version,
                release: a.app2_release,
                arch: a.app2_arch,
                source: Some(a.app2_source_package).filter(|s| !s.is_empty()),
            })
            .collect())
    }

    /// What `open` mounted: (mountpoint, device), parents first.
    pub fn mounts(&self) -> &[(String, String)] {
        &self.mounts
    }

    /// (size, used) of an ext2/3/4 filesystem from its superblock (blocks × block size, and
    /// blocks not free), as the host reader computes them.
    pub fn ext_sizes(&self, device: &str) -> Option<(u64, u64)> {
        let t = self.g.tune2fs_l(device).ok()?;
        let n = |k: &str| t.get(k).and_then(|v| v.trim().parse::<u64>().ok());
        let (blocks, free, bs) = (n("Block count")?, n("Free blocks")?, n("Block size")?);
        Some((blocks * bs, blocks.saturating_sub(free) * bs))
    }

    /// (size, used) in bytes of the filesystem holding `path`.
    pub fn statvfs(&self, path: &str) -> Option<(u64, u64)> {
        let s = self.g.statvfs(path).ok()?;
        let size = (s.blocks.max(0) as u64) * s.frsize.max(0) as u64;
        let free = (s.bfree.max(0) as u64) * s.frsize.max(0) as u64;
        Some((size, size.saturating_sub(free)))
    }

    /// The disk's partition table and partitions (none for a whole-disk filesystem).
    pub fn partitions(&self) -> (Option<String>, Vec<PartitionInfo>) {
        let Ok(devices) = self.g.list_devices() else {
            return (None, Vec::new());
        };
        let Some(dev) = devices.first() else {
            return (None, Vec::new());
        };
        let Ok(table) = self.g.part_get_parttype(dev) else {
            return (None, Vec::new());
        };
        // Numbered order, as the host reader gives them (parted lists them by position).
        let mut parts: Vec<PartitionInfo> = self
            .g
            .part_list(dev)
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                let n = p.part_num;
                let kind = if table == "gpt" {
                    self.g.part_get_gpt_type(dev, n).unwrap_or_default()
                } else {
                    self.g
                        .part_get_mbr_id(dev, n)
                        .map(|id| format!("0x{id:02x}"))
                        .unwrap_or_default()
                };
                PartitionInfo {
                    device: format!("{}{}", dev, n),
                    number: n,
                    start: p.part_start,
                    size: p.part_size,
                    kind,
                    bootable: table == "msdos" && self.g.part_get_bootable(dev, n).unwrap_or(false),
                }
            })
            .collect();
        parts.sort_by_key(|p| p.number);
        (Some(table), parts)
    }

    /// Run a shell command inside the guest's root; returns its stdout.
    pub fn sh(&self, command: &str) -> Result<String, GuestError> {
        self.g
            .sh(command)
            .map_err(self.e(format!("running `{command}`")))
    }

    /// Filesystems on the disk: (device, type).
    /// The filesystems as `open` found them, without asking the appliance again (each
    /// `list_filesystems` probes every device: a second or more under TCG); for read-only
    /// handles, where nothing can have changed them since.
    pub fn filesystems_at_open(&self) -> Result<Vec<(String, String)>, GuestError> {
        match &self.listed {
            Some(v) => Ok(v.clone()),
            None => self.filesystems(),
        }
    }

    pub fn filesystems(&self) -> Result<Vec<(String, String)>, GuestError> {
        let mut v: Vec<(String, String)> = self
            .g
            .list_filesystems()
            .map_err(self.e("list_filesystems"))?
            .into_iter()
            .collect();
        v.sort();
        Ok(v)
    }

    pub fn fs_uuid(&self, device: &str) -> String {
        self.g.vfs_uuid(device).unwrap_or_default()
    }

    /// New random filesystem UUID. ext2/3/4 with metadata checksums only accept one after a
    /// full check (tune2fs refuses otherwise, which is why virt-sysprep's fs-uuids often just
    /// warns), so those are checked first.
    pub fn set_uuid_random(&self, device: &str, fstype: &str) -> Result<(), GuestError> {
        if fstype.starts_with("ext") {
            self.g
                .e2fsck(
                    device,
                    guestfs::E2fsckOptArgs {
                        correct: Some(true),
                        forceall: None,
                    },
                )
                .map_err(self.e(format!("e2fsck {device}")))?;
        }
        self.g
            .set_uuid_random(device)
            .map_err(self.e(format!("set_uuid_random {device}")))
    }

    pub fn umount_all(&self) -> Result<(), GuestError> {
        self.g.umount_all().map_err(self.e("umount_all"))
    }

    /// Mount again what `open` mounted (after block-device operations).
    pub fn remount(&self) -> Result<(), GuestError> {
        for (mp, dev) in &self.mounts {
            self.g
                .mount(dev, mp)
                .map_err(self.e(format!("mounting {dev} on {mp}")))?;
        }
        Ok(())
    }

    /// Physical volumes and volume groups (empty without LVM2 support in the appliance).
    pub fn lvm(&self) -> (Vec<String>, Vec<String>) {
        if self.g.available(&["lvm2"]).is_err() {
            return (Vec::new(), Vec::new());
        }
        (
            self.g.pvs().unwrap_or_default(),
            self.g.vgs().unwrap_or_default(),
        )
    }

    /// New random UUIDs for every PV and VG (unmounted, volume groups deactivated).
    pub fn lvm_change_uuids(&self, pvs: bool, vgs: bool) -> Result<(), GuestError> {
        self.g
            .vg_activate_all(false)
            .map_err(self.e("vg_activate_all false"))?;
        if pvs {
            self.g
                .pvchange_uuid_all()
                .map_err(self.e("pvchange_uuid_all"))?;
        }
        if vgs {
            self.g
                .vgchange_uuid_all()
                .map_err(self.e("vgchange_uuid_all"))?;
        }
        self.g
            .vg_activate_all(true)
            .map_err(self.e("vg_activate_all true"))
    }

    /// Relabel the guest's files for SELinux with its own policy's file contexts.
    pub fn selinux_relabel(&self, specfile: &str) -> Result<(), GuestError> {
        self.g
            .selinux_relabel(specfile, "/", Default::default())
            .map_err(self.e(format!("selinux_relabel {specfile}")))
    }

    /// Write zeroes over the free space of every mounted filesystem that fstrim could not
    /// discard (fstrim first: cheap where the disk supports discard).
    pub fn zero_free_space(&self) {
        for (mp, _) in &self.mounts {
            if let Err(e) = self.g.zero_free_space(mp) {
                tracing::debug!("zero_free_space {mp}: {}", msg(e));
            }
        }
    }

    /// Run host `scripts` with their working directory at the guest's root, which is exposed
    /// through FUSE for their duration (virt-sysprep's `script` operation). Their output
    /// goes to `out`.
    pub fn run_host_scripts(
        &self,
        scripts: &[String],
        out: std::process::Stdio,
    ) -> Result<(), GuestError> {
        let err = |m: String| GuestError {
            disk: self.disk.clone(),
            op: "script".into(),
            message: m,
        };
        let mp = tempfile::Builder::new()
            .prefix("kiln-script.")
            .tempdir()
            .map_err(|e| err(format!("creating a mount point: {e}")))?;
        let mps = mp.path().display().to_string();
        self.g
            .mount_local(&mps, Default::default())
            .map_err(self.e(format!("mount_local {mps}")))?;
        // The child changes into the mount itself: a chdir before exec would block on FUSE
        // until mount_local_run serves it, and spawn() waits for exec.
        let q = crate::quote::sh(&mps);
        let cmd = format!(
            "cleanup() {{ status=$?; cd /; guestunmount {q} || :; exit $status; }}\n\
             trap cleanup INT TERM QUIT EXIT ERR\nset -e\ncd {q}\n{}\n",
            scripts.join("\n")
        );
        let mut child = std::process::Command::new("/bin/bash")
            .arg("-c")
            .arg(cmd)
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .spawn()
            .map_err(|e| err(format!("starting bash: {e}")))?;
        let served = self.g.mount_local_run();
        let status = child
            .wait()
            .map_err(|e| err(format!("waiting for the script: {e}")))?;
        served.map_err(self.e("mount_local_run"))?;
        if !status.success() {
            return Err(err(format!("a script failed ({status})")));
        }
        Ok(())
    }

    /// Kill the appliance once `cancel` is set: libguestfs never looks at kiln's cancellation,
    /// so a long call in flight (a package install, a big copy) would run to its end; with the
    /// appliance gone it fails at once and the stage's cleanup runs. Direct backend only (the
    /// libvirt backend has no appliance pid; its calls end on their own).
    pub fn kill_on_cancel(&mut self, cancel: &crate::process::Cancel) {
        if let Ok(pid) = self.g.get_pid() {
            self.watch = Some(watchdog::CancelWatch::start(pid, cancel.clone()));
        }
    }

    /// Unmount and shut the appliance down, flushing every write to the disk.
    pub fn close(self) -> Result<(), GuestError> {
        self.g.umount_all().map_err(self.e("umount_all"))?;
        self.g.shutdown().map_err(self.e("shutdown"))?;
        Ok(())
    }
}

struct Found {
    distro: String,
    package_management: String,
    mounts: Vec<(String, String)>,
    filesystems: Vec<(String, String)>,
}

/// Find the root filesystem (the one with /etc/os-release and /etc/fstab), name the
/// distribution as libguestfs would, and resolve fstab's filesystems to devices. None (use
/// inspect_os) for anything it does not know for sure: unknown distributions, btrfs
/// subvolumes, device names it cannot resolve, several roots.
fn quick_inspect(g: &Handle) -> Option<Found> {
    let mut fss: Vec<(String, String)> = g.list_filesystems().ok()?.into_iter().collect();
    fss.sort();
    let mut roots = Vec::new();
    for (dev, ty) in &fss {
        if !["ext2", "ext3", "ext4", "xfs"].contains(&ty.as_str()) || g.mount_ro(dev, "/").is_err()
        {
            continue;
        }
        // /etc/os-release is usually a symlink to /usr/lib/os-release.
        let is = |p: &str| {
            g.is_file(
                p,
                IsFileOptArgs {
                    followsymlinks: Some(true),
                },
            )
            .unwrap_or(false)
        };
        if is("/etc/os-release") && is("/etc/fstab") {
            let osr = g.read_file("/etc/os-release").ok();
            let fstab = g.read_file("/etc/fstab").ok();
            roots.push((dev.clone(), osr, fstab));
        }
        let _ = g.umount_all();
    }
    let [(root, Some(osr), Some(fstab))] = roots.as_slice() else {
        return None;
    };
    let (distro, package_management) = distro_from_os_release(&String::from_utf8_lossy(osr))?;
    let mut mounts = vec![("/".to_string(), root.clone())];
    for (spec, mp, ty, options) in fstab_entries(&String::from_utf8_lossy(fstab)) {
        if mp == "/" || options.split(',').any(|o| o.starts_with("subvol")) {
            if options.split(',').any(|o| o.starts_with("subvol")) {
                return None;
            }
            continue;
        }
        if !["ext2", "ext3", "ext4", "xfs", "vfat", "btrfs"].contains(&ty.as_str()) {
            continue;
        }
        let dev = if let Some(u) = spec.strip_prefix("UUID=") {
            g.findfs_uuid(u).ok()?
        } else if let Some(l) = spec.strip_prefix("LABEL=") {
            g.findfs_label(l).ok()?
        } else {
            return None;
        };
        mounts.push((mp, dev));
    }
    // Parents before children.
    mounts.sort_by_key(|(mp, _)| mp.len());
    Some(Found {
        distro,
        package_management,
        mounts,
        filesystems: fss,
    })
}

/// Names per `lstatnslist`/`readlinklist` call: well under the protocol's 4 MiB message.
const LSTAT_BATCH: usize = 4000;

impl Guest {
    /// The guest's /etc/passwd accounts.
    pub fn passwd(&self) -> Result<Vec<PasswdEntry>, GuestError> {
        Ok(parse_passwd(&String::from_utf8_lossy(
            &self.read("/etc/passwd")?,
        )))
    }
}

#[cfg(test)]
mod tests;
