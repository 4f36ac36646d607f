//! Glance stage: after the local catalog has the complete build, publish its outputs to Glance
//! (the same code as `kiln publish DIR`) and record the image ids in manifest.json. Running
//! last means a failed upload never costs the build: the output stays in the catalog and the
//! publish can be retried with `kiln publish`; no Glance record is left behind.

use anyhow::Context as _;

use crate::pipeline::context::{BuildContext, Resource};
use crate::pipeline::describe::{Describe, Described, PlanView};
use crate::pipeline::{Outcome, Stage};

/// Reads `made.published`; sets `made.glance_published` (records every image it creates).
pub struct GlanceStage;

impl Stage<BuildContext> for GlanceStage {
    fn name(&self) -> &'static str {
        "glance"
    }

    fn run(&mut self, ctx: &mut BuildContext) -> anyhow::Result<()> {
        let Some(settings) = ctx.env.plan.publish.glance.clone() else {
            tracing::debug!("no publish.glance: nothing to upload");
            return Ok(());
        };
        let dir = ctx
            .made
            .published
            .clone()
            .context("the build was not published locally")?;
        let cancel = ctx.env.cancel.clone();
        let mut created = Vec::new();
        let manifest = ctx.manifest();
        let res = crate::glance::publish::publish_dir(
            &dir,
            &manifest,
            &settings,
            None,
            &ctx.env.tunables.glance.clone(),
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
        // The runner rewrites manifest.json with these once the stage is done.
        ctx.made.glance_published = published;
        Ok(())
    }

    fn cleanup(&mut self, ctx: &mut BuildContext, outcome: Outcome) -> anyhow::Result<()> {
        ctx.release(self.name(), outcome)
    }
}

impl Describe for GlanceStage {
    fn describe(&self, v: &PlanView) -> Option<Described> {
        let g = v.plan.publish.glance.as_ref()?;
        Some(Described {
            inputs: serde_json::to_value(g).unwrap_or_default(),
            commands: g
                .formats
                .iter()
                .map(|f| {
                    let name = g.names.get(f).map(String::as_str).unwrap_or("?");
                    format!(
                        "glance ({}): {} {f} output as `{name}` ({}{}), verify SHA-512{}{}",
                        g.cloud.as_deref().unwrap_or("$OS_CLOUD"),
                        g.method.as_str(),
                        g.visibility,
                        if g.protected { ", protected" } else { "" },
                        if g.members.is_empty() {
                            String::new()
                        } else {
                            format!(", share with {}", g.members.join(", "))
                        },
                        g.keep
                            .map(|k| format!(", keep newest {k}"))
                            .unwrap_or_default()
                    )
                })
                .collect(),
        })
    }
}
