//! Sysprep stage: virt-sysprep's operations through libguestfs, in the appliance the cloud-init
//! stage launched (one launch for both), then fstrim so outputs stay small.

use anyhow::Context as _;

use crate::guest::{Guest, GuestError};
use crate::pipeline::context::BuildContext;
use crate::pipeline::{Outcome, Stage};

pub struct SysprepStage;

/// Glob patterns each file-removing operation deletes (as virt-sysprep does).
pub fn patterns(op: &str) -> &'static [&'static str] {
    match op {
        "bash-history" => &["/root/.bash_history", "/home/*/.bash_history"],
        "crash-data" => &[
            "/var/crash/*",
            "/var/log/dump/*",
            "/var/lib/systemd/coredump/*",
        ],
        "dhcp-client-state" => &[
            "/var/lib/dhclient/*",
            "/var/lib/dhcp/*",
            "/var/lib/dhcpcd/*",
            "/var/lib/NetworkManager/*.lease",
            "/var/lib/NetworkManager/dhclient-*",
        ],
        "logfiles" => &[
            "/var/log/*.log",
            "/var/log/*.log.*",
            "/var/log/*.gz",
            "/var/log/*.[0-9]",
            "/var/log/apt/*",
            "/var/log/audit/*",
            "/var/log/btmp*",
            "/var/log/cron*",
            "/var/log/dmesg*",
            "/var/log/faillog",
            "/var/log/installer/*",
            "/var/log/journal/*",
            "/var/log/lastlog*",
            "/var/log/mail/*",
            "/var/log/maillog*",
            "/var/log/messages*",
            "/var/log/secure*",
            "/var/log/spooler*",
            "/var/log/syslog*",
            "/var/log/tallylog*",
            "/var/log/wtmp*",
            "/var/log/unattended-upgrades/*",
            "/root/anaconda-ks.cfg",
            "/root/install.log*",
        ],
        "package-manager-cache" => &[
            "/var/cache/apt/archives/*",
            "/var/cache/apt/*.bin",
            "/var/cache/dnf/*",
            "/var/cache/yum/*",
            "/var/cache/zypp*/*",
        ],
        "passwd-backups" => &[
            "/etc/group-",
            "/etc/gshadow-",
            "/etc/passwd-",
            "/etc/shadow-",
            "/etc/subuid-",
            "/etc/subgid-",
        ],
        "ssh-hostkeys" => &["/etc/ssh/*_host_*"],
        "ssh-userdir" => &["/root/.ssh", "/home/*/.ssh"],
        "tmp-files" => &["/tmp/*", "/var/tmp/*"],
        "udev-persistent-net" => &["/etc/udev/rules.d/70-persistent-net.rules"],
        "utmp" => &["/var/run/utmp", "/run/utmp"],
        _ => &[],
    }
}

/// Run one operation; returns how many paths it removed or emptied.
pub fn run_operation(g: &Guest, op: &str) -> Result<usize, GuestError> {
    let mut n = 0;
    match op {
        "machine-id" => {
            // Emptied, never refilled: systemd generates a fresh one on first boot, so clones
            // never share an ID (virt-sysprep's customize step would refill it).
            if g.is_file("/etc/machine-id")? {
                g.write("/etc/machine-id", b"")?;
                n += 1;
            }
            if g.exists("/var/lib/dbus/machine-id")? && !g.is_symlink("/var/lib/dbus/machine-id") {
                g.rm_rf("/var/lib/dbus/machine-id")?;
                n += 1;
            }
        }
        "cloud-init-state" => {
            n += super::cloud_init::remove_cloud_init_state(g).map_err(|e| GuestError {
                disk: Default::default(),
                op: "cloud-init-state".into(),
                message: format!("{e:#}"),
            })?;
        }
        "backup-files" => {
            for p in g.find("/etc")? {
                if p.ends_with('~') || p.ends_with(".bak") {
                    g.rm_rf(&format!("/etc/{p}"))?;
                    n += 1;
                }
            }
        }
        other => {
            for pat in patterns(other) {
                for p in g.glob(pat)? {
                    g.rm_rf(&p)?;
                    n += 1;
                }
            }
        }
    }
    Ok(n)
}

impl Stage<BuildContext> for SysprepStage {
    fn name(&self) -> &'static str {
        "sysprep"
    }

    fn run(&mut self, ctx: &mut BuildContext) -> anyhow::Result<()> {
        ctx.enter(self.name());
        let g = ctx
            .guest
            .take()
            .context("no libguestfs session from the cloud-init stage")?;
        let ops = ctx.plan.sysprep.clone();
        for op in &ops {
            if ctx.cancel.is_cancelled() {
                anyhow::bail!("interrupted");
            }
            let n = run_operation(&g, op).with_context(|| format!("sysprep operation {op}"))?;
            tracing::info!("sysprep {op}: {n} removed");
            ctx.sysprep_removed.push((op.to_string(), n));
        }
        g.fstrim();
        g.close().context("closing the libguestfs appliance")?;
        Ok(())
    }

    fn cleanup(&mut self, ctx: &mut BuildContext, _outcome: Outcome) -> anyhow::Result<()> {
        ctx.guest.take();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_implemented_operation_does_something() {
        for op in crate::sysprep::OPERATIONS.iter().filter(|o| o.implemented) {
            let special = ["machine-id", "cloud-init-state", "backup-files"].contains(&op.name);
            assert!(
                special || !patterns(op.name).is_empty(),
                "{} is marked implemented but removes nothing",
                op.name
            );
        }
    }
}
