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
mod build;
mod check;
mod disk;
mod elements;
mod image;
mod planned;

pub use args::*;
use build::*;
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

use std::path::PathBuf;

use crate::exit;
use crate::plan::{Plan, SourcePlan};
use crate::process::{self, Cancel};
use crate::recipe::{self, Diagnostic};
use crate::seed::TemplateContext;
use crate::templates::{self, Kind};

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
        Command::Validate { recipes, vars } => validate(&recipes, &vars),
        Command::Plan {
            recipe,
            format,
            vars,
            render_dir,
            output,
            cache_dir,
        } => plan(&recipe, format, &vars, render_dir, output, cache_dir),
        Command::Build {
            recipe,
            output,
            on_error,
            vars,
            cache_dir,
            jobs,
            no_glance,
            no_cache,
            rebuild_from,
            until,
            refresh,
        } => build(
            &recipe,
            output,
            on_error,
            &vars,
            cache_dir,
            jobs,
            no_glance,
            StageCacheFlags {
                no_cache,
                rebuild_from,
                until,
                refresh,
            },
        ),
        Command::Convert(args) => convert_cmd(args),
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
        } => gc_cmd(output, cache_dir, &connect, dry_run),
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
            name,
        } => publish_cmd(&dir, os_cloud.as_deref(), name),
        Command::Image { os_cloud, command } => image::run(os_cloud.as_deref(), command),
    }
}

fn cache_cmd(cache_dir: Option<PathBuf>, command: CacheCommand) -> i32 {
    use crate::progress::human_bytes as h;
    let store =
        crate::stagecache::Store::new(&cache_dir.unwrap_or_else(crate::build::default_cache_dir));
    let ago = |e: &crate::stagecache::Entry| {
        let s = e.last_used().elapsed().map(|d| d.as_secs()).unwrap_or(0);
        match s {
            0..=119 => format!("{s} s ago"),
            120..=7199 => format!("{} min ago", s / 60),
            7200..=172_799 => format!("{} h ago", s / 3600),
            _ => format!("{} days ago", s / 86400),
        }
    };
    match command {
        CacheCommand::List { format } => {
            let all = store.list();
            if format == PlanFormat::Json {
                let v: Vec<serde_json::Value> = all
                    .iter()
                    .map(|e| {
                        serde_json::json!({
                            "key": e.meta.key, "stage": e.meta.stage, "size": e.meta.size,
                            "created": e.meta.created, "depends_on": e.meta.depends_on,
                            "files": e.meta.files,
                            "last_used": e.last_used().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
                        })
                    })
                    .collect();
                outln!("{}", serde_json::to_string_pretty(&v).expect("JSON"));
                return exit::OK;
            }
            outln!(
                "{:<16}  {:<9} {:>10}  {:<14}  builds on",
                "KEY",
                "STAGE",
                "SIZE",
                "LAST USED"
            );
            for e in &all {
                outln!(
                    "{:<16}  {:<9} {:>10}  {:<14}  {}",
                    e.meta.key.short(),
                    e.meta.stage,
                    h(e.meta.size),
                    ago(e),
                    e.meta.depends_on.as_ref().map(|k| k.short()).unwrap_or("-")
                );
            }
            let total: u64 = all.iter().map(|e| e.meta.size).sum();
            outln!(
                "{} entries, {} in {}",
                all.len(),
                h(total),
                store.root.display()
            );
            exit::OK
        }
        CacheCommand::Show { key } => {
            let found: Vec<_> = store
                .list()
                .into_iter()
                .filter(|e| e.meta.key.0.starts_with(&key))
                .collect();
            match found.as_slice() {
                [e] => {
                    outln!("key:        {}", e.meta.key);
                    outln!("stage:      {}", e.meta.stage);
                    outln!("size:       {}", h(e.meta.size));
                    outln!("last used:  {}", ago(e));
                    outln!(
                        "builds on:  {}",
                        e.meta
                            .depends_on
                            .as_ref()
                            .map(|k| k.0.as_str())
                            .unwrap_or("-")
                    );
                    outln!("directory:  {}", e.dir.display());
                    for f in &e.meta.files {
                        outln!("file:       {f}");
                    }
                    exit::OK
                }
                [] => usage_error(format!("no cache entry with key {key}")),
                _ => usage_error(format!(
                    "{key} names {} entries: give more digits",
                    found.len()
                )),
            }
        }
        CacheCommand::Prune { max_size } => {
            let max = match crate::recipe::parse_size(
                &crate::recipe::model::SizeSpec::Text(max_size.clone()),
                1,
            ) {
                Ok(m) => m,
                Err(e) => return usage_error(format!("{e} (e.g. 20G, 512M)")),
            };
            match store.prune(max) {
                Ok(gone) => {
                    for e in &gone {
                        outln!(
                            "evicted {} ({}, {})",
                            e.meta.key.short(),
                            e.meta.stage,
                            h(e.meta.size)
                        );
                    }
                    outln!("{} entries evicted", gone.len());
                    exit::OK
                }
                Err(e) => {
                    errln!("error: pruning {}: {e}", store.root.display());
                    exit::BUILD_FAILED
                }
            }
        }
        CacheCommand::Clear => {
            let n = store.list().len();
            match std::fs::remove_dir_all(&store.root) {
                Ok(()) => {
                    outln!("removed {n} entries ({})", store.root.display());
                    exit::OK
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    outln!("removed 0 entries");
                    exit::OK
                }
                Err(e) => {
                    errln!("error: clearing {}: {e}", store.root.display());
                    exit::BUILD_FAILED
                }
            }
        }
    }
}

fn gc_cmd(output: Vec<PathBuf>, cache_dir: Option<PathBuf>, uri: &str, dry_run: bool) -> i32 {
    let roots = if output.is_empty() {
        vec![PathBuf::from("kiln-output")]
    } else {
        output
    };
    let cache = cache_dir.unwrap_or_else(crate::build::default_cache_dir);
    let lv = match crate::libvirt::Libvirt::connect(uri) {
        Ok(lv) => Some(lv),
        Err(e) => {
            errln!("warning: {e}; domains are not collected");
            None
        }
    };
    let vm_root = crate::libvirt::vmuser::vm_root();
    let r = crate::gc::collect(lv.as_ref(), &roots, &cache, &vm_root, dry_run);
    let verb = if dry_run { "would remove" } else { "removed" };
    for item in &r.orphans {
        outln!("{verb} {item}");
    }
    for (item, owner) in &r.live {
        outln!("kept {item}: its build still runs ({owner})");
    }
    if r.orphans.is_empty() {
        outln!("nothing to collect");
    }
    for e in &r.errors {
        errln!("error: {e}");
    }
    if r.errors.is_empty() && lv.is_some() {
        exit::OK
    } else {
        exit::BUILD_FAILED
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
