//! The pure parsers behind the report (table-tested): fstab against the disk's filesystems,
//! the boot loader, services, cloud-init's configuration, sshd's effective settings,
//! accounts, the machine-id, and the warnings a golden image should not earn.

/// The architecture an ELF binary is for (its `e_machine`), in the kernel's names.
pub fn elf_arch(elf: &[u8]) -> Option<&'static str> {
    if elf.len() < 20 || &elf[..4] != b"\x7fELF" {
        return None;
    }
    let machine = match elf[5] {
        1 => u16::from_le_bytes([elf[18], elf[19]]),
        2 => u16::from_be_bytes([elf[18], elf[19]]),
        _ => return None,
    };
    Some(match machine {
        0x03 => "i686",
        0x28 => "armv7l",
        0x3e => "x86_64",
        0xb7 => "aarch64",
        0xf3 => "riscv64",
        0x15 => "ppc64le",
        0x16 => "s390x",
        _ => return None,
    })
}

use super::*;

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
    let enabled = inventory::enabled_units(
        wants
            .iter()
            .filter_map(|p| p.strip_prefix("/etc/systemd/system/")),
    );
    let masked: BTreeSet<String> = links
        .iter()
        .filter(|(_, t)| t == "/dev/null")
        .filter_map(|(p, _)| p.rsplit('/').next().map(String::from))
        .collect();
    Services {
        enabled,
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
        Some(id) if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) => {
            MachineId::Set(id.to_string())
        }
        Some(other) => MachineId::Invalid(other.len()),
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
    if let MachineId::Invalid(n) = &r.machine_id {
        w.push(format!(
            "/etc/machine-id holds {n} bytes that are not a machine id (sysprep's machine-id operation empties it)"
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
