//! What `kiln plan` lists for each stage: the same builders the stages run with.

use std::path::Path;

use super::*;

/// One stage of the plan: its inputs and the external commands it will run.
#[derive(serde::Serialize)]
pub(super) struct PlannedStage {
    pub name: &'static str,
    pub inputs: serde_json::Value,
    pub commands: Vec<String>,
}

pub(super) fn planned_stages(plan: &Plan, out_root: &Path, cache: &Path) -> Vec<PlannedStage> {
    let view = crate::pipeline::describe::PlanView::new(plan, out_root, cache);
    crate::stages::all()
        .iter()
        .filter_map(|s| {
            s.describe(&view).map(|d| PlannedStage {
                name: s.name(),
                inputs: d.inputs,
                commands: d.commands,
            })
        })
        .collect()
}
