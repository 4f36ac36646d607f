//! The recipe and element file formats. These types are the single source of truth: the JSON
//! Schema (`kiln schema`), the positional validation and deserialization all derive from them.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::vocab::{Accel, AnswerKind, Compression, DefaultUser, Delivery, Format, Subformat};

/// A kiln recipe: how to bake one golden image.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Image name: letters, digits, `-`, `_` and `.`; names the output directory.
    pub name: String,
    /// Image version (a string: quote numbers, e.g. "1.0").
    #[serde(default = "default_version")]
    pub version: String,
    /// Free text shown by `kiln plan`.
    #[serde(default)]
    pub description: Option<String>,
    /// Variables with their defaults, usable in templates as `{{vars.NAME}}`; override with
    /// `--var NAME=VALUE`.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// Elements to apply, in order; their dependencies are added before them.
    #[serde(default)]
    pub elements: Vec<String>,
    /// The guest architecture: `x86_64` or `aarch64` (default: the host's). Another
    /// architecture than the host's is emulated (TCG) and bootstrapped through qemu-user-static.
    #[serde(default)]
    pub arch: Option<crate::vocab::Arch>,
    /// Where the base disk comes from: exactly one of `image` or `bootstrap`.
    pub source: Source,
    /// The build VM.
    #[serde(default)]
    pub vm: Vm,
    /// Ordered steps run inside the booted guest (through cloud-init).
    #[serde(default)]
    pub provision: Vec<Step>,
    /// What the golden image keeps for cloud-init.
    #[serde(default)]
    pub cloud_init: CloudInit,
    /// virt-customize steps, applied in the sysprep appliance before the sysprep operations.
    #[serde(default)]
    pub customize: Vec<CustomizeStep>,
    /// Sysprep operations, in virt-sysprep syntax.
    #[serde(default)]
    pub sysprep: Option<Sysprep>,
    /// Output disk formats (default: qcow2).
    #[serde(default)]
    pub outputs: Vec<Output>,
    /// Where finished images go (default: the local catalog directory).
    #[serde(default)]
    pub publish: Option<Publish>,
    /// Replace a built-in template with a file (paths relative to the recipe).
    #[serde(default)]
    pub templates: Templates,
    /// Image properties recorded in the manifest (and sent to Glance when publishing there).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// The stage cache.
    #[serde(default)]
    pub cache: CacheSettings,
    /// The boot test after convert, before anything is published: `false` skips it; a list
    /// adds checks to the default ones (`run` + `expect`, `file` + `contains`, `service` +
    /// `active`). Default: on, default checks.
    #[serde(default)]
    pub test: Option<TestSetting>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum TestSetting {
    Enabled(bool),
    Checks(Vec<TestCheck>),
}

/// One check: exactly one of `run`, `file`, `service`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestCheck {
    /// A shell command run as the test user (sudo works); it must exit 0.
    #[serde(default)]
    pub run: Option<String>,
    /// With `run`: text its output must contain.
    #[serde(default)]
    pub expect: Option<String>,
    /// An absolute path that must exist and contain `contains`.
    #[serde(default)]
    pub file: Option<String>,
    #[serde(default)]
    pub contains: Option<String>,
    /// A systemd unit that must be active (`active: false`: must not be).
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub active: Option<bool>,
}

/// How long stage results that depend on the network stay good.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    /// A provisioned disk (its steps install packages from a mirror, or fetch anything) older
    /// than this is made again, and everything built on it (e.g. "7d", "12h"; default: kept
    /// until evicted). `--refresh` makes it again now.
    #[serde(default)]
    pub max_age: Option<DurationSpec>,
    /// A remote stage cache shared by the machines that build this recipe:
    /// s3://BUCKET[/PREFIX] (credentials come from the environment, never from here).
    /// `--cache-remote` and `$KILN_CACHE_REMOTE` override it.
    #[serde(default)]
    pub remote: Option<String>,
}

fn default_version() -> String {
    "0".into()
}

/// Exactly one of `image`, `bootstrap` or `installer`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// A base disk image (a cloud image), by URL or local path.
    #[serde(default)]
    pub image: Option<ImageSource>,
    /// A bootable base disk made from distribution packages with mmdebstrap.
    #[serde(default)]
    pub bootstrap: Option<Bootstrap>,
    /// An unattended install from installer media (ISO, or netboot kernel + initrd).
    #[serde(default)]
    pub installer: Option<InstallerSource>,
}

/// A file by URL (downloaded once into the cache, verified) or local path.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSource {
    #[serde(default)]
    pub url: Option<String>,
    /// Relative to the recipe.
    #[serde(default)]
    pub path: Option<String>,
    /// "sha256:HEX", "sha512:HEX", or "file:URL" of a SHA256SUMS/CHECKSUM file naming the
    /// file; required with `url`.
    #[serde(default)]
    pub checksum: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Answers {
    pub kind: AnswerKind,
    /// Your own template instead of the built-in one (relative to the recipe).
    #[serde(default)]
    pub template: Option<String>,
    /// How the answer file reaches the installer (default: initrd for preseed and
    /// kickstart, seed for autoinstall).
    #[serde(default)]
    pub delivery: Option<Delivery>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallUser {
    pub name: String,
    #[serde(default)]
    pub full_name: Option<String>,
    /// crypt(3) hash (`mkpasswd -m sha-512`); never a plain password. Absent: the account
    /// is locked (log in with keys through cloud-init).
    #[serde(default)]
    pub password_hash: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DiskLayout {
    /// One root partition.
    #[default]
    Direct,
    /// LVM.
    Lvm,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallerSource {
    /// Installer ISO; kiln extracts the kernel and initrd from it (no boot menu).
    #[serde(default)]
    pub iso: Option<FileSource>,
    /// Netboot kernel (with `initrd`, instead of `iso`).
    #[serde(default)]
    pub kernel: Option<FileSource>,
    #[serde(default)]
    pub initrd: Option<FileSource>,
    /// Path of the kernel inside the ISO (default: the usual places for the answer kind).
    #[serde(default)]
    pub kernel_path: Option<String>,
    /// Path of the initrd inside the ISO.
    #[serde(default)]
    pub initrd_path: Option<String>,
    /// Extra kernel command line (after the answer kind's own arguments).
    #[serde(default)]
    pub cmdline: Option<String>,
    pub answers: Answers,
    /// The first user.
    pub user: InstallUser,
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    pub locale: Option<String>,
    #[serde(default)]
    pub keyboard: Option<String>,
    #[serde(default)]
    pub disk_layout: DiskLayout,
    /// Packages installed by the installer.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Package mirror (http URL).
    #[serde(default)]
    pub mirror: Option<String>,
    /// Distribution suite (preseed: e.g. bookworm; used for the mirror check).
    #[serde(default)]
    pub suite: Option<String>,
    /// HTTP proxy for the installer.
    #[serde(default)]
    pub proxy: Option<String>,
    /// Check before booting that the mirror serves the installer's udebs (preseed).
    #[serde(default)]
    pub mirror_check: Option<bool>,
    /// How long the install may take (default 90m).
    #[serde(default)]
    pub timeout: Option<DurationSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageSource {
    /// http(s) URL of the image; downloaded once into the cache (keyed by checksum).
    #[serde(default)]
    pub url: Option<String>,
    /// Local path of the image (relative to the recipe).
    #[serde(default)]
    pub path: Option<String>,
    /// "sha256:HEX", "sha512:HEX", or "file:URL" of a SHA256SUMS/CHECKSUM file naming the
    /// file; required with `url`.
    #[serde(default)]
    pub checksum: Option<String>,
    /// Disk format of the image (default: probed with qemu-img).
    #[serde(default)]
    pub format: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Bootstrap {
    /// Distribution family (only `debian` today).
    pub distro: Distro,
    /// Suite / release codename, e.g. bookworm.
    pub suite: String,
    /// Package mirror (default http://deb.debian.org/debian).
    #[serde(default)]
    pub mirror: Option<String>,
    /// Security mirror ("none" to leave it out; default http://deb.debian.org/debian-security).
    #[serde(default)]
    pub security_mirror: Option<String>,
    /// Extra packages baked into the base disk (elements add theirs).
    #[serde(default)]
    pub packages: Vec<String>,
    /// Size of the base disk (default 2G).
    #[serde(default)]
    pub size: Option<SizeSpec>,
    /// Partitioning: `hybrid` (x86_64's default, like the vendors' cloud images: GPT with a
    /// BIOS boot partition and an EFI system partition, GRUB for both), `bios` (MBR, GRUB for
    /// BIOS) or `uefi` (aarch64's only layout: GPT, root and an EFI system partition).
    #[serde(default)]
    pub layout: Option<crate::vocab::DiskLayout>,
}

/// `vm.firmware` (and `kiln test --firmware`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum FirmwareSetting {
    /// SeaBIOS; with `secure_boot: true`, UEFI.
    #[default]
    Bios,
    Uefi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Distro {
    Debian,
}

/// A size: bytes as an integer for disks, MiB for memory, or a string with a unit
/// ("512M", "2G", "20GiB").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum SizeSpec {
    Number(u64),
    Text(String),
}

/// A duration: seconds as an integer, or a string like "90s", "20m", "1h".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum DurationSpec {
    Seconds(u64),
    Text(String),
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Vm {
    /// Memory: MiB as an integer, or "2G" (default 2G).
    #[serde(default)]
    pub memory: Option<SizeSpec>,
    /// Virtual CPUs (default 2).
    #[serde(default)]
    pub vcpus: Option<u32>,
    /// The virtual CPU: `auto` (the host's under KVM, `max` under TCG), `x86-64`,
    /// `x86-64-v2`, `x86-64-v3` or `max`.
    #[serde(default)]
    pub cpu: crate::vocab::Cpu,
    /// The firmware of every VM (build, installer, boot test): `bios` (SeaBIOS, x86_64's
    /// default) or `uefi` (OVMF; AAVMF on aarch64, its only firmware). Published images get
    /// Glance's `hw_firmware_type`.
    #[serde(default)]
    pub firmware: Option<FirmwareSetting>,
    /// UEFI Secure Boot with Microsoft's keys (implies `firmware: uefi`): a bootstrap adds
    /// Debian's signed shim and GRUB, the boot test proves Secure Boot is enforcing, and
    /// published images get `os_secure_boot: required`.
    #[serde(default)]
    pub secure_boot: bool,
    /// A TPM 2.0 (swtpm, started by libvirt) in every VM; the boot test checks `/dev/tpm0`,
    /// and published images get Glance's `hw_tpm_version` and `hw_tpm_model`.
    #[serde(default)]
    pub tpm: bool,
    /// Size of the build disk; the image grows to it (default: the base disk's size).
    #[serde(default)]
    pub disk: Option<SizeSpec>,
    /// Accelerator: `auto` probes whether KVM guests really run, else TCG.
    #[serde(default)]
    pub accel: Accel,
    /// How long provisioning may take before the build fails (default 30m).
    #[serde(default)]
    pub timeout: Option<DurationSpec>,
    /// How long the guest may take to start the steps (default 5m); a guest that has not
    /// started them by then is restarted once on a fresh disk, then the build fails.
    #[serde(default)]
    pub boot_timeout: Option<DurationSpec>,
    /// libvirt connection URI (default qemu:///system).
    #[serde(default)]
    pub uri: Option<String>,
}

impl Default for Vm {
    fn default() -> Self {
        Vm {
            memory: None,
            vcpus: None,
            cpu: crate::vocab::Cpu::Auto,
            firmware: None,
            secure_boot: false,
            tpm: false,
            disk: None,
            accel: Accel::Auto,
            timeout: None,
            boot_timeout: None,
            uri: None,
        }
    }
}

/// One provisioning step: a mapping with exactly one key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Install packages with the guest's package manager.
    Packages(Vec<String>),
    /// Write files into the guest.
    Files(Vec<FileSpec>),
    /// Run shell commands (each with `/bin/sh -ec`, as root); a failing command fails the
    /// build.
    Run(Vec<String>),
    /// Create users.
    Users(Vec<UserSpec>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// Absolute path in the guest.
    pub path: String,
    /// Inline content (exactly one of `content` or `source`).
    #[serde(default)]
    pub content: Option<String>,
    /// File to copy, relative to the recipe (or element) directory.
    #[serde(default)]
    pub source: Option<String>,
    /// Octal mode, e.g. "0644" (default 0644).
    #[serde(default)]
    pub mode: Option<String>,
    /// owner:group (default root:root).
    #[serde(default)]
    pub owner: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    pub name: String,
    #[serde(default)]
    pub groups: Vec<String>,
    /// Login shell (default /bin/bash).
    #[serde(default)]
    pub shell: Option<String>,
    /// Passwordless sudo.
    #[serde(default)]
    pub sudo: bool,
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
    /// A crypt(3) hash (never a clear-text password); kept out of logs and manifests.
    #[serde(default)]
    pub password_hash: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CloudInit {
    /// Datasource list written into the image
    /// (default ConfigDrive, OpenStack, NoCloud, None).
    #[serde(default)]
    pub datasources: Option<Vec<String>>,
    /// cloud-init's default user in the golden image.
    #[serde(default)]
    pub default_user: Option<DefaultUser>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sysprep {
    /// virt-sysprep syntax: `defaults`, `op`, `+op`, `-op`, applied left to right.
    #[serde(default)]
    pub operations: Vec<String>,
    /// user-account: remove only these accounts (default: every non-system account).
    #[serde(default)]
    pub remove_user_accounts: Vec<String>,
    /// user-account: keep these accounts.
    #[serde(default)]
    pub keep_user_accounts: Vec<String>,
    /// script: host shell commands run with the guest's root as working directory.
    #[serde(default)]
    pub scripts: Vec<String>,
}

/// One customize step: a mapping with exactly one key, the virt-customize flag name, and its
/// argument in virt-customize's syntax (`write: "/etc/motd:Hello"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum CustomizeStep {
    /// FILE:CONTENT
    Write(String),
    /// FILE:LINE
    AppendLine(String),
    /// LOCALPATH:REMOTEDIR (LOCALPATH relative to the recipe)
    CopyIn(String),
    /// LOCALFILE:DEST (LOCALFILE relative to the recipe)
    Upload(String),
    /// DIR
    Mkdir(String),
    /// PATH (globs allowed)
    Delete(String),
    /// PERMISSIONS:FILE, e.g. "0755:/usr/local/bin/tool"
    Chmod(String),
    /// TARGET:LINK[:LINK…]
    Link(String),
    /// FILE
    Touch(String),
    /// A shell command run inside the guest.
    RunCommand(String),
    /// A host script (relative to the recipe) run inside the guest.
    Run(String),
    /// Packages to install with the guest's package manager.
    Install(Vec<String>),
    /// Packages to remove.
    Uninstall(Vec<String>),
    /// password:PW | file:FILE | random | disabled | locked[:SELECTOR] (prefer file: or
    /// random: a recipe is not a place for clear-text passwords).
    RootPassword(String),
    /// USER:SELECTOR
    Password(String),
    /// USER:file:KEYFILE or USER:string:KEY
    SshInject(String),
    /// HOSTNAME
    Hostname(String),
    /// TIMEZONE, e.g. Europe/Paris
    Timezone(String),
    /// A shell command run once at first boot.
    FirstbootCommand(String),
    /// Relabel for SELinux (true).
    SelinuxRelabel(bool),
}

impl CustomizeStep {
    /// (virt-customize flag name, argument).
    pub fn name_and_arg(&self) -> (String, String) {
        let v = serde_json::to_value(self).unwrap_or_default();
        let (k, v) = v
            .as_object()
            .and_then(|o| o.iter().next())
            .map(|(k, v)| (k.clone(), v.clone()))
            .unwrap_or_default();
        let arg = match v {
            serde_json::Value::String(s) => s,
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(","),
            _ => String::new(),
        };
        (k, arg)
    }
}

/// An output: a format name, or a mapping with options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Output {
    Format(Format),
    Spec(OutputSpec),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    pub format: Format,
    /// vmdk: monolithicSparse (default) or streamOptimized (VMware, compressed);
    /// vpc: dynamic (default) or fixed (Azure).
    #[serde(default)]
    pub subformat: Option<Subformat>,
    /// qcow2 only: compress clusters with zlib or zstd.
    #[serde(default)]
    pub compress: Option<Compression>,
    /// qcow2 only: cluster size, a power of two from 512 to 2M (default 64K).
    #[serde(default)]
    pub cluster_size: Option<SizeSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Publish {
    /// The local catalog directory (the default publisher).
    #[serde(default)]
    pub local: Option<LocalPublish>,
    /// OpenStack Glance: upload (or import) the outputs after the build. A mapping (one
    /// target), or a list of them: several clouds or regions, uploaded at the same time.
    #[serde(default)]
    pub glance: Option<GlanceTargets>,
    /// With several Glance targets: when one fails, remove what this build published to the
    /// others too (default: keep what reached them; the failed ones are named).
    #[serde(default)]
    pub all_or_nothing: bool,
}

/// `publish.glance`: one target, or a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum GlanceTargets {
    One(Box<GlancePublish>),
    Many(Vec<GlancePublish>),
}

impl GlanceTargets {
    /// Each target with the JSON pointer of its settings.
    pub fn each(&self) -> Vec<(String, &GlancePublish)> {
        match self {
            GlanceTargets::One(g) => vec![("/publish/glance".to_string(), &**g)],
            GlanceTargets::Many(v) => v
                .iter()
                .enumerate()
                .map(|(i, g)| (format!("/publish/glance/{i}"), g))
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    Private,
    Shared,
    Public,
    Community,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Private => "private",
            Visibility::Shared => "shared",
            Visibility::Public => "public",
            Visibility::Community => "community",
        }
    }
}

/// Publishing to Glance. Authentication comes from clouds.yaml/secure.yaml or OS_* variables,
/// never from the recipe.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GlancePublish {
    /// Cloud in clouds.yaml (default: $OS_CLOUD, else the OS_* variables); may use
    /// `{{vars.X}}`.
    #[serde(default)]
    pub cloud: Option<String>,
    /// The cloud's region whose Glance gets the image (default: the cloud's `region_name`);
    /// may use `{{vars.X}}`.
    #[serde(default)]
    pub region: Option<String>,
    /// Image name template: `{{name}}`, `{{version}}`, `{{format}}`, `{{date}}` (UTC,
    /// YYYYMMDD), `{{vars.X}}` (default `{{name}}-{{version}}`).
    #[serde(default)]
    pub name: Option<String>,
    /// Outputs to publish (default: the first output); with several, the name must contain
    /// `{{format}}`.
    #[serde(default)]
    pub formats: Vec<Format>,
    /// Glance container_format (default bare).
    #[serde(default)]
    pub container_format: Option<String>,
    /// Default private (Glance's own default is shared); shared when `members` are given.
    #[serde(default)]
    pub visibility: Option<Visibility>,
    /// Protect the image from deletion (set once it is active and verified).
    #[serde(default)]
    pub protected: bool,
    /// MiB of RAM an instance needs.
    #[serde(default)]
    pub min_ram: u64,
    /// GiB of disk an instance needs (default: the virtual size, rounded up).
    #[serde(default)]
    pub min_disk: Option<u64>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Extra image properties (over the recipe's and the elements' `properties`).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Project ids to share the image with (they accept it with `kiln image accept`); may
    /// use `{{vars.X}}`, and entries that render empty are dropped.
    #[serde(default)]
    pub members: Vec<String>,
    /// upload (default), glance-direct, web-download or copy-image.
    #[serde(default)]
    pub method: crate::vocab::Method,
    /// web-download: where Glance fetches each output (a template like `name`).
    #[serde(default)]
    pub uri: Option<String>,
    /// Target stores (copy-image: the stores to copy into).
    #[serde(default)]
    pub stores: Vec<String>,
    /// Keep only the newest N images this recipe published (per format); protected images are
    /// never deleted.
    #[serde(default)]
    pub keep: Option<usize>,
    /// What makes images "this recipe's" for `keep` (the `kiln_recipe_id` property). Default:
    /// a digest of the recipe file's absolute path; set it when the same recipe is built from
    /// several checkouts (CI workspaces), e.g. `infra/debian-golden`.
    #[serde(default)]
    pub rotation_id: Option<String>,
    /// Seconds to follow an import before failing (default 3600).
    #[serde(default)]
    pub import_timeout: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalPublish {
    /// Catalog directory (relative to the working directory; `-o` overrides; default
    /// ./kiln-output).
    #[serde(default)]
    pub dir: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Templates {
    /// libvirt domain XML.
    #[serde(default)]
    pub domain: Option<String>,
    /// cloud-init user-data of the build VM.
    #[serde(default)]
    pub user_data: Option<String>,
    /// cloud-init meta-data of the build VM.
    #[serde(default)]
    pub meta_data: Option<String>,
    /// cloud-init network-config of the build VM.
    #[serde(default)]
    pub network_config: Option<String>,
}

/// `elements/<name>/element.yaml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ElementFile {
    /// One line shown by `kiln elements list`.
    pub description: String,
    /// Elements applied before this one.
    #[serde(default)]
    pub depends: Vec<String>,
    /// Variable defaults (the recipe and --var override them).
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// Packages the image needs: baked into a bootstrapped base disk on the host (fast), or
    /// installed by a provisioning step for image sources.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Provisioning steps (run before the recipe's own).
    #[serde(default)]
    pub provision: Vec<Step>,
    /// Sysprep operations (virt-sysprep syntax), applied before the recipe's.
    #[serde(default)]
    pub sysprep: Vec<String>,
    /// Customize steps (applied before the recipe's; host paths relative to the element).
    #[serde(default)]
    pub customize: Vec<CustomizeStep>,
    /// cloud-init settings (the recipe's override them).
    #[serde(default)]
    pub cloud_init: CloudInit,
    /// Image properties (the recipe's override them).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}
