//! qemu-img: argv built by pure functions (table-tested), run through `process`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::plan::OutputPlan;
use crate::process::{self, Cancel, CommandError};
use crate::vocab::{Format, Subformat};

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// An empty qcow2 disk of `size` bytes (an installer's target).
pub fn create_argv(disk: &Path, size: u64) -> Vec<String> {
    let mut v = process::argv(["qemu-img", "create", "-q", "-f", "qcow2"]);
    v.push(s(disk));
    v.push(size.to_string());
    v
}

/// A raw disk to qcow2, as it is (no compression, no options).
pub fn raw_to_qcow2_argv(raw: &Path, qcow2: &Path) -> Vec<String> {
    let mut v = process::argv(["qemu-img", "convert", "-f", "raw", "-O", "qcow2"]);
    v.push(s(raw));
    v.push(s(qcow2));
    v
}

/// A qcow2 overlay over `base` (absolute path recorded as the backing file), optionally larger.
/// Point `disk`'s backing file at `backing` without touching data (`rebase -u`): for an
/// overlay whose backing moved (the VM's hard link to the cached base, then the base itself).
pub fn rebase_unsafe_argv(disk: &Path, backing: &Path, backing_format: &str) -> Vec<String> {
    let mut v = process::argv([
        "qemu-img",
        "rebase",
        "-u",
        "-f",
        "qcow2",
        "-F",
        backing_format,
        "-b",
    ]);
    v.push(s(backing));
    v.push(s(disk));
    v
}

pub fn create_overlay_argv(
    base: &Path,
    base_format: &str,
    overlay: &Path,
    size: Option<u64>,
) -> Vec<String> {
    let mut v = process::argv([
        "qemu-img",
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        base_format,
        "-b",
    ]);
    v.push(s(base));
    v.push(s(overlay));
    if let Some(sz) = size {
        v.push(sz.to_string());
    }
    v
}

/// `-o` creation options for an output.
pub fn create_options(out: &OutputPlan) -> Vec<String> {
    let mut o = Vec::new();
    match out.format {
        Format::Qcow2 => {
            o.push("compat=1.1".to_string());
            if let Some(c) = out.compress {
                o.push(format!("compression_type={}", c.as_str()));
            }
            if let Some(cs) = out.cluster_size {
                o.push(format!("cluster_size={cs}"));
            }
        }
        _ => {
            if let Some(sf) = out.effective_subformat() {
                o.push(format!("subformat={}", sf.as_str()));
                if sf == Subformat::Fixed {
                    // Azure wants the exact virtual size, not a CHS-rounded one.
                    o.push("force_size=on".into());
                }
            }
        }
    }
    o
}

/// Convert `src` to one output (`-p`: progress on stdout).
pub fn convert_argv(src: &Path, src_format: &str, dst: &Path, out: &OutputPlan) -> Vec<String> {
    let mut v = process::argv([
        "qemu-img",
        "convert",
        "-p",
        "-f",
        src_format,
        "-O",
        out.format.as_str(),
    ]);
    let opts = create_options(out);
    if !opts.is_empty() {
        v.push("-o".into());
        v.push(opts.join(","));
    }
    if out.compress.is_some() {
        v.push("-c".into());
    }
    // Parallel coroutines with out-of-order writes halve conversion time; `-W` aborts
    // qemu-img with qed, and a streamOptimized vmdk is written sequentially anyway.
    let sequential = !out.format.facts().parallel_writes
        || out.effective_subformat() == Some(Subformat::StreamOptimized);
    if !sequential {
        v.extend(process::argv(["-m", "8", "-W"]));
    }
    v.push(s(src));
    v.push(s(dst));
    v
}

pub fn check_argv(path: &Path, format: &str) -> Vec<String> {
    process::argv(["qemu-img", "check", "-q", "-f", format, &s(path)])
}

/// Guest-visible content of `a` and `b` must be identical. Not strict (`-s`): allocation
/// may differ, and a VHD's CHS-rounded tail must read as zeros.
pub fn compare_argv(a: &Path, a_format: &str, b: &Path, b_format: &str) -> Vec<String> {
    process::argv([
        "qemu-img",
        "compare",
        "-f",
        a_format,
        "-F",
        b_format,
        &s(a),
        &s(b),
    ])
}

pub fn info_argv(path: &Path, format: Option<&str>, chain: bool) -> Vec<String> {
    let mut v = process::argv(["qemu-img", "info", "-U", "--output=json"]);
    if let Some(f) = format {
        v.push("-f".into());
        v.push(f.into());
    }
    if chain {
        v.push("--backing-chain".into());
    }
    v.push(s(path));
    v
}

#[derive(Debug, Clone, Deserialize)]
pub struct Info {
    #[serde(default)]
    pub filename: String,
    pub format: String,
    #[serde(rename = "virtual-size")]
    pub virtual_size: u64,
    #[serde(rename = "actual-size", default)]
    pub actual_size: u64,
    #[serde(rename = "backing-filename", default)]
    pub backing_filename: Option<String>,
    /// The backing file's format as the header records it (None: qemu would probe it).
    #[serde(rename = "backing-filename-format", default)]
    pub backing_format: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum QemuImgError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("cannot parse `qemu-img info` output for {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

fn parse<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, QemuImgError> {
    serde_json::from_str(text).map_err(|source| QemuImgError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

pub fn info(path: &Path, cancel: &Cancel) -> Result<Info, QemuImgError> {
    info_as(path, None, cancel)
}

/// `qemu-img info`, reading the image as `format` (None: probe).
pub fn info_as(path: &Path, format: Option<&str>, cancel: &Cancel) -> Result<Info, QemuImgError> {
    let out = process::run(&info_argv(path, format, false), &Default::default(), cancel)?;
    parse(path, &out.stdout)
}

/// Every image of a backing chain, top first.
pub fn info_chain(path: &Path, cancel: &Cancel) -> Result<Vec<Info>, QemuImgError> {
    let out = process::run(&info_argv(path, None, true), &Default::default(), cancel)?;
    parse(path, &out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::Compression;

    fn out(format: Format) -> OutputPlan {
        OutputPlan::new(format)
    }

    #[test]
    fn convert_argv_table() {
        let zstd = OutputPlan {
            compress: Some(Compression::Zstd),
            cluster_size: Some(2 << 20),
            ..out(Format::Qcow2)
        };
        let zlib = OutputPlan {
            compress: Some(Compression::Zlib),
            ..out(Format::Qcow2)
        };
        let stream = OutputPlan {
            subformat: Some(Subformat::StreamOptimized),
            ..out(Format::Vmdk)
        };
        let fixed = OutputPlan {
            subformat: Some(Subformat::Fixed),
            ..out(Format::Vpc)
        };
        let cases: Vec<(OutputPlan, &str)> = vec![
            (out(Format::Qcow2), "-O qcow2 -o compat=1.1 -m 8 -W"),
            (
                zstd,
                "-O qcow2 -o compat=1.1,compression_type=zstd,cluster_size=2097152 -c -m 8 -W",
            ),
            (
                zlib,
                "-O qcow2 -o compat=1.1,compression_type=zlib -c -m 8 -W",
            ),
            (out(Format::Raw), "-O raw -m 8 -W"),
            (
                out(Format::Vmdk),
                "-O vmdk -o subformat=monolithicSparse -m 8 -W",
            ),
            (stream, "-O vmdk -o subformat=streamOptimized"),
            (out(Format::Vpc), "-O vpc -o subformat=dynamic -m 8 -W"),
            (fixed, "-O vpc -o subformat=fixed,force_size=on -m 8 -W"),
            (out(Format::Qed), "-O qed"),
            (out(Format::Vdi), "-O vdi -m 8 -W"),
            (out(Format::Vhdx), "-O vhdx -m 8 -W"),
        ];
        for (o, want) in cases {
            assert_eq!(
                convert_argv(Path::new("/w/d.qcow2"), "qcow2", Path::new("/o/x"), &o).join(" "),
                format!("qemu-img convert -p -f qcow2 {want} /w/d.qcow2 /o/x")
            );
        }
    }

    #[test]
    fn check_and_compare_argv() {
        assert_eq!(
            check_argv(Path::new("/o/x.vmdk"), "vmdk").join(" "),
            "qemu-img check -q -f vmdk /o/x.vmdk"
        );
        assert_eq!(
            compare_argv(
                Path::new("/w/d.qcow2"),
                "qcow2",
                Path::new("/o/x.vhd"),
                "vpc"
            )
            .join(" "),
            "qemu-img compare -f qcow2 -F vpc /w/d.qcow2 /o/x.vhd"
        );
    }

    #[test]
    fn overlay_argv() {
        assert_eq!(
            create_overlay_argv(
                Path::new("/c/base.qcow2"),
                "qcow2",
                Path::new("/w/disk.qcow2"),
                Some(4 << 30)
            )
            .join(" "),
            "qemu-img create -q -f qcow2 -F qcow2 -b /c/base.qcow2 /w/disk.qcow2 4294967296"
        );
        assert_eq!(
            create_overlay_argv(Path::new("/c/b.img"), "raw", Path::new("/w/d"), None).join(" "),
            "qemu-img create -q -f qcow2 -F raw -b /c/b.img /w/d"
        );
    }

    #[test]
    fn info_parses_real_qemu_img_output() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("t.qcow2");
        process::run(
            &process::argv([
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                &img.display().to_string(),
                "64M",
            ]),
            &Default::default(),
            &Cancel::new(),
        )
        .unwrap();
        let i = info(&img, &Cancel::new()).unwrap();
        assert_eq!(i.format, "qcow2");
        assert_eq!(i.virtual_size, 64 << 20);
        assert!(i.backing_filename.is_none());
        assert_eq!(info_chain(&img, &Cancel::new()).unwrap().len(), 1);
    }
}
