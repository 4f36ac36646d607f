//! A watchdog for the appliance's start: libguestfs waits for its daemon without a time limit,
//! and under TCG an appliance once sat idle for 16 minutes (CI21, a customize launch) until it
//! was killed by hand. The watchdog finds the appliance's qemu by a token kiln puts on its kernel
//! command line, and kills it when it uses no CPU time for `IDLE` (a stopped or wedged qemu) or
//! has not started within `DEADLINE`; the launch then fails and is retried once (`retry`).
//! And the watch that kills an appliance once kiln is cancelled.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// No CPU time used for this long: wedged (a booting appliance keeps a core busy under TCG).
pub const IDLE: Duration = Duration::from_secs(60);
/// A launch takes 10-60 s here under TCG, beside a TCG guest; five minutes is a hang.
pub const DEADLINE: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_secs(1);

/// Why the watchdog killed an appliance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    Idle(Duration),
    Deadline(Duration),
}

impl std::fmt::Display for Stall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stall::Idle(d) => write!(
                f,
                "the appliance used no CPU time for {} s while starting (wedged): killed",
                d.as_secs()
            ),
            Stall::Deadline(d) => write!(
                f,
                "the appliance had not started after {} s: killed",
                d.as_secs()
            ),
        }
    }
}

/// The verdict on each sample of the appliance's CPU time: pure, for the table tests.
#[derive(Debug)]
pub struct Progress {
    started: Instant,
    cpu: crate::stall::CpuWatch,
}

impl Progress {
    pub fn new(now: Instant) -> Self {
        Progress {
            started: now,
            // A stopped qemu uses none; a booting appliance a core.
            cpu: crate::stall::CpuWatch::new(IDLE, 0.02),
        }
    }

    /// `ticks`: the qemu's CPU time so far, in clock ticks (None: not found yet).
    pub fn observe(&mut self, ticks: Option<u64>, now: Instant) -> Option<Stall> {
        if now.duration_since(self.started) >= DEADLINE {
            return Some(Stall::Deadline(DEADLINE));
        }
        let used = Duration::from_secs_f64(ticks? as f64 / clock_ticks_per_second());
        self.cpu.observe(now, used).map(|_| Stall::Idle(IDLE))
    }
}

fn clock_ticks_per_second() -> f64 {
    match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        n if n > 0 => n as f64,
        _ => 100.0,
    }
}

/// utime + stime (clock ticks) from a `/proc/PID/stat` line; the command name in parentheses
/// may hold spaces or parentheses itself, so fields are counted after its last `)`.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid(4) … utime(14) stime(15), i.e. indexes 11 and 12 here.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// The parent pid from a `/proc/PID/stat` line.
fn ppid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The pid of this process's child whose command line holds `token`.
fn find_child(token: &str) -> Option<u32> {
    let me = std::process::id();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if ppid(&stat) != Some(me) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(token) {
            return Some(pid);
        }
    }
    None
}

/// A unique token for one launch, put on the appliance's kernel command line (an unknown
/// dotted parameter: the kernel ignores it).
pub fn token() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "kiln.launch={}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Watches the launch whose qemu carries `token` until dropped.
pub struct Watchdog {
    stop: Arc<AtomicBool>,
    fired: Arc<std::sync::Mutex<Option<Stall>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    pub fn start(token: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let fired = Arc::new(std::sync::Mutex::new(None));
        let (stop2, fired2) = (stop.clone(), fired.clone());
        let thread = std::thread::spawn(move || {
            let mut progress = Progress::new(Instant::now());
            while !stop2.load(Ordering::SeqCst) {
                std::thread::sleep(POLL);
                let pid = find_child(&token);
                let ticks = pid.and_then(|p| {
                    cpu_ticks(&std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?)
                });
                if let Some(stall) = progress.observe(ticks, Instant::now()) {
                    if let Some(pid) = pid {
                        tracing::warn!("libguestfs appliance (qemu pid {pid}): {stall}");
                        *fired2.lock().unwrap_or_else(|e| e.into_inner()) = Some(stall);
                        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    }
                    return;
                }
            }
        });
        Watchdog {
            stop,
            fired,
            thread: Some(thread),
        }
    }

    /// Stops watching; what it did, if it killed the appliance.
    pub fn finish(mut self) -> Option<Stall> {
        self.halt();
        let fired = *self.fired.lock().unwrap_or_else(|e| e.into_inner());
        fired
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Kills the appliance once kiln is cancelled (see `Guest::kill_on_cancel`), until dropped.
pub struct CancelWatch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CancelWatch {
    pub fn start(pid: i32, cancel: crate::process::Cancel) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                if cancel.is_cancelled() {
                    tracing::debug!("cancelled: killing the libguestfs appliance (pid {pid})");
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        CancelWatch {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for CancelWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_counts_fields_after_the_last_parenthesis() {
        let stat = "4242 (qemu (x) y) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 3 0";
        assert_eq!(cpu_ticks(stat), Some(281));
        assert_eq!(ppid(stat), Some(17));
        assert_eq!(cpu_ticks("4242 (qemu) S 1 2"), None);
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn progress_kills_only_after_idle_or_past_the_deadline() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let mut p = Progress::new(t0);
        // Not found yet: nothing to judge until the deadline.
        assert_eq!(p.observe(None, s(30)), None);
        assert_eq!(p.observe(Some(10), s(31)), None);
        // Busy, then no tick more for a whole window.
        assert_eq!(p.observe(Some(2000), s(80)), None);
        assert_eq!(p.observe(Some(2000), s(139)), None);
        assert_eq!(p.observe(Some(2000), s(140)), Some(Stall::Idle(IDLE)));
        let mut p = Progress::new(t0);
        for at in (0..DEADLINE.as_secs()).step_by(10) {
            assert_eq!(p.observe(Some(at * 100), s(at)), None);
        }
        assert_eq!(
            p.observe(Some(999), s(DEADLINE.as_secs())),
            Some(Stall::Deadline(DEADLINE))
        );
        let mut p = Progress::new(t0);
        assert_eq!(
            p.observe(None, s(DEADLINE.as_secs())),
            Some(Stall::Deadline(DEADLINE))
        );
    }
}
