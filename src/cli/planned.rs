//! What `kiln plan` lists for each stage: the same builders the stages run with.

use std::path::Path;

use super::*;

/// One stage of the plan: its inputs and the external commands it will run.
#[derive(serde::Serialize)]
pub(super) struct PlannedStage {
    pub name: &'static str,
    pub inputs: serde_json::Value,
    pub commands: Vec<String>,
    /// The stage cache: the key `build` would use and whether it is there (then the stage's
    /// result is reused and none of its commands runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<crate::stagecache::Planned>,
}

pub(super) fn planned_stages(
    plan: &Plan,
    out_root: &Path,
    cache: &Path,
    remote: Option<&crate::remotecache::Remote>,
) -> Vec<PlannedStage> {
    let tunables = super::tunables();
    let view = crate::pipeline::describe::PlanView::new(plan, tunables, out_root, cache);
    let keys = crate::stagecache::planned(plan, tunables, cache, remote);
    crate::stages::all()
        .iter()
        .filter_map(|s| {
            s.describe(&view).map(|d| PlannedStage {
                name: s.name(),
                inputs: d.inputs,
                commands: d.commands,
                cache: keys.get(s.name()).cloned(),
            })
        })
        .collect()
}
