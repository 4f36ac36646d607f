#![no_main]
//! A stage-cache entry's meta.json as another user or machine could write it, listed (keys,
//! files, sizes, dependencies parsed and checked). Not pruned: a fuzzer running as root
//! must not be handed deletion.

use std::sync::OnceLock;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| tempfile::tempdir_in("/dev/shm").expect("tmpdir"));
    let store = kiln::stagecache::Store::new(dir.path());
    let entry = store.root.join("0".repeat(64));
    std::fs::create_dir_all(&entry).expect("entry dir");
    std::fs::write(entry.join("meta.json"), data).expect("meta.json");
    let _ = store.list();
});
