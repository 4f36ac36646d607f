//! Installer mechanics without a VM: every answer-file kind rendered by `kiln plan` and checked
//! by its real validator (debconf-set-selections, pykickstart's ksvalidator, `cloud-init
//! schema`), snapshots of the rendered files, the answer file injected into a real gzip'd
//! initrd and unpacked again with cpio, kernel and initrd extracted byte for byte from an ISO
//! that xorriso builds here.

use std::path::{Path, PathBuf};
use std::process::Command;

mod harness;
use harness::*;

/// `kiln plan RECIPE --render-dir DIR`; returns DIR/install.
fn render(recipe: &Path, dir: &Path) -> PathBuf {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("plan")
        .arg(recipe)
        .arg("--render-dir")
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    dir.join("install")
}

fn ksvalidator() -> PathBuf {
    let venv = std::env::var("KILN_TOOLS_VENV").unwrap_or_else(|_| "/opt/kiln-tools-venv".into());
    let p = Path::new(&venv).join("bin/ksvalidator");
    assert!(
        p.is_file(),
        "{} missing: scripts/test.sh installs pykickstart there",
        p.display()
    );
    p
}

/// Run a validator; (success, output).
fn validate(kind: &str, file: &Path) -> (bool, String) {
    // debconf-set-selections exits 0 for a missing file.
    assert!(file.is_file(), "{} was not rendered", file.display());
    let out = match kind {
        "preseed.cfg" => Command::new("debconf-set-selections")
            .arg("--checkonly")
            .arg(file)
            .output(),
        "ks.cfg" => Command::new(ksvalidator())
            .args(["-v", "RHEL9"])
            .arg(file)
            .output(),
        "user-data" => Command::new("cloud-init")
            .args(["schema", "--config-file"])
            .arg(file)
            .output(),
        other => panic!("{other}"),
    }
    .expect("validator");
    let all = text(&out.stdout) + &text(&out.stderr);
    // ksvalidator reports some problems on stdout with exit 0.
    let ok = out.status.success() && !all.contains("Error") && !all.contains("error:");
    (ok, all)
}

#[test]
fn every_answer_kind_passes_its_real_validator() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("tests/fixtures/installer/preseed.yaml", "preseed.cfg"),
        ("tests/fixtures/installer/kickstart.yaml", "ks.cfg"),
        ("tests/fixtures/installer/autoinstall.yaml", "user-data"),
        ("examples/debian-12-netinst.yaml", "preseed.cfg"),
        ("examples/rocky-9-kickstart.yaml", "ks.cfg"),
        ("examples/ubuntu-24.04-autoinstall.yaml", "user-data"),
        ("examples/ubuntu-18.04.yaml", "preseed.cfg"),
    ];
    for (i, (recipe, file)) in cases.iter().enumerate() {
        let install = render(&root().join(recipe), &dir.path().join(i.to_string()));
        let f = install.join(file);
        let (ok, out) = validate(file, &f);
        assert!(
            ok,
            "{recipe}: {file} rejected:\n{out}\n{}",
            std::fs::read_to_string(&f).unwrap()
        );
    }
    // The validators do reject broken files (so the passes above mean something).
    let bad = dir.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    for (file, content) in [
        ("preseed.cfg", "d-i netcfg/get_hostname\n"),
        ("ks.cfg", "autopart --no-such-option\n"),
        ("user-data", "#cloud-config\npackages: 5\n"),
    ] {
        let p = bad.join(file);
        std::fs::write(&p, content).unwrap();
        let (ok, out) = validate(file, &p);
        assert!(!ok, "{file}: the validator accepted a broken file: {out}");
    }
}

#[test]
fn rendered_answer_files_match_their_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let mut updated = Vec::new();
    for (kind, file) in [
        ("preseed", "preseed.cfg"),
        ("kickstart", "ks.cfg"),
        ("autoinstall", "user-data"),
    ] {
        let recipe = root().join(format!("tests/fixtures/installer/{kind}.yaml"));
        let got =
            std::fs::read_to_string(render(&recipe, &dir.path().join(kind)).join(file)).unwrap();
        let snap = root().join(format!("tests/snapshots/{kind}-{file}"));
        let want = std::fs::read_to_string(&snap).ok();
        if want.as_deref() == Some(got.as_str()) {
            continue;
        }
        // Updating writes the new snapshot and still fails this run: a changed rendering is
        // never passed unseen (review the diff, then run again).
        if std::env::var_os("KILN_UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(&snap, &got).unwrap();
            updated.push(snap.display().to_string());
            continue;
        }
        let want =
            want.unwrap_or_else(|| panic!("{} missing (KILN_UPDATE_SNAPSHOTS=1)", snap.display()));
        assert_eq!(
            got,
            want,
            "{kind}: rendered file differs from {}",
            snap.display()
        );
    }
    assert!(
        updated.is_empty(),
        "snapshots updated (review them, then run again): {}",
        updated.join(", ")
    );
}

#[test]
fn the_answer_file_is_appended_to_a_real_initrd_and_unpacks() {
    let dir = tempfile::tempdir().unwrap();
    // A real gzip'd newc initrd made by cpio, as initramfs-tools would.
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/hello"), "from the original initrd\n").unwrap();
    std::fs::write(tree.join("init"), "#!/bin/sh\n").unwrap();
    let orig = dir.path().join("initrd.gz");
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd {} && find . | cpio --quiet -o -H newc | gzip -9 > {}",
            tree.display(),
            orig.display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    let answer = b"d-i netcfg/get_hostname string injected\n";
    let out = dir.path().join("initrd.img");
    kiln::installer::inject(
        &orig,
        &out,
        &[kiln::installer::CpioFile {
            name: "preseed.cfg",
            mode: 0o600,
            data: answer,
        }],
    )
    .unwrap();
    let orig_bytes = std::fs::read(&orig).unwrap();
    let all = std::fs::read(&out).unwrap();
    // The original archive is untouched at the front; ours starts 4-byte aligned after it.
    assert_eq!(&all[..orig_bytes.len()], &orig_bytes[..]);
    let start = orig_bytes.len().next_multiple_of(4);
    assert!(all[orig_bytes.len()..start].iter().all(|b| *b == 0));
    let appended = dir.path().join("appended.cpio");
    std::fs::write(&appended, &all[start..]).unwrap();
    // Both archives unpack with the real cpio into one tree, as the kernel does.
    let unpack = dir.path().join("unpacked");
    std::fs::create_dir_all(&unpack).unwrap();
    for cmd in [
        format!("gzip -dc {} | cpio --quiet -idm", orig.display()),
        format!("cpio --quiet -idm < {}", appended.display()),
    ] {
        let st = Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .current_dir(&unpack)
            .status()
            .unwrap();
        assert!(st.success(), "{cmd}");
    }
    assert_eq!(
        std::fs::read_to_string(unpack.join("etc/hello")).unwrap(),
        "from the original initrd\n"
    );
    assert_eq!(std::fs::read(unpack.join("preseed.cfg")).unwrap(), answer);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(unpack.join("preseed.cfg"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // cpio's own listing of our archive.
    let list = Command::new("sh")
        .arg("-c")
        .arg(format!("cpio -t < {}", appended.display()))
        .output()
        .unwrap();
    assert_eq!(text(&list.stdout).trim(), "preseed.cfg");
}

#[test]
fn kernel_and_initrd_come_out_of_a_real_iso_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("iso");
    std::fs::create_dir_all(tree.join("install.amd")).unwrap();
    let kernel: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let initrd: Vec<u8> = (0..5_000_000u32).map(|i| (i * 13 % 241) as u8).collect();
    std::fs::write(tree.join("install.amd/vmlinuz"), &kernel).unwrap();
    std::fs::write(tree.join("install.amd/initrd.gz"), &initrd).unwrap();
    let iso = dir.path().join("installer.iso");
    let st = Command::new("xorriso")
        .args([
            "-as", "mkisofs", "-quiet", "-R", "-J", "-V", "KILNTEST", "-o",
        ])
        .arg(&iso)
        .arg(&tree)
        .status()
        .unwrap();
    assert!(st.success());
    let cancel = kiln::process::Cancel::new();
    let k = dir.path().join("vmlinuz");
    let r = dir.path().join("initrd");
    // The first candidate that exists wins; missing ones are skipped.
    let got = kiln::installer::extract_first(
        &iso,
        &["casper/vmlinuz".into(), "install.amd/vmlinuz".into()],
        &k,
        &cancel,
    )
    .unwrap();
    assert_eq!(got, "install.amd/vmlinuz");
    kiln::installer::extract_first(&iso, &["install.amd/initrd.gz".into()], &r, &cancel).unwrap();
    assert_eq!(std::fs::read(&k).unwrap(), kernel);
    assert_eq!(std::fs::read(&r).unwrap(), initrd);
    let err = kiln::installer::extract_first(
        &iso,
        &["images/pxeboot/vmlinuz".into()],
        &dir.path().join("none"),
        &cancel,
    )
    .unwrap_err();
    assert!(err.to_string().contains("kernel_path"), "{err}");
}

#[test]
fn the_mirror_check_names_the_udebs_a_mirror_lacks() {
    // A local mirror with the installer's Packages index and only some of its udebs.
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    let idx = m.join("dists/bookworm/main/debian-installer/binary-amd64");
    std::fs::create_dir_all(&idx).unwrap();
    let mut index = String::new();
    for i in 0..20 {
        index.push_str(&format!(
            "Package: u{i}\nFilename: pool/main/u/u{i}_1_amd64.udeb\n\n"
        ));
        if i % 5 != 3 {
            let p = m.join(format!("pool/main/u/u{i}_1_amd64.udeb"));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "udeb").unwrap();
        }
    }
    std::fs::write(idx.join("Packages"), &index).unwrap();
    let st = Command::new("gzip")
        .arg("-k")
        .arg(idx.join("Packages"))
        .status()
        .unwrap();
    assert!(st.success());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut server = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .current_dir(m)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let mirror = format!("http://127.0.0.1:{port}");
    // Sampling all 20: exactly the four missing ones are named.
    let err = kiln::installer::check_udeb_mirror(&mirror, "bookworm", 20).unwrap_err();
    let msg = err.to_string();
    for i in [3, 8, 13, 18] {
        assert!(msg.contains(&format!("u{i}_1_amd64.udeb")), "{msg}");
    }
    assert!(msg.contains("4 of 20"), "{msg}");
    assert!(!msg.contains("u4_1_amd64.udeb"), "{msg}");
    // A suite without an index: a clear error naming the URL.
    let err = kiln::installer::check_udeb_mirror(&mirror, "trixie", 8).unwrap_err();
    assert!(
        err.to_string()
            .contains("dists/trixie/main/debian-installer"),
        "{err}"
    );
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn seed_disks_carry_the_label_and_files_installers_look_for() {
    let dir = tempfile::tempdir().unwrap();
    let ks = dir.path().join("ks.cfg");
    std::fs::write(&ks, "text\n").unwrap();
    let ud = dir.path().join("user-data");
    std::fs::write(&ud, "#cloud-config\nautoinstall: {version: 1}\n").unwrap();
    let md = dir.path().join("meta-data");
    std::fs::write(&md, "instance-id: x\n").unwrap();
    for (label, files) in [
        ("OEMDRV", vec![ks.clone()]),
        ("cidata", vec![ud.clone(), md.clone()]),
    ] {
        let iso = dir.path().join(format!("{label}.iso"));
        let argv = kiln::installer::seed_iso_argv(&iso, label, &files);
        let st = Command::new(&argv[0]).args(&argv[1..]).status().unwrap();
        assert!(st.success());
        // The volume label, and each file back out unchanged.
        let pvd = Command::new("xorriso")
            .args(["-indev"])
            .arg(&iso)
            .args(["-pvd_info"])
            .output()
            .unwrap();
        let info = text(&pvd.stdout) + &text(&pvd.stderr);
        assert!(info.contains(&format!("Volume Id    : {label}")), "{info}");
        for f in &files {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            let back = dir.path().join(format!("back-{label}-{name}"));
            let argv = kiln::installer::xorriso_extract_argv(&iso, &name, &back);
            let st = Command::new(&argv[0]).args(&argv[1..]).output().unwrap();
            assert!(st.status.success(), "{}", text(&st.stderr));
            assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(f).unwrap());
        }
    }
}
