//! Publish targets: where a complete build goes after the local catalog has it (Glance today;
//! several clouds and other targets next). One module per kind of target, each implementing
//! `Target`; the stage runs every target the plan names. Running after the catalog means a
//! failed upload never costs the build: the output stays there and the publish can be
//! retried with `kiln publish`; no remote record is left behind.

mod glance;

use std::path::Path;

use anyhow::Context as _;

use crate::pipeline::context::{BuildContext, BuildEnv, Resource};
use crate::pipeline::describe::{Describe, Described, PlanView};
use crate::pipeline::{Outcome, Stage};
use crate::plan::PublishPlan;

/// A place a complete build is published to.
trait Target {
    /// What error messages call it ("Glance").
    fn name(&self) -> &'static str;
    /// Its recipe settings, as `kiln plan` shows them.
    fn inputs(&self) -> serde_json::Value;
    /// What `kiln plan` says it will do.
    fn planned(&self) -> Vec<String>;
    /// Publish the catalog's `dir`, passing every remote record to `created` the moment it
    /// exists (so an interrupt or failure removes it).
    fn publish(
        &self,
        dir: &Path,
        manifest: &crate::manifest::Manifest,
        env: &BuildEnv,
        created: &mut dyn FnMut(Resource),
    ) -> anyhow::Result<Published>;
}

/// What a target reports, for manifest.json.
enum Published {
    Glance(Vec<crate::glance::publish::Published>),
}

/// The targets the plan names, in order: the one place a target kind is chosen.
fn targets(publish: &PublishPlan) -> Vec<Box<dyn Target + '_>> {
    let mut all: Vec<Box<dyn Target + '_>> = Vec::new();
    if let Some(g) = &publish.glance {
        all.push(Box::new(glance::GlanceTarget(g)));
    }
    all
}

/// Reads `made.published`; sets what each target published (`made.glance_published`).
/// Records every remote record it creates until it is published.
pub struct TargetsStage;

impl Stage<BuildContext> for TargetsStage {
    fn name(&self) -> &'static str {
        // The name the stage had while Glance was its only target (plans, manifests,
        // `--rebuild-from` name it).
        "glance"
    }

    fn run(&mut self, ctx: &mut BuildContext) -> anyhow::Result<()> {
        let publish = ctx.env.plan.publish.clone();
        let targets = targets(&publish);
        if targets.is_empty() {
            tracing::debug!("no publish target beyond the local catalog");
            return Ok(());
        }
        let dir = ctx
            .made
            .published
            .clone()
            .context("the build was not published locally")?;
        let manifest = ctx.manifest();
        for target in targets {
            let mut created = Vec::new();
            let res = target.publish(&dir, &manifest, &ctx.env, &mut |r| created.push(r));
            for r in &created {
                ctx.record(r.clone());
            }
            let published = res.with_context(|| {
                format!(
                    "publishing to {} (the build itself is complete in {}; retry with `kiln publish {}`)",
                    target.name(),
                    dir.display(),
                    dir.display()
                )
            })?;
            // Published: these are the user's records now, not build resources.
            for r in &created {
                ctx.forget(r);
            }
            // The runner rewrites manifest.json with these once the stage is done.
            match published {
                Published::Glance(images) => ctx.made.glance_published = images,
            }
        }
        Ok(())
    }

    fn cleanup(&mut self, ctx: &mut BuildContext, outcome: Outcome) -> anyhow::Result<()> {
        ctx.release(self.name(), outcome)
    }
}

impl Describe for TargetsStage {
    fn describe(&self, v: &PlanView) -> Option<Described> {
        let targets = targets(&v.plan.publish);
        // One target today: its settings are the stage's inputs, as before.
        let inputs = match targets.as_slice() {
            [] => return None,
            [one] => one.inputs(),
            many => serde_json::Value::Array(many.iter().map(|t| t.inputs()).collect()),
        };
        Some(Described {
            inputs,
            commands: targets.iter().flat_map(|t| t.planned()).collect(),
        })
    }
}
