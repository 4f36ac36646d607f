//! Convert stage: qemu-img from the build disk (overlay + base, flattened) to each output
//! format in the staged output directory, then size and checksums (one read for both).

use std::io::Read;
use std::path::Path;

use anyhow::Context as _;
use sha2::{Digest, Sha256, Sha512};

use crate::pipeline::context::{BuildContext, OutputRecord};
use crate::pipeline::{Outcome, Stage};
use crate::process::{self, Opts};

pub struct ConvertStage;

/// sha256 and sha512 of a file, reading it once.
pub fn checksums(path: &Path) -> std::io::Result<(String, String)> {
    let mut f = std::fs::File::open(path)?;
    let mut a = Sha256::new();
    let mut b = Sha512::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        a.update(&buf[..n]);
        b.update(&buf[..n]);
    }
    Ok((hex::encode(a.finalize()), hex::encode(b.finalize())))
}

impl Stage<BuildContext> for ConvertStage {
    fn name(&self) -> &'static str {
        "convert"
    }

    fn run(&mut self, ctx: &mut BuildContext) -> anyhow::Result<()> {
        ctx.enter(self.name());
        let disk = ctx.disk.clone().context("no build disk")?;
        std::fs::create_dir_all(&ctx.out)?;
        let slug = ctx.plan.slug();
        for out in ctx.plan.outputs.clone() {
            let name = out.file_name(&slug);
            let dst = ctx.out.join(&name);
            tracing::info!("converting {} to {name}", disk.display());
            process::run(
                &crate::qemu_img::convert_argv(&disk, "qcow2", &dst, &out),
                &Opts::default(),
                &ctx.cancel,
            )
            .with_context(|| format!("converting {} to {}", disk.display(), out.format.as_str()))?;
            let info = crate::qemu_img::info(&dst, &ctx.cancel)?;
            let (sha256, sha512) =
                checksums(&dst).with_context(|| format!("hashing {}", dst.display()))?;
            let size = std::fs::metadata(&dst)?.len();
            tracing::info!(
                "{name}: {} ({} virtual), sha256 {sha256}",
                crate::progress::human_bytes(size),
                crate::progress::human_bytes(info.virtual_size)
            );
            ctx.outputs.push(OutputRecord {
                path: name,
                format: out.format.as_str().to_string(),
                size,
                virtual_size: info.virtual_size,
                sha256,
                sha512,
            });
        }
        Ok(())
    }

    fn cleanup(&mut self, _ctx: &mut BuildContext, _outcome: Outcome) -> anyhow::Result<()> {
        // Outputs live in the staging directory, which the build removes unless published.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_match_known_vectors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let (a, b) = checksums(&p).unwrap();
        assert_eq!(
            a,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(b.starts_with("ddaf35a193617aba"));
    }
}
