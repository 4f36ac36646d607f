//! `kiln report DIR`: the catalog as one HTML page (see crate::report).

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

/// The page into `dest`; a file already there is replaced only if it is a page kiln report
/// wrote (it carries the generator tag near its start).
fn write_page(dest: &Path, html: &str) -> anyhow::Result<()> {
    let ours = |b: &[u8]| {
        String::from_utf8_lossy(&b[..b.len().min(4096)]).contains(crate::report::GENERATOR)
    };
    let refusal = "exists and is not a page kiln report wrote: not replaced (-o elsewhere)";
    super::replace_own(dest, html, 64 << 20, &ours, refusal)
}
