//! Progress for long work: an indicatif bar when stderr is a terminal, otherwise a plain log
//! line every few seconds (CI logs stay readable).

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub struct Progress {
    label: String,
    total: Option<u64>,
    bar: Option<ProgressBar>,
    last_line: Mutex<Instant>,
}

const PLAIN_EVERY: Duration = Duration::from_secs(5);

impl Progress {
    pub fn bytes(label: &str, total: Option<u64>) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = match total {
                Some(t) => ProgressBar::new(t),
                None => ProgressBar::new_spinner(),
            };
            b.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b.set_message(label.to_string());
            b
        });
        Progress {
            label: label.to_string(),
            total,
            bar,
            last_line: Mutex::new(Instant::now()),
        }
    }

    pub fn set(&self, done: u64) {
        if let Some(b) = &self.bar {
            b.set_position(done);
            return;
        }
        let mut last = self.last_line.lock().unwrap();
        if last.elapsed() >= PLAIN_EVERY {
            *last = Instant::now();
            match self.total {
                Some(t) if t > 0 => tracing::info!(
                    "{}: {} of {} ({:.0}%)",
                    self.label,
                    human_bytes(done),
                    human_bytes(t),
                    done as f64 * 100.0 / t as f64
                ),
                _ => tracing::info!("{}: {}", self.label, human_bytes(done)),
            }
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// Run `f` (a write to stderr) with the progress bars hidden, so log lines and bars do not
/// garble each other.
pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    multi().suspend(f)
}

fn multi() -> &'static indicatif::MultiProgress {
    static M: std::sync::OnceLock<indicatif::MultiProgress> = std::sync::OnceLock::new();
    M.get_or_init(indicatif::MultiProgress::new)
}

/// A percentage meter (one per concurrent job: bars stack on a terminal).
pub struct Percent {
    label: String,
    bar: Option<ProgressBar>,
    last: Mutex<(Instant, f64)>,
}

impl Percent {
    pub fn new(label: &str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = multi().add(ProgressBar::new(1000));
            b.set_style(
                ProgressStyle::with_template("{msg:32} [{bar:30}] {percent:>3}% {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            b.set_message(label.to_string());
            b
        });
        Percent {
            label: label.to_string(),
            bar,
            last: Mutex::new((Instant::now(), -1.0)),
        }
    }

    pub fn set(&self, pct: f64) {
        if let Some(b) = &self.bar {
            b.set_position((pct * 10.0) as u64);
            return;
        }
        let mut last = self.last.lock().unwrap();
        if last.0.elapsed() >= PLAIN_EVERY && pct > last.1 {
            *last = (Instant::now(), pct);
            tracing::info!("{}: {pct:.0}%", self.label);
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// Parse qemu-img's `-p` meter: "    (45.02/100%)".
pub fn parse_qemu_progress(line: &str) -> Option<f64> {
    let inner = line.trim().strip_prefix('(')?.strip_suffix("/100%)")?;
    inner.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_progress_lines() {
        assert_eq!(parse_qemu_progress("    (45.02/100%)"), Some(45.02));
        assert_eq!(parse_qemu_progress("(100.00/100%)"), Some(100.0));
        assert_eq!(parse_qemu_progress("garbage"), None);
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
