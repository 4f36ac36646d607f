//! manifest.json: what was built, from what, with which tools, how long each stage took, and
//! the outputs with their checksums. Never a secret.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::convert::{Converted, SourceSizes};

/// manifest.json, read and written as this type (fields a build of another version lacks
/// take their defaults).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub recipe: String,
    pub recipe_sha256: String,
    pub built_at: u64,
    pub elements: Vec<String>,
    pub source: serde_json::Value,
    pub accelerator: String,
    /// The virtual CPU the build and test VMs had (`host`, `max`, `x86-64-v2`, …).
    #[serde(default)]
    pub cpu: String,
    /// The guest architecture (`x86_64`).
    #[serde(default)]
    pub architecture: String,
    /// The firmware the build and test VMs booted with: `bios`, `uefi`, `uefi-secure-boot`
    /// (what `kiln test` boots the outputs with by default).
    #[serde(default)]
    pub firmware: String,
    /// The VMs had a TPM 2.0 (`vm.tpm`).
    #[serde(default)]
    pub tpm: bool,
    pub tools: Tools,
    pub stages: Vec<StageRecord>,
    pub sysprep: BTreeMap<String, usize>,
    /// What trimming free space bought: allocated bytes of the build disk file.
    pub sparsify: Option<Sparsify>,
    pub properties: BTreeMap<String, String>,
    /// The build disk the outputs were made from (sizes summed over its backing chain).
    pub source_disk: Option<SourceSizes>,
    pub outputs: Vec<Converted>,
    pub published: Published,
    /// The recipe's `publish.glance`, resolved (names rendered): what `kiln publish` repeats.
    #[serde(default, deserialize_with = "one_or_many")]
    pub publish_glance: Vec<crate::plan::GlanceSettings>,
    /// The recipe's `publish.all_or_nothing` (what `kiln publish` repeats too).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub publish_all_or_nothing: bool,
    /// The boot test: each check's result, the seconds per phase.
    pub test: Option<serde_json::Value>,
    /// The image's inventory: os-release, package count, kernels, the SBOM file and digest.
    pub inventory: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Tools {
    pub kiln: String,
    #[serde(rename = "qemu-img")]
    pub qemu_img: String,
    pub libvirt: String,
    pub libguestfs: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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

/// Where a build's published images are.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Published {
    /// The catalog directory of the build.
    pub local: String,
    pub glance: Vec<GlancePublished>,
}

/// What `published.glance` in manifest.json says about one image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GlancePublished {
    pub cloud: String,
    /// The region of the cloud it went to (absent: the cloud's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub id: String,
    pub name: String,
    pub disk_format: String,
    pub status: String,
    pub visibility: String,
    pub size: u64,
    pub os_hash_value: String,
    pub method: crate::vocab::Method,
    /// An identical image was already there: nothing was uploaded.
    pub reused: bool,
    pub members: Vec<String>,
    /// Older images deleted by `keep`.
    pub rotated: Vec<String>,
}

/// The manifest of the build in `dir`.
/// `published.glance` once `new` records were published: the earlier records of each cloud
/// and region `new` went to are replaced, every other target's kept (in their order, first).
pub fn merge_glance(old: &[GlancePublished], new: Vec<GlancePublished>) -> Vec<GlancePublished> {
    let place = |g: &GlancePublished| (g.cloud.clone(), g.region.clone());
    let fresh: std::collections::HashSet<_> = new.iter().map(place).collect();
    let mut all: Vec<GlancePublished> = old
        .iter()
        .filter(|g| !fresh.contains(&place(g)))
        .cloned()
        .collect();
    all.extend(new);
    all
}

/// `publish_glance` as manifests before several targets wrote it (one object, or null) too.
fn one_or_many<'de, D>(d: D) -> Result<Vec<crate::plan::GlanceSettings>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Many(Vec<crate::plan::GlanceSettings>),
        One(Box<crate::plan::GlanceSettings>),
    }
    Ok(match Option::<Either>::deserialize(d)? {
        None => Vec::new(),
        Some(Either::Many(v)) => v,
        Some(Either::One(g)) => vec![*g],
    })
}

pub fn read(dir: &std::path::Path) -> anyhow::Result<Manifest> {
    use anyhow::Context as _;
    let path = dir.join("manifest.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Write `m` as `dir`/manifest.json, atomically (a temporary file renamed over it).
pub fn write(dir: &std::path::Path, m: &Manifest) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let path = dir.join("manifest.json");
    let tmp = dir.join(".manifest.json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(m)? + "\n")
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

/// How a stage ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageStatus {
    Ok,
    Failed,
    Cancelled,
    Skipped,
    /// Started and still going on beside the stages after it (the boot test during the
    /// conversions); a finished build never shows it.
    Running,
}

/// One stage's line in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRecord {
    pub name: String,
    pub status: StageStatus,
    pub seconds: f64,
    /// When it started, in seconds after the first stage did (a stage that runs beside
    /// others overlaps them: the seconds do not add up to the build's).
    #[serde(default)]
    pub started: f64,
    /// The stage's cache key (stages whose results are cached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Its result came from the stage cache instead of being made again.
    #[serde(default)]
    pub reused: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_reads_back_as_it_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let m = Manifest {
            name: "n".into(),
            version: "1".into(),
            stages: vec![StageRecord {
                key: None,
                reused: false,
                name: "convert".into(),
                status: StageStatus::Ok,
                seconds: 1.5,
                started: 12.5,
            }],
            outputs: vec![Converted {
                path: "n-1.qcow2".into(),
                format: "qcow2".into(),
                glance_disk_format: Some("qcow2".into()),
                sha512: "ab".repeat(64),
                virtual_size: 3 << 30,
                ..Default::default()
            }],
            published: Published {
                local: "/catalog/n-1".into(),
                glance: Vec::new(),
            },
            ..Default::default()
        };
        write(dir.path(), &m).unwrap();
        let back = read(dir.path()).unwrap();
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&m).unwrap()
        );
        assert!(!dir.path().join(".manifest.json.tmp").exists());
    }

    #[test]
    fn a_partial_manifest_takes_defaults() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("manifest.json"),
            r#"{"name": "old", "outputs": [{"path": "x.qcow2", "glance_disk_format": "qcow2"}]}"#,
        )
        .unwrap();
        let m = read(dir.path()).unwrap();
        assert_eq!(m.name, "old");
        assert_eq!(m.outputs[0].path, "x.qcow2");
        assert!(m.published.glance.is_empty() && m.publish_glance.is_empty());
        std::fs::write(dir.path().join("manifest.json"), "{not json").unwrap();
        assert!(format!("{:#}", read(dir.path()).unwrap_err()).contains("parsing"));
    }

    fn record(cloud: &str, region: Option<&str>, id: &str) -> GlancePublished {
        serde_json::from_value(serde_json::json!({
            "cloud": cloud, "region": region, "id": id, "name": "n", "disk_format": "qcow2",
            "status": "active", "visibility": "private", "size": 1, "os_hash_value": "",
            "method": "upload", "reused": false, "members": [], "rotated": [],
        }))
        .unwrap()
    }

    #[test]
    fn publishing_to_a_target_replaces_its_records_and_keeps_the_others() {
        let old = vec![
            record("a", Some("R1"), "1"),
            record("a", Some("R2"), "2"),
            record("b", None, "3"),
        ];
        let ids = |v: &[GlancePublished]| v.iter().map(|g| g.id.clone()).collect::<Vec<_>>();
        let merged = merge_glance(&old, vec![record("a", Some("R2"), "4")]);
        assert_eq!(ids(&merged), ["1", "3", "4"]);
        let merged = merge_glance(&old, vec![record("c", Some("R1"), "5")]);
        assert_eq!(ids(&merged), ["1", "2", "3", "5"]);
        assert_eq!(ids(&merge_glance(&old, Vec::new())), ["1", "2", "3"]);
    }

    #[test]
    fn publish_glance_reads_as_one_target_or_several() {
        let one = r#"{"cloud": "c", "names": {}, "container_format": "bare", "visibility": "private",
            "protected": false, "min_ram": 0, "min_disk": null, "tags": [], "properties": {},
            "members": [], "method": "upload", "stores": [], "keep": null, "formats": [],
            "import_timeout": 1, "recipe": "r"}"#;
        for (text, n) in [
            (format!(r#"{{"publish_glance": {one}}}"#), 1),
            (format!(r#"{{"publish_glance": [{one}, {one}]}}"#), 2),
            (r#"{"publish_glance": null}"#.to_string(), 0),
            ("{}".to_string(), 0),
        ] {
            let m: Manifest = serde_json::from_str(&text).unwrap();
            assert_eq!(m.publish_glance.len(), n, "{text}");
        }
    }
}
