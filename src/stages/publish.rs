//! Publish stage (local catalog): logs and manifest.json into the staged output directory, which
//! is then renamed into place in one step; a previous build of the same version is replaced only
//! after the new one is complete.

use anyhow::Context as _;

use crate::pipeline::context::BuildContext;
use crate::pipeline::describe::{Describe, Described, PlanView};
use crate::pipeline::{Outcome, Stage};

/// Reads the staged output; sets `made.published` (the build's directory in the catalog).
pub struct PublishStage;

impl Stage<BuildContext> for PublishStage {
    fn name(&self) -> &'static str {
        "publish"
    }

    fn run(&mut self, ctx: &mut BuildContext) -> anyhow::Result<()> {
        std::fs::create_dir_all(&ctx.env.out)?;
        // The console log is already there (provision copies it); build.log is written there
        // directly by the logger. The runner rewrites the manifest with this stage's record.
        crate::manifest::write(&ctx.env.out, &ctx.manifest())?;

        let final_dir = ctx.env.final_dir.clone();
        // Checked before the build too; again now, as the directory may have appeared since.
        crate::outdir::check_replaceable(&final_dir, &ctx.env.plan.name, &ctx.env.plan.version)?;
        let replaced = crate::outdir::install(&ctx.env.out, &final_dir)
            .with_context(|| format!("moving the output into {}", final_dir.display()))?;
        if replaced {
            tracing::info!("replaced the previous {}", final_dir.display());
        }
        ctx.made.published = Some(final_dir.clone());
        tracing::info!("published {}", final_dir.display());
        Ok(())
    }

    fn cleanup(&mut self, _ctx: &mut BuildContext, _outcome: Outcome) -> anyhow::Result<()> {
        Ok(())
    }
}

impl Describe for PublishStage {
    fn describe(&self, v: &PlanView) -> Option<Described> {
        Some(Described {
            inputs: serde_json::json!({ "local_dir": v.plan.publish.local_dir }),
            commands: vec![format!(
                "write manifest.json; rename {} to {}",
                v.out.display(),
                v.final_dir.display()
            )],
        })
    }
}
