//! Source stage: what the build starts from — a base disk (a cached, verified image; a package
//! bootstrap) or, for installer sources, the installer's media. One module per source kind,
//! each implementing `Kind` for its plan type; this file holds what every base disk goes
//! through (inspection, the refusal of backing files, the chain's first key).

mod bootstrap;
mod download;
mod image;
mod installer;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

use crate::pipeline::cached::ChainLink;
use crate::pipeline::context::{BaseDisk, BuildContext, InstallMedia};
use crate::pipeline::describe::{Describe, Described, PlanView};
use crate::pipeline::{Outcome, Stage};
use crate::plan::SourcePlan;

pub use download::{lookup_checksum, verify_file};

/// One source kind: what the source stage obtains for it and what `kiln plan` says it will do.
trait Kind {
    fn obtain(&self, ctx: &mut BuildContext) -> anyhow::Result<Obtained>;
    fn planned(&self, cache: &Path) -> Vec<String>;
}

/// What a source kind hands the stage.
enum Obtained {
    /// A disk to build on, and the format the recipe declares for it (checked).
    Base {
        path: PathBuf,
        declared_format: Option<String>,
    },
    /// Installer media: the install stage makes the base disk from them.
    Media(InstallMedia),
}

/// The one place a plan's source becomes its kind.
fn kind(source: &SourcePlan) -> &dyn Kind {
    match source {
        SourcePlan::Image(i) => i,
        SourcePlan::Bootstrap(b) => b,
        SourcePlan::Installer(i) => i.as_ref(),
    }
}

/// Reads the plan only; sets `made.base`, or `made.install_media` for installer sources.
pub struct SourceStage;

impl Stage<BuildContext> for SourceStage {
    fn name(&self) -> &'static str {
        "source"
    }

    fn run(&mut self, ctx: &mut BuildContext) -> anyhow::Result<()> {
        let source = ctx.env.plan.source.clone();
        match kind(&source).obtain(ctx)? {
            Obtained::Media(media) => {
                ctx.made.install_media = Some(media);
                Ok(())
            }
            Obtained::Base {
                path,
                declared_format,
            } => {
                let base = inspect_base(ctx, &path, declared_format.as_deref())?;
                start_chain(ctx, &source, &base.path)?;
                ctx.made.base = Some(base);
                Ok(())
            }
        }
    }

    fn cleanup(&mut self, ctx: &mut BuildContext, outcome: Outcome) -> anyhow::Result<()> {
        // Only partial downloads / bootstrap scratch are recorded; the cache stays.
        let keep = ctx.env.keep_on_error;
        ctx.env.keep_on_error = false;
        let r = ctx.release(self.name(), outcome);
        ctx.env.keep_on_error = keep;
        r
    }
}

/// The base disk as qemu-img sees it: refused when it has a backing file or is not the format
/// the recipe declares.
fn inspect_base(
    ctx: &BuildContext,
    path: &Path,
    declared_format: Option<&str>,
) -> anyhow::Result<BaseDisk> {
    let path =
        std::fs::canonicalize(path).with_context(|| format!("resolving {}", path.display()))?;
    // A backing file (or a json: filename) can name any file on the host, which would end
    // up inside the published image: sources must stand alone (no backing file is allowed).
    let info = crate::imagefile::check(&path, None, &[], &ctx.env.cancel).with_context(|| {
        format!(
            "inspecting base disk {} (a source must stand alone: flatten one with a backing file first, qemu-img convert)",
            path.display()
        )
    })?;
    if let Some(f) = declared_format {
        if f != info.format {
            bail!(
                "the recipe says the image is {f}, but qemu-img says {} ({})",
                info.format,
                path.display()
            );
        }
    }
    // Only someone else's image can be for another architecture than the recipe's (kiln
    // bootstraps and installs the recipe's).
    let image = crate::imagefile::standalone(&path, &info.format, info.virtual_size);
    let made_elsewhere = ctx.env.plan.source.made_elsewhere();
    let want = ctx.env.plan.vm.arch;
    if let Some(arch) = made_elsewhere
        .then(|| crate::inspect::image_arch(&image))
        .flatten()
    {
        if arch != want.as_str() {
            return Err(crate::plan::InputMismatch(format!(
                "{} holds an {arch} system; this recipe's `arch` is {want}: it is not booted",
                path.display(),
            ))
            .into());
        }
    }
    tracing::info!(
        "base disk {} ({}, {} virtual)",
        path.display(),
        info.format,
        crate::progress::human_bytes(info.virtual_size)
    );
    Ok(BaseDisk {
        path,
        format: info.format,
        virtual_size: info.virtual_size,
    })
}

/// The chain starts with the base disk: its key (what another machine can compute before it
/// has the disk, under which the disk is shared) and its identity (its bytes, which what is
/// made on it records).
fn start_chain(ctx: &mut BuildContext, source: &SourcePlan, path: &Path) -> anyhow::Result<()> {
    let identify = || -> std::io::Result<Option<ChainLink>> {
        let (plan, cache) = (&ctx.env.plan, &ctx.env.cache_dir);
        let Some(key) = crate::stagecache::base_key(plan, path, cache)? else {
            return Ok(None);
        };
        let identity = crate::stagecache::base_identity(plan, path, cache)?.unwrap_or(key.clone());
        Ok(Some(ChainLink {
            key,
            identity,
            entry: None,
        }))
    };
    ctx.cache.chain = identify()
        .with_context(|| format!("identifying {} for the stage cache", path.display()))?;
    if let Some(link) = ctx.cache.chain.clone() {
        ctx.note_cache("source", &link.key, false);
        if source.base_worth_sharing() {
            ctx.share_base(&link.key, path);
        }
    }
    Ok(())
}

impl Describe for SourceStage {
    fn describe(&self, v: &PlanView) -> Option<Described> {
        Some(Described {
            inputs: serde_json::to_value(&v.plan.source).unwrap_or_default(),
            commands: kind(&v.plan.source).planned(&v.cache),
        })
    }
}
