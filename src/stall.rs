//! Telling a wedged emulator from a slow one by the CPU time it uses. Under TCG a booting guest
//! or libguestfs appliance keeps a host core busy; one that has stopped making progress sits
//! nearly idle (seen here: a build VM whose first vCPU halted and never took its timer
//! interrupt again, 6% of a core for five minutes; an appliance idle for 16). Pure: the callers
//! sample the CPU time (libvirt's domain info, /proc/PID/stat) and act on the verdict.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The rule for a booting TCG guest (the build VM before its steps, the test VM before its
/// sshd answers): under 15% of a core for a minute is a wedged one (6% was seen).
pub const GUEST_WINDOW: Duration = Duration::from_secs(60);

/// A watch by [`GUEST_WINDOW`]'s rule.
pub fn booting_guest() -> CpuWatch {
    CpuWatch::new(GUEST_WINDOW, 0.15)
}

/// Stalled when, over the last `window`, the CPU time used was less than `min_share` of it.
#[derive(Debug)]
pub struct CpuWatch {
    window: Duration,
    min_share: f64,
    /// (when, CPU time used so far), oldest first; the first one at or before the window.
    samples: VecDeque<(Instant, Duration)>,
}

impl CpuWatch {
    pub fn new(window: Duration, min_share: f64) -> Self {
        CpuWatch {
            window,
            min_share,
            samples: VecDeque::new(),
        }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// Records that `cpu` had been used by `now`; the CPU time used over the last window when
    /// that is too little (a full window must have been seen).
    pub fn observe(&mut self, now: Instant, cpu: Duration) -> Option<Duration> {
        // A counter that went back is another process (a restarted guest): start over.
        if self.samples.back().is_some_and(|&(_, c)| cpu < c) {
            self.samples.clear();
        }
        self.samples.push_back((now, cpu));
        while self.samples.len() > 1 && now.duration_since(self.samples[1].0) >= self.window {
            self.samples.pop_front();
        }
        let &(since, used_then) = self.samples.front()?;
        if now.duration_since(since) < self.window {
            return None;
        }
        let used = cpu - used_then;
        let floor = now.duration_since(since).as_secs_f64() * self.min_share;
        (used.as_secs_f64() < floor).then_some(used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalled_only_after_a_whole_window_of_too_little_cpu() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let cpu = |ms: u64| Duration::from_millis(ms);
        let mut w = CpuWatch::new(Duration::from_secs(60), 0.15);
        // Busy (a core's worth): never.
        for s in 0..200 {
            assert_eq!(w.observe(at(s), cpu(s * 1000)), None, "busy at {s}");
        }
        // Then idle: not before a window has passed, then yes.
        let mut w = CpuWatch::new(Duration::from_secs(60), 0.15);
        assert_eq!(w.observe(at(0), cpu(0)), None);
        assert_eq!(w.observe(at(30), cpu(30_000)), None);
        assert_eq!(
            w.observe(at(60), cpu(30_500)),
            None,
            "30 s used in this window"
        );
        assert_eq!(w.observe(at(89), cpu(31_000)), None, "still 1 s of 59");
        assert_eq!(w.observe(at(90), cpu(31_000)), Some(cpu(1_000)));
        // 6% of a core (the wedged build VM): stalled; 20%: not.
        let mut w = CpuWatch::new(Duration::from_secs(60), 0.15);
        let verdicts: Vec<bool> = (0..=120)
            .step_by(5)
            .map(|s| w.observe(at(s), cpu(s * 60)).is_some())
            .collect();
        assert!(verdicts[..12].iter().all(|v| !v) && verdicts[12..].iter().all(|v| *v));
        let mut w = CpuWatch::new(Duration::from_secs(60), 0.15);
        assert!((0..=300)
            .step_by(5)
            .all(|s| w.observe(at(s), cpu(s * 200)).is_none()));
        // A counter that goes back (a new qemu) starts the window over.
        let mut w = CpuWatch::new(Duration::from_secs(60), 0.15);
        assert_eq!(w.observe(at(0), cpu(50_000)), None);
        assert_eq!(w.observe(at(61), cpu(100)), None);
        assert_eq!(w.observe(at(121), cpu(200)), Some(cpu(100)));
    }
}
