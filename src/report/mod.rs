//! `kiln report DIR`: one self-contained HTML page of a catalog (the `-o` directory of builds):
//! each build's stage timeline as bars, its boot test, SBOM summary, the packages changed since
//! the previous version of the same image, its outputs and where it was published; failed
//! builds with their errors. Read from the files the builds left (manifest.json, the SPDX
//! document, build.log of NAME-VERSION.failed), each bounded: a catalog may be someone else's.

mod view;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use view::{BuildView, FailedView};

use crate::inventory::Package;
use crate::manifest::Manifest;

/// Largest manifest.json and SPDX document read (kiln's own are a few hundred KiB).
const MANIFEST_MAX: u64 = 16 << 20;
const SBOM_MAX: u64 = 64 << 20;
/// What is read of a failed build's log: its end.
const LOG_TAIL_MAX: u64 = 256 << 10;
/// Builds in one report (a directory of more is refused rather than rendered for minutes).
const BUILDS_MAX: usize = 2000;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} has more than {BUILDS_MAX} entries: not a catalog kiln report renders")]
    TooMany { path: PathBuf },
    #[error("{path}: no builds (no NAME-VERSION/manifest.json, no NAME-VERSION.failed)")]
    Empty { path: PathBuf },
    #[error("rendering the report: {0}")]
    Render(String),
}

/// One build of the catalog as its files say.
pub struct Build {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// Its packages from the SPDX document (None: no SBOM, or one that does not parse).
    pub packages: Option<Vec<Package>>,
}

/// A build that failed: NAME-VERSION.failed with the logs kiln kept.
pub struct Failed {
    pub dir: PathBuf,
    /// The build log's error lines (the last few).
    pub errors: Vec<String>,
}

/// What the catalog holds; entries that cannot be read are named in `unreadable`.
pub struct Catalog {
    pub dir: PathBuf,
    pub builds: Vec<Build>,
    pub failed: Vec<Failed>,
    pub unreadable: Vec<String>,
}

/// Read every build of `dir` (sorted by name, then build time).
pub fn read_catalog(dir: &Path) -> Result<Catalog, ReportError> {
    let read_err = |source| ReportError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries: Vec<PathBuf> = Vec::new();
    for e in std::fs::read_dir(dir).map_err(read_err)? {
        let e = e.map_err(read_err)?;
        if entries.len() == BUILDS_MAX {
            return Err(ReportError::TooMany {
                path: dir.to_path_buf(),
            });
        }
        // Only real directories: a symlink could lead the report anywhere on the host.
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            entries.push(e.path());
        }
    }
    entries.sort();
    let mut catalog = Catalog {
        dir: dir.to_path_buf(),
        builds: Vec::new(),
        failed: Vec::new(),
        unreadable: Vec::new(),
    };
    for d in entries {
        let name = d
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if name.ends_with(".failed") {
            catalog.failed.push(read_failed(&d));
        } else if d.join("manifest.json").exists() {
            match read_build(&d) {
                Ok(b) => catalog.builds.push(b),
                Err(e) => catalog.unreadable.push(format!("{name}: {e}")),
            }
        }
    }
    if catalog.builds.is_empty() && catalog.failed.is_empty() {
        return Err(ReportError::Empty {
            path: dir.to_path_buf(),
        });
    }
    catalog.builds.sort_by(|a, b| {
        (a.manifest.name.as_str(), a.manifest.built_at)
            .cmp(&(b.manifest.name.as_str(), b.manifest.built_at))
    });
    Ok(catalog)
}

fn read_build(dir: &Path) -> Result<Build, String> {
    let path = dir.join("manifest.json");
    let bytes = crate::hostfile::read_untrusted(&path, MANIFEST_MAX).map_err(|e| e.to_string())?;
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    let packages = manifest
        .inventory
        .as_ref()
        .and_then(|i| i["sbom"].as_str())
        // The SBOM's name from the manifest: a plain file name in this directory only.
        .filter(|n| !n.contains('/') && !n.starts_with('.'))
        .and_then(|n| crate::hostfile::read_untrusted(&dir.join(n), SBOM_MAX).ok())
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .map(|doc| crate::inventory::packages_from_spdx(&doc));
    Ok(Build {
        dir: dir.to_path_buf(),
        manifest,
        packages,
    })
}

fn read_failed(dir: &Path) -> Failed {
    let log = crate::libvirt::console::file_lines(&dir.join("build.log"), LOG_TAIL_MAX);
    Failed {
        dir: dir.to_path_buf(),
        errors: error_lines(&log, 6),
    }
}

/// The last `n` error lines of a build log's lines (kiln's ` ERROR ` and `error:` lines).
pub fn error_lines(log: &[String], n: usize) -> Vec<String> {
    let errors: Vec<String> = log
        .iter()
        .filter(|l| l.contains(" ERROR ") || l.trim_start().starts_with("error:"))
        .map(|l| l.trim().chars().take(2000).collect())
        .collect();
    errors[errors.len().saturating_sub(n)..].to_vec()
}

/// The page's data: what the template renders.
#[derive(Serialize)]
pub struct Page {
    pub title: String,
    pub generated_at: String,
    pub builds: Vec<BuildView>,
    pub failed: Vec<FailedView>,
    pub unreadable: Vec<String>,
    pub summary: view::Summary,
}

/// The page for `catalog`, each build compared with the previous build of the same name.
pub fn page(catalog: &Catalog, now: u64) -> Page {
    let mut builds = Vec::new();
    for (i, b) in catalog.builds.iter().enumerate() {
        let previous = catalog.builds[..i]
            .iter()
            .rev()
            .find(|p| p.manifest.name == b.manifest.name);
        builds.push(view::build(b, previous));
    }
    let failed: Vec<FailedView> = catalog.failed.iter().map(view::failed).collect();
    Page {
        title: format!("kiln report: {}", catalog.dir.display()),
        generated_at: crate::inventory::rfc3339(now),
        summary: view::summary(&builds, &failed),
        builds,
        failed,
        unreadable: catalog.unreadable.clone(),
    }
}

const TEMPLATE: &str = include_str!("../../templates/report.html.hbs");

/// The HTML of `page`: handlebars in strict mode, every value HTML-escaped (`{{…}}`); the
/// template has no triple braces.
pub fn render(page: &Page) -> Result<String, ReportError> {
    let mut h = handlebars::Handlebars::new();
    h.set_strict_mode(true);
    h.register_escape_fn(handlebars::html_escape);
    h.register_template_string("report", TEMPLATE)
        .map_err(|e| ReportError::Render(e.to_string()))?;
    h.render("report", page)
        .map_err(|e| ReportError::Render(e.to_string()))
}

/// Marks a page as kiln's: `kiln report` replaces only a file that carries it.
pub const GENERATOR: &str = "<meta name=\"generator\" content=\"kiln report\">";

#[cfg(test)]
mod tests;
