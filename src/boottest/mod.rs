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

use crate::libvirt::domain::{Backing, Disk, DomainSpec, Machine};
use crate::libvirt::vmuser::VmUser;
use crate::libvirt::Libvirt;
use crate::process::{self, Cancel, Opts};
use crate::quote;

/// The user the test logs in as (created by the seed, never in the published image: the test
/// boots a throwaway overlay).
pub const TEST_USER: &str = "kiln-test";

pub use crate::plan::TestCheck as Check;

mod checks;
mod session;

pub use checks::*;
pub use session::*;

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
    /// The image and what it is made on, nearest first, each reachable by the VM's user (hard
    /// links in `work` when needed): one file for an output, the build disk's chain for the
    /// build's test.
    pub chain: Vec<Backing>,
    pub virtual_size: u64,
    /// Scratch directory for the overlay, seed, key and console (the caller removes it).
    pub work: PathBuf,
    /// Accelerator, memory and vCPUs: the recipe's `vm:`, or `kiln test`'s flags.
    pub machine: Machine,
    pub runs_as: VmUser,
    /// For cloud-init and the checks once logged in, and for the whole test.
    pub timeout: Duration,
    /// From the VM's start until sshd answers: a guest silent that long is booted once more.
    pub boot_timeout: Duration,
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
    /// `chain`: the image and its backing files as the VM reaches them, nearest first.
    pub fn new(
        chain: Vec<Backing>,
        info: &crate::qemu_img::Info,
        work: PathBuf,
        machine: Machine,
        runs_as: VmUser,
        timeout: Duration,
        checks: Vec<Check>,
        name: String,
    ) -> Options {
        Options {
            chain,
            virtual_size: info.virtual_size,
            work,
            machine,
            runs_as,
            timeout,
            boot_timeout: timeout.min(Duration::from_secs(crate::plan::DEFAULT_BOOT_TIMEOUT_SECS)),
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
    let disk = Disk::system(overlay, false).backed_by_chain(o.chain.clone());
    DomainSpec::test_vm(name, o.machine, o.runs_as, &disk, seed, console, port)
}

/// How long sshd may take after cloud-init said it finished.
const SSH_GRACE: Duration = Duration::from_secs(90);

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

/// Boot the image and run the checks. `on_domain` is called with the domain's name the moment
/// it is defined (the caller records it for cleanup); the domain is destroyed and undefined
/// before `run` returns, whatever happened.
pub fn run(
    o: &Options,
    lv: &Libvirt,
    cancel: &Cancel,
    on_domain: &mut dyn FnMut(&str),
) -> Result<Report, TestError> {
    let vm = prepare(o, lv, cancel, on_domain)?;
    check_and_remove(o, lv, cancel, &vm)
}

/// A boot test running in a thread of its own (beside the build's conversions).
pub struct Running {
    /// The test VM's domain (defined; the thread removes it before it ends).
    pub domain: String,
    cancel: Cancel,
    thread: std::thread::JoinHandle<Result<Report, TestError>>,
}

impl Running {
    /// The test's result, once it has ended.
    pub fn wait(self) -> Result<Report, TestError> {
        self.thread
            .join()
            .unwrap_or_else(|_| Err(TestError::Setup("the boot test's thread panicked".into())))
    }

    /// Stop the test (another stage failed) and wait until its VM is gone.
    pub fn stop(self) {
        self.cancel.cancel();
        if let Err(e) = self.wait() {
            tracing::debug!("the stopped boot test: {e}");
        }
    }
}

/// [`run`] in the background: the overlay, seed and domain are made here (`on_domain` records
/// the domain the moment it exists), then the VM boots and is checked in a thread with its own
/// libvirt connection, stopped by `cancel` or by [`Running::stop`].
pub fn start(
    o: Options,
    lv: &Libvirt,
    cancel: &Cancel,
    on_domain: &mut dyn FnMut(&str),
) -> Result<Running, TestError> {
    let vm = prepare(&o, lv, cancel, on_domain)?;
    let cancel = cancel.child();
    let (uri, domain, stop) = (lv.uri.clone(), vm.name.clone(), cancel.clone());
    let build = crate::logging::current();
    let thread = std::thread::Builder::new()
        .name("boot-test".into())
        .spawn(move || {
            crate::logging::adopt(build);
            let lv = Libvirt::connect(&uri)?;
            check_and_remove(&o, &lv, &cancel, &vm)
        })?;
    Ok(Running {
        domain,
        cancel: stop,
        thread,
    })
}

/// The test VM, defined and not started.
struct TestVm {
    name: String,
    port: u16,
    key: PathBuf,
    known_hosts: PathBuf,
    instance_id: String,
    hostname: String,
}

/// The throwaway overlay, the test user's key, the seed and the defined domain.
fn prepare(
    o: &Options,
    lv: &Libvirt,
    cancel: &Cancel,
    on_domain: &mut dyn FnMut(&str),
) -> Result<TestVm, TestError> {
    let suffix = hex::encode(&crate::libvirt::console::rand_bytes()[..4]);
    let instance_id = format!("kiln-test-{suffix}");
    let hostname = format!("kiln-test-{suffix}");
    std::fs::create_dir_all(&o.work)?;
    let top = o
        .chain
        .first()
        .ok_or_else(|| TestError::Setup("no image to boot".into()))?;
    let overlay = fresh_overlay(o, top, cancel)?;
    let key = test_key(o, cancel)?;
    let public = std::fs::read_to_string(o.work.join("test-key.pub"))?;
    let seed = test_seed(o, &public, &instance_id, &hostname, cancel)?;
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
    Ok(TestVm {
        name,
        port,
        key,
        known_hosts,
        instance_id,
        hostname,
    })
}

/// The throwaway overlay, larger than the image (the root filesystem must grow); made again
/// for a second boot, which must be a first boot too.
fn fresh_overlay(o: &Options, top: &Backing, cancel: &Cancel) -> Result<PathBuf, TestError> {
    let overlay = o.work.join("test-disk.qcow2");
    let _ = std::fs::remove_file(&overlay);
    process::run(
        &crate::qemu_img::create_overlay_argv(
            &top.path,
            &top.format,
            &overlay,
            Some(o.virtual_size + (1 << 30)),
        ),
        &Opts::default(),
        cancel,
    )?;
    Ok(overlay)
}

/// The test user's key: made here, used once, removed with the directory.
fn test_key(o: &Options, cancel: &Cancel) -> Result<PathBuf, TestError> {
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
    Ok(key)
}

/// The NoCloud seed of a new instance: its id, hostname and the test user's key.
fn test_seed(
    o: &Options,
    public: &str,
    instance_id: &str,
    hostname: &str,
    cancel: &Cancel,
) -> Result<PathBuf, TestError> {
    let seed_dir = o.work.join("test-seed");
    let _ = std::fs::remove_dir_all(&seed_dir);
    std::fs::create_dir_all(&seed_dir)?;
    let (ud, md) = (seed_dir.join("user-data"), seed_dir.join("meta-data"));
    std::fs::write(&ud, user_data(public))?;
    std::fs::write(&md, meta_data(instance_id, hostname))?;
    let seed = o.work.join("test-seed.iso");
    let _ = std::fs::remove_file(&seed);
    process::run(
        &crate::seed::xorriso_argv(&seed, &[ud, md], None),
        &Opts::default(),
        cancel,
    )?;
    Ok(seed)
}

/// Boot the defined VM and check it; the domain is destroyed and undefined whatever happened.
fn check_and_remove(
    o: &Options,
    lv: &Libvirt,
    cancel: &Cancel,
    vm: &TestVm,
) -> Result<Report, TestError> {
    let result = boot_and_check(
        o,
        lv,
        cancel,
        &vm.name,
        vm.port,
        &vm.key,
        &vm.known_hosts,
        &vm.instance_id,
        &vm.hostname,
    );
    if let Err(e) = lv.destroy_and_undefine(&vm.name) {
        tracing::warn!("removing the test domain {}: {e}", vm.name);
    }
    let mut report = result?;
    report.instance_id = vm.instance_id.clone();
    report.hostname = vm.hostname.clone();
    Ok(report)
}

/// How the test reaches the guest: ssh with the seed's key on the forwarded port.
struct Session<'a> {
    o: &'a Options,
    cancel: &'a Cancel,
    port: u16,
    key: &'a Path,
    known_hosts: &'a Path,
}

impl Session<'_> {
    fn once(&self, cmd: &str) -> Result<(i32, String), TestError> {
        let argv = ssh_argv(self.key, self.known_hosts, self.port, cmd);
        ssh_run(&argv, self.cancel, self.o.timeout)
    }
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
    let session = Session {
        o,
        cancel,
        port,
        key,
        known_hosts,
    };
    let login = format!("ssh login as {TEST_USER} with the seed's key");
    let commands = session_commands(o);
    let batch = Batch::new();
    let mut first_boot: Option<CheckResult> = None;
    let (out, start) = loop {
        lv.start(name)?;
        tracing::info!(
            "boot test: started domain {name} ({}, {}, {} MiB); ssh on 127.0.0.1:{port}",
            o.machine.engine.as_str(),
            o.machine.firmware,
            o.machine.memory_mib
        );
        let start = Instant::now();
        let no = match wait_for_session(&session, lv, name, &batch, &commands)? {
            Ok(out) => break (out, start),
            Err(no) => no,
        };
        let seconds = start.elapsed().as_secs_f64();
        if no.again && first_boot.is_none() {
            tracing::warn!(
                "boot test: {}; the VM boots once more on a fresh overlay (first console: {FIRST_CONSOLE})",
                no.why
            );
            boot_again(o, lv, cancel, name, known_hosts)?;
            first_boot = Some(CheckResult {
                name: "first boot".into(),
                ok: true,
                warning: true,
                detail: format!("{}; booted once more on a fresh overlay", no.why),
                seconds,
            });
            continue;
        }
        let console = o.work.join("test-console.log");
        let failed = CheckResult {
            name: login,
            ok: false,
            warning: false,
            detail: format!(
                "{}; console tail:\n{}",
                no.why,
                crate::libvirt::console::file_tail(&console, 15)
            ),
            seconds,
        };
        return Ok(Report {
            instance_id: String::new(),
            hostname: String::new(),
            checks: first_boot.into_iter().chain([failed]).collect(),
            phases: vec![("boot to ssh login".to_string(), seconds)],
        });
    };
    let builtins = builtin_checks();
    let ran = batch.split_timed(&out, commands.len());
    let took = durations(&ran, start.elapsed().as_secs_f64());
    let booted = took[0];
    let mut checks: Vec<CheckResult> = first_boot.into_iter().collect();
    checks.push(CheckResult {
        name: login,
        ok: true,
        warning: false,
        detail: format!("after {booted:.1} s"),
        seconds: booted,
    });
    let (ok, warning, detail) = judge_cloud_init(ran[1].status, &ran[1].output);
    checks.push(CheckResult {
        name: "cloud-init finished".into(),
        ok,
        warning,
        detail,
        seconds: took[1],
    });
    let want = Expected {
        instance_id,
        hostname,
        image_virtual: o.virtual_size,
        firmware: o.machine.firmware,
        tpm: o.machine.tpm,
    };
    let rest = ran[2..].iter().zip(&took[2..]);
    for (b, (r, secs)) in builtins.iter().zip(rest.clone()) {
        let j = b.judge(r.status, &r.output, &want);
        checks.push(judged(b.name().into(), j, *secs));
    }
    checks.extend(host_keys_result(o, known_hosts));
    for (c, (r, secs)) in o.checks.iter().zip(rest.skip(builtins.len())) {
        checks.push(judged(c.name(), c.judge(r.status, &r.output), *secs));
    }
    let phases = vec![
        ("boot to ssh login".to_string(), booted),
        ("cloud-init".into(), took[1]),
        ("checks".into(), took[2..].iter().sum()),
    ];
    Ok(Report {
        instance_id: String::new(),
        hostname: String::new(),
        checks,
        phases,
    })
}

/// Everything in one ssh session, started the moment sshd answers: the login, waiting for
/// cloud-init, every check (a login costs seconds under TCG: one, not three).
fn session_commands(o: &Options) -> Vec<String> {
    let mut commands = vec![
        "true".to_string(),
        "cloud-init status --wait --long 2>&1 || exit $?".to_string(),
    ];
    // Built-in checks' stderr stays out of what is judged (sudo's "unable to resolve host"
    // on images that leave /etc/hosts alone is not a result); a recipe's check shows its own.
    commands.extend(
        builtin_checks()
            .iter()
            .map(|b| format!("{} 2>/dev/null", b.command())),
    );
    commands.extend(o.checks.iter().map(|c| format!("{} 2>&1", c.command())));
    commands
}

/// The first boot's console, kept when the VM was booted once more.
pub const FIRST_CONSOLE: &str = "test-console-first-boot.log";

/// A hung first boot out of the way: the VM stopped, its console kept, a fresh overlay (the
/// second boot is an instance's first boot too) and no host keys learnt.
fn boot_again(
    o: &Options,
    lv: &Libvirt,
    cancel: &Cancel,
    name: &str,
    known_hosts: &Path,
) -> Result<(), TestError> {
    lv.destroy(name)?;
    std::fs::rename(o.work.join("test-console.log"), o.work.join(FIRST_CONSOLE))?;
    let top = o
        .chain
        .first()
        .ok_or_else(|| TestError::Setup("no image to boot".into()))?;
    fresh_overlay(o, top, cancel)?;
    let _ = std::fs::remove_file(known_hosts);
    Ok(())
}

/// Why the guest gave no session, and whether a new boot may fare better: a boot that hung
/// before sshd answered, or whose qemu died, is the host's trouble as often as the image's
/// (TCG; seen in CI: a Secure Boot guest silent for 40 minutes where it takes 90 s).
struct NoLogin {
    why: String,
    again: bool,
}

/// A check's result from its judge's verdict (an error is the detail).
fn judged(name: String, verdict: Result<(), String>, seconds: f64) -> CheckResult {
    CheckResult {
        name,
        ok: verdict.is_ok(),
        warning: false,
        detail: verdict.err().unwrap_or_default(),
        seconds,
    }
}

/// How long each command of the session took, from the guest's clock at each end (the first,
/// the login, is what the whole test took less the rest: the host's clock and the guest's
/// need not agree). A command whose end the guest did not stamp counts 0.
pub(crate) fn durations(ran: &[Ran], total: f64) -> Vec<f64> {
    let mut took = vec![0.0; ran.len()];
    for i in 1..ran.len() {
        if let (Some(a), Some(b)) = (ran[i - 1].ended, ran[i].ended) {
            took[i] = (b - a).max(0.0);
        }
    }
    let rest: f64 = took.iter().sum();
    if let Some(first) = took.first_mut() {
        *first = (total - rest).max(0.0);
    }
    took
}

/// Boot to ssh, then the whole session: poll until sshd answers (its banner: twice a second,
/// no ssh ConnectTimeout to sit out), then run `commands` as one batch until ssh logs in
/// (Ok(Ok(output))). A guest that cannot get there fails the login with the reason (Ok(Err))
/// instead of waiting out the timeout: see [`no_login`].
fn wait_for_session(
    session: &Session,
    lv: &Libvirt,
    name: &str,
    batch: &Batch,
    commands: &[String],
) -> Result<Result<String, NoLogin>, TestError> {
    let (o, cancel) = (session.o, session.cancel);
    let script = batch.script(commands);
    let start = Instant::now();
    let console_path = o.work.join("test-console.log");
    let mut last = String::new();
    let mut answered = false;
    let mut cloud_init_done: Option<Instant> = None;
    // Under TCG a booting guest keeps a core busy: one idle before sshd answers is wedged.
    let mut cpu = (o.machine.engine == crate::vocab::Engine::Tcg).then(crate::stall::booting_guest);
    loop {
        if cancel.is_cancelled() {
            return Err(TestError::Setup("interrupted".into()));
        }
        let console = crate::libvirt::console::file_lines(&console_path, 4 << 20).join("\n");
        if cloud_init_done.is_none() && cloud_init_finished(&console) {
            cloud_init_done = Some(Instant::now());
        }
        let running = matches!(lv.state(name), crate::libvirt::State::Running);
        let wedged = match (cpu.as_mut(), answered) {
            (Some(w), false) => lv
                .cpu_time(name)
                .and_then(|used| w.observe(Instant::now(), used)),
            _ => None,
        };
        let seen = Seen {
            elapsed: start.elapsed(),
            answered,
            console: &console,
            running,
            crashed: !running && lv.shut_off_by_crash(name),
            cloud_init_for: cloud_init_done.map(|t| t.elapsed()),
            wedged,
            last: last.trim(),
        };
        if let Some(no) = no_login(o.timeout, o.boot_timeout, &seen) {
            return Ok(Err(no));
        }
        // The console is watched between tries; ssh starts only once sshd speaks.
        if !sshd_answers(session.port, Duration::from_secs(1)) {
            last = "sshd does not answer yet".into();
            std::thread::sleep(Duration::from_millis(500));
            continue;
        }
        answered = true;
        match session.once(&script) {
            Ok((_, out)) if batch.started(&out) => return Ok(Ok(out)),
            Ok((_, out)) => last = out,
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// What the test VM has shown since its start, for [`no_login`].
struct Seen<'a> {
    elapsed: Duration,
    /// sshd has spoken at least once.
    answered: bool,
    console: &'a str,
    running: bool,
    /// Shut off because qemu died (libvirt: reason crashed).
    crashed: bool,
    /// Since cloud-init said on the console that it finished.
    cloud_init_for: Option<Duration>,
    /// The CPU time used over the last [`crate::stall::GUEST_WINDOW`] when that was too little for a guest
    /// still booting (TCG only).
    wedged: Option<Duration>,
    /// What the last try gave.
    last: &'a str,
}

/// Why no session will come, once that is known: a boot that failed on the console (emergency
/// mode, the firmware refusing the boot loader), a VM that stopped, sshd silent after
/// `boot_timeout` (booted once more: the host's trouble as often as the image's), no login by
/// `timeout`, or cloud-init done while sshd still refuses the key.
fn no_login(timeout: Duration, boot_timeout: Duration, seen: &Seen) -> Option<NoLogin> {
    let no = |why: String, again: bool| Some(NoLogin { why, again });
    if let Some(m) = boot_failure(seen.console) {
        return no(m, false);
    }
    if !seen.running {
        return if seen.crashed {
            no(
                "qemu died under the test VM before sshd answered".into(),
                true,
            )
        } else {
            no("the test VM stopped before sshd answered".into(), false)
        };
    }
    if let (false, Some(used)) = (seen.answered, seen.wedged) {
        let why = format!(
            "the VM stopped making progress before sshd answered ({:.1} s of CPU in {} s)",
            used.as_secs_f64(),
            crate::stall::GUEST_WINDOW.as_secs()
        );
        return no(why, true);
    }
    if !seen.answered && seen.elapsed > boot_timeout {
        let why = format!(
            "sshd did not answer within {} s of the VM's start (vm.boot_timeout)",
            boot_timeout.as_secs()
        );
        return no(why, true);
    }
    if seen.elapsed > timeout {
        let why = format!(
            "no login within {} s (last: {})",
            timeout.as_secs(),
            seen.last
        );
        return no(why, false);
    }
    match seen.cloud_init_for {
        Some(t) if t > SSH_GRACE => no(
            format!(
                "cloud-init finished {} s ago and sshd still refuses the key (last: {})",
                SSH_GRACE.as_secs(),
                seen.last
            ),
            false,
        ),
        _ => None,
    }
}

/// The keys sshd showed are not the build VM's (read from its disk); not run when there are
/// none to compare with (`kiln test` on an image kiln did not build), rather than passed.
fn host_keys_result(o: &Options, known_hosts: &Path) -> Option<CheckResult> {
    let learnt = known_host_keys(&std::fs::read_to_string(known_hosts).unwrap_or_default());
    judge_host_keys(&o.build_host_keys, &learnt)
}

pub(crate) fn judge_host_keys(build: &[String], learnt: &[String]) -> Option<CheckResult> {
    if build.is_empty() {
        return None;
    }
    let reused: Vec<&String> = learnt.iter().filter(|k| build.contains(k)).collect();
    Some(CheckResult {
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
    })
}

#[cfg(test)]
mod tests;
