//! cloud-init stage: open the build disk with libguestfs (the launch the sysprep stage reuses),
//! confirm that provisioning completed, and make the image cloud-ready: cloud-init present,
//! datasource list and default user written, per-instance state removed.

use anyhow::{bail, Context as _};

use crate::guest::Guest;
use crate::pipeline::cached::{self, GuestfsResult, Lookup};
use crate::pipeline::context::{BuildContext, GuestfsSession};
use crate::pipeline::describe::{Describe, Described, PlanView};
use crate::pipeline::{Outcome, Stage};
use crate::plan::CloudInitPlan;

/// Reads `made.disk`, `made.domain` (did the VM boot); sets `made.guestfs` (the appliance and
/// the key it makes), or on a cache hit `made.disk`, `sysprep_removed`, `sparsify`,
/// `inventory`.
pub struct CloudInitStage;

pub const CONFIG_PATH: &str = "/etc/cloud/cloud.cfg.d/90_kiln.cfg";

/// The cloud.cfg.d drop-in kiln writes.
pub fn config_text(ci: &CloudInitPlan) -> String {
    let mut s = String::from("# Written by kiln: what this golden image expects from the cloud.\n");
    s.push_str(&format!(
        "datasource_list: [ {} ]\n",
        ci.datasources
            .iter()
            .map(|d| crate::quote::yaml(d))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if let Some(u) = &ci.default_user {
        let q = crate::quote::yaml;
        s.push_str("system_info:\n  default_user:\n");
        s.push_str(&format!("    name: {}\n", q(&u.name)));
        s.push_str("    lock_passwd: true\n");
        if !u.groups.is_empty() {
            let g: Vec<String> = u.groups.iter().map(|g| q(g)).collect();
            s.push_str(&format!("    groups: [{}]\n", g.join(", ")));
        }
        if let Some(shell) = &u.shell {
            s.push_str(&format!("    shell: {}\n", q(shell)));
        }
        if u.sudo.unwrap_or(true) {
            s.push_str("    sudo: [\"ALL=(ALL) NOPASSWD:ALL\"]\n");
        }
    }
    s
}

/// The ssh host public keys on the disk (type and base64).
fn build_host_keys(g: &Guest) -> anyhow::Result<Vec<String>> {
    let mut keys = Vec::new();
    for path in g.glob("/etc/ssh/ssh_host_*_key.pub")? {
        let text = String::from_utf8_lossy(&g.read(&path)?).into_owned();
        keys.extend(crate::boottest::public_key_blob(&text));
    }
    Ok(keys)
}

/// The appliance stays open for the sysprep stage (or, after a failure, for cleanup).
fn keep(ctx: &mut BuildContext, g: Guest) {
    ctx.made.guestfs.get_or_insert_with(Default::default).guest = Some(g);
}

impl Stage<BuildContext> for CloudInitStage {
    fn name(&self) -> &'static str {
        "cloud-init"
    }

    fn run(&mut self, ctx: &mut BuildContext) -> anyhow::Result<()> {
        // The stage cache: cloud-init, customize and sysprep are one unit (one launch). The
        // chain goes on only once the unit is reused or committed.
        let prev = ctx.cache.chain.take();
        let key = match &prev {
            Some(prev) => crate::stagecache::guestfs_key(
                &ctx.env.plan,
                &prev.key,
                crate::hosttools::HostTools::here(),
            )?,
            None => None,
        };
        let found =
            ctx.cache_lookup::<GuestfsResult>(cached::GUESTFS, key, prev.as_ref(), &|_, _| true)?;
        let slot = match found {
            Lookup::Hit(e, r) => {
                ctx.made.sysprep_removed = r.sysprep_removed;
                ctx.made.sparsify = r.sparsify;
                ctx.tools.libguestfs = r.libguestfs;
                ctx.made.inventory = r.inventory;
                ctx.made.build_host_keys = r.build_host_keys;
                ctx.made.disk = Some(e.file("disk.qcow2"));
                ctx.made.guestfs = Some(GuestfsSession {
                    reused: true,
                    ..Default::default()
                });
                return Ok(());
            }
            Lookup::Miss(slot) => slot,
        };
        ctx.made.guestfs = Some(GuestfsSession {
            slot,
            ..Default::default()
        });
        let disk = ctx.made.disk.clone().context("no build disk")?;
        let tcg = ctx.engine()?.is_tcg();
        tracing::info!("opening the build disk with libguestfs");
        // Package installs in customize steps need the appliance's network.
        let mut g = Guest::open_with(
            &disk,
            "qcow2",
            crate::guest::Launch {
                tcg,
                readonly: false,
                network: crate::customize::needs_network(&ctx.env.plan.sysprep_options.customize),
            },
        )?;
        g.kill_on_cancel(&ctx.env.cancel);
        ctx.tools.libguestfs = crate::hosttools::HostTools::here().libguestfs.clone();

        // The provisioning script's own verdict, written inside the guest (when it booted).
        let status = if ctx.made.domain.is_none() {
            "ok".to_string()
        } else if g.is_file(crate::seed::STATUS_FILE)? {
            String::from_utf8_lossy(&g.read(crate::seed::STATUS_FILE)?)
                .trim()
                .to_string()
        } else {
            "missing (cloud-init never ran the provisioning script: is cloud-init installed and \
             the NoCloud datasource enabled in the base image?)"
                .to_string()
        };
        if status != "ok" {
            keep(ctx, g);
            bail!("provisioning did not complete: {status}; see console.log");
        }
        if !g.exists("/usr/bin/cloud-init")? {
            keep(ctx, g);
            bail!("cloud-init is not installed in the image (add the `cloud-init` element or install it in a provisioning step)");
        }
        // The keys the build VM had (whichever way it booted, or none if it did not): sysprep
        // removes them, and the boot test makes sure the image does not come up with them.
        ctx.made.build_host_keys = build_host_keys(&g)?;
        g.write(
            CONFIG_PATH,
            config_text(&ctx.env.plan.cloud_init).as_bytes(),
        )?;
        let removed =
            crate::sysprep::engine::run_operation(&g, "cloud-init-state", &Default::default())?
                .0
                .len();
        // kiln's provisioning leftovers.
        g.rm_rf("/var/lib/kiln")?;
        tracing::info!(
            "cloud-init: datasources [{}] written to {CONFIG_PATH}; {removed} state entries removed",
            ctx.env.plan.cloud_init.datasources.join(", ")
        );
        keep(ctx, g);
        Ok(())
    }

    fn cleanup(&mut self, ctx: &mut BuildContext, _outcome: Outcome) -> anyhow::Result<()> {
        // Normally sysprep closes the appliance; after a failure, drop it (closing kills it)
        // and the key it would have made.
        ctx.made.guestfs = None;
        Ok(())
    }
}

impl Describe for CloudInitStage {
    fn describe(&self, v: &PlanView) -> Option<Described> {
        Some(Described {
            inputs: serde_json::to_value(&v.plan.cloud_init).unwrap_or_default(),
            commands: vec![format!(
                "libguestfs on {}: {}check /usr/bin/cloud-init; write {CONFIG_PATH}; remove /var/lib/cloud state",
                v.disk().display(),
                if v.booted() {
                    "check the provisioning status in /var/lib/kiln/status; "
                } else {
                    ""
                },
            )],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::model::DefaultUser;

    #[test]
    fn config_lists_datasources_and_default_user() {
        let text = config_text(&CloudInitPlan {
            datasources: vec!["ConfigDrive".into(), "OpenStack".into(), "None".into()],
            default_user: Some(DefaultUser {
                name: "debian".into(),
                groups: vec!["sudo".into()],
                shell: Some("/bin/bash".into()),
                sudo: None,
            }),
        });
        assert!(text.contains("datasource_list: [ ConfigDrive, OpenStack, None ]\n"));
        assert!(text.contains("    name: debian\n"));
        assert!(text.contains("    groups: [sudo]\n"), "{text}");
        assert!(text.contains("    shell: /bin/bash\n"));
        assert!(text.contains("NOPASSWD"));
    }
}
