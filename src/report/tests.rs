use super::*;
use crate::manifest::{StageRecord, StageStatus};

fn stage(name: &str, started: f64, seconds: f64, reused: bool) -> StageRecord {
    StageRecord {
        name: name.into(),
        status: StageStatus::Ok,
        seconds,
        started,
        key: None,
        reused,
    }
}

#[test]
fn bars_start_and_end_where_their_stages_did() {
    // The test runs beside convert: bars overlap, the build ends with the later of the two.
    let t = view::timeline(&[
        stage("source", 0.0, 100.0, false),
        stage("provision", 100.0, 0.1, true),
        stage("test", 100.1, 100.0, false),
        stage("convert", 100.1, 40.0, false),
    ]);
    let x = |i: usize| t.bars[i].x.parse::<f64>().unwrap();
    let w = |i: usize| t.bars[i].w.parse::<f64>().unwrap();
    // 800 units for 200.1 s, from x=110.
    assert_eq!(x(0), 110.0);
    assert!((w(0) - 399.8).abs() < 0.2, "{}", w(0));
    assert!((x(2) + w(2) - 910.0).abs() < 0.2);
    assert_eq!(x(2), x(3));
    assert!(w(3) < w(2));
    // A reused stage of 0.1 s is still drawn, in its own class.
    assert_eq!(w(1), 1.0);
    assert_eq!(t.bars[1].class, "reused");
    assert_eq!(t.bars[1].label, "0.1 s (reused)");
    let ticks: Vec<&str> = t.ticks.iter().map(|t| t.label.as_str()).collect();
    assert_eq!(
        ticks,
        ["0 s", "30 s", "60 s", "90 s", "120 s", "150 s", "180 s"]
    );
}

#[test]
fn error_lines_are_the_last_errors_without_colours() {
    // Read as the report reads a failed build's log: its tail, terminal colours gone.
    let lines = |text: &str| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("build.log"), text).unwrap();
        crate::libvirt::console::file_lines(&dir.path().join("build.log"), LOG_TAIL_MAX)
    };
    let log = lines("\u{1b}[32m INFO\u{1b}[0m fine\n\u{1b}[31m ERROR\u{1b}[0m one\n ERROR two\nerror: three\nplain\n");
    assert_eq!(
        error_lines(&log, 2),
        [" ERROR two", "error: three"].map(|s| s.trim().to_string())
    );
    assert_eq!(error_lines(&log, 9)[0], "ERROR one");
    assert!(error_lines(&lines("nothing here\n"), 3).is_empty());
}

#[test]
fn anchors_carry_no_markup() {
    assert_eq!(view::anchor("web-1.1"), "build-web-1.1");
    assert_eq!(view::anchor("a\"b<c> d"), "build-a_b_c__d");
}

#[test]
fn a_catalog_entry_too_large_or_not_json_is_named_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big-1.0");
    std::fs::create_dir_all(&big).unwrap();
    let f = std::fs::File::create(big.join("manifest.json")).unwrap();
    f.set_len(MANIFEST_MAX + 1).unwrap();
    let bad = dir.path().join("bad-1.0");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("manifest.json"), "{\"name\": [").unwrap();
    let failed = dir.path().join("x-1.0.failed");
    std::fs::create_dir_all(&failed).unwrap();
    let c = read_catalog(dir.path()).unwrap();
    assert_eq!(c.failed.len(), 1);
    assert_eq!(c.unreadable.len(), 2, "{:?}", c.unreadable);
    assert!(c.unreadable.iter().any(|u| u.starts_with("big-1.0: ")));
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        read_catalog(empty.path()),
        Err(ReportError::Empty { .. })
    ));
}
