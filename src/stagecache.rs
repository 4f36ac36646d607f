//! The stage cache: each stage that makes a disk or files has a key (a hash of the stage's
//! name and implementation version, every resolved input that can change its result, and the
//! key of the stage before); its result is stored under that key, immutable once committed
//! (written beside the store, renamed in). A build starts from the longest prefix of stages
//! whose results are there, so an unchanged rebuild boots no VM, and a failed build resumes
//! after its last finished stage.
//!
//! Disks are stored as qcow2 overlays whose backing file is the entry before (or the base
//! disk): entries depend on each other, and eviction never removes one another one needs.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A stage's cache key: 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Key(pub String);

impl Key {
    /// The first 16 digits, for messages.
    pub fn short(&self) -> &str {
        &self.0[..16.min(self.0.len())]
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The key of `stage` (implementation `version`) over `inputs`, after `prev`. Inputs are JSON
/// whose maps keep a fixed order (the plan's field order), so equal inputs give equal keys.
pub fn derive(stage: &str, version: u32, prev: Option<&Key>, inputs: &Value) -> Key {
    let canon = serde_json::json!({
        "kiln-stage-cache": 1,
        "stage": stage,
        "version": version,
        "prev": prev.map(|k| k.0.as_str()),
        "inputs": inputs,
    });
    let bytes = serde_json::to_vec(&canon).expect("JSON");
    Key(hex::encode(Sha256::digest(&bytes)))
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

/// What an entry records besides its files.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub stage: String,
    pub key: Key,
    /// The entry this one's disk is an overlay of (it must stay while this one does).
    pub depends_on: Option<Key>,
    /// Seconds since the epoch.
    pub created: u64,
    pub files: Vec<String>,
    /// Bytes on disk (allocated) of the entry's files.
    pub size: u64,
    /// What the stage reports when it is reused (manifest records, sizes).
    #[serde(default)]
    pub data: Value,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub dir: PathBuf,
    pub meta: Meta,
}

impl Entry {
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Seconds since it was committed.
    pub fn age_secs(&self) -> u64 {
        now().saturating_sub(self.meta.created)
    }

    /// When it was last used (the mtime of its `used` stamp).
    pub fn last_used(&self) -> std::time::SystemTime {
        std::fs::metadata(self.dir.join("used"))
            .and_then(|m| m.modified())
            .unwrap_or(std::time::UNIX_EPOCH)
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn allocated(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).map(|m| m.blocks() * 512).unwrap_or(0)
}

/// The store: `CACHE/stages/KEY/` with `meta.json`, the files and a `used` stamp.
#[derive(Debug, Clone)]
pub struct Store {
    pub root: PathBuf,
}

/// Holding it means this process builds the entry of that key; others wait.
pub struct KeyLock {
    _file: std::fs::File,
}

impl Store {
    pub fn new(cache_dir: &Path) -> Store {
        Store {
            root: cache_dir.join("stages"),
        }
    }

    pub fn dir(&self, key: &Key) -> PathBuf {
        self.root.join(&key.0)
    }

    /// The committed entry of `key`, if it is complete; marks it used.
    pub fn get(&self, key: &Key) -> Option<Entry> {
        let e = self.read(key)?;
        e.touch();
        Some(e)
    }

    /// Is `key` committed (without marking it used: for `kiln plan`)? The same test as `get`.
    pub fn has(&self, key: &Key) -> bool {
        self.read(key).is_some()
    }

    /// The entry of `key` if it is complete and what it builds on is there, unmarked.
    fn read(&self, key: &Key) -> Option<Entry> {
        let dir = self.dir(key);
        let meta: Meta =
            serde_json::from_slice(&std::fs::read(dir.join("meta.json")).ok()?).ok()?;
        if meta.key != *key || !meta.files.iter().all(|f| dir.join(f).is_file()) {
            return None;
        }
        if let Some(dep) = &meta.depends_on {
            // An overlay whose backing entry is gone cannot be read.
            if !self.dir(dep).join("meta.json").is_file() {
                return None;
            }
        }
        Some(Entry { dir, meta })
    }

    /// Lock `key` so that two builds needing it build it once: the second waits (saying so)
    /// and then finds it committed.
    pub fn lock(&self, key: &Key, stage: &str) -> std::io::Result<KeyLock> {
        use std::os::unix::io::AsRawFd;
        let locks = self.root.join(".locks");
        std::fs::create_dir_all(&locks)?;
        let f = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(locks.join(format!("{}.lock", key.0)))?;
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            tracing::info!(
                "stage {stage}: another build is making cache entry {}; waiting for it",
                key.short()
            );
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(KeyLock { _file: f })
    }

    /// Move `files` (path, name in the entry) into a new entry of `key`, atomically: they go
    /// into a directory beside the store, which is then renamed to the key. Files on another
    /// filesystem are copied.
    pub fn commit(
        &self,
        stage: &str,
        key: &Key,
        depends_on: Option<&Key>,
        files: &[(PathBuf, &str)],
        data: Value,
    ) -> std::io::Result<Entry> {
        self.commit_at(stage, key, depends_on, files, data, now())
    }

    /// `commit` with the time the result was made (a pulled entry keeps its age, which
    /// `cache.max_age` judges).
    pub fn commit_at(
        &self,
        stage: &str,
        key: &Key,
        depends_on: Option<&Key>,
        files: &[(PathBuf, &str)],
        data: Value,
        created: u64,
    ) -> std::io::Result<Entry> {
        std::fs::create_dir_all(&self.root)?;
        let tmp = self
            .root
            .join(format!(".tmp-{}-{}", key.short(), std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir(&tmp)?;
        let mut moved = Vec::new();
        let result = self.fill(
            &tmp,
            (stage, key, depends_on, created),
            files,
            data,
            &mut moved,
        );
        if let Err(e) = result {
            // Nothing is lost to a cache that cannot take it (full, read-only): the files go
            // back where the build had them.
            for (src, dst) in moved.iter().rev() {
                if std::fs::rename(dst, src).is_err() {
                    let _ = std::fs::copy(dst, src);
                }
            }
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        let dir = self.dir(key);
        match std::fs::rename(&tmp, &dir) {
            Ok(()) => {}
            // Committed meanwhile by another build (without the lock): keep theirs.
            Err(_) if dir.join("meta.json").is_file() => {
                let _ = std::fs::remove_dir_all(&tmp);
            }
            Err(e) => {
                for (src, dst) in moved.iter().rev() {
                    let _ = std::fs::rename(dst, src);
                }
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
        }
        self.get(key)
            .ok_or_else(|| std::io::Error::other(format!("cache entry {} unreadable", key.0)))
    }

    fn fill(
        &self,
        tmp: &Path,
        (stage, key, depends_on, created): (&str, &Key, Option<&Key>, u64),
        files: &[(PathBuf, &str)],
        data: Value,
        moved: &mut Vec<(PathBuf, PathBuf)>,
    ) -> std::io::Result<()> {
        crate::owner::Owner::current().write_into(tmp)?;
        let mut size = 0;
        for (src, name) in files {
            let dst = tmp.join(name);
            if std::fs::rename(src, &dst).is_err() {
                std::fs::copy(src, &dst)?;
                std::fs::remove_file(src)?;
            }
            moved.push((src.clone(), dst.clone()));
            size += allocated(&dst);
        }
        let meta = Meta {
            stage: stage.to_string(),
            key: key.clone(),
            depends_on: depends_on.cloned(),
            created,
            files: files.iter().map(|(_, n)| n.to_string()).collect(),
            size,
            data,
        };
        let mut f = std::fs::File::create(tmp.join("meta.json"))?;
        f.write_all(&serde_json::to_vec_pretty(&meta).expect("JSON"))?;
        f.sync_all()?;
        std::fs::File::create(tmp.join("used"))?;
        Ok(())
    }

    /// Every committed entry.
    pub fn list(&self) -> Vec<Entry> {
        let Ok(rd) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut v: Vec<Entry> = rd
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|e| {
                let meta: Meta =
                    serde_json::from_slice(&std::fs::read(e.path().join("meta.json")).ok()?)
                        .ok()?;
                Some(Entry {
                    dir: e.path(),
                    meta,
                })
            })
            .collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.last_used()));
        v
    }

    /// Remove `key`'s entry and every entry that depends on it.
    pub fn remove(&self, key: &Key) -> std::io::Result<Vec<Key>> {
        let all = self.list();
        let mut gone = vec![key.clone()];
        // Dependents, transitively.
        loop {
            let more: Vec<Key> = all
                .iter()
                .filter(|e| {
                    e.meta.depends_on.as_ref().is_some_and(|d| gone.contains(d))
                        && !gone.contains(&e.meta.key)
                })
                .map(|e| e.meta.key.clone())
                .collect();
            if more.is_empty() {
                break;
            }
            gone.extend(more);
        }
        for k in gone.iter().rev() {
            let dir = self.dir(k);
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
        }
        Ok(gone)
    }

    /// Evict least recently used entries until the store holds at most `max_bytes`; only
    /// entries nothing depends on are candidates, so a chain loses its newest links first.
    pub fn prune(&self, max_bytes: u64) -> std::io::Result<Vec<Entry>> {
        let mut all = self.list();
        let mut total: u64 = all.iter().map(|e| e.meta.size).sum();
        let mut removed = Vec::new();
        while total > max_bytes {
            let needed: std::collections::HashSet<Key> = all
                .iter()
                .filter_map(|e| e.meta.depends_on.clone())
                .collect();
            // Oldest use first among the leaves.
            let Some(i) = all
                .iter()
                .enumerate()
                .filter(|(_, e)| !needed.contains(&e.meta.key))
                .min_by_key(|(_, e)| e.last_used())
                .map(|(i, _)| i)
            else {
                break;
            };
            let e = all.remove(i);
            std::fs::remove_dir_all(&e.dir)?;
            total -= e.meta.size;
            removed.push(e);
        }
        Ok(removed)
    }
}

impl Entry {
    fn touch(&self) {
        let _ = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join("used"))
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
    }
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

/// The keys `kiln build` would use, stage by stage (`source`, `provision`, `cloud-init`,
/// `sysprep`, `convert`), from the same functions; empty where the chain is unknown before the
/// build (an image whose checksum list is read at fetch time and is not cached yet) or breaks
/// (installer sources, a random password).
pub fn planned(
    plan: &crate::plan::Plan,
    tunables: &crate::tunables::Tunables,
    cache_dir: &Path,
    remote: Option<&crate::remotecache::Remote>,
) -> std::collections::BTreeMap<&'static str, Planned> {
    use crate::plan::SourcePlan;
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
    let base = match &plan.source {
        SourcePlan::Bootstrap(b) => Some(crate::bootstrap::cached_disk(cache_dir, b)),
        SourcePlan::Image { path: Some(p), .. } => Some(p.clone()),
        SourcePlan::Image {
            checksum: Some(sum),
            ..
        } => Some(crate::fetch::cached_download(cache_dir, sum)),
        _ => None,
    };
    let Some(Ok(Some(mut chain))) = base.map(|b| {
        if matches!(plan.source, SourcePlan::Bootstrap(_)) || b.is_file() {
            base_key(plan, &b, cache_dir)
        } else {
            Ok(None)
        }
    }) else {
        return out;
    };
    out.insert(
        "source",
        Planned {
            key: chain.clone(),
            hit: false,
            remote: false,
        },
    );
    let Ok(k) = provision_key(plan, tunables, &chain) else {
        return out;
    };
    chain = k;
    out.insert("provision", planned(&chain));
    let Ok(Some(k)) = guestfs_key(plan, &chain) else {
        return out;
    };
    chain = k;
    let p = planned(&chain);
    out.insert("cloud-init", p.clone());
    out.insert("sysprep", p);
    let keys: Vec<Key> = plan
        .outputs
        .iter()
        .map(|o| output_key(&chain, o, tunables.vmdk_writer))
        .collect();
    if !keys.is_empty() {
        let found: Vec<(bool, bool)> = keys.iter().map(look).collect();
        out.insert(
            "convert",
            Planned {
                key: convert_key(&chain, &keys),
                hit: found.iter().all(|f| f.0),
                remote: found.iter().any(|f| f.1),
            },
        );
    }
    out
}

/// The store's bound: `KILN_CACHE_MAX_SIZE` (e.g. `50G`), default 20 GiB.
pub fn max_size(setting: Option<&str>) -> Result<u64, String> {
    match setting {
        None => Ok(20 << 30),
        Some(v) => crate::recipe::parse_size(&crate::recipe::model::SizeSpec::Text(v.into()), 1)
            .map_err(|e| format!("KILN_CACHE_MAX_SIZE={v}: {e}")),
    }
}

/// Implementation versions: bump one when its stage would make a different result from the
/// same inputs, and every entry of that stage (and after) is rebuilt.
pub const SOURCE_VERSION: u32 = 1;
pub const PROVISION_VERSION: u32 = 1;
pub const INSTALL_VERSION: u32 = 1;
/// 2: the inventory it reads (rpm databases, enabled services) is part of its result.
pub const GUESTFS_VERSION: u32 = 2;
pub const CONVERT_VERSION: u32 = 1;

/// The base disk's key: the bootstrap's cache key, a downloaded image's verified checksum (its
/// name in the download cache), else the SHA-256 of the file (remembered per inode, size and
/// mtime in `CACHE/digests`). Installer sources are not cached (None).
pub fn base_key(
    plan: &crate::plan::Plan,
    base: &Path,
    cache_dir: &Path,
) -> std::io::Result<Option<Key>> {
    use crate::plan::SourcePlan;
    Ok(Some(match &plan.source {
        SourcePlan::Bootstrap(b) => bootstrap_key(b),
        SourcePlan::Installer(_) => return Ok(None),
        SourcePlan::Image { .. } => match content_id(base, cache_dir)? {
            ContentId::Download(name) => download_key(&name),
            ContentId::Sha256(d) => derive(
                "source",
                SOURCE_VERSION,
                None,
                &serde_json::json!({ "sha256": d }),
            ),
        },
    }))
}

/// A bootstrapped base disk's key (known before it is built: the remote cache may have it).
pub fn bootstrap_key(b: &crate::plan::BootstrapPlan) -> Key {
    derive(
        "source",
        SOURCE_VERSION,
        None,
        &serde_json::json!({"bootstrap": b.cache_key()}),
    )
}

/// A downloaded image's key, from its name in the download cache (its checksum).
pub fn download_key(name: &str) -> Key {
    derive(
        "source",
        SOURCE_VERSION,
        None,
        &serde_json::json!({ "download": name }),
    )
}

/// Size and modification time of a file an entry shares with a catalog by a hard link: a
/// change in place shows as a different stamp.
pub fn file_stamp(p: &Path) -> Value {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(p) {
        Ok(m) => serde_json::json!([m.size(), m.mtime(), m.mtime_nsec()]),
        Err(_) => Value::Null,
    }
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

/// The install stage's key: the media's content (ISO, or kernel and initrd), the answer file
/// as rendered (with its hash: a digest in the key, never the hash itself), the kernel command
/// line and the disk size.
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
    let answers_digest = hex::encode(Sha256::digest(answers.as_bytes()));
    Ok(Some(derive(
        "install",
        INSTALL_VERSION,
        None,
        &serde_json::json!({
            "media": digests,
            "answers": answers_digest,
            "kind": format!("{:?}", inst.kind),
            "delivery": format!("{:?}", inst.delivery),
            "cmdline": inst.cmdline,
            "disk_bytes": plan.vm.disk_bytes,
        }),
    )))
}

/// What the provision stage's result depends on: the seed cloud-init reads (user-data with the
/// provisioning script and everything it writes, meta-data, network-config, rendered with a
/// fixed domain name), the disk size, whether the VM boots at all.
fn provision_inputs(
    plan: &crate::plan::Plan,
    tunables: &crate::tunables::Tunables,
) -> Result<Value, crate::templates::TemplateError> {
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
    let mut inputs = serde_json::json!({
        "booted": !plan.provision.is_empty(),
        "seed": seed,
        "disk_bytes": plan.vm.disk_bytes,
    });
    // apt in the guest and a boot through GRUB and cloud-init leave other bytes (logs, apt's
    // lists): their own keys. The defaults add nothing, so the keys they always had stay.
    if !tunables.host_packages {
        inputs["apt_in_guest"] = true.into();
    }
    if !tunables.direct_boot {
        inputs["firmware_boot"] = true.into();
    }
    Ok(inputs)
}

/// What the libguestfs stages' (cloud-init, customize, sysprep) result depends on; None when a
/// step makes something new every time (a random password), so the result is never reused.
fn guestfs_inputs(plan: &crate::plan::Plan) -> std::io::Result<Option<Value>> {
    use crate::customize::Customize;
    let mut steps = Vec::new();
    for c in &plan.sysprep_options.customize {
        steps.push(match c {
            Customize::Password { user, password } => match password.key_material() {
                Some(m) => serde_json::json!(["password", user, m]),
                None => return Ok(None),
            },
            Customize::CopyIn { local, dir } => {
                serde_json::json!(["copy-in", dir, tree_digest(local)?])
            }
            Customize::Upload { local, dest } => {
                serde_json::json!(["upload", dest, file_digest(local)?])
            }
            other => serde_json::json!(format!("{other:?}")),
        });
    }
    let o = &plan.sysprep_options;
    Ok(Some(serde_json::json!({
        "cloud_init": plan.cloud_init,
        "operations": plan.sysprep,
        "remove_user_accounts": o.remove_user_accounts,
        "keep_user_accounts": o.keep_user_accounts,
        "scripts": o.scripts,
        "customize": steps,
    })))
}

/// What one output depends on: its format and options (not its file name).
fn output_inputs(o: &crate::plan::OutputPlan, writer: crate::tunables::VmdkWriter) -> Value {
    let described = serde_json::json!(format!("{o:?}"));
    // qemu-img's streamOptimized writer makes other bytes than kiln's: its own key (the
    // default writer keeps the keys it always had).
    if writer == crate::tunables::VmdkWriter::QemuImg && crate::convert::is_stream_vmdk(o) {
        serde_json::json!([described, "vmdk-writer:qemu-img"])
    } else {
        described
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
pub fn guestfs_key(plan: &crate::plan::Plan, prev: &Key) -> std::io::Result<Option<Key>> {
    Ok(guestfs_inputs(plan)?.map(|inputs| derive("guestfs", GUESTFS_VERSION, Some(prev), &inputs)))
}

/// One output's key after `prev` (the libguestfs unit's key).
pub fn output_key(
    prev: &Key,
    o: &crate::plan::OutputPlan,
    writer: crate::tunables::VmdkWriter,
) -> Key {
    derive(
        "convert",
        CONVERT_VERSION,
        Some(prev),
        &output_inputs(o, writer),
    )
}

/// The convert stage's key: all of its outputs' keys.
pub fn convert_key(prev: &Key, outputs: &[Key]) -> Key {
    let all: Vec<&str> = outputs.iter().map(|k| k.0.as_str()).collect();
    derive(
        "convert",
        CONVERT_VERSION,
        Some(prev),
        &serde_json::json!(all),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_change_with_every_input_and_the_chain_and_nothing_else() {
        let a = derive("provision", 1, None, &json!({"steps": ["tree"]}));
        assert_eq!(a, derive("provision", 1, None, &json!({"steps": ["tree"]})));
        assert_eq!(a.0.len(), 64);
        let differ = [
            derive("provision", 1, None, &json!({"steps": ["htop"]})),
            derive("provision", 2, None, &json!({"steps": ["tree"]})),
            derive("guestfs", 1, None, &json!({"steps": ["tree"]})),
            derive(
                "provision",
                1,
                Some(&Key("0".repeat(64))),
                &json!({"steps": ["tree"]}),
            ),
        ];
        for d in differ {
            assert_ne!(a, d);
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let t = tempfile::tempdir().unwrap();
        let s = Store::new(t.path());
        (t, s)
    }

    fn file(dir: &Path, name: &str, len: usize) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, vec![7u8; len]).unwrap();
        p
    }

    #[test]
    fn committed_entries_come_back_and_half_written_ones_never_do() {
        let (t, s) = store();
        let k = derive("x", 1, None, &json!(1));
        assert!(s.get(&k).is_none());
        let f = file(t.path(), "disk", 100);
        let e = s
            .commit("x", &k, None, &[(f.clone(), "disk.qcow2")], json!({"a": 1}))
            .unwrap();
        assert!(!f.exists(), "moved in");
        assert_eq!(s.get(&k).unwrap().meta.data, json!({"a": 1}));
        assert_eq!(std::fs::read(e.file("disk.qcow2")).unwrap().len(), 100);
        // A temporary directory (a build killed while committing) is not an entry.
        std::fs::create_dir_all(s.root.join(".tmp-abc-1")).unwrap();
        assert_eq!(s.list().len(), 1);
        // An entry whose file went missing is a miss.
        std::fs::remove_file(e.file("disk.qcow2")).unwrap();
        assert!(s.get(&k).is_none());
    }

    #[test]
    fn removing_or_evicting_never_leaves_an_entry_without_its_backing_entry() {
        let (t, s) = store();
        let k1 = derive("a", 1, None, &json!(1));
        let k2 = derive("b", 1, Some(&k1), &json!(1));
        let k3 = derive("c", 1, None, &json!(3));
        for (k, dep, n) in [(&k1, None, 8192), (&k2, Some(&k1), 8192), (&k3, None, 8192)] {
            let f = file(t.path(), "f", n);
            s.commit("s", k, dep, &[(f, "f")], json!(null)).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // k1 is the oldest but k2 needs it: k2 goes first, then k1, and k3 (newest) stays.
        let total: u64 = s.list().iter().map(|e| e.meta.size).sum();
        let removed = s.prune(total - 1).unwrap();
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].meta.key, k2);
        let removed = s.prune(total / 3 + 1).unwrap();
        assert_eq!(
            removed.iter().map(|e| &e.meta.key).collect::<Vec<_>>(),
            vec![&k1]
        );
        assert!(s.get(&k3).is_some());
        // Removing an entry removes what depends on it.
        let k4 = derive("d", 1, Some(&k3), &json!(4));
        let f = file(t.path(), "f", 10);
        s.commit("s", &k4, Some(&k3), &[(f, "f")], json!(null))
            .unwrap();
        assert_eq!(s.remove(&k3).unwrap(), vec![k3.clone(), k4.clone()]);
        assert!(s.list().is_empty());
    }

    #[test]
    fn a_commit_that_fails_gives_the_files_back() {
        let (t, s) = store();
        let k = derive("x", 1, None, &json!(2));
        let a = file(t.path(), "a", 10);
        let b = file(t.path(), "b", 10);
        // The second file cannot go in (no such directory in the entry): the first comes back.
        let r = s.commit(
            "x",
            &k,
            None,
            &[(a.clone(), "disk"), (b.clone(), "no/such/dir")],
            json!(null),
        );
        assert!(r.is_err());
        assert!(a.is_file() && b.is_file(), "files lost");
        assert!(s.get(&k).is_none());
        assert!(s.list().is_empty());
    }

    #[test]
    fn tree_digests_see_content_modes_and_names() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("d/sub")).unwrap();
        std::fs::write(t.path().join("d/sub/a"), "1").unwrap();
        let one = tree_digest(&t.path().join("d")).unwrap();
        std::fs::write(t.path().join("d/sub/a"), "2").unwrap();
        assert_ne!(one, tree_digest(&t.path().join("d")).unwrap());
        std::fs::write(t.path().join("d/b"), "").unwrap();
        assert_eq!(tree_digest(&t.path().join("d")).unwrap().len(), 4);
    }
}
