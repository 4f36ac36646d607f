//! The words recipes, plans, manifests and the command line share: formats, accelerators,
//! answer kinds, publish methods. Data only: this module imports nothing of kiln's.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AnswerKind {
    /// debian-installer (Debian; Ubuntu up to 18.04).
    Preseed,
    /// subiquity (Ubuntu 20.04 and later): cloud-init user-data with an `autoinstall` key.
    Autoinstall,
    /// anaconda (RHEL, Rocky, Alma, Fedora).
    Kickstart,
}

impl AnswerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AnswerKind::Preseed => "preseed",
            AnswerKind::Autoinstall => "autoinstall",
            AnswerKind::Kickstart => "kickstart",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// Appended to the initrd as an extra cpio archive (virt-install --initrd-inject).
    Initrd,
    /// On a labelled seed disk: `cidata` (autoinstall) or `OEMDRV` (kickstart).
    Seed,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    #[default]
    Auto,
    Kvm,
    Tcg,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DefaultUser {
    pub name: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub shell: Option<String>,
    /// Passwordless sudo (default true).
    #[serde(default)]
    pub sudo: Option<bool>,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum,
)]
pub enum Subformat {
    #[serde(rename = "monolithicSparse")]
    #[value(name = "monolithicSparse")]
    MonolithicSparse,
    #[serde(rename = "streamOptimized")]
    #[value(name = "streamOptimized")]
    StreamOptimized,
    #[serde(rename = "dynamic")]
    #[value(name = "dynamic")]
    Dynamic,
    #[serde(rename = "fixed")]
    #[value(name = "fixed")]
    Fixed,
}

impl Subformat {
    pub fn as_str(self) -> &'static str {
        match self {
            Subformat::MonolithicSparse => "monolithicSparse",
            Subformat::StreamOptimized => "streamOptimized",
            Subformat::Dynamic => "dynamic",
            Subformat::Fixed => "fixed",
        }
    }
    /// Which formats accept it.
    pub fn fits(self, f: Format) -> bool {
        f.facts().subformats.contains(&self)
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Zlib,
    Zstd,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Zlib => "zlib",
            Compression::Zstd => "zstd",
        }
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Qcow2,
    Raw,
    Vmdk,
    Vdi,
    Vhdx,
    /// VHD (Glance: vhd)
    Vpc,
    Qed,
    /// Parallels/Virtuozzo (Glance: ploop)
    #[serde(alias = "ploop")]
    #[value(alias = "ploop")]
    Parallels,
}

/// Everything kiln knows about an output format, in one row per format ([`FORMATS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FormatFacts {
    pub format: Format,
    /// qemu-img's name (`-O`, `qemu-img info`).
    pub qemu_img: &'static str,
    /// The output file's extension.
    pub extension: &'static str,
    /// Glance's `disk_format` (None: Glance does not accept it).
    pub glance_disk: Option<&'static str>,
    /// Glance's `container_format` for it.
    pub glance_container: &'static str,
    /// The boot test and the host reader prefer it (qemu reads it without a conversion).
    pub bootable: bool,
    /// `qemu-img check` supports it.
    pub checkable: bool,
    /// `compress` (qemu-img's `-c`) and `cluster_size` apply.
    pub compressible: bool,
    /// qemu-img may write it with parallel out-of-order writes (`-m 8 -W`).
    pub parallel_writes: bool,
    /// The subformats it takes, the default first (none: no `subformat`).
    pub subformats: &'static [Subformat],
}

/// The format table: a new output format is a variant of [`Format`] and a row here.
pub const FORMATS: &[FormatFacts] = &[
    FormatFacts {
        format: Format::Qcow2,
        qemu_img: "qcow2",
        extension: "qcow2",
        glance_disk: Some("qcow2"),
        glance_container: "bare",
        bootable: true,
        checkable: true,
        compressible: true,
        parallel_writes: true,
        subformats: &[],
    },
    FormatFacts {
        format: Format::Raw,
        qemu_img: "raw",
        extension: "raw",
        glance_disk: Some("raw"),
        glance_container: "bare",
        bootable: true,
        checkable: false,
        compressible: false,
        parallel_writes: true,
        subformats: &[],
    },
    FormatFacts {
        format: Format::Vmdk,
        qemu_img: "vmdk",
        extension: "vmdk",
        glance_disk: Some("vmdk"),
        glance_container: "bare",
        bootable: false,
        checkable: true,
        compressible: false,
        // A streamOptimized vmdk is written sequentially anyway (see `qemu_img`).
        parallel_writes: true,
        subformats: &[Subformat::MonolithicSparse, Subformat::StreamOptimized],
    },
    FormatFacts {
        format: Format::Vdi,
        qemu_img: "vdi",
        extension: "vdi",
        glance_disk: Some("vdi"),
        glance_container: "bare",
        bootable: false,
        checkable: true,
        compressible: false,
        parallel_writes: true,
        subformats: &[],
    },
    FormatFacts {
        format: Format::Vhdx,
        qemu_img: "vhdx",
        extension: "vhdx",
        glance_disk: Some("vhdx"),
        glance_container: "bare",
        bootable: false,
        checkable: true,
        compressible: false,
        parallel_writes: true,
        subformats: &[],
    },
    FormatFacts {
        format: Format::Vpc,
        qemu_img: "vpc",
        extension: "vhd",
        glance_disk: Some("vhd"),
        glance_container: "bare",
        bootable: false,
        checkable: false,
        compressible: false,
        parallel_writes: true,
        subformats: &[Subformat::Dynamic, Subformat::Fixed],
    },
    FormatFacts {
        format: Format::Qed,
        qemu_img: "qed",
        extension: "qed",
        glance_disk: None,
        glance_container: "bare",
        bootable: false,
        checkable: true,
        compressible: false,
        // `-W` aborts qemu-img with qed.
        parallel_writes: false,
        subformats: &[],
    },
    FormatFacts {
        format: Format::Parallels,
        qemu_img: "parallels",
        // A ploop image's data file (Virtuozzo names it root.hds).
        extension: "hds",
        glance_disk: Some("ploop"),
        glance_container: "bare",
        bootable: false,
        checkable: true,
        // qemu-img: "Compression not supported for this file format".
        compressible: false,
        parallel_writes: true,
        subformats: &[],
    },
];

impl Format {
    /// This format's row of [`FORMATS`].
    pub fn facts(self) -> &'static FormatFacts {
        FORMATS
            .iter()
            .find(|f| f.format == self)
            .expect("every format has a row in FORMATS")
    }
    /// The format qemu-img calls `name` (`qemu-img info`'s "format").
    pub fn from_qemu_img(name: &str) -> Option<Format> {
        FORMATS
            .iter()
            .find(|f| f.qemu_img == name)
            .map(|f| f.format)
    }
    pub fn as_str(self) -> &'static str {
        self.facts().qemu_img
    }
    /// Glance's `disk_format` name (qed has none: Glance does not accept it).
    pub fn glance_disk_format(self) -> Option<&'static str> {
        self.facts().glance_disk
    }
    /// Does `qemu-img check` support the format?
    pub fn checkable(self) -> bool {
        self.facts().checkable
    }
    /// File extension of the output.
    pub fn extension(self) -> &'static str {
        self.facts().extension
    }
    /// The subformat qemu-img writes when none is asked for.
    pub fn default_subformat(self) -> Option<Subformat> {
        self.facts().subformats.first().copied()
    }
}

/// How the data gets into Glance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// `PUT /v2/images/{id}/file` (streamed, verified).
    #[default]
    Upload,
    /// Stage the data, then import it (Glance runs its import plugins).
    GlanceDirect,
    /// Glance fetches the data from `uri` itself.
    WebDownload,
    /// Upload, then have Glance copy the image into the other `stores` (admin).
    CopyImage,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Upload => "upload",
            Method::GlanceDirect => "glance-direct",
            Method::WebDownload => "web-download",
            Method::CopyImage => "copy-image",
        }
    }
}

/// The writable core attributes of an image (everything else is a custom property).
pub const GLANCE_CORE_ATTRIBUTES: &[&str] = &[
    "name",
    "visibility",
    "protected",
    "min_disk",
    "min_ram",
    "disk_format",
    "container_format",
    "tags",
    "os_hidden",
];

/// Read-only attributes: neither settable nor usable as property names.
pub const GLANCE_READ_ONLY_ATTRIBUTES: &[&str] = &[
    "id",
    "status",
    "owner",
    "size",
    "virtual_size",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "created_at",
    "updated_at",
    "file",
    "schema",
    "self",
    "direct_url",
    "locations",
    "stores",
];

/// The accelerator a VM really runs with, once `accel: auto` has been decided (the KVM probe):
/// one type for libvirt's domain type, the CPU model, libguestfs's backend and the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Kvm,
    Tcg,
}

impl Engine {
    pub fn from_tcg(tcg: bool) -> Engine {
        if tcg {
            Engine::Tcg
        } else {
            Engine::Kvm
        }
    }

    pub fn is_tcg(self) -> bool {
        self == Engine::Tcg
    }

    /// The engine a guest of `arch` runs on: KVM runs the host's architecture only.
    pub fn for_guest(self, arch: Arch) -> Engine {
        if arch == Arch::host() {
            self
        } else {
            Engine::Tcg
        }
    }

    /// The name in logs and manifest.json: `kvm` or `tcg`.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Kvm => "kvm",
            Engine::Tcg => "tcg",
        }
    }

    /// libvirt's `<domain type>`: `kvm`, or `qemu` for TCG.
    pub fn domain_type(self) -> &'static str {
        match self {
            Engine::Kvm => "kvm",
            Engine::Tcg => "qemu",
        }
    }

    /// The virtual CPU for the recipe's `vm.cpu` on this engine: `auto` is the host's CPU
    /// under KVM and qemu's most capable model under TCG; an aarch64 guest under TCG gets a
    /// Cortex-A57 (ARMv8.0, what Debian's arm64 is built for: `max` adds pointer
    /// authentication, whose emulation slows every function call).
    pub fn cpu(self, setting: Cpu, arch: Arch) -> CpuModel {
        match (setting, self) {
            (Cpu::Auto, Engine::Kvm) => CpuModel::HOST,
            (Cpu::Auto, Engine::Tcg) if arch == Arch::Aarch64 => {
                CpuModel::level("cortex-a57", "cortex-a57")
            }
            (Cpu::Auto | Cpu::Max, _) => CpuModel::MAX,
            (Cpu::X86_64, _) => CpuModel::level("x86-64", "qemu64"),
            (Cpu::X86_64V2, _) => CpuModel::level("x86-64-v2", "Nehalem"),
            (Cpu::X86_64V3, _) => CpuModel::level("x86-64-v3", "Haswell-noTSX"),
        }
    }
}

/// The virtual CPU of every VM kiln starts for a recipe (`vm.cpu`, `kiln test --cpu`): a
/// microarchitecture level (the ISA a distribution is built for) or qemu's most capable model.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum,
)]
pub enum Cpu {
    /// KVM: the host's CPU; TCG: `max`. Under TCG a lower level boots no faster (a Debian 12
    /// guest reached its login prompt in 38.7 s on `max`, 40.2 s on `x86-64`, 39.1 s on
    /// `x86-64-v2`, medians of 3): a level is for proving an image runs on older CPUs.
    #[default]
    #[serde(rename = "auto")]
    #[value(name = "auto")]
    Auto,
    /// The x86-64 baseline (qemu64): Debian, Ubuntu, Fedora.
    #[serde(rename = "x86-64")]
    #[value(name = "x86-64")]
    X86_64,
    /// + SSSE3, SSE4.1/4.2, POPCNT, CMPXCHG16B (qemu's `Nehalem`): RHEL 9 and its rebuilds.
    #[serde(rename = "x86-64-v2")]
    #[value(name = "x86-64-v2")]
    X86_64V2,
    /// + AVX, AVX2, BMI1/2, F16C, FMA, LZCNT, MOVBE, XSAVE (`Haswell-noTSX`): RHEL 10.
    #[serde(rename = "x86-64-v3")]
    #[value(name = "x86-64-v3")]
    X86_64V3,
    /// qemu's most capable model (`-cpu max` under TCG, the host's CPU under KVM).
    #[serde(rename = "max")]
    #[value(name = "max")]
    Max,
}

impl Cpu {
    pub fn is_auto(&self) -> bool {
        *self == Cpu::Auto
    }

    /// The x86-64 levels are x86_64's only.
    pub fn fits(&self, arch: Arch) -> bool {
        matches!(self, Cpu::Auto | Cpu::Max) || arch == Arch::X86_64
    }
}

/// The firmware every VM of a recipe boots with (`vm.firmware`, `vm.secure_boot`; `kiln test
/// --firmware`, `--secure-boot`). UEFI is Debian's OVMF with a copy of its variable store per VM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Firmware {
    /// SeaBIOS: the image boots from its MBR (GRUB for i386-pc).
    #[default]
    #[serde(rename = "bios")]
    Bios,
    /// OVMF without Secure Boot: the image boots from its EFI system partition.
    #[serde(rename = "uefi")]
    Uefi,
    /// OVMF's Secure Boot build, SMM on, Microsoft's keys enrolled: only a signed chain (shim,
    /// GRUB, kernel) boots.
    #[serde(rename = "uefi-secure-boot")]
    SecureBoot,
}

/// The guest architecture (a recipe's `arch`, `kiln test --arch`; default: the host's): the
/// VMs' `<type arch>` and machine, Debian's architecture name, the serial console, Glance's
/// `architecture`. One row per architecture.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, clap::ValueEnum,
)]
pub enum Arch {
    /// PC (q35): SeaBIOS or OVMF.
    #[serde(rename = "x86_64")]
    #[value(name = "x86_64")]
    X86_64,
    /// ARM's 64-bit architecture (qemu's `virt` machine, UEFI only: Debian's AAVMF). On an
    /// x86_64 host it runs under TCG and is bootstrapped through qemu-user-static.
    #[serde(rename = "aarch64")]
    #[value(name = "aarch64")]
    Aarch64,
}

impl Arch {
    pub fn is_x86_64(&self) -> bool {
        *self == Arch::X86_64
    }

    /// The machine kiln runs on (x86_64 where it is neither).
    pub fn host() -> Arch {
        Arch::from_name(std::env::consts::ARCH).unwrap_or(Arch::X86_64)
    }

    /// From the kernel's / ELF's name (`uname -m`): `x86_64`, `aarch64`.
    pub fn from_name(name: &str) -> Option<Arch> {
        match name {
            "x86_64" => Some(Arch::X86_64),
            "aarch64" => Some(Arch::Aarch64),
            _ => None,
        }
    }

    /// `uname -m`'s name, libvirt's `<type arch>`, Glance's `architecture`.
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// Debian's name (dpkg, mmdebstrap, package names).
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// libvirt's machine type (and Glance's `hw_machine_type`).
    pub fn machine(self) -> &'static str {
        match self {
            Arch::X86_64 => "q35",
            Arch::Aarch64 => "virt",
        }
    }

    /// The first serial port's device in the guest (the VMs' console log).
    pub fn serial_console(self) -> &'static str {
        match self {
            Arch::X86_64 => "ttyS0",
            Arch::Aarch64 => "ttyAMA0",
        }
    }

    /// The qemu binary libvirt starts for it (and install-deps installs).
    pub fn emulator(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86_64",
            Arch::Aarch64 => "qemu-system-aarch64",
        }
    }

    /// The firmware when the recipe names none: BIOS on a PC, UEFI where there is no other.
    pub fn default_firmware(self) -> Firmware {
        match self {
            Arch::X86_64 => Firmware::Bios,
            Arch::Aarch64 => Firmware::Uefi,
        }
    }

    /// A bootstrapped disk's partitioning when the recipe names none.
    pub fn default_layout(self) -> DiskLayout {
        match self {
            Arch::X86_64 => DiskLayout::Hybrid,
            Arch::Aarch64 => DiskLayout::Uefi,
        }
    }

    /// Can a VM of this architecture run with this firmware?
    pub fn supports(self, f: Firmware) -> bool {
        self == Arch::X86_64 || f.is_uefi()
    }

    /// Can this architecture's disks have this layout?
    pub fn has_layout(self, l: DiskLayout) -> bool {
        match self {
            Arch::X86_64 => l != DiskLayout::Uefi,
            Arch::Aarch64 => l == DiskLayout::Uefi,
        }
    }

    /// Debian's cloud kernel for it.
    pub fn kernel_package(self) -> &'static str {
        match self {
            Arch::X86_64 => "linux-image-cloud-amd64",
            Arch::Aarch64 => "linux-image-cloud-arm64",
        }
    }

    /// The suffix of its EFI binaries (`BOOTX64.EFI`, `grubaa64.efi`).
    pub fn efi_suffix(self) -> &'static str {
        match self {
            Arch::X86_64 => "x64",
            Arch::Aarch64 => "aa64",
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Glance's properties for the hardware an image was built and boot-tested on: Nova boots an
/// instance of it the same way (architecture, machine type, firmware, Secure Boot).
pub fn hardware_properties(
    arch: Arch,
    firmware: Firmware,
    tpm: bool,
) -> Vec<(&'static str, &'static str)> {
    let mut v = vec![
        ("architecture", arch.as_str()),
        ("hw_machine_type", arch.machine()),
    ];
    v.extend(firmware.glance_properties());
    if tpm {
        v.extend([("hw_tpm_version", "2.0"), ("hw_tpm_model", "tpm-crb")]);
    }
    v
}

/// How a bootstrapped disk is partitioned (`source.bootstrap.layout`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DiskLayout {
    /// GPT: root (partition 1, last on the disk so it can grow), a BIOS boot partition (2) and
    /// an EFI system partition (3); GRUB for i386-pc and x86_64-efi, also at the removable path.
    #[default]
    Hybrid,
    /// MBR with one root partition and GRUB for i386-pc: BIOS only.
    Bios,
    /// GPT: root (1) and an EFI system partition (2) with Debian's signed shim and GRUB, also
    /// at the removable path: UEFI only (aarch64's layout).
    Uefi,
}

impl DiskLayout {
    /// Can a VM with this firmware boot it?
    pub fn boots_with(&self, f: Firmware) -> bool {
        match self {
            DiskLayout::Hybrid => true,
            DiskLayout::Bios => f.is_bios(),
            DiskLayout::Uefi => f.is_uefi(),
        }
    }
}

/// The files of one UEFI firmware: read-only code and the template of its variable store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirmwareFiles {
    pub code: &'static str,
    pub vars: &'static str,
    /// Secure Boot: libvirt's `secure='yes'` and SMM.
    pub secure: bool,
}

impl Firmware {
    pub fn is_bios(&self) -> bool {
        *self == Firmware::Bios
    }

    pub fn is_uefi(&self) -> bool {
        !self.is_bios()
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Firmware::Bios => "bios",
            Firmware::Uefi => "uefi",
            Firmware::SecureBoot => "uefi-secure-boot",
        }
    }

    /// From the recipe's two keys (or `kiln test`'s flags): Secure Boot implies UEFI.
    pub fn from_settings(uefi: bool, secure_boot: bool) -> Firmware {
        match (uefi, secure_boot) {
            (_, true) => Firmware::SecureBoot,
            (true, false) => Firmware::Uefi,
            (false, false) => Firmware::Bios,
        }
    }

    /// Debian's files for this firmware: `ovmf` on x86_64, `qemu-efi-aarch64` (AAVMF, whose
    /// `.ms` variable store has Microsoft's keys enrolled; ARM has no SMM) on aarch64; None for
    /// BIOS (libvirt's default).
    pub fn files(&self, arch: Arch) -> Option<FirmwareFiles> {
        match (self, arch) {
            (Firmware::Bios, _) => None,
            (Firmware::Uefi, Arch::Aarch64) => Some(FirmwareFiles {
                code: "/usr/share/AAVMF/AAVMF_CODE.fd",
                vars: "/usr/share/AAVMF/AAVMF_VARS.fd",
                secure: false,
            }),
            (Firmware::SecureBoot, Arch::Aarch64) => Some(FirmwareFiles {
                code: "/usr/share/AAVMF/AAVMF_CODE.ms.fd",
                vars: "/usr/share/AAVMF/AAVMF_VARS.ms.fd",
                secure: false,
            }),
            (Firmware::Uefi, Arch::X86_64) => Some(FirmwareFiles {
                code: "/usr/share/OVMF/OVMF_CODE_4M.fd",
                vars: "/usr/share/OVMF/OVMF_VARS_4M.fd",
                secure: false,
            }),
            (Firmware::SecureBoot, Arch::X86_64) => Some(FirmwareFiles {
                code: "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
                vars: "/usr/share/OVMF/OVMF_VARS_4M.ms.fd",
                secure: true,
            }),
        }
    }

    /// Glance's `hw_firmware_type` (and `os_secure_boot`) for an image built this way.
    pub fn glance_properties(&self) -> Vec<(&'static str, &'static str)> {
        match self {
            Firmware::Bios => vec![("hw_firmware_type", "bios")],
            Firmware::Uefi => vec![("hw_firmware_type", "uefi")],
            Firmware::SecureBoot => {
                vec![("hw_firmware_type", "uefi"), ("os_secure_boot", "required")]
            }
        }
    }
}

impl std::fmt::Display for Firmware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// libvirt's `<cpu>` element for one VM: a mode, and for a level, the oldest of qemu's models
/// that has it (qemu64 with the level's features added hangs Linux 6.1 at boot under TCG once
/// XSAVE is among them; `check='none'`: TCG emulates the model whatever the host has).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CpuModel {
    /// What the manifest and logs call it: `host`, `max`, `x86-64-v2`, ….
    pub name: &'static str,
    pub mode: &'static str,
    pub model: Option<&'static str>,
}

impl CpuModel {
    pub const HOST: CpuModel = CpuModel {
        name: "host",
        mode: "host-passthrough",
        model: None,
    };
    pub const MAX: CpuModel = CpuModel {
        name: "max",
        mode: "maximum",
        model: None,
    };

    const fn level(name: &'static str, model: &'static str) -> CpuModel {
        CpuModel {
            name,
            mode: "custom",
            model: Some(model),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_format_has_one_row_and_rows_do_not_collide() {
        let all = [
            Format::Qcow2,
            Format::Raw,
            Format::Vmdk,
            Format::Vdi,
            Format::Vhdx,
            Format::Vpc,
            Format::Qed,
            Format::Parallels,
        ];
        assert_eq!(FORMATS.len(), all.len());
        for f in all {
            assert_eq!(FORMATS.iter().filter(|r| r.format == f).count(), 1, "{f:?}");
            assert_eq!(Format::from_qemu_img(f.as_str()), Some(f));
            assert_eq!(
                FORMATS
                    .iter()
                    .filter(|r| r.extension == f.extension())
                    .count(),
                1,
                "two formats write .{}",
                f.extension()
            );
            for sf in f.facts().subformats {
                assert!(sf.fits(f));
            }
        }
        assert_eq!(Format::Vpc.extension(), "vhd");
        assert_eq!(Format::Vpc.glance_disk_format(), Some("vhd"));
        assert_eq!(Format::Qed.glance_disk_format(), None);
        assert_eq!(
            Format::Vmdk.default_subformat(),
            Some(Subformat::MonolithicSparse)
        );
        assert!(!Subformat::Fixed.fits(Format::Vmdk));
    }
}

/// How the provision stage ran the recipe's steps: where the leading package steps were
/// resolved and how the build VM booted. The two ways of each give other bytes (apt's lists
/// and logs, cloud-init's state), so a provisioned disk is reused only by a build that would
/// take the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionPath {
    pub packages: PackagePath,
    pub boot: BootPath,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackagePath {
    /// No leading package steps.
    None,
    /// Resolved and downloaded by the host's apt (`aptsandbox`), installed from the seed.
    Host,
    /// apt in the guest.
    Guest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootPath {
    /// No steps: the build VM is not booted.
    None,
    /// The base's kernel booted straight into the steps (`directboot`).
    Direct,
    /// Firmware, GRUB and cloud-init.
    Firmware,
}
