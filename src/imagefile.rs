//! An image file someone else made (the argument of `kiln inspect`, `diff`, `convert`,
//! `sysprep`, `test`; a recipe's source), checked before any reader opens it: kiln's host
//! reader, qemu-img and libguestfs' qemu all follow the backing file a qcow2 header names, and
//! that name can be any file on the host (a private key read back as the guest's machine-id, a
//! FIFO that blocks `open(2)` for ever, a loop).
//!
//! The rules: each image of the chain is a regular file; its format is the one given or the one
//! `qemu-img info` reports (which opens no backing file), and every reader uses that format —
//! nobody probes the bytes again; a backing file is followed only when the user named it
//! (`--backing FILE`, or another image of the same command), with its format recorded in the
//! header; at most [`MAX_DEPTH`] images, no loops.

use std::path::{Path, PathBuf};

use crate::diskread::Image;
use crate::process::Cancel;

/// The longest backing chain read.
pub const MAX_DEPTH: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: {why}")]
    Refused { path: String, why: String },
    #[error(transparent)]
    QemuImg(#[from] crate::qemu_img::QemuImgError),
}

fn refused(path: &Path, why: impl Into<String>) -> ImageError {
    ImageError::Refused {
        path: crate::quote::terminal(&path.display().to_string()).into_owned(),
        why: why.into(),
    }
}

/// Check `path` (read as `format`, or as qemu-img probes it) and its backing chain, following
/// only backing files among `allowed`.
pub fn check(
    path: &Path,
    format: Option<&str>,
    allowed: &[PathBuf],
    cancel: &Cancel,
) -> Result<Image, ImageError> {
    check_info(path, format, allowed, cancel).map(|(image, _)| image)
}

/// [`check`], with what `qemu-img info` said of the top image (a caller that needs it asks
/// qemu-img once, not twice).
pub fn check_info(
    path: &Path,
    format: Option<&str>,
    allowed: &[PathBuf],
    cancel: &Cancel,
) -> Result<(Image, crate::qemu_img::Info), ImageError> {
    let allowed: Vec<PathBuf> = allowed
        .iter()
        .filter_map(|p| p.canonicalize().ok())
        .collect();
    let mut seen = Vec::new();
    check_at(path, format, &allowed, &mut seen, cancel)
}

fn check_at(
    path: &Path,
    format: Option<&str>,
    allowed: &[PathBuf],
    seen: &mut Vec<PathBuf>,
    cancel: &Cancel,
) -> Result<(Image, crate::qemu_img::Info), ImageError> {
    let m = std::fs::metadata(path).map_err(|e| refused(path, e.to_string()))?;
    if !m.is_file() {
        return Err(refused(
            path,
            "not a regular file (a FIFO, device or directory is not read as an image)",
        ));
    }
    let real = path
        .canonicalize()
        .map_err(|e| refused(path, e.to_string()))?;
    if seen.contains(&real) {
        return Err(refused(path, "its backing chain comes back to it (a loop)"));
    }
    if seen.len() >= MAX_DEPTH {
        return Err(refused(
            path,
            format!("a backing chain longer than {MAX_DEPTH} images"),
        ));
    }
    seen.push(real);
    let info = crate::qemu_img::info_as(path, format, cancel)?;
    let backing = match backing_of(path, &info)? {
        None => None,
        Some((file, fmt)) => {
            let known = file
                .canonicalize()
                .ok()
                .filter(|r| allowed.contains(r))
                .is_some();
            if !known {
                return Err(refused(
                    path,
                    format!(
                        "it has a backing file, {}, which kiln follows only when you name it too (--backing {})",
                        shown(&file),
                        shown(&file)
                    ),
                ));
            }
            Some(Box::new(
                check_at(&file, Some(&fmt), allowed, seen, cancel)?.0,
            ))
        }
    };
    let image = Image {
        path: path.to_path_buf(),
        format: info.format.clone(),
        virtual_size: info.virtual_size,
        backing,
    };
    Ok((image, info))
}

fn shown(p: &Path) -> String {
    crate::quote::sh(&crate::quote::terminal(&p.display().to_string()))
}

/// The backing file `info` names (resolved as qemu resolves it: relative to the image's
/// directory) and its recorded format; None when the image stands alone.
fn backing_of(
    path: &Path,
    info: &crate::qemu_img::Info,
) -> Result<Option<(PathBuf, String)>, ImageError> {
    let Some(name) = &info.backing_filename else {
        return Ok(None);
    };
    if name.starts_with("json:") || (name.contains(':') && !name.starts_with('/')) {
        return Err(refused(
            path,
            format!(
                "its backing file is not a local file ({})",
                crate::quote::terminal(name)
            ),
        ));
    }
    let file = Path::new(name);
    let file = if file.is_absolute() {
        file.to_path_buf()
    } else {
        path.parent().unwrap_or(Path::new(".")).join(file)
    };
    // Without a recorded format qemu would probe the backing file's bytes: a raw disk a guest
    // wrote a qcow2 header into would be read as qcow2.
    let fmt = info.backing_format.clone().ok_or_else(|| {
        refused(
            path,
            "its backing file's format is not recorded (qemu-img rebase -u -b FILE -F FORMAT)",
        )
    })?;
    Ok(Some((file, fmt)))
}

/// An image kiln already checked, standing alone (a source's base disk).
pub fn standalone(path: &Path, format: &str, virtual_size: u64) -> Image {
    Image {
        path: path.to_path_buf(),
        format: format.to_string(),
        virtual_size,
        backing: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qemu_img(args: &[&str]) {
        let st = std::process::Command::new("qemu-img")
            .args(args)
            .status()
            .unwrap();
        assert!(st.success(), "{args:?}");
    }

    /// The refusals that keep a crafted image from reading host files (needs qemu-img).
    #[test]
    fn only_named_backing_files_of_a_recorded_format_are_followed() {
        if std::process::Command::new("qemu-img")
            .arg("--version")
            .output()
            .is_err()
        {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let p = |n: &str| d.path().join(n);
        let s = |n: &str| p(n).to_str().unwrap().to_string();
        let none = Cancel::new();
        qemu_img(&["create", "-q", "-f", "raw", &s("base.raw"), "1M"]);
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.raw",
            "-F",
            "raw",
            &s("top.qcow2"),
        ]);
        // Not named: refused. Named: followed, with the recorded format.
        let e = check(&p("top.qcow2"), None, &[], &none)
            .unwrap_err()
            .to_string();
        assert!(e.contains("only when you name it too"), "{e}");
        let img = check(&p("top.qcow2"), None, &[p("base.raw")], &none).unwrap();
        assert_eq!(img.format, "qcow2");
        assert_eq!(img.backing.as_ref().unwrap().format, "raw");
        // A host file as backing file (what a crafted image names): refused, unread.
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-u",
            "-b",
            "/etc/shadow",
            "-F",
            "raw",
            &s("evil.qcow2"),
            "1M",
        ]);
        let e = check(&p("evil.qcow2"), None, &[], &none)
            .unwrap_err()
            .to_string();
        assert!(e.contains("'/etc/shadow'"), "{e}");
        // No recorded backing format: refused even when named.
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-u",
            "-b",
            &s("base.raw"),
            "-F",
            "raw",
            &s("noformat.qcow2"),
            "1M",
        ]);
        // (qemu-img 10 no longer makes one: the header extension that records it is cut.)
        let mut bytes = std::fs::read(p("noformat.qcow2")).unwrap();
        let at = bytes
            .windows(4)
            .position(|w| w == [0xe2, 0x79, 0x2a, 0xca])
            .expect("a backing format extension");
        bytes[at..at + 4].fill(0);
        std::fs::write(p("noformat.qcow2"), bytes).unwrap();
        let e = check(&p("noformat.qcow2"), None, &[p("base.raw")], &none)
            .unwrap_err()
            .to_string();
        assert!(e.contains("format is not recorded"), "{e}");
        // A loop (a -> b -> a), both named.
        qemu_img(&["create", "-q", "-f", "qcow2", &s("a.qcow2"), "1M"]);
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-u",
            "-b",
            &s("a.qcow2"),
            "-F",
            "qcow2",
            &s("b.qcow2"),
            "1M",
        ]);
        qemu_img(&[
            "rebase",
            "-q",
            "-u",
            "-b",
            &s("b.qcow2"),
            "-F",
            "qcow2",
            &s("a.qcow2"),
        ]);
        let e = check(&p("a.qcow2"), None, &[p("a.qcow2"), p("b.qcow2")], &none)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a loop"), "{e}");
        // A FIFO is not opened (it would block), as the image or as its backing file.
        let fifo = p("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = check(&fifo, None, &[], &none).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-u",
            "-b",
            &s("fifo"),
            "-F",
            "raw",
            &s("f.qcow2"),
            "1M",
        ]);
        let e = check(&p("f.qcow2"), None, std::slice::from_ref(&fifo), &none)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }
}
