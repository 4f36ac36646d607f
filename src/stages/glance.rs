//! Glance stage: after the local catalog has the complete build, publish its outputs to Glance
//! (the same code as `kiln publish DIR`) and record the image ids in manifest.json. Running
//! last means a failed upload never costs the build: the output stays in the catalog and the
//! publish can be retried with `kiln publish`; no Glance record is left behind.

use anyhow::Context as _;

use crate::pipeline::context::{BuildContext, Resource};
use crate::pipeline::{Outcome, Stage};

pub struct GlanceStage;

impl Stage<BuildContext> for GlanceStage {
    fn name(&self) -> &'static str {
        "glance"
    }

    fn run(&mut self, ctx: &mut BuildContext) -> anyhow::Result<()> {
        let Some(settings) = ctx.plan.publish.glance.clone() else {
            tracing::debug!("no publish.glance: nothing to upload");
            return Ok(());
        };
        let t = std::time::Instant::now();
        let dir = ctx
            .published
            .clone()
            .context("the build was not published locally")?;
        let cancel = ctx.cancel.clone();
        let mut created = Vec::new();
        let res = crate::glance::publish::publish_dir(
            &dir,
            &settings,
            None,
            &cancel,
            &mut |cloud, id| {
                created.push(Resource::GlanceImage {
                    cloud: cloud.to_string(),
                    id: id.to_string(),
                })
            },
        );
        for r in &created {
            ctx.record(r.clone());
        }
        let published = res.with_context(|| {
            format!(
                "publishing to Glance (the build itself is complete in {}; retry with `kiln publish {}`)",
                dir.display(),
                dir.display()
            )
        })?;
        // Published: these are the user's images now, not build resources.
        for r in &created {
            ctx.forget(r);
        }
        ctx.glance_published = published;
        // The manifest was written before this stage ran: record it there too.
        let seconds = (t.elapsed().as_secs_f64() * 10.0).round() / 10.0;
        crate::manifest::update(&dir, |m| {
            for s in m["stages"].as_array_mut().into_iter().flatten() {
                if s["name"] == "glance" {
                    s["status"] = "ok".into();
                    s["seconds"] = seconds.into();
                }
            }
        })
        .context("recording the glance stage in manifest.json")?;
        Ok(())
    }

    fn cleanup(&mut self, ctx: &mut BuildContext, outcome: Outcome) -> anyhow::Result<()> {
        ctx.release(self.name(), outcome)
    }
}
