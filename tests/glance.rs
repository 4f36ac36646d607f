//! `kiln image` against a real Keystone + Glance (scripts/glance-setup.sh, run by
//! scripts/test.sh, which exports OS_CLIENT_CONFIG_FILE and KILN_GLANCE_VENV). Images are put
//! there with the real `openstack` client, then read back with kiln.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env_remove("OS_CLOUD")
        .output()
        .expect("kiln")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn openstack(cloud: &str, args: &[&str]) -> String {
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

/// A small real qcow2 (Glance's format inspector rejects fake ones).
fn qcow2(dir: &Path) -> PathBuf {
    let p = dir.join("img.qcow2");
    assert!(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&p)
        .arg("64M")
        .status()
        .unwrap()
        .success());
    p
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

#[test]
#[ignore = "needs the real Glance of scripts/glance-setup.sh; run by scripts/test.sh"]
fn image_list_and_show_read_a_real_glance() {
    let dir = tempfile::tempdir().unwrap();
    let file = qcow2(dir.path());
    let tag = unique("kiln-test");
    let mut ids = Vec::new();
    for (i, distro) in ["debian", "ubuntu", "debian"].iter().enumerate() {
        let name = format!("{tag}-{i}");
        ids.push(openstack(
            "kiln-alpha",
            &[
                "image",
                "create",
                "-f",
                "value",
                "-c",
                "id",
                "--disk-format",
                "qcow2",
                "--container-format",
                "bare",
                "--private",
                "--tag",
                &tag,
                "--property",
                &format!("os_distro={distro}"),
                "--file",
                file.to_str().unwrap(),
                &name,
            ],
        ));
    }
    // Paging followed: two per page, three images.
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "image",
            "--os-cloud",
            "kiln-alpha",
            "list",
            "--tag",
            &tag,
            "-f",
            "json",
        ])
        .env("KILN_GLANCE_PAGE_SIZE", "2")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut got: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    got.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(got, want);

    // Filters: a property, and tag + name.
    let out = kiln(&[
        "image",
        "--os-cloud",
        "kiln-alpha",
        "list",
        "--tag",
        &tag,
        "--property",
        "os_distro=ubuntu",
        "-f",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["id"], ids[1].as_str());
    let out = kiln(&[
        "image",
        "--os-cloud",
        "kiln-alpha",
        "list",
        "--name",
        &format!("{tag}-2"),
    ]);
    let t = text(&out.stdout);
    assert!(t.starts_with("ID "), "{t}");
    assert!(t.contains(&ids[2]) && !t.contains(&ids[0]), "{t}");

    // Show by unique name and by id, with what Glance computed.
    for key in [format!("{tag}-0"), ids[0].clone()] {
        let out = kiln(&[
            "image",
            "--os-cloud",
            "kiln-alpha",
            "show",
            &key,
            "-f",
            "json",
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["id"], ids[0].as_str());
        assert_eq!(v["status"], "active");
        assert_eq!(v["os_distro"], "debian");
        assert_eq!(v["os_hash_algo"], "sha512");
        assert_eq!(v["os_hash_value"].as_str().unwrap().len(), 128);
    }

    // The other project cannot see the private image: a clear error, exit 2.
    let out = kiln(&[
        "image",
        "--os-cloud",
        "kiln-beta",
        "show",
        &format!("{tag}-0"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no image"),
        "{}",
        text(&out.stderr)
    );

    for id in &ids {
        openstack("kiln-alpha", &["image", "delete", id]);
    }
}

#[test]
#[ignore = "needs the real Glance of scripts/glance-setup.sh; run by scripts/test.sh"]
fn bad_credentials_unknown_clouds_and_dead_endpoints_are_clear_errors() {
    let cfg = std::env::var("OS_CLIENT_CONFIG_FILE").expect("OS_CLIENT_CONFIG_FILE");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("clouds.yaml");
    let text_cfg = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &bad,
        text_cfg
            .replace("password: alpha-pw", "password: wrong-pw")
            .replace("kiln-beta:", "kiln-dead:")
            .replace(
                "auth_url: \"http://127.0.0.1:5000/v3\", username: beta-user",
                "auth_url: \"http://127.0.0.1:5999/v3\", username: beta-user",
            ),
    )
    .unwrap();
    let run = |cloud: &str| {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["image", "--os-cloud", cloud, "list"])
            .env("OS_CLIENT_CONFIG_FILE", &bad)
            .output()
            .unwrap()
    };
    let out = run("kiln-alpha");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("authenticating to kiln-alpha"), "{err}");
    assert!(!err.contains("wrong-pw"), "password in the error: {err}");
    let out = run("kiln-dead");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("authenticating to kiln-dead"),
        "{}",
        text(&out.stderr)
    );
    let out = run("no-such-cloud");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no cloud `no-such-cloud`"),
        "{}",
        text(&out.stderr)
    );
}
