//! `kiln build`: staging directory, logs, the stage pipeline, and what is left afterwards.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::exit;
use crate::pipeline::context::BuildContext;
use crate::pipeline::{self, Outcome};
use crate::plan::Plan;
use crate::process::Cancel;

pub struct Options {
    pub out_root: PathBuf,
    pub cache_dir: PathBuf,
    pub keep_on_error: bool,
    /// Concurrent conversions (`-j`).
    pub jobs: usize,
    /// `--no-cache`: the stage cache is neither read nor written.
    pub no_cache: bool,
    /// `--rebuild-from STAGE`.
    pub rebuild_from: Option<String>,
    /// `--until STAGE`.
    pub until: Option<String>,
    /// `--refresh`.
    pub refresh: bool,
    /// The remote stage cache, opened (credentials checked) before the build.
    pub remote: Option<std::sync::Arc<crate::remotecache::Remote>>,
    /// What the environment set (read once by `cli/`).
    pub tunables: crate::tunables::Tunables,
}

pub struct Finished {
    pub code: i32,
    pub ctx: BuildContext,
    pub error: Option<anyhow::Error>,
}

/// Run a whole build. Never leaves a half-written output directory.
pub fn run(plan: Plan, opts: &Options, cancel: &Cancel) -> anyhow::Result<Finished> {
    std::fs::create_dir_all(&opts.out_root)
        .with_context(|| format!("creating output directory {}", opts.out_root.display()))?;
    let out_root = std::fs::canonicalize(&opts.out_root)?;
    // Held for the whole build: a second build of the same output fails here, not halfway.
    let _lock = crate::outdir::lock(&out_root, &plan.slug())?;
    let mut ctx = BuildContext::new(
        plan,
        &out_root,
        opts.tunables.clone(),
        opts.cache_dir.clone(),
        cancel.clone(),
    );
    ctx.env.keep_on_error = opts.keep_on_error;
    ctx.env.jobs = opts.jobs.max(1);
    if opts.no_cache {
        ctx.cache.store = None;
    } else {
        ctx.cache.remote = opts.remote.clone();
    }
    ctx.env.rebuild_from = opts.rebuild_from.clone();
    ctx.env.until = opts.until.clone();
    ctx.env.refresh = opts.refresh;
    // Seeds, answer files and the injected initrd carry hashes: only the owner enters.
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&ctx.env.staging)
            .with_context(|| format!("creating staging directory {}", ctx.env.staging.display()))?;
    }
    // `kiln gc` removes it only once this process is gone.
    crate::owner::Owner::current()
        .write_into(&ctx.env.staging)
        .with_context(|| format!("writing the owner of {}", ctx.env.staging.display()))?;
    std::fs::create_dir_all(&ctx.env.out)
        .with_context(|| format!("creating staging directory {}", ctx.env.staging.display()))?;
    if ctx.env.work.starts_with(&ctx.env.staging) {
        std::fs::create_dir_all(&ctx.env.work)?;
    } else {
        // The VM's files, where its unprivileged user can reach them.
        crate::libvirt::vmuser::make_vm_dir(&ctx.env.work, ctx.env.vm_user).with_context(|| {
            format!(
                "creating the build VM's directory {}",
                ctx.env.work.display()
            )
        })?;
        crate::owner::Owner::current()
            .write_into(&ctx.env.work)
            .with_context(|| format!("writing the owner of {}", ctx.env.work.display()))?;
    }
    let log = crate::logging::open_build_log(&ctx.env.out.join("build.log"))?;
    ctx.tools.kiln = env!("CARGO_PKG_VERSION").to_string();
    ctx.tools.qemu_img = crate::hosttools::HostTools::here().qemu_img.clone();
    tracing::info!(
        "building {} from {} (staging in {})",
        ctx.env.plan.slug(),
        ctx.env.plan.recipe_path.display(),
        ctx.env.staging.display()
    );

    let mut stages: Vec<Box<dyn pipeline::Stage<BuildContext>>> = crate::stages::all()
        .into_iter()
        .map(|s| s as Box<dyn pipeline::Stage<BuildContext>>)
        .collect();
    let mut report = pipeline::run(&mut stages, &mut ctx, cancel);
    drop(stages);
    // What the stages made reaches the remote cache before the build says it is done (a
    // failed build's finished stages too: another machine resumes from them). Interrupted:
    // the pushes are dropped (an unfinished upload leaves no entry: meta.json goes last).
    if report.outcome == Outcome::Cancelled {
        ctx.withdraw_claims();
        ctx.cache.remote = None;
    } else if !ctx.finish_pushes() {
        // Ctrl-C while the pushes finished: what the build made is in place (published, if
        // it got that far); the process stops as asked.
        report.outcome = Outcome::Cancelled;
    }

    // Input found unusable once at hand (an image for another architecture): exit 2 like a
    // recipe error, not a failed build.
    let mismatch = report.error.as_ref().is_some_and(|e| {
        e.chain()
            .any(|c| c.downcast_ref::<crate::plan::InputMismatch>().is_some())
    });
    let code = match report.outcome {
        Outcome::Success => exit::OK,
        Outcome::Failed if mismatch => exit::INVALID_INPUT,
        Outcome::Failed => exit::BUILD_FAILED,
        Outcome::Cancelled => exit::INTERRUPTED,
    };
    match report.outcome {
        Outcome::Failed if ctx.env.keep_on_error => {
            tracing::warn!(
                "kept the staging directory {} and the VM directory {} (build disk, seed, console.log, build.log)",
                ctx.env.staging.display(),
                ctx.env.work.display()
            );
        }
        Outcome::Failed => {
            // Keep the evidence, not the disks.
            let logs = out_root.join(format!("{}.failed", ctx.env.plan.slug()));
            save_logs(&ctx.env.out, &ctx.env.work, &logs);
            tracing::warn!("logs of the failed build are in {}", logs.display());
            drop(log);
            remove_dir(&ctx.env.staging);
            remove_dir(&ctx.env.work);
        }
        _ => {
            drop(log);
            remove_dir(&ctx.env.staging);
            remove_dir(&ctx.env.work);
        }
    }
    for r in ctx.held() {
        if report.outcome != Outcome::Failed || !ctx.env.keep_on_error {
            tracing::warn!("still held after cleanup: {r}");
        }
    }
    // The stage cache stays within its bound (least recently used entries go first).
    if let Some(store) = &ctx.cache.store {
        match crate::stagecache::max_size(ctx.env.tunables.cache_max_size.as_deref()) {
            Ok(max) => match store.prune(max) {
                Ok(gone) if !gone.is_empty() => tracing::info!(
                    "stage cache: evicted {} least recently used entries to stay within {}",
                    gone.len(),
                    crate::progress::human_bytes(max)
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!("stage cache: pruning {}: {e}", store.root.display()),
            },
            Err(e) => tracing::warn!("stage cache: {e}"),
        }
    }
    let mut error = report.error;
    if error.is_none() && report.outcome == Outcome::Success {
        if let Some(e) = report.cleanup_errors.into_iter().next() {
            error = Some(e);
        }
    }
    Ok(Finished { code, ctx, error })
}

/// The logs of a failed build into `dest`, replacing those of an earlier failure (kiln's own:
/// nothing but these log files is ever written there).
fn save_logs(out: &Path, work: &Path, dest: &Path) {
    const LOGS: &[&str] = &[
        "build.log",
        "console.log",
        "console-first-boot.log",
        "install-console.log",
        "install-console-first-boot.log",
        "test-console.log",
        crate::boottest::FIRST_CONSOLE,
        "test-results.xml",
    ];
    if dest.is_dir()
        && std::fs::read_dir(dest).is_ok_and(|rd| {
            rd.flatten()
                .all(|e| LOGS.contains(&e.file_name().to_string_lossy().as_ref()))
        })
    {
        let _ = std::fs::remove_dir_all(dest);
    }
    if std::fs::create_dir_all(dest).is_err() {
        return;
    }
    for (src, name) in [
        (out.join("build.log"), "build.log"),
        (out.join("console.log"), "console.log"),
        (work.join("console.log"), "console.log"),
        (out.join("console-first-boot.log"), "console-first-boot.log"),
        (out.join("install-console.log"), "install-console.log"),
        (work.join("install/console.log"), "install-console.log"),
        (
            out.join("install-console-first-boot.log"),
            "install-console-first-boot.log",
        ),
        (out.join("test-console.log"), "test-console.log"),
        (work.join("test/test-console.log"), "test-console.log"),
        (
            out.join(crate::boottest::FIRST_CONSOLE),
            crate::boottest::FIRST_CONSOLE,
        ),
        (out.join("test-results.xml"), "test-results.xml"),
    ] {
        if src.is_file() && !dest.join(name).exists() {
            if name == "build.log" {
                // The logger keeps writing to the moved file.
                let _ = std::fs::rename(&src, dest.join(name));
            } else {
                let _ = std::fs::copy(&src, dest.join(name));
            }
        }
    }
}

fn remove_dir(p: &Path) {
    if let Err(e) = std::fs::remove_dir_all(p) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("could not remove {}: {e}", p.display());
        }
    }
}
