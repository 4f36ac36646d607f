//! Claims: one machine builds a stage the remote lacks while the others wait for its entry.
//!
//! S3's conditional PUT is not everywhere (Swift's s3api answers 501), so a claim is ordered by
//! the store's own clock instead: a machine writes `KEY/claims/ID` (once: its creation time is
//! its place in the queue) and `KEY/claims/ID.alive` (renewed while it lives), waits until any
//! claim written in the same second has landed, then lists the claims. The first live claim,
//! by creation time then name, builds; the others poll until its entry appears (they pull it)
//! or its claim dies (the next in line builds). A claim whose `.alive` is older than the
//! reader's own latest renewal by more than the TTL is dead (its machine died), and removed.
//! What this buys is never correctness (an entry is verified by digest whoever made it), only
//! work: at worst, with clocks or a store that misbehave, two machines build the same stage.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::{interrupted, io, object_path, short, Remote, RemoteError};

/// Wait after writing a claim before reading the others': S3's last-modified has a resolution
/// of a second, so a claim written in the same second as ours must be visible when we list.
const SETTLE: Duration = Duration::from_millis(2500);
/// How often a live claim says so.
const RENEW: Duration = Duration::from_secs(15);
/// A claim not renewed for this long, on the store's clock, is its dead machine's.
const TTL_MS: i64 = 75_000;
/// How often a waiting machine looks for the entry and at the queue.
const POLL: Duration = Duration::from_secs(2);

/// The outcome of [`Remote::claim_or_wait`].
pub enum Claimed {
    /// This machine builds the stage; the claim lives (renewed) until dropped.
    Ours(Claim),
    /// Another machine's entry appeared while this one waited: pull it.
    Built,
}

/// A live claim: renewed in the background, withdrawn when dropped.
pub struct Claim {
    store: Arc<dyn ObjectStore>,
    rt: tokio::runtime::Handle,
    paths: [ObjPath; 2],
    stop: Arc<AtomicBool>,
    pub key: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Best effort: a claim left behind dies by its TTL.
        self.rt
            .block_on(delete(self.store.clone(), self.paths.clone()));
        tracing::debug!("remote cache: withdrew the claim on {}", short(&self.key));
    }
}

/// One machine's claim as the listing shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub id: String,
    /// Store time of its creation, in ms.
    pub created: i64,
    /// Store time of its latest renewal, in ms (its creation if none yet).
    pub alive: i64,
}

/// The claim that builds: the first of the live ones (by creation, then id), given the
/// reader's own latest renewal as "now" on the store's clock. Also the dead ones.
pub fn first_live(claims: &[Seen], now: i64) -> (Option<&Seen>, Vec<&Seen>) {
    let (live, dead): (Vec<&Seen>, Vec<&Seen>) =
        claims.iter().partition(|c| now - c.alive <= TTL_MS);
    let first = live
        .into_iter()
        .min_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
    (first, dead)
}

/// Claims from a listing of `KEY/claims/`: `ID` and `ID.alive` objects, by id.
pub fn seen(objects: &[(String, i64)]) -> Vec<Seen> {
    let mut by_id: std::collections::BTreeMap<&str, (Option<i64>, Option<i64>)> =
        Default::default();
    for (name, t) in objects {
        match name.strip_suffix(".alive") {
            Some(id) => by_id.entry(id).or_default().1 = Some(*t),
            None => by_id.entry(name).or_default().0 = Some(*t),
        }
    }
    by_id
        .into_iter()
        // A claim whose creation is not listed is being written or withdrawn: not in line.
        .filter_map(|(id, (created, alive))| {
            let created = created?;
            Some(Seen {
                id: id.to_string(),
                created,
                alive: alive.unwrap_or(created).max(created),
            })
        })
        .collect()
}

/// This machine's claim id: host, process and a random part, one plain object name.
pub fn claim_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    let r = crate::libvirt::console::rand_bytes();
    format!("{host}-{}-{}", std::process::id(), hex::encode(&r[..4]))
}

impl Remote {
    /// Claim building `key`, or wait for the machine that claimed it first: see the module.
    /// `waiting` is called once with the holder's id when this machine starts to wait.
    pub fn claim_or_wait(
        &self,
        key: &str,
        cancel: &crate::process::Cancel,
        waiting: &mut dyn FnMut(&str),
    ) -> Result<Claimed, RemoteError> {
        // An entry there already (one this machine could not take: made on other bytes) needs
        // no queue.
        if self.meta(key)?.is_some() {
            return Ok(Claimed::Built);
        }
        let id = claim_id();
        let dir = object_path(&self.prefix, key, "claims");
        let mark = object_path(&self.prefix, key, &format!("claims/{id}"));
        let alive = object_path(&self.prefix, key, &format!("claims/{id}.alive"));
        let store = self.store.clone();
        let body = PutPayload::from(format!("{{\"holder\":\"{id}\"}}\n"));
        self.rt
            .block_on(store.put(&mark, body))
            .map_err(|e| io("claiming", &mark, e))?;
        let claim = Claim {
            store: store.clone(),
            rt: self.rt.handle().clone(),
            paths: [mark, alive.clone()],
            stop: Arc::new(AtomicBool::new(false)),
            key: key.to_string(),
        };
        self.renew(&claim, alive);
        if cancel.sleep(SETTLE) {
            return Err(interrupted("claiming", key));
        }
        let mut told = false;
        loop {
            if self.meta(key)?.is_some() {
                return Ok(Claimed::Built);
            }
            let listed = self.rt.block_on(list(store.clone(), dir.clone()))?;
            let claims = seen(&listed);
            let now = claims.iter().find(|c| c.id == id).map(|c| c.alive);
            let Some(now) = now else {
                // Ours is not listed (the store lost it, or listing lags): build, as without.
                return Ok(Claimed::Ours(claim));
            };
            let (first, dead) = first_live(&claims, now);
            for d in dead {
                tracing::info!(
                    "remote cache: {} claimed {} and died; its claim goes",
                    d.id,
                    short(key)
                );
                self.withdraw(key, &d.id);
            }
            match first {
                Some(f) if f.id != id => {
                    if !told {
                        waiting(&f.id);
                        told = true;
                    }
                }
                _ => return Ok(Claimed::Ours(claim)),
            }
            if cancel.sleep(POLL) {
                return Err(interrupted("waiting for", key));
            }
        }
    }

    /// Renew the claim's `.alive` object now and every [`RENEW`] until it is dropped.
    fn renew(&self, claim: &Claim, alive: ObjPath) {
        let (store, stop) = (claim.store.clone(), claim.stop.clone());
        let first = self
            .rt
            .block_on(store.put(&alive, PutPayload::from_static(b"")));
        if let Err(e) = first {
            tracing::debug!("remote cache: renewing a claim: {e}");
        }
        self.rt.spawn(async move {
            loop {
                for _ in 0..RENEW.as_millis() / 250 {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                }
                if let Err(e) = store.put(&alive, PutPayload::from_static(b"")).await {
                    tracing::debug!("remote cache: renewing a claim: {e}");
                }
            }
        });
    }

    /// The claims on `key` as the store lists them.
    pub fn claims(&self, key: &str) -> Result<Vec<Seen>, RemoteError> {
        let dir = object_path(&self.prefix, key, "claims");
        Ok(seen(&self.rt.block_on(list(self.store.clone(), dir))?))
    }

    fn withdraw(&self, key: &str, id: &str) {
        let paths = [
            object_path(&self.prefix, key, &format!("claims/{id}")),
            object_path(&self.prefix, key, &format!("claims/{id}.alive")),
        ];
        self.rt.block_on(delete(self.store.clone(), paths));
    }
}

/// Remove a claim's objects, ignoring failures (a claim left behind dies by its TTL).
async fn delete(store: Arc<dyn ObjectStore>, paths: [ObjPath; 2]) {
    for p in paths {
        let _ = store.delete(&p).await;
    }
}

/// (name under the directory, last-modified in ms) of every object below `dir`.
async fn list(
    store: Arc<dyn ObjectStore>,
    dir: ObjPath,
) -> Result<Vec<(String, i64)>, RemoteError> {
    let mut out = Vec::new();
    let mut s = store.list(Some(&dir));
    while let Some(m) = s.next().await {
        let m = m.map_err(|e| io("listing", &dir, e))?;
        if let Some(name) = m.location.filename() {
            out.push((name.to_string(), m.last_modified.timestamp_millis()));
        }
        if out.len() > 10_000 {
            return Err(io("listing", &dir, "more than 10000 claims"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, created: i64, alive: i64) -> Seen {
        Seen {
            id: id.into(),
            created,
            alive,
        }
    }

    #[test]
    fn the_first_live_claim_builds_and_dead_ones_go() {
        let objs = [
            ("b-2-00".to_string(), 1_000),
            ("b-2-00.alive".to_string(), 61_000),
            ("a-1-ff".to_string(), 1_000),
            ("a-1-ff.alive".to_string(), 1_000),
            ("c-3-11".to_string(), 500),
            ("d-4-22.alive".to_string(), 900),
        ];
        let claims = seen(&objs);
        // d has no creation listed: not in line.
        assert_eq!(
            claims.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
            ["a-1-ff", "b-2-00", "c-3-11"]
        );
        // All live: c was first.
        assert_eq!(first_live(&claims, 61_000).0.unwrap().id, "c-3-11");
        // At 130 s only b has renewed within the TTL: a and c are dead, b builds.
        let (first, dead) = first_live(&claims, 130_000);
        assert_eq!(first.unwrap().id, "b-2-00");
        assert_eq!(dead.len(), 2);
        // Same second: the id decides, the same way for every reader.
        let tie = [c("y", 5_000, 5_000), c("x", 5_000, 5_000)];
        assert_eq!(first_live(&tie, 5_000).0.unwrap().id, "x");
    }

    #[test]
    fn claim_ids_are_plain_object_names() {
        let id = claim_id();
        assert!(crate::stagecache::plain_name(&id), "{id}");
        assert!(id.contains(&format!("-{}-", std::process::id())));
    }
}
