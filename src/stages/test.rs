//! Test stage: boot the finished disk like a new cloud instance and check it (the `boottest`
//! module) before anything is published. It starts as soon as the libguestfs stage has made
//! the disk's final bytes and runs beside the conversions (every output is proven identical to
//! that disk by `qemu-img compare`); the build waits for it before `publish`. A failed check
//! fails the build: nothing is published and the previous output stays.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::pipeline::cached::{self, ChainLink, Lookup};
use crate::pipeline::context::{BuildContext, Resource};
use crate::pipeline::describe::{Describe, Described, PlanView};
use crate::pipeline::{Outcome, Stage};

/// Reads `made.disk` (and, when it finishes, `made.outputs`); sets `made.test_report` (the
/// build fails when a check fails).
#[derive(Default)]
pub struct TestStage {
    state: Option<Started>,
}

/// What `run` left for `finish`.
enum Started {
    /// Booting in the background; the slot stores a pass.
    Booting {
        running: crate::boottest::Running,
        slot: Option<cached::Slot>,
        dir: PathBuf,
        booted: Booted,
    },
    /// Passed before on these bytes (the stage cache).
    Reused {
        entry: crate::stagecache::Entry,
        report: crate::boottest::Report,
        booted: Booted,
    },
}

/// The disk the test booted: the build disk after the libguestfs stage, by its identity in
/// the stage cache (its bytes over what it is made on; None without the cache).
#[derive(Clone)]
struct Booted {
    identity: Option<String>,
}

impl Stage<BuildContext> for TestStage {
    fn name(&self) -> &'static str {
        "test"
    }

    fn run(&mut self, ctx: &mut BuildContext) -> anyhow::Result<()> {
        let Some(checks) = ctx.env.plan.test.clone() else {
            tracing::info!("boot test off (test: false or --no-test)");
            return Ok(());
        };
        if ctx.env.plan.outputs.is_empty() {
            tracing::info!("no output to publish: no boot test");
            return Ok(());
        }
        let disk = ctx.made.disk.clone().context("no build disk")?;
        // The stage cache: the same disk bytes (the libguestfs unit's identity) and the same
        // checks pass again without a boot. Only passing results are stored, in this
        // machine's cache only, depending on that unit's entry (which goes when the disk is
        // re-made).
        let on = booted_link(ctx);
        let booted = Booted {
            identity: on.as_ref().map(|l| l.identity.0.clone()),
        };
        let key = on
            .as_ref()
            .and_then(|l| crate::stagecache::test_key(&ctx.env.plan, &l.key));
        let found = ctx.cache_lookup::<crate::boottest::Report>(
            cached::TEST,
            key,
            on.as_ref(),
            &|_, _| true,
        )?;
        let slot = match found {
            Lookup::Hit(entry, report) => {
                self.state = Some(Started::Reused {
                    entry,
                    report,
                    booted,
                });
                return Ok(());
            }
            Lookup::Miss(slot) => slot,
        };
        let dir = ctx.env.work.join("test");
        crate::libvirt::vmuser::make_vm_subdir(&dir, ctx.env.vm_user)?;
        ctx.record(Resource::Dir(dir.clone()));
        let o = options(ctx, &disk, &dir, checks)?;
        ctx.libvirt()?;
        let lv = ctx.libvirt.as_ref().context("no libvirt connection")?;
        let uri = ctx.env.plan.vm.uri.clone();
        let register = &mut ctx.register;
        let running = crate::boottest::start(o, lv, &ctx.env.cancel, &mut |name| {
            // Recorded the moment it exists (for cleanup if the test cannot remove it).
            register.record(Resource::Domain {
                uri: uri.clone(),
                name: name.to_string(),
            });
        })?;
        tracing::info!(
            "boot test: booting the finished disk in {} beside the conversions",
            running.domain
        );
        ctx.made.boot_test_running = true;
        self.state = Some(Started::Booting {
            running,
            slot,
            dir,
            booted,
        });
        Ok(())
    }

    fn finished_before(&self) -> Option<&'static str> {
        self.state.as_ref().map(|_| "publish")
    }

    fn finish(&mut self, ctx: &mut BuildContext) -> anyhow::Result<()> {
        ctx.made.boot_test_running = false;
        std::fs::create_dir_all(&ctx.env.out)?;
        match self.state.take() {
            None => Ok(()),
            Some(Started::Reused {
                entry,
                report,
                booted,
            }) => passed_before(ctx, &entry, report, &booted),
            Some(Started::Booting {
                running,
                slot,
                dir,
                booted,
            }) => {
                let domain = running.domain.clone();
                let result = running.wait();
                forget_if_gone(ctx, domain);
                finished(ctx, result, slot, &dir, &booted)
            }
        }
    }

    fn cleanup(&mut self, ctx: &mut BuildContext, outcome: Outcome) -> anyhow::Result<()> {
        // Another stage failed while the test VM ran: stop it before its files go.
        ctx.made.boot_test_running = false;
        if let Some(Started::Booting { running, .. }) = self.state.take() {
            let domain = running.domain.clone();
            running.stop();
            forget_if_gone(ctx, domain);
        }
        ctx.release(self.name(), outcome)
    }
}

/// How the test boots the build disk: its backing chain as the VM's user reaches it, the
/// recipe's `vm:` and checks, and the build VM's host keys (the image must not come up with
/// them).
fn options(
    ctx: &mut BuildContext,
    disk: &std::path::Path,
    dir: &std::path::Path,
    checks: Vec<crate::plan::TestCheck>,
) -> anyhow::Result<crate::boottest::Options> {
    let infos = crate::qemu_img::info_chain(disk, &ctx.env.cancel)?;
    let top = infos.first().context("qemu-img info gave no image")?;
    let files = infos
        .iter()
        .map(|i| (PathBuf::from(&i.filename), i.format.clone()))
        .collect();
    let chain = crate::libvirt::domain::reachable_backings(files, dir, ctx.env.vm_user)
        .with_context(|| format!("giving the test VM access to {}", disk.display()))?;
    for b in chain.iter().filter(|b| b.path.starts_with(dir)) {
        ctx.record(Resource::File(b.path.clone()));
    }
    let engine = ctx.engine()?;
    let mut o = crate::boottest::Options::new(
        chain,
        top,
        dir.to_path_buf(),
        crate::seed::machine(&ctx.env.plan, engine),
        ctx.env.vm_user,
        Duration::from_secs(ctx.env.plan.vm.timeout_secs),
        checks,
        format!("kiln-test-{}", ctx.env.plan.name),
    );
    o.build_host_keys = ctx.made.build_host_keys.clone();
    o.boot_timeout = Duration::from_secs(ctx.env.plan.vm.boot_timeout_secs);
    Ok(o)
}

/// The test's domain is no longer the build's to remove once the test removed it.
fn forget_if_gone(ctx: &mut BuildContext, name: String) {
    if !ctx.libvirt.as_ref().is_some_and(|l| l.exists(&name)) {
        ctx.forget(&Resource::Domain {
            uri: ctx.env.plan.vm.uri.clone(),
            name,
        });
    }
}

/// The boot test ended: its evidence into the output (and NAME.failed when the build fails),
/// the verdict, and a pass into the stage cache.
fn finished(
    ctx: &mut BuildContext,
    result: Result<crate::boottest::Report, crate::boottest::TestError>,
    slot: Option<cached::Slot>,
    dir: &std::path::Path,
    booted: &Booted,
) -> anyhow::Result<()> {
    for log in ["test-console.log", crate::boottest::FIRST_CONSOLE] {
        std::fs::copy(dir.join(log), ctx.env.out.join(log)).ok();
    }
    let report = result?;
    write_results(ctx, &report, booted)?;
    for c in &report.checks {
        match (c.ok, c.warning) {
            (true, false) => tracing::info!("boot test: ok: {}", c.name),
            (true, true) => tracing::warn!("boot test: {}: {}", c.name, c.detail),
            (false, _) => tracing::error!("boot test: FAILED: {}: {}", c.name, c.detail),
        }
    }
    let failed: Vec<String> = report
        .failed()
        .iter()
        .map(|c| format!("{} ({})", c.name, c.detail))
        .collect();
    if !failed.is_empty() {
        bail!(
            "the boot test of {} failed: {}; nothing is published (test-console.log and test-results.xml are kept)",
            ctx.env.plan.slug(),
            failed.join("; ")
        );
    }
    tracing::info!(
        "boot test passed: {} checks, on the disk every output was compared with",
        report.checks.len()
    );
    if let Some(slot) = slot {
        let console = dir.join("cached-test-console.log");
        match std::fs::copy(dir.join("test-console.log"), &console) {
            Ok(_) => {
                ctx.cache_commit(slot, &[(console, "test-console.log")], &report);
            }
            Err(e) => tracing::warn!("stage cache: the boot test result was not stored ({e})"),
        }
    }
    Ok(())
}

/// test-results.xml, and the report in the manifest with what it vouches for: the disk booted
/// and the outputs `qemu-img compare` proved identical to it.
fn write_results(
    ctx: &mut BuildContext,
    report: &crate::boottest::Report,
    booted: &Booted,
) -> anyhow::Result<()> {
    std::fs::write(
        ctx.env.out.join("test-results.xml"),
        crate::boottest::junit_xml(&ctx.env.plan.slug(), report),
    )
    .context("writing test-results.xml")?;
    let mut value = serde_json::to_value(report)?;
    let same: Vec<serde_json::Value> = ctx
        .made
        .outputs
        .iter()
        .filter(|o| o.compared)
        .map(|o| serde_json::json!({ "path": o.path, "sha256": o.sha256 }))
        .collect();
    value["booted"] = serde_json::json!({
        "disk": "the build disk after the libguestfs stage",
        "identity": booted.identity,
        "identical_outputs": same,
    });
    ctx.made.test_report = Some(value);
    Ok(())
}

/// The boot test reused: its evidence into the output, as if it had run.
fn passed_before(
    ctx: &mut BuildContext,
    e: &crate::stagecache::Entry,
    report: crate::boottest::Report,
    booted: &Booted,
) -> anyhow::Result<()> {
    std::fs::copy(
        e.file("test-console.log"),
        ctx.env.out.join("test-console.log"),
    )
    .ok();
    write_results(ctx, &report, booted)?;
    tracing::info!(
        "boot test: passed before on these disk bytes ({} checks; cache entry {})",
        report.checks.len(),
        e.meta.key.short()
    );
    Ok(())
}

/// The booted disk as a link of the chain: the libguestfs unit's key, the identity of its
/// disk and its entry. None when it is not cached: then neither is its boot test, which would
/// otherwise outlive the disk it vouches for.
fn booted_link(ctx: &BuildContext) -> Option<ChainLink> {
    let link = ctx.cache.chain.clone()?;
    let entry = link.entry.as_ref()?;
    ctx.cache.store.as_ref()?.has(entry).then_some(link)
}

impl Describe for TestStage {
    fn describe(&self, v: &PlanView) -> Option<Described> {
        let plan = v.plan;
        let Some(checks) = &plan.test else {
            return Some(Described {
                inputs: serde_json::json!({ "test": false }),
                commands: vec!["nothing: test: false".into()],
            });
        };
        let mut commands = vec![
            "qemu-img create -f qcow2 -b DISK (a throwaway overlay of the build disk after sysprep, 1 GiB larger), booted beside the conversions"
                .to_string(),
            "ssh-keygen -t ed25519 (the test user's key); xorriso: a NoCloud seed with a new instance-id and hostname".into(),
            "libvirt: boot the overlay, qemu user networking with guest port 22 on 127.0.0.1".into(),
            "ssh, one session from the moment sshd's banner answers: cloud-init status --wait".into(),
        ];
        for b in crate::boottest::builtin_checks() {
            commands.push(format!("ssh: {} ({})", b.command(), b.name()));
        }
        for c in checks {
            commands.push(format!("ssh: {} ({})", c.command(), c.name()));
        }
        Some(Described {
            inputs: serde_json::json!({ "checks": checks }),
            commands,
        })
    }
}
