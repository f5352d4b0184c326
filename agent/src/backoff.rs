//! Exponential reconnect backoff with jitter. A pure core: the caller passes the randomness in.

use std::time::Duration;

/// Delays between reconnect attempts: doubling from `initial` up to `maximum`, each delay drawn
/// between half and all of its step so that many agents restarted together spread out.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    maximum: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(initial: Duration, maximum: Duration) -> Backoff {
        Backoff {
            initial,
            maximum: maximum.max(initial),
            failures: 0,
        }
    }

    /// The delay before the next attempt; `random` is uniform in `[0, 1)`.
    pub fn next_delay(&mut self, random: f64) -> Duration {
        let step = self
            .initial
            .saturating_mul(1u32 << self.failures.min(20))
            .min(self.maximum);
        self.failures = self.failures.saturating_add(1);
        step.mul_f64(0.5 + 0.5 * random.clamp(0.0, 1.0))
    }

    /// Back to the initial delay (after a connection that worked).
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_maximum_and_stay_within_their_jitter() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        // (random, expected delay in ms)
        let steps = [
            (0.0, 50),
            (1.0, 200),
            (0.5, 300),
            (0.0, 400),
            (1.0, 1000),
            (1.0, 1000),
        ];
        for (index, (random, expected)) in steps.into_iter().enumerate() {
            assert_eq!(
                backoff.next_delay(random),
                Duration::from_millis(expected),
                "step {index}"
            );
        }
        backoff.reset();
        assert_eq!(backoff.next_delay(1.0), Duration::from_millis(100));
    }

    #[test]
    fn many_failures_do_not_overflow() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        for _ in 0..1000 {
            assert!(backoff.next_delay(1.0) <= Duration::from_secs(60));
        }
    }
}
