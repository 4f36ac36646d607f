//! Test stage: boot the converted image like a new cloud instance and check it (the
//! `boottest` module) before anything is published. A failed check fails the build: nothing
//! is published and the previous output stays.

use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::pipeline::cached::{self, ChainLink, Lookup};
use crate::pipeline::context::{BuildContext, Resource};
use crate::pipeline::describe::{Describe, Described, PlanView};
use crate::pipeline::{Outcome, Stage};

/// Reads `made.outputs`, `made.output_keys`; sets `made.test_report` (the build fails when a check
/// fails).
pub struct TestStage;

impl Stage<BuildContext> for TestStage {
    fn name(&self) -> &'static str {
        "test"
    }

    fn run(&mut self, ctx: &mut BuildContext) -> anyhow::Result<()> {
        let Some(checks) = ctx.env.plan.test.clone() else {
            tracing::info!("boot test off (test: false or --no-test)");
            return Ok(());
        };
        let slug = ctx.env.plan.slug();
        let Some(out) = crate::stagecache::boot_test_output(&ctx.env.plan.outputs)
            .map(|i| ctx.env.plan.outputs[i].file_name(&slug))
            .and_then(|name| ctx.made.outputs.iter().find(|o| o.path == name))
            .cloned()
        else {
            tracing::info!("no output to boot: no boot test");
            return Ok(());
        };
        let image = ctx.env.out.join(&out.path);
        // The stage cache: the same image bytes (the output's SHA-256) and the same checks
        // pass again without a boot. Only passing results are stored, in this machine's
        // cache only, depending on the output's entry (which goes when the image is re-made).
        let booted = booted_link(ctx, &out.sha256);
        let key = booted
            .as_ref()
            .and_then(|b| crate::stagecache::test_key(&ctx.env.plan, &b.key));
        let found = ctx.cache_lookup::<crate::boottest::Report>(
            cached::TEST,
            key,
            booted.as_ref(),
            &|_, _| true,
        )?;
        let slot = match found {
            Lookup::Hit(e, report) => return passed_before(ctx, &e, report, &out.path),
            Lookup::Miss(slot) => slot,
        };
        let info = crate::qemu_img::info_as(&image, Some(&out.format), &ctx.env.cancel)?;
        let engine = ctx.engine()?;
        let dir = ctx.env.work.join("test");
        std::fs::create_dir_all(&dir)?;
        ctx.record(Resource::Dir(dir.clone()));
        let reachable = if ctx.env.vm_user.is_other() {
            let r = crate::libvirt::vmuser::reachable(&image, &dir, ctx.env.vm_user)
                .with_context(|| format!("giving the test VM access to {}", image.display()))?;
            ctx.record(Resource::File(r.clone()));
            r
        } else {
            image.clone()
        };
        let mut o = crate::boottest::Options::new(
            reachable,
            &info,
            dir.clone(),
            crate::seed::machine(&ctx.env.plan, engine),
            ctx.env.vm_user,
            Duration::from_secs(ctx.env.plan.vm.timeout_secs),
            checks,
            format!("kiln-test-{}", ctx.env.plan.name),
        );
        // The build VM's host keys (read from the provisioned disk): the image must not come
        // up with them.
        o.build_host_keys = ctx.made.build_host_keys.clone();
        ctx.libvirt()?;
        let lv = ctx.libvirt.as_ref().context("no libvirt connection")?;
        let uri = ctx.env.plan.vm.uri.clone();
        let register = &mut ctx.register;
        let mut domains = Vec::new();
        let result = crate::boottest::run(&o, lv, &ctx.env.cancel, &mut |name| {
            // Recorded the moment it exists (for cleanup if the run itself cannot remove it).
            domains.push(name.to_string());
            register.record(Resource::Domain {
                uri: uri.clone(),
                name: name.to_string(),
            });
        });
        for name in domains {
            if !ctx.libvirt.as_ref().is_some_and(|l| l.exists(&name)) {
                ctx.forget(&Resource::Domain {
                    uri: uri.clone(),
                    name,
                });
            }
        }
        // The evidence goes into the output (and into NAME.failed when the build fails).
        std::fs::copy(
            dir.join("test-console.log"),
            ctx.env.out.join("test-console.log"),
        )
        .ok();
        let report = result?;
        std::fs::write(
            ctx.env.out.join("test-results.xml"),
            crate::boottest::junit_xml(&ctx.env.plan.slug(), &report),
        )
        .context("writing test-results.xml")?;
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
        ctx.made.test_report = Some(serde_json::to_value(&report).expect("JSON"));
        if !failed.is_empty() {
            bail!(
                "the boot test of {} failed: {}; nothing is published (test-console.log and test-results.xml are kept)",
                out.path,
                failed.join("; ")
            );
        }
        tracing::info!(
            "boot test of {} passed: {} checks",
            out.path,
            report.checks.len()
        );
        if let Some(slot) = slot {
            let console = dir.join("cached-test-console.log");
            match std::fs::copy(dir.join("test-console.log"), &console) {
                Ok(_) => {
                    ctx.cache_commit(slot, &[(console, "test-console.log")], &report);
                }
                Err(e) => {
                    tracing::warn!("stage cache: the boot test result was not stored ({e})")
                }
            }
        }
        Ok(())
    }

    fn cleanup(&mut self, ctx: &mut BuildContext, outcome: Outcome) -> anyhow::Result<()> {
        ctx.release(self.name(), outcome)
    }
}

/// The boot test reused: its evidence into the output, as if it had run.
fn passed_before(
    ctx: &mut BuildContext,
    e: &crate::stagecache::Entry,
    report: crate::boottest::Report,
    booted: &str,
) -> anyhow::Result<()> {
    std::fs::copy(
        e.file("test-console.log"),
        ctx.env.out.join("test-console.log"),
    )
    .ok();
    std::fs::write(
        ctx.env.out.join("test-results.xml"),
        crate::boottest::junit_xml(&ctx.env.plan.slug(), &report),
    )
    .context("writing test-results.xml")?;
    tracing::info!(
        "boot test of {booted}: passed before on these image bytes ({} checks; cache entry {})",
        report.checks.len(),
        e.meta.key.short()
    );
    ctx.made.test_report = Some(serde_json::to_value(&report)?);
    Ok(())
}

/// The booted output as a link of the chain: its key (its options), its bytes (`sha256`) and
/// its entry. None when it is not cached: then neither is its boot test, which would otherwise
/// outlive the image it vouches for.
fn booted_link(ctx: &BuildContext, sha256: &str) -> Option<ChainLink> {
    let i = crate::stagecache::boot_test_output(&ctx.env.plan.outputs)?;
    let key = ctx.made.output_keys.get(i)?.clone()?;
    ctx.cache.store.as_ref()?.has(&key).then(|| ChainLink {
        identity: crate::stagecache::output_identity(sha256),
        entry: Some(key.clone()),
        key,
    })
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
            "qemu-img create -f qcow2 -b OUTPUT (a throwaway overlay 1 GiB larger than the image)"
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
