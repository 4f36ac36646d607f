//! Sysprep stage: virt-sysprep's operations (the engine in `crate::sysprep::engine`) in the
//! appliance the cloud-init stage launched (one launch for both), then fstrim so outputs stay
//! small. Random passwords set by customize steps go to NAME-VERSION.passwords, never the log.

use anyhow::Context as _;

use crate::pipeline::context::BuildContext;
use crate::pipeline::describe::{Describe, Described, PlanView};
use crate::pipeline::{Outcome, Stage};
use crate::sysprep::engine::run_all;

pub struct SysprepStage;

impl Stage<BuildContext> for SysprepStage {
    fn name(&self) -> &'static str {
        "sysprep"
    }

    fn run(&mut self, ctx: &mut BuildContext) -> anyhow::Result<()> {
        let g = ctx
            .guest
            .take()
            .context("no libguestfs session from the cloud-init stage")?;
        let disk = ctx.disk.clone().context("no build disk")?;
        let before = crate::manifest::allocated(&disk);
        let ops = ctx.plan.sysprep.clone();
        let opts = ctx.plan.sysprep_options.clone();
        let mut removed = Vec::new();
        let mut secrets = Vec::new();
        let result = run_all(
            &g,
            &ops,
            &opts,
            false,
            &ctx.cancel,
            &mut |g| g.fstrim(),
            &mut |r| {
                tracing::info!("sysprep {}: {} change(s)", r.op, r.actions.len());
                for a in &r.actions {
                    tracing::debug!("sysprep {}: {a}", r.op);
                }
                for n in &r.notes {
                    tracing::info!("sysprep {}: {n}", r.op);
                }
                secrets.extend(r.secrets.iter().cloned());
                removed.push((r.op.to_string(), r.actions.len()));
            },
        );
        ctx.sysprep_removed.extend(removed);
        if !secrets.is_empty() {
            // Beside the image, not in it or its log: readable by the owner only.
            let file = ctx
                .final_dir
                .with_file_name(format!("{}.passwords", ctx.plan.slug()));
            write_private(&file, &(secrets.join("\n") + "\n"))
                .with_context(|| format!("writing the random passwords to {}", file.display()))?;
            tracing::info!(
                "random passwords are in {} (mode 0600; not in the log or the manifest)",
                file.display()
            );
        }
        if let Err((op, e)) = result {
            ctx.guest = Some(g);
            return Err(anyhow::Error::new(e).context(format!("sysprep operation {op}")));
        }
        g.close().context("closing the libguestfs appliance")?;
        let after = crate::manifest::allocated(&disk);
        tracing::info!(
            "sparsify: build disk allocated {} -> {}",
            crate::progress::human_bytes(before),
            crate::progress::human_bytes(after)
        );
        ctx.sparsify = Some(crate::manifest::Sparsify {
            allocated_before: before,
            allocated_after: after,
        });
        Ok(())
    }

    fn cleanup(&mut self, ctx: &mut BuildContext, _outcome: Outcome) -> anyhow::Result<()> {
        ctx.guest.take();
        Ok(())
    }
}

/// Write `text` to `path` with mode 0600 from the start (a temporary file renamed into place).
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    // tempfile creates its files with mode 0600.
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

impl Describe for SysprepStage {
    fn describe(&self, v: &PlanView) -> Option<Described> {
        let plan = v.plan;
        Some(Described {
            inputs: serde_json::json!({
                "operations": plan.sysprep,
                "options": plan.sysprep_options,
            }),
            commands: plan
                .sysprep_options
                .customize
                .iter()
                .map(|c| format!("customize: {c}"))
                .chain(std::iter::once(format!(
                    "libguestfs (same launch): {}; fstrim",
                    plan.sysprep.join(", ")
                )))
                .collect(),
        })
    }
}
