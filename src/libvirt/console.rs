//! Following a guest: its serial console streamed as it grows, and the wait for its power-off
//! that ends early when the guest cannot finish any more.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::{Libvirt, State};
use crate::process;

/// Eight random bytes (domain names must not collide between concurrent builds).
pub fn rand_bytes() -> [u8; 8] {
    let mut b = [0u8; 8];
    if let Ok(mut f) = File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    b
}

/// How long a guest may keep running after cloud-init said it finished without the
/// provisioning script having started, or after the script ended: a guest still up long after
/// has a cloud-init that never ran the script (no NoCloud datasource, a broken seed) or a
/// power-off that did not happen.
pub const CLOUD_INIT_GRACE: Duration = Duration::from_secs(120);

/// The guest ran past its boot deadline without starting the steps (a guest hung in its boot:
/// TCG guests on a loaded host have been seen stalling there for good). Callers may restart it.
#[derive(Debug, thiserror::Error)]
#[error("the guest did not start the provisioning steps within {secs} s of its start (vm.boot_timeout); console tail:\n{tail}")]
pub struct NotStarted {
    pub secs: u64,
    pub tail: String,
}

/// Before starting the steps the guest stopped using the CPU: wedged, not slow (under TCG a
/// vCPU has been seen halted for good, its timer interrupt never delivered: the boot stood
/// still at 6% of a core until vm.boot_timeout). Callers may restart it.
#[derive(Debug, thiserror::Error)]
#[error("the guest stopped making progress before the provisioning steps: {:.1} s of CPU in the last {} s (a booting guest keeps a core busy); console tail:\n{tail}", used.as_secs_f64(), window.as_secs())]
pub struct Wedged {
    pub used: Duration,
    pub window: Duration,
    pub tail: String,
}

impl Wedged {
    /// The error without its console tail.
    pub fn headline(&self) -> String {
        format!(
            "the guest stopped making progress before the steps ({:.1} s of CPU in {} s)",
            self.used.as_secs_f64(),
            self.window.as_secs()
        )
    }
}

/// qemu died under the guest (libvirt: shut off, reason crashed): an emulator fault, not a
/// power-off. Seen under TCG as an assertion in qemu's memory map code during the guest's PCI
/// scan, a second after its start. Callers may start the guest again.
#[derive(Debug, thiserror::Error)]
#[error("{}; console tail:\n{tail}", self.headline())]
pub struct EmulatorDied {
    pub cause: String,
    /// Whether the console had shown the `started` marker.
    pub started: bool,
    pub tail: String,
}

impl EmulatorDied {
    /// The error without its console tail.
    pub fn headline(&self) -> String {
        format!("qemu exited under the guest: {}", self.cause)
    }
}

/// The last error qemu wrote to libvirt's log of the domain ("qemu-system-x86_64: …", not a
/// warning), when the log is where the system instance keeps it and readable.
fn qemu_last_words(domain: &str) -> String {
    let log = Path::new("/var/log/libvirt/qemu").join(format!("{domain}.log"));
    std::fs::read_to_string(&log)
        .ok()
        .and_then(|t| {
            t.lines()
                .rev()
                .find(|l| l.contains("qemu-system-x86_64: ") && !l.contains("warning:"))
                .map(|l| format!("{} (libvirt's log: {})", l.trim(), log.display()))
        })
        .unwrap_or_else(|| format!("libvirt says the domain {domain} crashed (see its qemu log)"))
}

/// What the console showed while kiln waited: for each marker asked for, the first line that
/// held it, and the last lines (the console is followed, never read whole into memory).
#[derive(Debug, Default)]
pub struct Watched {
    pub marked: Vec<Option<String>>,
    pub tail: String,
}

/// Poll the domain until it is shut off, streaming new console lines with a prefix. Ends early
/// with the console tail when the guest cannot finish any more: its kernel panicked, or (with
/// `cloud_init_grace`) cloud-init finished that long ago and the guest is still running. While
/// the console shows `started` and none of `markers`, the guest is working whatever cloud-init
/// says (the provisioning script runs beside cloud-init's last stages). With `start_within`, a
/// guest that has shown neither `started` nor a marker by then ends the wait with
/// [`NotStarted`]; with `idle` too, one that uses too little CPU before that ends it with
/// [`Wedged`].
#[allow(clippy::too_many_arguments)]
pub fn wait_for_poweroff(
    lv: &Libvirt,
    domain: &str,
    console: &Path,
    timeout_secs: u64,
    cloud_init_grace: Option<Duration>,
    markers: &[&str],
    started: Option<(&str, Option<Duration>)>,
    mut idle: Option<crate::stall::CpuWatch>,
    cancel: &process::Cancel,
) -> anyhow::Result<Watched> {
    let start = Instant::now();
    let mut tail = ConsoleTail::new(console);
    tail.markers = markers.iter().map(|m| (m.to_string(), None)).collect();
    if let Some((m, _)) = started {
        tail.markers.push((m.to_string(), None));
    }
    let start_within = started.and_then(|(_, d)| d);
    let mut last_note = Instant::now();
    let mut failures = 0u32;
    loop {
        tail.pump();
        if let Some(fatal) = tail.fatal {
            // Give the console a moment for the rest of the message.
            cancel.sleep(Duration::from_secs(2));
            let last = tail.last(30);
            let why = match last.lines().any(cpu_level_too_low) {
                true => CPU_LEVEL_HINT,
                false => fatal,
            };
            bail!("{why}; console tail:\n{last}");
        }
        let (ended, began) = tail.markers.split_at(markers.len());
        let ended_at = ended
            .iter()
            .filter_map(|(_, l)| l.as_ref().map(|(_, t)| *t))
            .min();
        let began_at = began.first().and_then(|(_, l)| l.as_ref());
        let steps_started = began_at.is_some();
        let working = steps_started && ended_at.is_none();
        if let Some(limit) = start_within {
            if !steps_started && ended_at.is_none() && start.elapsed() >= limit {
                return Err(NotStarted {
                    secs: limit.as_secs(),
                    tail: tail.last(30),
                }
                .into());
            }
        }
        if let (Some(w), false, None) = (idle.as_mut(), steps_started, ended_at) {
            wedged(lv, domain, w, &mut tail)?;
        }
        // The clock runs from cloud-init's end or the script's, whichever came last.
        let since = tail.cloud_init_finished.max(ended_at);
        if let (Some(grace), Some(at), false) = (cloud_init_grace, since, working) {
            if at.elapsed() >= grace && lv.state(domain) == State::Running {
                if ended_at.is_some() {
                    bail!(
                        "the provisioning script ended {} s ago but the guest did not power off; console tail:\n{}",
                        at.elapsed().as_secs(),
                        tail.last(30)
                    );
                }
                bail!(
                    "cloud-init finished {} s ago but the guest did not power off: it never ran \
                     kiln's provisioning script (is the NoCloud datasource enabled in the base \
                     image?); console tail:\n{}",
                    at.elapsed().as_secs(),
                    tail.last(30)
                );
            }
        }
        let state = match lv.try_state(domain) {
            Ok(s) => {
                failures = 0;
                s
            }
            // A libvirtd restart or a slow answer is not a powered-off guest: keep asking for
            // a while before giving up.
            Err(e) => {
                failures += 1;
                if failures >= 20 {
                    bail!("libvirt does not answer about domain {domain}: {e}");
                }
                State::Other
            }
        };
        match state {
            State::Shutoff if lv.shut_off_by_crash(domain) => {
                return Err(EmulatorDied {
                    cause: qemu_last_words(domain),
                    started: steps_started,
                    tail: tail.last(30),
                }
                .into())
            }
            State::Shutoff | State::Missing => {
                tail.pump();
                tracing::info!(
                    "guest powered off after {:.0} s",
                    start.elapsed().as_secs_f64()
                );
                let last = tail.last(30);
                return Ok(Watched {
                    marked: tail
                        .markers
                        .into_iter()
                        .take(markers.len())
                        .map(|(_, l)| l.map(|(line, _)| line))
                        .collect(),
                    tail: last,
                });
            }
            State::Crashed => bail!(
                "the guest crashed; console tail:\n{}",
                tail.last(30)
            ),
            State::Paused if lv.paused_by_io_error(domain) => bail!(
                "the guest was paused after a disk I/O error: the filesystem holding {} is most \
                 likely full ({} free); console tail:\n{}",
                console.parent().unwrap_or(console).display(),
                free_space(console.parent().unwrap_or(console))
                    .map(crate::progress::human_bytes)
                    .unwrap_or_else(|| "unknown".into()),
                tail.last(30)
            ),
            State::Paused => bail!(
                "the guest was paused by the hypervisor (an emulation or KVM error?); console tail:\n{}",
                tail.last(30)
            ),
            _ => {}
        }
        if start.elapsed().as_secs() >= timeout_secs {
            bail!(
                "the guest did not power off within {timeout_secs} s (vm.timeout); console tail:\n{}",
                tail.last(30)
            );
        }
        if last_note.elapsed() >= Duration::from_secs(30) {
            last_note = Instant::now();
            tracing::info!(
                "waiting for the guest to power off ({:.0} s of {timeout_secs} s)",
                start.elapsed().as_secs_f64()
            );
        }
        if cancel.sleep(Duration::from_millis(500)) {
            bail!("interrupted while waiting for the guest");
        }
    }
}

/// [`Wedged`] when the guest has used too little CPU over `w`'s window.
fn wedged(
    lv: &Libvirt,
    domain: &str,
    w: &mut crate::stall::CpuWatch,
    tail: &mut ConsoleTail,
) -> Result<(), Wedged> {
    match lv
        .cpu_time(domain)
        .and_then(|c| w.observe(Instant::now(), c))
    {
        Some(used) => Err(Wedged {
            used,
            window: w.window(),
            tail: tail.last(30),
        }),
        None => Ok(()),
    }
}

/// Bytes free for an unprivileged writer on the filesystem of `dir`.
fn free_space(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0).then(|| st.f_bavail * st.f_frsize)
}

/// The last `n` lines of a file, reading at most its last 256 KiB.
pub fn file_tail(path: &Path, n: usize) -> String {
    let lines = file_lines(path, 256 << 10);
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The last `max` bytes of a log (a console, a build log) as lines without terminal controls.
/// Firmware writes bytes that are not UTF-8 (shim's dialog boxes are drawn in code page 437):
/// they are replaced, never a reason to see nothing. Only a regular file is read, not followed
/// through a symlink nor waited on (a FIFO): `kiln report` reads logs of catalogs others made.
pub fn file_lines(path: &Path, max: u64) -> Vec<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let Ok(mut f) = opened else {
        return Vec::new();
    };
    let meta = f.metadata();
    if !meta.as_ref().is_ok_and(|m| m.is_file()) {
        return Vec::new();
    }
    let len = meta.map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut buf = Vec::new();
    let _ = f.take(max).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf)
        .lines()
        .map(strip_controls)
        .collect()
}

/// Longest console line kept whole; a guest writing without newlines cannot grow it further.
const MAX_LINE: usize = 64 << 10;

/// Follows a growing console log file, keeping only its last lines.
struct ConsoleTail {
    path: std::path::PathBuf,
    pos: u64,
    partial: String,
    lines: std::collections::VecDeque<String>,
    /// (marker, first line holding it and when it came).
    markers: Vec<(String, Option<(String, Instant)>)>,
    /// A kernel panic was printed.
    /// A line after which the guest will never finish (a kernel panic, firmware giving up).
    fatal: Option<&'static str>,
    /// When cloud-init's "finished" line was first seen.
    cloud_init_finished: Option<Instant>,
}

impl ConsoleTail {
    fn new(path: &Path) -> Self {
        ConsoleTail {
            path: path.to_path_buf(),
            pos: 0,
            partial: String::new(),
            lines: std::collections::VecDeque::new(),
            markers: Vec::new(),
            fatal: None,
            cloud_init_finished: None,
        }
    }

    fn pump(&mut self) {
        let Ok(mut f) = File::open(&self.path) else {
            return;
        };
        if f.seek(SeekFrom::Start(self.pos)).is_err() {
            return;
        }
        // At most 4 MiB a poll: a guest flooding its console cannot make kiln hold it all.
        let mut buf = Vec::new();
        if f.take(4 << 20).read_to_end(&mut buf).is_err() {
            return;
        }
        self.pos += buf.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&buf));
        if !self.partial.contains('\n') && self.partial.len() > MAX_LINE {
            self.partial.push('\n');
        }
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            let line = strip_controls(line.trim_end());
            if !line.is_empty() {
                tracing::info!(target: "kiln::console", "console| {line}");
            }
            if self.fatal.is_none() {
                self.fatal = fatal_line(&line);
            }
            if self.cloud_init_finished.is_none() && is_cloud_init_finished(&line) {
                self.cloud_init_finished = Some(Instant::now());
            }
            for (m, first) in self.markers.iter_mut() {
                if first.is_none() && line.contains(m.as_str()) {
                    *first = Some((line.clone(), Instant::now()));
                }
            }
            self.lines.push_back(line);
            if self.lines.len() > 200 {
                self.lines.pop_front();
            }
            if !self.partial.contains('\n') && self.partial.len() > MAX_LINE {
                self.partial.push('\n');
            }
        }
    }

    fn last(&mut self, n: usize) -> String {
        self.pump();
        let mut v: Vec<String> = self.lines.iter().cloned().collect();
        if !self.partial.is_empty() {
            v.push(strip_controls(&self.partial));
        }
        v[v.len().saturating_sub(n)..].join("\n")
    }
}

/// What a console line means when the guest will never boot its system or finish: the
/// kernel panicked, or the firmware found nothing it would start.
pub fn fatal_line(line: &str) -> Option<&'static str> {
    const FATAL: &[(&str, &str)] = &[
        ("Kernel panic - not syncing", "the guest's kernel panicked"),
        (
            "UEFI Interactive Shell",
            "the UEFI firmware found nothing to boot and started its shell (no EFI system \
             partition, or no EFI/BOOT/BOOTX64.EFI on it: was the image made for BIOS only?)",
        ),
        (
            "No bootable device",
            "the BIOS found nothing to boot (no boot loader for BIOS: was the image made for \
             UEFI only? vm.firmware, kiln test --firmware)",
        ),
        // Secure Boot refusing an unsigned link of the chain: OVMF for the first stage, shim
        // for GRUB, GRUB (shim_lock) for the kernel.
        (
            "Access Denied",
            "the firmware refused to start the boot loader (Secure Boot: is it signed?)",
        ),
        (
            "Security Violation",
            "Secure Boot refused an unsigned part of the boot chain",
        ),
        (
            "bad shim signature",
            "Secure Boot refused an unsigned kernel (GRUB: bad shim signature)",
        ),
    ];
    FATAL
        .iter()
        .find(|(needle, _)| line.contains(needle))
        .map(|(_, why)| *why)
}

/// glibc refusing to start on a CPU below the level it was built for ("Fatal glibc error: CPU
/// does not support x86-64-v2", "CPU ISA level is lower than required"): init dies, the kernel
/// panics, and only `vm.cpu` can fix it.
pub fn cpu_level_too_low(line: &str) -> bool {
    line.contains("CPU does not support x86-64-v") || line.contains("CPU ISA level is lower")
}

pub const CPU_LEVEL_HINT: &str = "the guest's C library needs a newer CPU than the VM's \
    (set vm.cpu: x86-64-v2, x86-64-v3 or max; kiln test --cpu)";

/// cloud-init's last line of a boot: "Cloud-init v. 22.4.2 finished at …".
fn is_cloud_init_finished(line: &str) -> bool {
    line.contains("Cloud-init v. ") && line.contains(" finished at ")
}

/// Drop terminal escape sequences and control characters from console output.
fn strip_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        if c.is_control() && c != '\t' {
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_come_from_regular_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("build.log");
        std::fs::write(&log, "one\ntwo\n").unwrap();
        assert_eq!(file_lines(&log, 1 << 20), ["one", "two"]);
        // A link to another file (a catalog's log pointing at a host file) is not followed.
        let link = dir.path().join("link.log");
        std::os::unix::fs::symlink(&log, &link).unwrap();
        assert!(file_lines(&link, 1 << 20).is_empty());
        // A FIFO neither hangs the reader nor gives lines.
        let fifo = dir.path().join("fifo.log");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(file_lines(&fifo, 1 << 20).is_empty());
    }

    #[test]
    fn console_escapes_are_stripped() {
        assert_eq!(
            strip_controls("\x1b[0;32m  OK  \x1b[0m] Started\r"),
            "  OK  ] Started"
        );
    }

    #[test]
    fn console_tail_notices_a_panic_and_cloud_init_finishing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        std::fs::write(
            &p,
            "[  OK  ] Started x\n[   84.1] cloud-init[512]: Cloud-init v. 22.4.2 finished at Tue, 01 Dec 2026 07:00:00 +0000. Datasource DataSourceNoCloud.  Up 84.00 seconds\n",
        )
        .unwrap();
        let mut t = ConsoleTail::new(&p);
        t.pump();
        assert!(t.cloud_init_finished.is_some());
        assert!(t.fatal.is_none());
        std::fs::write(
            &p,
            "[ 1.0] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n",
        )
        .unwrap();
        let mut t = ConsoleTail::new(&p);
        t.pump();
        assert!(t.fatal.is_some() && t.cloud_init_finished.is_none());
    }

    #[test]
    fn console_tail_follows_a_growing_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        std::fs::write(&p, "one\ntw").unwrap();
        let mut t = ConsoleTail::new(&p);
        t.pump();
        assert_eq!(t.lines, ["one"]);
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"o\nthree\n")
            .unwrap();
        assert_eq!(t.last(2), "two\nthree");
    }
}
