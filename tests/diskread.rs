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

/// The hybrid layout as the bootstrap makes it (sfdisk and mkfs.vfat from the same builders),
/// read back by the host reader and by blkid: GPT with root, BIOS boot and a FAT32 ESP whose
/// volume ID is the one fstab names; a hybrid disk boots with BIOS by default, the same table
/// without its BIOS boot partition only with UEFI.
#[test]
fn the_hybrid_layout_reads_back_as_written() {
    use kiln::vocab::{DiskLayout, Firmware};
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    let size = 512u64 << 20;
    std::fs::File::create(&raw).unwrap().set_len(size).unwrap();
    let sfdisk = |script: &str| {
        let argv = kiln::bootstrap::sfdisk_argv(&raw);
        let mut c = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        c.stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(c.wait().unwrap().success());
    };
    sfdisk(&kiln::bootstrap::sfdisk_script(
        DiskLayout::Hybrid,
        "k",
        size,
    ));
    let id = kiln::bootstrap::esp_volume_id("k");
    let argv = kiln::bootstrap::mkfs_esp_argv(&raw, &id);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    run(&argv);

    let img = checked(&raw);
    let disk = kiln::diskread::open(&img).unwrap();
    let mut head = vec![0u8; 34 * 512];
    disk.read_at(0, &mut head).unwrap();
    let (table, parts) = kiln::diskread::partitions(&head).unwrap();
    assert_eq!(table, "gpt");
    let kinds: Vec<(i32, &str)> = parts.iter().map(|p| (p.number, p.kind.as_str())).collect();
    assert_eq!(
        kinds,
        [
            (1, "0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
            (2, kiln::diskread::BIOS_BOOT_GUID),
            (3, kiln::diskread::ESP_GUID)
        ]
    );
    // Root is last on the disk and the filesystem mkfs.ext4 is told to make fills it.
    let (offset, len) = kiln::bootstrap::root_extent(DiskLayout::Hybrid, size);
    assert_eq!((parts[0].start, parts[0].size), (offset, len));
    assert!(parts
        .iter()
        .all(|p| p.number == 1 || p.start + p.size <= offset));
    let mut bs = vec![0u8; 512];
    disk.read_at(parts[2].start, &mut bs).unwrap();
    let fat = kiln::diskread::fat_volume_id(&bs).unwrap();
    assert_eq!(fat, format!("{}-{}", &id[..4], &id[4..]));
    // blkid agrees, and FAT32 has the clusters it needs (fsck.vfat warns otherwise).
    let esp = dir.path().join("esp.img");
    run(&[
        "dd",
        &format!("if={}", raw.display()),
        &format!("of={}", esp.display()),
        "bs=1M",
        "skip=2",
        "count=126",
        "status=none",
    ]);
    let o = Command::new("blkid")
        .args(["-s", "UUID", "-o", "value"])
        .arg(&esp)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), fat);
    let o = Command::new("fsck.vfat")
        .arg("-n")
        .arg(&esp)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && !said.contains("Warning"), "{said}");
    assert_eq!(kiln::diskread::firmware_for(&img), Firmware::Bios);
    // Without the BIOS boot partition: UEFI only.
    run(&[
        "sfdisk",
        "--quiet",
        "--delete",
        &raw.display().to_string(),
        "2",
    ]);
    assert_eq!(kiln::diskread::firmware_for(&checked(&raw)), Firmware::Uefi);
    assert_eq!(kiln::diskread::fat_volume_id(&head[..512]), None);
}
