//! Publish targets: where a complete build goes after the local catalog has it (each Glance
//! cloud and region the recipe names, at the same time). One module per kind of target, each implementing
//! `Target`; the stage runs every target the plan names. Running after the catalog means a
//! failed upload never costs the build: the output stays there and the publish can be
//! retried with `kiln publish`; no remote record is left behind.

mod glance;

use std::path::Path;

use anyhow::Context as _;

use crate::pipeline::context::{BuildContext, Resource};
use crate::pipeline::describe::{Describe, Described, PlanView};
use crate::pipeline::{Outcome, Stage};
use crate::plan::PublishPlan;

/// A place a complete build is published to. Targets run at the same time, each on a thread
/// of its own: it owns what it needs.
trait Target: Send {
    /// What error messages call it ("Glance kiln-alpha RegionTwo").
    fn name(&self) -> String;
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
        env: &TargetEnv,
        created: &mut dyn FnMut(Resource),
    ) -> anyhow::Result<Published>;
}

/// What a target reads of the build's environment.
#[derive(Clone)]
struct TargetEnv {
    glance: crate::tunables::GlanceEnv,
    cancel: crate::process::Cancel,
}

/// What a target reports, for manifest.json.
enum Published {
    Glance(Vec<crate::glance::publish::Published>),
}

/// The targets the plan names, in order: the one place a target kind is chosen.
fn targets(publish: &PublishPlan) -> Vec<Box<dyn Target>> {
    let mut all: Vec<Box<dyn Target>> = Vec::new();
    for g in &publish.glance {
        all.push(Box::new(glance::GlanceTarget(g.clone())));
    }
    all
}

/// Targets published at once: uploads wait on the network and on the cloud's checksums, not
/// on this machine's cores.
const AT_ONCE: usize = 4;

/// Every target at once (at most `AT_ONCE`), each record handed to `record` on this thread as
/// soon as a target made it. Results in the targets' order.
fn publish_all(
    targets: Vec<Box<dyn Target>>,
    dir: &Path,
    manifest: &crate::manifest::Manifest,
    env: &TargetEnv,
    record: &mut dyn FnMut(usize, Resource),
) -> anyhow::Result<Vec<anyhow::Result<Published>>> {
    let jobs: Vec<crate::parallel::Job<anyhow::Result<Published>, Resource>> = targets
        .into_iter()
        .map(|t| {
            let (dir, manifest, env) = (dir.to_path_buf(), manifest.clone(), env.clone());
            Box::new(move |created: &mut dyn FnMut(Resource)| {
                t.publish(&dir, &manifest, &env, created)
            }) as crate::parallel::Job<_, _>
        })
        .collect();
    crate::parallel::blocking_all(jobs, AT_ONCE, record, |e| Err(anyhow::anyhow!(e)))
        .context("starting the publish threads")
}

/// Reads `made.published`; sets what each target published (`made.glance_published`).
/// Records every remote record it creates until it is published. A target that fails is
/// named; what the others published stays and is in the manifest, unless `all_or_nothing`.
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
        let names: Vec<String> = targets.iter().map(|t| t.name()).collect();
        let dir = ctx
            .made
            .published
            .clone()
            .context("the build was not published locally")?;
        let manifest = ctx.manifest();
        let env = TargetEnv {
            glance: ctx.env.tunables.glance.clone(),
            cancel: ctx.env.cancel.clone(),
        };
        let mut created: Vec<Vec<Resource>> = vec![Vec::new(); names.len()];
        let results = publish_all(targets, &dir, &manifest, &env, &mut |i, r| {
            ctx.record(r.clone());
            created[i].push(r);
        })?;
        let mut failed = Vec::new();
        for (i, res) in results.into_iter().enumerate() {
            match res {
                Ok(Published::Glance(images)) => {
                    ctx.made.glance_published.extend(images);
                    if !publish.all_or_nothing {
                        // Published: these are the user's records now, not build resources.
                        created[i].iter().for_each(|r| ctx.forget(r));
                    }
                }
                Err(e) => failed.push(format!("{}: {e:#}", names[i])),
            }
        }
        if failed.is_empty() {
            created.iter().flatten().for_each(|r| ctx.forget(r));
            return Ok(());
        }
        if publish.all_or_nothing {
            // The cleanup removes every image this build made, in every target.
            ctx.made.glance_published.clear();
        }
        anyhow::bail!(
            "publishing to {} of {} targets failed{} (the build itself is complete in {}; retry with `kiln publish {}`):\n  {}",
            failed.len(),
            names.len(),
            if publish.all_or_nothing {
                "; all_or_nothing: what the others got is removed too"
            } else {
                ""
            },
            dir.display(),
            dir.display(),
            failed.join("\n  ")
        )
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
