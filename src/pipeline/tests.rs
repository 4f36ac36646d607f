//! Runner semantics pinned with fake stages that record what happened (as Packer's
//! basic_runner_test does): run order, reverse cleanup including the failed stage, cancel.

use super::*;

#[derive(Default)]
struct Log {
    events: Vec<String>,
    records: Vec<StageRecord>,
    entered: Vec<String>,
}

impl Records for Log {
    fn records(&mut self) -> &mut Vec<StageRecord> {
        &mut self.records
    }
    fn enter(&mut self, stage: &'static str) {
        let n = self.events.len();
        self.entered.push(format!("{stage} after {n} events"));
    }
}

#[derive(Default)]
struct Fake {
    name: &'static str,
    fail: bool,
    cancel_during: Option<Cancel>,
    /// Goes on in the background until this stage.
    background: Option<&'static str>,
    finish_fails: bool,
}

impl Stage<Log> for Fake {
    fn name(&self) -> &'static str {
        self.name
    }
    fn run(&mut self, ctx: &mut Log) -> anyhow::Result<()> {
        ctx.events.push(format!("run {}", self.name));
        if let Some(c) = &self.cancel_during {
            c.cancel();
            anyhow::bail!("interrupted");
        }
        if self.fail {
            anyhow::bail!("boom");
        }
        Ok(())
    }
    fn finished_before(&self) -> Option<&'static str> {
        self.background
    }
    fn finish(&mut self, ctx: &mut Log) -> anyhow::Result<()> {
        ctx.events.push(format!("finish {}", self.name));
        if self.finish_fails {
            anyhow::bail!("the background work failed");
        }
        Ok(())
    }
    fn cleanup(&mut self, ctx: &mut Log, outcome: Outcome) -> anyhow::Result<()> {
        ctx.events
            .push(format!("cleanup {} {:?}", self.name, outcome));
        Ok(())
    }
}

fn stages(
    fail: Option<&'static str>,
    cancel: Option<(&'static str, Cancel)>,
) -> Vec<Box<dyn Stage<Log>>> {
    ["a", "b", "c"]
        .into_iter()
        .map(|n| {
            Box::new(Fake {
                name: n,
                fail: fail == Some(n),
                cancel_during: cancel
                    .as_ref()
                    .filter(|(c, _)| *c == n)
                    .map(|(_, c)| c.clone()),
                ..Fake::default()
            }) as Box<dyn Stage<Log>>
        })
        .collect()
}

fn statuses(log: &Log) -> Vec<StageStatus> {
    log.records.iter().map(|r| r.status).collect()
}

#[test]
fn success_runs_all_then_cleans_up_in_reverse() {
    let mut log = Log::default();
    let r = run(&mut stages(None, None), &mut log, &Cancel::new());
    assert_eq!(r.outcome, Outcome::Success);
    assert!(r.error.is_none());
    assert_eq!(
        log.events,
        [
            "run a",
            "run b",
            "run c",
            "cleanup c Success",
            "cleanup b Success",
            "cleanup a Success"
        ]
    );
    assert_eq!(statuses(&log), [StageStatus::Ok; 3]);
}

#[test]
fn failure_stops_and_cleans_up_the_failed_stage_too() {
    let mut log = Log::default();
    let r = run(&mut stages(Some("b"), None), &mut log, &Cancel::new());
    assert_eq!(r.outcome, Outcome::Failed);
    let msg = format!("{:#}", r.error.unwrap());
    assert!(
        msg.contains("stage b failed") && msg.contains("boom"),
        "{msg}"
    );
    assert_eq!(
        log.events,
        ["run a", "run b", "cleanup b Failed", "cleanup a Failed"]
    );
    assert_eq!(
        statuses(&log),
        [StageStatus::Ok, StageStatus::Failed, StageStatus::Skipped]
    );
}

#[test]
fn cancel_during_a_stage_cleans_up_and_reports_cancelled() {
    let mut log = Log::default();
    let cancel = Cancel::new();
    let r = run(
        &mut stages(None, Some(("b", cancel.clone()))),
        &mut log,
        &cancel,
    );
    assert_eq!(r.outcome, Outcome::Cancelled);
    assert!(r.error.is_none(), "an interrupt is not a build error");
    assert_eq!(
        log.events,
        [
            "run a",
            "run b",
            "cleanup b Cancelled",
            "cleanup a Cancelled"
        ]
    );
    assert_eq!(
        statuses(&log),
        [
            StageStatus::Ok,
            StageStatus::Cancelled,
            StageStatus::Skipped
        ]
    );
}

#[test]
fn cancel_before_start_runs_nothing() {
    let mut log = Log::default();
    let cancel = Cancel::new();
    cancel.cancel();
    let r = run(&mut stages(None, None), &mut log, &cancel);
    assert_eq!(r.outcome, Outcome::Cancelled);
    assert!(log.events.is_empty());
}

#[test]
fn the_runner_enters_each_stage_before_running_it() {
    let mut log = Log::default();
    let report = run(&mut stages(Some("b"), None), &mut log, &Cancel::new());
    assert_eq!(report.outcome, Outcome::Failed);
    // a before anything happened, b after "run a": each just before its own run.
    assert_eq!(log.entered, ["a after 0 events", "b after 1 events"]);
    assert_eq!(log.events[..2], ["run a", "run b"]);
}

/// a, b (in the background until d), c, d.
fn with_background(fail: Option<&'static str>, finish_fails: bool) -> Vec<Box<dyn Stage<Log>>> {
    ["a", "b", "c", "d"]
        .into_iter()
        .map(|n| {
            Box::new(Fake {
                name: n,
                fail: fail == Some(n),
                background: (n == "b").then_some("d"),
                finish_fails: n == "b" && finish_fails,
                ..Fake::default()
            }) as Box<dyn Stage<Log>>
        })
        .collect()
}

#[test]
fn a_background_stage_is_finished_before_the_stage_it_names() {
    let mut log = Log::default();
    let r = run(&mut with_background(None, false), &mut log, &Cancel::new());
    assert_eq!(r.outcome, Outcome::Success);
    assert_eq!(
        log.events[..5],
        ["run a", "run b", "run c", "finish b", "run d"]
    );
    assert_eq!(statuses(&log), [StageStatus::Ok; 4]);
    // It started before c and its time spans c's.
    assert!(log.records[1].started <= log.records[2].started);
}

#[test]
fn a_failure_beside_a_background_stage_stops_it_in_cleanup_unfinished() {
    let mut log = Log::default();
    let r = run(
        &mut with_background(Some("c"), false),
        &mut log,
        &Cancel::new(),
    );
    assert_eq!(r.outcome, Outcome::Failed);
    assert_eq!(
        log.events,
        [
            "run a",
            "run b",
            "run c",
            "cleanup c Failed",
            "cleanup b Failed",
            "cleanup a Failed"
        ]
    );
    assert_eq!(
        statuses(&log),
        [
            StageStatus::Ok,
            StageStatus::Cancelled,
            StageStatus::Failed,
            StageStatus::Skipped
        ]
    );
}

#[test]
fn a_background_stage_that_fails_when_finished_stops_the_build_there() {
    let mut log = Log::default();
    let r = run(&mut with_background(None, true), &mut log, &Cancel::new());
    assert_eq!(r.outcome, Outcome::Failed);
    let msg = format!("{:#}", r.error.unwrap());
    assert!(msg.contains("stage b failed"), "{msg}");
    assert!(
        !log.events.contains(&"run d".to_string()),
        "{:?}",
        log.events
    );
    assert_eq!(
        statuses(&log),
        [
            StageStatus::Ok,
            StageStatus::Failed,
            StageStatus::Ok,
            StageStatus::Skipped
        ]
    );
}

#[test]
fn a_background_stage_is_finished_when_the_build_stops_early() {
    let mut stages = with_background(None, false);
    stages.truncate(3);
    let mut log = Log::default();
    let r = run(&mut stages, &mut log, &Cancel::new());
    assert_eq!(r.outcome, Outcome::Success);
    assert_eq!(log.events[..4], ["run a", "run b", "run c", "finish b"]);
    assert_eq!(statuses(&log), [StageStatus::Ok; 3]);
}
