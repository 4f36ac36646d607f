//! kiln's host reader against qemu's own tools: every byte of a qcow2 image (plain, zlib or
//! zstd compressed, an overlay with writes over a compressed backing file) reads as `qemu-img
//! convert -O raw` says it is. No VM; qemu-img and qemu-io are test dependencies.

use std::path::Path;
use std::process::Command;

fn run(args: &[&str]) {
    let o = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `image` checked as kiln checks an image before reading it, every file beside it allowed
/// as a backing file.
fn checked(image: &Path) -> kiln::diskread::Image {
    let beside: Vec<std::path::PathBuf> = std::fs::read_dir(image.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    kiln::imagefile::check(image, None, &beside, &kiln::process::Cancel::new()).unwrap()
}

fn same_bytes(image: &Path, raw: &Path) {
    let disk = kiln::diskread::open(&checked(image)).unwrap();
    let want = std::fs::read(raw).unwrap();
    assert_eq!(disk.size(), want.len() as u64);
    // Odd offsets and lengths that cross cluster boundaries.
    let mut got = vec![0u8; want.len()];
    let mut off = 0usize;
    let mut step = 4093usize;
    while off < want.len() {
        let n = step.min(want.len() - off);
        disk.read_at(off as u64, &mut got[off..off + n]).unwrap();
        off += n;
        step = step * 7 % 200_003 + 511;
    }
    assert!(
        got == want,
        "{} differs from qemu-img's raw",
        image.display()
    );
}

/// `qemu-img convert -f raw -O qcow2 OPTIONS… SRC DST`.
fn to_qcow2(src: &str, dst: &str, options: &[&str]) {
    let mut argv = vec!["qemu-img", "convert", "-f", "raw", "-O", "qcow2"];
    argv.extend_from_slice(options);
    argv.extend([src, dst]);
    run(&argv);
}

#[test]
fn qcow2_images_read_as_qemu_img_reads_them() {
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n).display().to_string();
    // 6 MiB: patterned data, a hole, and data that compresses.
    let mut data = vec![0u8; 6 << 20];
    for (i, b) in data.iter_mut().enumerate().take(2 << 20) {
        *b = (i.wrapping_mul(2_654_435_761) >> 13) as u8;
    }
    for b in data[(4 << 20)..].iter_mut() {
        *b = b'k';
    }
    std::fs::write(p("src.raw"), &data).unwrap();
    to_qcow2(&p("src.raw"), &p("plain.qcow2"), &[]);
    to_qcow2(&p("src.raw"), &p("zlib.qcow2"), &["-c"]);
    to_qcow2(
        &p("src.raw"),
        &p("small.qcow2"),
        &["-o", "cluster_size=4096"],
    );
    run(&[
        "qemu-img",
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "qcow2",
        "-b",
        &p("zlib.qcow2"),
        &p("overlay.qcow2"),
    ]);
    run(&[
        "qemu-io",
        "-f",
        "qcow2",
        "-c",
        "write -P 0xab 1000k 300k",
        "-c",
        "write -z 4M 64k",
        &p("overlay.qcow2"),
    ]);
    for img in ["plain.qcow2", "zlib.qcow2", "small.qcow2", "overlay.qcow2"] {
        let raw = p(&format!("{img}.raw"));
        run(&["qemu-img", "convert", "-O", "raw", &p(img), &raw]);
        same_bytes(Path::new(&p(img)), Path::new(&raw));
    }
    // A raw file is read as it is.
    same_bytes(Path::new(&p("src.raw")), Path::new(&p("src.raw")));
    // zstd clusters (qemu-img's `compression_type=zstd`, what a `compress: zstd` output is),
    // with 4 KiB and 2 MiB clusters.
    for (img, cluster) in [
        ("zstd.qcow2", "65536"),
        ("zstd-small.qcow2", "4096"),
        ("zstd-big.qcow2", "2M"),
    ] {
        to_qcow2(
            &p("src.raw"),
            &p(img),
            &[
                "-c",
                "-o",
                &format!("compression_type=zstd,cluster_size={cluster}"),
            ],
        );
        let raw = p(&format!("{img}.raw"));
        run(&["qemu-img", "convert", "-O", "raw", &p(img), &raw]);
        same_bytes(Path::new(&p(img)), Path::new(&raw));
    }
}
