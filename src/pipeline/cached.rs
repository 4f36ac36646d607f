//! What the stage-cache protocol (`protocol.rs`) works with: each cached stage's [`Unit`], its
//! typed results, the slot of a key being made and what a look-up found. Stages describe
//! themselves with a unit and never talk to the store directly.

use serde::{Deserialize, Serialize};

use crate::stagecache::{Entry, Key, KeyLock};

/// What a cached stage is to the protocol.
#[derive(Debug, Clone, Copy)]
pub struct Unit {
    /// The entry's stage name in the store (`guestfs` for the libguestfs stages).
    pub entry: &'static str,
    /// The build stages whose manifest records carry the key (the libguestfs unit is two).
    pub stages: &'static [&'static str],
    /// Its disk's identity becomes the chain's next link (what the next stage builds on).
    pub chains: bool,
    /// Taken from and given to the remote cache. A boot-test pass is not: it vouches for an
    /// image, and a remote is trusted on integrity only (anyone who can write the bucket could
    /// write a pass).
    pub shared: bool,
}

pub const INSTALL: Unit = Unit {
    entry: "install",
    stages: &["install"],
    chains: true,
    shared: true,
};
pub const PROVISION: Unit = Unit {
    entry: "provision",
    stages: &["provision"],
    chains: true,
    shared: true,
};
/// cloud-init, customize and sysprep: one libguestfs launch, one entry.
pub const GUESTFS: Unit = Unit {
    entry: "guestfs",
    stages: &["cloud-init", "sysprep"],
    chains: true,
    shared: true,
};
/// One output of the convert stage (the stage's own key names them all).
pub const OUTPUT: Unit = Unit {
    entry: "convert",
    stages: &[],
    chains: false,
    shared: true,
};
pub const TEST: Unit = Unit {
    entry: "test",
    stages: &["test"],
    chains: false,
    shared: false,
};

/// A result that is only its files (an installed or provisioned disk).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Files {}

/// What the libguestfs unit reports when it is reused.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GuestfsResult {
    #[serde(default)]
    pub sysprep_removed: Vec<(String, usize)>,
    #[serde(default)]
    pub sparsify: Option<crate::manifest::Sparsify>,
    #[serde(default)]
    pub libguestfs: String,
    #[serde(default)]
    pub inventory: Option<crate::inventory::Inventory>,
    /// The build VM's host keys, read from the provisioned disk before sysprep.
    #[serde(default)]
    pub build_host_keys: Vec<String>,
}

/// Where the chain has reached: the key of its last link (the next key is derived from it),
/// the identity of that link's disk (what the next entry is made on and must record), and the
/// entry holding it (None: the base disk, which is no entry).
#[derive(Debug, Clone)]
pub struct ChainLink {
    pub key: Key,
    pub identity: Key,
    pub entry: Option<Key>,
}

/// A key this build holds locked: it will make the entry (or decide not to).
pub struct Slot {
    pub unit: Unit,
    pub key: Key,
    /// The identity the key was derived from (what the entry is made on).
    pub built_on: Option<Key>,
    /// The entry whose disk that is (the new entry's disk is an overlay of it); the boot
    /// test's slot names the booted output's entry instead.
    pub depends_on: Option<Key>,
    pub(super) _lock: Option<KeyLock>,
}

/// What the look-up found.
pub enum Lookup<R> {
    /// Reused: the entry and its typed result (noted in the manifest, the chain moved on).
    Hit(Entry, R),
    /// To be made; commit it with the slot (None: nothing is cached for this stage).
    Miss(Option<Slot>),
}
