//! The stage cache: each stage that makes a disk or files has a key (a hash of the stage's
//! name and implementation version, every resolved input that can change its result, and the
//! key of the stage before); its result is stored under that key, immutable once committed
//! (written beside the store, renamed in). A build starts from the longest prefix of stages
//! whose results are there, so an unchanged rebuild boots no VM, and a failed build resumes
//! after its last finished stage.
//!
//! Disks are stored as qcow2 overlays whose backing file is the entry before (or the base
//! disk): entries depend on each other, and eviction never removes one another one needs.
//!
//! A chain is bound to bytes, not to names: neither a bootstrap nor provisioning makes the
//! same bytes twice, so each entry that holds a disk records the identity of that disk
//! (`content`: its file's digest over the identity of what it is an overlay of, `built_on`),
//! and the next stage's key is derived from that identity, not from the entry's key. An
//! overlay is therefore only ever found over the exact bytes it was made on; a re-made entry
//! (`--refresh`, `cache.max_age`) gives everything above it new keys.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

mod keys;

pub use keys::*;

/// A stage's cache key: 64 lowercase hex digits. A key read from a file (a local or remote
/// `meta.json`, another user's entry) is checked on the way in: it names directories and lock
/// files, so anything else (`/etc`, `../x`) would make kiln write or delete outside the cache.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct Key(pub String);

impl Key {
    /// `s` if it is a key: 64 lowercase hex digits.
    pub fn parse(s: &str) -> Result<Key, String> {
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Key(s.to_string()))
        } else {
            Err(format!(
                "not a cache key (64 lowercase hex digits): {}",
                crate::quote::terminal(&s.chars().take(80).collect::<String>())
            ))
        }
    }

    /// The first 16 digits, for messages.
    pub fn short(&self) -> &str {
        self.0.get(..16).unwrap_or(&self.0)
    }
}

impl TryFrom<String> for Key {
    type Error = String;
    fn try_from(s: String) -> Result<Key, String> {
        Key::parse(&s)
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an entry records besides its files.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub stage: String,
    pub key: Key,
    /// The entry this one's disk is an overlay of (it must stay while this one does).
    pub depends_on: Option<Key>,
    /// The identity of the disk this one was made on (the base disk's, or the `content` of
    /// the entry before): its key was derived from it.
    #[serde(default)]
    pub built_on: Option<Key>,
    /// The identity of the disk this entry holds (for a stage whose disk the next one builds
    /// on): the digest of its file as committed, over `built_on`.
    #[serde(default)]
    pub content: Option<Key>,
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

/// Seconds since the epoch.
pub fn now() -> u64 {
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

/// What an entry is linked to: the entry it needs (its disk's backing file), the identity of
/// the disk it was made on, and the identity of the disk it holds.
#[derive(Debug, Clone, Default)]
pub struct Links {
    pub depends_on: Option<Key>,
    pub built_on: Option<Key>,
    pub content: Option<Key>,
}

/// Holding it means this process builds the entry of that key; others wait.
pub struct KeyLock {
    _file: std::fs::File,
}

/// Holding it means a build uses the entry (its disk backs the build's overlay, its output is
/// linked into the staging directory): `prune` leaves it alone until it is dropped.
#[derive(Debug)]
pub struct UseLock {
    _file: std::fs::File,
}

/// `.locks/KEY.SUFFIX` in the store: in a directory that is one (not a symlink), a regular
/// file (a symlink put there by another user of a shared cache is refused, not followed).
fn lock_file(root: &Path, key: &Key, suffix: &str) -> std::io::Result<std::fs::File> {
    let locks = root.join(".locks");
    crate::hostfile::real_dir(root)?;
    crate::hostfile::real_dir(&locks)?;
    crate::hostfile::open_shared(&locks.join(format!("{}.{suffix}", key.0)))
}

/// The most a meta.json may be: it lists files and a stage's small result, never a disk.
const META_MAX: u64 = 16 << 20;

/// The entry in `dir`, if its meta.json reads as one: `dir` a directory (not a symlink),
/// meta.json a regular file of bounded size, its keys keys and its files plain names (a
/// meta.json written by another user of a shared cache must not name `../../etc/shadow`).
fn read_meta(dir: &Path) -> Option<Meta> {
    if !std::fs::symlink_metadata(dir).ok()?.is_dir() {
        return None;
    }
    let raw = crate::hostfile::read_untrusted(&dir.join("meta.json"), META_MAX).ok()?;
    let meta: Meta = serde_json::from_slice(&raw).ok()?;
    meta.files.iter().all(|f| plain_name(f)).then_some(meta)
}

/// A file name without directories in it (an entry's files are `dir.join(name)`).
pub fn plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
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

    /// The committed entry of `key`, without marking it used (for `kiln plan`).
    pub fn peek(&self, key: &Key) -> Option<Entry> {
        self.read(key)
    }

    /// The entry of `key` if it is complete and what it builds on is there, unmarked.
    fn read(&self, key: &Key) -> Option<Entry> {
        let dir = self.dir(key);
        let meta = read_meta(&dir)?;
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

    /// Mark `key` as used by this build until the lock is dropped (a shared lock: any number
    /// of builds may use an entry at once).
    pub fn hold(&self, key: &Key) -> std::io::Result<UseLock> {
        use std::os::unix::io::AsRawFd;
        let f = lock_file(&self.root, key, "use")?;
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(UseLock { _file: f })
    }

    /// An exclusive hold on `key` if no build uses it now (for eviction), else None.
    fn unused(&self, key: &Key) -> Option<std::fs::File> {
        use std::os::unix::io::AsRawFd;
        let f = lock_file(&self.root, key, "use").ok()?;
        (unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0).then_some(f)
    }

    /// Lock `key` so that two builds needing it build it once: the second waits (saying so)
    /// and then finds it committed.
    pub fn lock(&self, key: &Key, stage: &str) -> std::io::Result<KeyLock> {
        use std::os::unix::io::AsRawFd;
        let f = lock_file(&self.root, key, "lock")?;
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
        let links = Links {
            depends_on: depends_on.cloned(),
            ..Links::default()
        };
        self.commit_at(stage, key, &links, files, data, now())
    }

    /// `commit` with the entry's links to what it was made on, and the time the result was
    /// made (a pulled entry keeps its age, which `cache.max_age` judges).
    pub fn commit_at(
        &self,
        stage: &str,
        key: &Key,
        links: &Links,
        files: &[(PathBuf, &str)],
        data: Value,
        created: u64,
    ) -> std::io::Result<Entry> {
        crate::hostfile::real_dir(&self.root)?;
        let tmp = self
            .root
            .join(format!(".tmp-{}-{}", key.short(), std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir(&tmp)?;
        let mut moved = Vec::new();
        let result = self.fill(&tmp, (stage, key, links, created), files, data, &mut moved);
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
        (stage, key, links, created): (&str, &Key, &Links, u64),
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
            depends_on: links.depends_on.clone(),
            built_on: links.built_on.clone(),
            content: links.content.clone(),
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
                let meta = read_meta(&e.path())?;
                // An entry is the directory of its key (one that says otherwise is not one).
                (e.file_name().to_str() == Some(meta.key.0.as_str())).then(|| Entry {
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
    /// An entry a running build holds (`hold`) is never evicted, nor what it builds on.
    pub fn prune(&self, max_bytes: u64) -> std::io::Result<Vec<Entry>> {
        let mut all = self.list();
        // Sizes are another user's claims: added without wrapping.
        let mut total: u64 = all.iter().fold(0u64, |t, e| t.saturating_add(e.meta.size));
        let mut removed = Vec::new();
        let mut in_use: std::collections::HashSet<Key> = std::collections::HashSet::new();
        while total > max_bytes {
            let needed: std::collections::HashSet<Key> = all
                .iter()
                .filter_map(|e| e.meta.depends_on.clone())
                .collect();
            // Oldest use first among the leaves no build holds.
            let Some(i) = all
                .iter()
                .enumerate()
                .filter(|(_, e)| !needed.contains(&e.meta.key) && !in_use.contains(&e.meta.key))
                .min_by_key(|(_, e)| e.last_used())
                .map(|(i, _)| i)
            else {
                break;
            };
            let Some(_exclusive) = self.unused(&all[i].meta.key) else {
                // In use: it stays, and so does everything it builds on.
                // (A `depends_on` cycle ends where it comes round.)
                let mut k = Some(all[i].meta.key.clone());
                while let Some(key) = k.filter(|k| !in_use.contains(k)) {
                    k = all
                        .iter()
                        .find(|e| e.meta.key == key)
                        .and_then(|e| e.meta.depends_on.clone());
                    in_use.insert(key);
                }
                continue;
            };
            let e = all.remove(i);
            std::fs::remove_dir_all(&e.dir)?;
            total = total.saturating_sub(e.meta.size);
            removed.push(e);
        }
        Ok(removed)
    }
}

impl Entry {
    fn touch(&self) {
        let _ = crate::hostfile::open_shared(&self.dir.join("used"))
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
    }
}

/// The store's bound: `KILN_CACHE_MAX_SIZE` (e.g. `50G`), default 20 GiB.
pub fn max_size(setting: Option<&str>) -> Result<u64, String> {
    match setting {
        None => Ok(20 << 30),
        Some(v) => crate::recipe::parse_size(&crate::recipe::model::SizeSpec::Text(v.into()), 1)
            .map_err(|e| format!("KILN_CACHE_MAX_SIZE={v}: {e}")),
    }
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

#[cfg(test)]
mod tests;
