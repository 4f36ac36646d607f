//! What `kiln plan` shows for a stage: its inputs and the commands it would run, from the
//! builders the stage runs with. Every stage implements [`Describe`]; `stages::all()` is the
//! one list both the build and the plan go through.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::plan::{Plan, SourcePlan};

/// A plan seen from a build that would start now: the paths the stages would use.
pub struct PlanView<'a> {
    pub plan: &'a Plan,
    pub tunables: &'a crate::tunables::Tunables,
    pub cache: PathBuf,
    pub work: PathBuf,
    /// The staged output directory.
    pub out: PathBuf,
    /// Where it is renamed to in the catalog.
    pub final_dir: PathBuf,
}

impl<'a> PlanView<'a> {
    pub fn new(
        plan: &'a Plan,
        tunables: &'a crate::tunables::Tunables,
        out_root: &Path,
        cache: &Path,
    ) -> Self {
        let (_, work, out, final_dir) = super::context::build_paths(
            out_root,
            &plan.slug(),
            "PID",
            &plan.vm.uri,
            &tunables.vm_dir,
        );
        PlanView {
            plan,
            tunables,
            cache: cache.to_path_buf(),
            work,
            out,
            final_dir,
        }
    }

    /// The build disk (the overlay over the base).
    pub fn disk(&self) -> PathBuf {
        self.work.join("disk.qcow2")
    }

    /// Whether the build VM boots (there are provisioning steps).
    pub fn booted(&self) -> bool {
        !self.plan.provision.is_empty()
    }

    /// The base disk the source (or install) stage will hand on, and its format when known
    /// before the build (an image's is probed).
    pub fn base(&self) -> (PathBuf, Option<String>) {
        match &self.plan.source {
            SourcePlan::Installer(_) => (self.work.join("install.qcow2"), Some("qcow2".into())),
            SourcePlan::Bootstrap(b) => (
                crate::bootstrap::cached_disk(&self.cache, b),
                Some("qcow2".into()),
            ),
            SourcePlan::Image(crate::plan::ImagePlan { file, format }) => {
                let base = crate::fetch::planned_path(
                    &self.cache,
                    file.path.as_deref(),
                    file.checksum.as_ref(),
                )
                .unwrap_or_else(|| self.cache.join("images/<checksum from the sums file>"));
                (base, format.clone())
            }
        }
    }
}

/// A stage's part of the plan.
#[derive(Debug, Serialize)]
pub struct Described {
    pub inputs: serde_json::Value,
    pub commands: Vec<String>,
}

pub trait Describe {
    /// What the stage would do for `v`; None when it does not apply to this plan.
    fn describe(&self, v: &PlanView) -> Option<Described>;
}
