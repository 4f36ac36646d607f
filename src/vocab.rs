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
        match self {
            Subformat::MonolithicSparse | Subformat::StreamOptimized => f == Format::Vmdk,
            Subformat::Dynamic | Subformat::Fixed => f == Format::Vpc,
        }
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
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Qcow2 => "qcow2",
            Format::Raw => "raw",
            Format::Vmdk => "vmdk",
            Format::Vdi => "vdi",
            Format::Vhdx => "vhdx",
            Format::Vpc => "vpc",
            Format::Qed => "qed",
        }
    }
    /// Glance's `disk_format` name (qed has none: Glance does not accept it).
    pub fn glance_disk_format(self) -> Option<&'static str> {
        match self {
            Format::Vpc => Some("vhd"),
            Format::Qed => None,
            f => Some(f.as_str()),
        }
    }
    /// Does `qemu-img check` support the format?
    pub fn checkable(self) -> bool {
        matches!(
            self,
            Format::Qcow2 | Format::Vmdk | Format::Vhdx | Format::Vdi | Format::Qed
        )
    }
    /// File extension of the output.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Vpc => "vhd",
            f => f.as_str(),
        }
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

    /// libvirt's `<cpu mode>`: the host's CPU under KVM, qemu's most capable model under TCG.
    pub fn cpu_mode(self) -> &'static str {
        match self {
            Engine::Kvm => "host-passthrough",
            Engine::Tcg => "maximum",
        }
    }
}
