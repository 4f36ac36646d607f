//! `kiln report DIR`: the catalog as one HTML page (see crate::report).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::*;

pub fn report_cmd(dir: &Path, output: Option<PathBuf>) -> i32 {
    let catalog = match crate::report::read_catalog(dir) {
        Ok(c) => c,
        Err(e) => {
            errln!("error: {e}");
            return exit::INVALID_INPUT;
        }
    };
    for u in &catalog.unreadable {
        tracing::warn!("not in the report: {u}");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let page = crate::report::page(&catalog, now);
    let html = match crate::report::render(&page) {
        Ok(h) => h,
        Err(e) => {
            errln!("error: {e}");
            return exit::BUILD_FAILED;
        }
    };
    let dest = output.unwrap_or_else(|| dir.join("report.html"));
    if dest.as_os_str() == "-" {
        outln!("{html}");
        return exit::OK;
    }
    match write_page(&dest, &html) {
        Ok(()) => {
            outln!(
                "{}: {} builds, {} failed",
                dest.display(),
                page.summary.builds,
                page.summary.failed
            );
            exit::OK
        }
        Err(e) => {
            errln!("error: {e:#}");
            exit::INVALID_INPUT
        }
    }
}

/// The page into `dest` through a temporary file beside it; a file already there is replaced
/// only if it is a page kiln report wrote (it carries the generator tag).
fn write_page(dest: &Path, html: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    if let Ok(m) = std::fs::symlink_metadata(dest) {
        let ours = m.is_file()
            && crate::hostfile::read_untrusted(dest, 64 << 20)
                .map(|b| {
                    String::from_utf8_lossy(&b[..b.len().min(4096)])
                        .contains(crate::report::GENERATOR)
                })
                .unwrap_or(false);
        if !ours {
            anyhow::bail!(
                "{} exists and is not a page kiln report wrote: not replaced (-o elsewhere)",
                dest.display()
            );
        }
    }
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".report-")
        .suffix(".html.tmp")
        .tempfile_in(parent)
        .with_context(|| format!("writing a temporary file in {}", parent.display()))?;
    tmp.write_all(html.as_bytes())
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    // Readable like the catalog's other files (tempfile makes 0600).
    use std::os::unix::fs::PermissionsExt as _;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.persist(dest)
        .with_context(|| format!("replacing {}", dest.display()))?;
    Ok(())
}
