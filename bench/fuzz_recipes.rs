//! Fuzz the recipe loader and validator (issue 12): generated recipes (random YAML built from
//! the recipe vocabulary, anchors and aliases, deep nesting, huge and odd scalars, control
//! characters) and byte-level mutations of the shipped examples go through
//! `recipe::load_all` and, when that resolves, template rendering, as `kiln validate` does.
//! Reports panics (each input saved), the slowest input and the largest memory peak of one
//! input. Run by bench/fuzz-recipes.sh, not in CI.
//!
//!   cargo run --release --example fuzz-recipes -- CASES [SEED]

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use proptest::prelude::{Rng, RngExt};
use proptest::test_runner::{RngAlgorithm, TestRng};

#[path = "counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::{LIVE, PEAK};

const KEYS: &[&str] = &[
    "name",
    "version",
    "description",
    "vars",
    "elements",
    "source",
    "bootstrap",
    "image",
    "installer",
    "distro",
    "suite",
    "mirror",
    "security_mirror",
    "size",
    "packages",
    "url",
    "path",
    "checksum",
    "format",
    "kernel",
    "initrd",
    "iso",
    "answers",
    "kind",
    "delivery",
    "template",
    "user",
    "full_name",
    "password_hash",
    "timezone",
    "locale",
    "keyboard",
    "disk_layout",
    "proxy",
    "timeout",
    "vm",
    "memory",
    "vcpus",
    "disk",
    "accel",
    "uri",
    "provision",
    "files",
    "content",
    "source",
    "mode",
    "owner",
    "run",
    "users",
    "groups",
    "sudo",
    "shell",
    "ssh_authorized_keys",
    "cloud_init",
    "datasources",
    "default_user",
    "customize",
    "write",
    "append-line",
    "copy-in",
    "mkdir",
    "delete",
    "chmod",
    "link",
    "touch",
    "run-command",
    "install",
    "uninstall",
    "root-password",
    "password",
    "ssh-inject",
    "hostname",
    "firstboot-command",
    "sysprep",
    "operations",
    "outputs",
    "subformat",
    "compress",
    "cluster_size",
    "publish",
    "local",
    "dir",
    "glance",
    "cloud",
    "formats",
    "visibility",
    "protected",
    "min_ram",
    "tags",
    "properties",
    "members",
    "method",
    "stores",
    "keep",
    "rotation_id",
    "import_timeout",
    "templates",
    "domain",
    "user_data",
    "meta_data",
    "network_config",
    "depends",
];

const SCALARS: &[&str] = &[
    "bookworm",
    "debian",
    "qcow2",
    "vmdk",
    "raw",
    "vpc",
    "2G",
    "512M",
    "40m",
    "90s",
    "1h",
    "5124095576030432h",
    "99999999999999999999",
    "4294967296",
    "-1",
    "0",
    "1e400",
    ".inf",
    "~",
    "null",
    "yes",
    "no",
    "true",
    "\"\"",
    "''",
    "http://deb.debian.org/debian",
    "file:SHA256SUMS",
    "sha256:00",
    "--setup-hook=id",
    "\"a\\nb\"",
    "\"\\u200b\"",
    "\"\\x00\"",
    "\"\\e[31m\"",
    "/etc/shadow",
    "../../../../etc/passwd",
    "/dev/zero",
    "\"{{vars.x}}\"",
    "\"{{#each}}\"",
    "preseed",
    "kickstart",
    "autoinstall",
    "defaults",
    "-ssh-hostkeys",
    "random",
    "disabled",
    "!!binary aGVsbG8=",
    "!!python/object:os.system",
    "0o777",
    "0x10",
    "0755",
    "\"0644\"",
    "[]",
    "{}",
    "&a x",
    "*a",
    "*undefined",
];

fn scalar(r: &mut TestRng) -> String {
    match r.random_range(0..10) {
        0..=5 => SCALARS[r.random_range(0..SCALARS.len())].to_string(),
        6 => r.random_range(-100_000i64..100_000).to_string(),
        7 => {
            // A long plain string.
            let n = r.random_range(1..20_000);
            "x".repeat(n)
        }
        8 => {
            // A double-quoted string of random characters, escaped.
            let n = r.random_range(0..40);
            let s: String = (0..n)
                .map(|_| char::from_u32(r.random_range(0..0x3000)).unwrap_or('?'))
                .collect();
            serde_json::to_string(&s).unwrap()
        }
        _ => KEYS[r.random_range(0..KEYS.len())].to_string(),
    }
}

fn key(r: &mut TestRng) -> String {
    if r.random_range(0..8) == 0 {
        scalar(r)
    } else {
        KEYS[r.random_range(0..KEYS.len())].to_string()
    }
}

/// A random YAML node in block style at `indent`, as text after "key:" or "- ".
fn node(r: &mut TestRng, depth: usize, indent: usize, anchors: &mut usize) -> String {
    let pad = " ".repeat(indent);
    let anchor = if r.random_range(0..12) == 0 {
        *anchors += 1;
        format!(" &a{}", *anchors)
    } else {
        String::new()
    };
    match if depth > 6 { 0 } else { r.random_range(0..9) } {
        0..=3 => format!("{anchor} {}", scalar(r)),
        4 | 5 => {
            let mut s = anchor;
            for _ in 0..r.random_range(1..6) {
                s.push_str(&format!(
                    "\n{pad}{}:{}",
                    key(r),
                    node(r, depth + 1, indent + 2, anchors)
                ));
            }
            if *anchors > 0 && r.random_range(0..6) == 0 {
                s.push_str(&format!("\n{pad}<<: *a{}", r.random_range(1..=*anchors)));
            }
            s
        }
        6 => {
            let mut s = anchor;
            for _ in 0..r.random_range(1..5) {
                s.push_str(&format!(
                    "\n{pad}-{}",
                    node(r, depth + 1, indent + 2, anchors)
                ));
            }
            s
        }
        7 if *anchors > 0 => format!(" *a{}", r.random_range(1..=*anchors)),
        7 => format!(" [{}, {}]", scalar(r), scalar(r)),
        _ => {
            // Deep flow nesting, balanced or not, sometimes with an alias inside a complex key.
            let n = r.random_range(1..400);
            match r.random_range(0..3) {
                0 => format!(" {}{}", "[".repeat(n), "]".repeat(n)),
                1 => format!(" {}", "{a: ".repeat(n)),
                _ => " {? [*a1, *a1]: x}".to_string(),
            }
        }
    }
}

fn generated(r: &mut TestRng) -> String {
    let mut anchors = 0;
    let mut s = String::new();
    if r.random_range(0..3) > 0 {
        s.push_str("name: fuzz\n");
    }
    for _ in 0..r.random_range(1..10) {
        s.push_str(&format!("{}:{}\n", key(r), node(r, 0, 2, &mut anchors)));
    }
    s
}

const SPECIAL: &[u8] = b"\0\t\n\r :-[]{}&*!|>'\"%@`#,?\\\x1b\x7f\xc2\xe2\x80\x8b";

fn mutated(r: &mut TestRng, base: &[u8]) -> Vec<u8> {
    let mut v = base.to_vec();
    for _ in 0..r.random_range(1..6) {
        if v.is_empty() {
            break;
        }
        let i = r.random_range(0..v.len());
        match r.random_range(0..5) {
            0 => {
                v.remove(i);
            }
            1 => v.insert(i, SPECIAL[r.random_range(0..SPECIAL.len())]),
            2 => v[i] = r.next_u32() as u8,
            3 => {
                // Duplicate a slice (repeated keys, deeper nesting).
                let j = (i + r.random_range(1..200)).min(v.len());
                let piece = v[i..j].to_vec();
                v.splice(i..i, piece);
            }
            _ => {
                let j = r.random_range(0..v.len());
                v.swap(i, j);
            }
        }
    }
    v
}

fn main() {
    let mut args = std::env::args().skip(1);
    let cases: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut r = TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes);

    let work = PathBuf::from(
        std::env::var("KILN_FUZZ_DIR").unwrap_or_else(|_| "/dev/shm/kiln-fuzz".into()),
    );
    std::fs::create_dir_all(work.join("files")).unwrap();
    std::fs::write(work.join("files/hello.sh"), "echo hi\n").unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bases: Vec<Vec<u8>> = std::fs::read_dir(root.join("examples"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "yaml"))
        .map(|e| std::fs::read(e.path()).unwrap())
        .collect();
    let recipe = work.join("recipe.yaml");
    std::panic::set_hook(Box::new(|_| {}));

    let start = Instant::now();
    let (mut panics, mut resolved, mut errors) = (0u64, 0u64, 0u64);
    let mut slowest = (Duration::ZERO, 0u64);
    let mut biggest = (0usize, 0u64);
    for case in 0..cases {
        let input = if r.random_range(0..2) == 0 {
            generated(&mut r).into_bytes()
        } else {
            let b = r.random_range(0..bases.len());
            mutated(&mut r, &bases[b])
        };
        std::fs::write(&recipe, &input).unwrap();
        let vars: Vec<(String, String)> = if r.random_range(0..10) == 0 {
            vec![("hostname".into(), scalar(&mut r))]
        } else {
            Vec::new()
        };
        PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
        let base = LIVE.load(Ordering::Relaxed);
        let t = Instant::now();
        let outcome = std::panic::catch_unwind(|| {
            let (plan, errs) =
                kiln::recipe::load_all(&recipe, &vars, &[], kiln::recipe::Trust::Untrusted);
            if let (Some(plan), true) = (&plan, errs.is_empty()) {
                let _ = kiln::templates::render_answers(plan);
                true
            } else {
                false
            }
        });
        let took = t.elapsed();
        let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
        match outcome {
            Ok(true) => resolved += 1,
            Ok(false) => errors += 1,
            Err(_) => {
                panics += 1;
                let keep = work.join(format!("panic-{case}.yaml"));
                std::fs::write(&keep, &input).unwrap();
                eprintln!("panic on case {case}: saved as {}", keep.display());
            }
        }
        if took > slowest.0 {
            slowest = (took, case);
            std::fs::write(work.join("slowest.yaml"), &input).unwrap();
        }
        if peak > biggest.0 {
            biggest = (peak, case);
            std::fs::write(work.join("biggest.yaml"), &input).unwrap();
        }
        if (case + 1) % 100_000 == 0 {
            eprintln!(
                "{} cases, {:.0} s, {panics} panics, slowest {:.1} ms, peak {:.1} MiB",
                case + 1,
                start.elapsed().as_secs_f64(),
                slowest.0.as_secs_f64() * 1e3,
                biggest.0 as f64 / (1 << 20) as f64
            );
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!("recipes:        {cases} (seed {seed})");
    println!("resolved:       {resolved} without errors, {errors} refused with diagnostics");
    println!("panics:         {panics}");
    println!(
        "slowest input:  {:.1} ms (case {}, {}/slowest.yaml)",
        slowest.0.as_secs_f64() * 1e3,
        slowest.1,
        work.display()
    );
    println!(
        "largest peak:   {:.1} MiB of heap for one input (case {}, {}/biggest.yaml)",
        biggest.0 as f64 / (1 << 20) as f64,
        biggest.1,
        work.display()
    );
    println!(
        "throughput:     {:.0} recipes/s ({secs:.0} s)",
        cases as f64 / secs
    );
    let ok = panics == 0 && slowest.0 < Duration::from_secs(1) && biggest.0 < 256 << 20;
    println!(
        "verdict:        {}",
        if ok {
            "ok (no panic, every input under 1 s and 256 MiB)"
        } else {
            "FAILED"
        }
    );
    std::process::exit(if ok { 0 } else { 1 });
}
