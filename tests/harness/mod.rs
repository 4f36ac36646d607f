//! The integration tests' harness: run kiln (and the tools that check its work) as a user
//! would, and read what they said. Each test binary includes it with `mod harness;`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::Receiver;

/// The source tree (examples, fixtures, README).
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// kiln, run from the source tree, without the caller's element path.
pub fn kiln() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
    c.current_dir(root()).env_remove("KILN_ELEMENTS_PATH");
    c
}

/// `kiln ARGS` in `cwd`, to completion.
pub fn kiln_in(args: &[&str], cwd: &Path) -> Output {
    kiln()
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run kiln")
}

/// The cache kiln uses when the test passes no `--cache-dir` (kiln's own rule).
pub fn kiln_cache_dir() -> std::path::PathBuf {
    kiln::tunables::Tunables::from_env().cache_dir
}

/// The domains of builds of the recipes named `names` (`kiln-NAME-…`) and of their boot tests
/// (`kiln-test-NAME…`): for tests that run beside other VM tests and judge only their own.
pub fn domains_of(names: &[&str]) -> Vec<String> {
    names
        .iter()
        .flat_map(|n| [format!("kiln-{n}"), format!("kiln-test-{n}")])
        .flat_map(|p| domains(&p))
        .collect()
}

/// A shell command in `cwd`, to completion.
pub fn sh(cmd: &str, cwd: &Path) -> Output {
    Command::new("sh")
        .args(["-c", cmd])
        .current_dir(cwd)
        .output()
        .expect("run sh")
}

/// The recipes of the tests in the side lane that boot guests beside the VM lane's tests
/// (.config/nextest.toml): the arm64 e2e's and the installer tests'. Their domains
/// (`kiln-NAME-…`, `kiln-test-NAME…`) are their own to check, and left out of the others'.
pub const BESIDE: &[&str] = &[ARM64, INSTALLER, WEDGED];
/// The arm64 e2e's recipe.
pub const ARM64: &str = "debian-12-arm64";
/// The wedged-guest e2e's recipe (in the light lane).
pub const WEDGED: &str = "wedged";
/// The installer e2e's recipe (tests/installer_e2e.rs writes it under this name).
pub const INSTALLER: &str = "kiln-installer-test";

/// libvirt's domains whose name starts with `prefix`, but for the side lane's (`BESIDE`) unless
/// `prefix` names them.
pub fn domains(prefix: &str) -> Vec<String> {
    let out = Command::new("virsh")
        .args(["-c", "qemu:///system", "list", "--all", "--name"])
        .output()
        .expect("virsh");
    assert!(out.status.success(), "virsh failed: {out:?}");
    text(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with(prefix))
        .filter(|l| BESIDE.iter().all(|b| prefix.contains(b) || !l.contains(b)))
        .map(str::to_string)
        .collect()
}

/// Start `cmd` with its stderr read line by line on a thread (echoed, and sent to the
/// receiver), for tests that act on what a running build says.
pub fn spawn_reading_stderr(mut cmd: Command) -> (Child, Receiver<String>) {
    let mut child = cmd
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn kiln");
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            eprintln!("kiln: {line}");
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// Send SIGINT to `child`, as Ctrl-C would.
pub fn interrupt(child: &Child) {
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
}

/// Read a running build's stderr until the line naming its domain (`marker` then the name)
/// has come and the guest has written to its console; the domain's name, or None if that did
/// not happen within 15 minutes.
pub fn wait_for_domain_console(rx: &Receiver<String>, marker: &str) -> Option<String> {
    use std::time::{Duration, Instant};
    let start = Instant::now();
    let mut domain = None;
    while start.elapsed() < Duration::from_secs(900) {
        let Ok(line) = rx.recv_timeout(Duration::from_secs(1)) else {
            continue;
        };
        if let Some(rest) = line.split(marker).nth(1) {
            domain = rest.split_whitespace().next().map(str::to_string);
        }
        if domain.is_some() && line.contains("console| ") {
            return domain;
        }
    }
    None
}

/// SIGABRT to the qemu of `domain` (a stand-in for qemu dying under the guest), then every
/// stderr line `rx` gives until the build exits.
pub fn abort_qemu_and_collect(domain: &str, rx: &Receiver<String>) -> String {
    signal_qemu_and_collect(domain, "ABRT", rx)
}

/// The pid of the qemu that runs `domain`.
pub fn qemu_of(domain: &str) -> i32 {
    // pgrep itself, not through sh (whose command line would match too).
    let p = Command::new("pgrep")
        .args(["-f", &format!("guest={domain},")])
        .output()
        .expect("pgrep");
    let pid = text(&p.stdout).trim().to_string();
    pid.parse()
        .unwrap_or_else(|_| panic!("qemu of {domain}: {pid:?}"))
}

/// `sig` to the qemu of `domain`, then every stderr line `rx` gives until the build exits.
pub fn signal_qemu_and_collect(domain: &str, sig: &str, rx: &Receiver<String>) -> String {
    let pid = qemu_of(domain).to_string();
    let st = Command::new("kill")
        .args([&format!("-{sig}"), &pid])
        .status()
        .expect("kill");
    assert!(st.success());
    let mut lines = Vec::new();
    while let Ok(l) = rx.recv_timeout(std::time::Duration::from_secs(3600)) {
        lines.push(l);
    }
    lines.join("\n")
}

/// Send `sig` (`INT`, `TERM`, `HUP`, `KILL`) to `child`.
pub fn signal(child: &Child, sig: &str) {
    let st = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
}

/// Read a running build's stderr until a line containing `marker`; false after `secs`.
pub fn wait_for_line(rx: &Receiver<String>, marker: &str, secs: u64) -> bool {
    use std::time::{Duration, Instant};
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) if line.contains(marker) => return true,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return false,
            _ => {}
        }
    }
    false
}

/// Every file and directory under `dir` (relative), with sizes of files: a fingerprint that
/// shows whether anything in it changed.
pub fn tree(dir: &Path) -> Vec<(String, u64)> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<(String, u64)>) {
        let Ok(rd) = std::fs::read_dir(d) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            // Gone since it was listed: another test's build in a shared cache.
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if m.is_dir() {
                out.push((rel + "/", 0));
                walk(base, &p, out);
            } else {
                out.push((rel, m.len()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The file behind a running domain's first disk.
pub fn domain_disk(domain: &str) -> std::path::PathBuf {
    let out = Command::new("virsh")
        .args(["-c", "qemu:///system", "domblklist", domain, "--details"])
        .output()
        .unwrap();
    text(&out.stdout)
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 4 && f[1] == "disk").then(|| std::path::PathBuf::from(f[3]))
        })
        .unwrap_or_else(|| panic!("no disk in {}", text(&out.stdout)))
}

/// The uid and user name a running domain's qemu process has.
pub fn qemu_user(domain: &str) -> (u32, String) {
    let pid = std::fs::read_to_string(format!("/run/libvirt/qemu/{domain}.pid")).unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
    let uid: u32 = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    let out = Command::new("id")
        .args(["-nu", &uid.to_string()])
        .output()
        .unwrap();
    (uid, text(&out.stdout).trim().to_string())
}

/// The steps of a long scenario: `steps.at("…")` before each; a failure (a panic unwinding
/// through the scenario) then ends with the step it happened in, so a red run names it
/// without splitting the scenario into tests that would each build their own image.
pub struct Steps {
    name: std::cell::Cell<&'static str>,
    since: std::cell::Cell<std::time::Instant>,
}

impl Steps {
    pub fn new() -> Self {
        Steps {
            name: std::cell::Cell::new("setup"),
            since: std::cell::Cell::new(std::time::Instant::now()),
        }
    }

    /// Names the step that follows; the one before is printed with its seconds (where a long
    /// scenario spends its time, for keeping CI short).
    pub fn at(&self, name: &'static str) {
        let took = self.since.replace(std::time::Instant::now()).elapsed();
        eprintln!(
            "--- step: {name} (the step before took {:.1} s)",
            took.as_secs_f64()
        );
        self.name.set(name);
    }
}

impl Drop for Steps {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("*** failed in step: {}", self.name.get());
        } else {
            let took = self.since.get().elapsed().as_secs_f64();
            eprintln!("--- the last step took {took:.1} s");
        }
    }
}
