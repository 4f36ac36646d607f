//! What the page shows of each build, computed from its files (the template only lays it out).

use serde::Serialize;

use super::{Build, Failed};
use crate::manifest::StageStatus;

/// The width of a timeline in the SVG's own units.
const WIDTH: f64 = 1000.0;
/// Height of one stage's row.
const ROW: f64 = 22.0;
/// Left margin for the stage names.
const LABELS: f64 = 110.0;
/// Right margin: the last bar's duration and the last tick's label.
const RIGHT: f64 = 90.0;

#[derive(Serialize)]
pub struct BuildView {
    /// The HTML id (anchor) of the build: its slug, letters, digits, `-`, `.` and `_` only.
    pub id: String,
    pub name: String,
    pub version: String,
    pub built_at: String,
    pub architecture: String,
    pub firmware: String,
    pub accelerator: String,
    /// `passed`, `failed` (a check failed), `untested` (no boot test).
    pub result: &'static str,
    pub seconds: String,
    pub timeline: Timeline,
    pub checks: Vec<CheckView>,
    pub phases: Vec<String>,
    pub os: String,
    pub packages: String,
    pub kernels: String,
    pub changes: Option<Changes>,
    pub outputs: Vec<OutputView>,
    pub local: String,
    pub published: Vec<PublishedView>,
    pub published_count: usize,
}

#[derive(Serialize)]
pub struct Timeline {
    pub height: String,
    pub axis_y: String,
    pub bars: Vec<Bar>,
    pub ticks: Vec<Tick>,
}

/// One stage: its row, its bar from start to end (at least 1 unit wide, so a reused stage
/// shows), and its label.
#[derive(Serialize)]
pub struct Bar {
    pub stage: String,
    /// `ok`, `reused`, `failed`, `cancelled`, `skipped`, `running`.
    pub class: &'static str,
    pub x: String,
    pub y: String,
    pub w: String,
    pub text_y: String,
    pub label_x: String,
    pub label: String,
}

#[derive(Serialize)]
pub struct Tick {
    pub x: String,
    pub label: String,
}

#[derive(Serialize)]
pub struct CheckView {
    pub name: String,
    /// `ok`, `warn`, `fail`.
    pub state: &'static str,
    pub detail: String,
    pub seconds: String,
}

#[derive(Serialize)]
pub struct Changes {
    pub previous: String,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub none: bool,
    /// "N added, N removed, N changed".
    pub counts: String,
}

#[derive(Serialize)]
pub struct OutputView {
    pub path: String,
    pub format: String,
    pub size: String,
    pub sha256: String,
}

#[derive(Serialize)]
pub struct PublishedView {
    pub cloud: String,
    pub region: String,
    pub id: String,
    pub name: String,
    pub status: String,
    pub reused: bool,
}

#[derive(Serialize)]
pub struct FailedView {
    pub name: String,
    pub errors: Vec<String>,
}

#[derive(Serialize)]
pub struct Summary {
    pub builds: usize,
    pub passed: usize,
    pub failed: usize,
    pub untested: usize,
    pub images_published: usize,
}

pub fn summary(builds: &[BuildView], failed: &[FailedView]) -> Summary {
    let count = |r: &str| builds.iter().filter(|b| b.result == r).count();
    Summary {
        builds: builds.len() + failed.len(),
        passed: count("passed"),
        failed: count("failed") + failed.len(),
        untested: count("untested"),
        images_published: builds.iter().map(|b| b.published.len()).sum(),
    }
}

pub fn failed(f: &Failed) -> FailedView {
    FailedView {
        name: f
            .dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned(),
        errors: f.errors.clone(),
    }
}

pub fn build(b: &Build, previous: Option<&Build>) -> BuildView {
    let m = &b.manifest;
    let checks = checks(m.test.as_ref());
    let result = if checks.is_empty() {
        "untested"
    } else if checks.iter().any(|c| c.state == "fail") {
        "failed"
    } else {
        "passed"
    };
    let inv = m.inventory.clone().unwrap_or_default();
    let published: Vec<PublishedView> = m
        .published
        .glance
        .iter()
        .map(|g| PublishedView {
            cloud: g.cloud.clone(),
            region: g.region.clone().unwrap_or_default(),
            id: g.id.clone(),
            name: g.name.clone(),
            status: g.status.clone(),
            reused: g.reused,
        })
        .collect();
    let end = m
        .stages
        .iter()
        .map(|s| s.started + s.seconds)
        .fold(0.0, f64::max);
    BuildView {
        id: anchor(&format!("{}-{}", m.name, m.version)),
        name: m.name.clone(),
        version: m.version.clone(),
        built_at: crate::inventory::rfc3339(m.built_at),
        architecture: m.architecture.clone(),
        firmware: m.firmware.clone(),
        accelerator: m.accelerator.clone(),
        result,
        seconds: format!("{end:.1}"),
        timeline: timeline(&m.stages),
        checks,
        phases: phases(m.test.as_ref()),
        os: inv["os"].as_str().unwrap_or("unknown").to_string(),
        packages: inv["packages"]
            .as_u64()
            .map(|n| n.to_string())
            .unwrap_or_else(|| "unknown".into()),
        kernels: string_list(&inv["kernels"]).join(", "),
        changes: changes(b, previous),
        outputs: m
            .outputs
            .iter()
            .map(|o| OutputView {
                path: o.path.clone(),
                format: o.format.to_string(),
                size: crate::progress::human_bytes(o.size),
                sha256: o.sha256.clone(),
            })
            .collect(),
        local: m.published.local.clone(),
        published_count: published.len(),
        published,
    }
}

/// An HTML id from a slug: anything but letters, digits, `-`, `.`, `_` becomes `_`.
pub fn anchor(slug: &str) -> String {
    let s: String = slug
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("build-{s}")
}

fn string_list(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect()
}

/// The stage bars, scaled so the build's end is the right edge.
pub fn timeline(stages: &[crate::manifest::StageRecord]) -> Timeline {
    let end = stages
        .iter()
        .map(|s| s.started + s.seconds)
        .fold(0.0, f64::max)
        .max(1.0);
    let scale = (WIDTH - LABELS - RIGHT) / end;
    let bars = stages
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let y = i as f64 * ROW;
            let x = LABELS + s.started.max(0.0) * scale;
            let w = (s.seconds.max(0.0) * scale).max(1.0);
            let class = match s.status {
                StageStatus::Ok if s.reused => "reused",
                StageStatus::Ok => "ok",
                StageStatus::Failed => "failed",
                StageStatus::Cancelled => "cancelled",
                StageStatus::Skipped => "skipped",
                StageStatus::Running => "running",
            };
            let label = if s.reused {
                format!("{:.1} s (reused)", s.seconds)
            } else {
                format!("{:.1} s", s.seconds)
            };
            Bar {
                stage: s.name.clone(),
                class,
                x: format!("{x:.1}"),
                y: format!("{:.1}", y + 3.0),
                w: format!("{w:.1}"),
                text_y: format!("{:.1}", y + 16.0),
                // The duration right of its bar (the right margin keeps room for it).
                label_x: format!("{:.1}", x + w + 4.0),
                label,
            }
        })
        .collect::<Vec<_>>();
    let rows = stages.len() as f64 * ROW;
    let step = tick_step(end);
    let ticks = (0..)
        .map(|k| k as f64 * step)
        .take_while(|t| *t <= end)
        .map(|t| Tick {
            x: format!("{:.1}", LABELS + t * scale),
            label: format!("{t:.0} s"),
        })
        .collect();
    Timeline {
        height: format!("{:.0}", rows + 24.0),
        axis_y: format!("{:.0}", rows + 16.0),
        bars,
        ticks,
    }
}

/// Seconds between axis ticks: about six of them.
fn tick_step(end: f64) -> f64 {
    [
        1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
    ]
    .into_iter()
    .find(|s| end / s <= 8.0)
    .unwrap_or(7200.0)
}

fn checks(test: Option<&serde_json::Value>) -> Vec<CheckView> {
    let Some(t) = test else {
        return Vec::new();
    };
    t["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| CheckView {
            name: c["name"].as_str().unwrap_or_default().to_string(),
            state: match (c["ok"].as_bool(), c["warning"].as_bool()) {
                (Some(true), Some(true)) => "warn",
                (Some(true), _) => "ok",
                _ => "fail",
            },
            detail: c["detail"]
                .as_str()
                .unwrap_or_default()
                .chars()
                .take(4000)
                .collect(),
            seconds: format!("{:.1}", c["seconds"].as_f64().unwrap_or(0.0)),
        })
        .collect()
}

fn phases(test: Option<&serde_json::Value>) -> Vec<String> {
    test.and_then(|t| t["phases"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|p| Some(format!("{} {:.1} s", p[0].as_str()?, p[1].as_f64()?)))
        .collect()
}

/// The packages changed since the previous build of the same image, from both SBOMs.
fn changes(b: &Build, previous: Option<&Build>) -> Option<Changes> {
    let previous = previous?;
    let (now, before) = (b.packages.as_ref()?, previous.packages.as_ref()?);
    let d = crate::inventory::diff_packages(before, now);
    let fmt = |p: &crate::inventory::Package| format!("{} {} ({})", p.name, p.version, p.arch);
    Some(Changes {
        previous: previous.manifest.version.clone(),
        counts: format!(
            "{} added, {} removed, {} changed",
            d.added.len(),
            d.removed.len(),
            d.changed.len()
        ),
        none: d.added.is_empty() && d.removed.is_empty() && d.changed.is_empty(),
        added: d.added.iter().map(fmt).collect(),
        removed: d.removed.iter().map(fmt).collect(),
        changed: d
            .changed
            .iter()
            .map(|(n, a, from, to)| format!("{n} ({a}) {from} → {to}"))
            .collect(),
    })
}
