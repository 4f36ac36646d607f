//! Installer media mechanics, as pure functions where possible: the answer file appended to
//! an initrd as an extra cpio archive (what `virt-install --initrd-inject` does), the
//! kernel and initrd extracted from an ISO with xorriso (no boot menu, no keystrokes), seed
//! disks, and the debian-installer mirror check.

use std::io::Write;
use std::path::Path;

use crate::process;

/// One file of a newc cpio archive.
pub struct CpioFile<'a> {
    pub name: &'a str,
    pub mode: u32,
    pub data: &'a [u8],
}

/// A newc ("070701") cpio archive of regular files, with its trailer; what the Linux kernel
/// unpacks into the initramfs.
pub fn cpio_newc(files: &[CpioFile]) -> Vec<u8> {
    fn entry(out: &mut Vec<u8>, ino: u32, mode: u32, nlink: u32, name: &str, data: &[u8]) {
        let fields = [
            ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime: reproducible
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0, // check
        ];
        out.extend_from_slice(b"070701");
        for f in fields {
            out.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
        out.extend_from_slice(data);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }
    let mut out = Vec::new();
    for (i, f) in files.iter().enumerate() {
        entry(
            &mut out,
            i as u32 + 1,
            0o100000 | (f.mode & 0o7777),
            1,
            f.name.trim_start_matches('/'),
            f.data,
        );
    }
    entry(&mut out, 0, 0, 1, "TRAILER!!!", &[]);
    out
}

/// Copy `initrd` to `out` and append `files` as an uncompressed cpio archive, 4-byte
/// aligned: the kernel unpacks concatenated archives in order, so the files land in the
/// initramfs root (replacing any of the same name).
pub fn inject(initrd: &Path, out: &Path, files: &[CpioFile]) -> std::io::Result<()> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(out)?);
    let mut r = std::fs::File::open(initrd)?;
    let n = std::io::copy(&mut r, &mut w)?;
    let pad = (4 - (n % 4) as usize) % 4;
    w.write_all(&[0u8; 3][..pad])?;
    w.write_all(&cpio_newc(files))?;
    w.into_inner()?.sync_all()
}

/// `xorriso -osirrox on -indev ISO -extract /INNER DEST`: one file out of an ISO, no mount.
pub fn xorriso_extract_argv(iso: &Path, inner: &str, dest: &Path) -> Vec<String> {
    let mut v = process::argv([
        "xorriso",
        "-abort_on",
        "FAILURE",
        "-osirrox",
        "on",
        "-indev",
    ]);
    v.push(iso.display().to_string());
    v.push("-extract".into());
    v.push(format!("/{}", inner.trim_start_matches('/')));
    v.push(dest.display().to_string());
    v
}

/// A small ISO 9660 volume labelled `label` holding `files` (cidata for cloud-init and
/// subiquity, OEMDRV for anaconda).
pub fn seed_iso_argv(output: &Path, label: &str, files: &[std::path::PathBuf]) -> Vec<String> {
    let mut v = process::argv(["xorriso", "-as", "genisoimage", "-quiet", "-output"]);
    v.push(output.display().to_string());
    v.extend(["-volid", label, "-joliet", "-rock"].map(String::from));
    v.extend(files.iter().map(|f| f.display().to_string()));
    v
}

/// The udeb files a debian-installer Packages index names (`Filename:` fields).
pub fn udeb_files(packages_index: &str) -> Vec<String> {
    packages_index
        .lines()
        .filter_map(|l| l.strip_prefix("Filename:"))
        .map(|f| f.trim().to_string())
        .filter(|f| f.ends_with(".udeb"))
        .collect()
}

/// `n` entries spread evenly over `v` (first and last included).
pub fn spread<T: Clone>(v: &[T], n: usize) -> Vec<T> {
    if v.len() <= n {
        return v.to_vec();
    }
    (0..n)
        .map(|i| v[i * (v.len() - 1) / (n.max(2) - 1)].clone())
        .collect()
}

/// The URL of the debian-installer Packages index of a suite on a mirror.
pub fn udeb_index_url(mirror: &str, suite: &str) -> String {
    format!(
        "{}/dists/{suite}/main/debian-installer/binary-amd64/Packages.gz",
        mirror.trim_end_matches('/')
    )
}

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("fetching {url}: {message}")]
    Index { url: String, message: String },
    #[error(
        "the mirror {mirror} does not serve debian-installer's udebs: {} of {checked} sampled are missing ({}); debian-installer would fail while loading its components. Use a full mirror (`mirror:`), or `mirror_check: false` if the installer does not download udebs",
        missing.len(),
        missing.join(", ")
    )]
    Udebs {
        mirror: String,
        checked: usize,
        missing: Vec<String>,
    },
}

/// Fetch the suite's udeb index and ask for a sample of the udebs it names: a partial mirror
/// (normal packages but no udebs) is found before a long install fails in the middle.
pub fn check_udeb_mirror(mirror: &str, suite: &str, sample: usize) -> Result<usize, MirrorError> {
    use std::io::Read as _;
    let url = udeb_index_url(mirror, suite);
    let http = reqwest::blocking::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(15))
        .timeout(std::time::Duration::from_secs(120))
        .build()
        .map_err(|e| MirrorError::Index {
            url: url.clone(),
            message: e.to_string(),
        })?;
    let index_err = |message: String| MirrorError::Index {
        url: url.clone(),
        message,
    };
    let resp = http
        .get(&url)
        .send()
        .map_err(|e| index_err(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(index_err(format!("HTTP {}", resp.status())));
    }
    let gz = resp.bytes().map_err(|e| index_err(e.to_string()))?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut text)
        .map_err(|e| index_err(format!("not a gzip'd Packages index: {e}")))?;
    let files = udeb_files(&text);
    if files.is_empty() {
        return Err(index_err("the index names no udebs".into()));
    }
    let picked = spread(&files, sample);
    let mut missing = Vec::new();
    for f in &picked {
        let u = format!("{}/{f}", mirror.trim_end_matches('/'));
        let ok = http
            .head(&u)
            .send()
            .map(|r| r.status().is_success())
            .unwrap_or(false);
        if !ok {
            missing.push(f.rsplit('/').next().unwrap_or(f).to_string());
        }
    }
    if missing.is_empty() {
        Ok(picked.len())
    } else {
        Err(MirrorError::Udebs {
            mirror: mirror.to_string(),
            checked: picked.len(),
            missing,
        })
    }
}

/// Extract the first of `candidates` that the ISO holds.
pub fn extract_first(
    iso: &Path,
    candidates: &[String],
    dest: &Path,
    cancel: &process::Cancel,
) -> anyhow::Result<String> {
    for c in candidates {
        let argv = xorriso_extract_argv(iso, c, dest);
        match process::run(&argv, &process::Opts::default(), cancel) {
            Ok(_) if dest.is_file() => return Ok(c.clone()),
            Ok(_) => {}
            Err(e) if cancel.is_cancelled() => return Err(e.into()),
            Err(e) => tracing::debug!("{c} is not on the ISO: {e}"),
        }
    }
    anyhow::bail!(
        "none of {} is on {} (set kernel_path / initrd_path)",
        candidates.join(", "),
        iso.display()
    )
}

/// The seed disk for `Delivery::Seed`: its label and files (name, content). Subiquity reads a
/// NoCloud `cidata` (user-data with the answers, meta-data), anaconda an `OEMDRV` with ks.cfg.
pub fn seed_files(
    inst: &crate::plan::InstallerPlan,
    slug: &str,
    answers: &str,
) -> (&'static str, Vec<(&'static str, String)>) {
    match inst.kind {
        crate::recipe::model::AnswerKind::Kickstart => {
            ("OEMDRV", vec![("ks.cfg", answers.to_string())])
        }
        _ => (
            "cidata",
            vec![
                ("user-data", answers.to_string()),
                ("meta-data", format!("instance-id: {slug}\n")),
            ],
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_newc_layout() {
        let a = cpio_newc(&[CpioFile {
            name: "/preseed.cfg",
            mode: 0o644,
            data: b"abc",
        }]);
        // Header: magic, ino 1, mode 0100644, …, filesize 3, namesize 12.
        assert!(a.starts_with(b"07070100000001000081A4"));
        assert_eq!(&a[54..62], b"00000003", "filesize");
        assert_eq!(&a[94..102], b"0000000C", "namesize includes the NUL");
        assert_eq!(&a[110..121], b"preseed.cfg");
        // Name padded to 4 (110 + 12 = 122 → 124), then the data padded to 128.
        assert_eq!(&a[124..127], b"abc");
        assert_eq!(&a[128..134], b"070701");
        assert!(a.windows(10).any(|w| w == b"TRAILER!!!"));
        assert_eq!(a.len() % 4, 0);
    }

    #[test]
    fn argv_shapes() {
        assert_eq!(
            xorriso_extract_argv(Path::new("/m/d.iso"), "install.amd/vmlinuz", Path::new("/w/k"))
                .join(" "),
            "xorriso -abort_on FAILURE -osirrox on -indev /m/d.iso -extract /install.amd/vmlinuz /w/k"
        );
        assert_eq!(
            seed_iso_argv(Path::new("/w/s.iso"), "OEMDRV", &["/w/ks.cfg".into()]).join(" "),
            "xorriso -as genisoimage -quiet -output /w/s.iso -volid OEMDRV -joliet -rock /w/ks.cfg"
        );
        assert_eq!(
            udeb_index_url("http://deb.debian.org/debian/", "bookworm"),
            "http://deb.debian.org/debian/dists/bookworm/main/debian-installer/binary-amd64/Packages.gz"
        );
    }

    #[test]
    fn udebs_are_sampled_from_the_index() {
        let idx = "Package: a\nFilename: pool/main/a/a_1_amd64.udeb\n\nPackage: b\nFilename: pool/main/b/b_1_amd64.udeb\n\nPackage: c\nFilename: pool/main/c/c.deb\n";
        assert_eq!(
            udeb_files(idx),
            ["pool/main/a/a_1_amd64.udeb", "pool/main/b/b_1_amd64.udeb"]
        );
        let v: Vec<u32> = (0..100).collect();
        assert_eq!(spread(&v, 3), [0, 49, 99]);
        assert_eq!(spread(&v[..2], 5), [0, 1]);
    }
}
