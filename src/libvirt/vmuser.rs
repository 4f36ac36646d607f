//! The build VM does not run as root: on the system libvirt, kiln (root) gives qemu libvirt's
//! unprivileged user (`libvirt-qemu` on Debian, `qemu` on Fedora) with the domain's files
//! labelled for it (DAC, `relabel='yes'`: libvirt chowns them for the VM's life and restores
//! them after). Those files live in a directory that user can reach (`KILN_VM_DIR`, default
//! /var/lib/kiln/vm), never under root's home; what they refer to elsewhere (the cached base
//! disk, an installer ISO) is hard-linked in (copied across filesystems).

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmUser {
    pub uid: u32,
    pub gid: u32,
}

fn lookup(name: &str) -> Option<VmUser> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: getpwnam returns a pointer to static storage or NULL; read at once.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    let pw = unsafe { &*pw };
    Some(VmUser {
        uid: pw.pw_uid,
        gid: pw.pw_gid,
    })
}

impl VmUser {
    /// kiln's own user and group.
    pub fn current() -> VmUser {
        VmUser {
            uid: unsafe { libc::geteuid() },
            gid: unsafe { libc::getegid() },
        }
    }

    /// Who qemu runs as for a domain on `uri`: libvirt's qemu user when kiln is root on the
    /// local system instance, else kiln's own user (qemu:///session runs as the caller).
    pub fn for_uri(uri: &str) -> VmUser {
        let me = VmUser::current();
        if me.uid != 0 || uri != crate::plan::DEFAULT_URI {
            return me;
        }
        ["libvirt-qemu", "qemu"]
            .iter()
            .find_map(|n| lookup(n))
            .unwrap_or(me)
    }

    /// Does qemu run as someone else than kiln (so its files must be reachable and labelled)?
    pub fn is_other(&self) -> bool {
        *self != VmUser::current()
    }
}

/// Make `dir` (a build's VM directory under `Tunables::vm_dir`, `KILN_VM_DIR`) for `user`: the parents kiln creates
/// are 0711 (traversable, not listable), `dir` itself 0710 root:GID, so only root and the
/// VM's group enter. Refuses a parent the VM user cannot traverse.
pub fn make_vm_dir(dir: &Path, user: VmUser) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let mut missing = Vec::new();
    let mut p = dir.parent();
    while let Some(d) = p {
        if d.exists() {
            break;
        }
        missing.push(d.to_path_buf());
        p = d.parent();
    }
    for d in missing.iter().rev() {
        std::fs::DirBuilder::new().mode(0o711).create(d)?;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711))?;
    }
    for a in dir.ancestors().skip(1) {
        let m = std::fs::metadata(a)?;
        let traversable = m.permissions().mode() & 0o001 != 0
            || (m.permissions().mode() & 0o010 != 0
                && std::os::unix::fs::MetadataExt::gid(&m) == user.gid)
            || std::os::unix::fs::MetadataExt::uid(&m) == user.uid;
        if !traversable {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "the build VM's user (uid {}) cannot traverse {} on the way to {}: set KILN_VM_DIR to a directory it can reach",
                    user.uid,
                    a.display(),
                    dir.display()
                ),
            ));
        }
    }
    std::fs::DirBuilder::new().mode(0o710).create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o710))?;
    std::os::unix::fs::chown(dir, Some(0), Some(user.gid))?;
    Ok(())
}

/// A directory inside the build's VM directory that the VM reads from (the test's overlay and
/// seed, the installer's kernel): 0710 root:GID like the VM directory, whatever the umask (a
/// Buildbot worker runs commands under twistd's 077, which made it root-only).
pub fn make_vm_subdir(dir: &Path, user: VmUser) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o710))?;
    std::os::unix::fs::chown(dir, Some(0), Some(user.gid))
}

/// Where [`reachable`] puts `file` in `dir`. Prefixed: the file may share its name with one the
/// build makes there (disk.qcow2).
pub fn linked_path(file: &Path, dir: &Path) -> Option<PathBuf> {
    Some(dir.join(format!("linked-{}", file.file_name()?.to_string_lossy())))
}

/// A path to `file` that the VM (as `user`) can read without libvirt relabelling it:
/// `file` itself when it is in `dir`, else a hard link in `dir` when its mode lets `user` read
/// it, else (another filesystem, or a file only its owner reads) a copy readable by the VM's
/// group. Nothing of the original changes.
pub fn reachable(file: &Path, dir: &Path, user: VmUser) -> std::io::Result<PathBuf> {
    if file.starts_with(dir) {
        return Ok(file.to_path_buf());
    }
    let dest = linked_path(file, dir)
        .ok_or_else(|| std::io::Error::other(format!("{} has no file name", file.display())))?;
    reachable_at(file, &dest, dir, user)
}

/// The images of a backing chain (nearest first) as `user` reaches them: themselves when that
/// is kiln's own user, else each as `dir/chain-N-NAME` (the images of a chain may share a
/// name: every stage cache entry's disk is `disk.qcow2`), linked or copied as [`reachable`]
/// does.
pub fn reachable_chain(
    chain: &[PathBuf],
    dir: &Path,
    user: VmUser,
) -> std::io::Result<Vec<PathBuf>> {
    if !user.is_other() {
        return Ok(chain.to_vec());
    }
    chain
        .iter()
        .enumerate()
        .map(|(i, file)| {
            let name = file.file_name().ok_or_else(|| {
                std::io::Error::other(format!("{} has no file name", file.display()))
            })?;
            let dest = dir.join(format!("chain-{i}-{}", name.to_string_lossy()));
            let _ = std::fs::remove_file(&dest);
            reachable_at(file, &dest, dir, user)
        })
        .collect()
}

fn reachable_at(file: &Path, dest: &Path, dir: &Path, user: VmUser) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dest = dest.to_path_buf();
    let m = std::fs::metadata(file)?;
    let mode = m.permissions().mode();
    let readable = m.uid() == user.uid && mode & 0o400 != 0
        || m.gid() == user.gid && mode & 0o040 != 0
        || mode & 0o004 != 0;
    if readable && std::fs::hard_link(file, &dest).is_ok() {
        return Ok(dest);
    }
    tracing::info!(
        "copying {} into {} for the VM ({})",
        file.display(),
        dir.display(),
        if readable {
            "another filesystem: no hard link"
        } else {
            "only its owner may read it"
        }
    );
    std::fs::copy(file, &dest)?;
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o640))?;
    std::os::unix::fs::chown(&dest, Some(0), Some(user.gid)).or_else(|e| {
        if VmUser::current().uid == 0 {
            Err(e)
        } else {
            Ok(())
        }
    })?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vm_subdir_is_enterable_by_the_vm_group_under_any_umask() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        if !nix_root() {
            return;
        }
        // twistd (Buildbot's worker) runs commands under umask 077.
        let old = unsafe { libc::umask(0o077) };
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("test");
        let user = VmUser {
            uid: 64055,
            gid: 993,
        };
        let r = make_vm_subdir(&sub, user);
        unsafe { libc::umask(old) };
        r.unwrap();
        let m = std::fs::metadata(&sub).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o710);
        assert_eq!((m.uid(), m.gid()), (0, 993));
    }

    fn nix_root() -> bool {
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn only_root_on_the_system_instance_hands_qemu_to_another_user() {
        let me = VmUser::current();
        assert_eq!(VmUser::for_uri("qemu:///session"), me);
        assert_eq!(VmUser::for_uri("qemu+ssh://host/system"), me);
        if me.uid == 0 && lookup("libvirt-qemu").is_some() {
            let u = VmUser::for_uri("qemu:///system");
            assert_ne!(u.uid, 0);
            assert!(u.is_other());
        }
    }

    #[test]
    fn files_outside_the_vm_dir_are_linked_in_and_left_alone() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("base.qcow2");
        std::fs::write(&src, "base").unwrap();
        let dir = t.path().join("vm");
        std::fs::create_dir(&dir).unwrap();
        let me = VmUser::current();
        let got = reachable(&src, &dir, me).unwrap();
        assert_eq!(got, dir.join("linked-base.qcow2"));
        assert_eq!(std::fs::read_to_string(&got).unwrap(), "base");
        assert_eq!(reachable(&got, &dir, me).unwrap(), got, "already inside");
        assert!(src.exists());
        // A chain of images with one name: each its own link; kiln's own user: as it is.
        let chain: Vec<PathBuf> = ["a", "b"]
            .iter()
            .map(|d| {
                std::fs::create_dir_all(t.path().join(d)).unwrap();
                let p = t.path().join(d).join("disk.qcow2");
                std::fs::write(&p, d).unwrap();
                p
            })
            .collect();
        assert_eq!(reachable_chain(&chain, &dir, me).unwrap(), chain);
        let someone = VmUser {
            uid: me.uid + 1,
            gid: me.gid + 1,
        };
        let linked = reachable_chain(&chain, &dir, someone).unwrap();
        assert_eq!(
            linked,
            [
                dir.join("chain-0-disk.qcow2"),
                dir.join("chain-1-disk.qcow2")
            ]
        );
        assert_eq!(std::fs::read_to_string(&linked[1]).unwrap(), "b");
        // Only its owner reads it, and the VM is someone else: a copy its group reads.
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let secret = t.path().join("own.iso");
        std::fs::write(&secret, "iso").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let other = VmUser {
            uid: me.uid + 1,
            gid: me.gid,
        };
        let c = reachable(&secret, &dir, other).unwrap();
        assert_ne!(
            std::fs::metadata(&c).unwrap().ino(),
            std::fs::metadata(&secret).unwrap().ino()
        );
        assert_eq!(
            std::fs::metadata(&c).unwrap().permissions().mode() & 0o777,
            0o640
        );
    }
}
