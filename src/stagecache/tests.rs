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

/// A prune (another build's, or `kiln cache prune`) never takes an entry a running build holds,
/// nor what it builds on; once the build lets go, it can.
#[test]
fn prune_leaves_what_a_live_build_holds() {
    let (t, s) = store();
    let k1 = derive("a", 1, None, &json!(1));
    let k2 = derive("b", 1, Some(&k1), &json!(2));
    for (k, dep) in [(&k1, None), (&k2, Some(&k1))] {
        let f = file(t.path(), "f", 8192);
        s.commit("s", k, dep, &[(f, "f")], json!(null)).unwrap();
    }
    let held = s.hold(&k2).unwrap();
    // A second hold (another build using it too) is fine: the lock is shared.
    let also = s.hold(&k2).unwrap();
    assert!(s.prune(0).unwrap().is_empty());
    assert!(s.get(&k1).is_some() && s.get(&k2).is_some());
    drop(held);
    assert!(
        s.prune(0).unwrap().is_empty(),
        "still held by the other build"
    );
    drop(also);
    assert_eq!(s.prune(0).unwrap().len(), 2);
}

/// An entry written by another user of a shared cache (issue 24): a meta.json naming a path
/// as its key or its files, a FIFO meta.json, symlinked stamps and lock directories, a
/// `depends_on` cycle and sizes that would wrap. None of them makes kiln delete, create or read
/// anything outside the cache, hang or panic.
#[test]
fn hostile_entries_cannot_turn_the_cache_against_the_host() {
    let (t, s) = store();
    let victim = t.path().join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("precious"), "data").unwrap();
    let k1 = derive("a", 1, None, &json!(1));
    s.commit(
        "s",
        &k1,
        None,
        &[(file(t.path(), "f", 10), "f")],
        json!(null),
    )
    .unwrap();
    let plant = |name: &str, meta: serde_json::Value| {
        let d = s.root.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("meta.json"), meta.to_string()).unwrap();
    };
    let base = json!({"stage": "s", "created": 0, "files": [], "size": 0});
    let with = |extra: serde_json::Value| {
        let mut m = base.clone();
        m.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        m
    };
    // Its key is a path, it depends on k1: removing k1 (a rebuild) must not delete that path.
    let evil = derive("evil", 1, None, &json!(0)).0;
    plant(
        &evil,
        with(json!({"key": victim.to_str().unwrap(), "depends_on": k1.0})),
    );
    // A multibyte key (Key::short sliced bytes) and a file name that climbs out.
    let other = derive("evil", 2, None, &json!(0)).0;
    plant(&other, with(json!({"key": "é".repeat(40)})));
    let climb = derive("evil", 3, None, &json!(0));
    plant(
        &climb.0,
        with(json!({"key": climb.0, "files": ["../../victim/precious"]})),
    );
    assert!(s.get(&climb).is_none(), "a file name outside the entry");
    // A FIFO as meta.json (reading it would block forever).
    let fifo_dir = s.root.join(derive("evil", 4, None, &json!(0)).0);
    std::fs::create_dir_all(&fifo_dir).unwrap();
    let c = std::ffi::CString::new(fifo_dir.join("meta.json").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let listed: Vec<Key> = s.list().into_iter().map(|e| e.meta.key).collect();
    assert_eq!(listed, vec![k1.clone()], "only the real entry is one");
    assert_eq!(s.remove(&k1).unwrap(), vec![k1.clone()]);
    assert!(victim.join("precious").is_file(), "deleted through a key");

    // A `used` stamp that is a symlink: marking the entry used creates nothing there.
    let k2 = derive("b", 1, None, &json!(2));
    let e = s
        .commit(
            "s",
            &k2,
            None,
            &[(file(t.path(), "g", 10), "g")],
            json!(null),
        )
        .unwrap();
    std::fs::remove_file(e.file("used")).unwrap();
    std::os::unix::fs::symlink(victim.join("planted"), e.file("used")).unwrap();
    assert!(s.get(&k2).is_some());
    assert!(!victim.join("planted").exists(), "created through a stamp");
    // A lock directory that is a symlink: refused, nothing created in its target.
    std::fs::remove_dir_all(s.root.join(".locks")).ok();
    std::os::unix::fs::symlink(&victim, s.root.join(".locks")).unwrap();
    assert!(s.hold(&k2).is_err() && s.lock(&k2, "s").is_err());
    assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 1);
    std::fs::remove_file(s.root.join(".locks")).unwrap();

    // A build holds an entry over a `depends_on` cycle, and sizes add up past u64: prune ends.
    let (ka, kb, kc) = (
        derive("c", 1, None, &json!(1)),
        derive("c", 2, None, &json!(2)),
        derive("c", 3, None, &json!(3)),
    );
    for (k, dep) in [(&ka, &kb), (&kb, &ka), (&kc, &ka)] {
        plant(
            &k.0,
            with(json!({"key": k.0, "depends_on": dep.0, "size": u64::MAX})),
        );
    }
    let _held = s.hold(&kc).unwrap();
    let gone: Vec<Key> = s
        .prune(0)
        .unwrap()
        .into_iter()
        .map(|e| e.meta.key)
        .collect();
    assert_eq!(gone, vec![k2], "only the unheld entry outside the cycle");
    assert_eq!(Key::parse(&"é".repeat(32)).ok(), None);
    let odd = format!("x{}", "é".repeat(40));
    assert_eq!(Key(odd.clone()).short(), odd);
}
