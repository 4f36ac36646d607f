//! Logging: tracing to stderr (text or JSON) and, during a build, to that build's `build.log`
//! in its output directory. Several builds can run in one process: each thread logs into the
//! build it works for (threads a build starts carry its log along, see [`current`] and
//! [`adopt`]). Recipes never carry clear-text secrets (only password hashes, which are never
//! logged), so the logs can be kept and shared.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

/// The open build logs, by build.
static LOGS: Mutex<BTreeMap<u64, File>> = Mutex::new(BTreeMap::new());
static NEXT: AtomicU64 = AtomicU64::new(1);

/// A thread whose build is over: it belongs to no build any more.
const NO_BUILD: u64 = 0;

thread_local! {
    /// The build this thread works for; None: never told (a runtime's worker thread).
    static CURRENT: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Which build's log this thread writes to: give it to [`adopt`] in a thread it starts.
pub fn current() -> Option<u64> {
    CURRENT.with(Cell::get).filter(|id| *id != NO_BUILD)
}

/// Log into `build`'s log from this thread (a worker a build started).
pub fn adopt(build: Option<u64>) {
    CURRENT.with(|c| c.set(build));
}

/// A build's open log: events of the threads working for it go into its file until dropped.
pub struct BuildLog {
    id: u64,
    before: Option<u64>,
}

impl Drop for BuildLog {
    fn drop(&mut self) {
        LOGS.lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
        adopt(Some(self.before.unwrap_or(NO_BUILD)));
    }
}

/// Where an event goes: the log of the thread's build, else (a thread nobody told, such as
/// the remote cache's runtime workers) the one open log when only one build runs.
fn with_log(write: impl FnOnce(&mut File) -> std::io::Result<()>) -> std::io::Result<()> {
    let mut logs = LOGS.lock().unwrap_or_else(|e| e.into_inner());
    let file = match CURRENT.with(Cell::get) {
        Some(id) => logs.get_mut(&id),
        None if logs.len() == 1 => logs.values_mut().next(),
        None => None,
    };
    match file {
        Some(f) => write(f),
        None => Ok(()),
    }
}

#[derive(Clone, Copy)]
struct BuildLogs;

struct BuildLogWriter;

impl Write for BuildLogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        with_log(|f| f.write_all(buf))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        with_log(|f| f.flush())
    }
}

impl<'a> MakeWriter<'a> for BuildLogs {
    type Writer = BuildLogWriter;
    fn make_writer(&'a self) -> Self::Writer {
        BuildLogWriter
    }
}

/// stderr, with any progress bars moved out of the way while a line is written.
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        crate::progress::suspend(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Start copying this thread's log events into `path` (debug level: the exact commands are
/// in it), until the returned log is dropped.
pub fn open_build_log(path: &Path) -> std::io::Result<BuildLog> {
    let f = File::create(path)?;
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    LOGS.lock().unwrap_or_else(|e| e.into_inner()).insert(id, f);
    let before = current();
    adopt(Some(id));
    Ok(BuildLog { id, before })
}

/// `verbose` lowers stderr to debug; `RUST_LOG` overrides both.
pub fn init(json: bool, verbose: bool) {
    // openstack_sdk logs every HTTP request at info: kiln reports its own steps.
    let default = if verbose {
        "kiln=debug,openstack_sdk=warn,openstack_sdk_core=warn,info"
    } else {
        "openstack_sdk=warn,openstack_sdk_core=warn,info"
    };
    let stderr_filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let file_layer = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(BuildLogs)
        .with_filter(EnvFilter::new(
            "kiln=debug,openstack_sdk=warn,openstack_sdk_core=warn,info",
        ));
    let registry = tracing_subscriber::registry().with(file_layer);
    if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr)
                    .with_filter(stderr_filter),
            )
            .init();
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(|| Stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_target(false)
                    .without_time()
                    .with_filter(stderr_filter),
            )
            .init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_builds_in_one_process_each_log_into_their_own_file() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.log"), dir.path().join("b.log"));
        let run = |path: std::path::PathBuf, word: &'static str| {
            std::thread::spawn(move || {
                let log = open_build_log(&path).unwrap();
                let mine = current();
                // A worker the build starts writes into the build's log too.
                std::thread::spawn(move || {
                    adopt(mine);
                    BuildLogWriter.write_all(format!("{word} worker\n").as_bytes())
                })
                .join()
                .unwrap()
                .unwrap();
                BuildLogWriter
                    .write_all(format!("{word}\n").as_bytes())
                    .unwrap();
                drop(log);
                // Closed: nothing more reaches it.
                BuildLogWriter.write_all(b"late\n").unwrap();
            })
        };
        let (ta, tb) = (run(a.clone(), "alpha"), run(b.clone(), "beta"));
        ta.join().unwrap();
        tb.join().unwrap();
        assert_eq!(std::fs::read_to_string(a).unwrap(), "alpha worker\nalpha\n");
        assert_eq!(std::fs::read_to_string(b).unwrap(), "beta worker\nbeta\n");
    }
}
