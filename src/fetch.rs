//! Where fetched files (images, installer media) live in the cache, and what fetching one will
//! do, for `kiln plan`. The download itself runs in the source stage.

use std::path::{Path, PathBuf};

use crate::plan::Checksum;

/// The directory of verified downloads, each named by its checksum.
pub fn downloads_dir(cache: &Path) -> PathBuf {
    cache.join("images")
}

/// Where a download with checksum `sum` is cached.
pub fn cached_download(cache: &Path, sum: &Checksum) -> PathBuf {
    downloads_dir(cache).join(format!("{}-{}", sum.algorithm, sum.hex))
}

/// Where a source file will be before the build can read it: its path, else where its
/// download is cached; None when its checksum is only known at fetch time (a sums file).
pub fn planned_path(cache: &Path, path: Option<&Path>, sum: Option<&Checksum>) -> Option<PathBuf> {
    match (path, sum) {
        (Some(p), _) => Some(p.to_path_buf()),
        (None, Some(sum)) => Some(cached_download(cache, sum)),
        (None, None) => None,
    }
}

/// What [`fetch_file`] does for `f` with the cache at `cache`, for `kiln plan`.
pub fn planned_fetch(what: &str, cache: &Path, f: &crate::plan::FilePlan) -> String {
    match (&f.url, &f.path, &f.checksum, &f.checksum_url) {
        (Some(u), _, Some(sum), _) => {
            let dest = cached_download(cache, sum);
            if dest.is_file() {
                format!(
                    "cache hit: {what} {} (verified when it was downloaded)",
                    dest.display()
                )
            } else {
                format!("download {what} {u} -> {} (verify {sum})", dest.display())
            }
        }
        (Some(u), _, None, Some(sums)) => format!(
            "download {what} {u}: its checksum is looked up in {sums} first, then the cache \
             ({}/images) is checked",
            cache.display()
        ),
        (None, Some(p), Some(sum), _) => format!("verify {what} {} ({sum})", p.display()),
        (None, Some(p), None, _) => format!("use {what} {} as it is", p.display()),
        _ => format!("{what}: no source"),
    }
}
