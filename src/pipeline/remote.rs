//! The build's side of the remote stage cache (`--cache-remote`): a local miss asks the remote,
//! and a pulled entry is committed to the local store like a built one; every entry the build
//! makes or reuses is pushed in the background, and the base disk as a `source` entry.

use std::path::{Path, PathBuf};

use crate::pipeline::cached::Unit;
use crate::pipeline::context::BuildContext;
use crate::process::{self, Opts};
use crate::stagecache::{Entry, Key, Meta, Store};

impl BuildContext {
    /// The remote's meta.json of `key`: None when there is no remote or no such entry, or the
    /// lookup failed (warned, with `then` after the error).
    fn remote_meta(&self, key: &Key, then: &str) -> Option<serde_json::Value> {
        match self.cache.remote.as_ref()?.meta(&key.0) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("{e}{then}");
                None
            }
        }
    }

    /// Pull `key`, made on `built_on` (the identity of this machine's disk its key was derived
    /// from), from the remote into the local store. An entry made on other bytes, or whose
    /// backing entry here is not those bytes, is never mixed in: the stage is built here.
    /// Any failure is a miss, with a warning.
    pub(super) fn remote_pull(
        &self,
        store: &Store,
        key: &Key,
        built_on: Option<&Key>,
    ) -> Option<Entry> {
        let raw = self.remote_meta(key, "; building instead")?;
        let meta = match serde_json::from_value::<Meta>(raw.clone()) {
            Ok(m) if m.key == *key => m,
            _ => {
                tracing::warn!(
                    "remote cache: entry {} has an unreadable meta.json; building instead",
                    key.short()
                );
                return None;
            }
        };
        if let Err(why) = consistent(store, &meta, built_on) {
            tracing::warn!(
                "remote cache: entry {} {why}; building instead",
                key.short()
            );
            return None;
        }
        match self.pull_into(store, &raw, &meta) {
            Ok(e) => {
                self.cache.shared.lock().unwrap().insert(key.clone());
                Some(e)
            }
            Err(e) if self.env.cancel.is_cancelled() => {
                tracing::info!("remote cache: pulling entry {}: {e:#}", key.short());
                None
            }
            Err(e) => {
                tracing::warn!(
                    "remote cache: pulling entry {}: {e:#}; building instead",
                    key.short()
                );
                None
            }
        }
    }

    fn pull_into(
        &self,
        store: &Store,
        raw: &serde_json::Value,
        meta: &Meta,
    ) -> anyhow::Result<Entry> {
        use anyhow::Context as _;
        let remote = self.cache.remote.as_ref().context("no remote")?;
        let start = std::time::Instant::now();
        std::fs::create_dir_all(&store.root)?;
        let tmp = store
            .root
            .join(format!(".pull-{}-{}", meta.key.short(), std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir(&tmp)?;
        // Who is pulling: `kiln gc` collects it if this build dies.
        crate::owner::Owner::current().write_into(&tmp)?;
        let result = (|| {
            let files = remote.pull(&meta.key.0, raw, &tmp, &self.env.cancel)?;
            // The disk's bytes are the ones the entry claims (before the rebase below
            // rewrites the path in its header, as the maker's digest was taken before): the
            // download verified the file against this digest as it streamed in, so it is not
            // read a second time.
            if let (Some(content), Some(disk)) = (&meta.content, meta.files.first()) {
                let d = raw["remote_files"][disk.as_str()]["sha256"]
                    .as_str()
                    .context("the remote entry lists no digest of its disk")?;
                if crate::stagecache::disk_identity(meta.built_on.as_ref(), d) != *content {
                    anyhow::bail!("its disk is not the bytes its meta.json names");
                }
            }
            // An overlay names its backing file by this other machine's path: point it at
            // this machine's copy (the entry it builds on, or the base disk).
            for f in &files {
                if f.extension().is_some_and(|x| x == "qcow2") {
                    self.rebase_pulled(store, meta, f)?;
                }
            }
            let mut data = meta.data.clone();
            if !data["stamp"].is_null() {
                if let Some(f) = files.first() {
                    data["stamp"] = crate::stagecache::file_stamp(f);
                }
            }
            let named: Vec<(PathBuf, &str)> = meta
                .files
                .iter()
                .map(|n| (tmp.join(n), n.as_str()))
                .collect();
            if let Some((missing, _)) = named.iter().find(|(p, _)| !p.is_file()) {
                anyhow::bail!("the remote entry lacks {}", missing.display());
            }
            let links = crate::stagecache::Links {
                depends_on: meta.depends_on.clone(),
                built_on: meta.built_on.clone(),
                content: meta.content.clone(),
            };
            Ok(store.commit_at(&meta.stage, &meta.key, &links, &named, data, meta.created)?)
        })();
        let _ = std::fs::remove_dir_all(&tmp);
        let e: Entry = result?;
        tracing::info!(
            "remote cache: pulled entry {} ({}, {}) in {:.1} s",
            meta.key.short(),
            meta.stage,
            crate::progress::human_bytes(e.meta.size),
            start.elapsed().as_secs_f64()
        );
        Ok(e)
    }

    fn rebase_pulled(&self, store: &Store, meta: &Meta, f: &Path) -> anyhow::Result<()> {
        use anyhow::Context as _;
        let info = crate::qemu_img::info_as(f, Some("qcow2"), &self.env.cancel)?;
        if info.backing_filename.is_none() {
            return Ok(());
        }
        let (backing, format) = match &meta.depends_on {
            Some(dep) => (store.dir(dep).join("disk.qcow2"), "qcow2".to_string()),
            None => {
                let b = self
                    .made
                    .base
                    .as_ref()
                    .context("an overlay pulled before its base disk is known")?;
                (b.path.clone(), b.format.clone())
            }
        };
        process::run(
            &crate::qemu_img::rebase_unsafe_argv(f, &backing, &format),
            &Opts::default(),
            &self.env.cancel,
        )
        .context("pointing the pulled overlay at this machine's backing file")?;
        Ok(())
    }

    /// No entry of `key` here or on the remote: claim making it (the claim lives until the
    /// build's pushes are done), or wait for the machine that claimed it first and pull its
    /// entry (Some). A remote that fails here costs the wait, not the build.
    pub(super) fn claim_remote(
        &self,
        key: &Key,
        unit: Unit,
        built_on: Option<&Key>,
    ) -> Option<Entry> {
        let (Some(remote), Some(store)) = (&self.cache.remote, &self.cache.store) else {
            return None;
        };
        if self.cache.lookups_off {
            return None;
        }
        if self.claim(remote, key, unit.entry) {
            return None;
        }
        self.remote_pull(store, key, built_on)
    }

    /// Claim `key` for this machine (true), or wait until another machine's entry is there
    /// (false).
    fn claim(&self, remote: &crate::remotecache::Remote, key: &Key, what: &str) -> bool {
        let start = std::time::Instant::now();
        let mut said = |holder: &str| {
            tracing::info!(
                "remote cache: {holder} is making the {what} entry {}; waiting for it",
                key.short()
            )
        };
        match remote.claim_or_wait(&key.0, &self.env.cancel, &mut said) {
            Ok(crate::remotecache::Claimed::Ours(c)) => {
                self.cache.claims.lock().unwrap().push(c);
                true
            }
            Ok(crate::remotecache::Claimed::Built) => {
                tracing::info!(
                    "remote cache: entry {} is there after {:.1} s",
                    key.short(),
                    start.elapsed().as_secs_f64()
                );
                false
            }
            Err(e) => {
                tracing::warn!(
                    "remote cache: claiming entry {}: {e}; making it here",
                    key.short()
                );
                true
            }
        }
    }

    /// Withdraw this machine's claims (their entries are pushed, or will not be).
    pub fn withdraw_claims(&self) {
        self.cache.claims.lock().unwrap().clear();
    }

    /// Push the store's entry `key` to the remote (in the background; once per build).
    pub fn share(&self, key: &Key) {
        let (Some(remote), Some(store)) = (&self.cache.remote, &self.cache.store) else {
            return;
        };
        // Only store entries (the base disk's key is no entry: `share_base` sends it).
        let Some(e) = store.get(key) else { return };
        if !self.cache.shared.lock().unwrap().insert(key.clone()) {
            return;
        }
        let files = e
            .meta
            .files
            .iter()
            .map(|n| (e.file(n), n.clone()))
            .collect();
        remote.push(
            &key.0,
            files,
            serde_json::to_value(&e.meta).expect("JSON"),
            &self.env.cancel,
        );
    }

    /// Push the base disk (a bootstrap's or a download's, which another machine would have
    /// to make or fetch) as entry `key`.
    pub fn share_base(&self, key: &Key, path: &Path) {
        let Some(remote) = &self.cache.remote else {
            return;
        };
        if !self.cache.shared.lock().unwrap().insert(key.clone()) {
            return;
        }
        let meta = Meta {
            stage: "source".into(),
            key: key.clone(),
            depends_on: None,
            built_on: None,
            content: None,
            created: std::fs::metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs())
                .unwrap_or(0),
            files: vec!["disk".into()],
            size: 0,
            data: serde_json::json!({}),
        };
        remote.push(
            &key.0,
            vec![(path.to_path_buf(), "disk".into())],
            serde_json::to_value(&meta).expect("JSON"),
            &self.env.cancel,
        );
    }

    /// Fetch the base disk `key` from the remote into `dest` (atomically), instead of making
    /// or downloading it. False when the remote does not have it (or fails: with a warning);
    /// an error when Ctrl-C cut the pull short (nothing is to be made after it).
    pub fn pull_base(&self, key: &Key, dest: &Path) -> anyhow::Result<bool> {
        let Some(remote) = &self.cache.remote else {
            return Ok(false);
        };
        if self.cache.lookups_off {
            return Ok(false);
        }
        let raw = match self.remote_meta(key, "") {
            Some(raw) => raw,
            // Nowhere yet: one machine makes it, the others wait for it.
            None if self.claim(remote, key, "base disk") => return Ok(false),
            None => match self.remote_meta(key, "") {
                Some(raw) => raw,
                None => return Ok(false),
            },
        };
        let Some(dir) = dest.parent() else {
            return Ok(false);
        };
        let tmp = dir.join(format!(".pull-{}-{}", key.short(), std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let start = std::time::Instant::now();
        let r = std::fs::create_dir_all(&tmp)
            .and_then(|()| crate::owner::Owner::current().write_into(&tmp))
            .map_err(anyhow::Error::from)
            .and_then(|()| Ok(remote.pull(&key.0, &raw, &tmp, &self.env.cancel)?))
            .and_then(|_| Ok(std::fs::rename(tmp.join("disk"), dest)?));
        let _ = std::fs::remove_dir_all(&tmp);
        match r {
            Ok(()) => {
                self.cache.shared.lock().unwrap().insert(key.clone());
                tracing::info!(
                    "remote cache: pulled the base disk {} in {:.1} s",
                    dest.display(),
                    start.elapsed().as_secs_f64()
                );
                Ok(true)
            }
            Err(e) if self.env.cancel.is_cancelled() => {
                Err(e.context("interrupted while pulling the base disk"))
            }
            Err(e) => {
                tracing::warn!("remote cache: pulling the base disk: {e:#}; making it here");
                Ok(false)
            }
        }
    }

    /// Wait for the pushes and say what they did (at the end of the build). False when Ctrl-C
    /// cut them short (a push cut short leaves no entry on the remote).
    pub fn finish_pushes(&self) -> bool {
        let Some(remote) = &self.cache.remote else {
            return true;
        };
        let r = remote.wait();
        self.withdraw_claims();
        if self.env.cancel.is_cancelled() {
            tracing::warn!(
                "remote cache {}: interrupted: {} entr{} not pushed ({} pushed before)",
                remote.url,
                r.failed.len(),
                if r.failed.len() == 1 { "y" } else { "ies" },
                r.pushed.len()
            );
            return false;
        }
        if !r.pushed.is_empty() {
            let bytes: u64 = r.pushed.iter().map(|(_, n)| n).sum();
            tracing::info!(
                "remote cache {}: pushed {} entr{} ({}) in {:.1} s; {} already there",
                remote.url,
                r.pushed.len(),
                if r.pushed.len() == 1 { "y" } else { "ies" },
                crate::progress::human_bytes(bytes),
                r.secs,
                r.present
            );
        }
        for (k, e) in &r.failed {
            tracing::warn!(
                "remote cache: entry {} not pushed: {e}",
                crate::remotecache::short(k)
            );
        }
        true
    }
}

/// Can the remote's entry join this machine's chain? It must have been made on the identity
/// its key was derived from here, and the entry it is an overlay of must be here holding that
/// identity (this machine's own entry of the same key may hold other bytes: then the remote's
/// overlay does not fit it).
fn consistent(store: &Store, meta: &Meta, built_on: Option<&Key>) -> Result<(), String> {
    if meta.built_on.as_ref() != built_on {
        return Err("was made on other bytes than this machine's".into());
    }
    if let Some(dep) = &meta.depends_on {
        let here = store.peek(dep).and_then(|e| e.meta.content);
        if here.as_ref() != meta.built_on.as_ref() {
            return Err(format!(
                "is an overlay of entry {}, which here holds other bytes (or is missing)",
                dep.short()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stagecache::Links;

    fn key(c: char) -> Key {
        crate::stagecache::derive("test", 1, None, &c)
    }

    fn meta(depends_on: Option<Key>, built_on: Option<Key>) -> Meta {
        Meta {
            stage: "guestfs".into(),
            key: key('g'),
            depends_on,
            built_on,
            content: Some(key('c')),
            created: 0,
            files: vec![],
            size: 0,
            data: serde_json::Value::Null,
        }
    }

    #[test]
    fn a_remote_entry_joins_only_the_chain_of_the_bytes_it_was_made_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        // This machine's provision entry `p` holds the disk of identity `x`.
        let f = dir.path().join("disk");
        std::fs::write(&f, b"disk").unwrap();
        let links = Links {
            content: Some(key('x')),
            ..Links::default()
        };
        store
            .commit_at(
                "provision",
                &key('p'),
                &links,
                &[(f, "disk.qcow2")],
                serde_json::Value::Null,
                0,
            )
            .unwrap();
        let (p, x, y) = (Some(key('p')), Some(key('x')), Some(key('y')));
        // Made on x, over this machine's p which holds x: it fits.
        assert!(consistent(&store, &meta(p.clone(), x.clone()), x.as_ref()).is_ok());
        // Made on y (another machine's provisioning of the same key): never layered over x.
        let e = consistent(&store, &meta(p.clone(), y.clone()), x.as_ref()).unwrap_err();
        assert!(e.contains("other bytes"), "{e}");
        // Claims x, but this machine's p holds other bytes than the look-up was derived from.
        let e = consistent(&store, &meta(p.clone(), y.clone()), y.as_ref()).unwrap_err();
        assert!(e.contains("here holds other bytes"), "{e}");
        // Over an entry this machine does not have.
        let e = consistent(&store, &meta(Some(key('q')), x.clone()), x.as_ref()).unwrap_err();
        assert!(e.contains("missing"), "{e}");
        // Made on a base disk (no entry): its identity decides.
        assert!(consistent(&store, &meta(None, x.clone()), x.as_ref()).is_ok());
        assert!(consistent(&store, &meta(None, y), x.as_ref()).is_err());
        // An entry from before bytes were recorded claims nothing: not mixed in either.
        assert!(consistent(&store, &meta(None, None), x.as_ref()).is_err());
    }
}
