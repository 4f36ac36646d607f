//! The stage runner, after Packer's multistep but typed: each stage has `run` and `cleanup`;
//! stages run in order until one fails or the build is cancelled, then every stage that
//! started is cleaned up in reverse order, the failed one included.

pub mod cached;
pub mod context;
pub mod describe;
mod protocol;
mod remote;

use std::time::Instant;

use crate::process::Cancel;

/// How the build ended, as seen by `cleanup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failed,
    Cancelled,
}

pub use crate::manifest::{StageRecord, StageStatus};

/// What the runner keeps in the context: each stage's record (status, seconds), and which
/// stage is running, so that resources are recorded under the stage that made them.
pub trait Records {
    fn records(&mut self) -> &mut Vec<StageRecord>;
    /// `stage` is about to run.
    fn enter(&mut self, _stage: &'static str) {}
    /// A stage ended; its record says how.
    fn finished(&mut self) {}
    /// Stop after `stage` (it succeeded) without running the rest: `--until`.
    fn stop_after(&self, _stage: &str) -> bool {
        false
    }
}

pub trait Stage<C> {
    fn name(&self) -> &'static str;
    fn run(&mut self, ctx: &mut C) -> anyhow::Result<()>;
    /// Undo or release what `run` created. Called for every stage that started, in reverse
    /// order, whatever the outcome; must tolerate a partial `run`.
    fn cleanup(&mut self, ctx: &mut C, outcome: Outcome) -> anyhow::Result<()>;
}

pub struct Report {
    pub outcome: Outcome,
    pub error: Option<anyhow::Error>,
    /// Cleanup problems (logged; they do not hide the build's own error).
    pub cleanup_errors: Vec<anyhow::Error>,
}

/// Run `stages` over `ctx`.
pub fn run<C: Records>(
    stages: &mut [Box<dyn Stage<C> + '_>],
    ctx: &mut C,
    cancel: &Cancel,
) -> Report {
    ctx.records().clear();
    ctx.records().extend(stages.iter().map(|s| StageRecord {
        name: s.name().to_string(),
        status: StageStatus::Skipped,
        seconds: 0.0,
        key: None,
        reused: false,
    }));
    let mut started = 0;
    let mut error = None;
    let mut outcome = Outcome::Success;
    for (i, stage) in stages.iter_mut().enumerate() {
        if cancel.is_cancelled() {
            outcome = Outcome::Cancelled;
            break;
        }
        tracing::info!("stage {}: starting", stage.name());
        started = i + 1;
        ctx.enter(stage.name());
        let t = Instant::now();
        let result = stage.run(ctx);
        let secs = t.elapsed().as_secs_f64();
        let rec = &mut ctx.records()[i];
        rec.seconds = (secs * 10.0).round() / 10.0;
        let stop = match result {
            Ok(()) => {
                rec.status = StageStatus::Ok;
                tracing::info!("stage {}: done in {:.1} s", stage.name(), secs);
                false
            }
            Err(e) => {
                if cancel.is_cancelled() {
                    rec.status = StageStatus::Cancelled;
                    outcome = Outcome::Cancelled;
                    tracing::warn!("stage {}: interrupted after {:.1} s", stage.name(), secs);
                } else {
                    rec.status = StageStatus::Failed;
                    outcome = Outcome::Failed;
                    // The real error first, before the cleanup's own messages.
                    tracing::error!("stage {}: failed after {:.1} s: {e:#}", stage.name(), secs);
                    error = Some(e.context(format!("stage {} failed", stage.name())));
                }
                true
            }
        };
        ctx.finished();
        if stop {
            break;
        }
        if ctx.stop_after(stage.name()) {
            tracing::info!("stopping after stage {} (--until)", stage.name());
            break;
        }
    }
    if outcome == Outcome::Success && cancel.is_cancelled() {
        // Cancelled between the last stage and here: the build did finish.
        tracing::info!("interrupt arrived after the last stage; the build is complete");
    }
    let mut cleanup_errors = Vec::new();
    for stage in stages[..started].iter_mut().rev() {
        if let Err(e) = stage.cleanup(ctx, outcome) {
            tracing::warn!("cleanup of stage {}: {e:#}", stage.name());
            cleanup_errors.push(e.context(format!("cleaning up stage {}", stage.name())));
        }
    }
    Report {
        outcome,
        error,
        cleanup_errors,
    }
}

#[cfg(test)]
mod tests;
