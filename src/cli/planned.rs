//! What `kiln plan` lists for each stage: the same builders the stages run with.

use std::path::{Path, PathBuf};

use super::*;

/// One stage of the plan: its inputs and the external commands it will run.
#[derive(serde::Serialize)]
pub(super) struct PlannedStage {
    pub name: &'static str,
    pub inputs: serde_json::Value,
    pub commands: Vec<String>,
}

pub(super) fn planned_stages(plan: &Plan, out_root: &Path, cache: &Path) -> Vec<PlannedStage> {
    let (_, work, out, final_dir) =
        crate::pipeline::context::build_paths(out_root, &plan.slug(), "PID");
    let work = work.as_path();
    use crate::bootstrap;
    use crate::stages::source;
    let disk = work.join("disk.qcow2");
    let mut stages = Vec::new();
    let mut install = None;
    // (commands, base disk path, its format if known now)
    let (source_cmds, base, base_format) = match &plan.source {
        SourcePlan::Installer(inst) => {
            let dir = work.join("install");
            let mut cmds = Vec::new();
            let mut icmds = Vec::new();
            if inst.mirror_check && inst.kind == crate::recipe::model::AnswerKind::Preseed {
                icmds.push(format!(
                    "mirror check: GET {} and HEAD 8 of the udebs it names",
                    crate::installer::udeb_index_url(&inst.answers.mirror, &inst.answers.suite)
                ));
            }
            let (kernel, initrd) = match &inst.media {
                crate::plan::Media::Iso {
                    iso,
                    kernel_paths,
                    initrd_paths,
                } => {
                    cmds.push(source::planned_fetch("ISO", cache, iso));
                    let iso_path = PathBuf::from("<iso>");
                    icmds.push(format!(
                        "{}  (first of: {})",
                        process::display(&crate::installer::xorriso_extract_argv(
                            &iso_path,
                            &kernel_paths[0],
                            &dir.join("vmlinuz")
                        )),
                        kernel_paths.join(", ")
                    ));
                    icmds.push(format!(
                        "{}  (first of: {})",
                        process::display(&crate::installer::xorriso_extract_argv(
                            &iso_path,
                            &initrd_paths[0],
                            &dir.join("initrd.orig")
                        )),
                        initrd_paths.join(", ")
                    ));
                    (dir.join("vmlinuz"), dir.join("initrd.orig"))
                }
                crate::plan::Media::Netboot { kernel, initrd } => {
                    cmds.push(source::planned_fetch("kernel", cache, kernel));
                    cmds.push(source::planned_fetch("initrd", cache, initrd));
                    (PathBuf::from("<kernel>"), PathBuf::from("<initrd>"))
                }
            };
            match inst.delivery {
                crate::recipe::model::Delivery::Initrd => icmds.push(format!(
                    "append /{} (rendered {} answers) to {} as a cpio archive -> {}",
                    inst.answer_file_name(),
                    inst.kind.as_str(),
                    initrd.display(),
                    dir.join("initrd.img").display()
                )),
                crate::recipe::model::Delivery::Seed => {
                    let (label, files) = crate::installer::seed_files(inst, &plan.slug(), "");
                    let paths: Vec<PathBuf> = files
                        .iter()
                        .map(|(n, _)| dir.join("seed").join(n))
                        .collect();
                    icmds.push(format!(
                        "{} answers on a seed disk: {}",
                        inst.kind.as_str(),
                        process::display(&crate::installer::seed_iso_argv(
                            &dir.join("answers.iso"),
                            label,
                            &paths
                        ))
                    ))
                }
            }
            let base = work.join("install.qcow2");
            icmds.push(process::display(&crate::qemu_img::create_argv(
                &base,
                plan.vm.disk_bytes.unwrap_or(8 << 30),
            )));
            icmds.push(format!(
                "libvirt: boot {} + initrd with `{}`; wait up to {} s for the installer to power off; undefine (media detached)",
                kernel.display(),
                inst.cmdline,
                inst.timeout_secs
            ));
            install = Some((
                serde_json::json!({
                    "kind": inst.kind.as_str(), "delivery": inst.delivery,
                    "cmdline": inst.cmdline, "timeout_secs": inst.timeout_secs,
                    "mirror_check": inst.mirror_check,
                }),
                icmds,
            ));
            (cmds, base, Some("qcow2".to_string()))
        }
        SourcePlan::Bootstrap(b) => (
            bootstrap::planned(cache, b),
            bootstrap::cached_disk(cache, b),
            Some("qcow2".to_string()),
        ),
        SourcePlan::Image {
            url,
            path,
            checksum,
            checksum_url,
            format,
        } => {
            let f = crate::plan::FilePlan {
                url: url.clone(),
                path: path.clone(),
                checksum: checksum.clone(),
                checksum_url: checksum_url.clone(),
            };
            let base = match (checksum, path) {
                (Some(c), None) => source::cached_download(cache, c),
                (_, Some(p)) => p.clone(),
                (None, None) => cache.join("images/<checksum from the sums file>"),
            };
            (
                vec![source::planned_fetch("image", cache, &f)],
                base,
                format.clone(),
            )
        }
    };
    stages.push(PlannedStage {
        name: "source",
        inputs: serde_json::to_value(&plan.source).unwrap_or_default(),
        commands: source_cmds,
    });
    if let Some((inputs, commands)) = install {
        stages.push(PlannedStage {
            name: "install",
            inputs,
            commands,
        });
    }
    let size = plan.vm.disk_bytes;
    let mut provision = vec![format!(
        "{}  (size: the larger of vm.disk and the base's)",
        process::display(&crate::qemu_img::create_overlay_argv(
            &base,
            base_format.as_deref().unwrap_or("<probed>"),
            &disk,
            size,
        ))
    )];
    let booted = !plan.provision.is_empty();
    if !booted {
        provision.push("no provisioning steps: the build VM is not booted".into());
    } else {
        if matches!(plan.source, SourcePlan::Image { .. }) {
            provision.push(format!(
                "libguestfs (read-only) on {}: check for /usr/bin/cloud-init before booting (cached per image)",
                base.display()
            ));
        }
        let tctx = TemplateContext::new(plan, "kiln-NAME-XXXXXXXX", "qemu", work);
        let mut seed = vec![work.join("user-data"), work.join("meta-data")];
        if templates::render(plan, Kind::NetworkConfig, &tctx)
            .map(|t| !templates::is_blank(&t))
            .unwrap_or(false)
        {
            seed.push(work.join("network-config"));
        }
        provision.push(process::display(&crate::seed::xorriso_argv(
            &tctx.domain.seed_path,
            &seed,
        )));
        provision.push(format!(
            "libvirt {}: define domain.xml, start, wait for power-off (timeout {} s; ends early on a kernel panic, or {} s after cloud-init finished)",
            plan.vm.uri,
            plan.vm.timeout_secs,
            crate::libvirt::console::CLOUD_INIT_GRACE.as_secs()
        ));
    }
    stages.push(PlannedStage {
        name: "provision",
        inputs: serde_json::json!({
            "vm": plan.vm, "steps": plan.provision,
        }),
        commands: provision,
    });
    stages.push(PlannedStage {
        name: "cloud-init",
        inputs: serde_json::to_value(&plan.cloud_init).unwrap_or_default(),
        commands: vec![format!(
            "libguestfs on {}: {}check /usr/bin/cloud-init; write {}; remove /var/lib/cloud state",
            disk.display(),
            if booted {
                "check the provisioning status in /var/lib/kiln/status; "
            } else {
                ""
            },
            crate::stages::cloud_init::CONFIG_PATH
        )],
    });
    stages.push(PlannedStage {
        name: "sysprep",
        inputs: serde_json::json!({
            "operations": plan.sysprep,
            "options": plan.sysprep_options,
        }),
        commands: plan
            .sysprep_options
            .customize
            .iter()
            .map(|c| format!("customize: {c}"))
            .chain(std::iter::once(format!(
                "libguestfs (same launch): {}; fstrim",
                plan.sysprep.join(", ")
            )))
            .collect(),
    });
    stages.push(PlannedStage {
        name: "undefine",
        inputs: serde_json::json!({ "uri": plan.vm.uri }),
        commands: vec![if booted {
            "libvirt: destroy (if running) and undefine the build domain".into()
        } else {
            "nothing: no domain was defined".into()
        }],
    });
    stages.push(PlannedStage {
        name: "convert",
        inputs: serde_json::to_value(&plan.outputs).unwrap_or_default(),
        commands: plan
            .outputs
            .iter()
            .flat_map(|o| {
                crate::convert::planned(&crate::convert::Job {
                    src: disk.clone(),
                    src_format: "qcow2".into(),
                    out: o.clone(),
                    dst: out.join(o.file_name(&plan.slug())),
                })
            })
            .chain([format!("write {}", out.join("SHA256SUMS").display())])
            .collect(),
    });
    stages.push(PlannedStage {
        name: "publish",
        inputs: serde_json::json!({ "local_dir": plan.publish.local_dir }),
        commands: vec![format!(
            "write manifest.json; rename {} to {}",
            out.display(),
            final_dir.display()
        )],
    });
    if let Some(g) = &plan.publish.glance {
        stages.push(PlannedStage {
            name: "glance",
            inputs: serde_json::to_value(g).unwrap_or_default(),
            commands: g
                .formats
                .iter()
                .map(|f| {
                    let name = g.names.get(f).map(String::as_str).unwrap_or("?");
                    format!(
                        "glance ({}): {} {f} output as `{name}` ({}{}), verify SHA-512{}{}",
                        g.cloud.as_deref().unwrap_or("$OS_CLOUD"),
                        g.method.as_str(),
                        g.visibility,
                        if g.protected { ", protected" } else { "" },
                        if g.members.is_empty() {
                            String::new()
                        } else {
                            format!(", share with {}", g.members.join(", "))
                        },
                        g.keep
                            .map(|k| format!(", keep newest {k}"))
                            .unwrap_or_default()
                    )
                })
                .collect(),
        });
    }
    stages
}
