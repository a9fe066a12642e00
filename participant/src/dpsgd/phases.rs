//! Wall time per phase of a training step, for `bench dpsgd`'s breakdown of where a DP step's
//! extra time goes. A disabled [`Stopwatch`] (what training uses) never reads the clock.

use std::time::{Duration, Instant};

use serde::Serialize;

/// Accumulates the time between successive [`Stopwatch::lap`] calls under each lap's name.
#[derive(Debug, Default)]
pub struct Stopwatch {
    last: Option<Instant>,
    /// Per phase: total time and the shortest single lap.
    laps: Vec<(&'static str, Duration, Duration)>,
}

impl Stopwatch {
    /// A stopwatch that records nothing.
    pub fn disabled() -> Self {
        Stopwatch::default()
    }

    /// A running stopwatch.
    pub fn started() -> Self {
        Stopwatch {
            last: Some(Instant::now()),
            laps: Vec::new(),
        }
    }

    /// Charges the time since the previous lap (or the start) to `phase`.
    pub fn lap(&mut self, phase: &'static str) {
        if let Some(last) = self.last {
            let now = Instant::now();
            let spent = now - last;
            match self.laps.iter_mut().find(|(p, _, _)| *p == phase) {
                Some((_, total, fastest)) => {
                    *total += spent;
                    *fastest = (*fastest).min(spent);
                }
                None => self.laps.push((phase, spent, spent)),
            }
            self.last = Some(now);
        }
    }

    /// Restarts the clock without charging the time since the previous lap to any phase.
    pub fn resume(&mut self) {
        if self.last.is_some() {
            self.last = Some(Instant::now());
        }
    }

    /// Mean milliseconds per step for each phase, over `steps` steps, in first-seen order.
    pub fn per_step(&self, steps: u64) -> Vec<PhaseTime> {
        self.laps
            .iter()
            .map(|(phase, total, fastest)| PhaseTime {
                phase,
                ms_per_step: total.as_secs_f64() * 1e3 / steps.max(1) as f64,
                fastest_ms: fastest.as_secs_f64() * 1e3,
            })
            .collect()
    }
}

/// One row of a per-phase breakdown.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseTime {
    pub phase: &'static str,
    /// Mean wall time per step.
    pub ms_per_step: f64,
    /// The shortest time this phase took in any one step (least disturbed by other load).
    pub fastest_ms: f64,
}
