//! Kubernetes: an Indexed Job, one completion per recipe (`JOB_COMPLETION_INDEX` picks its line
//! of the recipe list, a ConfigMap), the repository cloned by an init container, KVM through a
//! device plugin (KubeVirt's `devices.kubevirt.io/kvm`), credentials from Secrets.

use serde_json::{json, Value};

use super::{build_script, cache_env, Job, Settings};

/// Memory the pod needs besides its VM: kiln, libvirtd, the libguestfs appliance.
const OVERHEAD_MIB: u64 = 1536;

fn secret(name: &str, secret: &str, key: &str) -> Value {
    json!({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
}

fn env(s: &Settings) -> Vec<Value> {
    let mut env: Vec<Value> = cache_env(s)
        .into_iter()
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect();
    if s.cache_remote.is_some() {
        env.push(secret("AWS_ACCESS_KEY_ID", "kiln-cache", "access-key-id"));
        env.push(secret(
            "AWS_SECRET_ACCESS_KEY",
            "kiln-cache",
            "secret-access-key",
        ));
        env.push(secret("AWS_ENDPOINT_URL", "kiln-cache", "endpoint"));
        env.push(json!({"name": "KILN_CACHE_SIGNING_KEY", "value": "/etc/kiln/cache/signing.key"}));
    }
    env
}

pub fn manifests(jobs: &[Job], s: &Settings) -> String {
    let list: String = jobs.iter().map(|j| format!("{}\n", j.recipe)).collect();
    let config = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "kiln-recipes"},
        "data": {"recipes": list},
    });
    let vcpus = jobs.iter().map(|j| j.vcpus).max().unwrap_or(2);
    let memory = jobs.iter().map(|j| j.memory_mib).max().unwrap_or(2048) + OVERHEAD_MIB;
    let script = format!(
        "KILN_RECIPE=$(sed -n \"$((JOB_COMPLETION_INDEX + 1))p\" /etc/kiln/recipes/recipes)\nexport KILN_RECIPE\n{}",
        build_script(s, "/etc/kiln/clouds/clouds.yaml")
    );
    let repo = s
        .repo
        .clone()
        .unwrap_or_else(|| "https://git.example.com/images.git".into());
    let mut mounts = vec![
        json!({"name": "work", "mountPath": "/work"}),
        json!({"name": "recipes", "mountPath": "/etc/kiln/recipes", "readOnly": true}),
        json!({"name": "clouds", "mountPath": "/etc/kiln/clouds", "readOnly": true}),
    ];
    let mut volumes = vec![
        json!({"name": "work", "emptyDir": {}}),
        json!({"name": "recipes", "configMap": {"name": "kiln-recipes"}}),
        json!({"name": "clouds", "secret": {"secretName": "kiln-clouds", "defaultMode": 0o400}}),
    ];
    if s.cache_remote.is_some() {
        mounts.push(json!({"name": "cache-key", "mountPath": "/etc/kiln/cache", "readOnly": true}));
        volumes.push(json!({"name": "cache-key", "secret": {"secretName": "kiln-cache-signing", "defaultMode": 0o400, "optional": true}}));
    }
    let job = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "kiln-build"},
        "spec": {
            "completionMode": "Indexed",
            "completions": jobs.len(),
            "parallelism": s.parallel.clamp(1, jobs.len().max(1)),
            "backoffLimit": jobs.len(),
            "template": {"spec": {
                "restartPolicy": "Never",
                "initContainers": [{
                    "name": "checkout",
                    "image": s.image,
                    "command": ["git", "clone", "--depth=1", "--", repo, "/work"],
                    "volumeMounts": [{"name": "work", "mountPath": "/work"}],
                }],
                "containers": [{
                    "name": "kiln",
                    "image": s.image,
                    "workingDir": "/work",
                    "command": ["/bin/sh", "-c", script],
                    "env": env(s),
                    // libvirtd and qemu in the pod.
                    "securityContext": {"privileged": true},
                    "resources": {
                        "requests": {"cpu": vcpus.to_string(), "memory": format!("{memory}Mi")},
                        "limits": {"devices.kubevirt.io/kvm": "1", "memory": format!("{memory}Mi")},
                    },
                    "volumeMounts": mounts,
                }],
                "volumes": volumes,
            }},
        },
    });
    format!("{}---\n{}", super::yaml(&config), super::yaml(&job))
}
