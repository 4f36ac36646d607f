//! A GitLab CI pipeline: validate, one job per recipe (`parallel: matrix`), a report.

use serde_json::{json, Value};

use super::{build_script, cache_env, validate_command, Job, Settings};

pub fn pipeline(jobs: &[Job], s: &Settings) -> Value {
    let recipes: Vec<&str> = jobs.iter().map(|j| j.recipe.as_str()).collect();
    let mut variables = serde_json::Map::new();
    for (k, v) in cache_env(s) {
        variables.insert(k.into(), json!(v));
    }
    // The CI/CD variables of the project (masked, protected): KILN_CLOUDS_YAML as a file
    // variable (its value is the path), the cache's S3 key as AWS_ACCESS_KEY_ID,
    // AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL; KILN_CACHE_SIGNING_KEY as a file variable.
    let mut build = json!({
        "stage": "build",
        "needs": ["validate"],
        "parallel": {"matrix": [{"KILN_RECIPE": recipes}]},
        "timeout": "3h",
        "script": [build_script(s, "$KILN_CLOUDS_YAML")],
        "artifacts": {
            "when": "always",
            "paths": ["kiln-output/*/manifest.json", "kiln-output/*/*.spdx.json", "kiln-output/*.failed/"],
        },
    });
    if !variables.is_empty() {
        build["variables"] = Value::Object(variables);
    }
    let mut default = json!({"image": s.image});
    if !s.labels.is_empty() {
        // Runners with /dev/kvm and a privileged executor.
        default["tags"] = json!(s.labels);
    }
    json!({
        "stages": ["validate", "build", "report"],
        "default": default,
        "validate": {"stage": "validate", "script": [validate_command(jobs)]},
        "build": build,
        "report": {
            "stage": "report",
            "when": "always",
            "needs": [{"job": "build", "artifacts": true}],
            "script": ["kiln report kiln-output"],
            "artifacts": {"when": "always", "paths": ["kiln-output/report.html"]},
        },
    })
}
