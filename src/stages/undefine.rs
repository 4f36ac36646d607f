//! Undefine stage: nothing of the build remains in libvirt.

use anyhow::bail;

use crate::pipeline::context::{BuildContext, Resource};
use crate::pipeline::describe::{Describe, Described, PlanView};
use crate::pipeline::{Outcome, Stage};

/// Reads `made.domain`; undefines it and forgets it in the register.
pub struct UndefineStage;

impl Stage<BuildContext> for UndefineStage {
    fn name(&self) -> &'static str {
        "undefine"
    }

    fn run(&mut self, ctx: &mut BuildContext) -> anyhow::Result<()> {
        // Builds without provisioning steps never define a domain.
        let Some(name) = ctx.made.domain.clone() else {
            tracing::info!("no build domain to undefine");
            return Ok(());
        };
        let uri = ctx.env.plan.vm.uri.clone();
        let lv = ctx.libvirt()?;
        lv.destroy_and_undefine(&name)?;
        if lv.exists(&name) {
            bail!("domain {name} still exists after undefine");
        }
        ctx.forget(&Resource::Domain {
            uri,
            name: name.clone(),
        });
        tracing::info!("domain {name} undefined");
        Ok(())
    }

    fn cleanup(&mut self, _ctx: &mut BuildContext, _outcome: Outcome) -> anyhow::Result<()> {
        Ok(())
    }
}

impl Describe for UndefineStage {
    fn describe(&self, v: &PlanView) -> Option<Described> {
        Some(Described {
            inputs: serde_json::json!({ "uri": v.plan.vm.uri }),
            commands: vec![if v.booted() {
                "libvirt: destroy (if running) and undefine the build domain".into()
            } else {
                "nothing: no domain was defined".into()
            }],
        })
    }
}
