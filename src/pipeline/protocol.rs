//! The one stage-cache protocol every cached stage follows: lock the stage's key, look it up
//! (in the local store, then on the remote), hand back its typed result, or, after the stage
//! ran, commit its files and typed result; the manifest notes the key and whether it was
//! reused, and the chain moves on to the identity of the disk the entry holds (its bytes, not
//! its key: see `stagecache`).

use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::cached::{ChainLink, Lookup, Slot, Unit};
use super::context::BuildContext;
use crate::stagecache::{Entry, Key};

impl BuildContext {
    /// Lock `key` (None: the stage has no key, caching stays off) and look it up; `on` is the
    /// link it is made on (the entry must record that link's identity as its `built_on`).
    /// `usable` can refuse an entry (too old, changed on disk); one whose data does not read
    /// as `R`, or that was made on other bytes, is not reused either (and is replaced).
    pub fn cache_lookup<R: DeserializeOwned>(
        &mut self,
        unit: Unit,
        key: Option<Key>,
        on: Option<&ChainLink>,
        usable: &dyn Fn(&BuildContext, &Entry) -> bool,
    ) -> anyhow::Result<Lookup<R>> {
        let built_on = on.map(|l| &l.identity);
        let (Some(key), Some(store)) = (key, self.cache.store.clone()) else {
            return Ok(Lookup::Miss(None));
        };
        let lock = store.lock(&key, unit.stages.first().unwrap_or(&unit.entry))?;
        let takes = |e: &Entry| self.linked(unit, e, built_on) && usable(self, e);
        let found = self.cache_get(&key, unit, built_on).filter(takes);
        // Nowhere yet: one machine makes it, the others wait for its entry.
        let found = match found {
            None if unit.shared => self.claim_remote(&key, unit, built_on).filter(takes),
            found => found,
        };
        // A pull that Ctrl-C cut short is a miss, but not one to build after.
        if self.env.cancel.is_cancelled() {
            anyhow::bail!("interrupted while looking up the stage cache");
        }
        if let Some(e) = found {
            match serde_json::from_value::<R>(e.meta.data.clone()) {
                Ok(r) => {
                    self.cache_noted(unit, &key, true, e.meta.content.clone());
                    return Ok(Lookup::Hit(e, r));
                }
                Err(err) => tracing::warn!(
                    "stage cache: entry {} does not read as a {} result ({err}); making it again",
                    key.short(),
                    unit.entry
                ),
            }
        }
        Ok(Lookup::Miss(Some(Slot {
            unit,
            key,
            built_on: built_on.cloned(),
            depends_on: on.and_then(|l| l.entry.clone()),
            _lock: Some(lock),
        })))
    }

    /// Commit the stage's `files` (path, name in the entry) and `result` under the slot's key,
    /// over the slot's `depends_on` (the entry its disk is an overlay of). A chaining unit's first file
    /// is its disk: its digest, over what it was made on, is the identity the chain moves on
    /// to. A cache that cannot take it (full, read-only) costs caching, not the build: None,
    /// with a warning.
    pub fn cache_commit<R: Serialize>(
        &mut self,
        slot: Slot,
        files: &[(PathBuf, &str)],
        result: &R,
    ) -> Option<Entry> {
        let chains = slot.unit.chains;
        let entry = self.commit_slot(slot, files, result);
        if entry.is_none() && chains {
            // The chain cannot go on to a disk the store does not hold: nothing after it may be
            // keyed on (or tested as) the link below it.
            self.cache.chain = None;
        }
        entry
    }

    fn commit_slot<R: Serialize>(
        &mut self,
        slot: Slot,
        files: &[(PathBuf, &str)],
        result: &R,
    ) -> Option<Entry> {
        let store = self.cache.store.clone()?;
        self.cache_replacing(&slot.key);
        let data = match serde_json::to_value(result) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("stage cache: {} result: {e}", slot.unit.entry);
                return None;
            }
        };
        let content = match (slot.unit.chains, files.first()) {
            (true, Some((disk, _))) => match crate::stagecache::file_digest(disk) {
                Ok(d) => Some(crate::stagecache::disk_identity(slot.built_on.as_ref(), &d)),
                Err(e) => {
                    tracing::warn!("stage cache: hashing {}: {e}", disk.display());
                    return None;
                }
            },
            _ => None,
        };
        let links = crate::stagecache::Links {
            depends_on: slot.depends_on.clone(),
            built_on: slot.built_on.clone(),
            content,
        };
        let created = crate::stagecache::now();
        match store.commit_at(slot.unit.entry, &slot.key, &links, files, data, created) {
            Ok(entry) => {
                self.cache_noted(slot.unit, &slot.key, false, entry.meta.content.clone());
                Some(entry)
            }
            Err(e) => {
                tracing::warn!(
                    "stage cache: the {} result was not stored ({e}); going on without it",
                    slot.unit.entry
                );
                None
            }
        }
    }

    /// The manifest notes the key of every stage of the unit; the chain moves on to the
    /// identity of the entry's disk.
    fn cache_noted(&mut self, unit: Unit, key: &Key, reused: bool, content: Option<Key>) {
        // Used by this build until it ends: no prune (another build's, or `kiln cache prune`)
        // takes it away from under the overlays and links made from it.
        if let Some(store) = &self.cache.store {
            match store.hold(key) {
                Ok(l) => self.cache.held.push(l),
                Err(e) => tracing::warn!("stage cache: holding entry {}: {e}", key.short()),
            }
        }
        for stage in unit.stages {
            self.note_cache(stage, key, reused);
        }
        // Built or reused, the entry goes to the remote cache (if it is not there yet).
        if unit.shared {
            self.share(key);
        }
        if unit.chains {
            self.cache.chain = content.map(|identity| ChainLink {
                key: key.clone(),
                identity,
                entry: Some(key.clone()),
            });
        }
    }

    /// Was the entry made on `built_on` (and, for a unit the chain goes on from, does it say
    /// what its disk is)? One made on other bytes (this entry's stage was re-made below it,
    /// or it is older than bytes were recorded) is removed with what depends on it, so the
    /// new result can take its key.
    fn linked(&self, unit: Unit, e: &Entry, built_on: Option<&Key>) -> bool {
        if e.meta.built_on.as_ref() == built_on && (!unit.chains || e.meta.content.is_some()) {
            return true;
        }
        tracing::info!(
            "stage cache: entry {} was made on other bytes than this build's; making it again",
            e.meta.key.short()
        );
        if let Some(store) = &self.cache.store {
            if let Err(err) = store.remove(&e.meta.key) {
                tracing::warn!("removing the cache entry {}: {err}", e.meta.key.short());
            }
        }
        false
    }
}
