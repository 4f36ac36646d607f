//! A GitHub Actions workflow: validate every recipe, then one job per recipe (a matrix), each
//! uploading its manifest, SBOM and logs, and a report job that renders `kiln report` of them all.

use serde_json::{json, Value};

use super::{build_script, cache_env, validate_command, Job, Settings};

/// Secrets in the repository's store: the clouds.yaml the publish step uses, the cache's S3 key
/// and the key pushes are signed with.
fn secret_env(s: &Settings) -> serde_json::Map<String, Value> {
    let mut env = serde_json::Map::new();
    env.insert("KILN_RECIPE".into(), json!("${{ matrix.recipe }}"));
    env.insert(
        "KILN_CLOUDS_YAML".into(),
        json!("${{ secrets.KILN_CLOUDS_YAML }}"),
    );
    if s.cache_remote.is_some() {
        for (k, v) in cache_env(s) {
            env.insert(k.into(), json!(v));
        }
        env.insert(
            "AWS_ACCESS_KEY_ID".into(),
            json!("${{ secrets.KILN_CACHE_ACCESS_KEY_ID }}"),
        );
        env.insert(
            "AWS_SECRET_ACCESS_KEY".into(),
            json!("${{ secrets.KILN_CACHE_SECRET_ACCESS_KEY }}"),
        );
        env.insert(
            "AWS_ENDPOINT_URL".into(),
            json!("${{ secrets.KILN_CACHE_ENDPOINT }}"),
        );
        env.insert(
            "KILN_CACHE_SIGNING_SECRET".into(),
            json!("${{ secrets.KILN_CACHE_SIGNING_KEY }}"),
        );
        env.insert(
            "KILN_CACHE_TRUSTED_KEYS".into(),
            json!("${{ secrets.KILN_CACHE_TRUSTED_KEYS }}"),
        );
    }
    env
}

fn runs_on(s: &Settings) -> Value {
    if s.labels.is_empty() {
        // GitHub's hosted Linux runners have /dev/kvm.
        json!("ubuntu-latest")
    } else {
        json!(s.labels)
    }
}

/// Secrets into files only the job's user reads, then the build.
fn script(s: &Settings) -> String {
    let prelude = [
        "set -eu",
        "umask 077",
        "printf '%s\\n' \"$KILN_CLOUDS_YAML\" > \"$RUNNER_TEMP/clouds.yaml\"",
        "if [ -n \"${KILN_CACHE_SIGNING_SECRET:-}\" ]; then",
        "  printf '%s\\n' \"$KILN_CACHE_SIGNING_SECRET\" > \"$RUNNER_TEMP/cache-signing.key\"",
        "  export KILN_CACHE_SIGNING_KEY=\"$RUNNER_TEMP/cache-signing.key\"",
        "fi",
        "unset KILN_CLOUDS_YAML KILN_CACHE_SIGNING_SECRET",
    ];
    let prelude: Vec<&str> = if s.cache_remote.is_some() {
        prelude.to_vec()
    } else {
        vec![prelude[0], prelude[1], prelude[2], "unset KILN_CLOUDS_YAML"]
    };
    prelude.join("\n") + "\n" + &build_script(s, "$RUNNER_TEMP/clouds.yaml")
}

pub fn workflow(jobs: &[Job], s: &Settings) -> Value {
    let include: Vec<Value> = jobs
        .iter()
        .map(|j| json!({"recipe": j.recipe, "image": j.slug, "arch": j.arch}))
        .collect();
    // libvirtd and qemu inside the job's container: privileged, with the runner's KVM.
    let container = json!({"image": s.image, "options": "--privileged --device /dev/kvm"});
    json!({
        "name": "kiln",
        "on": {"push": {"branches": ["main"]}, "workflow_dispatch": {}},
        "permissions": {"contents": "read"},
        "jobs": {
            "validate": {
                "runs-on": "ubuntu-latest",
                "container": {"image": s.image},
                "steps": [
                    {"uses": "actions/checkout@v4"},
                    {"run": validate_command(jobs)},
                ],
            },
            "build": {
                "needs": "validate",
                "name": "${{ matrix.image }}",
                "runs-on": runs_on(s),
                "container": container,
                "timeout-minutes": 180,
                "strategy": {"fail-fast": false, "matrix": {"include": include}},
                "steps": [
                    {"uses": "actions/checkout@v4"},
                    {"name": "kiln build", "env": secret_env(s), "run": script(s)},
                    {
                        "uses": "actions/upload-artifact@v4",
                        "if": "always()",
                        "with": {
                            "name": "kiln-${{ matrix.image }}",
                            "path": "kiln-output/*/manifest.json\nkiln-output/*/*.spdx.json\nkiln-output/*.failed/\n",
                            "if-no-files-found": "ignore",
                        },
                    },
                ],
            },
            "report": {
                "needs": "build",
                "if": "always()",
                "runs-on": "ubuntu-latest",
                "container": {"image": s.image},
                "steps": [
                    {
                        "uses": "actions/download-artifact@v4",
                        "with": {"pattern": "kiln-*", "path": "kiln-output", "merge-multiple": true},
                    },
                    {"run": "kiln report kiln-output"},
                    {
                        "uses": "actions/upload-artifact@v4",
                        "with": {"name": "kiln-report", "path": "kiln-output/report.html"},
                    },
                ],
            },
        },
    })
}
