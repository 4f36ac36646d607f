//! `kiln inspect`: what an image holds, read in one read-only libguestfs launch without running
//! anything of the guest's (os-release, kernels, boot loader, partitions, filesystems and fstab,
//! packages, enabled services, cloud-init, sshd, accounts, machine-id), plus the warnings a
//! golden image should not earn. Parsers are pure and table-tested; `read` does the I/O.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::guest::{Guest, PartitionInfo};
use crate::inventory::{self, Package};

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub os: BTreeMap<String, String>,
    pub kernels: Vec<String>,
    pub boot: Boot,
    pub partition_table: Option<String>,
    pub partitions: Vec<PartitionInfo>,
    pub filesystems: Vec<Filesystem>,
    pub fstab: Vec<FstabEntry>,
    pub package_manager: String,
    pub packages: Vec<Package>,
    pub services: Services,
    pub cloud_init: Option<CloudInit>,
    pub sshd: Option<Sshd>,
    pub accounts: Vec<Account>,
    pub machine_id: MachineId,
    /// What a golden image should not have, each with its reason.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Boot {
    /// "grub2", "systemd-boot", "extlinux" or "none found".
    pub loader: String,
    /// The default entry's kernel command line (grub.cfg's first `linux` line).
    pub cmdline: Option<String>,
    /// BIOS boot is possible: GRUB in the MBR gap or a BIOS boot partition.
    pub bios: bool,
    /// UEFI binaries on the EFI system partition.
    pub efi: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Filesystem {
    pub device: String,
    #[serde(rename = "type")]
    pub fstype: String,
    pub uuid: String,
    pub label: String,
    pub mountpoint: Option<String>,
    pub size: Option<u64>,
    pub used: Option<u64>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FstabEntry {
    pub spec: String,
    pub mountpoint: String,
    #[serde(rename = "type")]
    pub fstype: String,
    pub options: String,
    /// The spec names a filesystem of this disk (UUID=, LABEL=, a device); false for one that
    /// the image cannot boot with unless `nofail` is set.
    pub found: bool,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Services {
    /// Units enabled in /etc/systemd/system (`TARGET.wants/UNIT` and `.requires`).
    pub enabled: Vec<String>,
    /// Units masked (linked to /dev/null) in /etc/systemd/system.
    pub masked: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct CloudInit {
    /// `datasource_list` as the last configuration file sets it (None: cloud-init's own list).
    pub datasources: Option<Vec<String>>,
    pub default_user: Option<String>,
    /// Instance data of a previous boot (/var/lib/cloud/instances/*): a clone would skip its
    /// first-boot configuration.
    pub previous_instances: Vec<String>,
    /// cloud-init disabled by /etc/cloud/cloud-init.disabled.
    pub disabled: bool,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Sshd {
    pub password_authentication: String,
    pub permit_root_login: String,
    pub permit_empty_passwords: String,
    /// Host keys in /etc/ssh (a golden image should have none: every clone would share them).
    pub host_keys: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub shell: String,
    /// "set", "locked", "none" (no hash: key login only) or "empty" (no password needed).
    pub password: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "state", content = "id")]
pub enum MachineId {
    /// Empty file: systemd makes one on first boot (what a golden image wants).
    Empty,
    Uninitialized,
    Absent,
    /// Every clone would share it.
    Set(String),
}

/// Read everything from a mounted guest. Missing files give empty sections, never an error:
/// an image is inspected as it is.
pub fn read(g: &Guest) -> Report {
    let text = |p: &str| {
        g.read(p)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .ok()
    };
    let inv = inventory::read(g);
    let fs_list = g.filesystems().unwrap_or_default();
    let mounted: BTreeMap<&str, &str> = g
        .mounts()
        .iter()
        .map(|(mp, dev)| (dev.as_str(), mp.as_str()))
        .collect();
    let filesystems: Vec<Filesystem> = fs_list
        .iter()
        .filter(|(_, t)| t != "unknown")
        .map(|(dev, t)| {
            let mp = mounted.get(dev.as_str()).map(|m| m.to_string());
            let (size, used) = match mp.as_deref().and_then(|m| g.statvfs(m)) {
                Some((s, u)) => (Some(s), Some(u)),
                None => (None, None),
            };
            Filesystem {
                device: dev.clone(),
                fstype: t.clone(),
                uuid: g.fs_uuid(dev),
                label: g.fs_label(dev),
                mountpoint: mp,
                size,
                used,
            }
        })
        .collect();
    let (partition_table, partitions) = g.partitions();
    let fstab = fstab(&text("/etc/fstab").unwrap_or_default(), &filesystems);

    let grub_cfg = ["/boot/grub/grub.cfg", "/boot/grub2/grub.cfg"]
        .iter()
        .find_map(|p| text(p));
    let efi = g.glob("/boot/efi/EFI/*/*.[Ee][Ff][Ii]").unwrap_or_default();
    let mbr_grub = g.mbr_has_grub();
    let boot = boot(
        grub_cfg.as_deref(),
        g.exists("/boot/extlinux/extlinux.conf").unwrap_or(false),
        !g.glob("/boot/efi/loader/entries/*")
            .unwrap_or_default()
            .is_empty(),
        mbr_grub || partitions.iter().any(|p| p.kind == BIOS_BOOT_GUID),
        efi,
    );

    let services = services(
        &g.glob("/etc/systemd/system/*.wants/*")
            .unwrap_or_default()
            .into_iter()
            .chain(
                g.glob("/etc/systemd/system/*.requires/*")
                    .unwrap_or_default(),
            )
            .collect::<Vec<_>>(),
        &g.glob("/etc/systemd/system/*")
            .unwrap_or_default()
            .into_iter()
            .filter(|p| g.is_symlink(p))
            .filter_map(|p| g.readlink(&p).map(|t| (p, t)))
            .collect::<Vec<_>>(),
    );

    let cloud_init = g.exists("/etc/cloud/cloud.cfg").unwrap_or(false).then(|| {
        let mut files = vec![text("/etc/cloud/cloud.cfg").unwrap_or_default()];
        let mut extra = g.glob("/etc/cloud/cloud.cfg.d/*.cfg").unwrap_or_default();
        extra.sort();
        files.extend(extra.iter().filter_map(|p| text(p)));
        let mut ci = cloud_init_config(&files);
        let dir = "/var/lib/cloud/instances";
        let names = if g.is_dir(dir) {
            g.ls(dir).unwrap_or_default()
        } else {
            Vec::new()
        };
        ci.previous_instances = names.into_iter().filter(|n| !n.starts_with('.')).collect();
        ci.disabled = g.exists("/etc/cloud/cloud-init.disabled").unwrap_or(false);
        ci
    });

    let sshd = text("/etc/ssh/sshd_config").map(|main| {
        let include = |pattern: &str| -> Vec<String> {
            let abs = if pattern.starts_with('/') {
                pattern.to_string()
            } else {
                format!("/etc/ssh/{pattern}")
            };
            let mut files = g.glob(&abs).unwrap_or_default();
            files.sort();
            files.iter().filter_map(|p| text(p)).collect()
        };
        let mut s = sshd(&main, &include);
        s.host_keys = g
            .glob("/etc/ssh/ssh_host_*_key")
            .unwrap_or_default()
            .into_iter()
            .map(|p| p.trim_start_matches("/etc/ssh/").to_string())
            .collect();
        s
    });

    let accounts = accounts(
        &text("/etc/passwd").unwrap_or_default(),
        &text("/etc/shadow").unwrap_or_default(),
    );
    let machine_id = machine_id(text("/etc/machine-id").as_deref());
    let package_manager = match (inv.packages.is_empty(), inv.package_format) {
        (true, _) => g.package_management.clone(),
        (false, inventory::PackageFormat::Deb) => "dpkg".into(),
        (false, inventory::PackageFormat::Rpm) => "rpm".into(),
    };
    let mut r = Report {
        os: inv.os,
        kernels: inv.kernels,
        boot,
        partition_table,
        partitions,
        filesystems,
        fstab,
        package_manager,
        packages: inv.packages,
        services,
        cloud_init,
        sshd,
        accounts,
        machine_id,
        warnings: Vec::new(),
    };
    r.warnings = warnings(&r);
    r
}

/// The GPT type of a BIOS boot partition (GRUB's core image on GPT disks).
pub const BIOS_BOOT_GUID: &str = "21686148-6449-6E6F-744E-656564454649";

/// fstab entries, each marked with whether its source is a filesystem of this disk.
pub fn fstab(text: &str, fs: &[Filesystem]) -> Vec<FstabEntry> {
    crate::guest::fstab_entries(text)
        .into_iter()
        .map(|(spec, mountpoint, fstype, options)| {
            let found = match spec.split_once('=') {
                Some(("UUID", u)) => fs.iter().any(|f| f.uuid.eq_ignore_ascii_case(u)),
                Some(("LABEL", l)) => fs.iter().any(|f| f.label == l),
                // PARTUUID, PARTLABEL, devices and pseudo filesystems (proc, tmpfs, swap
                // files): not checked here.
                _ => true,
            };
            FstabEntry {
                spec,
                mountpoint,
                fstype,
                options,
                found,
            }
        })
        .collect()
}

/// Boot facts from grub.cfg, the other loaders' files and the EFI binaries.
pub fn boot(
    grub_cfg: Option<&str>,
    extlinux: bool,
    systemd_boot: bool,
    bios: bool,
    efi: Vec<String>,
) -> Boot {
    let loader = if grub_cfg.is_some() {
        "grub2"
    } else if systemd_boot {
        "systemd-boot"
    } else if extlinux {
        "extlinux"
    } else {
        "none found"
    };
    let cmdline = grub_cfg.and_then(|cfg| {
        cfg.lines().map(str::trim).find_map(|l| {
            let rest = l
                .strip_prefix("linux")
                .or_else(|| l.strip_prefix("linuxefi"))?;
            let rest = rest.strip_prefix(char::is_whitespace)?;
            // Drop the kernel path: what remains is the command line.
            rest.trim()
                .split_once(char::is_whitespace)
                .map(|(_, args)| args.trim().to_string())
        })
    });
    Boot {
        loader: loader.into(),
        cmdline,
        bios,
        efi,
    }
}

/// Enabled units from the links in /etc/systemd/system's `.wants`/`.requires` directories,
/// masked ones from its links to /dev/null: (link path, target).
pub fn services(wants: &[String], links: &[(String, String)]) -> Services {
    let enabled: BTreeSet<String> = wants
        .iter()
        .filter_map(|p| {
            let rel = p.strip_prefix("/etc/systemd/system/")?;
            rel.contains('/').then(|| rel.to_string())
        })
        .collect();
    let masked: BTreeSet<String> = links
        .iter()
        .filter(|(_, t)| t == "/dev/null")
        .filter_map(|(p, _)| p.rsplit('/').next().map(String::from))
        .collect();
    Services {
        enabled: enabled.into_iter().collect(),
        masked: masked.into_iter().collect(),
    }
}

/// cloud-init's datasource list and default user from cloud.cfg and then cloud.cfg.d/*.cfg in
/// order (later files override top-level keys, as cloud-init merges them by default).
pub fn cloud_init_config(files: &[String]) -> CloudInit {
    use saphyr::{LoadableYamlNode, Yaml};
    let mut ci = CloudInit::default();
    for text in files {
        let Ok(docs) = Yaml::load_from_str(text) else {
            continue;
        };
        let Some(doc) = docs.first() else { continue };
        if let Some(Yaml::Sequence(list)) = doc.as_mapping_get("datasource_list") {
            ci.datasources = Some(
                list.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect(),
            );
        }
        if let Some(name) = doc
            .as_mapping_get("system_info")
            .and_then(|s| s.as_mapping_get("default_user"))
            .and_then(|u| u.as_mapping_get("name"))
            .and_then(|n| n.as_str())
        {
            ci.default_user = Some(name.to_string());
        }
    }
    ci
}

/// sshd's effective global settings: the first value of a keyword wins, `Include` is read in
/// place (`include` returns the contents of the files a pattern names, sorted), and nothing
/// after the first `Match` is global. Unset keywords get OpenSSH's defaults.
pub fn sshd(main: &str, include: &dyn Fn(&str) -> Vec<String>) -> Sshd {
    fn walk(
        text: &str,
        include: &dyn Fn(&str) -> Vec<String>,
        seen: &mut BTreeMap<String, String>,
        depth: usize,
    ) -> bool {
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = match line.split_once(|c: char| c.is_whitespace() || c == '=') {
                Some((k, v)) => (
                    k.to_ascii_lowercase(),
                    v.trim().trim_start_matches('=').trim(),
                ),
                None => continue,
            };
            match key.as_str() {
                "match" => return false,
                "include" if depth < 8 => {
                    for pattern in value.split_whitespace() {
                        for file in include(pattern) {
                            if !walk(&file, include, seen, depth + 1) {
                                return false;
                            }
                        }
                    }
                }
                _ => {
                    let v = value.split_whitespace().next().unwrap_or("").to_string();
                    seen.entry(key).or_insert(v);
                }
            }
        }
        true
    }
    let mut seen = BTreeMap::new();
    walk(main, include, &mut seen, 0);
    let get = |k: &str, default: &str| {
        seen.get(k)
            .cloned()
            .unwrap_or_else(|| default.to_string())
            .to_ascii_lowercase()
    };
    Sshd {
        password_authentication: get("passwordauthentication", "yes"),
        permit_root_login: get("permitrootlogin", "prohibit-password"),
        permit_empty_passwords: get("permitemptypasswords", "no"),
        host_keys: Vec::new(),
    }
}

/// Shells that do not log in.
fn no_login(shell: &str) -> bool {
    shell.is_empty()
        || ["nologin", "false", "sync", "halt", "shutdown"]
            .iter()
            .any(|s| shell.rsplit('/').next() == Some(s))
}

/// Accounts that can log in (a login shell) or have a password; the state of the password, never
/// the hash.
pub fn accounts(passwd: &str, shadow: &str) -> Vec<Account> {
    let hashes: BTreeMap<&str, &str> = shadow
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            Some((f.next()?, f.next()?))
        })
        .collect();
    passwd
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            let hash = match f[1] {
                "x" => hashes.get(f[0]).copied().unwrap_or("*"),
                other => other,
            };
            let password = if hash.is_empty() {
                "empty"
            } else if hash.starts_with('!') {
                "locked"
            } else if hash.starts_with('*') {
                "none"
            } else {
                "set"
            };
            let shell = f[6].to_string();
            (!no_login(&shell) || password == "set" || password == "empty").then(|| Account {
                name: f[0].to_string(),
                uid: f[2].parse().unwrap_or(0),
                shell,
                password: password.into(),
            })
        })
        .collect()
}

pub fn machine_id(content: Option<&str>) -> MachineId {
    match content.map(str::trim) {
        None => MachineId::Absent,
        Some("") => MachineId::Empty,
        Some("uninitialized") => MachineId::Uninitialized,
        Some(id) => MachineId::Set(id.to_string()),
    }
}

/// What a golden image should not have.
pub fn warnings(r: &Report) -> Vec<String> {
    let mut w = Vec::new();
    for e in &r.fstab {
        if !e.found && !e.options.split(',').any(|o| o == "nofail") {
            w.push(format!(
                "fstab mounts {} on {} but no filesystem of this disk has it (the boot stops in emergency mode)",
                e.spec, e.mountpoint
            ));
        }
    }
    if let MachineId::Set(id) = &r.machine_id {
        w.push(format!(
            "/etc/machine-id is set ({id}): every instance would share it (sysprep's machine-id operation empties it)"
        ));
    }
    if let Some(s) = &r.sshd {
        if !s.host_keys.is_empty() {
            w.push(format!(
                "ssh host keys are baked in ({}): every instance would share them",
                s.host_keys.join(", ")
            ));
        }
        if s.permit_empty_passwords == "yes" {
            w.push("sshd permits empty passwords".into());
        }
    }
    for a in &r.accounts {
        if a.password == "empty" {
            w.push(format!(
                "account {} has an empty password: anyone can log in as it",
                a.name
            ));
        }
    }
    if let Some(ci) = &r.cloud_init {
        if !ci.previous_instances.is_empty() {
            w.push(format!(
                "cloud-init has data of earlier instances ({}): run sysprep (cloud-init-state)",
                ci.previous_instances.join(", ")
            ));
        }
        if ci.disabled {
            w.push("cloud-init is disabled (/etc/cloud/cloud-init.disabled)".into());
        }
    }
    if r.kernels.is_empty() {
        w.push("no kernel in /boot".into());
    }
    if r.boot.loader == "none found" {
        w.push("no boot loader configuration found".into());
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sshd_first_value_wins_includes_read_in_place_match_ends_globals() {
        let main = "Include /etc/ssh/sshd_config.d/*.conf\nPasswordAuthentication yes\n\
                    #PermitRootLogin yes\nMatch User bob\n  PermitRootLogin yes\n";
        let inc = |p: &str| {
            assert_eq!(p, "/etc/ssh/sshd_config.d/*.conf");
            vec!["passwordauthentication no\n".to_string()]
        };
        let s = sshd(main, &inc);
        assert_eq!(s.password_authentication, "no");
        assert_eq!(s.permit_root_login, "prohibit-password");
        assert_eq!(s.permit_empty_passwords, "no");
        let s = sshd("PermitRootLogin=yes\nPermitRootLogin no\n", &|_| Vec::new());
        assert_eq!(s.permit_root_login, "yes");
        assert_eq!(s.password_authentication, "yes");
        // An include loop stops at a depth limit instead of recursing forever.
        let s = sshd("Include x\n", &|_| vec!["Include x\n".to_string()]);
        assert_eq!(s.password_authentication, "yes");
    }

    #[test]
    fn accounts_show_password_states_never_hashes() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
                      alice:x:1000:1000::/home/alice:/bin/bash\n\
                      svc:x:998:998::/:/usr/sbin/nologin\n\
                      open:x:1001:1001::/home/open:/bin/sh\n\
                      legacy:$6$abc$def:1002:1002::/:/bin/false\n";
        let shadow = "root:!:19000::::::\ndaemon:*:19000::::::\nalice:$6$salt$hash:19000::::::\n\
                      svc:$y$j9T$x:19000::::::\nopen::19000::::::\n";
        let a = accounts(passwd, shadow);
        let got: Vec<(&str, &str)> = a
            .iter()
            .map(|a| (a.name.as_str(), a.password.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("root", "locked"),
                ("alice", "set"),
                ("svc", "set"),
                ("open", "empty"),
                ("legacy", "set")
            ]
        );
        let json = serde_json::to_string(&a).unwrap();
        assert!(!json.contains("$6$") && !json.contains("$y$"), "{json}");
    }

    #[test]
    fn cloud_init_later_files_override() {
        let files = vec![
            "datasource_list: [NoCloud, None]\nsystem_info:\n  default_user:\n    name: debian\n"
                .to_string(),
            "not: [valid".to_string(),
            "datasource_list: [ ConfigDrive, OpenStack ]\n".to_string(),
        ];
        let ci = cloud_init_config(&files);
        assert_eq!(
            ci.datasources,
            Some(vec!["ConfigDrive".to_string(), "OpenStack".to_string()])
        );
        assert_eq!(ci.default_user.as_deref(), Some("debian"));
        assert_eq!(cloud_init_config(&[String::new()]), CloudInit::default());
    }

    #[test]
    fn services_from_links() {
        let s = services(
            &[
                "/etc/systemd/system/multi-user.target.wants/ssh.service".into(),
                "/etc/systemd/system/sockets.target.wants/x.socket".into(),
                "/etc/systemd/system/stray".into(),
            ],
            &[
                (
                    "/etc/systemd/system/apt-daily.timer".into(),
                    "/dev/null".into(),
                ),
                (
                    "/etc/systemd/system/sshd.service".into(),
                    "/lib/systemd/system/ssh.service".into(),
                ),
            ],
        );
        assert_eq!(
            s.enabled,
            [
                "multi-user.target.wants/ssh.service",
                "sockets.target.wants/x.socket"
            ]
        );
        assert_eq!(s.masked, ["apt-daily.timer"]);
    }

    #[test]
    fn boot_and_fstab_and_machine_id() {
        let cfg = "menuentry 'Debian' {\n\tlinux\t/boot/vmlinuz-6.1.0-9-amd64 root=UUID=abc ro quiet\n}\n";
        let b = boot(Some(cfg), false, false, true, vec![]);
        assert_eq!(b.loader, "grub2");
        assert_eq!(b.cmdline.as_deref(), Some("root=UUID=abc ro quiet"));
        assert_eq!(boot(None, true, false, false, vec![]).loader, "extlinux");
        assert_eq!(boot(None, false, false, false, vec![]).loader, "none found");

        let fs = vec![Filesystem {
            device: "/dev/sda1".into(),
            fstype: "ext4".into(),
            uuid: "ABC-1".into(),
            label: "root".into(),
            mountpoint: Some("/".into()),
            size: None,
            used: None,
        }];
        let t = fstab(
            "UUID=abc-1 / ext4 defaults 0 1\nUUID=dead / ext4 nofail\nLABEL=gone /srv ext4\nproc /proc proc\n",
            &fs,
        );
        let found: Vec<bool> = t.iter().map(|e| e.found).collect();
        assert_eq!(found, [true, false, false, true]);

        assert_eq!(machine_id(Some("\n")), MachineId::Empty);
        assert_eq!(machine_id(None), MachineId::Absent);
        assert_eq!(
            machine_id(Some("uninitialized\n")),
            MachineId::Uninitialized
        );
        assert_eq!(machine_id(Some("0123\n")), MachineId::Set("0123".into()));
    }
}
