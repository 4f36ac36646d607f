//! `kiln convert` and `kiln info` against the real qemu-img: every format, verified content,
//! atomic outputs, SHA256SUMS that `sha256sum -c` accepts, clean failures.

use std::path::{Path, PathBuf};
use std::process::Command;

mod harness;
use harness::*;

/// A 64 MiB raw image with known content: random data, a copy of a binary, zeros elsewhere.
fn known_image(dir: &Path) -> PathBuf {
    let out = sh(
        "qemu-img create -q -f raw src.raw 64M && \
         dd if=/dev/urandom of=src.raw bs=1M count=8 seek=4 conv=notrunc status=none && \
         head -c 4194304 \"$(command -v qemu-img)\" | dd of=src.raw bs=1M seek=40 conv=notrunc status=none && \
         printf 'kiln-known-content' | dd of=src.raw bs=1 seek=67108000 conv=notrunc status=none",
        dir,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    dir.join("src.raw")
}

fn qemu_info(path: &Path, fmt: &str) -> serde_json::Value {
    let out = Command::new("qemu-img")
        .args(["info", "--output=json", "-f", fmt])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn every_format_converts_verifies_and_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let src = known_image(dir.path());
    let out = kiln_in(
        &[
            "convert",
            "src.raw",
            "-O",
            "qcow2",
            "-O",
            "raw",
            "-O",
            "vmdk",
            "-O",
            "vdi",
            "-O",
            "vhdx",
            "-O",
            "vpc",
            "-O",
            "qed",
            "-O",
            "ploop",
            "--compress",
            "zstd",
            "-o",
            "out",
            "--format",
            "json",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out_dir = dir.path().join("out");
    assert_eq!(
        entries(&out_dir),
        [
            "SHA256SUMS",
            "src.hds",
            "src.qcow2",
            "src.qed",
            "src.raw",
            "src.vdi",
            "src.vhd",
            "src.vhdx",
            "src.vmdk"
        ],
        "no partial files remain"
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let outputs = summary["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 8);
    for o in outputs {
        let c = &o["output"];
        let fmt = c["format"].as_str().unwrap();
        let file = out_dir.join(c["path"].as_str().unwrap());
        // Independent checks with qemu-img itself.
        let info = qemu_info(&file, fmt);
        assert_eq!(info["format"], fmt);
        let cmp = Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", fmt])
            .arg(&src)
            .arg(&file)
            .output()
            .unwrap();
        assert!(cmp.status.success(), "{fmt}: {}", text(&cmp.stdout));
        assert_eq!(c["compared"], true);
        let glance = c["glance_disk_format"].clone();
        match fmt {
            "vpc" => assert_eq!(glance, "vhd"),
            "parallels" => assert_eq!(glance, "ploop"),
            "qed" => assert!(glance.is_null()),
            f => assert_eq!(glance, f),
        }
        // The digests are of the file's bytes, by coreutils' own tools.
        for (key, tool) in [("sha512", "sha512sum"), ("sha256", "sha256sum")] {
            let out = Command::new(tool).arg(&file).output().unwrap();
            let want = text(&out.stdout);
            let want = want.split_whitespace().next().unwrap();
            assert_eq!(c[key].as_str().unwrap(), want, "{fmt}: {key}");
        }
        assert!(c["allocated_size"].as_u64().unwrap() > 0);
    }
    let qcow = qemu_info(&out_dir.join("src.qcow2"), "qcow2");
    assert_eq!(qcow["format-specific"]["data"]["compat"], "1.1");
    assert_eq!(
        qcow["format-specific"]["data"]["compression-type"], "zstd",
        "{qcow}"
    );
    let sums = sh("sha256sum -c SHA256SUMS", &out_dir);
    assert!(sums.status.success(), "{}", text(&sums.stdout));
    assert_eq!(text(&sums.stdout).matches(": OK").count(), 8);
}

#[test]
fn subformats_and_cluster_size_reach_the_files() {
    let dir = tempfile::tempdir().unwrap();
    known_image(dir.path());
    for (args, file, fmt, key, want) in [
        (
            vec!["-O", "vmdk", "--subformat", "streamOptimized"],
            "src.vmdk",
            "vmdk",
            "create-type",
            "streamOptimized",
        ),
        (
            vec!["-O", "vmdk"],
            "src.vmdk",
            "vmdk",
            "create-type",
            "monolithicSparse",
        ),
    ] {
        let mut a = vec!["convert", "src.raw", "--force"];
        a.extend(args);
        let out = kiln_in(&a, dir.path());
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let info = qemu_info(&dir.path().join(file), fmt);
        assert_eq!(info["format-specific"]["data"][key], want, "{info}");
    }
    // A fixed VHD probes as raw: it must be read back as vpc, and is the full size.
    let out = kiln_in(
        &[
            "convert",
            "src.raw",
            "-O",
            "vpc",
            "--subformat",
            "fixed",
            "--force",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let vhd = dir.path().join("src.vhd");
    assert!(std::fs::metadata(&vhd).unwrap().len() > 64 << 20);
    assert_eq!(qemu_info(&vhd, "vpc")["virtual-size"], 64 << 20);
    let out = kiln_in(
        &[
            "convert",
            "src.raw",
            "-O",
            "qcow2",
            "--cluster-size",
            "2M",
            "-o",
            "big.qcow2",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        qemu_info(&dir.path().join("big.qcow2"), "qcow2")["cluster-size"],
        2 << 20
    );
}

#[test]
fn bad_requests_exit_2_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    known_image(dir.path());
    std::fs::write(dir.path().join("src.qcow2"), b"precious").unwrap();
    for (args, needle) in [
        (
            vec!["convert", "missing.raw", "-O", "qcow2"],
            "does not exist",
        ),
        (vec!["convert", "src.raw", "-O", "qcow3"], "invalid value"),
        (vec!["convert", "src.raw", "-O", "qcow2"], "already exists"),
        (
            vec!["convert", "src.raw", "-O", "vdi", "--subformat", "fixed"],
            "fits none",
        ),
        (
            vec!["convert", "src.raw", "-O", "vdi", "--compress", "zstd"],
            "qcow2 only",
        ),
        (
            vec![
                "convert",
                "src.raw",
                "-O",
                "qcow2",
                "--cluster-size",
                "3K",
                "-o",
                "x.qcow2",
            ],
            "power of two",
        ),
        (vec!["info", "missing.qcow2"], "does not exist"),
    ] {
        let out = kiln_in(&args, dir.path());
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(needle),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    assert_eq!(
        std::fs::read(dir.path().join("src.qcow2")).unwrap(),
        b"precious",
        "an existing output is never overwritten without --force"
    );
    assert_eq!(entries(dir.path()), ["src.qcow2", "src.raw"]);
}

#[test]
fn interrupting_a_conversion_removes_partial_files_and_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    let out = sh(
        "qemu-img create -q -f raw big.raw 1G && dd if=/dev/urandom of=big.raw bs=1M count=768 conv=notrunc status=none",
        dir.path(),
    );
    assert!(out.status.success());
    let child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "convert",
            "big.raw",
            "-O",
            "vmdk",
            "--subformat",
            "streamOptimized",
            "-O",
            "qcow2",
            "--compress",
            "zlib",
            "-o",
            "out",
        ])
        .current_dir(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until both partial files exist, then interrupt.
    let out_dir = dir.path().join("out");
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(60) {
        if out_dir.is_dir()
            && entries(&out_dir)
                .iter()
                .filter(|f| f.contains(".part-"))
                .count()
                == 2
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        entries(&out_dir)
            .iter()
            .filter(|f| f.contains(".part-"))
            .count(),
        2,
        "conversions did not start in parallel: {:?}",
        entries(&out_dir)
    );
    unsafe { kill(child.id() as i32, 2) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    assert!(
        entries(&out_dir).is_empty(),
        "left after interrupt: {:?}",
        entries(&out_dir)
    );
}

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn stream_optimized_vmdk_from_kilns_parallel_writer_reads_back_identically() {
    let dir = tempfile::tempdir().unwrap();
    // An odd size (a partial last grain), data across grain-table boundaries (32 MiB), a lone
    // sector at the very end, and zeros that must not be stored.
    let out = sh(
        "qemu-img create -q -f raw odd.raw 100000256 && \
         dd if=/dev/urandom of=odd.raw bs=1M seek=31 count=3 conv=notrunc status=none && \
         head -c 2000000 \"$(command -v qemu-img)\" | dd of=odd.raw bs=1M seek=70 conv=notrunc status=none && \
         dd if=/dev/zero of=odd.raw bs=1M seek=80 count=4 conv=notrunc status=none && \
         printf end | dd of=odd.raw bs=1 seek=100000250 conv=notrunc status=none",
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    for (writer, file) in [("kiln", "native.vmdk"), ("qemu-img", "qemu.vmdk")] {
        let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args([
                "convert",
                "odd.raw",
                "-O",
                "vmdk",
                "--subformat",
                "streamOptimized",
                "-o",
                file,
            ])
            .env("KILN_VMDK_WRITER", writer)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{writer}: {}",
            text(&out.stderr)
        );
        let info = qemu_info(&dir.path().join(file), "vmdk");
        assert_eq!(info["virtual-size"], 100000256);
        assert_eq!(
            info["format-specific"]["data"]["create-type"],
            "streamOptimized"
        );
        let cmp = sh(
            &format!("qemu-img compare -f raw -F vmdk odd.raw {file}"),
            dir.path(),
        );
        assert!(cmp.status.success(), "{writer}: {}", text(&cmp.stdout));
        let check = sh(&format!("qemu-img check -f vmdk {file}"), dir.path());
        assert!(check.status.success(), "{writer}: {}", text(&check.stdout));
    }
    // Same compression as qemu-img's writer, give or take metadata.
    let native = std::fs::metadata(dir.path().join("native.vmdk"))
        .unwrap()
        .len() as f64;
    let qemu = std::fs::metadata(dir.path().join("qemu.vmdk"))
        .unwrap()
        .len() as f64;
    assert!(
        (native / qemu - 1.0).abs() < 0.05,
        "native {native} vs qemu {qemu}"
    );
}

/// Point one L2 entry of a qcow2 at an unaligned offset: qemu detects the corruption while
/// reading the data, after the output file was created.
fn corrupt_l2_entry(path: &Path) {
    let mut d = std::fs::read(path).unwrap();
    let be = |b: &[u8]| u64::from_be_bytes(b.try_into().unwrap());
    let l1 = be(&d[40..48]) as usize;
    let l2 = (be(&d[l1..l1 + 8]) & 0x00ff_ffff_ffff_fe00) as usize;
    // Cluster 64 (4 MiB) holds the random data, so its entry is allocated.
    let entry = l2 + 64 * 8;
    assert_ne!(be(&d[entry..entry + 8]), 0);
    d[entry..entry + 8].copy_from_slice(&0x8000_0000_0000_0201u64.to_be_bytes());
    std::fs::write(path, d).unwrap();
}

#[test]
fn corrupted_and_truncated_sources_fail_cleanly_without_partial_output() {
    let dir = tempfile::tempdir().unwrap();
    known_image(dir.path());
    let out = sh(
        "qemu-img convert -f raw -O qcow2 src.raw bad.qcow2 && cp bad.qcow2 good.qcow2 && head -c 1000 good.qcow2 > cut.qcow2",
        dir.path(),
    );
    assert!(out.status.success());
    corrupt_l2_entry(&dir.path().join("bad.qcow2"));
    for (src, needle) in [
        ("bad.qcow2", "L2 entry corrupted"),
        ("cut.qcow2", "is damaged"),
    ] {
        let out_dir = dir.path().join(format!("out-{src}"));
        let out = kiln_in(
            &[
                "convert",
                src,
                "-f",
                "qcow2",
                "-O",
                "vmdk",
                "-O",
                "raw",
                "-o",
                out_dir.to_str().unwrap(),
            ],
            dir.path(),
        );
        assert_eq!(out.status.code(), Some(1), "{src}: {}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(err.contains(src), "{err}");
        assert!(err.contains(needle), "the qemu-img message is shown: {err}");
        assert!(
            entries(&out_dir).is_empty(),
            "{src}: outputs left: {:?}",
            entries(&out_dir)
        );
    }
}

#[test]
fn info_reports_format_sizes_checksum_and_backing_file() {
    let dir = tempfile::tempdir().unwrap();
    known_image(dir.path());
    let out = sh(
        "qemu-img convert -f raw -O qcow2 src.raw base.qcow2 && qemu-img create -q -f qcow2 -F qcow2 -b base.qcow2 top.qcow2",
        dir.path(),
    );
    assert!(out.status.success());
    let out = kiln_in(&["info", "top.qcow2", "--format", "json"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["format"], "qcow2");
    assert_eq!(v["virtual_size"], 64 << 20);
    assert_eq!(v["backing_file"], "base.qcow2");
    let sha = text(&sh("sha256sum top.qcow2", dir.path()).stdout);
    assert_eq!(
        v["sha256"].as_str().unwrap(),
        sha.split_whitespace().next().unwrap()
    );
    assert_eq!(
        v["size"].as_u64().unwrap(),
        std::fs::metadata(dir.path().join("top.qcow2"))
            .unwrap()
            .len()
    );
    let out = kiln_in(&["info", "src.raw"], dir.path());
    let t = text(&out.stdout);
    assert!(
        t.contains("format:         raw") && t.contains("backing file:   none"),
        "{t}"
    );
}
