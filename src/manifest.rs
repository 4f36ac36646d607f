//! manifest.json: what was built, from what, with which tools, how long each stage took, and
//! the outputs with their checksums. Never a secret.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::convert::{Converted, SourceSizes};
use crate::pipeline::context::{BuildContext, Tools};
use crate::pipeline::StageRecord;

#[derive(Debug, Serialize)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub recipe: String,
    pub recipe_sha256: String,
    pub built_at: u64,
    pub elements: Vec<String>,
    pub source: serde_json::Value,
    pub accelerator: String,
    pub tools: Tools,
    pub stages: Vec<StageRecord>,
    pub sysprep: BTreeMap<String, usize>,
    /// What trimming free space bought: allocated bytes of the build disk file.
    pub sparsify: Option<Sparsify>,
    pub properties: BTreeMap<String, String>,
    /// The build disk the outputs were made from (sizes summed over its backing chain).
    pub source_disk: Option<SourceSizes>,
    pub outputs: Vec<Converted>,
    pub published: serde_json::Value,
    /// The recipe's `publish.glance`, resolved (names rendered): what `kiln publish` repeats.
    pub publish_glance: Option<crate::glance::publish::Settings>,
}

impl Manifest {
    pub fn from_context(ctx: &BuildContext) -> Self {
        let plan = &ctx.plan;
        let source = match &plan.source {
            crate::plan::SourcePlan::Installer(i) => serde_json::json!({
                "installer": {
                    "kind": i.kind.as_str(),
                    "media": i.media,
                    "delivery": i.delivery,
                    "cmdline": i.cmdline,
                }
            }),
            crate::plan::SourcePlan::Bootstrap(b) => serde_json::json!({
                "bootstrap": {
                    "distro": b.distro, "suite": b.suite, "mirror": b.mirror,
                    "packages": b.packages, "cache_key": b.cache_key(),
                }
            }),
            crate::plan::SourcePlan::Image {
                url,
                path,
                checksum,
                ..
            } => serde_json::json!({
                "image": {
                    "url": url, "path": path,
                    "checksum": checksum.as_ref().map(|c| c.to_string()),
                }
            }),
        };
        Manifest {
            name: plan.name.clone(),
            version: plan.version.clone(),
            recipe: plan.recipe_path.display().to_string(),
            recipe_sha256: plan.recipe_sha256.clone(),
            built_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            elements: plan.elements.iter().map(|e| e.name.clone()).collect(),
            source,
            accelerator: match ctx.tcg {
                Some(true) => "tcg".into(),
                Some(false) => "kvm".into(),
                None => "none".into(),
            },
            tools: ctx.tools.clone(),
            stages: ctx.records.clone(),
            sysprep: ctx.sysprep_removed.iter().cloned().collect(),
            sparsify: ctx.sparsify.clone(),
            properties: plan.properties.clone(),
            source_disk: ctx.source_disk.clone(),
            outputs: ctx.outputs.clone(),
            published: serde_json::json!({
                "local": ctx.final_dir.display().to_string(),
                "glance": [],
            }),
            publish_glance: plan.publish.glance.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Sparsify {
    pub allocated_before: u64,
    pub allocated_after: u64,
}

/// Bytes a file really occupies on the host (st_blocks), what `qemu-img info` calls
/// disk size.
pub fn allocated(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .map(|m| m.blocks() * 512)
        .unwrap_or(0)
}

/// Change a written manifest.json in place, atomically (a temporary file renamed over it).
pub fn update(dir: &std::path::Path, f: impl FnOnce(&mut serde_json::Value)) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let path = dir.join("manifest.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    f(&mut v);
    let tmp = dir.join(".manifest.json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&v)? + "\n")
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}
