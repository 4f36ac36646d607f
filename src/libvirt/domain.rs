//! One definition of every VM kiln starts: the build VM, the installer VM, the boot test's VM
//! and the KVM probe are each a [`DomainSpec`], rendered by the one built-in template
//! `templates/domain.xml.hbs` (a recipe may replace it for its build VM). Firmware and
//! architecture are fields here, so a new one is added once for all four.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::vmuser::VmUser;
use crate::templates::{self, TemplateError};
use crate::vocab::{Arch, Cpu, Engine, Firmware};

/// What the VM is for: the metadata element's name and the template's comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Build,
    Install,
    Test,
    Probe,
}

/// A disk or medium attached to the VM.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Disk {
    pub path: PathBuf,
    /// qemu's driver type: `qcow2`, `raw`.
    pub format: String,
    /// `disk` or `cdrom`.
    pub device: &'static str,
    /// `virtio` or `scsi`.
    pub bus: &'static str,
    pub target: &'static str,
    /// qemu's cache mode, when not the default (`unsafe` for scratch overlays).
    pub cache: Option<&'static str>,
    pub discard: bool,
    pub readonly: bool,
    /// A file shared with others (the cache's medium): libvirt must not relabel it.
    pub shared: bool,
    /// The overlay's backing chain as the VM reaches it, nearest first (never relabelled:
    /// shared); libvirt takes it from here, not from the images' headers.
    pub backing: Vec<Backing>,
}

/// One image of a backing chain.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Backing {
    pub path: PathBuf,
    pub format: String,
}

/// A VM's disk chain, `(path, format)` nearest first, as `user` reaches it
/// ([`super::vmuser::reachable_chain`]): the domain's system disk and its backing stores (one
/// place for the build's boot test and `kiln test`).
pub fn reachable_backings(
    files: Vec<(PathBuf, String)>,
    dir: &Path,
    user: VmUser,
) -> std::io::Result<Vec<Backing>> {
    let paths: Vec<PathBuf> = files.iter().map(|(p, _)| p.clone()).collect();
    Ok(super::vmuser::reachable_chain(&paths, dir, user)?
        .into_iter()
        .zip(files)
        .map(|(path, (_, format))| Backing { path, format })
        .collect())
}

impl Disk {
    /// A qcow2 system disk of the VM's own, with discard; `scratch`: cache=unsafe (qemu writes
    /// everything out when it exits after the guest's power-off).
    pub fn system(path: &Path, scratch: bool) -> Disk {
        Disk {
            path: path.to_path_buf(),
            format: "qcow2".into(),
            device: "disk",
            bus: "virtio",
            target: "vda",
            cache: scratch.then_some("unsafe"),
            discard: true,
            readonly: false,
            shared: false,
            backing: Vec::new(),
        }
    }

    /// Over a backing file that stays untouched (the cache's base, the image under test).
    pub fn backed_by(self, path: &Path, format: &str) -> Disk {
        self.backed_by_chain(vec![Backing {
            path: path.to_path_buf(),
            format: format.to_string(),
        }])
    }

    /// Over a chain of backing files, nearest first (the build disk and what it is made on).
    pub fn backed_by_chain(mut self, chain: Vec<Backing>) -> Disk {
        self.backing = chain;
        self
    }

    /// A read-only raw seed (NoCloud `cidata`, an `OEMDRV` kickstart disk) on virtio-blk.
    pub fn seed(path: &Path) -> Disk {
        Disk {
            path: path.to_path_buf(),
            format: "raw".into(),
            device: "disk",
            bus: "virtio",
            target: "vdb",
            cache: None,
            discard: false,
            readonly: true,
            shared: false,
            backing: Vec::new(),
        }
    }

    /// An installer ISO from the cache, as a CD on virtio-scsi.
    pub fn cdrom(path: &Path) -> Disk {
        Disk {
            path: path.to_path_buf(),
            format: "raw".into(),
            device: "cdrom",
            bus: "scsi",
            target: "sda",
            cache: None,
            discard: false,
            readonly: true,
            shared: true,
            backing: Vec::new(),
        }
    }
}

/// A direct kernel boot: no firmware boot loader.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelBoot {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    None,
    /// qemu's user networking (DHCP, outbound only).
    User,
    /// User networking with the guest's port 22 forwarded to this port on 127.0.0.1.
    SshForward(u16),
}

/// Everything libvirt needs to start one of kiln's VMs.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainSpec {
    pub role: Role,
    pub name: String,
    /// The metadata element's text (`NAME-VERSION` of the build); none for throwaway VMs.
    pub label: Option<String>,
    /// The guest architecture: `<type arch>`, its machine (`q35`, `virt`), its firmware files.
    pub arch: Arch,
    pub engine: Engine,
    /// The recipe's `vm.cpu`, resolved for `engine` when rendered.
    pub cpu: Cpu,
    pub firmware: Firmware,
    /// UEFI: this VM's own copy of the variable store (libvirt makes it from the firmware's
    /// template when the VM starts; never the shared template itself).
    pub nvram: Option<PathBuf>,
    /// A TPM 2.0 (libvirt starts swtpm for it; its state goes with the domain).
    pub tpm: bool,
    pub memory_mib: u64,
    pub vcpus: u32,
    pub kernel: Option<KernelBoot>,
    /// `<boot dev='hd'/>`: the firmware boots the first disk (unless a kernel is given).
    pub boot_from_disk: bool,
    /// A reboot ends the VM (an installer would start again; the probe's panic reboots).
    pub reboot_ends: bool,
    pub disks: Vec<Disk>,
    pub network: Network,
    pub console_log: Option<PathBuf>,
    pub rng: bool,
    /// Who qemu runs as, and whether libvirt labels the VM's own files for that user.
    pub runs_as: VmUser,
    pub relabel: bool,
}

/// The VM's size and accelerator, as the recipe's `vm:` (or `kiln test`'s flags) give them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    pub arch: Arch,
    pub engine: Engine,
    pub cpu: Cpu,
    pub firmware: Firmware,
    pub tpm: bool,
    pub memory_mib: u64,
    pub vcpus: u32,
}

/// The file name of a VM's variable store, in the VM's own directory.
pub const NVRAM_FILE: &str = "efivars.fd";

impl DomainSpec {
    /// `dir`: the VM's own directory (its variable store goes there under UEFI).
    fn new(role: Role, name: &str, m: Machine, runs_as: VmUser, dir: &Path) -> DomainSpec {
        DomainSpec {
            role,
            name: name.to_string(),
            label: None,
            arch: m.arch,
            engine: m.engine,
            cpu: m.cpu,
            firmware: m.firmware,
            nvram: m.firmware.is_uefi().then(|| dir.join(NVRAM_FILE)),
            tpm: m.tpm,
            memory_mib: m.memory_mib,
            vcpus: m.vcpus,
            kernel: None,
            boot_from_disk: true,
            reboot_ends: false,
            disks: Vec::new(),
            network: Network::User,
            console_log: None,
            rng: true,
            runs_as,
            relabel: true,
        }
    }

    /// The build VM: its scratch overlay and the NoCloud seed, user networking, the console
    /// to a file. The caller sets the backing file and, for a direct boot, the kernel.
    pub fn build_vm(name: &str, m: Machine, runs_as: VmUser, work: &Path) -> DomainSpec {
        DomainSpec {
            disks: vec![
                Disk::system(&work.join("disk.qcow2"), true),
                Disk::seed(&work.join("seed.iso")),
            ],
            console_log: Some(work.join("console.log")),
            ..DomainSpec::new(Role::Build, name, m, runs_as, work)
        }
    }

    /// The installer VM: the installer's kernel and initrd booted directly onto a new disk; a
    /// reboot ends the install like a power-off.
    pub fn install_vm(
        name: &str,
        m: Machine,
        runs_as: VmUser,
        kernel: KernelBoot,
        disk: &Path,
        console: &Path,
    ) -> DomainSpec {
        DomainSpec {
            kernel: Some(kernel),
            boot_from_disk: false,
            reboot_ends: true,
            disks: vec![Disk::system(disk, false)],
            console_log: Some(console.to_path_buf()),
            ..DomainSpec::new(Role::Install, name, m, runs_as, parent(console))
        }
    }

    /// The boot test's VM: a throwaway overlay of the image, its seed, ssh forwarded.
    pub fn test_vm(
        name: &str,
        m: Machine,
        runs_as: VmUser,
        overlay: &Disk,
        seed: &Path,
        console: &Path,
        ssh_port: u16,
    ) -> DomainSpec {
        DomainSpec {
            disks: vec![overlay.clone(), Disk::seed(seed)],
            network: Network::SshForward(ssh_port),
            console_log: Some(console.to_path_buf()),
            ..DomainSpec::new(Role::Test, name, m, runs_as, parent(console))
        }
    }

    /// The KVM probe: the host's kernel without a root filesystem under KVM, as kiln's own
    /// user; nothing of the host is relabelled.
    pub fn kvm_probe(name: &str, kernel: &Path) -> DomainSpec {
        let m = Machine {
            arch: Arch::host(),
            engine: Engine::Kvm,
            cpu: Cpu::Auto,
            firmware: Firmware::Bios,
            tpm: false,
            memory_mib: 128,
            vcpus: 1,
        };
        DomainSpec {
            kernel: Some(KernelBoot {
                kernel: kernel.to_path_buf(),
                initrd: None,
                cmdline: "console=ttyS0 panic=-1 quiet".into(),
            }),
            boot_from_disk: false,
            reboot_ends: true,
            network: Network::None,
            rng: false,
            relabel: false,
            ..DomainSpec::new(Role::Probe, name, m, VmUser::current(), Path::new("/"))
        }
    }

    /// The domain XML from the built-in template (`name`, `version`: the build's, for the
    /// template's variables; the probe and `kiln test` have none).
    pub fn xml(&self, name: &str, version: &str) -> Result<String, TemplateError> {
        let ctx = serde_json::json!({
            "name": name, "version": version, "vars": {}, "domain": self,
        });
        templates::render_builtin(templates::Kind::Domain, &ctx)
    }

    /// Put the system disk (the first) over a backing file.
    pub fn back_system_disk(&mut self, path: &Path, format: &str) {
        if let Some(d) = self.disks.first_mut() {
            *d = d.clone().backed_by(path, format);
        }
    }

    /// The NoCloud seed's path (the disk on `vdb`).
    pub fn seed_path(&self) -> Option<&Path> {
        self.disks
            .iter()
            .find(|d| d.target == "vdb")
            .map(|d| d.path.as_path())
    }
}

/// The directory a file of the VM's is in.
fn parent(file: &Path) -> &Path {
    file.parent().unwrap_or(Path::new("."))
}

/// What a template sees under `domain`: the spec, plus the flat names a recipe's own build-VM
/// template has used since before the spec (`disk_path`, `seed_path`, `backing_path`, …).
#[derive(Serialize)]
struct View<'a> {
    role: Role,
    name: &'a str,
    label: Option<&'a str>,
    #[serde(rename = "type")]
    domain_type: &'static str,
    cpu_mode: &'static str,
    cpu_model: Option<&'static str>,
    arch: &'static str,
    machine: &'static str,
    /// x86's APIC feature (libvirt refuses it elsewhere).
    apic: bool,
    firmware: &'static str,
    /// UEFI: the firmware's code, `yes` for Secure Boot, the variable store and its template.
    loader: Option<&'static str>,
    loader_secure: &'static str,
    nvram: Option<&'a Path>,
    nvram_template: Option<&'static str>,
    /// Secure Boot needs SMM (the variable store is written only in system management mode).
    smm: bool,
    tpm: bool,
    memory_mib: u64,
    vcpus: u32,
    kernel: Option<&'a Path>,
    initrd: Option<&'a Path>,
    cmdline: Option<&'a str>,
    boot_from_disk: bool,
    on_reboot: &'static str,
    relabel: &'static str,
    uid: u32,
    gid: u32,
    disks: &'a [Disk],
    scsi: bool,
    user_network: bool,
    ssh_port: Option<u16>,
    console_log: Option<&'a Path>,
    rng: bool,
    disk_path: Option<&'a Path>,
    disk_format: Option<&'a str>,
    backing_path: Option<&'a Path>,
    backing_format: Option<&'a str>,
    seed_path: Option<&'a Path>,
}

impl Serialize for DomainSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let system = self.disks.first();
        let k = self.kernel.as_ref();
        let cpu = self.engine.cpu(self.cpu, self.arch);
        let fw = self.firmware.files(self.arch);
        View {
            role: self.role,
            name: &self.name,
            label: self.label.as_deref(),
            domain_type: self.engine.domain_type(),
            cpu_mode: cpu.mode,
            cpu_model: cpu.model,
            arch: self.arch.as_str(),
            machine: self.arch.machine(),
            apic: self.arch == Arch::X86_64,
            firmware: self.firmware.as_str(),
            loader: fw.map(|f| f.code),
            loader_secure: if fw.is_some_and(|f| f.secure) {
                "yes"
            } else {
                "no"
            },
            nvram: self.nvram.as_deref().filter(|_| fw.is_some()),
            nvram_template: fw.map(|f| f.vars),
            smm: fw.is_some_and(|f| f.secure),
            tpm: self.tpm,
            memory_mib: self.memory_mib,
            vcpus: self.vcpus,
            kernel: k.map(|k| k.kernel.as_path()),
            initrd: k.and_then(|k| k.initrd.as_deref()),
            cmdline: k.map(|k| k.cmdline.as_str()),
            boot_from_disk: self.boot_from_disk,
            on_reboot: if self.reboot_ends {
                "destroy"
            } else {
                "restart"
            },
            relabel: if self.relabel { "yes" } else { "no" },
            uid: self.runs_as.uid,
            gid: self.runs_as.gid,
            disks: &self.disks,
            scsi: self.disks.iter().any(|d| d.bus == "scsi"),
            user_network: self.network == Network::User,
            ssh_port: match self.network {
                Network::SshForward(p) => Some(p),
                _ => None,
            },
            console_log: self.console_log.as_deref(),
            rng: self.rng,
            disk_path: system.map(|d| d.path.as_path()),
            disk_format: system.map(|d| d.format.as_str()),
            backing_path: system
                .and_then(|d| d.backing.first())
                .map(|b| b.path.as_path()),
            backing_format: system
                .and_then(|d| d.backing.first())
                .map(|b| b.format.as_str()),
            seed_path: self.seed_path(),
        }
        .serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(engine: Engine) -> Machine {
        Machine {
            arch: Arch::X86_64,
            engine,
            cpu: Cpu::Auto,
            firmware: Firmware::Bios,
            tpm: false,
            memory_mib: 2048,
            vcpus: 2,
        }
    }

    fn me() -> VmUser {
        VmUser { uid: 64, gid: 65 }
    }

    #[test]
    fn the_build_vm_boots_its_overlay_over_the_shared_base_with_the_seed() {
        let mut d = DomainSpec::build_vm("kiln-x-1", m(Engine::Tcg), me(), Path::new("/w"));
        d.label = Some("x-1.0".into());
        d.back_system_disk(Path::new("/c/base'.qcow2"), "qcow2");
        let x = d.xml("x", "1.0").unwrap();
        assert!(x.contains("<domain type='qemu'>"), "{x}");
        assert!(
            x.contains("<kiln:build xmlns:kiln='https://kiln.invalid/build'>x-1.0</kiln:build>")
        );
        assert!(x.contains("<cpu mode='maximum'/>"), "{x}");
        assert!(x.contains("<driver name='qemu' type='qcow2' cache='unsafe' discard='unmap'/>\n      <source file='/w/disk.qcow2'/>"), "{x}");
        assert!(x.contains("<source file='/c/base&apos;.qcow2'>\n          <seclabel model='dac' relabel='no'/>"), "{x}");
        assert!(x.contains("<source file='/w/seed.iso'/>\n      <target dev='vdb' bus='virtio'/>\n      <readonly/>"), "{x}");
        assert!(x.contains("<interface type='user'>"));
        assert!(x.contains("<label>+64:+65</label>"));
        assert!(x.contains("<on_reboot>restart</on_reboot>"));
        assert!(x.contains("<boot dev='hd'/>"));
        assert!(!x.contains("<kernel>") && !x.contains("qemu:commandline"));
    }

    #[test]
    fn the_installer_vm_boots_its_kernel_and_a_reboot_ends_it() {
        let k = KernelBoot {
            kernel: "/w/linux".into(),
            initrd: Some("/w/initrd.gz".into()),
            cmdline: "auto=true priority=critical".into(),
        };
        let mut d = DomainSpec::install_vm(
            "kiln-install-x",
            m(Engine::Kvm),
            me(),
            k,
            Path::new("/w/install.qcow2"),
            Path::new("/w/console.log"),
        );
        d.disks.push(Disk::cdrom(Path::new("/c/netinst.iso")));
        let x = d.xml("x", "1").unwrap();
        assert!(
            x.contains("<domain type='kvm'>") && x.contains("host-passthrough"),
            "{x}"
        );
        assert!(x.contains("<kernel>/w/linux</kernel>\n    <initrd>/w/initrd.gz</initrd>\n    <cmdline>auto=true priority=critical</cmdline>"), "{x}");
        assert!(!x.contains("<boot dev"));
        assert!(x.contains("<on_reboot>destroy</on_reboot>"));
        assert!(x.contains("<controller type='scsi' model='virtio-scsi'/>"));
        assert!(x.contains("<disk type='file' device='cdrom'>\n      <driver name='qemu' type='raw'/>\n      <source file='/c/netinst.iso'>\n        <seclabel model='dac' relabel='no'/>"), "{x}");
        assert!(
            x.contains("<driver name='qemu' type='qcow2' discard='unmap'/>"),
            "{x}"
        );
    }

    /// The test VM over `overlay`, rendered.
    fn test_vm_xml(overlay: &Disk) -> String {
        DomainSpec::test_vm(
            "kiln-test-x",
            m(Engine::Tcg),
            me(),
            overlay,
            Path::new("/w/seed.iso"),
            Path::new("/w/c.log"),
            40022,
        )
        .xml("", "")
        .unwrap()
    }

    /// An aarch64 VM is qemu's `virt` machine with AAVMF (Microsoft's keys for Secure Boot,
    /// no SMM), no x86 APIC, a Cortex-A57 under TCG.
    #[test]
    fn aarch64_vms_are_virt_machines_with_aavmf() {
        let arm = |f: Firmware| Machine {
            arch: Arch::Aarch64,
            firmware: f,
            ..m(Engine::Tcg)
        };
        let x = DomainSpec::build_vm("b", arm(Firmware::Uefi), me(), Path::new("/w"))
            .xml("", "")
            .unwrap();
        assert!(
            x.contains("<type arch='aarch64' machine='virt'>hvm</type>"),
            "{x}"
        );
        assert!(x.contains("<loader readonly='yes' secure='no' type='pflash'>/usr/share/AAVMF/AAVMF_CODE.fd</loader>\n    <nvram template='/usr/share/AAVMF/AAVMF_VARS.fd'>/w/efivars.fd</nvram>"), "{x}");
        assert!(x.contains("<features><acpi/></features>"), "{x}");
        assert!(
            x.contains("<model fallback='forbid'>cortex-a57</model>"),
            "{x}"
        );
        let x = DomainSpec::build_vm("b", arm(Firmware::SecureBoot), me(), Path::new("/w"))
            .xml("", "")
            .unwrap();
        assert!(
            x.contains("secure='no' type='pflash'>/usr/share/AAVMF/AAVMF_CODE.ms.fd</loader>"),
            "{x}"
        );
        assert!(
            x.contains("template='/usr/share/AAVMF/AAVMF_VARS.ms.fd'"),
            "{x}"
        );
        assert!(!x.contains("smm"), "{x}");
        // KVM runs the host's architecture only.
        assert_eq!(Engine::Kvm.for_guest(Arch::Aarch64), Engine::Tcg);
        assert_eq!(Engine::Kvm.for_guest(Arch::host()), Engine::Kvm);
    }

    /// Every VM of a UEFI recipe boots OVMF with a variable store of its own in its own
    /// directory, made by libvirt from the template; Secure Boot adds the secure code and SMM.
    #[test]
    fn uefi_vms_get_the_firmware_and_their_own_variable_store() {
        let firmware = |f: Firmware| Machine {
            firmware: f,
            ..m(Engine::Tcg)
        };
        let x = DomainSpec::build_vm("b", firmware(Firmware::Uefi), me(), Path::new("/w"))
            .xml("", "")
            .unwrap();
        assert!(x.contains("<loader readonly='yes' secure='no' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>\n    <nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>/w/efivars.fd</nvram>"), "{x}");
        assert!(x.contains("<features><acpi/><apic/></features>"), "{x}");
        let overlay = Disk::system(Path::new("/t/o.qcow2"), false);
        let x = DomainSpec::test_vm(
            "t",
            firmware(Firmware::SecureBoot),
            me(),
            &overlay,
            Path::new("/t/seed.iso"),
            Path::new("/t/c.log"),
            1,
        )
        .xml("", "")
        .unwrap();
        assert!(x.contains("<loader readonly='yes' secure='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.secboot.fd</loader>\n    <nvram template='/usr/share/OVMF/OVMF_VARS_4M.ms.fd'>/t/efivars.fd</nvram>"), "{x}");
        assert!(
            x.contains("<features><acpi/><apic/><smm state='on'/></features>"),
            "{x}"
        );
        let k = KernelBoot {
            kernel: "/i/linux".into(),
            initrd: None,
            cmdline: String::new(),
        };
        let d = DomainSpec::install_vm(
            "i",
            firmware(Firmware::Uefi),
            me(),
            k,
            Path::new("/i/disk.qcow2"),
            Path::new("/i/console.log"),
        );
        assert_eq!(d.nvram.as_deref(), Some(Path::new("/i/efivars.fd")));
        // BIOS: libvirt's default firmware, nothing of OVMF; no TPM unless asked for.
        let x = test_vm_xml(&overlay);
        assert!(!x.contains("<loader") && !x.contains("<nvram"), "{x}");
        assert!(!x.contains("<tpm"), "{x}");
        let tpm = Machine {
            tpm: true,
            ..m(Engine::Tcg)
        };
        let x = DomainSpec::build_vm("b", tpm, me(), Path::new("/w"))
            .xml("", "")
            .unwrap();
        assert!(
            x.contains(
                "<tpm model='tpm-crb'>\n      <backend type='emulator' version='2.0'/>\n    </tpm>"
            ),
            "{x}"
        );
    }

    #[test]
    fn the_test_vm_forwards_ssh_through_qemus_user_network() {
        let overlay =
            Disk::system(Path::new("/w/t.qcow2"), false).backed_by(Path::new("/o/i.raw"), "raw");
        let x = test_vm_xml(&overlay);
        assert!(x.contains(
            "<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>"
        ));
        assert!(x.contains("hostfwd=tcp:127.0.0.1:40022-:22"));
        assert!(!x.contains("<interface"), "{x}");
        assert!(x.contains("<format type='raw'/>"));
        assert!(!x.contains("<metadata>"));
    }

    #[test]
    fn a_backing_chain_is_declared_to_its_end_nearest_first() {
        let chain = [
            "/w/t/chain-0-disk.qcow2",
            "/w/t/chain-1-disk.qcow2",
            "/w/t/chain-2-b.raw",
        ]
        .iter()
        .zip(["qcow2", "qcow2", "raw"])
        .map(|(p, f)| Backing {
            path: PathBuf::from(p),
            format: f.to_string(),
        })
        .collect();
        let overlay = Disk::system(Path::new("/w/t.qcow2"), false).backed_by_chain(chain);
        let x = test_vm_xml(&overlay);
        let doc = roxmltree::Document::parse(&x).expect("well-formed XML");
        let vda = doc
            .descendants()
            .find(|n| {
                n.has_tag_name("disk") && n.descendants().any(|t| t.attribute("dev") == Some("vda"))
            })
            .unwrap();
        // Each backingStore holds the next; the last holds an empty one (no probing further).
        let mut files = Vec::new();
        let mut node = vda;
        while let Some(b) = node.children().find(|c| c.has_tag_name("backingStore")) {
            match b.children().find(|c| c.has_tag_name("source")) {
                Some(src) => {
                    files.push(src.attribute("file").unwrap().to_string());
                    let label = src.children().find(|c| c.has_tag_name("seclabel")).unwrap();
                    assert_eq!(label.attribute("relabel"), Some("no"));
                }
                None => assert_eq!(b.children().filter(|c| c.is_element()).count(), 0),
            }
            node = b;
        }
        assert_eq!(
            files,
            [
                "/w/t/chain-0-disk.qcow2",
                "/w/t/chain-1-disk.qcow2",
                "/w/t/chain-2-b.raw"
            ]
        );
    }

    #[test]
    fn each_cpu_setting_renders_its_cpu_element() {
        // (engine, vm.cpu, mode, model)
        let cases = [
            (Engine::Kvm, Cpu::Auto, "host-passthrough", None),
            (Engine::Tcg, Cpu::Auto, "maximum", None),
            (Engine::Tcg, Cpu::X86_64, "custom", Some("qemu64")),
            (Engine::Tcg, Cpu::X86_64V2, "custom", Some("Nehalem")),
            (Engine::Tcg, Cpu::X86_64V3, "custom", Some("Haswell-noTSX")),
            (Engine::Tcg, Cpu::Max, "maximum", None),
            (Engine::Kvm, Cpu::X86_64V2, "custom", Some("Nehalem")),
        ];
        for (engine, cpu, mode, model) in cases {
            let mut machine = m(engine);
            machine.cpu = cpu;
            let x = DomainSpec::build_vm("k", machine, me(), Path::new("/w"))
                .xml("x", "1")
                .unwrap();
            let doc = roxmltree::Document::parse(&x).unwrap();
            let c = doc.descendants().find(|n| n.has_tag_name("cpu")).unwrap();
            let what = format!("{engine:?} {cpu:?}");
            assert_eq!(c.attribute("mode"), Some(mode), "{what}");
            let named = c.children().find(|n| n.has_tag_name("model"));
            assert_eq!(named.and_then(|n| n.text()), model, "{what}");
            if model.is_some() {
                assert_eq!(c.attribute("check"), Some("none"), "{what}");
            }
        }
    }

    #[test]
    fn the_kvm_probe_has_no_disks_network_or_relabelling() {
        let x = DomainSpec::kvm_probe("kiln-kvm-probe-1", Path::new("/boot/vmlinuz-6"))
            .xml("", "")
            .unwrap();
        assert!(x.contains("<domain type='kvm'>"));
        assert!(x.contains("<memory unit='MiB'>128</memory>"));
        assert!(x.contains("<cmdline>console=ttyS0 panic=-1 quiet</cmdline>"));
        assert!(x.contains("relabel='no'"));
        for absent in [
            "<disk",
            "<interface",
            "<serial",
            "<rng",
            "<initrd>",
            "<boot dev",
        ] {
            assert!(!x.contains(absent), "{absent} in {x}");
        }
    }

    #[test]
    fn every_rendering_is_well_formed_xml_with_one_domain() {
        // Balanced tags: a cheap check that no branch of the template leaves one open.
        for x in [
            DomainSpec::kvm_probe("p", Path::new("/k"))
                .xml("", "")
                .unwrap(),
            DomainSpec::build_vm("b", m(Engine::Tcg), me(), Path::new("/w"))
                .xml("", "")
                .unwrap(),
        ] {
            let opens = x.matches("<disk ").count();
            assert_eq!(opens, x.matches("</disk>").count());
            assert_eq!(x.matches("<domain").count(), 1);
            assert!(x.trim_end().ends_with("</domain>"));
        }
    }
}
