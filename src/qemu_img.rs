//! qemu-img: argv built by pure functions (table-tested), run through `process`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::plan::OutputPlan;
use crate::process::{self, Cancel, CommandError};
use crate::recipe::model::Format;

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// A qcow2 overlay over `base` (absolute path recorded as the backing file), optionally larger.
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

/// Convert the (flattened) build disk to one output format.
pub fn convert_argv(src: &Path, src_format: &str, dst: &Path, out: &OutputPlan) -> Vec<String> {
    let mut v = process::argv([
        "qemu-img",
        "convert",
        "-f",
        src_format,
        "-O",
        out.format.as_str(),
    ]);
    match out.format {
        Format::Qcow2 => {
            v.extend(process::argv(["-o", "compat=1.1"]));
            if out.compress {
                v.extend(process::argv(["-c", "-o", "compression_type=zstd"]));
            }
        }
        Format::Vmdk => v.extend(process::argv(["-o", "subformat=streamOptimized"])),
        Format::Vpc => v.extend(process::argv(["-o", "subformat=dynamic"])),
        _ => {}
    }
    // Parallel coroutines with out-of-order writes halve conversion time; qed aborts with -W
    // and streamOptimized vmdk is sequential anyway.
    if !matches!(out.format, Format::Qed | Format::Vmdk) {
        v.extend(process::argv(["-m", "8", "-W"]));
    }
    v.push(s(src));
    v.push(s(dst));
    v
}

pub fn info_argv(path: &Path) -> Vec<String> {
    vec![
        "qemu-img".into(),
        "info".into(),
        "-U".into(),
        "--output=json".into(),
        s(path),
    ]
}

#[derive(Debug, Clone, Deserialize)]
pub struct Info {
    pub format: String,
    #[serde(rename = "virtual-size")]
    pub virtual_size: u64,
    #[serde(rename = "actual-size", default)]
    pub actual_size: u64,
    #[serde(rename = "backing-filename", default)]
    pub backing_filename: Option<String>,
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

pub fn info(path: &Path, cancel: &Cancel) -> Result<Info, QemuImgError> {
    let out = process::run(&info_argv(path), &Default::default(), cancel)?;
    serde_json::from_str(&out.stdout).map_err(|source| QemuImgError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(format: Format, compress: bool) -> OutputPlan {
        OutputPlan { format, compress }
    }

    #[test]
    fn convert_argv_table() {
        let cases: &[(OutputPlan, &str)] = &[
            (out(Format::Qcow2, false), "qemu-img convert -f qcow2 -O qcow2 -o compat=1.1 -m 8 -W /w/d.qcow2 /o/x"),
            (out(Format::Qcow2, true), "qemu-img convert -f qcow2 -O qcow2 -o compat=1.1 -c -o compression_type=zstd -m 8 -W /w/d.qcow2 /o/x"),
            (out(Format::Raw, false), "qemu-img convert -f qcow2 -O raw -m 8 -W /w/d.qcow2 /o/x"),
            (out(Format::Vmdk, false), "qemu-img convert -f qcow2 -O vmdk -o subformat=streamOptimized /w/d.qcow2 /o/x"),
            (out(Format::Vpc, false), "qemu-img convert -f qcow2 -O vpc -o subformat=dynamic -m 8 -W /w/d.qcow2 /o/x"),
            (out(Format::Qed, false), "qemu-img convert -f qcow2 -O qed /w/d.qcow2 /o/x"),
            (out(Format::Vdi, false), "qemu-img convert -f qcow2 -O vdi -m 8 -W /w/d.qcow2 /o/x"),
            (out(Format::Vhdx, false), "qemu-img convert -f qcow2 -O vhdx -m 8 -W /w/d.qcow2 /o/x"),
        ];
        for (o, want) in cases {
            assert_eq!(
                convert_argv(Path::new("/w/d.qcow2"), "qcow2", Path::new("/o/x"), o).join(" "),
                *want
            );
        }
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
    }
}
