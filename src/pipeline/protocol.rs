//! The one stage-cache protocol every cached stage follows: lock the stage's key, look it up
//! (in the local store, then on the remote), hand back its typed result, or, after the stage
//! ran, commit its files and typed result; the manifest notes the key and whether it was
//! reused, and the chain moves on.

use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::cached::{Lookup, Slot, Unit};
use super::context::BuildContext;
use crate::stagecache::{Entry, Key};

impl BuildContext {
    /// Lock `key` (None: the stage has no key, caching stays off) and look it up. `usable`
    /// can refuse an entry (too old, changed on disk); one whose data does not read as `R`
    /// is not reused either.
    pub fn cache_lookup<R: DeserializeOwned>(
        &mut self,
        unit: Unit,
        key: Option<Key>,
        usable: &dyn Fn(&BuildContext, &Entry) -> bool,
    ) -> anyhow::Result<Lookup<R>> {
        let (Some(key), Some(store)) = (key, self.cache.store.clone()) else {
            return Ok(Lookup::Miss(None));
        };
        let lock = store.lock(&key, unit.stages.first().unwrap_or(&unit.entry))?;
        if let Some(e) = self.cache_get(&key).filter(|e| usable(self, e)) {
            match serde_json::from_value::<R>(e.meta.data.clone()) {
                Ok(r) => {
                    self.cache_noted(unit, &key, true);
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
            _lock: Some(lock),
        })))
    }

    /// Commit the stage's `files` (path, name in the entry) and `result` under the slot's key,
    /// over `depends_on` (the entry its disk is an overlay of). A cache that cannot take it
    /// (full, read-only) costs caching, not the build: None, with a warning.
    pub fn cache_commit<R: Serialize>(
        &mut self,
        slot: Slot,
        depends_on: Option<&Key>,
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
        match store.commit(slot.unit.entry, &slot.key, depends_on, files, data) {
            Ok(entry) => {
                self.cache_noted(slot.unit, &slot.key, false);
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

    /// The manifest notes the key of every stage of the unit; the chain moves on.
    fn cache_noted(&mut self, unit: Unit, key: &Key, reused: bool) {
        for stage in unit.stages {
            self.note_cache(stage, key, reused);
        }
        if unit.stages.is_empty() {
            // An output has no record of its own (note_cache shares the others' entries):
            // reused or made, it goes to the remote.
            self.share(key);
        }
        if unit.chains {
            self.cache.chain = Some(key.clone());
        }
    }
}
