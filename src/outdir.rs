//! The catalog directory's safety rules: kiln replaces only its own outputs, in one atomic
//! exchange, and two builds of one output never run at once.

use std::ffi::CString;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum OutdirError {
    #[error("{dir} exists and is not a kiln build of {name} {version} (no manifest.json saying so): kiln replaces only its own outputs; move it away or build into another directory (-o)")]
    NotOurs {
        dir: PathBuf,
        name: String,
        version: String,
    },
    #[error("another kiln build of {slug} into {root} is running (it holds {lock}); wait for it or build into another directory")]
    Busy {
        slug: String,
        root: PathBuf,
        lock: PathBuf,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Whether `dir` may be replaced by a build of `name` `version`: it does not exist, or its
/// manifest.json says it is one.
pub fn check_replaceable(dir: &Path, name: &str, version: &str) -> Result<(), OutdirError> {
    if !dir.exists() && !dir.is_symlink() {
        return Ok(());
    }
    let ours = dir.is_dir()
        && !dir.is_symlink()
        && crate::manifest::read(dir).is_ok_and(|m| m.name == name && m.version == version);
    if ours {
        Ok(())
    } else {
        Err(OutdirError::NotOurs {
            dir: dir.to_path_buf(),
            name: name.into(),
            version: version.into(),
        })
    }
}

/// An exclusive lock on building `slug` into `root`, held until dropped (flock: released by
/// the kernel if kiln dies).
pub struct BuildLock {
    /// Holding the open file holds the lock.
    _file: File,
    path: PathBuf,
}

pub fn lock(root: &Path, slug: &str) -> Result<BuildLock, OutdirError> {
    let path = root.join(format!(".{slug}.lock"));
    match try_lock_file(&path)? {
        Some(file) => Ok(BuildLock { _file: file, path }),
        None => Err(OutdirError::Busy {
            slug: slug.into(),
            root: root.to_path_buf(),
            lock: path,
        }),
    }
}

/// Open and flock `path` without waiting: None when another process holds it. The lock is
/// only good while `path` still names the locked file: a holder unlinks it when done (and
/// `kiln gc` removes stale ones), so a lock taken on an unlinked file is retried.
pub fn try_lock_file(path: &Path) -> Result<Option<File>, OutdirError> {
    use std::os::unix::fs::MetadataExt;
    loop {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|source| OutdirError::Io {
                op: "opening",
                path: path.to_path_buf(),
                source,
            })?;
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Ok(None);
        }
        let held = file.metadata().map(|m| (m.dev(), m.ino())).ok();
        let named = std::fs::metadata(path).map(|m| (m.dev(), m.ino())).ok();
        if held.is_some() && held == named {
            return Ok(Some(file));
        }
    }
}

/// Remove a lock file nobody holds (left by a build that was killed); false when it is held.
pub fn remove_stale_lock(path: &Path) -> Result<bool, OutdirError> {
    match try_lock_file(path)? {
        Some(_held) => {
            // Unlinked while held: anyone who opened it meanwhile retries on a fresh file.
            std::fs::remove_file(path).map_err(|source| OutdirError::Io {
                op: "removing",
                path: path.to_path_buf(),
                source,
            })?;
            Ok(true)
        }
        None => Ok(false),
    }
}

impl Drop for BuildLock {
    fn drop(&mut self) {
        // Unlinked while still held: a build waiting on it retries on a fresh file.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Put `new` at `dest`. When `dest` exists it is exchanged with `new` in one step (there is no
/// moment without an output) and the old one, now at `new`'s path, is removed.
pub fn install(new: &Path, dest: &Path) -> Result<bool, OutdirError> {
    let io = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| OutdirError::Io { op, path, source }
    };
    if !dest.exists() {
        std::fs::rename(new, dest).map_err(io("moving into place", dest))?;
        return Ok(false);
    }
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).expect("no NUL in a path");
    let (a, b) = (c(new), c(dest));
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r != 0 {
        return Err(io("exchanging with", dest)(std::io::Error::last_os_error()));
    }
    std::fs::remove_dir_all(new).map_err(io("removing the previous build at", new))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_kiln_outputs_are_replaceable() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("x86_64-linux-gnu");
        assert!(
            check_replaceable(&target, "x86_64", "linux-gnu").is_ok(),
            "absent"
        );
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("libc.so.6"), "precious").unwrap();
        let e = check_replaceable(&target, "x86_64", "linux-gnu").unwrap_err();
        assert!(e.to_string().contains("not a kiln build"), "{e}");
        let m = crate::manifest::Manifest {
            name: "x86_64".into(),
            version: "linux-gnu".into(),
            ..Default::default()
        };
        crate::manifest::write(&target, &m).unwrap();
        assert!(check_replaceable(&target, "x86_64", "linux-gnu").is_ok());
        assert!(check_replaceable(&target, "x86_64", "other").is_err());
    }

    #[test]
    fn install_exchanges_in_one_step_and_removes_the_old() {
        let d = tempfile::tempdir().unwrap();
        let (new, dest) = (d.path().join("new"), d.path().join("dest"));
        std::fs::create_dir(&new).unwrap();
        std::fs::write(new.join("v"), "2").unwrap();
        assert!(
            !install(&new, &dest).unwrap(),
            "first install replaces nothing"
        );
        std::fs::create_dir(&new).unwrap();
        std::fs::write(new.join("v"), "3").unwrap();
        assert!(install(&new, &dest).unwrap());
        assert_eq!(std::fs::read_to_string(dest.join("v")).unwrap(), "3");
        assert!(!new.exists(), "the old build is gone");
    }

    #[test]
    fn a_second_build_of_one_output_is_refused_while_the_first_runs() {
        let d = tempfile::tempdir().unwrap();
        let first = lock(d.path(), "n-1").unwrap();
        let e = lock(d.path(), "n-1").err().expect("busy");
        assert!(e.to_string().contains("another kiln build of n-1"), "{e}");
        assert!(
            lock(d.path(), "other-1").is_ok(),
            "other outputs are independent"
        );
        drop(first);
        assert!(lock(d.path(), "n-1").is_ok(), "free again");
    }
}
