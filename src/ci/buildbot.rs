//! A Buildbot master.cfg: one builder per recipe, each able to run on every worker (each worker
//! has its own checkout, output and local cache; the remote stage cache is shared), a force
//! scheduler and a scheduler on the repository's main branch. The recipes, workers and settings
//! are one JSON document in the file, read by `json.loads` (a JSON string is a Python string
//! literal: no value is spliced into Python code). Secrets come from Buildbot's SecretInAFile
//! provider, a directory beside the master (`KILN_BUILDBOT_SECRETS`).

use serde_json::json;

use super::{Job, Settings};

pub fn master_cfg(head: &str, jobs: &[Job], s: &Settings) -> String {
    let builders: Vec<serde_json::Value> = jobs
        .iter()
        .map(|j| json!({"name": j.slug, "recipe": j.recipe}))
        .collect();
    let workers = if s.workers.is_empty() {
        vec!["kiln-worker-1".to_string(), "kiln-worker-2".to_string()]
    } else {
        s.workers.clone()
    };
    let settings = json!({
        "builders": builders,
        "workers": workers,
        "repo": s.repo.clone().unwrap_or_else(|| "https://git.example.com/images.git".into()),
        "cache_remote": s.cache_remote,
        "validate": jobs.iter().map(|j| j.recipe.clone()).collect::<Vec<_>>(),
    });
    let literal = serde_json::to_string(&settings.to_string()).expect("a string");
    format!("{head}{}", BODY.replace("@KILN@", &literal))
}

const BODY: &str = r#"import os
import json

from buildbot.plugins import changes, schedulers, secrets, steps, util, worker

KILN = json.loads(@KILN@)
HERE = os.path.dirname(os.path.abspath(__file__))
SECRETS = os.environ.get("KILN_BUILDBOT_SECRETS", os.path.join(HERE, "secrets"))


def secret_file(name):
    with open(os.path.join(SECRETS, name)) as f:
        return f.read().strip()


c = BuildmasterConfig = {}
c["title"] = "kiln images"
c["buildbotNetUsageData"] = None
c["buildbotURL"] = os.environ.get("KILN_BUILDBOT_URL", "http://localhost:8010/")
c["www"] = {"port": int(os.environ.get("KILN_BUILDBOT_WWW_PORT", "8010"))}
c["protocols"] = {"pb": {"port": os.environ.get("KILN_BUILDBOT_PB", "tcp:9989:interface=127.0.0.1")}}
c["db"] = {"db_url": os.environ.get("KILN_BUILDBOT_DB", "sqlite:///state.sqlite")}
c["secretsProviders"] = [secrets.SecretInAFile(dirname=SECRETS)]
# One kiln build at a time per worker: its VM takes the worker's cores and memory.
c["workers"] = [worker.Worker(w, secret_file("worker-" + w), max_builds=1) for w in KILN["workers"]]
c["change_source"] = [changes.GitPoller(KILN["repo"], branches=["main"], pollInterval=300)]

# The job's secrets: the cache's S3 key, the key pushes are signed with, the clouds.yaml of the
# publish targets (written 0600 into the build directory, removed after).
env = {"KILN_RECIPE": util.Property("kiln_recipe")}
if KILN["cache_remote"]:
    env.update({
        "KILN_CACHE_REMOTE": KILN["cache_remote"],
        "AWS_ACCESS_KEY_ID": util.Secret("cache-access-key-id"),
        "AWS_SECRET_ACCESS_KEY": util.Secret("cache-secret-access-key"),
        "AWS_ENDPOINT_URL": util.Secret("cache-endpoint"),
    })
env["OS_CLIENT_CONFIG_FILE"] = util.Interpolate("%(prop:builddir)s/clouds.yaml")


def factory(recipe):
    f = util.BuildFactory()
    f.addStep(steps.Git(repourl=KILN["repo"], mode="full", method="clobber", branch="main"))
    f.addStep(steps.SetProperty(property="kiln_recipe", value=recipe))
    f.addStep(steps.StringDownload(util.Secret("clouds.yaml"), workerdest="../clouds.yaml", mode=0o600))
    build = ["kiln", "build", util.Property("kiln_recipe"), "-o", "kiln-output"]
    if KILN["cache_remote"]:
        build += ["--cache-remote", KILN["cache_remote"]]
    f.addStep(steps.ShellCommand(name="kiln build", command=build, env=env, timeout=3 * 3600))
    f.addStep(steps.ShellCommand(name="kiln report", command=["kiln", "report", "kiln-output"], alwaysRun=True))
    f.addStep(steps.ShellCommand(name="forget credentials", command=["rm", "-f", "../clouds.yaml"], alwaysRun=True))
    return f


c["builders"] = [
    util.BuilderConfig(name=b["name"], workernames=KILN["workers"], factory=factory(b["recipe"]))
    for b in KILN["builders"]
]
names = [b["name"] for b in KILN["builders"]]
c["schedulers"] = [
    schedulers.SingleBranchScheduler(name="main", change_filter=util.ChangeFilter(branch="main"), builderNames=names),
    schedulers.ForceScheduler(name="force", builderNames=names),
]
"#;
