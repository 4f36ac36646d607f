//! Sysprep stage: virt-sysprep's operations (the engine in `crate::sysprep::engine`) in the
//! appliance the cloud-init stage launched (one launch for both), then fstrim so outputs stay
//! small. Random passwords set by customize steps stay in memory until the build
//! ends and are shown once on the terminal: no log, file or manifest holds them.

use anyhow::Context as _;

use crate::pipeline::cached::GuestfsResult;
use crate::pipeline::context::BuildContext;
use crate::pipeline::describe::{Describe, Described, PlanView};
use crate::pipeline::{Outcome, Stage};
use crate::sysprep::engine::run_all;

/// Reads `made.guestfs` (takes the appliance), `made.disk`; sets `made.sysprep_removed`,
/// `sparsify`, `inventory`, and `made.disk` to the committed entry's.
pub struct SysprepStage;

impl Stage<BuildContext> for SysprepStage {
    fn name(&self) -> &'static str {
        "sysprep"
    }

    fn run(&mut self, ctx: &mut BuildContext) -> anyhow::Result<()> {
        let mut session = ctx
            .made
            .guestfs
            .take()
            .context("no libguestfs session from the cloud-init stage")?;
        if session.reused {
            tracing::info!("sysprep: reused with the cloud-init stage's cache entry");
            return Ok(());
        }
        let g = session
            .guest
            .take()
            .context("no libguestfs appliance from the cloud-init stage")?;
        let disk = ctx.made.disk.clone().context("no build disk")?;
        let before = crate::manifest::allocated(&disk);
        let ops = ctx.env.plan.sysprep.clone();
        let opts = ctx.env.plan.sysprep_options.clone();
        let mut removed = Vec::new();
        let mut secrets = Vec::new();
        let result = run_all(
            &g,
            &ops,
            &opts,
            false,
            &ctx.env.cancel,
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
        ctx.made.sysprep_removed.extend(removed);
        if !secrets.is_empty() {
            tracing::info!(
                "{} random password(s) set: shown once when the build ends, kept nowhere",
                secrets.len()
            );
            ctx.secrets.extend(secrets);
        }
        if let Err((op, e)) = result {
            session.guest = Some(g);
            ctx.made.guestfs = Some(session);
            return Err(anyhow::Error::new(e).context(format!("sysprep operation {op}")));
        }
        // The inventory in the same launch: what the SBOM lists.
        let inv = match crate::inventory::read(&g) {
            Ok(inv) => inv,
            Err(e) => {
                session.guest = Some(g);
                ctx.made.guestfs = Some(session);
                anyhow::bail!("reading the image's packages for its SBOM: {e}");
            }
        };
        tracing::info!(
            "inventory: {} ({} packages, kernels: {})",
            inv.os
                .get("PRETTY_NAME")
                .map(String::as_str)
                .unwrap_or("unknown OS"),
            inv.packages.len(),
            inv.kernels.join(", ")
        );
        ctx.made.inventory = Some(inv);
        g.close().context("closing the libguestfs appliance")?;
        let after = crate::manifest::allocated(&disk);
        tracing::info!(
            "sparsify: build disk allocated {} -> {}",
            crate::progress::human_bytes(before),
            crate::progress::human_bytes(after)
        );
        ctx.made.sparsify = Some(crate::manifest::Sparsify {
            allocated_before: before,
            allocated_after: after,
        });
        // Commit the libguestfs stages' disk (an overlay over the provisioned entry).
        if let Some(slot) = session.slot.take() {
            let result = GuestfsResult {
                sysprep_removed: ctx.made.sysprep_removed.clone(),
                sparsify: ctx.made.sparsify.clone(),
                libguestfs: ctx.tools.libguestfs.clone(),
                inventory: ctx.made.inventory.clone(),
                build_host_keys: ctx.made.build_host_keys.clone(),
            };
            let files = [(disk.clone(), "disk.qcow2")];
            if let Some(entry) = ctx.cache_commit(slot, &files, &result) {
                ctx.forget(&crate::pipeline::context::Resource::File(disk));
                ctx.made.disk = Some(entry.file("disk.qcow2"));
            }
        }
        Ok(())
    }

    fn cleanup(&mut self, ctx: &mut BuildContext, _outcome: Outcome) -> anyhow::Result<()> {
        ctx.made.guestfs = None;
        Ok(())
    }
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
