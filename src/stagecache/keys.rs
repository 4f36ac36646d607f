//! Stage keys: each stage's key inputs as a typed struct (serialized as JSON with sorted
//! keys, then hashed with the stage's name, version and the key before it); one function per
//! stage, used by the stage and by `kiln plan` alike. A key names inputs; what binds an entry
//! to bytes is its `built_on` (see "bound to bytes" in `mod.rs`).

use super::*;
use crate::hosttools::HostTools;

/// The key of `stage` (implementation `version`) over its typed `inputs`, after `prev`. The
/// inputs become JSON whose maps are sorted by key, so equal inputs give equal keys.
pub fn derive(stage: &str, version: u32, prev: Option<&Key>, inputs: &impl Serialize) -> Key {
    let canon = serde_json::json!({
        // 2: entries are bound to the bytes they were made on (`built_on`).
        "kiln-stage-cache": 2,
        "stage": stage,
        "version": version,
        "prev": prev.map(|k| k.0.as_str()),
        "inputs": inputs,
    });
    let bytes = serde_json::to_vec(&canon).expect("JSON");
    Key(hex::encode(Sha256::digest(&bytes)))
}

/// The identity of a disk an entry holds: its file's SHA-256 (as made, before any rebase onto
/// another machine's path) over the identity of what it is an overlay of (None: it stands
/// alone).
pub fn disk_identity(built_on: Option<&Key>, file_sha256: &str) -> Key {
    derive("disk", 1, built_on, &file_sha256)
}

/// SHA-256 of a file's content.
pub fn file_digest(path: &Path) -> std::io::Result<String> {
    let mut h = Sha256::new();
    crate::hostfile::each_chunk(path, |b| h.update(b))?;
    Ok(hex::encode(h.finalize()))
}

/// Every file under `path` (a file or a directory, walked in name order) as (relative path,
/// mode, SHA-256): what a copy-in or upload of it puts into the image.
pub fn tree_digest(path: &Path) -> std::io::Result<Vec<(String, u32, String)>> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(path).sort_by_file_name() {
        let e = e.map_err(std::io::Error::other)?;
        let rel = e
            .path()
            .strip_prefix(path)
            .unwrap_or(e.path())
            .display()
            .to_string();
        let m = e.metadata().map_err(std::io::Error::other)?;
        let mode = m.permissions().mode();
        let digest = if e.file_type().is_file() {
            file_digest(e.path())?
        } else if e.file_type().is_symlink() {
            std::fs::read_link(e.path())?.display().to_string()
        } else {
            String::new()
        };
        out.push((rel, mode, digest));
    }
    Ok(out)
}

/// One stage's key as `kiln plan` shows it, and whether the store has it.
#[derive(Debug, Clone, Serialize)]
pub struct Planned {
    pub key: Key,
    pub hit: bool,
    /// The hit is on the remote cache only (the build pulls it).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub remote: bool,
}

/// The keys `kiln build` would use, stage by stage (`source` or `install`, `provision`,
/// `cloud-init`, `sysprep`, `convert`, `test`), from the same functions; none from where the
/// chain is unknown before the build (an image whose checksum list is read at fetch time and is
/// not cached yet, installer media not downloaded yet) or breaks (a random password).
pub fn planned(
    plan: &crate::plan::Plan,
    tunables: &crate::tunables::Tunables,
    cache_dir: &Path,
    remote: Option<&crate::remotecache::Remote>,
) -> std::collections::BTreeMap<&'static str, Planned> {
    let store = Store::new(cache_dir);
    // Where a key is: (hit, on the remote only).
    let look = |k: &Key| -> (bool, bool) {
        if store.has(k) {
            return (true, false);
        }
        let r = remote.is_some_and(|r| matches!(r.meta(&k.0), Ok(Some(_))));
        (r, r)
    };
    let planned = |k: &Key| {
        let (hit, remote) = look(k);
        Planned {
            key: k.clone(),
            hit,
            remote,
        }
    };
    let mut out = std::collections::BTreeMap::new();
    let Some((stage, mut chain, base_identity)) = planned_base(plan, cache_dir) else {
        return out;
    };
    // A hit is an entry made on the bytes of the one before (as the build's look-up checks):
    // what each found entry holds, from its meta here or on the remote.
    let meta_of = |k: &Key| -> Option<Meta> {
        if let Some(e) = store.peek(k) {
            return Some(e.meta);
        }
        let m = remote.and_then(|r| r.meta(&k.0).ok().flatten())?;
        serde_json::from_value::<Meta>(m).ok()
    };
    // An entry found is a hit only if it was made on `on`, the identity of the disk below.
    let linked = |k: &Key, on: Option<&Key>| -> (Planned, Option<Key>) {
        let mut p = planned(k);
        let meta = p.hit.then(|| meta_of(k)).flatten();
        if on.is_none() || meta.as_ref().and_then(|m| m.built_on.as_ref()) != on {
            p.hit = false;
            p.remote = false;
        }
        let content = meta.filter(|_| p.hit).and_then(|m| m.content);
        (p, content)
    };
    let (first, mut below) = match stage {
        // The base disk is no entry (the bootstrap and download caches keep it): no hit.
        "source" => (
            Planned {
                key: chain.clone(),
                hit: false,
                remote: false,
            },
            base_identity,
        ),
        _ => {
            // An installed disk is made on nothing: it stands alone.
            let mut p = planned(&chain);
            let meta = p.hit.then(|| meta_of(&chain)).flatten();
            p.hit = p.hit && meta.as_ref().is_some_and(|m| m.built_on.is_none());
            p.remote &= p.hit;
            let content = meta.filter(|_| p.hit).and_then(|m| m.content);
            (p, content)
        }
    };
    out.insert(stage, first);
    let Ok(k) = provision_key(plan, tunables, &chain) else {
        return out;
    };
    chain = k;
    let (p, content) = linked(&chain, below.as_ref());
    out.insert("provision", p);
    below = content;
    let tools = HostTools::here();
    let Ok(Some(k)) = guestfs_key(plan, &chain, tools) else {
        return out;
    };
    chain = k;
    let (p, content) = linked(&chain, below.as_ref());
    out.insert("cloud-init", p.clone());
    out.insert("sysprep", p);
    below = content;
    let keys: Vec<Key> = plan
        .outputs
        .iter()
        .map(|o| output_key(&chain, o, tunables.vmdk_writer, tools))
        .collect();
    if !keys.is_empty() {
        let found: Vec<Planned> = keys.iter().map(|k| linked(k, below.as_ref()).0).collect();
        out.insert(
            "convert",
            Planned {
                key: convert_key(&chain, &keys),
                hit: found.iter().all(|f| f.hit),
                remote: found.iter().any(|f| f.remote),
            },
        );
    }
    // The pass is for the libguestfs unit's disk (its identity, once it is made on these).
    if let Some(k) = test_key(plan, &chain) {
        let (mut p, _) = linked(&k, below.as_ref());
        // Boot-test passes are this machine's own: never pulled.
        p.hit &= !p.remote;
        p.remote = false;
        out.insert("test", p);
    }
    out
}

/// The stage the chain starts with, its key and (for a base disk that is here) its identity,
/// as far as they are known before the build: the base disk (`source`), or the installed disk
/// (`install`, when its media are here already). None when it is not known (a checksum read
/// from a list at fetch time, media not downloaded yet).
fn planned_base(
    plan: &crate::plan::Plan,
    cache_dir: &Path,
) -> Option<(&'static str, Key, Option<Key>)> {
    use crate::plan::SourcePlan;
    // As the source stage hands them on: a given path resolved, a download where it is cached.
    let local = |f: &crate::plan::FilePlan| -> Option<PathBuf> {
        let p = crate::fetch::planned_path(cache_dir, f.path.as_deref(), f.checksum.as_ref())?;
        let p = match f.path {
            Some(_) => std::fs::canonicalize(p).ok()?,
            None => p,
        };
        p.is_file().then_some(p)
    };
    Some(match &plan.source {
        SourcePlan::Installer(inst) => {
            let media: Vec<PathBuf> = match &inst.media {
                crate::plan::Media::Iso { iso, .. } => vec![local(iso)?],
                crate::plan::Media::Netboot { kernel, initrd } => {
                    vec![local(kernel)?, local(initrd)?]
                }
            };
            let refs: Vec<&Path> = media.iter().map(|p| p.as_path()).collect();
            ("install", install_key(plan, &refs, cache_dir).ok()??, None)
        }
        SourcePlan::Bootstrap(b) => {
            let disk = crate::bootstrap::cached_disk(cache_dir, b);
            let identity = disk
                .is_file()
                .then(|| base_identity(plan, &disk, cache_dir).ok().flatten())
                .flatten();
            ("source", bootstrap_key(b), identity)
        }
        SourcePlan::Image(i) => {
            let file = crate::fetch::planned_path(
                cache_dir,
                i.file.path.as_deref(),
                i.file.checksum.as_ref(),
            )?;
            if !file.is_file() {
                return None;
            }
            let key = base_key(plan, &file, cache_dir).ok()??;
            ("source", key.clone(), Some(key))
        }
    })
}

/// Implementation versions: bump one when its stage would make a different result from the
/// same inputs, and every entry of that stage (and after) is rebuilt.
pub const SOURCE_VERSION: u32 = 1;
pub const PROVISION_VERSION: u32 = 1;
pub const INSTALL_VERSION: u32 = 1;

/// 2: the inventory it reads (rpm databases, enabled services) is part of its result.
pub const GUESTFS_VERSION: u32 = 2;
pub const CONVERT_VERSION: u32 = 1;
/// Bump when the test would judge the same image differently.
/// 2: it boots the build disk after the libguestfs stage, not an output.
pub const TEST_VERSION: u32 = 2;

/// The base disk's key: the bootstrap's cache key, a downloaded image's verified checksum (its
/// name in the download cache), else the SHA-256 of the file (remembered per inode, size and
/// mtime in `CACHE/digests`). Installer sources have none: their chain starts at `install`.
pub fn base_key(
    plan: &crate::plan::Plan,
    base: &Path,
    cache_dir: &Path,
) -> std::io::Result<Option<Key>> {
    use crate::plan::SourcePlan;
    Ok(Some(match &plan.source {
        SourcePlan::Bootstrap(b) => bootstrap_key(b),
        SourcePlan::Installer(_) => return Ok(None),
        SourcePlan::Image(_) => file_identity(base, cache_dir)?,
    }))
}

/// The base disk's identity (its bytes), which what is made on it records: the key itself
/// where that names the content (a download's checksum, a file's SHA-256), a bootstrapped
/// disk's SHA-256 (no two bootstraps are the same bytes, and its key names only inputs).
pub fn base_identity(
    plan: &crate::plan::Plan,
    base: &Path,
    cache_dir: &Path,
) -> std::io::Result<Option<Key>> {
    match &plan.source {
        crate::plan::SourcePlan::Bootstrap(_) => Ok(Some(file_identity(base, cache_dir)?)),
        _ => base_key(plan, base, cache_dir),
    }
}

fn file_identity(path: &Path, cache_dir: &Path) -> std::io::Result<Key> {
    Ok(match content_id(path, cache_dir)? {
        ContentId::Download(name) => download_key(&name),
        ContentId::Sha256(d) => source_key(SourceInputs::Sha256(d)),
    })
}

/// What a base disk is: a bootstrap's own cache key, a verified download's name (its
/// checksum), or a file's SHA-256.
#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceInputs {
    Bootstrap(String),
    Download(String),
    Sha256(String),
}

fn source_key(inputs: SourceInputs) -> Key {
    derive("source", SOURCE_VERSION, None, &inputs)
}

/// A bootstrapped base disk's key (known before it is built: the remote cache may have it).
pub fn bootstrap_key(b: &crate::plan::BootstrapPlan) -> Key {
    source_key(SourceInputs::Bootstrap(b.cache_key()))
}

/// A downloaded image's key, from its name in the download cache (its checksum).
pub fn download_key(name: &str) -> Key {
    source_key(SourceInputs::Download(name.to_string()))
}

/// What identifies a file's content for a key.
enum ContentId {
    /// A verified download: its name in the cache is its checksum.
    Download(String),
    /// Anything else: its SHA-256 (remembered).
    Sha256(String),
}

fn content_id(path: &Path, cache_dir: &Path) -> std::io::Result<ContentId> {
    Ok(
        match path.strip_prefix(crate::fetch::downloads_dir(cache_dir)) {
            Ok(name) => ContentId::Download(name.display().to_string()),
            Err(_) => ContentId::Sha256(remembered_digest(path, cache_dir)?),
        },
    )
}

fn remembered_digest(path: &Path, cache_dir: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    let id = format!(
        "{}-{}-{}-{}.{}",
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec()
    );
    let memo = cache_dir.join("digests").join(id);
    if let Ok(d) = std::fs::read_to_string(&memo) {
        if d.len() == 64 {
            return Ok(d);
        }
    }
    tracing::info!("hashing {} for the stage cache", path.display());
    let d = file_digest(path)?;
    std::fs::create_dir_all(memo.parent().expect("parent"))?;
    std::fs::write(&memo, &d)?;
    Ok(d)
}

/// What an installed disk depends on: the media's content (ISO, or kernel and initrd), the
/// answer file as rendered (a digest: never a password hash itself), the answer kind and its
/// delivery, the kernel command line and the disk size.
#[derive(Serialize)]
pub struct InstallInputs<'a> {
    pub media: Vec<String>,
    pub answers: String,
    pub kind: crate::vocab::AnswerKind,
    pub delivery: crate::vocab::Delivery,
    pub cmdline: &'a str,
    pub disk_bytes: Option<u64>,
}

/// The install stage's key.
pub fn install_key(
    plan: &crate::plan::Plan,
    media: &[&Path],
    cache_dir: &Path,
) -> Result<Option<Key>, String> {
    let crate::plan::SourcePlan::Installer(inst) = &plan.source else {
        return Ok(None);
    };
    let mut digests = Vec::new();
    for m in media {
        digests.push(
            match content_id(m, cache_dir).map_err(|e| format!("{}: {e}", m.display()))? {
                ContentId::Download(name) | ContentId::Sha256(name) => name,
            },
        );
    }
    let answers = crate::templates::render_answers(plan)
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let inputs = InstallInputs {
        media: digests,
        answers: hex::encode(Sha256::digest(answers.as_bytes())),
        kind: inst.kind,
        delivery: inst.delivery,
        cmdline: &inst.cmdline,
        disk_bytes: plan.vm.disk_bytes,
    };
    Ok(Some(derive("install", INSTALL_VERSION, None, &inputs)))
}

/// What the provision stage's result depends on: the seed cloud-init reads (user-data with the
/// provisioning script and everything it writes, meta-data, network-config, rendered with a
/// fixed domain name), the disk size, the way the steps are run (`path`: host or guest apt,
/// direct or firmware boot, as the settings ask for it; an entry made another way, such as a
/// fallback to the guest's apt, is not reused), and the host's apt when it resolves packages.
#[derive(Serialize)]
pub struct ProvisionInputs {
    pub seed: Vec<String>,
    pub disk_bytes: Option<u64>,
    pub path: crate::vocab::ProvisionPath,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_apt: Option<String>,
    /// The build VM's firmware: only when not BIOS (keys of BIOS recipes stay as they were).
    #[serde(skip_serializing_if = "crate::vocab::Firmware::is_bios")]
    pub firmware: crate::vocab::Firmware,
    /// Only with a TPM (as `firmware`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tpm: bool,
    /// The build VM's architecture: only when not x86_64 (as `firmware`).
    #[serde(skip_serializing_if = "crate::vocab::Arch::is_x86_64")]
    pub arch: crate::vocab::Arch,
}

/// The way the settings ask the steps to be run (the build may still fall back to the guest's
/// apt or a firmware boot where the base does not allow the other).
pub fn intended_path(
    plan: &crate::plan::Plan,
    tunables: &crate::tunables::Tunables,
) -> crate::vocab::ProvisionPath {
    use crate::vocab::{BootPath, PackagePath};
    let (steps, _) = crate::seed::leading_packages(&plan.provision);
    crate::vocab::ProvisionPath {
        packages: match (steps, tunables.host_packages) {
            (0, _) => PackagePath::None,
            (_, true) => PackagePath::Host,
            (_, false) => PackagePath::Guest,
        },
        boot: match (plan.provision.is_empty(), tunables.direct_boot) {
            (true, _) => BootPath::None,
            (false, true) => BootPath::Direct,
            (false, false) => BootPath::Firmware,
        },
    }
}

fn provision_inputs(
    plan: &crate::plan::Plan,
    tunables: &crate::tunables::Tunables,
) -> Result<ProvisionInputs, crate::templates::TemplateError> {
    use crate::templates::Kind;
    let tctx = crate::seed::TemplateContext::new(
        plan,
        "kiln-cache-key",
        crate::vocab::Engine::Tcg,
        Path::new("/kiln"),
    );
    let mut seed = Vec::new();
    for kind in [Kind::UserData, Kind::MetaData, Kind::NetworkConfig] {
        seed.push(crate::templates::render(plan, kind, &tctx)?);
    }
    let path = intended_path(plan, tunables);
    Ok(ProvisionInputs {
        seed,
        disk_bytes: plan.vm.disk_bytes,
        path,
        host_apt: (path.packages == crate::vocab::PackagePath::Host)
            .then(crate::hosttools::apt)
            .flatten()
            .map(str::to_string),
        firmware: plan.vm.firmware,
        tpm: plan.vm.tpm,
        arch: plan.vm.arch,
    })
}

/// What the libguestfs stages' (cloud-init, customize, sysprep) result depends on, the
/// version of libguestfs (its appliance writes the changes) included.
#[derive(Serialize)]
pub struct GuestfsInputs<'a> {
    pub libguestfs: &'a str,
    pub cloud_init: &'a crate::plan::CloudInitPlan,
    pub operations: &'a [&'static str],
    pub remove_user_accounts: &'a [String],
    pub keep_user_accounts: &'a [String],
    pub scripts: &'a [String],
    pub customize: Vec<StepInputs<'a>>,
}

/// A customize step as its result depends on it: files by content, a password by the key
/// material (a hash's digest, never a secret), scripts by digest.
#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepInputs<'a> {
    Write {
        path: &'a str,
        content: &'a str,
    },
    AppendLine {
        path: &'a str,
        line: &'a str,
    },
    CopyIn {
        dir: &'a str,
        tree: Vec<(String, u32, String)>,
    },
    Upload {
        dest: &'a str,
        sha256: String,
    },
    Mkdir(&'a str),
    Delete(&'a str),
    Chmod {
        mode: u32,
        path: &'a str,
    },
    Link {
        target: &'a str,
        links: &'a [String],
    },
    Touch(&'a str),
    RunCommand(&'a str),
    Run {
        sha256: String,
    },
    Install(&'a [String]),
    Uninstall(&'a [String]),
    Password {
        user: &'a str,
        material: String,
    },
    SshInject {
        user: &'a str,
        key: &'a str,
    },
    Hostname(&'a str),
    Timezone(&'a str),
    FirstbootCommand(&'a str),
    SelinuxRelabel,
}

/// None when a step makes something new every time (a random password): never reused.
fn step_inputs(c: &crate::customize::Customize) -> std::io::Result<Option<StepInputs<'_>>> {
    use crate::customize::Customize as C;
    Ok(Some(match c {
        C::Write { path, content } => StepInputs::Write { path, content },
        C::AppendLine { path, line } => StepInputs::AppendLine { path, line },
        C::CopyIn { local, dir } => StepInputs::CopyIn {
            dir,
            tree: tree_digest(local)?,
        },
        C::Upload { local, dest } => StepInputs::Upload {
            dest,
            sha256: file_digest(local)?,
        },
        C::Mkdir(d) => StepInputs::Mkdir(d),
        C::Delete(p) => StepInputs::Delete(p),
        C::Chmod { mode, path } => StepInputs::Chmod { mode: *mode, path },
        C::Link { target, links } => StepInputs::Link { target, links },
        C::Touch(p) => StepInputs::Touch(p),
        C::RunCommand(c) => StepInputs::RunCommand(c),
        C::Run { content, .. } => StepInputs::Run {
            sha256: hex::encode(Sha256::digest(content)),
        },
        C::Install(p) => StepInputs::Install(p),
        C::Uninstall(p) => StepInputs::Uninstall(p),
        C::Password { user, password } => match password.key_material() {
            Some(material) => StepInputs::Password { user, material },
            None => return Ok(None),
        },
        C::SshInject { user, key } => StepInputs::SshInject { user, key },
        C::Hostname(h) => StepInputs::Hostname(h),
        C::Timezone(t) => StepInputs::Timezone(t),
        C::FirstbootCommand(c) => StepInputs::FirstbootCommand(c),
        C::SelinuxRelabel => StepInputs::SelinuxRelabel,
    }))
}

fn guestfs_inputs<'a>(
    plan: &'a crate::plan::Plan,
    tools: &'a HostTools,
) -> std::io::Result<Option<GuestfsInputs<'a>>> {
    let o = &plan.sysprep_options;
    let mut customize = Vec::new();
    for c in &o.customize {
        match step_inputs(c)? {
            Some(s) => customize.push(s),
            None => return Ok(None),
        }
    }
    Ok(Some(GuestfsInputs {
        libguestfs: &tools.libguestfs,
        cloud_init: &plan.cloud_init,
        operations: &plan.sysprep,
        remove_user_accounts: &o.remove_user_accounts,
        keep_user_accounts: &o.keep_user_accounts,
        scripts: &o.scripts,
        customize,
    }))
}

/// What one output depends on: its format and options (not its file name), and the writer
/// when that is not kiln's own (qemu-img's streamOptimized vmdk has other bytes) with its
/// version when qemu-img writes it.
#[derive(Serialize)]
pub struct OutputInputs<'a> {
    #[serde(flatten)]
    pub output: &'a crate::plan::OutputPlan,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vmdk_writer: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qemu_img: Option<&'a str>,
}

fn output_inputs<'a>(
    o: &'a crate::plan::OutputPlan,
    writer: crate::tunables::VmdkWriter,
    tools: &'a HostTools,
) -> OutputInputs<'a> {
    let stream_vmdk = crate::convert::is_stream_vmdk(o);
    let qemu_img = writer == crate::tunables::VmdkWriter::QemuImg || !stream_vmdk;
    OutputInputs {
        output: o,
        vmdk_writer: (qemu_img && stream_vmdk).then_some("qemu-img"),
        qemu_img: qemu_img.then_some(tools.qemu_img.as_str()),
    }
}

// One function per stage key, used by the stages and by `kiln plan` alike: the key plan shows
// is the key build uses.

/// The provision stage's key after `prev` (the base disk's key).
pub fn provision_key(
    plan: &crate::plan::Plan,
    tunables: &crate::tunables::Tunables,
    prev: &Key,
) -> Result<Key, crate::templates::TemplateError> {
    Ok(derive(
        "provision",
        PROVISION_VERSION,
        Some(prev),
        &provision_inputs(plan, tunables)?,
    ))
}

/// The libguestfs unit's key (cloud-init and sysprep) after `prev`; None when it is not
/// cacheable (a random password).
pub fn guestfs_key(
    plan: &crate::plan::Plan,
    prev: &Key,
    tools: &HostTools,
) -> std::io::Result<Option<Key>> {
    Ok(guestfs_inputs(plan, tools)?.map(|i| derive("guestfs", GUESTFS_VERSION, Some(prev), &i)))
}

/// One output's key after `prev` (the libguestfs unit's key).
pub fn output_key(
    prev: &Key,
    o: &crate::plan::OutputPlan,
    writer: crate::tunables::VmdkWriter,
    tools: &HostTools,
) -> Key {
    derive(
        "convert",
        CONVERT_VERSION,
        Some(prev),
        &output_inputs(o, writer, tools),
    )
}

/// The convert stage's key: all of its outputs' keys.
pub fn convert_key(prev: &Key, outputs: &[Key]) -> Key {
    derive("convert", CONVERT_VERSION, Some(prev), &outputs)
}

/// What a boot test's verdict depends on besides the booted output (its key's `prev`): which
/// output is booted, the checks and the VM's size.
#[derive(Serialize)]
pub struct TestInputs<'a> {
    pub checks: &'a [crate::plan::TestCheck],
    pub memory_mib: u64,
    pub vcpus: u32,
    /// Only when the recipe names one (keys of recipes without `vm.cpu` stay as they were).
    #[serde(skip_serializing_if = "crate::vocab::Cpu::is_auto")]
    pub cpu: crate::vocab::Cpu,
    /// The firmware the test boots with: only when not BIOS (as `cpu`).
    #[serde(skip_serializing_if = "crate::vocab::Firmware::is_bios")]
    pub firmware: crate::vocab::Firmware,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tpm: bool,
    /// Only when not x86_64 (as `firmware`).
    #[serde(skip_serializing_if = "crate::vocab::Arch::is_x86_64")]
    pub arch: crate::vocab::Arch,
}

/// The boot test's key after `booted` (the libguestfs unit's key: the build disk the test
/// boots); its entry is bound to that disk's bytes (its identity) like every entry to what it
/// was made on. None with `test: false` or without an output to publish.
pub fn test_key(plan: &crate::plan::Plan, booted: &Key) -> Option<Key> {
    let checks = plan.test.as_deref()?;
    if plan.outputs.is_empty() {
        return None;
    }
    let inputs = TestInputs {
        checks,
        memory_mib: plan.vm.memory_mib,
        vcpus: plan.vm.vcpus,
        cpu: plan.vm.cpu,
        firmware: plan.vm.firmware,
        tpm: plan.vm.tpm,
        arch: plan.vm.arch,
    };
    Some(derive("test", TEST_VERSION, Some(booted), &inputs))
}
