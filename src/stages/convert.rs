//! Convert stage: the build disk (overlay + base, flattened) to every output, concurrently,
//! verified and hashed (see `crate::convert`), plus `SHA256SUMS`.

use anyhow::{bail, Context as _};

use crate::convert::{self, Job};
use crate::pipeline::cached::{self, Lookup};
use crate::pipeline::context::BuildContext;
use crate::pipeline::describe::{Describe, Described, PlanView};
use crate::pipeline::{Outcome, Stage};
use crate::stagecache::Key;

/// Reads `made.disk`, `made.inventory`; sets `made.outputs`, `output_keys`, `source_disk`,
/// `inventory_summary` (and writes SHA256SUMS and the SBOM).
pub struct ConvertStage;

impl Stage<BuildContext> for ConvertStage {
    fn name(&self) -> &'static str {
        "convert"
    }

    fn run(&mut self, ctx: &mut BuildContext) -> anyhow::Result<()> {
        let disk = ctx.made.disk.clone().context("no build disk")?;
        std::fs::create_dir_all(&ctx.env.out)?;
        let slug = ctx.env.plan.slug();
        let source = convert::source_sizes(&disk, &ctx.env.cancel)?;
        tracing::info!(
            "source disk: {} virtual, {} allocated (with its base)",
            crate::progress::human_bytes(source.virtual_size),
            crate::progress::human_bytes(source.allocated_size)
        );
        ctx.made.source_disk = Some(source);
        // The stage cache, per output: an output whose key is there is linked in (cached
        // files are read-only), the others are converted.
        let keys: Vec<Option<Key>> = ctx
            .env
            .plan
            .outputs
            .iter()
            .map(|o| {
                ctx.cache.chain.as_ref().map(|prev| {
                    crate::stagecache::output_key(
                        &prev.key,
                        o,
                        ctx.env.tunables.vmdk_writer,
                        crate::hosttools::HostTools::here(),
                    )
                })
            })
            .collect();
        let prev = ctx.cache.chain.clone();
        let mut done: Vec<Option<convert::Converted>> = vec![None; keys.len()];
        let mut slots = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let name = ctx.env.plan.outputs[i].file_name(&slug);
            let unchanged =
                |ctx: &BuildContext, e: &crate::stagecache::Entry| unchanged(ctx, e, &name);
            match ctx.cache_lookup::<CachedOutput>(
                cached::OUTPUT,
                k.clone(),
                prev.as_ref(),
                &unchanged,
            )? {
                Lookup::Hit(e, mut c) => {
                    let dst = ctx.env.out.join(&name);
                    let _ = std::fs::remove_file(&dst);
                    if std::fs::hard_link(e.file("output"), &dst).is_err() {
                        std::fs::copy(e.file("output"), &dst)?;
                    }
                    c.converted.path = name;
                    tracing::info!("{}: reused from the stage cache", c.converted.path);
                    done[i] = Some(c.converted);
                    slots.push(None);
                }
                Lookup::Miss(slot) => slots.push(slot),
            }
        }
        let todo: Vec<usize> = (0..keys.len()).filter(|i| done[*i].is_none()).collect();
        if !todo.is_empty() {
            convert::check_source(&disk, "qcow2", &ctx.env.cancel)?;
        }
        let jobs: Vec<Job> = todo
            .iter()
            .map(|&i| {
                let o = &ctx.env.plan.outputs[i];
                Job {
                    src: disk.clone(),
                    src_format: "qcow2".into(),
                    out: o.clone(),
                    dst: ctx.env.out.join(o.file_name(&slug)),
                    writer: ctx.env.tunables.vmdk_writer,
                }
            })
            .collect();
        // Beside the boot test, on the cycles its VM leaves: it boots for longer than the
        // conversions take, and on a machine with few cores both at full priority only slow
        // the boot down (measured on 2 cores: convert 10.7 -> 14.3 s, the boot 8-14 s slower).
        let yield_cpu = ctx.made.boot_test_running;
        let results = convert::convert_all(&jobs, ctx.env.jobs, yield_cpu, &ctx.env.cancel);
        let mut first_err = None;
        for (&i, r) in todo.iter().zip(results) {
            match r {
                Ok(c) => {
                    if let Some(slot) = slots[i].take() {
                        store_output(ctx, slot, &c);
                    }
                    done[i] = Some(c);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            bail!(e);
        }
        ctx.made.outputs = done.into_iter().flatten().collect();
        ctx.made.output_keys = keys.clone();
        // The stage's key: all outputs' keys; reused when none was converted.
        if let (Some(prev), false) = (ctx.cache.chain.clone(), keys.is_empty()) {
            let all: Vec<Key> = keys.iter().flatten().cloned().collect();
            let k = crate::stagecache::convert_key(&prev.key, &all);
            ctx.note_cache("convert", &k, todo.is_empty());
        }
        convert::write_sha256sums(&ctx.env.out, &ctx.made.outputs)
            .with_context(|| format!("writing {}/SHA256SUMS", ctx.env.out.display()))?;
        write_sbom(ctx)?;
        Ok(())
    }

    fn cleanup(&mut self, _ctx: &mut BuildContext, _outcome: Outcome) -> anyhow::Result<()> {
        // Outputs live in the staging directory, which the build removes unless published;
        // partial files are removed by the conversion itself.
        Ok(())
    }
}

/// One output as the stage cache keeps it: the manifest's record and the file's stamp.
#[derive(serde::Serialize, serde::Deserialize)]
struct CachedOutput {
    #[serde(flatten)]
    converted: convert::Converted,
    stamp: serde_json::Value,
}

/// The file is shared with catalogs by hard links: one changed in place since it was stored
/// (a later `kiln sysprep -a` on the output, say) is not reused, and goes.
fn unchanged(ctx: &BuildContext, e: &crate::stagecache::Entry, name: &str) -> bool {
    if crate::stagecache::file_stamp(&e.file("output")) == e.meta.data["stamp"] {
        return true;
    }
    tracing::warn!("{name}: the cached output changed since it was stored; converting again");
    if let Some(store) = &ctx.cache.store {
        let _ = store.remove(&e.meta.key);
    }
    false
}

/// Into the store as a read-only hard link (the catalog keeps its file), over the libguestfs
/// unit's entry.
fn store_output(ctx: &mut BuildContext, slot: cached::Slot, c: &convert::Converted) {
    use std::os::unix::fs::PermissionsExt;
    let out = ctx.env.out.join(&c.path);
    let link = ctx.env.work.join(format!(".cache-{}", c.path));
    let _ = std::fs::remove_file(&link);
    let linked = std::fs::hard_link(&out, &link)
        .or_else(|_| std::fs::copy(&out, &link).map(drop))
        .and_then(|()| std::fs::set_permissions(&link, std::fs::Permissions::from_mode(0o444)));
    if let Err(e) = linked {
        tracing::warn!("not stored in the stage cache: {}: {e}", c.path);
        let _ = std::fs::remove_file(&link);
        return;
    }
    let entry = CachedOutput {
        converted: c.clone(),
        stamp: crate::stagecache::file_stamp(&link),
    };
    if ctx
        .cache_commit(slot, &[(link.clone(), "output")], &entry)
        .is_none()
    {
        let _ = std::fs::remove_file(&link);
    }
}

impl Describe for ConvertStage {
    fn describe(&self, v: &PlanView) -> Option<Described> {
        let plan = v.plan;
        Some(Described {
            inputs: serde_json::to_value(&plan.outputs).unwrap_or_default(),
            commands: plan
                .outputs
                .iter()
                .flat_map(|o| {
                    convert::planned(&Job {
                        src: v.disk(),
                        src_format: "qcow2".into(),
                        out: o.clone(),
                        dst: v.out.join(o.file_name(&plan.slug())),
                        writer: v.tunables.vmdk_writer,
                    })
                })
                .chain([format!("write {}", v.out.join("SHA256SUMS").display())])
                .collect(),
        })
    }
}

/// NAME-VERSION.spdx.json beside the outputs, from the libguestfs stage's inventory; its
/// summary and digest go into manifest.json (and the digest onto the Glance images).
fn write_sbom(ctx: &mut BuildContext) -> anyhow::Result<()> {
    let Some(inv) = &ctx.made.inventory else {
        return Ok(());
    };
    let slug = ctx.env.plan.slug();
    let name = format!("{slug}.spdx.json");
    let suffix = hex::encode(crate::libvirt::console::rand_bytes());
    let mut doc = crate::inventory::spdx(
        &ctx.env.plan.name,
        &ctx.env.plan.version,
        inv,
        &crate::inventory::rfc3339(ctx.env.built_at),
        &format!("https://kiln.invalid/spdx/{slug}-{suffix}"),
        &format!("kiln-{}", env!("CARGO_PKG_VERSION")),
    );
    let files: Vec<crate::inventory::ImageFile> = ctx
        .made
        .outputs
        .iter()
        .map(|o| crate::inventory::ImageFile {
            name: &o.path,
            sha256: &o.sha256,
            sha512: &o.sha512,
        })
        .collect();
    crate::inventory::spdx_name_files(&mut doc, &files);
    // SPDX 2.3 has no field for the hardware: the image package's comment says it.
    let vm = &ctx.env.plan.vm;
    if let Some(image) = doc["packages"].get_mut(0) {
        let os = image["comment"].as_str().unwrap_or_default().to_string();
        image["comment"] = format!(
            "{os}; for {}, {} firmware{}",
            vm.arch,
            vm.firmware,
            if vm.tpm { ", TPM 2.0" } else { "" }
        )
        .into();
    }
    let bytes = serde_json::to_vec_pretty(&doc).expect("JSON");
    let path = ctx.env.out.join(&name);
    std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
    use sha2::Digest as _;
    ctx.made.inventory_summary = Some(serde_json::json!({
        "os": inv.os.get("PRETTY_NAME"),
        "os_id": inv.os.get("ID"),
        "os_version": inv.os.get("VERSION_ID"),
        "packages": inv.packages.len(),
        "package_format": inv.package_format,
        "services_enabled": inv.services,
        "kernels": inv.kernels,
        "sbom": name,
        "sbom_sha256": hex::encode(sha2::Sha256::digest(&bytes)),
    }));
    tracing::info!("SBOM: {name} ({} packages)", inv.packages.len());
    Ok(())
}
