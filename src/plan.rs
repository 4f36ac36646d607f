//! The validated build plan: a recipe with its elements merged, every size parsed, every file
//! read and every name checked. Stages consume only this; nothing here touches libvirt.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::vocab::{
    Accel, AnswerKind, Compression, DefaultUser, Delivery, Format, Method, Subformat,
};

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub recipe_path: PathBuf,
    pub recipe_sha256: String,
    /// Trusted (`--trust-recipe`, `KILN_TRUSTED_RECIPES`): host scripts, a domain template of
    /// its own and host files anywhere were allowed (README, "Hostile input").
    pub trusted: bool,
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    pub vars: BTreeMap<String, String>,
    pub elements: Vec<ResolvedElement>,
    pub source: SourcePlan,
    pub vm: VmPlan,
    pub provision: Vec<ProvisionStep>,
    pub cloud_init: CloudInitPlan,
    pub sysprep: Vec<&'static str>,
    /// Arguments of sysprep operations and the customize steps.
    pub sysprep_options: SysprepOptions,
    pub outputs: Vec<OutputPlan>,
    pub publish: PublishPlan,
    pub templates: TemplateSources,
    pub properties: BTreeMap<String, String>,
    /// `cache.max_age` in seconds: provisioned disks older than this are rebuilt.
    pub cache_max_age_secs: Option<u64>,
    /// The boot test's checks after the default ones (`test:`); None: no boot test
    /// (`test: false`, `--no-test`).
    pub test: Option<Vec<TestCheck>>,
    /// `cache.remote`: the remote stage cache's URL (s3://BUCKET[/PREFIX]).
    pub cache_remote: Option<String>,
}

impl Plan {
    /// `<name>-<version>`: the output directory's name.
    pub fn slug(&self) -> String {
        format!("{}-{}", self.name, self.version)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ResolvedElement {
    pub name: String,
    /// Where it was found: its directory, or `built-in`.
    pub origin: String,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Checksum {
    pub algorithm: String,
    pub hex: String,
}

impl std::fmt::Display for Checksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex)
    }
}

/// Where the build's first disk comes from. One variant per source kind; the kind's facts the
/// other stages ask about are the methods below, its work is `stages/source/<kind>.rs`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourcePlan {
    Image(ImagePlan),
    Bootstrap(BootstrapPlan),
    Installer(Box<InstallerPlan>),
}

impl SourcePlan {
    /// A disk someone else made (a cloud image): what is on it is only known by looking, so
    /// element packages are installed in the guest and cloud-init is looked for before the
    /// first boot. Bootstrapped and installed disks are made from the recipe's package list.
    pub fn made_elsewhere(&self) -> bool {
        matches!(self, SourcePlan::Image(_))
    }

    /// Whether the base disk is worth sharing through the remote cache: what another machine
    /// would otherwise bootstrap or download (a local file is the user's own).
    pub fn base_worth_sharing(&self) -> bool {
        match self {
            SourcePlan::Bootstrap(_) => true,
            SourcePlan::Image(i) => i.file.url.is_some(),
            SourcePlan::Installer(_) => false,
        }
    }

    /// What manifest.json records of the source (passwords in URLs redacted).
    pub fn manifest_record(&self) -> serde_json::Value {
        use crate::quote::redact_url_passwords as redact;
        match self {
            SourcePlan::Installer(i) => serde_json::json!({
                "installer": {
                    "kind": i.kind.as_str(),
                    "media": i.media,
                    "delivery": i.delivery,
                    "cmdline": i.cmdline,
                }
            }),
            SourcePlan::Bootstrap(b) => serde_json::json!({
                "bootstrap": {
                    "distro": b.distro, "suite": b.suite,
                    "mirror": redact(&b.mirror),
                    "packages": b.packages, "cache_key": b.cache_key(),
                }
            }),
            SourcePlan::Image(i) => serde_json::json!({
                "image": {
                    "url": i.file.url.as_deref().map(redact), "path": i.file.path,
                    "checksum": i.file.checksum.as_ref().map(|c| c.to_string()),
                }
            }),
        }
    }
}

/// A disk image to start from (a cloud image).
#[derive(Debug, Clone, Serialize)]
pub struct ImagePlan {
    #[serde(flatten)]
    pub file: FilePlan,
    /// The format the recipe says it is (checked against qemu-img's word).
    pub format: Option<String>,
}

/// A file to fetch (cached, verified) or use in place.
#[derive(Debug, Clone, Serialize)]
pub struct FilePlan {
    pub url: Option<String>,
    pub path: Option<PathBuf>,
    pub checksum: Option<Checksum>,
    /// `checksum: file:URL`: looked up in a SHA256SUMS / CHECKSUM file at fetch time.
    pub checksum_url: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Media {
    /// kernel and initrd are extracted from the ISO (the first of the candidate paths that
    /// exists); the ISO is attached as a cdrom during the install.
    Iso {
        iso: FilePlan,
        kernel_paths: Vec<String>,
        initrd_paths: Vec<String>,
    },
    Netboot {
        kernel: FilePlan,
        initrd: FilePlan,
    },
}

/// What the answer-file templates see (besides `vars`).
#[derive(Debug, Clone, Serialize)]
pub struct AnswerVars {
    pub hostname: String,
    pub user: String,
    pub full_name: String,
    /// A crypt(3) hash; kept out of plans and manifests all the same.
    #[serde(skip_serializing)]
    pub password_hash: Option<String>,
    pub timezone: String,
    pub locale: String,
    pub keyboard: String,
    pub disk_layout: String,
    pub packages: Vec<String>,
    pub mirror: String,
    /// The mirror split for debian-installer: `http`, host[:port], directory.
    pub mirror_protocol: String,
    pub mirror_host: String,
    pub mirror_directory: String,
    pub suite: String,
    pub proxy: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct InstallerPlan {
    pub media: Media,
    pub kind: AnswerKind,
    /// A recipe's own answer-file template (else the built-in one).
    pub template: Option<PathBuf>,
    pub delivery: Delivery,
    /// The whole kernel command line.
    pub cmdline: String,
    pub answers: AnswerVars,
    pub timeout_secs: u64,
    pub mirror_check: bool,
}

impl InstallerPlan {
    /// The answer file's name where the installer looks for it.
    pub fn answer_file_name(&self) -> &'static str {
        match self.kind {
            AnswerKind::Preseed => "preseed.cfg",
            AnswerKind::Kickstart => "ks.cfg",
            AnswerKind::Autoinstall => "user-data",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BootstrapPlan {
    pub distro: String,
    pub suite: String,
    pub mirror: String,
    pub security_mirror: Option<String>,
    pub packages: Vec<String>,
    pub size_bytes: u64,
    pub layout: crate::vocab::DiskLayout,
    /// Another architecture than x86_64 is bootstrapped through qemu-user-static.
    pub arch: crate::vocab::Arch,
}

impl BootstrapPlan {
    /// Content address of the base disk: same inputs, same cached disk.
    pub fn cache_key(&self) -> String {
        let mut h = Sha256::new();
        h.update(RECIPE_REVISION.as_bytes());
        for part in [&self.distro, &self.suite, &self.mirror] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        h.update(self.security_mirror.as_deref().unwrap_or("").as_bytes());
        h.update([0]);
        for p in &self.packages {
            h.update(p.as_bytes());
            h.update([0]);
        }
        h.update(self.size_bytes.to_le_bytes());
        h.update(serde_json::to_vec(&self.layout).unwrap_or_default());
        // Only another architecture's: x86_64 keys stay as they were.
        if self.arch != crate::vocab::Arch::X86_64 {
            h.update(self.arch.as_str().as_bytes());
        }
        hex::encode(h.finalize())[..16].to_string()
    }
}

/// The VM defaults a recipe's `vm:` and `kiln test` share.
pub const DEFAULT_URI: &str = "qemu:///system";
pub const DEFAULT_MEMORY_MIB: u64 = 2048;
pub const DEFAULT_VCPUS: u32 = 2;
/// `vm.timeout` (and `kiln test --timeout`) in seconds.
pub const DEFAULT_VM_TIMEOUT_SECS: u64 = 1800;
/// From a guest's start to its first sign of life (provisioning: the steps start; boot test:
/// sshd answers).
pub const DEFAULT_BOOT_TIMEOUT_SECS: u64 = 300;

#[derive(Debug, Clone, Serialize)]
pub struct VmPlan {
    /// The recipe's `arch` (default: the host's).
    pub arch: crate::vocab::Arch,
    pub cpu: crate::vocab::Cpu,
    pub firmware: crate::vocab::Firmware,
    /// `vm.tpm`: a TPM 2.0 emulated by swtpm in every VM.
    pub tpm: bool,
    pub memory_mib: u64,
    pub vcpus: u32,
    pub disk_bytes: Option<u64>,
    pub accel: Accel,
    pub timeout_secs: u64,
    /// From the guest's start to the steps' start; past it the guest is restarted once.
    pub boot_timeout_secs: u64,
    pub uri: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProvisionStep {
    Packages(Vec<String>),
    Files(Vec<ProvisionFile>),
    Run(Vec<String>),
    Users(Vec<ProvisionUser>),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProvisionFile {
    pub path: String,
    /// Where the content came from ("inline" or a host path).
    pub origin: String,
    #[serde(skip)]
    pub content: Vec<u8>,
    pub size: usize,
    pub mode: u32,
    pub owner: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProvisionUser {
    pub name: String,
    pub groups: Vec<String>,
    pub shell: String,
    pub sudo: bool,
    pub ssh_authorized_keys: Vec<String>,
    /// Never serialized: plans and manifests must not carry secrets.
    #[serde(skip)]
    pub password_hash: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CloudInitPlan {
    pub datasources: Vec<String>,
    pub default_user: Option<DefaultUser>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OutputPlan {
    pub format: Format,
    pub subformat: Option<Subformat>,
    pub compress: Option<Compression>,
    pub cluster_size: Option<u64>,
}

impl OutputPlan {
    /// The subformat qemu-img will write: the requested one, else the format's default.
    pub fn effective_subformat(&self) -> Option<Subformat> {
        self.subformat.or(self.format.default_subformat())
    }

    pub fn new(format: Format) -> Self {
        OutputPlan {
            format,
            subformat: None,
            compress: None,
            cluster_size: None,
        }
    }

    /// Problems with the option combination (each a sentence for a diagnostic).
    pub fn check(&self) -> Vec<String> {
        let mut errs = Vec::new();
        if let Some(sf) = self.subformat {
            if !sf.fits(self.format) {
                errs.push(format!(
                    "subformat {} does not apply to {} (vmdk: monolithicSparse, streamOptimized; vpc: dynamic, fixed)",
                    sf.as_str(),
                    self.format.as_str()
                ));
            }
        }
        if self.compress.is_some() && !self.format.facts().compressible {
            errs.push(format!(
                "`compress` applies to qcow2 only, not {} (a streamOptimized vmdk is compressed by design)",
                self.format.as_str()
            ));
        }
        if let Some(cs) = self.cluster_size {
            if !self.format.facts().compressible {
                errs.push("`cluster_size` applies to qcow2 only".into());
            } else if !cs.is_power_of_two() || !(512..=(2 << 20)).contains(&cs) {
                errs.push(format!(
                    "cluster size must be a power of two from 512 to 2M, not {cs}"
                ));
            }
        }
        errs
    }

    pub fn file_name(&self, slug: &str) -> String {
        format!("{slug}.{}", self.format.extension())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PublishPlan {
    pub local_dir: Option<PathBuf>,
    /// Every Glance target, in the recipe's order.
    pub glance: Vec<GlanceSettings>,
    /// A failed target removes what the others got in this build.
    pub all_or_nothing: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct TemplateSources {
    pub domain: Option<PathBuf>,
    pub user_data: Option<PathBuf>,
    pub meta_data: Option<PathBuf>,
    pub network_config: Option<PathBuf>,
}

/// Input that cannot be built although the recipe is valid, found only once it is at hand (a
/// downloaded image for another architecture): the build exits 2, like a recipe error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InputMismatch(pub String);

/// Bump when the way bootstrapped base disks are made changes: it is part of the cache key.
pub const RECIPE_REVISION: &str = "kiln-bootstrap-8";

/// Arguments of the operations that take them (virt-sysprep's flags of the same names) and
/// the customize steps of the `customize` operation.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SysprepOptions {
    /// `--remove-user-accounts`: only these (default: every non-system account).
    pub remove_user_accounts: Vec<String>,
    /// `--keep-user-accounts`: never these.
    pub keep_user_accounts: Vec<String>,
    /// `--script`: host commands run with the guest's root as working directory.
    pub scripts: Vec<String>,
    /// The `customize` operation's steps, in order.
    pub customize: Vec<crate::customize::Customize>,
}

/// Publishing settings, resolved from the recipe (kept in manifest.json so `kiln publish`
/// can repeat them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GlanceSettings {
    pub cloud: Option<String>,
    /// The region of the cloud (default: its `region_name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Rendered image name (one per format).
    pub names: std::collections::BTreeMap<String, String>,
    pub container_format: String,
    pub visibility: String,
    pub protected: bool,
    pub min_ram: u64,
    pub min_disk: Option<u64>,
    pub tags: Vec<String>,
    pub properties: std::collections::BTreeMap<String, String>,
    pub members: Vec<String>,
    pub method: Method,
    /// web-download sources, per format.
    #[serde(default)]
    pub uris: std::collections::BTreeMap<String, String>,
    pub stores: Vec<String>,
    pub keep: Option<usize>,
    /// Formats to publish (qemu-img names), in order.
    pub formats: Vec<String>,
    pub import_timeout: u64,
    /// The recipe's name (the `kiln_recipe` property).
    pub recipe: String,
    /// The `kiln_recipe_id` property rotation selects by (with the project and format).
    #[serde(default)]
    pub recipe_id: String,
}

/// What any bootable base needs besides its kernel (`Arch::kernel_package`, first) and boot
/// loader (`bootstrap::boot_packages`); elements
/// add the rest (cloud-init, ssh, ...).
pub const BASE_PACKAGES: &[&str] = &[
    "systemd-sysv",
    "udev",
    "dbus",
    "ifupdown",
    "isc-dhcp-client",
    "netbase",
    "iproute2",
    "e2fsprogs",
    "ca-certificates",
];

/// What `kiln plan` renders in place of a password hash.
pub const REDACTED_HASH: &str = "$6$REDACTED$password.hash.not.shown.by.kiln.plan";

impl Plan {
    /// This plan with every password hash replaced by [`REDACTED_HASH`]: what `kiln plan`
    /// renders its files from, so that they hold no secret.
    pub fn redacted(&self) -> Plan {
        let mut p = self.clone();
        for step in &mut p.provision {
            if let ProvisionStep::Users(users) = step {
                for u in users.iter_mut().filter(|u| u.password_hash.is_some()) {
                    u.password_hash = Some(REDACTED_HASH.into());
                }
            }
        }
        if let SourcePlan::Installer(i) = &mut p.source {
            if i.answers.password_hash.is_some() {
                i.answers.password_hash = Some(REDACTED_HASH.into());
            }
        }
        p
    }
}

/// One check of the boot test (`test:` in the recipe, `kiln test --check-*`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TestCheck {
    /// A shell command; it must exit 0 and, if `expect` is set, print it.
    Run { run: String, expect: Option<String> },
    /// A file that must contain `contains` (read as root).
    File { file: String, contains: String },
    /// A systemd unit that must be active (or not).
    Service { service: String, active: bool },
}
