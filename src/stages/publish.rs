//! Publish stage (local catalog): logs and manifest.json into the staged output directory, which
//! is then renamed into place in one step; a previous build of the same version is replaced only
//! after the new one is complete.

use std::time::Instant;

use anyhow::Context as _;

use crate::pipeline::context::BuildContext;
use crate::pipeline::{Outcome, Stage, StageStatus};

pub struct PublishStage;

impl Stage<BuildContext> for PublishStage {
    fn name(&self) -> &'static str {
        "publish"
    }

    fn run(&mut self, ctx: &mut BuildContext) -> anyhow::Result<()> {
        let t = Instant::now();
        std::fs::create_dir_all(&ctx.out)?;
        // The console log is already there (provision copies it); build.log is written there
        // directly by the logger.
        if let Some(rec) = ctx.records.iter_mut().find(|r| r.name == "publish") {
            rec.status = StageStatus::Ok;
            rec.seconds = (t.elapsed().as_secs_f64() * 10.0).round() / 10.0;
        }
        let manifest = ctx.manifest();
        let path = ctx.out.join("manifest.json");
        std::fs::write(&path, serde_json::to_string_pretty(&manifest)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;

        let final_dir = ctx.final_dir.clone();
        let old = ctx.staging.join("previous");
        let replaced = final_dir.exists();
        if replaced {
            std::fs::rename(&final_dir, &old)
                .with_context(|| format!("moving the previous {} aside", final_dir.display()))?;
        }
        if let Err(e) = std::fs::rename(&ctx.out, &final_dir) {
            if replaced {
                let _ = std::fs::rename(&old, &final_dir);
            }
            return Err(e)
                .with_context(|| format!("moving the output into {}", final_dir.display()));
        }
        if replaced {
            tracing::info!("replaced the previous {}", final_dir.display());
        }
        ctx.published = Some(final_dir.clone());
        tracing::info!("published {}", final_dir.display());
        Ok(())
    }

    fn cleanup(&mut self, _ctx: &mut BuildContext, _outcome: Outcome) -> anyhow::Result<()> {
        Ok(())
    }
}
