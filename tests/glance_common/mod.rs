//! Helpers shared by the Glance test binaries: run kiln and the real `openstack` client
//! against the Glance of scripts/glance-setup.sh.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env_remove("OS_CLOUD")
        .output()
        .expect("kiln")
}

pub use crate::harness::text;

pub fn openstack(cloud: &str, args: &[&str]) -> String {
    let venv = std::env::var("KILN_GLANCE_VENV").unwrap_or_else(|_| "/opt/kiln-glance-venv".into());
    let out = Command::new(Path::new(&venv).join("bin/openstack"))
        .args(["--os-cloud", cloud])
        .args(args)
        .output()
        .expect("openstack client");
    assert!(
        out.status.success(),
        "openstack {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout).trim().to_string()
}

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// `kiln image --os-cloud CLOUD ARGS…`
pub fn img(cloud: &str, args: &[&str]) -> Output {
    let mut v = vec!["image", "--os-cloud", cloud];
    v.extend_from_slice(args);
    kiln(&v)
}

/// Exit 0 or a failure that shows kiln's stderr; returns stdout.
pub fn ok(out: Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}\nstdout: {}",
        text(&out.stderr),
        text(&out.stdout)
    );
    text(&out.stdout)
}

pub fn json_out(out: Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).expect("JSON output")
}

pub fn project_id(name: &str) -> String {
    openstack(
        "kiln-admin",
        &["project", "show", "-f", "value", "-c", "id", name],
    )
}

pub fn sha512(p: &Path) -> String {
    let out = Command::new("sha512sum").arg(p).output().unwrap();
    text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

pub fn ids_named(cloud: &str, name: &str) -> Vec<String> {
    ids_named_with(cloud, &[], name)
}

/// `ids_named` with `kiln image` flags before `list` (`--os-region-name R`).
pub fn ids_named_with(cloud: &str, flags: &[&str], name: &str) -> Vec<String> {
    let mut args = flags.to_vec();
    args.extend(["list", "--name", name, "-f", "json"]);
    json_out(img(cloud, &args))
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

/// A small real image of `format` with some data in it (so hashes differ per `seed`).
pub fn disk(dir: &Path, format: &str, seed: &str) -> PathBuf {
    let raw = dir.join(format!("{seed}.raw"));
    let mut data = vec![0u8; 4 << 20];
    let len = data.len();
    for (i, b) in seed.bytes().cycle().take(64 * 1024).enumerate() {
        data[i * 7 % len] = b;
    }
    std::fs::write(&raw, &data).unwrap();
    if format == "raw" {
        return raw;
    }
    let out = dir.join(format!("{seed}.{format}"));
    assert!(Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", format])
        .arg(&raw)
        .arg(&out)
        .status()
        .unwrap()
        .success());
    out
}

/// `kiln image create NAME --file FILE EXTRA… -f json` as `cloud`; the image as JSON.
pub fn create(cloud: &str, name: &str, file: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["create", name, "--file", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.extend(["-f", "json"]);
    json_out(img(cloud, &args))
}
