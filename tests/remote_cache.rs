//! The remote stage cache against a real OpenStack Swift through its S3 API
//! (scripts/swift-setup.sh). Work in progress (issue 13).

mod harness;

#[test]
#[ignore = "needs the Swift of scripts/swift-setup.sh"]
fn an_entry_pushed_to_swift_comes_back_verified_and_a_corrupt_one_is_refused() {
    let remote = kiln::remotecache::Remote::open("s3://kiln-cache/test").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("disk.qcow2");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&f, &data).unwrap();
    let key = format!("{:064x}", std::process::id());
    let meta = serde_json::json!({"stage": "provision", "files": ["disk.qcow2"]});
    remote
        .push(&key, &[(f.clone(), "disk.qcow2".to_string())], meta)
        .unwrap();
    let got = remote.meta(&key).unwrap().expect("pushed");
    assert_eq!(got["stage"], "provision");
    let into = dir.path().join("pulled");
    std::fs::create_dir_all(&into).unwrap();
    let files = remote.pull_files(&key, &got, &into).unwrap();
    assert_eq!(std::fs::read(&files[0]).unwrap(), data);
    // A digest that does not match what is stored: refused, nothing left.
    let mut bad = got.clone();
    bad["digests"]["disk.qcow2"] = serde_json::json!("0".repeat(64));
    let other = dir.path().join("bad");
    std::fs::create_dir_all(&other).unwrap();
    let e = remote
        .pull_files(&key, &bad, &other)
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not match its digest"), "{e}");
    assert!(!other.join("disk.qcow2").exists());
    assert!(remote.meta(&format!("{:064x}", 1u8)).unwrap().is_none());
}
