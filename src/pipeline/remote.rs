//! The build's side of the remote stage cache (`--cache-remote`): a local miss asks the remote,
//! and a pulled entry is committed to the local store like a built one; every entry the build
//! makes or reuses is pushed in the background, and the base disk as a `source` entry.

use std::path::{Path, PathBuf};

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

    /// Pull `key` (and what it builds on, first) from the remote into the local store.
    /// Any failure is a miss, with a warning: the stage is built instead.
    pub(super) fn remote_pull(&self, store: &Store, key: &Key) -> Option<Entry> {
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
        if let Some(dep) = &meta.depends_on {
            if !store.has(dep) && self.remote_pull(store, dep).is_none() {
                return None;
            }
        }
        match self.pull_into(store, &raw, &meta) {
            Ok(e) => {
                self.cache.shared.lock().unwrap().insert(key.clone());
                Some(e)
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
        let result = (|| {
            let files = remote.pull(&meta.key.0, raw, &tmp)?;
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
            Ok(store.commit_at(
                &meta.stage,
                &meta.key,
                meta.depends_on.as_ref(),
                &named,
                data,
                meta.created,
            )?)
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
        remote.push(&key.0, files, serde_json::to_value(&e.meta).expect("JSON"));
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
        );
    }

    /// Fetch the base disk `key` from the remote into `dest` (atomically), instead of making
    /// or downloading it. False when the remote does not have it (or fails: with a warning).
    pub fn pull_base(&self, key: &Key, dest: &Path) -> bool {
        let Some(remote) = &self.cache.remote else {
            return false;
        };
        if self.cache.lookups_off {
            return false;
        }
        let Some(raw) = self.remote_meta(key, "") else {
            return false;
        };
        let Some(dir) = dest.parent() else {
            return false;
        };
        let tmp = dir.join(format!(".pull-{}-{}", key.short(), std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let start = std::time::Instant::now();
        let r = std::fs::create_dir_all(&tmp)
            .map_err(anyhow::Error::from)
            .and_then(|()| Ok(remote.pull(&key.0, &raw, &tmp)?))
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
                true
            }
            Err(e) => {
                tracing::warn!("remote cache: pulling the base disk: {e:#}; making it here");
                false
            }
        }
    }

    /// Wait for the pushes and say what they did (at the end of the build).
    pub fn finish_pushes(&self) {
        let Some(remote) = &self.cache.remote else {
            return;
        };
        let r = remote.wait();
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
    }
}
