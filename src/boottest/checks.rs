//! The checks: the recipe's (file, service, command) and the built-in ones, each with its
//! command in the guest and its own judge; the JUnit report.

use super::*;

impl Check {
    pub fn name(&self) -> String {
        match self {
            Check::Run { run, expect: None } => format!("run: {run}"),
            Check::Run {
                run,
                expect: Some(e),
            } => format!("run: {run} (expect {e:?})"),
            Check::File { file, contains } => format!("file {file} contains {contains:?}"),
            Check::Service { service, active } => format!(
                "service {service} {}",
                if *active { "active" } else { "inactive" }
            ),
        }
    }

    /// The command run in the guest (as the test user, through sudo where root is needed).
    pub fn command(&self) -> String {
        match self {
            Check::Run { run, .. } => run.clone(),
            Check::File { file, .. } => format!("sudo cat -- {}", quote::sh(file)),
            Check::Service { service, .. } => {
                format!("systemctl is-active -- {}", quote::sh(service))
            }
        }
    }

    /// Judge the command's exit status and output.
    pub fn judge(&self, status: i32, out: &str) -> Result<(), String> {
        match self {
            Check::Run { expect, .. } => {
                if status != 0 {
                    return Err(format!("exit status {status}: {}", tail(out)));
                }
                match expect {
                    Some(e) if !out.contains(e.as_str()) => {
                        Err(format!("output lacks {e:?}: {}", tail(out)))
                    }
                    _ => Ok(()),
                }
            }
            Check::File { contains, .. } => {
                if status == 127 {
                    Err(
                        "sudo is not installed in the image (a file check reads the file as \
                         root): add the `sudo` package, or check it with `run:` as the test user"
                            .into(),
                    )
                } else if status != 0 {
                    Err(format!("cannot read it: {}", tail(out)))
                } else if !out.contains(contains.as_str()) {
                    Err(format!("it does not contain {contains:?}"))
                } else {
                    Ok(())
                }
            }
            Check::Service { active, .. } => {
                let is = out.trim() == "active";
                match (is, active) {
                    (true, true) | (false, false) => Ok(()),
                    (false, true) => Err(format!("it is {}", out.trim())),
                    (true, false) => Err("it is active".into()),
                }
            }
        }
    }
}

pub(super) fn tail(s: &str) -> String {
    crate::process::last_lines(s.trim(), 5).replace('\n', " | ")
}

/// The default checks: each has a name, a command in the guest and its own judge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    CloudInitSeed,
    RootGrew,
    MachineId,
    HostKeys,
    Hostname,
    NoFailedUnits,
    Firmware,
}

/// What a built-in check's judge compares against.
pub struct Expected<'a> {
    pub instance_id: &'a str,
    pub hostname: &'a str,
    /// The image's virtual size (the test disk is larger).
    pub image_virtual: u64,
    /// What the VM booted with: the guest must have seen it (no fallback to another).
    pub firmware: crate::vocab::Firmware,
    /// The VM had a TPM: the guest must have `/dev/tpm0`.
    pub tpm: bool,
}

/// The checks every boot test runs after cloud-init is done (the ssh login itself is one).
pub fn builtin_checks() -> Vec<Builtin> {
    use Builtin::*;
    vec![
        CloudInitSeed,
        RootGrew,
        MachineId,
        HostKeys,
        Hostname,
        NoFailedUnits,
        Firmware,
    ]
}

/// A number on line `i` of a check's output.
pub(super) fn num(lines: &[&str], i: usize) -> Option<i64> {
    lines.get(i).and_then(|l| l.parse().ok())
}

impl Builtin {
    pub fn name(self) -> &'static str {
        match self {
            Builtin::CloudInitSeed => "cloud-init used the seed (NoCloud, this instance-id)",
            Builtin::RootGrew => "the root filesystem grew to the disk",
            Builtin::MachineId => "/etc/machine-id was made on this boot",
            Builtin::HostKeys => "the ssh host keys were made on this boot",
            Builtin::Hostname => "the hostname is the seed's",
            Builtin::NoFailedUnits => "no failed systemd units",
            Builtin::Firmware => {
                "the guest booted with the VM's firmware (Secure Boot enforcing, the TPM present, when on)"
            }
        }
    }

    /// The shell command run in the guest (as the test user).
    pub fn command(self) -> &'static str {
        match self {
            // instance-data.json needs no root (nor sudo, which a minimal image need not
            // have), and reading it needs no Python: `cloud-init query` started Python twice,
            // 5 s under TCG. Judged here, as JSON.
            Builtin::CloudInitSeed => {
                "command -v cloud-init >/dev/null || exit 127; cat /run/cloud-init/instance-data.json"
            }
            // Whether growpart is there says why a root did not grow.
            Builtin::RootGrew => {
                "df -B1 --output=size / | tail -n 1; command -v growpart >/dev/null || echo no-growpart"
            }
            Builtin::MachineId => {
                "cat /etc/machine-id; echo $(( $(date +%s) - $(cut -d. -f1 /proc/uptime) )); stat -c %Y /etc/machine-id"
            }
            Builtin::HostKeys => {
                "echo $(( $(date +%s) - $(cut -d. -f1 /proc/uptime) )); stat -c %Y /etc/ssh/ssh_host_*_key.pub"
            }
            Builtin::Hostname => "hostname",
            Builtin::NoFailedUnits => "systemctl --failed --plain --no-legend --no-pager",
            // The kernel's view: /sys/firmware/efi exists only when UEFI started it; the
            // SecureBoot variable's last byte is 1 when Secure Boot is enforcing (readable
            // without root, and needs no mokutil in the image).
            Builtin::Firmware => {
                "if [ -d /sys/firmware/efi ]; then echo uefi; od -An -tu1 /sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c 2>/dev/null | awk '{print $NF}'; else echo bios; echo; fi; if [ -e /dev/tpm0 ]; then echo tpm; fi"
            }
        }
    }

    /// Judge the command's exit status and output.
    pub fn judge(self, status: i32, out: &str, want: &Expected) -> Result<(), String> {
        // The batch's markers for this command never came back: nothing was judged.
        if status == -1 {
            return Err(format!(
                "its result was lost (the session's output ended early): {}",
                tail(out)
            ));
        }
        if status == 127 && self == Builtin::CloudInitSeed {
            return Err(
                "cloud-init is not installed in the image (it is what makes an instance \
                        of it: add the `cloud-init` element)"
                    .into(),
            );
        }
        // systemctl --failed exits 0 either way; every other command must succeed.
        if status != 0 && self != Builtin::NoFailedUnits {
            return Err(format!("exit status {status}: {}", tail(out)));
        }
        let lines: Vec<&str> = out.lines().map(str::trim).collect();
        let line = |i: usize| lines.get(i).copied().unwrap_or("");
        match self {
            Builtin::CloudInitSeed => {
                let data: serde_json::Value = serde_json::from_str(out).map_err(|e| {
                    format!(
                        "/run/cloud-init/instance-data.json is not JSON ({e}): {}",
                        tail(out)
                    )
                })?;
                let field = |k: &str| data["v1"][k].as_str().unwrap_or("").to_string();
                let (platform, id) = (field("platform"), field("instance_id"));
                if platform != "nocloud" {
                    Err(format!("datasource platform is {platform:?}, not nocloud"))
                } else if id != want.instance_id {
                    Err(format!(
                        "instance-id is {id:?}, not the seed's {:?}",
                        want.instance_id
                    ))
                } else {
                    Ok(())
                }
            }
            Builtin::RootGrew => {
                let size = num(&lines, 0).unwrap_or(0).max(0) as u64;
                if size > want.image_virtual {
                    return Ok(());
                }
                let why = if lines.contains(&"no-growpart") {
                    "the image has no growpart, which cloud-init's growpart module runs: add the \
                     `growroot` element (the cloud-guest-utils package), or `test: false` for an \
                     image that is not to grow on a cloud"
                } else {
                    "is cloud-init's growpart module (and resizefs) enabled?"
                };
                Err(format!(
                    "/ is {} on a disk larger than the image's {}: it did not grow; {why}",
                    crate::progress::human_bytes(size),
                    crate::progress::human_bytes(want.image_virtual)
                ))
            }
            Builtin::MachineId => {
                let id = line(0);
                let boot = num(&lines, 1).unwrap_or(i64::MAX);
                let mtime = num(&lines, 2).unwrap_or(0);
                if id.len() != 32 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
                    Err(format!("/etc/machine-id is {id:?}"))
                } else if mtime + 5 < boot {
                    Err("/etc/machine-id is older than this boot: the image carries one".into())
                } else {
                    Ok(())
                }
            }
            Builtin::HostKeys => {
                let boot = num(&lines, 0).unwrap_or(i64::MAX);
                let stamps: Vec<i64> = (1..lines.len()).filter_map(|i| num(&lines, i)).collect();
                if stamps.is_empty() {
                    Err("no ssh host keys".into())
                } else if stamps.iter().any(|m| m + 5 < boot) {
                    Err("a host key is older than this boot: the image carries its keys".into())
                } else {
                    Ok(())
                }
            }
            Builtin::Hostname => {
                let h = line(0);
                if h == want.hostname {
                    Ok(())
                } else {
                    Err(format!("hostname is {h:?}, not {:?}", want.hostname))
                }
            }
            Builtin::Firmware => judge_firmware(line(0), line(1), want.firmware).and_then(|()| {
                match (want.tpm, line(2) == "tpm") {
                    (true, false) => Err("the VM has a TPM but the guest has no /dev/tpm0".into()),
                    _ => Ok(()),
                }
            }),
            Builtin::NoFailedUnits => {
                let failed: Vec<&str> = lines
                    .iter()
                    .filter(|l| !l.is_empty())
                    .map(|l| l.split_whitespace().next().unwrap_or(l))
                    .collect();
                if failed.is_empty() {
                    Ok(())
                } else {
                    Err(format!("failed: {}", failed.join(", ")))
                }
            }
        }
    }
}

/// The firmware the guest saw (`bios` or `uefi`, and the SecureBoot variable) against the VM's.
fn judge_firmware(seen: &str, secure: &str, want: crate::vocab::Firmware) -> Result<(), String> {
    use crate::vocab::Firmware as F;
    match (want, seen) {
        (F::Bios, "bios") | (F::Uefi, "uefi") => Ok(()),
        (F::SecureBoot, "uefi") if secure == "1" => Ok(()),
        (F::SecureBoot, "uefi") => Err(format!(
            "Secure Boot is not enforcing in the guest (SecureBoot variable: {})",
            if secure.is_empty() { "missing" } else { secure }
        )),
        (_, seen) => Err(format!(
            "the guest saw {seen:?} firmware, the VM had {want}"
        )),
    }
}

/// cloud-init's verdict from `cloud-init status --wait`'s exit status: 0 done, 2 "degraded"
/// (recoverable errors: a warning), anything else an error.
pub fn judge_cloud_init(status: i32, out: &str) -> (bool, bool, String) {
    match status {
        0 => (true, false, out.trim().to_string()),
        2 => (true, true, format!("degraded: {}", tail(out))),
        s => (false, false, format!("exit status {s}: {}", tail(out))),
    }
}

/// A public key file's key (type and base64), without its comment.
pub fn public_key_blob(text: &str) -> Option<String> {
    let mut w = text.split_whitespace();
    let (t, b) = (w.next()?, w.next()?);
    (t.starts_with("ssh-") || t.starts_with("ecdsa-")).then(|| format!("{t} {b}"))
}

/// The host keys ssh learnt (its known_hosts file): type and base64.
pub fn known_host_keys(known_hosts: &str) -> Vec<String> {
    known_hosts
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let _host = w.next()?;
            Some(format!("{} {}", w.next()?, w.next()?))
        })
        .collect()
}

/// JUnit XML, one test case per check (CI systems show it).
pub fn junit_xml(suite: &str, r: &Report) -> String {
    let failures = r.failed().len();
    let total: f64 = r.checks.iter().map(|c| c.seconds).sum();
    let mut s = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" time=\"{total:.3}\">\n",
        quote::xml(suite),
        r.checks.len()
    );
    for c in &r.checks {
        s.push_str(&format!(
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
            quote::xml(suite),
            quote::xml(&c.name),
            c.seconds
        ));
        if c.ok && !c.warning {
            s.push_str("/>\n");
        } else if c.ok {
            s.push_str(&format!(
                ">\n      <system-out>{}</system-out>\n    </testcase>\n",
                quote::xml(&c.detail)
            ));
        } else {
            s.push_str(&format!(
                ">\n      <failure message=\"{}\"/>\n    </testcase>\n",
                quote::xml(&c.detail)
            ));
        }
    }
    s.push_str("  </testsuite>\n</testsuites>\n");
    s
}
