//! Convert stage: the build disk (overlay + base, flattened) to every output, concurrently,
//! verified and hashed (see `crate::convert`), plus `SHA256SUMS`.

use anyhow::{bail, Context as _};

use crate::convert::{self, Job};
use crate::pipeline::context::BuildContext;
use crate::pipeline::describe::{Describe, Described, PlanView};
use crate::pipeline::{Outcome, Stage};

pub struct ConvertStage;

impl Stage<BuildContext> for ConvertStage {
    fn name(&self) -> &'static str {
        "convert"
    }

    fn run(&mut self, ctx: &mut BuildContext) -> anyhow::Result<()> {
        let disk = ctx.disk.clone().context("no build disk")?;
        std::fs::create_dir_all(&ctx.out)?;
        let slug = ctx.plan.slug();
        let source = convert::source_sizes(&disk, &ctx.cancel)?;
        tracing::info!(
            "source disk: {} virtual, {} allocated (with its base)",
            crate::progress::human_bytes(source.virtual_size),
            crate::progress::human_bytes(source.allocated_size)
        );
        ctx.source_disk = Some(source);
        convert::check_source(&disk, "qcow2", &ctx.cancel)?;
        let jobs: Vec<Job> = ctx
            .plan
            .outputs
            .iter()
            .map(|o| Job {
                src: disk.clone(),
                src_format: "qcow2".into(),
                out: o.clone(),
                dst: ctx.out.join(o.file_name(&slug)),
            })
            .collect();
        let results = convert::convert_all(&jobs, ctx.jobs, &ctx.cancel);
        let mut first_err = None;
        for r in results {
            match r {
                Ok(c) => ctx.outputs.push(c),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            bail!(e);
        }
        convert::write_sha256sums(&ctx.out, &ctx.outputs)
            .with_context(|| format!("writing {}/SHA256SUMS", ctx.out.display()))?;
        Ok(())
    }

    fn cleanup(&mut self, _ctx: &mut BuildContext, _outcome: Outcome) -> anyhow::Result<()> {
        // Outputs live in the staging directory, which the build removes unless published;
        // partial files are removed by the conversion itself.
        Ok(())
    }
}

impl Describe for ConvertStage {
    fn describe(&self, v: &PlanView) -> Option<Described> {
        let plan = v.plan;
        Some(Described {
            inputs: serde_json::to_value(&plan.outputs).unwrap_or_default(),
            commands: plan
                .outputs
                .iter()
                .flat_map(|o| {
                    convert::planned(&Job {
                        src: v.disk(),
                        src_format: "qcow2".into(),
                        out: o.clone(),
                        dst: v.out.join(o.file_name(&plan.slug())),
                    })
                })
                .chain([format!("write {}", v.out.join("SHA256SUMS").display())])
                .collect(),
        })
    }
}
