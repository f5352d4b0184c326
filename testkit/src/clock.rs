//! Step timings of a long test: each step printed as it ends, and all of them again at the end.

use std::time::{Duration, Instant};

/// The steps of one part of a test, named after the part in every line it prints.
pub struct StepClock {
    part: &'static str,
    started: Instant,
    last: Instant,
    steps: Vec<(String, Duration)>,
}

impl StepClock {
    /// Starts the clock of `part` now.
    pub fn new(part: &'static str) -> StepClock {
        let now = Instant::now();
        StepClock {
            part,
            started: now,
            last: now,
            steps: Vec::new(),
        }
    }

    /// Ends the step `name` now and prints how long it took.
    pub fn step(&mut self, name: &str) {
        let now = Instant::now();
        eprintln!("[{}] {name}: {:.1?}", self.part, now - self.last);
        self.steps.push((name.to_string(), now - self.last));
        self.last = now;
    }

    /// How long since the clock started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Every step and the total, one per line.
    pub fn report(&self) -> String {
        let mut text = format!("[{}] timings:\n", self.part);
        for (name, duration) in &self.steps {
            text.push_str(&format!("  {duration:>8.1?}  {name}\n"));
        }
        text.push_str(&format!("  {:>8.1?}  total\n", self.started.elapsed()));
        text
    }

    /// Prints [`StepClock::report`].
    pub fn print_report(&self) {
        eprint!("{}", self.report());
    }
}
