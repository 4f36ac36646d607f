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
    /// A stage whose work goes on in the background after `run` returns (the boot test beside
    /// the conversions) names the stage that must not start before that work is done. The
    /// runner then calls [`Stage::finish`] before that stage, or after the last stage run.
    fn finished_before(&self) -> Option<&'static str> {
        None
    }
    /// Wait for the background work and take its result (a failure fails the build).
    fn finish(&mut self, _ctx: &mut C) -> anyhow::Result<()> {
        Ok(())
    }
    /// Undo or release what `run` created. Called for every stage that started, in reverse
    /// order, whatever the outcome; must tolerate a partial `run` (and stop background work
    /// that was never finished).
    fn cleanup(&mut self, ctx: &mut C, outcome: Outcome) -> anyhow::Result<()>;
}

pub struct Report {
    pub outcome: Outcome,
    pub error: Option<anyhow::Error>,
    /// Cleanup problems (logged; they do not hide the build's own error).
    pub cleanup_errors: Vec<anyhow::Error>,
}

type Stages<'a, C> = [Box<dyn Stage<C> + 'a>];

/// A stage that runs on in the background: its index and when its `run` began.
struct Pending {
    index: usize,
    began: Instant,
}

/// Run `stages` over `ctx`.
pub fn run<C: Records>(stages: &mut Stages<'_, C>, ctx: &mut C, cancel: &Cancel) -> Report {
    ctx.records().clear();
    ctx.records().extend(stages.iter().map(|s| StageRecord {
        name: s.name().to_string(),
        status: StageStatus::Skipped,
        seconds: 0.0,
        started: 0.0,
        key: None,
        reused: false,
    }));
    let origin = Instant::now();
    let mut started = 0;
    let mut pending: Vec<Pending> = Vec::new();
    let mut ended = Ok(());
    for i in 0..stages.len() {
        if cancel.is_cancelled() {
            ended = Err(Ended::Cancelled);
            break;
        }
        let next = stages[i].name();
        ended = finish_pending(stages, ctx, &mut pending, Some(next), cancel);
        if ended.is_err() {
            break;
        }
        started = i + 1;
        ended = run_one(stages, i, ctx, origin, &mut pending, cancel);
        if ended.is_err() {
            break;
        }
        if ctx.stop_after(next) {
            tracing::info!("stopping after stage {next} (--until)");
            break;
        }
    }
    if ended.is_ok() {
        ended = finish_pending(stages, ctx, &mut pending, None, cancel);
    }
    // Background work never finished was stopped by its stage's cleanup.
    for p in &pending {
        ctx.records()[p.index].status = StageStatus::Cancelled;
    }
    let (outcome, error) = match ended {
        Ok(()) => {
            if cancel.is_cancelled() {
                // Cancelled between the last stage and here: the build did finish.
                tracing::info!("interrupt arrived after the last stage; the build is complete");
            }
            (Outcome::Success, None)
        }
        Err(Ended::Cancelled) => (Outcome::Cancelled, None),
        Err(Ended::Failed(e)) => (Outcome::Failed, Some(e)),
    };
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

/// Why the stages stopped early.
enum Ended {
    Cancelled,
    Failed(anyhow::Error),
}

/// Run stage `i`; one that goes on in the background joins `pending`.
fn run_one<C: Records>(
    stages: &mut Stages<'_, C>,
    i: usize,
    ctx: &mut C,
    origin: Instant,
    pending: &mut Vec<Pending>,
    cancel: &Cancel,
) -> Result<(), Ended> {
    let stage = &mut stages[i];
    let name = stage.name();
    tracing::info!("stage {name}: starting");
    ctx.enter(name);
    let began = Instant::now();
    ctx.records()[i].started = tenths(began - origin);
    let result = stage.run(ctx);
    let background = result.is_ok() && stage.finished_before().is_some();
    if background {
        ctx.records()[i].status = StageStatus::Running;
        tracing::info!("stage {name}: going on in the background");
        pending.push(Pending { index: i, began });
        ctx.finished();
        return Ok(());
    }
    ended(ctx, i, name, began, result, cancel)
}

/// Finish the background stages due before the stage `next` (all of them with None).
fn finish_pending<C: Records>(
    stages: &mut Stages<'_, C>,
    ctx: &mut C,
    pending: &mut Vec<Pending>,
    next: Option<&str>,
    cancel: &Cancel,
) -> Result<(), Ended> {
    while let Some(at) = pending
        .iter()
        .position(|p| next.is_none() || stages[p.index].finished_before() == next)
    {
        let p = pending.remove(at);
        let stage = &mut stages[p.index];
        let name = stage.name();
        tracing::info!("stage {name}: waiting for it to finish");
        ctx.enter(name);
        let result = stage.finish(ctx);
        ended(ctx, p.index, name, p.began, result, cancel)?;
    }
    Ok(())
}

/// Record how stage `i` (begun at `began`) ended.
fn ended<C: Records>(
    ctx: &mut C,
    i: usize,
    name: &str,
    began: Instant,
    result: anyhow::Result<()>,
    cancel: &Cancel,
) -> Result<(), Ended> {
    let secs = began.elapsed().as_secs_f64();
    let rec = &mut ctx.records()[i];
    rec.seconds = tenths(began.elapsed());
    let outcome = match result {
        Ok(()) => {
            rec.status = StageStatus::Ok;
            tracing::info!("stage {name}: done in {secs:.1} s");
            Ok(())
        }
        Err(_) if cancel.is_cancelled() => {
            rec.status = StageStatus::Cancelled;
            tracing::warn!("stage {name}: interrupted after {secs:.1} s");
            Err(Ended::Cancelled)
        }
        Err(e) => {
            rec.status = StageStatus::Failed;
            // The real error first, before the cleanup's own messages.
            tracing::error!("stage {name}: failed after {secs:.1} s: {e:#}");
            Err(Ended::Failed(e.context(format!("stage {name} failed"))))
        }
    };
    ctx.finished();
    outcome
}

fn tenths(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests;
