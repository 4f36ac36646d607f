//! `kiln ci RECIPES… --for ENGINE`: job definitions that build each recipe in a job of its own
//! on an engine a team already runs (GitHub Actions, GitLab CI, Buildbot, a Kubernetes Indexed
//! Job). kiln stays stateless between jobs: the remote stage cache and idempotent publishing
//! carry everything, so any job may run on any machine, and a job run twice does the work once.
//!
//! Every value that reaches a generated file is checked for its target first (recipe paths,
//! image references, cache URLs: plain characters only, so none can become an expression of the
//! engine or a shell word), then written by a real emitter: YAML through saphyr's emitter,
//! Python string literals as JSON strings. Secrets never appear: the files name the engine's
//! secret store.

mod buildbot;
mod github;
mod gitlab;
mod kubernetes;

use std::borrow::Cow;

use serde_json::Value;

/// The engines `kiln ci` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    Github,
    Gitlab,
    Buildbot,
    Kubernetes,
}

impl Engine {
    /// Where the file usually lives in a repository (or beside the master).
    pub fn default_path(self) -> &'static str {
        match self {
            Engine::Github => ".github/workflows/kiln.yml",
            Engine::Gitlab => ".gitlab-ci.yml",
            Engine::Buildbot => "master.cfg",
            Engine::Kubernetes => "kiln-job.yaml",
        }
    }
}

/// One recipe's job.
#[derive(Debug, Clone)]
pub struct Job {
    /// The recipe's path relative to the repository root, as given.
    pub recipe: String,
    /// NAME-VERSION: the job's and the artifact's name.
    pub slug: String,
    /// `x86_64` or `aarch64`: which runners can build it with KVM.
    pub arch: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// The Glance clouds its `publish.glance` names (the credentials the job needs).
    pub clouds: Vec<String>,
}

/// What the jobs share.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The container image with kiln, libvirt, qemu and libguestfs (see Containerfile).
    pub image: String,
    /// `s3://BUCKET[/PREFIX]`: the stage cache every job shares.
    pub cache_remote: Option<String>,
    /// Runner labels (GitHub `runs-on`, GitLab `tags`); empty: the engine's default.
    pub labels: Vec<String>,
    /// The repository the recipes are in (Kubernetes and Buildbot clone it).
    pub repo: Option<String>,
    /// Buildbot worker names.
    pub workers: Vec<String>,
    /// Jobs at a time (Kubernetes `parallelism`).
    pub parallel: usize,
}

/// A value that cannot go into a generated file.
#[derive(Debug, thiserror::Error)]
#[error("{what} `{value}`: {why}")]
pub struct CiError {
    pub what: &'static str,
    pub value: String,
    pub why: &'static str,
}

fn refuse(what: &'static str, value: &str, why: &'static str) -> CiError {
    CiError {
        what,
        value: value.escape_debug().to_string(),
        why,
    }
}

/// A recipe path a job may name: relative, inside the repository, plain characters (no
/// engine expression `${{ }}`/`$VAR`, no shell metacharacter, no space).
pub fn check_recipe_path(p: &str) -> Result<(), CiError> {
    const WHY: &str = "a recipe path in a job must be relative, inside the repository, of letters, digits and . _ - / only";
    let plain = !p.is_empty()
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c));
    let inside = !p.starts_with('/') && !p.split('/').any(|s| s == ".." || s.is_empty());
    if plain && inside && !p.starts_with('-') {
        Ok(())
    } else {
        Err(refuse("recipe", p, WHY))
    }
}

/// A container image reference (registry/name:tag or @digest).
pub fn check_image(s: &str) -> Result<(), CiError> {
    let ok = !s.is_empty()
        && s.len() <= 255
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:@".contains(c));
    ok.then_some(())
        .ok_or_else(|| refuse("--image", s, "not a container image reference"))
}

/// An `s3://BUCKET[/PREFIX]` cache URL.
pub fn check_cache_remote(s: &str) -> Result<(), CiError> {
    let rest = s.strip_prefix("s3://").unwrap_or("");
    let ok = !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c));
    ok.then_some(()).ok_or_else(|| {
        refuse(
            "--cache-remote",
            s,
            "expected s3://BUCKET[/PREFIX] of plain characters",
        )
    })
}

/// A runner label, worker or cloud name.
pub fn check_name(what: &'static str, s: &str) -> Result<(), CiError> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    ok.then_some(())
        .ok_or_else(|| refuse(what, s, "letters, digits and . _ - only"))
}

/// A git repository URL (https, ssh or a path).
pub fn check_repo(s: &str) -> Result<(), CiError> {
    let ok = !s.is_empty()
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:@~+".contains(c));
    ok.then_some(())
        .ok_or_else(|| refuse("--repo", s, "not a plain git URL"))
}

/// Every value of `jobs` and `settings` checked, all problems at once.
pub fn check(jobs: &[Job], s: &Settings) -> Vec<CiError> {
    let mut errs = Vec::new();
    let mut push = |r: Result<(), CiError>| {
        if let Err(e) = r {
            errs.push(e);
        }
    };
    for j in jobs {
        push(check_recipe_path(&j.recipe));
        for c in &j.clouds {
            push(check_name("cloud", c));
        }
    }
    push(check_image(&s.image));
    if let Some(c) = &s.cache_remote {
        push(check_cache_remote(c));
    }
    for l in &s.labels {
        push(check_name("--label", l));
    }
    for w in &s.workers {
        push(check_name("--worker", w));
    }
    if let Some(r) = &s.repo {
        push(check_repo(r));
    }
    errs
}

/// The file for `engine`, after [`check`] found nothing.
pub fn render(engine: Engine, jobs: &[Job], s: &Settings) -> String {
    let head = header(engine, jobs);
    match engine {
        Engine::Github => head + &yaml(&github::workflow(jobs, s)),
        Engine::Gitlab => head + &yaml(&gitlab::pipeline(jobs, s)),
        Engine::Kubernetes => head + &kubernetes::manifests(jobs, s),
        Engine::Buildbot => buildbot::master_cfg(&head, jobs, s),
    }
}

/// The comment every generated file starts with (`kiln ci` replaces only a file that has it).
pub const MARK: &str = "# Generated by kiln ci";

fn header(engine: Engine, jobs: &[Job]) -> String {
    let recipes: Vec<&str> = jobs.iter().map(|j| j.recipe.as_str()).collect();
    format!(
        "{MARK} --for {} from {}.\n# Run it again after changing the recipes; edits here are replaced.\n",
        match engine {
            Engine::Github => "github",
            Engine::Gitlab => "gitlab",
            Engine::Buildbot => "buildbot",
            Engine::Kubernetes => "kubernetes",
        },
        recipes.join(" ")
    )
}

/// The shell words of `kiln validate` over every recipe (paths already checked plain).
fn validate_command(jobs: &[Job]) -> String {
    let mut cmd = "kiln validate".to_string();
    for j in jobs {
        cmd.push(' ');
        cmd.push_str(&crate::quote::sh(&j.recipe));
    }
    cmd
}

/// The build script of one job: the recipe comes from `$KILN_RECIPE` (never spliced into the
/// text), the clouds.yaml from the file the engine's secret store provides, the services the
/// image has started by `kiln-services`.
fn build_script(s: &Settings, clouds_file: &str) -> String {
    let mut lines = vec![
        "set -eu".to_string(),
        "kiln-services".to_string(),
        format!("export OS_CLIENT_CONFIG_FILE=\"{clouds_file}\""),
    ];
    let mut build = "kiln build \"$KILN_RECIPE\" -o kiln-output".to_string();
    if s.cache_remote.is_some() {
        build.push_str(" --cache-remote \"$KILN_CACHE_REMOTE\"");
    }
    lines.push(build);
    lines.join("\n") + "\n"
}

/// The stage cache's environment every job gets besides its secrets.
fn cache_env(s: &Settings) -> Vec<(&'static str, String)> {
    s.cache_remote
        .iter()
        .map(|c| ("KILN_CACHE_REMOTE", c.clone()))
        .collect()
}

/// YAML text of `v` (a JSON tree) through saphyr's emitter, multi-line strings as literal
/// blocks; without the document marker.
pub fn yaml(v: &Value) -> String {
    let mut out = String::new();
    let mut e = saphyr::YamlEmitter::new(&mut out);
    e.multiline(true);
    e.dump(&to_yaml(v)).expect("writing to a String");
    let body = out.strip_prefix("---\n").unwrap_or(&out);
    format!("{body}\n")
}

fn to_yaml(v: &Value) -> saphyr::Yaml<'static> {
    use saphyr::{Scalar, Yaml};
    match v {
        Value::Null => Yaml::Value(Scalar::Null),
        Value::Bool(b) => Yaml::Value(Scalar::Boolean(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Yaml::Value(Scalar::Integer(i)),
            None => Yaml::Value(Scalar::FloatingPoint(n.as_f64().unwrap_or(0.0).into())),
        },
        Value::String(s) => Yaml::Value(Scalar::String(Cow::Owned(s.clone()))),
        Value::Array(a) => Yaml::Sequence(a.iter().map(to_yaml).collect()),
        Value::Object(o) => {
            let mut m = saphyr::Mapping::new();
            for (k, v) in o {
                m.insert(
                    Yaml::Value(Scalar::String(Cow::Owned(k.clone()))),
                    to_yaml(v),
                );
            }
            Yaml::Mapping(m)
        }
    }
}

#[cfg(test)]
mod tests;
