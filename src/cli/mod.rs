//! Command line: parsing, dispatch and exit codes. `validate`, `plan`, `schema` and `elements`
//! never touch libvirt, disks or the network.

/// `println!` that never panics: once stdout's reader has gone (`kiln … | head`), output is
/// dropped and the command carries on to its normal end (a build still cleans up).
macro_rules! outln {
    () => {
        $crate::cli::write_out(format_args!("\n"))
    };
    ($($t:tt)*) => {
        $crate::cli::write_out(format_args!("{}\n", format_args!($($t)*)))
    };
}
/// `print!` likewise.
macro_rules! out {
    ($($t:tt)*) => {
        $crate::cli::write_out(format_args!($($t)*))
    };
}
/// `eprintln!` likewise, for stderr.
macro_rules! errln {
    ($($t:tt)*) => {
        $crate::cli::write_err(format_args!("{}\n", format_args!($($t)*)))
    };
}

mod args;
mod batch;
mod boot;
mod build;
mod cache;
mod check;
mod ci;
mod diff;
mod disk;
mod elements;
mod image;
mod image_args;
mod inspect;
mod planned;
mod report;

pub use args::*;
use build::*;
use cache::*;
pub use check::load_checked;
use check::*;
use disk::*;
use elements::*;
use planned::*;

static STDOUT_GONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static STDERR_GONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn write_to(
    gone: &std::sync::atomic::AtomicBool,
    mut w: impl std::io::Write,
    args: std::fmt::Arguments,
) {
    use std::sync::atomic::Ordering;
    if gone.load(Ordering::Relaxed) {
        return;
    }
    // Any write error (EPIPE above all) means nobody reads any more: stop writing, quietly.
    if w.write_fmt(args).is_err() {
        gone.store(true, Ordering::Relaxed);
    }
}

#[doc(hidden)]
pub fn write_out(args: std::fmt::Arguments) {
    write_to(&STDOUT_GONE, std::io::stdout().lock(), args)
}

#[doc(hidden)]
pub fn write_err(args: std::fmt::Arguments) {
    write_to(&STDERR_GONE, std::io::stderr().lock(), args)
}

use crate::exit;
use crate::plan::{Plan, SourcePlan};
use crate::process::{self, Cancel};
use crate::recipe::{self, Diagnostic};
use crate::seed::TemplateContext;
use crate::templates::{self, Kind};

/// The environment's settings, read once for the whole process and passed down from here.
pub(crate) fn tunables() -> &'static crate::tunables::Tunables {
    static T: std::sync::OnceLock<crate::tunables::Tunables> = std::sync::OnceLock::new();
    T.get_or_init(crate::tunables::Tunables::from_env)
}

pub fn main() -> i32 {
    use clap::{CommandFactory, FromArgMatches};
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|c| (c, m)));
    let (cli, matches) = match parsed {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                exit::INVALID_INPUT
            } else {
                exit::OK
            };
        }
    };
    crate::logging::init(cli.log_format == LogFormat::Json, cli.verbose);
    match cli.command {
        Command::Validate { recipes, input } => validate(&recipes, &input),
        Command::Plan {
            recipe,
            format,
            input,
            render_dir,
            output,
            cache_dir,
            cache_remote,
        } => plan(
            &recipe,
            format,
            &input,
            render_dir,
            output,
            cache_dir,
            cache_remote,
        ),
        Command::Build(args) => {
            let global = batch::Global {
                verbose: cli.verbose,
                log_format: cli.log_format,
            };
            batch::build_cmd(*args, global)
        }
        Command::Convert(args) => convert_cmd(args),
        Command::Test(args) => boot::test_cmd(*args),
        Command::Diff(args) => diff::diff_cmd(args),
        Command::Inspect(args) => inspect::inspect_cmd(args),
        Command::Sysprep(args) => {
            // Customize flags apply in command-line order, across flags (as virt-customize).
            let m = matches
                .subcommand_matches("sysprep")
                .expect("sysprep matches");
            match customize_in_order(m) {
                Ok(steps) => sysprep_cmd(*args, steps),
                Err(e) => usage_error(e),
            }
        }
        Command::Info { image, format } => info_cmd(&image, format),
        Command::Gc {
            output,
            cache_dir,
            connect,
            dry_run,
            force_foreign,
        } => gc_cmd(output, cache_dir, &connect, dry_run, force_foreign),
        Command::Report { dir, output } => report::report_cmd(&dir, output),
        Command::Ci(args) => ci::ci_cmd(*args),
        Command::Schema => {
            outln!(
                "{}",
                serde_json::to_string_pretty(&recipe::recipe_schema()).expect("schema")
            );
            exit::OK
        }
        Command::Elements { command } => elements(command),
        Command::Cache { cache_dir, command } => cache_cmd(cache_dir, command),
        Command::Publish {
            dir,
            os_cloud,
            os_region_name,
            name,
        } => publish_cmd(&dir, os_cloud.as_deref(), os_region_name.as_deref(), name),
        Command::Image {
            os_cloud,
            os_region_name,
            command,
        } => image::run(os_cloud.as_deref(), os_region_name.as_deref(), command),
    }
}

fn print_size_row(name: &str, format: &str, size: u64, allocated: u64, virtual_size: u64) {
    use crate::progress::human_bytes as h;
    outln!(
        "  {name:<32} {format:>6}  file {:>10}  allocated {:>10}  virtual {:>9}",
        h(size),
        h(allocated),
        h(virtual_size)
    );
}

/// Text read from an image (file names, config values) made safe for a terminal.
pub(crate) fn safe(s: &str) -> std::borrow::Cow<'_, str> {
    crate::quote::terminal(s)
}

pub(crate) fn usage_error(msg: impl std::fmt::Display) -> i32 {
    errln!("error: {msg}");
    exit::INVALID_INPUT
}

/// A cancellation flag set by SIGINT/SIGTERM.
pub(crate) fn cancel_on_signals() -> Cancel {
    try_cancel_on_signals().unwrap_or_else(|e| {
        tracing::warn!("cannot install signal handlers ({e}): Ctrl-C will not clean up");
        Cancel::new()
    })
}

/// The one place SIGINT, SIGTERM and SIGHUP are turned into a cancellation flag.
pub(crate) fn try_cancel_on_signals() -> std::io::Result<Cancel> {
    let cancel = Cancel::new();
    // SIGHUP too: a closed terminal or ssh session must not leave a domain behind.
    // A second signal escalates (process::urgent): children are killed at once and nothing
    // waits on Glance any more; domains are still destroyed, which is immediate anyway.
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        let flag = cancel.flag();
        // SAFETY: the handler only does atomic stores and adds (async-signal-safe).
        unsafe {
            signal_hook::low_level::register(sig, move || {
                process::count_signal();
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            })?;
        }
    }
    Ok(cancel)
}

/// Write `text` to `dest` through a temporary file beside it (0644), renamed over it. A file
/// already at `dest` is replaced only if `ours` recognises its bytes (read as someone else's
/// file, at most `limit`); else the error says `dest` and `refusal`.
fn replace_own(
    dest: &std::path::Path,
    text: &str,
    limit: u64,
    ours: &dyn Fn(&[u8]) -> bool,
    refusal: &str,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;
    if std::fs::symlink_metadata(dest).is_ok() {
        let mine = crate::hostfile::read_untrusted(dest, limit).is_ok_and(|b| ours(&b));
        anyhow::ensure!(mine, "{} {refusal}", dest.display());
    }
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".kiln-")
        .suffix(".tmp")
        .tempfile_in(parent)
        .with_context(|| format!("writing a temporary file in {}", parent.display()))?;
    tmp.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    // Readable like the catalog's other files (tempfile makes 0600).
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.persist(dest)
        .with_context(|| format!("replacing {}", dest.display()))?;
    Ok(())
}
