//! Carrying out customize steps in a guest (libguestfs), and the password hashing they need.

use super::{Customize, Password, Secret};
use crate::guest::{Guest, GuestError};
use crate::quote::sh as shell_quote;

fn random_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    random_bytes(16)
        .into_iter()
        .map(|b| ALPHABET[b as usize % ALPHABET.len()] as char)
        .collect()
}

fn random_bytes(n: usize) -> Vec<u8> {
    use std::io::Read;
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("reading /dev/urandom");
    buf
}

/// SHA-512 crypt(3) hash, as passwd(1) writes them.
pub fn hash_password(pw: &str) -> String {
    use sha_crypt::{PasswordHasher, ShaCrypt};
    ShaCrypt::SHA512
        .hash_password_with_salt(pw.as_bytes(), &random_bytes(12))
        .expect("sha512-crypt")
        .to_string()
}

/// The shadow(5) password field for `p`; a random password is returned for the caller to show.
fn shadow_field(p: &Password) -> (String, Option<String>) {
    match p {
        Password::Set(Secret(pw)) => (hash_password(pw), None),
        Password::Random => {
            let pw = random_password();
            (hash_password(&pw), Some(pw))
        }
        Password::Disabled => ("*".into(), None),
        Password::Locked(inner) => {
            let (f, shown) = shadow_field(inner);
            (format!("!{f}"), shown)
        }
    }
}

/// Replace field 2 of `user`'s line in a shadow file; None when the user has no line.
pub fn set_shadow_password(shadow: &str, user: &str, field: &str) -> Option<String> {
    let mut found = false;
    let out: Vec<String> = shadow
        .lines()
        .map(|l| {
            let mut parts: Vec<&str> = l.split(':').collect();
            if parts.len() >= 2 && parts[0] == user {
                found = true;
                parts[1] = field;
                parts.join(":")
            } else {
                l.to_string()
            }
        })
        .collect();
    found.then(|| out.join("\n") + "\n")
}

/// (uid, gid, home) of `user` from the guest's /etc/passwd.
fn passwd_entry(g: &Guest, user: &str) -> Result<Option<(i64, i64, String)>, GuestError> {
    Ok(g.passwd()?
        .into_iter()
        .find(|e| e.name == user)
        .map(|e| (i64::from(e.uid), i64::from(e.gid), e.home)))
}

fn guest_err(g: &Guest, op: &str, message: String) -> GuestError {
    GuestError {
        disk: g.disk().to_path_buf(),
        op: op.into(),
        message,
    }
}

/// Package manager command lines for the guest (virt-customize's choices).
pub fn package_command(pm: &str, install: bool, pkgs: &[String]) -> Option<String> {
    let list = pkgs
        .iter()
        .map(|p| shell_quote(p))
        .collect::<Vec<_>>()
        .join(" ");
    Some(match (pm, install) {
        ("apt", true) => format!(
            "export DEBIAN_FRONTEND=noninteractive; apt-get -q update && \
             apt-get -q -y -o Dpkg::Options::=--force-confnew install {list}"
        ),
        ("apt", false) => {
            format!("export DEBIAN_FRONTEND=noninteractive; apt-get -q -y remove {list}")
        }
        ("dnf", true) => format!("dnf -y --setopt=install_weak_deps=False install {list}"),
        ("dnf", false) => format!("dnf -y remove {list}"),
        ("yum", true) => format!("yum -y install {list}"),
        ("yum", false) => format!("yum -y remove {list}"),
        ("zypper", true) => format!("zypper -n in -l {list}"),
        ("zypper", false) => format!("zypper -n rm {list}"),
        _ => return None,
    })
}

const FIRSTBOOT_UNIT: &str = "[Unit]
Description=kiln firstboot commands
After=network.target
ConditionPathExistsGlob=/usr/lib/kiln/firstboot/scripts/*

[Service]
Type=oneshot
ExecStart=/usr/lib/kiln/firstboot/run
RemainAfterExit=yes
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
";

/// Runs each script once, in name order, and moves it to done/ whatever its result.
const FIRSTBOOT_RUNNER: &str = "#!/bin/sh
d=/usr/lib/kiln/firstboot
mkdir -p $d/done
for s in $d/scripts/*; do
  [ -f \"$s\" ] || continue
  echo \"kiln-firstboot: running $s\"
  sh \"$s\" 2>&1 | tee -a /var/log/kiln-firstboot.log
  mv \"$s\" $d/done/
done
";

/// Apply one step; returns what it did, for the report and the log (never a secret). A random
/// password goes to `secrets` as "USER: PASSWORD": the caller must show it once (not in a log)
/// or it is lost.
pub fn apply(g: &Guest, step: &Customize, secrets: &mut Vec<String>) -> Result<String, GuestError> {
    let op = step.to_string();
    let fail = |m: String| guest_err(g, &op, m);
    match step {
        Customize::Write { path, content } => {
            g.write(path, content.as_bytes())?;
            Ok(format!("wrote {path}"))
        }
        Customize::AppendLine { path, line } => {
            let old = if g.exists(path)? {
                g.read(path)?
            } else {
                Vec::new()
            };
            // Keep the file's own line ending (CRLF files stay CRLF).
            let eol: &[u8] = if old.windows(2).any(|w| w == b"\r\n") {
                b"\r\n"
            } else {
                b"\n"
            };
            let mut add = Vec::new();
            if !old.is_empty() && !old.ends_with(b"\n") {
                add.extend_from_slice(eol);
            }
            add.extend_from_slice(line.as_bytes());
            add.extend_from_slice(eol);
            if old.is_empty() && !g.exists(path)? {
                g.write(path, &add)?;
            } else {
                g.append(path, &add)?;
            }
            Ok(format!("appended a line to {path}"))
        }
        Customize::CopyIn { local, dir } => {
            g.mkdir_p(dir)?;
            g.copy_in(local, dir)?;
            Ok(format!("copied {} into {dir}", local.display()))
        }
        Customize::Upload { local, dest } => {
            let target = if g.is_dir(dest) {
                let name = local
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                format!("{}/{name}", dest.trim_end_matches('/'))
            } else {
                dest.clone()
            };
            g.upload(local, &target)?;
            Ok(format!("uploaded {} to {target}", local.display()))
        }
        Customize::Mkdir(d) => {
            g.mkdir_p(d)?;
            Ok(format!("created {d}"))
        }
        Customize::Delete(p) => {
            let hits = g.glob(p)?;
            for h in &hits {
                g.rm_rf(h)?;
            }
            Ok(format!("deleted {} path(s) matching {p}", hits.len()))
        }
        Customize::Chmod { mode, path } => {
            g.chmod(*mode, path)?;
            Ok(format!("chmod {mode:04o} {path}"))
        }
        Customize::Link { target, links } => {
            for l in links {
                g.ln_sf(target, l)?;
            }
            Ok(format!("linked {} to {target}", links.join(", ")))
        }
        Customize::Touch(p) => {
            g.touch(p)?;
            Ok(format!("touched {p}"))
        }
        Customize::RunCommand(c) => {
            let out = g.sh(c)?;
            log_output(&out);
            Ok(format!("ran `{c}`"))
        }
        Customize::Run { script, content } => {
            let tmp = format!("/tmp/kiln-customize-{}.sh", hex::encode(random_bytes(6)));
            g.write(&tmp, content)?;
            g.chmod(0o755, &tmp)?;
            let res = g.sh(&tmp);
            let _ = g.rm_rf(&tmp);
            log_output(&res?);
            Ok(format!("ran {}", script.display()))
        }
        Customize::Install(pkgs) | Customize::Uninstall(pkgs) => {
            let install = matches!(step, Customize::Install(_));
            let cmd = package_command(&g.package_management, install, pkgs).ok_or_else(|| {
                fail(format!(
                    "kiln cannot drive the package manager `{}` of this guest",
                    g.package_management
                ))
            })?;
            let out = g.sh(&cmd)?;
            log_output(&out);
            Ok(format!(
                "{} {}",
                if install { "installed" } else { "removed" },
                pkgs.join(" ")
            ))
        }
        Customize::Password { user, password } => {
            let (field, shown) = shadow_field(password);
            let shadow = String::from_utf8_lossy(&g.read("/etc/shadow")?).into_owned();
            let new = set_shadow_password(&shadow, user, &field)
                .ok_or_else(|| fail(format!("the guest has no user `{user}` in /etc/shadow")))?;
            g.write("/etc/shadow", new.as_bytes())?;
            Ok(match shown {
                Some(pw) => {
                    secrets.push(format!("{user}: {pw}"));
                    format!("set a random password for {user}")
                }
                None => format!("set the password of {user}"),
            })
        }
        Customize::SshInject { user, key } => {
            let (uid, gid, home) = passwd_entry(g, user)?
                .ok_or_else(|| fail(format!("the guest has no user `{user}`")))?;
            let dir = format!("{}/.ssh", home.trim_end_matches('/'));
            let file = format!("{dir}/authorized_keys");
            if !g.exists(&dir)? {
                g.mkdir_p(&dir)?;
                g.chmod(0o700, &dir)?;
                g.chown(uid, gid, &dir)?;
            }
            let existing = if g.exists(&file)? {
                String::from_utf8_lossy(&g.read(&file)?).into_owned()
            } else {
                String::new()
            };
            if existing.lines().any(|l| l.trim() == key) {
                return Ok(format!("{file} already has the key"));
            }
            let mut text = existing;
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(key);
            text.push('\n');
            g.write(&file, text.as_bytes())?;
            g.chmod(0o600, &file)?;
            g.chown(uid, gid, &file)?;
            Ok(format!("added a key to {file}"))
        }
        Customize::Hostname(h) => {
            let short = h.split('.').next().unwrap_or(h);
            let old = if g.exists("/etc/hostname")? {
                String::from_utf8_lossy(&g.read("/etc/hostname")?)
                    .trim()
                    .to_string()
            } else {
                String::new()
            };
            g.write("/etc/hostname", format!("{h}\n").as_bytes())?;
            // Debian-style 127.0.1.1 line names the host for tools that resolve it.
            if g.exists("/etc/hosts")? {
                let hosts = String::from_utf8_lossy(&g.read("/etc/hosts")?).into_owned();
                let names = if short == h {
                    h.to_string()
                } else {
                    format!("{h} {short}")
                };
                let mut seen = false;
                let mut lines: Vec<String> = hosts
                    .lines()
                    .map(|l| {
                        if l.split_whitespace().next() == Some("127.0.1.1") {
                            seen = true;
                            format!("127.0.1.1\t{names}")
                        } else {
                            l.to_string()
                        }
                    })
                    .collect();
                if !seen && g.distro != "unknown" && !old.is_empty() {
                    lines.push(format!("127.0.1.1\t{names}"));
                }
                g.write("/etc/hosts", (lines.join("\n") + "\n").as_bytes())?;
            }
            Ok(format!("hostname set to {h}"))
        }
        Customize::Timezone(t) => {
            let zone = format!("/usr/share/zoneinfo/{t}");
            if !g.is_file(&zone)? {
                return Err(fail(format!("the guest has no time zone {t} ({zone})")));
            }
            g.rm_rf("/etc/localtime")?;
            g.ln_sf(&zone, "/etc/localtime")?;
            if g.exists("/etc/timezone")? || g.distro == "debian" || g.distro == "ubuntu" {
                g.write("/etc/timezone", format!("{t}\n").as_bytes())?;
            }
            Ok(format!("time zone set to {t}"))
        }
        Customize::FirstbootCommand(c) => {
            let dir = "/usr/lib/kiln/firstboot";
            g.mkdir_p(&format!("{dir}/scripts"))?;
            let n = g.glob(&format!("{dir}/scripts/*"))?.len();
            let script = format!("{dir}/scripts/{n:04}-command");
            g.write(&script, format!("#!/bin/sh\n{c}\n").as_bytes())?;
            g.chmod(0o755, &script)?;
            g.write(&format!("{dir}/run"), FIRSTBOOT_RUNNER.as_bytes())?;
            g.chmod(0o755, &format!("{dir}/run"))?;
            let unit = "/etc/systemd/system/kiln-firstboot.service";
            g.write(unit, FIRSTBOOT_UNIT.as_bytes())?;
            g.mkdir_p("/etc/systemd/system/multi-user.target.wants")?;
            g.ln_sf(
                unit,
                "/etc/systemd/system/multi-user.target.wants/kiln-firstboot.service",
            )?;
            Ok(format!("{script} runs at first boot"))
        }
        Customize::SelinuxRelabel => {
            let cfg = "/etc/selinux/config";
            if !g.is_file(cfg)? {
                return Ok("no SELinux in the guest: nothing to relabel".into());
            }
            let text = String::from_utf8_lossy(&g.read(cfg)?).into_owned();
            let get = |k: &str| {
                text.lines()
                    .find_map(|l| l.trim().strip_prefix(&format!("{k}=")))
                    .map(|v| v.trim().trim_matches('"').to_string())
            };
            if get("SELINUX").as_deref() == Some("disabled") {
                return Ok("SELinux is disabled in the guest: nothing to relabel".into());
            }
            let ty = get("SELINUXTYPE").unwrap_or_else(|| "targeted".into());
            let spec = format!("/etc/selinux/{ty}/contexts/files/file_contexts");
            if g.is_file(&spec)? {
                g.selinux_relabel(&spec)?;
                Ok(format!("relabelled with {spec}"))
            } else {
                // Without the policy's file contexts, let the guest relabel on its next boot.
                g.touch("/.autorelabel")?;
                Ok("created /.autorelabel (relabel on first boot)".into())
            }
        }
    }
}

fn log_output(out: &str) {
    for l in out.lines() {
        tracing::debug!("customize: {l}");
    }
}
