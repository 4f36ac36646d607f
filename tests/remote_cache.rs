//! The remote stage cache's transport against a real OpenStack Swift through its S3 API, with
//! Keystone's EC2 credentials (scripts/swift-setup.sh; the environment from its s3.env).
//! The two-machine build is in tests/e2e.rs.

#[test]
#[ignore = "needs the Swift of scripts/swift-setup.sh and its AWS_* environment"]
fn entries_pushed_to_swift_come_back_verified_and_a_mismatch_is_refused() {
    let prefix = format!("test-{}-{}", std::process::id(), rand_suffix());
    let remote = kiln::remotecache::Remote::open(
        &format!("s3://kiln-cache/{prefix}"),
        &kiln::tunables::Tunables::from_env().s3,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // One file over the multipart threshold (16 MiB parts, not a multiple), one small.
    let big = dir.path().join("disk.qcow2");
    let data: Vec<u8> = (0..(40u32 << 20) + 12345)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&big, &data).unwrap();
    let small = dir.path().join("notes");
    std::fs::write(&small, b"small file").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&small, std::fs::Permissions::from_mode(0o444)).unwrap();
    }
    let key = format!("{:064x}", std::process::id());
    let meta = serde_json::json!({"stage": "provision", "files": ["disk.qcow2", "notes"]});
    let none = kiln::process::Cancel::new();

    // Ctrl-C in the middle of a push (256 MiB, cut after 300 ms): the push says so, and the
    // remote has no entry (the same key is pushed, not found "already there", below).
    let huge = dir.path().join("huge.qcow2");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&huge).unwrap());
        for i in 0u64..(32 << 20) {
            f.write_all(&(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_le_bytes())
                .unwrap();
        }
    }
    let cut = kiln::process::Cancel::new();
    remote.push(
        &key,
        vec![
            (huge.clone(), "disk.qcow2".into()),
            (small.clone(), "notes".into()),
        ],
        meta.clone(),
        &cut,
    );
    let c = cut.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        c.cancel();
    });
    let r = remote.wait();
    t.join().unwrap();
    assert!(
        r.pushed.is_empty(),
        "the push ended before the cut: {:?}",
        r.pushed
    );
    assert_eq!(r.failed.len(), 1, "{:?}", r.failed);
    assert!(
        r.failed[0].1.to_string().contains("interrupted"),
        "{:?}",
        r.failed
    );
    assert!(
        remote.meta(&key).unwrap().is_none(),
        "a cut push left an entry"
    );

    remote.push(
        &key,
        vec![
            (big.clone(), "disk.qcow2".into()),
            (small.clone(), "notes".into()),
        ],
        meta.clone(),
        &none,
    );
    let r = remote.wait();
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    assert_eq!(r.pushed, vec![(key.clone(), data.len() as u64 + 10)]);
    // Pushed again: the remote has it, nothing is uploaded.
    remote.push(&key, vec![(big.clone(), "disk.qcow2".into())], meta, &none);
    let r = remote.wait();
    assert_eq!((r.pushed.len(), r.present), (0, 1));

    let got = remote.meta(&key).unwrap().expect("pushed");
    assert_eq!(got["stage"], "provision");
    let into = dir.path().join("pulled");
    std::fs::create_dir_all(&into).unwrap();
    let mut files = remote
        .pull(&key, &got, &into, &kiln::process::Cancel::new())
        .unwrap();
    files.sort();
    assert_eq!(files, vec![into.join("disk.qcow2"), into.join("notes")]);
    assert!(
        std::fs::read(&files[0]).unwrap() == data,
        "the big file came back changed"
    );
    assert_eq!(std::fs::read(&files[1]).unwrap(), b"small file");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&files[1]).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o444);
    }

    // Bytes that do not match the digest: refused, nothing left behind.
    let mut bad = got.clone();
    bad["remote_files"]["disk.qcow2"]["sha256"] = serde_json::json!("0".repeat(64));
    let other = dir.path().join("bad");
    std::fs::create_dir_all(&other).unwrap();
    let e = remote
        .pull(&key, &bad, &other, &kiln::process::Cancel::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not match its digest"), "{e}");
    assert_eq!(std::fs::read_dir(&other).unwrap().count(), 0);
    // More bytes than the meta.json declares: the download stops there, nothing is kept.
    let mut long = got.clone();
    long["remote_files"]["disk.qcow2"]["size"] = serde_json::json!(1 << 20);
    let e = remote
        .pull(&key, &long, &other, &kiln::process::Cancel::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("more than the 1048576 bytes"), "{e}");
    assert_eq!(std::fs::read_dir(&other).unwrap().count(), 0);
    // A meta naming a path outside the directory is refused before anything is written.
    let mut evil = got.clone();
    evil["remote_files"]["../escape"] = got["remote_files"]["notes"].clone();
    let e = remote
        .pull(&key, &evil, &other, &kiln::process::Cancel::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("not plain"), "{e}");
    assert!(!dir.path().join("escape").exists());

    assert!(remote.meta(&format!("{:064x}", 1u8)).unwrap().is_none());

    // Interrupted (Ctrl-C before or during the pull): it stops at once, saying so.
    let cancel = kiln::process::Cancel::new();
    cancel.cancel();
    let stopped = dir.path().join("stopped");
    std::fs::create_dir_all(&stopped).unwrap();
    let e = remote
        .pull(&key, &got, &stopped, &cancel)
        .unwrap_err()
        .to_string();
    assert!(e.contains("interrupted"), "{e}");
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
}

/// Signed entries against the real Swift: a machine that trusts the pusher's key takes the
/// entry; one that trusts another key, or gets an unsigned entry, refuses it (a meta.json
/// changed after signing: `remotecache`'s unit tests).
#[test]
#[ignore = "needs the Swift of scripts/swift-setup.sh and its AWS_* environment"]
fn only_entries_signed_by_a_trusted_key_are_taken() {
    use kiln::signing;
    let prefix = format!("signed-{}-{}", std::process::id(), rand_suffix());
    let url = format!("s3://kiln-cache/{prefix}");
    let dir = tempfile::tempdir().unwrap();
    let (secret, public) = signing::generate("ci-1").unwrap();
    let (_, stranger) = signing::generate("stranger").unwrap();
    let key_file = dir.path().join("ci-1.secret");
    kiln::hostfile::write_private(&key_file, secret.as_bytes()).unwrap();
    let env = kiln::tunables::Tunables::from_env().s3;
    let with = |signing_key: Option<&std::path::Path>, trusted: Option<&str>| {
        let mut e = env.clone();
        e.signing_key_file = signing_key.map(|p| p.to_path_buf());
        e.trusted_keys = trusted.map(str::to_string);
        kiln::remotecache::Remote::open(&url, &e).unwrap()
    };
    let file = dir.path().join("disk.qcow2");
    std::fs::write(&file, b"bytes of a disk").unwrap();
    let meta = serde_json::json!({"stage": "provision", "files": ["disk.qcow2"]});
    let (signed, unsigned) = (format!("{:064x}", 1u8), format!("{:064x}", 2u8));
    let pusher = with(Some(&key_file), None);
    let none = kiln::process::Cancel::new();
    pusher.push(
        &signed,
        vec![(file.clone(), "disk.qcow2".into())],
        meta.clone(),
        &none,
    );
    let plain = with(None, None);
    plain.push(
        &unsigned,
        vec![(file.clone(), "disk.qcow2".into())],
        meta,
        &none,
    );
    for r in [pusher.wait(), plain.wait()] {
        assert!(r.failed.is_empty(), "{:?}", r.failed);
        assert_eq!(r.pushed.len(), 1);
    }

    let trusting = with(None, Some(&public));
    let got = trusting.meta(&signed).unwrap().expect("a signed entry");
    assert_eq!(got["signatures"][0]["key"], "ci-1");
    let into = dir.path().join("pulled");
    std::fs::create_dir_all(&into).unwrap();
    trusting
        .pull(&signed, &got, &into, &kiln::process::Cancel::new())
        .unwrap();
    assert_eq!(
        std::fs::read(into.join("disk.qcow2")).unwrap(),
        b"bytes of a disk"
    );
    let e = trusting.meta(&unsigned).unwrap_err().to_string();
    assert!(e.contains("not trusted") && e.contains("not signed"), "{e}");
    let e = with(None, Some(&stranger))
        .meta(&signed)
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not trust"), "{e}");
    // Without trusted keys the digests alone decide (as before), signed or not.
    assert!(with(None, None).meta(&unsigned).unwrap().is_some());

    // A signing key others can read is refused before anything is pushed.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut e = env.clone();
    e.signing_key_file = Some(key_file.clone());
    let err = kiln::remotecache::Remote::open(&url, &e)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("others can read it"), "{err}");
}

/// Three processes standing for three machines (each its own directory; one Swift) want the
/// same two entries at once: for each, one claims and makes it (random bytes: a second maker
/// would make other bytes), the others wait and pull it. Afterwards every machine holds the
/// same bytes as the remote, one entry per key is there, and no claim is left.
#[test]
#[ignore = "needs the Swift of scripts/swift-setup.sh and its AWS_* environment"]
fn three_machines_wanting_the_same_entries_make_each_once() {
    if let Ok(role) = std::env::var("KILN_TEST_CLAIM_MACHINE") {
        return machine(&role);
    }
    let prefix = format!("claims-{}-{}", std::process::id(), rand_suffix());
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = ["m1", "m2", "m3"]
        .iter()
        .map(|m| {
            let own = dir.path().join(m);
            std::fs::create_dir_all(&own).unwrap();
            std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "three_machines_wanting_the_same_entries_make_each_once",
                ])
                .args(["--ignored", "--nocapture"])
                .env("KILN_TEST_CLAIM_MACHINE", m)
                .env("KILN_TEST_CLAIM_PREFIX", &prefix)
                .env("KILN_TEST_CLAIM_DIR", &own)
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let remote = kiln::remotecache::Remote::open(
        &format!("s3://kiln-cache/{prefix}"),
        &kiln::tunables::Tunables::from_env().s3,
    )
    .unwrap();
    for key in CLAIM_KEYS {
        let meta = remote.meta(key).unwrap().expect("an entry");
        let made_by = meta["made_by"].as_str().unwrap().to_string();
        let pulled = dir.path().join("remote").join(&key[..8]);
        std::fs::create_dir_all(&pulled).unwrap();
        remote
            .pull(key, &meta, &pulled, &kiln::process::Cancel::new())
            .unwrap();
        let bytes = std::fs::read(pulled.join("disk")).unwrap();
        for m in ["m1", "m2", "m3"] {
            let mine = std::fs::read(dir.path().join(m).join(&key[..8])).unwrap();
            assert!(
                mine == bytes,
                "{m} holds other bytes for {key} than the remote (made by {made_by})"
            );
        }
        assert!(
            remote.claims(key).unwrap().is_empty(),
            "claims left on {key}"
        );
    }
}

const CLAIM_KEYS: [&str; 2] = [
    "1111111111111111111111111111111111111111111111111111111111111111",
    "2222222222222222222222222222222222222222222222222222222222222222",
];

/// One machine: for each key, make it (3 s of "work", then 4 MiB of its own random bytes,
/// pushed) if its claim comes first, else wait for the entry and pull it; its copy of each
/// entry's bytes is left in its directory.
fn machine(name: &str) {
    let prefix = std::env::var("KILN_TEST_CLAIM_PREFIX").unwrap();
    let own = std::path::PathBuf::from(std::env::var("KILN_TEST_CLAIM_DIR").unwrap());
    let remote = kiln::remotecache::Remote::open(
        &format!("s3://kiln-cache/{prefix}"),
        &kiln::tunables::Tunables::from_env().s3,
    )
    .unwrap();
    let cancel = kiln::process::Cancel::new();
    for key in CLAIM_KEYS {
        let mine = own.join(&key[..8]);
        match remote
            .claim_or_wait(key, &cancel, &mut |h| eprintln!("{name}: waiting for {h}"))
            .unwrap()
        {
            kiln::remotecache::Claimed::Ours(claim) => {
                eprintln!("{name}: making {}", &key[..8]);
                std::thread::sleep(std::time::Duration::from_secs(3));
                let data: Vec<u8> = (0..4 << 20).map(|_| rand_suffix() as u8).collect();
                std::fs::write(&mine, &data).unwrap();
                let meta =
                    serde_json::json!({"stage": "provision", "files": ["disk"], "made_by": name});
                remote.push(key, vec![(mine.clone(), "disk".into())], meta, &cancel);
                let r = remote.wait();
                assert!(r.failed.is_empty(), "{:?}", r.failed);
                drop(claim);
            }
            kiln::remotecache::Claimed::Built => {
                let meta = remote.meta(key).unwrap().unwrap();
                let tmp = own.join(format!("pull-{}", &key[..8]));
                std::fs::create_dir_all(&tmp).unwrap();
                remote.pull(key, &meta, &tmp, &cancel).unwrap();
                std::fs::rename(tmp.join("disk"), &mine).unwrap();
                eprintln!("{name}: pulled {} made by {}", &key[..8], meta["made_by"]);
            }
        }
    }
}
