//! `kiln plan`, `kiln build` and `kiln publish`.

use std::path::{Path, PathBuf};

use super::*;

/// `kiln publish DIR`: every target of the recipe's `publish.glance` (or one given by
/// `--os-cloud`/`--os-region-name`), at the same time; each target's records in the manifest
/// are replaced, every other target's kept.
pub(super) fn publish_cmd(
    dir: &Path,
    cloud: Option<&str>,
    region: Option<&str>,
    name: Option<String>,
) -> i32 {
    let manifest_path = dir.join("manifest.json");
    let mut manifest = match crate::manifest::read(dir) {
        Ok(m) => m,
        Err(e) => return usage_error(format!("{} is not a kiln build ({e:#})", dir.display())),
    };
    let targets = match publish_targets(&manifest, cloud, region, name) {
        Ok(t) => t,
        Err(e) => return usage_error(format!("{}: {e}", manifest_path.display())),
    };
    let cancel = cancel_on_signals();
    let jobs: Vec<crate::parallel::Job<anyhow::Result<Vec<crate::manifest::GlancePublished>>, ()>> =
        targets
            .iter()
            .map(|t| {
                let (dir, manifest, t) = (dir.to_path_buf(), manifest.clone(), t.clone());
                let (env, cancel) = (super::tunables().glance.clone(), cancel.clone());
                Box::new(move |_: &mut dyn FnMut(())| {
                    crate::glance::publish::publish_dir(
                        &dir,
                        &manifest,
                        &t,
                        None,
                        &env,
                        &cancel,
                        &mut |_, _| {},
                    )
                }) as crate::parallel::Job<_, _>
            })
            .collect();
    let results =
        match crate::parallel::blocking_all(jobs, 4, &mut |_, _| {}, |e| Err(anyhow::anyhow!(e))) {
            Ok(r) => r,
            Err(e) => {
                errln!("error: starting the publish threads: {e}");
                return exit::BUILD_FAILED;
            }
        };
    let mut code = exit::OK;
    let mut done = Vec::new();
    for (t, r) in targets.iter().zip(results) {
        match r {
            Ok(images) => done.extend(images),
            Err(e) => {
                errln!("error: {}: {e:#}", target_name(t));
                code = code.max(publish_error_code(&e, &cancel));
            }
        }
    }
    if code != exit::OK && manifest.publish_all_or_nothing && targets.len() > 1 {
        errln!("all_or_nothing: removing what this run published to the other targets");
        undo_published(&done);
        done.clear();
    }
    print_published(&done);
    manifest.published.glance = crate::manifest::merge_glance(&manifest.published.glance, done);
    if let Err(e) = crate::manifest::write(dir, &manifest) {
        errln!("error: {e:#}");
        return exit::BUILD_FAILED;
    }
    code
}

/// Delete the images this run created (not the ones it found already there).
fn undo_published(images: &[crate::manifest::GlancePublished]) {
    for p in images.iter().filter(|p| !p.reused) {
        let gone = crate::glance::Glance::connect_in(
            Some(&p.cloud),
            p.region.as_deref(),
            &super::tunables().glance,
        )
        .and_then(|g| crate::glance::publish::delete_created(&g, &p.id));
        match gone {
            Ok(()) => errln!("  deleted {} ({}) in {}", p.id, p.name, p.cloud),
            Err(e) => errln!("  could not delete {} in {}: {e}", p.id, p.cloud),
        }
    }
}

/// The targets `kiln publish` publishes to: the recipe's (defaults when it had none), or one
/// given on the command line; `--name` renames the one format published.
fn publish_targets(
    manifest: &crate::manifest::Manifest,
    cloud: Option<&str>,
    region: Option<&str>,
    name: Option<String>,
) -> anyhow::Result<Vec<crate::plan::GlanceSettings>> {
    let mut targets = match manifest.publish_glance.as_slice() {
        [] => vec![crate::glance::publish::default_settings(manifest)?],
        recipe => recipe.to_vec(),
    };
    if cloud.is_some() || region.is_some() {
        let mut t = targets.swap_remove(0);
        if let Some(c) = cloud {
            t.cloud = Some(c.to_string());
            t.region = None;
        }
        if let Some(r) = region {
            t.region = Some(r.to_string());
        }
        targets = vec![t];
    }
    if let Some(n) = name {
        for t in &mut targets {
            anyhow::ensure!(
                t.formats.len() == 1,
                "--name needs a single published format"
            );
            t.names = [(t.formats[0].clone(), n.clone())].into();
        }
    }
    Ok(targets)
}

fn target_name(t: &crate::plan::GlanceSettings) -> String {
    format!(
        "publishing to {}{}",
        t.cloud.as_deref().unwrap_or("$OS_CLOUD"),
        t.region
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    )
}

/// 130 interrupted, 2 a user error Glance named (bad credentials, an unknown cloud), else 1.
fn publish_error_code(e: &anyhow::Error, cancel: &Cancel) -> i32 {
    let user = e
        .chain()
        .find_map(|c| c.downcast_ref::<crate::glance::GlanceError>())
        .is_some_and(|g| g.is_user_error());
    if cancel.is_cancelled() {
        exit::INTERRUPTED
    } else if user {
        exit::INVALID_INPUT
    } else {
        exit::BUILD_FAILED
    }
}

fn print_published(images: &[crate::manifest::GlancePublished]) {
    for p in images {
        outln!(
            "{} {} ({}) in {}{}: {}{}",
            if p.reused {
                "already there:"
            } else {
                "published"
            },
            p.name,
            p.id,
            p.cloud,
            p.region
                .as_deref()
                .map(|r| format!(" {r}"))
                .unwrap_or_default(),
            p.status,
            if p.rotated.is_empty() {
                String::new()
            } else {
                format!("; rotated out {}", p.rotated.join(", "))
            }
        );
    }
}

pub(super) fn plan(
    recipe: &Path,
    format: PlanFormat,
    input: &RecipeInput,
    render_dir: Option<PathBuf>,
    output: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    cache_remote: Option<String>,
) -> i32 {
    let plan = match load_checked(recipe, input) {
        Ok(p) => p,
        Err(d) => {
            print_diagnostics(&d);
            return exit::INVALID_INPUT;
        }
    };
    let out_root = out_root(output, &plan);
    let cache = cache_dir.unwrap_or_else(|| super::tunables().cache_dir.clone());
    let remote = match open_remote(remote_url(false, cache_remote.as_deref(), &plan)) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let stages = planned_stages(&plan, &out_root, &cache, remote.as_deref());
    let (_, work, _, _) = crate::pipeline::context::build_paths(
        &out_root,
        &plan.slug(),
        "PID",
        &plan.vm.uri,
        &super::tunables().vm_dir,
    );
    let render_dir = render_dir.unwrap_or_else(|| PathBuf::from(format!("{}.plan", plan.slug())));
    // The rendered files are for reading: no password hash in them, and only the owner reads.
    let shown = plan.redacted();
    let plan = &shown;
    if let Err(code) = render_plan_files(plan, &work, &render_dir) {
        return code;
    }
    match format {
        PlanFormat::Json => {
            let v = serde_json::json!({
                "plan": plan,
                "stages": stages,
                "rendered": render_dir,
            });
            outln!("{}", serde_json::to_string_pretty(&v).expect("json"));
        }
        PlanFormat::Text => print_plan_text(plan, &stages, &render_dir),
    }
    exit::OK
}

/// The templates, the provisioning script and the answer file as the build would render them,
/// into `render_dir` (private: they are for reading).
fn render_plan_files(plan: &crate::plan::Plan, work: &Path, render_dir: &Path) -> Result<(), i32> {
    let tctx = TemplateContext::new(
        plan,
        &format!("kiln-{}-XXXXXXXX", plan.name),
        crate::vocab::Engine::Tcg,
        work,
    );
    let mut rendered = Vec::new();
    for kind in Kind::ALL {
        match templates::render(plan, kind, &tctx) {
            Ok(t) => rendered.push((kind, t)),
            Err(e) => {
                print_diagnostics(&[template_diag(e)]);
                return Err(exit::INVALID_INPUT);
            }
        }
    }
    let answers = match templates::render_answers(plan) {
        Ok(a) => a,
        Err(e) => {
            print_diagnostics(&[template_diag(e)]);
            return Err(exit::INVALID_INPUT);
        }
    };
    let script = crate::seed::provision_script(&plan.provision, None);
    let write = private_dir(render_dir)
        .and_then(|_| {
            rendered
                .iter()
                .try_for_each(|(kind, text)| private_file(&render_dir.join(kind.file_name()), text))
        })
        .and_then(|_| private_file(&render_dir.join("provision.sh"), &script))
        .and_then(|_| match (&answers, &plan.source) {
            // In a subdirectory: autoinstall's file is a `user-data` too.
            (Some(a), SourcePlan::Installer(i)) => private_dir(&render_dir.join("install"))
                .and_then(|_| {
                    private_file(&render_dir.join("install").join(i.answer_file_name()), a)
                }),
            _ => Ok(()),
        });
    if let Err(e) = write {
        errln!(
            "error: writing rendered templates to {}: {e}",
            render_dir.display()
        );
        return Err(exit::BUILD_FAILED);
    }
    Ok(())
}

/// `kiln plan`'s text: elements, VM, steps, and each stage with its key and commands.
fn print_plan_text(plan: &crate::plan::Plan, stages: &[PlannedStage], render_dir: &Path) {
    outln!("{} (recipe {})", plan.slug(), plan.recipe_path.display());
    if let Some(d) = &plan.description {
        outln!("  {d}");
    }
    if plan.trusted {
        outln!("trust: trusted (--trust-recipe or KILN_TRUSTED_RECIPES): host scripts, its own domain template and host files anywhere are allowed");
    } else {
        outln!("trust: untrusted: reaches the guest, files below its directory (its elements' below theirs) and the sources it names");
    }
    outln!("elements (in order):");
    for e in &plan.elements {
        outln!("  {:<18} {}  [{}]", e.name, e.description, e.origin);
    }
    outln!(
        "vm: {} {} MiB, {} vCPU, {} firmware{}{}, accel {:?}, timeout {} s, {}",
        plan.vm.arch,
        plan.vm.memory_mib,
        plan.vm.vcpus,
        plan.vm.firmware,
        match plan.vm.firmware.files(plan.vm.arch) {
            Some(f) => format!(" ({}, variables from {})", f.code, f.vars),
            None => String::new(),
        },
        if plan.vm.tpm { ", TPM 2.0 (swtpm)" } else { "" },
        plan.vm.accel,
        plan.vm.timeout_secs,
        plan.vm.uri
    );
    outln!("provisioning steps:");
    for (i, s) in plan.provision.iter().enumerate() {
        let d = match s {
            crate::plan::ProvisionStep::Packages(p) => format!("packages: {}", p.join(" ")),
            crate::plan::ProvisionStep::Files(f) => format!(
                "files: {}",
                f.iter()
                    .map(|f| f.path.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            crate::plan::ProvisionStep::Run(c) => format!("run: {} command(s)", c.len()),
            crate::plan::ProvisionStep::Users(u) => format!(
                "users: {}",
                u.iter()
                    .map(|u| u.name.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        };
        outln!("  {}. {d}", i + 1);
    }
    outln!("stages:");
    for s in stages {
        match &s.cache {
            Some(c) if s.name == "source" => {
                outln!("  {}  (cache key {})", s.name, c.key.short())
            }
            Some(c) if c.remote => outln!(
                "  {}  (cache hit {} on the remote: pulled, none of this runs)",
                s.name,
                c.key.short()
            ),
            Some(c) if c.hit => outln!(
                "  {}  (cache hit {}: reused, none of this runs)",
                s.name,
                c.key.short()
            ),
            Some(c) => outln!("  {}  (cache miss {})", s.name, c.key.short()),
            None => outln!("  {}", s.name),
        }
        for c in &s.commands {
            outln!("      $ {c}");
        }
    }
    outln!("rendered templates: {}", render_dir.display());
}

/// `--no-cache`, `--rebuild-from STAGE`.
pub(super) struct StageCacheFlags {
    pub no_cache: bool,
    pub rebuild_from: Option<String>,
    pub until: Option<String>,
    pub refresh: bool,
    pub cache_remote: Option<String>,
}

/// The remote stage cache's URL and where it came from: `--cache-remote`, else
/// `$KILN_CACHE_REMOTE` (empty: none), else the recipe's `cache.remote`; none with --no-cache.
fn remote_url(
    no_cache: bool,
    flag: Option<&str>,
    plan: &crate::plan::Plan,
) -> Option<(String, String)> {
    if no_cache {
        return None;
    }
    if let Some(u) = flag {
        return Some((u.to_string(), "--cache-remote".into()));
    }
    match super::tunables().cache_remote.clone() {
        Some(u) if u.is_empty() => None,
        Some(u) => Some((u, "KILN_CACHE_REMOTE".into())),
        None => plan
            .cache_remote
            .clone()
            .map(|u| (u, "cache.remote in the recipe".into())),
    }
}

/// Open the remote (URL and credentials checked) before anything long starts; exit 2 if not.
fn open_remote(
    url: Option<(String, String)>,
) -> Result<Option<std::sync::Arc<crate::remotecache::Remote>>, i32> {
    let Some((url, from)) = url else {
        return Ok(None);
    };
    match crate::remotecache::Remote::open(&url, &super::tunables().s3) {
        Ok(r) => Ok(Some(std::sync::Arc::new(r))),
        Err(e) => {
            errln!("error: {from}: {e}\n  (or without it: --no-cache, or unset {from})");
            Err(exit::INVALID_INPUT)
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn build(
    recipe_path: &Path,
    output: Option<PathBuf>,
    on_error: OnError,
    input: &RecipeInput,
    cache_dir: Option<PathBuf>,
    jobs: Option<usize>,
    (no_glance, no_test): (bool, bool),
    cache_flags: StageCacheFlags,
) -> i32 {
    let mut plan = match load_checked(recipe_path, input) {
        Ok(p) => p,
        Err(d) => {
            print_diagnostics(&d);
            return exit::INVALID_INPUT;
        }
    };
    if no_glance {
        plan.publish.glance.clear();
    }
    if no_test {
        plan.test = None;
    }
    // Credentials are checked before a long build, not after it.
    for g in &plan.publish.glance {
        if let Err(e) = crate::glance::Glance::connect_in(
            g.cloud.as_deref(),
            g.region.as_deref(),
            &super::tunables().glance,
        ) {
            errln!(
                "error: publish.glance: {e}\n  (fix the cloud configuration, or build without \
                 Glance with --no-glance and publish later with `kiln publish DIR`)"
            );
            return if e.is_user_error() {
                exit::INVALID_INPUT
            } else {
                exit::BUILD_FAILED
            };
        }
    }
    // The remote cache is opened (URL and credentials checked) before a long build, too.
    let remote = match open_remote(remote_url(
        cache_flags.no_cache,
        cache_flags.cache_remote.as_deref(),
        &plan,
    )) {
        Ok(r) => r,
        Err(code) => return code,
    };
    // A build must be able to clean up when interrupted: no handler, no build.
    let cancel = match try_cancel_on_signals() {
        Ok(c) => c,
        Err(e) => {
            errln!("error: cannot install signal handler: {e}");
            return exit::BUILD_FAILED;
        }
    };
    let out_root = out_root(output, &plan);
    // Refused before anything starts: kiln replaces only what it made.
    if let Err(e) =
        crate::outdir::check_replaceable(&out_root.join(plan.slug()), &plan.name, &plan.version)
    {
        return usage_error(e);
    }
    let opts = crate::build::Options {
        out_root,
        cache_dir: cache_dir.unwrap_or_else(|| super::tunables().cache_dir.clone()),
        keep_on_error: on_error == OnError::Keep,
        jobs: jobs.unwrap_or_else(crate::convert::default_jobs),
        no_cache: cache_flags.no_cache,
        rebuild_from: cache_flags.rebuild_from,
        until: cache_flags.until,
        refresh: cache_flags.refresh,
        remote,
        tunables: super::tunables().clone(),
    };
    match crate::build::run(plan, &opts, &cancel) {
        Err(e) => {
            errln!("error: {e:#}");
            exit::BUILD_FAILED
        }
        Ok(f) => report(&f),
    }
}

/// What a finished build tells its user: where its result is (or why not), its sizes and
/// stages, random passwords once, and where the logs of a failure are.
fn report(f: &crate::build::Finished) -> i32 {
    match f.code {
        exit::OK if f.ctx.env.until.is_some() && f.ctx.made.published.is_none() => {
            report_until(f)
        }
        exit::OK => report_built(f),
        exit::INTERRUPTED => match &f.ctx.made.published {
            // The signal came once the catalog had the complete build.
            Some(dir) => errln!(
                "interrupted: {} is complete in the catalog; the stages after publish did not run (kiln publish DIR does the Glance part)",
                dir.display()
            ),
            None => errln!("interrupted: the build was cleaned up"),
        },
        _ => {}
    }
    // Once the image is in the catalog its random passwords are needed, even when a
    // later stage (Glance) failed; they are printed here once and kept nowhere.
    if f.ctx.made.published.is_some() {
        for s in &f.ctx.secrets {
            outln!("  random password {s}  (shown once: kiln keeps no copy)");
        }
    }
    if let Some(e) = &f.error {
        if f.code == exit::OK {
            // The build is complete but its cleanup failed: not said before.
            errln!("error: {e:#}");
            return exit::BUILD_FAILED;
        }
        // The whole error was logged when the stage failed, before the cleanup.
        let logs = match f.ctx.env.keep_on_error {
            true => f.ctx.env.staging.display().to_string(),
            false => f
                .ctx
                .env
                .final_dir
                .with_file_name(format!("{}.failed", f.ctx.env.plan.slug()))
                .display()
                .to_string(),
        };
        errln!("error: {e}; the cause is above, the logs are in {logs}");
    }
    f.code
}

/// `--until STAGE`: nothing published; the stage's result is its cache entry.
fn report_until(f: &crate::build::Finished) {
    let stage = f.ctx.env.until.clone().unwrap_or_default();
    let key = f
        .ctx
        .records
        .iter()
        .find(|r| r.name == stage)
        .and_then(|r| r.key.clone());
    match (key, &f.ctx.cache.store) {
            (Some(k), Some(store)) => {
                let entry = store.root.join(&k);
                outln!("stopped after {stage} (--until): nothing published; its result is the stage cache entry {k}");
                if stage == "convert" {
                    outln!("  {}", entry.join("output").display());
                } else {
                    outln!("  {} (a qcow2 overlay: inspect it read-only, e.g. guestfish --ro -a FILE -i)", entry.join("disk.qcow2").display());
                }
            }
            _ => outln!("stopped after {stage} (--until): nothing published (this source's stages are not cached)"),
        }
}

/// A complete build: its directory, sizes, Glance images and stage times.
fn report_built(f: &crate::build::Finished) {
    let dir = f.ctx.made.published.clone().unwrap_or_default();
    outln!("built {}", dir.display());
    if let Some(src) = &f.ctx.made.source_disk {
        print_size_row(
            "(build disk)",
            &src.format,
            src.size,
            src.allocated_size,
            src.virtual_size,
        );
    }
    for o in &f.ctx.made.outputs {
        print_size_row(&o.path, &o.format, o.size, o.allocated_size, o.virtual_size);
    }
    for p in &f.ctx.made.glance_published {
        outln!(
            "  glance: {} {} ({}, {}) {}",
            p.name,
            p.id,
            p.cloud,
            p.status,
            if p.reused {
                "already there"
            } else {
                "uploaded"
            }
        );
    }
    outln!("  stages:");
    for r in &f.ctx.records {
        let note = if r.reused {
            "  (reused from the stage cache)"
        } else {
            ""
        };
        outln!("    {:<11} {:>7.1} s{note}", r.name, r.seconds);
    }
}

/// The catalog directory: `-o`, else the recipe's publish.local.dir, else ./kiln-output.
pub(super) fn out_root(output: Option<PathBuf>, plan: &Plan) -> PathBuf {
    output
        .or_else(|| plan.publish.local_dir.clone())
        .unwrap_or_else(|| PathBuf::from("kiln-output"))
}

/// A directory only its owner can enter (created if needed; an existing one is narrowed).
fn private_dir(dir: &Path) -> std::io::Result<()> {
    crate::hostfile::own_dir(dir, 0o700)
}

/// A file only its owner can read, replaced whole (never written through a link).
fn private_file(path: &Path, text: &str) -> std::io::Result<()> {
    crate::hostfile::replace_file(path, text.as_bytes(), 0o600)
}
