//! Fuzz kiln's own parsers of untrusted bytes (issue 24): the host reader (qcow2 container,
//! MBR/GPT, ext2/3/4 through ext4-view, the guest files inspect reads) and the stage cache's
//! meta.json. Seeds are real images made by bench/fuzz-images.sh (mke2fs -d, qemu-img, sfdisk);
//! each case mutates one seed (bit flips, bytes set to 0x00/0xff, 32- and 64-bit fields of the
//! qcow2 header, the GPT header and entries and the ext4 superblock set to edge values,
//! truncation) and runs it through `inspect::read_host` and `diskread::partitions`, or writes a
//! mutated meta.json into a store and lists it. Not coverage-guided (no nightly toolchain or
//! libFuzzer here): a seeded random mutator. Reports panics (each input saved), the slowest
//! case and the largest heap peak of one case.
//!
//!   cargo run --release --example fuzz-images -- SEEDDIR CASES [SEED]

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use proptest::prelude::RngExt;
use proptest::test_runner::{RngAlgorithm, TestRng};

#[path = "counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::{LIVE, PEAK};

/// Where a seed's interesting fields are: (offset, width in bytes).
fn fields(kind: &str) -> Vec<(usize, usize)> {
    match kind {
        // qcow2 header: backing offset/len, cluster bits, size, crypt, L1 size/offset,
        // refcount offset, snapshots, incompatible features, header length.
        "qcow2" => vec![
            (8, 8),
            (16, 4),
            (20, 4),
            (24, 8),
            (32, 4),
            (36, 4),
            (40, 8),
            (48, 8),
            (60, 4),
            (72, 8),
            (100, 4),
        ],
        // GPT header (LBA 1) and the first entries (LBA 2), ext4 superblock of the first
        // partition (1 MiB + 1024): blocks, free, log block size, features, inode counts.
        _ => vec![
            (512 + 72, 8),
            (512 + 80, 4),
            (512 + 84, 4),
            (1024 + 32, 8),
            (1024 + 40, 8),
            (1024 + 128 + 32, 8),
            (1024 + 128 + 40, 8),
            (1048576 + 1024, 4),
            (1048576 + 1024 + 4, 4),
            (1048576 + 1024 + 0x18, 4),
            (1048576 + 1024 + 0x20, 4),
            (1048576 + 1024 + 0x28, 4),
            (1048576 + 1024 + 0x60, 4),
            (1048576 + 1024 + 0x150, 4),
        ],
    }
}

fn mutate(rng: &mut TestRng, seed: &[u8], kind: &str) -> Vec<u8> {
    let mut b = seed.to_vec();
    let edges: [u64; 8] = [
        0,
        1,
        0x7fff_ffff,
        0xffff_ffff,
        0x8000_0000_0000_0000,
        u64::MAX,
        u64::MAX / 512,
        1 << 40,
    ];
    for _ in 0..rng.random_range(1..=6usize) {
        match rng.random_range(0..5u8) {
            0 => {
                let i = rng.random_range(0..b.len());
                b[i] ^= 1 << rng.random_range(0..8u8);
            }
            1 => {
                let i = rng.random_range(0..b.len());
                b[i] = if rng.random_bool(0.5) { 0 } else { 0xff };
            }
            2 | 3 => {
                let f = fields(kind);
                let (at, w) = f[rng.random_range(0..f.len())];
                if at + w <= b.len() {
                    // qcow2 is big-endian, GPT and ext4 little-endian.
                    let e = edges[rng.random_range(0..edges.len())];
                    if kind == "qcow2" {
                        b[at..at + w].copy_from_slice(&e.to_be_bytes()[8 - w..]);
                    } else {
                        b[at..at + w].copy_from_slice(&e.to_le_bytes()[..w]);
                    }
                }
            }
            _ => {
                if rng.random_bool(0.2) {
                    b.truncate(rng.random_range(0..b.len()));
                }
            }
        }
        if b.is_empty() {
            b.push(0);
        }
    }
    b
}

fn meta_case(rng: &mut TestRng) -> String {
    let pick = |rng: &mut TestRng, v: &[&str]| v[rng.random_range(0..v.len())].to_string();
    let keys = [
        "\"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"",
        "\"/etc\"",
        "\"../../x\"",
        "\"ééééééééééééééééééééééééééééééééé\"",
        "null",
        "42",
        "[]",
    ];
    let files = [
        "[]",
        "[\"disk.qcow2\"]",
        "[\"../../etc/shadow\"]",
        "[\"\"]",
        "\"x\"",
        "[1]",
    ];
    let sizes = ["0", "18446744073709551615", "-1", "1e400", "\"big\""];
    format!(
        "{{\"stage\": {}, \"key\": {}, \"depends_on\": {}, \"created\": {}, \"files\": {}, \"size\": {}, \"data\": {}}}",
        pick(rng, &["\"s\"", "\"\\u001b[2J\"", "null", "1"]),
        pick(rng, &keys),
        pick(rng, &keys),
        pick(rng, &sizes),
        pick(rng, &files),
        pick(rng, &sizes),
        pick(rng, &["{}", "null", "[[[[[[[[[[]]]]]]]]]]", "\"x\""]),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seeds_dir = PathBuf::from(args.get(1).expect("SEEDDIR"));
    let cases: u64 = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(20_000);
    let seed: u64 = args.get(3).map(|s| s.parse().unwrap()).unwrap_or(1);
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let mut rng = TestRng::from_seed(RngAlgorithm::ChaCha, &key);
    let seeds: Vec<(String, Vec<u8>)> = ["disk.qcow2", "disk.raw"]
        .iter()
        .map(|n| {
            let kind = if n.ends_with("qcow2") { "qcow2" } else { "raw" };
            (
                kind.to_string(),
                std::fs::read(seeds_dir.join(n)).expect("seed"),
            )
        })
        .collect();
    let work = tempfile::tempdir().unwrap();
    let crashes = PathBuf::from("target/fuzz-images-crashes");
    std::panic::set_hook(Box::new(|_| {}));
    let (mut panics, mut read, mut refused) = (0u64, 0u64, 0u64);
    let mut slowest = (Duration::ZERO, String::new());
    let mut peak = 0usize;
    let start = Instant::now();
    for case in 0..cases {
        PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
        let base = LIVE.load(Ordering::Relaxed);
        let t = Instant::now();
        let (what, input, outcome) = if case % 10 == 9 {
            let text = meta_case(&mut rng);
            let store = kiln::stagecache::Store::new(work.path());
            let dir = store.root.join("0".repeat(64));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("meta.json"), &text).unwrap();
            let r = std::panic::catch_unwind(|| store.list().len());
            ("meta", text.into_bytes(), r.map(|n| n > 0))
        } else {
            let (kind, bytes) = &seeds[rng.random_range(0..seeds.len())];
            let m = mutate(&mut rng, bytes, kind);
            let path = work.path().join(format!("case.{kind}"));
            std::fs::write(&path, &m).unwrap();
            let img = kiln::diskread::Image {
                path: path.clone(),
                format: kind.clone(),
                virtual_size: 0,
                backing: None,
            };
            let r = std::panic::catch_unwind(|| {
                let head = &m[..m.len().min(34 * 512)];
                let _ = kiln::diskread::partitions(head);
                kiln::inspect::read_host(&img).is_ok()
            });
            ("image", m, r)
        };
        let took = t.elapsed();
        peak = peak.max(PEAK.load(Ordering::Relaxed).saturating_sub(base));
        match outcome {
            Ok(true) => read += 1,
            Ok(false) => refused += 1,
            Err(_) => {
                panics += 1;
                std::fs::create_dir_all(&crashes).unwrap();
                let p = crashes.join(format!("{what}-{seed}-{case}"));
                std::fs::write(&p, &input).unwrap();
                eprintln!("panic: {what} case {case}, saved as {}", p.display());
            }
        }
        if took > slowest.0 {
            slowest = (took, format!("{what} case {case}"));
        }
        if case % 5000 == 4999 {
            eprintln!("{} cases, {:.0} s", case + 1, start.elapsed().as_secs_f64());
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{cases} cases (seed {seed}) in {secs:.0} s: {panics} panics, {read} read, {refused} refused; slowest {} ms ({}); largest heap peak of one case {:.1} MiB",
        slowest.0.as_millis(),
        slowest.1,
        peak as f64 / 1048576.0
    );
    if panics > 0 || slowest.0 >= Duration::from_secs(5) || peak >= 512 << 20 {
        std::process::exit(1);
    }
}
