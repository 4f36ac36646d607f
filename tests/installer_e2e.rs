//! A real unattended install under TCG through kiln's installer path, with an installer medium
//! this test builds from Debian packages: an ISO (xorriso) holding the host's cloud kernel, an
//! initramfs (busybox, sfdisk, mke2fs and GNU tar, the virtio modules, and an install script), a root
//! filesystem tarball (mmdebstrap) and a package pool. kiln extracts kernel and initrd from the
//! ISO, injects the preseed file into the initrd, boots it in libvirt; the script partitions and
//! fills the disk as the preseed says (hostname, user, password hash, packages) and powers off;
//! kiln detaches the media and carries the disk through provision, cloud-init, sysprep, convert
//! and publish. Then guestfish looks at the result.

use std::path::{Path, PathBuf};
use std::process::Command;

mod harness;
use harness::*;

fn sh(cmd: &str, dir: &Path) {
    let st = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(st.success(), "{cmd}");
}

fn out(cmd: &str) -> String {
    let o = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        o.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn cache() -> PathBuf {
    kiln_cache_dir().join("test-installer")
}

/// A root filesystem tarball from Debian packages (mmdebstrap, kiln's own bootstrap recipe),
/// cached by its inputs. Returns (tarball, filesystem UUID its fstab names).
fn rootfs_tar() -> (PathBuf, String) {
    let plan = kiln::plan::BootstrapPlan {
        distro: "debian".into(),
        suite: "bookworm".into(),
        mirror: "http://deb.debian.org/debian".into(),
        security_mirror: Some("http://deb.debian.org/debian-security".into()),
        packages: std::iter::once(&kiln::vocab::Arch::X86_64.kernel_package())
            .chain(kiln::bootstrap::BASE_PACKAGES)
            .chain(kiln::bootstrap::boot_packages(
                kiln::vocab::DiskLayout::Bios,
                kiln::vocab::Arch::X86_64,
            ))
            .map(|s| s.to_string())
            .chain(["cloud-init", "sudo", "passwd"].map(String::from))
            .collect(),
        size_bytes: 3 << 30,
        layout: kiln::vocab::DiskLayout::Bios,
        arch: kiln::vocab::Arch::X86_64,
    };
    let key = plan.cache_key();
    let uuid = kiln::bootstrap::fs_uuid(&key);
    let dir = cache();
    std::fs::create_dir_all(&dir).unwrap();
    let tar = dir.join(format!("rootfs-{key}.tar"));
    if tar.is_file() {
        return (tar, uuid);
    }
    let scratch = tempfile::tempdir_in(&dir).unwrap();
    let rootfs = scratch.path().join("rootfs");
    let customize = scratch.path().join("customize.sh");
    std::fs::write(
        &customize,
        kiln::bootstrap::customize_script(&uuid, None, "ttyS0"),
    )
    .unwrap();
    let argv = kiln::bootstrap::mmdebstrap_argv(&plan, &rootfs, &customize);
    let st = Command::new(&argv[0]).args(&argv[1..]).status().unwrap();
    assert!(st.success(), "mmdebstrap failed");
    // In the scratch directory (one per caller): two tests building it at once must not write
    // one file; the rename is atomic, so the tarball in the cache is always a complete one.
    let part = scratch.path().join("rootfs.tar");
    sh(
        &format!("tar -C {} -cf {} .", rootfs.display(), part.display()),
        scratch.path(),
    );
    std::fs::rename(&part, &tar).unwrap();
    (tar, uuid)
}

/// Copy a host binary and the libraries it links into `dest`.
fn copy_with_libs(bin: &str, dest: &Path) {
    let mut files = vec![bin.to_string()];
    for l in out(&format!("ldd {bin}")).lines() {
        // "libx.so.1 => /lib/x86_64-linux-gnu/libx.so.1 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"
        let path = l
            .split("=>")
            .nth(1)
            .unwrap_or(l)
            .split_whitespace()
            .next()
            .unwrap_or("");
        if path.starts_with('/') {
            files.push(path.to_string());
        }
    }
    for f in files {
        let to = dest.join(f.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&f, &to).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
}

const INIT: &str = r#"#!/bin/busybox sh
# The test's installer: reads /preseed.cfg (injected into this initrd by kiln), installs the
# root filesystem tarball from the installer ISO, powers off.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /modules.list); do insmod "$m" 2>/dev/null; done
say() { echo "kiln-test-installer: $*" > /dev/ttyS0; }
fail() { say "FAILED: $*"; sleep 2; poweroff -f; }
# Run a command; on failure, its output goes to the console with the failure.
run() { out=$("$@" 2>&1) || fail "$*: $out"; }
for i in $(seq 1 100); do [ -b /dev/vda ] && [ -b /dev/sr0 ] && break; sleep 0.2; done
[ -f /preseed.cfg ] || fail "no /preseed.cfg in the initrd"
get() { sed -n "s|^d-i $1 [a-z]* ||p" /preseed.cfg | head -n 1; }
HOST=$(get netcfg/get_hostname); USERNAME=$(get passwd/username)
HASH=$(get passwd/user-password-crypted); PKGS=$(get pkgsel/include)
say "answers: hostname=$HOST user=$USERNAME packages=$PKGS"
echo 'label: dos
start=2048, type=83, bootable' > /tmp/layout
run /usr/sbin/sfdisk -q /dev/vda < /tmp/layout
for i in $(seq 1 50); do [ -b /dev/vda1 ] && break; sleep 0.2; done
[ -b /dev/vda1 ] || fail "no /dev/vda1 after sfdisk"
run /usr/sbin/mke2fs -q -F -t ext4 -U "$(cat /fs-uuid)" /dev/vda1
mkdir -p /cdrom /target
mount -t iso9660 -o ro /dev/sr0 /cdrom || fail "mount cdrom"
mount -t ext4 /dev/vda1 /target || fail "mount target"
say "unpacking the root filesystem"
# GNU tar (busybox's mishandles parts of a Debian root filesystem).
run /usr/bin/tar --numeric-owner -C /target -xf /cdrom/rootfs.tar
echo "$HOST" > /target/etc/hostname
for d in dev proc sys; do mount --bind /$d /target/$d; done
for p in $PKGS; do
  st=$(chroot /target dpkg-query -W -f='${Status}' "$p" 2>&1)
  case "$st" in *"install ok installed"*) continue ;; esac
  say "$p: $st"
  deb=$(ls /cdrom/pool/${p}_*.deb 2>/dev/null | head -n 1)
  [ -n "$deb" ] || fail "package $p is neither installed nor in the pool"
  cp "$deb" /target/tmp/p.deb || fail "copying $deb"
  # --force-depends: inside this initramfs chroot dpkg misreads the installed python3:any
  # (the same dpkg -i on the same tree works on the host); tree needs only libc6.
  run chroot /target dpkg --force-depends -i /tmp/p.deb
  rm -f /target/tmp/p.deb
  say "installed $p"
done
run chroot /target useradd -m -s /bin/bash -G sudo -c "$(get passwd/user-fullname)" -p "$HASH" "$USERNAME"
say "installing grub"
run chroot /target grub-install --target=i386-pc /dev/vda
run chroot /target update-grub
for d in dev proc sys; do umount /target/$d; done
umount /target; umount /cdrom; sync
say "done"
poweroff -f
"#;

/// The installer ISO: kernel, initramfs, rootfs tarball, a package pool.
fn installer_iso(work: &Path) -> PathBuf {
    let (tar, uuid) = rootfs_tar();
    let kver = out("ls /lib/modules | grep cloud-amd64 | sort | tail -n 1");
    assert!(!kver.is_empty(), "linux-image-cloud-amd64 is not installed");
    let ird = work.join("initramfs");
    for d in ["bin", "sbin", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(ird.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", ird.join("bin/busybox")).unwrap();
    copy_with_libs("/usr/sbin/sfdisk", &ird);
    copy_with_libs("/usr/sbin/mke2fs", &ird);
    copy_with_libs("/usr/bin/tar", &ird);
    std::fs::create_dir_all(ird.join("etc")).unwrap();
    std::fs::copy("/etc/mke2fs.conf", ird.join("etc/mke2fs.conf")).unwrap();
    std::fs::write(ird.join("fs-uuid"), &uuid).unwrap();
    // Modules in load order (modprobe resolves the dependencies of the cloud kernel's).
    let mut mods: Vec<String> = Vec::new();
    for m in ["virtio_pci", "virtio_blk", "virtio_scsi", "sr_mod", "isofs"] {
        for l in out(&format!("modprobe --set-version {kver} --show-depends {m}")).lines() {
            if let Some(p) = l.strip_prefix("insmod ") {
                let p = p.trim().to_string();
                if !mods.contains(&p) {
                    mods.push(p);
                }
            }
        }
    }
    for m in &mods {
        let to = ird.join(m.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(m, &to).unwrap();
    }
    std::fs::write(ird.join("modules.list"), mods.join("\n") + "\n").unwrap();
    std::fs::write(ird.join("init"), INIT).unwrap();
    sh("chmod 755 init", &ird);
    let iso_tree = work.join("iso");
    std::fs::create_dir_all(iso_tree.join("install.amd")).unwrap();
    std::fs::create_dir_all(iso_tree.join("pool")).unwrap();
    sh(
        &format!(
            "find . | cpio --quiet -o -H newc | gzip -1 > {}",
            iso_tree.join("install.amd/initrd.gz").display()
        ),
        &ird,
    );
    std::fs::copy(
        format!("/boot/vmlinuz-{kver}"),
        iso_tree.join("install.amd/vmlinuz"),
    )
    .unwrap();
    std::fs::hard_link(&tar, iso_tree.join("rootfs.tar"))
        .or_else(|_| std::fs::copy(&tar, iso_tree.join("rootfs.tar")).map(|_| ()))
        .unwrap();
    // `tree` is not in the root filesystem: the installer takes it from the pool because the
    // preseed's pkgsel/include names it.
    sh(
        "apt-get download -q tree >/dev/null",
        &iso_tree.join("pool"),
    );
    let iso = work.join("installer.iso");
    sh(
        &format!(
            "xorriso -as mkisofs -quiet -R -J -V KILNINST -o {} {}",
            iso.display(),
            iso_tree.display()
        ),
        work,
    );
    iso
}

/// The recipe that installs `iso` (with `hash` as the user's password) and carries the disk
/// through every later stage.
/// The test user's password hash (a crypt(3) SHA-512 string; nothing logs in with it).
const TEST_HASH: &str = "$6$kilntest$Yx0kLQ7cJz2Bq9vW0f1mTgZ0lQ3xR8sH5nA2pD4eK6uV9wC1yE7iO3aS5dF8gH0jK2lM4nB6vC8xZ1qW3eR5t.";

fn installer_recipe(work: &Path, iso: &Path, hash: &str) -> PathBuf {
    let recipe = work.join("installer.yaml");
    std::fs::write(
        &recipe,
        format!(
            r#"name: {INSTALLER}
version: "1"
vars: {{hostname: installed-host}}
elements: [cloud-init, sysprep-default]
source:
  installer:
    iso: {{path: {}}}
    answers: {{kind: preseed}}
    mirror_check: false
    user: {{name: installuser, full_name: Install User, password_hash: "{hash}"}}
    packages: [tree]
    timeout: 40m
vm: {{memory: 2G, vcpus: 2, disk: 3G, timeout: 40m}}
provision:
  - run: ["echo provisioned-after-install > /etc/kiln-provisioned"]
sysprep: {{operations: [defaults]}}
outputs: [qcow2]
# The boot test is proven in tests/e2e.rs; here it would only add a boot per install.
test: false
publish:
  glance: {{cloud: kiln-alpha, name: "{{{{name}}}}-{{{{version}}}}-{{{{date}}}}"}}
"#,
            iso.display()
        ),
    )
    .unwrap();
    recipe
}

/// `kiln build --no-glance` of the test's installer recipe, followed until the installer runs
/// in its domain and writes to its console: (work dir, output dir, kiln, its stderr lines, the
/// domain).
fn installing() -> (
    tempfile::TempDir,
    PathBuf,
    std::process::Child,
    std::sync::mpsc::Receiver<String>,
    String,
) {
    installing_with(&["--no-glance"])
}

/// Like [`installing`], with `flags` for the build.
fn installing_with(
    flags: &[&str],
) -> (
    tempfile::TempDir,
    PathBuf,
    std::process::Child,
    std::sync::mpsc::Receiver<String>,
    String,
) {
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    let iso = installer_iso(work.path());
    let recipe = installer_recipe(work.path(), &iso, TEST_HASH);
    let out_dir = work.path().join("out");
    let mut build = kiln();
    build
        .arg("build")
        .args(flags)
        .arg(&recipe)
        .arg("-o")
        .arg(&out_dir);
    let (child, rx) = spawn_reading_stderr(build);
    let domain = wait_for_domain_console(&rx, "installing: domain ")
        .expect("the install stage never started its domain, or it wrote nothing");
    (work, out_dir, child, rx, domain)
}

#[test]
#[ignore = "slow: a real install under TCG; run by scripts/test.sh"]
fn sigint_during_the_install_stage_cleans_up_and_exits_130() {
    let (_work, out_dir, mut child, _rx, domain) = installing();
    let listed = |name: &str| domains(name).iter().any(|d| d == name);
    assert!(listed(&domain), "{domain} should exist while installing");
    // The installer VM runs as libvirt's unprivileged qemu user, its disk in a VM directory.
    let disk = domain_disk(&domain);
    assert!(
        disk.ends_with("install.qcow2") && disk.is_file(),
        "the install disk should exist while installing: {}",
        disk.display()
    );
    assert_ne!(qemu_user(&domain).0, 0, "the installer's qemu runs as root");
    let work = disk.parent().unwrap().to_path_buf();
    interrupt(&child);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "exit code after SIGINT");
    assert!(!listed(&domain), "domain {domain} left behind");
    assert!(!work.exists(), "{} left behind", work.display());
    let left: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "files left after interrupt: {left:?}");
}

#[test]
#[ignore = "slow: a real install (and the start of one) and a build under TCG; run by scripts/test.sh"]
fn an_installer_iso_is_installed_unattended_once_more_when_qemu_dies_and_carried_through_every_stage(
) {
    let steps = Steps::new();
    let hash = TEST_HASH;
    steps.at("build the installer recipe, qemu killed under the first install");
    // CI saw qemu abort a second into an install under TCG: stood in for by SIGABRT once the
    // installer writes to its console; the second install goes on through every stage.
    let (work, out_dir, mut child, rx, domain) = installing_with(&[]);
    let stderr = abort_qemu_and_collect(&domain, &rx);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("qemu exited under the guest")
            && stderr.contains("installing once more on a new disk"),
        "{stderr}"
    );
    // The first boot's line was read before the kill: the lines after it hold the second.
    assert_eq!(
        stderr
            .matches(&format!("installing: domain {domain} "))
            .count(),
        1,
        "{stderr}"
    );
    assert!(domains(&domain).is_empty(), "domain {domain} left behind");
    let _keep = work;
    let dir = out_dir.join("kiln-installer-test-1");
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let install = m["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "install")
        .unwrap()
        .clone();
    assert_eq!(install["status"], "ok");
    eprintln!("install under TCG took {} s", install["seconds"]);
    steps.at("the install console");
    let console = std::fs::read_to_string(dir.join("install-console.log")).unwrap();
    assert!(
        console.contains("kiln-test-installer: answers: hostname=installed-host user=installuser"),
        "{console}"
    );
    assert!(console.contains("kiln-test-installer: done"), "{console}");
    assert!(!console.contains("FAILED"), "{console}");
    steps.at("no password hash kept");
    // The password hash went to the installer only.
    for f in ["manifest.json", "build.log"] {
        let t = std::fs::read_to_string(dir.join(f)).unwrap();
        assert!(!t.contains("$6$kilntest"), "{f} holds the password hash");
    }
    steps.at("the installed image");
    // What the answer file asked for, and every later stage, in the image.
    let image = dir.join("kiln-installer-test-1.qcow2");
    let g = Command::new("guestfish")
        .args(["--ro", "-a"])
        .arg(&image)
        .args(["-i", "--"])
        .env("LIBGUESTFS_BACKEND", "direct")
        .env("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    g.stdin
        .as_ref()
        .unwrap()
        .write_all(
            b"cat /etc/hostname\necho ==\ncat /etc/passwd\necho ==\nis-file /usr/bin/tree\necho ==\ncat /etc/kiln-provisioned\necho ==\nfilesize /etc/machine-id\necho ==\ncat /etc/shadow\necho ==\nis-file /etc/cloud/cloud.cfg.d/90_kiln.cfg\n",
        )
        .unwrap();
    let o = g.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let parts: Vec<&str> = text.split("==\n").collect();
    assert_eq!(parts.len(), 7, "{text}");
    assert_eq!(parts[0].trim(), "installed-host");
    assert!(
        parts[1]
            .lines()
            .any(|l| l.starts_with("installuser:") && l.contains("Install User")),
        "{}",
        parts[1]
    );
    assert_eq!(
        parts[2].trim(),
        "true",
        "tree from the answer file's packages"
    );
    assert_eq!(parts[3].trim(), "provisioned-after-install");
    assert_eq!(parts[4].trim(), "0", "sysprep emptied machine-id");
    assert!(
        parts[5]
            .lines()
            .any(|l| l.starts_with(&format!("installuser:{hash}:"))),
        "the user's hash from the answer file: {}",
        parts[5]
    );
    assert_eq!(parts[6].trim(), "true", "cloud-init stage ran");
    steps.at("published to Glance");
    // Published to the test Glance, then removed again.
    let p = &m["published"]["glance"][0];
    assert_eq!(p["status"], "active", "{m}");
    let id = p["id"].as_str().unwrap();
    let del = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["image", "--os-cloud", "kiln-alpha", "delete", id])
        .output()
        .unwrap();
    assert!(
        del.status.success(),
        "{}",
        String::from_utf8_lossy(&del.stderr)
    );
    steps.at("nothing left in libvirt");
    // Nothing of the install is left in libvirt.
    let doms = out("virsh -c qemu:///system list --all --name");
    assert!(!doms.contains("kiln-install-"), "{doms}");
}

#[test]
#[ignore = "needs the network mirror and libvirt; run by scripts/test.sh"]
fn the_debian_netinst_example_stops_before_booting_when_the_mirror_lacks_udebs() {
    // The mirror these machines reach serves normal packages but not the installer's udebs:
    // kiln must say so before booting, naming them, and leave nothing behind.
    let out_dir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .current_dir(root())
        .args([
            "build",
            "examples/debian-12-netinst.yaml",
            "--no-glance",
            "-o",
        ])
        .arg(out_dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    if o.status.success() {
        panic!("the build went through: this mirror serves the udebs, nothing to prove here");
    }
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("does not serve debian-installer's udebs"),
        "{err}"
    );
    assert!(err.contains(".udeb"), "{err}");
    assert!(!err.contains("installing: domain"), "it booted: {err}");
    let doms = out("virsh -c qemu:///system list --all --name");
    assert!(!doms.contains("kiln-install-"), "{doms}");
}
