//! Faults a real Glance can produce: the server stopped in the middle of an upload. A separate
//! test binary, because restarting Glance would break the other Glance tests running in
//! parallel threads (cargo runs test binaries one after another).

mod glance_common;
mod harness;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use glance_common::*;

/// 1 GiB of non-zero data (nothing can shortcut it): several seconds of upload.
fn one_gib(dir: &std::path::Path) -> std::path::PathBuf {
    use std::io::Write;
    let big = dir.join("big.raw");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&big).unwrap());
    let chunk: Vec<u8> = (0..(1 << 20)).map(|i| (i % 251) as u8).collect();
    for _ in 0..1024 {
        f.write_all(&chunk).unwrap();
    }
    big
}

fn start_upload(name: &str, file: &std::path::Path) -> Child {
    start_upload_with(name, file, &[])
}

fn start_upload_with(name: &str, file: &std::path::Path, env: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "image",
            "--os-cloud",
            "kiln-alpha",
            "create",
            name,
            "--disk-format",
            "raw",
            "--file",
        ])
        .arg(file)
        .env_remove("OS_CLOUD")
        .env("KILN_GLANCE_CLEANUP_TIMEOUT", "180")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Wait until Glance is receiving the data of image `name`.
fn wait_saving(name: &str) {
    let start = Instant::now();
    loop {
        let v = json_out(img("kiln-alpha", &["list", "--name", name, "-f", "json"]));
        if v[0]["status"] == "saving" {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "upload never started: {v}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[ignore = "needs the real Glance of scripts/glance-setup.sh; run by scripts/test.sh"]
fn sigint_mid_upload_exits_130_and_deletes_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let big = one_gib(dir.path());
    let name = unique("kiln-sigint");
    let child = start_upload(&name, &big);
    wait_saving(&name);
    unsafe { kill(child.id() as i32, 2) };
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("was deleted"), "{err}");
    assert!(
        ids_named("kiln-alpha", &name).is_empty(),
        "a record was left behind"
    );
}

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

#[test]
#[ignore = "needs the real Glance of scripts/glance-setup.sh; run by scripts/test.sh"]
fn glance_stopped_mid_upload_gives_a_clear_error_and_no_record_once_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let big = one_gib(dir.path());
    let name = unique("kiln-killed");
    let child = start_upload(&name, &big);
    wait_saving(&name);
    std::thread::sleep(Duration::from_millis(500));
    // Stop Glance (SIGTERM to uWSGI) and start it again, with the same state.
    let st = Command::new("bash")
        .args(["scripts/glance-setup.sh", "restart-glance"])
        .status()
        .unwrap();
    assert!(st.success(), "restarting Glance failed");

    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("PUT /v2/images/"), "{err}");
    assert!(err.contains("was deleted"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        ids_named("kiln-alpha", &name).is_empty(),
        "a record was left behind"
    );
}

/// A Glance that stops answering (its processes stopped with SIGSTOP: connections stay open,
/// nothing is read or answered) fails the upload after KILN_GLANCE_TIMEOUT, not never; the
/// record is deleted once Glance answers again.
#[test]
#[ignore = "needs the real Glance of scripts/glance-setup.sh; run by scripts/test.sh"]
fn a_stalled_glance_fails_the_upload_after_the_timeout_and_the_record_goes() {
    let dir = tempfile::tempdir().unwrap();
    let big = one_gib(dir.path());
    let name = unique("kiln-stall");
    let child = start_upload_with(&name, &big, &[("KILN_GLANCE_TIMEOUT", "4")]);
    wait_saving(&name);
    let gdir = std::env::var("KILN_GLANCE_DIR").unwrap_or_else(|_| "/var/tmp/kiln-glance".into());
    let pid: i32 = std::fs::read_to_string(format!("{gdir}/glance.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // uWSGI runs in its own session (setsid): its process group is its pid.
    unsafe { kill(-pid, 19) };
    let stopped = Instant::now();
    std::thread::sleep(Duration::from_secs(10));
    unsafe { kill(-pid, 18) };
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("took no data and gave no answer for 4 s"),
        "{err}"
    );
    assert!(err.contains("was deleted"), "{err}");
    assert!(
        stopped.elapsed() < Duration::from_secs(120),
        "kiln waited {:?}",
        stopped.elapsed()
    );
    assert!(
        ids_named("kiln-alpha", &name).is_empty(),
        "a record was left behind"
    );
}
