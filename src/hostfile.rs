//! Reading the host files a recipe names (provision files, customize sources, password files):
//! regular files only, bounded, so a FIFO cannot hang validation and /dev/zero cannot exhaust
//! memory; provisioned files must also stay inside the recipe's directory.

use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest host file a recipe may embed (it travels in the seed or the appliance).
pub const LIMIT: u64 = 64 << 20;

/// `rel` under `base`: a regular file of at most [`LIMIT`] bytes. With `inside`, the file
/// (symlinks resolved) must be below `base`.
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

/// Create `path` (replacing it) with mode 0600 from the first byte: for files that hold a
/// password hash or a key, whatever the umask and the directory.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)
}

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
