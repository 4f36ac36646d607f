//! libguestfs (`guestfs` crate): one appliance launch serves the cloud-init and sysprep stages.
//! The crate's handle is not `Send` and its error has no `Display`; this module owns the handle
//! and turns errors into ones that name the disk and the operation.

use std::path::{Path, PathBuf};

use guestfs::{AddDriveOptArgs, GlobExpandOptArgs, Handle, IsFileOptArgs};

#[derive(Debug, thiserror::Error)]
#[error("libguestfs on {disk}: {op}: {message}")]
pub struct GuestError {
    pub disk: PathBuf,
    pub op: String,
    pub message: String,
}

pub struct Guest {
    g: Handle,
    disk: PathBuf,
    /// Distribution as inspected (e.g. "debian").
    pub distro: String,
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

/// Try twice: under load the TCG appliance occasionally dies while booting.
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
        retry(|| Self::try_open(disk, format, tcg, false))
    }

    /// Like `open`, but nothing can be written to the disk (dry runs, inspection).
    pub fn open_readonly(disk: &Path, format: &str, tcg: bool) -> Result<Guest, GuestError> {
        retry(|| Self::try_open(disk, format, tcg, true))
    }

    /// Launch on `disk` and mount one `device` on / without inspection (for a disk that is not
    /// bootable yet, e.g. while installing its bootloader).
    pub fn open_device(
        disk: &Path,
        format: &str,
        tcg: bool,
        device: &str,
    ) -> Result<Guest, GuestError> {
        retry(|| {
            let g = Self::launch(disk, format, tcg, false)?;
            g.mount(device, "/")
                .map_err(ge(disk, &format!("mounting {device}")))?;
            Ok(Guest {
                g,
                disk: disk.to_path_buf(),
                distro: "unknown".into(),
            })
        })
    }

    fn launch(disk: &Path, format: &str, tcg: bool, readonly: bool) -> Result<Handle, GuestError> {
        let ge = |op: &str| ge(disk, op);
        let g = Handle::create().map_err(ge("creating handle"))?;
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
        g.launch().map_err(ge("launch"))?;
        Ok(g)
    }

    fn try_open(disk: &Path, format: &str, tcg: bool, readonly: bool) -> Result<Guest, GuestError> {
        let ge = |op: &str| ge(disk, op);
        let g = Self::launch(disk, format, tcg, readonly)?;
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
        let mut mps: Vec<(String, String)> = g
            .inspect_get_mountpoints(&root)
            .map_err(ge("inspect_get_mountpoints"))?
            .into_iter()
            .collect();
        // Mount parents before children.
        mps.sort_by_key(|(mp, _)| mp.len());
        for (mp, dev) in mps {
            g.mount(&dev, &mp)
                .map_err(ge(&format!("mounting {dev} on {mp}")))?;
        }
        Ok(Guest {
            g,
            disk: disk.to_path_buf(),
            distro,
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

    /// Unmount and shut the appliance down, flushing every write to the disk.
    pub fn close(self) -> Result<(), GuestError> {
        self.g.umount_all().map_err(self.e("umount_all"))?;
        self.g.shutdown().map_err(self.e("shutdown"))?;
        Ok(())
    }
}
