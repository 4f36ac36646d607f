//! `kiln ci RECIPES… --for ENGINE`: see crate::ci.

use std::path::{Path, PathBuf};

use super::*;
use crate::ci::{Engine, Job, Settings};

#[derive(clap::Args, Debug)]
pub struct CiArgs {
    /// Recipes (or directories of them), as paths relative to the repository root.
    #[arg(required = true)]
    pub recipes: Vec<PathBuf>,
    /// The engine to write for.
    #[arg(long = "for", value_enum)]
    pub engine: Engine,
    /// Where to write (default: stdout). A file there is replaced only if kiln ci wrote it.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// The container image with kiln, libvirt, qemu and libguestfs the jobs run in.
    #[arg(long, default_value = "localhost/kiln:latest")]
    pub image: String,
    /// The shared stage cache, s3://BUCKET[/PREFIX] (its endpoint and keys from the engine's
    /// secret store).
    #[arg(long)]
    pub cache_remote: Option<String>,
    /// A runner label (GitHub runs-on, GitLab tags): runners with /dev/kvm. Repeatable.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// The git repository of the recipes (Kubernetes, Buildbot clone it).
    #[arg(long)]
    pub repo: Option<String>,
    /// A Buildbot worker name. Repeatable (default: kiln-worker-1, kiln-worker-2).
    #[arg(long = "worker")]
    pub workers: Vec<String>,
    /// Builds at a time (Kubernetes parallelism; default: all).
    #[arg(short, long)]
    pub jobs: Option<usize>,
    #[command(flatten)]
    pub input: RecipeInput,
}

pub fn ci_cmd(a: CiArgs) -> i32 {
    let recipes = match super::batch::expand(&a.recipes) {
        Ok(r) => r,
        Err(e) => return usage_error(e),
    };
    let mut jobs = Vec::new();
    let mut diags = Vec::new();
    for r in &recipes {
        match load_checked(r, &a.input) {
            Ok(p) => jobs.push(job(r, &p)),
            Err(mut d) => diags.append(&mut d),
        }
    }
    if !diags.is_empty() {
        print_diagnostics(&diags);
        return exit::INVALID_INPUT;
    }
    let settings = Settings {
        image: a.image,
        cache_remote: a.cache_remote,
        labels: a.labels,
        repo: a.repo,
        workers: a.workers,
        parallel: a.jobs.unwrap_or(jobs.len()),
    };
    let errs = crate::ci::check(&jobs, &settings);
    if !errs.is_empty() {
        for e in &errs {
            errln!("error: {e}");
        }
        return exit::INVALID_INPUT;
    }
    let text = crate::ci::render(a.engine, &jobs, &settings);
    match a.output {
        None => {
            out!("{text}");
            exit::OK
        }
        Some(dest) => match write_generated(&dest, &text) {
            Ok(()) => {
                outln!("{}: {} jobs for {:?}", dest.display(), jobs.len(), a.engine);
                exit::OK
            }
            Err(e) => {
                errln!("error: {e:#}");
                exit::INVALID_INPUT
            }
        },
    }
}

fn job(path: &Path, p: &crate::plan::Plan) -> Job {
    let mut clouds: Vec<String> = p
        .publish
        .glance
        .iter()
        .filter_map(|g| g.cloud.clone())
        .collect();
    clouds.dedup();
    Job {
        recipe: path.display().to_string(),
        slug: p.slug(),
        arch: p.vm.arch.to_string(),
        vcpus: p.vm.vcpus,
        memory_mib: p.vm.memory_mib,
        clouds,
    }
}

/// `text` into `dest` (its directory made); an existing file only if kiln ci made it.
fn write_generated(dest: &Path, text: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let ours = |b: &[u8]| b.starts_with(crate::ci::MARK.as_bytes());
    super::replace_own(
        dest,
        text,
        16 << 20,
        &ours,
        "exists and kiln ci did not write it: not replaced",
    )
}
