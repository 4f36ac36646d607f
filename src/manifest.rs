//! manifest.json: what was built, from what, with which tools, how long each stage took, and
//! the outputs with their checksums. Never a secret.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::convert::{Converted, SourceSizes};

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
    pub publish_glance: Option<crate::plan::GlanceSettings>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Tools {
    pub kiln: String,
    #[serde(rename = "qemu-img")]
    pub qemu_img: String,
    pub libvirt: String,
    pub libguestfs: String,
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

/// How a stage ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StageStatus {
    Ok,
    Failed,
    Cancelled,
    Skipped,
}

/// One stage's line in the manifest.
#[derive(Debug, Clone, Serialize)]
pub struct StageRecord {
    pub name: String,
    pub status: StageStatus,
    pub seconds: f64,
}
