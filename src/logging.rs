//! Logging: tracing to stderr (text or JSON) and, during a build, to `build.log` in the output
//! directory. Recipes never carry clear-text secrets (only password hashes, which are never
//! logged), so the logs can be kept and shared.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

static BUILD_LOG: Mutex<Option<File>> = Mutex::new(None);

#[derive(Clone, Copy)]
pub struct BuildLog;

pub struct BuildLogWriter;

impl Write for BuildLogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(f) = BUILD_LOG.lock().unwrap().as_mut() {
            f.write_all(buf)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if let Some(f) = BUILD_LOG.lock().unwrap().as_mut() {
            f.flush()?;
        }
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BuildLog {
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

/// Start copying log events into `path` (debug level: the exact commands are in it).
pub fn open_build_log(path: &Path) -> std::io::Result<()> {
    let f = File::create(path)?;
    *BUILD_LOG.lock().unwrap() = Some(f);
    Ok(())
}

pub fn close_build_log() {
    BUILD_LOG.lock().unwrap().take();
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
        .with_writer(BuildLog)
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
