//! `kiln diff A B`: what changed between two builds. Two kiln output directories (their
//! SBOMs): packages added, removed and changed. Exit 0 when nothing changed, 1 when something
//! did (as diff(1)), 2 on bad input.

use std::path::{Path, PathBuf};

use super::*;
use crate::inventory::{self, Package};

#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    /// The older build: a kiln output directory (NAME-VERSION with manifest.json).
    pub a: PathBuf,
    /// The newer build.
    pub b: PathBuf,
    #[arg(long, value_enum, default_value_t = DiffFormat::Text)]
    pub format: DiffFormat,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiffFormat {
    Text,
    Json,
}

/// The packages of an output directory, from the SBOM its manifest names.
fn packages(dir: &Path) -> Result<Vec<Package>, String> {
    let m = dir.join("manifest.json");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&m)
            .map_err(|e| format!("{}: {e} (a kiln output directory?)", m.display()))?,
    )
    .map_err(|e| format!("{}: {e}", m.display()))?;
    let Some(name) = manifest["inventory"]["sbom"].as_str() else {
        return Err(format!(
            "{}: no inventory (built by a kiln without SBOMs, or from a guest it could not read)",
            m.display()
        ));
    };
    if name.contains('/') {
        return Err(format!(
            "{}: the SBOM's name {name:?} is not a plain file name",
            m.display()
        ));
    }
    let p = dir.join(name);
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?)
            .map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(inventory::packages_from_spdx(&doc))
}

pub(super) fn diff_cmd(a: DiffArgs) -> i32 {
    let (pa, pb) = match (packages(&a.a), packages(&a.b)) {
        (Ok(x), Ok(y)) => (x, y),
        (Err(e), _) | (_, Err(e)) => return usage_error(e),
    };
    let d = inventory::diff_packages(&pa, &pb);
    let same = d == inventory::PackageDiff::default();
    match a.format {
        DiffFormat::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "packages": d })).expect("JSON")
        ),
        DiffFormat::Text => {
            outln!(
                "packages: {} added, {} removed, {} changed",
                d.added.len(),
                d.removed.len(),
                d.changed.len()
            );
            for p in &d.added {
                outln!("  + {} {} ({})", p.name, p.version, p.arch);
            }
            for p in &d.removed {
                outln!("  - {} {} ({})", p.name, p.version, p.arch);
            }
            for (n, arch, from, to) in &d.changed {
                outln!("  ~ {n} {from} -> {to} ({arch})");
            }
        }
    }
    if same {
        exit::OK
    } else {
        exit::BUILD_FAILED
    }
}
