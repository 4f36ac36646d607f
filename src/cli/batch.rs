//! `kiln build` with several recipes: each is built by a `kiln build` process of its own (its
//! own staging directory, domain names, build log and signal handling, as if run by hand),
//! `--jobs` at a time; their lines are relayed with the build's name in front, and one summary
//! table ends the run. The stage cache is shared as between any two builds: locked per key.

use std::ffi::OsString;
use std::io::BufRead;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use super::*;

/// The global flags a child build gets too.
#[derive(Clone, Copy, Debug)]
pub(super) struct Global {
    pub verbose: bool,
    pub log_format: LogFormat,
}

pub(super) fn build_cmd(args: BuildArgs, global: Global) -> i32 {
    let recipes = match expand(&args.recipes) {
        Ok(r) => r,
        Err(e) => return usage_error(e),
    };
    match recipes.as_slice() {
        [one] if !args.recipes[0].is_dir() => single(one, args),
        _ => several(recipes, args, global),
    }
}

/// One recipe: built in this process.
fn single(recipe: &Path, a: BuildArgs) -> i32 {
    build(
        recipe,
        a.output,
        a.on_error,
        &a.input,
        a.cache_dir,
        a.convert_jobs.map(usize::from),
        (a.no_glance, a.no_test),
        StageCacheFlags {
            no_cache: a.no_cache,
            rebuild_from: a.rebuild_from,
            until: a.until,
            refresh: a.refresh,
            cache_remote: a.cache_remote,
        },
    )
}

/// The recipes named: files as given, a directory's `*.yaml` and `*.yml` files (not below it:
/// elements live there) in name order. Each recipe once.
pub(super) fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out: Vec<PathBuf> = Vec::new();
    for p in paths {
        if p.is_dir() {
            let rd = std::fs::read_dir(p).map_err(|e| format!("{}: {e}", p.display()))?;
            let mut found: Vec<PathBuf> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|f| f.is_file() && f.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            if found.is_empty() {
                return Err(format!("{}: no *.yaml or *.yml recipe in it", p.display()));
            }
            found.sort();
            out.extend(found);
        } else {
            out.push(p.clone());
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| seen.insert(p.clone()));
    Ok(out)
}

/// How many builds fit at once: each build's VM wants its vCPUs (a TCG guest keeps most of
/// them busy) and its memory; three quarters of the available memory are given out. At least
/// one, at most one per recipe.
pub(super) fn default_parallel(vms: &[(u32, u64)], cores: usize, mem_available_mib: u64) -> usize {
    let vcpus = vms.iter().map(|v| v.0.max(1) as usize).max().unwrap_or(1);
    let mem = vms.iter().map(|v| v.1.max(1)).max().unwrap_or(1);
    let by_cores = cores / vcpus;
    let by_mem = (mem_available_mib * 3 / 4 / mem) as usize;
    by_cores.min(by_mem).clamp(1, vms.len().max(1))
}

/// MemAvailable from /proc/meminfo, in MiB (none: no bound from memory).
fn mem_available_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024)
}

/// The `kiln` arguments that build `recipe` alone with the flags given for all.
pub(super) fn child_argv(global: Global, a: &BuildArgs, recipe: &Path) -> Vec<OsString> {
    let mut v: Vec<OsString> = Vec::new();
    let mut push = |s: &str| v.push(s.into());
    if global.verbose {
        push("--verbose");
    }
    if global.log_format == LogFormat::Json {
        push("--log-format");
        push("json");
    }
    push("build");
    if a.on_error == OnError::Keep {
        push("--on-error");
        push("keep");
    }
    for (k, val) in &a.input.vars {
        push("--var");
        push(&format!("{k}={val}"));
    }
    for (flag, on) in [
        ("--trust-recipe", a.input.trust_recipe),
        ("--no-glance", a.no_glance),
        ("--no-test", a.no_test),
        ("--no-cache", a.no_cache),
        ("--refresh", a.refresh),
    ] {
        if on {
            push(flag);
        }
    }
    if let Some(n) = a.convert_jobs {
        push("--convert-jobs");
        push(&n.to_string());
    }
    for (flag, value) in [
        ("--rebuild-from", &a.rebuild_from),
        ("--until", &a.until),
        ("--cache-remote", &a.cache_remote),
    ] {
        if let Some(x) = value {
            push(flag);
            push(x);
        }
    }
    for (flag, path) in [("--output", &a.output), ("--cache-dir", &a.cache_dir)] {
        if let Some(p) = path {
            v.push(flag.into());
            v.push(p.into());
        }
    }
    // After `--`: a recipe named like a flag stays a recipe.
    v.push("--".into());
    v.push(recipe.into());
    v
}

/// How one build of several ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    Built,
    Failed(i32),
    Interrupted,
    /// Not started: an earlier build failed (no --keep-going) or the run was interrupted.
    Skipped,
}

struct Done {
    recipe: PathBuf,
    slug: String,
    dir: PathBuf,
    outcome: Outcome,
    seconds: f64,
}

struct Running {
    index: usize,
    child: Child,
    started: Instant,
    /// Signals passed on to it so far.
    signalled: usize,
    relays: Vec<std::thread::JoinHandle<()>>,
}

fn several(recipes: Vec<PathBuf>, a: BuildArgs, global: Global) -> i32 {
    // Every recipe is checked first, and every problem of every recipe shown at once.
    let mut plans = Vec::new();
    let mut diags = Vec::new();
    for r in &recipes {
        match load_checked(r, &a.input) {
            Ok(p) => plans.push(p),
            Err(mut d) => diags.append(&mut d),
        }
    }
    if !diags.is_empty() {
        print_diagnostics(&diags);
        return exit::INVALID_INPUT;
    }
    let dirs: Vec<PathBuf> = plans
        .iter()
        .map(|p| out_root(a.output.clone(), p).join(p.slug()))
        .collect();
    if let Some(e) = same_directory(&recipes, &dirs) {
        return usage_error(e);
    }
    let vms: Vec<(u32, u64)> = plans
        .iter()
        .map(|p| (p.vm.vcpus, p.vm.memory_mib))
        .collect();
    let jobs = a.jobs.map(usize::from).unwrap_or_else(|| {
        default_parallel(
            &vms,
            crate::convert::default_jobs(),
            mem_available_mib().unwrap_or(u64::MAX / 4),
        )
    });
    let cancel = match try_cancel_on_signals() {
        Ok(c) => c,
        Err(e) => {
            errln!("error: cannot install signal handler: {e}");
            return exit::BUILD_FAILED;
        }
    };
    tracing::info!(
        "building {} recipes, {} at a time{}",
        recipes.len(),
        jobs.min(recipes.len()),
        if a.keep_going {
            ", going on after a failure"
        } else {
            ""
        }
    );
    let slugs: Vec<String> = plans.iter().map(|p| p.slug()).collect();
    let t0 = Instant::now();
    let done = run_all(&recipes, &slugs, &dirs, &a, global, jobs, &cancel);
    print_summary(&done, jobs, t0.elapsed().as_secs_f64());
    batch_exit(&done)
}

/// Two recipes building into one catalog directory would replace each other's image.
fn same_directory(recipes: &[PathBuf], dirs: &[PathBuf]) -> Option<String> {
    for (i, d) in dirs.iter().enumerate() {
        if let Some(j) = dirs[..i].iter().position(|e| e == d) {
            return Some(format!(
                "{} and {} both build {}: give one another name or version",
                recipes[j].display(),
                recipes[i].display(),
                d.display()
            ));
        }
    }
    None
}

fn run_all(
    recipes: &[PathBuf],
    slugs: &[String],
    dirs: &[PathBuf],
    a: &BuildArgs,
    global: Global,
    jobs: usize,
    cancel: &Cancel,
) -> Vec<Done> {
    let mut outcome: Vec<Option<(Outcome, f64)>> = vec![None; recipes.len()];
    let mut running: Vec<Running> = Vec::new();
    let mut next = 0;
    let mut failed = false;
    loop {
        let stop_starting = cancel.is_cancelled() || (failed && !a.keep_going);
        while !stop_starting && running.len() < jobs && next < recipes.len() {
            match start(global, a, next, &recipes[next], &slugs[next]) {
                Ok(r) => running.push(r),
                Err(e) => {
                    errln!(
                        "error: starting the build of {}: {e}",
                        recipes[next].display()
                    );
                    outcome[next] = Some((Outcome::Failed(exit::BUILD_FAILED), 0.0));
                    failed = true;
                }
            }
            next += 1;
        }
        // Each signal this process got goes on, once, to every build still running.
        let seen = process::signals();
        for r in &mut running {
            while r.signalled < seen {
                // SAFETY: kill(2) on a child we have not reaped yet.
                unsafe { libc::kill(r.child.id() as i32, libc::SIGINT) };
                r.signalled += 1;
            }
        }
        let mut i = 0;
        while i < running.len() {
            match running[i].child.try_wait() {
                Ok(Some(status)) => {
                    let r = running.swap_remove(i);
                    for t in r.relays {
                        let _ = t.join();
                    }
                    let o = match status.code() {
                        Some(0) => Outcome::Built,
                        Some(exit::INTERRUPTED) => Outcome::Interrupted,
                        Some(c) => Outcome::Failed(c),
                        None => Outcome::Failed(exit::BUILD_FAILED),
                    };
                    if !matches!(o, Outcome::Built) {
                        failed = true;
                        if !a.keep_going && next < recipes.len() && !cancel.is_cancelled() {
                            tracing::warn!(
                                "{} did not build: no more builds start (--keep-going would start them)",
                                slugs[r.index]
                            );
                        }
                    }
                    outcome[r.index] = Some((o, r.started.elapsed().as_secs_f64()));
                }
                _ => i += 1,
            }
        }
        let starting_done =
            next >= recipes.len() || cancel.is_cancelled() || (failed && !a.keep_going);
        if running.is_empty() && starting_done {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    recipes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let (o, s) = outcome[i].clone().unwrap_or((Outcome::Skipped, 0.0));
            Done {
                recipe: r.clone(),
                slug: slugs[i].clone(),
                dir: dirs[i].clone(),
                outcome: o,
                seconds: s,
            }
        })
        .collect()
}

/// A child `kiln build` of one recipe: in a process group of its own (a terminal's Ctrl-C
/// reaches this process, which passes each signal on exactly once: a second one would make
/// the child hurry), told to clean up if this process dies; its lines relayed with its name.
fn start(
    global: Global,
    a: &BuildArgs,
    index: usize,
    recipe: &Path,
    slug: &str,
) -> std::io::Result<Running> {
    let exe = std::env::current_exe()?;
    let argv = child_argv(global, a, recipe);
    tracing::debug!(target: "kiln::command", "running: {} {:?}", exe.display(), argv);
    let mut cmd = Process::new(exe);
    cmd.args(&argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    tracing::info!("{slug}: building {} (pid {})", recipe.display(), child.id());
    let json = global.log_format == LogFormat::Json;
    let err = child.stderr.take().expect("piped");
    let out = child.stdout.take().expect("piped");
    let (s1, s2) = (slug.to_string(), slug.to_string());
    let relays = vec![
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                errln!("{}", relayed(&s1, &line, json));
            }
        }),
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                outln!("[{s2}] {line}");
            }
        }),
    ];
    Ok(Running {
        index,
        child,
        started: Instant::now(),
        signalled: 0,
        relays,
    })
}

/// A child's log line as this process prints it: `[NAME] line`, or with `--log-format json`
/// the JSON object with a `build` field (a line that is not one is wrapped as its message).
pub(super) fn relayed(slug: &str, line: &str, json: bool) -> String {
    if !json {
        return format!("[{slug}] {line}");
    }
    let mut v = match serde_json::from_str::<serde_json::Value>(line) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => {
            let mut m = serde_json::Map::new();
            m.insert("message".into(), line.into());
            m
        }
    };
    v.insert("build".into(), slug.into());
    serde_json::Value::Object(v).to_string()
}

/// 0: every build built; 130: interrupted; 1 otherwise.
fn batch_exit(done: &[Done]) -> i32 {
    if done.iter().all(|d| d.outcome == Outcome::Built) {
        exit::OK
    } else if done.iter().any(|d| d.outcome == Outcome::Interrupted) {
        exit::INTERRUPTED
    } else {
        exit::BUILD_FAILED
    }
}

/// One row of the summary: what the build's manifest says it made and where it went.
fn summary_row(d: &Done) -> [String; 6] {
    let (result, outputs, published) = match &d.outcome {
        Outcome::Built => match crate::manifest::read(&d.dir) {
            Ok(m) => (
                "ok".to_string(),
                m.outputs
                    .iter()
                    .map(|o| o.path.clone())
                    .collect::<Vec<_>>()
                    .join(" "),
                m.published
                    .glance
                    .iter()
                    .map(|g| format!("{}:{}", g.cloud, g.id))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            Err(e) => (format!("ok (manifest: {e})"), String::new(), String::new()),
        },
        Outcome::Failed(c) => (
            format!("failed (exit {c})"),
            format!("logs: {}.failed", d.dir.display()),
            String::new(),
        ),
        Outcome::Interrupted => ("interrupted".into(), String::new(), String::new()),
        Outcome::Skipped => ("not started".into(), String::new(), String::new()),
    };
    [
        d.recipe.display().to_string(),
        d.slug.clone(),
        result,
        format!("{:.1}", d.seconds),
        if outputs.is_empty() {
            "-".into()
        } else {
            outputs
        },
        if published.is_empty() {
            "-".into()
        } else {
            published
        },
    ]
}

fn print_summary(done: &[Done], jobs: usize, seconds: f64) {
    let built = done.iter().filter(|d| d.outcome == Outcome::Built).count();
    outln!(
        "{built} of {} built, {} at a time, in {seconds:.1} s",
        done.len(),
        jobs.min(done.len())
    );
    let head = [
        "RECIPE",
        "BUILD",
        "RESULT",
        "SECONDS",
        "OUTPUTS",
        "PUBLISHED (cloud:id)",
    ]
    .map(String::from);
    let rows: Vec<[String; 6]> = std::iter::once(head)
        .chain(done.iter().map(summary_row))
        .map(|r| r.map(|c| safe(&c).into_owned()))
        .collect();
    let width: Vec<usize> = (0..6)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for r in &rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i == 5 {
                line.push_str(c);
            } else if i == 3 {
                line.push_str(&format!("{c:>w$}  ", w = width[i]));
            } else {
                line.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        outln!("{}", line.trim_end());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parsed(args: &[&str]) -> (Global, BuildArgs) {
        let cli = Cli::try_parse_from(std::iter::once("kiln").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let Command::Build(b) = cli.command else {
            panic!("not a build")
        };
        (
            Global {
                verbose: cli.verbose,
                log_format: cli.log_format,
            },
            *b,
        )
    }

    #[test]
    fn a_child_gets_every_flag_and_one_recipe() {
        for args in [
            &["build", "a.yaml", "b.yaml"][..],
            &[
                "-v",
                "--log-format",
                "json",
                "build",
                "a.yaml",
                "dir",
                "-j",
                "2",
                "-k",
                "-o",
                "out dir",
                "--on-error",
                "keep",
                "--var",
                "x=1 2",
                "--var",
                "y=$(z)",
                "--trust-recipe",
                "--cache-dir",
                "/c",
                "--convert-jobs",
                "3",
                "--no-glance",
                "--no-test",
                "--rebuild-from",
                "sysprep",
                "--cache-remote",
                "s3://b/p",
            ][..],
            &[
                "build",
                "a.yaml",
                "b.yaml",
                "--until",
                "provision",
                "--refresh",
            ][..],
            &["build", "a.yaml", "b.yaml", "--no-cache"][..],
        ] {
            let (g, a) = parsed(args);
            let argv = child_argv(g, &a, Path::new("-odd name.yaml"));
            let argv: Vec<String> = argv
                .iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect();
            let mut back: Vec<&str> = argv.iter().map(String::as_str).collect();
            back.insert(0, "kiln");
            let cli = Cli::try_parse_from(&back).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
            assert_eq!(cli.verbose, g.verbose);
            assert_eq!(cli.log_format, g.log_format);
            let Command::Build(child) = cli.command else {
                panic!()
            };
            // The same flags; one recipe; no -j or -k (a child builds one recipe).
            let want = BuildArgs {
                recipes: vec![PathBuf::from("-odd name.yaml")],
                jobs: None,
                keep_going: false,
                ..a.clone()
            };
            assert_eq!(*child, want, "{argv:?}");
        }
    }

    #[test]
    fn directories_give_their_recipes_in_order_once() {
        let d = tempfile::tempdir().unwrap();
        for f in ["b.yaml", "a.yml", "notes.txt", "elements/x/element.yaml"] {
            let p = d.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "").unwrap();
        }
        let got = expand(&[d.path().to_path_buf(), d.path().join("b.yaml")]).unwrap();
        assert_eq!(got, [d.path().join("a.yml"), d.path().join("b.yaml")]);
        let empty = d.path().join("elements");
        assert!(expand(&[empty]).unwrap_err().contains("no *.yaml"));
    }

    #[test]
    fn builds_at_once_follow_cores_and_memory() {
        // (vms, cores, MiB available, expected)
        type Case = (&'static [(u32, u64)], usize, u64, usize);
        let cases: &[Case] = &[
            (&[(2, 2048), (2, 2048)], 2, 24 * 1024, 1),
            (&[(2, 2048), (2, 2048), (2, 2048)], 8, 24 * 1024, 3),
            (&[(2, 2048); 8], 16, 8 * 1024, 3),
            (&[(4, 1024), (1, 8192)], 8, 64 * 1024, 2),
            (&[(2, 2048)], 1, 512, 1),
            (&[(1, 512); 4], 64, 1 << 20, 4),
        ];
        for (vms, cores, mem, want) in cases {
            assert_eq!(
                default_parallel(vms, *cores, *mem),
                *want,
                "{vms:?} {cores} {mem}"
            );
        }
    }

    #[test]
    fn relayed_lines_name_their_build() {
        assert_eq!(relayed("d-1.0", " INFO x", false), "[d-1.0]  INFO x");
        let j: serde_json::Value =
            serde_json::from_str(&relayed("d-1.0", r#"{"level":"INFO","fields":{}}"#, true))
                .unwrap();
        assert_eq!(j["build"], "d-1.0");
        assert_eq!(j["level"], "INFO");
        let j: serde_json::Value =
            serde_json::from_str(&relayed("d-1.0", "not json", true)).unwrap();
        assert_eq!(j["message"], "not json");
    }

    #[test]
    fn two_recipes_of_one_directory_are_refused() {
        let r = [PathBuf::from("a.yaml"), PathBuf::from("b.yaml")];
        let d = [PathBuf::from("out/x-1"), PathBuf::from("out/x-1")];
        assert!(same_directory(&r, &d)
            .unwrap()
            .contains("a.yaml and b.yaml both build out/x-1"));
        let d = [PathBuf::from("out/x-1"), PathBuf::from("out/y-1")];
        assert!(same_directory(&r, &d).is_none());
    }
}
