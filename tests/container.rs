//! The container image that runs kiln (scripts/container-image.sh: an mmdebstrap root
//! filesystem of Debian packages imported with podman, no registry): built, then `kiln
//! validate` and `kiln plan` of the examples run in it with no network, and the tools the jobs
//! need are there.

use std::path::PathBuf;
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `podman run` of the image with the examples at /work/examples (read-only), no network.
fn in_image(tag: &str, cmd: &[&str]) -> Output {
    // runc: crun refuses this machine's hybrid cgroup hierarchy; limits lowered: without
    // CAP_SYS_RESOURCE (a firecracker guest) the runtime may not raise or re-set them.
    let o = Command::new("podman")
        .args(["--runtime", "runc", "run", "--rm", "--network=none"])
        .args([
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=4096:4096",
            "-v",
        ])
        .arg(format!(
            "{}:/work/examples:ro",
            root().join("examples").display()
        ))
        .arg(tag)
        .args(cmd)
        .output()
        .unwrap();
    eprintln!("{cmd:?}: {}{}", text(&o.stdout), text(&o.stderr));
    o
}

struct Image(String);

impl Drop for Image {
    fn drop(&mut self) {
        let name = self.0.rsplit_once(':').map(|(n, _)| n).unwrap_or(&self.0);
        let _ = Command::new("podman")
            .args(["rmi", "-f", &self.0, &format!("{name}:latest")])
            .output();
    }
}

#[test]
#[ignore = "builds a container image from the Debian mirror (minutes); run by scripts/test.sh"]
fn the_kiln_image_validates_and_plans_the_examples_offline() {
    let tag = format!("localhost/kiln-test-{}:t", std::process::id());
    let built = Command::new("bash")
        .arg(root().join("scripts/container-image.sh"))
        .arg(&tag)
        .output()
        .unwrap();
    let image = Image(tag.clone());
    assert!(
        built.status.success(),
        "{}{}",
        text(&built.stdout),
        text(&built.stderr)
    );

    // The kiln in the image is this build's, byte for byte.
    let sum = |o: Output| {
        text(&o.stdout)
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string()
    };
    let ours = sum(Command::new("sha256sum")
        .arg(root().join("target/release/kiln"))
        .output()
        .unwrap());
    assert_eq!(
        sum(in_image(&image.0, &["sha256sum", "/usr/local/bin/kiln"])),
        ours
    );

    let v = in_image(
        &image.0,
        &[
            "kiln",
            "validate",
            "examples/debian-12.yaml",
            "examples/debian-12-uefi.yaml",
            "examples/debian-12-arm64.yaml",
        ],
    );
    assert_eq!(v.status.code(), Some(0));
    let p = in_image(&image.0, &["kiln", "plan", "examples/debian-12.yaml"]);
    assert_eq!(p.status.code(), Some(0));
    let plan = text(&p.stdout);
    for stage in ["source", "provision", "sysprep", "convert", "test"] {
        assert!(plan.contains(stage), "{stage} not in the plan: {plan}");
    }
    // A recipe error is one inside too: exit 2 with its place.
    let bad = in_image(
        &image.0,
        &["sh", "-c", "sed 's/^name: .*/name: \"bad name\"/' examples/debian-12.yaml > /tmp/b.yaml && cp -r examples/files /tmp/ && kiln validate /tmp/b.yaml"],
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("/tmp/b.yaml:"),
        "{}",
        text(&bad.stderr)
    );
    // What the jobs run besides kiln.
    for tool in [
        "kiln-services",
        "libvirtd",
        "virtlogd",
        "qemu-system-x86_64",
        "qemu-system-aarch64",
        "qemu-img",
        "guestfish",
        "mmdebstrap",
        "xorriso",
        "git",
    ] {
        let o = in_image(&image.0, &["sh", "-c", &format!("command -v {tool}")]);
        assert!(o.status.success(), "{tool} is not in the image");
    }
    assert!(in_image(
        &image.0,
        &["test", "-f", "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"]
    )
    .status
    .success());
}
