//! The sysprep engine: what each operation removes, empties or edits in a guest, and running a
//! selection of them in one libguestfs session (file operations, the CA store update and the
//! trim, then the block-device operations). Used by the sysprep stage and by `kiln sysprep`.

use crate::guest::{Guest, GuestError};
pub use crate::plan::SysprepOptions as Options;

/// Glob patterns each file-removing operation deletes (as virt-sysprep does).
pub fn patterns(op: &str) -> &'static [&'static str] {
    match op {
        "abrt-data" => &["/var/spool/abrt/*"],
        "firewall-rules" => &[
            "/etc/sysconfig/iptables",
            "/etc/firewalld/services/*",
            "/etc/firewalld/zones/*",
        ],
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
        // Trees: every regular file below them but `.SEQ` (see `plan_operation`); globs:
        // what is not a directory.
        "cron-spool" => &[
            "/var/spool/cron/",
            "/var/spool/atjobs/*",
            "/var/spool/atspool/*",
            "/var/spool/at/",
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
        "puppet-data-log" => &[
            "/var/log/puppet/*",
            "/var/lib/puppet/*/*",
            "/var/lib/puppet/*/*/*",
        ],
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
            "/var/lib/samba/*",
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
        // Every regular file below these (see `plan_operation`): virt-sysprep keeps the
        // directories, so apt's archives/partial stays, emptied.
        "package-manager-cache" => &[
            "/var/cache/apt/archives/",
            "/var/cache/dnf/",
            "/var/cache/yum/",
            "/var/cache/zypp*",
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
        // Every entry, dot-files too (virt-sysprep lists the directory after its glob).
        "tmp-files" => &["/tmp/", "/var/tmp/"],
        "udev-persistent-net" => &["/etc/udev/rules.d/70-persistent-net.rules"],
        "utmp" => &["/var/run/utmp", "/run/utmp"],
        _ => &[],
    }
}

/// Operations whose paths virt-sysprep removes with `rm`, which refuses directories (its
/// errors are ignored): only what is not a directory goes, a directory matched by a glob stays.
/// The others use `rm -rf`.
const NOT_DIRECTORIES: &[&str] = &[
    "bash-history",
    "blkid-tab",
    "dovecot-data",
    "firewall-rules",
    "kerberos-hostkeytab",
    "pam-data",
    "passwd-backups",
    "puppet-data-log",
    "rhn-systemid",
    "rpm-db",
    "samba-db-log",
    "smolt-uuid",
    "ssh-hostkeys",
    "sssd-db-log",
    "udev-persistent-net",
    "utmp",
    "yum-uuid",
];

/// Regular files anywhere below `dir` (symlinks and directories stay), except those `keep`
/// names by their last component: virt-sysprep's `rm_rf_only_files`.
fn files_below(g: &Guest, dir: &str, keep: &[&str]) -> Result<Vec<String>, GuestError> {
    let dir = dir.trim_end_matches('/');
    let mut out = Vec::new();
    for rel in g.find(dir)? {
        let full = format!("{dir}/{}", rel.trim_start_matches('/'));
        let name = full.rsplit('/').next().unwrap_or("");
        if !keep.contains(&name) && g.is_file(&full)? {
            out.push(full);
        }
    }
    Ok(out)
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
    /// Replace a file's content (lines dropped from a config file).
    Rewrite {
        path: String,
        content: Vec<u8>,
        why: String,
    },
    /// Remove an account: its passwd, shadow and group entries, mail spool and home.
    RemoveUser { name: String, home: Option<String> },
    /// Regenerate the system CA store with the guest's own tool.
    UpdateCaStore(String),
    /// New random UUID for a filesystem (block-device operation).
    NewFsUuid { device: String, fstype: String },
    /// New random UUIDs for every LVM2 PV and VG.
    NewLvmUuids { pvs: usize, vgs: usize },
    /// Run host scripts against the guest's root.
    Scripts(Vec<String>),
    /// One customize step.
    Customize(crate::customize::Customize),
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Remove(p) => write!(f, "remove {p}"),
            Action::Empty(p) => write!(f, "empty {p}"),
            Action::Create(p) => write!(f, "create {p}"),
            Action::Rewrite { path, why, .. } => write!(f, "edit {path} ({why})"),
            Action::RemoveUser { name, home } => match home {
                Some(h) => write!(f, "remove user {name} and {h}"),
                None => write!(f, "remove user {name}"),
            },
            Action::UpdateCaStore(cmd) => write!(f, "run `{cmd}` in the guest"),
            Action::NewFsUuid { device, fstype } => {
                write!(f, "give {device} ({fstype}) a new random UUID")
            }
            Action::NewLvmUuids { pvs, vgs } => {
                write!(f, "give {pvs} PV(s) and {vgs} VG(s) new random UUIDs")
            }
            Action::Scripts(s) => write!(f, "run {}", s.join("; ")),
            Action::Customize(c) => write!(f, "{c}"),
        }
    }
}

/// Operations on block devices: they run after every filesystem operation, with the
/// filesystems unmounted (as in virt-sysprep); lvm-uuids last.
pub const DEVICE_OPS: &[&str] = &["fs-uuids", "lvm-uuids"];

/// Distributions whose `ifcfg-*` files carry HOSTNAME/HWADDR (virt-sysprep's list, plus the
/// RHEL rebuilds libguestfs 1.48 reports under their own names).
fn uses_ifcfg(distro: &str) -> bool {
    rhel_family(distro)
}

/// Drop lines starting with any of `prefixes`; None when nothing changes. Like virt-sysprep,
/// the file is rewritten with `\n` endings and a final newline.
pub fn drop_lines(text: &str, prefixes: &[&str]) -> Option<String> {
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !prefixes.iter().any(|p| l.starts_with(p)))
        .collect();
    let out = kept.join("\n") + "\n";
    (out != text).then_some(out)
}

/// Accounts `user-account` removes from a passwd file: uid within [uid_min, uid_max],
/// in `remove` (when given) and not in `keep`.
pub fn accounts_to_remove(
    passwd: &str,
    uid_min: u32,
    uid_max: u32,
    remove: &[String],
    keep: &[String],
) -> Vec<(String, String)> {
    crate::guest::parse_passwd(passwd)
        .into_iter()
        .filter(|e| {
            let wanted = !keep.contains(&e.name) && (remove.is_empty() || remove.contains(&e.name));
            (uid_min..=uid_max).contains(&e.uid) && wanted
        })
        .map(|e| (e.name, e.home))
        .collect()
}

/// UID_MIN / UID_MAX from login.defs (shadow's defaults when absent).
pub fn uid_range(login_defs: &str) -> (u32, u32) {
    let get = |k: &str| {
        login_defs.lines().find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(k)).then(|| w.next()?.parse().ok())?
        })
    };
    (
        get("UID_MIN").unwrap_or(1000),
        get("UID_MAX").unwrap_or(60000),
    )
}

/// Remove `user`'s line (first field) from a colon-separated database; None when absent.
pub fn drop_entry(text: &str, user: &str) -> Option<String> {
    let mut found = false;
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            let hit = l.split(':').next() == Some(user);
            found |= hit;
            !hit
        })
        .collect();
    found.then(|| kept.join("\n") + "\n")
}

fn ca_store_command(distro: &str) -> Option<&'static str> {
    if rhel_family(distro) {
        Some("update-ca-trust extract")
    } else if ["debian", "ubuntu", "kalilinux"].contains(&distro) {
        Some("update-ca-certificates")
    } else {
        None
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

/// `~/.ssh` of every user an ssh-inject customize step names.
fn injected_ssh_dirs(g: &Guest, opts: &Options) -> Result<Vec<String>, GuestError> {
    let users: Vec<&str> = opts
        .customize
        .iter()
        .filter_map(|c| match c {
            crate::customize::Customize::SshInject { user, .. } => Some(user.as_str()),
            _ => None,
        })
        .collect();
    if users.is_empty() {
        return Ok(Vec::new());
    }
    Ok(g.passwd()?
        .into_iter()
        .filter(|e| users.contains(&e.name.as_str()))
        .map(|e| format!("{}/.ssh", e.home.trim_end_matches('/')))
        .collect())
}

/// What `op` would do to this guest (reads only).
pub fn plan_operation(g: &Guest, op: &str, opts: &Options) -> Result<Vec<Action>, GuestError> {
    let mut v = Vec::new();
    if RHEL_ONLY.contains(&op) && !rhel_family(&g.distro) {
        return Ok(v);
    }
    // yum's UUID matters only where yum is the package manager (RHEL 8+ use dnf).
    if op == "yum-uuid" && g.package_management != "yum" {
        return Ok(v);
    }
    match op {
        "customize" => v.extend(opts.customize.iter().cloned().map(Action::Customize)),
        "script" => {
            if !opts.scripts.is_empty() {
                v.push(Action::Scripts(opts.scripts.clone()));
            }
        }
        "net-hostname" | "net-hwaddr" => {
            if uses_ifcfg(&g.distro) {
                let prefixes: &[&str] = if op == "net-hostname" {
                    &["HOSTNAME=", "DHCP_HOSTNAME="]
                } else {
                    &["HWADDR="]
                };
                for p in g.glob("/etc/sysconfig/network-scripts/ifcfg-*")? {
                    let text = String::from_utf8_lossy(&g.read(&p)?).into_owned();
                    if let Some(content) = drop_lines(&text, prefixes) {
                        v.push(Action::Rewrite {
                            path: p,
                            content: content.into_bytes(),
                            why: format!("drop {}", prefixes.join(", ")),
                        });
                    }
                }
            }
        }
        "user-account" => {
            let defs = if g.is_file("/etc/login.defs")? {
                String::from_utf8_lossy(&g.read("/etc/login.defs")?).into_owned()
            } else {
                String::new()
            };
            let (min, max) = uid_range(&defs);
            let passwd = String::from_utf8_lossy(&g.read("/etc/passwd")?).into_owned();
            for (name, home) in accounts_to_remove(
                &passwd,
                min,
                max,
                &opts.remove_user_accounts,
                &opts.keep_user_accounts,
            ) {
                let home = (!home.is_empty() && home != "/").then_some(home);
                v.push(Action::RemoveUser { name, home });
            }
        }
        "ca-certificates" | "ipa-client" => {
            let (plain, certs): (&[&str], &[&str]) = if op == "ca-certificates" {
                (
                    &[],
                    &[
                        "/etc/pki/CA/certs/*.crt",
                        "/etc/pki/CA/crl/*.crt",
                        "/etc/pki/CA/newcerts/*.crt",
                        "/etc/pki/CA/private/*.key",
                        "/etc/pki/tls/private/*.key",
                        "/etc/pki/tls/certs/*.crt",
                    ],
                )
            } else {
                (
                    &[
                        "/etc/ipa/ca.crt",
                        "/etc/ipa/default.conf",
                        "/var/lib/ipa-client/sysrestore/*",
                        "/var/lib/ipa-client/pki/*",
                    ],
                    &[
                        "/etc/pki/ca-trust/source/anchors/ipa-ca.crt",
                        "/usr/local/share/ca-certificates/ipa-ca.crt",
                        "/etc/pki/ca-trust/source/ipa.p11-kit",
                    ],
                )
            };
            let keep = [
                "/etc/pki/tls/certs/ca-bundle.crt",
                "/etc/pki/tls/certs/ca-bundle.trust.crt",
            ];
            // Regular files only (virt-sysprep uses rm, which refuses directories).
            let mut files = |pats: &[&str]| -> Result<usize, GuestError> {
                let mut n = 0;
                for pat in pats {
                    for p in g.glob(pat)? {
                        if !keep.contains(&p.as_str()) && g.is_file(&p)? {
                            v.push(Action::Remove(p));
                            n += 1;
                        }
                    }
                }
                Ok(n)
            };
            files(plain)?;
            if files(certs)? > 0 {
                if let Some(cmd) = ca_store_command(&g.distro) {
                    v.push(Action::UpdateCaStore(cmd.into()));
                }
            }
        }
        "kerberos-data" => {
            let keep = [
                "/var/kerberos/krb5kdc/kadm5.acl",
                "/var/kerberos/krb5kdc/kdc.conf",
            ];
            for p in g.glob("/var/kerberos/krb5kdc/*")? {
                if !keep.contains(&p.as_str()) && g.is_file(&p)? {
                    v.push(Action::Remove(p));
                }
            }
        }
        "fs-uuids" => {
            for (device, fstype) in g.filesystems()? {
                if ["ext2", "ext3", "ext4", "xfs", "btrfs", "swap"].contains(&fstype.as_str()) {
                    v.push(Action::NewFsUuid { device, fstype });
                }
            }
        }
        "lvm-uuids" => {
            let (pvs, vgs) = g.lvm();
            if !pvs.is_empty() || !vgs.is_empty() {
                v.push(Action::NewLvmUuids {
                    pvs: pvs.len(),
                    vgs: vgs.len(),
                });
            }
        }
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
        "ssh-userdir" => {
            // Keys the customize steps of this very run injected stay: removing them right
            // after adding them (as virt-sysprep does) is never what the caller meant.
            let injected = injected_ssh_dirs(g, opts)?;
            for pat in patterns(op) {
                for p in g.glob(pat)? {
                    if !injected.contains(&p) {
                        v.push(Action::Remove(p));
                    }
                }
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
                if pat.ends_with('/') {
                    v.extend(
                        files_below(g, pat, &[".SEQ"])?
                            .into_iter()
                            .map(Action::Remove),
                    );
                } else {
                    for p in g.glob(pat)? {
                        if !g.is_dir(&p) {
                            v.push(Action::Remove(p));
                        }
                    }
                }
            }
            // at's job counters are reset, not removed.
            for seq in [
                "/var/spool/cron/atjobs/.SEQ",
                "/var/spool/atjobs/.SEQ",
                "/var/spool/at/.SEQ",
            ] {
                if g.is_file(seq)? && g.read(seq)? != b"00000\n" {
                    v.push(Action::Rewrite {
                        path: seq.into(),
                        content: b"00000\n".to_vec(),
                        why: "reset at's job counter".into(),
                    });
                }
            }
        }
        "tmp-files" => {
            for dir in patterns(op) {
                let dir = dir.trim_end_matches('/');
                if g.is_dir(dir) {
                    v.extend(
                        g.ls(dir)?
                            .into_iter()
                            .map(|e| Action::Remove(format!("{dir}/{e}"))),
                    );
                }
            }
        }
        "package-manager-cache" => {
            // Only the cache of the guest's own package manager (as virt-sysprep).
            let pm = g.package_management.as_str();
            for pat in patterns(op).iter().filter(|p| {
                (pm == "apt" && p.contains("/apt/"))
                    || (pm == "dnf" && p.contains("/dnf/"))
                    || (pm == "yum" && p.contains("/yum/"))
                    || (pm == "zypper" && p.contains("/zypp"))
            }) {
                for dir in g.glob(pat.trim_end_matches('/'))? {
                    v.extend(files_below(g, &dir, &[])?.into_iter().map(Action::Remove));
                }
            }
        }
        other => {
            let not_dirs = NOT_DIRECTORIES.contains(&other);
            for pat in patterns(other) {
                for p in g.glob(pat)? {
                    // blkid-tab leaves symlinks alone too (as virt-sysprep).
                    let skip = not_dirs && g.is_dir(&p) || other == "blkid-tab" && g.is_symlink(&p);
                    if !skip {
                        v.push(Action::Remove(p));
                    }
                }
            }
        }
    }
    Ok(v)
}

/// Carry out `actions`; returns report lines beyond the action itself, and the random
/// passwords set ("USER: PASSWORD", to be shown once, never logged).
pub fn apply(g: &Guest, actions: &[Action]) -> Result<(Vec<String>, Vec<String>), GuestError> {
    let mut notes = Vec::new();
    let mut secrets = Vec::new();
    for a in actions {
        match a {
            Action::Remove(p) => g.rm_rf(p)?,
            Action::Empty(p) => g.write(p, b"")?,
            Action::Create(p) => {
                if !g.exists(p)? {
                    g.write(p, b"")?;
                }
            }
            Action::Rewrite { path, content, .. } => g.write(path, content)?,
            Action::RemoveUser { name, home } => {
                for db in ["/etc/passwd", "/etc/shadow", "/etc/group"] {
                    if g.is_file(db)? {
                        let text = String::from_utf8_lossy(&g.read(db)?).into_owned();
                        if let Some(new) = drop_entry(&text, name) {
                            g.write(db, new.as_bytes())?;
                        }
                    }
                }
                g.rm_rf(&format!("/var/spool/mail/{name}"))?;
                if let Some(h) = home {
                    g.rm_rf(h)?;
                }
            }
            // Once, after every filesystem operation (see run_all), as virt-sysprep does: a
            // store rebuilt between ca-certificates and ipa-client would keep links to the
            // IPA certificate removed afterwards.
            Action::UpdateCaStore(_) => {}
            Action::NewFsUuid { device, fstype } => {
                let old = g.fs_uuid(device);
                g.set_uuid_random(device, fstype)?;
                notes.push(format!("{device}: {old} -> {}", g.fs_uuid(device)));
            }
            Action::NewLvmUuids { pvs, vgs } => g.lvm_change_uuids(*pvs > 0, *vgs > 0)?,
            Action::Scripts(s) => g.run_host_scripts(s, std::process::Stdio::inherit())?,
            Action::Customize(c) => notes.push(crate::customize::apply::apply(g, c, &mut secrets)?),
        }
    }
    Ok((notes, secrets))
}

/// Run one operation; returns what it did and any notes.
pub fn run_operation(
    g: &Guest,
    op: &str,
    opts: &Options,
) -> Result<(Vec<Action>, Vec<String>), GuestError> {
    let actions = plan_operation(g, op, opts)?;
    let (notes, _) = apply(g, &actions)?;
    Ok((actions, notes))
}

/// Per-operation result for reports.
#[derive(Debug, Clone)]
pub struct OpReport {
    pub op: &'static str,
    pub actions: Vec<Action>,
    pub notes: Vec<String>,
    /// Random passwords set ("USER: PASSWORD"): shown once to the user, never logged.
    pub secrets: Vec<String>,
}

/// Run `ops` (already in execution order) in one appliance: filesystem operations, then
/// `before_devices` (fstrim/sparsify need the filesystems mounted), then the block-device
/// operations with everything unmounted. With `dry_run`, nothing is changed and
/// `before_devices` is not called. `each` sees every operation's report as it finishes.
pub fn run_all(
    g: &Guest,
    ops: &[&'static str],
    opts: &Options,
    dry_run: bool,
    cancel: &crate::process::Cancel,
    before_devices: &mut dyn FnMut(&Guest),
    each: &mut dyn FnMut(&OpReport),
) -> Result<Vec<OpReport>, (String, GuestError)> {
    let mut out = Vec::new();
    let (devs, files): (Vec<&'static str>, Vec<&'static str>) =
        ops.iter().partition(|o| DEVICE_OPS.contains(o));
    let mut unmounted = false;
    let mut uuids_before = Vec::new();
    let mut run_one = |op: &'static str, out: &mut Vec<OpReport>| {
        let wrap = |e| (op.to_string(), e);
        if cancel.is_cancelled() {
            return Err(wrap(GuestError {
                disk: g.disk().to_path_buf(),
                op: op.to_string(),
                message: "interrupted".into(),
            }));
        }
        let actions = plan_operation(g, op, opts).map_err(wrap)?;
        let (notes, secrets) = if dry_run {
            (Vec::new(), Vec::new())
        } else {
            if DEVICE_OPS.contains(&op) && !actions.is_empty() && !unmounted {
                uuids_before = g
                    .filesystems()
                    .map_err(wrap)?
                    .into_iter()
                    .map(|(d, _)| (g.fs_uuid(&d), d))
                    .collect();
                g.umount_all().map_err(wrap)?;
                unmounted = true;
            }
            apply(g, &actions).map_err(wrap)?
        };
        let r = OpReport {
            op,
            actions,
            notes,
            secrets,
        };
        each(&r);
        out.push(r);
        Ok(())
    };
    for op in files {
        run_one(op, &mut out)?;
    }
    if !dry_run {
        update_ca_store(g, &out).map_err(|e| ("ca-certificates".to_string(), e))?;
        before_devices(g);
    }
    for op in devs {
        run_one(op, &mut out)?;
    }
    if unmounted {
        // virt-sysprep leaves fstab and the bootloader pointing at the old UUIDs (its docs
        // say the guest will likely not boot); kiln follows the change in the files that
        // name them.
        let e = |e| ("fs-uuids".to_string(), e);
        g.remount().map_err(e)?;
        let changes: Vec<(String, String)> = uuids_before
            .into_iter()
            .filter(|(old, _)| !old.is_empty())
            .filter_map(|(old, dev)| {
                let new = g.fs_uuid(&dev);
                (new != old && !new.is_empty()).then_some((old, new))
            })
            .collect();
        if !changes.is_empty() {
            let mut files: Vec<String> = [
                "/etc/fstab",
                "/etc/crypttab",
                "/etc/kernel/cmdline",
                "/etc/default/grub",
                "/boot/grub/grub.cfg",
                "/boot/grub2/grub.cfg",
                "/etc/grub2.cfg",
            ]
            .map(String::from)
            .to_vec();
            files.extend(g.glob("/boot/loader/entries/*.conf").map_err(e)?);
            let mut touched = Vec::new();
            for f in files {
                if g.is_symlink(&f) || !g.is_file(&f).map_err(e)? {
                    continue;
                }
                let text = String::from_utf8_lossy(&g.read(&f).map_err(e)?).into_owned();
                if let Some(new) = replace_uuids(&text, &changes) {
                    g.write(&f, new.as_bytes()).map_err(e)?;
                    touched.push(f);
                }
            }
            if let Some(r) = out.iter_mut().find(|r| r.op == "fs-uuids") {
                if !touched.is_empty() {
                    r.notes
                        .push(format!("updated the UUIDs in {}", touched.join(", ")));
                }
            }
        }
    }
    Ok(out)
}

/// Run the CA store update some operation asked for, once.
fn update_ca_store(g: &Guest, done: &[OpReport]) -> Result<(), GuestError> {
    let cmd = done.iter().flat_map(|r| &r.actions).find_map(|a| match a {
        Action::UpdateCaStore(c) => Some(c.clone()),
        _ => None,
    });
    if let Some(cmd) = cmd {
        g.sh(&cmd)?;
    }
    Ok(())
}

/// Replace every old UUID by its new one; None when the text names none of them.
pub fn replace_uuids(text: &str, changes: &[(String, String)]) -> Option<String> {
    let mut out = text.to_string();
    for (old, new) in changes {
        out = out.replace(old.as_str(), new);
    }
    (out != text).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_does_something() {
        for op in crate::sysprep::OPERATIONS {
            let special = [
                "customize",
                "script",
                "net-hostname",
                "net-hwaddr",
                "user-account",
                "ca-certificates",
                "ipa-client",
                "kerberos-data",
                "fs-uuids",
                "lvm-uuids",
                "machine-id",
                "cloud-init-state",
                "backup-files",
                "flag-reconfiguration",
                "pacct-log",
            ]
            .contains(&op.name);
            assert!(
                special || !patterns(op.name).is_empty(),
                "{} removes nothing",
                op.name
            );
        }
    }
}
