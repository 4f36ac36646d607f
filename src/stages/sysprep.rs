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
        "abrt-data" => &["/var/spool/abrt/*"],
        "firewall-rules" => &["/etc/sysconfig/iptables", "/etc/firewalld/*/*"],
        "net-nmconn" => &["/etc/NetworkManager/system-connections/*.nmconnection"],
        "blkid-tab" => &[
            "/var/run/blkid.tab",
            "/var/run/blkid.tab.old",
            "/etc/blkid/blkid.tab",
            "/etc/blkid/blkid.tab.old",
            "/etc/blkid.tab",
            "/etc/blkid.tab.old",
            "/dev/.blkid.tab",
            "/dev/.blkid.tab.old",
        ],
        // Debian keeps crontabs in a subdirectory, which stays (emptied).
        "cron-spool" => &[
            "/var/spool/cron/crontabs/*",
            "/var/spool/atjobs/*",
            "/var/spool/atspool/*",
            "/var/spool/at/*",
        ],
        "dhcp-server-state" => &["/var/lib/dhcpd/*"],
        "dovecot-data" => &["/var/lib/dovecot/*"],
        "kerberos-hostkeytab" => &["/etc/krb5.keytab"],
        "mail-spool" => &["/var/spool/mail/*", "/var/mail/*"],
        // /var/run is usually a symlink to /run, which a glob does not follow.
        "pam-data" => &[
            "/var/run/console/*",
            "/var/run/faillock/*",
            "/var/run/sepermit/*",
            "/run/console/*",
            "/run/faillock/*",
            "/run/sepermit/*",
        ],
        "puppet-data-log" => &["/var/log/puppet/*", "/var/lib/puppet/*/*"],
        "rh-subscription-manager" => &["/etc/pki/consumer/*", "/etc/pki/entitlement/*"],
        "rhn-systemid" => &[
            "/etc/sysconfig/rhn/systemid",
            "/etc/sysconfig/rhn/osad-auth.conf",
        ],
        "rpm-db" => &["/var/lib/rpm/__db.*"],
        "samba-db-log" => &[
            "/var/log/samba/old/*",
            "/var/log/samba/*",
            "/var/lib/samba/*/*",
        ],
        "smolt-uuid" => &[
            "/etc/sysconfig/hw-uuid",
            "/etc/smolt/uuid",
            "/etc/smolt/hw-uuid",
        ],
        "sssd-db-log" => &["/var/log/sssd/*", "/var/lib/sss/db/*"],
        "yum-uuid" => &["/var/lib/yum/uuid"],
        "bash-history" => &["/root/.bash_history", "/home/*/.bash_history"],
        // kexec-tools' dumps only; systemd-coredump's stay (as with virt-sysprep).
        "crash-data" => &["/var/crash/*", "/var/log/dump/*"],
        "dhcp-client-state" => &[
            "/var/lib/dhclient/*",
            "/var/lib/dhcp/*",
            "/var/lib/dhcpcd/*",
        ],
        // virt-sysprep 1.48's documented list (`virt-sysprep --dump-pod`), nothing more.
        "logfiles" => &[
            "/etc/Pegasus/*.cnf",
            "/etc/Pegasus/*.crt",
            "/etc/Pegasus/*.csr",
            "/etc/Pegasus/*.pem",
            "/etc/Pegasus/*.srl",
            "/root/anaconda-ks.cfg",
            "/root/anaconda-post.log",
            "/root/initial-setup-ks.cfg",
            "/root/install.log",
            "/root/install.log.syslog",
            "/root/original-ks.cfg",
            "/var/cache/fontconfig/*",
            "/var/cache/gdm/*",
            "/var/cache/man/*",
            "/var/lib/AccountService/users/*",
            "/var/lib/fprint/*",
            "/var/lib/logrotate.status",
            "/var/log/*.log*",
            "/var/log/BackupPC/LOG",
            "/var/log/ConsoleKit/*",
            "/var/log/anaconda.syslog",
            "/var/log/anaconda/*",
            "/var/log/apache2/*_log",
            "/var/log/apache2/*_log-*",
            "/var/log/apt/*",
            "/var/log/aptitude*",
            "/var/log/audit/*",
            "/var/log/btmp*",
            "/var/log/ceph/*.log",
            "/var/log/chrony/*.log",
            "/var/log/cron*",
            "/var/log/cups/*_log*",
            "/var/log/debug*",
            "/var/log/dmesg*",
            "/var/log/exim4/*",
            "/var/log/faillog*",
            "/var/log/firewalld*",
            "/var/log/gdm/*",
            "/var/log/glusterfs/*glusterd.vol.log",
            "/var/log/glusterfs/glusterfs.log",
            "/var/log/grubby*",
            "/var/log/httpd/*log",
            "/var/log/installer/*",
            "/var/log/jetty/jetty-console.log",
            "/var/log/journal/*",
            "/var/log/lastlog*",
            "/var/log/libvirt/libvirtd.log",
            "/var/log/libvirt/libxl/*.log",
            "/var/log/libvirt/lxc/*.log",
            "/var/log/libvirt/qemu/*.log",
            "/var/log/libvirt/uml/*.log",
            "/var/log/lightdm/*",
            "/var/log/mail/*",
            "/var/log/maillog*",
            "/var/log/messages*",
            "/var/log/ntp",
            "/var/log/ntpstats/*",
            "/var/log/ppp/connect-errors",
            "/var/log/rhsm/*",
            "/var/log/sa/*",
            "/var/log/secure*",
            "/var/log/setroubleshoot/*.log",
            "/var/log/spooler*",
            "/var/log/squid/*.log",
            "/var/log/syslog*",
            "/var/log/tallylog*",
            "/var/log/tuned/tuned.log",
            "/var/log/wtmp*",
            "/var/log/xferlog*",
            "/var/named/data/named.run",
        ],
        // Regular files only (see `plan_operation`): virt-sysprep keeps the directories, so
        // apt's archives/partial stays.
        "package-manager-cache" => &[
            "/var/cache/apt/archives/*",
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

/// What an operation does to one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Delete the file or directory tree.
    Remove(String),
    /// Truncate to zero bytes, keeping the file (machine-id).
    Empty(String),
    /// Create an empty file (0644) where none is.
    Create(String),
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Remove(p) => write!(f, "remove {p}"),
            Action::Empty(p) => write!(f, "empty {p}"),
            Action::Create(p) => write!(f, "create {p}"),
        }
    }
}

/// Operations that only concern Red Hat-family guests (virt-sysprep skips them elsewhere).
const RHEL_ONLY: &[&str] = &[
    "rh-subscription-manager",
    "rhn-systemid",
    "rpm-db",
    "yum-uuid",
    "net-nmconn",
];

fn rhel_family(distro: &str) -> bool {
    [
        "rhel",
        "centos",
        "fedora",
        "rocky",
        "almalinux",
        "oraclelinux",
        "scientificlinux",
        "redhat-based",
        "circle",
        "openEuler",
    ]
    .contains(&distro)
}

/// What `op` would do to this guest (reads only).
pub fn plan_operation(g: &Guest, op: &str) -> Result<Vec<Action>, GuestError> {
    let mut v = Vec::new();
    if RHEL_ONLY.contains(&op) && !rhel_family(&g.distro) {
        return Ok(v);
    }
    match op {
        "machine-id" => {
            // Emptied, never refilled: systemd generates a fresh one on first boot, so clones
            // never share an ID (virt-sysprep's customize step would refill it).
            if g.is_file("/etc/machine-id")? && !g.read("/etc/machine-id")?.is_empty() {
                v.push(Action::Empty("/etc/machine-id".into()));
            }
            if g.exists("/var/lib/dbus/machine-id")? && !g.is_symlink("/var/lib/dbus/machine-id") {
                v.push(Action::Remove("/var/lib/dbus/machine-id".into()));
            }
        }
        "cloud-init-state" => {
            if g.exists("/var/lib/cloud")? {
                // Seeds a user placed on purpose stay; the directory entries are removed one
                // by one (a glob through the `instance` symlink would leave it dangling).
                v.extend(
                    g.glob("/var/lib/cloud/*")?
                        .into_iter()
                        .filter(|p| p != "/var/lib/cloud/seed")
                        .map(Action::Remove),
                );
            }
            v.extend(
                g.glob("/var/log/cloud-init*.log")?
                    .into_iter()
                    .map(Action::Remove),
            );
        }
        "backup-files" => {
            // Regular files named *.bak or *~ under the directories virt-sysprep examines.
            for dir in ["/etc", "/root", "/srv", "/tmp", "/var"] {
                for p in g.find(dir)? {
                    if p.ends_with('~') || p.ends_with(".bak") {
                        let full = format!("{dir}/{}", p.trim_start_matches('/'));
                        if g.is_file(&full)? && !g.is_symlink(&full) {
                            v.push(Action::Remove(full));
                        }
                    }
                }
            }
        }
        "flag-reconfiguration" => v.push(Action::Create("/.unconfigured".into())),
        "pacct-log" => {
            // The accounting file is removed with its rotations and recreated empty.
            let dir = if rhel_family(&g.distro) {
                "/var/account"
            } else {
                "/var/log/account"
            };
            let old = g.glob(&format!("{dir}/pacct*"))?;
            if !old.is_empty() {
                v.extend(old.into_iter().map(Action::Remove));
                v.push(Action::Create(format!("{dir}/pacct")));
            }
        }
        "cron-spool" => {
            for pat in patterns(op) {
                v.extend(g.glob(pat)?.into_iter().map(Action::Remove));
            }
            // Red Hat keeps crontabs directly in /var/spool/cron: files only there.
            for p in g.glob("/var/spool/cron/*")? {
                if g.is_file(&p)? {
                    v.push(Action::Remove(p));
                }
            }
        }
        "package-manager-cache" => {
            for pat in patterns(op) {
                for p in g.glob(pat)? {
                    if g.is_file(&p)? {
                        v.push(Action::Remove(p));
                    }
                }
            }
        }
        other => {
            for pat in patterns(other) {
                v.extend(g.glob(pat)?.into_iter().map(Action::Remove));
            }
        }
    }
    Ok(v)
}

pub fn apply(g: &Guest, actions: &[Action]) -> Result<(), GuestError> {
    for a in actions {
        match a {
            Action::Remove(p) => g.rm_rf(p)?,
            Action::Empty(p) => g.write(p, b"")?,
            Action::Create(p) => {
                if !g.exists(p)? {
                    g.write(p, b"")?;
                }
            }
        }
    }
    Ok(())
}

/// Run one operation; returns what it did.
pub fn run_operation(g: &Guest, op: &str) -> Result<Vec<Action>, GuestError> {
    let actions = plan_operation(g, op)?;
    apply(g, &actions)?;
    Ok(actions)
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
            let done = run_operation(&g, op).with_context(|| format!("sysprep operation {op}"))?;
            tracing::info!("sysprep {op}: {} removed", done.len());
            for a in &done {
                tracing::debug!("sysprep {op}: {a}");
            }
            ctx.sysprep_removed.push((op.to_string(), done.len()));
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
            let special = [
                "machine-id",
                "cloud-init-state",
                "backup-files",
                "flag-reconfiguration",
                "pacct-log",
            ]
            .contains(&op.name);
            assert!(
                special || !patterns(op.name).is_empty(),
                "{} is marked implemented but removes nothing",
                op.name
            );
        }
    }
}
