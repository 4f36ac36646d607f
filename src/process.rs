//! Running external commands: logged copy-pasteable at debug level, cancellable (the child runs
//! in its own process group, so a terminal Ctrl-C reaches kiln only and kiln stops the child),
//! with the tail of stderr in the error.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::os::unix::process::CommandExt;

/// Cooperative cancellation, set by SIGINT/SIGTERM; a child is cancelled with its parent or
/// on its own (work in the background that the build stops when another stage fails).
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    own: Arc<AtomicBool>,
    /// The flags of every cancel this one descends from.
    parents: Vec<Arc<AtomicBool>>,
}

impl Cancel {
    pub fn new() -> Self {
        Self::default()
    }
    /// This cancel's own flag (a signal handler sets it).
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.own.clone()
    }
    /// A cancel that follows this one and can also be cancelled alone.
    pub fn child(&self) -> Cancel {
        let mut parents = self.parents.clone();
        parents.push(self.own.clone());
        Cancel {
            own: Arc::default(),
            parents,
        }
    }
    pub fn is_cancelled(&self) -> bool {
        std::iter::once(&self.own)
            .chain(&self.parents)
            .any(|f| f.load(Ordering::SeqCst))
    }
    pub fn cancel(&self) {
        self.own.store(true, Ordering::SeqCst)
    }
    /// Sleep up to `d`, waking early on cancellation. Returns true when cancelled.
    pub fn sleep(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        while Instant::now() < end {
            if self.is_cancelled() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50).min(end - Instant::now()));
        }
        self.is_cancelled()
    }
}

/// Run this thread (and every process it starts from now on) at the lowest CPU priority
/// (nice 19): work that fills the cycles a more urgent process leaves, as the conversions do
/// beside a booting test VM. Linux keeps a nice value per thread.
pub fn yield_cpu_from_this_thread() {
    // SAFETY: plain syscalls on this thread's own id.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::id_t;
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, 19) } != 0 {
        tracing::debug!(
            "lowering this thread's priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}){}", tail_text(.stderr_tail))]
    Failed {
        command: String,
        status: ExitStatus,
        stderr_tail: String,
    },
    #[error("`{command}` was interrupted")]
    Cancelled { command: String },
}

fn tail_text(t: &str) -> String {
    if t.trim().is_empty() {
        String::new()
    } else {
        format!(":\n{}", t.trim_end())
    }
}

/// A command line as a user would paste it into a shell.
pub fn display(argv: &[String]) -> String {
    // What is shown (logs, plan, error messages) never carries a URL's password.
    let shown = argv
        .iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=,+@%".contains(c))
            {
                a.clone()
            } else {
                crate::quote::sh(a)
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    crate::quote::redact_url_passwords(&shown)
}

/// Receives each line (split on `\n` or `\r`, as progress meters redraw) of a command's stdout.
#[derive(Clone)]
pub struct LineSink(pub Arc<dyn Fn(&str) + Send + Sync>);

impl std::fmt::Debug for LineSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LineSink")
    }
}

#[derive(Debug, Default, Clone)]
pub struct Opts {
    pub cwd: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    /// Log each stderr/stdout line at info level with this prefix (long-running tools).
    pub stream_prefix: Option<String>,
    /// Bytes fed to the command's stdin (otherwise stdin is /dev/null).
    pub stdin: Option<Vec<u8>>,
    /// Called with each stdout line as it arrives (progress parsing).
    pub on_stdout: Option<LineSink>,
}

pub struct Output {
    pub stdout: String,
}

const TAIL: usize = 4000;

/// Run `argv` to completion. stdout is captured (or streamed), stderr is streamed at debug level
/// and its tail kept for the error.
pub fn run(argv: &[String], opts: &Opts, cancel: &Cancel) -> Result<Output, CommandError> {
    let command = display(argv);
    tracing::debug!(target: "kiln::command", "running: {command}");
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(if opts.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(d) = &opts.cwd {
        cmd.current_dir(d);
    }
    for (k, v) in &opts.env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(|source| CommandError::Spawn {
        command: command.clone(),
        source,
    })?;
    let pid = child.id() as i32;
    if let (Some(data), Some(mut stdin)) = (opts.stdin.clone(), child.stdin.take()) {
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&data);
        });
    }

    let prefix = opts.stream_prefix.clone();
    let stderr = child.stderr.take().expect("piped");
    // The readers log into the log of the build that runs the command.
    let build = crate::logging::current();
    let err_thread = std::thread::spawn(move || {
        crate::logging::adopt(build);
        let mut tail = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            match &prefix {
                Some(p) => tracing::info!("{p}{line}"),
                None => tracing::debug!(target: "kiln::command", "stderr: {line}"),
            }
            tail.push_str(&line);
            tail.push('\n');
            if tail.len() > 2 * TAIL {
                let cut = tail.len() - TAIL;
                let cut = (cut..tail.len())
                    .find(|i| tail.is_char_boundary(*i))
                    .unwrap_or(cut);
                tail.drain(..cut);
            }
        }
        tail
    });
    let prefix = opts.stream_prefix.clone();
    let sink = opts.on_stdout.clone();
    let mut stdout = child.stdout.take().expect("piped");
    let out_thread = std::thread::spawn(move || {
        crate::logging::adopt(build);
        if let Some(LineSink(f)) = sink {
            let mut all = Vec::new();
            let mut line = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                for &b in &buf[..n] {
                    all.push(b);
                    if b == b'\n' || b == b'\r' {
                        f(&String::from_utf8_lossy(&line));
                        line.clear();
                    } else {
                        line.push(b);
                    }
                }
            }
            if !line.is_empty() {
                f(&String::from_utf8_lossy(&line));
            }
            String::from_utf8_lossy(&all).into_owned()
        } else if let Some(p) = prefix {
            let mut all = String::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                tracing::info!("{p}{line}");
                all.push_str(&line);
                all.push('\n');
            }
            all
        } else {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        }
    });

    let status = loop {
        if let Some(st) = child.try_wait().map_err(|source| CommandError::Spawn {
            command: command.clone(),
            source,
        })? {
            break st;
        }
        if cancel.is_cancelled() {
            terminate_group(pid);
            let _ = child.wait();
            let _ = err_thread.join();
            let _ = out_thread.join();
            return Err(CommandError::Cancelled { command });
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr_tail = err_thread.join().unwrap_or_default();
    let stdout = out_thread.join().unwrap_or_default();
    if !status.success() {
        // Some tools (qemu-img compare) explain a failure on stdout.
        let tail = if stderr_tail.trim().is_empty() {
            &stdout
        } else {
            &stderr_tail
        };
        return Err(CommandError::Failed {
            command,
            status,
            stderr_tail: last_lines(tail, 20),
        });
    }
    Ok(Output { stdout })
}

/// Signals received so far (SIGINT, SIGTERM, SIGHUP): the first cancels the build, a second
/// one makes the cleanup hurry (children are killed at once, no more waiting for Glance).
static SIGNALS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Called from the signal handler (only an atomic add: async-signal-safe).
pub fn count_signal() {
    SIGNALS.fetch_add(1, Ordering::SeqCst);
}

/// How many of those signals came so far (`kiln build` of several recipes passes each on).
pub fn signals() -> usize {
    SIGNALS.load(Ordering::SeqCst)
}

/// A second signal came: stop waiting for anything that can be cut short.
pub fn urgent() -> bool {
    SIGNALS.load(Ordering::SeqCst) >= 2
}

/// SIGTERM the whole process group, then SIGKILL after a grace period (at once after a
/// second signal).
fn terminate_group(pgid: i32) {
    unsafe {
        libc::kill(-pgid, libc::SIGTERM);
    }
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(50));
        if unsafe { libc::kill(-pgid, 0) } != 0 {
            return;
        }
        if urgent() {
            break;
        }
    }
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

pub fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Version line of a tool (`tool --version`, first line), or "unknown".
pub fn tool_version(tool: &str) -> String {
    version_line(tool).unwrap_or_else(|| "unknown".into())
}

/// `TOOL --version`'s first line, trimmed; None when the tool is missing or fails.
pub fn version_line(tool: &str) -> Option<String> {
    let out = Command::new(tool).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    out.status
        .success()
        .then(|| text.lines().next().unwrap_or("").trim().to_string())
}

pub fn argv<I, S>(parts: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    parts.into_iter().map(Into::into).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_that_yields_starts_its_processes_at_the_lowest_priority() {
        // The nice value of a process, as the kernel reports it (/proc/PID/stat, field 19).
        fn nice_of_a_child() -> String {
            let o = std::process::Command::new("sh")
                .args(["-c", "cut -d' ' -f19 /proc/$$/stat"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        }
        let before = nice_of_a_child();
        let niced = std::thread::spawn(|| {
            yield_cpu_from_this_thread();
            nice_of_a_child()
        })
        .join()
        .unwrap();
        assert_eq!(niced, "19");
        assert_eq!(nice_of_a_child(), before, "only the thread that yields");
    }

    #[test]
    fn a_child_cancel_follows_its_parents_and_stops_alone() {
        let root = Cancel::new();
        let (a, b) = (root.child(), root.child());
        let grandchild = a.child();
        a.cancel();
        assert!(a.is_cancelled() && grandchild.is_cancelled());
        assert!(
            !root.is_cancelled() && !b.is_cancelled(),
            "a child stops alone"
        );
        root.cancel();
        assert!(b.is_cancelled(), "a signal reaches every child");
    }

    #[test]
    fn failure_carries_command_and_stderr_tail() {
        let err = run(
            &argv(["sh", "-c", "echo one >&2; echo two >&2; exit 3"]),
            &Opts::default(),
            &Cancel::new(),
        )
        .err()
        .unwrap();
        let msg = err.to_string();
        assert!(
            msg.contains("`sh -c 'echo one >&2; echo two >&2; exit 3'` failed"),
            "{msg}"
        );
        assert!(msg.contains("one\ntwo"), "{msg}");
    }

    #[test]
    fn stdout_is_captured() {
        let out = run(&argv(["echo", "hello"]), &Opts::default(), &Cancel::new()).unwrap();
        assert_eq!(out.stdout, "hello\n");
    }

    #[test]
    fn cancellation_stops_the_child_group() {
        let cancel = Cancel::new();
        let c2 = cancel.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            c2.cancel();
        });
        let start = Instant::now();
        let err = run(
            &argv(["sh", "-c", "sleep 30; sleep 30"]),
            &Opts::default(),
            &cancel,
        )
        .err()
        .unwrap();
        assert!(matches!(err, CommandError::Cancelled { .. }));
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn display_quotes_only_when_needed() {
        assert_eq!(
            display(&argv(["qemu-img", "convert", "-O", "qcow2", "a b.img"])),
            "qemu-img convert -O qcow2 'a b.img'"
        );
    }
}
