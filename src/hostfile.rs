//! Reading the host files a recipe names (provision files, customize sources, password files):
//! regular files only, bounded, so a FIFO cannot hang validation and /dev/zero cannot exhaust
//! memory; provisioned files must also stay inside the recipe's directory.

use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest host file a recipe may embed (it travels in the seed or the appliance).
pub const LIMIT: u64 = 64 << 20;

/// Feed a file to `f` in 1 MiB pieces (hashing without holding it in memory).
pub fn each_chunk(path: &Path, mut f: impl FnMut(&[u8])) -> std::io::Result<()> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        f(&buf[..n]);
    }
}

/// A file the user named (a recipe, an element, a template), symlinks followed: read only if it
/// is a regular file (opened without blocking: a FIFO cannot hang validation) of at most
/// `limit` bytes, without reading more than that (a 3 GB "recipe" is refused unread).
pub fn read_regular(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    read_opened(path, limit, 0)
}

/// A file someone else may have made (a shared cache's `meta.json`): read only if `path` itself
/// is a regular file (not a symlink, FIFO or device: opened without following and without
/// blocking) of at most `limit` bytes.
pub fn read_untrusted(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    read_opened(path, limit, libc::O_NOFOLLOW)
}

fn read_opened(path: &Path, limit: u64, flags: i32) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags | libc::O_NONBLOCK)
        .open(path)?;
    let m = f.metadata()?;
    if !m.is_file() {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    if m.len() > limit {
        return Err(std::io::Error::other(format!(
            "{} is larger than {} KiB",
            path.display(),
            limit >> 10
        )));
    }
    let mut data = Vec::with_capacity(m.len() as usize);
    f.take(limit + 1).read_to_end(&mut data)?;
    if data.len() as u64 > limit {
        return Err(std::io::Error::other(format!(
            "{} grew past {} KiB",
            path.display(),
            limit >> 10
        )));
    }
    Ok(data)
}

/// Open `path` for writing, creating it if missing, in a directory others may write to (a
/// shared cache's lock or stamp files): a symlink put there is refused, not followed, and so is
/// anything but a regular file.
pub fn open_shared(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    Ok(f)
}

/// Make sure `dir` is a directory and not a symlink to one (creating it, and its parents, if
/// missing): the files kiln makes in it stay where it means them to be.
pub fn real_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(std::io::Error::other(format!(
            "{} is not a directory (a symlink or a file is refused)",
            dir.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir_all(dir),
        Err(e) => Err(e),
    }
}

/// Make `dir` (and its parents) if missing, else take it only if it is a directory this user
/// owns, not a symlink to one; then set its mode through a descriptor (never through a link).
/// In a directory others can write (`./NAME.plan` in /tmp), nobody else chooses what kiln
/// writes into or chmods.
pub fn own_dir(dir: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::DirBuilder::new().mode(mode).create(dir)?;
        }
        Err(e) => return Err(e),
        Ok(_) => {}
    }
    let d = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)
        .map_err(|e| {
            std::io::Error::other(format!(
                "{}: not a directory of its own ({e})",
                dir.display()
            ))
        })?;
    let m = d.metadata()?;
    if m.uid() != unsafe { libc::geteuid() } {
        return Err(std::io::Error::other(format!(
            "{} belongs to another user (uid {}): not written into",
            dir.display(),
            m.uid()
        )));
    }
    use std::os::unix::fs::PermissionsExt;
    d.set_permissions(std::fs::Permissions::from_mode(mode))
}

/// Replace `path` whole with `data` (mode `mode` from the first byte): written to a new file
/// beside it (`O_EXCL`, so never through a planted link) and renamed over it, which replaces
/// a symlink there instead of writing where it points.
pub fn replace_file(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{}: no file name", path.display())))?;
    let tmp = path.with_file_name(format!(
        ".{}.part-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(data)?;
        std::fs::rename(&tmp, path)
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Open `rel` below `root` without following a link in any of its components (each is opened
/// with `openat(O_NOFOLLOW)` from the one before; `..` is refused), and without blocking. For
/// reading someone else's tree: a link planted anywhere on the path is an error, not a way out.
pub fn open_beneath(root: &Path, rel: &str, dir: bool) -> std::io::Result<std::fs::File> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut cur = std::fs::File::open(root)?;
    let parts: Vec<&str> = rel
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    for (i, c) in parts.iter().enumerate() {
        if *c == ".." {
            return Err(std::io::Error::other(format!("{rel}: `..` in a tree path")));
        }
        let last = i + 1 == parts.len();
        let kind = if last && !dir { 0 } else { libc::O_DIRECTORY };
        let name = std::ffi::CString::new(*c).map_err(std::io::Error::other)?;
        let fd = unsafe {
            libc::openat(
                cur.as_raw_fd(),
                name.as_ptr(),
                libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC | kind,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        cur = unsafe { std::fs::File::from_raw_fd(fd) };
    }
    Ok(cur)
}

/// The names in directory `rel` below `root`, reached as by [`open_beneath`].
pub fn list_beneath(root: &Path, rel: &str) -> std::io::Result<Vec<String>> {
    use std::os::fd::AsRawFd;
    let d = open_beneath(root, rel, true)?;
    // The opened directory itself (its /proc/self/fd link names the object, not a path).
    let rd = std::fs::read_dir(format!("/proc/self/fd/{}", d.as_raw_fd()))?;
    Ok(rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect())
}

/// Create `path` (replacing it) with mode 0600 from the first byte: for files that hold a
/// password hash or a key, whatever the umask and the directory.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    replace_file(path, data, 0o600)
}

/// `rel` under `base`: a regular file of at most [`LIMIT`] bytes. With `inside`, the file
/// (symlinks resolved) must be below `base`.
pub fn read(base: &Path, rel: &str, inside: bool) -> Result<(PathBuf, Vec<u8>), String> {
    let full = base.join(rel);
    let real = full
        .canonicalize()
        .map_err(|e| format!("cannot read {}: {e}", full.display()))?;
    if inside {
        let root = base
            .canonicalize()
            .map_err(|e| format!("cannot read {}: {e}", base.display()))?;
        if !real.starts_with(&root) {
            return Err(format!(
                "{} is outside the recipe's directory {} (copy the file next to the recipe)",
                real.display(),
                root.display()
            ));
        }
    }
    let meta =
        std::fs::metadata(&real).map_err(|e| format!("cannot read {}: {e}", full.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", full.display()));
    }
    if meta.len() > LIMIT {
        return Err(format!(
            "{} is larger than {} MiB",
            full.display(),
            LIMIT >> 20
        ));
    }
    let mut data = Vec::with_capacity(meta.len() as usize);
    std::fs::File::open(&real)
        .and_then(|f| f.take(LIMIT + 1).read_to_end(&mut data))
        .map_err(|e| format!("cannot read {}: {e}", full.display()))?;
    if data.len() as u64 > LIMIT {
        return Err(format!("{} grew past {} MiB", full.display(), LIMIT >> 20));
    }
    Ok((full, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_files_are_read_only_when_regular_bounded_and_not_links() {
        let d = tempfile::tempdir().unwrap();
        let ok = d.path().join("meta.json");
        std::fs::write(&ok, "{}").unwrap();
        assert_eq!(read_untrusted(&ok, 10).unwrap(), b"{}");
        assert!(read_untrusted(&ok, 1).is_err(), "over the limit");
        let link = d.path().join("link");
        std::os::unix::fs::symlink("/etc/hostname", &link).unwrap();
        assert!(
            read_untrusted(&link, 1 << 20).is_err(),
            "a symlink is not followed"
        );
        assert!(open_shared(&link).is_err(), "nor written through");
        let fifo = d.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Would block forever if opened the ordinary way.
        assert!(read_untrusted(&fifo, 1 << 20).is_err());
        assert!(open_shared(&fifo).is_err());
        assert!(read_untrusted(Path::new("/dev/zero"), 1 << 20).is_err());
        let made = d.path().join("new.lock");
        open_shared(&made).unwrap();
        assert!(made.is_file());
        let sub = d.path().join("a/b");
        real_dir(&sub).unwrap();
        real_dir(&sub).unwrap();
        std::os::unix::fs::symlink("/tmp", d.path().join("dirlink")).unwrap();
        assert!(real_dir(&d.path().join("dirlink")).is_err());
    }

    /// Planted links in a directory others can write: kiln's files replace them, nothing is
    /// written or chmodded where they point.
    #[test]
    fn written_files_and_directories_never_go_through_planted_links() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::create_dir(&victim).unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(victim.join("file"), "precious").unwrap();
        // The render directory is a link to another directory: refused, its mode unchanged.
        let plan = d.path().join("x.plan");
        std::os::unix::fs::symlink(&victim, &plan).unwrap();
        assert!(own_dir(&plan, 0o700).is_err());
        let mode = std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755);
        // A file in it is a link to a victim file: replaced, the victim untouched.
        let real = d.path().join("real.plan");
        own_dir(&real, 0o700).unwrap();
        std::os::unix::fs::symlink(victim.join("file"), real.join("user-data")).unwrap();
        replace_file(&real.join("user-data"), b"new", 0o600).unwrap();
        assert_eq!(std::fs::read(victim.join("file")).unwrap(), b"precious");
        assert_eq!(std::fs::read(real.join("user-data")).unwrap(), b"new");
        let m = std::fs::symlink_metadata(real.join("user-data")).unwrap();
        assert!(m.is_file() && m.permissions().mode() & 0o777 == 0o600);
        own_dir(&real, 0o700).unwrap();
    }

    /// A tree someone else made, with links planted in an intermediate directory and as the
    /// file itself: neither is followed.
    #[test]
    fn trees_are_read_without_following_any_link() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("var/lib")).unwrap();
        std::fs::create_dir_all(d.path().join("host/dpkg")).unwrap();
        std::fs::write(d.path().join("host/dpkg/status"), "host's").unwrap();
        std::os::unix::fs::symlink(d.path().join("host/dpkg"), root.join("var/lib/dpkg")).unwrap();
        std::os::unix::fs::symlink(d.path().join("host/dpkg/status"), root.join("s")).unwrap();
        std::fs::write(root.join("var/lib/own"), "tree's").unwrap();
        assert!(open_beneath(&root, "/var/lib/dpkg/status", false).is_err());
        assert!(open_beneath(&root, "/s", false).is_err());
        assert!(list_beneath(&root, "/var/lib/dpkg").is_err());
        assert!(open_beneath(&root, "/var/../../host/dpkg/status", false).is_err());
        let mut got = String::new();
        use std::io::Read;
        open_beneath(&root, "/var/lib/own", false)
            .unwrap()
            .read_to_string(&mut got)
            .unwrap();
        assert_eq!(got, "tree's");
        let mut names = list_beneath(&root, "/var/lib").unwrap();
        names.sort();
        assert_eq!(names, ["dpkg", "own"]);
    }

    #[test]
    fn only_bounded_regular_files_inside_when_asked() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("ok.txt"), "hi").unwrap();
        assert_eq!(read(d.path(), "ok.txt", true).unwrap().1, b"hi");
        let e = read(d.path(), "../../../../etc/hostname", true).unwrap_err();
        assert!(e.contains("outside the recipe's directory"), "{e}");
        assert!(read(d.path(), "/etc/hostname", false).is_ok());
        std::os::unix::fs::symlink("/etc/hostname", d.path().join("link")).unwrap();
        assert!(
            read(d.path(), "link", true).is_err(),
            "a symlink out counts as outside"
        );
        let e = read(d.path(), "/dev/zero", false).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        let fifo = d.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(read(d.path(), "fifo", true)
            .unwrap_err()
            .contains("not a regular file"));
        assert!(read(d.path(), "missing", true)
            .unwrap_err()
            .contains("cannot read"));
    }
}
