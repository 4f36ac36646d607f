//! The boot test: start an image the way a cloud starts a new instance (a throwaway overlay
//! larger than the image, a fresh NoCloud seed with a new instance-id, hostname and a test
//! user's ssh key), log in over ssh from the host through user networking, wait for
//! cloud-init, and run the checks. Used by the build's `test` stage and by `kiln test IMAGE`.
//!
//! The argv, seed and check commands are pure functions (table-tested); `run` drives libvirt,
//! qemu-img, xorriso, ssh-keygen and ssh.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::libvirt::domain::{Disk, DomainSpec, Machine};
use crate::libvirt::vmuser::VmUser;
use crate::libvirt::Libvirt;
use crate::process::{self, Cancel, Opts};
use crate::quote;

/// The user the test logs in as (created by the seed, never in the published image: the test
/// boots a throwaway overlay).
pub const TEST_USER: &str = "kiln-test";

pub use crate::plan::TestCheck as Check;

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
                if status != 0 {
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

fn tail(s: &str) -> String {
    crate::process::last_lines(s.trim(), 5).replace('\n', " | ")
}

/// The result of one check.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub ok: bool,
    /// A warning that does not fail the test (cloud-init "degraded").
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub warning: bool,
    pub detail: String,
    pub seconds: f64,
}

/// What the boot test found, for manifest.json, the JUnit file and the summary.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Report {
    pub instance_id: String,
    pub hostname: String,
    pub checks: Vec<CheckResult>,
    /// Seconds per phase: boot to ssh, cloud-init, checks.
    pub phases: Vec<(String, f64)>,
}

impl Report {
    pub fn failed(&self) -> Vec<&CheckResult> {
        self.checks.iter().filter(|c| !c.ok).collect()
    }
}

/// What to boot and how.
pub struct Options {
    /// The image, reachable by the VM's user (a hard link in `work` when needed).
    pub image: PathBuf,
    pub format: String,
    pub virtual_size: u64,
    /// Scratch directory for the overlay, seed, key and console (the caller removes it).
    pub work: PathBuf,
    /// Accelerator, memory and vCPUs: the recipe's `vm:`, or `kiln test`'s flags.
    pub machine: Machine,
    pub runs_as: VmUser,
    pub timeout: Duration,
    /// The recipe's checks, after the default ones.
    pub checks: Vec<Check>,
    /// Public host keys of the build VM (from its console): the image must not boot with them.
    pub build_host_keys: Vec<String>,
    /// Domain name prefix, e.g. `kiln-test-debian-12`.
    pub name: String,
}

impl Options {
    /// The one way the test stage and `kiln test` describe a boot test: `image` as qemu-img
    /// read it (`info`), scratch files in `work`, domains named `name-XXXXXXXX`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        image: PathBuf,
        info: &crate::qemu_img::Info,
        work: PathBuf,
        machine: Machine,
        runs_as: VmUser,
        timeout: Duration,
        checks: Vec<Check>,
        name: String,
    ) -> Options {
        Options {
            image,
            format: info.format.clone(),
            virtual_size: info.virtual_size,
            work,
            machine,
            runs_as,
            timeout,
            checks,
            build_host_keys: Vec::new(),
            name,
        }
    }
}

/// The seed's meta-data.
pub fn meta_data(instance_id: &str, hostname: &str) -> String {
    format!(
        "instance-id: {}\nlocal-hostname: {}\n",
        quote::yaml(instance_id),
        quote::yaml(hostname)
    )
}

/// The seed's user-data: the test user with the key, passwordless sudo, nothing else.
pub fn user_data(public_key: &str) -> String {
    format!(
        "#cloud-config\n# kiln boot test: a throwaway user on a throwaway overlay\nusers:\n  - default\n  - name: {}\n    shell: /bin/sh\n    sudo: {}\n    lock_passwd: true\n    ssh_authorized_keys:\n      - {}\nssh_pwauth: false\n",
        TEST_USER,
        quote::yaml("ALL=(ALL) NOPASSWD:ALL"),
        quote::yaml(public_key.trim())
    )
}

/// The test VM: a throwaway overlay of the image (larger: the root filesystem must grow) and
/// the seed, the console to a file, ssh forwarded to `port` on the host's loopback.
pub fn domain(
    o: &Options,
    name: &str,
    overlay: &Path,
    seed: &Path,
    console: &Path,
    port: u16,
) -> DomainSpec {
    let disk = Disk::system(overlay, false).backed_by(&o.image, &o.format);
    DomainSpec::test_vm(name, o.machine, o.runs_as, &disk, seed, console, port)
}

/// ssh to the test VM: the test key only, its own known_hosts (the host key is learnt on the
/// first login and must not change), no agent, no config from the invoking user.
pub fn ssh_argv(key: &Path, known_hosts: &Path, port: u16, command: &str) -> Vec<String> {
    let mut v = process::argv(["ssh", "-F", "/dev/null", "-i"]);
    v.push(key.display().to_string());
    for o in [
        "IdentitiesOnly=yes".to_string(),
        "BatchMode=yes".into(),
        "StrictHostKeyChecking=accept-new".into(),
        format!("UserKnownHostsFile={}", known_hosts.display()),
        "ConnectTimeout=10".into(),
        "ServerAliveInterval=10".into(),
        "LogLevel=ERROR".into(),
    ] {
        v.push("-o".into());
        v.push(o);
    }
    v.push("-p".into());
    v.push(port.to_string());
    v.push(format!("{TEST_USER}@127.0.0.1"));
    v.push("--".into());
    v.push(command.to_string());
    v
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
}

/// What a built-in check's judge compares against.
pub struct Expected<'a> {
    pub instance_id: &'a str,
    pub hostname: &'a str,
    /// The image's virtual size (the test disk is larger).
    pub image_virtual: u64,
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
    ]
}

/// A number on line `i` of a check's output.
fn num(lines: &[&str], i: usize) -> Option<i64> {
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
        }
    }

    /// The shell command run in the guest (as the test user).
    pub fn command(self) -> &'static str {
        match self {
            Builtin::CloudInitSeed => {
                "sudo cloud-init query v1.platform; sudo cloud-init query v1.instance_id"
            }
            Builtin::RootGrew => "df -B1 --output=size / | tail -n 1",
            Builtin::MachineId => {
                "cat /etc/machine-id; echo $(( $(date +%s) - $(cut -d. -f1 /proc/uptime) )); stat -c %Y /etc/machine-id"
            }
            Builtin::HostKeys => {
                "echo $(( $(date +%s) - $(cut -d. -f1 /proc/uptime) )); stat -c %Y /etc/ssh/ssh_host_*_key.pub"
            }
            Builtin::Hostname => "hostname",
            Builtin::NoFailedUnits => "systemctl --failed --plain --no-legend --no-pager",
        }
    }

    /// Judge the command's exit status and output.
    pub fn judge(self, status: i32, out: &str, want: &Expected) -> Result<(), String> {
        // systemctl --failed exits 0 either way; every other command must succeed.
        if status != 0 && self != Builtin::NoFailedUnits {
            return Err(format!("exit status {status}: {}", tail(out)));
        }
        let lines: Vec<&str> = out.lines().map(str::trim).collect();
        let line = |i: usize| lines.get(i).copied().unwrap_or("");
        match self {
            Builtin::CloudInitSeed => {
                let (platform, id) = (line(0), line(1));
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
                    Ok(())
                } else {
                    Err(format!(
                        "/ is {} on a disk larger than the image's {}: it did not grow",
                        crate::progress::human_bytes(size),
                        crate::progress::human_bytes(want.image_virtual)
                    ))
                }
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

/// cloud-init's verdict from `cloud-init status --wait`'s exit status: 0 done, 2 "degraded"
/// (recoverable errors: a warning), anything else an error.
pub fn judge_cloud_init(status: i32, out: &str) -> (bool, bool, String) {
    match status {
        0 => (true, false, out.trim().to_string()),
        2 => (true, true, format!("degraded: {}", tail(out))),
        s => (false, false, format!("exit status {s}: {}", tail(out))),
    }
}

/// Public keys printed by cloud-init on a console (`-----BEGIN SSH HOST KEY KEYS-----`): the
/// key blobs (type and base64), without comments.
pub fn console_host_keys(console: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut inside = false;
    for l in console.lines() {
        if l.contains("-----BEGIN SSH HOST KEY KEYS-----") {
            inside = true;
        } else if l.contains("-----END SSH HOST KEY KEYS-----") {
            inside = false;
        } else if inside {
            // Console lines may carry a prefix (ec2: ...): from the key type on.
            if let Some(i) = l.find("ssh-").or_else(|| l.find("ecdsa-")) {
                let mut w = l[i..].split_whitespace();
                if let (Some(t), Some(b)) = (w.next(), w.next()) {
                    keys.push(format!("{t} {b}"));
                }
            }
        }
    }
    keys
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

/// Run an ssh command: its exit status and its output (stdout; the remote commands send
/// stderr there too). Killed when the build is cancelled or `limit` passes.
fn ssh_run(argv: &[String], cancel: &Cancel, limit: Duration) -> Result<(i32, String), TestError> {
    use std::io::Read;
    tracing::debug!(target: "kiln::command", "running: {}", process::display(argv));
    let mut child = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| TestError::Setup(format!("cannot run ssh: {e}")))?;
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if cancel.is_cancelled() || start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(TestError::Setup(if cancel.is_cancelled() {
                "interrupted".into()
            } else {
                format!(
                    "`{}` took longer than {} s",
                    argv.last().map(String::as_str).unwrap_or(""),
                    limit.as_secs()
                )
            }));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut text = reader.join().unwrap_or_default();
    let e = err_reader.join().unwrap_or_default();
    if !e.trim().is_empty() {
        text.push_str(&e);
    }
    Ok((status.code().unwrap_or(-1), text))
}

/// How long a connection that ssh could not make is retried once the guest has let us in.
const SSH_RETRY: Duration = Duration::from_secs(90);

/// ssh's own failure to connect (exit 255 with a connection error), as opposed to the remote
/// command's exit status.
pub fn ssh_connection_failed(status: i32, output: &str) -> bool {
    status == 255
        && [
            "kex_exchange_identification",
            "ssh_exchange_identification",
            "Connection reset",
            "Connection refused",
            "Connection closed",
            "Connection timed out",
        ]
        .iter()
        .any(|m| output.contains(m))
}

/// One shell script running `commands` in turn, each framed by markers with its exit status.
pub fn batch_script(commands: &[String]) -> String {
    let mut s = String::new();
    for (i, c) in commands.iter().enumerate() {
        s.push_str(&format!(
            "echo '@@kiln-check {i}'; ( {c} ); echo \"@@kiln-status {i} $?\"\n"
        ));
    }
    s
}

/// Each command's (status, output) from `batch_script`'s output; a command whose markers are
/// missing has status -1.
pub fn split_batch(out: &str, n: usize) -> Vec<(i32, String)> {
    let mut v = vec![(-1, String::new()); n];
    let mut cur: Option<usize> = None;
    for l in out.lines() {
        if let Some(i) = l
            .strip_prefix("@@kiln-check ")
            .and_then(|x| x.trim().parse().ok())
        {
            cur = Some(i).filter(|i| *i < n);
        } else if let Some(rest) = l.strip_prefix("@@kiln-status ") {
            let mut w = rest.split_whitespace();
            if let (Some(Ok(i)), Some(Ok(st))) = (
                w.next().map(str::parse::<usize>),
                w.next().map(str::parse::<i32>),
            ) {
                if i < n {
                    v[i].0 = st;
                }
            }
            cur = None;
        } else if let Some(i) = cur {
            v[i].1.push_str(l);
            v[i].1.push('\n');
        }
    }
    v
}

/// How long sshd may take after cloud-init said it finished.
const SSH_GRACE: Duration = Duration::from_secs(90);

/// cloud-init's last line on the console ("Cloud-init v. 22.4.2 finished at …").
pub fn cloud_init_finished(console: &str) -> bool {
    console
        .lines()
        .any(|l| l.contains("Cloud-init v.") && l.contains(" finished at "))
}

/// A boot that will never reach sshd, from the console.
pub fn boot_failure(console: &str) -> Option<String> {
    for (needle, what) in [
        (
            "You are in emergency mode",
            "the guest booted into emergency mode",
        ),
        (
            "Give root password for maintenance",
            "the guest booted into emergency mode",
        ),
        ("Kernel panic - not syncing", "the guest's kernel panicked"),
        ("ALERT!  ", "the initramfs did not find the root filesystem"),
        ("grub rescue>", "GRUB did not find its files (grub rescue)"),
    ] {
        if let Some(l) = console.lines().find(|l| l.contains(needle)) {
            return Some(format!("{what} ({})", l.trim()));
        }
    }
    None
}

/// A free TCP port on the loopback (bound and released; qemu binds it right after).
fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

#[derive(Debug, thiserror::Error)]
pub enum TestError {
    #[error("boot test: {0}")]
    Setup(String),
    #[error("boot test: {0}")]
    Command(#[from] crate::process::CommandError),
    #[error("boot test: {0}")]
    Libvirt(#[from] crate::libvirt::LibvirtError),
    #[error("boot test: {0}")]
    Io(#[from] std::io::Error),
    #[error("boot test: {0}")]
    Template(#[from] crate::templates::TemplateError),
}

/// Boot `o.image` and run the checks. `on_domain` is called with the domain's name the moment
/// it is defined (the caller records it for cleanup); the domain is destroyed and undefined
/// before `run` returns, whatever happened.
pub fn run(
    o: &Options,
    lv: &Libvirt,
    cancel: &Cancel,
    on_domain: &mut dyn FnMut(&str),
) -> Result<Report, TestError> {
    let suffix = hex::encode(&crate::libvirt::console::rand_bytes()[..4]);
    let instance_id = format!("kiln-test-{suffix}");
    let hostname = format!("kiln-test-{suffix}");
    std::fs::create_dir_all(&o.work)?;
    // The throwaway overlay, larger than the image (the root filesystem must grow).
    let overlay = o.work.join("test-disk.qcow2");
    let _ = std::fs::remove_file(&overlay);
    process::run(
        &crate::qemu_img::create_overlay_argv(
            &o.image,
            &o.format,
            &overlay,
            Some(o.virtual_size + (1 << 30)),
        ),
        &Opts::default(),
        cancel,
    )?;
    // The test user's key: made here, used once, removed with the directory.
    let key = o.work.join("test-key");
    let _ = std::fs::remove_file(&key);
    let _ = std::fs::remove_file(o.work.join("test-key.pub"));
    process::run(
        &process::argv([
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "kiln-boot-test",
            "-f",
            &key.display().to_string(),
        ]),
        &Opts::default(),
        cancel,
    )?;
    let public = std::fs::read_to_string(o.work.join("test-key.pub"))?;
    let seed_dir = o.work.join("test-seed");
    let _ = std::fs::remove_dir_all(&seed_dir);
    std::fs::create_dir_all(&seed_dir)?;
    let (ud, md) = (seed_dir.join("user-data"), seed_dir.join("meta-data"));
    std::fs::write(&ud, user_data(&public))?;
    std::fs::write(&md, meta_data(&instance_id, &hostname))?;
    let seed = o.work.join("test-seed.iso");
    let _ = std::fs::remove_file(&seed);
    process::run(
        &crate::seed::xorriso_argv(&seed, &[ud, md], None),
        &Opts::default(),
        cancel,
    )?;
    let console = o.work.join("test-console.log");
    let _ = std::fs::remove_file(&console);
    let known_hosts = o.work.join("test-known-hosts");
    let _ = std::fs::remove_file(&known_hosts);
    let port = free_port()?;
    let name = format!("{}-{suffix}", o.name);
    let xml = crate::owner::with_owner(
        &domain(o, &name, &overlay, &seed, &console, port).xml("", "")?,
        &crate::owner::Owner::current(),
    );
    std::fs::write(o.work.join("test-domain.xml"), &xml)?;
    lv.define(&name, &xml)?;
    on_domain(&name);
    let result = boot_and_check(
        o,
        lv,
        cancel,
        &name,
        port,
        &key,
        &known_hosts,
        &instance_id,
        &hostname,
    );
    if let Err(e) = lv.destroy_and_undefine(&name) {
        tracing::warn!("removing the test domain {name}: {e}");
    }
    let mut report = result?;
    report.instance_id = instance_id;
    report.hostname = hostname;
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
fn boot_and_check(
    o: &Options,
    lv: &Libvirt,
    cancel: &Cancel,
    name: &str,
    port: u16,
    key: &Path,
    known_hosts: &Path,
    instance_id: &str,
    hostname: &str,
) -> Result<Report, TestError> {
    lv.start(name)?;
    tracing::info!(
        "boot test: started domain {name} ({}, {} MiB); ssh on 127.0.0.1:{port}",
        o.machine.engine.as_str(),
        o.machine.memory_mib
    );
    let start = Instant::now();
    // After the first login sshd can still restart (cloud-init's ssh module, a unit's
    // reload): a connection that ssh itself could not make is retried for a while, a command's
    // own failure never.
    let ssh = |cmd: &str| -> Result<(i32, String), TestError> {
        let first = Instant::now();
        loop {
            let (status, out) = ssh_run(&ssh_argv(key, known_hosts, port, cmd), cancel, o.timeout)?;
            if !ssh_connection_failed(status, &out) || first.elapsed() > SSH_RETRY {
                return Ok((status, out));
            }
            tracing::debug!("ssh could not connect ({}); retrying", out.trim());
            std::thread::sleep(Duration::from_secs(2));
        }
    };
    let mut checks = Vec::new();
    let mut phases = Vec::new();
    // Boot to ssh: retry until sshd takes the key. A guest that cannot get there fails the
    // login check with the reason (and the JUnit file says so), instead of waiting out the
    // timeout: emergency mode, a stopped VM, or cloud-init done while sshd still refuses.
    let console_path = o.work.join("test-console.log");
    let mut last = String::new();
    let mut cloud_init_done: Option<Instant> = None;
    let login = format!("ssh login as {TEST_USER} with the seed's key");
    let failed_login = |why: String, checks: &mut Vec<CheckResult>| {
        checks.push(CheckResult {
            name: login.clone(),
            ok: false,
            warning: false,
            detail: format!(
                "{why}; console tail:\n{}",
                crate::libvirt::console::file_tail(&console_path, 15)
            ),
            seconds: start.elapsed().as_secs_f64(),
        });
    };
    loop {
        if cancel.is_cancelled() {
            return Err(TestError::Setup("interrupted".into()));
        }
        let console = std::fs::read_to_string(&console_path).unwrap_or_default();
        let why = if start.elapsed() > o.timeout {
            Some(format!(
                "no login within {} s (last: {})",
                o.timeout.as_secs(),
                last.trim()
            ))
        } else if let Some(m) = boot_failure(&console) {
            Some(m)
        } else if !matches!(lv.state(name), crate::libvirt::State::Running) {
            Some("the test VM stopped before sshd answered".into())
        } else {
            if cloud_init_done.is_none() && cloud_init_finished(&console) {
                cloud_init_done = Some(Instant::now());
            }
            cloud_init_done
                .filter(|t| t.elapsed() > SSH_GRACE)
                .map(|_| {
                    format!(
                        "cloud-init finished {} s ago and sshd still refuses the key (last: {})",
                        SSH_GRACE.as_secs(),
                        last.trim()
                    )
                })
        };
        if let Some(why) = why {
            failed_login(why, &mut checks);
            phases.push((
                "boot to ssh login".to_string(),
                start.elapsed().as_secs_f64(),
            ));
            return Ok(Report {
                instance_id: String::new(),
                hostname: String::new(),
                checks,
                phases,
            });
        }
        // One try a round: this loop watches the console between tries.
        match ssh_run(&ssh_argv(key, known_hosts, port, "true"), cancel, o.timeout) {
            Ok((0, _)) => break,
            Ok((_, out)) => last = out,
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_secs(3));
    }
    let booted = start.elapsed().as_secs_f64();
    phases.push(("boot to ssh login".to_string(), booted));
    checks.push(CheckResult {
        name: format!("ssh login as {TEST_USER} with the seed's key"),
        ok: true,
        warning: false,
        detail: format!("after {booted:.1} s"),
        seconds: booted,
    });
    let t = Instant::now();
    let (status, out) = ssh("cloud-init status --wait --long 2>&1 || exit $?")?;
    let (ok, warning, detail) = judge_cloud_init(status, &out);
    checks.push(CheckResult {
        name: "cloud-init finished".into(),
        ok,
        warning,
        detail,
        seconds: t.elapsed().as_secs_f64(),
    });
    phases.push(("cloud-init".into(), t.elapsed().as_secs_f64()));
    let t = Instant::now();
    // Every built-in check in one ssh session (each login costs a second or more under TCG);
    // their stderr stays out of the judged output (sudo's "unable to resolve host" on images
    // that leave /etc/hosts alone is not a result).
    let builtins = builtin_checks();
    let commands: Vec<String> = builtins
        .iter()
        .map(|b| format!("{} 2>/dev/null", b.command()))
        .collect();
    let (_, out) = ssh(&batch_script(&commands))?;
    let results = split_batch(&out, commands.len());
    let each = t.elapsed().as_secs_f64() / builtins.len().max(1) as f64;
    let want = Expected {
        instance_id,
        hostname,
        image_virtual: o.virtual_size,
    };
    for (b, (status, out)) in builtins.iter().zip(results) {
        let r = b.judge(status, &out, &want);
        checks.push(CheckResult {
            name: b.name().into(),
            ok: r.is_ok(),
            warning: false,
            detail: r.err().unwrap_or_default(),
            seconds: each,
        });
    }
    // The keys sshd showed are not the build VM's.
    let learnt = known_host_keys(&std::fs::read_to_string(known_hosts).unwrap_or_default());
    let reused: Vec<&String> = learnt
        .iter()
        .filter(|k| o.build_host_keys.contains(k))
        .collect();
    checks.push(CheckResult {
        name: "the ssh host keys are not the build VM's".into(),
        ok: !learnt.is_empty() && reused.is_empty(),
        warning: false,
        detail: if learnt.is_empty() {
            "ssh recorded no host key".into()
        } else if reused.is_empty() {
            String::new()
        } else {
            format!("sshd presented the build VM's key {}", reused[0])
        },
        seconds: 0.0,
    });
    // The recipe's checks, one session too (their stderr is part of what they show).
    if !o.checks.is_empty() {
        let c0 = Instant::now();
        let commands: Vec<String> = o
            .checks
            .iter()
            .map(|c| format!("{} 2>&1", c.command()))
            .collect();
        let (_, out) = ssh(&batch_script(&commands))?;
        let each = c0.elapsed().as_secs_f64() / o.checks.len() as f64;
        for (c, (status, out)) in o.checks.iter().zip(split_batch(&out, commands.len())) {
            let r = c.judge(status, &out);
            checks.push(CheckResult {
                name: c.name(),
                ok: r.is_ok(),
                warning: false,
                detail: r.err().unwrap_or_default(),
                seconds: each,
            });
        }
    }
    phases.push(("checks".into(), t.elapsed().as_secs_f64()));
    Ok(Report {
        instance_id: String::new(),
        hostname: String::new(),
        checks,
        phases,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_files_quote_what_they_carry() {
        assert_eq!(
            meta_data("kiln-test-1", "kiln-test-1"),
            "instance-id: kiln-test-1\nlocal-hostname: kiln-test-1\n"
        );
        let ud = user_data("ssh-ed25519 AAAA kiln-boot-test\n");
        assert!(ud.starts_with("#cloud-config\n"));
        assert!(
            ud.contains("      - \"ssh-ed25519 AAAA kiln-boot-test\"\n"),
            "{ud}"
        );
        assert!(ud.contains("sudo: \"ALL=(ALL) NOPASSWD:ALL\""), "{ud}");
    }

    #[test]
    fn checks_run_quoted_commands_and_judge_their_output() {
        let f = Check::File {
            file: "/etc/it's".into(),
            contains: "kiln".into(),
        };
        assert_eq!(f.command(), "sudo cat -- '/etc/it'\\''s'");
        assert!(f.judge(0, "built by kiln").is_ok());
        assert!(f
            .judge(0, "nothing")
            .unwrap_err()
            .contains("does not contain"));
        assert!(f.judge(1, "No such file").is_err());
        let s = Check::Service {
            service: "ssh".into(),
            active: true,
        };
        assert_eq!(s.command(), "systemctl is-active -- 'ssh'");
        assert!(s.judge(0, "active\n").is_ok());
        assert_eq!(s.judge(3, "inactive\n").unwrap_err(), "it is inactive");
        let off = Check::Service {
            service: "ssh".into(),
            active: false,
        };
        assert!(off.judge(3, "inactive").is_ok());
        let r = Check::Run {
            run: "tree --version".into(),
            expect: Some("tree v2".into()),
        };
        assert!(r.judge(0, "tree v2.1.0 (c) 1996").is_ok());
        assert!(r.judge(0, "tree v1").unwrap_err().contains("lacks"));
        assert!(r.judge(127, "not found").unwrap_err().contains("127"));
    }

    #[test]
    fn builtin_checks_judge_the_guest() {
        let want = Expected {
            instance_id: "kiln-test-ab",
            hostname: "kiln-test-ab",
            image_virtual: 3 << 30,
        };
        let j = |b: Builtin, status, out: &str| b.judge(status, out, &want);
        let names = builtin_checks();
        assert_eq!(names.len(), 6);
        assert!(j(names[0], 0, "nocloud\nkiln-test-ab\n").is_ok());
        assert!(j(names[0], 0, "ec2\nkiln-test-ab\n")
            .unwrap_err()
            .contains("not nocloud"));
        assert!(j(names[0], 0, "nocloud\ni-old\n")
            .unwrap_err()
            .contains("instance-id"));
        assert!(j(names[1], 0, &format!("{}\n", 4u64 << 30)).is_ok());
        assert!(j(names[1], 0, &format!("{}\n", 2u64 << 30))
            .unwrap_err()
            .contains("did not grow"));
        let id = "0123456789abcdef0123456789abcdef";
        assert!(j(names[2], 0, &format!("{id}\n1000\n1001\n")).is_ok());
        assert!(j(names[2], 0, &format!("{id}\n1000\n900\n"))
            .unwrap_err()
            .contains("older"));
        assert!(j(names[2], 0, "uninitialized\n1000\n1001\n").is_err());
        assert!(j(names[3], 0, "1000\n1002\n1003\n").is_ok());
        assert!(j(names[3], 0, "1000\n1002\n10\n")
            .unwrap_err()
            .contains("older"));
        assert!(j(names[4], 0, "kiln-test-ab\n").is_ok());
        assert!(j(names[4], 0, "golden\n").is_err());
        assert!(j(names[5], 0, "").is_ok());
        assert_eq!(
            j(
                names[5],
                0,
                "ssh.service loaded failed failed OpenBSD Secure Shell server\n"
            )
            .unwrap_err(),
            "failed: ssh.service"
        );
    }

    #[test]
    fn cloud_init_status_and_host_keys() {
        assert_eq!(
            judge_cloud_init(0, "status: done\n"),
            (true, false, "status: done".into())
        );
        assert!(judge_cloud_init(2, "status: done\nrecoverable").1);
        assert!(!judge_cloud_init(1, "status: error").0);
        let console = "ec2: \n-----BEGIN SSH HOST KEY KEYS-----\nssh-ed25519 AAAAC3 root@golden\necdsa-sha2-nistp256 AAAAE2 root@golden\n-----END SSH HOST KEY KEYS-----\n";
        assert_eq!(
            console_host_keys(console),
            vec!["ssh-ed25519 AAAAC3", "ecdsa-sha2-nistp256 AAAAE2"]
        );
        assert_eq!(
            known_host_keys("[127.0.0.1]:2222 ssh-ed25519 AAAAC3\n"),
            vec!["ssh-ed25519 AAAAC3"]
        );
    }

    #[test]
    fn only_ssh_connection_failures_are_retried() {
        assert!(ssh_connection_failed(
            255,
            "kex_exchange_identification: read: Connection reset by peer\r\n"
        ));
        assert!(ssh_connection_failed(
            255,
            "ssh: connect to host 127.0.0.1 port 2222: Connection refused"
        ));
        // The remote command exited 255, or failed otherwise: a result, not a retry.
        assert!(!ssh_connection_failed(255, "my script's own output"));
        assert!(!ssh_connection_failed(1, "Connection refused"));
    }

    #[test]
    fn batched_checks_come_apart_with_their_status() {
        let script = batch_script(&["hostname".into(), "false".into()]);
        assert_eq!(
            script,
            "echo '@@kiln-check 0'; ( hostname ); echo \"@@kiln-status 0 $?\"\necho '@@kiln-check 1'; ( false ); echo \"@@kiln-status 1 $?\"\n"
        );
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        let r = split_batch(&String::from_utf8_lossy(&out.stdout), 2);
        assert_eq!(r[0].0, 0);
        assert!(!r[0].1.trim().is_empty());
        assert_eq!(r[1], (1, String::new()));
        assert_eq!(
            split_batch("@@kiln-check 0\nx\n", 2),
            vec![(-1, "x\n".into()), (-1, String::new())]
        );
    }

    #[test]
    fn the_console_tells_a_boot_that_cannot_reach_sshd() {
        assert!(cloud_init_finished("Cloud-init v. 22.4.2 finished at Tue, 01 Dec 2026 13:00:00 +0000. Datasource DataSourceNoCloud.  Up 60.1 seconds"));
        assert!(!cloud_init_finished(
            "Cloud-init v. 22.4.2 running 'modules:final'"
        ));
        assert!(
            boot_failure("[  OK  ] ok\nYou are in emergency mode. After logging in, type")
                .unwrap()
                .contains("emergency")
        );
        assert!(
            boot_failure("ALERT!  UUID=1234 does not exist.  Dropping to a shell!")
                .unwrap()
                .contains("root filesystem")
        );
        assert!(boot_failure("[  OK  ] Reached target Multi-User System").is_none());
    }

    #[test]
    fn ssh_uses_only_the_test_key_and_its_own_known_hosts() {
        let v = ssh_argv(Path::new("/w/test-key"), Path::new("/w/kh"), 2222, "true");
        assert_eq!(&v[..5], ["ssh", "-F", "/dev/null", "-i", "/w/test-key"]);
        assert!(v.contains(&"UserKnownHostsFile=/w/kh".to_string()));
        assert!(v.contains(&"BatchMode=yes".to_string()));
        assert_eq!(&v[v.len() - 3..], ["kiln-test@127.0.0.1", "--", "true"]);
    }

    #[test]
    fn junit_names_each_check_and_its_failure() {
        let r = Report {
            instance_id: "i".into(),
            hostname: "h".into(),
            checks: vec![
                CheckResult {
                    name: "a <b>".into(),
                    ok: true,
                    warning: false,
                    detail: String::new(),
                    seconds: 1.0,
                },
                CheckResult {
                    name: "c".into(),
                    ok: false,
                    warning: false,
                    detail: "it is \"inactive\"".into(),
                    seconds: 0.5,
                },
            ],
            phases: vec![],
        };
        let x = junit_xml("debian-12-1.0", &r);
        assert!(x.contains("tests=\"2\" failures=\"1\""), "{x}");
        assert!(x.contains("name=\"a &lt;b&gt;\""), "{x}");
        assert!(
            x.contains("<failure message=\"it is &quot;inactive&quot;\"/>"),
            "{x}"
        );
    }
}
